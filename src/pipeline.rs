//! The one way an environment runs, below both the command line (`cli`:
//! `apply`, `rebuild`) and the reconciler (`reconcile`): checking a
//! repository ([`check`]), the signed-commit gate, and [`run_env`]:
//!
//! lock → decrypt → connect → observe and plan → policy gate → (plan only:
//! stop) → guards → confirm → execute → record → release.
//!
//! What differs between the callers is said in [`RunOptions`] and
//! [`Hooks`], never by a copy of the sequence.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::diag::{Diagnostics, Report};
use crate::execute::{self, EnvRun, Outcome, Progress, Stop};
use crate::graph::Graph;
use crate::load::{self, Files};
use crate::model::{Environment, Model};
use crate::observe::{self, Providers};
use crate::plan::{self, EnvPlan, Guard, GuardTrip, PlanInput};
use crate::render::{self, RenderOptions, StructuralSecrets};
use crate::secrets::{self, Identities};
use crate::state::{self, EnvLock, EnvRecord, RecordStore};

/// A stage of [`run_env`] failed; nothing after it ran.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apply lock could not be taken (held by someone else, or its
    /// store is unreachable).
    #[error(transparent)]
    Lock(state::Error),
    /// The environment's secrets could not be decrypted.
    #[error(transparent)]
    Secrets(#[from] secrets::Error),
    /// A provider could not be connected.
    #[error(transparent)]
    Connect(#[from] observe::Error),
    /// Observing or planning failed.
    #[error(transparent)]
    Plan(#[from] plan::Error),
    /// The executor could not run (a failing resource is not an error: it
    /// is in the outcome).
    #[error(transparent)]
    Execute(#[from] execute::Error),
    /// A caller's hook failed (printing the plan, asking to confirm).
    #[error(transparent)]
    Hook(Box<dyn std::error::Error + Send + Sync>),
}

/// How one environment runs: everything `apply`, `rebuild` and the
/// reconciler do differently.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Hold the environment's apply lock for the run (a report-only
    /// reconcile reads without it).
    pub lock: bool,
    /// Stop after the plan and the policy gate (`--dry-run`, report-only).
    pub plan_only: bool,
    /// Apply despite the mass-delete guard (`--allow-mass-delete`).
    pub allow_mass_delete: bool,
    /// Apply despite a protected environment's guard (`--allow-destroy`).
    pub allow_destroy: bool,
    /// Observe again before applying, because time may have passed since
    /// the plan (at a confirmation prompt); otherwise the plan's observed
    /// state is reused.
    pub reobserve: bool,
    /// The executor's options; `execute.prune` off also means the plan's
    /// deletes are not applied, so the mass-delete guard cannot trip.
    pub execute: execute::Options,
}

/// One environment of a checked repository at one commit.
pub struct EnvJob<'a> {
    pub checked: &'a Checked,
    pub env: &'a Environment,
    /// The commit's files (the environment's secret files among them).
    pub files: &'a Files,
    pub identities: &'a Identities,
    pub commit: &'a str,
    /// Owner name in ownership marks and `${env.name}` (a blue/green
    /// `rebuild --as prod-green`); `None` is the environment's own name.
    pub owner: Option<&'a str>,
    /// Where records and locks go for an environment without a Kubernetes
    /// target.
    pub state_dir: &'a Path,
    pub options: RunOptions,
    pub progress: Option<Progress<'a>>,
    pub stop: Option<&'a Stop>,
}

impl EnvJob<'_> {
    /// The owner name: `owner`, else the environment's.
    pub fn owner_name(&self) -> &str {
        self.owner.unwrap_or(&self.env.name)
    }
}

/// What a caller sees of a run before anything is written.
pub trait Hooks {
    /// The plan, before any gate (the command line prints it).
    fn planned(&mut self, _plan: &EnvPlan) -> Result<(), Error> {
        Ok(())
    }

    /// The last word before anything is written, once every gate passed:
    /// `false` holds the environment. `changes`: resources the apply will
    /// change.
    fn confirm(&mut self, _plan: &EnvPlan, _changes: usize) -> Result<bool, Error> {
        Ok(true)
    }
}

