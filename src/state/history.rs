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

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};

use super::{
    ensure_namespace, now_rfc3339, object_name, scoped, Error, RecordStore, Result, NAMESPACE,
};
use crate::provider::labels;
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

impl PlanSummary {
    pub fn of(plan: &crate::plan::EnvPlan) -> PlanSummary {
        let c = plan.counts;
        PlanSummary {
            digest: digest(plan),
            create: c.create,
            update: c.update + c.replace,
            delete: c.delete,
            unchanged: c.no_op,
        }
    }
}

/// `sha256:<hex>` of `plan` as canonical JSON.
pub fn digest(plan: &crate::plan::EnvPlan) -> String {
    use sha2::Digest;
    let mut value = serde_json::to_value(plan).expect("a plan serialises");
    sort_keys(&mut value);
    let bytes = serde_json::to_vec(&value).expect("a value serialises");
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
}

fn sort_keys(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, serde_json::Value)> =
                std::mem::take(map).into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, mut v) in entries {
                sort_keys(&mut v);
                map.insert(k, v);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(sort_keys),
        _ => {}
    }
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
                tokio::task::spawn_blocking(move || append_file(&dir, &key, &text, &retention))
                    .await
                    .map_err(|e| Error::Io {
                        path: "history".into(),
                        source: std::io::Error::other(e),
                    })?
            }
            RecordStore::ConfigMap { client, project } => {
                let chunks = Chunks {
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
                tokio::task::spawn_blocking(move || read_files(&dir, &key))
                    .await
                    .map_err(|e| Error::Io {
                        path: "history".into(),
                        source: std::io::Error::other(e),
                    })??
            }
            RecordStore::ConfigMap { client, project } => {
                let chunks = Chunks {
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

// ---- files ----

/// `<dir>/<key>.history.jsonl`, or its rotated copy `.n`.
pub fn file_path(dir: &Path, key: &str, n: usize) -> PathBuf {
    match n {
        0 => dir.join(format!("{key}.history.jsonl")),
        n => dir.join(format!("{key}.history.jsonl.{n}")),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Appends one line under an flock of `.<key>.history.lock` (not the
/// environment's apply lock, which the same process may hold), rotating
/// first when the file is full.
fn append_file(dir: &Path, key: &str, line: &str, retention: &Retention) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let lock_path = dir.join(format!(".{key}.history.lock"));
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;
    let path = file_path(dir, key, 0);
    let size = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_err(&path)(e)),
    };
    if size >= retention.file_bytes {
        rotate(dir, key, retention.files)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)
        .map_err(io_err(&path))?;
    let mut out = String::with_capacity(line.len() + 2);
    if ends_torn(&mut file).map_err(io_err(&path))? {
        // A crash cut the last line short: end it, so this entry stays
        // readable on its own line.
        out.push('\n');
    }
    out.push_str(line);
    out.push('\n');
    file.write_all(out.as_bytes()).map_err(io_err(&path))?;
    file.sync_data().map_err(io_err(&path))?;
    if size == 0 || size >= retention.file_bytes {
        // A new file: its directory entry must survive a crash too.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    drop(lock);
    Ok(())
}

/// True when the file is not empty and does not end with a newline.
fn ends_torn(file: &mut std::fs::File) -> std::io::Result<bool> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// `.n-1` → `.n` … current → `.1`, dropping what passes `keep`.
fn rotate(dir: &Path, key: &str, keep: usize) -> Result<()> {
    let keep = keep.max(1);
    let oldest = file_path(dir, key, keep);
    match std::fs::remove_file(&oldest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&oldest)(e)),
    }
    for n in (0..keep).rev() {
        let from = file_path(dir, key, n);
        let to = file_path(dir, key, n + 1);
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&from)(e)),
        }
    }
    Ok(())
}

/// Every entry of the files, oldest file first.
fn read_files(dir: &Path, key: &str) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut rotated: Vec<usize> = Vec::new();
    let prefix = format!("{key}.history.jsonl.");
    if let Ok(list) = std::fs::read_dir(dir) {
        for e in list.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name.strip_prefix(&prefix).and_then(|n| n.parse().ok()) {
                rotated.push(n);
            }
        }
    }
    rotated.sort_unstable_by(|a, b| b.cmp(a));
    rotated.push(0);
    for n in rotated {
        let path = file_path(dir, key, n);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&path)(e)),
        };
        out.extend(parse_lines(
            &String::from_utf8_lossy(&bytes),
            &path.display().to_string(),
        ));
    }
    Ok(out)
}

/// The entries of a JSON-lines text; lines that are not entries (a torn
/// last line after a crash, anything else) are skipped with a warning.
pub fn parse_lines(text: &str, place: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Entry>(line) {
            Ok(e) => out.push(e),
            Err(error) if i + 1 == lines.len() => tracing::warn!(
                file = place,
                line = i + 1,
                %error,
                "skipping a torn last line of the history (a crash while it was written?)"
            ),
            Err(error) => tracing::warn!(
                file = place,
                line = i + 1,
                %error,
                "skipping a line of the history that is not an entry"
            ),
        }
    }
    out
}

// ---- ConfigMaps ----

