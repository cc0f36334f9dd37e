//! `tidegate reconcile`: the long-running, in-cluster reconciler.
//!
//! It exists to wrap the whole pipeline (source → load → ... → execute) in a
//! loop that never stops on one environment's failure. The loop is split
//! like kube-runtime's watcher:
//!
//! - [`machine`]: a state enum and a pure `step(state, event, now) ->
//!   (state, actions)`: promotion gates, drift timers, suspend/resume,
//!   per-environment backoff, leases held, shutdown. Every transition is a
//!   unit test.
//! - [`driver`]: the only I/O: polls the Git [`crate::source::Source`],
//!   loads each new commit, runs the [`Converge`] actions the machine asks
//!   for, feeds the results back, and publishes status and metrics.
//! - [`webhook`]: GitHub/GitLab push hooks (signature or token checked in
//!   constant time, replay-safe) that make the driver poll at once.
//! - [`lease`]: one Kubernetes Lease per environment so several replicas
//!   split environments and two never apply the same one.
//! - [`metrics`]: the Prometheus series the driver updates from each
//!   [`EnvReport`] and [`ErrorReason`], served on `/metrics`.
//!
//! # Guarantees
//! - An environment starts a commit only when every environment it is
//!   `after` is converged and healthy at that same commit.
//! - A failing environment backs off on its own (exponential, capped,
//!   jittered); the others go on; the ones after it stay at their last good
//!   commit.
//! - At most one [`Converge`] call per environment is in flight, and only in
//!   the replica holding that environment's lease.
//!
//! # Caveats
//! What "converge" means is not decided here: the [`Converge`] trait does the
//! plan/apply/health of one environment at one snapshot. The command uses
//! [`converge::Executor`] (plan, policy gate, `execute::run_env`, state
//! record); [`ValidateOnly`] only loads and checks.

pub mod converge;
pub mod driver;
pub mod lease;
pub mod machine;
pub mod metrics;
pub mod webhook;

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::promotion::{Change, Controls};
use crate::source::Snapshot;

pub use driver::{Command, Options, Reconciler, Shared};
pub use machine::{step, Action, EnvSpec, EnvState, Event, Gate, State};

/// Everything that can stop the reconciler itself (an environment's failure
/// never does: it is a report).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Git source could not be opened or its cache is unusable.
    #[error("git source: {0}")]
    Source(#[from] crate::source::Error),
    /// A Kubernetes client for the leases could not be built.
    #[error("cannot reach the Kubernetes API for leases: {0}")]
    Kube(#[source] kube::Error),
    /// The async runtime cannot start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether a converge may change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Plan and apply, then wait for health.
    #[default]
    Apply,
    /// Plan only: report changes and drift, write nothing.
    ReportOnly,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Apply => "apply",
            Mode::ReportOnly => "report-only",
        }
    }
}

/// Plan, apply and health-check one environment at one snapshot.
///
/// # Expected flow
/// The driver calls `converge` for an environment whose gate is open (a new
/// commit) or whose drift check is due. [`Mode::Apply`] plans, applies and
/// waits for health; [`Mode::ReportOnly`] plans and reports, writing
/// nothing (drift `mode: report`, `--dry-run`).
///
/// # Guarantees the implementation must give
/// - Idempotent: called again at the same snapshot it changes nothing more.
/// - Cancel-safe: the future may be dropped at any await point (SIGTERM
///   after the grace period, lease lost); what was applied stays applied and
///   the next call converges from there.
/// - No secret value in any field of the report (messages included).
///
/// # Return cases
/// - `Ok(report)` with `report.error == None`: converged; `report.health`
///   says whether the environment may open the next gate.
/// - `Ok(report)` with `report.error == Some(..)`: ran and failed part-way;
///   changes made so far are counted.
/// - `Err(error)`: could not run at all (load, secrets, connect).
#[async_trait]
pub trait Converge: Send + Sync {
    async fn converge(
        &self,
        snapshot: &Snapshot,
        env: &str,
        mode: Mode,
    ) -> std::result::Result<EnvReport, ReportError>;

    /// The driver loaded and checked `snapshot` as `checked` before it
    /// scheduled any environment at it. An implementation that checks
    /// commits itself may keep it instead of checking again; the default
    /// drops it.
    async fn loaded(
        &self,
        _snapshot: &Snapshot,
        _checked: std::sync::Arc<crate::pipeline::Checked>,
    ) {
    }

