//! `tidegate plan`: the preview of what apply would do, against the live
//! state (default), nothing (`--offline`) or another revision
//! (`--base REF --head REF`), as text, Markdown parts or JSON.
//!
//! Exit codes follow `terraform plan -detailed-exitcode`: 0 no changes,
//! 2 changes, 1 error.

use std::io::Write;
use std::path::PathBuf;

use crate::load::Files;
use crate::model::Model;
use crate::plan::saved::{self, PlanKey, SavedPlan};
use crate::plan::{self, output, EnvPlan, Plan, PlanSource, Revision, Side};
use crate::policy::Date;
use crate::render::{SecretLookup, StructuralSecrets};
use crate::secrets::{self, Identities, IdentityOptions};
use crate::source;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Text for a terminal (coloured on a TTY unless NO_COLOR is set).
    Text,
    /// Markdown for a pull-request comment, in parts under 65,535 characters.
    Markdown,
    /// JSON (schema: docs/plan-json.md, `schemaVersion: 1`).
    Json,
}

/// When to colour text output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Color {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    Always,
    Never,
}

/// `tidegate plan ...`
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// The repository (holding environments/, modules/, secrets/): a
    /// folder, or a file:// URL of a local Git repository (read at
    /// --revision, default HEAD); with --base/--head, the Git repository
    /// whose revisions are compared.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Only these environments (repeatable; default: all, in promotion order).
    #[arg(long = "env", value_name = "ENV")]
    pub envs: Vec<String>,
    /// Plan this Git revision (any revision git accepts: HEAD, main~1, a
    /// tag, a commit id) of the repository instead of its working tree.
    #[arg(long, conflicts_with_all = ["base", "head"])]
    pub revision: Option<String>,
    /// Compare with nothing: everything is a create; no credentials needed.
    #[arg(long, conflicts_with_all = ["base", "head"])]
    pub offline: bool,
    /// Compare the desired state of this revision (branch, tag, commit)...
    #[arg(long, requires = "head", value_name = "REF")]
    pub base: Option<String>,
    /// ...with this one; no credentials needed (pull requests from forks).
    #[arg(long, requires = "base", value_name = "REF")]
    pub head: Option<String>,
    /// Ignored: --base/--head are read straight from the repository's
    /// object store. Kept so that existing CI scripts still run.
    #[arg(long, value_name = "DIR", hide = true)]
    pub cache_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[arg(long, value_enum, default_value = "auto")]
    pub color: Color,
    /// Write Markdown parts to DIR/part-1.md, part-2.md, ... (and print
    /// their paths) instead of printing them.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Also save the plan of the one --env to FILE, authenticated with
    /// --plan-key, for `tidegate apply FILE` to apply exactly (refused if
    /// anything it saw moves in between). Live plans only.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["offline", "base", "head"])]
    pub out: Option<PathBuf>,
    /// The key that authenticates the saved plan (--out); apply needs the
    /// same one. At least 32 bytes: `openssl rand -hex 32 > plan.key`.
    #[arg(long, value_name = "FILE", env = crate::plan::saved::KEY_ENV)]
    pub plan_key: Option<PathBuf>,
    /// Plan only this resource (`network.vpc`) or module instance
    /// (`module.network`) and what it depends on (repeatable; one --env).
    /// The plan lists the changes it leaves out and never deletes.
    #[arg(long = "target", value_name = "RESOURCE_ID", conflicts_with_all = ["base", "head"])]
    pub targets: Vec<String>,
    /// Send the finished plan as a `plan.ready` notification to the
    /// targets of this `kind: Notifications` file (docs/notifications.md):
    /// with --pull-request, GitHub and GitLab targets post the Markdown as a
    /// pull (merge) request comment, updated in place on the next run, and
    /// set a commit status on the planned commit.
    #[arg(long, value_name = "FILE")]
    pub notify: Option<PathBuf>,
    /// The pull request (GitHub) or merge request IID (GitLab) the plan
    /// previews (with --notify).
    #[arg(long, value_name = "NUMBER", requires = "notify")]
    pub pull_request: Option<u64>,
    /// The commit the plan's status is set on (with --notify; default: the
    /// --head commit, else the planned commit).
    #[arg(long, value_name = "SHA", requires = "notify")]
    pub head_sha: Option<String>,
    /// Longest wait for the notifications to go out, retries included.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration, requires = "notify")]
    pub notify_timeout: std::time::Duration,
    /// Provider predictions (dry-runs) in flight at once per environment.
    #[arg(long, default_value_t = plan::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    #[command(flatten)]
    pub identities: IdentityOptions,
}

