//! The `tidegate` command line: a flat match over modes.

use clap::{Parser, Subcommand};

/// GitOps reconciler for Kubernetes and AWS EC2: Git → dev → staging → test → prod.
#[derive(Parser, Debug)]
#[command(name = "tidegate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Encrypt, decrypt or re-key SOPS secret files (age recipients).
    Secrets(tidegate::secrets::cli::SecretsArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Secrets(args)) => {
            tidegate::secrets::cli::run(&args, &mut std::io::stdout().lock())?
        }
        None => {}
    }
    Ok(())
}
