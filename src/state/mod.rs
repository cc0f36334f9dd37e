//! Where each environment's last applied commit and health are kept, the
//! promotion gate that reads them, and the per-environment apply lock.
//!
//! The record lives with the environment: a ConfigMap
//! `tidegate-state-<project>.<env>` in namespace `tidegate-system` of the
//! environment's cluster when it has a Kubernetes target, else a JSON file
//! `<state-dir>/<project>.<env>.json` (the project from `tidegate.yaml`, so
//! two repositories with an environment of the same name keep apart; a
//! record written before projects, named by the environment alone, is read
//! when the new one does not exist yet). Losing it is harmless: the gate then holds
//! later environments until the environment is applied again, and that
//! apply, when nothing changed, only observes and writes the record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde::{Deserialize, Serialize};

use crate::model::Model;
use crate::provider::labels;
use crate::resource::KubeTarget;

pub mod control;
mod document;
pub mod history;
mod lock;
pub mod preview;
pub mod traffic;

pub use lock::{lease_expired, this_process, EnvLock, LEASE_DURATION};

/// The namespace of records and leases in an environment's cluster.
pub const NAMESPACE: &str = "tidegate-system";

/// Reading or writing a record or a lock failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig context could not be loaded.
    #[error("kubernetes context {context}: {message}")]
    Kubeconfig { context: String, message: String },
    /// A call to the cluster failed.
    #[error("{operation}: {source}")]
    Kube {
        operation: String,
        #[source]
        source: kube::Error,
    },
    /// A state file or lock file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A stored record is not valid JSON of the expected shape.
    #[error("{place}: not a tidegate state record ({source}); delete it, the next apply writes it again")]
    Corrupt {
        place: String,
        #[source]
        source: serde_json::Error,
    },
    /// A ConfigMap kept changing under every attempt to change it.
    #[error("{place} kept changing while tidegate tried to change it; try again")]
    Conflict { place: String },
    /// Someone else is applying the environment.
    #[error("environment {environment} is locked by {holder} since {since} ({place}); wait for that apply to finish{}", stale_hint(.place))]
    Locked {
        environment: String,
        holder: String,
        since: String,
        place: String,
    },
}

fn stale_hint(place: &str) -> String {
    if place.starts_with("lease") {
        " or, if that process is gone, for the lease to expire".into()
    } else {
        String::new()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One environment's last apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvRecord {
    pub environment: String,
    /// The commit applied (full hash, or any revision name in CLI use).
    pub commit: String,
    /// Every resource succeeded and nothing was stopped.
    pub converged: bool,
    /// Every resource was healthy at the end.
    pub healthy: bool,
    /// RFC 3339, UTC.
    pub applied_at: String,
    pub resources: usize,
    /// Ids of resources that failed or were skipped, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// RFC 3339: since when the environment has been converged and healthy
    /// at `commit` without a break (the start of a soak), when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub good_since: Option<String>,
    /// The `--target`s of a targeted apply: only part of the environment
    /// was applied at `commit`, so it is recorded as not converged and no
    /// promotion gate opens on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partial: Vec<String>,
}

impl EnvRecord {
    /// True when the environment is converged and healthy at `commit`.
    pub fn good_at(&self, commit: &str) -> bool {
        self.converged && self.healthy && self.commit == commit
    }

    /// This record, following `previous`: a record still good at the same
    /// commit keeps the time it became good, a newly good one starts now.
    pub fn after(mut self, previous: Option<&EnvRecord>) -> EnvRecord {
        self.good_since = if self.good_at(&self.commit) {
            previous
                .filter(|p| p.good_at(&self.commit))
                .and_then(|p| p.good_since.clone())
                .or_else(|| Some(self.applied_at.clone()))
        } else {
            None
        };
        self
    }

    /// Same commit and health as `other` (the time aside): writing it again
    /// would change nothing worth a write.
    pub fn same_state(&self, other: &EnvRecord) -> bool {
        self.commit == other.commit
            && self.converged == other.converged
            && self.healthy == other.healthy
            && self.problems == other.problems
            && self.good_since == other.good_since
            && self.partial == other.partial
    }
}

/// Now, RFC 3339 UTC, by the promotion rules' clock (the system clock,
/// or `TIDEGATE_CLOCK_FILE` in tests), so that a record's `goodSince` and
/// a soak measured against it share one clock.
pub fn now_rfc3339() -> String {
    crate::promotion::Clock::from_env().now().to_string()
}

/// Where one environment's record is kept.
#[derive(Clone)]
pub enum RecordStore {
    /// `<dir>/<project>.<env>.json`.
    File { dir: PathBuf, project: String },
    /// ConfigMap `tidegate-state-<project>.<env>` in [`NAMESPACE`].
    ConfigMap {
        client: kube::Client,
        project: String,
    },
}

impl std::fmt::Debug for RecordStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordStore::File { dir, .. } => write!(f, "RecordStore::File({})", dir.display()),
            RecordStore::ConfigMap { .. } => f.write_str("RecordStore::ConfigMap"),
        }
    }
}

