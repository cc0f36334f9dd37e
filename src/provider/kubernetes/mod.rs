//! The Kubernetes provider: any kind (CRDs included) through discovery and
//! dynamic objects, server-side apply under one field manager, exact diffs
//! from server-side dry-runs, an in-cluster inventory for exact pruning, and
//! health as `kubectl rollout status` judges it.
//!
//! # Expected flow
//!
//! `observe` (one list sequence per kind, label selector, paginated) →
//! `plan` (a `dryRun=All` apply per resource gives the object after apply,
//! compared with the observed one) → `apply` (the same apply for real) →
//! `health`/[`Kubernetes::wait_healthy`] → `record_inventory`; pruning calls
//! `delete` on observed objects Git no longer declares.
//!
//! # Guarantees
//!
//! - Only objects labelled `app.kubernetes.io/managed-by=tidegate`,
//!   `tidegate.dev/project=<project>` and `tidegate.dev/environment=<env>`
//!   are observed, changed or deleted: an existing object without those
//!   labels (or with another project's) makes `plan`/`apply` fail rather
//!   than be taken over, and `delete` re-reads the object and refuses it.
//!   Objects marked before projects existed (no project label) are
//!   observed as legacy: adopted when Git declares them, never pruned.
//! - Field conflicts with other managers are errors naming them, unless the
//!   environment's target sets `force_conflicts`.
//! - Every HTTP request is counted ([`Provider::api_calls`]) and retried with
//!   exponential backoff on 429 (honouring `Retry-After`), 5xx, connection
//!   failures and timeouts, a bounded number of times; the error after the
//!   last attempt belongs to the one resource being handled.
//! - Applying a CRD returns only once it is Established, and custom
//!   resources of its group resolve right after.
//!
//! # Caveats
//!
//! Secret `data` stays in its wire form (base64) inside
//! [`Value::Sensitive`] in observed bodies; changes are detected by comparing
//! those sensitive values, never by printing them.

mod health;
pub mod inventory;
pub mod object;
pub mod schema;
pub mod spec;
pub mod transport;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, Status};

use self::object::{
    claim, conflict_managers, immutable_reasons, json_meta_str, normalise, owned_selector,
    prune_disabled, resource_id, value_claim, with_ownership, Gvk,
};
use self::transport::{CallCounter, RetryConfig};
use super::{
    labels, Action, Change, Claim, Desired, EnvTarget, Error, Health, ListedHealthy, Live, Owner,
    Provider, ProviderKind, ResourceId, Result, Scope,
};
use crate::value::{Map, Value};

pub use self::health::assess;
pub use self::transport::quiet_log_filter;

/// Kinds observed with one list per namespace the environment declares or
/// recorded objects of the kind in, instead of one list across the cluster:
/// the API server authorises a list for every object of the kind whatever
/// the label selector, so a cluster-wide list of Secrets needs the right to
/// read every Secret (ServiceAccount tokens included). Listed per
/// namespace, Secrets need only a RoleBinding in each managed namespace
/// (deploy/rbac.yaml, docs/install.md "RBAC").
pub const PER_NAMESPACE: &[&str] = &["v1/Secret"];

/// Kinds whose objects the cluster makes and keeps itself (copying the
/// labels of what they serve): never a module's, so never discovered.
const CLUSTER_KEPT: &[&str] = &[
    "v1/Endpoints",
    "v1/Event",
    "events.k8s.io/v1/Event",
    "coordination.k8s.io/v1/Lease",
    "v1/ComponentStatus",
];

/// Failures of this provider's own, carried as the source of an
/// [`Error::Api`] or turned into the message of another provider error.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// Loading the kubeconfig (or in-cluster config) failed.
    #[error("cannot load Kubernetes configuration: {0}")]
    Config(String),
    /// A kind string is not `group/version/Kind` or `version/Kind`.
    #[error("kind {kind:?} is not `group/version/Kind` (core: `v1/ConfigMap`)")]
    BadKind { kind: String },
    /// The API server does not serve the kind (no such group/version, or a
    /// CRD not applied yet).
    #[error("the cluster does not serve {kind}; if it is a custom resource, apply its CustomResourceDefinition first")]
    NotServed { kind: String },
    /// The API server refused the request (validation, RBAC, a conflict,
    /// a server error): its message, code and reason.
    #[error("{message} (HTTP {code}{})", if reason.is_empty() { String::new() } else { format!(" {reason}") })]
    Refused {
        code: u16,
        reason: String,
        message: String,
    },
    /// `delete` found an object without tidegate's ownership labels.
    #[error(
        "refusing to delete {kind} {object}: it lacks the ownership labels of tidegate {owner}"
    )]
    NotOwned {
        kind: String,
        object: String,
        owner: Owner,
    },
    /// The in-cluster inventory could not be read.
    #[error(transparent)]
    Inventory(#[from] inventory::Error),
}

/// Tuning knobs; the defaults suit a real cluster.
#[derive(Clone, Debug)]
pub struct Options {
    /// Per HTTP request (connect, read, write).
    pub request_timeout: Duration,
    /// Retries of one HTTP request.
    pub retry: RetryConfig,
    /// Namespace of the inventory ConfigMaps (must exist).
    pub inventory_namespace: String,
    /// Objects per list page.
    pub page_size: u32,
    /// How long `apply` waits for a CRD to be Established or a replaced
    /// object to be gone.
    pub wait_timeout: Duration,
    /// Interval between status reads while waiting.
    pub poll_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            retry: RetryConfig::default(),
            inventory_namespace: "default".into(),
            page_size: 500,
            wait_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_millis(250),
        }
    }
}

/// How the API server serves one kind.
#[derive(Clone, Debug)]
struct Resolved {
    resource: ApiResource,
    namespaced: bool,
}

