//! The I/O around [`super::machine`]: polls the Git source, loads each new
//! commit, runs the converges the machine asks for (one task each), feeds
//! results, commands, lease changes and time back in, and publishes status
//! and metrics for the HTTP server.
//!
//! # Shutdown
//! When `shutdown` resolves, the machine stops starting work. The converges
//! in flight get until `shutdown_grace` to finish; after that they are
//! dropped (abandoned at an await point: what was applied stays applied;
//! the next start converges from there). Then the Leases are released and
//! [`Reconciler::run`] returns.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::lease::{self, LeaseConfig, Leases, Publish, Published};
use super::machine::{self, Action, EnvSpec, Event, Gate, State};
use super::metrics::Metrics;
use super::webhook::ReplayCache;
use super::{Converge, EnvReport, ErrorReason, Mode, ReportError};
use crate::model::DriftMode;
use crate::notify::{self, Kind, Notifier};
use crate::promotion::{self, Change, Clock, Controls};
use crate::sensitive::Sensitive;
use crate::source::{self, Snapshot, Source};
use crate::state::history;
use crate::state::history::{Entry, EventKind, Subject};

/// How the loop behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Git remote and reference (for the status page and for matching
    /// webhook pushes).
    pub remote: String,
    pub reference: String,
    /// Time between polls; each wait is shortened by a random up to
    /// `poll_jitter` of it.
    pub interval: Duration,
    pub poll_jitter: f64,
    /// How often timers (drift, backoff) are checked.
    pub tick: Duration,
    pub shutdown_grace: Duration,
    /// Per-environment backoff after a failed converge.
    pub backoff: source::Backoff,
    pub dry_run: bool,
    /// Leader election; `None` holds every environment (one replica).
    pub leases: Option<LeaseConfig>,
    /// Keys trusted to sign commits for environments with
    /// `requireSignedCommits: true` (empty: such environments apply nothing).
    pub trust: Arc<source::TrustList>,
    /// Which environments refuse a commit that does not descend from the
    /// one last applied to them (a force-push or reset to older history):
    /// `None` those with `requireSignedCommits: true`, `Refuse` all,
    /// `Follow` none.
    pub force_push: Option<source::ForcePush>,
    /// A commit (id, or a prefix of at least 7 hex digits) that may be
    /// applied although it does not descend from the last applied one: an
    /// explicit rollback (`--allow-rollback-to`).
    pub allow_rollback_to: Option<String>,
    /// Where events go (`--notifications`); disabled by default.
    pub notifier: Notifier,
    /// Wall-clock time for soaks and windows.
    pub clock: Clock,
}

impl Options {
    pub fn new(remote: impl Into<String>, reference: impl Into<String>) -> Self {
        Options {
            remote: remote.into(),
            reference: reference.into(),
            interval: Duration::from_secs(60),
            poll_jitter: 0.1,
            tick: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(25),
            backoff: source::Backoff {
                base: Duration::from_secs(10),
                max: Duration::from_secs(600),
            },
            dry_run: false,
            leases: None,
            trust: Arc::default(),
            force_push: None,
            allow_rollback_to: None,
            notifier: Notifier::disabled(),
            clock: Clock::from_env(),
        }
    }
}

/// `--allow-rollback-to`: a commit id or a prefix of one (7 to 40 hex
/// digits), lowercased.
pub fn commit_prefix(s: &str) -> std::result::Result<String, String> {
    let ok = (7..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| s.to_ascii_lowercase())
        .ok_or_else(|| format!("{s:?} is not a commit id (7 to 40 hex digits)"))
}

/// Requests from the HTTP API and webhooks; `by` is the authenticated
/// caller.
#[derive(Debug)]
pub enum Command {
    Suspend {
        env: String,
        by: String,
    },
    Resume {
        env: String,
        by: String,
    },
    /// Poll the remote now.
    Poll,
    /// An operator's promotion decision; the stored controls (or why it
    /// was refused) go back on `reply`.
    Control {
        env: String,
        /// As asked: a commit id or a prefix of one (approve, rollback).
        revision: Option<String>,
        change: ControlAsk,
        by: String,
        reason: Option<String>,
        reply: tokio::sync::oneshot::Sender<std::result::Result<Controls, ControlRefused>>,
    },
}

/// What `POST /api/v1/environments/{env}/{action}` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlAsk {
    Approve,
    Hold,
    Release,
    Rollback,
}

/// Why a control request was not carried out, and the HTTP status for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlRefused {
    /// 404: no such environment or commit.
    NotFound(String),
    /// 409: refused by the rules (nothing to release, never applied...).
    Conflict(String),
    /// 400: the request lacks what the action needs.
    BadRequest(String),
    /// 503: the store could not be reached.
    Unavailable(String),
}

/// What the HTTP server reads and sends; shared by the driver and the
/// server.
pub struct Shared {
    pub status: RwLock<Status>,
    pub metrics: Metrics,
    ready: AtomicBool,
    commands: mpsc::UnboundedSender<Command>,
    pub webhook_secret: Option<Sensitive>,
    pub replay: Mutex<ReplayCache>,
    pub reference: String,
    /// What reads the audit history: the converge implementation and the
    /// commit being reconciled (which says where each environment keeps
    /// it); set once a commit loads.
    history: RwLock<Option<HistorySource>>,
    /// The last [`RECENT_HISTORY`] entries of each environment, refreshed
    /// after each finished converge.
    recent: Mutex<HashMap<String, Vec<Entry>>>,
}

/// Entries of each environment's history on the status page and API.
pub const RECENT_HISTORY: usize = 10;

/// The converge implementation and the commit that say where each
/// environment's audit history is kept.
type HistorySource = (Arc<dyn Converge>, Arc<Snapshot>);

impl Shared {
    /// The shared state and the receiving end of its command channel (for
    /// [`Reconciler::new`]).
    pub fn new(
        opts: &Options,
        webhook_secret: Option<Sensitive>,
    ) -> (Arc<Shared>, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let status = Status {
            // Shown unauthenticated: never with user-info in it.
            remote: source::redact_url(&opts.remote),
            reference: opts.reference.clone(),
            identity: opts.leases.as_ref().map(|l| l.identity.clone()),
            dry_run: opts.dry_run,
            ..Status::default()
        };
        let shared = Shared {
            status: RwLock::new(status),
            metrics: Metrics::new(),
            ready: AtomicBool::new(false),
            commands: tx,
            webhook_secret,
            replay: Mutex::new(ReplayCache::default()),
            reference: opts.reference.clone(),
            history: RwLock::new(None),
            recent: Mutex::default(),
        };
        (Arc::new(shared), rx)
    }

