//! The observe stage: one environment's providers, connected once, and its
//! live state read with one list call sequence per kind and provider.
//!
//! `plan` and `execute` both start here, so an environment is observed the
//! same way for a preview, an apply and a rebuild.

use std::collections::{BTreeMap, BTreeSet};

use crate::graph::Graph;
use crate::provider::{self, Provider};
use crate::resource::{EnvTarget, Live, ProviderKind, ResourceId, Scope};

/// Observing failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A provider could not be built for the environment's target.
    #[error("environment {environment}: {source}")]
    Connect {
        environment: String,
        #[source]
        source: Box<provider::Error>,
    },
    /// The environment uses a provider it has no target for.
    #[error("environment {environment} has {provider} resources but no `targets.{provider}`; add the target to the environment file")]
    NoTarget {
        environment: String,
        provider: ProviderKind,
    },
    /// A list call failed (after the provider's retries).
    #[error("environment {environment}: observing {provider}: {source}")]
    Observe {
        environment: String,
        provider: ProviderKind,
        #[source]
        source: Box<provider::Error>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The providers of one environment, each connected once.
pub struct Providers {
    environment: String,
    map: BTreeMap<ProviderKind, Box<dyn Provider>>,
}

impl Providers {
    /// Connects the provider of each kind in `kinds` to `target`.
    pub async fn connect(
        target: &EnvTarget,
        kinds: impl IntoIterator<Item = ProviderKind>,
    ) -> Result<Self> {
        let mut map = BTreeMap::new();
        for kind in kinds.into_iter().collect::<BTreeSet<_>>() {
            if !provider::registry::spec(kind).configured(target) {
                return Err(Error::NoTarget {
                    environment: target.environment.clone(),
                    provider: kind,
                });
            }
            let p = provider::registry::connect(kind, target)
                .await
                .map_err(|source| Error::Connect {
                    environment: target.environment.clone(),
                    source: Box::new(source),
                })?;
            map.insert(kind, p);
        }
        Ok(Self {
            environment: target.environment.clone(),
            map,
        })
    }

    /// Wraps already built providers (benchmarks, tests with fault proxies).
    pub fn from_parts(
        environment: impl Into<String>,
        providers: impl IntoIterator<Item = Box<dyn Provider>>,
    ) -> Self {
        Self {
            environment: environment.into(),
            map: providers.into_iter().map(|p| (p.kind(), p)).collect(),
        }
    }

    /// The owner name the providers write into ownership marks.
    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// The provider of `kind`, if connected.
    pub fn get(&self, kind: ProviderKind) -> Option<&dyn Provider> {
        self.map.get(&kind).map(|b| b.as_ref())
    }

    /// The connected provider kinds.
    pub fn kinds(&self) -> impl Iterator<Item = ProviderKind> + '_ {
        self.map.keys().copied()
    }

    /// API calls made so far, keyed `provider/operation`.
    pub fn api_calls(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (kind, p) in &self.map {
            for (op, n) in p.api_calls() {
                out.insert(format!("{kind}/{op}"), n);
            }
        }
        out
    }

    /// Retries made so far, keyed `provider/reason`.
    pub fn api_retries(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (kind, p) in &self.map {
            for (reason, n) in p.api_retries() {
                out.insert(format!("{kind}/{reason}"), n);
            }
        }
        out
    }
}

/// What each provider must list for environment `env` of `graph`: the
/// kinds declared through it and the namespaces they live in.
pub fn scopes_of(graph: &Graph, env: &str) -> BTreeMap<ProviderKind, Scope> {
    let mut out: BTreeMap<ProviderKind, Scope> = BTreeMap::new();
    for id in graph.levels(env).into_iter().flatten() {
        if let Some(node) = graph.node(env, &id) {
            let scope = out.entry(node.provider).or_insert_with(|| Scope {
                kinds: BTreeSet::new(),
                namespaces: Some(BTreeSet::new()),
            });
            scope.kinds.insert(node.kind.clone());
            if let (Some(set), Some(ns)) = (&mut scope.namespaces, &node.namespace) {
                set.insert(ns.clone());
            }
        }
    }
    out
}

