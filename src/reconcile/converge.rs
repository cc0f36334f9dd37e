//! The [`Converge`] the reconciler runs in production: the same pipeline as
//! `tidegate plan` and `tidegate apply`, one environment at one snapshot.
//!
//! load + validate → take the apply lock (Mode::Apply) → decrypt the
//! environment's secrets → connect its providers → observe and plan (the
//! plan gives drift and the policy gate) → apply with the executor
//! (Mode::Apply) → record the outcome where the environment keeps its state
//! (a ConfigMap in its cluster, else a file) → release the lock.

use std::path::PathBuf;

use async_trait::async_trait;

use crate::execute::{self, EnvRun, Status};
use crate::observe::{self, Providers};
use crate::plan;
use crate::provider::Action;
use crate::secrets::{self, Identities};
use crate::source::Snapshot;
use crate::state::{self, RecordStore};

use super::{
    ApiCalls, ApiRetries, Changes, Converge, EnvHealth, EnvReport, ErrorReason, Mode, ReportError,
};

/// Plans and applies through the providers and the executor.
pub struct Executor {
    identities: Identities,
    options: execute::Options,
    state_dir: PathBuf,
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
        }
    }
}

fn err(reason: ErrorReason, e: impl std::fmt::Display) -> ReportError {
    ReportError::new(reason, e.to_string())
}

/// A secrets failure as the status API and page show it. They are not
/// authenticated, so where the identities were read from (file and folder
/// paths of mounted keys) stays out: the message names the secret file, the
/// recipients and the public keys of the identities loaded, which is enough
/// to tell which key is missing.
fn secrets_error(e: secrets::Error) -> ReportError {
    let message = match &e {
        secrets::Error::WrongIdentity {
            file,
            have,
            recipients,
            ..
        } => {
            let count = have.split(", ").filter(|k| !k.is_empty()).count();
            format!("{file}: none of the {count} age identities loaded (public keys {have}) can decrypt it; it is encrypted to {recipients}; give tidegate the private key of one of those recipients, or re-key the file with `tidegate secrets updatekeys`")
        }
        other => other.to_string(),
    };
    ReportError::new(ErrorReason::Secrets, message)
}

fn api_calls(providers: &Providers) -> Vec<ApiCalls> {
    providers
        .api_calls()
        .into_iter()
        .map(|(key, count)| {
            let (provider, operation) = key.split_once('/').unwrap_or(("", key.as_str()));
            ApiCalls {
                provider: provider.to_string(),
                operation: operation.to_string(),
                // Providers count every HTTP attempt, answered or not, so
                // the label cannot claim success.
                result: "attempt".to_string(),
                count,
            }
        })
        .collect()
}

