//! `tidegate apply` and the pipeline `tidegate rebuild` shares with it:
//! load and check the repository, then per environment in order: gate,
//! secrets, policy, lock, preview, confirm, execute, record, release.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::execute::{self, EnvRun, Event, Outcome, Status, Stop};
use crate::graph::Graph;
use crate::load::Files;
use crate::model::Model;
use crate::observe::{self, Providers};
use crate::policy;
use crate::render::{self, RenderOptions, SecretLookup};
use crate::secrets::{self, Identities, IdentityOptions};
use crate::state::{self, EnvLock, RecordStore};

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
    let mode = Mode {
        rebuild: false,
        owner: None,
        prune: !args.no_prune,
        dry_run: false,
    };
    let (code, _) = run_pipeline(&args.common, &mode, out)?;
    Ok(code)
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
fn load_files(args: &CommonArgs) -> Result<(Files, String)> {
    match super::repo_snapshot(&args.repo, args.revision.as_deref())? {
        Some(snap) => Ok(((*snap.files).clone(), snap.commit)),
        None => {
            let files = super::read_repo(&args.repo)?;
            let commit = worktree_commit(&args.repo, &files);
            Ok((files, commit))
        }
    }
}

/// HEAD when the working tree is a clean Git checkout, else a content hash
/// (`worktree-<hash>`), so the gate compares like with like.
fn worktree_commit(repo: &Path, files: &Files) -> String {
    if let Some(head) = clean_head(repo) {
        return head;
    }
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (path, bytes) in files.iter() {
        h.update(path.as_bytes());
        h.update([0]);
        h.update(bytes);
    }
    let hex: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("worktree-{hex}")
}

/// HEAD of the Git checkout holding `repo`, when nothing tidegate reads
/// (environments/, modules/, secrets/, .sops.yaml) differs from it.
fn clean_head(repo: &Path) -> Option<String> {
    let r = git2::Repository::discover(repo).ok()?;
    let workdir = r.workdir()?.canonicalize().ok()?;
    let rel = repo.canonicalize().ok()?;
    let rel = rel.strip_prefix(&workdir).ok()?;
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true).recurse_untracked_dirs(true);
    for p in ["environments", "modules", "secrets", ".sops.yaml"] {
        let spec = rel.join(p);
        opts.pathspec(spec.to_string_lossy().as_ref());
    }
    let statuses = r.statuses(Some(&mut opts)).ok()?;
    if !statuses.is_empty() {
        return None;
    }
    let head = r.head().ok()?.peel_to_commit().ok()?.id().to_string();
    Some(head)
}

