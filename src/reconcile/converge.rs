//! The [`Converge`] the reconciler runs in production: the same pipeline as
//! `tidegate plan` and `tidegate apply`, one environment at one snapshot.
//!
//! load + validate, then crate::pipeline::run_env: take the apply lock
//! (Mode::Apply) → decrypt the environment's secrets → connect its
//! providers → observe and plan (the plan gives drift and the policy gate)
//! → guards → apply with the executor (Mode::Apply) → record the outcome
//! where the environment keeps its state (a ConfigMap in its cluster, else
//! a file) → release the lock. This module only turns the run into the
//! report the status API, page and metrics show.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::execute::{self, Status};
use crate::model::Environment;
use crate::pipeline::{self, EnvJob, Hold, Ran, RunOptions, Unattended};
use crate::plan::{EnvPlan, Guard};
use crate::resource::Action;
use crate::secrets::{self, Identities};
use crate::source::{Snapshot, TrustList};
use crate::state::history::{CommitInfo, Entry, EventKind, Subject};
use crate::state::RecordStore;

use crate::promotion::{Change, Controls};

use super::{
    ApiCalls, ApiRetries, Changes, Converge, EnvHealth, EnvReport, ErrorReason, Mode, ReportError,
};

type StoreCache = std::collections::HashMap<(Option<Option<String>>, String), RecordStore>;

/// Plans and applies through the providers and the executor.
pub struct Executor {
    identities: Identities,
    options: execute::Options,
    state_dir: PathBuf,
    /// The model of the commit read last for its environments' stores
    /// (controls are read at every poll: not a load each time).
    model: std::sync::Mutex<Option<(String, std::sync::Arc<crate::model::Model>)>>,
    /// Stores by (kubeconfig context, project).
    stores: std::sync::Mutex<StoreCache>,
    trust: Arc<TrustList>,
    /// The commit checked last (loaded, graphed and validated): every
    /// environment of a commit converges from the same snapshot, so one
    /// check serves them all (it was one per converge, 0.3-0.5 s each at
    /// 4 x 1,000 resources: benches/converge.rs). Shared with the preview
    /// sweep.
    checks: Arc<pipeline::CheckCache>,
}

impl Executor {
    /// `identities` decrypt the environments' secret files; `options` are
    /// the executor's (parallelism, prune, health waits); records of
    /// environments without a Kubernetes target go to `state_dir`.
    pub fn new(identities: Identities, options: execute::Options, state_dir: PathBuf) -> Self {
        Executor {
            identities,
            options,
            state_dir,
            model: std::sync::Mutex::default(),
            stores: std::sync::Mutex::default(),
            trust: Arc::default(),
            checks: Arc::default(),
        }
    }

    /// Shares the cache of checked commits with the rest of the process
    /// (the preview sweep).
    pub fn checks(mut self, checks: Arc<pipeline::CheckCache>) -> Self {
        self.checks = checks;
        self
    }

    /// The keys the audit history checks commit signatures against (the
    /// signer it records); none by default.
    pub fn trust(mut self, trust: Arc<TrustList>) -> Self {
        self.trust = trust;
        self
    }

    /// Where `environment` keeps its record, controls and history; one
    /// store (one Kubernetes client) per context and project, kept across
    /// calls: the controls are read at every poll.
    async fn store(
        &self,
        environment: &Environment,
    ) -> std::result::Result<RecordStore, ReportError> {
        let key = (
            environment.kubernetes.as_ref().map(|k| k.context.clone()),
            environment.project.clone(),
        );
        if let Some(s) = self
            .stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(s.clone());
        }
        let store = RecordStore::for_target(
            environment.kubernetes.as_ref(),
            &self.state_dir,
            &environment.project,
        )
        .await
        .map_err(|e| err(ErrorReason::Observe, e))?;
        self.stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, store.clone());
        Ok(store)
    }

    /// `snapshot` loaded and checked, from the cache when it is the commit
    /// checked last; the check runs off the async workers.
    async fn checked(
        &self,
        snapshot: &Snapshot,
    ) -> std::result::Result<Arc<pipeline::Checked>, ReportError> {
        self.checks
            .get(&snapshot.commit, &snapshot.files)
            .await
            .map_err(check_error)
    }

    /// `drift-heal` when the environment's record is already at `commit`
    /// (the run heals drift), else `apply` (a record that cannot be read
    /// counts as none).
    async fn event(&self, environment: &Environment, commit: &str) -> EventKind {
        let Ok(store) = self.store(environment).await else {
            return EventKind::Apply;
        };
        match store.load(&environment.name).await {
            Ok(Some(r)) if r.commit == commit => EventKind::DriftHeal,
            _ => EventKind::Apply,
        }
    }
}

