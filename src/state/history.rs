//! The audit history: one [`Entry`] for every change tidegate makes or
//! refuses (apply, rebuild, prune, drift heal, approval, hold, release,
//! rollback, suspend, resume, refused commit), kept where the environment's
//! record already lives, so that auditors get evidence of who changed what,
//! when, at which commit, and with which result.
//!
//! # Where it lives
//! - Without a Kubernetes target: `<state-dir>/<project>.<env>.history.jsonl`,
//!   one JSON object per line, appended with `O_APPEND` and `fsync`. When
//!   the file reaches [`Retention::file_bytes`] it is renamed to `.1` (the
//!   older ones to `.2`, `.3` …) and at most [`Retention::files`] rotated
//!   files are kept.
//! - In a cluster: ConfigMaps `tidegate-history-<project>.<env>-<n>` in
//!   [`NAMESPACE`] (labelled `tidegate.dev/history: <env>`), each holding
//!   at most [`Retention::chunk_bytes`] of entries, one data key per entry
//!   (`<unix nanoseconds>-<random>`). An entry is added with a JSON merge
//!   patch that names only its own key, so two writers (the CLI and the
//!   reconciler) never overwrite each other; when the newest chunk is full
//!   the next one is created, and the oldest are deleted once more than
//!   [`Retention::chunks`] exist.
//!
//! # Guarantees
//! - Append-only from tidegate's side: nothing rewrites or removes an
//!   entry, apart from the rotation above dropping the oldest file or
//!   ConfigMap.
//! - No entry holds a secret value: entries carry ids, counts, digests,
//!   names and messages that are already free of secrets (the same ones
//!   the status API shows). Texts are cut at [`MAX_TEXT`] bytes.
//! - Reading survives a crash mid-append: a torn last line (or any line
//!   that is not an entry) is skipped with a warning, and the next append
//!   starts on a new line.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::Api;
use serde::{Deserialize, Serialize};

use super::{now_rfc3339, scoped, Error, RecordStore, Result, NAMESPACE};
use crate::source::{CommitMeta, TrustList, Verification};

/// The label naming the environment a history ConfigMap belongs to.
pub const HISTORY_LABEL: &str = "tidegate.dev/history";
/// The label holding a history ConfigMap's chunk number.
pub const CHUNK_LABEL: &str = "tidegate.dev/history-chunk";

/// Longest error or reason text kept in an entry, in bytes.
pub const MAX_TEXT: usize = 2048;
/// Most resource ids kept in an entry.
pub const MAX_RESOURCES: usize = 100;

/// One audited event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// RFC 3339, UTC.
    pub time: String,
    /// The environment (the owner name of a `rebuild --as` copy).
    pub environment: String,
    pub event: EventKind,
    /// The commit applied or concerned (`worktree-<hash>` for a working
    /// tree that differs from its HEAD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Who made the commit, from Git; `None` for a working tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_info: Option<CommitInfo>,
    /// Who triggered the event.
    pub subject: Subject,
    /// The plan the run applied (or held).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanSummary>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The first error, when the outcome is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The operator's `--reason`, or why the event happened or was held
    /// (`window`, `approval`, a guard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Ids of the resources the event concerns (a prune: those deleted),
    /// at most [`MAX_RESOURCES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    Apply,
    Rebuild,
    Prune,
    DriftHeal,
    Approve,
    Hold,
    Release,
    Rollback,
    Suspend,
    Resume,
    Refused,
    /// `tidegate import`: an existing object adopted.
    Import,
    /// `tidegate switch --to`: an entry point moved (or was refused).
    Switch,
    /// One weighted step of a stepped switch.
    SwitchStep,
    /// A stepped switch went back on its own: the copy turned unhealthy.
    SwitchFallback,
    /// `tidegate switch --back`.
    SwitchBack,
    /// A preview was built or renewed (`tidegate preview up`).
    PreviewUp,
    /// A preview was deleted (`tidegate preview down`).
    PreviewDown,
    /// A preview's time to live ended and it was deleted (`preview sweep`).
    PreviewExpire,
}