/// Where one object lives.
struct ObjectRef {
    name: String,
    namespace: Option<String>,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// One environment's Kubernetes cluster.
pub struct Kubernetes {
    client: kube::Client,
    owner: Owner,
    force_conflicts: bool,
    options: Options,
    calls: CallCounter,
    kinds: Mutex<HashMap<Gvk, Resolved>>,
    listed_healthy: ListedHealthy,
    names: Names,
}

/// Ownership checks before a create made without a GET per object: see
/// [`Kubernetes::listed_absent`].
///
/// The window this opens: a name the list did not show is created with no
/// further read, so an object someone else makes under that name between
/// the list and the apply (at most the length of one run: the plan with
/// `--yes`, then the apply; after a prompt the apply observes again and
/// lists anew) is found only in the apply's response, by another manager in
/// its `managedFields` ([`other_managers`]), and the apply fails naming
/// that manager, after its non-forced apply merged tidegate's fields and
/// labels into the object (a field set differently is a conflict error
/// instead). A dry run finds it the same way and is refused as through a
/// GET, before anything is written. A GET first leaves the same race, only
/// shorter (between the GET and the apply); the list trades that for one
/// call per kind and namespace instead of one per create.
#[derive(Default)]
struct Names {
    /// Per `(apiVersion/plural, namespace)`: the creates checked there so
    /// far and the one metadata-only list of the names that exist.
    slots: Mutex<HashMap<(String, Option<String>), NameSlot>>,
    /// Namespaces a dry run found missing since the last observe: nothing
    /// can exist in them, and a dry-run apply there can only say so.
    missing_namespaces: Mutex<BTreeSet<String>>,
}

#[derive(Default)]
struct NameSlot {
    checks: usize,
    /// `None` inside: the list failed (RBAC may allow GET but not list:
    /// Secrets outside the managed namespaces), so each create keeps its GET.
    names: std::sync::Arc<tokio::sync::OnceCell<Option<BTreeSet<String>>>>,
}

impl Names {
    /// Forgets everything: called when an observe starts, so no list is
    /// older than the observation a run plans and applies from.
    fn clear(&self) {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.missing_namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn namespace_missing(&self, namespace: Option<&str>) -> bool {
        namespace.is_some_and(|ns| {
            self.missing_namespaces
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(ns)
        })
    }

    fn set_namespace_missing(&self, namespace: &str, missing: bool) {
        let mut set = self
            .missing_namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if missing {
            set.insert(namespace.to_string());
        } else {
            set.remove(namespace);
        }
    }
}

/// Creates in one kind and namespace checked with a GET each before the
/// provider lists the names there once instead: a create or two into a
/// namespace of many objects stays one small GET each, a mass create is
/// one list.
const GETS_BEFORE_LIST: usize = 4;

impl Kubernetes {
    /// Connects to the environment's kubeconfig context (`KUBECONFIG` or
    /// `~/.kube/config`), or to the in-cluster configuration when the target
    /// names no context.
    pub async fn connect(target: &EnvTarget) -> Result<Self> {
        Self::connect_with(target, Options::default()).await
    }

    /// [`Kubernetes::connect`] with explicit options.
    pub async fn connect_with(target: &EnvTarget, options: Options) -> Result<Self> {
        let kube_target = kube_target(target)?;
        let config = match &kube_target.context {
            Some(context) => kube::Config::from_kubeconfig(&context_options(context))
                .await
                .map_err(|e| config_error(target, e))?,
            None => kube::Config::incluster().map_err(|e| config_error(target, e))?,
        };
        Self::from_config(config, target, options)
    }

    /// Connects through the kubeconfig file at `path`, using the target's
    /// context (or the file's current context when it names none).
    pub async fn connect_kubeconfig(
        path: &std::path::Path,
        target: &EnvTarget,
        options: Options,
    ) -> Result<Self> {
        let kube_target = kube_target(target)?;
        let kubeconfig = Kubeconfig::read_from(path).map_err(|e| config_error(target, e))?;
        let opts = kube_target
            .context
            .as_deref()
            .map(context_options)
            .unwrap_or_default();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &opts)
            .await
            .map_err(|e| config_error(target, e))?;
        Self::from_config(config, target, options)
    }

    /// A provider over an already loaded configuration.
    pub fn from_config(config: kube::Config, target: &EnvTarget, options: Options) -> Result<Self> {
        let kube_target = kube_target(target)?;
        let calls = CallCounter::default();
        let client = transport::client(config, &options.retry, options.request_timeout, &calls)
            .map_err(|e| config_error(target, e))?;
        Ok(Self {
            client,
            owner: Owner::of(target),
            force_conflicts: kube_target.force_conflicts,
            options,
            calls,
            kinds: Mutex::new(HashMap::new()),
            listed_healthy: ListedHealthy::default(),
            names: Names::default(),
        })
    }

    /// Polls [`Provider::health`] until the object is healthy or failed;
    /// [`Error::Timeout`] with the last reason when `timeout` passes first.
    pub async fn wait_healthy(&self, live: &Live, timeout: Duration) -> Result<Health> {
        wait_healthy(self, live, timeout, self.options.poll_interval).await
    }

    /// The kind's API resource, from the discovery cache or one discovery
    /// request for its group/version; `None` when the server does not serve
    /// it. Kinds that are not served are not cached (a CRD may add them).
    async fn resolve(&self, gvk: &Gvk) -> Result<Option<Resolved>> {
        if let Some(r) = self.cached(gvk) {
            return Ok(Some(r));
        }
        let api_version = gvk.api_version();
        let listed = if gvk.group.is_empty() {
            self.client.list_core_api_resources(&gvk.version).await
        } else {
            self.client.list_api_group_resources(&api_version).await
        };
        let list = match listed {
            Ok(list) => list,
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
            Err(e) => return Err(api_error(format!("discover {api_version}"), e)),
        };
        let mut cache = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        for res in list.resources.iter().filter(|r| !r.name.contains('/')) {
            let key = Gvk {
                group: gvk.group.clone(),
                version: gvk.version.clone(),
                kind: res.kind.clone(),
            };
            let resource = ApiResource {
                group: gvk.group.clone(),
                version: gvk.version.clone(),
                api_version: api_version.clone(),
                kind: res.kind.clone(),
                plural: res.name.clone(),
            };
            cache.insert(
                key,
                Resolved {
                    resource,
                    namespaced: res.namespaced,
                },
            );
        }
        Ok(cache.get(gvk).cloned())
    }

    fn cached(&self, gvk: &Gvk) -> Option<Resolved> {
        let cache = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(gvk).cloned()
    }

    /// Drops cached discovery of `group`, so kinds a new CRD adds resolve.
    fn forget_group(&self, group: &str) {
        let mut cache = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|k, _| k.group != group);
    }

    /// Like [`Kubernetes::resolve`], but a kind that is not served is an
    /// error for `operation`.
    async fn resolve_served(&self, gvk: &Gvk, operation: &str) -> Result<Resolved> {
        self.resolve(gvk).await?.ok_or_else(|| Error::Api {
            operation: operation.to_string(),
            retryable: false,
            source: Box::new(KubeError::NotServed {
                kind: gvk.to_string(),
            }),
        })
    }

