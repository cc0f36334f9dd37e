//! The executor: applies one environment in graph order with bounded
//! parallelism, then prunes what Git no longer declares.
//!
//! # Expected flow
//! observe (shared [`crate::observe`] stage) → for each resource, as soon as
//! its own dependencies are done: render with what is known (live attributes
//! overlaid by the outputs of resources applied in this run) →
//! [`Provider::plan`] → [`Provider::apply`] unless a no-op → wait for
//! [`Provider::health`] → its outputs flow into its dependents. Then prune
//! (owned, no longer declared, and duplicates) in reverse dependency order,
//! then [`Provider::record_inventory`].
//!
//! # Guarantees
//! - No [`Value::Unknown`](crate::value::Value::Unknown) reaches
//!   [`Provider::apply`]: a resource is rendered only after all its
//!   dependencies finished, and one still holding an unknown fails instead.
//! - A failed resource marks everything depending on it (transitively)
//!   skipped; independent branches go on.
//! - Nothing is pruned when a resource failed, was skipped or the run was
//!   stopped: prune needs a converged environment.
//! - Replacement is the provider's: AWS creates before it destroys (the old
//!   object stays `tidegate:deposed` while in use and is pruned here later);
//!   Kubernetes deletes and creates.
//! - After [`Stop::request`], no resource starts; in-flight calls finish and
//!   the outcome lists the rest as skipped.
//!
//! # Crash safety
//! The executor keeps no state of its own: every run observes first, and the
//! providers' creates are idempotent (AWS searches by tags and sends a
//! ClientToken; Kubernetes applies server-side by name). A run killed at any
//! point is converged by the next one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

use crate::graph::Graph;
use crate::model::{Environment, Model};
use crate::observe::{self, LiveState, Observed, Providers};
use crate::provider::Provider;
use crate::render::{RenderOptions, Renderer, SecretLookup};
use crate::resource::{Action, Desired, Health, Live, ProviderKind, ResourceId};
use crate::value::Map;

mod outcome;
mod prune;

pub use outcome::{Outcome, ResourceOutcome, Status};

/// The executor could not run the environment at all (a resource failing is
/// not an error: it is in the [`Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Observing live state failed.
    #[error(transparent)]
    Observe(#[from] observe::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Resources in flight at once (at least 1).
    pub parallelism: usize,
    /// Delete owned resources Git no longer declares (and duplicates).
    pub prune: bool,
    /// Wait for each resource to be healthy before its dependents start.
    pub wait_healthy: bool,
    /// Longest wait for one resource to become healthy.
    pub health_timeout: Duration,
    /// First interval between health checks; doubles up to 2 s.
    pub health_poll: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            parallelism: 8,
            prune: true,
            wait_healthy: true,
            health_timeout: Duration::from_secs(300),
            health_poll: Duration::from_millis(100),
        }
    }
}

/// Asks a running [`run_env`] to stop starting resources (SIGTERM, Ctrl-C).
#[derive(Debug, Default)]
pub struct Stop(AtomicBool);

impl Stop {
    /// Requests the stop; in-flight calls still finish.
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// True once requested.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What the executor reports while it runs.
#[derive(Clone, Debug)]
pub enum Event {
    /// Live state observed; `total` resources will be visited (declared plus
    /// prune candidates).
    Observed { total: usize },
    /// Work on a resource started.
    Started { id: ResourceId },
    /// A resource finished (any status).
    Finished(ResourceOutcome),
}

/// A progress callback.
pub type Progress<'a> = &'a (dyn Fn(&Event) + Send + Sync);

/// One environment to apply: [`EnvRun::new`], then what differs from
/// the defaults (owner, observed state, options, progress, stop).
pub struct EnvRun<'a> {
    pub model: &'a Model,
    pub graph: &'a Graph,
    /// The environment, resolved once by the caller.
    pub env: &'a Environment,
    /// Owner name in ownership marks and `${env.name}` (blue/green
    /// `--as prod-green`); `None` is the environment's own name. Must match
    /// the owner the `providers` were connected with.
    pub owner: Option<&'a str>,
    pub providers: &'a Providers,
    /// Live state observed just before through the same `providers` (the
    /// plan that decided to apply); `None` observes afresh. Pass `None`
    /// when time has passed since (a confirmation prompt).
    pub observed: Option<&'a LiveState>,
    pub secrets: &'a (dyn SecretLookup + Sync),
    pub options: Options,
    pub progress: Option<Progress<'a>>,
    pub stop: Option<&'a Stop>,
    /// A targeted apply: only these resources (a set closed under
    /// dependencies, [`crate::plan::target::scope`]); nothing is pruned.
    pub only: Option<&'a BTreeSet<ResourceId>>,
}