/// No hooks: the reconciler's.
pub struct Unattended;

impl Hooks for Unattended {}

/// Why an environment was held with nothing written.
#[derive(Clone, Debug, PartialEq)]
pub enum Hold {
    /// The environment's policy settings are invalid.
    PolicySettings(Vec<String>),
    /// Findings of severity error.
    Policy { errors: usize },
    /// Guards the options do not allow past.
    Guards(Vec<GuardTrip>),
    /// [`Hooks::confirm`] said no.
    NotConfirmed,
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::PolicySettings(errors) => write!(
                f,
                "{} invalid policy setting(s): {}",
                errors.len(),
                errors.first().map(String::as_str).unwrap_or("")
            ),
            Hold::Policy { errors } => write!(
                f,
                "blocked by {errors} policy finding(s) of severity error; nothing applied \
                 (`tidegate validate` shows each with its resource, file:line and fix)"
            ),
            Hold::Guards(trips) => {
                let labels: Vec<&str> = trips.iter().map(|g| g.guard.label()).collect();
                write!(f, "guard {}", labels.join(", "))
            }
            Hold::NotConfirmed => write!(f, "not confirmed"),
        }
    }
}

/// How far a run went.
pub enum Ran {
    /// Planned and stopped there ([`RunOptions::plan_only`]).
    Planned(EnvPlan),
    /// Held by a gate before anything was written.
    Held { plan: EnvPlan, hold: Hold },
    /// Applied: `outcome` says what happened to each resource. The record
    /// was written unless `record_error` says why not.
    Applied {
        plan: EnvPlan,
        outcome: Outcome,
        record_error: Option<state::Error>,
    },
}

/// A finished run, with what it cost even when it failed.
pub struct Finished {
    pub ran: Result<Ran, Error>,
    /// API calls made, keyed `provider/operation`.
    pub api_calls: BTreeMap<String, u64>,
    /// Retries made, keyed `provider/reason`.
    pub api_retries: BTreeMap<String, u64>,
    /// From connecting the providers to the end of the apply (lock and
    /// record excluded): a rebuild's measured RTO.
    pub wall: Duration,
}

/// Runs one environment: see the module documentation.
pub async fn run_env(job: &EnvJob<'_>, hooks: &mut (impl Hooks + ?Sized)) -> Finished {
    let failed = |e: Error| Finished {
        ran: Err(e),
        api_calls: BTreeMap::new(),
        api_retries: BTreeMap::new(),
        wall: Duration::ZERO,
    };
    let env = job.env;
    let lock = if job.options.lock {
        let owner = state::scoped(&env.project, job.owner_name());
        match EnvLock::acquire(
            env.kubernetes.as_ref(),
            job.state_dir,
            &owner,
            &state::this_process(),
        )
        .await
        {
            Ok(lock) => Some(lock),
            Err(e) => return failed(Error::Lock(e)),
        }
    } else {
        None
    };
    let finished = match secrets::load_env(env, job.files, job.identities) {
        Ok(decrypted) => connected(job, &decrypted, hooks).await,
        Err(e) => failed(e.into()),
    };
    if let Some(lock) = lock {
        if let Err(e) = lock.release().await {
            // The lock is a lease: it expires on its own.
            tracing::warn!(environment = %env.name, error = %e, "could not release the apply lock");
        }
    }
    finished
}

/// [`run_env`] once the secrets are decrypted: connect, then the rest.
async fn connected(
    job: &EnvJob<'_>,
    decrypted: &secrets::Decrypted,
    hooks: &mut (impl Hooks + ?Sized),
) -> Finished {
    let t0 = Instant::now();
    let scopes = observe::scopes_of(&job.checked.graph, &job.env.name);
    let providers =
        match Providers::connect(&job.env.target(job.owner), scopes.keys().copied()).await {
            Ok(p) => p,
            Err(e) => {
                return Finished {
                    ran: Err(e.into()),
                    api_calls: BTreeMap::new(),
                    api_retries: BTreeMap::new(),
                    wall: t0.elapsed(),
                }
            }
        };
    let ran = planned(job, decrypted, &providers, hooks, t0).await;
    let wall = match &ran {
        Ok((_, wall)) => *wall,
        Err(_) => t0.elapsed(),
    };
    Finished {
        ran: ran.map(|(ran, _)| ran),
        api_calls: providers.api_calls(),
        api_retries: providers.api_retries(),
        wall,
    }
}

