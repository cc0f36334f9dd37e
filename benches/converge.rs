//! Benchmark of a commit's way through every environment (issue 25,
//! "Scale"): four environments dev < staging < test < prod of about 1,000
//! objects each, converged by the real `tidegate reconcile` binary against
//! moto and kube-sim.
//!
//! ```text
//! cargo build --release -p kube-sim
//! cargo bench --bench converge -- --envs 4 --resources 1000 --runs 3
//! ```
//!
//! Each run starts fresh stand-ins (moto; kube-sim with one cluster per
//! environment, each its own kubeconfig context) and a bare Git remote,
//! pushes a generated repository (`common::envs_repo`: each environment
//! `after` the one before it, a VPC and a Namespace plus cells of 10
//! resources, every `--ec2-every`-th cell with a subnet and a security
//! group, the rest ConfigMaps, a Deployment and a Service), and starts the
//! reconciler on it with a webhook secret and a one-hour `--interval`, so
//! only its first poll and the webhook make it poll. It measures
//!
//! - **initial**: from the reconciler's start to the status API showing the
//!   last environment good (`lastGood`, healthy) at the first commit;
//! - **push**: a second commit that changes every object of every
//!   environment (its `rev`: a ConfigMap data key, the pod template's
//!   annotation, Service and Namespace labels, EC2 tags) is pushed to the
//!   remote, then a signed GitHub push webhook is sent, as a forge would;
//!   from the `git push` returning to the last environment's record at the
//!   new commit.
//!
//! moto loads its EC2 backend at its first request (seconds of Python
//! imports); one DescribeVpcs before the reconciler starts takes that out
//! of the figures (`--cold-moto` leaves it in).
//!
//! For both it prints where the time went, per environment, from the
//! reconciler's JSON log (`new commit loaded`, `converge started`,
//! `converge finished` and the pipeline's `planned`/`applied` lines): the
//! wait at the promotion gate (from the one before it finishing, or from
//! the commit being loaded), observe + plan, apply (with the health waits),
//! the API calls of its converge (status API), and the CPU time of the
//! reconciler, kube-sim and moto over the phase (`/proc/PID/stat`), with
//! kube-sim's request counters.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use common::{cpu_secs, free_port, git, http, http_get, summary, Killed, Scratch, Stand};
use serde_json::Value;

#[derive(Parser)]
struct Args {
    /// Environments, in promotion order (dev, staging, test, prod, then
    /// e4, e5, ...).
    #[arg(long, default_value_t = 4)]
    envs: usize,
    /// Managed resources per environment.
    #[arg(long, default_value_t = 1000)]
    resources: usize,
    /// Runs, each with fresh stand-ins.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Every n-th cell of 10 also holds EC2 resources (a subnet and a
    /// security group); the others are Kubernetes-only.
    #[arg(long, default_value_t = 10)]
    ec2_every: usize,
    /// The reconciler's `--parallelism` (its default is 8).
    #[arg(long, default_value_t = 8)]
    parallelism: usize,
    /// Start the clock on a cold moto: its first EC2 request loads its EC2
    /// backend (seconds of Python imports), which a real EC2 never does.
    /// By default one DescribeVpcs warms it before the reconciler starts,
    /// and its time is printed.
    #[arg(long)]
    cold_moto: bool,
}

const SECRET: &str = "bench-webhook-secret";
const TARGET_SECS: f64 = 30.0;

fn env_names(n: usize) -> Vec<String> {
    let named = ["dev", "staging", "test", "prod"];
    (0..n)
        .map(|i| {
            named
                .get(i)
                .map(|s| s.to_string())
                .unwrap_or_else(|| format!("e{i}"))
        })
        .collect()
}

/// The status API's JSON.
fn status(port: u16) -> Option<Value> {
    serde_json::from_str(&http_get(port, "/api/v1/status")?).ok()
}