    /// True once a commit was fetched and loaded cleanly.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Queues a command; false when the reconciler has stopped.
    pub fn send(&self, c: Command) -> bool {
        self.commands.send(c).is_ok()
    }

    pub fn status(&self) -> Status {
        self.status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.write().unwrap_or_else(|p| p.into_inner()));
    }

    /// The audit history of `env`, or of every environment of the commit
    /// being reconciled merged by time, oldest first; `None` before a
    /// commit has loaded.
    pub async fn history(
        &self,
        env: Option<&str>,
    ) -> Option<std::result::Result<Vec<Entry>, ReportError>> {
        let (converge, snapshot) = self
            .history
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        let envs: Vec<String> = match env {
            Some(e) => vec![e.to_string()],
            None => self
                .status()
                .environments
                .into_iter()
                .map(|e| e.name)
                .collect(),
        };
        let mut out = Vec::new();
        for env in envs {
            match converge.history(&snapshot, &env).await {
                Ok(entries) => out.extend(entries),
                Err(e) => return Some(Err(e)),
            }
        }
        history::sort(&mut out);
        Some(Ok(out))
    }

    /// The status with each environment's traffic routing read from its
    /// store (an environment whose store cannot be read shows none, with a
    /// warning).
    pub async fn status_with_traffic(&self) -> Status {
        let mut status = self.status();
        let source = self
            .history
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some((converge, snapshot)) = source else {
            return status;
        };
        for e in &mut status.environments {
            match converge.routing(&snapshot, &e.name).await {
                Ok(r) => e.traffic = TrafficRoute::of(&r),
                Err(err) => {
                    tracing::warn!(environment = %e.name, error = %err.message, "cannot read the traffic routing")
                }
            }
        }
        status
    }

    /// Appends `entry` to its environment's audit history (with the commit
    /// being reconciled, when the entry names none); a failure is a
    /// warning: the control it records has been accepted already.
    pub async fn append_history(&self, mut entry: Entry) {
        let source = self
            .history
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some((converge, snapshot)) = source else {
            tracing::warn!(environment = %entry.environment, event = %entry.event, "no commit loaded: not recorded in the audit history");
            return;
        };
        if entry.commit.is_none() {
            entry.commit = Some(snapshot.commit.clone());
        }
        if let Err(e) = converge.append_history(&snapshot, &entry).await {
            tracing::warn!(environment = %entry.environment, event = %entry.event, error = %e, "could not write the audit history");
        }
    }

    /// The commit being reconciled, once one has loaded (the preview
    /// timer reads the environments from it).
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.history
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, s)| s.clone())
    }

    /// Publishes the live previews on the status API and page.
    pub fn set_previews(&self, previews: Vec<crate::preview::Entry>) {
        self.set_status(|s| s.previews = previews);
    }

    fn recent_history(&self, env: &str) -> Vec<Entry> {
        lock(&self.recent).get(env).cloned().unwrap_or_default()
    }
}

/// The status API document (`/api/v1/status`) and what the page shows.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub remote: String,
    pub reference: String,
    /// This replica's lease identity, when leader election is on.
    pub identity: Option<String>,
    pub dry_run: bool,
    pub ready: bool,
    /// The commit being reconciled (the newest that loads cleanly).
    pub commit: Option<String>,
    /// The newest commit fetched, when it differs and does not load.
    pub rejected_commit: Option<String>,
    /// Why the newest commit does not load (file:line messages).
    pub load_error: Option<String>,
    /// Why the last poll failed.
    pub source_error: Option<String>,
    /// The signature of the commit being reconciled (`signed by ops@...`,
    /// `commit is not signed`), when an environment requires one.
    pub signature: Option<String>,
    pub last_poll_unix: Option<u64>,
    pub stopping: bool,
    /// In promotion order.
    pub environments: Vec<EnvStatus>,
    pub graph: GraphView,
    /// The live previews (`tidegate preview`), as the preview timer last
    /// read their registries.
    pub previews: Vec<crate::preview::Entry>,
}

/// One environment on the status page.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvStatus {
    pub name: String,
    pub after: Vec<String>,
    pub gate: Gate,
    pub held: bool,
    pub suspended: bool,
    /// Suspended by `suspend: true` in the file (the API cannot resume it).
    pub suspended_in_file: bool,
    pub last_good: Option<String>,
    pub healthy: bool,
    pub drift_mode: DriftMode,
    pub drift_interval_secs: u64,
    pub failures: u32,
    pub last: Option<EnvReport>,
    /// The commit a rollback pinned it to, while the served commit is
    /// newer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    /// `promotion:` of its file, described (manual approval, soak,
    /// windows).
    pub promotion: Vec<String>,
    /// Operators' decisions: approvals (the newest 5), hold, pin.
    pub controls: Controls,
    /// The last entries of its audit history, oldest first.
    pub history: Vec<Entry>,
    /// Where each switched traffic entry point routes (`tidegate
    /// switch`), read from the store at each status request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficRoute>,
}

/// One traffic entry point of an environment, as the status shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficRoute {
    pub entry: String,
    /// The copy getting the traffic, and its share in percent.
    pub live: String,
    pub weight: u8,
    /// A stepped switch under way: the copy getting the rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<crate::state::traffic::Canary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    pub at: String,
    pub by: String,
}

impl TrafficRoute {
    /// The routes of `routing`, by entry name.
    pub fn of(routing: &crate::state::traffic::Routing) -> Vec<TrafficRoute> {
        routing
            .entries
            .iter()
            .map(|(name, r)| TrafficRoute {
                entry: name.clone(),
                live: r.live.clone(),
                weight: r.weight_of(&r.live),
                canary: r.canary.clone(),
                previous: r.previous.clone(),
                at: r.at.clone(),
                by: r.by.clone(),
            })
            .collect()
    }
}

/// The dependency graph of the commit being reconciled, for the page.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GraphView {
    /// `tidegate graph --format mermaid` of the whole commit.
    pub mermaid: String,
    /// Per environment: resources by level (`module/name`) and edges.
    pub environments: Vec<EnvGraph>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EnvGraph {
    pub name: String,
    pub levels: Vec<Vec<String>>,
    /// `(from, to)`: `from` is applied before `to`.
    pub edges: Vec<(String, String)>,
}

