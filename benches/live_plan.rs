//! Benchmark of a live plan: API calls and time of `plan` against moto (EC2)
//! and kube-sim (Kubernetes) at 100, 1,000 and 10,000 resources in one
//! environment.
//!
//! ```text
//! cargo build --release -p kube-sim
//! cargo bench --bench live_plan -- --resources 100,1000,10000 --runs 5
//! ```
//!
//! For each size: fresh stand-ins, one apply to create everything (its time
//! and calls are printed too), then `runs` live plans of the unchanged
//! environment, each with new connections as `tidegate plan` makes them.
//! Per run: the observe (one list sequence per kind) on its own, then the
//! whole plan (observe + render + the providers' predictions + diff).
//! Prints API calls by provider and operation, and time median (spread).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;
use common::{summary, Scratch, Stand};
use tidegate::execute::{self, EnvRun};
use tidegate::observe::{self, Providers};
use tidegate::provider::Provider;
use tidegate::render::StructuralSecrets;

#[derive(Parser)]
struct Args {
    /// Sizes, in resources of the one environment (a VPC and a Namespace
    /// plus cells of 10; see `common::cells_repo`).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    resources: Vec<usize>,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Every n-th cell of 10 also holds EC2 resources (a subnet and a
    /// security group), the others are Kubernetes-only. moto slows down
    /// steeply as it fills (2,000 EC2 objects did not finish creating in 20
    /// minutes), so the default keeps EC2 at 2 % of the resources.
    #[arg(long, default_value_t = 10)]
    ec2_every: usize,
    /// Requests in flight at once (apply parallelism and plan concurrency).
    #[arg(long, default_value_t = 32)]
    parallelism: usize,
}

const ENV: &str = "bench";

fn total(calls: &BTreeMap<String, u64>) -> u64 {
    calls.values().sum()
}

fn calls_line(calls: &BTreeMap<String, u64>) -> String {
    calls
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn providers(stand: &Stand, model: &tidegate::model::Model) -> Providers {
    let (k8s, aws) = stand.connect(model, ENV, ENV).await;
    let list: Vec<Box<dyn Provider>> = vec![Box::new(k8s), Box::new(aws)];
    Providers::from_parts(ENV, list)
}

async fn measure(args: &Args, size: usize, scratch: &Scratch) {
    let cells = (size.saturating_sub(2).div_ceil(10)).max(1);
    let dir = scratch.path().join(format!("n{size}"));
    common::cells_repo(&dir.join("repo"), cells, args.ec2_every, "");
    let files = tidegate::load::read_dir(&dir.join("repo")).expect("the repository reads");
    let checked = tidegate::pipeline::check(&files).unwrap_or_else(|r| panic!("{r}"));
    let (model, graph) = (checked.model, checked.graph);
    let resources = model.resource_count();
    let kinds = observe::scopes_of(&graph, ENV);
    let stand = Stand::start(&dir, ENV);

    // Create everything once.
    let t = Instant::now();
    let p = providers(&stand, &model).await;
    let environment = model.environment(ENV).expect("the environment exists");
    let er = EnvRun::new(&model, &graph, environment, &p, &StructuralSecrets).options(
        execute::Options {
            parallelism: args.parallelism,
            health_poll: Duration::from_millis(50),
            ..Default::default()
        },
    );
    let outcome = execute::run_env(&er).await.expect("the apply runs");
    assert!(outcome.converged(), "{}", outcome.counts_line());
    println!(
        "\n{resources} resources ({} kinds: {}): created in {:.1}s with {} API calls",
        kinds.values().map(|k| k.kinds.len()).sum::<usize>(),
        kinds
            .iter()
            .map(|(p, k)| format!("{p} {}", k.kinds.len()))
            .collect::<Vec<_>>()
            .join(", "),
        t.elapsed().as_secs_f64(),
        total(&p.api_calls())
    );
    drop(p);

    let (mut observe_s, mut plan_s) = (Vec::new(), Vec::new());
    let (mut observe_calls, mut plan_calls) = (BTreeMap::new(), BTreeMap::new());
    for _ in 0..args.runs {
        let p = providers(&stand, &model).await;
        let t = Instant::now();
        let live = observe::observe_env(&p, &kinds).await.expect("observe");
        observe_s.push(t.elapsed().as_secs_f64());
        assert_eq!(live.resources.len(), resources, "every resource observed");
        observe_calls = p.api_calls();

        let p = providers(&stand, &model).await;
        let t = Instant::now();
        let input = tidegate::plan::PlanInput {
            concurrency: args.parallelism,
            ..tidegate::plan::PlanInput::new(&model, &graph, environment, &p, &StructuralSecrets)
        };
        let plan = tidegate::plan::plan_env(&input)
            .await
            .expect("the plan runs");
        plan_s.push(t.elapsed().as_secs_f64());
        assert_eq!(
            plan.counts.changes(),
            0,
            "an unchanged environment plans no changes"
        );
        plan_calls = p.api_calls();
    }
    println!(
        "  observe: {} s; {} API calls: {}",
        summary(&observe_s, 3),
        total(&observe_calls),
        calls_line(&observe_calls)
    );
    println!(
        "  plan:    {} s; {} API calls: {}",
        summary(&plan_s, 3),
        total(&plan_calls),
        calls_line(&plan_calls)
    );
}

#[tokio::main]
async fn main() {
    let Some(args) = common::args_or_skip("live_plan") else {
        return;
    };
    let args = Args::parse_from(args);
    let scratch = Scratch::new("bench-live-plan");
    println!(
        "live plan of one environment, {} runs per size, {} requests in flight",
        args.runs, args.parallelism
    );
    for &size in &args.resources {
        measure(&args, size, &scratch).await;
    }
}