/// A kube client for the context of `target` (`KUBECONFIG` or
/// `~/.kube/config`), or the in-cluster configuration when it names none.
/// Its requests are retried like the provider's (5xx, 429 with
/// `Retry-After`, dropped connections), so a transient fault does not fail
/// a lock or a record write.
pub async fn kube_client(target: &KubeTarget) -> Result<kube::Client> {
    use crate::provider::kubernetes::{transport, Options};
    transport::install_crypto_provider();
    let context = target.context.clone().unwrap_or_default();
    let err = |message: String| Error::Kubeconfig {
        context: context.clone(),
        message,
    };
    let config = match &target.context {
        Some(c) => kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions {
            context: Some(c.clone()),
            ..Default::default()
        })
        .await
        .map_err(|e| err(e.to_string()))?,
        None => kube::Config::incluster().map_err(|e| err(e.to_string()))?,
    };
    let o = Options::default();
    transport::client(config, &o.retry, o.request_timeout, &Default::default())
        .map_err(|e| err(e.to_string()))
}

/// The ConfigMap / Lease name for `key` (`<project>.<env>`, or an
/// environment name alone for names from before projects).
pub fn object_name(prefix: &str, key: &str) -> String {
    format!("tidegate-{prefix}-{key}")
}

/// `<project>.<env>`, or `env` alone when there is no project.
pub fn scoped(project: &str, env: &str) -> String {
    if project.is_empty() {
        env.to_string()
    } else {
        format!("{project}.{env}")
    }
}

/// Makes sure [`NAMESPACE`] exists (server-side apply, idempotent).
pub(crate) async fn ensure_namespace(client: &kube::Client) -> Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    if api
        .get_opt(NAMESPACE)
        .await
        .map_err(|source| Error::Kube {
            operation: format!("read namespace {NAMESPACE}"),
            source,
        })?
        .is_some()
    {
        return Ok(());
    }
    let ns = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": NAMESPACE, "labels": { labels::MANAGED_BY: labels::MANAGER } },
    });
    api.patch(
        NAMESPACE,
        &PatchParams::apply(labels::FIELD_MANAGER),
        &Patch::Apply(&ns),
    )
    .await
    .map_err(|source| Error::Kube {
        operation: format!("create namespace {NAMESPACE}"),
        source,
    })?;
    Ok(())
}

impl RecordStore {
    /// The store for an environment: its cluster when it has a Kubernetes
    /// target, else `state_dir`.
    pub async fn for_target(
        kube: Option<&KubeTarget>,
        state_dir: &Path,
        project: &str,
    ) -> Result<Self> {
        let project = project.to_string();
        Ok(match kube {
            Some(k) => RecordStore::ConfigMap {
                client: kube_client(k).await?,
                project,
            },
            None => RecordStore::File {
                dir: state_dir.to_path_buf(),
                project,
            },
        })
    }

    fn project(&self) -> &str {
        match self {
            RecordStore::File { project, .. } | RecordStore::ConfigMap { project, .. } => project,
        }
    }

    /// The record of `env` (an owner name) in this project, `None` when
    /// there is none; a record from before projects when only that exists.
    pub async fn load(&self, env: &str) -> Result<Option<EnvRecord>> {
        let key = scoped(self.project(), env);
        match self.load_key(&key).await? {
            None if key != env => self.load_key(env).await,
            found => Ok(found),
        }
    }

    /// The record of `env` under its name in this project only (no
    /// fallback to a record from before projects).
    pub async fn load_exact(&self, env: &str) -> Result<Option<EnvRecord>> {
        self.load_key(&scoped(self.project(), env)).await
    }

    async fn load_key(&self, env: &str) -> Result<Option<EnvRecord>> {
        match self {
            RecordStore::File { dir, .. } => {
                let path = dir.join(format!("{env}.json"));
                let text = match std::fs::read_to_string(&path) {
                    Ok(t) => t,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(source) => {
                        return Err(Error::Io {
                            path: path.display().to_string(),
                            source,
                        })
                    }
                };
                parse(&text, &path.display().to_string()).map(Some)
            }
            RecordStore::ConfigMap { client, .. } => {
                let name = object_name("state", env);
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
                let cm = api.get_opt(&name).await.map_err(|source| Error::Kube {
                    operation: format!("read configmap {NAMESPACE}/{name}"),
                    source,
                })?;
                let Some(text) = cm
                    .and_then(|c| c.data)
                    .and_then(|d| d.get("record").cloned())
                else {
                    return Ok(None);
                };
                parse(&text, &format!("configmap {NAMESPACE}/{name}")).map(Some)
            }
        }
    }