fn check_error(e: pipeline::CheckError) -> ReportError {
    match e {
        pipeline::CheckError::Invalid(report) => err(ErrorReason::Load, report),
        e @ pipeline::CheckError::Task(_) => err(ErrorReason::Internal, e),
    }
}

fn err(reason: ErrorReason, e: impl std::fmt::Display) -> ReportError {
    ReportError::new(reason, e.to_string())
}

/// A secrets failure as the status API and page show it. They are not
/// authenticated, so where the identities were read from stays out
/// ([`pipeline::secrets_message`]).
fn secrets_error(e: secrets::Error) -> ReportError {
    ReportError::new(ErrorReason::Secrets, pipeline::secrets_message(&e))
}

fn api_calls(calls: &BTreeMap<String, u64>) -> Vec<ApiCalls> {
    calls
        .iter()
        .map(|(key, count)| {
            let (provider, operation) = key.split_once('/').unwrap_or(("", key.as_str()));
            ApiCalls {
                provider: provider.to_string(),
                operation: operation.to_string(),
                // Providers count every HTTP attempt, answered or not, so
                // the label cannot claim success.
                result: "attempt".to_string(),
                count: *count,
            }
        })
        .collect()
}

fn api_retries(retries: &BTreeMap<String, u64>) -> Vec<ApiRetries> {
    retries
        .iter()
        .map(|(key, count)| {
            let (provider, reason) = key.split_once('/').unwrap_or(("", key.as_str()));
            ApiRetries {
                provider: provider.to_string(),
                reason: reason.to_string(),
                count: *count,
            }
        })
        .collect()
}

#[async_trait]
impl Converge for Executor {
    async fn converge(
        &self,
        snapshot: &Snapshot,
        env: &str,
        mode: Mode,
    ) -> std::result::Result<EnvReport, ReportError> {
        let checked = self.checked(snapshot).await?;
        let environment = checked.model.environment(env).ok_or_else(|| {
            let msg = format!("commit {} has no environment {env}", snapshot.commit);
            ReportError::new(ErrorReason::Load, msg)
        })?;
        let job = EnvJob {
            checked: &checked,
            env: environment,
            files: &snapshot.files,
            identities: &self.identities,
            commit: &snapshot.commit,
            owner: None,
            state_dir: &self.state_dir,
            options: RunOptions {
                // The same apply lock as `tidegate apply`, taken before the
                // plan so that nothing else applies this environment between
                // the plan and the apply it decides (an operator's manual
                // apply, say). Report-only reads without it.
                lock: mode != Mode::ReportOnly,
                plan_only: mode == Mode::ReportOnly,
                // Guards hold the environment until someone applies it with
                // the override, or Git changes.
                allow_mass_delete: false,
                allow_destroy: false,
                // Applied right after the plan, from the state it observed.
                reobserve: false,
                execute: self.options.clone(),
                // The reconciler converges whole environments.
                targets: Vec::new(),
                providers: Vec::new(),
            },
            progress: None,
            stop: None,
            audit: pipeline::Audit {
                event: match mode {
                    Mode::Apply => self.event(environment, &snapshot.commit).await,
                    // Not recorded: a report-only run writes nothing.
                    Mode::ReportOnly => EventKind::DriftHeal,
                },
                subject: Subject::reconciler(),
                commit: Some(CommitInfo::of(&snapshot.meta, &self.trust)),
            },
        };
        let finished = pipeline::run_env(&job, &mut Unattended).await;
        let mut report = match finished.ran {
            Ok(ran) => report_of(env, ran)?,
            Err(e) => EnvReport {
                error: Some(error_of(e)),
                ..EnvReport::default()
            },
        };
        if report.passes_gate() && mode == Mode::Apply {
            report.good_since = self.record(environment).await.ok().flatten().and_then(|r| {
                r.good_at(&snapshot.commit)
                    .then_some(r.good_since)
                    .flatten()
            });
        }
        report.api_calls = api_calls(&finished.api_calls);
        report.api_retries = api_retries(&finished.api_retries);
        release_freed_memory();
        Ok(report)
    }

