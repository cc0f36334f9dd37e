//! Benchmark of the reconciler with many managed objects: its memory and
//! the cost of a no-change cycle.
//!
//! ```text
//! cargo build --release -p kube-sim
//! cargo bench --bench reconcile -- --resources 10000 --cycles 5
//! ```
//!
//! Starts moto and kube-sim, commits a generated environment (see
//! `common::cells_repo`: by default 2 % EC2 subnets and security
//! groups, the rest Kubernetes objects; `drift.interval: 10s`,
//! `mode: heal`) to a
//! local Git repository and runs the real `tidegate reconcile` binary on it
//! (the one cargo builds for the benchmark, `CARGO_BIN_EXE_tidegate`).
//! Prints the time of the first convergence (everything created), then, for
//! each drift check of the unchanged environment (a no-change cycle): its
//! duration and API calls (from `/metrics`), and the reconciler's resident
//! memory (`VmRSS`) after it; at the end the peak (`VmHWM`).

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Parser;
use common::{free_port, git, http_get, memory_kib, mib, summary, Killed, Scratch, Stand};

#[derive(Parser)]
struct Args {
    /// Managed resources in the environment.
    #[arg(long, default_value_t = 10000)]
    resources: usize,
    /// No-change cycles to measure after the first convergence.
    #[arg(long, default_value_t = 5)]
    cycles: usize,
    /// Every n-th cell of 10 also holds EC2 resources (a subnet and a
    /// security group); the others are Kubernetes-only.
    #[arg(long, default_value_t = 10)]
    ec2_every: usize,
    /// The reconciler's `--parallelism`.
    #[arg(long, default_value_t = 32)]
    parallelism: usize,
}

/// The sum of every sample of `name` whose labels contain all of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (n, rest) = key.split_once('{').unwrap_or((key, ""));
            (n == name && labels.iter().all(|x| rest.contains(x)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// API calls by `provider/operation` from `/metrics`.
fn calls(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for l in text
        .lines()
        .filter(|l| l.starts_with("tidegate_api_calls_total{"))
    {
        let Some((key, value)) = l.rsplit_once(' ') else {
            continue;
        };
        let label = |name: &str| {
            key.split(&format!("{name}=\"")[..])
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        *out.entry(format!("{}/{}", label("provider"), label("operation")))
            .or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

fn main() {
    let Some(args) = common::args_or_skip("reconcile") else {
        return;
    };
    let args = Args::parse_from(args);
    let scratch = Scratch::new("bench-reconcile");
    let dir = scratch.path();
    let repo = dir.join("repo");
    let cells = (args.resources.saturating_sub(2).div_ceil(10)).max(1);
    common::cells_repo(
        &repo,
        cells,
        args.ec2_every,
        "  drift:\n    interval: 10s\n    mode: heal\n",
    );
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "bench"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    let stand = Stand::start(dir, "bench");
    // The API listener (status) and the probe listener (`/metrics`).
    let (port, probe_port) = (free_port(), free_port());
    let t0 = Instant::now();
    let child = common::reconciler(&stand, dir, port, probe_port, args.parallelism)
        .args(["--branch", "main", "--interval", "5s"])
        .arg("--remote")
        .arg(format!("file://{}", repo.display()))
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .expect("tidegate reconcile starts");
    let pid = child.id();
    let _child = Killed(child);

    // The first convergence: everything is created.
    let count = |m: &str| {
        metric(
            m,
            "tidegate_reconcile_duration_seconds_count",
            &["environment=\"bench\""],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        assert!(Instant::now() < deadline, "no convergence within an hour");
        if let Some(body) = http_get(port, "/api/v1/status") {
            let s: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
            let e = &s["environments"][0];
            if e["lastGood"] == commit.as_str() && e["healthy"] == true {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let first = t0.elapsed().as_secs_f64();
    let m = http_get(probe_port, "/metrics").expect("metrics");
    println!(
        "reconciler over {} managed resources: first convergence (all created) {first:.1}s after start; RSS {}, peak {}",
        args.resources.max(12),
        mib(memory_kib(Some(pid), "VmRSS")),
        mib(memory_kib(Some(pid), "VmHWM"))
    );
    if !stand.real {
        println!(
            "  kube-sim holds them in {}",
            mib(memory_kib(Some(stand.sim_pid), "VmRSS"))
        );
    }

    // No-change cycles: each drift check of the unchanged environment.
    let (mut seen, mut sum, mut before) = (
        count(&m),
        metric(
            &m,
            "tidegate_reconcile_duration_seconds_sum",
            &["environment=\"bench\""],
        ),
        calls(&m),
    );
    let (mut secs, mut totals, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for cycle in 1..=args.cycles {
        let m = loop {
            std::thread::sleep(Duration::from_millis(250));
            let m = http_get(probe_port, "/metrics").expect("metrics");
            if count(&m) > seen {
                break m;
            }
        };
        let s = metric(
            &m,
            "tidegate_reconcile_duration_seconds_sum",
            &["environment=\"bench\""],
        );
        let now = calls(&m);
        let delta: BTreeMap<&String, f64> = now
            .iter()
            .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v > 0.0)
            .collect();
        let n: f64 = delta.values().sum();
        let r = memory_kib(Some(pid), "VmRSS");
        println!(
            "  cycle {cycle}: {:.2}s, {n} API calls ({}), RSS {}",
            s - sum,
            delta
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            mib(r)
        );
        let changed = metric(&m, "tidegate_drift_resources", &["environment=\"bench\""]);
        assert_eq!(changed, 0.0, "the environment is unchanged");
        secs.push(s - sum);
        totals.push(n);
        rss.push(r.unwrap_or(0) as f64 / 1024.0);
        (seen, sum, before) = (count(&m), s, now);
    }
    println!(
        "no-change cycle over {} cycles: {} s, {} API calls; RSS {} MiB; peak (VmHWM) {}",
        args.cycles,
        summary(&secs, 2),
        summary(&totals, 0),
        summary(&rss, 1),
        mib(memory_kib(Some(pid), "VmHWM"))
    );
}