impl GraphView {
    pub fn of(graph: &crate::graph::Graph) -> GraphView {
        let environments = graph
            .environments()
            .into_iter()
            .map(|env| {
                let levels = graph.levels(env);
                let mut edges = Vec::new();
                for id in levels.iter().flatten() {
                    for dep in graph.dependencies(env, id) {
                        edges.push((dep.to_string(), id.to_string()));
                    }
                }
                EnvGraph {
                    name: env.to_string(),
                    levels: levels
                        .iter()
                        .map(|l| l.iter().map(|id| id.to_string()).collect())
                        .collect(),
                    edges,
                }
            })
            .collect();
        GraphView {
            mermaid: graph.to_mermaid(None),
            environments,
        }
    }
}

/// The reconciler: source, converge implementation, options, shared state.
pub struct Reconciler {
    source: Source,
    converge: Arc<dyn Converge>,
    opts: Options,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    kube: Option<kube::Client>,
}

/// Converge results coming back from their tasks.
type Done = (String, EnvReport);

impl Reconciler {
    /// `kube` is needed when `opts.leases` is set.
    pub fn new(
        source: Source,
        converge: Arc<dyn Converge>,
        opts: Options,
        shared: Arc<Shared>,
        commands: mpsc::UnboundedReceiver<Command>,
        kube: Option<kube::Client>,
    ) -> Self {
        Reconciler {
            source,
            converge,
            opts,
            shared,
            commands,
            kube,
        }
    }

    /// Runs until `shutdown` resolves and the work in flight is finished or
    /// abandoned; then releases the Leases.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Reconciler {
            source,
            converge,
            opts,
            shared,
            mut commands,
            kube,
        } = self;
        let io = Io {
            source,
            converge,
            opts,
            shared,
            refusals: Mutex::default(),
            signed_envs: Mutex::default(),
            waiting: Mutex::default(),
            controls: Mutex::default(),
            pinned: Mutex::default(),
        };
        io.run(&mut commands, kube, shutdown).await
    }
}

/// The driver's I/O, apart from the command channel.
struct Io {
    source: Source,
    converge: Arc<dyn Converge>,
    opts: Options,
    shared: Arc<Shared>,
    /// For the commit loaded last: environments requiring a trusted
    /// signature it lacks, with why (commit, env → reason).
    refusals: Mutex<(String, HashMap<String, String>)>,
    /// Environments of the commit loaded last with
    /// `requireSignedCommits: true`.
    signed_envs: Mutex<HashSet<String>>,
    /// Environments last seen waiting at their gate: env → (commit, on),
    /// so that `gate.waiting` is sent when the wait starts, not each step.
    waiting: Mutex<HashMap<String, (String, String)>>,
    /// The controls last read per environment (to feed only changes).
    controls: Mutex<HashMap<String, Controls>>,
    /// Snapshots of commits environments are pinned to (rollbacks).
    pinned: Mutex<HashMap<String, Arc<Snapshot>>>,
}