    /// Kept for the converges at the commit (the driver checks each new
    /// commit before it schedules them).
    async fn loaded(&self, snapshot: &Snapshot, checked: Arc<pipeline::Checked>) {
        self.checks.put(&snapshot.commit, checked).await;
    }

    /// The commit of the environment's record (its ConfigMap, or the file
    /// under the state directory).
    async fn last_applied(
        &self,
        snapshot: &Snapshot,
        env: &str,
    ) -> std::result::Result<Option<String>, ReportError> {
        let checked = self.checked(snapshot).await?;
        let Some(environment) = checked.model.environment(env) else {
            return Ok(None);
        };
        Ok(self.record(environment).await?.map(|r| r.commit))
    }

    async fn controls(
        &self,
        snapshot: &Snapshot,
        env: &str,
    ) -> std::result::Result<Controls, ReportError> {
        let Some(store) = self.store_of(snapshot, env).await? else {
            return Ok(Controls::default());
        };
        store
            .controls(env)
            .await
            .map_err(|e| err(ErrorReason::Observe, e))
    }

    async fn change_controls(
        &self,
        snapshot: &Snapshot,
        env: &str,
        change: &Change,
        by: &crate::state::history::Subject,
        reason: Option<&str>,
    ) -> std::result::Result<std::result::Result<Controls, String>, ReportError> {
        let Some(store) = self.store_of(snapshot, env).await? else {
            return Ok(Err(format!(
                "commit {} has no environment {env}",
                snapshot.commit
            )));
        };
        crate::state::control::change(&store, env, change, by, reason)
            .await
            .map_err(|e| err(ErrorReason::Observe, e))
    }

    /// The history of `env` where it keeps its record. Only the
    /// environment's target and project are needed, so the snapshot is
    /// loaded (once per commit), not checked in full.
    async fn history(
        &self,
        snapshot: &Snapshot,
        env: &str,
    ) -> std::result::Result<Vec<Entry>, ReportError> {
        let Some(store) = self.store_of(snapshot, env).await? else {
            let msg = format!("commit {} has no environment {env}", snapshot.commit);
            return Err(ReportError::new(ErrorReason::Load, msg));
        };
        store
            .history(env)
            .await
            .map_err(|e| err(ErrorReason::Observe, e))
    }

    async fn routing(
        &self,
        snapshot: &Snapshot,
        env: &str,
    ) -> std::result::Result<crate::state::traffic::Routing, ReportError> {
        let Some(store) = self.store_of(snapshot, env).await? else {
            let msg = format!("commit {} has no environment {env}", snapshot.commit);
            return Err(ReportError::new(ErrorReason::Load, msg));
        };
        store
            .routing(env)
            .await
            .map_err(|e| err(ErrorReason::Observe, e))
    }

    async fn append_history(
        &self,
        snapshot: &Snapshot,
        entry: &Entry,
    ) -> std::result::Result<(), ReportError> {
        let Some(store) = self.store_of(snapshot, &entry.environment).await? else {
            let msg = format!(
                "commit {} has no environment {}",
                snapshot.commit, entry.environment
            );
            return Err(ReportError::new(ErrorReason::Load, msg));
        };
        store
            .append_history(entry)
            .await
            .map_err(|e| err(ErrorReason::Observe, e))
    }
}