impl<'a> EnvRun<'a> {
    /// Applies `env` of `model`/`graph` through `providers` with `secrets`:
    /// the environment's own owner name, observed afresh, default options,
    /// no progress, no stop.
    pub fn new(
        model: &'a Model,
        graph: &'a Graph,
        env: &'a Environment,
        providers: &'a Providers,
        secrets: &'a (dyn SecretLookup + Sync),
    ) -> Self {
        EnvRun {
            model,
            graph,
            env,
            owner: None,
            providers,
            observed: None,
            secrets,
            options: Options::default(),
            progress: None,
            stop: None,
            only: None,
        }
    }

    /// See [`EnvRun::owner`].
    pub fn owner(mut self, owner: Option<&'a str>) -> Self {
        self.owner = owner;
        self
    }

    /// See [`EnvRun::observed`].
    pub fn observed(mut self, live: Option<&'a LiveState>) -> Self {
        self.observed = live;
        self
    }

    /// See [`EnvRun::options`].
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// See [`EnvRun::progress`].
    pub fn progress(mut self, progress: Option<Progress<'a>>) -> Self {
        self.progress = progress;
        self
    }

    /// See [`EnvRun::stop`].
    pub fn stop(mut self, stop: Option<&'a Stop>) -> Self {
        self.stop = stop;
        self
    }

    /// See [`EnvRun::only`].
    pub fn only(mut self, only: Option<&'a BTreeSet<ResourceId>>) -> Self {
        self.only = only;
        self
    }

    /// The environment's name (the graph's key).
    fn name(&self) -> &'a str {
        &self.env.name
    }

    fn emit(&self, e: Event) {
        if let Some(p) = self.progress {
            p(&e);
        }
    }

    fn stopped(&self) -> bool {
        self.stop.is_some_and(Stop::requested)
    }
}

/// What one resource step produced.
struct Step {
    id: ResourceId,
    status: Status,
    reason: String,
    /// The live object afterwards, when it exists.
    live: Option<Live>,
    duration: Duration,
    started: Duration,
}

