//! `tidegate apply` and what `tidegate rebuild` shares with it: load and
//! check the repository, then per environment in order: the promotion
//! gate, the signature gate, and the one pipeline (crate::pipeline: lock,
//! secrets, plan, policy, guards, confirm, execute, record, release) with
//! the command line's hooks (the preview, the prompt, progress bars).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::Loaded;
use crate::execute::{self, Event, Outcome, Status, Stop};
use crate::load::Files;
use crate::model::{Environment, Model};
use crate::observe;
use crate::pipeline::{self, Checked, EnvJob, Hold, Hooks, Ran, RunOptions};
use crate::plan::saved::{self, PlanKey, SavedPlan};
use crate::plan::EnvPlan;
use crate::render;
use crate::secrets::{self, Identities, IdentityOptions};
use crate::state;
use crate::state::history::{CommitInfo, EventKind, Subject};

/// A command that could not run (problems found in the repository or a
/// failing resource are reported and turned into the exit code instead).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cli(#[from] super::Error),
    /// `--revision` could not be read from the repository's Git history.
    #[error("--revision: {0}")]
    Source(#[from] crate::source::Error),
    #[error(transparent)]
    Secrets(#[from] secrets::Error),
    #[error(transparent)]
    Observe(#[from] observe::Error),
    #[error(transparent)]
    Execute(#[from] execute::Error),
    #[error(transparent)]
    State(#[from] state::Error),
    #[error(transparent)]
    Render(#[from] render::Error),
    #[error(transparent)]
    Plan(#[from] crate::plan::Error),
    #[error(transparent)]
    Pipeline(#[from] pipeline::Error),
    /// Changes need a confirmation that cannot be asked.
    #[error("stdin is not a terminal, so tidegate cannot ask before applying; pass --yes to apply without asking")]
    NotATerminal,
    /// The async runtime could not start.
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Options shared by `apply` and `rebuild`.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Apply every environment, in promotion order.
    #[arg(long, conflicts_with = "env")]
    pub all: bool,
    /// The environment to apply.
    #[arg(long)]
    pub env: Option<String>,
    /// Apply without asking.
    #[arg(long)]
    pub yes: bool,
    /// Resources in flight at once.
    #[arg(long, default_value_t = 8)]
    pub parallelism: usize,
    /// The repository (holding environments/, modules/, secrets/): a
    /// folder, or a file:// URL of a local Git repository (read at
    /// --revision, default HEAD).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Apply this Git revision (any revision git accepts: HEAD, main~1,
    /// a tag, a commit id) of the repository instead of its working tree.
    #[arg(long)]
    pub revision: Option<String>,
    /// Where records and locks of environments without a Kubernetes target
    /// are kept.
    #[arg(long, default_value = ".tidegate/state")]
    pub state_dir: PathBuf,
    /// Seconds to wait for one resource to become healthy.
    #[arg(long, default_value_t = 300)]
    pub health_timeout: u64,
    /// Apply even when the plan deletes more than the environment's
    /// `guards` allow (default: more than 20 resources or 25%).
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// Apply deletes and replaces in an environment with `protect: true`.
    #[arg(long)]
    pub allow_destroy: bool,
    #[command(flatten)]
    pub identities: IdentityOptions,
    #[command(flatten)]
    pub trust: super::TrustOptions,
}

/// `tidegate apply`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Keep owned resources Git no longer declares.
    #[arg(long)]
    pub no_prune: bool,
    /// Apply this saved plan (`tidegate plan --out FILE`) exactly: its
    /// environment, at its commit, only if nothing it saw has moved since;
    /// no prompt (the plan was the preview).
    #[arg(value_name = "PLAN_FILE", conflicts_with_all = ["all", "no_prune"])]
    pub plan: Option<PathBuf>,
    /// The key the saved plan was authenticated with (the one given to
    /// `plan --out`).
    #[arg(long, value_name = "FILE", env = crate::plan::saved::KEY_ENV)]
    pub plan_key: Option<PathBuf>,
    /// Apply only this resource (`network.vpc`, as the plan prints it) or
    /// module instance (`module.network`), and what it depends on that is
    /// not yet converged (repeatable; needs --env). Nothing is pruned and
    /// the environment is recorded as partial: no promotion gate opens on
    /// it until a full apply.
    #[arg(long = "target", value_name = "RESOURCE_ID", requires = "env", conflicts_with_all = ["all", "plan"])]
    pub targets: Vec<String>,
}

/// A verified saved plan an apply must match.
#[derive(Debug)]
pub struct SavedCheck {
    /// Where it was read from, for messages.
    pub path: PathBuf,
    pub plan: SavedPlan,
    pub key: PlanKey,
}

/// What the shared pipeline does differently for `rebuild`.
#[derive(Clone, Debug, Default)]
pub struct Mode {
    /// `rebuild`: no promotion gate (disaster recovery starts from Git
    /// alone), and the RTO report.
    pub rebuild: bool,
    /// `--as NAME`: owner name of a blue/green copy.
    pub owner: Option<String>,
    pub prune: bool,
    /// Show what would change and stop.
    pub dry_run: bool,
    /// `apply PLAN_FILE`: apply only what this saved plan saw.
    pub saved: Option<Arc<SavedCheck>>,
    /// `--target`s (apply only): only these and what they depend on; no
    /// prune; the record says partial.
    pub targets: Vec<String>,
    /// `preview up`: variables of the one environment overridden for the
    /// copy (its `preview.vars`, rendered), and the audit event.
    pub vars: Option<crate::value::Map>,
    pub event: Option<EventKind>,
}

/// The result of one environment.
pub struct EnvResult {
    pub env: String,
    pub owner: String,
    pub outcome: Option<Outcome>,
    /// Connect to the end of the run, lock and record excluded: the
    /// measured RTO of a rebuild.
    pub wall: Duration,
    /// The longest dependency chain of per-resource durations.
    pub critical_path: Duration,
    /// Why the environment did not run or did not converge.
    pub held: Option<String>,
}

/// Runs `tidegate apply`; returns the exit code.
pub fn run(args: &ApplyArgs, out: &mut dyn Write) -> Result<u8> {
    let mut common = args.common.clone();
    let saved = match &args.plan {
        Some(path) => Some(Arc::new(saved_plan(
            path,
            args.plan_key.as_deref(),
            &mut common,
        )?)),
        None => None,
    };
    // A saved targeted plan is applied with its own targets.
    let targets = match &saved {
        Some(check) => check.plan.targets.clone(),
        None => args.targets.clone(),
    };
    let mode = Mode {
        rebuild: false,
        owner: None,
        prune: !args.no_prune && targets.is_empty(),
        dry_run: false,
        saved,
        targets,
        vars: None,
        event: None,
    };
    let (code, _) = run_pipeline(&common, &mode, out)?;
    Ok(code)
}

/// Reads and verifies the saved plan at `path`, and points `common` at
/// what it planned: its environment, its commit (when it was read from Git
/// and no `--revision` says otherwise), without a prompt.
fn saved_plan(path: &Path, key: Option<&Path>, common: &mut CommonArgs) -> Result<SavedCheck> {
    let key = PlanKey::load(key).map_err(super::Error::from)?;
    let plan = SavedPlan::read(path, &key).map_err(super::Error::from)?;
    match &common.env {
        Some(e) if *e != plan.environment => {
            return Err(super::Error::Usage(format!(
                "--env {e}: the saved plan {} is for environment {}",
                path.display(),
                plan.environment
            ))
            .into())
        }
        _ => common.env = Some(plan.environment.clone()),
    }
    if common.revision.is_none() {
        if let saved::Source::Revision { .. } = plan.source {
            common.revision = Some(plan.commit.clone());
        }
    }
    common.yes = true;
    Ok(SavedCheck {
        path: path.to_path_buf(),
        plan,
        key,
    })
}

/// The exit code after a signal: 130 for SIGINT, 143 for SIGTERM.
struct Signals {
    stop: Arc<Stop>,
    code: Arc<std::sync::atomic::AtomicU8>,
}

impl Signals {
    fn install() -> Signals {
        let stop = Arc::new(Stop::default());
        let code = Arc::new(std::sync::atomic::AtomicU8::new(0));
        let (s, c) = (stop.clone(), code.clone());
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            let n = tokio::select! {
                _ = term.recv() => 143,
                _ = int.recv() => 130,
            };
            eprintln!(
                "tidegate: signal received; finishing the calls in flight, starting nothing new"
            );
            c.store(n, std::sync::atomic::Ordering::SeqCst);
            s.request();
        });
        Signals { stop, code }
    }

    fn exit_code(&self) -> Option<u8> {
        match self.code.load(std::sync::atomic::Ordering::SeqCst) {
            0 => None,
            n => Some(n),
        }
    }
}

/// Loads the repository (working tree, or `--revision` / a `file://` URL
/// read from Git) and the commit id records are kept under.
fn load_files(args: &CommonArgs) -> Result<Loaded> {
    Ok(super::load_commit(&args.repo, args.revision.as_deref())?)
}

/// The shared pipeline of `apply` and `rebuild`: exit code and the result
/// of each environment reached.
pub fn run_pipeline(
    args: &CommonArgs,
    mode: &Mode,
    out: &mut dyn Write,
) -> Result<(u8, Vec<EnvResult>)> {
    let Loaded {
        files,
        commit,
        meta,
    } = load_files(args)?;
    let rename = mode
        .owner
        .as_deref()
        .zip(args.env.as_deref())
        .map(|(o, e)| (e, o));
    let mut checked = match crate::pipeline::check_as(&files, rename) {
        Ok(c) => c,
        Err(report) => {
            for d in &report.0 {
                writeln!(out, "{d}").map_err(super::Error::from)?;
            }
            writeln!(out, "invalid: {}; nothing applied", report.counts())
                .map_err(super::Error::from)?;
            return Ok((1, Vec::new()));
        }
    };
    for w in &checked.warnings {
        writeln!(out, "{w}").map_err(super::Error::from)?;
    }
    if let (Some(vars), Some(name)) = (&mode.vars, &args.env) {
        if let Some(env) = checked
            .model
            .environments
            .iter_mut()
            .find(|e| e.name == *name)
        {
            env.vars.extend(vars.clone());
        }
    }
    let checked = checked;
    // Resolved once: everything below is handed the environment itself.
    let envs: Vec<&Environment> = match (&args.env, args.all) {
        (Some(e), _) => match checked.model.environment(e) {
            Some(env) => vec![env],
            None => {
                let names: Vec<&str> = checked.graph.environments();
                return Err(super::Error::Usage(format!(
                    "--env {e}: no such environment; the repository has {}",
                    names.join(", ")
                ))
                .into());
            }
        },
        (None, true) => checked.model.environments.iter().collect(),
        (None, false) => {
            return Err(super::Error::Usage(
                "name an environment with --env NAME, or pass --all".into(),
            )
            .into())
        }
    };
    if mode.owner.is_some() && envs.len() != 1 {
        return Err(super::Error::Usage("--as needs one --env".into()).into());
    }
    let mut refusals = signature_refusals(args, &envs, &commit)?;
    if let (Some(check), Some(env)) = (&mode.saved, &args.env) {
        let moved = saved::moved_commit(&check.plan, &commit, env);
        if !moved.is_empty() {
            let why = saved::refusal(&check.path, &moved);
            refusals.insert(env.clone(), ("stale-plan", why));
        }
    }
    let commit_info = match &meta {
        Some(meta) => Some(CommitInfo::of(meta, &args.trust.load()?)),
        None => None,
    };
    let identities = Identities::from_env(&args.identities)?;
    let rt = tokio::runtime::Runtime::new().map_err(Error::Runtime)?;
    let ctx = Ctx {
        refusals: &refusals,
        checked: &checked,
        files: &files,
        identities: &identities,
        commit: &commit,
        commit_info: commit_info.as_ref(),
        args,
        mode,
    };
    rt.block_on(async {
        let signals = Signals::install();
        let mut results = Vec::new();
        let mut code = 0;
        writeln!(out, "commit {commit}").map_err(super::Error::from)?;
        for (i, env) in envs.iter().enumerate() {
            let r = ctx.env(env, &signals.stop, out).await?;
            let bad = r.held.is_some();
            results.push(r);
            if let Some(c) = signals.exit_code() {
                return Ok((c, results));
            }
            if bad {
                code = 1;
                let later: Vec<&str> = envs[i + 1..].iter().map(|e| e.name.as_str()).collect();
                if !later.is_empty() {
                    writeln!(
                        out,
                        "holding {} at their last good commit",
                        later.join(", ")
                    )
                    .map_err(super::Error::from)?;
                }
                break;
            }
        }
        Ok((code, results))
    })
}

/// The selected environments requiring a trusted signature that `commit`
/// may not be applied to, with why. The working tree is only signed when it
/// is a clean checkout of its HEAD.
fn signature_refusals(
    args: &CommonArgs,
    envs: &[&Environment],
    commit: &str,
) -> Result<HashMap<String, (&'static str, String)>> {
    let strict: Vec<&Environment> = envs
        .iter()
        .copied()
        .filter(|e| e.require_signed_commits)
        .collect();
    if strict.is_empty() {
        return Ok(HashMap::new());
    }
    let trust = args.trust.load()?;
    let mut out = HashMap::new();
    if commit.starts_with("worktree-") {
        for e in strict {
            let why = format!(
                "{} is not applied from the working tree of {}: it differs from the HEAD commit, so no signature covers it, and {} sets `requireSignedCommits: true`; commit and sign the change, then pass --revision REF",
                e.name,
                args.repo.display(),
                e.file
            );
            out.insert(e.name.clone(), ("signature", why));
        }
        return Ok(out);
    }
    let repo = super::RepoArg::parse(&args.repo)?;
    let verdict = crate::source::verify_in_repo(repo.path(), commit, &trust)?;
    for e in strict {
        if let Some(why) = super::signature_refusal(e, commit, &verdict, &trust) {
            out.insert(e.name.clone(), ("signature", why));
        }
    }
    Ok(out)
}

struct Ctx<'a> {
    /// Environments the commit may not be applied to, with the audited
    /// reason (`signature`; `stale-plan`: a saved plan of another commit)
    /// and why.
    refusals: &'a HashMap<String, (&'static str, String)>,
    checked: &'a Checked,
    files: &'a Files,
    identities: &'a Identities,
    commit: &'a str,
    /// The commit's author, committer and signer (none for a working tree).
    commit_info: Option<&'a CommitInfo>,
    args: &'a CommonArgs,
    mode: &'a Mode,
}

fn w(out: &mut dyn Write, s: std::fmt::Arguments<'_>) -> Result<()> {
    out.write_fmt(s).map_err(super::Error::from)?;
    Ok(())
}

impl Ctx<'_> {
    /// One environment: the promotion and signature gates, then the one
    /// pipeline (crate::pipeline) with the command line's hooks.
    async fn env(
        &self,
        environment: &Environment,
        stop: &Stop,
        out: &mut dyn Write,
    ) -> Result<EnvResult> {
        let model = &self.checked.model;
        let name = environment.name.as_str();
        let owner = self.mode.owner.clone().unwrap_or_else(|| name.to_string());
        let mut result = EnvResult {
            env: name.to_string(),
            owner: owner.clone(),
            outcome: None,
            wall: Duration::ZERO,
            critical_path: Duration::ZERO,
            held: None,
        };
        w(out, format_args!("\n== {owner} ==\n"))?;
        if !self.mode.rebuild {
            let records = state::load_predecessors(model, name, &self.args.state_dir).await?;
            if let Err(held) = state::gate(model, name, self.commit, &records) {
                w(out, format_args!("{held}\n"))?;
                result.held = Some(held.to_string());
                return Ok(result);
            }
            let now = crate::promotion::Clock::from_env().now();
            let wait = state::control::manual_wait(
                environment,
                self.commit,
                &records,
                &self.args.state_dir,
                now,
            )
            .await?;
            if let Some(wait) = wait {
                let held = format!("environment {name} waits ({wait}); nothing applied");
                w(out, format_args!("{held}\n"))?;
                result.held = Some(held);
                return Ok(result);
            }
        }
        if let Some((reason, why)) = self.refusals.get(name) {
            w(out, format_args!("{why}\n"))?;
            result.held = Some(why.clone());
            // A refused commit is audited where the environment keeps its
            // history; failing to write it only warns.
            let mut entry = state::history::Entry::new(
                &owner,
                state::history::EventKind::Refused,
                state::history::Subject::cli(),
            );
            entry.commit = Some(self.commit.to_string());
            entry.outcome = state::history::Outcome::Refused;
            entry.reason = Some((*reason).into());
            entry.error = Some(why.clone());
            let store = state::RecordStore::for_target(
                environment.kubernetes.as_ref(),
                &self.args.state_dir,
                &environment.project,
            )
            .await;
            if let Err(e) = match store {
                Ok(store) => store.append_history(&entry).await,
                Err(e) => Err(e),
            } {
                tracing::warn!(environment = %name, error = %e, "could not append to the audit history");
            }
            return Ok(result);
        }
        let progress = Bars::new(model, name, &owner);
        let cb = |e: &Event| progress.event(e);
        let job = EnvJob {
            checked: self.checked,
            env: environment,
            files: self.files,
            identities: self.identities,
            commit: self.commit,
            owner: self.mode.owner.as_deref(),
            state_dir: &self.args.state_dir,
            options: RunOptions {
                lock: true,
                plan_only: self.mode.dry_run,
                allow_mass_delete: self.args.allow_mass_delete,
                allow_destroy: self.args.allow_destroy,
                // Observe again only when the user may have waited at the
                // prompt; with --yes the plan's observation is seconds old
                // (one list sequence per kind saved).
                reobserve: !self.args.yes,
                execute: execute::Options {
                    parallelism: self.args.parallelism.max(1),
                    prune: self.mode.prune,
                    wait_healthy: true,
                    health_timeout: Duration::from_secs(self.args.health_timeout),
                    ..execute::Options::default()
                },
                targets: self.mode.targets.clone(),
                providers: Vec::new(),
            },
            progress: Some(&cb),
            stop: Some(stop),
            audit: pipeline::Audit {
                event: match self.mode.event {
                    Some(event) => event,
                    None if self.mode.rebuild => EventKind::Rebuild,
                    None => EventKind::Apply,
                },
                subject: Subject::cli(),
                commit: self.commit_info.cloned(),
            },
        };
        let mut hooks = Preview {
            out: &mut *out,
            owner: &owner,
            prune: self.mode.prune,
            yes: self.args.yes,
            saved: self.mode.saved.as_deref(),
        };
        let finished = pipeline::run_env(&job, &mut hooks).await;
        result.wall = finished.wall;
        match finished.ran? {
            Ran::Planned(_) => {}
            Ran::Held { hold, .. } => {
                match &hold {
                    Hold::Guards(trips) => {
                        for g in trips {
                            w(out, format_args!("stopped by guard {g}\n"))?;
                        }
                        w(out, format_args!("{owner}: nothing applied\n"))?;
                    }
                    Hold::NotConfirmed => w(out, format_args!("{owner}: not applied\n"))?,
                    Hold::PolicySettings(_) | Hold::Policy { .. } | Hold::Refused(_) => {
                        w(out, format_args!("{hold}\n"))?
                    }
                }
                result.held = Some(hold.to_string());
            }
            Ran::Applied {
                outcome,
                record_error,
                ..
            } => {
                progress.finish();
                summary(&outcome, out)?;
                if let Some(e) = record_error {
                    return Err(e.into());
                }
                result.critical_path = outcome.critical_path(&self.checked.graph, name);
                if !outcome.converged() {
                    result.held = Some(format!(
                        "{owner} did not converge: {}",
                        outcome.counts_line()
                    ));
                }
                result.outcome = Some(outcome);
            }
        }
        Ok(result)
    }
}

/// The command line's [`Hooks`]: the same preview `tidegate plan` prints
/// (field-level changes, replace reasons, policy findings, order), then the
/// confirmation prompt unless `--yes`.
struct Preview<'a> {
    out: &'a mut dyn Write,
    owner: &'a str,
    prune: bool,
    yes: bool,
    saved: Option<&'a SavedCheck>,
}

