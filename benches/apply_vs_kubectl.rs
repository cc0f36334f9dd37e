//! Benchmark 3 of issue 12: applying N Kubernetes objects with tidegate's
//! executor vs `kubectl apply --server-side -f` of the same rendered
//! manifests, side by side in one run, against the kube-sim binary.
//!
//! The generated repository has one environment (`bench`): a `base` module
//! (the Namespace plus the ConfigMaps that round N up) and instances of an
//! `app` module (8 ConfigMaps, a Deployment and a Service each) in that
//! namespace, N objects in all. The environment is rendered once
//! (`plan::render_desired`, no secrets) and written as one multi-document
//! YAML file for kubectl.
//!
//! Each run starts a fresh kube-sim process per side, so neither side sees
//! the other's objects or a warm cache; the two sides run one after the
//! other (the order alternates between runs). Timed:
//! - tidegate: connecting the provider (kubeconfig read) plus
//!   `execute::run_env` (observe, apply in dependency order with parallelism
//!   32, inventory), with `wait_healthy: false` because kubectl does not wait
//!   for readiness either. Loading and checking the repository is not timed
//!   (kubectl gets the manifests already rendered).
//! - kubectl: the whole `kubectl apply --server-side -f FILE` process
//!   (start, discovery, OpenAPI, one PATCH per object).
//!
//! Afterwards both clusters are checked to hold the same N objects.
//!
//! ```text
//! cargo build -p kube-sim --release
//! cargo bench --bench apply_vs_kubectl -- --objects 1000 --runs 3
//! cargo bench --bench apply_vs_kubectl -- --objects 1000 --runs 3 --kube real
//! ```
//!
//! With `--whole`, both sides are whole commands as a user runs them: the
//! repository (environment `dev`, default mix 1 Namespace + N-1 ConfigMaps,
//! `--mix apps` for the mix above) is written to disk as a Git repository
//! with one commit, and the timed processes are `tidegate apply --env dev
//! --yes --state-dir DIR` (this profile's binary, run in the repository with
//! `KUBECONFIG` pointing at a fresh server: process start, load, check,
//! lock, observe, plan with its dry runs, apply, health, inventory, record,
//! audit) and `kubectl apply --server-side -f FILE` (a fresh discovery
//! cache). Each side then runs its command again with nothing to change.
//! On kube-sim every request is counted (its `/_sim/counters`, discovery
//! included).
//!
//! ```text
//! cargo build --release -p kube-sim
//! cargo bench --bench apply_vs_kubectl -- --whole --runs 5
//! cargo bench --bench apply_vs_kubectl -- --whole --runs 3 --kube real
//! ```

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use common::{free_port, kube_sim_binary, median, spread, Killed};
use tidegate::execute::{self, EnvRun};
use tidegate::observe::Providers;
use tidegate::provider::kubernetes::Kubernetes;
use tidegate::provider::Provider;
use tidegate::render::StructuralSecrets;

#[derive(Parser)]
struct Args {
    /// Kubernetes objects to apply (at least 11: the Namespace plus one
    /// `app` instance).
    #[arg(long, default_value_t = 1000)]
    objects: usize,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// tidegate's resources in flight at once (default 32 for the
    /// executor; with `--whole`, tidegate's own default unless given).
    #[arg(long)]
    parallelism: Option<usize>,
    /// The objects: `apps` (the Namespace, instances of `app`: 8
    /// ConfigMaps, a Deployment and a Service each, and ConfigMaps
    /// rounding up) or `configmaps` (the Namespace and N-1 ConfigMaps).
    /// Default: `apps` for the executor, `configmaps` with `--whole`.
    #[arg(long)]
    mix: Option<String>,
    /// Time the whole `tidegate apply --env dev --yes` process on the
    /// repository written to disk as a Git repository, vs the whole
    /// `kubectl apply --server-side -f` process, then both again with
    /// nothing to change.
    #[arg(long)]
    whole: bool,
    /// The API server: `sim` (the kube-sim binary) or `real` (a real
    /// kube-apiserver with RBAC from tests/real-kube; both sides then
    /// authenticate as tidegate's ServiceAccount).
    #[arg(long, default_value = "sim")]
    kube: String,
}