/// Applies environment `run.env`: see the module documentation.
pub async fn run_env(run: &EnvRun<'_>) -> Result<Outcome> {
    let t0 = Instant::now();
    let kinds = observe::scopes_for(run.graph, run.name(), run.owner);
    // Borrowed when the plan handed it over: a copy of every live body of
    // a large environment would double the reconciler's peak memory.
    let observed;
    let live: &LiveState = match run.observed {
        Some(live) => live,
        None => {
            observed = observe::observe_env(run.providers, &kinds).await?;
            &observed
        }
    };
    let all: Vec<ResourceId> = run.graph.levels(run.name()).into_iter().flatten().collect();
    let declared: HashSet<&ResourceId> = all.iter().collect();
    let candidates = prune::candidates(live, &declared);
    // A targeted apply visits its scope and never prunes.
    let (order, prune): (Vec<ResourceId>, bool) = match run.only {
        Some(only) => (
            all.iter().filter(|id| only.contains(id)).cloned().collect(),
            false,
        ),
        None => (all.clone(), run.options.prune),
    };
    run.emit(Event::Observed {
        total: order.len()
            + if run.only.is_none() {
                candidates.len()
            } else {
                0
            },
    });

    let mut out = Outcome::new(run.name(), run.owner.unwrap_or(run.name()));
    let applied = apply_all(run, live, &order, t0, &mut out).await;

    let clean = out.resources.iter().all(|r| r.status.is_success()) && !run.stopped();
    let mut remaining: Vec<Observed> = Vec::new();
    if prune && !candidates.is_empty() {
        if clean {
            let deleted = prune::delete_all(run, candidates, t0, &mut out).await;
            remaining.extend(deleted);
        } else {
            let why = "not pruned: the apply did not converge";
            prune::skip_all(candidates, why, &mut out, &mut remaining);
        }
    } else {
        remaining.extend(candidates);
    }

    let wrote = out.resources.iter().any(|r| r.status.is_write());
    if wrote {
        // Every declared resource, in scope or not: the inventory is the
        // environment's, not the run's.
        record_inventory(run, live, &all, applied, &remaining, &mut out).await;
    }
    out.stopped = run.stopped();
    out.duration = t0.elapsed();
    Ok(out)
}

/// Applies every declared resource, dependencies first, at most
/// `parallelism` at once. Returns the live objects applied in this run.
async fn apply_all(
    run: &EnvRun<'_>,
    live: &LiveState,
    order: &[ResourceId],
    t0: Instant,
    out: &mut Outcome,
) -> HashMap<ResourceId, Live> {
    // Only what this run wrote is kept here; everything else is read from
    // `live` in place (a copy of every live object, as applied earlier,
    // was a second live state held through the run).
    let mut known = Known {
        written: HashMap::new(),
        live,
    };
    let mut applied: HashMap<ResourceId, Live> = HashMap::new();
    let mut waiting: HashMap<ResourceId, usize> = order
        .iter()
        .map(|id| (id.clone(), run.graph.dependencies(run.name(), id).len()))
        .collect();
    let mut ready: Vec<ResourceId> = order
        .iter()
        .filter(|id| waiting[*id] == 0)
        .cloned()
        .collect();
    ready.reverse(); // pop() takes them in level order
    let mut failed: HashSet<ResourceId> = HashSet::new();
    let mut in_flight = FuturesUnordered::new();
    let parallelism = run.options.parallelism.max(1);

    loop {
        while in_flight.len() < parallelism {
            let Some(id) = ready.pop() else { break };
            let (kind, provider_kind) = kind_of(run, &id);
            let bad: Vec<String> = run
                .graph
                .dependencies(run.name(), &id)
                .into_iter()
                .filter(|d| failed.contains(d))
                .map(|d| d.to_string())
                .collect();
            let skip = if !bad.is_empty() {
                Some(format!("dependency {} did not converge", bad.join(", ")))
            } else if run.stopped() {
                Some("stopped before it started (signal)".to_string())
            } else {
                None
            };
            if let Some(reason) = skip {
                failed.insert(id.clone());
                let r = ResourceOutcome::skipped(&id, &kind, provider_kind, reason);
                run.emit(Event::Finished(r.clone()));
                out.push(r);
                release(run, &id, &mut waiting, &mut ready);
                continue;
            }
            let Some(provider) = run.providers.get(provider_kind) else {
                failed.insert(id.clone());
                let r = ResourceOutcome::failed(
                    &id,
                    &kind,
                    provider_kind,
                    format!("no {provider_kind} provider connected"),
                );
                run.emit(Event::Finished(r.clone()));
                out.push(r);
                release(run, &id, &mut waiting, &mut ready);
                continue;
            };
            run.emit(Event::Started { id: id.clone() });
            let rendered = render_one(run, &known, &id);
            let current = live.get(&id);
            let predicted = rendered
                .as_ref()
                .ok()
                .and_then(|d| live.predicted(&id, &d.body))
                .cloned();
            let options = run.options.clone();
            let started = t0.elapsed();
            in_flight.push(async move {
                let t = Instant::now();
                let (status, reason, live) = match rendered {
                    Ok(desired) => step(provider, desired, current, predicted, &options).await,
                    Err(reason) => (Status::Failed, reason, None),
                };
                Step {
                    id,
                    status,
                    reason,
                    live,
                    duration: t.elapsed(),
                    started,
                }
            });
        }
        let Some(done) = in_flight.next().await else {
            break;
        };
        let (kind, provider_kind) = kind_of(run, &done.id);
        if done.status.is_success() {
            if let Some(l) = &done.live {
                known.written.insert(done.id.clone(), l.attributes.clone());
            }
        } else {
            failed.insert(done.id.clone());
        }
        if let Some(l) = done.live {
            applied.insert(done.id.clone(), l);
        }
        let r = ResourceOutcome {
            id: done.id.clone(),
            kind,
            provider: provider_kind,
            status: done.status,
            started: done.started,
            duration: done.duration,
            reason: done.reason,
        };
        run.emit(Event::Finished(r.clone()));
        out.push(r);
        release(run, &done.id, &mut waiting, &mut ready);
    }
    applied
}