impl Hooks for Preview<'_> {
    fn check_seen(
        &mut self,
        plan: &EnvPlan,
        desired: &[crate::resource::Desired],
        live: &observe::LiveState,
    ) -> Result<Option<String>, pipeline::Error> {
        let Some(s) = self.saved else {
            return Ok(None);
        };
        let seen = saved::seen(plan, desired, live, &s.key);
        let moved = saved::moved(&s.plan, &seen);
        Ok((!moved.is_empty()).then(|| saved::refusal(&s.path, &moved)))
    }

    fn planned(&mut self, env_plan: &EnvPlan) -> Result<(), pipeline::Error> {
        let color = std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let plan = crate::plan::Plan::new(crate::plan::PlanSource::Live, vec![env_plan.clone()]);
        let mut text = crate::plan::output::text(&plan, color);
        if !self.prune {
            text.push_str("prune is off: deletes above are not applied\n");
        }
        self.out
            .write_all(text.as_bytes())
            .map_err(|e| pipeline::Error::Hook(Box::new(e)))
    }

    fn confirm(&mut self, _plan: &EnvPlan, changes: usize) -> Result<bool, pipeline::Error> {
        if changes == 0 || self.yes {
            return Ok(true);
        }
        confirm(self.owner, changes).map_err(|e| pipeline::Error::Hook(Box::new(e)))
    }
}

