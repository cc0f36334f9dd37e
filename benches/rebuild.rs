//! Benchmark of a disaster-recovery rebuild: an environment built from Git
//! onto empty targets (moto for EC2, the kube-sim binary for Kubernetes,
//! both on loopback), with an injected latency per provider call.
//!
//! Prints, per run, the measured RTO (wall time of the rebuild), the
//! critical path (the longest dependency chain of per-resource durations:
//! the lower bound with unlimited parallelism) and their ratio; then the
//! median and spread over the runs. Each run rebuilds under a fresh owner
//! name (a blue/green copy), so every run starts from empty targets.
//!
//! ```text
//! cargo build --release -p kube-sim
//! cargo bench --bench rebuild -- --cells 25 --latency-ms 50 --runs 5
//! cargo bench --bench rebuild -- --example dev --runs 3
//! ```

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{median, root, spread, Scratch, Stand};

use clap::Parser;
use tidegate::execute::{self, EnvRun};
use tidegate::observe::Providers;
use tidegate::provider::{Change, Desired, Health, Live, Provider, ProviderKind, Result};

#[derive(Parser)]
struct Args {
    /// Generated environment: a VPC plus this many cells of 8 resources
    /// (subnet, security group, instance; namespace, 2 ConfigMaps,
    /// Deployment, Service).
    #[arg(long, default_value_t = 25)]
    cells: usize,
    /// Rebuild this environment of the bundled example instead.
    #[arg(long)]
    example: Option<String>,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Latency added to every provider call.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    #[arg(long, default_value_t = 32)]
    parallelism: usize,
    /// Rebuild every run into the same moto and kube-sim (later runs then
    /// find the earlier runs' objects there) instead of fresh ones per run.
    #[arg(long)]
    reuse_stand: bool,
}

/// A provider whose every call first waits `latency` (a distant API).
struct Slow {
    inner: Box<dyn Provider>,
    latency: Duration,
}

#[async_trait::async_trait]
impl Provider for Slow {
    fn kind(&self) -> ProviderKind {
        self.inner.kind()
    }
    async fn observe(&self, kinds: &[String]) -> Result<Vec<Live>> {
        tokio::time::sleep(self.latency).await;
        self.inner.observe(kinds).await
    }
    async fn observe_in(&self, scope: &tidegate::provider::Scope) -> Result<Vec<Live>> {
        tokio::time::sleep(self.latency).await;
        self.inner.observe_in(scope).await
    }
    async fn plan(&self, d: &Desired, l: Option<&Live>) -> Result<Change> {
        tokio::time::sleep(self.latency).await;
        self.inner.plan(d, l).await
    }
    async fn apply(&self, d: &Desired, l: Option<&Live>) -> Result<Live> {
        tokio::time::sleep(self.latency).await;
        self.inner.apply(d, l).await
    }
    async fn delete(&self, l: &Live) -> Result<()> {
        tokio::time::sleep(self.latency).await;
        self.inner.delete(l).await
    }
    async fn health(&self, l: &Live) -> Result<Health> {
        tokio::time::sleep(self.latency).await;
        self.inner.health(l).await
    }
    async fn record_inventory(&self, owned: &[Live]) -> Result<()> {
        tokio::time::sleep(self.latency).await;
        self.inner.record_inventory(owned).await
    }
    fn api_calls(&self) -> BTreeMap<String, u64> {
        self.inner.api_calls()
    }
}

/// A generated repository: environment `bench` with a network and `cells`
/// cells.
fn generate(dir: &Path, cells: usize) {
    let mut env = String::from(
        "apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: bench\nspec:\n  targets:\n    kubernetes:\n      context: bench\n    aws:\n      region: us-east-1\n  policy:\n    defaultSeverity: warning\n  modules:\n    - name: network\n      source: modules/network\n",
    );
    for i in 0..cells {
        env.push_str(&format!(
            "    - name: cell{i}\n      source: modules/cell\n      inputs:\n        index: \"{i}\"\n        vpcId: ${{module.network.vpc_id}}\n"
        ));
    }
    let network = "apiVersion: tidegate.dev/v1\nkind: Module\nmetadata:\n  name: network\nspec:\n  outputs:\n    vpc_id:\n      value: ${resource.vpc.id}\n  resources:\n    - name: vpc\n      provider: aws\n      type: vpc\n      spec:\n        cidrBlock: 10.0.0.0/16\n";
    let cell = "apiVersion: tidegate.dev/v1\nkind: Module\nmetadata:\n  name: cell\nspec:\n  inputs:\n    index:\n      type: string\n    vpcId:\n      type: string\n  resources:\n    - name: subnet\n      provider: aws\n      type: subnet\n      spec:\n        vpcId: ${input.vpcId}\n        cidrBlock: 10.0.${input.index}.0/24\n    - name: sg\n      provider: aws\n      type: security_group\n      spec:\n        vpcId: ${input.vpcId}\n        groupName: ${env.name}-cell${input.index}\n        description: cell\n    - name: server\n      provider: aws\n      type: instance\n      spec:\n        ami: ami-1e749f67\n        instanceType: t3.micro\n        subnetId: ${resource.subnet.id}\n        securityGroupIds: ['${resource.sg.id}']\n        metadata:\n          httpTokens: required\n    - name: ns\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: Namespace\n        metadata:\n          name: ${env.name}-cell${input.index}\n    - name: config\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: network\n          namespace: ${env.name}-cell${input.index}\n        data:\n          SUBNET: ${resource.subnet.id}\n          SERVER: ${resource.server.privateIp}\n    - name: flags\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: flags\n          namespace: ${env.name}-cell${input.index}\n        data:\n          beta: \"on\"\n    - name: web\n      provider: kubernetes\n      manifest:\n        apiVersion: apps/v1\n        kind: Deployment\n        metadata:\n          name: web\n          namespace: ${env.name}-cell${input.index}\n        spec:\n          replicas: 1\n          selector:\n            matchLabels: { app: web }\n          template:\n            metadata:\n              labels: { app: web }\n            spec:\n              containers:\n                - name: web\n                  image: registry.example.com/web@sha256:8074748e826827434bbc9e3e5272c2b8fc34cf74eb9e94ebb489afe6cfcef7aa\n    - name: svc\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: Service\n        metadata:\n          name: web\n          namespace: ${env.name}-cell${input.index}\n        spec:\n          selector: { app: web }\n          ports:\n            - port: 80\n";
    let project = tidegate::load::project::document("bench");
    for (p, t) in [
        ("tidegate.yaml", project.as_str()),
        ("environments/bench.yaml", env.as_str()),
        ("modules/network/module.yaml", network),
        ("modules/cell/module.yaml", cell),
    ] {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, t).unwrap();
    }
}