    fn api(&self, r: &Resolved, namespace: Option<&str>) -> Api<DynamicObject> {
        match (r.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &r.resource),
            (true, None) => Api::namespaced_with(self.client.clone(), "default", &r.resource),
            (false, _) => Api::all_with(self.client.clone(), &r.resource),
        }
    }

    /// Where a desired manifest goes: its name, and its namespace for
    /// namespaced kinds (`default` when the manifest names none).
    fn object_ref(&self, desired: &Desired, manifest: &Value, r: &Resolved) -> Result<ObjectRef> {
        let name = object::meta_str(manifest, "name")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid(desired, "the manifest has no metadata.name"))?;
        let namespace = r.namespaced.then(|| {
            object::meta_str(manifest, "namespace")
                .unwrap_or("default")
                .to_string()
        });
        Ok(ObjectRef {
            name: name.to_string(),
            namespace,
        })
    }

    /// The manifest for `desired`, ownership marks added.
    fn manifest(&self, desired: &Desired) -> Result<(Gvk, Value)> {
        let gvk = Gvk::parse(&desired.kind).ok_or_else(|| {
            invalid(
                desired,
                &KubeError::BadKind {
                    kind: desired.kind.clone(),
                }
                .to_string(),
            )
        })?;
        if !matches!(desired.body, Value::Map(_)) {
            return Err(invalid(desired, "the manifest is not a map"));
        }
        let mut manifest = with_ownership(&desired.body, &gvk, &self.owner, &desired.id);
        object::with_applied_hash(&mut manifest, &gvk);
        Ok((gvk, manifest))
    }

    /// True when `target` cannot exist, so the ownership GET before its
    /// create is not needed: its namespace was found missing, or the one
    /// metadata-only list (unfiltered: every owner's objects) of its kind in
    /// its namespace does not hold its name. The list is made on the
    /// [`GETS_BEFORE_LIST`]+1st create checked there and kept until the next
    /// observe; until then, and when the list fails, each create is checked
    /// with a GET ([`Kubernetes::existing_owned`]). A listed name still goes
    /// through that GET and its `claim`, so an object made outside tidegate
    /// is refused with the same error. The race this leaves is described at
    /// [`Names`].
    async fn listed_absent(&self, r: &Resolved, target: &ObjectRef) -> bool {
        if self.names.namespace_missing(target.namespace.as_deref()) {
            return true;
        }
        let key = (
            format!("{}/{}", r.resource.api_version, r.resource.plural),
            target.namespace.clone(),
        );
        let cell = {
            let mut slots = self.names.slots.lock().unwrap_or_else(|e| e.into_inner());
            let slot = slots.entry(key).or_default();
            slot.checks += 1;
            if slot.checks <= GETS_BEFORE_LIST {
                return false;
            }
            slot.names.clone()
        };
        let names = cell
            .get_or_init(|| self.list_names(r, target.namespace.as_deref()))
            .await;
        names.as_ref().is_some_and(|n| !n.contains(&target.name))
    }

    /// The names of every object of `r` in `namespace` (all namespaces'
    /// for a cluster-scoped kind), metadata only, page by page; `None` when
    /// the list fails.
    async fn list_names(&self, r: &Resolved, namespace: Option<&str>) -> Option<BTreeSet<String>> {
        let api = self.api(r, namespace);
        let mut names = BTreeSet::new();
        let mut token: Option<String> = None;
        loop {
            let mut params = ListParams::default().limit(self.options.page_size);
            if let Some(t) = &token {
                params = params.continue_token(t);
            }
            let page = match api.list_metadata(&params).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::debug!(kind = %r.resource.kind, namespace = ?namespace, error = %e, "listing names failed; checking each create with a GET");
                    return None;
                }
            };
            names.extend(page.items.into_iter().filter_map(|m| m.metadata.name));
            match page.metadata.continue_ {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Some(names),
            }
        }
    }

    /// The existing object at `target` when there is one and tidegate owns
    /// it for this environment; an error when it exists unowned, because
    /// applying would take it over.
    async fn existing_owned(
        &self,
        desired: &Desired,
        gvk: &Gvk,
        r: &Resolved,
        target: &ObjectRef,
    ) -> Result<Option<serde_json::Value>> {
        let api = self.api(r, target.namespace.as_deref());
        let found = api
            .get_opt(&target.name)
            .await
            .map_err(|e| api_error(format!("get {gvk} {target}"), e))?;
        let Some(obj) = found else { return Ok(None) };
        let obj = to_json(obj);
        let message = match claim(obj.pointer("/metadata/labels"), &self.owner) {
            Claim::Ours | Claim::Legacy => return Ok(Some(obj)),
            Claim::Foreign(other) => format!(
                "{gvk} {target} already exists and belongs to another tidegate installation \
                 ({other}); this repository is {ours}. tidegate never takes over another \
                 owner's objects: rename one of them, or remove it from the other repository first",
                ours = self.owner,
            ),
            Claim::Unmanaged => format!(
                "{gvk} {target} already exists and is not owned by tidegate ({ours}): labels \
                 {mb}={m}, {pl}={project} and {el}={env} missing; tidegate never takes over \
                 objects it did not create: adopt it with `tidegate import {env} {id} {target}` \
                 (shows the difference, then stamps the marks), or delete or rename it",
                ours = self.owner,
                env = self.owner.environment,
                project = self.owner.project,
                mb = labels::MANAGED_BY,
                m = labels::MANAGER,
                pl = labels::PROJECT,
                el = labels::ENVIRONMENT,
                id = desired.id,
            ),
        };
        Err(invalid(desired, &message))
    }

    /// A server-side apply of `manifest` (a dry run when `dry_run`).
    async fn server_side_apply(
        &self,
        r: &Resolved,
        target: &ObjectRef,
        manifest: &Value,
        dry_run: bool,
        imported: bool,
    ) -> std::result::Result<serde_json::Value, kube::Error> {
        let mut params = PatchParams::apply(labels::FIELD_MANAGER);
        // An imported object's fields are still managed by whoever made
        // it: its first apply takes them over.
        params.force = self.force_conflicts || imported;
        params.dry_run = dry_run;
        let api = self.api(r, target.namespace.as_deref());
        // The plaintext of secrets exists only for the length of this call.
        let body = match manifest.to_json_exposed() {
            Ok(b) => b,
            Err(e) => {
                return Err(kube::Error::BuildRequest(
                    kube::core::request::Error::Validation(e.to_string()),
                ))
            }
        };
        let result = api.patch(&target.name, &params, &Patch::Apply(&body)).await;
        drop(body);
        result.map(to_json)
    }

    /// The server's validation of an object whose namespace does not exist
    /// yet: a dry-run create of a copy in namespace `default`. Validation
    /// runs before the existence check, so `AlreadyExists` (a namesake in
    /// `default`) passes; so do `Forbidden` and `NotFound` (no right to
    /// write `default`, or no such namespace): then only the apply tells.
    async fn validate_elsewhere(
        &self,
        desired: &Desired,
        gvk: &Gvk,
        r: &Resolved,
        target: &ObjectRef,
        manifest: &Value,
    ) -> Result<()> {
        let Ok(mut body) = manifest.to_json_exposed() else {
            return Ok(());
        };
        if let Some(meta) = body.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.insert("namespace".into(), "default".into());
        }
        let object: std::result::Result<DynamicObject, _> = serde_json::from_value(body);
        let Ok(object) = object else {
            return Ok(());
        };
        let params = PostParams {
            dry_run: true,
            field_manager: Some(labels::FIELD_MANAGER.to_string()),
        };
        let api = self.api(r, Some("default"));
        match api.create(&params, &object).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if matches!(s.code, 403 | 404 | 409) => Ok(()),
            Err(e) => Err(self.apply_error(desired, gvk, target, true, e)),
        }
    }

    /// The error for a kind the server does not serve, naming the kinds
    /// its group/version does serve when the group/version exists.
    fn not_served(&self, gvk: &Gvk) -> Error {
        let cache = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let mut served: Vec<&str> = cache
            .keys()
            .filter(|k| k.group == gvk.group && k.version == gvk.version)
            .map(|k| k.kind.as_str())
            .collect();
        served.sort_unstable();
        let hint = if served.is_empty() {
            format!(
                "no API group/version {} is served; check apiVersion",
                gvk.api_version()
            )
        } else {
            format!(
                "{} serves {}; check kind",
                gvk.api_version(),
                served.join(", ")
            )
        };
        Error::NotServed {
            kind: gvk.to_string(),
            hint,
        }
    }

    /// Maps a failed apply of `desired` to the provider error.
    fn apply_error(
        &self,
        desired: &Desired,
        gvk: &Gvk,
        target: &ObjectRef,
        dry_run: bool,
        e: kube::Error,
    ) -> Error {
        if let kube::Error::Api(s) = &e {
            if s.code == 409 {
                return Error::Conflict {
                    id: desired.id.clone(),
                    managers: conflict_managers(s),
                };
            }
        }
        let verb = if dry_run { "dry-run apply" } else { "apply" };
        api_error(format!("{verb} {gvk} {target} ({})", desired.id), e)
    }

    /// Deletes the object now at `target` (exactly that one: uid
    /// precondition) and waits until it is gone, for a replacement.
    async fn delete_and_wait(
        &self,
        desired: &Desired,
        gvk: &Gvk,
        r: &Resolved,
        target: &ObjectRef,
    ) -> Result<()> {
        let api = self.api(r, target.namespace.as_deref());
        let operation = format!("replace {gvk} {target}");
        let Some(current) = api
            .get_opt(&target.name)
            .await
            .map_err(|e| api_error(operation.clone(), e))?
        else {
            return Ok(());
        };
        let uid = current.metadata.uid.clone();
        let params = DeleteParams::background().preconditions(Preconditions {
            uid: uid.clone(),
            resource_version: None,
        });
        match api.delete(&target.name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(api_error(operation, e)),
        }
        let deadline = Instant::now() + self.options.wait_timeout;
        loop {
            let now = api
                .get_opt(&target.name)
                .await
                .map_err(|e| api_error(operation.clone(), e))?;
            match now {
                None => return Ok(()),
                Some(o) if o.metadata.uid != uid => return Ok(()),
                Some(_) if Instant::now() >= deadline => {
                    return Err(Error::Timeout {
                        id: desired.id.clone(),
                        seconds: self.options.wait_timeout.as_secs(),
                        reason: format!("{gvk} {target} still exists after delete (finalizers?)"),
                    })
                }
                Some(_) => tokio::time::sleep(self.options.poll_interval).await,
            }
        }
    }

    /// Waits until a just-applied CRD is Established, then forgets cached
    /// discovery of its group so its custom resources resolve.
    async fn wait_established(
        &self,
        desired: &Desired,
        gvk: &Gvk,
        r: &Resolved,
        target: &ObjectRef,
        applied: &serde_json::Value,
    ) -> Result<()> {
        let api = self.api(r, None);
        let deadline = Instant::now() + self.options.wait_timeout;
        let mut current = applied.clone();
        loop {
            match assess(&gvk.group, &gvk.kind, &current) {
                Health::Healthy => break,
                Health::Failed(reason) => {
                    return Err(Error::Timeout {
                        id: desired.id.clone(),
                        seconds: 0,
                        reason,
                    })
                }
                Health::Progressing(reason) if Instant::now() >= deadline => {
                    return Err(Error::Timeout {
                        id: desired.id.clone(),
                        seconds: self.options.wait_timeout.as_secs(),
                        reason,
                    })
                }
                Health::Progressing(_) => tokio::time::sleep(self.options.poll_interval).await,
            }
            current = to_json(
                api.get(&target.name)
                    .await
                    .map_err(|e| api_error(format!("get {gvk} {target}"), e))?,
            );
        }
        if let Some(group) = current.pointer("/spec/group").and_then(|g| g.as_str()) {
            self.forget_group(group);
        }
        Ok(())
    }

    /// The observed form of an object of `kind`.
    fn live_of(&self, id: ResourceId, kind: &str, gvk: &Gvk, obj: serde_json::Value) -> Live {
        let name = json_meta_str(&obj, "name").unwrap_or_default().to_string();
        let namespace = json_meta_str(&obj, "namespace").map(str::to_string);
        let uid = json_meta_str(&obj, "uid").map(str::to_string);
        let mut attributes = Map::new();
        attributes.insert("metadata.name".into(), Value::String(name.clone()));
        if let Some(ns) = &namespace {
            attributes.insert("metadata.namespace".into(), Value::String(ns.clone()));
        }
        if let Some(uid) = uid {
            attributes.insert("metadata.uid".into(), Value::String(uid));
        }
        if let Some(hash) = object::applied_hash(&obj) {
            attributes.insert(labels::APPLIED_HASH.into(), Value::String(hash.into()));
        }
        let marked = obj
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(labels::IMPORTED))
            .is_some();
        if marked {
            attributes.insert(labels::IMPORTED.into(), Value::String("true".into()));
        }
        if let Some(why) = deletion_in_progress(&obj) {
            attributes.insert(Live::DELETING.into(), Value::String(why));
        }
        let external_id = match &namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name,
        };
        Live {
            id,
            kind: kind.to_string(),
            external_id,
            body: normalise(obj, gvk),
            attributes,
        }
    }

    /// The inventory entries of this environment, empty when none is stored.
    async fn read_inventory(&self) -> Result<BTreeMap<String, inventory::Entry>> {
        let api: Api<ConfigMap> =
            Api::namespaced(self.client.clone(), &self.options.inventory_namespace);
        let name = inventory::configmap_name(&self.owner);
        let operation = format!("read inventory {}/{name}", self.options.inventory_namespace);
        let mut cm = api
            .get_opt(&name)
            .await
            .map_err(|e| api_error(operation.clone(), e))?;
        if cm.is_none() {
            // Written before projects: read it once, the next record writes
            // the new name. Its entries only name kinds and ids; ownership
            // still comes from each object's own marks.
            let legacy = inventory::legacy_configmap_name(&self.owner.environment);
            cm = api
                .get_opt(&legacy)
                .await
                .map_err(|e| api_error(format!("read inventory {legacy}"), e))?;
        }
        let data = cm.and_then(|c| c.data).unwrap_or_default();
        inventory::parse(&data).map_err(|e| Error::Api {
            operation,
            retryable: false,
            source: Box::new(KubeError::from(e)),
        })
    }

    /// Every owned object of one kind, in namespace `namespace` (`None`:
    /// all): one list request per page.
    async fn list_owned(
        &self,
        kind: &str,
        namespace: Option<&str>,
        inventory: &BTreeMap<String, inventory::Entry>,
    ) -> Result<Vec<Live>> {
        let gvk = Gvk::parse(kind).ok_or_else(|| Error::Api {
            operation: "observe".into(),
            retryable: false,
            source: Box::new(KubeError::BadKind { kind: kind.into() }),
        })?;
        let Some(r) = self.resolve(&gvk).await? else {
            // Not served (yet): nothing of this kind can exist.
            return Ok(Vec::new());
        };
        let api: Api<DynamicObject> = match namespace.filter(|_| r.namespaced) {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &r.resource),
            None => Api::all_with(self.client.clone(), &r.resource),
        };
        let selector = owned_selector(&self.owner.environment);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut params = ListParams::default()
                .labels(&selector)
                .limit(self.options.page_size);
            if let Some(t) = &token {
                params = params.continue_token(t);
            }
            let page = api.list(&params).await.map_err(|e| {
                let forbidden = matches!(&e, kube::Error::Api(s) if s.code == 403);
                match namespace {
                    // Listed per namespace so that RBAC can grant it per
                    // namespace: say which grant is missing.
                    Some(ns) if forbidden => api_error(
                        format!(
                            "list {gvk} in namespace {ns} (tidegate may read {gvk} only where a \
                             RoleBinding of ClusterRole tidegate-secrets grants it: create the \
                             namespace and that RoleBinding in it as in \
                             deploy/managed-namespaces.yaml, see docs/install.md \"RBAC limits\")"
                        ),
                        e,
                    ),
                    Some(ns) => api_error(format!("list {gvk} in namespace {ns}"), e),
                    None => api_error(format!("list {gvk}"), e),
                }
            })?;
            for item in page.items {
                if let Some(live) = self.observed(kind, &gvk, to_json(item), inventory) {
                    out.push(live);
                }
            }
            match page.metadata.continue_ {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        Ok(out)
    }

    /// [`Provider::discover`] of one kind.
    async fn discover_kind(
        &self,
        gvk: &Gvk,
        resource: &ApiResource,
        selector: &str,
        out: &mut super::Discovery,
    ) -> Result<()> {
        let kind = gvk.to_string();
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), resource);
        let mut made_by_owners = 0usize;
        let mut token: Option<String> = None;
        loop {
            let mut params = ListParams::default()
                .labels(selector)
                .limit(self.options.page_size);
            if let Some(t) = &token {
                params = params.continue_token(t);
            }
            let page = match api.list(&params).await {
                Ok(page) => page,
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    out.unlisted.push(kind);
                    return Ok(());
                }
                Err(e) => return Err(api_error(format!("list {gvk} ({selector})"), e)),
            };
            for item in page.items {
                let obj = to_json(item);
                let name = json_meta_str(&obj, "name").unwrap_or_default().to_string();
                let external_id = match json_meta_str(&obj, "namespace") {
                    Some(ns) => format!("{ns}/{name}"),
                    None => name.clone(),
                };
                let owned_by_another = obj
                    .pointer("/metadata/ownerReferences")
                    .and_then(serde_json::Value::as_array)
                    .is_some_and(|refs| !refs.is_empty());
                if owned_by_another {
                    made_by_owners += 1;
                    continue;
                }
                if PER_NAMESPACE.contains(&kind.as_str()) {
                    out.passed.push(super::Passed {
                        kind: kind.clone(),
                        external_id,
                        reason: "a Secret's values belong in SOPS: declare it from a secrets file, then `tidegate import`".into(),
                    });
                    continue;
                }
                let claim = claim(obj.pointer("/metadata/labels"), &self.owner);
                let body = normalise(object::authored(&obj), gvk);
                out.found.push(super::Discovered {
                    kind: kind.clone(),
                    external_id,
                    name,
                    body,
                    claim,
                });
            }
            match page.metadata.continue_ {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        if made_by_owners > 0 {
            out.passed.push(super::Passed {
                kind,
                external_id: format!("{made_by_owners} object(s)"),
                reason: "made by a controller for their owner (ownerReferences); the owner is what a module declares".into(),
            });
        }
        Ok(())
    }

    /// A listed object as [`Live`], when it is owned and identifiable (by
    /// its annotation, or else by its inventory entry).
    fn observed(
        &self,
        kind: &str,
        gvk: &Gvk,
        obj: serde_json::Value,
        inventory: &BTreeMap<String, inventory::Entry>,
    ) -> Option<Live> {
        let legacy = match claim(obj.pointer("/metadata/labels"), &self.owner) {
            Claim::Ours => false,
            Claim::Legacy => true,
            // Another project's environment of the same name: not ours.
            Claim::Foreign(_) | Claim::Unmanaged => return None,
        };
        let keep = prune_disabled(&obj);
        let name = json_meta_str(&obj, "name")?;
        let key = inventory::stable_id(
            json_meta_str(&obj, "namespace").unwrap_or(""),
            name,
            &gvk.group,
            &gvk.kind,
        );
        let id = resource_id(&obj).or_else(|| inventory.get(&key).and_then(inventory::entry_id));
        let Some(id) = id else {
            tracing::warn!(object = %key, "owned object without a tidegate.dev/resource annotation; ignored");
            return None;
        };
        let healthy = assess(&gvk.group, &gvk.kind, &obj) == Health::Healthy;
        let live = self.live_of(id, kind, gvk, obj).with_marks(legacy, keep);
        if healthy {
            self.listed_healthy.mark(&live.kind, &live.external_id);
        }
        Some(live)
    }
}

