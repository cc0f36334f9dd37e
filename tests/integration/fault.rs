//! The fault harness of issue 12, on the real binary against moto and
//! kube-sim with an environment of 200 resources (20 cells of 4 EC2
//! resources and 6 Kubernetes objects, the ConfigMaps reading the EC2 ids):
//!
//! - `sigkill_trials_leave_no_duplicate_no_orphan_and_converge`: `tidegate
//!   apply` is SIGKILLed at a random point (after a random number of
//!   resources reported done, plus a random delay), then run again; each
//!   trial checks zero duplicates, zero orphans and a clean plan after.
//!   Trials: `TIDEGATE_FAULT_TRIALS` (default 3); the seed is printed and
//!   `TIDEGATE_FAULT_SEED` replays it.
//! - `combined_fault_soak_converges_with_retries_in_metrics`: `tidegate
//!   reconcile` applies the same environment while both providers fail
//!   about 10% of requests (EC2 through the fault proxy: 503
//!   `RequestLimitExceeded`, 500 `InternalError`, dropped connections;
//!   kube-sim: 429 with `Retry-After`, 500, reset connections) with added
//!   latency. It must converge to exactly the declared resources, and
//!   `/metrics` must show retries for both providers. The same seed drives
//!   both fault generators; `TIDEGATE_FAULT_RATE` (default 0.1) sets the
//!   failing share, 0 gives the baseline.
//!
//! Long mode (the figures in docs/reliability.md):
//! `TIDEGATE_FAULT_TRIALS=20 PATH=$PWD/.ci/.venv/bin:$PATH cargo test --test integration fault:: -- --nocapture`

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams};
use kube::Resource;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use kube_sim::{FaultAction, FaultRule, Faults};

use super::stand::{commit_files, http_get, owned_ec2, until_converged, Ports, Stand, AMI, REGION};
use super::support_moto::{FaultProxy, Rate};

/// Cells in the fixture; each is 4 EC2 resources and 6 Kubernetes objects.
const CELLS: usize = 20;
const EC2_PER_CELL: [(&str, &str); 4] = [
    ("vpc", "vpc"),
    ("subnet", "subnet"),
    ("security_group", "sg"),
    ("instance", "server"),
];
const K8S_PER_CELL: [&str; 6] = [
    "ns",
    "network",
    "security",
    "server-info",
    "flags",
    "limits",
];

fn cell(i: usize) -> String {
    format!("cell{i:02}")
}

/// The cell module: a VPC with a subnet, a security group and an instance,
/// and a namespace of ConfigMaps carrying their ids.
const CELL_MODULE: &str = "apiVersion: tidegate.dev/v1
kind: Module
metadata:
  name: cell
spec:
  inputs:
    index:
      type: string
    namespace:
      type: string
  resources:
    - name: vpc
      provider: aws
      type: vpc
      spec:
        cidrBlock: 10.${input.index}.0.0/16
        tags:
          Name: ${input.namespace}
    - name: subnet
      provider: aws
      type: subnet
      spec:
        vpcId: ${resource.vpc.id}
        cidrBlock: 10.${input.index}.1.0/24
        availabilityZone: us-east-1a
    - name: sg
      provider: aws
      type: security_group
      spec:
        vpcId: ${resource.vpc.id}
        groupName: ${input.namespace}
        description: cell servers
        ingress:
          - protocol: tcp
            fromPort: 8080
            toPort: 8080
            cidrBlocks: [10.0.0.0/8]
    - name: server
      provider: aws
      type: instance
      spec:
        ami: AMI
        instanceType: t3.micro
        subnetId: ${resource.subnet.id}
        securityGroupIds: ['${resource.sg.id}']
        metadata:
          httpTokens: required
    - name: ns
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: Namespace
        metadata:
          name: ${input.namespace}
    - name: network
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: network
          namespace: ${input.namespace}
        data:
          VPC: ${resource.vpc.id}
          SUBNET: ${resource.subnet.id}
    - name: security
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: security
          namespace: ${input.namespace}
        data:
          GROUP: ${resource.sg.id}
    - name: server-info
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: server
          namespace: ${input.namespace}
        data:
          INSTANCE: ${resource.server.id}
    - name: flags
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: flags
          namespace: ${input.namespace}
        data:
          beta: \"on\"
    - name: limits
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: limits
          namespace: ${input.namespace}
        data:
          requests: \"100\"