impl Io {
    async fn run(
        self,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        kube: Option<kube::Client>,
        shutdown: impl Future<Output = ()>,
    ) {
        let io = &self;
        let mut state = State::new(self.opts.leases.is_none(), self.opts.backoff);
        state.dry_run = self.opts.dry_run;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let (lease_tx, mut lease_rx) = mpsc::unbounded_channel::<Event>();
        let (publish_tx, publish_rx) = watch::channel(Publish::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let lease_task = match (&self.opts.leases, &kube) {
            (Some(cfg), Some(client)) => {
                let leases = Leases::new(client.clone(), cfg.clone());
                Some(tokio::spawn(lease::run(
                    leases, publish_rx, lease_tx, stop_rx,
                )))
            }
            _ => None,
        };
        let mut tasks: HashMap<String, JoinHandle<()>> = HashMap::new();
        let mut snapshot: Option<Arc<Snapshot>> = None;
        let mut next_poll = tokio::time::Instant::now();
        let mut ticker = tokio::time::interval(self.opts.tick);
        let mut deadline: Option<tokio::time::Instant> = None;
        // Control changes read with a poll, fed before its event.
        let mut pending: Vec<Event> = Vec::new();
        let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
        tokio::pin!(shutdown);
        let notifier = &self.opts.notifier;
        notifier.notify(notify::Event::new(
            Kind::ReconcilerStarted,
            &notifier.origin(),
        ));
        'run: loop {
            let event = tokio::select! {
                _ = tokio::time::sleep_until(next_poll), if !state.stopping => {
                    let (event, wait) = io.poll(&mut snapshot).await;
                    next_poll = tokio::time::Instant::now() + wait;
                    match event {
                        // A new commit read the controls with it.
                        Some(e) => e,
                        None => {
                            // Operators may have changed the controls from
                            // the CLI since.
                            pending = io.refresh_controls(snapshot.as_deref(), &state.order).await;
                            if pending.is_empty() { continue }
                            Event::Tick
                        }
                    }
                }
                Some(cmd) = commands.recv() => match cmd {
                    Command::Suspend { env, by } => {
                        tracing::info!(environment = %env, by = %by, "suspended through the API");
                        Event::Suspend { env }
                    }
                    Command::Resume { env, by } => {
                        tracing::info!(environment = %env, by = %by, "resumed through the API");
                        Event::Resume { env }
                    }
                    Command::Poll => Event::TriggerPoll,
                    Command::Control { env, revision, change, by, reason, reply } => {
                        let answer = io
                            .control(snapshot.as_deref(), &env, revision.as_deref(), change, &by, reason.as_deref())
                            .await;
                        io.refresh_history(&env, snapshot.clone());
                        let event = match &answer {
                            Ok(c) => {
                                lock(&io.controls).insert(env.clone(), c.clone());
                                Event::Controls { env, controls: c.clone() }
                            }
                            Err(_) => Event::Tick,
                        };
                        let _ = reply.send(answer);
                        event
                    }
                },
                Some((env, report)) = done_rx.recv() => {
                    tasks.remove(&env);
                    io.finished(&env, &report);
                    // A refused commit is audited once, not at each retry.
                    let refusal = report.error.as_ref().filter(|e| {
                        matches!(e.reason, ErrorReason::Signature | ErrorReason::NotADescendant)
                    });
                    let before = state.envs.get(&env).and_then(|e| e.last.as_ref());
                    let repeated = before.is_some_and(|b| {
                        b.commit == report.commit && b.error.as_ref().map(|e| e.reason) == refusal.map(|e| e.reason)
                    });
                    match refusal {
                        Some(e) if !repeated => {
                            let mut entry = Entry::new(&env, EventKind::Refused, Subject::reconciler());
                            entry.commit = Some(report.commit.clone());
                            entry.outcome = crate::state::history::Outcome::Refused;
                            entry.reason = Some(e.reason.label().to_string());
                            entry.error = Some(e.message.clone());
                            io.audit(snapshot.clone(), entry);
                        }
                        _ => io.refresh_history(&env, snapshot.clone()),
                    }
                    // A converge at the commit already good there is a
                    // drift check; any other is the apply of a new commit.
                    let drift_check = state.envs.get(&env).and_then(|e| e.last_good.as_deref())
                        == Some(report.commit.as_str());
                    for event in report_events(&notifier.origin(), &env, &report, drift_check) {
                        notifier.notify(event);
                    }
                    Event::Finished { env, report, jitter: fastrand::f64() }
                }
                Some(ev) = lease_rx.recv() => ev,
                _ = ticker.tick() => Event::Tick,
                _ = &mut shutdown, if deadline.is_none() => {
                    tracing::info!(grace_secs = self.opts.shutdown_grace.as_secs(), "shutting down: no new work");
                    deadline = Some(tokio::time::Instant::now() + self.opts.shutdown_grace);
                    Event::Shutdown
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                    for (env, task) in tasks.drain() {
                        tracing::warn!(environment = %env, "grace period over: abandoning the converge in flight");
                        task.abort();
                        self.shared.metrics.error(ErrorReason::Timeout);
                    }
                    break 'run;
                }
            };
            state.wall = self.opts.clock.now();
            let mut actions = Vec::new();
            for e in pending.drain(..).chain(std::iter::once(event)) {
                let (next, more) = machine::step(state, e, Instant::now());
                state = next;
                actions.extend(more);
            }
            for action in actions {
                match action {
                    Action::Converge { env, commit, mode } => {
                        let pin = state
                            .envs
                            .get(&env)
                            .and_then(|e| e.pin().map(str::to_string));
                        let snap = match snapshot.clone().filter(|s| s.commit == commit) {
                            Some(s) => s,
                            None if pin.as_deref() == Some(commit.as_str()) => {
                                match self.pinned_snapshot(&commit).await {
                                    Ok(s) => s,
                                    Err(e) => {
                                        let msg = format!("cannot read commit {}, which {env} is pinned to by a rollback: {e}", short(&commit));
                                        let report = EnvReport {
                                            commit,
                                            mode,
                                            error: Some(ReportError::new(ErrorReason::Fetch, msg)),
                                            finished_unix: unix_now(),
                                            ..EnvReport::default()
                                        };
                                        let _ = done_tx.send((env, report));
                                        continue;
                                    }
                                }
                            }
                            None => continue,
                        };
                        // A pin is another commit than the one loaded: its
                        // signature is checked on its own (a key revoked
                        // since it was applied refuses it too).
                        let pinned_elsewhere = pin.as_deref() == Some(commit.as_str())
                            && state.commit.as_deref() != Some(commit.as_str());
                        let why = if pinned_elsewhere {
                            self.pinned_refusal(&commit, &env).await
                        } else {
                            self.refusal(&commit, &env)
                        };
                        if let (Mode::Apply, Some(why)) = (mode, why) {
                            tracing::warn!(environment = %env, commit = %commit, reason = %why, "commit not applied: signature");
                            let report = EnvReport {
                                commit,
                                mode,
                                error: Some(ReportError::new(ErrorReason::Signature, why)),
                                finished_unix: unix_now(),
                                ..EnvReport::default()
                            };
                            let _ = done_tx.send((env, report));
                            continue;
                        }
                        // Where force-pushes are refused, the commit must
                        // descend from the one last applied (the record's,
                        // else the one this process applied).
                        let last_good = state.envs.get(&env).and_then(|e| e.last_good.clone());
                        let new_commit =
                            mode == Mode::Apply && last_good.as_deref() != Some(commit.as_str());
                        // A rollback goes back on purpose: no lineage check.
                        let rollback = pin.as_deref() == Some(commit.as_str());
                        let lineage =
                            (mode == Mode::Apply && !rollback && self.refuses_force_push(&env))
                                .then_some(last_good);
                        let task = self.spawn(
                            env.clone(),
                            snap,
                            mode,
                            lineage,
                            new_commit,
                            done_tx.clone(),
                        );
                        tasks.insert(env, task);
                    }
                    Action::Abandon { env } => {
                        if let Some(task) = tasks.remove(&env) {
                            tracing::warn!(environment = %env, "lease lost: abandoning the converge in flight");
                            task.abort();
                        }
                    }
                    Action::Poll => next_poll = tokio::time::Instant::now(),
                    Action::Exit => break 'run,
                }
            }
            publish_tx.send_if_modified(|p| {
                let next = publish_of(&state);
                let changed = *p != next;
                *p = next;
                changed
            });
            self.publish(&state);
        }
        state.stopping = true;
        self.publish(&state);
        let _ = stop_tx.send(true);
        if let Some(task) = lease_task {
            let _ = task.await;
        }
        notifier.notify(notify::Event::new(
            Kind::ReconcilerStopped,
            &notifier.origin(),
        ));
        tracing::info!("stopped");
    }