pub(super) fn confirm(owner: &str, changes: usize) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::NotATerminal);
    }
    eprint!("apply {changes} change(s) to {owner}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(super::Error::from)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// Per-resource lines for everything that is not unchanged, then counts.
pub fn summary(outcome: &Outcome, out: &mut dyn Write) -> Result<()> {
    for r in &outcome.resources {
        if r.status == Status::Unchanged {
            continue;
        }
        let reason = if r.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", r.reason)
        };
        w(
            out,
            format_args!(
                "  {:<9} {} ({}, {:.1}s){reason}\n",
                r.status.as_str(),
                r.id,
                r.kind,
                r.duration.as_secs_f64()
            ),
        )?;
    }
    w(
        out,
        format_args!(
            "{}: {} in {:.1}s{}\n",
            outcome.owner,
            outcome.counts_line(),
            outcome.duration.as_secs_f64(),
            if outcome.stopped {
                " (stopped by signal)"
            } else {
                ""
            }
        ),
    )
}

/// Progress: bars per environment and module on a terminal, plain lines on
/// stderr otherwise.
struct Bars {
    owner: String,
    multi: Option<indicatif::MultiProgress>,
    env: Option<indicatif::ProgressBar>,
    modules: HashMap<String, indicatif::ProgressBar>,
}