/// Objects per `app` instance.
const PER_APP: usize = 10;
/// The environment of the executor-only mode.
const ENV: &str = "bench";
/// The environment of `--whole`, as a user names it on the command line.
const WHOLE_ENV: &str = "dev";

/// A fresh kube-sim process with one cluster, context `context`; its
/// kubeconfig is written to `kubeconfig`. Also returns its port (for the
/// request counters of its control API).
fn start_sim(kubeconfig: &Path, context: &str) -> (Killed, u16) {
    let _ = std::fs::remove_file(kubeconfig);
    let port = free_port();
    let child = Command::new(kube_sim_binary())
        .args(["--port", &port.to_string(), "--contexts", context])
        .arg("--kubeconfig-out")
        .arg(kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kube-sim starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() || !kubeconfig.is_file() {
        assert!(
            Instant::now() < deadline,
            "kube-sim does not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (Killed(child), port)
}

/// A fresh API server for one side: kube-sim, or a real control plane.
enum Server {
    Sim(#[allow(dead_code)] Killed, u16),
    Real(#[allow(dead_code)] Box<real_kube::ControlPlane>),
}

impl Server {
    /// kube-sim's requests so far (every request, discovery and OpenAPI
    /// included) by verb, and zeroes them; `None` on a real API server.
    fn take_counters(&self) -> Option<Calls> {
        let Server::Sim(_, port) = self else {
            return None;
        };
        let body = sim_control(*port, "GET")?;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        let mut calls = Calls::default();
        for e in json["counters"].as_array()? {
            let n = e["count"].as_u64().unwrap_or(0);
            *calls
                .0
                .entry(e["verb"].as_str().unwrap_or("?").to_string())
                .or_default() += n;
        }
        sim_control(*port, "DELETE")?;
        Some(calls)
    }
}

/// API requests by verb.
#[derive(Default)]
struct Calls(std::collections::BTreeMap<String, u64>);

impl Calls {
    fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

impl std::fmt::Display for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let by: Vec<String> = self.0.iter().map(|(v, n)| format!("{v} {n}")).collect();
        write!(f, "{} calls: {}", self.total(), by.join(", "))
    }
}

/// `METHOD /_sim/counters` on kube-sim's port: the body on 200.
fn sim_control(port: u16, method: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "{method} /_sim/counters HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

fn start_server(kube: &str, kubeconfig: &Path, context: &str) -> Server {
    match kube {
        "real" => {
            let plane = real_kube::ControlPlane::start()
                .unwrap_or_else(|e| panic!("the real kube-apiserver: {e}"));
            plane
                .cluster()
                .write_kubeconfig(kubeconfig, &[context], real_kube::Identity::Tidegate)
                .expect("kubeconfig written");
            Server::Real(Box::new(plane))
        }
        _ => {
            let (sim, port) = start_sim(kubeconfig, context);
            Server::Sim(sim, port)
        }
    }
}

/// The generated repository: environment `env` (its Kubernetes target is
/// kubeconfig context `context`), `base` (Namespace + `extra` ConfigMaps)
/// and `apps` instances of `app`.
fn generate(dir: &Path, env_name: &str, context: &str, apps: usize, extra: usize) {
    let mut env = format!(
        "apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: {env_name}\nspec:\n  targets:\n    kubernetes:\n      context: {context}\n  policy:\n    defaultSeverity: warning\n  modules:\n    - name: base\n      source: modules/base\n",
    );
    for i in 0..apps {
        env.push_str(&format!(
            "    - name: app{i}\n      source: modules/app\n      inputs:\n        index: \"{i}\"\n        namespace: ${{module.base.namespace}}\n"
        ));
    }
    let mut base = String::from(
        "apiVersion: tidegate.dev/v1\nkind: Module\nmetadata:\n  name: base\nspec:\n  outputs:\n    namespace:\n      value: ${resource.ns.metadata.name}\n  resources:\n    - name: ns\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: Namespace\n        metadata:\n          name: ${env.name}-apply\n",
    );
    for j in 0..extra {
        base.push_str(&format!(
            "    - name: extra{j}\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: extra{j}\n          namespace: ${{resource.ns.metadata.name}}\n        data:\n          index: \"{j}\"\n"
        ));
    }
    let mut app = String::from(
        "apiVersion: tidegate.dev/v1\nkind: Module\nmetadata:\n  name: app\nspec:\n  inputs:\n    index:\n      type: string\n    namespace:\n      type: string\n  resources:\n",
    );
    for k in 0..PER_APP - 2 {
        app.push_str(&format!(
            "    - name: cm{k}\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: app${{input.index}}-cm{k}\n          namespace: ${{input.namespace}}\n        data:\n          APP: app${{input.index}}\n          KEY: \"{k}\"\n"
        ));
    }
    app.push_str("    - name: web\n      provider: kubernetes\n      manifest:\n        apiVersion: apps/v1\n        kind: Deployment\n        metadata:\n          name: app${input.index}\n          namespace: ${input.namespace}\n        spec:\n          replicas: 1\n          selector:\n            matchLabels:\n              app: app${input.index}\n          template:\n            metadata:\n              labels:\n                app: app${input.index}\n            spec:\n              containers:\n                - name: web\n                  image: registry.example.com/web@sha256:8074748e826827434bbc9e3e5272c2b8fc34cf74eb9e94ebb489afe6cfcef7aa\n                  args: ['--name', '${input.index}']\n    - name: svc\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: Service\n        metadata:\n          name: app${input.index}\n          namespace: ${input.namespace}\n        spec:\n          selector:\n            app: app${input.index}\n          ports:\n            - port: 80\n");
    let project = tidegate::load::project::document("bench");
    let env_path = format!("environments/{env_name}.yaml");
    let mut files = vec![
        ("tidegate.yaml", project.as_str()),
        (env_path.as_str(), env.as_str()),
        ("modules/base/module.yaml", base.as_str()),
    ];
    // Without instances the module is not written (the ConfigMaps mix).
    if apps > 0 {
        files.push(("modules/app/module.yaml", app.as_str()));
    }
    for (p, t) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, t).unwrap();
    }
}

fn kubectl(kubeconfig: &Path) -> Command {
    // `.ci/.venv/bin/kubectl`, else the one on PATH.
    let mut c = Command::new(real_kube::kubectl_path());
    c.arg("--kubeconfig").arg(kubeconfig);
    c
}

/// Objects in the benchmark's namespace plus the namespace itself, read
/// with kubectl (not timed).
fn count_objects(kubeconfig: &Path, namespace: &str) -> usize {
    let out = kubectl(kubeconfig)
        .args([
            "get",
            "configmaps,deployments,services",
            "-n",
            namespace,
            "-o",
            "name",
        ])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ns = kubectl(kubeconfig)
        .args(["get", "namespace", namespace, "-o", "name"])
        .output()
        .expect("kubectl runs");
    // A real cluster's controller-manager adds kube-root-ca.crt to every namespace.
    let listed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| *l != "configmap/kube-root-ca.crt")
        .count();
    listed + usize::from(ns.status.success())
}

struct Bench<'a> {
    model: &'a tidegate::model::Model,
    graph: &'a tidegate::graph::Graph,
    dir: &'a Path,
    manifests: &'a Path,
    namespace: &'a str,
    objects: usize,
    parallelism: usize,
    kube: &'a str,
}

impl Bench<'_> {
    /// tidegate's apply onto a fresh kube-sim: seconds, API calls by operation.
    async fn tidegate(&self) -> (f64, String) {
        let kubeconfig = self.dir.join("kubeconfig-tidegate");
        let _server =
            tokio::task::block_in_place(|| start_server(self.kube, &kubeconfig, "tidegate"));
        let target = self.model.environment(ENV).unwrap().target(None);
        let t0 = Instant::now();
        let k8s = Kubernetes::connect_kubeconfig(&kubeconfig, &target, Default::default())
            .await
            .expect("kube-sim connects");
        let providers = Providers::from_parts(ENV, [Box::new(k8s) as Box<dyn Provider>]);
        let environment = self.model.environment(ENV).expect("the environment exists");
        let run = EnvRun::new(
            self.model,
            self.graph,
            environment,
            &providers,
            &StructuralSecrets,
        )
        .options(execute::Options {
            parallelism: self.parallelism,
            wait_healthy: false,
            ..Default::default()
        });
        let outcome = execute::run_env(&run).await.expect("the apply runs");
        let secs = t0.elapsed().as_secs_f64();
        assert!(outcome.converged(), "{}", outcome.counts_line());
        assert_eq!(
            outcome.count(tidegate::execute::Status::Created),
            self.objects,
            "{}",
            outcome.counts_line()
        );
        assert_eq!(count_objects(&kubeconfig, self.namespace), self.objects);
        let calls = providers.api_calls();
        let total: u64 = calls.values().sum();
        let by_op: Vec<String> = calls.iter().map(|(op, n)| format!("{op} {n}")).collect();
        (secs, format!("{total} API calls: {}", by_op.join(", ")))
    }

    /// `kubectl apply --server-side -f` onto a fresh kube-sim: seconds.
    fn kubectl(&self) -> f64 {
        let kubeconfig = self.dir.join("kubeconfig-kubectl");
        let _server = start_server(self.kube, &kubeconfig, "kubectl");
        let t0 = Instant::now();
        let out = kubectl(&kubeconfig)
            .args(["apply", "--server-side", "-f"])
            .arg(self.manifests)
            .output()
            .expect("kubectl runs (run .ci/setup-tools)");
        let secs = t0.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).lines().count(),
            self.objects
        );
        assert_eq!(count_objects(&kubeconfig, self.namespace), self.objects);
        secs
    }
}

