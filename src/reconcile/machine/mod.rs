//! The reconcile loop as a pure state machine.
//!
//! `step(state, event, now) -> (state, actions)`: no clock, no network, no
//! randomness (the driver passes `now` and a jitter draw in). After every
//! event the machine schedules: for each environment in promotion order that
//! this replica holds, is not suspended, not running and not backing off, it
//! asks for a [`Mode::Apply`] converge when the environment is behind the
//! served commit and its gate is open, or for a drift check when one is due.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{EnvReport, Mode};
use crate::model::{DriftMode, DriftPolicy, Environment};
use crate::promotion::{self, Controls, Inputs, Promotion, Reason, Wait};
use crate::source::Backoff;

/// What the machine needs to know about one environment of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvSpec {
    pub name: String,
    /// Environments that must be converged and healthy at the same commit
    /// first.
    pub after: Vec<String>,
    pub drift: DriftPolicy,
    /// `suspend: true` in the environment file.
    pub suspend: bool,
    /// `promotion:` in the environment file.
    pub promotion: Promotion,
    /// Operators' decisions as read with the commit.
    pub controls: Controls,
}

impl From<&Environment> for EnvSpec {
    fn from(e: &Environment) -> Self {
        EnvSpec {
            name: e.name.clone(),
            after: e.after.iter().map(|(n, _)| n.clone()).collect(),
            drift: e.drift,
            suspend: e.suspend,
            promotion: e.promotion.clone(),
            controls: Controls::default(),
        }
    }
}

/// Where one environment stands.
#[derive(Debug, Clone)]
pub struct EnvState {
    pub spec: EnvSpec,
    /// This replica holds the environment's lease (always true without
    /// leader election).
    pub held: bool,
    /// Suspended through the HTTP API.
    pub api_suspended: bool,
    /// The converge in flight: commit and mode.
    pub running: Option<(String, Mode)>,
    /// The last commit converged and healthy here.
    pub last_good: Option<String>,
    /// False once a converge at `last_good` (a heal) failed.
    pub healthy: bool,
    /// Consecutive failed converges.
    pub failures: u32,
    /// No converge before this instant (backoff).
    pub retry_at: Option<Instant>,
    /// When the next drift check is due.
    pub drift_due: Option<Instant>,
    /// What the replica holding the lease last published, for environments
    /// held elsewhere: last good commit and health.
    pub peer: Option<(Option<String>, bool)>,
    /// What the holder published as the time it became good (soak).
    pub peer_good_since: Option<String>,
    /// The last converge's report.
    pub last: Option<EnvReport>,
    /// RFC 3339: since when the environment has been good at `last_good`
    /// (from its record; the start of the next environment's soak).
    pub good_since: Option<String>,
    /// Operators' decisions: approvals, a hold, a rollback pin (the
    /// commit this environment stays at instead of the served one).
    pub controls: Controls,
}

impl EnvState {
    fn new(spec: EnvSpec, held: bool) -> Self {
        EnvState {
            spec,
            held,
            api_suspended: false,
            running: None,
            last_good: None,
            healthy: true,
            failures: 0,
            retry_at: None,
            drift_due: None,
            peer: None,
            peer_good_since: None,
            last: None,
            good_since: None,
            controls: Controls::default(),
        }
    }

    /// The rollback pin, if any.
    pub fn pin(&self) -> Option<&str> {
        self.controls.pinned()
    }

    /// The commit this environment should be at: its pin, else `served`.
    pub fn target<'a>(&'a self, served: &'a str) -> &'a str {
        self.pin().unwrap_or(served)
    }

    pub fn suspended(&self) -> bool {
        self.spec.suspend || self.api_suspended
    }

    /// Converged and healthy at `commit`, as far as this replica knows.
    fn good_at(&self, commit: &str) -> bool {
        if self.held {
            self.healthy && self.last_good.as_deref() == Some(commit)
        } else {
            matches!(&self.peer, Some((Some(c), true)) if c == commit)
        }
    }
}

/// The whole reconciler.
#[derive(Debug, Clone)]
pub struct State {
    /// The commit served by the source that loaded cleanly.
    pub commit: Option<String>,
    /// Environment names in promotion order.
    pub order: Vec<String>,
    pub envs: BTreeMap<String, EnvState>,
    /// Whether environments start held (no leader election) or wait for a
    /// lease.
    pub held_by_default: bool,
    pub backoff: Backoff,
    /// SIGTERM received: no new work.
    pub stopping: bool,
    /// `--dry-run`: every converge is [`Mode::ReportOnly`], and a clean
    /// report opens the next gate (a preview walks the whole order).
    pub dry_run: bool,
    /// Wall-clock time for the promotion rules (soak, windows), set by the
    /// driver before each step from its clock.
    pub wall: jiff::Timestamp,
}

