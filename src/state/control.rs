//! Where operators' promotion decisions ([`Controls`]: approvals, a hold, a
//! rollback pin) are kept, beside the environment's record: a ConfigMap
//! `tidegate-controls-<project>.<env>` in [`NAMESPACE`] of the
//! environment's cluster, else `<state-dir>/<project>.<env>.controls.json`.
//!
//! The CLI and the reconciler (its HTTP API) both change them, so a change
//! is a read-modify-write that cannot lose another's: the ConfigMap is
//! replaced only at the resourceVersion read (a conflict reads again), the
//! file is changed under an exclusive lock on `<file>.lock`.

use std::collections::BTreeMap;
use std::io::Write;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};

use super::history::{Entry, EventKind, Outcome, Subject};
use super::{
    ensure_namespace, now_rfc3339, object_name, scoped, EnvRecord, Error, RecordStore, Result,
    NAMESPACE,
};
use crate::model::Environment;
use crate::promotion::{self, Change, Controls, Inputs, Wait};
use crate::provider::labels;

const KEY: &str = "controls";

/// Attempts at a ConfigMap change that keeps meeting a conflict.
const ATTEMPTS: usize = 8;

impl RecordStore {
    /// The controls of `env` (empty when none were ever set).
    pub async fn controls(&self, env: &str) -> Result<Controls> {
        let key = scoped(self.project(), env);
        match self {
            RecordStore::File { dir, .. } => {
                let path = dir.join(format!("{key}.controls.json"));
                match std::fs::read_to_string(&path) {
                    Ok(text) => parse(&text, &path.display().to_string()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Controls::default()),
                    Err(source) => Err(Error::Io {
                        path: path.display().to_string(),
                        source,
                    }),
                }
            }
            RecordStore::ConfigMap { client, .. } => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
                let name = object_name("controls", &key);
                let cm = api.get_opt(&name).await.map_err(|source| Error::Kube {
                    operation: format!("read configmap {NAMESPACE}/{name}"),
                    source,
                })?;
                controls_of(cm.as_ref(), &name)
            }
        }
    }

    /// Changes the controls of `env` with `change` (which may refuse with
    /// an error of its own, leaving them as they were) and returns the
    /// stored result.
    pub async fn change_controls<E>(
        &self,
        env: &str,
        mut change: impl FnMut(&mut Controls) -> std::result::Result<(), E>,
    ) -> Result<std::result::Result<Controls, E>> {
        let key = scoped(self.project(), env);
        match self {
            RecordStore::File { dir, .. } => {
                let io = |p: &std::path::Path| {
                    let p = p.display().to_string();
                    move |source| Error::Io { path: p, source }
                };
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                let path = dir.join(format!("{key}.controls.json"));
                let lock_path = dir.join(format!(".{key}.controls.lock"));
                let lock = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .map_err(io(&lock_path))?;
                lock.lock().map_err(io(&lock_path))?;
                let mut controls = self.controls(env).await?;
                if let Err(e) = change(&mut controls) {
                    return Ok(Err(e));
                }
                let tmp = dir.join(format!(".{key}.controls.json.tmp"));
                let text = serde_json::to_string_pretty(&controls).expect("controls serialise");
                let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
                f.write_all(text.as_bytes()).map_err(io(&tmp))?;
                f.sync_all().map_err(io(&tmp))?;
                std::fs::rename(&tmp, &path).map_err(io(&path))?;
                drop(lock);
                Ok(Ok(controls))
            }
            RecordStore::ConfigMap { client, project } => {
                ensure_namespace(client).await?;
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
                let name = object_name("controls", &key);
                for _ in 0..ATTEMPTS {
                    let found = api.get_opt(&name).await.map_err(|source| Error::Kube {
                        operation: format!("read configmap {NAMESPACE}/{name}"),
                        source,
                    })?;
                    let mut controls = controls_of(found.as_ref(), &name)?;
                    if let Err(e) = change(&mut controls) {
                        return Ok(Err(e));
                    }
                    let text = serde_json::to_string_pretty(&controls).expect("controls serialise");
                    let cm = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            namespace: Some(NAMESPACE.into()),
                            resource_version: found
                                .as_ref()
                                .and_then(|c| c.metadata.resource_version.clone()),
                            labels: Some(BTreeMap::from([
                                (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
                                (labels::PROJECT.to_string(), project.clone()),
                                ("tidegate.dev/controls".to_string(), env.to_string()),
                            ])),
                            ..ObjectMeta::default()
                        },
                        data: Some(BTreeMap::from([(KEY.to_string(), text)])),
                        ..ConfigMap::default()
                    };
                    let pp = PostParams {
                        field_manager: Some(labels::FIELD_MANAGER.into()),
                        ..PostParams::default()
                    };
                    let written = match found {
                        Some(_) => api.replace(&name, &pp, &cm).await,
                        None => api.create(&pp, &cm).await,
                    };
                    match written {
                        Ok(_) => return Ok(Ok(controls)),
                        // Someone else changed (or created) it since the
                        // read: read again and apply the change to theirs.
                        Err(kube::Error::Api(e)) if e.code == 409 => continue,
                        Err(source) => {
                            return Err(Error::Kube {
                                operation: format!("write configmap {NAMESPACE}/{name}"),
                                source,
                            })
                        }
                    }
                }
                Err(Error::Conflict {
                    place: format!("configmap {NAMESPACE}/{name}"),
                })
            }
        }
    }
}