    /// One poll; the event for the machine (a new commit that loads) and how
    /// long to wait before the next poll.
    async fn poll(&self, snapshot: &mut Option<Arc<Snapshot>>) -> (Option<Event>, Duration) {
        let jitter = |d: Duration| d.mul_f64(1.0 - self.opts.poll_jitter * fastrand::f64());
        let now = unix_now();
        let poll = match self.source.poll().await {
            Ok(p) => p,
            Err(e) => {
                let e = source::redact_url(&e.to_string());
                tracing::error!(error = %e, "git source failed");
                self.shared.metrics.poll("error");
                self.shared.metrics.error(ErrorReason::Fetch);
                self.shared.set_status(|s| s.source_error = Some(e));
                return (None, jitter(self.opts.interval));
            }
        };
        self.shared.set_status(|s| s.last_poll_unix = Some(now));
        let wait = match &poll.event {
            source::Event::Unreachable { .. } => poll.next_poll_in,
            _ => jitter(poll.next_poll_in),
        };
        match poll.event {
            source::Event::Unchanged => {
                self.shared.metrics.poll("unchanged");
                self.shared.set_status(|s| s.source_error = None);
                (None, wait)
            }
            source::Event::Unreachable { error, attempt, .. } => {
                let error = source::redact_url(&error);
                tracing::warn!(%error, attempt, "git remote unreachable; serving the last good commit");
                self.shared.metrics.poll("unreachable");
                self.shared.metrics.error(ErrorReason::Fetch);
                self.shared.set_status(|s| s.source_error = Some(error));
                (None, wait)
            }
            source::Event::ForcePushRefused { from, to } => {
                tracing::warn!(commit = %from, refused = %to, "force-push refused");
                self.shared.metrics.poll("force-push-refused");
                let msg = format!("force-push to {to} refused; serving {from}");
                self.shared.set_status(|s| s.source_error = Some(msg));
                (None, wait)
            }
            source::Event::NewCommit { to, .. } => {
                self.shared.metrics.poll("new-commit");
                self.shared.set_status(|s| s.source_error = None);
                let Some(snap) = poll.snapshot.filter(|s| s.commit == to) else {
                    return (None, wait);
                };
                (self.load(snap, snapshot).await, wait)
            }
        }
    }

    /// Whether `env` refuses a commit that does not descend from the one
    /// last applied to it.
    fn refuses_force_push(&self, env: &str) -> bool {
        match self.opts.force_push {
            Some(source::ForcePush::Refuse) => true,
            Some(source::ForcePush::Follow) => false,
            None => lock(&self.signed_envs).contains(env),
        }
    }

    /// Why `commit` may not be applied to `env` (a trusted signature is
    /// required and missing).
    fn refusal(&self, commit: &str, env: &str) -> Option<String> {
        let r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        (r.0 == commit).then(|| r.1.get(env).cloned()).flatten()
    }

    /// Checks the signature of a loaded commit for the environments that
    /// require one; records which of them it may not be applied to.
    async fn check_signature(&self, commit: &str, model: &crate::model::Model) {
        let strict: Vec<&crate::model::Environment> = model
            .environments
            .iter()
            .filter(|e| e.require_signed_commits)
            .collect();
        *lock(&self.signed_envs) = strict.iter().map(|e| e.name.clone()).collect();
        let mut refused = HashMap::new();
        let mut shown = None;
        if !strict.is_empty() {
            let trust = self.opts.trust.clone();
            let verdict = match self.source.verify(commit, trust).await {
                Ok(v) => v,
                Err(e) => source::Verification::Invalid {
                    reason: e.to_string(),
                },
            };
            tracing::info!(commit = %commit, signature = %verdict, "commit signature checked");
            for e in strict {
                if let Some(why) =
                    crate::pipeline::signature_refusal(e, commit, &verdict, &self.opts.trust)
                {
                    refused.insert(e.name.clone(), why);
                }
            }
            shown = Some(verdict.to_string());
        }
        self.shared.set_status(|s| s.signature = shown);
        *self.refusals.lock().unwrap_or_else(|p| p.into_inner()) = (commit.to_string(), refused);
    }

