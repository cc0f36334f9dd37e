//! Notifications: what the reconciler learns (an apply started, failed,
//! drift found, a gate holding an environment, a commit refused) sent to
//! the people and systems that do not watch the status page.
//!
//! It exists so that a failed prod apply reaches someone. The pieces:
//!
//! - [`Event`]: one thing the reconciler learned, in the versioned,
//!   documented schema the generic webhook sends (`schemaVersion: 1`).
//! - [`config`]: the `--notifications FILE` format; secrets (tokens,
//!   webhook URLs, HMAC keys) only by reference to a file or an environment
//!   variable, read at each delivery.
//! - [`target`]: how one event becomes one HTTP request for each kind of
//!   receiver (generic webhook, Slack-compatible webhook, GitHub and GitLab
//!   commit statuses). Pure: no I/O.
//! - [`delivery`]: the [`Notifier`]: a bounded queue per target drained by
//!   its own task, so a slow or dead receiver never blocks a converge or
//!   another target.
//!
//! # Guarantees
//! - [`Notifier::notify`] never waits on the network: it takes a short lock,
//!   appends and returns.
//! - Memory is bounded: each target queues at most `delivery.queueSize`
//!   events; when full the oldest event that is not a failure is dropped
//!   (counted as `dropped`), a failure only when every queued one is.
//! - An identical event (same kind, environment, commit, reason, message,
//!   resources) is sent to a target at most once per `delivery.dedupeWindow`.
//! - Delivery is at least once per accepted event while the process lives:
//!   a failed attempt (connection, timeout, 408, 429, 5xx) is retried with
//!   exponential backoff and jitter up to `delivery.maxAttempts`; a 4xx is
//!   not retried. Every event carries an `id` so a receiver can drop a
//!   repeat.
//!
//! # Caveats
//! The queue is in memory: events still queued when the process stops
//! (after the flush at shutdown) are lost, and each replica notifies about
//! the environments it holds.

pub mod config;
pub mod delivery;
pub mod target;

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub use config::Config;
pub use delivery::{Notifier, Observer};

/// Everything that can go wrong configuring or sending notifications.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The notifications file cannot be read.
    #[error("cannot read notifications file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The notifications file is not valid (every problem, file:line:column).
    #[error("invalid notifications file:\n{0}")]
    Invalid(crate::diag::Report),
    /// A secret reference cannot be resolved (file missing or empty,
    /// variable unset or empty). Names the reference, never the value.
    #[error("notification target {target}: {what} from {from}: {why}")]
    Secret {
        target: String,
        what: &'static str,
        from: String,
        why: String,
    },
    /// A URL (from the file or a secret) does not parse as http(s).
    #[error("notification target {target}: {what} is not an http(s) URL")]
    Url { target: String, what: &'static str },
    /// The HTTPS client could not be built (no usable root certificates).
    #[error("cannot build the HTTPS client for notifications: {0}")]
    Client(#[source] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The version of the generic webhook's JSON schema (`schemaVersion`). A
/// field is only ever added within a version; renaming or removing one
/// makes a new version.
pub const SCHEMA_VERSION: u32 = 1;

/// Most resource ids carried in one event (`resources`); `resourceCount`
/// has the full number.
pub const MAX_RESOURCES: usize = 50;

/// Longest `message`, in bytes (cut at a character boundary, `…` added).
pub const MAX_MESSAGE: usize = 2000;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Kind {
    /// The reconciler process started.
    #[serde(rename = "reconciler.started")]
    ReconcilerStarted,
    /// The reconciler process is stopping (SIGTERM).
    #[serde(rename = "reconciler.stopped")]
    ReconcilerStopped,
    /// An apply of a new commit to an environment started.
    #[serde(rename = "apply.started")]
    ApplyStarted,
    /// An environment converged and is healthy at a new commit.
    #[serde(rename = "apply.succeeded")]
    ApplySucceeded,
    /// A converge failed or ended unhealthy (the first error).
    #[serde(rename = "apply.failed")]
    ApplyFailed,
    /// A drift check found live state differing from Git.
    #[serde(rename = "drift.detected")]
    DriftDetected,
    /// A drift check (`mode: heal`) applied Git again and converged.
    #[serde(rename = "drift.healed")]
    DriftHealed,
    /// An environment is held at its gate (the reason names the
    /// environment before it that is not converged and healthy).
    #[serde(rename = "gate.waiting")]
    GateWaiting,
    /// A commit was refused for an environment: unsigned or untrusted
    /// signature, or not a descendant of the commit last applied.
    #[serde(rename = "commit.refused")]
    CommitRefused,
    /// A `promotion.mode: manual` environment waits for someone to approve
    /// the commit (`tidegate approve`).
    #[serde(rename = "approval.needed")]
    ApprovalNeeded,
    /// `tidegate plan --notify` finished a preview (a pull request's plan):
    /// the counts, the Markdown, and where it was made.
    #[serde(rename = "plan.ready")]
    PlanReady,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::ReconcilerStarted,
        Kind::ReconcilerStopped,
        Kind::ApplyStarted,
        Kind::ApplySucceeded,
        Kind::ApplyFailed,
        Kind::DriftDetected,
        Kind::DriftHealed,
        Kind::GateWaiting,
        Kind::CommitRefused,
        Kind::ApprovalNeeded,
        Kind::PlanReady,
    ];

    /// The name in files, payloads and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Kind::ReconcilerStarted => "reconciler.started",
            Kind::ReconcilerStopped => "reconciler.stopped",
            Kind::ApplyStarted => "apply.started",
            Kind::ApplySucceeded => "apply.succeeded",
            Kind::ApplyFailed => "apply.failed",
            Kind::DriftDetected => "drift.detected",
            Kind::DriftHealed => "drift.healed",
            Kind::GateWaiting => "gate.waiting",
            Kind::CommitRefused => "commit.refused",
            Kind::ApprovalNeeded => "approval.needed",
            Kind::PlanReady => "plan.ready",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.label() == s)
    }

    /// How bad it is; filters use it and a full queue drops `Error` last.
    pub fn severity(self) -> Severity {
        match self {
            Kind::ApplyFailed | Kind::CommitRefused => Severity::Error,
            Kind::DriftDetected
            | Kind::GateWaiting
            | Kind::ApprovalNeeded
            | Kind::ReconcilerStopped => Severity::Warning,
            _ => Severity::Info,
        }
    }
}