";

/// Writes and commits a repository with the one environment `env` (its
/// Kubernetes objects in kube-sim context `context`) of [`CELLS`] cells.
fn write_cells_repo(dir: &Path, env: &str, context: &str) -> String {
    let mut doc = format!(
        "apiVersion: tidegate.dev/v1
kind: Environment
metadata:
  name: {env}
spec:
  targets:
    kubernetes:
      context: {context}
    aws:
      region: {REGION}
  modules:
"
    );
    for i in 0..CELLS {
        doc.push_str(&format!(
            "    - name: {c}
      source: modules/cell
      inputs:
        index: \"{i}\"
        namespace: {env}-{c}
",
            c = cell(i)
        ));
    }
    doc.push_str("  policy:\n    defaultSeverity: warning\n");
    let path = format!("environments/{env}.yaml");
    let files = [
        (path.as_str(), doc),
        ("modules/cell/module.yaml", CELL_MODULE.replace("AMI", AMI)),
    ];
    commit_files(dir, &files)
}

/// Resource ids (`cell07.vpc`) the fixture declares, by EC2 kind.
fn declared_ec2() -> BTreeMap<&'static str, Vec<String>> {
    let mut out: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for i in 0..CELLS {
        for (kind, name) in EC2_PER_CELL {
            out.entry(kind)
                .or_default()
                .push(format!("{}.{name}", cell(i)));
        }
    }
    out
}

fn declared_k8s() -> Vec<String> {
    let mut out: Vec<String> = (0..CELLS)
        .flat_map(|i| K8S_PER_CELL.map(|n| format!("{}.{n}", cell(i))))
        .collect();
    out.sort();
    out
}

const TOTAL: usize = CELLS * (EC2_PER_CELL.len() + K8S_PER_CELL.len());

/// Kubernetes objects labelled as owned by environment `env` (Namespaces
/// and ConfigMaps, every namespace), as their `tidegate.dev/resource`
/// annotation, sorted; tidegate's own records carry no environment label.
async fn owned_k8s(stand: &Stand, context: &str, env: &str) -> Vec<String> {
    let client = stand.kube(context).await;
    let lp = ListParams::default().labels(&format!(
        "app.kubernetes.io/managed-by=tidegate,tidegate.dev/environment={env}"
    ));
    let resource = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get("tidegate.dev/resource"))
            .cloned()
            .unwrap_or_else(|| format!("<unannotated {:?}>", meta.name))
    };
    let mut out: Vec<String> = Api::<Namespace>::all(client.clone())
        .list(&lp)
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| resource(o.meta()))
        .collect();
    out.extend(
        Api::<ConfigMap>::all(client)
            .list(&lp)
            .await
            .unwrap()
            .items
            .iter()
            .map(|o| resource(o.meta())),
    );
    out.sort();
    out
}

/// Live objects owned by `env`: EC2 resources and Kubernetes objects.
async fn owned_count(stand: &Stand, context: &str, env: &str) -> usize {
    let ec2: usize = owned_ec2(stand, env).await.values().map(Vec::len).sum();
    ec2 + owned_k8s(stand, context, env).await.len()
}

