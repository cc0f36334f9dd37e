//! Benchmark: load + resolve + graph + offline plan of a synthetic
//! repository of 4 environments × N module instances × 10 resources, at
//! 1,000 and 10,000 resources by default.
//!
//! ```text
//! cargo bench --bench load                                  # 1,000 and 10,000, 7 runs each
//! cargo bench --bench load -- --resources 10000 --runs 11
//! ```
//!
//! Each size runs in a child process of its own so that its peak memory
//! (VmHWM) is its own. Prints every stage's median and spread: load +
//! resolve, graph + levels, offline plan (render, diff against nothing,
//! policy, for every environment) and the plan's text rendering, as
//! `tidegate plan --offline` does them.
//!
//! ```text
//! cargo bench --bench load -- --yaml-keys 20000,80000
//! ```
//!
//! measures one map of many keys instead (a ConfigMap's `data`): the YAML
//! parse alone and the whole `tidegate validate` check (load, resolve,
//! graph, render) of a repository holding it. Issue 17: duplicate keys
//! were found by scanning every earlier key, so 80,000 keys took 40 s.
//!
//! ```text
//! cargo bench --bench load -- --whole --resources 10000,100000 --runs 3
//! ```
//!
//! times the whole `tidegate plan --offline` process instead, on the
//! repository written to disk (wall time, and peak RSS through GNU time),
//! as a user runs it.

mod common;

use std::process::Command;
use std::time::Instant;

use clap::Parser;
use common::{memory_kib, mib, summary};
use tidegate::graph::Graph;
use tidegate::load::{self, Files};
use tidegate::plan::{self, Plan, PlanSource};
use tidegate::render::StructuralSecrets;

#[derive(Parser)]
struct Args {
    /// Sizes to measure, in resources (multiples of 40: 4 environments ×
    /// instances × 10 resources).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    resources: Vec<usize>,
    /// Runs per size.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Measure maps of these many keys instead (YAML parse and validate).
    #[arg(long, value_delimiter = ',')]
    yaml_keys: Vec<usize>,
    /// Time the whole `tidegate plan --offline` process instead, on the
    /// repository written to disk, with its peak memory (GNU time's max
    /// RSS), as a user runs it.
    #[arg(long)]
    whole: bool,
    /// Internal: measure this many instances per environment in this
    /// process and print one line of figures.
    #[arg(long, hide = true)]
    child: Option<usize>,
}

const ENVS: [&str; 4] = ["dev", "staging", "test", "prod"];
/// Distinct modules the instances cycle through.
const MODULES: usize = 10;