/// Waits until every environment is good (healthy, `lastGood`) at
/// `commit`; the status then.
fn wait_good(port: u16, envs: &[String], commit: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = status(port) {
            let good = envs.iter().all(|name| {
                s["environments"].as_array().into_iter().flatten().any(|e| {
                    e["name"] == name.as_str() && e["lastGood"] == commit && e["healthy"] == true
                })
            });
            if good {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not every environment good at {commit} within {within:?}: {}",
            status(port).map(|s| s.to_string()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// CPU seconds of the reconciler, kube-sim and moto so far.
#[derive(Clone, Copy, Default)]
struct Cpu {
    tidegate: f64,
    sim: f64,
    moto: f64,
}

impl Cpu {
    fn now(tidegate: u32, stand: &Stand) -> Cpu {
        Cpu {
            tidegate: cpu_secs(tidegate).unwrap_or(f64::NAN),
            sim: cpu_secs(stand.sim_pid).unwrap_or(f64::NAN),
            moto: cpu_secs(stand.moto_pid).unwrap_or(f64::NAN),
        }
    }
    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            tidegate: self.tidegate - before.tidegate,
            sim: self.sim - before.sim,
            moto: self.moto - before.moto,
        }
    }
}

/// kube-sim's request count so far (every cluster, verb and resource).
fn sim_requests(stand: &Stand) -> f64 {
    let Some(body) = http_get(stand.kube_port, "/_sim/counters") else {
        return f64::NAN;
    };
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    v["counters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["count"].as_f64())
        .sum()
}

/// One line of the reconciler's JSON log.
struct Line {
    at: jiff::Timestamp,
    message: String,
    environment: String,
    commit: String,
    fields: Value,
}

fn read_log(path: &Path) -> Vec<Line> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            let at: jiff::Timestamp = v["timestamp"].as_str()?.parse().ok()?;
            let f = &v["fields"];
            let pick = |k: &str| {
                f[k].as_str()
                    .or_else(|| v["span"][k].as_str())
                    .unwrap_or("")
                    .to_string()
            };
            Some(Line {
                at,
                message: f["message"].as_str().unwrap_or("").to_string(),
                environment: pick("environment"),
                commit: pick("commit"),
                fields: f.clone(),
            })
        })
        .collect()
}

/// Where one environment's time went for one commit, in seconds.
#[derive(Default, Clone)]
struct EnvTimes {
    /// From the one before it finishing (or the commit loaded) to its start.
    gate: f64,
    /// Its converge: start to finish, as the driver logged it.
    converge: f64,
    /// Before the pipeline connects its providers: the converge's load and
    /// check of the commit, the apply lock, the secrets.
    pre: f64,
    /// Observe + plan (the pipeline's `planned` line).
    plan: f64,
    /// Apply with the health waits, and the record (`applied` line).
    apply: f64,
    /// Changes made and API calls of its converge (status API).
    changes: u64,
    calls: u64,
    calls_by: String,
    /// After the record: the audit history, the lock's release, the
    /// report.
    post: f64,
}

/// One phase (a commit's way through the environments).
struct Phase {
    /// From the start (initial) or the push to the last record.
    total: f64,
    /// From the start or the push to the commit loaded (poll + fetch + load).
    load: f64,
    envs: Vec<EnvTimes>,
    /// From the last converge finishing to the status API showing it.
    publish: f64,
    cpu: Cpu,
    sim_requests: f64,
}

fn secs(a: jiff::Timestamp, b: jiff::Timestamp) -> f64 {
    (b.as_nanosecond() - a.as_nanosecond()) as f64 / 1e9
}

/// The timeline of `commit` from the log, `from` being the start or push.
fn timeline(
    log: &[Line],
    envs: &[String],
    commit: &str,
    from: jiff::Timestamp,
    seen: jiff::Timestamp,
    status: &Value,
) -> (f64, Vec<EnvTimes>, f64) {
    let find = |message: &str, env: &str| {
        log.iter().find(|l| {
            l.message == message && l.commit == commit && (env.is_empty() || l.environment == env)
        })
    };
    let loaded = find("new commit loaded", "").map(|l| l.at).unwrap_or(from);
    let mut prev = loaded;
    let mut out = Vec::new();
    for name in envs {
        let started = find("converge started", name).map(|l| l.at).unwrap_or(prev);
        let finished = find("converge finished", name)
            .map(|l| l.at)
            .unwrap_or(started);
        let ms = |message: &str, key: &str| {
            find(message, name)
                .and_then(|l| l.fields[key].as_f64())
                .unwrap_or(f64::NAN)
                / 1000.0
        };
        let e = status["environments"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == name.as_str())
            .cloned()
            .unwrap_or_default();
        let last = &e["last"];
        let mut by: BTreeMap<String, u64> = BTreeMap::new();
        for c in last["apiCalls"].as_array().into_iter().flatten() {
            *by.entry(format!(
                "{}/{}",
                c["provider"].as_str().unwrap_or(""),
                c["operation"].as_str().unwrap_or("")
            ))
            .or_default() += c["count"].as_u64().unwrap_or(0);
        }
        let planned = find("planned", name);
        let applied = find("applied", name);
        let pre = planned
            .map(|l| secs(started, l.at) - l.fields["elapsed_ms"].as_f64().unwrap_or(0.0) / 1000.0)
            .unwrap_or(f64::NAN);
        let post = applied.map(|l| secs(l.at, finished)).unwrap_or(f64::NAN);
        let changes = &last["changes"];
        out.push(EnvTimes {
            gate: secs(prev, started),
            converge: secs(started, finished),
            pre,
            post,
            plan: ms("planned", "elapsed_ms"),
            apply: ms("applied", "apply_ms"),
            changes: ["create", "update", "delete"]
                .iter()
                .map(|k| changes[k].as_u64().unwrap_or(0))
                .sum(),
            calls: by.values().sum(),
            calls_by: by
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
        });
        prev = finished;
    }
    (secs(from, loaded), out, secs(prev, seen))
}

