//! The `tidegate` command line: a flat match over modes.

use clap::Parser;

/// GitOps reconciler for Kubernetes and AWS EC2: Git → dev → staging → test → prod.
#[derive(Parser, Debug)]
#[command(name = "tidegate", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
