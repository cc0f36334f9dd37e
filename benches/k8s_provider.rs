//! Figures for the Kubernetes provider against kube-sim over loopback HTTP:
//! API calls and time of an observe as the number of owned objects grows,
//! the cost of a first apply, and the writes of a no-op re-apply.
//!
//! `cargo bench --bench k8s_provider -- [N]` (default N=1000).

mod common;

use std::time::{Duration, Instant};

use kube_sim::{Config, Simulator};
use serde_json::json;
use tidegate::provider::kubernetes::{Kubernetes, Options};
use tidegate::provider::{Action, Desired, EnvTarget, KubeTarget, Origin, Provider, ResourceId};
use tidegate::value::Value;

fn configmap(i: usize) -> Desired {
    let name = format!("cm-{i}");
    Desired {
        id: ResourceId {
            module: "bench".into(),
            name: name.clone(),
        },
        kind: "v1/ConfigMap".into(),
        body: Value::from_json(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"}, "data": {"i": i.to_string()}})),
        origin: Origin::default(),
    }
}

fn total(p: &Kubernetes) -> u64 {
    p.api_calls().values().sum()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(args) = common::args_or_skip("k8s_provider") else {
        return Ok(());
    };
    let n: usize = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let sim = Simulator::start(Config {
        contexts: vec!["bench".into()],
        ..Config::default()
    })
    .await?;
    let dir = tempfile::TempDir::new()?;
    let kubeconfig = dir.path().join("kubeconfig");
    sim.kubeconfig(&kubeconfig)?;
    let target = EnvTarget {
        project: "bench".into(),
        environment: "bench".into(),
        kubernetes: Some(KubeTarget {
            context: Some("bench".into()),
            force_conflicts: false,
        }),
        aws: None,
    };
    let p = Kubernetes::connect_kubeconfig(&kubeconfig, &target, Options::default()).await?;
    let kinds = ["v1/ConfigMap".to_string()];
    println!("objects  observe_calls  observe_ms");
    let mut applied = 0;
    let mut owned = Vec::new();
    for size in [1, 10, 100, n] {
        for i in applied..size {
            owned.push(p.apply(&configmap(i), None).await?);
        }
        applied = size;
        p.record_inventory(&owned).await?;
        p.observe(&kinds).await?; // discovery warmed
        let calls = total(&p);
        let t = Instant::now();
        let live = p.observe(&kinds).await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(live.len(), size);
        println!("{size:>7}  {:>13}  {ms:>10.1}", total(&p) - calls);
    }

    let live = p.observe(&kinds).await?;
    let before = p.api_calls();
    let t = Instant::now();
    let mut noop = 0;
    for l in &live {
        let i: usize = l.id.name.trim_start_matches("cm-").parse()?;
        if p.plan(&configmap(i), Some(l)).await?.action == Action::NoOp {
            noop += 1;
        }
    }
    let elapsed = t.elapsed();
    let after = p.api_calls();
    let delta = |op: &str| after.get(op).unwrap_or(&0) - before.get(op).unwrap_or(&0);
    println!(
        "no-op re-plan of {n}: {noop} no-ops, {} dry-runs, {} writes, {:.0} plans/s",
        delta("dry_run"),
        delta("apply") + delta("delete"),
        n as f64 / elapsed.max(Duration::from_micros(1)).as_secs_f64()
    );
    sim.shutdown().await;
    Ok(())
}