impl State {
    pub fn new(held_by_default: bool, backoff: Backoff) -> Self {
        State {
            commit: None,
            order: Vec::new(),
            envs: BTreeMap::new(),
            held_by_default,
            backoff,
            stopping: false,
            dry_run: false,
            wall: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    /// Environments in promotion order.
    pub fn ordered(&self) -> impl Iterator<Item = &EnvState> {
        self.order.iter().filter_map(|n| self.envs.get(n))
    }

    /// Whether any converge is in flight.
    pub fn busy(&self) -> bool {
        self.envs.values().any(|e| e.running.is_some())
    }

    /// Why `env` is (not) moving, for the status page.
    pub fn gate(&self, env: &str, now: Instant) -> Gate {
        let Some(e) = self.envs.get(env) else {
            return Gate::Unknown;
        };
        let Some(commit) = &self.commit else {
            return Gate::NoCommit;
        };
        if !e.held {
            return Gate::NotHeld;
        }
        if e.suspended() {
            return Gate::Suspended;
        }
        if let Some((c, mode)) = &e.running {
            return Gate::Running {
                commit: c.clone(),
                mode: *mode,
            };
        }
        let target = e.target(commit);
        if e.good_at(target) {
            return Gate::Converged;
        }
        if let Some(at) = e.retry_at.filter(|at| *at > now) {
            return Gate::BackingOff {
                attempt: e.failures,
                retry_in_secs: at.duration_since(now).as_secs(),
            };
        }
        if e.pin().is_none() {
            if let Some(on) = self.waiting_on(e, commit) {
                let why = match self.envs.get(&on).and_then(|p| p.pin()) {
                    Some(pin) => format!(
                        "{on} is pinned to {} by a rollback, not at {}",
                        short(pin),
                        short(commit)
                    ),
                    None => format!("{on} is not converged and healthy at {}", short(commit)),
                };
                return Gate::Waiting {
                    reason: Reason::Previous,
                    on: Some(on),
                    detail: why,
                    until: None,
                };
            }
        }
        match self.start_wait(e, commit) {
            Some(w) => Gate::Waiting {
                reason: w.reason,
                on: None,
                detail: w.detail,
                until: w.until,
            },
            None => Gate::Open,
        }
    }

    fn inputs<'a>(&self, e: &'a EnvState, good_since: Option<jiff::Timestamp>) -> Inputs<'a> {
        Inputs {
            env: &e.spec.name,
            promotion: &e.spec.promotion,
            controls: &e.controls,
            good_since,
            now: self.wall,
        }
    }

    /// Why `e` may not start the served `commit` (or its pin) now beyond
    /// the same-commit gate: a hold, a missing approval, a soak, a window.
    pub fn start_wait(&self, e: &EnvState, commit: &str) -> Option<Wait> {
        if e.pin().is_some() {
            return promotion::pinned_start(&self.inputs(e, None));
        }
        let since = self.good_since(e, commit);
        promotion::start(&self.inputs(e, since), commit)
    }

    /// Why drift in `e` may not be healed now (a hold, a window).
    pub fn heal_wait(&self, e: &EnvState) -> Option<Wait> {
        promotion::heal(&self.inputs(e, None))
    }

    /// When every environment `e` is after had been good at `commit` (the
    /// latest of their times); `None` when one is not, or none say.
    fn good_since(&self, e: &EnvState, commit: &str) -> Option<jiff::Timestamp> {
        if self.waiting_on(e, commit).is_some() {
            return None;
        }
        e.spec
            .after
            .iter()
            .filter_map(|a| self.envs.get(a))
            .filter_map(|p| match p.held {
                true => p.good_since.as_deref(),
                false => p.peer_good_since.as_deref(),
            })
            .filter_map(|t| t.parse::<jiff::Timestamp>().ok())
            .max()
    }

    /// The first environment `e` is after that is not good at `commit`.
    fn waiting_on(&self, e: &EnvState, commit: &str) -> Option<String> {
        e.spec
            .after
            .iter()
            .find(|a| !self.envs.get(*a).is_some_and(|p| p.good_at(commit)))
            .cloned()
    }
}

