//! The one extension point for the places tidegate applies to.
//!
//! A provider turns desired resources of one environment into live ones. It
//! is built once per environment (see [`connect`]), so every call already
//! knows its cluster context or AWS region and the owner name that scopes what
//! it may touch. A new provider is one new file implementing [`Provider`] and
//! one line in [`connect`].
//!
//! # Contract
//!
//! - **Ownership.** A provider only ever observes, changes or deletes objects
//!   that carry tidegate's ownership marks for its environment
//!   ([`labels`]); an object without them is never touched, even when its
//!   name matches.
//! - **Batched observe.** [`Provider::observe`] costs one list call sequence
//!   (paginated) per kind, never one call per resource.
//! - **Idempotence.** [`Provider::apply`] and [`Provider::delete`] tolerate
//!   being run again after a crash at any point: applying what already exists
//!   converges without duplicates; deleting what is gone succeeds.
//! - **Secrets.** [`Value::Sensitive`] leaves are exposed only inside the
//!   request that needs them; no error, log line or returned [`Live`] body
//!   carries plaintext.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub mod aws;
pub mod kubernetes;
pub mod registry;

pub use crate::resource::{
    Action, AwsTarget, Change, Desired, EnvTarget, Field, Health, KubeTarget, Live, Origin,
    Problem, ProviderKind, ResourceId, Scope, Ty,
};
use crate::value::Value;

/// Names of the ownership marks, shared by every provider.
pub mod labels {
    /// Kubernetes label / EC2 tag: who manages the object.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// The value of [`MANAGED_BY`].
    pub const MANAGER: &str = "tidegate";
    /// Kubernetes label / EC2 tag (`tidegate:environment`): owning environment.
    pub const ENVIRONMENT: &str = "tidegate.dev/environment";
    /// Kubernetes label / EC2 tag (`tidegate:project`): owning project
    /// (`tidegate.yaml`). Objects marked before projects existed lack it.
    pub const PROJECT: &str = "tidegate.dev/project";
    /// Kubernetes annotation / EC2 tag: `disabled` keeps the object when Git
    /// stops declaring it (never pruned).
    pub const PRUNE: &str = "tidegate.dev/prune";
    /// Kubernetes label / EC2 tag (`tidegate:module`): owning module instance.
    pub const MODULE: &str = "tidegate.dev/module";
    /// Kubernetes annotation / EC2 tag (`tidegate:resource`): resource id.
    pub const RESOURCE: &str = "tidegate.dev/resource";
    /// Kubernetes annotation on an object `tidegate import` adopted: its
    /// first apply takes over the fields Git declares from the manager
    /// that made it (a forced server-side apply), which also drops the
    /// annotation.
    pub const IMPORTED: &str = "tidegate.dev/imported";
    /// The field manager for Kubernetes server-side apply.
    pub const FIELD_MANAGER: &str = "tidegate";
    /// Kubernetes annotation: SHA-256 of the manifest tidegate last applied
    /// (never on Secrets or manifests holding a secret value). A plan whose
    /// desired manifest has the same hash and is still contained in the live
    /// object needs no server-side dry run.
    pub const APPLIED_HASH: &str = "tidegate.dev/applied-hash";
}

/// The owner identity a provider stamps on what it creates, and the only
/// one whose objects it observes, changes or deletes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Owner {
    pub project: String,
    pub environment: String,
}

impl Owner {
    /// The owner `project`/`environment` (tests and tools; the engine
    /// takes it from the target with [`Owner::of`]).
    pub fn new(project: &str, environment: &str) -> Owner {
        Owner {
            project: project.to_string(),
            environment: environment.to_string(),
        }
    }

    /// The owner of what `target` applies.
    pub fn of(target: &EnvTarget) -> Owner {
        Owner {
            project: target.project.clone(),
            environment: target.environment.clone(),
        }
    }

    /// `<project>.<environment>`: the part of record, lock and inventory
    /// names that keeps installations apart (both parts are DNS labels).
    pub fn key(&self) -> String {
        format!("{}.{}", self.project, self.environment)
    }

