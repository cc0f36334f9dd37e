//! The one way an environment runs, below both the command line (`cli`:
//! `apply`, `rebuild`) and the reconciler (`reconcile`): checking a
//! repository ([`check`]), the signed-commit gate, and [`run_env`]:
//!
//! lock → decrypt → connect → observe and plan → the caller's check of
//! what the plan saw (a saved plan: nothing moved) → policy gate → (plan
//! only: stop) → guards → confirm → execute → record → audit history →
//! release.
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
use crate::plan::{self, target, EnvPlan, Guard, GuardTrip, PlanInput};
use crate::render::{self, RenderOptions, StructuralSecrets};
use crate::secrets::{self, Identities};
use crate::state::history::{self, CommitInfo, Entry, EventKind, PlanSummary, Subject};
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
    /// A `--target` names nothing in the environment.
    #[error(transparent)]
    Target(#[from] target::Error),
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
    /// `--target`s: plan and apply only these resources (`module.name`)
    /// or instances (`module.<instance>`) and what they depend on; never
    /// prune; record the environment as partial. Empty: everything.
    pub targets: Vec<String>,
    /// Providers connected even when the environment declares nothing
    /// through them (`preview down`: an environment emptied of its modules
    /// still observes, and prunes, what its owner name owns there).
    pub providers: Vec<crate::resource::ProviderKind>,
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
    /// What the run is and who runs it, for the audit history.
    pub audit: Audit,
}

/// What a run is and who runs it, as the audit history records it
/// ([`crate::state::history`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Audit {
    /// `apply`, `rebuild` or `drift-heal`.
    pub event: EventKind,
    pub subject: Subject,
    /// Author, committer and signer of the commit; `None` for a working
    /// tree that is no commit.
    pub commit: Option<CommitInfo>,
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

    /// What the plan saw (the desired resources it was built from and the
    /// live state it compared them with), before any gate: a reason to
    /// hold the environment with nothing written (`tidegate apply FILE`:
    /// the saved plan is stale), or `None` to go on.
    fn check_seen(
        &mut self,
        _plan: &EnvPlan,
        _desired: &[crate::resource::Desired],
        _live: &observe::LiveState,
    ) -> Result<Option<String>, Error> {
        Ok(None)
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
    /// [`Hooks::check_seen`] refused what the plan saw (a stale saved
    /// plan); the text says why.
    Refused(String),
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
            Hold::Refused(why) => write!(f, "{why}"),
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
///
/// A run that takes the lock and may write (not plan-only) leaves entries
/// in the environment's audit history ([`audit_entries`]); an entry that
/// cannot be written is a warning, never a failed run.
pub async fn run_env(job: &EnvJob<'_>, hooks: &mut (impl Hooks + ?Sized)) -> Finished {
    let started = Instant::now();
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
            Err(e) => {
                let finished = failed(Error::Lock(e));
                audit(job, &finished, started).await;
                return finished;
            }
        }
    } else {
        None
    };
    let finished = match secrets::load_env(env, job.files, job.identities) {
        Ok(decrypted) => connected(job, &decrypted, hooks).await,
        Err(e) => failed(e.into()),
    };
    audit(job, &finished, started).await;
    if let Some(lock) = lock {
        if let Err(e) = lock.release().await {
            // The lock is a lease: it expires on its own.
            tracing::warn!(environment = %env.name, error = %e, "could not release the apply lock");
        }
    }
    finished
}

/// Appends the entries a finished run leaves to the environment's history
/// (still under its lock, so entries of one environment follow its
/// applies); failures are warnings.
async fn audit(job: &EnvJob<'_>, finished: &Finished, started: Instant) {
    if !job.options.lock || job.options.plan_only {
        return;
    }
    let took = started.elapsed();
    let entries = audit_entries(
        &job.audit,
        job.owner_name(),
        job.commit,
        &finished.ran,
        took,
    );
    if entries.is_empty() {
        return;
    }
    let env = job.env;
    let store = match RecordStore::for_target(env.kubernetes.as_ref(), job.state_dir, &env.project)
        .await
    {
        Ok(store) => store,
        Err(e) => {
            tracing::warn!(environment = %job.owner_name(), error = %e, "could not write the audit history");
            return;
        }
    };
    for entry in &entries {
        if let Err(e) = store.append_history(entry).await {
            tracing::warn!(environment = %job.owner_name(), event = %entry.event, error = %e, "could not write the audit history");
            return;
        }
    }
}