    /// Writes the record (atomically for files; server-side apply for
    /// ConfigMaps).
    pub async fn save(&self, record: &EnvRecord) -> Result<()> {
        let text = serde_json::to_string_pretty(record).expect("a record serialises");
        let key = scoped(self.project(), &record.environment);
        match self {
            RecordStore::File { dir, .. } => {
                let io = |path: &Path| {
                    let p = path.display().to_string();
                    move |source| Error::Io { path: p, source }
                };
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                let path = dir.join(format!("{key}.json"));
                let tmp = dir.join(format!(".{key}.json.tmp"));
                std::fs::write(&tmp, text + "\n").map_err(io(&tmp))?;
                std::fs::rename(&tmp, &path).map_err(io(&path))
            }
            RecordStore::ConfigMap { client, project } => {
                ensure_namespace(client).await?;
                let name = object_name("state", &key);
                let mut data = BTreeMap::new();
                data.insert("record".to_string(), text);
                let cm = serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": name,
                        "namespace": NAMESPACE,
                        "labels": {
                            labels::MANAGED_BY: labels::MANAGER,
                            labels::PROJECT: project,
                            "tidegate.dev/state": record.environment,
                        },
                    },
                    "data": data,
                });
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
                api.patch(
                    &name,
                    &PatchParams::apply(labels::FIELD_MANAGER).force(),
                    &Patch::Apply(&cm),
                )
                .await
                .map_err(|source| Error::Kube {
                    operation: format!("write configmap {NAMESPACE}/{name}"),
                    source,
                })?;
                Ok(())
            }
        }
    }
}

fn parse(text: &str, place: &str) -> Result<EnvRecord> {
    serde_json::from_str(text).map_err(|source| Error::Corrupt {
        place: place.to_string(),
        source,
    })
}

/// The environments `env` must wait for: every environment it names in
/// `after:`, transitively, in promotion order.
pub fn predecessors(model: &Model, env: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut todo: Vec<String> = model
        .environment(env)
        .map(|e| e.after.iter().map(|(a, _)| a.clone()).collect())
        .unwrap_or_default();
    while let Some(a) = todo.pop() {
        if seen.contains(&a) {
            continue;
        }
        if let Some(e) = model.environment(&a) {
            todo.extend(e.after.iter().map(|(x, _)| x.clone()));
        }
        seen.push(a);
    }
    model
        .environments
        .iter()
        .map(|e| e.name.clone())
        .filter(|n| seen.contains(n))
        .collect()
}

/// Why an environment may not start at a commit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("environment {environment} is held at commit {commit}: {blocked_by} {reason}")]
pub struct Held {
    pub environment: String,
    pub commit: String,
    /// The earlier environment that is not good at the commit.
    pub blocked_by: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The promotion gate: `env` may start at `commit` only when every
/// environment before it has a record converged and healthy at `commit`.
/// `records` holds the records found (missing ones count as not good).
pub fn gate(
    model: &Model,
    env: &str,
    commit: &str,
    records: &BTreeMap<String, EnvRecord>,
) -> std::result::Result<(), Held> {
    for before in predecessors(model, env) {
        let held = |reason: String| Held {
            environment: env.to_string(),
            commit: commit.to_string(),
            blocked_by: before.clone(),
            reason,
        };
        let Some(r) = records.get(&before) else {
            return Err(held("has no record of an apply yet; apply it first".into()));
        };
        if r.commit != commit {
            return Err(held(format!(
                "was last applied at {} (not this commit); apply it at this commit first",
                short(&r.commit)
            )));
        }
        if !r.converged {
            return Err(held(format!(
                "did not converge at this commit: {}",
                r.problems.join("; ")
            )));
        }
        if !r.healthy {
            return Err(held(format!(
                "is not healthy at this commit: {}",
                r.problems.join("; ")
            )));
        }
    }
    Ok(())
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// Reads the records of every environment before `env`, each from where it
/// lives (its cluster, or `state_dir`).
pub async fn load_predecessors(
    model: &Model,
    env: &str,
    state_dir: &Path,
) -> Result<BTreeMap<String, EnvRecord>> {
    let mut out = BTreeMap::new();
    for before in predecessors(model, env) {
        let Some(e) = model.environment(&before) else {
            continue;
        };
        let store = RecordStore::for_target(e.kubernetes.as_ref(), state_dir, &e.project).await?;
        if let Some(r) = store.load(&before).await? {
            out.insert(before, r);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