/// Why an environment is or is not moving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Gate {
    /// Converged and healthy at the served commit.
    Converged,
    /// Ready to start the served commit.
    Open,
    /// Held: an environment before it is not converged and healthy at the
    /// served commit (`reason: previous`, `on` names it), or a promotion
    /// control holds it (hold, approval, soak, window), until `until` when
    /// that is known.
    #[serde(rename_all = "camelCase")]
    Waiting {
        reason: Reason,
        #[serde(skip_serializing_if = "Option::is_none")]
        on: Option<String>,
        detail: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        until: Option<String>,
    },
    /// Suspended in its file or through the API.
    Suspended,
    /// Another replica holds its lease.
    NotHeld,
    #[serde(rename_all = "camelCase")]
    Running {
        commit: String,
        mode: Mode,
    },
    #[serde(rename_all = "camelCase")]
    BackingOff {
        attempt: u32,
        retry_in_secs: u64,
    },
    /// No commit loaded yet.
    NoCommit,
    Unknown,
}

impl Gate {
    pub fn label(&self) -> &'static str {
        match self {
            Gate::Converged => "converged",
            Gate::Open => "open",
            Gate::Waiting { .. } => "waiting",
            Gate::Suspended => "suspended",
            Gate::NotHeld => "not-held",
            Gate::Running { .. } => "running",
            Gate::BackingOff { .. } => "backing-off",
            Gate::NoCommit => "no-commit",
            Gate::Unknown => "unknown",
        }
    }
}

/// What happened.
// `Finished` carries a whole report (one event per converge, moved once
// into the state): boxing it would save nothing worth an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Event {
    /// A commit was fetched and loads cleanly; `envs` in promotion order.
    Commit {
        commit: String,
        envs: Vec<EnvSpec>,
    },
    /// Time passed (timers: drift, backoff).
    Tick,
    /// A converge ended. `jitter` is a draw in `0.0..1.0` for the backoff.
    Finished {
        env: String,
        report: EnvReport,
        jitter: f64,
    },
    Suspend {
        env: String,
    },
    Resume {
        env: String,
    },
    /// This replica gained or lost `env`'s lease.
    Lease {
        env: String,
        held: bool,
    },
    /// What the holder of `env`'s lease published.
    Peer {
        env: String,
        last_good: Option<String>,
        healthy: bool,
        good_since: Option<String>,
    },
    /// The promotion controls of `env` changed (computed by the driver
    /// from the clock, the controls store and the environment's file).
    Controls {
        env: String,
        controls: Controls,
    },
    /// A webhook or the API asked for a poll now.
    TriggerPoll,
    /// SIGTERM: finish what is in flight, start nothing.
    Shutdown,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Converge {
        env: String,
        commit: String,
        mode: Mode,
    },
    /// Stop the converge of `env` in flight (its lease was lost).
    Abandon { env: String },
    /// Poll the Git remote now.
    Poll,
    /// Nothing is in flight after a shutdown: exit.
    Exit,
}

/// One transition.
pub fn step(mut state: State, event: Event, now: Instant) -> (State, Vec<Action>) {
    let mut actions = Vec::new();
    match event {
        Event::Commit { commit, envs } => on_commit(&mut state, commit, envs),
        Event::Tick => {}
        Event::Finished {
            env,
            report,
            jitter,
        } => on_finished(&mut state, &env, report, jitter, now),
        Event::Suspend { env } => {
            if let Some(e) = state.envs.get_mut(&env) {
                e.api_suspended = true;
            }
        }
        Event::Resume { env } => {
            if let Some(e) = state.envs.get_mut(&env) {
                e.api_suspended = false;
                e.retry_at = None;
            }
        }
        Event::Lease { env, held } => on_lease(&mut state, &env, held, now, &mut actions),
        Event::Peer {
            env,
            last_good,
            healthy,
            good_since,
        } => {
            if let Some(e) = state.envs.get_mut(&env) {
                e.peer = Some((last_good, healthy));
                e.peer_good_since = good_since;
            }
        }
        Event::Controls { env, controls } => {
            if let Some(e) = state.envs.get_mut(&env) {
                if e.controls.pinned() != controls.pinned() {
                    // A new pin (or its release) is a new target: go now.
                    e.retry_at = None;
                    e.failures = 0;
                }
                e.controls = controls;
            }
        }
        Event::TriggerPoll => actions.push(Action::Poll),
        Event::Shutdown => state.stopping = true,
    }
    if state.stopping {
        if !state.busy() && !actions.contains(&Action::Exit) {
            actions.push(Action::Exit);
        }
        actions.retain(|a| matches!(a, Action::Abandon { .. } | Action::Exit));
        return (state, actions);
    }
    schedule(&mut state, now, &mut actions);
    (state, actions)
}

