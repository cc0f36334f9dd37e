//! The `tidegate` command line: a flat match over modes.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tidegate::cli;

/// GitOps reconciler for Kubernetes and AWS EC2: Git → dev → staging → test → prod.
#[derive(Parser, Debug)]
#[command(name = "tidegate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse, resolve, graph and check every environment (no keys, no network).
    /// Exit 0 when clean, 1 with every problem listed.
    Validate {
        /// The repository (holding environments/, modules/, secrets/): a
        /// folder, or a file:// URL of a local Git repository (read at
        /// --revision, default HEAD).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Validate this Git revision (any revision git accepts: HEAD,
        /// main~1, a tag, a commit id) instead of the working tree.
        #[arg(long)]
        revision: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: cli::validate::Format,
    },
    /// Print the dependency graph as Graphviz DOT, Mermaid, or the apply order as text.
    Graph {
        /// The repository (holding environments/, modules/, secrets/): a
        /// folder, or a file:// URL of a local Git repository (read at
        /// --revision, default HEAD).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Graph this Git revision (any revision git accepts: HEAD, main~1,
        /// a tag, a commit id) instead of the working tree.
        #[arg(long)]
        revision: Option<String>,
        /// Only this environment.
        #[arg(long)]
        env: Option<String>,
        #[arg(long, value_enum, default_value = "dot")]
        format: cli::graph::Format,
    },
    /// Approve one commit for an environment with `promotion.mode: manual`.
    Approve(cli::promote::ApproveArgs),
    /// Freeze an environment (a change freeze): nothing is applied or
    /// healed there until `tidegate release`.
    Hold(cli::promote::ControlArgs),
    /// End a hold and a rollback pin.
    Release(cli::promote::ControlArgs),
    /// Pin an environment to an earlier commit it had applied; the
    /// reconciler applies it and keeps it there until `tidegate release`.
    Rollback(cli::promote::RollbackArgs),
    /// Preview what apply would do: against the live state (default),
    /// nothing (--offline) or another revision (--base/--head).
    /// Exit 0 no changes, 2 changes, 1 error.
    Plan(cli::plan::PlanArgs),
    /// Encrypt, decrypt or re-key SOPS secret files (age recipients).
    Secrets(tidegate::secrets::cli::SecretsArgs),
    /// Apply one environment (--env) or all in order (--all): preview, ask,
    /// apply in dependency order, prune, record. Exit 0 converged, 1 not,
    /// 130/143 when stopped by SIGINT/SIGTERM.
    Apply(cli::apply::ApplyArgs),
    /// Disaster recovery: rebuild an environment from Git onto empty targets
    /// (or a blue/green copy with --as NAME) and report the measured RTO.
    Rebuild(cli::rebuild::RebuildArgs),
    /// Short-lived copies of an environment: `preview up --from ENV --name
    /// NAME`, `preview down NAME`, `preview list`, `preview sweep`.
    Preview(cli::preview::PreviewArgs),
    /// Run the in-cluster reconciler: poll Git (and accept push webhooks),
    /// walk environments through their gates, serve probes, metrics and a
    /// status page; exit 0 after SIGTERM.
    Reconcile(Box<cli::reconcile::ReconcileArgs>),
    /// The audit history: every apply, rebuild, prune, drift heal and
    /// control of one environment (or all, merged by time), as text, JSON
    /// or JSON lines (for a SIEM).
    History(cli::history::HistoryArgs),
    /// Adopt an object that exists without tidegate's marks (EC2 by id,
    /// Kubernetes by name) as a resource Git declares: show the
    /// difference, and with --yes stamp the ownership marks, recreating
    /// nothing.
    Import(cli::import::ImportArgs),
    /// Blue/green cutover: move the environment's traffic entry points to a
    /// `rebuild --as` copy after its health gate (--to COPY, optionally in
    /// --steps), back in one step (--back), or show them (--status).
    /// Exit 0 switched, 1 refused, 3 fell back.
    Switch(cli::switch::SwitchArgs),
}

fn main() -> ExitCode {
    // First, while the process has one thread: no variable may make a
    // library log request bodies (they carry secrets).
    cli::logs::scrub_process_env();
    match run(Cli::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", once(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated, each said once: many messages
/// already end with their cause's text, which `{:#}` would print again.
fn once(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !text.is_empty() && !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// Logs of the one-shot commands go to stderr, filtered by `RUST_LOG`
/// (warnings only by default, body-printing libraries capped: see
/// `cli::logs`); `reconcile` sets up its own (text or JSON).
fn init_cli_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(cli::logs::filter("warn"))
        .with_writer(std::io::stderr)
        .try_init();
    cli::logs::warn_scrubbed();
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    if !matches!(cli.command, Command::Reconcile(_)) {
        init_cli_logs();
    }
    let mut out = std::io::stdout().lock();
    let result = match cli.command {
        Command::Validate {
            repo,
            revision,
            format,
        } => cli::validate::run(&repo, revision.as_deref(), format, &mut out),
        Command::Graph {
            repo,
            revision,
            env,
            format,
        } => {
            let mut err = std::io::stderr();
            cli::graph::run(
                &repo,
                revision.as_deref(),
                env.as_deref(),
                format,
                &mut out,
                &mut err,
            )
        }
        Command::Plan(args) => {
            use std::io::IsTerminal;
            let tty = std::io::stdout().is_terminal();
            let mut err = std::io::stderr();
            cli::plan::run(&args, &mut out, &mut err, tty)
        }
        Command::Secrets(args) => {
            tidegate::secrets::cli::run(&args, &mut out)?;
            Ok(0)
        }
        Command::Apply(args) => Ok(cli::apply::run(&args, &mut out)?),
        Command::Approve(a) => Ok(cli::promote::run(&cli::promote::Ask::Approve(a), &mut out)?),
        Command::Hold(a) => Ok(cli::promote::run(&cli::promote::Ask::Hold(a), &mut out)?),
        Command::Release(a) => Ok(cli::promote::run(&cli::promote::Ask::Release(a), &mut out)?),
        Command::Rollback(a) => Ok(cli::promote::run(
            &cli::promote::Ask::Rollback(a),
            &mut out,
        )?),
        Command::Rebuild(args) => Ok(cli::rebuild::run(&args, &mut out)?),
        Command::Preview(args) => Ok(cli::preview::run(&args, &mut out)?),
        Command::Reconcile(args) => cli::reconcile::run(&args),
        Command::Import(args) if args.generate => cli::generate::run(&args, &mut out),
        Command::Import(args) => cli::import::run(&args, &mut out),
        Command::Switch(args) => Ok(cli::switch::run(&args, &mut out)?),
        Command::History(args) => {
            let mut err = std::io::stderr();
            Ok(cli::history::run(&args, &mut out, &mut err)?)
        }
    };
    let flushed = result.and_then(|code| {
        out.flush()?;
        Ok(code)
    });
    match flushed {
        Ok(code) => Ok(code),
        // The reader went away (`tidegate graph | head`): nothing to report.
        Err(cli::Error::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(e.into()),
    }
}