    /// Whose an object is, from its marks: `managed` (the managed-by mark
    /// says tidegate), its environment mark and its project mark.
    pub fn claim(&self, managed: bool, environment: Option<&str>, project: Option<&str>) -> Claim {
        if !managed {
            return Claim::Unmanaged;
        }
        match (environment, project) {
            (Some(e), Some(p)) if e == self.environment && p == self.project => Claim::Ours,
            (Some(e), None) if e == self.environment => Claim::Legacy,
            (e, p) => Claim::Foreign(Owner {
                project: p.unwrap_or("").to_string(),
                environment: e.unwrap_or("").to_string(),
            }),
        }
    }
}

impl fmt::Display for Owner {
    /// `project shop, environment dev`; a mark from before projects reads
    /// `no project (marked before tidegate.yaml), environment dev`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.project.is_empty() {
            f.write_str("no project (marked before tidegate.yaml)")?;
        } else {
            write!(f, "project {}", self.project)?;
        }
        write!(f, ", environment {}", self.environment)
    }
}

/// Whose a live object is, by tidegate's marks on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Marked with this project and environment.
    Ours,
    /// Marked with this environment by a tidegate from before projects (no
    /// project mark): adopted when Git declares it (the next apply stamps
    /// the project), never pruned.
    Legacy,
    /// Marked by another installation.
    Foreign(Owner),
    /// Not marked as tidegate's at all.
    Unmanaged,
}

impl Claim {
    /// Ours, or ours to adopt.
    pub fn is_ours(&self) -> bool {
        matches!(self, Claim::Ours | Claim::Legacy)
    }
}

/// A provider call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The environment's target cannot be reached or configured
    /// (missing kubeconfig context, bad region).
    #[error("{provider} target of environment {environment}: {message}")]
    Target {
        provider: ProviderKind,
        environment: String,
        message: String,
    },
    /// The desired resource is not valid for this provider.
    #[error("{id} ({origin}): {message}")]
    Invalid {
        id: ResourceId,
        origin: Origin,
        message: String,
    },
    /// The target does not serve the resource's kind, and nothing declared
    /// in this environment defines it (a Kubernetes kind without its CRD,
    /// a typo in `kind` or `apiVersion`).
    #[error("the cluster does not serve {kind} ({hint}); if it is a custom resource, declare its CustomResourceDefinition in this environment")]
    NotServed { kind: String, hint: String },
    /// Another field manager owns fields tidegate wants to change.
    #[error("{id}: conflict with field manager(s) {managers}; set `forceConflicts: true` on the environment's kubernetes target to take them over")]
    Conflict { id: ResourceId, managers: String },
    /// An API call failed after its retries.
    #[error("{operation} failed{}: {source}", if *.retryable { " (retryable)" } else { "" })]
    Api {
        operation: String,
        retryable: bool,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The resource did not become healthy in time.
    #[error("{id} not healthy after {seconds}s: {reason}")]
    Timeout {
        id: ResourceId,
        seconds: u64,
        reason: String,
    },
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Target { .. } => "target",
            Error::Invalid { .. } | Error::NotServed { .. } => "invalid",
            Error::Conflict { .. } => "conflict",
            Error::Api {
                retryable: true, ..
            } => "api_retryable",
            Error::Api { .. } => "api",
            Error::Timeout { .. } => "timeout",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a provider sent a request again: the `reason` label of
/// `tidegate_api_retries_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RetryReason {
    /// 429, or a throttling error code (EC2 `RequestLimitExceeded`).
    Throttled,
    /// Any other 5xx.
    ServerError,
    /// The attempt timed out before an answer.
    Timeout,
    /// The connection failed or was dropped before an answer.
    Connection,
    /// EC2 did not know yet an id it had just handed out (eventual
    /// consistency).
    NotYetVisible,
}