    /// Loads and checks a new commit; the machine only sees it when it is
    /// clean, so a bad commit changes nothing anywhere.
    async fn load(
        &self,
        snap: Arc<Snapshot>,
        current: &mut Option<Arc<Snapshot>>,
    ) -> Option<Event> {
        let files = snap.clone();
        let checked =
            tokio::task::spawn_blocking(move || crate::pipeline::check(&files.files)).await;
        let commit = snap.commit.clone();
        match checked {
            Ok(Ok(checked)) => {
                // The converges at this commit take this check instead of
                // doing their own.
                let checked = Arc::new(checked);
                self.converge.loaded(&snap, checked.clone()).await;
                tracing::info!(commit = %commit, environments = checked.model.environments.len(), "new commit loaded");
                for w in &checked.warnings {
                    tracing::warn!(commit = %commit, warning = %w, "loaded with a warning");
                }
                let mut envs: Vec<EnvSpec> = checked
                    .model
                    .environments
                    .iter()
                    .map(EnvSpec::from)
                    .collect();
                // The controls come with the commit, so that nothing is
                // scheduled before a hold or a missing approval is known.
                for spec in &mut envs {
                    spec.controls = self.read_controls(&snap, &spec.name).await;
                }
                self.check_signature(&commit, &checked.model).await;
                let graph = GraphView::of(&checked.graph);
                self.shared.set_status(|s| {
                    s.graph = graph;
                    s.load_error = None;
                    s.rejected_commit = None;
                });
                self.shared.ready.store(true, Ordering::Release);
                *self
                    .shared
                    .history
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) =
                    Some((self.converge.clone(), snap.clone()));
                *current = Some(snap);
                Some(Event::Commit { commit, envs })
            }
            Ok(Err(report)) => {
                tracing::error!(commit = %commit, problems = %report, "commit does not load; nothing applied");
                self.shared.metrics.error(ErrorReason::Load);
                self.shared.set_status(|s| {
                    s.load_error = Some(report.to_string());
                    s.rejected_commit = Some(commit);
                });
                None
            }
            Err(e) => {
                tracing::error!(commit = %commit, error = %e, "loading panicked");
                self.shared.metrics.error(ErrorReason::Internal);
                None
            }
        }
    }

    /// The controls of `env` from its store; on an error, the ones read
    /// last (a store that cannot be read must not lift a hold).
    async fn read_controls(&self, snap: &Snapshot, env: &str) -> Controls {
        match self.converge.controls(snap, env).await {
            Ok(c) => {
                lock(&self.controls).insert(env.to_string(), c.clone());
                c
            }
            Err(e) => {
                tracing::warn!(environment = %env, error = %e.message, "cannot read the promotion controls; keeping the ones read last");
                lock(&self.controls).get(env).cloned().unwrap_or_default()
            }
        }
    }

    /// Reads every environment's controls again; the changed ones as
    /// events.
    async fn refresh_controls(&self, snap: Option<&Snapshot>, order: &[String]) -> Vec<Event> {
        let Some(snap) = snap else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for env in order {
            let before = lock(&self.controls).get(env).cloned();
            let now = self.read_controls(snap, env).await;
            if before.as_ref() != Some(&now) {
                out.push(Event::Controls {
                    env: env.clone(),
                    controls: now,
                });
            }
        }
        out
    }

    /// Carries out an operator's control request from the API.
    async fn control(
        &self,
        snap: Option<&Snapshot>,
        env: &str,
        revision: Option<&str>,
        ask: ControlAsk,
        by: &str,
        reason: Option<&str>,
    ) -> std::result::Result<Controls, ControlRefused> {
        let Some(snap) = snap else {
            return Err(ControlRefused::Unavailable(
                "no commit is loaded yet".into(),
            ));
        };
        let commit = match (ask, revision) {
            (ControlAsk::Approve | ControlAsk::Rollback, None) => {
                return Err(ControlRefused::BadRequest(
                    "give the commit as {\"revision\": \"<commit id>\"}".into(),
                ))
            }
            (_, Some(rev)) => Some(self.resolve(snap, rev).await?),
            (_, None) => None,
        };
        let change = match (ask, commit) {
            (ControlAsk::Approve, Some(commit)) => Change::Approve { commit },
            (ControlAsk::Rollback, Some(commit)) => Change::Rollback { commit },
            (ControlAsk::Hold, _) => Change::Hold,
            _ => Change::Release,
        };
        let answer = self
            .converge
            .change_controls(snap, env, &change, &Subject::http(by), reason)
            .await
            .map_err(|e| ControlRefused::Unavailable(e.message))?;
        match answer {
            Ok(c) => {
                tracing::info!(environment = %env, by = %by, action = change.label(), commit = change.commit().unwrap_or(""), reason = reason.unwrap_or(""), "promotion control changed through the API");
                Ok(c)
            }
            Err(why) => Err(ControlRefused::Conflict(why)),
        }
    }

    /// The full id of `rev` (a commit id or a prefix of one): the served
    /// commit, or one read from the Git cache.
    async fn resolve(
        &self,
        snap: &Snapshot,
        rev: &str,
    ) -> std::result::Result<String, ControlRefused> {
        let rev = commit_prefix(rev).map_err(ControlRefused::BadRequest)?;
        if snap.commit.starts_with(&rev) {
            return Ok(snap.commit.clone());
        }
        match self.source.snapshot_at(&rev).await {
            Ok(s) if s.commit.starts_with(&rev) => {
                let commit = s.commit.clone();
                lock(&self.pinned).insert(commit.clone(), Arc::new(s));
                Ok(commit)
            }
            Ok(_) | Err(_) => Err(ControlRefused::NotFound(format!(
                "no commit {rev} in {}",
                source::redact_url(&self.opts.remote)
            ))),
        }
    }

    /// Why the pinned `commit` may not be applied to `env`, which requires
    /// a trusted signature (as the served commit's files say): checked
    /// against today's trust list.
    async fn pinned_refusal(&self, commit: &str, env: &str) -> Option<String> {
        if !lock(&self.signed_envs).contains(env) {
            return None;
        }
        let verdict = match self.source.verify(commit, self.opts.trust.clone()).await {
            Ok(v) => v,
            Err(e) => source::Verification::Invalid {
                reason: e.to_string(),
            },
        };
        if source::SignaturePolicy::RequireTrusted.allows(&verdict) {
            return None;
        }
        Some(format!(
            "commit {} (the rollback pin) is not applied to {env}: {verdict}, and {env} sets `requireSignedCommits: true`; release the pin or roll back to a commit signed by a trusted key",
            short(commit)
        ))
    }

    /// The snapshot of a pinned commit (read once from the Git cache).
    async fn pinned_snapshot(
        &self,
        commit: &str,
    ) -> std::result::Result<Arc<Snapshot>, source::Error> {
        if let Some(s) = lock(&self.pinned).get(commit) {
            return Ok(s.clone());
        }
        let s = Arc::new(self.source.snapshot_at(commit).await?);
        lock(&self.pinned).insert(commit.to_string(), s.clone());
        Ok(s)
    }

    /// Runs one converge in its own task. `lineage` is set where the commit
    /// must descend from the one last applied (what this process applied
    /// last, used when the converge keeps no record).
    fn spawn(
        &self,
        env: String,
        snap: Arc<Snapshot>,
        mode: Mode,
        lineage: Option<Option<String>>,
        new_commit: bool,
        done: mpsc::UnboundedSender<Done>,
    ) -> JoinHandle<()> {
        let notifier = self.opts.notifier.clone();
        let converge = self.converge.clone();
        let commit = snap.commit.clone();
        let source = self.source.clone();
        let allow = self.opts.allow_rollback_to.clone();
        let span = tracing::info_span!("converge", environment = %env, commit = %commit, mode = mode.label());
        tokio::spawn(
            async move {
                let started = Instant::now();
                if let Some(remembered) = lineage {
                    let refused = not_a_descendant(
                        &source,
                        converge.as_ref(),
                        &snap,
                        &env,
                        remembered,
                        allow.as_deref(),
                    )
                    .await;
                    if let Some(error) = refused {
                        let report = EnvReport {
                            commit,
                            mode,
                            error: Some(error),
                            duration_ms: started.elapsed().as_millis() as u64,
                            finished_unix: unix_now(),
                            ..EnvReport::default()
                        };
                        let _ = done.send((env, report));
                        return;
                    }
                }
                tracing::info!("converge started");
                if new_commit {
                    let e = notify::Event::new(Kind::ApplyStarted, &notifier.origin())
                        .env(&env, &commit);
                    notifier.notify(notify::Event {
                        mode: Some(mode.label().into()),
                        ..e
                    });
                }
                let name = env.clone();
                // The converge runs in its own task so a panic becomes a report.
                let inner = tokio::spawn(
                    async move { converge.converge(&snap, &name, mode).await }.in_current_span(),
                );
                let abort = inner.abort_handle();
                let _guard = AbortOnDrop(abort);
                let mut report = match inner.await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => EnvReport {
                        error: Some(e),
                        ..EnvReport::default()
                    },
                    Err(e) => EnvReport {
                        error: Some(ReportError::new(
                            ErrorReason::Internal,
                            format!("converge task failed: {e}"),
                        )),
                        ..EnvReport::default()
                    },
                };
                report.commit = commit;
                report.mode = mode;
                report.duration_ms = started.elapsed().as_millis() as u64;
                report.finished_unix = unix_now();
                let _ = done.send((env, report));
            }
            .instrument(span),
        )
    }

    /// Logs and records a finished converge.
    fn finished(&self, env: &str, report: &EnvReport) {
        let applied = report.passes_gate() && report.mode == Mode::Apply;
        self.shared.metrics.converged(env, report, applied);
        for id in &report.drift {
            let module = id.split('/').next().unwrap_or_default();
            tracing::warn!(environment = %env, commit = %report.commit, module, resource = %id, "drift");
        }
        match &report.error {
            None => tracing::info!(
                environment = %env,
                commit = %report.commit,
                mode = report.mode.label(),
                health = report.health.label(),
                changes = report.changes.total(),
                drift = report.drift.len(),
                duration_ms = report.duration_ms,
                "converge finished"
            ),
            Some(e) => tracing::error!(
                environment = %env,
                commit = %report.commit,
                reason = e.reason.label(),
                error = %e.message,
                "converge failed"
            ),
        }
    }

    /// Reads the last entries of `env`'s audit history in the background;
    /// the next publish shows them.
    /// Appends `entry` to its environment's audit history (in its own
    /// task: the loop does not wait on the store), then reads the recent
    /// entries again for the status.
    fn audit(&self, snapshot: Option<Arc<Snapshot>>, entry: Entry) {
        let Some(snapshot) = snapshot else {
            tracing::warn!(environment = %entry.environment, event = %entry.event, "no commit loaded: the event is not in the audit history");
            return;
        };
        let (converge, shared) = (self.converge.clone(), self.shared.clone());
        tokio::spawn(async move {
            let env = entry.environment.clone();
            if let Err(e) = converge.append_history(&snapshot, &entry).await {
                tracing::warn!(environment = %env, error = %e, "could not append to the audit history");
            }
            if let Ok(mut entries) = converge.history(&snapshot, &env).await {
                entries.drain(..entries.len().saturating_sub(RECENT_HISTORY));
                lock(&shared.recent).insert(env, entries);
            }
        });
    }

    fn refresh_history(&self, env: &str, snapshot: Option<Arc<Snapshot>>) {
        let Some(snapshot) = snapshot else {
            return;
        };
        let (converge, shared, env) = (self.converge.clone(), self.shared.clone(), env.to_string());
        tokio::spawn(async move {
            match converge.history(&snapshot, &env).await {
                Ok(mut entries) => {
                    entries.drain(..entries.len().saturating_sub(RECENT_HISTORY));
                    lock(&shared.recent).insert(env, entries);
                }
                Err(e) => {
                    tracing::warn!(environment = %env, error = %e, "could not read the audit history")
                }
            }
        });
    }

    /// Mirrors the machine into the shared status and gauges.
    fn publish(&self, state: &State) {
        let now = Instant::now();
        let envs: Vec<EnvStatus> = state
            .ordered()
            .map(|e| EnvStatus {
                name: e.spec.name.clone(),
                after: e.spec.after.clone(),
                gate: state.gate(&e.spec.name, now),
                held: e.held,
                suspended: e.suspended(),
                suspended_in_file: e.spec.suspend,
                last_good: e.last_good.clone(),
                healthy: e.healthy,
                drift_mode: e.spec.drift.mode,
                drift_interval_secs: e.spec.drift.interval.as_secs(),
                failures: e.failures,
                last: e.last.clone(),
                pinned: e
                    .pin()
                    .filter(|p| state.commit.as_deref() != Some(*p))
                    .map(str::to_string),
                promotion: promotion::describe(&e.spec.promotion),
                controls: {
                    let mut c = e.controls.clone();
                    let extra = c.approvals.len().saturating_sub(5);
                    c.approvals.drain(..extra);
                    c
                },
                history: self.shared.recent_history(&e.spec.name),
                traffic: Vec::new(),
            })
            .collect();
        for e in &envs {
            self.shared.metrics.suspended(&e.name, e.suspended);
            let reason = match &e.gate {
                Gate::Waiting { reason, .. } => Some(*reason),
                _ => None,
            };
            self.shared.metrics.waiting(&e.name, reason);
        }
        self.notify_waiting(state.commit.as_deref(), &envs);
        let ready = self.shared.ready();
        self.shared.set_status(|s| {
            s.environments = envs;
            s.commit = state.commit.clone();
            s.stopping = state.stopping;
            s.ready = ready;
        });
    }
}