/// [`scopes_of`] for the owner `owner` of environment `env`: a copy
/// (`rebuild --as`, a switch target, a preview) renders its namespaces
/// with its own name, not the graph's, so kinds listed namespace by
/// namespace (Secrets) are listed where the copy's own inventory recorded
/// them (a first build records them); the others are listed everywhere.
pub fn scopes_for(graph: &Graph, env: &str, owner: Option<&str>) -> BTreeMap<ProviderKind, Scope> {
    let mut scopes = scopes_of(graph, env);
    if owner.is_some_and(|o| o != env) {
        for s in scopes.values_mut() {
            s.namespaces = Some(BTreeSet::new());
        }
    }
    scopes
}

/// One owned live resource and the provider it lives in.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub provider: ProviderKind,
    pub live: Live,
}

/// Everything the environment owns, by resource id: what Git still
/// declares and what it no longer does (to be pruned).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveState {
    pub resources: BTreeMap<ResourceId, Observed>,
    /// Further live objects claiming an id already in `resources` (left by
    /// a crash between the create and the destroy of a replacement). They
    /// are owned, so `execute` deletes them once the id has converged.
    pub duplicates: Vec<Observed>,
    /// The providers' predictions a plan made against exactly this live
    /// state (empty after a bare observe). The executor reuses one instead
    /// of asking the provider again when it renders the same desired body,
    /// so a reconcile that plans and then applies makes one server-side dry
    /// run per object, not two.
    pub predictions: BTreeMap<ResourceId, Prediction>,
}

/// A provider's prediction for one resource: the digest of the desired
/// body it was made for ([`crate::value::Value::digest`]; a digest, not a
/// copy: at 10,000 resources the copies were a second desired state held
/// through the apply) and the action it foresaw.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub body: [u8; 32],
    pub action: crate::provider::Action,
}

/// Why an owned live resource Git no longer declares is kept rather than
/// pruned, when it is: it carries the marks of a tidegate from before
/// projects (it may be another repository's), or `tidegate.dev/prune:
/// disabled`.
pub fn kept(live: &Live) -> Option<&'static str> {
    if live.prune_disabled() {
        Some("it is marked `tidegate.dev/prune: disabled`")
    } else if live.is_legacy() {
        Some(
            "it carries this environment's marks from before projects (no `tidegate.dev/project` \
             mark), so it may belong to another repository; declare it to adopt it, or delete it by hand",
        )
    } else {
        None
    }
}

impl LiveState {
    /// The live resource `id`, if it exists.
    pub fn get(&self, id: &ResourceId) -> Option<&Live> {
        self.resources.get(id).map(|o| &o.live)
    }

    /// The action predicted for `id`, if a plan made one for exactly this
    /// desired `body`.
    pub fn predicted(
        &self,
        id: &ResourceId,
        body: &crate::value::Value,
    ) -> Option<&crate::provider::Action> {
        self.predictions
            .get(id)
            .filter(|p| p.body == body.digest())
            .map(|p| &p.action)
    }
}

/// Rendering reads live attributes in place.
impl crate::render::Known for LiveState {
    fn attributes(&self, id: &ResourceId) -> Option<&crate::value::Map> {
        self.resources.get(id).map(|o| &o.live.attributes)
    }
}

/// Observes everything environment `env` owns: each connected provider lists
/// the kinds its scope in `scopes` names (plus the kinds of its own
/// inventory), all providers at once, one list call sequence per kind (per
/// namespace for the kinds a provider lists namespace by namespace).
pub async fn observe_env(
    providers: &Providers,
    scopes: &BTreeMap<ProviderKind, Scope>,
) -> Result<LiveState> {
    let calls = providers.map.iter().map(|(kind, p)| async move {
        let scope = scopes.get(kind).cloned().unwrap_or_default();
        p.observe_in(&scope)
            .await
            .map(|lives| (*kind, lives))
            .map_err(|source| Error::Observe {
                environment: providers.environment.clone(),
                provider: *kind,
                source: Box::new(source),
            })
    });
    let mut state = LiveState::default();
    for (kind, lives) in futures::future::try_join_all(calls).await? {
        for live in lives {
            let observed = Observed {
                provider: kind,
                live,
            };
            if state.resources.contains_key(&observed.live.id) {
                state.duplicates.push(observed);
                continue;
            }
            state.resources.insert(observed.live.id.clone(), observed);
        }
    }
    Ok(state)
}