impl RetryReason {
    pub fn label(self) -> &'static str {
        match self {
            RetryReason::Throttled => "throttled",
            RetryReason::ServerError => "server_error",
            RetryReason::Timeout => "timeout",
            RetryReason::Connection => "connection",
            RetryReason::NotYetVisible => "not_yet_visible",
        }
    }
}

/// Objects a provider's last observe listed healthy and that it has not
/// written since. Their health is that listing's answer, with no further
/// read: an unchanged environment of 10,000 objects otherwise made one read
/// per object per reconcile just to learn what the list had already said.
/// A provider marks objects while observing and forgets one before it
/// writes or deletes it.
#[derive(Clone, Debug, Default)]
pub struct ListedHealthy(Arc<Mutex<std::collections::HashSet<(String, String)>>>);

impl ListedHealthy {
    fn set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<(String, String)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets every mark: called when an observe starts, so a mark never
    /// outlives the listing that made it.
    pub fn clear(&self) {
        self.set().clear();
    }

    /// `kind`/`external_id` was listed healthy just now.
    pub fn mark(&self, kind: &str, external_id: &str) {
        self.set()
            .insert((kind.to_string(), external_id.to_string()));
    }

    /// `live` is about to change: its listing no longer tells its health.
    pub fn forget(&self, live: &Live) {
        self.set()
            .remove(&(live.kind.clone(), live.external_id.clone()));
    }

    /// True when `live` was listed healthy and not written since.
    pub fn contains(&self, live: &Live) -> bool {
        self.set()
            .contains(&(live.kind.clone(), live.external_id.clone()))
    }
}

/// Retries a provider made, by reason; cloned into its transport layers.
#[derive(Clone, Debug, Default)]
pub struct RetryCounter(Arc<Mutex<BTreeMap<RetryReason, u64>>>);

impl RetryCounter {
    pub fn record(&self, reason: RetryReason) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(reason).or_default() += 1;
    }

    /// The counts so far, by [`RetryReason::label`].
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.iter().map(|(r, n)| (r.label().to_string(), *n)).collect()
    }
}

/// An existing object found for `tidegate import`.
#[derive(Clone, Debug)]
pub struct Found {
    /// As observed, with the id it would have once imported.
    pub live: Live,
    /// Whose it is now.
    pub claim: Claim,
}

/// Which existing objects `tidegate import --generate` reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// EC2 resources with tag `key` = `value`.
    Tag { key: String, value: String },
    /// Kubernetes objects matching a label selector (`app=shop,tier`).
    Label(String),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Tag { key, value } => write!(f, "tag:{key}={value}"),
            Selector::Label(s) => write!(f, "label:{s}"),
        }
    }
}

/// An existing object a [`Selector`] found, as a module would declare it.
#[derive(Clone, Debug)]
pub struct Discovered {
    /// The resource type (`vpc`) or the Kubernetes kind (`apps/v1/Deployment`).
    pub kind: String,
    /// The provider's id of it (`vpc-0abc`, `namespace/name`).
    pub external_id: String,
    /// A name for the resource, from the object's own (`Name` tag,
    /// `metadata.name`); not yet unique or valid.
    pub name: String,
    /// What a module declares to match it: an EC2 spec, or a Kubernetes
    /// manifest of the fields its authors set.
    pub body: Value,
    /// Whose it is now.
    pub claim: Claim,
}

/// An object a [`Selector`] found that `--generate` leaves out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passed {
    pub kind: String,
    pub external_id: String,
    pub reason: String,
}

/// What [`Provider::discover`] found.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    pub found: Vec<Discovered>,
    pub passed: Vec<Passed>,
    /// Kinds tidegate may not list (RBAC): nothing of them was read.
    pub unlisted: Vec<String>,
}