/// The history entries of a run of `owner` at `commit` that went as far
/// as `ran` in `took`: one for the run (succeeded; failed with the first
/// error; held with why), and a `prune` entry when it deleted resources.
/// A drift heal that found nothing to heal leaves none (the reconciler
/// checks every drift interval), nor does a plan-only run.
pub fn audit_entries(
    audit: &Audit,
    owner: &str,
    commit: &str,
    ran: &Result<Ran, Error>,
    took: Duration,
) -> Vec<Entry> {
    let mut entry = Entry::new(owner, audit.event, audit.subject.clone());
    entry.commit = Some(commit.to_string());
    entry.commit_info = audit.commit.clone();
    entry.duration_ms = Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
    let fail = |entry: &mut Entry, error: String| {
        entry.outcome = history::Outcome::Failed;
        entry.error = Some(error);
    };
    let mut prune = None;
    match ran {
        Err(e) => fail(&mut entry, error_message(e)),
        Ok(Ran::Planned(_)) => return Vec::new(),
        Ok(Ran::Held { plan, hold }) => {
            entry.plan = Some(plan.summary());
            entry.outcome = history::Outcome::Held;
            entry.reason = Some(match hold {
                Hold::Guards(trips) => trips
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
                other => other.to_string(),
            });
        }
        Ok(Ran::Applied {
            plan,
            outcome,
            record_error,
        }) => {
            let summary = plan.summary();
            let failed = outcome
                .resources
                .iter()
                .find(|r| !r.status.is_success())
                .map(|r| format!("{} {}: {}", r.id, r.status, r.reason));
            if let Some(why) = failed {
                fail(&mut entry, why);
            } else if outcome.stopped {
                fail(
                    &mut entry,
                    "stopped by a signal before the run finished".into(),
                );
            } else if let Some(e) = record_error {
                fail(
                    &mut entry,
                    format!("the environment's record was not written: {e}"),
                );
            } else if audit.event == EventKind::DriftHeal && !outcome.wrote() {
                return Vec::new();
            }
            let deleted: Vec<String> = outcome
                .resources
                .iter()
                .filter(|r| r.status == execute::Status::Deleted)
                .map(|r| r.id.to_string())
                .collect();
            if !deleted.is_empty() {
                // Made after the run's entry, so it sorts after it.
                let mut p = Entry::new(owner, EventKind::Prune, audit.subject.clone());
                p.commit = entry.commit.clone();
                p.commit_info = entry.commit_info.clone();
                p.plan = Some(PlanSummary {
                    digest: summary.digest.clone(),
                    delete: deleted.len(),
                    ..PlanSummary::default()
                });
                p.reason = Some("owned and no longer declared in Git".into());
                p.resources = deleted;
                prune = Some(p);
            }
            if let Some(t) = &plan.target {
                entry.reason = Some(format!(
                    "targeted apply (partial): --target {}",
                    t.targets.join(" --target ")
                ));
                entry.resources = t.targets.clone();
            }
            entry.plan = Some(summary);
        }
    }
    let mut out = vec![entry];
    out.extend(prune);
    out
}

/// A failed run's error as the status API, the page and the audit history
/// show it: secrets errors without where the identities were read from
/// (file and folder paths of mounted keys); the recipients and the public
/// keys loaded are enough to tell which key is missing.
pub fn error_message(e: &Error) -> String {
    match e {
        Error::Secrets(e) => secrets_message(e),
        other => other.to_string(),
    }
}

/// [`error_message`] of a secrets error.
pub fn secrets_message(e: &secrets::Error) -> String {
    match e {
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
    }
}