#[async_trait::async_trait]
impl Provider for Kubernetes {
    /// The object the desired manifest names (`external_id`, written
    /// `[Kind/][namespace/]name`, must name the same one: an object keeps
    /// its name; empty: that object), whatever its labels.
    async fn lookup(&self, desired: &Desired, external_id: &str) -> Result<Option<super::Found>> {
        let (gvk, manifest) = self.manifest(desired)?;
        let operation = format!("get {gvk} ({})", desired.id);
        let r = self.resolve_served(&gvk, &operation).await?;
        let target = self.object_ref(desired, &manifest, &r)?;
        let parts: Vec<&str> = external_id.split('/').collect();
        let (kind, namespace, name) = match parts.as_slice() {
            // None given: the object the manifest names.
            [""] => (None, None, target.name.as_str()),
            [name] => (None, None, *name),
            [ns, name] if r.namespaced => (None, Some(*ns), *name),
            [kind, name] => (Some(*kind), None, *name),
            [kind, ns, name] => (Some(*kind), Some(*ns), *name),
            _ => {
                return Err(invalid(
                    desired,
                    &format!("`{external_id}` is not `[Kind/][namespace/]name`"),
                ))
            }
        };
        let same_kind = kind.is_none_or(|k| k.eq_ignore_ascii_case(&gvk.kind));
        let same_ns = namespace.is_none_or(|n| target.namespace.as_deref() == Some(n));
        if !same_kind || !same_ns || name != target.name {
            return Err(invalid(
                desired,
                &format!(
                    "the module declares {gvk} {target}, not `{external_id}`: an imported object keeps its kind, namespace and name, so declare those in the manifest"
                ),
            ));
        }
        let api = self.api(&r, target.namespace.as_deref());
        let found = api
            .get_opt(&target.name)
            .await
            .map_err(|e| api_error(format!("get {gvk} {target}"), e))?;
        let Some(obj) = found else { return Ok(None) };
        let obj = to_json(obj);
        let claim = claim(obj.pointer("/metadata/labels"), &self.owner);
        let live = self.live_of(desired.id.clone(), &desired.kind, &gvk, obj);
        Ok(Some(super::Found { live, claim }))
    }