/// Asserts exactly the declared resources are live for `env`: one EC2
/// object per resource id by tag (no duplicate), one Kubernetes object per
/// declared object, and nothing else carrying the environment's marks (no
/// orphan).
async fn assert_exactly_declared(stand: &Stand, context: &str, env: &str, what: &str) {
    let mut live: BTreeMap<&str, Vec<String>> = owned_ec2(stand, env)
        .await
        .into_iter()
        .map(|(kind, objs)| {
            let mut ids: Vec<String> = objs.into_iter().map(|(tag, _)| tag).collect();
            ids.sort();
            (kind, ids)
        })
        .collect();
    let mut want = declared_ec2();
    for ids in want.values_mut() {
        ids.sort();
    }
    for (kind, ids) in &want {
        let got = live.remove(kind).unwrap_or_default();
        assert_eq!(
            &got, ids,
            "{what}: EC2 {kind} of {env}: exactly one per resource id (duplicates or orphans otherwise)"
        );
    }
    assert!(
        live.is_empty(),
        "{what}: EC2 kinds nobody declared: {live:?}"
    );
    assert_eq!(
        owned_k8s(stand, context, env).await,
        declared_k8s(),
        "{what}: Kubernetes objects of {env}"
    );
}

/// What one kill trial measured.
struct Trial {
    /// Milliseconds from spawn to SIGKILL (None: the apply ended first).
    killed_at_ms: Option<u128>,
    /// Resources the killed apply reported done before the kill.
    reported: usize,
    /// Objects owned by the environment right after the kill.
    live_after_kill: usize,
    rerun_ms: u128,
}

/// Runs `apply` and SIGKILLs it once `after` resources were reported done
/// and `delay` has passed since; returns (ms to the kill or None when the
/// apply ended first, resources reported).
async fn apply_and_kill(
    stand: &Stand,
    repo: &Path,
    env: &str,
    after: usize,
    delay: Duration,
) -> (Option<u128>, usize) {
    let start = Instant::now();
    let mut child = stand
        .command(repo, &["apply", "--env", env, "--yes"])
        .spawn()
        .unwrap();
    // The plan on stdout is large: drain it so the child never blocks.
    let mut stdout = child.stdout.take().unwrap();
    let drain = tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = stdout.read_to_end(&mut sink).await;
    });
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let prefix = format!("{env}: ");
    let mut reported = 0;
    // Set once the kill point is reached: the kill comes `delay` later,
    // however many lines arrive meanwhile.
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut seen = String::new();
    loop {
        let next = if let Some(at) = deadline {
            match tokio::time::timeout_at(at, lines.next_line()).await {
                Ok(line) => line,
                Err(_) => break,
            }
        } else {
            lines.next_line().await
        };
        let Ok(Some(line)) = next else {
            // The apply ended before the kill point: it must have succeeded.
            let status = child.wait().await.unwrap();
            drain.abort();
            assert!(status.success(), "the apply to be killed failed: {seen}");
            return (None, reported);
        };
        seen.push_str(&line);
        seen.push('\n');
        if let Some(rest) = line.strip_prefix(&prefix) {
            let reached = if rest.ends_with(" resources") {
                after == 0
            } else if rest.contains(" (") {
                reported += 1;
                reported >= after
            } else {
                false
            };
            if reached && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + delay);
            }
        }
    }
    // SIGKILL: no handler runs, no lock is released, nothing is recorded.
    child.start_kill().unwrap();
    let at = start.elapsed().as_millis();
    let _ = child.wait().await;
    drain.abort();
    (Some(at), reported)
}