impl Io {
    /// Sends `gate.waiting` for each environment that started waiting (on
    /// another environment, or at another commit) since the last step.
    fn notify_waiting(&self, commit: Option<&str>, envs: &[EnvStatus]) {
        let notifier = &self.opts.notifier;
        if !notifier.enabled() {
            return;
        }
        let mut waiting = lock(&self.waiting);
        for e in envs {
            let (
                Gate::Waiting {
                    reason, on, detail, ..
                },
                Some(commit),
            ) = (&e.gate, commit)
            else {
                waiting.remove(&e.name);
                continue;
            };
            let what = on.clone().unwrap_or_else(|| reason.label().to_string());
            let now = (commit.to_string(), what);
            if waiting.get(&e.name) == Some(&now) {
                continue;
            }
            waiting.insert(e.name.clone(), now);
            let kind = match reason {
                promotion::Reason::Approval => Kind::ApprovalNeeded,
                _ => Kind::GateWaiting,
            };
            let label = match reason {
                promotion::Reason::Previous => "waiting-on".to_string(),
                r => r.label().to_string(),
            };
            let mut event = notify::Event::new(kind, &notifier.origin())
                .env(&e.name, commit)
                .reason(&label, detail);
            event.waiting_on = on.clone();
            notifier.notify(event);
        }
    }
}

/// The notifications a finished converge makes: a refused commit, a failed
/// or succeeded apply of a new commit, drift found (and healed) by a drift
/// check. Reports hold no secret values, so neither do the events.
fn report_events(
    origin: &notify::Origin,
    env: &str,
    report: &EnvReport,
    drift_check: bool,
) -> Vec<notify::Event> {
    let base = |kind: Kind| {
        let mut e = notify::Event::new(kind, origin).env(env, &report.commit);
        e.mode = Some(report.mode.label().to_string());
        e.duration_ms = Some(report.duration_ms);
        let c = report.changes;
        e.changes = Some(notify::Counts {
            create: c.create,
            update: c.update,
            delete: c.delete,
            unchanged: c.unchanged,
        });
        e
    };
    if let Some(err) = &report.error {
        let kind = match err.reason {
            ErrorReason::Signature | ErrorReason::NotADescendant => Kind::CommitRefused,
            _ => Kind::ApplyFailed,
        };
        return vec![base(kind).reason(err.reason.label(), &err.message)];
    }
    if !report.health.passes_gate() {
        let why = match &report.health {
            super::EnvHealth::Progressing(r) | super::EnvHealth::Degraded(r) => r.clone(),
            other => other.label().to_string(),
        };
        return vec![base(Kind::ApplyFailed).reason(ErrorReason::Health.label(), &why)];
    }
    if !drift_check {
        return match report.mode {
            Mode::Apply => vec![base(Kind::ApplySucceeded)],
            Mode::ReportOnly => Vec::new(),
        };
    }
    if report.drift.is_empty() {
        return Vec::new();
    }
    let detected = base(Kind::DriftDetected).resources(&report.drift);
    match report.mode {
        Mode::Apply => vec![detected, base(Kind::DriftHealed).resources(&report.drift)],
        Mode::ReportOnly => vec![detected],
    }
}

