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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub mod aws;
pub mod kubernetes;

pub use crate::value::Origin;
use crate::value::{Map, Value};

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

/// Which provider a resource belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Kubernetes,
    Aws,
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProviderKind::Kubernetes => "kubernetes",
            ProviderKind::Aws => "aws",
        })
    }
}

/// The stable identity of a resource inside its environment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ResourceId {
    /// The module instance name in the environment (`network`).
    pub module: String,
    /// The resource name inside the module (`vpc`).
    pub name: String,
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.module, self.name)
    }
}

/// The Kubernetes target of an environment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KubeTarget {
    /// Context in `KUBECONFIG`; `None` means the in-cluster configuration.
    pub context: Option<String>,
    /// Take over fields owned by other managers on conflict.
    pub force_conflicts: bool,
}

/// The AWS target of an environment. Endpoint and credentials come from the
/// standard AWS configuration (`AWS_ENDPOINT_URL`, profiles, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AwsTarget {
    pub region: String,
    pub profile: Option<String>,
    /// The EC2 endpoint for this environment (`targets.aws.endpoint`), over
    /// the standard configuration's `AWS_ENDPOINT_URL[_EC2]`.
    pub endpoint: Option<String>,
}

/// Everything a provider needs to reach one environment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EnvTarget {
    /// The repository's project (`tidegate.yaml`): with `environment`, the
    /// owner identity a provider stamps and observes.
    pub project: String,
    /// The owner name written into ownership marks. Usually the environment
    /// name; a blue/green rebuild (`--as prod-green`) uses the new name.
    pub environment: String,
    pub kubernetes: Option<KubeTarget>,
    pub aws: Option<AwsTarget>,
}

/// A resource as Git wants it, references resolved as far as they can be.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub id: ResourceId,
    /// Kubernetes: `group/version/Kind` (`apps/v1/Deployment`, `v1/ConfigMap`);
    /// AWS: the resource type (`vpc`, `instance`, ...).
    pub kind: String,
    /// Kubernetes: the manifest; AWS: the typed spec of the resource type.
    /// May hold [`Value::Unknown`] until its dependencies are applied.
    pub body: Value,
    pub origin: Origin,
}

/// A resource as it is, observed from the provider.
#[derive(Clone, Debug, PartialEq)]
pub struct Live {
    pub id: ResourceId,
    pub kind: String,
    /// The provider's own name for it (`namespace/name`, `vpc-0abc...`).
    pub external_id: String,
    /// Observed state, normalised for comparison with a desired body
    /// (server-owned fields removed, secrets wrapped as sensitive).
    pub body: Value,
    /// Attributes other resources may reference (`id`, `arn`, `private_ip`).
    pub attributes: Map,
}

impl Live {
    /// The attribute that marks a resource whose deletion has begun but
    /// not finished (a Kubernetes object with a `deletionTimestamp`, held
    /// by finalizers); its value says what it waits for.
    pub const DELETING: &'static str = "tidegate:deleting";

    /// The attribute that marks an object carrying the marks of this
    /// environment from before projects existed (no project mark): Git
    /// declaring it adopts it; it is never pruned.
    pub const LEGACY: &'static str = "tidegate:legacy-owner";

    /// The attribute that marks an object carrying [`labels::PRUNE`]
    /// `disabled`: it is kept when Git stops declaring it.
    pub const KEEP: &'static str = "tidegate:prune-disabled";

    /// What the deletion in progress waits for, when one is.
    pub fn deleting(&self) -> Option<&str> {
        match self.attributes.get(Self::DELETING) {
            Some(Value::String(why)) => Some(why),
            _ => None,
        }
    }

    /// Marked by a tidegate from before projects: see [`Self::LEGACY`].
    pub fn is_legacy(&self) -> bool {
        self.attributes.get(Self::LEGACY) == Some(&Value::Bool(true))
    }

    /// Marked `tidegate.dev/prune: disabled`: see [`Self::KEEP`].
    pub fn prune_disabled(&self) -> bool {
        self.attributes.get(Self::KEEP) == Some(&Value::Bool(true))
    }

    /// Sets the [`Self::LEGACY`] and [`Self::KEEP`] attributes.
    pub fn with_marks(mut self, legacy: bool, keep: bool) -> Self {
        if legacy {
            self.attributes
                .insert(Self::LEGACY.into(), Value::Bool(true));
        }
        if keep {
            self.attributes.insert(Self::KEEP.into(), Value::Bool(true));
        }
        self
    }
}

/// What a change to one resource is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Action {
    NoOp,
    Create,
    Update,
    /// Destroy and create again; each reason names an immutable field.
    Replace {
        reasons: Vec<String>,
    },
    Delete,
}

/// The provider's prediction of one change.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub action: Action,
    /// Normalised live state, if the resource exists.
    pub before: Option<Value>,
    /// The state after apply (a server-side dry-run result where the
    /// provider has one), with [`Value::Unknown`] where not yet known.
    pub after: Value,
}

/// Readiness of a live resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum Health {
    Healthy,
    /// Not ready yet; the reason says what is awaited.
    Progressing(String),
    /// Will not become ready without a change; the reason says why.
    Failed(String),
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

/// What one environment asks a provider to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// The kinds (`Desired::kind`) the environment declares through the
    /// provider.
    pub kinds: BTreeSet<String>,
    /// Where the declared objects live (Kubernetes namespaces, as far as
    /// the files decide them); `None`: unknown, look everywhere. Providers
    /// without such places ignore it.
    pub namespaces: Option<BTreeSet<String>>,
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

/// One thing wrong with a resource body, found without any network call.
/// `path` is relative to the body (`ingress[0].fromPort`, empty for the body
/// itself) so the caller can join it with the loader's spans for
/// file:line:column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

/// Builds the provider of `kind` for one environment: the registry of
/// providers, one line each.
pub async fn connect(kind: ProviderKind, target: &EnvTarget) -> Result<Box<dyn Provider>> {
    match kind {
        ProviderKind::Aws => Ok(Box::new(aws::AwsProvider::connect(target).await?)),
        ProviderKind::Kubernetes => Ok(Box::new(kubernetes::Kubernetes::connect(target).await?)),
    }
}
