//! Benchmark: `forEach` over N items, planned offline, as a user runs it.
//!
//! ```text
//! cargo bench --bench foreach                      # 500 and 5,000 items, 7 runs each
//! cargo bench --bench foreach -- --items 500 --runs 11
//! ```
//!
//! Two repositories per size: a module instance repeated over a var of N
//! names (`forEach: ${var.tenants}`, one ConfigMap each), and one resource
//! repeated over a module input of N names (per-instance module copy).
//! Times the whole `tidegate plan --offline --env dev --format json`
//! process (start, read, load, expand, check, graph, render, plan,
//! print), and the in-process load + expansion alone, as medians with
//! their spread.

mod common;

use std::process::{Command, Stdio};
use std::time::Instant;

use clap::Parser;
use common::summary;

#[derive(Parser)]
struct Args {
    #[arg(long, value_delimiter = ',', default_value = "500,5000")]
    items: Vec<usize>,
    #[arg(long, default_value_t = 7)]
    runs: usize,
}

const MODULE: &str = "apiVersion: tidegate.dev/v1\nkind: Module\nmetadata:\n  name: app\nspec:\n  inputs:\n    name: {type: string}\n    zones: {type: list, default: []}\n  resources:\n    - name: config\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: ${input.name}\n          namespace: default\n        data:\n          NAME: ${input.name}\n    - name: zone\n      provider: kubernetes\n      forEach: ${input.zones}\n      manifest:\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: ${input.name}-${each.key}\n          namespace: default\n        data:\n          ZONE: ${each.value}\n";

fn repo(items: usize, on_instance: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let names: Vec<String> = (0..items).map(|i| format!("t{i:05}")).collect();
    let list = format!("[{}]", names.join(", "));
    let module = if on_instance {
        "    - name: tenant\n      source: modules/app\n      forEach: ${var.tenants}\n      inputs:\n        name: ${each.key}\n".to_string()
    } else {
        "    - name: zones\n      source: modules/app\n      inputs:\n        name: z\n        zones: ${var.tenants}\n".to_string()
    };
    let env = format!("apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: dev\nspec:\n  targets:\n    kubernetes:\n      context: dev\n  vars:\n    tenants: {list}\n  modules:\n{module}");
    let files = vec![
        (
            "tidegate.yaml".to_string(),
            tidegate::load::project::document("bench"),
        ),
        ("environments/dev.yaml".to_string(), env),
        ("modules/app/module.yaml".to_string(), MODULE.to_string()),
    ];
    common::write_files(dir.path(), &files);
    dir
}

fn main() {
    let Some(args) = common::args_or_skip("foreach") else {
        return;
    };
    let args = Args::parse_from(args);
    let bin = env!("CARGO_BIN_EXE_tidegate");
    for &n in &args.items {
        for (on_instance, what) in [(true, "instance forEach"), (false, "resource forEach")] {
            let dir = repo(n, on_instance);
            let mut whole = Vec::new();
            let mut load = Vec::new();
            let mut planned = 0;
            for _ in 0..args.runs {
                let t = Instant::now();
                let out = Command::new(bin)
                    .args([
                        "plan",
                        "--offline",
                        "--env",
                        "dev",
                        "--format",
                        "json",
                        "--repo",
                    ])
                    .arg(dir.path())
                    .stderr(Stdio::inherit())
                    .output()
                    .expect("tidegate runs");
                whole.push(t.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(out.status.code(), Some(2), "the plan has changes");
                let plan: serde_json::Value =
                    serde_json::from_slice(&out.stdout).expect("a JSON plan");
                planned = plan["environments"][0]["counts"]["create"]
                    .as_u64()
                    .unwrap_or(0);
                let t = Instant::now();
                let files = tidegate::load::read_dir(dir.path()).expect("readable");
                let model = tidegate::load::load(&files).expect("valid");
                load.push(t.elapsed().as_secs_f64() * 1000.0);
                drop(model);
            }
            println!(
                "foreach: {what} over {n} items ({planned} resources planned): whole `tidegate plan --offline` {} ms; in-process read + load + expand {} ms",
                summary(&whole, 1),
                summary(&load, 1)
            );
        }
    }
}
