//! Benchmark: load + resolve + graph (+ render) of a synthetic repository of
//! 4 environments × 250 module instances × 10 resources = 10,000 resources.
//!
//! Run with `cargo run --release --bin bench_load [-- <instances per env>]`.
//! Prints the time of each stage and the peak memory (VmHWM) of the process.

use std::collections::HashMap;
use std::time::Instant;

use tidegate::graph::Graph;
use tidegate::load::{self, Files};
use tidegate::render::{self, RenderOptions, StructuralSecrets};

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
    s += &kube("deploy", "Deployment", "apps/v1", "        spec:\n          replicas: ${input.replicas}\n          template:\n            spec:\n              containers:\n                - name: app\n                  image: registry.example.com/app@sha256:0000000000000000000000000000000000000000000000000000000000000000\n                  envFrom:\n                    - configMapRef:\n                        name: ${resource.config.metadata.name}\n              volumes:\n                - name: s\n                  secret:\n                    secretName: ${resource.secret.metadata.name}\n");
    s += &kube(
        "svc",
        "Service",
        "v1",
        "        spec:\n          ports:\n            - port: 80\n",
    );
    s += &kube("ingress", "Ingress", "networking.k8s.io/v1", "        spec:\n          rules:\n            - host: app.example.com\n              http:\n                paths:\n                  - path: /\n                    backend:\n                      service:\n                        name: ${resource.svc.metadata.name}\n");
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
    for (i, e) in ENVS.iter().enumerate() {
        f.insert(
            format!("environments/{e}.yaml"),
            environment(i, n).into_bytes(),
        );
        f.insert(
            format!("secrets/{e}.sops.yaml"),
            b"db:\n  password: ENC[AES256_GCM,data:x,type:str]\nsops:\n  version: 3.11.0\n"
                .to_vec(),
        );
    }
    f
}

fn first_lines(s: &str) -> String {
    s.lines().take(6).collect::<Vec<_>>().join("\n")
}

fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(250);
    let files = repo(n);
    let bytes: usize = files.values().map(Vec::len).sum();

    let t0 = Instant::now();
    let model = match load::load(&files) {
        Ok(m) => m,
        Err(e) => panic!(
            "synthetic repository must load: {}",
            first_lines(&e.to_string())
        ),
    };
    let t_load = t0.elapsed();

    let t1 = Instant::now();
    let graph = match Graph::build(&model) {
        Ok(g) => g,
        Err(e) => panic!(
            "synthetic repository must graph: {}",
            first_lines(&e.to_string())
        ),
    };
    let levels: usize = ENVS.iter().map(|e| graph.levels(e).len()).sum();
    let t_graph = t1.elapsed();

    let t2 = Instant::now();
    let known = HashMap::new();
    let opts = RenderOptions {
        known: &known,
        secrets: &StructuralSecrets,
        owner: None,
    };
    let mut rendered = 0;
    for e in ENVS {
        rendered += render::render_env(&model, e, opts).expect("renders").len();
    }
    let t_render = t2.elapsed();

    println!(
        "synthetic repo: {} environments x {n} instances x 10 resources = {} resources ({:.1} MiB of YAML)",
        ENVS.len(),
        model.resource_count(),
        bytes as f64 / 1048576.0
    );
    println!("load + resolve: {:>8.1} ms", t_load.as_secs_f64() * 1e3);
    println!(
        "graph + levels: {:>8.1} ms ({} nodes, {} edges, {levels} levels)",
        t_graph.as_secs_f64() * 1e3,
        graph.resource_count(),
        graph.edge_count()
    );
    println!(
        "total (load + resolve + graph): {:.1} ms",
        (t_load + t_graph).as_secs_f64() * 1e3
    );
    println!(
        "render all:     {:>8.1} ms ({rendered} resources)",
        t_render.as_secs_f64() * 1e3
    );
    match peak_memory_kib() {
        Some(k) => println!("peak memory (VmHWM): {:.1} MiB", k as f64 / 1024.0),
        None => println!("peak memory: unavailable (no /proc/self/status)"),
    }
}