/// The history ConfigMaps of one environment.
struct Chunks<'a> {
    api: Api<ConfigMap>,
    client: &'a kube::Client,
    /// `<project>.<env>`.
    key: &'a str,
    env: &'a str,
    project: &'a str,
}

/// One history ConfigMap: its number, name and entry bytes.
struct Chunk {
    n: u64,
    name: String,
    bytes: usize,
    data: BTreeMap<String, String>,
}

fn kube_err(operation: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { operation, source }
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl Chunks<'_> {
    fn name(&self, n: u64) -> String {
        format!("{}-{n}", object_name("history", self.key))
    }

    /// The chunks, oldest first.
    async fn list(&self) -> Result<Vec<Chunk>> {
        let selector = format!("{HISTORY_LABEL}={}", self.env);
        let list = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_err(format!(
                "list configmaps {NAMESPACE} -l {selector}"
            )))?;
        let prefix = format!("{}-", object_name("history", self.key));
        let mut chunks: Vec<Chunk> = list
            .items
            .into_iter()
            .filter_map(|cm| {
                let name = cm.metadata.name?;
                let n = name.strip_prefix(&prefix)?.parse().ok()?;
                let data = cm.data.unwrap_or_default();
                let bytes = data.iter().map(|(k, v)| k.len() + v.len()).sum();
                Some(Chunk {
                    n,
                    name,
                    bytes,
                    data,
                })
            })
            .collect();
        chunks.sort_by_key(|c| c.n);
        Ok(chunks)
    }

    async fn read(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for c in self.list().await? {
            for (key, text) in &c.data {
                match serde_json::from_str::<Entry>(text) {
                    Ok(e) => out.push(e),
                    Err(error) => tracing::warn!(
                        configmap = %format!("{NAMESPACE}/{}", c.name),
                        key = %key,
                        %error,
                        "skipping a history value that is not an entry"
                    ),
                }
            }
        }
        Ok(out)
    }

    async fn append(&self, entry: &Entry, text: &str, retention: &Retention) -> Result<()> {
        let key = entry_key(entry);
        let chunks = self.list().await?;
        let newest = chunks.last();
        let fits = |c: &Chunk| c.bytes + key.len() + text.len() <= retention.chunk_bytes;
        match newest {
            Some(c) if fits(c) || c.data.is_empty() => {
                if self.add(&c.name, &key, text).await? {
                    return Ok(());
                }
                // Deleted since it was listed: start the next one.
                self.create(c.n + 1, &key, text).await?;
                self.expire(&chunks, c.n + 1, retention).await
            }
            _ => {
                let n = newest.map_or(1, |c| c.n + 1);
                if chunks.is_empty() {
                    ensure_namespace(self.client).await?;
                }
                self.create(n, &key, text).await?;
                self.expire(&chunks, n, retention).await
            }
        }
    }

    /// Adds one key with a JSON merge patch (the other keys untouched);
    /// false when the ConfigMap does not exist.
    async fn add(&self, name: &str, key: &str, text: &str) -> Result<bool> {
        let patch = serde_json::json!({ "data": { key: text } });
        let params = PatchParams {
            field_manager: Some(labels::FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        match self.api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, 404) => Ok(false),
            Err(e) => Err(kube_err(format!("append to configmap {NAMESPACE}/{name}"))(
                e,
            )),
        }
    }

    /// Creates chunk `n` holding the entry; when another writer created it
    /// first, adds the entry to theirs.
    async fn create(&self, n: u64, key: &str, text: &str) -> Result<()> {
        let name = self.name(n);
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "labels": {
                    labels::MANAGED_BY: labels::MANAGER,
                    labels::PROJECT: self.project,
                    HISTORY_LABEL: self.env,
                    CHUNK_LABEL: n.to_string(),
                },
            },
            "data": { key: text },
        }))
        .expect("a valid ConfigMap");
        let params = PostParams {
            field_manager: Some(labels::FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        match self.api.create(&params, &cm).await {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, 409) => {
                if self.add(&name, key, text).await? {
                    Ok(())
                } else {
                    Err(kube_err(format!("create configmap {NAMESPACE}/{name}"))(e))
                }
            }
            Err(e) => Err(kube_err(format!("create configmap {NAMESPACE}/{name}"))(e)),
        }
    }

    /// Deletes the chunks that fall out of the retention once `newest`
    /// exists.
    async fn expire(&self, listed: &[Chunk], newest: u64, retention: &Retention) -> Result<()> {
        let keep = retention.chunks.max(2);
        for c in listed.iter().filter(|c| c.n + keep <= newest) {
            match self.api.delete(&c.name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_code(&e, 404) => {}
                Err(e) => {
                    return Err(kube_err(format!(
                        "delete configmap {NAMESPACE}/{} (history rotation)",
                        c.name
                    ))(e))
                }
            }
        }
        Ok(())
    }
}

/// A data key no other writer picks: the entry's time in nanoseconds
/// (so keys sort by time) and 32 random bits.
fn entry_key(entry: &Entry) -> String {
    let nanos = entry
        .timestamp()
        .unwrap_or_else(Timestamp::now)
        .as_nanosecond();
    format!("{nanos:020}-{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests;
