//! Blue/green cutover: `tidegate switch` moves an environment's declared
//! traffic entry points (`spec.traffic`, docs/format.md) between the
//! environment and its `rebuild --as` copies, after the copy's health gate
//! passes, optionally in weighted steps, and back in one step.
//!
//! The entry points belong to the switch, not to a copy: their objects
//! carry no copy's ownership mark, so no apply, prune or rebuild of a copy
//! touches them, and their routing (which copy is live, a share under
//! way, the copy before, when and by whom) is kept beside the
//! environment's record ([`crate::state::traffic`]). Every switch, step,
//! automatic fallback and return is appended to the audit history.

use std::io::Write;
use std::time::Duration;

use crate::graph::Graph;
use crate::model::{EntryKind, Environment};
use crate::observe::{self, LiveState, Providers};
use crate::provider::Health;
use crate::resource::{ResourceId, Scope};
use crate::state::history::{Entry, EventKind, Outcome, Subject};
use crate::state::traffic::{Canary, Route, Routing};
use crate::state::{self, RecordStore};

pub mod eip;
pub mod ingress;
pub mod plan;

use ingress::Backend;

/// A switch could not run (as opposed to being refused or falling back,
/// which are answers).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{operation}: {source}")]
    Kube {
        operation: String,
        #[source]
        source: kube::Error,
    },
    #[error("{operation}: {message}")]
    Ec2 { operation: String, message: String },
    #[error(transparent)]
    State(#[from] state::Error),
    #[error(transparent)]
    Observe(#[from] observe::Error),
    #[error(transparent)]
    Provider(#[from] crate::provider::Error),
    #[error("writing output")]
    Write(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a switch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The entry points route to the copy (or already did).
    Switched,
    /// Nothing changed; why.
    Refused(String),
    /// The copy turned unhealthy during a stepped switch and the entry
    /// points went back to where they were; why.
    FellBack(String),
}

/// One copy's live resources and what is wrong with them now.
pub struct CopyState {
    pub copy: String,
    pub live: LiveState,
    /// Resources missing or not healthy, with why; empty: the gate passes.
    pub problems: Vec<String>,
}

/// The switch of one environment.
pub struct Switch<'a> {
    pub env: &'a Environment,
    pub graph: &'a Graph,
    pub store: RecordStore,
    /// The environment's cluster, when it has a Kubernetes target.
    pub kube: Option<kube::Client>,
    /// EC2 in the environment's region, when it has an AWS target.
    pub ec2: Option<aws_sdk_ec2::Client>,
    pub subject: Subject,
}

/// What one entry point of one copy resolves to.
#[derive(Clone, Debug)]
enum Target {
    Ingress(Backend),
    Instance(String),
}

impl Switch<'_> {
    /// Observes `copy` (an owner name of this environment) and checks
    /// every resource the environment declares exists there and is healthy.
    pub async fn observe_copy(&self, copy: &str) -> Result<CopyState> {
        let scopes = observe::scopes_of(self.graph, &self.env.name);
        let target = self.env.target(Some(copy));
        let providers = Providers::connect(&target, scopes.keys().copied()).await?;
        // The graph's namespaces are the environment's own; a copy's differ
        // (`${env.name}`). Kinds listed namespace by namespace (Secrets,
        // which tidegate may not list across the cluster) are listed where
        // the copy's own inventory recorded them; the others everywhere.
        let scopes = scopes
            .into_iter()
            .map(|(k, s)| {
                (
                    k,
                    Scope {
                        kinds: s.kinds,
                        namespaces: Some(Default::default()),
                    },
                )
            })
            .collect();
        let live = observe::observe_env(&providers, &scopes).await?;
        let mut problems = Vec::new();
        for id in self.graph.levels(&self.env.name).into_iter().flatten() {
            let Some(o) = live.resources.get(&id) else {
                problems.push(format!("{id} does not exist in {copy}"));
                continue;
            };
            let Some(p) = providers.get(o.provider) else {
                continue;
            };
            match p.health(&o.live).await? {
                Health::Healthy => {}
                Health::Progressing(why) => problems.push(format!("{id} is not ready: {why}")),
                Health::Failed(why) => problems.push(format!("{id} failed: {why}")),
            }
        }
        Ok(CopyState {
            copy: copy.to_string(),
            live,
            problems,
        })
    }

    fn external_id(state: &CopyState, id: &ResourceId) -> Option<String> {
        state.live.get(id).map(|l| l.external_id.clone())
    }

    /// What each entry point routes to in `state`'s copy.
    fn targets(&self, state: &CopyState) -> std::result::Result<Vec<Target>, String> {
        let mut out = Vec::new();
        for e in &self.env.traffic {
            let missing = |id: &ResourceId| {
                format!(
                    "entry point {}: {id} does not exist in {}",
                    e.name, state.copy
                )
            };
            out.push(match &e.kind {
                EntryKind::Ingress(i) => {
                    let ext = Self::external_id(state, &i.service.0)
                        .ok_or_else(|| missing(&i.service.0))?;
                    let (namespace, service) = ext
                        .split_once('/')
                        .ok_or_else(|| format!("{} is not a namespaced Service", i.service.0))?;
                    Target::Ingress(Backend {
                        copy: state.copy.clone(),
                        namespace: namespace.to_string(),
                        service: service.to_string(),
                    })
                }
                EntryKind::ElasticIp { instance, .. } => Target::Instance(
                    Self::external_id(state, &instance.0).ok_or_else(|| missing(&instance.0))?,
                ),
            });
        }
        Ok(out)
    }

    /// The allocation id of each Elastic IP entry point: the one pinned in
    /// its route, else the environment's own `eip` (observed once).
    async fn addresses(
        &self,
        routing: &Routing,
    ) -> Result<std::result::Result<Vec<Option<String>>, String>> {
        let mut own: Option<CopyState> = None;
        let mut out = Vec::new();
        for e in &self.env.traffic {
            let EntryKind::ElasticIp { allocation, .. } = &e.kind else {
                out.push(None);
                continue;
            };
            if let Some(a) = routing.entries.get(&e.name).and_then(|r| r.address.clone()) {
                out.push(Some(a));
                continue;
            }
            if own.is_none() {
                own = Some(self.observe_copy(&self.env.name).await?);
            }
            match own
                .as_ref()
                .and_then(|s| Self::external_id(s, &allocation.0))
            {
                Some(a) => out.push(Some(a)),
                None => {
                    return Ok(Err(format!(
                        "entry point {}: the address {} does not exist in {} (apply {} first)",
                        e.name, allocation.0, self.env.name, self.env.name
                    )))
                }
            }
        }
        Ok(Ok(out))
    }

    fn ingress_of<'a>(&'a self, e: &'a crate::model::EntryPoint) -> Option<ingress::Entry<'a>> {
        match (&e.kind, &self.kube) {
            (EntryKind::Ingress(spec), Some(client)) => Some(ingress::Entry {
                client,
                project: &self.env.project,
                label: format!("{}.{}", self.env.name, e.name),
                spec,
            }),
            _ => None,
        }
    }

    fn ec2(&self) -> Result<&aws_sdk_ec2::Client> {
        self.ec2.as_ref().ok_or_else(|| Error::Ec2 {
            operation: "AssociateAddress".into(),
            message: format!("environment {} has no `targets.aws`", self.env.name),
        })
    }

    async fn record(
        &self,
        event: EventKind,
        outcome: Outcome,
        commit: Option<String>,
        reason: String,
        error: Option<String>,
    ) {
        let mut entry = Entry::new(&self.env.name, event, self.subject.clone());
        entry.commit = commit;
        entry.outcome = outcome;
        entry.reason = Some(reason);
        entry.error = error;
        entry.resources = self
            .env
            .traffic
            .iter()
            .map(|e| format!("traffic.{}", e.name))
            .collect();
        if let Err(e) = self.store.append_history(&entry).await {
            tracing::warn!(environment = %self.env.name, error = %e, "could not append to the audit history");
        }
    }

    async fn refuse(&self, copy: &str, why: String, commit: Option<String>) -> Result<Ended> {
        self.record(
            EventKind::Switch,
            Outcome::Refused,
            commit,
            format!("switch to {copy}"),
            Some(why.clone()),
        )
        .await;
        Ok(Ended::Refused(why))
    }

    /// Moves every entry point to `copy` once its record says it converged
    /// and its health gate passes now; through `weights` (ending at 100)
    /// with `step_wait` and a health check between steps when the shift
    /// can be weighted, falling back in one step if the copy turns
    /// unhealthy.
    pub async fn to(
        &self,
        copy: &str,
        steps: &[u8],
        step_wait: Duration,
        out: &mut dyn Write,
    ) -> Result<Ended> {
        let ended = self.to_inner(copy, steps, step_wait, out).await;
        if let Err(e) = &ended {
            self.failed(EventKind::Switch, format!("switch to {copy}"), e)
                .await;
        }
        ended
    }

    /// Records a switch that stopped on an error (the routing says how far
    /// it got).
    async fn failed(&self, event: EventKind, reason: String, e: &Error) {
        self.record(event, Outcome::Failed, None, reason, Some(e.to_string()))
            .await;
    }

    async fn to_inner(
        &self,
        copy: &str,
        steps: &[u8],
        step_wait: Duration,
        out: &mut dyn Write,
    ) -> Result<Ended> {
        let env = &self.env.name;
        if copy != env && !copy.starts_with(&format!("{env}-")) {
            return self
                .refuse(copy, format!("{copy} is not a copy of {env}: a copy is {env} itself or a `tidegate rebuild --env {env} --as {env}-<name>`"), None)
                .await;
        }
        if self.env.traffic.is_empty() {
            return self
                .refuse(
                    copy,
                    format!(
                        "{env} declares no traffic entry points (`spec.traffic` in {})",
                        self.env.file
                    ),
                    None,
                )
                .await;
        }
        let record = if copy == env {
            self.store.load(copy).await?
        } else {
            self.store.load_exact(copy).await?
        };
        let commit = record.as_ref().map(|r| r.commit.clone());
        match &record {
            None => {
                return self
                    .refuse(copy, format!("{copy} has no record: it was never applied (`tidegate rebuild --env {env} --as {copy}`)"), None)
                    .await
            }
            Some(r) if !r.converged => {
                return self
                    .refuse(copy, format!("{copy} did not converge at its last apply ({}): fix it and apply it again", r.problems.join("; ")), commit)
                    .await
            }
            Some(_) => {}
        }
        let state = self.observe_copy(copy).await?;
        if !state.problems.is_empty() {
            return self
                .refuse(
                    copy,
                    format!("{copy} is not healthy now: {}", state.problems.join("; ")),
                    commit,
                )
                .await;
        }
        let targets = match self.targets(&state) {
            Ok(t) => t,
            Err(why) => return self.refuse(copy, why, commit).await,
        };
        let routing = self.store.routing(env).await?;
        let addresses = match self.addresses(&routing).await? {
            Ok(a) => a,
            Err(why) => return self.refuse(copy, why, commit).await,
        };
        let before: Vec<Option<Route>> = self
            .env
            .traffic
            .iter()
            .map(|e| routing.entries.get(&e.name).cloned())
            .collect();
        if before.iter().all(|r| {
            r.as_ref()
                .is_some_and(|r| r.live == copy && r.canary.is_none())
        }) && self.disagreements(&routing).await?.is_empty()
        {
            writeln!(out, "{env}: every entry point already routes to {copy}")?;
            return Ok(Ended::Switched);
        }
        // Ingress entry points shift by weight; an Elastic IP moves at the
        // last step. A first switch has nothing to shift from.
        let ingresses: Vec<&Option<Route>> = self
            .env
            .traffic
            .iter()
            .zip(&before)
            .filter(|(e, _)| matches!(e.kind, EntryKind::Ingress(_)))
            .map(|(_, r)| r)
            .collect();
        let weighted = !ingresses.is_empty()
            && ingresses
                .iter()
                .all(|r| r.as_ref().is_some_and(|r| r.live != copy));
        if steps.len() > 1 && !weighted {
            writeln!(out, "{env}: the shift cannot be weighted (no Ingress entry point, or one nothing routes through yet): one step")?;
        }
        let weights = plan::weights(steps, weighted);
        let by = self.subject.to_string();
        for (n, &w) in weights.iter().enumerate() {
            if w < 100 {
                for (e, t) in self.env.traffic.iter().zip(&targets) {
                    if let (Some(i), Target::Ingress(b)) = (self.ingress_of(e), t) {
                        i.canary(b, w).await?;
                    }
                }
                let at = state::now_rfc3339();
                self.change(|r| {
                    let ingress = self
                        .env
                        .traffic
                        .iter()
                        .filter(|e| matches!(e.kind, EntryKind::Ingress(_)));
                    for e in ingress {
                        if let Some(route) = r.entries.get_mut(&e.name) {
                            route.canary = Some(Canary {
                                copy: copy.to_string(),
                                weight: w,
                            });
                            route.at = at.clone();
                            route.by = by.clone();
                        }
                    }
                })
                .await?;
                writeln!(
                    out,
                    "{env}: {copy} gets {w}% (step {} of {})",
                    n + 1,
                    weights.len()
                )?;
                self.record(
                    EventKind::SwitchStep,
                    Outcome::Succeeded,
                    commit.clone(),
                    format!("{copy} at {w}% (step {} of {})", n + 1, weights.len()),
                    None,
                )
                .await;
                tokio::time::sleep(step_wait).await;
                // A copy that cannot even be observed is not fit for more.
                let problems = match self.observe_copy(copy).await {
                    Ok(now) => now.problems,
                    Err(e) => vec![format!("it cannot be observed: {e}")],
                };
                if !problems.is_empty() {
                    let why = format!("{copy} turned unhealthy at {w}%: {}", problems.join("; "));
                    return self.fall_back(copy, why, commit, out).await;
                }
                continue;
            }
            for ((e, t), a) in self.env.traffic.iter().zip(&targets).zip(&addresses) {
                match (self.ingress_of(e), t, a) {
                    (Some(i), Target::Ingress(b), _) => {
                        i.primary(b).await?;
                        i.drop_canary().await?;
                    }
                    (None, Target::Instance(instance), Some(allocation)) => {
                        eip::associate(self.ec2()?, allocation, instance).await?;
                    }
                    _ => {}
                }
            }
            let at = state::now_rfc3339();
            self.change(|r| {
                for (e, a) in self.env.traffic.iter().zip(&addresses) {
                    let old = r.entries.get(&e.name).map(|x| x.live.clone());
                    let route = r.entries.entry(e.name.clone()).or_default();
                    route.previous = match old {
                        Some(o) if o != copy => Some(o),
                        _ => route.previous.clone(),
                    };
                    route.live = copy.to_string();
                    route.canary = None;
                    route.at = at.clone();
                    route.by = by.clone();
                    if a.is_some() {
                        route.address = a.clone();
                    }
                }
            })
            .await?;
            writeln!(out, "{env}: every entry point routes to {copy} (100%)")?;
        }
        let from: Vec<String> = before.iter().flatten().map(|r| r.live.clone()).collect();
        let reason = match from.first() {
            Some(f) => format!("from {f} to {copy} in {} step(s)", weights.len()),
            None => format!("to {copy} (first switch)"),
        };
        self.record(EventKind::Switch, Outcome::Succeeded, commit, reason, None)
            .await;
        Ok(Ended::Switched)
    }

    async fn change(&self, f: impl Fn(&mut Routing)) -> Result<()> {
        self.store
            .change_routing(&self.env.name, |r| {
                f(r);
                Ok::<_, std::convert::Infallible>(())
            })
            .await?
            .unwrap_or_else(|never| match never {});
        Ok(())
    }

    /// Takes the canary share away again (the live copy never stopped
    /// getting the rest): one step.
    async fn fall_back(
        &self,
        copy: &str,
        why: String,
        commit: Option<String>,
        out: &mut dyn Write,
    ) -> Result<Ended> {
        for e in &self.env.traffic {
            if let Some(i) = self.ingress_of(e) {
                i.drop_canary().await?;
            }
        }
        let at = state::now_rfc3339();
        let by = self.subject.to_string();
        self.change(|r| {
            for e in &self.env.traffic {
                if let Some(route) = r.entries.get_mut(&e.name) {
                    route.canary = None;
                    route.at = at.clone();
                    route.by = by.clone();
                }
            }
        })
        .await?;
        writeln!(out, "{}: fell back: {why}", self.env.name)?;
        self.record(
            EventKind::SwitchFallback,
            Outcome::Failed,
            commit,
            format!("switch to {copy} fell back"),
            Some(why.clone()),
        )
        .await;
        Ok(Ended::FellBack(why))
    }

    /// Sends every entry point back to the copy live before the last
    /// switch, in one step, without a health gate (it is the way out).
    pub async fn back(&self, out: &mut dyn Write) -> Result<Ended> {
        let ended = self.back_inner(out).await;
        if let Err(e) = &ended {
            self.failed(EventKind::SwitchBack, "back".into(), e).await;
        }
        ended
    }

    async fn back_inner(&self, out: &mut dyn Write) -> Result<Ended> {
        let env = &self.env.name;
        let routing = self.store.routing(env).await?;
        let previous: Vec<Option<String>> = self
            .env
            .traffic
            .iter()
            .map(|e| {
                routing
                    .entries
                    .get(&e.name)
                    .and_then(|r| r.previous.clone())
            })
            .collect();
        let Some(Some(prev)) = previous.first().cloned() else {
            let why = format!("{env} has no earlier copy to go back to (no completed `tidegate switch {env} --to` yet)");
            self.record(
                EventKind::SwitchBack,
                Outcome::Refused,
                None,
                "back".into(),
                Some(why.clone()),
            )
            .await;
            return Ok(Ended::Refused(why));
        };
        if previous.iter().any(|p| p.as_deref() != Some(prev.as_str())) {
            let why = format!("{env}'s entry points went live at different times and have different earlier copies; switch them with `tidegate switch {env} --to COPY`");
            self.record(
                EventKind::SwitchBack,
                Outcome::Refused,
                None,
                "back".into(),
                Some(why.clone()),
            )
            .await;
            return Ok(Ended::Refused(why));
        }
        let state = self.observe_copy(&prev).await?;
        for p in &state.problems {
            writeln!(out, "warning: {p}")?;
        }
        let targets = match self.targets(&state) {
            Ok(t) => t,
            Err(why) => {
                self.record(
                    EventKind::SwitchBack,
                    Outcome::Refused,
                    None,
                    format!("back to {prev}"),
                    Some(why.clone()),
                )
                .await;
                return Ok(Ended::Refused(why));
            }
        };
        for ((e, t), r) in self.env.traffic.iter().zip(&targets).zip(
            self.env
                .traffic
                .iter()
                .map(|e| routing.entries.get(&e.name)),
        ) {
            match (self.ingress_of(e), t) {
                (Some(i), Target::Ingress(b)) => {
                    i.primary(b).await?;
                    i.drop_canary().await?;
                }
                (None, Target::Instance(instance)) => {
                    if let Some(allocation) = r.and_then(|r| r.address.as_deref()) {
                        eip::associate(self.ec2()?, allocation, instance).await?;
                    }
                }
                _ => {}
            }
        }
        let at = state::now_rfc3339();
        let by = self.subject.to_string();
        self.change(|r| {
            for e in &self.env.traffic {
                if let Some(route) = r.entries.get_mut(&e.name) {
                    route.previous = Some(std::mem::replace(&mut route.live, prev.clone()));
                    route.canary = None;
                    route.at = at.clone();
                    route.by = by.clone();
                }
            }
        })
        .await?;
        let was = routing
            .entries
            .values()
            .next()
            .map(|r| r.live.clone())
            .unwrap_or_default();
        writeln!(
            out,
            "{env}: every entry point routes to {prev} again (from {was})"
        )?;
        let commit = self.store.load(&prev).await?.map(|r| r.commit);
        self.record(
            EventKind::SwitchBack,
            Outcome::Succeeded,
            commit,
            format!("back from {was} to {prev}"),
            None,
        )
        .await;
        Ok(Ended::Switched)
    }
}

impl Switch<'_> {
    /// Where the live objects send traffic, compared with `routing`: one
    /// line per entry point whose objects disagree (changed by hand, or a
    /// switch stopped half-way by an error).
    pub async fn disagreements(&self, routing: &Routing) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for e in &self.env.traffic {
            let Some(route) = routing.entries.get(&e.name) else {
                continue;
            };
            if let Some(i) = self.ingress_of(e) {
                let want = plan::backend_name(&i.spec.name, &route.live);
                let primary = i.read(&i.spec.name).await?.map(|(b, _)| b);
                if primary.as_deref() != Some(want.as_str()) {
                    out.push(format!(
                        "{}: the Ingress {}/{} sends to {}, the routing says {} ({want})",
                        e.name,
                        i.spec.namespace,
                        i.spec.name,
                        primary.as_deref().unwrap_or("nothing (it does not exist)"),
                        route.live
                    ));
                }
                let canary = i.read(&plan::canary_name(&i.spec.name)).await?;
                let want = route
                    .canary
                    .as_ref()
                    .map(|c| (plan::backend_name(&i.spec.name, &c.copy), Some(c.weight)));
                if canary != want {
                    out.push(format!(
                        "{}: the canary Ingress is {:?}, the routing says {:?}",
                        e.name, canary, want
                    ));
                }
            }
            if let (EntryKind::ElasticIp { instance, .. }, Some(address), Some(client)) =
                (&e.kind, &route.address, &self.ec2)
            {
                let now = eip::associated(client, address).await?;
                let state = self.observe_copy(&route.live).await?;
                let want = Self::external_id(&state, &instance.0);
                if now != want {
                    out.push(format!(
                        "{}: the address {address} is associated with {}, the routing says {} ({})",
                        e.name,
                        now.as_deref().unwrap_or("nothing"),
                        route.live,
                        want.as_deref().unwrap_or("its instance does not exist")
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// The routing of `env`, one line per declared entry point.
pub fn describe(env: &Environment, routing: &Routing, out: &mut dyn Write) -> std::io::Result<()> {
    for e in &env.traffic {
        let what = match &e.kind {
            EntryKind::Ingress(i) => format!("ingress {}/{} host {}", i.namespace, i.name, i.host),
            EntryKind::ElasticIp { allocation, .. } => format!("elastic IP {}", allocation.0),
        };
        match routing.entries.get(&e.name) {
            None => writeln!(out, "{}: {what}: not switched yet", e.name)?,
            Some(r) => {
                let mut line = format!("{}: {what}: {} {}%", e.name, r.live, r.weight_of(&r.live));
                if let Some(c) = &r.canary {
                    line.push_str(&format!(", {} {}%", c.copy, c.weight));
                }
                if let Some(a) = &r.address {
                    line.push_str(&format!(" (address {a})"));
                }
                if let Some(p) = &r.previous {
                    line.push_str(&format!("; before: {p}"));
                }
                line.push_str(&format!("; by {} at {}", r.by, r.at));
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(())
}