/// The `--whole` mode: both commands as processes, as a user runs them.
struct Whole<'a> {
    dir: &'a Path,
    /// The generated repository, a Git repository with one commit.
    repo: &'a Path,
    manifests: &'a Path,
    namespace: &'a str,
    objects: usize,
    parallelism: Option<usize>,
    kube: &'a str,
}

/// One side's figures on one fresh server: the create and the no-change
/// re-apply, seconds and API calls (kube-sim only).
struct Sided {
    create: f64,
    create_calls: Option<Calls>,
    again: f64,
    again_calls: Option<Calls>,
}

impl Sided {
    fn line(&self) -> String {
        let calls = |c: &Option<Calls>| c.as_ref().map(|c| format!(" ({c})")).unwrap_or_default();
        format!(
            "create {:.3}s{}, again {:.3}s{}",
            self.create,
            calls(&self.create_calls),
            self.again,
            calls(&self.again_calls)
        )
    }
}

impl Whole<'_> {
    /// Runs `command` to the end: wall seconds and its output; panics
    /// unless it exits 0.
    fn timed(mut command: Command, what: &str) -> (f64, String) {
        command
            .stdin(Stdio::null())
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR");
        let t0 = Instant::now();
        let out = command.output().expect("the command starts");
        let secs = t0.elapsed().as_secs_f64();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{what} failed: {text}");
        (secs, text)
    }

    /// `tidegate apply --env dev --yes` (the `tidegate` binary of this
    /// profile, run in the repository as a user does), twice.
    fn tidegate(&self, run: usize) -> Sided {
        let kubeconfig = self.dir.join("kubeconfig-tidegate");
        let server = start_server(self.kube, &kubeconfig, WHOLE_ENV);
        server.take_counters();
        let state = self.dir.join(format!("state-{run}"));
        let command = || {
            let mut c = Command::new(env!("CARGO_BIN_EXE_tidegate"));
            c.args(["apply", "--env", WHOLE_ENV, "--yes", "--state-dir"])
                .arg(&state)
                .current_dir(self.repo)
                .env("KUBECONFIG", &kubeconfig);
            if let Some(p) = self.parallelism {
                c.args(["--parallelism", &p.to_string()]);
            }
            c
        };
        let (create, text) = Self::timed(command(), "tidegate apply");
        let create_calls = server.take_counters();
        let created = format!("{} created", self.objects);
        assert!(text.contains(&created), "no `{created}` in: {text}");
        assert_eq!(count_objects(&kubeconfig, self.namespace), self.objects);
        server.take_counters();
        let (again, text) = Self::timed(command(), "tidegate apply (again)");
        let again_calls = server.take_counters();
        let unchanged = format!("{} unchanged", self.objects);
        assert!(text.contains(&unchanged), "no `{unchanged}` in: {text}");
        Sided {
            create,
            create_calls,
            again,
            again_calls,
        }
    }

    /// `kubectl apply --server-side -f FILE`, twice.
    fn kubectl(&self) -> Sided {
        let kubeconfig = self.dir.join("kubeconfig-kubectl");
        let server = start_server(self.kube, &kubeconfig, WHOLE_ENV);
        server.take_counters();
        let command = || {
            let mut c = Command::new(real_kube::kubectl_path());
            c.args(["apply", "--server-side", "-f"])
                .arg(self.manifests)
                .env("KUBECONFIG", &kubeconfig)
                // A cache of its own per run: the first apply discovers the
                // fresh server as a user's first apply there does.
                .env("KUBECACHEDIR", self.dir.join("kube-cache"));
            c
        };
        let _ = std::fs::remove_dir_all(self.dir.join("kube-cache"));
        let (create, text) = Self::timed(command(), "kubectl apply");
        let create_calls = server.take_counters();
        assert_eq!(
            text.lines()
                .filter(|l| l.ends_with("serverside-applied"))
                .count(),
            self.objects,
            "{text}"
        );
        assert_eq!(count_objects(&kubeconfig, self.namespace), self.objects);
        server.take_counters();
        let (again, _) = Self::timed(command(), "kubectl apply (again)");
        let again_calls = server.take_counters();
        Sided {
            create,
            create_calls,
            again,
            again_calls,
        }
    }

    fn run(&self, runs: usize) {
        let (mut tg, mut kc) = (Vec::new(), Vec::new());
        for run in 0..runs {
            let (t, k) = if run % 2 == 0 {
                let t = self.tidegate(run);
                (t, self.kubectl())
            } else {
                let k = self.kubectl();
                (self.tidegate(run), k)
            };
            println!(
                "run {run}: tidegate {}\n       kubectl  {}\n       ratio tidegate/kubectl: create {:.3}, again {:.3}",
                t.line(),
                k.line(),
                t.create / k.create,
                t.again / k.again
            );
            tg.push(t);
            kc.push(k);
        }
        let col = |v: &[Sided], f: fn(&Sided) -> f64| v.iter().map(f).collect::<Vec<f64>>();
        for (name, f) in [
            ("create", (|s: &Sided| s.create) as fn(&Sided) -> f64),
            ("again", |s: &Sided| s.again),
        ] {
            let (t, k) = (col(&tg, f), col(&kc, f));
            let ratios: Vec<f64> = t.iter().zip(&k).map(|(a, b)| a / b).collect();
            println!(
                "median over {runs} runs, {name}: tidegate {:.3}s ({}), kubectl {:.3}s ({}), ratio {:.3} ({})",
                median(&t),
                spread(&t, 3),
                median(&k),
                spread(&k, 3),
                median(&ratios),
                spread(&ratios, 3)
            );
        }
    }
}

