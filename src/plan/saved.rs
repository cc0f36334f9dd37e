//! Saved plans: `tidegate plan --out FILE` and `tidegate apply FILE`.
//!
//! A saved plan is what a live plan of one environment saw, written so
//! that a later apply can prove nothing moved since: the commit, every
//! planned change, and per resource a digest of its desired body and of
//! its live state. It exists so that a reviewed plan is applied exactly,
//! never a stale one (the plan of a pull request applied after someone
//! changed the cluster or the branch).
//!
//! # Guarantees
//!
//! - The file holds no body and no secret: only ids, kinds, actions and
//!   digests. Digests are HMAC-SHA256 under the plan key rather than bare
//!   SHA-256, so a digest of a body holding a guessable secret cannot be
//!   confirmed by someone who has the file but not the key.
//! - The file is authenticated: an HMAC-SHA256 under the plan key over its
//!   canonical JSON (object keys sorted, no whitespace, the `mac` field
//!   left out). A changed byte, or another key, is refused before anything
//!   in it is believed.
//! - [`moved`] is pure: what a saved plan saw compared with what a new
//!   plan sees, as the list of differences an apply refuses on.
//!
//! # Caveats
//!
//! The live digest is compared for every resource the plan changes; a
//! resource the plan leaves alone is covered by the set of changes (if a
//! live edit made it need a change, the sets differ).

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::observe::LiveState;
use crate::resource::{Action, Desired};
use crate::sensitive::Sensitive;
use crate::value::Value;

use super::EnvPlan;

/// The format this version writes and reads.
pub const FORMAT: &str = "tidegate-saved-plan/1";

/// The environment variable naming the plan key file.
pub const KEY_ENV: &str = "TIDEGATE_PLAN_KEY_FILE";

/// The shortest key accepted, in bytes (`openssl rand -hex 32` writes 64).
pub const MIN_KEY_LEN: usize = 32;

/// A saved plan could not be written, read or trusted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither `--plan-key` nor `TIDEGATE_PLAN_KEY_FILE` names a key.
    #[error("a saved plan needs a key: pass --plan-key FILE or set {KEY_ENV} (the same key plans and applies; make one with `openssl rand -hex 32 > plan.key`)")]
    NoKey,
    /// The key file could not be read.
    #[error("reading the plan key {}: {source}", path.display())]
    KeyRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The key file holds too few bytes to be a key.
    #[error("the plan key {} holds {len} bytes; a key has at least {MIN_KEY_LEN} (make one with `openssl rand -hex 32`)", path.display())]
    KeyShort { path: PathBuf, len: usize },
    /// The plan file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON of a saved plan.
    #[error("{} is not a saved tidegate plan: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The file is a saved plan of another format version.
    #[error("{} is a saved plan of format `{found}`; this tidegate reads `{FORMAT}`; plan again with this version", path.display())]
    Format { path: PathBuf, found: String },
    /// The file says it was made with another key: it cannot be verified.
    #[error("{} was saved with plan key {found}, not with this key ({have}); it cannot be verified, nothing applied", path.display())]
    OtherKey {
        path: PathBuf,
        found: String,
        have: String,
    },
    /// The authentication code does not match the content.
    #[error("{} was altered after it was saved (its authentication code does not match its content); nothing applied", path.display())]
    Altered { path: PathBuf },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

type HmacSha256 = Hmac<Sha256>;

/// The key that authenticates saved plans and keys their digests.
pub struct PlanKey {
    bytes: Sensitive,
}

impl std::fmt::Debug for PlanKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlanKey({})", self.id())
    }
}

impl PlanKey {
    /// The key from its bytes (trailing whitespace, a file's newline, is
    /// not part of it).
    pub fn new(mut bytes: Vec<u8>) -> PlanKey {
        while bytes.last().is_some_and(u8::is_ascii_whitespace) {
            bytes.pop();
        }
        PlanKey {
            bytes: Sensitive::new(bytes),
        }
    }