/// The kind and provider of a declared resource.
fn kind_of(run: &EnvRun<'_>, id: &ResourceId) -> (String, ProviderKind) {
    run.graph
        .node(run.name(), id)
        .map(|n| (n.kind.clone(), n.provider))
        .unwrap_or_else(|| (String::new(), ProviderKind::Kubernetes))
}

/// Marks `id` done for its dependents; those with nothing left to wait
/// for become ready.
fn release(
    run: &EnvRun<'_>,
    id: &ResourceId,
    waiting: &mut HashMap<ResourceId, usize>,
    ready: &mut Vec<ResourceId>,
) {
    for d in run.graph.dependents(run.name(), id) {
        if let Some(n) = waiting.get_mut(&d) {
            *n -= 1;
            if *n == 0 {
                ready.push(d);
            }
        }
    }
}

/// Renders one resource with what is known now; a reference still unknown
/// is a failure of the resource (its dependencies are all done by now).
/// The attributes rendering sees during a run: those of what the run
/// wrote, else those observed.
struct Known<'a> {
    written: HashMap<ResourceId, Map>,
    live: &'a LiveState,
}

impl crate::render::Known for Known<'_> {
    fn attributes(&self, id: &ResourceId) -> Option<&Map> {
        self.written
            .get(id)
            .or_else(|| crate::render::Known::attributes(self.live, id))
    }
}

fn render_one(
    run: &EnvRun<'_>,
    known: &Known<'_>,
    id: &ResourceId,
) -> std::result::Result<Desired, String> {
    let opts = RenderOptions {
        known,
        secrets: run.secrets,
        owner: run.owner,
    };
    let renderer = Renderer::new(run.model, run.name(), opts).map_err(|e| e.to_string())?;
    let desired = renderer.render(id).map_err(|e| e.to_string())?;
    if let Some(u) = first_unknown(&desired.body) {
        return Err(format!(
            "{} ({}): `{u}` is still unknown after its dependencies were applied",
            id, desired.origin
        ));
    }
    Ok(desired)
}

fn first_unknown(v: &crate::value::Value) -> Option<String> {
    use crate::value::Value;
    match v {
        Value::Unknown(r) => Some(r.clone()),
        Value::List(l) => l.iter().find_map(first_unknown),
        Value::Map(m) => m.values().find_map(first_unknown),
        _ => None,
    }
}