impl EventKind {
    pub fn label(self) -> &'static str {
        match self {
            EventKind::Apply => "apply",
            EventKind::Rebuild => "rebuild",
            EventKind::Prune => "prune",
            EventKind::DriftHeal => "drift-heal",
            EventKind::Approve => "approve",
            EventKind::Hold => "hold",
            EventKind::Release => "release",
            EventKind::Rollback => "rollback",
            EventKind::Suspend => "suspend",
            EventKind::Resume => "resume",
            EventKind::Refused => "refused",
            EventKind::Import => "import",
            EventKind::Switch => "switch",
            EventKind::SwitchStep => "switch-step",
            EventKind::SwitchFallback => "switch-fallback",
            EventKind::SwitchBack => "switch-back",
            EventKind::PreviewUp => "preview-up",
            EventKind::PreviewDown => "preview-down",
            EventKind::PreviewExpire => "preview-expire",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// How it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Succeeded,
    Failed,
    /// Stopped by a gate before anything was written (guards, policy, a
    /// window, a missing approval); `reason` says which.
    Held,
    /// The commit may not be applied (signature, history).
    Refused,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Held => "held",
            Outcome::Refused => "refused",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Who triggered an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    pub kind: SubjectKind,
    /// The login (CLI), the authenticated caller (HTTP), `reconciler`.
    pub name: String,
    /// The machine (CLI) or pod (HTTP, reconciler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectKind {
    Cli,
    Http,
    Reconciler,
}

impl Subject {
    /// The person running this command: `$USER` (else `$LOGNAME`, the
    /// login of this process's uid, or `uid:N`) on this host.
    pub fn cli() -> Subject {
        let name = ["USER", "LOGNAME"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .find(|v| !v.is_empty())
            .unwrap_or_else(login_of_uid);
        Subject {
            kind: SubjectKind::Cli,
            name,
            host: hostname(),
        }
    }

    /// An authenticated API caller (`api-token`, a Kubernetes user name),
    /// served by this pod.
    pub fn http(user: &str) -> Subject {
        Subject {
            kind: SubjectKind::Http,
            name: user.to_string(),
            host: pod_name(),
        }
    }

    /// The reconciler in this pod.
    pub fn reconciler() -> Subject {
        Subject {
            kind: SubjectKind::Reconciler,
            name: "reconciler".into(),
            host: pod_name(),
        }
    }
}

impl std::fmt::Display for Subject {
    /// `cli:alice@laptop`, `http:system:serviceaccount:ops:bot@pod`,
    /// `reconciler@pod`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            SubjectKind::Reconciler if self.name == "reconciler" => f.write_str("reconciler")?,
            SubjectKind::Cli => write!(f, "cli:{}", self.name)?,
            SubjectKind::Http => write!(f, "http:{}", self.name)?,
            SubjectKind::Reconciler => write!(f, "reconciler:{}", self.name)?,
        }
        match &self.host {
            Some(h) => write!(f, "@{h}"),
            None => Ok(()),
        }
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|h| !h.is_empty())
}

/// `$POD_NAME` (the Deployment sets it from the downward API), else
/// `$HOSTNAME` (a pod's hostname is its name), else the hostname.
fn pod_name() -> Option<String> {
    ["POD_NAME", "HOSTNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.is_empty())
        .or_else(hostname)
}

/// The login of this process's uid from `/etc/passwd`, else `uid:N`.
fn login_of_uid() -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "unknown".into();
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?.parse::<u32>().ok()?;
            (id == uid).then(|| name.to_string())
        })
        .next()
        .unwrap_or_else(|| format!("uid:{uid}"))
}

/// Who made a commit, from Git.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitInfo {
    /// `Name <email>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// `Name <email>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committer: Option<String>,
    /// When the commit is signed: the trusted signer and key fingerprint
    /// (`ops@example.com (SHA256:…)`), or what is wrong with the signature
    /// (`untrusted: …`, `invalid: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}