/// The shared pipeline of `apply` and `rebuild`: exit code and the result
/// of each environment reached.
pub fn run_pipeline(
    args: &CommonArgs,
    mode: &Mode,
    out: &mut dyn Write,
) -> Result<(u8, Vec<EnvResult>)> {
    let (files, commit) = load_files(args)?;
    let checked = match super::check(&files) {
        Ok(c) => c,
        Err(report) => {
            for d in &report.0 {
                writeln!(out, "{d}").map_err(super::Error::from)?;
            }
            writeln!(out, "invalid: {} error(s); nothing applied", report.0.len())
                .map_err(super::Error::from)?;
            return Ok((1, Vec::new()));
        }
    };
    let envs: Vec<String> = match (&args.env, args.all) {
        (Some(e), _) => {
            if checked.model.environment(e).is_none() {
                let names: Vec<&str> = checked.graph.environments();
                return Err(super::Error::Usage(format!(
                    "--env {e}: no such environment; the repository has {}",
                    names.join(", ")
                ))
                .into());
            }
            vec![e.clone()]
        }
        (None, true) => checked
            .model
            .environments
            .iter()
            .map(|e| e.name.clone())
            .collect(),
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
    let refusals = signature_refusals(args, &checked.model, &envs, &commit)?;
    let identities = Identities::from_env(&args.identities)?;
    let rt = tokio::runtime::Runtime::new().map_err(Error::Runtime)?;
    let ctx = Ctx {
        refusals: &refusals,
        model: &checked.model,
        graph: &checked.graph,
        files: &files,
        identities: &identities,
        commit: &commit,
        args,
        mode,
    };
    rt.block_on(async {
        let signals = Signals::install();
        let mut results = Vec::new();
        let mut code = 0;
        writeln!(out, "commit {commit}").map_err(super::Error::from)?;
        for env in &envs {
            let r = ctx.env(env, &signals.stop, out).await?;
            let bad = r.held.is_some();
            results.push(r);
            if let Some(c) = signals.exit_code() {
                return Ok((c, results));
            }
            if bad {
                code = 1;
                let later: Vec<&str> = envs
                    .iter()
                    .skip_while(|e| *e != env)
                    .skip(1)
                    .map(String::as_str)
                    .collect();
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
    model: &Model,
    envs: &[String],
    commit: &str,
) -> Result<HashMap<String, String>> {
    let strict: Vec<_> = envs
        .iter()
        .filter_map(|e| model.environment(e))
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
            out.insert(e.name.clone(), why);
        }
        return Ok(out);
    }
    let repo = super::RepoArg::parse(&args.repo)?;
    let verdict = crate::source::verify_in_repo(repo.path(), commit, &trust)?;
    for e in strict {
        if let Some(why) = super::signature_refusal(e, commit, &verdict, &trust) {
            out.insert(e.name.clone(), why);
        }
    }
    Ok(out)
}

struct Ctx<'a> {
    /// Environments the commit may not be applied to (signature), with why.
    refusals: &'a HashMap<String, String>,
    model: &'a Model,
    graph: &'a Graph,
    files: &'a Files,
    identities: &'a Identities,
    commit: &'a str,
    args: &'a CommonArgs,
    mode: &'a Mode,
}

fn w(out: &mut dyn Write, s: std::fmt::Arguments<'_>) -> Result<()> {
    out.write_fmt(s).map_err(super::Error::from)?;
    Ok(())
}

impl Ctx<'_> {
    async fn env(&self, name: &str, stop: &Stop, out: &mut dyn Write) -> Result<EnvResult> {
        let environment = self.model.environment(name).expect("checked above");
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
            let records = state::load_predecessors(self.model, name, &self.args.state_dir).await?;
            if let Err(held) = state::gate(self.model, name, self.commit, &records) {
                w(out, format_args!("{held}\n"))?;
                result.held = Some(held.to_string());
                return Ok(result);
            }
        }
        if let Some(why) = self.refusals.get(name) {
            w(out, format_args!("{why}\n"))?;
            result.held = Some(why.clone());
            return Ok(result);
        }
        let decrypted = secrets::load_env(environment, self.files, self.identities)?;
        if let Some(why) = self.policy_gate(name, &decrypted, out)? {
            result.held = Some(why);
            return Ok(result);
        }
        let lock = EnvLock::acquire(
            environment.kubernetes.as_ref(),
            &self.args.state_dir,
            &state::scoped(&environment.project, &owner),
            &state::this_process(),
        )
        .await?;
        let ran = self
            .locked(name, &owner, &decrypted, stop, &mut result, out)
            .await;
        lock.release().await?;
        ran?;
        Ok(result)
    }

    /// Error-severity policy findings stop the environment before anything
    /// is applied; returns why.
    fn policy_gate(
        &self,
        name: &str,
        secrets: &(dyn SecretLookup + Sync),
        out: &mut dyn Write,
    ) -> Result<Option<String>> {
        let known = HashMap::new();
        let opts = RenderOptions {
            known: &known,
            secrets,
            owner: self.mode.owner.as_deref(),
        };
        let desired = render::render_env(self.model, name, opts)?;
        match policy::evaluate_env(self.model, name, &desired, policy::Date::today_utc()) {
            Err(errors) => {
                for e in &errors {
                    w(out, format_args!("{e}\n"))?;
                }
                Ok(Some(format!("{} invalid policy setting(s)", errors.len())))
            }
            Ok(report) if report.blocks_apply() => {
                for f in report
                    .findings
                    .iter()
                    .filter(|f| f.severity == policy::Severity::Error)
                {
                    w(
                        out,
                        format_args!(
                            "{}: {} [{}] {}\n    fix: {}\n",
                            f.origin,
                            f.resource,
                            f.check.as_str(),
                            f.message,
                            f.fix
                        ),
                    )?;
                }
                let why = format!(
                    "blocked by {} policy finding(s) of severity error; nothing applied",
                    report.errors()
                );
                w(out, format_args!("{why}\n"))?;
                Ok(Some(why))
            }
            Ok(_) => Ok(None),
        }
    }

    async fn locked(
        &self,
        name: &str,
        owner: &str,
        decrypted: &(dyn SecretLookup + Sync),
        stop: &Stop,
        result: &mut EnvResult,
        out: &mut dyn Write,
    ) -> Result<()> {
        let environment = self.model.environment(name).expect("checked above");
        let t0 = Instant::now();
        let kinds = observe::scopes_of(self.graph, name);
        let providers =
            Providers::connect(&environment.target(Some(owner)), kinds.keys().copied()).await?;
        let (changes, guards) = preview(self, name, &providers, decrypted, out).await?;
        if self.mode.dry_run {
            return Ok(());
        }
        let tripped: Vec<&crate::plan::GuardTrip> = guards
            .iter()
            .filter(|g| match g.guard {
                crate::plan::Guard::MassDelete => !self.args.allow_mass_delete,
                crate::plan::Guard::Protected => !self.args.allow_destroy,
            })
            .collect();
        if !tripped.is_empty() {
            for g in &tripped {
                w(out, format_args!("stopped by guard {g}\n"))?;
            }
            w(out, format_args!("{owner}: nothing applied\n"))?;
            let labels: Vec<&str> = tripped.iter().map(|g| g.guard.label()).collect();
            result.held = Some(format!("guard {}", labels.join(", ")));
            return Ok(());
        }
        if changes > 0 && !self.args.yes && !confirm(owner, changes)? {
            w(out, format_args!("{owner}: not applied\n"))?;
            result.held = Some("not confirmed".into());
            return Ok(());
        }
        let progress = Bars::new(self.model, name, owner);
        let cb = |e: &Event| progress.event(e);
        let run = EnvRun {
            model: self.model,
            graph: self.graph,
            env: name,
            owner: self.mode.owner.as_deref(),
            providers: &providers,
            // Re-observed: the user may have waited at the prompt.
            observed: None,
            secrets: decrypted,
            options: execute::Options {
                parallelism: self.args.parallelism.max(1),
                prune: self.mode.prune,
                wait_healthy: true,
                health_timeout: Duration::from_secs(self.args.health_timeout),
                ..execute::Options::default()
            },
            progress: Some(&cb),
            stop: Some(stop),
        };
        let outcome = execute::run_env(&run).await?;
        result.wall = t0.elapsed();
        result.critical_path = outcome.critical_path(self.graph, name);
        progress.finish();
        summary(&outcome, out)?;
        let record = crate::pipeline::record_of(&outcome, self.commit);
        let store = RecordStore::for_target(
            environment.kubernetes.as_ref(),
            &self.args.state_dir,
            &environment.project,
        )
        .await?;
        let previous = store.load_exact(owner).await.ok().flatten();
        if previous.is_none_or(|p| !p.same_state(&record)) {
            store.save(&record).await?;
        }
        if !outcome.converged() {
            result.held = Some(format!(
                "{owner} did not converge: {}",
                outcome.counts_line()
            ));
        }
        result.outcome = Some(outcome);
        Ok(())
    }
}