    /// The commit last applied to `env`, as recorded where the environment
    /// keeps its state, so that it survives restarts; `None` when nothing
    /// is recorded (or the implementation keeps no records: the driver
    /// then uses the commit it applied last itself). Where force-pushes are
    /// refused, the driver applies only commits that descend from it.
    async fn last_applied(
        &self,
        _snapshot: &Snapshot,
        _env: &str,
    ) -> std::result::Result<Option<String>, ReportError> {
        Ok(None)
    }

    /// The operators' promotion decisions for `env` (approvals, hold, pin),
    /// from where the environment keeps its state; none by default (an
    /// implementation that keeps no state).
    async fn controls(
        &self,
        _snapshot: &Snapshot,
        _env: &str,
    ) -> std::result::Result<Controls, ReportError> {
        Ok(Controls::default())
    }

    /// Makes an operator's change to the controls of `env`: the stored
    /// controls, `Ok(Err(why))` when the change is refused.
    async fn change_controls(
        &self,
        _snapshot: &Snapshot,
        env: &str,
        _change: &Change,
        _by: &crate::state::history::Subject,
        _reason: Option<&str>,
    ) -> std::result::Result<std::result::Result<Controls, String>, ReportError> {
        Ok(Err(format!("{env} keeps no promotion controls here")))
    }

    /// The audit history of `env` (oldest first) from where the
    /// environment keeps its records, as `snapshot` says where that is;
    /// empty when the implementation keeps none.
    async fn history(
        &self,
        _snapshot: &Snapshot,
        _env: &str,
    ) -> std::result::Result<Vec<crate::state::history::Entry>, ReportError> {
        Ok(Vec::new())
    }

    /// The traffic routing of `env` (`tidegate switch`) where the
    /// environment keeps its records; empty when the implementation keeps
    /// none.
    async fn routing(
        &self,
        _snapshot: &Snapshot,
        _env: &str,
    ) -> std::result::Result<crate::state::traffic::Routing, ReportError> {
        Ok(Default::default())
    }

    /// Appends `entry` to the audit history of `entry.environment` where
    /// the environment keeps its records, as `snapshot` says (a control
    /// requested through the API: suspend, resume, approve, hold ...);
    /// the default keeps none.
    async fn append_history(
        &self,
        _snapshot: &Snapshot,
        _entry: &crate::state::history::Entry,
    ) -> std::result::Result<(), ReportError> {
        Ok(())
    }
}

/// What one converge of one environment did: everything the status page,
/// the JSON API and the metrics show. The driver fills `commit`, `mode`,
/// `finished_unix` and `duration_ms`; the [`Converge`] implementation the
/// rest.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvReport {
    pub commit: String,
    pub mode: Mode,
    /// Changes applied (Apply) or that would be applied (ReportOnly).
    pub changes: Changes,
    pub health: EnvHealth,
    /// Resources whose live state differed from the desired state before
    /// this converge (ids only, never values).
    pub drift: Vec<String>,
    /// Resources managed in this environment.
    pub resources: usize,
    /// Provider API calls made during this converge.
    pub api_calls: Vec<ApiCalls>,
    /// Requests among them sent again, by provider and reason.
    pub api_retries: Vec<ApiRetries>,
    pub error: Option<ReportError>,
    /// RFC 3339: since when the environment has been good at this commit
    /// without a break, as recorded (the start of the next one's soak).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub good_since: Option<String>,
    /// Seconds since the Unix epoch when the converge ended.
    pub finished_unix: u64,
    pub duration_ms: u64,
}

impl EnvReport {
    /// Converged and not unhealthy: the environment opens the gates after it.
    pub fn passes_gate(&self) -> bool {
        self.error.is_none() && self.health.passes_gate()
    }

    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.duration_ms)
    }
}

/// Resource counts by action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub unchanged: usize,
}

impl Changes {
    pub fn total(&self) -> usize {
        self.create + self.update + self.delete
    }
}

/// The environment's health after a converge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "kebab-case")]
pub enum EnvHealth {
    /// Every resource is ready.
    Healthy,
    /// Some resource is not ready yet (the reason names it).
    Progressing(String),
    /// Some resource will not become ready without a change.
    Degraded(String),
    /// Health was not checked (validate-only or report-only converges).
    #[default]
    NotChecked,
}