/// A module `name` of 10 resources (4 EC2, 6 Kubernetes) with references between
/// them, typed inputs and outputs.
fn module(name: &str) -> String {
    let tags = "        tags:\n          environment: ${env.name}\n          owner: ${input.owner}\n          product: bench\n";
    let mut s = format!(
        "apiVersion: tidegate.dev/v1\nkind: Module\nmetadata:\n  name: {name}\nspec:\n  inputs:\n    app:\n      type: string\n    cidr:\n      type: string\n    upstreamVpc:\n      type: string\n      default: none\n    owner:\n      type: string\n    replicas:\n      type: number\n      default: 2\n    password:\n      type: string\n  outputs:\n    vpc_id:\n      value: ${{resource.vpc.id}}\n    ips:\n      value:\n        - ${{resource.app.privateIp}}\n  resources:\n",
    );
    s += &format!("    - name: vpc\n      provider: aws\n      type: vpc\n      spec:\n        cidrBlock: ${{input.cidr}}\n        enableDnsSupport: true\n{tags}");
    s += &format!("    - name: subnet\n      provider: aws\n      type: subnet\n      spec:\n        vpcId: ${{resource.vpc.id}}\n        cidrBlock: ${{input.cidr}}\n{tags}");
    s += &format!("    - name: sg\n      provider: aws\n      type: security_group\n      spec:\n        vpcId: ${{resource.vpc.id}}\n        groupName: ${{env.name}}-sg\n        description: bench\n        ingress:\n          - protocol: tcp\n            fromPort: 443\n            toPort: 443\n            cidrBlocks: [0.0.0.0/0]\n{tags}");
    s += &format!("    - name: app\n      provider: aws\n      type: instance\n      spec:\n        ami: ami-0123456789abcdef0\n        instanceType: t3.micro\n        subnetId: ${{resource.subnet.id}}\n        securityGroupIds:\n          - ${{resource.sg.id}}\n        metadata:\n          httpTokens: required\n        userData: \"pw=${{input.password}}\"\n{tags}");
    let kube = |name: &str, kind: &str, api: &str, extra: &str| {
        format!("    - name: {name}\n      provider: kubernetes\n      manifest:\n        apiVersion: {api}\n        kind: {kind}\n        metadata:\n          name: {name}\n          namespace: ${{resource.ns.metadata.name}}\n{extra}")
    };
    s += "    - name: ns\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: Namespace\n        metadata:\n          name: ${input.app}-${env.name}\n";
    s += &kube("config", "ConfigMap", "v1", "        data:\n          VPC: ${resource.vpc.id}\n          UPSTREAM: ${input.upstreamVpc}\n          IP: ${resource.app.privateIp}\n");
    s += &kube(
        "secret",
        "Secret",
        "v1",
        "        stringData:\n          password: ${input.password}\n",
    );
    s += &kube("deploy", "Deployment", "apps/v1", "        spec:\n          replicas: ${input.replicas}\n          selector:\n            matchLabels:\n              app: app\n          template:\n            metadata:\n              labels:\n                app: app\n            spec:\n              containers:\n                - name: app\n                  image: registry.example.com/app@sha256:0000000000000000000000000000000000000000000000000000000000000000\n                  envFrom:\n                    - configMapRef:\n                        name: ${resource.config.metadata.name}\n              volumes:\n                - name: s\n                  secret:\n                    secretName: ${resource.secret.metadata.name}\n");
    s += &kube(
        "svc",
        "Service",
        "v1",
        "        spec:\n          ports:\n            - port: 80\n",
    );
    s += &kube("ingress", "Ingress", "networking.k8s.io/v1", "        spec:\n          rules:\n            - host: app.example.com\n              http:\n                paths:\n                  - path: /\n                    pathType: Prefix\n                    backend:\n                      service:\n                        name: ${resource.svc.metadata.name}\n");
    s
}

/// An environment of `n` instances; every instance but the first of each
/// group of ten takes its group leader's VPC id (a cross-instance edge).
fn environment(i: usize, n: usize) -> String {
    let name = ENVS[i];
    let mut s = format!(
        "apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: {name}\nspec:\n{}  targets:\n    kubernetes:\n      context: {name}\n    aws:\n      region: eu-west-1\n  vars:\n    owner: team\n  secrets: [secrets/{name}.sops.yaml]\n  modules:\n",
        if i > 0 { format!("  after: {}\n", ENVS[i - 1]) } else { String::new() }
    );
    for k in 0..n {
        s += &format!(
            "    - name: svc{k}\n      source: modules/service{}\n      inputs:\n        app: svc{k}\n        cidr: 10.{}.{}.0/24\n        owner: ${{var.owner}}\n        password: ${{secret.db.password}}\n",
            k % MODULES,
            k / 250,
            k % 250
        );
        if k % 10 != 0 {
            s += &format!(
                "        upstreamVpc: ${{module.svc{}.vpc_id}}\n",
                k - k % 10
            );
        }
    }
    s
}

fn repo(n: usize) -> Files {
    let mut f = Files::new();
    for m in 0..MODULES {
        let name = format!("service{m}");
        f.insert(
            format!("modules/{name}/module.yaml"),
            module(&name).into_bytes(),
        );
    }
    f.insert(
        "tidegate.yaml".into(),
        tidegate::load::project::document("bench").into_bytes(),
    );
    for (i, e) in ENVS.iter().enumerate() {
        f.insert(
            format!("environments/{e}.yaml"),
            environment(i, n).into_bytes(),
        );
        // A real SOPS file (the example's, made by `sops`), so the whole
        // command reads its ciphertexts as it would any repository's.
        f.insert(
            format!("secrets/{e}.sops.yaml"),
            include_bytes!("../secrets/dev.sops.yaml").to_vec(),
        );
    }
    f
}