impl CommitInfo {
    /// The author and committer of `meta`, and its signature checked
    /// against `trust` (an unsigned commit has no signer).
    pub fn of(meta: &CommitMeta, trust: &TrustList) -> CommitInfo {
        let signer = match meta.verify(trust) {
            Verification::Trusted {
                fingerprint,
                signer,
            } => Some(format!("{signer} ({fingerprint})")),
            Verification::Unsigned => None,
            Verification::Untrusted { reason } => Some(format!("untrusted: {reason}")),
            Verification::Invalid { reason } => Some(format!("invalid: {reason}")),
        };
        let person = |p: &str| (!p.is_empty()).then(|| p.to_string());
        CommitInfo {
            author: person(&meta.author),
            committer: person(&meta.committer),
            signer,
        }
    }
}

/// The plan a run applied: its digest and counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    /// `sha256:<hex>` of the plan's canonical JSON (the `plan --format
    /// json` document of the environment, secrets masked, object keys
    /// sorted, no whitespace): equal plans have equal digests.
    pub digest: String,
    pub create: usize,
    /// Updates and replacements.
    pub update: usize,
    pub delete: usize,
    pub unchanged: usize,
}

impl Entry {
    /// An entry of `event` in `environment` by `subject`, now, succeeded,
    /// the rest unset.
    pub fn new(environment: &str, event: EventKind, subject: Subject) -> Entry {
        Entry {
            time: now_rfc3339(),
            environment: environment.to_string(),
            event,
            commit: None,
            commit_info: None,
            subject,
            plan: None,
            outcome: Outcome::Succeeded,
            duration_ms: None,
            error: None,
            reason: None,
            resources: Vec::new(),
        }
    }

    /// When it happened (`None` when `time` is not RFC 3339).
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.time.parse().ok()
    }

    /// The entry as stored: texts cut at [`MAX_TEXT`], at most
    /// [`MAX_RESOURCES`] ids.
    fn bounded(&self) -> Entry {
        let mut e = self.clone();
        for text in [&mut e.error, &mut e.reason].into_iter().flatten() {
            cut(text, MAX_TEXT);
        }
        if e.resources.len() > MAX_RESOURCES {
            let more = e.resources.len() - MAX_RESOURCES + 1;
            e.resources.truncate(MAX_RESOURCES - 1);
            e.resources.push(format!("… and {more} more"));
        }
        e
    }

    /// One line for a terminal: time, environment, event, outcome, short
    /// commit, subject, then counts (`+create ~update -delete
    /// =unchanged`), duration, resources, reason and error.
    pub fn line(&self) -> String {
        let mut s = self.columns().join(" ");
        let details = self.details();
        if !details.is_empty() {
            s.push(' ');
            s.push_str(&details);
        }
        s
    }

    fn columns(&self) -> [String; 6] {
        let commit = self
            .commit
            .as_deref()
            .map_or("-", |c| c.get(..12).unwrap_or(c));
        [
            self.time.clone(),
            self.environment.clone(),
            self.event.to_string(),
            self.outcome.to_string(),
            commit.to_string(),
            self.subject.to_string(),
        ]
    }

    fn details(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.plan {
            parts.push(format!(
                "+{} ~{} -{} ={}",
                p.create, p.update, p.delete, p.unchanged
            ));
        }
        if let Some(ms) = self.duration_ms {
            parts.push(format!("{:.1}s", ms as f64 / 1000.0));
        }
        if !self.resources.is_empty() {
            parts.push(format!("[{}]", self.resources.join(", ")));
        }
        if let Some(r) = &self.reason {
            parts.push(format!("reason: {}", one_line(r)));
        }
        if let Some(e) = &self.error {
            parts.push(format!("error: {}", one_line(e)));
        }
        parts.join(" ")
    }
}