impl EnvHealth {
    /// Healthy, or not checked by a converge that never checks health.
    pub fn passes_gate(&self) -> bool {
        matches!(self, EnvHealth::Healthy | EnvHealth::NotChecked)
    }

    pub fn label(&self) -> &'static str {
        match self {
            EnvHealth::Healthy => "healthy",
            EnvHealth::Progressing(_) => "progressing",
            EnvHealth::Degraded(_) => "degraded",
            EnvHealth::NotChecked => "not-checked",
        }
    }
}

/// API calls of one provider operation with one result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiCalls {
    /// `kubernetes`, `aws`.
    pub provider: String,
    /// `list`, `apply`, `DescribeVpcs`, ...
    pub operation: String,
    /// `ok` or `error`.
    pub result: String,
    pub count: u64,
}

/// Requests of one provider sent again for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiRetries {
    /// `kubernetes`, `aws`.
    pub provider: String,
    /// `throttled`, `server_error`, `timeout`, `connection`,
    /// `not_yet_visible` ([`crate::provider::RetryReason`]).
    pub reason: String,
    pub count: u64,
}

/// Why a converge failed; `reason` is the metric label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct ReportError {
    pub reason: ErrorReason,
    /// For people; must never hold a secret value.
    pub message: String,
}

impl ReportError {
    pub fn new(reason: ErrorReason, message: impl Into<String>) -> Self {
        ReportError {
            reason,
            message: message.into(),
        }
    }
}

/// The reasons errors are counted by (`tidegate_errors_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorReason {
    /// The Git remote could not be polled.
    Fetch,
    /// The commit does not load or validate.
    Load,
    /// Secrets could not be decrypted.
    Secrets,
    /// A policy check failed.
    Policy,
    /// Live state could not be read.
    Observe,
    /// A change could not be applied.
    Apply,
    /// Resources did not become healthy.
    Health,
    /// The converge took too long or was abandoned.
    Timeout,
    /// A lease could not be acquired or renewed.
    Lease,
    /// The commit lacks the trusted signature the environment requires.
    Signature,
    /// The plan deletes more than the environment's `guards` allow; it
    /// holds until someone applies it with `--allow-mass-delete` or Git
    /// changes.
    MassDelete,
    /// The plan deletes or replaces in an environment with `protect: true`;
    /// it holds until someone applies it with `--allow-destroy`.
    Protected,
    /// The commit does not descend from the one last applied to the
    /// environment (a force-push or reset to older or other history), and
    /// the environment refuses that (`--force-push refuse`, the default
    /// where `requireSignedCommits: true`).
    NotADescendant,
    /// Anything else (a panicked task).
    Internal,
}

impl ErrorReason {
    pub fn label(self) -> &'static str {
        match self {
            ErrorReason::Fetch => "fetch",
            ErrorReason::Load => "load",
            ErrorReason::Secrets => "secrets",
            ErrorReason::Policy => "policy",
            ErrorReason::Observe => "observe",
            ErrorReason::Apply => "apply",
            ErrorReason::Health => "health",
            ErrorReason::Timeout => "timeout",
            ErrorReason::Lease => "lease",
            ErrorReason::Signature => "signature",
            ErrorReason::MassDelete => "mass-delete",
            ErrorReason::Protected => "protected",
            ErrorReason::NotADescendant => "not-a-descendant",
            ErrorReason::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// A [`Converge`] for checking a remote without touching providers: it
/// loads and validates the snapshot (everything `tidegate validate` checks)
/// and reports the environment's resource count, with no plan, no apply and
/// health [`EnvHealth::NotChecked`]. It never touches a provider.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidateOnly;

#[async_trait]
impl Converge for ValidateOnly {
    async fn converge(
        &self,
        snapshot: &Snapshot,
        env: &str,
        _mode: Mode,
    ) -> std::result::Result<EnvReport, ReportError> {
        let checked = crate::pipeline::check(&snapshot.files)
            .map_err(|report| ReportError::new(ErrorReason::Load, report.to_string()))?;
        let resources = checked.graph.levels(env).iter().map(Vec::len).sum();
        if checked.model.environment(env).is_none() {
            let msg = format!("commit {} has no environment {env}", snapshot.commit);
            return Err(ReportError::new(ErrorReason::Load, msg));
        }
        Ok(EnvReport {
            resources,
            ..EnvReport::default()
        })
    }
}