/// What will change: the same preview `tidegate plan` prints (field-level
/// changes, replace reasons, policy findings, order), from the providers
/// connected for this apply. Returns how many resources change.
async fn preview(
    ctx: &Ctx<'_>,
    name: &str,
    providers: &Providers,
    secrets: &(dyn SecretLookup + Sync),
    out: &mut dyn Write,
) -> Result<(usize, Vec<crate::plan::GuardTrip>)> {
    let mut env_plan = crate::plan::plan_env(
        ctx.model,
        ctx.graph,
        name,
        providers,
        secrets,
        ctx.mode.owner.as_deref(),
        ctx.args.parallelism.max(1),
    )
    .await?;
    let mut changes = env_plan.counts.changes();
    if !ctx.mode.prune {
        changes -= env_plan.counts.delete;
        // Nothing is deleted: the mass-delete guard cannot trip.
        env_plan
            .guards
            .retain(|g| g.guard != crate::plan::Guard::MassDelete);
    }
    let guards = env_plan.guards.clone();
    let color = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let plan = crate::plan::Plan::new(crate::plan::PlanSource::Live, vec![env_plan]);
    w(
        out,
        format_args!("{}", crate::plan::render::text(&plan, color)),
    )?;
    if !ctx.mode.prune {
        w(
            out,
            format_args!("prune is off: deletes above are not applied\n"),
        )?;
    }
    Ok((changes, guards))
}

fn confirm(owner: &str, changes: usize) -> Result<bool> {
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