#[tokio::main]
async fn main() {
    let Some(args) = common::args_or_skip("apply_vs_kubectl") else {
        return;
    };
    let args = Args::parse_from(args);
    let mix = args
        .mix
        .clone()
        .unwrap_or_else(|| if args.whole { "configmaps" } else { "apps" }.into());
    let (apps, extra) = match mix.as_str() {
        "apps" => {
            assert!(
                args.objects > PER_APP,
                "--objects must be more than {PER_APP} with --mix apps"
            );
            let apps = (args.objects - 1) / PER_APP;
            (apps, args.objects - 1 - apps * PER_APP)
        }
        "configmaps" => {
            assert!(args.objects > 1, "--objects must be at least 2");
            (0, args.objects - 1)
        }
        other => panic!("--mix {other}: expected apps or configmaps"),
    };
    assert!(args.runs > 0, "--runs must be at least 1");
    let (env, context) = if args.whole {
        (WHOLE_ENV, WHOLE_ENV)
    } else {
        (ENV, "tidegate")
    };
    let tmp = tempfile::TempDir::new().expect("a temporary directory");
    let dir = tmp.path();
    let repo = dir.join("repo");
    generate(&repo, env, context, apps, extra);
    let files = tidegate::load::read_dir(&repo).expect("the repository reads");
    let checked = tidegate::pipeline::check(&files).unwrap_or_else(|r| panic!("{r}"));
    let (model, graph) = (checked.model, checked.graph);

    let desired = tidegate::plan::render_desired(&model, env, None, &StructuralSecrets, None)
        .expect("the environment renders");
    assert_eq!(desired.len(), args.objects);
    let mut yaml = String::new();
    for d in &desired {
        let json = d.body.to_json_exposed().expect("a fully known manifest");
        yaml.push_str("---\n");
        yaml.push_str(&serde_json::to_string_pretty(&json).unwrap());
        yaml.push('\n');
    }
    let manifests = dir.join("manifests.yaml");
    std::fs::write(&manifests, yaml).unwrap();
    let namespace = format!("{env}-apply");
    let what = format!(
        "{} Kubernetes objects (1 Namespace, {} ConfigMaps, {apps} Deployments, {apps} Services)",
        args.objects,
        args.objects - 1 - 2 * apps,
    );
    let server = if args.kube == "real" {
        "real kube-apiserver (RBAC, as tidegate's ServiceAccount)"
    } else {
        "kube-sim"
    };

    if args.whole {
        common::git(&repo, &["init", "-q", "-b", "main"]);
        common::git(&repo, &["add", "."]);
        common::git(&repo, &["commit", "-q", "-m", "bench"]);
        let whole = Whole {
            dir,
            repo: &repo,
            manifests: &manifests,
            namespace: &namespace,
            objects: args.objects,
            parallelism: args.parallelism,
            kube: &args.kube,
        };
        println!(
            "whole command: `tidegate apply --env {WHOLE_ENV} --yes{}` vs `kubectl apply --server-side -f FILE`, {what}, each onto a fresh {server}, then the same command again (nothing to change)",
            args.parallelism
                .map(|p| format!(" --parallelism {p}"))
                .unwrap_or_default()
        );
        whole.run(args.runs);
        return;
    }

    let parallelism = args.parallelism.unwrap_or(32);
    let bench = Bench {
        model: &model,
        graph: &graph,
        dir,
        manifests: &manifests,
        namespace: &namespace,
        objects: args.objects,
        parallelism,
        kube: &args.kube,
    };
    println!(
        "apply of {what} onto a fresh {server} per side; tidegate parallelism {parallelism}, wait_healthy false; kubectl apply --server-side -f",
    );
    let (mut tg, mut kc, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..args.runs {
        let (t, calls, k) = if run % 2 == 0 {
            let (t, calls) = bench.tidegate().await;
            (t, calls, bench.kubectl())
        } else {
            let k = bench.kubectl();
            let (t, calls) = bench.tidegate().await;
            (t, calls, k)
        };
        println!(
            "run {run}: tidegate {t:.3}s ({calls}), kubectl {k:.3}s, ratio tidegate/kubectl {:.3}",
            t / k
        );
        tg.push(t);
        kc.push(k);
        ratios.push(t / k);
    }
    println!(
        "median over {} runs: tidegate {:.3}s ({}), kubectl {:.3}s ({}), ratio {:.3} ({})",
        args.runs,
        median(&tg),
        spread(&tg, 3),
        median(&kc),
        spread(&kc, 3),
        median(&ratios),
        spread(&ratios, 3)
    );
}