    /// A forced server-side apply (field manager `tidegate`) of the
    /// ownership marks and of every field the manifest declares *at its
    /// live value*: tidegate becomes the manager of the fields Git
    /// declares (so the next apply may change them without a conflict with
    /// whoever made the object) while no value changes.
    async fn adopt(&self, desired: &Desired, found: &Live) -> Result<()> {
        let gvk = Gvk::parse(&desired.kind).ok_or_else(|| {
            invalid(
                desired,
                &KubeError::BadKind {
                    kind: desired.kind.clone(),
                }
                .to_string(),
            )
        })?;
        let operation = format!("adopt {gvk} ({})", desired.id);
        let r = self.resolve_served(&gvk, &operation).await?;
        let target = self.object_ref(desired, &desired.body, &r)?;
        let at_live = object::at_live_values(&desired.body, &found.body);
        let mut manifest = with_ownership(&at_live, &gvk, &self.owner, &desired.id);
        if let Value::Map(root) = &mut manifest {
            if let Some(Value::Map(meta)) = root.get_mut("metadata") {
                if let Some(Value::Map(a)) = meta.get_mut("annotations") {
                    a.insert(labels::IMPORTED.into(), Value::String("true".into()));
                }
            }
        }
        let body = manifest
            .to_json_exposed()
            .map_err(|e| invalid(desired, &e.to_string()))?;
        let mut params = PatchParams::apply(labels::FIELD_MANAGER);
        params.force = true;
        self.listed_healthy.forget(found);
        let result = self
            .api(&r, target.namespace.as_deref())
            .patch(&target.name, &params, &Patch::Apply(&body))
            .await;
        drop(body);
        result.map_err(|e| api_error(format!("adopt {gvk} {target}"), e))?;
        Ok(())
    }