/// One environment's view of one provider.
///
/// Every method is idempotent and may be retried after a crash.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// Which provider this is.
    fn kind(&self) -> ProviderKind;

    /// Every object this environment owns through this provider, among the
    /// given kinds (the provider adds kinds it recorded in its own inventory,
    /// so that resources removed from Git are still found for pruning).
    /// One list call sequence per kind.
    async fn observe(&self, kinds: &[String]) -> Result<Vec<Live>>;

    /// [`Provider::observe`] of `scope`'s kinds, narrowed to its places
    /// where the provider lists a kind place by place (Kubernetes: Secrets,
    /// one list per namespace, so RBAC can grant them per namespace).
    async fn observe_in(&self, scope: &Scope) -> Result<Vec<Live>> {
        let kinds: Vec<String> = scope.kinds.iter().cloned().collect();
        self.observe(&kinds).await
    }

    /// What applying `desired` over `live` would do. Never changes anything;
    /// may call a dry-run API. With unknown values in `desired` the
    /// prediction keeps them unknown.
    async fn plan(&self, desired: &Desired, live: Option<&Live>) -> Result<Change>;

    /// Makes the live resource match `desired` (which has no unknowns left)
    /// and returns it as observed afterwards.
    async fn apply(&self, desired: &Desired, live: Option<&Live>) -> Result<Live>;

    /// Deletes an owned resource; succeeds when it is already gone.
    async fn delete(&self, live: &Live) -> Result<()>;

    /// Readiness of an applied resource, checked once.
    async fn health(&self, live: &Live) -> Result<Health>;

    /// `tidegate import`: the existing object `external_id` names, for the
    /// desired resource `desired` (same kind; for Kubernetes the object the
    /// manifest names), normalised as [`Provider::observe`] reports it, with
    /// whose it is now; `None` when it does not exist.
    async fn lookup(&self, desired: &Desired, _external_id: &str) -> Result<Option<Found>> {
        Err(Error::Invalid {
            id: desired.id.clone(),
            origin: desired.origin.clone(),
            message: format!(
                "the {} provider cannot import existing objects",
                self.kind()
            ),
        })
    }

    /// `tidegate import`: stamps this environment's ownership marks for
    /// `desired.id` on the object `found` (from [`Provider::lookup`]),
    /// changing nothing else: the next apply converges it from there.
    async fn adopt(&self, desired: &Desired, _found: &Live) -> Result<()> {
        Err(Error::Invalid {
            id: desired.id.clone(),
            origin: desired.origin.clone(),
            message: format!(
                "the {} provider cannot import existing objects",
                self.kind()
            ),
        })
    }

    /// `tidegate import --generate`: the existing objects `selector`
    /// selects, among every kind this provider manages, as a module would
    /// declare them. A selector of another provider finds nothing.
    async fn discover(&self, _selector: &Selector) -> Result<Discovery> {
        Ok(Discovery::default())
    }

    /// Records the complete set of owned resources after an apply, where the
    /// provider keeps an inventory (Kubernetes: a ConfigMap).
    async fn record_inventory(&self, _owned: &[Live]) -> Result<()> {
        Ok(())
    }

    /// API calls made so far, by `operation` name, for metrics and benchmarks.
    fn api_calls(&self) -> BTreeMap<String, u64>;

    /// Requests sent again so far (a subset of [`Provider::api_calls`]), by
    /// [`RetryReason::label`]: backoff made visible in metrics.
    fn api_retries(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
}

/// What tidegate knows of one provider without calling it, and how to
/// connect it: everything loading, the graph, planning and pruning need of
/// a provider goes through this trait, so none of them matches on
/// [`ProviderKind`]. A new provider is its [`Provider`] (the I/O), its
/// `Spec`, a [`ProviderKind`] variant and one line in [`spec`].
#[async_trait::async_trait]
pub trait Spec: Send + Sync {
    /// Which provider this is.
    fn kind(&self) -> ProviderKind;

    /// How a module writes a resource's body for this provider.
    fn body_shape(&self) -> BodyShape;

