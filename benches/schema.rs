//! How long the offline Kubernetes schema check takes: N objects (a third
//! each Deployments, ConfigMaps and Services, every one valid, so each is
//! walked to its last field) through `schema::validate`, the entry every
//! source of objects uses, and through `Spec::check_set`, the way
//! `validate` and `plan` run it (one environment's bodies together). Also
//! the one-time load of the bundled schemas (decompress and compile).
//!
//! `cargo bench --bench schema -- 10000 --runs 7`

mod common;

use std::time::Instant;

use serde_json::json;
use tidegate::provider::kubernetes::schema::{self, Crds, Schemas};
use tidegate::provider::registry::spec;
use tidegate::provider::ProviderKind;
use tidegate::value::Value;

fn object(i: usize) -> (&'static str, Value) {
    let name = format!("web-{i}");
    let (kind, j) = match i % 3 {
        0 => (
            "apps/v1/Deployment",
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": "shop", "labels": {"app.kubernetes.io/name": "web", "tier": "front"},
                    "annotations": {"example.com/owner": "team-a"}},
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": name}},
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {
                            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000},
                            "containers": [{
                                "name": "web", "image": "registry.example.com/web@sha256:a99cd8901f3c80fd90b9c755f73d32bf3b14f3dbd572c605f72aa8fd32af42d8",
                                "imagePullPolicy": "IfNotPresent",
                                "args": ["--port", "8080"],
                                "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                                "env": [{"name": "MODE", "value": "prod"}, {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}}],
                                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
                                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5},
                                "livenessProbe": {"tcpSocket": {"port": 8080}},
                                "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false},
                                "volumeMounts": [{"name": "config", "mountPath": "/etc/web", "readOnly": true}]
                            }],
                            "volumes": [{"name": "config", "configMap": {"name": name}}]
                        }
                    }
                }
            }),
        ),
        1 => (
            "v1/ConfigMap",
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "shop", "labels": {"app": "web"}},
                "data": {"MODE": "prod", "PORT": "8080", "config.yaml": "a: 1\nb: 2\n"}
            }),
        ),
        _ => (
            "v1/Service",
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "shop", "labels": {"app": "web"}},
                "spec": {"type": "ClusterIP", "selector": {"app": name},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}
            }),
        ),
    };
    (kind, Value::from_json(j))
}

fn main() {
    let Some(args) = common::args_or_skip("schema") else {
        return;
    };
    let n: usize = args
        .iter()
        .skip(1)
        .take_while(|a| *a != "--runs")
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(10_000);
    let runs: usize = args
        .iter()
        .skip_while(|a| *a != "--runs")
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(7);

    let started = Instant::now();
    schema::bundled().expect("the bundled schemas load");
    let first = started.elapsed().as_secs_f64() * 1e3;
    let mut loads = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let gz = include_bytes!("../src/provider/kubernetes/schema/v1.37.json.gz");
        Schemas::load(gz).expect("loads");
        loads.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "bundled schemas: first use {first:.1} ms; load (decompress + compile) {} ms",
        common::summary(&loads, 1)
    );

    let objects: Vec<(&str, Value)> = (0..n).map(object).collect();
    let crds = Crds::default();
    let (mut direct, mut set) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let problems: usize = objects
            .iter()
            .map(|(_, o)| schema::validate(o, &crds).len())
            .sum();
        direct.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(problems, 0, "the generated objects are valid");

        let bodies: Vec<(&str, &Value)> = objects.iter().map(|(k, o)| (*k, o)).collect();
        let t = Instant::now();
        let problems = spec(ProviderKind::Kubernetes).check_set(&bodies, &[]);
        set.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(problems.is_empty());
    }
    let per_s = n as f64 / (common::median(&direct) / 1e3);
    println!(
        "{n} objects: validate {} ms ({per_s:.0} objects/s); check_set {} ms (target < 1000 ms)",
        common::summary(&direct, 1),
        common::summary(&set, 1)
    );
}