    /// Every object the label selector selects, of every kind the server
    /// serves and lists (one list sequence per kind, across namespaces):
    /// each as the manifest of the fields its authors set
    /// ([`object::authored`]). Left out: what a controller made for another
    /// object (`ownerReferences`: its owner is found instead), Secrets
    /// (their values belong in SOPS), objects the cluster keeps itself
    /// (Endpoints, Events, Leases), and kinds tidegate may not list.
    async fn discover(&self, selector: &super::Selector) -> Result<super::Discovery> {
        let super::Selector::Label(selector) = selector else {
            return Ok(Default::default());
        };
        let served = kube::discovery::Discovery::new(self.client.clone())
            .run()
            .await
            .map_err(|e| api_error("discover the served kinds".into(), e))?;
        let mut out = super::Discovery::default();
        for group in served.groups() {
            for (resource, caps) in group.recommended_resources() {
                if !caps.supports_operation(kube::discovery::verbs::LIST) {
                    continue;
                }
                let gvk = Gvk {
                    group: resource.group.clone(),
                    version: resource.version.clone(),
                    kind: resource.kind.clone(),
                };
                let kind = gvk.to_string();
                if CLUSTER_KEPT.contains(&kind.as_str()) {
                    continue;
                }
                self.discover_kind(&gvk, &resource, selector, &mut out)
                    .await?;
            }
        }
        Ok(out)
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Kubernetes
    }

    async fn observe(&self, kinds: &[String]) -> Result<Vec<Live>> {
        self.observe_in(&Scope {
            kinds: kinds.iter().cloned().collect(),
            namespaces: None,
        })
        .await
    }

    async fn observe_in(&self, scope: &Scope) -> Result<Vec<Live>> {
        self.listed_healthy.clear();
        self.names.clear();
        let inventory = self.read_inventory().await?;
        let all: BTreeSet<&str> = scope
            .kinds
            .iter()
            .map(String::as_str)
            .chain(inventory.values().map(|e| e.kind.as_str()))
            .collect();
        // Each list: a kind across the cluster, or a kind listed namespace
        // by namespace in every namespace the environment declares or
        // recorded objects of that kind in.
        let mut lists: Vec<(&str, Option<String>)> = Vec::new();
        for kind in all {
            match (&scope.namespaces, PER_NAMESPACE.contains(&kind)) {
                (Some(declared), true) => {
                    let recorded = inventory
                        .iter()
                        .filter(|(_, e)| e.kind == kind)
                        .filter_map(|(key, _)| inventory::namespace_of(key));
                    let places: BTreeSet<String> = declared
                        .iter()
                        .cloned()
                        .chain(recorded.map(str::to_string))
                        .collect();
                    lists.extend(places.into_iter().map(|ns| (kind, Some(ns))));
                }
                _ => lists.push((kind, None)),
            }
        }
        let lists = futures::future::try_join_all(
            lists
                .iter()
                .map(|(k, ns)| self.list_owned(k, ns.as_deref(), &inventory)),
        )
        .await?;
        Ok(lists.into_iter().flatten().collect())
    }

    async fn plan(&self, desired: &Desired, live: Option<&Live>) -> Result<Change> {
        let (gvk, manifest) = self.manifest(desired)?;
        let mut before = live.map(|l| l.body.clone());
        let predicted = |before: Option<Value>, after: Value| Change {
            action: if before.is_some() {
                Action::Update
            } else {
                Action::Create
            },
            before,
            after,
        };
        if manifest.has_unknown() {
            return Ok(predicted(before, manifest));
        }
        // Applied by tidegate from this very manifest and not changed since
        // in any field tidegate sets: the dry run could only say "no change".
        if live.is_some_and(|l| unchanged_since_applied(&manifest, l)) {
            return Ok(Change::no_op());
        }
        let Some(r) = self.resolve(&gvk).await? else {
            // Unless a CRD applied earlier in this run defines it (the plan
            // stage knows from the graph and predicts the create), a kind
            // the server does not serve is a mistake.
            return Err(self.not_served(&gvk));
        };
        let target = self.object_ref(desired, &manifest, &r)?;
        let listed_absent = before.is_none() && self.listed_absent(&r, &target).await;
        if before.is_none() && !listed_absent {
            before = self
                .existing_owned(desired, &gvk, &r, &target)
                .await?
                .map(|o| normalise(o, &gvk));
        }
        if listed_absent && self.names.namespace_missing(target.namespace.as_deref()) {
            // A dry-run apply could only answer that the namespace is
            // missing (it is applied earlier in this run).
            self.validate_elsewhere(desired, &gvk, &r, &target, &manifest)
                .await?;
            return Ok(predicted(None, manifest));
        }
        match self
            .server_side_apply(&r, &target, &manifest, true, imported(live))
            .await
        {
            Ok(obj) => {
                if listed_absent && !other_managers(&obj).is_empty() {
                    // Made by someone else since the list: checked as
                    // without it (an unowned object is refused).
                    before = self
                        .existing_owned(desired, &gvk, &r, &target)
                        .await?
                        .map(|o| normalise(o, &gvk));
                }
                let after = normalise(obj, &gvk);
                let action = match &before {
                    None => Action::Create,
                    Some(b) if *b == after => return Ok(Change::no_op()),
                    Some(_) => Action::Update,
                };
                Ok(Change {
                    action,
                    before,
                    after,
                })
            }
            Err(kube::Error::Api(s)) if before.is_some() && immutable_reasons(&s).is_some() => {
                Ok(Change {
                    action: Action::Replace {
                        reasons: immutable_reasons(&s).unwrap_or_default(),
                    },
                    before,
                    after: manifest,
                })
            }
            // The namespace does not exist yet: it is applied earlier in
            // this run. The server still validates the object, elsewhere.
            Err(kube::Error::Api(s)) if before.is_none() && s.code == 404 => {
                if let Some(ns) = missing_namespace(&s) {
                    self.names.set_namespace_missing(ns, true);
                }
                self.validate_elsewhere(desired, &gvk, &r, &target, &manifest)
                    .await?;
                Ok(predicted(None, manifest))
            }
            Err(e) => Err(self.apply_error(desired, &gvk, &target, true, e)),
        }
    }