    /// Reads the key from `path`, else from the file `TIDEGATE_PLAN_KEY_FILE`
    /// names.
    pub fn load(path: Option<&Path>) -> Result<PlanKey> {
        let from_env = std::env::var_os(KEY_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let path = path
            .map(Path::to_path_buf)
            .or(from_env)
            .ok_or(Error::NoKey)?;
        let bytes = std::fs::read(&path).map_err(|source| Error::KeyRead {
            path: path.clone(),
            source,
        })?;
        let key = PlanKey::new(bytes);
        let len = key.bytes.expose().len();
        if len < MIN_KEY_LEN {
            return Err(Error::KeyShort { path, len });
        }
        Ok(key)
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(self.bytes.expose()).expect("HMAC takes a key of any length")
    }

    /// The key's public name: the first 16 hex digits of an HMAC of a
    /// fixed label, so the file can say which key verifies it without
    /// saying anything about the key.
    pub fn id(&self) -> String {
        let mut m = self.mac();
        m.update(b"tidegate saved plan key id");
        hex::encode(&m.finalize().into_bytes()[..8])
    }

    /// `hmac-sha256:<hex>` of `bytes`.
    fn tag(&self, bytes: &[u8]) -> String {
        let mut m = self.mac();
        m.update(bytes);
        format!("hmac-sha256:{}", hex::encode(m.finalize().into_bytes()))
    }

    /// Whether `tag` is the [`PlanKey::tag`] of `bytes` (constant time).
    fn verify(&self, bytes: &[u8], tag: &str) -> bool {
        let Some(raw) = tag
            .strip_prefix("hmac-sha256:")
            .and_then(|h| hex::decode(h).ok())
        else {
            return false;
        };
        let mut m = self.mac();
        m.update(bytes);
        m.verify_slice(&raw).is_ok()
    }

    /// The keyed digest of `v` as canonical JSON; secrets are folded in
    /// through their own digest, never copied into the JSON.
    pub fn digest(&self, v: &serde_json::Value) -> String {
        self.tag(&crate::value::canonical_json(v))
    }
}

/// How the planned commit was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "camelCase", deny_unknown_fields)]
pub enum Source {
    /// From Git: `--revision REF` (or a `file://` URL at `HEAD`).
    Revision { reference: String },
    /// From a working tree: the commit is `worktree-<digest>` of its files,
    /// or the HEAD of a clean checkout.
    Worktree,
}

/// The key a saved plan names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRef {
    /// Always `hmac-sha256`.
    pub algorithm: String,
    /// [`PlanKey::id`].
    pub id: String,
}

/// One planned change.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlannedChange {
    /// `module.name`.
    pub id: String,
    pub kind: String,
    /// `create`, `update`, `replace` or `delete`.
    pub action: String,
}

/// What the plan saw of one resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fingerprint {
    /// `module.name`.
    pub id: String,
    /// Digest of the desired kind and body; absent when Git no longer
    /// declares it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<String>,
    /// Digest of the live kind, provider name and normalised body; absent
    /// when it does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<String>,
}

/// What a live plan of one environment saw, as digests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Every change, sorted by id.
    pub changes: Vec<PlannedChange>,
    /// Every resource declared or live, sorted by id.
    pub resources: Vec<Fingerprint>,
}

/// A saved plan, verified (read with [`SavedPlan::read`]) or about to be
/// written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SavedPlan {
    /// [`FORMAT`].
    pub format: String,
    /// The commit planned: a commit id, or `worktree-<digest>`.
    pub commit: String,
    pub source: Source,
    pub environment: String,
    /// The owner name (the environment's own).
    pub owner: String,
    /// When it was planned (RFC 3339, UTC).
    pub created_at: String,
    /// The key that verifies the file (and keys its digests).
    pub key: KeyRef,
    pub changes: Vec<PlannedChange>,
    pub resources: Vec<Fingerprint>,
    /// The `--target`s of a targeted plan: `apply FILE` applies the same
    /// scope (and never prunes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
}

/// The lowercase name of an action, as the file writes it.
pub fn action_name(a: &Action) -> &'static str {
    match a {
        Action::NoOp => "no-op",
        Action::Create => "create",
        Action::Update => "update",
        Action::Replace { .. } => "replace",
        Action::Delete => "delete",
    }
}

/// What `plan` saw, given the desired resources it was built from and the
/// live state it was compared with.
pub fn seen(plan: &EnvPlan, desired: &[Desired], live: &LiveState, key: &PlanKey) -> Seen {
    let mut changes: Vec<PlannedChange> = plan
        .resources()
        .filter(|r| r.action != Action::NoOp)
        .map(|r| PlannedChange {
            id: r.id.to_string(),
            kind: r.kind.clone(),
            action: action_name(&r.action).to_string(),
        })
        .collect();
    changes.sort();
    let mut by_id: std::collections::BTreeMap<String, Fingerprint> = Default::default();
    for d in desired {
        let body = serde_json::json!({"kind": d.kind, "body": canonical(&d.body)});
        let entry = by_id
            .entry(d.id.to_string())
            .or_insert_with(|| Fingerprint {
                id: d.id.to_string(),
                desired: None,
                live: None,
            });
        entry.desired = Some(key.digest(&body));
    }
    for o in live.resources.values() {
        let l = &o.live;
        let body = serde_json::json!({
            "kind": l.kind, "externalId": l.external_id, "body": canonical(&l.body)
        });
        let entry = by_id
            .entry(l.id.to_string())
            .or_insert_with(|| Fingerprint {
                id: l.id.to_string(),
                desired: None,
                live: None,
            });
        entry.live = Some(key.digest(&body));
    }
    Seen {
        changes,
        resources: by_id.into_values().collect(),
    }
}