impl Bars {
    fn new(model: &Model, env: &str, owner: &str) -> Bars {
        if !std::io::stderr().is_terminal() {
            return Bars {
                owner: owner.to_string(),
                multi: None,
                env: None,
                modules: HashMap::new(),
            };
        }
        let multi = indicatif::MultiProgress::new();
        let style = indicatif::ProgressStyle::with_template(
            "{prefix:>20} [{bar:30}] {pos}/{len} {wide_msg}",
        )
        .expect("a valid template")
        .progress_chars("=> ");
        let bar = multi.add(indicatif::ProgressBar::new(0));
        bar.set_style(style.clone());
        bar.set_prefix(owner.to_string());
        let mut modules = HashMap::new();
        if let Some(e) = model.environment(env) {
            for inst in &e.instances {
                let n = model
                    .module_of(inst)
                    .map(|m| m.resources.len())
                    .unwrap_or(0);
                let b = multi.add(indicatif::ProgressBar::new(n as u64));
                b.set_style(style.clone());
                b.set_prefix(format!("  {}", inst.name));
                modules.insert(inst.name.clone(), b);
            }
        }
        Bars {
            owner: owner.to_string(),
            multi: Some(multi),
            env: Some(bar),
            modules,
        }
    }

    fn event(&self, e: &Event) {
        match (e, &self.env) {
            (Event::Observed { total }, Some(bar)) => bar.set_length(*total as u64),
            (Event::Observed { total }, None) => {
                eprintln!("{}: {total} resources", self.owner)
            }
            (Event::Started { id }, Some(_)) => {
                if let Some(b) = self.modules.get(&id.module) {
                    b.set_message(format!("{}…", id.name));
                }
            }
            (Event::Started { .. }, None) => {}
            (Event::Finished(r), Some(bar)) => {
                bar.inc(1);
                if let Some(b) = self.modules.get(&r.id.module) {
                    b.inc(1);
                    b.set_message(format!("{} {}", r.id.name, r.status));
                }
            }
            (Event::Finished(r), None) => eprintln!(
                "{}: {} {} ({:.1}s){}",
                self.owner,
                r.id,
                r.status,
                r.duration.as_secs_f64(),
                if r.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", r.reason)
                }
            ),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.env {
            b.finish();
        }
        for b in self.modules.values() {
            b.finish();
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}