    async fn apply(&self, desired: &Desired, live: Option<&Live>) -> Result<Live> {
        if let Some(l) = live {
            self.listed_healthy.forget(l);
        }
        let (gvk, manifest) = self.manifest(desired)?;
        if let Some((path, reference)) = object::first_unknown(&manifest, "") {
            return Err(invalid(
                desired,
                &format!("{path} is not known yet (waits on {reference}); apply that first"),
            ));
        }
        let operation = format!("apply {gvk} ({})", desired.id);
        let r = self.resolve_served(&gvk, &operation).await?;
        let target = self.object_ref(desired, &manifest, &r)?;
        let listed_absent = live.is_none() && self.listed_absent(&r, &target).await;
        if live.is_none() && !listed_absent {
            self.existing_owned(desired, &gvk, &r, &target).await?;
        }
        let obj = match self
            .server_side_apply(&r, &target, &manifest, false, imported(live))
            .await
        {
            Ok(obj) => obj,
            Err(kube::Error::Api(s)) if immutable_reasons(&s).is_some() => {
                tracing::info!(resource = %desired.id, reasons = ?immutable_reasons(&s), "replacing");
                self.delete_and_wait(desired, &gvk, &r, &target).await?;
                self.server_side_apply(&r, &target, &manifest, false, false)
                    .await
                    .map_err(|e| self.apply_error(desired, &gvk, &target, false, e))?
            }
            Err(e) => return Err(self.apply_error(desired, &gvk, &target, false, e)),
        };
        if listed_absent {
            let others = other_managers(&obj);
            if !others.is_empty() {
                // Give back what the apply merged in: an apply of nothing
                // by tidegate's field manager removes the fields (marks
                // included) that only tidegate holds, and keeps what they
                // set. Not after a forced apply: the fields taken from
                // them would be removed.
                let withdrawn = !self.force_conflicts
                    && self
                        .server_side_apply(&r, &target, &bare(&manifest), false, false)
                        .await
                        .is_ok();
                return Err(invalid(
                    desired,
                    &format!(
                        "{gvk} {target} was created by someone else ({}) after tidegate listed \
                         the names in its namespace and before this apply{}; check the object, \
                         then keep it with `tidegate import {env} {id} {target}` or delete it",
                        others.join(", "),
                        if withdrawn {
                            "; tidegate withdrew the fields and marks the apply had merged into it"
                        } else if self.force_conflicts {
                            ", which merged tidegate's fields and marks into it (force_conflicts \
                             is on: fields they set differently are tidegate's now)"
                        } else {
                            ", which merged tidegate's fields and marks into it; withdrawing them \
                             failed"
                        },
                        env = self.owner.environment,
                        id = desired.id,
                    ),
                ));
            }
        }
        if gvk.group.is_empty() && gvk.kind == "Namespace" {
            self.names.set_namespace_missing(&target.name, false);
        }
        if gvk.is_crd() {
            self.wait_established(desired, &gvk, &r, &target, &obj)
                .await?;
        }
        // The response is the object as the apply left it: when it already
        // shows healthy (a ConfigMap; a Deployment whose rollout did not
        // change), a read right after could say no more.
        let healthy = assess(&gvk.group, &gvk.kind, &obj) == Health::Healthy;
        let live = self.live_of(desired.id.clone(), &desired.kind, &gvk, obj);
        if healthy {
            self.listed_healthy.mark(&live.kind, &live.external_id);
        }
        Ok(live)
    }

    async fn delete(&self, live: &Live) -> Result<()> {
        self.listed_healthy.forget(live);
        let refuse = || Error::Api {
            operation: format!("delete {} {}", live.kind, live.external_id),
            retryable: false,
            source: Box::new(KubeError::NotOwned {
                kind: live.kind.clone(),
                object: live.external_id.clone(),
                owner: self.owner.clone(),
            }),
        };
        if !value_claim(&live.body, &self.owner).is_ours() {
            return Err(refuse());
        }
        let gvk = Gvk::parse(&live.kind).ok_or_else(|| Error::Api {
            operation: "delete".into(),
            retryable: false,
            source: Box::new(KubeError::BadKind {
                kind: live.kind.clone(),
            }),
        })?;
        let Some(r) = self.resolve(&gvk).await? else {
            return Ok(()); // the kind is gone, and with it the object
        };
        let name = object::meta_str(&live.body, "name").unwrap_or_default();
        let namespace = object::meta_str(&live.body, "namespace");
        let api = self.api(&r, namespace);
        let operation = format!("delete {gvk} {}", live.external_id);
        // Re-read: the object now at that name may not be the one observed.
        let Some(current) = api
            .get_opt(name)
            .await
            .map_err(|e| api_error(operation.clone(), e))?
        else {
            return Ok(());
        };
        let current = to_json(current);
        if !claim(current.pointer("/metadata/labels"), &self.owner).is_ours() {
            return Err(refuse());
        }
        let params = DeleteParams::background().preconditions(Preconditions {
            uid: json_meta_str(&current, "uid").map(str::to_string),
            resource_version: None,
        });
        match api.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(api_error(operation, e)),
        }
    }

    async fn health(&self, live: &Live) -> Result<Health> {
        if self.listed_healthy.contains(live) {
            return Ok(Health::Healthy);
        }
        let Some(gvk) = Gvk::parse(&live.kind) else {
            return Ok(Health::Failed(format!("unknown kind {}", live.kind)));
        };
        let Some(r) = self.resolve(&gvk).await? else {
            return Ok(Health::Failed(format!(
                "the cluster no longer serves {gvk}"
            )));
        };
        let name = object::meta_str(&live.body, "name").unwrap_or_default();
        let api = self.api(&r, object::meta_str(&live.body, "namespace"));
        let found = api
            .get_opt(name)
            .await
            .map_err(|e| api_error(format!("health {gvk} {}", live.external_id), e))?;
        Ok(match found {
            Some(obj) => assess(&gvk.group, &gvk.kind, &to_json(obj)),
            None => Health::Failed(format!("{gvk} {} does not exist", live.external_id)),
        })
    }

    async fn record_inventory(&self, owned: &[Live]) -> Result<()> {
        let name = inventory::configmap_name(&self.owner);
        let namespace = &self.options.inventory_namespace;
        let cm = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {
                    labels::MANAGED_BY: labels::MANAGER,
                    labels::PROJECT: self.owner.project,
                    "tidegate.dev/inventory": self.owner.environment,
                },
            },
            "data": inventory::data(owned),
        });
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        // The inventory belongs to tidegate alone: take it over if needed.
        let params = PatchParams::apply(labels::FIELD_MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(&cm))
            .await
            .map_err(|e| api_error(format!("write inventory {namespace}/{name}"), e))?;
        Ok(())
    }

    fn api_calls(&self) -> BTreeMap<String, u64> {
        self.calls.snapshot()
    }

    fn api_retries(&self) -> BTreeMap<String, u64> {
        self.calls.retries()
    }
}

/// The field managers other than tidegate in an object's
/// `metadata.managedFields`: none on an object tidegate's apply just
/// created.
/// `manifest` reduced to what names the object: applied by tidegate's
/// field manager, it gives up every field tidegate holds.
fn bare(manifest: &Value) -> Value {
    let mut meta = crate::value::Map::new();
    for key in ["name", "namespace"] {
        if let Some(v) = manifest.get_path(&format!("metadata.{key}")) {
            meta.insert(key.into(), v.clone());
        }
    }
    let mut out = crate::value::Map::new();
    for key in ["apiVersion", "kind"] {
        if let Some(v) = manifest.get_path(key) {
            out.insert(key.into(), v.clone());
        }
    }
    out.insert("metadata".into(), Value::Map(meta));
    Value::Map(out)
}

