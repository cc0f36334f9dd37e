//! Benchmark: how observe and apply of the AWS provider scale with the
//! number of instances, against a real moto server on loopback.
//!
//! Run: `cargo bench --bench aws_observe -- [N ...]` (needs
//! `.ci/.venv/bin/moto_server`, installed by `.ci/setup-tools`). Prints, per
//! instance count, the API calls and wall time of one observe (median of 5)
//! and the mean time and calls of creating one instance.

mod common;

use std::time::Instant;

use aws_sdk_ec2::config::{Credentials, Region};
use tidegate::provider::aws::{AwsProvider, Options};
use tidegate::provider::{Desired, Provider, ResourceId};
use tidegate::value::Value;

fn desired(kind: &str, name: &str, body: serde_json::Value) -> Desired {
    Desired {
        id: ResourceId {
            module: "bench".into(),
            name: name.into(),
        },
        kind: kind.into(),
        body: Value::from_json(body),
        origin: Default::default(),
    }
}

fn id(live: &tidegate::provider::Live) -> String {
    live.attributes["id"].as_str().unwrap().to_string()
}

fn total(p: &AwsProvider) -> u64 {
    p.api_calls().values().sum()
}

#[tokio::main]
async fn main() {
    let Some(args) = common::args_or_skip("aws_observe") else {
        return;
    };
    let counts: Vec<usize> = args.iter().skip(1).filter_map(|a| a.parse().ok()).collect();
    let counts = if counts.is_empty() {
        vec![1, 20, 100]
    } else {
        counts
    };
    let (_moto, endpoint) = common::start_moto();
    let conf = aws_sdk_ec2::config::Builder::new()
        .region(Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "bench"));
    let p = AwsProvider::with_config(
        tidegate::provider::Owner {
            project: "bench".into(),
            environment: "bench".into(),
        },
        conf,
        Options::default(),
    );

    let vpc = p
        .apply(
            &desired(
                "vpc",
                "vpc",
                serde_json::json!({"cidrBlock": "10.0.0.0/16"}),
            ),
            None,
        )
        .await
        .unwrap();
    let subnet = p
        .apply(
            &desired(
                "subnet",
                "subnet",
                serde_json::json!({"vpcId": id(&vpc), "cidrBlock": "10.0.0.0/20"}),
            ),
            None,
        )
        .await
        .unwrap();

    println!("instances  observe_calls  observe_ms(median of 5)  create_ms/instance  create_calls/instance");
    let mut made = 0;
    for n in counts {
        let (calls_before, started) = (total(&p), Instant::now());
        let new = n.saturating_sub(made);
        for i in made..n {
            let d = desired(
                "instance",
                &format!("server{i}"),
                serde_json::json!({"ami": "ami-1e749f67", "instanceType": "t3.micro", "subnetId": id(&subnet),
                    "metadata": {"httpTokens": "required"}, "tags": {"owner": "bench"}}),
            );
            p.apply(&d, None).await.unwrap();
        }
        made = made.max(n);
        let per = |x: f64| if new == 0 { 0.0 } else { x / new as f64 };
        let create_ms = per(started.elapsed().as_secs_f64() * 1000.0);
        let create_calls = per((total(&p) - calls_before) as f64);
        let mut times = Vec::new();
        let mut calls = 0;
        for _ in 0..5 {
            let (before, t) = (total(&p), Instant::now());
            let lives = p.observe(&[]).await.unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            calls = total(&p) - before;
            assert_eq!(lives.iter().filter(|l| l.kind == "instance").count(), n);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{n:>9}  {calls:>13}  {:>23.1}  {create_ms:>18.1}  {create_calls:>21.1}",
            times[2]
        );
    }
}