fn api_retries(providers: &Providers) -> Vec<ApiRetries> {
    providers
        .api_retries()
        .into_iter()
        .map(|(key, count)| {
            let (provider, reason) = key.split_once('/').unwrap_or(("", key.as_str()));
            ApiRetries {
                provider: provider.to_string(),
                reason: reason.to_string(),
                count,
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
        let checked =
            crate::pipeline::check(&snapshot.files).map_err(|r| err(ErrorReason::Load, r))?;
        let environment = checked.model.environment(env).ok_or_else(|| {
            let msg = format!("commit {} has no environment {env}", snapshot.commit);
            ReportError::new(ErrorReason::Load, msg)
        })?;
        if mode == Mode::ReportOnly {
            return self.plan_and_apply(snapshot, &checked, env, mode).await;
        }
        // The same apply lock as `tidegate apply`, taken before the plan so
        // that nothing else applies this environment between the plan and
        // the apply it decides (an operator's manual apply, say).
        let lock = state::EnvLock::acquire(
            environment.kubernetes.as_ref(),
            &self.state_dir,
            &state::scoped(&environment.project, env),
            &state::this_process(),
        )
        .await
        .map_err(|e| err(ErrorReason::Lease, e))?;
        let result = self.plan_and_apply(snapshot, &checked, env, mode).await;
        if let Err(e) = lock.release().await {
            tracing::warn!(environment = env, error = %e, "could not release the apply lock");
        }
        result
    }

    /// The commit of the environment's record (its ConfigMap, or the file
    /// under the state directory).
    async fn last_applied(
        &self,
        snapshot: &Snapshot,
        env: &str,
    ) -> std::result::Result<Option<String>, ReportError> {
        let checked =
            crate::pipeline::check(&snapshot.files).map_err(|r| err(ErrorReason::Load, r))?;
        let Some(environment) = checked.model.environment(env) else {
            return Ok(None);
        };
        let store = RecordStore::for_target(
            environment.kubernetes.as_ref(),
            &self.state_dir,
            &environment.project,
        )
        .await
        .map_err(|e| err(ErrorReason::Observe, e))?;
        let record = store
            .load(env)
            .await
            .map_err(|e| err(ErrorReason::Observe, e))?;
        Ok(record.map(|r| r.commit))
    }
}

impl Executor {
    /// Everything after the lock: decrypt, connect, plan, gate on policy,
    /// apply (unless report-only) and record.
    async fn plan_and_apply(
        &self,
        snapshot: &Snapshot,
        checked: &crate::pipeline::Checked,
        env: &str,
        mode: Mode,
    ) -> std::result::Result<EnvReport, ReportError> {
        let (model, graph) = (&checked.model, &checked.graph);
        let environment = model.environment(env).expect("checked by converge");
        let secrets = secrets::load_env(environment, &snapshot.files, &self.identities)
            .map_err(secrets_error)?;
        let kinds = observe::scopes_of(graph, env);
        let providers = Providers::connect(&environment.target(None), kinds.keys().copied())
            .await
            .map_err(|e| err(ErrorReason::Observe, e))?;
        match self
            .with_providers(snapshot, checked, env, mode, &secrets, &providers)
            .await
        {
            Ok(report) => Ok(report),
            // A failed converge still reports the calls and retries it made,
            // so /metrics shows the backoff that preceded the failure.
            Err(e) => Ok(EnvReport {
                error: Some(e),
                api_calls: api_calls(&providers),
                api_retries: api_retries(&providers),
                ..EnvReport::default()
            }),
        }
    }

    /// Plan, policy gate, apply and record through connected `providers`.
    async fn with_providers(
        &self,
        snapshot: &Snapshot,
        checked: &crate::pipeline::Checked,
        env: &str,
        mode: Mode,
        secrets: &secrets::Decrypted,
        providers: &Providers,
    ) -> std::result::Result<EnvReport, ReportError> {
        let (model, graph) = (&checked.model, &checked.graph);
        let environment = model.environment(env).expect("checked by converge");
        let parallelism = self.options.parallelism.max(1);
        let (preview, live) =
            plan::plan_env_live(model, graph, env, providers, secrets, None, parallelism)
                .await
                .map_err(|e| err(ErrorReason::Observe, e))?;
        if let Some(first) = preview.policy_errors.first() {
            return Err(ReportError::new(ErrorReason::Policy, first.clone()));
        }
        if let Some(report) = preview.policy.as_ref().filter(|p| p.blocks_apply()) {
            let msg = format!(
                "{} policy error(s) block the environment; run `tidegate validate` for resource, file:line and fix",
                report.errors()
            );
            return Err(ReportError::new(ErrorReason::Policy, msg));
        }
        if mode != Mode::ReportOnly {
            if let Some(g) = preview.guards.first() {
                let reason = match g.guard {
                    crate::plan::Guard::MassDelete => ErrorReason::MassDelete,
                    crate::plan::Guard::Protected => ErrorReason::Protected,
                };
                return Err(ReportError::new(reason, g.to_string()));
            }
        }
        let drift: Vec<String> = preview
            .resources()
            .filter(|r| r.action != Action::NoOp)
            .map(|r| r.id.to_string())
            .collect();
        let c = preview.counts;
        let mut report = EnvReport {
            changes: Changes {
                create: c.create,
                update: c.update + c.replace,
                delete: c.delete,
                unchanged: c.no_op,
            },
            drift,
            resources: preview
                .resources()
                .filter(|r| r.action != Action::Delete)
                .count(),
            ..EnvReport::default()
        };
        if mode == Mode::ReportOnly {
            report.api_calls = api_calls(providers);
            report.api_retries = api_retries(providers);
            return Ok(report);
        }

        let run = EnvRun {
            model,
            graph,
            env,
            owner: None,
            providers,
            observed: Some(&live),
            secrets,
            options: self.options.clone(),
            progress: None,
            stop: None,
        };
        let outcome = execute::run_env(&run)
            .await
            .map_err(|e| err(ErrorReason::Observe, e))?;
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
        let record = crate::pipeline::record_of(&outcome, &snapshot.commit);
        match RecordStore::for_target(
            environment.kubernetes.as_ref(),
            &self.state_dir,
            &environment.project,
        )
        .await
        {
            Ok(store) => {
                if let Err(e) = store.save(&record).await {
                    tracing::warn!(environment = env, error = %e, "could not write the environment record");
                }
            }
            Err(e) => {
                tracing::warn!(environment = env, error = %e, "no store for the environment record")
            }
        }
        report.api_calls = api_calls(providers);
        report.api_retries = api_retries(providers);
        Ok(report)
    }
}