/// Why `snap` may not be applied to `env`, which refuses force-pushes:
/// it does not descend from the commit last applied there (the record's,
/// else `remembered`), and `allow` (`--allow-rollback-to`) does not name it.
/// An error reading the record or the history refuses too.
async fn not_a_descendant(
    source: &Source,
    converge: &dyn Converge,
    snap: &Snapshot,
    env: &str,
    remembered: Option<String>,
    allow: Option<&str>,
) -> Option<ReportError> {
    let recorded = match converge.last_applied(snap, env).await {
        Ok(recorded) => recorded,
        Err(e) => {
            let msg = format!(
                "cannot read the commit last applied to {env}, so cannot check that {} descends from it: {}",
                short(&snap.commit),
                e.message
            );
            return Some(ReportError::new(e.reason, msg));
        }
    };
    let last = recorded.or(remembered)?;
    let commit = snap.commit.as_str();
    if last.len() != 40 || !last.bytes().all(|b| b.is_ascii_hexdigit()) {
        // `tidegate apply` from a working tree records `worktree-<hash>`.
        tracing::warn!(environment = %env, commit = %commit, last_applied = %last, "the commit last applied is not a commit id (applied from a working tree?): not checking that the new commit descends from it");
        return None;
    }
    let descends = match source.descends_from(commit, &last).await {
        Ok(d) => d,
        Err(e) => {
            let msg = format!(
                "cannot tell whether commit {} descends from {}, the commit last applied to {env}: {e}",
                short(commit),
                short(&last)
            );
            return Some(ReportError::new(ErrorReason::Internal, msg));
        }
    };
    if descends {
        return None;
    }
    if allow.is_some_and(|a| commit.starts_with(a)) {
        tracing::warn!(environment = %env, commit = %commit, last_applied = %last, "rolling back: the commit does not descend from the one last applied, and --allow-rollback-to names it");
        return None;
    }
    tracing::warn!(environment = %env, commit = %commit, last_applied = %last, reason = ErrorReason::NotADescendant.label(), "commit not applied: it does not descend from the commit last applied (force-push or reset to other history)");
    Some(ReportError::new(
        ErrorReason::NotADescendant,
        format!(
            "commit {} is not applied to {env}: it does not descend from {}, the commit last applied there (the branch was force-pushed or reset); to roll back, push a commit on top of {} that reverts the change, or restart with --allow-rollback-to {}",
            short(commit),
            short(&last),
            short(&last),
            short(commit)
        ),
    ))
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What this replica publishes on the Leases of the environments it holds.
fn publish_of(state: &State) -> Publish {
    state
        .ordered()
        .map(|e| {
            let p = Published {
                last_good: e.last_good.clone(),
                healthy: e.healthy,
                good_since: e.good_since.clone(),
                busy: e.running.is_some(),
            };
            (e.spec.name.clone(), p)
        })
        .collect()
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::EnvHealth;

    fn report(mode: Mode, health: EnvHealth, drift: &[&str]) -> EnvReport {
        EnvReport {
            commit: "c0ffee".into(),
            mode,
            health,
            drift: drift.iter().map(|d| d.to_string()).collect(),
            ..EnvReport::default()
        }
    }

    fn kinds(events: &[notify::Event]) -> Vec<Kind> {
        events.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn a_refused_commit_and_a_failed_apply_are_told_apart() {
        let origin = notify::Origin::default();
        let mut r = report(Mode::Apply, EnvHealth::Healthy, &[]);
        r.error = Some(ReportError::new(ErrorReason::Signature, "unsigned"));
        let e = report_events(&origin, "prod", &r, false);
        assert_eq!(kinds(&e), [Kind::CommitRefused]);
        assert_eq!(e[0].reason.as_deref(), Some("signature"));
        r.error = Some(ReportError::new(ErrorReason::NotADescendant, "older"));
        assert_eq!(
            kinds(&report_events(&origin, "prod", &r, false)),
            [Kind::CommitRefused]
        );
        r.error = Some(ReportError::new(ErrorReason::Apply, "web.db failed"));
        let e = report_events(&origin, "prod", &r, true);
        assert_eq!(kinds(&e), [Kind::ApplyFailed]);
        assert_eq!(e[0].reason.as_deref(), Some("apply"));
        // Unhealthy without an error: failed, for health.
        let r = report(
            Mode::Apply,
            EnvHealth::Degraded("web.api crash-looping".into()),
            &[],
        );
        let e = report_events(&origin, "prod", &r, false);
        assert_eq!(kinds(&e), [Kind::ApplyFailed]);
        assert_eq!(e[0].reason.as_deref(), Some("health"));
    }

    #[test]
    fn a_new_commit_succeeds_and_a_drift_check_reports_drift_once_healed() {
        let origin = notify::Origin::default();
        let applied = report(Mode::Apply, EnvHealth::Healthy, &["web.config"]);
        // A new commit applied: succeeded (the drift list is its changes).
        assert_eq!(
            kinds(&report_events(&origin, "dev", &applied, false)),
            [Kind::ApplySucceeded]
        );
        // A drift check that found and healed drift.
        let e = report_events(&origin, "dev", &applied, true);
        assert_eq!(kinds(&e), [Kind::DriftDetected, Kind::DriftHealed]);
        assert_eq!(e[0].resources, ["web.config"]);
        // Report-only: found, not healed; nothing when nothing drifted.
        let watched = report(Mode::ReportOnly, EnvHealth::NotChecked, &["web.config"]);
        assert_eq!(
            kinds(&report_events(&origin, "dev", &watched, true)),
            [Kind::DriftDetected]
        );
        assert!(report_events(&origin, "dev", &watched, false).is_empty());
        let clean = report(Mode::Apply, EnvHealth::Healthy, &[]);
        assert!(report_events(&origin, "dev", &clean, true).is_empty());
    }
}
