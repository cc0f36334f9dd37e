//! `kube-sim`: runs the Kubernetes API simulator on 127.0.0.1 and writes a
//! kubeconfig for it, for local demos and for tests in other languages.

use anyhow::{Context, Result};
use clap::Parser;
use kube_sim::{Config, Readiness, Simulator};
use std::path::PathBuf;

/// Kubernetes API simulator for tidegate tests and demos.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Port on 127.0.0.1 (0: any free port; the chosen one is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Where to write the kubeconfig.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Context names, comma-separated; the first is current.
    #[arg(long, value_delimiter = ',', default_value = "kube-sim")]
    contexts: Vec<String>,
    /// Point every context at one shared cluster instead of a separate
    /// cluster per context.
    #[arg(long)]
    shared: bool,
    /// Default workload readiness: now, never, fail, after:<duration>.
    #[arg(long, default_value = "now")]
    readiness: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let readiness = Readiness::parse(&args.readiness).with_context(|| {
        format!(
            "--readiness {:?}: expected now, never, fail or after:<duration> such as after:2s",
            args.readiness
        )
    })?;
    let config = Config {
        port: args.port,
        contexts: args.contexts,
        isolate_contexts: !args.shared,
        readiness,
        ..Config::default()
    };
    let handle = Simulator::start(config)
        .await
        .context("starting the simulator")?;
    if let Some(path) = &args.kubeconfig_out {
        handle
            .kubeconfig(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("kube-sim listening on {}", handle.url());
    for c in handle.contexts() {
        println!("  context {c}: {}", handle.context_url(c));
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    handle.shutdown().await;
    Ok(())
}
