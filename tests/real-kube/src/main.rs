//! `real-kube`: starts the real control plane and serves until killed, for
//! the demo (`TIDEGATE_DEMO_KUBE=real .ci/demo`) and manual use. Writes a
//! kubeconfig whose contexts all point at the one cluster as tidegate's
//! ServiceAccount, and one for the administrator.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use real_kube::{ControlPlane, Identity};

#[derive(Parser)]
#[command(
    about = "A real kube-apiserver with RBAC (etcd, controller-manager, scheduler, kwok) on loopback"
)]
struct Args {
    /// Where to write the kubeconfig tidegate uses (its ServiceAccount's token).
    #[arg(long)]
    kubeconfig_out: PathBuf,
    /// Where to write the administrator's kubeconfig (context `admin`).
    #[arg(long)]
    admin_kubeconfig_out: Option<PathBuf>,
    /// Manifests applied as the administrator once the cluster is up and
    /// before the kubeconfig is written (the demo's install step:
    /// deploy/managed-namespaces.yaml). Repeatable.
    #[arg(long)]
    apply: Vec<PathBuf>,
    /// Context names, comma-separated; the first is current.
    #[arg(long, value_delimiter = ',', default_value = "dev,staging,test,prod")]
    contexts: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plane = ControlPlane::start().context("starting the control plane")?;
    let cluster = plane.cluster();
    if let Some(admin) = &args.admin_kubeconfig_out {
        std::fs::copy(cluster.admin_kubeconfig(), admin)
            .with_context(|| format!("writing {}", admin.display()))?;
    }
    for file in &args.apply {
        let path = file.to_str().context("a manifest path is not UTF-8")?;
        cluster
            .kubectl(&["apply", "-f", path])
            .with_context(|| format!("applying {}", file.display()))?;
    }
    let contexts: Vec<&str> = args.contexts.iter().map(String::as_str).collect();
    // Written last: its presence tells a script that everything is ready.
    let tmp = args.kubeconfig_out.with_extension("tmp");
    cluster.write_kubeconfig(&tmp, &contexts, Identity::Tidegate)?;
    std::fs::rename(&tmp, &args.kubeconfig_out)
        .with_context(|| format!("writing {}", args.kubeconfig_out.display()))?;
    println!(
        "real-kube: {} ready ({})",
        cluster.url(),
        real_kube::VERSION
    );
    loop {
        std::thread::park();
    }
}