fn print_phase(what: &str, p: &Phase, envs: &[String]) {
    println!(
        "  {what}: {:.2} s (commit loaded after {:.2} s; last record shown {:.2} s after its converge)",
        p.total, p.load, p.publish
    );
    for (name, e) in envs.iter().zip(&p.envs) {
        println!(
            "    {name:<8} gate wait {:>5.2} s, converge {:>5.2} s (load+lock {:>5.2}, observe+plan {:>5.2}, apply+health+record {:>5.2}, history+unlock {:>5.2}), {} changes, {} API calls ({})",
            e.gate, e.converge, e.pre, e.plan, e.apply, e.post, e.changes, e.calls, e.calls_by
        );
    }
    println!(
        "    CPU over the phase: tidegate {:.2} s, kube-sim {:.2} s ({} requests), moto {:.2} s",
        p.cpu.tidegate, p.cpu.sim, p.sim_requests, p.cpu.moto
    );
}

fn run_once(args: &Args, envs: &[String]) -> (Phase, Phase) {
    let scratch = Scratch::new("bench-converge");
    let dir = scratch.path();
    let names: Vec<&str> = envs.iter().map(String::as_str).collect();
    let cells = (args.resources.saturating_sub(2).div_ceil(10)).max(1);

    // A bare remote the reconciler follows, and a clone to push from.
    let remote = dir.join("remote.git");
    let work = dir.join("work");
    std::fs::create_dir_all(&remote).unwrap();
    git(&remote, &["init", "-q", "--bare", "-b", "main"]);
    common::envs_repo(&work, &names, cells, args.ec2_every, "", Some("1"));
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "rev 1"]);
    git(
        &work,
        &["remote", "add", "origin", remote.to_str().unwrap()],
    );
    git(&work, &["push", "-q", "origin", "main"]);
    let c1 = git(&work, &["rev-parse", "HEAD"]);

    let stand = Stand::start(dir, &names.join(","));
    if !args.cold_moto {
        let port: u16 = stand
            .endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("moto's port");
        let t = Instant::now();
        let credential = "AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0";
        let (code, _) = http(
            port,
            "POST",
            "/",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Authorization", credential),
            ],
            b"Action=DescribeVpcs&Version=2016-11-15",
        )
        .expect("moto answers");
        assert_eq!(code, 200, "moto's warm-up DescribeVpcs");
        println!(
            "  moto warmed up: its first DescribeVpcs took {:.2} s",
            t.elapsed().as_secs_f64()
        );
    }
    let secret = dir.join("webhook-secret");
    std::fs::write(&secret, SECRET).unwrap();
    let log = dir.join("reconcile.log");
    let (port, probe_port) = (free_port(), free_port());
    // The reconciler's CPU time starts at zero with it.
    let cpu0 = Cpu {
        tidegate: 0.0,
        sim: cpu_secs(stand.sim_pid).unwrap_or(f64::NAN),
        moto: cpu_secs(stand.moto_pid).unwrap_or(f64::NAN),
    };
    let sim0 = sim_requests(&stand);
    let (t0, wall0) = (Instant::now(), jiff::Timestamp::now());
    let child = common::reconciler(&stand, dir, port, probe_port, args.parallelism)
        .args(["--branch", "main", "--interval", "1h"])
        .args(["--log-format", "json"])
        .arg("--remote")
        .arg(format!("file://{}", remote.display()))
        .arg("--webhook-secret-file")
        .arg(&secret)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("tidegate reconcile starts");
    let pid = child.id();
    let _child = Killed(child);

    // (a) The initial commit: everything created in every environment.
    let s1 = wait_good(port, envs, &c1, Duration::from_secs(1800));
    let initial = t0.elapsed().as_secs_f64();
    let seen1 = jiff::Timestamp::now();
    let cpu1 = Cpu::now(pid, &stand);
    let sim1 = sim_requests(&stand);

    // (b) A commit changing every object, pushed, then the push webhook.
    common::envs_repo(&work, &names, cells, args.ec2_every, "", Some("2"));
    git(&work, &["commit", "-q", "-a", "-m", "rev 2"]);
    let c2 = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let (pushed, wall_push) = (Instant::now(), jiff::Timestamp::now());
    let body = format!(r#"{{"ref":"refs/heads/main","before":"{c1}","after":"{c2}"}}"#);
    let signature =
        tidegate::reconcile::webhook::github_signature(SECRET.as_bytes(), body.as_bytes());
    let (code, answer) = http(
        port,
        "POST",
        "/webhook",
        &[
            ("Content-Type", "application/json"),
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", &c2),
            ("X-Hub-Signature-256", &signature),
        ],
        body.as_bytes(),
    )
    .expect("the webhook answers");
    assert_eq!(code, 202, "webhook: {answer}");
    let s2 = wait_good(port, envs, &c2, Duration::from_secs(1800));
    let second = pushed.elapsed().as_secs_f64();
    let seen2 = jiff::Timestamp::now();
    let cpu2 = Cpu::now(pid, &stand);
    let sim2 = sim_requests(&stand);

    let lines = read_log(&log);
    let (load, times, publish) = timeline(&lines, envs, &c1, wall0, seen1, &s1);
    let first = Phase {
        total: initial,
        load,
        envs: times,
        publish,
        cpu: cpu1.since(cpu0),
        sim_requests: sim1 - sim0,
    };
    let (load, times, publish) = timeline(&lines, envs, &c2, wall_push, seen2, &s2);
    let then = Phase {
        total: second,
        load,
        envs: times,
        publish,
        cpu: cpu2.since(cpu1),
        sim_requests: sim2 - sim1,
    };
    (first, then)
}