/// Plan (unless the plan that led here `predicted` it for this very body),
/// apply unless a no-op, then wait for health. The live object is returned
/// when the step wrote one; otherwise `current` still stands.
async fn step(
    provider: &dyn Provider,
    desired: Desired,
    current: Option<&Live>,
    predicted: Option<Action>,
    options: &Options,
) -> (Status, String, Option<Live>) {
    // Nothing owned is live (observe listed the kind): it is a create, and
    // the provider's prediction (a server-side dry run, an ownership read)
    // would only repeat what apply does. Two calls per new Kubernetes
    // object instead of four.
    let action = match (current, predicted) {
        (None, _) => Action::Create,
        (Some(_), Some(action)) => action,
        (Some(live), None) => match provider.plan(&desired, Some(live)).await {
            Ok(c) => c.action,
            Err(e) => return (Status::Failed, format!("plan: {e}"), None),
        },
    };
    let (status, reason) = match (&action, current) {
        (Action::NoOp, Some(_)) => (Status::Unchanged, String::new()),
        (Action::Update, _) => (Status::Updated, String::new()),
        (Action::Replace { reasons }, _) => (Status::Replaced, reasons.join("; ")),
        _ => (Status::Created, String::new()),
    };
    let written = match current.filter(|_| status == Status::Unchanged) {
        Some(_) => None,
        None => match provider.apply(&desired, current).await {
            Ok(l) => Some(l),
            Err(e) => return (Status::Failed, format!("apply: {e}"), None),
        },
    };
    if options.wait_healthy {
        let live = written.as_ref().or(current).expect("applied or unchanged");
        if let Err(why) = wait_healthy(provider, live, options).await {
            return (Status::Failed, why, written);
        }
    }
    (status, reason, written)
}

/// Polls health with a doubling interval (capped at 2 s) until healthy;
/// the reason when it failed or timed out.
async fn wait_healthy(
    provider: &dyn Provider,
    live: &Live,
    options: &Options,
) -> std::result::Result<(), String> {
    let deadline = Instant::now() + options.health_timeout;
    let mut interval = options.health_poll.max(Duration::from_millis(10));
    loop {
        match provider.health(live).await {
            Ok(Health::Healthy) => return Ok(()),
            Ok(Health::Failed(why)) => return Err(format!("unhealthy: {why}")),
            Ok(Health::Progressing(why)) if Instant::now() >= deadline => {
                return Err(format!(
                    "not healthy after {}s: {why}",
                    options.health_timeout.as_secs()
                ))
            }
            Ok(Health::Progressing(_)) => {}
            Err(e) if Instant::now() >= deadline => return Err(format!("health: {e}")),
            Err(_) => {}
        }
        tokio::time::sleep(interval.min(deadline.saturating_duration_since(Instant::now()))).await;
        interval = (interval * 2).min(Duration::from_secs(2));
    }
}

/// Tells each provider the complete set it owns now: the declared
/// resources as they are after this run and what could not be pruned.
async fn record_inventory(
    run: &EnvRun<'_>,
    live: &LiveState,
    order: &[ResourceId],
    mut applied: HashMap<ResourceId, Live>,
    remaining: &[Observed],
    out: &mut Outcome,
) {
    let mut owned: BTreeMap<ProviderKind, Vec<Live>> = BTreeMap::new();
    for id in order {
        let Some(node) = run.graph.node(run.name(), id) else {
            continue;
        };
        // What this run wrote is moved, not copied (a first convergence
        // wrote every object).
        let l = applied.remove(id).or_else(|| live.get(id).cloned());
        if let Some(l) = l {
            owned.entry(node.provider).or_default().push(l);
        }
    }
    for o in remaining {
        owned.entry(o.provider).or_default().push(o.live.clone());
    }
    for kind in run.providers.kinds().collect::<Vec<_>>() {
        let Some(p) = run.providers.get(kind) else {
            continue;
        };
        let list = owned.remove(&kind).unwrap_or_default();
        if let Err(e) = p.record_inventory(&list).await {
            out.warnings
                .push(format!("{kind}: recording the inventory: {e}"));
        }
    }
}

#[cfg(test)]
mod tests;
