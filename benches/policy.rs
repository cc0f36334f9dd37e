//! How long policy evaluation takes for a large environment: N Deployments
//! (each with one finding-free and one failing container), N/2 instances
//! and N/10 Ingresses, evaluated in one call. Prints subjects per second.
//!
//! `cargo bench --bench policy -- 20000`

mod common;

use std::time::Instant;

use serde_json::json;
use tidegate::policy::{evaluate, Date, PolicyConfig, Subject};
use tidegate::provider::{ProviderKind, ResourceId};
use tidegate::value::{Origin, Spans, Value};

struct Owned {
    id: ResourceId,
    provider: ProviderKind,
    kind: &'static str,
    body: Value,
}

fn deployment(i: usize) -> Value {
    let digest = "a99cd8901f3c80fd90b9c755f73d32bf3b14f3dbd572c605f72aa8fd32af42d8";
    let good = json!({
        "name": "web", "image": format!("ghcr.io/acme/web@sha256:{digest}"),
        "ports": [{"containerPort": 8080}],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "readinessProbe": {"tcpSocket": {"port": 8080}}, "livenessProbe": {"tcpSocket": {"port": 8080}},
        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true}
    });
    let bad = json!({"name": format!("side{i}"), "image": "nginx:latest",
        "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]});
    Value::from_json(json!({"spec": {"template": {"spec": {
        "securityContext": {"runAsNonRoot": true}, "containers": [good, bad]}}}}))
}

fn main() {
    let Some(args) = common::args_or_skip("policy") else {
        return;
    };
    let n: usize = args
        .iter()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(20_000);
    let mut owned = Vec::new();
    for i in 0..n {
        let id = |p: &str| ResourceId {
            module: "m".into(),
            name: format!("{p}{i}"),
        };
        owned.push(Owned {
            id: id("d"),
            provider: ProviderKind::Kubernetes,
            kind: "apps/v1/Deployment",
            body: deployment(i),
        });
        if i % 2 == 0 {
            let body = Value::from_json(json!({"ami": "a", "metadata": {"httpTokens": "required"},
                "tags": {"environment": "prod", "owner": "o"}}));
            owned.push(Owned {
                id: id("i"),
                provider: ProviderKind::Aws,
                kind: "instance",
                body,
            });
        }
        if i % 10 == 0 {
            let body = Value::from_json(
                json!({"spec": {"rules": [{"host": format!("h{}.example.com", i % 100)}]}}),
            );
            owned.push(Owned {
                id: id("g"),
                provider: ProviderKind::Kubernetes,
                kind: "networking.k8s.io/v1/Ingress",
                body,
            });
        }
    }
    let spans = Spans::default();
    let origin = Origin {
        file: "m.yaml".into(),
        line: 1,
        column: 1,
    };
    let subjects: Vec<Subject<'_>> = owned
        .iter()
        .map(|o| Subject {
            environment: "prod",
            id: &o.id,
            provider: o.provider,
            kind: o.kind,
            body: &o.body,
            spans: &spans,
            origin: &origin,
            waivers: &[],
        })
        .collect();
    let config = PolicyConfig {
        approved_domains: vec!["example.com".into()],
        ..PolicyConfig::defaults("prod")
    };
    let today = Date::new(2026, 6, 1).expect("valid date");
    let start = Instant::now();
    let report = evaluate(&config, &subjects, today);
    let took = start.elapsed();
    let text = Instant::now();
    let rendered = report.render_text();
    let text_took = text.elapsed();
    println!(
        "policy: {} subjects, {} findings in {:.1} ms ({:.0} subjects/s); text rendering {:.1} ms ({} bytes)",
        subjects.len(),
        report.findings.len(),
        took.as_secs_f64() * 1e3,
        subjects.len() as f64 / took.as_secs_f64(),
        text_took.as_secs_f64() * 1e3,
        rendered.len()
    );
}