/// `entries` as [`Entry::line`]s with the columns aligned, one per line.
pub fn text(entries: &[Entry]) -> String {
    let rows: Vec<([String; 6], String)> =
        entries.iter().map(|e| (e.columns(), e.details())).collect();
    let mut widths = [0usize; 6];
    for (cols, _) in &rows {
        for (w, c) in widths.iter_mut().zip(cols) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for (cols, details) in rows {
        let mut line = String::new();
        for (c, w) in cols.iter().zip(widths) {
            line.push_str(&format!("{c:<w$}  "));
        }
        line.push_str(&details);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Cuts `s` to at most `max` bytes at a character boundary, marking the cut.
fn cut(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
}

/// Sorts entries oldest first (by their time, then as stored).
pub fn sort(entries: &mut [Entry]) {
    entries.sort_by_key(|e| e.timestamp());
}

/// Entries at or after `since`.
pub fn since(entries: Vec<Entry>, since: Option<Timestamp>) -> Vec<Entry> {
    match since {
        None => entries,
        Some(t) => entries
            .into_iter()
            .filter(|e| e.timestamp().is_some_and(|at| at >= t))
            .collect(),
    }
}

/// `--since`: a duration back from `now` (`2h`, `30m`, `7days`) or an RFC
/// 3339 time (`2024-05-01T12:00:00Z`).
pub fn parse_since(text: &str, now: Timestamp) -> std::result::Result<Timestamp, String> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let d = humantime::parse_duration(text).map_err(|_| {
        format!("{text:?} is neither a duration (2h, 30m, 7days) nor an RFC 3339 time (2024-05-01T12:00:00Z)")
    })?;
    let d = SignedDuration::try_from(d).map_err(|e| format!("{text:?}: {e}"))?;
    now.checked_sub(d)
        .map_err(|e| format!("{text:?} reaches before the earliest time: {e}"))
}

/// How much history a store keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// A history file is rotated when it reaches this size.
    pub file_bytes: u64,
    /// Rotated files kept (`.1` … `.N`).
    pub files: usize,
    /// Entry bytes in one ConfigMap chunk (the object limit is 1 MiB).
    pub chunk_bytes: usize,
    /// ConfigMap chunks kept per environment (at least 2).
    pub chunks: u64,
}

impl Default for Retention {
    /// 1 MiB files, five rotated kept (about 6 MiB, some 10 000 entries);
    /// 256 KiB chunks, eight kept (about 2 MiB, some 3 000 entries).
    fn default() -> Self {
        Retention {
            file_bytes: 1024 * 1024,
            files: 5,
            chunk_bytes: 256 * 1024,
            chunks: 8,
        }
    }
}

impl RecordStore {
    /// Appends `entry` to the history of `entry.environment` in this
    /// store's project (see the module documentation).
    pub async fn append_history(&self, entry: &Entry) -> Result<()> {
        self.append_history_within(entry, &Retention::default())
            .await
    }

    /// [`RecordStore::append_history`], rotating at `retention`.
    pub async fn append_history_within(&self, entry: &Entry, retention: &Retention) -> Result<()> {
        let entry = entry.bounded();
        let key = scoped(self.project(), &entry.environment);
        let text = serde_json::to_string(&entry).expect("an entry serialises");
        match self {
            RecordStore::File { dir, .. } => {
                let (dir, retention) = (dir.clone(), retention.clone());
                tokio::task::spawn_blocking(move || {
                    files::append_file(&dir, &key, &text, &retention)
                })
                .await
                .map_err(|e| Error::Io {
                    path: "history".into(),
                    source: std::io::Error::other(e),
                })?
            }
            RecordStore::ConfigMap { client, project } => {
                let chunks = configmaps::Chunks {
                    api: Api::namespaced(client.clone(), NAMESPACE),
                    client,
                    key: &key,
                    env: &entry.environment,
                    project,
                };
                chunks.append(&entry, &text, retention).await
            }
        }
    }

    /// The history of `env` in this store's project, oldest first.
    pub async fn history(&self, env: &str) -> Result<Vec<Entry>> {
        let key = scoped(self.project(), env);
        let mut entries = match self {
            RecordStore::File { dir, .. } => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || files::read_files(&dir, &key))
                    .await
                    .map_err(|e| Error::Io {
                        path: "history".into(),
                        source: std::io::Error::other(e),
                    })??
            }
            RecordStore::ConfigMap { client, project } => {
                let chunks = configmaps::Chunks {
                    api: Api::namespaced(client.clone(), NAMESPACE),
                    client,
                    key: &key,
                    env,
                    project,
                };
                chunks.read().await?
            }
        };
        sort(&mut entries);
        Ok(entries)
    }
}

mod configmaps;
mod files;

#[cfg(test)]
mod tests;
