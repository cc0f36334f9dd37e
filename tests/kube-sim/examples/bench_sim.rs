//! Benchmark of the simulator through kube-rs, the client tidegate uses:
//! seeds 10,000 ConfigMaps, times a label-selector list of one kind, and
//! measures server-side apply throughput from 16 concurrent clients.
//!
//! Run: `cargo run --release -p kube-sim --example bench_sim`
//! Targets: list < 100 ms, SSA >= 2,000 requests/s.
//!
//! It stays here, in kube-sim, rather than in tidegate's `benches/`: it
//! measures the simulator itself (kube-rs is only the client) and uses no
//! tidegate code, so it belongs to the crate it measures.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube_sim::{Config, Simulator};
use serde_json::json;
use std::time::{Duration, Instant};

const OBJECTS: usize = 10_000;
const CLIENTS: usize = 16;
const SSA_REQUESTS: usize = 1_000;

fn cm(i: usize, version: usize) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("cm-{i:05}"), "labels": {
            "app.kubernetes.io/managed-by": "tidegate",
            "tidegate.dev/environment": "bench",
            "tidegate.dev/module": format!("m{}", i % 10)}},
        "data": {"index": i.to_string(), "version": version.to_string()}
    })
}

/// Applies objects `range` with `CLIENTS` concurrent tasks; returns the time.
async fn apply_all(api: &Api<ConfigMap>, ids: Vec<usize>, version: usize) -> Duration {
    let start = Instant::now();
    let chunks: Vec<Vec<usize>> = (0..CLIENTS)
        .map(|c| ids.iter().copied().skip(c).step_by(CLIENTS).collect())
        .collect();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let api = api.clone();
            tokio::spawn(async move {
                let pp = PatchParams::apply("tidegate");
                for i in chunk {
                    api.patch(&format!("cm-{i:05}"), &pp, &Patch::Apply(cm(i, version)))
                        .await
                        .expect("apply");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    start.elapsed()
}

#[tokio::main]
async fn main() {
    let sim = Simulator::start(Config::default()).await.expect("start");
    let client = kube::Client::try_from(kube::Config::new(sim.url().parse().unwrap())).unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");

    let seed = apply_all(&api, (0..OBJECTS).collect(), 0).await;
    println!(
        "seed: {OBJECTS} creates by SSA from {CLIENTS} clients in {:.2?} ({:.0}/s)",
        seed,
        OBJECTS as f64 / seed.as_secs_f64()
    );

    let lp = ListParams::default().labels("tidegate.dev/environment=bench,tidegate.dev/module=m3");
    let mut times = vec![];
    for _ in 0..20 {
        let t = Instant::now();
        let got = api.list(&lp).await.expect("list");
        times.push(t.elapsed());
        assert_eq!(got.items.len(), OBJECTS / 10);
    }
    times.sort();
    println!("list with label selector over {OBJECTS} objects ({} match): median {:.2?}, max {:.2?} (target < 100 ms)", OBJECTS / 10, times[10], times[19]);

    let t = Instant::now();
    let all = api
        .list(&ListParams::default().labels("tidegate.dev/environment=bench"))
        .await
        .expect("list");
    println!(
        "list of all {} objects: {:.2?}",
        all.items.len(),
        t.elapsed()
    );

    let ids: Vec<usize> = (0..SSA_REQUESTS)
        .map(|i| i * (OBJECTS / SSA_REQUESTS))
        .collect();
    let took = apply_all(&api, ids.clone(), 1).await;
    let rate = SSA_REQUESTS as f64 / took.as_secs_f64();
    println!("SSA: {SSA_REQUESTS} changing applies from {CLIENTS} clients in {took:.2?} = {rate:.0}/s (target >= 2000/s)");
    let took = apply_all(&api, ids, 1).await;
    let rate = SSA_REQUESTS as f64 / took.as_secs_f64();
    println!(
        "SSA: {SSA_REQUESTS} no-op re-applies from {CLIENTS} clients in {took:.2?} = {rate:.0}/s"
    );
    sim.shutdown().await;
}