/// Makes an operator's `change` to the controls of `env`, by `subject`;
/// the stored controls, or why the change was refused (a rollback to a
/// commit the environment never applied, a release of nothing, a second
/// hold). Either way the audit history gets an entry (a failure to append
/// it only warns).
pub async fn change(
    store: &RecordStore,
    env: &str,
    change: &Change,
    subject: &Subject,
    reason: Option<&str>,
) -> Result<std::result::Result<Controls, String>> {
    let by = subject.to_string();
    let refused = match change {
        Change::Rollback { commit } if !applied_before(store, env, commit).await? => Some(format!(
            "{env} never applied commit {}: a rollback goes back to a commit applied there before (`tidegate history {env}` lists them)",
            &commit[..commit.len().min(12)]
        )),
        _ => None,
    };
    let answer = match refused {
        Some(why) => Err(why),
        None => {
            let at = now_rfc3339();
            store
                .change_controls(env, |c| change.apply(c, env, &by, &at, reason))
                .await?
        }
    };
    let event = match change {
        Change::Approve { .. } => EventKind::Approve,
        Change::Hold => EventKind::Hold,
        Change::Release => EventKind::Release,
        Change::Rollback { .. } => EventKind::Rollback,
    };
    let mut entry = Entry::new(env, event, subject.clone());
    entry.commit = change.commit().map(str::to_string);
    entry.reason = reason.map(str::to_string);
    if let Err(why) = &answer {
        entry.outcome = Outcome::Refused;
        entry.error = Some(why.clone());
    }
    if let Err(e) = store.append_history(&entry).await {
        tracing::warn!(environment = %env, error = %e, "could not append to the audit history");
    }
    Ok(answer)
}

/// Whether `env` applied `commit` before: its record is at it, or its
/// audit history has a run that succeeded at it (an apply, a rebuild, a
/// heal or an earlier rollback).
pub async fn applied_before(store: &RecordStore, env: &str, commit: &str) -> Result<bool> {
    if store
        .load(env)
        .await?
        .is_some_and(|r| r.commit == commit && r.converged)
    {
        return Ok(true);
    }
    let history = store.history(env).await?;
    Ok(history.iter().any(|e| {
        e.commit.as_deref() == Some(commit)
            && e.outcome == Outcome::Succeeded
            && matches!(
                e.event,
                EventKind::Apply | EventKind::Rebuild | EventKind::DriftHeal
            )
    }))
}

/// Why `env` may not take `commit` by hand now (`tidegate apply`), beyond
/// the same-commit gate: a hold, a pin to another commit, a missing
/// approval, a soak, a window. `records` are those of the environments
/// before it ([`super::load_predecessors`]).
pub async fn manual_wait(
    env: &Environment,
    commit: &str,
    records: &std::collections::BTreeMap<String, EnvRecord>,
    state_dir: &std::path::Path,
    now: jiff::Timestamp,
) -> Result<Option<Wait>> {
    let store = RecordStore::for_target(env.kubernetes.as_ref(), state_dir, &env.project).await?;
    let controls = store.controls(&env.name).await?;
    let good_since = good_since(env, commit, records);
    let inputs = Inputs {
        env: &env.name,
        promotion: &env.promotion,
        controls: &controls,
        good_since,
        now,
    };
    Ok(promotion::manual_start(&inputs, commit))
}

/// When the environments `env` is after had all been good at `commit`
/// (the latest of their times), from their records.
pub fn good_since(
    env: &Environment,
    commit: &str,
    records: &std::collections::BTreeMap<String, EnvRecord>,
) -> Option<jiff::Timestamp> {
    env.after
        .iter()
        .filter_map(|(a, _)| records.get(a))
        .filter(|r| r.good_at(commit))
        .filter_map(|r| {
            r.good_since
                .as_deref()
                .unwrap_or(&r.applied_at)
                .parse::<jiff::Timestamp>()
                .ok()
        })
        .max()
}

fn controls_of(cm: Option<&ConfigMap>, name: &str) -> Result<Controls> {
    match cm.and_then(|c| c.data.as_ref()).and_then(|d| d.get(KEY)) {
        Some(text) => parse(text, &format!("configmap {NAMESPACE}/{name}")),
        None => Ok(Controls::default()),
    }
}

fn parse(text: &str, place: &str) -> Result<Controls> {
    serde_json::from_str(text).map_err(|source| Error::Corrupt {
        place: place.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promotion::Mark;

    fn mark(commit: &str) -> Mark {
        Mark {
            commit: Some(commit.into()),
            by: "alice (cli on laptop)".into(),
            at: "2026-12-04T09:00:00Z".into(),
            reason: None,
        }
    }

    #[tokio::test]
    async fn file_controls_change_under_a_lock_and_a_refused_change_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::File {
            dir: dir.path().to_path_buf(),
            project: "shop".into(),
        };
        assert_eq!(store.controls("prod").await.unwrap(), Controls::default());
        let mut tasks = Vec::new();
        for n in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .change_controls("prod", |c| {
                        c.approve(mark(&format!("c{n}")));
                        Ok::<_, String>(())
                    })
                    .await
                    .unwrap()
                    .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let c = store.controls("prod").await.unwrap();
        assert_eq!(c.approvals.len(), 16, "no approval lost: {c:?}");
        let refused = store
            .change_controls("prod", |c| {
                c.approvals.clear();
                Err("no")
            })
            .await
            .unwrap();
        assert_eq!(refused, Err("no"));
        assert_eq!(store.controls("prod").await.unwrap().approvals.len(), 16);
        assert!(dir.path().join("shop.prod.controls.json").exists());
    }
}