/// Runs `tidegate plan`; `tty` says whether `out` is a terminal.
pub fn run(
    args: &PlanArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
    tty: bool,
) -> super::Result<u8> {
    // Read (and its secrets checked) before planning: a broken file stops
    // the command before any work.
    let notify = match &args.notify {
        Some(path) => Some(notify_config(args, path)?),
        None => None,
    };
    if let Some(path) = &args.out {
        return save(args, path, out, err, tty, notify.as_ref());
    }
    let mut report: Vec<u8> = Vec::new();
    let built = build(args, &mut report)?;
    err.write_all(&report)?;
    let plan = match built {
        Some(p) => p,
        None => {
            if let Some(config) = &notify {
                // The pull request learns why there is no plan.
                let text = String::from_utf8_lossy(&report);
                send_invalid(args, config, &text, err)?;
            }
            return Ok(1);
        }
    };
    write(args, &plan, out, tty)?;
    if let Some(config) = &notify {
        send_ready(args, config, &plan, None, err)?;
    }
    Ok(if plan.has_changes() { 2 } else { 0 })
}

/// The `--notify` file, read, its SOPS values decrypted and every secret
/// reference checked.
fn notify_config(args: &PlanArgs, path: &std::path::Path) -> super::Result<crate::notify::Config> {
    let mut config = crate::notify::Config::read(path)?;
    if config.has_sops() {
        config.decrypt_sops(&Identities::from_env(&args.identities)?)?;
    }
    config.check_secrets()?;
    Ok(config)
}

/// What each target made of the notification.
#[derive(Default)]
struct Results(std::sync::Mutex<Vec<(String, String)>>);

impl crate::notify::Observer for Results {
    fn count(&self, target: &str, _event: &str, result: &str) {
        if let Ok(mut r) = self.0.lock() {
            r.push((target.to_string(), result.to_string()));
        }
    }
    fn queued(&self, _: &str, _: usize) {}
}

/// What a `plan.ready` says, before it is sent.
struct Ready {
    /// `changes`, `no-changes`, `policy` (blocked) or `invalid`.
    reason: &'static str,
    summary: String,
    markdown: Vec<String>,
    counts: Option<crate::notify::Counts>,
    /// The one environment planned (`--env`), if one.
    environment: Option<String>,
    commit: String,
}

/// Sends `plan` as a `plan.ready` event (see [`deliver`]). `commit`: the
/// planned commit, when known.
fn send_ready(
    args: &PlanArgs,
    config: &crate::notify::Config,
    plan: &Plan,
    commit: Option<&str>,
    err: &mut dyn Write,
) -> super::Result<()> {
    let commit = match (&args.head_sha, &plan.source, commit) {
        (Some(sha), _, _) => sha.clone(),
        (None, PlanSource::Revisions { head, .. }, _) => head.commit.clone(),
        (None, _, Some(c)) => c.to_string(),
        (None, _, None) => super::load_commit(&args.repo, args.revision.as_deref())?.commit,
    };
    let t = output::total(plan);
    let names: Vec<&str> = plan.environments.iter().map(|e| e.name.as_str()).collect();
    let summary = format!(
        "{} to create, {} to update, {} to replace, {} to delete, {} unchanged ({})",
        t.create,
        t.update,
        t.replace,
        t.delete,
        t.no_op,
        names.join(", ")
    );
    let reason = if plan.policy_blocks() {
        crate::notify::target::PLAN_BLOCKED
    } else if plan.has_changes() {
        "changes"
    } else {
        "no-changes"
    };
    let environment = match plan.environments.as_slice() {
        [e] if !args.envs.is_empty() => Some(e.name.clone()),
        _ => None,
    };
    let ready = Ready {
        reason,
        summary,
        markdown: output::markdown(plan),
        counts: Some(crate::notify::Counts {
            create: t.create,
            update: t.update + t.replace,
            delete: t.delete,
            unchanged: t.no_op,
        }),
        environment,
        commit,
    };
    deliver(args, config, ready, err)
}