/// Severity, ordered: `info < warning < error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        [Severity::Info, Severity::Warning, Severity::Error]
            .into_iter()
            .find(|v| v.label() == s)
    }
}

/// Resource counts of the converge (`apply.*`, `drift.*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Counts {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub unchanged: usize,
}

/// One notification, exactly as the generic webhook sends it (schema
/// version [`SCHEMA_VERSION`], documented in docs/notifications.md).
/// Names, commit ids, counts, reasons and messages only: the reconciler's
/// reports never hold a secret value, and nothing else goes in.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub schema_version: u32,
    /// Unique per event (32 hex digits); the same in every retry.
    pub id: String,
    pub kind: Kind,
    pub severity: Severity,
    /// RFC 3339, UTC, seconds.
    pub time: String,
    pub time_unix: u64,
    /// `None` for `reconciler.*`.
    pub environment: Option<String>,
    /// The full commit id, when the event is about one.
    pub commit: Option<String>,
    /// `apply` or `report-only`, for converge events.
    pub mode: Option<String>,
    /// Machine-readable why: an error reason (`apply`, `health`,
    /// `signature`, `not-a-descendant`, ...) or, for `gate.waiting`,
    /// `waiting-on`.
    pub reason: Option<String>,
    /// For people: the first error, the gate's reason.
    pub message: Option<String>,
    /// For `gate.waiting`: the environment it waits on.
    pub waiting_on: Option<String>,
    pub changes: Option<Counts>,
    /// Drifted or failing resource ids (at most [`MAX_RESOURCES`]).
    pub resources: Vec<String>,
    pub resource_count: usize,
    pub duration_ms: Option<u64>,
    /// Who sent it: the Git remote (without credentials), branch and this
    /// replica's identity.
    pub reconciler: Origin,
    /// `plan.ready`: the pull (merge) request the plan previews.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<u64>,
    /// `plan.ready`: the plan as Markdown, in parts of at most 65,535
    /// characters (what the pull-request comment shows; secrets masked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub markdown: Vec<String>,
}

/// The reconciler an event comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Origin {
    pub remote: String,
    pub branch: String,
    pub identity: Option<String>,
    /// The status page, when configured (`statusUrl`).
    pub status_url: Option<String>,
}

impl Event {
    /// A new event of `kind` now, with a fresh id; fill the rest with the
    /// builder methods.
    pub fn new(kind: Kind, origin: &Origin) -> Event {
        let now = SystemTime::now();
        Event {
            schema_version: SCHEMA_VERSION,
            id: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
            kind,
            severity: kind.severity(),
            time: humantime::format_rfc3339_seconds(now).to_string(),
            time_unix: now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            environment: None,
            commit: None,
            mode: None,
            reason: None,
            message: None,
            waiting_on: None,
            changes: None,
            resources: Vec::new(),
            resource_count: 0,
            duration_ms: None,
            reconciler: origin.clone(),
            pull_request: None,
            markdown: Vec::new(),
        }
    }

    pub fn env(mut self, env: &str, commit: &str) -> Event {
        self.environment = Some(env.to_string());
        self.commit = (!commit.is_empty()).then(|| commit.to_string());
        self
    }