fn trials() -> usize {
    std::env::var("TIDEGATE_FAULT_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn seed() -> u64 {
    std::env::var("TIDEGATE_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

fn median(v: &[u128]) -> u128 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_trials_leave_no_duplicate_no_orphan_and_converge() {
    let n = trials();
    let seed = seed();
    println!("fault: {n} SIGKILL trials of `tidegate apply` ({TOTAL} resources), seed {seed} (TIDEGATE_FAULT_SEED={seed} replays the kill points)");
    let mut rng = StdRng::seed_from_u64(seed);
    let context = "dev";
    let mut results = Vec::new();
    for t in 1..=n {
        // A new stand per trial: every trial starts from nothing, and moto
        // (which scans every resource it holds on each filtered Describe)
        // does not slow down trial after trial.
        let stand = Stand::with_contexts(&[context]).await;
        let env = format!("trial{t}");
        let repo = TempDir::new().unwrap();
        write_cells_repo(repo.path(), &env, context);
        let after = rng.gen_range(0..TOTAL);
        let delay = Duration::from_millis(rng.gen_range(0..200));
        let (killed_at_ms, reported) =
            apply_and_kill(&stand, repo.path(), &env, after, delay).await;
        let live_after_kill = owned_count(&stand, context, &env).await;

        let started = Instant::now();
        let (code, text) = stand
            .cli(repo.path(), &["apply", "--env", &env, "--yes"])
            .await;
        let rerun_ms = started.elapsed().as_millis();
        assert_eq!(code, 0, "trial {t} (seed {seed}): the rerun fails: {text}");
        assert_exactly_declared(&stand, context, &env, &format!("trial {t} (seed {seed})")).await;
        let plan = stand
            .binary()
            .args(["plan", "--env", &env, "--repo"])
            .arg(repo.path())
            .output()
            .await
            .unwrap();
        let (code, text) = (
            plan.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&plan.stdout).into_owned()
                + &String::from_utf8_lossy(&plan.stderr),
        );
        assert_eq!(
            code, 0,
            "trial {t} (seed {seed}): the plan after the rerun shows changes: {text}"
        );
        let kill = match killed_at_ms {
            Some(ms) => format!("SIGKILL at {ms} ms"),
            None => "apply ended before the kill point".to_string(),
        };
        println!(
            "fault: trial {t}/{n}: kill point {after} resources + {} ms: {kill}, {reported} of {TOTAL} reported done, {live_after_kill} objects live; rerun {rerun_ms} ms; exactly {TOTAL} declared objects, no duplicate, no orphan, plan clean",
            delay.as_millis()
        );
        results.push(Trial {
            killed_at_ms,
            reported,
            live_after_kill,
            rerun_ms,
        });
    }
    let killed: Vec<&Trial> = results
        .iter()
        .filter(|r| r.killed_at_ms.is_some())
        .collect();
    let kills: Vec<u128> = killed.iter().filter_map(|r| r.killed_at_ms).collect();
    let reruns: Vec<u128> = results.iter().map(|r| r.rerun_ms).collect();
    let done: Vec<usize> = killed.iter().map(|r| r.reported).collect();
    let live: Vec<usize> = killed.iter().map(|r| r.live_after_kill).collect();
    println!(
        "fault: summary: {n} trials (seed {seed}), {} killed mid-apply at {}..{} ms (median {} ms) after {}..{} resources reported done ({}..{} objects live); rerun median {} ms, max {} ms; 0 duplicates, 0 orphans, every plan after clean",
        killed.len(),
        kills.iter().min().unwrap_or(&0),
        kills.iter().max().unwrap_or(&0),
        median(&kills),
        done.iter().min().unwrap_or(&0),
        done.iter().max().unwrap_or(&0),
        live.iter().min().unwrap_or(&0),
        live.iter().max().unwrap_or(&0),
        median(&reruns),
        reruns.iter().max().unwrap_or(&0),
    );
}

/// `name{labels} value` lines of series `name` in a Prometheus text
/// exposition, as (labels, value).
fn series<'a>(metrics: &'a str, name: &str) -> Vec<(&'a str, u64)> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|l| {
            let (labels, value) = l.split_once("} ")?;
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_fault_soak_converges_with_retries_in_metrics() {
    let seed = seed();
    let rate: f64 = std::env::var("TIDEGATE_FAULT_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.1);
    println!("fault soak: {TOTAL} resources through `tidegate reconcile`, {:.0}% of requests failing on both providers (TIDEGATE_FAULT_RATE={rate}), seed {seed} (TIDEGATE_FAULT_SEED={seed} replays the fault draws)", rate * 100.0);
    let context = "dev";
    let mut stand = Stand::with_contexts(&[context]).await;
    // Of the failing share: 40% throttled, 30% server errors, 30% dropped
    // connections; every request is 5 ms late.
    let (throttle, error, drop) = (rate * 0.4, rate * 0.3, rate * 0.3);
    let proxy = FaultProxy::start(&stand.moto.endpoint).await;
    *proxy.faults.rate.lock().unwrap() = Some(Rate::new(
        throttle,
        error,
        drop,
        Duration::from_millis(5),
        seed,
    ));
    stand.aws_endpoint = proxy.endpoint.clone();
    // kube-sim: 429 with Retry-After, 500, reset. A rule sees only what the
    // rules before it spared, hence the division.
    let rule = |p: f64, n: u64, action: FaultAction| {
        FaultRule::with_probability(None, None, p, seed.wrapping_add(n), action)
    };
    stand.sim().set_faults(Faults {
        rules: vec![
            rule(
                throttle,
                1,
                FaultAction::Throttle {
                    retry_after_seconds: 1,
                },
            ),
            rule(
                error / (1.0 - throttle),
                2,
                FaultAction::Error { code: 500 },
            ),
            rule(drop / (1.0 - throttle - error), 3, FaultAction::Reset),
        ],
        latency_millis: 5,
    });

    let env = "soak";
    let repo = TempDir::new().unwrap();
    let commit = write_cells_repo(repo.path(), env, context);
    let port = Ports::free();
    let log = stand.dir.path().join("reconcile.log");
    let mut child = stand
        .reconcile(repo.path(), port)
        .stderr(std::fs::File::create(&log).unwrap())
        .env("NO_COLOR", "1")
        .spawn()
        .unwrap();
    let converged = until_converged(port.api, &commit, 1, Duration::from_secs(600)).await;
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let took = converged.unwrap_or_else(|last| {
        panic!(
            "seed {seed}: {env} did not converge at {commit}: {last}\n{}",
            log_text()
        )
    });
    let (_, metrics) = http_get(port.probe, "/metrics").await.unwrap();

    // Faults off, then look: exactly the declared resources, nothing twice.
    *proxy.faults.rate.lock().unwrap() = None;
    stand.sim().set_faults(Faults::default());
    assert_exactly_declared(&stand, context, env, &format!("soak (seed {seed})")).await;

    let retries = series(&metrics, "tidegate_api_retries_total");
    let mut by_provider: BTreeMap<&str, u64> = BTreeMap::new();
    for (labels, n) in &retries {
        let provider = labels
            .split(',')
            .find_map(|l| l.strip_prefix("provider=\""))
            .and_then(|p| p.strip_suffix('"'))
            .unwrap_or("");
        *by_provider.entry(provider).or_default() += n;
    }
    let attempts: u64 = series(&metrics, "tidegate_api_calls_total")
        .iter()
        .map(|(_, n)| n)
        .sum();
    let hits = proxy.faults.rate_hits.lock().unwrap().clone();
    let converges = series(&metrics, "tidegate_reconcile_duration_seconds_count");
    // Converges that failed before the one that converged, and why (the
    // reconciler retries them after a backoff).
    let log = log_text();
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("converge failed"))
        .map(|l| l.split_once("error=").map_or(l, |(_, e)| e))
        .map(|e| &e[..e.len().min(200)])
        .collect();
    println!(
        "fault soak: converged in {} ms; converges {converges:?}, failed first: {failed:?}; EC2 proxy faults {hits:?}; {attempts} API attempts in /metrics; retries {retries:?}",
        took.as_millis()
    );
    for provider in ["aws", "kubernetes"] {
        if rate == 0.0 {
            break; // the baseline: nothing fails, nothing to retry
        }
        assert!(
            by_provider.get(provider).copied().unwrap_or(0) > 0,
            "seed {seed}: no {provider} retries in /metrics although its requests failed: {retries:?}\n{metrics}"
        );
    }
    assert!(
        rate == 0.0 || hits.values().sum::<u32>() > 0,
        "the EC2 proxy injected nothing"
    );

    let status = crate::stand::sigterm(&mut child).await;
    assert!(status.success(), "{status:?}\n{}", log_text());
}

/// SIGKILL of `tidegate reconcile` in the middle of its first apply (as an
/// OOM kill or a node loss ends a pod), then a new reconciler on the same
/// Git cache, state and cluster: it takes over the dead holder's apply
/// lock, converges, and leaves exactly the declared resources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_reconciler_is_replaced_and_its_successor_converges() {
    let context = "dev";
    let stand = Stand::with_contexts(&[context]).await;
    let env = "crash";
    let repo = TempDir::new().unwrap();
    let commit = write_cells_repo(repo.path(), env, context);
    let port = Ports::free();
    let log = stand.dir.path().join("reconcile-killed.log");
    let mut first = stand
        .reconcile(repo.path(), port)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Bounds so a broken build fails instead of hanging; not timing
    // assertions.
    let started = Instant::now();
    let mut live = 0;
    while live < 20 && started.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        live = owned_count(&stand, context, env).await;
    }
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let at_kill = owned_count(&stand, context, env).await;
    println!(
        "reconciler SIGKILLed {} ms after start with {at_kill} of {TOTAL} resources live",
        started.elapsed().as_millis()
    );
    assert!(
        (20..TOTAL).contains(&at_kill),
        "the kill did not land mid-apply: {at_kill} of {TOTAL} live\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let restarted = Instant::now();
    let log2 = stand.dir.path().join("reconcile-successor.log");
    let mut second = stand
        .reconcile(repo.path(), port)
        .stderr(std::fs::File::create(&log2).unwrap())
        .spawn()
        .unwrap();
    if let Err(last) = until_converged(port.api, &commit, 1, Duration::from_secs(300)).await {
        panic!(
            "the successor did not converge at {commit}: {last}\n{}",
            std::fs::read_to_string(&log2).unwrap_or_default()
        );
    }
    println!(
        "successor converged in {} ms",
        restarted.elapsed().as_millis()
    );
    assert_exactly_declared(&stand, context, env, "after a reconciler SIGKILL").await;
    assert!(crate::stand::sigterm(&mut second).await.success());
}

/// A converge that fails for good (every ConfigMap list answered 500, so
/// observe fails after its retries) still reports the calls and retries it
/// made: the backoff that preceded the failure shows in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_converge_still_shows_its_retries_in_metrics() {
    let context = "dev";
    let stand = Stand::with_contexts(&[context]).await;
    stand.sim().set_faults(Faults {
        rules: vec![FaultRule::new(
            Some("GET"),
            Some("/api/v1/configmaps"),
            u32::MAX,
            FaultAction::Error { code: 500 },
        )],
        latency_millis: 0,
    });
    let env = "failing";
    let repo = TempDir::new().unwrap();
    write_cells_repo(repo.path(), env, context);
    let port = Ports::free();
    let mut child = stand
        .reconcile(repo.path(), port)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut metrics = String::new();
    // A bound so a broken build fails instead of hanging; not a timing
    // assertion.
    while started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some((200, m)) = http_get(port.probe, "/metrics").await {
            let failed = series(&m, "tidegate_reconcile_duration_seconds_count")
                .iter()
                .any(|(l, n)| l.contains("result=\"error\"") && *n > 0);
            metrics = m;
            if failed {
                break;
            }
        }
    }
    let errors: u64 = series(&metrics, "tidegate_reconcile_duration_seconds_count")
        .iter()
        .filter(|(l, _)| l.contains("result=\"error\""))
        .map(|(_, n)| n)
        .sum();
    assert!(errors > 0, "no failed converge recorded:\n{metrics}");
    let retried: u64 = series(&metrics, "tidegate_api_retries_total")
        .iter()
        .filter(|(l, _)| l.contains("provider=\"kubernetes\"") && l.contains("server_error"))
        .map(|(_, n)| n)
        .sum();
    assert!(
        retried > 0,
        "the failed converge's retries are missing:\n{metrics}"
    );
    let lists: u64 = series(&metrics, "tidegate_api_calls_total")
        .iter()
        .filter(|(l, _)| l.contains("provider=\"kubernetes\"") && l.contains("operation=\"list\""))
        .map(|(_, n)| n)
        .sum();
    assert!(lists > retried, "attempts include every retry:\n{metrics}");
    assert!(crate::stand::sigterm(&mut child).await.success());
}