/// Sends a `plan.ready` of a repository that could not be planned
/// (`reason: invalid`, a failed commit status) with its problems.
fn send_invalid(
    args: &PlanArgs,
    config: &crate::notify::Config,
    report: &str,
    err: &mut dyn Write,
) -> super::Result<()> {
    let commit = match (&args.head_sha, &args.head) {
        (Some(sha), _) => sha.clone(),
        (None, Some(head)) => {
            let repo = super::RepoArg::parse(&args.repo)?;
            source::read_local(repo.path(), head)?.commit
        }
        (None, None) => super::load_commit(&args.repo, args.revision.as_deref())?.commit,
    };
    let problems = output::truncate_report(report);
    let markdown = vec![format!(
        "## tidegate plan\n\n❌ The repository has problems; nothing was planned.\n\n```text\n{problems}\n```\n"
    )];
    let first = report.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let ready = Ready {
        reason: crate::notify::target::PLAN_INVALID,
        summary: format!("the repository has problems: {first}"),
        markdown,
        counts: None,
        environment: match args.envs.as_slice() {
            [e] => Some(e.clone()),
            _ => None,
        },
        commit,
    };
    deliver(args, config, ready, err)
}

/// Sends `ready` to the targets of `config` and waits (at most
/// `--notify-timeout`, retries included) for each to take it; prints each
/// target's result on `err`. A target that failed is a warning, not a
/// failed plan.
fn deliver(
    args: &PlanArgs,
    config: &crate::notify::Config,
    ready: Ready,
    err: &mut dyn Write,
) -> super::Result<()> {
    use crate::notify::{Event, Kind, Notifier, Origin};
    let subject = crate::state::history::Subject::cli();
    let origin = Origin {
        remote: crate::source::redact_url(&args.repo.display().to_string()),
        branch: args
            .head
            .clone()
            .or_else(|| args.revision.clone())
            .unwrap_or_default(),
        identity: Some(match &subject.host {
            Some(host) => format!("cli:{}@{host}", subject.name),
            None => format!("cli:{}", subject.name),
        }),
        status_url: None,
    };
    let results = std::sync::Arc::new(Results::default());
    runtime()?.block_on(async {
        let notifier = Notifier::start(config, origin, results.clone())?;
        let mut event = Event::new(Kind::PlanReady, &notifier.origin())
            .reason(ready.reason, &ready.summary)
            .plan(args.pull_request, ready.markdown);
        event.commit = Some(ready.commit);
        event.environment = ready.environment;
        event.changes = ready.counts;
        notifier.notify(event);
        notifier.shutdown(args.notify_timeout).await;
        Ok::<_, super::Error>(())
    })?;
    let got = results.0.lock().map(|r| r.clone()).unwrap_or_default();
    for target in &config.targets {
        let result: Vec<&str> = got
            .iter()
            .filter(|(t, _)| *t == target.name)
            .map(|(_, r)| r.as_str())
            .collect();
        let shown = if result.is_empty() {
            "not sent (its filter or kind does not take plan.ready)".to_string()
        } else {
            result.join(", ")
        };
        writeln!(err, "notify {}: plan.ready {shown}", target.name)?;
    }
    Ok(())
}

