//! Where operators' promotion decisions ([`Controls`]: approvals, a hold, a
//! rollback pin) are kept, beside the environment's record: a ConfigMap
//! `tidegate-controls-<project>.<env>` in [`NAMESPACE`] of the
//! environment's cluster, else `<state-dir>/<project>.<env>.controls.json`.
//!
//! The CLI and the reconciler (its HTTP API) both change them, so a change
//! is a read-modify-write that cannot lose another's: the ConfigMap is
//! replaced only at the resourceVersion read (a conflict reads again), the
//! file is changed under an exclusive lock on `<file>.lock`.

use super::document::Doc;
use super::history::{Entry, EventKind, Outcome, Subject};
use super::{now_rfc3339, scoped, EnvRecord, RecordStore, Result};
use crate::model::Environment;
use crate::promotion::{self, Change, Controls, Inputs, Wait};

impl RecordStore {
    fn controls_doc(&self, env: &str) -> Doc {
        Doc {
            kind: "controls",
            data_key: "controls",
            key: scoped(self.project(), env),
            label: ("tidegate.dev/controls", env.to_string()),
        }
    }

    /// The controls of `env` (empty when none were ever set).
    pub async fn controls(&self, env: &str) -> Result<Controls> {
        self.read_doc(&self.controls_doc(env)).await
    }

    /// Changes the controls of `env` with `change` (which may refuse with
    /// an error of its own, leaving them as they were) and returns the
    /// stored result.
    pub async fn change_controls<E>(
        &self,
        env: &str,
        change: impl FnMut(&mut Controls) -> std::result::Result<(), E>,
    ) -> Result<std::result::Result<Controls, E>> {
        self.change_doc(&self.controls_doc(env), change).await
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