    pub fn reason(mut self, reason: &str, message: &str) -> Event {
        self.reason = Some(reason.to_string());
        self.message = Some(truncate(message, MAX_MESSAGE));
        self
    }

    /// A `plan.ready` of pull request `pr` (if any) with its Markdown.
    pub fn plan(mut self, pr: Option<u64>, markdown: Vec<String>) -> Event {
        self.pull_request = pr;
        self.markdown = markdown;
        self
    }

    pub fn resources(mut self, ids: &[String]) -> Event {
        self.resource_count = ids.len();
        self.resources = ids.iter().take(MAX_RESOURCES).cloned().collect();
        self
    }

    /// The fields that make two events the same for deduplication (not
    /// the id or the time).
    pub fn dedupe_key(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            self.kind,
            &self.environment,
            &self.commit,
            &self.mode,
            &self.reason,
            &self.message,
            &self.waiting_on,
            &self.resources,
            self.resource_count,
            self.pull_request,
            &self.markdown,
        )
            .hash(&mut h);
        h.finish()
    }

    /// A one-line summary for people (Slack text, commit status).
    pub fn summary(&self) -> String {
        let env = self.environment.as_deref().unwrap_or("reconciler");
        let commit = self.commit.as_deref().map(short).unwrap_or_default();
        let what = match self.kind {
            Kind::ReconcilerStarted => "tidegate reconciler started".to_string(),
            Kind::ReconcilerStopped => "tidegate reconciler stopped".to_string(),
            Kind::ApplyStarted => format!("{env}: applying {commit}"),
            Kind::ApplySucceeded => format!("{env}: applied {commit}, healthy"),
            Kind::ApplyFailed => format!("{env}: apply of {commit} failed"),
            Kind::DriftDetected => format!("{env}: drift in {} resource(s)", self.resource_count),
            Kind::DriftHealed => {
                format!("{env}: drift healed in {} resource(s)", self.resource_count)
            }
            Kind::GateWaiting => match &self.waiting_on {
                Some(on) => format!("{env}: waiting for {on} at {commit}"),
                None => format!(
                    "{env}: waiting ({}) at {commit}",
                    self.reason.as_deref().unwrap_or("gate")
                ),
            },
            Kind::CommitRefused => format!("{env}: commit {commit} refused"),
            Kind::ApprovalNeeded => format!("{env}: commit {commit} needs an approval"),
            Kind::PlanReady => {
                let of = self
                    .environment
                    .as_deref()
                    .map(|e| format!(" of {e}"))
                    .unwrap_or_default();
                match self.pull_request {
                    Some(pr) => format!("plan{of} for #{pr} at {commit}"),
                    None => format!("plan{of} at {commit}"),
                }
            }
        };
        match &self.message {
            Some(m) if !(matches!(self.kind, Kind::GateWaiting) && self.waiting_on.is_some()) => {
                format!("{what}: {m}")
            }
            _ => what,
        }
    }
}

/// The first 12 characters of a commit id.
pub fn short(commit: &str) -> &str {
    match commit.char_indices().nth(12) {
        Some((i, _)) => &commit[..i],
        None => commit,
    }
}

/// `s` cut to at most `max` bytes at a character boundary, with `…`.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_labels_and_serde() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.label()), Some(k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::json!(k.label())
            );
        }
        assert_eq!(Kind::parse("apply.exploded"), None);
    }

    #[test]
    fn the_dedupe_key_ignores_id_and_time_but_not_the_message() {
        let o = Origin::default();
        let a = Event::new(Kind::ApplyFailed, &o)
            .env("prod", "abc")
            .reason("apply", "x");
        let b = Event::new(Kind::ApplyFailed, &o)
            .env("prod", "abc")
            .reason("apply", "x");
        let c = Event::new(Kind::ApplyFailed, &o)
            .env("prod", "abc")
            .reason("apply", "y");
        assert_ne!(a.id, b.id);
        assert_eq!(a.dedupe_key(), b.dedupe_key());
        assert_ne!(a.dedupe_key(), c.dedupe_key());
    }

    #[test]
    fn long_messages_and_resource_lists_are_cut() {
        let o = Origin::default();
        let ids: Vec<String> = (0..120).map(|i| format!("m/r{i}")).collect();
        let e = Event::new(Kind::DriftDetected, &o)
            .reason("drift", &"é".repeat(5000))
            .resources(&ids);
        assert!(e.message.as_ref().unwrap().len() <= MAX_MESSAGE);
        assert!(e.message.as_ref().unwrap().ends_with('…'));
        assert_eq!(e.resources.len(), MAX_RESOURCES);
        assert_eq!(e.resource_count, 120);
        assert_eq!(truncate("short", 10), "short");
    }
}