fn first_lines(s: &str) -> String {
    s.lines().take(6).collect::<Vec<_>>().join("\n")
}

/// One run's stage times, in milliseconds.
struct Run {
    load: f64,
    graph: f64,
    plan: f64,
    text: f64,
}

fn run_once(files: &Files) -> (Run, usize, usize) {
    let t0 = Instant::now();
    let model = match load::load(files) {
        Ok(m) => m,
        Err(e) => panic!(
            "synthetic repository must load: {}",
            first_lines(&e.to_string())
        ),
    };
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;

    let t1 = Instant::now();
    let graph = match Graph::build(&model) {
        Ok(g) => g,
        Err(e) => panic!(
            "synthetic repository must graph: {}",
            first_lines(&e.to_string())
        ),
    };
    let levels: usize = ENVS.iter().map(|e| graph.levels(e).len()).sum();
    let graph_ms = t1.elapsed().as_secs_f64() * 1e3;

    let t2 = Instant::now();
    let envs = ENVS
        .iter()
        .map(|e| plan::build_env(&model, &graph, e, None, &StructuralSecrets, None))
        .collect::<Result<Vec<_>, _>>()
        .expect("the offline plan builds");
    let p = Plan::new(PlanSource::Offline, envs);
    let plan_ms = t2.elapsed().as_secs_f64() * 1e3;
    let creates: usize = p.environments.iter().map(|e| e.counts.create).sum();
    assert_eq!(
        creates,
        model.resource_count(),
        "offline: everything is a create"
    );

    let t3 = Instant::now();
    let text = plan::output::text(&p, false);
    let text_ms = t3.elapsed().as_secs_f64() * 1e3;
    (
        Run {
            load: load_ms,
            graph: graph_ms,
            plan: plan_ms,
            text: text_ms,
        },
        levels,
        text.len(),
    )
}

/// Measures `n` instances per environment `runs` times in this process.
fn child(n: usize, runs: usize) {
    let files = repo(n);
    let bytes: usize = files.values().map(Vec::len).sum();
    let mut all = Vec::new();
    let (mut levels, mut text) = (0, 0);
    for _ in 0..runs {
        let (r, l, t) = run_once(&files);
        (levels, text) = (l, t);
        all.push(r);
    }
    let col = |f: fn(&Run) -> f64| all.iter().map(f).collect::<Vec<_>>();
    let total = col(|r| r.load + r.graph + r.plan + r.text);
    println!(
        "{} resources ({:.1} MiB of YAML, {levels} levels in all), {runs} runs, median (min..max) ms:",
        ENVS.len() * n * 10,
        bytes as f64 / 1048576.0
    );
    println!("  load + resolve     {}", summary(&col(|r| r.load), 1));
    println!("  graph + levels     {}", summary(&col(|r| r.graph), 1));
    println!("  offline plan       {}", summary(&col(|r| r.plan), 1));
    println!(
        "  plan text          {} ({:.1} MiB of text)",
        summary(&col(|r| r.text), 1),
        text as f64 / 1048576.0
    );
    println!("  total              {}", summary(&total, 1));
    println!("  peak memory (VmHWM) {}", mib(memory_kib(None, "VmHWM")));
}