/// A value as JSON for a digest: secrets as the SHA-256 of their bytes
/// (tagged so they differ from a string), values known only after apply
/// as the reference they wait for.
fn canonical(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(n) => J::Number(n),
            None => J::String(f.to_string()),
        },
        Value::String(s) => J::String(s.clone()),
        Value::List(items) => J::Array(items.iter().map(canonical).collect()),
        Value::Map(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), canonical(v))).collect()),
        Value::Sensitive(s) => {
            use sha2::Digest;
            serde_json::json!({"$sensitive": hex::encode(Sha256::digest(s.expose()))})
        }
        Value::Unknown(r) => serde_json::json!({"$unknown": r}),
    }
}

impl SavedPlan {
    /// The saved plan of `seen` for `environment` at `commit`.
    pub fn new(
        commit: &str,
        source: Source,
        plan: &EnvPlan,
        seen: Seen,
        key: &PlanKey,
    ) -> SavedPlan {
        SavedPlan {
            format: FORMAT.to_string(),
            commit: commit.to_string(),
            source,
            environment: plan.name.clone(),
            owner: plan.owner.clone(),
            created_at: crate::state::now_rfc3339(),
            key: KeyRef {
                algorithm: "hmac-sha256".into(),
                id: key.id(),
            },
            changes: seen.changes,
            resources: seen.resources,
            targets: plan
                .target
                .as_ref()
                .map(|t| t.targets.clone())
                .unwrap_or_default(),
        }
    }

    /// The file's text: the plan and its `mac`, pretty-printed.
    pub fn to_text(&self, key: &PlanKey) -> String {
        let mut v = serde_json::to_value(self).expect("a saved plan serialises");
        let mac = key.tag(&crate::value::canonical_json(&v));
        v.as_object_mut()
            .expect("a saved plan is an object")
            .insert("mac".into(), serde_json::Value::String(mac));
        crate::value::sort_keys(&mut v);
        let mut text = serde_json::to_string_pretty(&v).expect("a JSON value serialises");
        text.push('\n');
        text
    }

    /// Writes the file.
    pub fn write(&self, path: &Path, key: &PlanKey) -> Result<()> {
        std::fs::write(path, self.to_text(key)).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads and verifies the file at `path`.
    pub fn read(path: &Path, key: &PlanKey) -> Result<SavedPlan> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        SavedPlan::parse(&bytes, path, key)
    }

    /// Verifies `bytes` (the file at `path`, named in errors) with `key`,
    /// then reads it. Nothing in the file is believed before the check
    /// but the format and the key id, which only choose the message.
    pub fn parse(bytes: &[u8], path: &Path, key: &PlanKey) -> Result<SavedPlan> {
        let parse = |source| Error::Parse {
            path: path.to_path_buf(),
            source,
        };
        let mut v: serde_json::Value = serde_json::from_slice(bytes).map_err(parse)?;
        let altered = || Error::Altered {
            path: path.to_path_buf(),
        };
        let obj = v.as_object_mut().ok_or_else(altered)?;
        match obj.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            Some(other) => {
                return Err(Error::Format {
                    path: path.to_path_buf(),
                    found: other.to_string(),
                })
            }
            None => return Err(altered()),
        }
        let mac = match obj.remove("mac") {
            Some(serde_json::Value::String(m)) => m,
            _ => return Err(altered()),
        };
        if !key.verify(&crate::value::canonical_json(&v), &mac) {
            let found = v
                .pointer("/key/id")
                .and_then(|i| i.as_str())
                .map(str::to_string);
            let have = key.id();
            return Err(match found {
                Some(found) if found != have => Error::OtherKey {
                    path: path.to_path_buf(),
                    found,
                    have,
                },
                _ => altered(),
            });
        }
        serde_json::from_value(v).map_err(parse)
    }
}