    /// The types of a [`BodyShape::Typed`] provider, in creation order.
    fn types(&self) -> &'static [&'static str] {
        &[]
    }

    /// The fields of type `kind` of a [`BodyShape::Typed`] provider.
    fn fields(&self, _kind: &str) -> Option<&'static [Field]> {
        None
    }

    /// Whether an environment's `targets` configure this provider.
    fn configured(&self, target: &EnvTarget) -> bool;

    /// The provider for one environment.
    async fn connect(&self, target: &EnvTarget) -> Result<Box<dyn Provider>>;

    /// Whether `${resource.x.<attr>}` may be referenced on a resource of
    /// `kind` whose declared body is `body`.
    fn has_attribute(&self, kind: &str, body: &Value, attr: &str) -> bool;

    /// What may be referenced on a resource of `kind` (an error's fix).
    fn attributes_hint(&self, kind: &str) -> String;

    /// The body fields (dotted paths) that decide where a resource of
    /// `kind` lives and what it must come after; the graph evaluates them
    /// from the files and hands them to [`Spec::arrange`].
    fn order_fields(&self, kind: &str) -> &'static [&'static str];

    /// Placement, identities and implicit order of one environment's
    /// resources of this provider, from their [`Spec::order_fields`].
    fn arrange(&self, declared: &[Declared]) -> Arrangement;

    /// Why changing `before` into `after` must replace a resource of
    /// `kind`, known without the provider (empty: an update, or only the
    /// provider can tell at plan time).
    fn replace_reasons(&self, kind: &str, before: &Value, after: &Value) -> Vec<String>;

    /// What is wrong with the values of a body of `kind`, found without
    /// the provider (unknown values pass): `validate` reports them at the
    /// line they were written, before any plan.
    fn check_values(&self, kind: &str, body: &Value) -> Vec<Problem>;

    /// [`Spec::check_values`] of the bodies `(kind, body)` of one
    /// environment, or of every module's literal bodies, checked together:
    /// a body may be judged against another one of `bodies` or of
    /// `beside` (bodies declared elsewhere in the repository, not checked
    /// here). Kubernetes checks a custom resource against the
    /// CustomResourceDefinition declared with it. Returns each problem with
    /// the index of its body in `bodies`. The default checks each body
    /// alone.
    fn check_set(
        &self,
        bodies: &[(&str, &Value)],
        beside: &[(&str, &Value)],
    ) -> Vec<(usize, Problem)> {
        let _ = beside;
        bodies
            .iter()
            .enumerate()
            .flat_map(|(i, (kind, body))| {
                self.check_values(kind, body)
                    .into_iter()
                    .map(move |p| (i, p))
            })
            .collect()
    }

    /// When a pruned resource of `kind` is deleted, lower waves first: Git
    /// no longer declares it, so the graph cannot order it; the kinds can
    /// (what lives inside another resource before it).
    fn delete_wave(&self, kind: &str) -> u8;
}

/// How a module writes a resource's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyShape {
    /// `manifest:`, a whole object whose kind is its `apiVersion` and
    /// `kind` (both written literally: they order resources).
    Manifest,
    /// `type:`, one of [`Spec::types`], and `spec:`, checked against that
    /// type's [`Spec::fields`].
    Typed,
}

/// A declared resource as [`Spec::arrange`] sees it.
#[derive(Clone, Debug)]
pub struct Declared {
    pub id: ResourceId,
    pub kind: String,
    /// The [`Spec::order_fields`] the files decide, by path.
    pub fields: BTreeMap<&'static str, String>,
}

/// What [`Spec::arrange`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Arrangement {
    /// Where each placed resource lives (a Kubernetes namespace; a
    /// Namespace: its own name).
    pub placement: BTreeMap<ResourceId, String>,
    /// Order the provider implies: `from` before `to`.
    pub edges: Vec<ImplicitEdge>,
    /// Resources declaring the same object: each pair once, the first
    /// declared first, and the object they both name.
    pub clashes: Vec<(ResourceId, ResourceId, String)>,
}

/// Order a provider implies between two declared resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImplicitEdge {
    pub from: ResourceId,
    pub to: ResourceId,
    pub why: Implied,
}

/// Why a provider orders one resource before another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Implied {
    /// `to` lives inside `from` (a Kubernetes object in its Namespace).
    Inside,
    /// `from` defines the kind of `to` (a CustomResourceDefinition).
    DefinesKind,
}
