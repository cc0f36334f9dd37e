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
        /// The repository (holding environments/, modules/, secrets/).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: cli::validate::Format,
    },
    /// Print the dependency graph as Graphviz DOT, Mermaid, or the apply order as text.
    Graph {
        /// The repository (holding environments/, modules/, secrets/).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Only this environment.
        #[arg(long)]
        env: Option<String>,
        #[arg(long, value_enum, default_value = "dot")]
        format: cli::graph::Format,
    },
    /// Encrypt, decrypt or re-key SOPS secret files (age recipients).
    Secrets(tidegate::secrets::cli::SecretsArgs),
    /// Run the in-cluster reconciler: poll Git (and accept push webhooks),
    /// walk environments through their gates, serve probes, metrics and a
    /// status page; exit 0 after SIGTERM.
    Reconcile(Box<cli::reconcile::ReconcileArgs>),
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    let result = match cli.command {
        Command::Validate { repo, format } => cli::validate::run(&repo, format, &mut out),
        Command::Graph { repo, env, format } => {
            let mut err = std::io::stderr();
            cli::graph::run(&repo, env.as_deref(), format, &mut out, &mut err)
        }
        Command::Secrets(args) => {
            tidegate::secrets::cli::run(&args, &mut out)?;
            Ok(0)
        }
        Command::Reconcile(args) => cli::reconcile::run(&args),
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