/// Times `tidegate plan --offline` (all four environments, text to a
/// pipe this process drains) on the repository of `n` instances per
/// environment written to a temporary folder, `runs` times.
fn whole(n: usize, runs: usize) {
    let dir = tempfile::TempDir::new().expect("a temporary folder");
    for (path, bytes) in repo(n).iter() {
        let at = dir.path().join(path);
        std::fs::create_dir_all(at.parent().expect("a folder")).expect("writable");
        std::fs::write(at, bytes).expect("writable");
    }
    let bin = env!("CARGO_BIN_EXE_tidegate");
    let (mut times, mut peaks, mut bytes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..runs {
        let t = Instant::now();
        let out = Command::new("/usr/bin/time")
            .args([
                "-f",
                "maxrss-kib %M",
                bin,
                "plan",
                "--offline",
                "--color",
                "never",
                "--repo",
            ])
            .arg(dir.path())
            .output()
            .expect("GNU time and tidegate run");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "the plan has changes: {err}");
        bytes = out.stdout.len();
        let kib: f64 = err
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("maxrss-kib "))
            .and_then(|k| k.trim().parse().ok())
            .expect("GNU time prints the max RSS");
        peaks.push(kib / 1024.0);
    }
    println!(
        "{} resources: whole `tidegate plan --offline` {} ms, peak RSS {} MiB, {:.1} MiB of plan text",
        ENVS.len() * n * 10,
        summary(&times, 1),
        summary(&peaks, 1),
        bytes as f64 / 1048576.0
    );
}

/// A repository of one environment and one module whose ConfigMap holds
/// `keys` entries under `data`.
fn wide_map_repo(keys: usize) -> Files {
    let mut m = String::from("apiVersion: tidegate.dev/v1\nkind: Module\nmetadata:\n  name: wide\nspec:\n  resources:\n    - name: config\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: wide\n          namespace: default\n        data:\n");
    for k in 0..keys {
        m += &format!("          key{k}: value-{k}\n");
    }
    let e = "apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: dev\nspec:\n  modules:\n    - name: wide\n      source: modules/wide\n";
    let mut f = Files::new();
    f.insert("modules/wide/module.yaml".into(), m.into_bytes());
    f.insert("environments/dev.yaml".into(), e.as_bytes().to_vec());
    f.insert(
        "tidegate.yaml".into(),
        tidegate::load::project::document("bench").into_bytes(),
    );
    f
}

/// Times the YAML parse and the `validate` check of a map of `keys` keys.
fn yaml_keys(keys: usize, runs: usize) {
    let files = wide_map_repo(keys);
    let text = std::str::from_utf8(&files["modules/wide/module.yaml"])
        .expect("generated UTF-8")
        .to_string();
    let (mut parse, mut check) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t0 = Instant::now();
        let mut diags = tidegate::diag::Diagnostics::default();
        let docs = load::yaml::parse("modules/wide/module.yaml", &text, &mut diags);
        assert!(docs.is_some() && diags.is_empty(), "the wide map parses");
        parse.push(t0.elapsed().as_secs_f64() * 1e3);
        let t1 = Instant::now();
        if let Err(e) = tidegate::pipeline::check(&files) {
            panic!("the wide map validates: {}", first_lines(&e.to_string()));
        }
        check.push(t1.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "{keys} keys in one map ({:.1} MiB of YAML), {runs} runs, median (min..max) ms:",
        text.len() as f64 / 1048576.0
    );
    println!("  YAML parse         {}", summary(&parse, 1));
    println!("  validate (check)   {}", summary(&check, 1));
}

fn main() {
    let Some(args) = common::args_or_skip("load") else {
        return;
    };
    let args = Args::parse_from(args);
    if !args.yaml_keys.is_empty() {
        for &keys in &args.yaml_keys {
            yaml_keys(keys, args.runs);
        }
        return;
    }
    if let Some(n) = args.child {
        child(n, args.runs);
        return;
    }
    if args.whole {
        for size in &args.resources {
            whole(size / (ENVS.len() * 10), args.runs);
        }
        return;
    }
    let me = std::env::current_exe().expect("own path");
    for size in &args.resources {
        let n = (size / (ENVS.len() * 10)).max(1);
        let status = Command::new(&me)
            .args(["--child", &n.to_string(), "--runs", &args.runs.to_string()])
            .arg("--bench")
            .status()
            .expect("the measuring child starts");
        assert!(status.success(), "the measuring child failed: {status}");
    }
}