impl Executor {
    /// The store of `env` in `snapshot`'s model; `None` when it has no
    /// such environment.
    async fn store_of(
        &self,
        snapshot: &Snapshot,
        env: &str,
    ) -> std::result::Result<Option<RecordStore>, ReportError> {
        let cached = {
            let m = self.model.lock().unwrap_or_else(|p| p.into_inner());
            m.as_ref()
                .filter(|(c, _)| *c == snapshot.commit)
                .map(|(_, m)| m.clone())
        };
        let model = match cached {
            Some(m) => m,
            None => {
                // Only targets and projects are needed: warnings (a kind
                // nobody declared) must not stop a read of the store.
                let mut diags = crate::diag::Diagnostics::default();
                let m = crate::load::load_with(&snapshot.files, &mut diags);
                if diags.has_errors() {
                    return Err(err(ErrorReason::Load, crate::diag::Report::new(diags)));
                }
                let m = std::sync::Arc::new(m);
                *self.model.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((snapshot.commit.clone(), m.clone()));
                m
            }
        };
        match model.environment(env) {
            Some(e) => Ok(Some(self.store(e).await?)),
            None => Ok(None),
        }
    }

    /// The record of `environment`, if any.
    async fn record(
        &self,
        environment: &crate::model::Environment,
    ) -> std::result::Result<Option<crate::state::EnvRecord>, ReportError> {
        self.store(environment)
            .await?
            .load(&environment.name)
            .await
            .map_err(|e| err(ErrorReason::Observe, e))
    }
}

/// A pipeline failure as the status API reports it.
fn error_of(e: pipeline::Error) -> ReportError {
    match e {
        pipeline::Error::Lock(e) => err(ErrorReason::Lease, e),
        pipeline::Error::Secrets(e) => secrets_error(e),
        e @ (pipeline::Error::Connect(_)
        | pipeline::Error::Plan(_)
        | pipeline::Error::Execute(_)
        | pipeline::Error::Target(_)
        | pipeline::Error::Hook(_)) => err(ErrorReason::Observe, e),
    }
}

/// The changes a plan found.
fn planned_changes(plan: &EnvPlan) -> Changes {
    let c = plan.counts;
    Changes {
        create: c.create,
        update: c.update + c.replace,
        delete: c.delete,
        unchanged: c.no_op,
    }
}

/// The report of a run that went as far as `ran`; a held run is an error
/// of its reason.
fn report_of(env: &str, ran: Ran) -> std::result::Result<EnvReport, ReportError> {
    let (plan, outcome, record_error) = match ran {
        Ran::Held { hold, .. } => {
            let reason = match &hold {
                Hold::PolicySettings(_) | Hold::Policy { .. } => ErrorReason::Policy,
                Hold::Guards(trips) => match trips.first().map(|g| g.guard) {
                    Some(Guard::Protected) => ErrorReason::Protected,
                    _ => ErrorReason::MassDelete,
                },
                Hold::NotConfirmed | Hold::Refused(_) => ErrorReason::Apply,
            };
            let message = match &hold {
                Hold::Guards(trips) => trips
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
                other => other.to_string(),
            };
            return Err(ReportError::new(reason, message));
        }
        Ran::Planned(plan) => (plan, None, None),
        Ran::Applied {
            plan,
            outcome,
            record_error,
        } => (plan, Some(outcome), record_error),
    };
    let mut report = EnvReport {
        changes: planned_changes(&plan),
        drift: plan
            .resources()
            .filter(|r| r.action != Action::NoOp)
            .map(|r| r.id.to_string())
            .collect(),
        resources: plan
            .resources()
            .filter(|r| r.action != Action::Delete)
            .count(),
        ..EnvReport::default()
    };
    let Some(outcome) = outcome else {
        return Ok(report);
    };
    report.changes = Changes {
        create: outcome.count(Status::Created),
        update: outcome.count(Status::Updated) + outcome.count(Status::Replaced),
        delete: outcome.count(Status::Deleted),
        unchanged: outcome.count(Status::Unchanged),
    };
    let failed = outcome
        .resources
        .iter()
        .find(|r| !r.status.is_success())
        .map(|r| format!("{} {}: {}", r.id, r.status, r.reason));
    report.health = match &failed {
        None => EnvHealth::Healthy,
        Some(why) => EnvHealth::Degraded(why.clone()),
    };
    if let Some(why) = failed {
        report.error = Some(ReportError::new(ErrorReason::Apply, why));
    }
    if let Some(e) = record_error {
        tracing::warn!(environment = env, error = %e, "could not write the environment record");
    }
    Ok(report)
}