/// One way the world differs from a saved plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Moved {
    /// The repository now reads another commit.
    Commit { planned: String, now: String },
    /// The plan was saved for another environment than the one applied.
    Environment { planned: String, now: String },
    /// A resource's change differs (`None`: no change).
    Change {
        id: String,
        planned: Option<String>,
        now: Option<String>,
    },
    /// A resource's desired body differs.
    Desired { id: String },
    /// A changed resource's live state differs (`None`: absent).
    Live {
        id: String,
        planned: bool,
        now: bool,
    },
}

impl std::fmt::Display for Moved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Moved::Commit { planned, now } => write!(
                f,
                "the commit changed: the plan was made at {planned}, the repository now reads {now}"
            ),
            Moved::Environment { planned, now } => {
                write!(f, "the plan is for environment {planned}, not {now}")
            }
            Moved::Change { id, planned, now } => write!(
                f,
                "{id}: the plan {}, now it {}",
                planned
                    .as_deref()
                    .map_or("left it unchanged".to_string(), |a| format!("would {a} it")),
                now.as_deref()
                    .map_or("needs no change".to_string(), |a| format!("needs a {a}")),
            ),
            Moved::Desired { id } => {
                write!(f, "{id}: its desired state changed since the plan")
            }
            Moved::Live { id, planned, now } => match (planned, now) {
                (true, false) => write!(f, "{id}: it was deleted since the plan"),
                (false, true) => write!(f, "{id}: it was created since the plan"),
                _ => write!(
                    f,
                    "{id}: its live state changed since the plan (someone else changed it)"
                ),
            },
        }
    }
}

/// The commit and environment an apply reads, against the saved plan's.
pub fn moved_commit(saved: &SavedPlan, commit: &str, environment: &str) -> Vec<Moved> {
    let mut out = Vec::new();
    if saved.environment != environment {
        out.push(Moved::Environment {
            planned: saved.environment.clone(),
            now: environment.to_string(),
        });
    }
    if saved.commit != commit {
        out.push(Moved::Commit {
            planned: saved.commit.clone(),
            now: commit.to_string(),
        });
    }
    out
}

/// What differs between what `saved` saw and what a new plan sees (`now`,
/// digested with the same key): changes added, dropped or of another
/// action; desired bodies; the live state of every resource the plan
/// changes. Empty: the saved plan may be applied.
pub fn moved(saved: &SavedPlan, now: &Seen) -> Vec<Moved> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut out = Vec::new();
    let was: BTreeMap<&str, &str> = saved
        .changes
        .iter()
        .map(|c| (c.id.as_str(), c.action.as_str()))
        .collect();
    let is: BTreeMap<&str, &str> = now
        .changes
        .iter()
        .map(|c| (c.id.as_str(), c.action.as_str()))
        .collect();
    let ids: BTreeSet<&str> = was.keys().chain(is.keys()).copied().collect();
    for id in &ids {
        let (p, n) = (was.get(id), is.get(id));
        if p != n {
            out.push(Moved::Change {
                id: id.to_string(),
                planned: p.map(|s| s.to_string()),
                now: n.map(|s| s.to_string()),
            });
        }
    }
    let before: BTreeMap<&str, &Fingerprint> =
        saved.resources.iter().map(|r| (r.id.as_str(), r)).collect();
    let after: BTreeMap<&str, &Fingerprint> =
        now.resources.iter().map(|r| (r.id.as_str(), r)).collect();
    let all: BTreeSet<&str> = before.keys().chain(after.keys()).copied().collect();
    for id in all {
        let (b, a) = (before.get(id), after.get(id));
        let desired = |f: Option<&&Fingerprint>| f.and_then(|f| f.desired.clone());
        let live = |f: Option<&&Fingerprint>| f.and_then(|f| f.live.clone());
        if desired(b) != desired(a) {
            out.push(Moved::Desired { id: id.to_string() });
        }
        if was.contains_key(id) && live(b) != live(a) {
            out.push(Moved::Live {
                id: id.to_string(),
                planned: live(b).is_some(),
                now: live(a).is_some(),
            });
        }
    }
    out
}

/// The refusal an apply prints for `moved` (not empty).
pub fn refusal(path: &Path, moved: &[Moved]) -> String {
    let mut s = format!(
        "the saved plan {} is stale ({} difference(s) since it was made); nothing applied:",
        path.display(),
        moved.len()
    );
    for m in moved {
        s.push_str("\n  - ");
        s.push_str(&m.to_string());
    }
    s.push_str("\nplan again (tidegate plan --out FILE) and apply the new plan");
    s
}

#[cfg(test)]
mod tests;