/// [`run_env`] once the secrets are decrypted: connect, then the rest.
async fn connected(
    job: &EnvJob<'_>,
    decrypted: &secrets::Decrypted,
    hooks: &mut (impl Hooks + ?Sized),
) -> Finished {
    let t0 = Instant::now();
    let scopes = observe::scopes_for(&job.checked.graph, &job.env.name, job.owner);
    let kinds = scopes
        .keys()
        .copied()
        .chain(job.options.providers.iter().copied());
    let providers = match Providers::connect(&job.env.target(job.owner), kinds).await {
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
    let (mut plan, live, desired) = plan::plan_env_seen(&input).await?;
    let plan_time = t0.elapsed();
    // Where a run's time goes (the reconciler logs at info, the one-shot
    // commands only with RUST_LOG): connect, observe and plan.
    tracing::info!(
        environment = %job.owner_name(),
        commit = job.commit,
        elapsed_ms = plan_time.as_millis() as u64,
        changes = plan.counts.changes(),
        "planned"
    );
    let scope = if opts.targets.is_empty() {
        None
    } else {
        let groups = target::Groups::of(model, &job.env.name);
        let scope = target::scope(graph, &groups, &job.env.name, &opts.targets)?;
        let existing = live.resources.len();
        target::restrict(&mut plan, job.env, existing, &opts.targets, &scope);
        Some(scope)
    };
    if !opts.execute.prune {
        // Nothing is deleted: the mass-delete guard cannot trip.
        plan.guards.retain(|g| g.guard != Guard::MassDelete);
    }
    hooks.planned(&plan)?;
    let held = |plan: EnvPlan, hold: Hold| Ok((Ran::Held { plan, hold }, t0.elapsed()));
    if let Some(why) = hooks.check_seen(&plan, &desired, &live)? {
        return held(plan, Hold::Refused(why));
    }
    drop(desired);
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
        .stop(job.stop)
        .only(scope.as_ref());
    let outcome = execute::run_env(&run).await?;
    let wall = t0.elapsed();
    let record_error = record(job, &outcome).await.err();
    // The apply with its health waits, then the record.
    tracing::info!(
        environment = %job.owner_name(),
        commit = job.commit,
        apply_ms = (wall - plan_time).as_millis() as u64,
        record_ms = (t0.elapsed() - wall).as_millis() as u64,
        "applied"
    );
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
    let record = record_of(outcome, job.commit, &job.options.targets);
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

/// The [`Checked`] repository of the last commit asked for, shared by
/// everything a long-running process does at that commit: the
/// reconciler's converge of each environment at each drift cycle, and its
/// preview sweep. Each checked the whole repository again: at 10,000
/// resources a load, a graph and a render of every environment per cycle,
/// and a second model held by the sweep. A commit that fails the check is
/// not kept (its report is made again).
#[derive(Default)]
pub struct CheckCache {
    last: tokio::sync::Mutex<Option<(String, std::sync::Arc<Checked>)>>,
}

/// Why [`CheckCache::get`] has no checked repository.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The commit does not pass the checks.
    #[error("{0}")]
    Invalid(Report),
    /// The check itself did not finish (it panicked).
    #[error("checking the commit failed: {0}")]
    Task(String),
}

impl CheckCache {
    /// The checked repository of `commit`, whose files are `files`; a
    /// commit not checked yet is checked off the async workers (a large
    /// repository takes a second of CPU).
    pub async fn get(
        &self,
        commit: &str,
        files: &std::sync::Arc<Files>,
    ) -> std::result::Result<std::sync::Arc<Checked>, CheckError> {
        let mut last = self.last.lock().await;
        if let Some((_, checked)) = last.as_ref().filter(|(c, _)| c == commit) {
            return Ok(checked.clone());
        }
        // The previous commit's model goes before the new one is built.
        *last = None;
        let files = files.clone();
        let checked = tokio::task::spawn_blocking(move || check(&files))
            .await
            .map_err(|e| CheckError::Task(e.to_string()))?
            .map_err(CheckError::Invalid)?;
        let checked = std::sync::Arc::new(checked);
        *last = Some((commit.to_string(), checked.clone()));
        Ok(checked)
    }

    /// Keeps `checked` as the check of `commit` (the reconciler's driver
    /// checks each new commit before it schedules anything at it).
    pub async fn put(&self, commit: &str, checked: std::sync::Arc<Checked>) {
        *self.last.lock().await = Some((commit.to_string(), checked));
    }
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

/// The record an outcome leaves; a targeted apply (`targets` not empty)
/// applied only part of the environment and is recorded as not converged,
/// so no promotion gate opens on it.
pub fn record_of(outcome: &Outcome, commit: &str, targets: &[String]) -> EnvRecord {
    let mut problems: Vec<String> = outcome
        .resources
        .iter()
        .filter(|r| !r.status.is_success())
        .map(|r| format!("{} {}: {}", r.id, r.status, r.reason))
        .collect();
    if !targets.is_empty() {
        problems.push(format!(
            "partial: a targeted apply (--target {}) applied {} resource(s) only; a full apply converges the rest",
            targets.join(" --target "),
            outcome.resources.len()
        ));
    }
    let converged = outcome.converged() && targets.is_empty();
    EnvRecord {
        environment: outcome.owner.clone(),
        commit: commit.to_string(),
        converged,
        healthy: converged,
        applied_at: state::now_rfc3339(),
        resources: outcome.resources.len(),
        problems,
        good_since: None,
        partial: targets.to_vec(),
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
    load::traffic::check_resources(&model, &graph, &mut diags);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execute::{ResourceOutcome, Status};
    use crate::plan::{Counts, GuardTrip};
    use crate::resource::{ProviderKind, ResourceId};
    use crate::state::history::{Outcome as Audited, SubjectKind};

    fn plan(counts: Counts) -> EnvPlan {
        EnvPlan {
            name: "dev".into(),
            owner: "dev".into(),
            waits_for: vec![],
            counts,
            modules: vec![],
            order: vec![],
            policy: None,
            policy_errors: vec![],
            notes: vec![],
            promotion: vec![],
            guards: vec![],
            target: None,
        }
    }

    fn resource(name: &str, status: Status, reason: &str) -> ResourceOutcome {
        ResourceOutcome {
            id: ResourceId {
                module: "app".into(),
                name: name.into(),
            },
            kind: "v1/ConfigMap".into(),
            provider: ProviderKind::Kubernetes,
            status,
            started: Duration::ZERO,
            duration: Duration::from_millis(5),
            reason: reason.into(),
        }
    }

    fn applied(resources: Vec<ResourceOutcome>) -> Result<Ran, Error> {
        Ok(Ran::Applied {
            plan: plan(Counts {
                create: 1,
                delete: 1,
                no_op: 3,
                ..Counts::default()
            }),
            outcome: Outcome {
                environment: "dev".into(),
                owner: "dev".into(),
                resources,
                ..Outcome::default()
            },
            record_error: None,
        })
    }

    fn audit(event: EventKind) -> Audit {
        Audit {
            event,
            subject: Subject::cli(),
            commit: Some(CommitInfo {
                author: Some("Ann <ann@example.com>".into()),
                ..CommitInfo::default()
            }),
        }
    }

    #[test]
    fn an_apply_that_pruned_leaves_an_apply_and_a_prune_entry() {
        let ran = applied(vec![
            resource("config", Status::Created, ""),
            resource("flags", Status::Deleted, ""),
        ]);
        let took = Duration::from_millis(1234);
        let e = audit_entries(&audit(EventKind::Apply), "dev", "c0ffee", &ran, took);
        assert_eq!(e.len(), 2, "{e:#?}");
        assert_eq!(e[0].event, EventKind::Apply);
        assert_eq!(e[0].outcome, Audited::Succeeded);
        assert_eq!(e[0].commit.as_deref(), Some("c0ffee"));
        assert_eq!(e[0].subject.kind, SubjectKind::Cli);
        assert_eq!(e[0].duration_ms, Some(1234));
        let p = e[0].plan.as_ref().unwrap();
        assert_eq!((p.create, p.update, p.delete, p.unchanged), (1, 0, 1, 3));
        assert!(p.digest.starts_with("sha256:") && p.digest.len() == 71);
        assert_eq!(e[1].event, EventKind::Prune);
        assert_eq!(e[1].plan.as_ref().unwrap().delete, 1);
        assert_eq!(e[1].plan.as_ref().unwrap().digest, p.digest);
        assert_eq!(e[1].resources, ["app.flags"]);
        assert_eq!(e[1].commit_info, e[0].commit_info);
    }

    #[test]
    fn a_failed_run_keeps_its_first_error_and_a_held_one_why() {
        let ran = applied(vec![
            resource("config", Status::Failed, "forbidden"),
            resource("flags", Status::Failed, "second"),
        ]);
        let e = audit_entries(&audit(EventKind::Rebuild), "dev", "c", &ran, Duration::ZERO);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].outcome, Audited::Failed);
        assert_eq!(e[0].error.as_deref(), Some("app.config failed: forbidden"));

        let guard = GuardTrip {
            guard: Guard::Protected,
            message: "deletes app.db".into(),
        };
        let held: Result<Ran, Error> = Ok(Ran::Held {
            plan: plan(Counts::default()),
            hold: Hold::Guards(vec![guard]),
        });
        let e = audit_entries(&audit(EventKind::Apply), "dev", "c", &held, Duration::ZERO);
        assert_eq!(e[0].outcome, Audited::Held);
        let reason = e[0].reason.as_deref().unwrap();
        assert!(reason.contains("protected: deletes app.db"), "{reason}");

        let failed: Result<Ran, Error> = Err(Error::Hook("no terminal".into()));
        let e = audit_entries(
            &audit(EventKind::Apply),
            "dev",
            "c",
            &failed,
            Duration::ZERO,
        );
        assert_eq!(e[0].outcome, Audited::Failed);
        assert_eq!(e[0].error.as_deref(), Some("no terminal"));
        assert_eq!(e[0].plan, None);
    }

    #[test]
    fn a_drift_heal_with_nothing_to_heal_and_a_plan_leave_nothing() {
        let clean = applied(vec![resource("config", Status::Unchanged, "")]);
        let heal = audit(EventKind::DriftHeal);
        assert!(audit_entries(&heal, "dev", "c", &clean, Duration::ZERO).is_empty());
        let healed = applied(vec![resource("config", Status::Updated, "")]);
        let e = audit_entries(&heal, "dev", "c", &healed, Duration::ZERO);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].event, EventKind::DriftHeal);
        let planned: Result<Ran, Error> = Ok(Ran::Planned(plan(Counts::default())));
        let apply = audit(EventKind::Apply);
        assert!(audit_entries(&apply, "dev", "c", &planned, Duration::ZERO).is_empty());
        // A failing heal is recorded.
        let broken = applied(vec![resource("config", Status::Failed, "x")]);
        assert_eq!(
            audit_entries(&heal, "dev", "c", &broken, Duration::ZERO).len(),
            1
        );
    }
}