fn other_managers(obj: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = obj
        .pointer("/metadata/managedFields")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("manager").and_then(serde_json::Value::as_str))
        .filter(|m| *m != labels::FIELD_MANAGER)
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The namespace a 404 says is missing (`namespaces "x" not found`).
fn missing_namespace(s: &Status) -> Option<&str> {
    let d = s.details.as_ref()?;
    (d.kind == "namespaces" && !d.name.is_empty()).then_some(d.name.as_str())
}

/// True when `live` was applied from `manifest` (same applied hash) and
/// still holds every field of it.
fn unchanged_since_applied(manifest: &Value, live: &Live) -> bool {
    let hash = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let desired = manifest.get_path("metadata").and_then(|m| {
        m.as_map()?
            .get("annotations")?
            .as_map()?
            .get(labels::APPLIED_HASH)
    });
    let Some(desired) = hash(desired) else {
        return false;
    };
    hash(live.attributes.get(labels::APPLIED_HASH)) == Some(desired)
        && object::contained_in(manifest, &live.body)
}

/// Polls `provider.health(live)` every `interval` until the object is
/// healthy or failed; [`Error::Timeout`] with the last reason when `timeout`
/// passes first. Works for any provider (the executor holds `dyn Provider`).
pub async fn wait_healthy(
    provider: &dyn Provider,
    live: &Live,
    timeout: Duration,
    interval: Duration,
) -> Result<Health> {
    let deadline = Instant::now() + timeout;
    loop {
        match provider.health(live).await? {
            Health::Progressing(reason) if Instant::now() >= deadline => {
                return Err(Error::Timeout {
                    id: live.id.clone(),
                    seconds: timeout.as_secs_f64().ceil() as u64,
                    reason,
                })
            }
            Health::Progressing(_) => tokio::time::sleep(interval).await,
            done => return Ok(done),
        }
    }
}

fn kube_target(target: &EnvTarget) -> Result<&super::KubeTarget> {
    target.kubernetes.as_ref().ok_or_else(|| Error::Target {
        provider: ProviderKind::Kubernetes,
        environment: target.environment.clone(),
        message: "the environment has no kubernetes target (spec.targets.kubernetes)".into(),
    })
}

fn context_options(context: &str) -> KubeConfigOptions {
    KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    }
}

fn config_error(target: &EnvTarget, e: impl std::error::Error) -> Error {
    let mut message = KubeError::Config(e.to_string()).to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    Error::Target {
        provider: ProviderKind::Kubernetes,
        environment: target.environment.clone(),
        message,
    }
}

fn invalid(desired: &Desired, message: &str) -> Error {
    Error::Invalid {
        id: desired.id.clone(),
        origin: desired.origin.clone(),
        message: message.to_string(),
    }
}

/// For an object whose deletion has begun (`deletionTimestamp` set), what
/// it waits for: its finalizers, or the end of its grace period.
fn deletion_in_progress(obj: &serde_json::Value) -> Option<String> {
    let meta = obj.get("metadata")?;
    meta.get("deletionTimestamp")?;
    let finalizers: Vec<&str> = meta
        .get("finalizers")
        .and_then(|f| f.as_array())
        .map(|a| a.iter().filter_map(|f| f.as_str()).collect())
        .unwrap_or_default();
    Some(if finalizers.is_empty() {
        "waiting for its grace period".to_string()
    } else {
        format!("waiting for finalizers {}", finalizers.join(", "))
    })
}

/// A failed API call after its retries; 429, 5xx and transport failures
/// are marked retryable (a later run may succeed).
fn api_error(operation: String, e: kube::Error) -> Error {
    let (retryable, source): (bool, Box<dyn std::error::Error + Send + Sync>) = match e {
        // The server's own words, without kube's debug dump of the Status.
        kube::Error::Api(s) => (
            is_retryable_status(&s),
            Box::new(KubeError::Refused {
                code: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            }),
        ),
        e @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => (true, Box::new(e)),
        e => (false, Box::new(e)),
    };
    Error::Api {
        operation,
        retryable,
        source,
    }
}

/// 429 and 5xx, except the 500 a real API server answers a server-side
/// apply whose manifest does not fit the schema with ("failed to create
/// typed patch object": a field of the wrong type), which no retry mends.
fn is_retryable_status(s: &Status) -> bool {
    let schema_mismatch =
        s.code == 500 && s.message.starts_with("failed to create typed patch object");
    s.code == 429 || ((500..600).contains(&s.code) && !schema_mismatch)
}

fn to_json(obj: impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(obj).expect("a Kubernetes object serializes to JSON")
}

/// Whether `live` is an object `tidegate import` adopted that no apply
/// has converged since.
fn imported(live: Option<&Live>) -> bool {
    live.is_some_and(|l| l.attributes.contains_key(labels::IMPORTED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_managers_are_every_manager_but_tidegate() {
        let fresh = serde_json::json!({"metadata": {"managedFields": [
            {"manager": labels::FIELD_MANAGER, "operation": "Apply"}
        ]}});
        assert!(other_managers(&fresh).is_empty());
        assert!(other_managers(&serde_json::json!({"metadata": {}})).is_empty());
        let merged = serde_json::json!({"metadata": {"managedFields": [
            {"manager": "kubectl-client-side-apply", "operation": "Update"},
            {"manager": labels::FIELD_MANAGER, "operation": "Apply"},
            {"manager": "kubectl-client-side-apply", "operation": "Update", "subresource": "status"},
            {"manager": "helm", "operation": "Update"}
        ]}});
        assert_eq!(
            other_managers(&merged),
            vec!["helm".to_string(), "kubectl-client-side-apply".to_string()]
        );
    }

    #[test]
    fn a_missing_namespace_is_read_from_the_404_details() {
        // As the API server sends it: `namespaces "app" not found`.
        let status = |kind: &str, name: &str| -> Status {
            serde_json::from_value(serde_json::json!({
                "code": 404, "reason": "NotFound",
                "details": {"name": name, "kind": kind}
            }))
            .unwrap()
        };
        assert_eq!(missing_namespace(&status("namespaces", "app")), Some("app"));
        assert_eq!(missing_namespace(&status("configmaps", "app")), None);
        assert_eq!(missing_namespace(&status("namespaces", "")), None);
        assert_eq!(missing_namespace(&Status::default()), None);
    }

    #[test]
    fn names_forget_missing_namespaces_when_cleared_or_created() {
        let names = Names::default();
        assert!(!names.namespace_missing(Some("app")));
        names.set_namespace_missing("app", true);
        assert!(names.namespace_missing(Some("app")));
        assert!(!names.namespace_missing(None));
        names.set_namespace_missing("app", false);
        assert!(!names.namespace_missing(Some("app")));
        names.set_namespace_missing("app", true);
        names.clear();
        assert!(!names.namespace_missing(Some("app")));
    }
}