fn main() {
    let Some(args) = common::args_or_skip("converge") else {
        return;
    };
    let args = Args::parse_from(args);
    let envs = env_names(args.envs);
    println!(
        "{} environments ({}) of {} resources each, parallelism {}, {} runs",
        envs.len(),
        envs.join(" < "),
        args.resources.max(12),
        args.parallelism,
        args.runs
    );
    let mut phases: Vec<(Phase, Phase)> = Vec::new();
    for run in 1..=args.runs {
        let (a, b) = run_once(&args, &envs);
        println!("run {run}:");
        print_phase("initial commit, start -> last record", &a, &envs);
        print_phase(
            "commit changing every object, push -> last record",
            &b,
            &envs,
        );
        phases.push((a, b));
    }
    for (what, pick) in [
        ("initial commit, start -> last record", 0),
        ("every object changed, push -> last record", 1),
    ] {
        let of = |f: &dyn Fn(&Phase) -> f64| -> Vec<f64> {
            phases
                .iter()
                .map(|(a, b)| f(if pick == 0 { a } else { b }))
                .collect()
        };
        let totals = of(&|p| p.total);
        println!(
            "{what}: {} s over {} runs (target < {TARGET_SECS} s); commit loaded after {} s",
            summary(&totals, 2),
            totals.len(),
            summary(&of(&|p| p.load), 2)
        );
        for (i, name) in envs.iter().enumerate() {
            println!(
                "  {name:<8} gate wait {} s, converge {} s (load+lock {}, observe+plan {}, apply+health+record {}, history+unlock {}), API calls {}",
                summary(&of(&|p| p.envs[i].gate), 2),
                summary(&of(&|p| p.envs[i].converge), 2),
                summary(&of(&|p| p.envs[i].pre), 2),
                summary(&of(&|p| p.envs[i].plan), 2),
                summary(&of(&|p| p.envs[i].apply), 2),
                summary(&of(&|p| p.envs[i].post), 2),
                summary(&of(&|p| p.envs[i].calls as f64), 0),
            );
        }
        println!(
            "  CPU: tidegate {} s, kube-sim {} s, moto {} s",
            summary(&of(&|p| p.cpu.tidegate), 2),
            summary(&of(&|p| p.cpu.sim), 2),
            summary(&of(&|p| p.cpu.moto), 2),
        );
    }
}