/// Hands the memory a cycle freed back to the system. A cycle over 10,000
/// objects allocates a few hundred MiB (live state, desired state, plan)
/// and frees it all; glibc keeps freed memory in per-thread arenas, so the
/// process stayed resident at its peak (450-550 MiB) between cycles, and
/// `MALLOC_ARENA_MAX=2` only lowered that. `malloc_trim` returns every free
/// page of every arena; it takes a few milliseconds once per cycle.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free memory of the allocator
    // this process uses; it takes the arenas' locks itself.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(commit: &str, files: crate::load::Files) -> Snapshot {
        Snapshot {
            commit: commit.into(),
            tree: String::new(),
            files: Arc::new(files),
            meta: Default::default(),
        }
    }

    /// dev and prod (after dev), one ConfigMap each.
    fn repo() -> crate::load::Files {
        use crate::testutil::{env, files, module};
        let spec = |after: &str| {
            format!("{after}  targets:\n    kubernetes:\n      context: c\n  modules:\n    - name: web\n      source: modules/web\n")
        };
        files(&[
            ("environments/dev.yaml", &env("dev", &spec(""))),
            ("environments/prod.yaml", &env("prod", &spec("  after: dev\n"))),
            (
                "modules/web/module.yaml",
                &module(
                    "web",
                    "  resources:\n    - name: cm\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: cm\n          namespace: default\n        data:\n          A: \"1\"\n",
                ),
            ),
        ])
    }

    fn executor() -> Executor {
        Executor::new(
            Identities::default(),
            execute::Options::default(),
            std::env::temp_dir(),
        )
    }

    #[tokio::test]
    async fn one_check_serves_every_converge_of_a_commit() {
        let ex = executor();
        let c1 = snapshot("c1", repo());
        let first = ex.checked(&c1).await.unwrap();
        let again = ex.checked(&c1).await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the same commit is checked once"
        );

        // Another commit is checked on its own, and replaces the memo.
        let mut files = repo();
        files.remove("environments/prod.yaml");
        let c2 = snapshot("c2", files);
        let second = ex.checked(&c2).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(second.model.environment("prod").is_none());
        assert!(first.model.environment("prod").is_some());
        let back = ex.checked(&c1).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &back), "only the last commit is kept");
    }

    #[tokio::test]
    async fn the_drivers_check_is_kept_for_the_converges() {
        let ex = executor();
        let c1 = snapshot("c1", repo());
        let checked = Arc::new(pipeline::check(&c1.files).unwrap());
        ex.loaded(&c1, checked.clone()).await;
        let got = ex.checked(&c1).await.unwrap();
        assert!(Arc::ptr_eq(&checked, &got), "not checked again");
    }

    #[tokio::test]
    async fn a_commit_that_does_not_load_is_a_load_error_and_not_kept() {
        let ex = executor();
        let mut files = repo();
        files.insert("environments/bad.yaml".into(), b"kind: [".to_vec());
        let bad = snapshot("bad", files);
        let e = ex.checked(&bad).await.err().expect("a load error");
        assert_eq!(e.reason, ErrorReason::Load);
        let good = snapshot("good", repo());
        let checked = ex.checked(&good).await.unwrap();
        assert!(
            ex.checked(&bad).await.is_err(),
            "checked again, refused again"
        );
        assert!(
            !Arc::ptr_eq(&checked, &ex.checked(&good).await.unwrap()),
            "a failed check leaves nothing behind, not even the commit before"
        );
    }
}