fn on_commit(state: &mut State, commit: String, envs: Vec<EnvSpec>) {
    let mut old = std::mem::take(&mut state.envs);
    state.order = envs.iter().map(|s| s.name.clone()).collect();
    for spec in envs {
        let e = match old.remove(&spec.name) {
            Some(mut e) => {
                if e.controls.pinned() != spec.controls.pinned() {
                    e.retry_at = None;
                    e.failures = 0;
                }
                e.controls = spec.controls.clone();
                e.spec = spec;
                // A new commit may fix what failed: try it at once.
                if e.last_good.as_deref() != Some(commit.as_str()) {
                    e.retry_at = None;
                    e.failures = 0;
                }
                e
            }
            None => {
                let mut e = EnvState::new(spec, state.held_by_default);
                e.controls = e.spec.controls.clone();
                e
            }
        };
        state.envs.insert(e.spec.name.clone(), e);
    }
    state.commit = Some(commit);
}

fn on_finished(state: &mut State, env: &str, report: EnvReport, jitter: f64, now: Instant) {
    let backoff = state.backoff;
    let dry_run = state.dry_run;
    let Some(e) = state.envs.get_mut(env) else {
        return;
    };
    e.running = None;
    if report.passes_gate() {
        if report.mode == Mode::Apply || dry_run {
            e.last_good = Some(report.commit.clone());
            e.healthy = true;
            e.good_since = report.good_since.clone();
        }
        e.failures = 0;
        e.retry_at = None;
        e.drift_due = Some(now + e.spec.drift.interval);
    } else {
        if e.last_good.as_deref() == Some(report.commit.as_str()) {
            e.healthy = false;
        }
        e.failures = e.failures.saturating_add(1);
        e.retry_at = Some(now + jittered(backoff.delay(e.failures), jitter));
    }
    e.last = Some(report);
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// Between half and all of `d` ("equal jitter"), so replicas that failed
/// together do not retry together.
pub fn jittered(d: Duration, jitter: f64) -> Duration {
    d.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

fn on_lease(state: &mut State, env: &str, held: bool, now: Instant, actions: &mut Vec<Action>) {
    let Some(e) = state.envs.get_mut(env) else {
        return;
    };
    if held && !e.held {
        // Take over from the previous holder: trust what it published and
        // check for drift at once.
        if e.last_good.is_none() {
            if let Some((last_good, healthy)) = &e.peer {
                e.last_good = last_good.clone();
                e.healthy = *healthy;
                e.good_since = e.peer_good_since.clone();
            }
        }
        e.drift_due = Some(now);
    }
    if !held && e.running.is_some() {
        e.running = None;
        actions.push(Action::Abandon { env: env.into() });
    }
    e.held = held;
}

fn schedule(state: &mut State, now: Instant, actions: &mut Vec<Action>) {
    let Some(commit) = state.commit.clone() else {
        return;
    };
    for name in state.order.clone() {
        let Some(mode) = next_mode(state, &name, &commit, now) else {
            continue;
        };
        let Some(e) = state.envs.get_mut(&name) else {
            continue;
        };
        // A pinned environment converges its pin (a rollback).
        let target = e.target(&commit).to_string();
        e.running = Some((target.clone(), mode));
        actions.push(Action::Converge {
            env: name,
            commit: target,
            mode,
        });
    }
}

/// The converge `name` should start now, if any.
fn next_mode(state: &State, name: &str, commit: &str, now: Instant) -> Option<Mode> {
    let e = state.envs.get(name)?;
    if !e.held || e.suspended() || e.running.is_some() || e.retry_at.is_some_and(|t| t > now) {
        return None;
    }
    let apply = if state.dry_run {
        Mode::ReportOnly
    } else {
        Mode::Apply
    };
    let target = e.target(commit);
    if e.last_good.as_deref() != Some(target) {
        // A pin (a rollback) is an operator's decision: only a hold stops
        // it; a newer commit also waits for the gate and the controls.
        let gated = e.pin().is_none() && state.waiting_on(e, commit).is_some();
        return (!gated && state.start_wait(e, commit).is_none()).then_some(apply);
    }
    // Healing is Apply unless the drift mode only reports or a control
    // (hold, window) stops it: then the drift check reports.
    let heal = e.spec.drift.mode == DriftMode::Heal && state.heal_wait(e).is_none();
    if (heal && !e.healthy) || e.drift_due.is_some_and(|t| t <= now) {
        return Some(if heal { apply } else { Mode::ReportOnly });
    }
    None
}

#[cfg(test)]
mod tests;
