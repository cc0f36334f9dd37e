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

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use common::{free_port, kube_sim_binary, median, root, spread, Killed};
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
    /// tidegate's resources in flight at once.
    #[arg(long, default_value_t = 32)]
    parallelism: usize,
    /// The API server: `sim` (the kube-sim binary) or `real` (a real
    /// kube-apiserver with RBAC from tests/real-kube; both sides then
    /// authenticate as tidegate's ServiceAccount).
    #[arg(long, default_value = "sim")]
    kube: String,
}

/// Objects per `app` instance.
const PER_APP: usize = 10;
const ENV: &str = "bench";

/// A fresh kube-sim process with one cluster, context `context`; its
/// kubeconfig is written to `kubeconfig`.
fn start_sim(kubeconfig: &Path, context: &str) -> Killed {
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
    Killed(child)
}

/// A fresh API server for one side: kube-sim, or a real control plane.
enum Server {
    Sim(#[allow(dead_code)] Killed),
    Real(#[allow(dead_code)] Box<real_kube::ControlPlane>),
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
        _ => Server::Sim(start_sim(kubeconfig, context)),
    }
}

/// The generated repository: `base` (Namespace + `extra` ConfigMaps) and
/// `apps` instances of `app`.
fn generate(dir: &Path, apps: usize, extra: usize) {
    let mut env = String::from(
        "apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: bench\nspec:\n  targets:\n    kubernetes:\n      context: tidegate\n  policy:\n    defaultSeverity: warning\n  modules:\n    - name: base\n      source: modules/base\n",
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
    for (p, t) in [
        ("tidegate.yaml", project.as_str()),
        ("environments/bench.yaml", env.as_str()),
        ("modules/base/module.yaml", base.as_str()),
        ("modules/app/module.yaml", app.as_str()),
    ] {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, t).unwrap();
    }
}

fn kubectl(kubeconfig: &Path) -> Command {
    let mut c = Command::new(root().join(".ci/.venv/bin/kubectl"));
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

#[tokio::main]
async fn main() {
    let Some(args) = common::args_or_skip("apply_vs_kubectl") else {
        return;
    };
    let args = Args::parse_from(args);
    assert!(
        args.objects > PER_APP && args.runs > 0,
        "--objects must be more than {PER_APP} and --runs at least 1"
    );
    let apps = (args.objects - 1) / PER_APP;
    let extra = args.objects - 1 - apps * PER_APP;
    let tmp = tempfile::TempDir::new().expect("a temporary directory");
    let dir = tmp.path();
    generate(&dir.join("repo"), apps, extra);
    let files = tidegate::load::read_dir(&dir.join("repo")).expect("the repository reads");
    let checked = tidegate::pipeline::check(&files).unwrap_or_else(|r| panic!("{r}"));
    let (model, graph) = (checked.model, checked.graph);

    let desired = tidegate::plan::render_desired(&model, ENV, None, &StructuralSecrets, None)
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
    let namespace = format!("{ENV}-apply");

    let bench = Bench {
        model: &model,
        graph: &graph,
        dir,
        manifests: &manifests,
        namespace: &namespace,
        objects: args.objects,
        parallelism: args.parallelism,
        kube: &args.kube,
    };
    println!(
        "apply of {} Kubernetes objects (1 Namespace, {} ConfigMaps, {apps} Deployments, {apps} Services) onto a fresh {} per side; tidegate parallelism {}, wait_healthy false; kubectl apply --server-side -f",
        args.objects,
        args.objects - 1 - 2 * apps,
        if args.kube == "real" { "real kube-apiserver (RBAC, as tidegate's ServiceAccount)" } else { "kube-sim" },
        args.parallelism
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