/// Writes `plan` in the requested format.
pub fn write(args: &PlanArgs, plan: &Plan, out: &mut dyn Write, tty: bool) -> super::Result<()> {
    match args.format {
        Format::Json => out.write_all(output::json(plan).as_bytes())?,
        Format::Text => {
            let color = match args.color {
                Color::Always => true,
                Color::Never => false,
                Color::Auto => tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            };
            out.write_all(output::text(plan, color).as_bytes())?;
        }
        Format::Markdown => {
            let parts = output::markdown(plan);
            match &args.out_dir {
                Some(dir) => {
                    std::fs::create_dir_all(dir)?;
                    for (i, part) in parts.iter().enumerate() {
                        let path = dir.join(format!("part-{}.md", i + 1));
                        std::fs::write(&path, part)?;
                        writeln!(out, "{}", path.display())?;
                    }
                }
                None => {
                    for (i, part) in parts.iter().enumerate() {
                        if i > 0 {
                            out.write_all(b"\n<!-- tidegate plan: next part -->\n\n")?;
                        }
                        out.write_all(part.as_bytes())?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Builds the plan; `None` when the repository has problems (reported on
/// `err`).
pub fn build(args: &PlanArgs, err: &mut dyn Write) -> super::Result<Option<Plan>> {
    if !args.targets.is_empty() && args.envs.len() != 1 {
        return Err(super::Error::Usage(
            "--target names resources of one environment: give exactly one --env ENV".into(),
        ));
    }
    if let (Some(base), Some(head)) = (&args.base, &args.head) {
        return revisions(args, base, head, err);
    }
    let files = super::read_repo_at(&args.repo, args.revision.as_deref())?;
    let checked = match super::check(&files) {
        Ok(c) => c,
        Err(report) => {
            writeln!(err, "{report}")?;
            return Ok(None);
        }
    };
    for w in &checked.warnings {
        writeln!(err, "{w}")?;
    }
    let envs = selected(args, &checked.model, None)?;
    let (model, graph) = (&checked.model, &checked.graph);
    if args.offline {
        // Ciphertexts, never decrypted: what the files keep in plaintext
        // (`_unencrypted`) shows as it is, as it would with the key.
        let secrets = plan::secrets::CiphertextSecrets::new(&files);
        let mut envs = envs
            .iter()
            .map(|e| plan::build_env(model, graph, e, None, &secrets, None))
            .collect::<Result<Vec<EnvPlan>, _>>()?;
        for p in &mut envs {
            restrict(args, model, graph, p, 0)?;
        }
        return Ok(Some(Plan::new(PlanSource::Offline, envs)));
    }
    let ids = Identities::from_env(&args.identities)?;
    let rt = runtime()?;
    let mut out = Vec::new();
    for e in &envs {
        let environment = model.environment(e).expect("selected environments exist");
        let decrypted = secrets::load_env(environment, &files, &ids)?;
        let (mut p, existing) = rt.block_on(live_env(
            model,
            graph,
            environment,
            &decrypted,
            args.concurrency,
        ))?;
        restrict(args, model, graph, &mut p, existing)?;
        out.push(p);
    }
    Ok(Some(Plan::new(PlanSource::Live, out)))
}

/// `plan --env ENV --out FILE`: the live plan of one environment, printed
/// as usual and saved (crate::plan::saved) at the commit `apply` would read.
fn save(
    args: &PlanArgs,
    path: &std::path::Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
    tty: bool,
    notify: Option<&crate::notify::Config>,
) -> super::Result<u8> {
    let [env] = args.envs.as_slice() else {
        return Err(super::Error::Usage(
            "--out saves the plan of one environment: name it with --env ENV".into(),
        ));
    };
    let key = PlanKey::load(args.plan_key.as_deref())?;
    let loaded = super::load_commit(&args.repo, args.revision.as_deref())?;
    let checked = match super::check(&loaded.files) {
        Ok(c) => c,
        Err(report) => {
            writeln!(err, "{report}")?;
            return Ok(1);
        }
    };
    for w in &checked.warnings {
        writeln!(err, "{w}")?;
    }
    let (model, graph) = (&checked.model, &checked.graph);
    let envs = selected(args, model, None)?;
    let environment = model
        .environment(&envs[0])
        .expect("selected environments exist");
    let ids = Identities::from_env(&args.identities)?;
    let decrypted = secrets::load_env(environment, &loaded.files, &ids)?;
    let (env_plan, live, desired) = runtime()?.block_on(async {
        let kinds = crate::observe::scopes_of(graph, env);
        let providers =
            crate::observe::Providers::connect(&environment.target(None), kinds.keys().copied())
                .await
                .map_err(plan::Error::from)?;
        let input = plan::PlanInput {
            concurrency: args.concurrency,
            ..plan::PlanInput::new(model, graph, environment, &providers, &decrypted)
        };
        plan::plan_env_seen(&input).await
    })?;
    let mut env_plan = env_plan;
    restrict(args, model, graph, &mut env_plan, live.resources.len())?;
    let seen = saved::seen(&env_plan, &desired, &live, &key);
    drop(desired);
    let worktree = matches!(super::RepoArg::parse(&args.repo)?, super::RepoArg::Dir(_))
        && args.revision.is_none();
    let source = if worktree {
        saved::Source::Worktree
    } else {
        saved::Source::Revision {
            reference: args.revision.clone().unwrap_or_else(|| "HEAD".into()),
        }
    };
    let file = SavedPlan::new(&loaded.commit, source, &env_plan, seen, &key);
    file.write(path, &key)?;
    let plan = Plan::new(PlanSource::Live, vec![env_plan]);
    write(args, &plan, out, tty)?;
    writeln!(
        err,
        "saved the plan of {env} at {} ({} change(s)) to {}; apply it with `tidegate apply {}`",
        loaded.commit,
        file.changes.len(),
        path.display(),
        path.display()
    )?;
    if let Some(config) = notify {
        send_ready(args, config, &plan, Some(&loaded.commit), err)?;
    }
    Ok(if plan.has_changes() { 2 } else { 0 })
}

async fn live_env(
    model: &Model,
    graph: &crate::graph::Graph,
    environment: &crate::model::Environment,
    secrets: &secrets::Decrypted,
    concurrency: usize,
) -> Result<(EnvPlan, usize), plan::Error> {
    let kinds = crate::observe::scopes_of(graph, &environment.name);
    let providers =
        crate::observe::Providers::connect(&environment.target(None), kinds.keys().copied())
            .await?;
    let input = plan::PlanInput {
        concurrency,
        ..plan::PlanInput::new(model, graph, environment, &providers, secrets)
    };
    let (plan, live) = plan::plan_env_live(&input).await?;
    Ok((plan, live.resources.len()))
}

/// `--target`: cuts the plan of the one environment down to the targets
/// and what they depend on (`existing`: live resources before it).
fn restrict(
    args: &PlanArgs,
    model: &Model,
    graph: &crate::graph::Graph,
    env_plan: &mut EnvPlan,
    existing: usize,
) -> super::Result<()> {
    if args.targets.is_empty() {
        return Ok(());
    }
    let environment = model
        .environment(&env_plan.name)
        .expect("planned environments exist");
    let groups = plan::target::Groups::of(model, &env_plan.name);
    let scope = plan::target::scope(graph, &groups, &env_plan.name, &args.targets)
        .map_err(|e| super::Error::Usage(e.to_string()))?;
    plan::target::restrict(env_plan, environment, existing, &args.targets, &scope);
    Ok(())
}

fn runtime() -> super::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The environments to plan: `--env` (checked) or all, in promotion order.
fn selected(args: &PlanArgs, model: &Model, other: Option<&Model>) -> super::Result<Vec<String>> {
    let all = match other {
        Some(base) => plan::revision_environments(base, model),
        None => model.environments.iter().map(|e| e.name.clone()).collect(),
    };
    if args.envs.is_empty() {
        return Ok(all);
    }
    for e in &args.envs {
        if !all.contains(e) {
            return Err(super::Error::Usage(format!(
                "unknown environment `{e}` (environments: {})",
                all.join(", ")
            )));
        }
    }
    Ok(all.into_iter().filter(|e| args.envs.contains(e)).collect())
}

fn revisions(
    args: &PlanArgs,
    base: &str,
    head: &str,
    err: &mut dyn Write,
) -> super::Result<Option<Plan>> {
    let repo = super::RepoArg::parse(&args.repo)?;
    let (b, h) = source::read_local_pair(repo.path(), base, head)?;
    let checked = |name: &str, files: &Files, err: &mut dyn Write| -> super::Result<_> {
        match super::check(files) {
            Ok(c) => Ok(Some(c)),
            Err(report) => {
                writeln!(err, "{name}: {report}")?;
                Ok(None)
            }
        }
    };
    let (Some(bc), Some(hc)) = (
        checked(&format!("base {base}"), &b.files, err)?,
        checked(&format!("head {head}"), &h.files, err)?,
    ) else {
        return Ok(None);
    };
    let envs = selected(args, &hc.model, Some(&bc.model))?;
    let ids = Identities::from_env(&args.identities)?;
    let today = Date::today_utc();
    let mut out = Vec::new();
    for e in &envs {
        let (bs, bnote) = revision_secrets(&bc.model, e, &b.files, &ids);
        let (hs, hnote) = revision_secrets(&hc.model, e, &h.files, &ids);
        let base_side = Side {
            model: &bc.model,
            graph: &bc.graph,
            secrets: bs.as_ref(),
        };
        let head_side = Side {
            model: &hc.model,
            graph: &hc.graph,
            secrets: hs.as_ref(),
        };
        let mut p = plan::build_revisions(&base_side, &head_side, e, today)?;
        if let Some(n) = bnote.or(hnote) {
            p.notes.push(n);
        }
        out.push(p);
    }
    let source = PlanSource::Revisions {
        base: Revision {
            reference: base.to_string(),
            commit: b.commit.clone(),
        },
        head: Revision {
            reference: head.to_string(),
            commit: h.commit.clone(),
        },
    };
    Ok(Some(Plan::new(source, out)))
}

/// Decrypted secrets of `env` when a key opens them, else ciphertexts
/// (with a note saying so).
fn revision_secrets(
    model: &Model,
    env: &str,
    files: &Files,
    ids: &Identities,
) -> (Box<dyn SecretLookup>, Option<String>) {
    let Some(environment) = model.environment(env) else {
        return (Box::new(StructuralSecrets), None);
    };
    if environment.secret_files.is_empty() {
        return (Box::new(StructuralSecrets), None);
    }
    if !ids.is_empty() {
        if let Ok(d) = secrets::load_env(environment, files, ids) {
            return (Box::new(d), None);
        }
    }
    (
        Box::new(plan::secrets::CiphertextSecrets::new(files)),
        Some(
            "secrets not decrypted (no key for them): a secret is shown as changed when its ciphertext changed"
                .into(),
        ),
    )
}