/// Plan, gates, execute and record through connected `providers`; the
/// run and its wall time (record excluded).
async fn planned(
    job: &EnvJob<'_>,
    decrypted: &secrets::Decrypted,
    providers: &Providers,
    hooks: &mut (impl Hooks + ?Sized),
    t0: Instant,
) -> Result<(Ran, Duration), Error> {
    let (model, graph) = (&job.checked.model, &job.checked.graph);
    let opts = &job.options;
    let input = PlanInput {
        owner: job.owner,
        concurrency: opts.execute.parallelism.max(1),
        ..PlanInput::new(model, graph, job.env, providers, decrypted)
    };
    let (mut plan, live) = plan::plan_env_live(&input).await?;
    if !opts.execute.prune {
        // Nothing is deleted: the mass-delete guard cannot trip.
        plan.guards.retain(|g| g.guard != Guard::MassDelete);
    }
    hooks.planned(&plan)?;
    let held = |plan: EnvPlan, hold: Hold| Ok((Ran::Held { plan, hold }, t0.elapsed()));
    if !plan.policy_errors.is_empty() {
        let errors = plan.policy_errors.clone();
        return held(plan, Hold::PolicySettings(errors));
    }
    if let Some(report) = plan.policy.as_ref().filter(|p| p.blocks_apply()) {
        let errors = report.errors();
        return held(plan, Hold::Policy { errors });
    }
    if opts.plan_only {
        return Ok((Ran::Planned(plan), t0.elapsed()));
    }
    let tripped: Vec<GuardTrip> = plan
        .guards
        .iter()
        .filter(|g| match g.guard {
            Guard::MassDelete => !opts.allow_mass_delete,
            Guard::Protected => !opts.allow_destroy,
        })
        .cloned()
        .collect();
    if !tripped.is_empty() {
        return held(plan, Hold::Guards(tripped));
    }
    let mut changes = plan.counts.changes();
    if !opts.execute.prune {
        changes -= plan.counts.delete;
    }
    if !hooks.confirm(&plan, changes)? {
        return held(plan, Hold::NotConfirmed);
    }
    let run = EnvRun::new(model, graph, job.env, providers, decrypted)
        .owner(job.owner)
        .observed((!opts.reobserve).then_some(&live))
        .options(opts.execute.clone())
        .progress(job.progress)
        .stop(job.stop);
    let outcome = execute::run_env(&run).await?;
    let wall = t0.elapsed();
    let record_error = record(job, &outcome).await.err();
    let ran = Ran::Applied {
        plan,
        outcome,
        record_error,
    };
    Ok((ran, wall))
}

/// Writes the record `outcome` leaves, unless the stored one already says
/// the same (no write per reconcile cycle of an unchanged environment).
async fn record(job: &EnvJob<'_>, outcome: &Outcome) -> Result<(), state::Error> {
    let record = record_of(outcome, job.commit);
    let env = job.env;
    let store =
        RecordStore::for_target(env.kubernetes.as_ref(), job.state_dir, &env.project).await?;
    let previous = store.load_exact(job.owner_name()).await.ok().flatten();
    let record = record.after(previous.as_ref());
    if previous.is_none_or(|p| !p.same_state(&record)) {
        store.save(&record).await?;
    }
    Ok(())
}

/// A repository that passed every check: model and graph, and the
/// warnings found on the way (Kubernetes objects whose kind could not be
/// checked), sorted.
pub struct Checked {
    pub model: Model,
    pub graph: Graph,
    pub warnings: Vec<crate::diag::Diagnostic>,
}