/// Both providers of `env` on the stand, each call slowed by `latency`.
async fn providers(
    stand: &Stand,
    model: &tidegate::model::Model,
    env: &str,
    owner: &str,
    latency: Duration,
) -> Providers {
    let (k8s, aws) = stand.connect(model, env, owner).await;
    let list: Vec<Box<dyn Provider>> = vec![
        Box::new(Slow {
            inner: Box::new(k8s),
            latency,
        }),
        Box::new(Slow {
            inner: Box::new(aws),
            latency,
        }),
    ];
    Providers::from_parts(owner, list)
}

/// The first request to a fresh moto builds its region's backend (default
/// VPC, AMI catalogue) for a few seconds; a real EC2 endpoint has no such
/// cold start, so one untimed read takes it before the clock starts.
/// Returns how long it took.
async fn warm_up(stand: &Stand, model: &tidegate::model::Model, env: &str) -> f64 {
    let t = Instant::now();
    let (k8s, aws) = stand.connect(model, env, "warm-up").await;
    let kinds = ["vpc".to_string(), "instance".to_string()];
    aws.observe(&kinds).await.expect("moto answers");
    k8s.observe(&["v1/ConfigMap".to_string()])
        .await
        .expect("kube-sim answers");
    t.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let Some(args) = common::args_or_skip("rebuild") else {
        return;
    };
    let args = Args::parse_from(args);
    let scratch = Scratch::new("bench-rebuild");
    let dir = scratch.path();
    let (repo, env) = match &args.example {
        Some(e) => (root(), e.clone()),
        None => {
            generate(&dir.join("repo"), args.cells);
            (dir.join("repo"), "bench".to_string())
        }
    };
    let files = tidegate::load::read_dir(&repo).expect("the repository reads");
    let checked = tidegate::pipeline::check(&files).unwrap_or_else(|r| panic!("{r}"));
    let (model, graph) = (checked.model, checked.graph);
    let environment = model.environment(&env).expect("the environment exists");
    let context = environment
        .kubernetes
        .as_ref()
        .and_then(|k| k.context.clone())
        .unwrap_or_else(|| "bench".into());
    let ids = tidegate::secrets::Identities::load(
        &tidegate::secrets::IdentityOptions {
            age_key_dir: Some(root().join("secrets/demo-keys")),
            ..Default::default()
        },
        &|_| None,
    )
    .expect("demo keys");
    let secrets = tidegate::secrets::load_env(environment, &files, &ids).expect("secrets");
    let mut stand = Some(Stand::start(dir, &context));
    let resources = graph.levels(&env).iter().map(Vec::len).sum::<usize>();
    println!(
        "rebuild of {env}: {resources} resources, {} levels, latency {} ms per provider call, parallelism {}",
        graph.levels(&env).len(),
        args.latency_ms,
        args.parallelism
    );
    let latency = Duration::from_millis(args.latency_ms);
    let (mut rtos, mut paths, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..args.runs {
        let owner = format!("{env}-r{run}");
        if run > 0 && !args.reuse_stand {
            drop(stand.take()); // stop the old stand-ins before starting new ones
            stand = Some(Stand::start(dir, &context));
        }
        let stand = stand.as_ref().expect("a stand");
        let warm = warm_up(stand, &model, &env).await;
        let t0 = Instant::now();
        let p = providers(stand, &model, &env, &owner, latency).await;
        let environment = model.environment(&env).expect("the environment exists");
        let er = EnvRun::new(&model, &graph, environment, &p, &secrets)
            .owner(Some(&owner))
            .options(execute::Options {
                parallelism: args.parallelism,
                health_poll: Duration::from_millis(50),
                ..Default::default()
            });
        let outcome = execute::run_env(&er).await.expect("the rebuild runs");
        let rto = t0.elapsed().as_secs_f64();
        let cp = outcome.critical_path(&graph, &env).as_secs_f64();
        let calls: HashMap<String, u64> = p.api_calls().into_iter().collect();
        println!(
            "run {run}: RTO {rto:.2}s, critical path {cp:.2}s, ratio {:.2} ({}; {} API calls; stand-in warm-up {warm:.2}s, not counted)",
            rto / cp,
            outcome.counts_line(),
            calls.values().sum::<u64>()
        );
        assert!(outcome.converged(), "{outcome:#?}");
        rtos.push(rto);
        paths.push(cp);
        ratios.push(rto / cp);
    }
    println!(
        "median over {} runs: RTO {:.2}s ({}), critical path {:.2}s ({}), ratio {:.2} ({})",
        args.runs,
        median(&rtos),
        spread(&rtos, 2),
        median(&paths),
        spread(&paths, 2),
        median(&ratios),
        spread(&ratios, 2)
    );
}