/// Why a commit may not be applied to `env`, which requires a trusted
/// signature; `None` when it may.
pub fn signature_refusal(
    env: &crate::model::Environment,
    commit: &str,
    verdict: &crate::source::Verification,
    trust: &crate::source::TrustList,
) -> Option<String> {
    use crate::source::SignaturePolicy;
    if !env.require_signed_commits || SignaturePolicy::RequireTrusted.allows(verdict) {
        return None;
    }
    let short = &commit[..commit.len().min(12)];
    let hint = if trust.is_empty() {
        "no trusted keys are configured: pass --trusted-signers FILE or --trusted-pgp-keys FILE"
    } else {
        "sign the commit with a key listed in --trusted-signers or --trusted-pgp-keys"
    };
    Some(format!(
        "commit {short} is not applied to {}: {verdict}, and {} sets `requireSignedCommits: true`; {hint}",
        env.name, env.file
    ))
}

/// The record an outcome leaves.
pub fn record_of(outcome: &Outcome, commit: &str) -> EnvRecord {
    let problems: Vec<String> = outcome
        .resources
        .iter()
        .filter(|r| !r.status.is_success())
        .map(|r| format!("{} {}: {}", r.id, r.status, r.reason))
        .collect();
    EnvRecord {
        environment: outcome.owner.clone(),
        commit: commit.to_string(),
        converged: outcome.converged(),
        healthy: outcome.converged(),
        applied_at: state::now_rfc3339(),
        resources: outcome.resources.len(),
        problems,
        good_since: None,
    }
}

/// Loads, resolves, graphs and renders (with structural secrets) a file
/// set: everything `validate` checks without a key or network. All
/// problems are reported together.
///
/// Provider value rules (AWS CIDR blocks, ports, rule sources, tags,
/// secrets; every Kubernetes object against the schema of its kind) are
/// checked twice without network: the literal values of every module
/// (reported even when other problems stop the run, at the field's line),
/// and every rendered body, at the place each value was written (an
/// environment's var, an instance's input, a default). Neither stops the
/// other stages, so one run lists them all. Warnings (a Kubernetes kind
/// nobody declared: not checked) do not fail the check; they are in
/// [`Checked::warnings`], or in the report beside the errors.
pub fn check(files: &Files) -> std::result::Result<Checked, Report> {
    check_as(files, None)
}

/// [`check`], with the Helm charts of environment `rename.0` rendered
/// under the owner name `rename.1` (a `rebuild --as` copy: `${env.name}`
/// in chart values is the copy's name).
pub fn check_as(
    files: &Files,
    rename: Option<(&str, &str)>,
) -> std::result::Result<Checked, Report> {
    let mut diags = Diagnostics::default();
    let mut model = load::load_with(files, &mut diags);
    if !diags.has_errors() {
        crate::helm::expand(&mut model, files, rename, &mut diags);
    }
    let mut values = Diagnostics::default();
    load::values::check_modules(&model, &mut values);
    if diags.has_errors() {
        diags.extend(values);
        return Err(Report::new(diags));
    }
    let graph = Graph::build_with(&model, &mut diags);
    if diags.has_errors() {
        diags.extend(values);
        return Err(Report::new(diags));
    }
    let known = HashMap::new();
    let opts = RenderOptions {
        known: &known,
        secrets: &StructuralSecrets,
        owner: None,
    };
    for env in &model.environments {
        match render::render_env(&model, &env.name, opts) {
            Ok(desired) => load::values::check_rendered(&model, &env.name, &desired, &mut values),
            Err(e) => push_render_error(&mut diags, e),
        }
    }
    diags.extend(values);
    if diags.has_errors() {
        Err(Report::new(diags))
    } else {
        let warnings = diags.sorted();
        Ok(Checked {
            model,
            graph,
            warnings,
        })
    }
}

fn push_render_error(diags: &mut Diagnostics, e: render::Error) {
    match e {
        render::Error::Eval {
            origin,
            what,
            source,
        } => diags.error(
            &origin,
            format!("{what}: {source}"),
            "fix the reference or the value it points at",
        ),
        render::Error::Cycle { origin, what } => diags.error(
            &origin,
            format!("{what} refers to itself through other values (a reference cycle)"),
            "break the chain of `${module...}` / `${input...}` references",
        ),
        other => diags.error(&Default::default(), other.to_string(), ""),
    }
}
