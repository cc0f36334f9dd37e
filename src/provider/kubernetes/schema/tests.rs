//! One test per class of problem, on objects written as JSON.

use serde_json::json;

use super::*;
use crate::sensitive::Sensitive;

fn v(j: serde_json::Value) -> Value {
    Value::from_json(j)
}

/// `(severity, path, message, fix)` of each problem.
fn check_with(object: serde_json::Value, crds: &Crds) -> Vec<(Severity, String, String, String)> {
    validate(&v(object), crds)
        .into_iter()
        .map(|p| (p.severity, p.path, p.message, p.fix))
        .collect()
}

fn check(object: serde_json::Value) -> Vec<(Severity, String, String, String)> {
    check_with(object, &Crds::default())
}

/// The only problem of `object`: `(path, message, fix)`, an error.
fn only_error(object: serde_json::Value) -> (String, String, String) {
    let mut got = check(object);
    assert_eq!(got.len(), 1, "{got:#?}");
    let (severity, path, message, fix) = got.remove(0);
    assert_eq!(severity, Severity::Error, "{message}");
    (path, message, fix)
}

fn deployment() -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app.kubernetes.io/name": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "web",
                        "image": "nginx:1.27",
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [{"containerPort": 8080, "name": "http"}],
                        "env": [{"name": "PORT", "value": "8080"}],
                        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": 0.1, "memory": 1000000}},
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}}
                    }]
                }
            }
        }
    })
}

/// Sets `path` (dotted, `[i]` for items) in `j` to `value`.
fn set(mut j: serde_json::Value, path: &str, value: serde_json::Value) -> serde_json::Value {
    let mut at = &mut j;
    let segs: Vec<&str> = path.split('.').collect();
    for (n, seg) in segs.iter().enumerate() {
        let (key, index) = match seg.split_once('[') {
            Some((k, i)) => (k, Some(i.trim_end_matches(']').parse::<usize>().unwrap())),
            None => (*seg, None),
        };
        let last = n + 1 == segs.len();
        if last && index.is_none() {
            at[key] = value;
            return j;
        }
        at = &mut at[key];
        if let Some(i) = index {
            if last {
                at[i] = value;
                return j;
            }
            at = &mut at[i];
        }
    }
    j
}

#[test]
fn the_bundled_schemas_load_once_and_quickly() {
    let started = std::time::Instant::now();
    let s = Schemas::load(BUNDLE).expect("the bundled file loads");
    let took = started.elapsed();
    println!(
        "bundled schemas: {} bytes compressed, {} nodes, loaded in {took:?}",
        BUNDLE.len(),
        s.arena.nodes.len()
    );
    assert_eq!(s.release, "1.37.2");
    assert!(s.kind("apps/v1", "Deployment").is_some());
    assert!(
        s.kind("v1", "DeploymentList").is_none(),
        "lists are not objects to apply"
    );
    assert!(std::ptr::eq(bundled().unwrap(), bundled().unwrap()));
}

#[test]
fn valid_objects_pass() {
    assert_eq!(check(deployment()), vec![]);
    let others = [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg.v1", "annotations": {"example.com/Note": "x"}}, "data": {"a": "1"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "aGVsbG8="}, "stringData": {"b": "plain"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"}, "spec": {"rules": [{"host": "shop.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:tidegate:reader"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "job-"}, "spec": {"containers": [{"name": "c", "image": "busybox", "args": ["--level", "3"]}]}}),
    ];
    for o in others {
        assert_eq!(check(o.clone()), vec![], "{o}");
    }
}

#[test]
fn a_misspelt_kind_names_the_closest_one() {
    let (path, message, fix) = only_error(set(deployment(), "kind", json!("Deploymnet")));
    assert_eq!(path, "kind");
    assert_eq!(message, "unknown kind `Deploymnet` in apps/v1");
    assert_eq!(fix, "did you mean `Deployment`?");
}

#[test]
fn a_misspelt_group_names_the_apiversion_serving_the_kind() {
    let (path, message, fix) = only_error(set(deployment(), "apiVersion", json!("app/v1")));
    assert_eq!(path, "apiVersion");
    assert!(
        message.starts_with("unknown apiVersion `app/v1`"),
        "{message}"
    );
    assert_eq!(
        fix,
        "did you mean `apiVersion: apps/v1`? (Deployment is apps/v1)"
    );
    let (_, _, fix) = only_error(
        json!({"apiVersion": "core/v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
    );
    assert_eq!(fix, "did you mean `apiVersion: v1`? (ConfigMap is v1)");
    // A near miss of a dotted built-in group.
    let (_, _, fix) = only_error(
        json!({"apiVersion": "networking.k8s.i0/v1", "kind": "Ingress", "metadata": {"name": "i"}}),
    );
    assert!(fix.contains("networking.k8s.io/v1"), "{fix}");
}

#[test]
fn a_kind_in_the_wrong_group_or_version_names_its_home() {
    let (path, message, fix) = only_error(set(deployment(), "apiVersion", json!("v1")));
    assert_eq!(path, "apiVersion");
    assert_eq!(
        message,
        "Deployment is not served as `v1` by Kubernetes 1.37.2: it is apps/v1"
    );
    assert_eq!(fix, "write `apiVersion: apps/v1`");
    let (_, message, _) = only_error(set(deployment(), "apiVersion", json!("apps/v1beta1")));
    assert!(message.contains("it is apps/v1"), "{message}");
    let (_, message, fix) =
        only_error(json!({"apiVersion": "batch/v7", "kind": "Widget", "metadata": {"name": "w"}}));
    assert_eq!(message, "Kubernetes 1.37.2 does not serve `batch/v7`");
    assert!(fix.contains("batch/v1"), "{fix}");
}

#[test]
fn an_unknown_field_names_the_closest_field_and_where_it_is() {
    let o = set(
        deployment(),
        "spec.template.spec.containers[0].imagePullPolicyy",
        json!("Always"),
    );
    let (path, message, fix) = only_error(o);
    assert_eq!(path, "spec.template.spec.containers[0].imagePullPolicyy");
    assert_eq!(
        message,
        "unknown field `imagePullPolicyy` in Container (spec.template.spec.containers[0])"
    );
    assert_eq!(fix, "did you mean `imagePullPolicy`?");
    let (path, message, fix) = only_error(set(deployment(), "spec.paused2x", json!(true)));
    assert_eq!(path, "spec.paused2x");
    assert_eq!(message, "unknown field `paused2x` in DeploymentSpec (spec)");
    assert_eq!(fix, "did you mean `paused`?");
    let (_, message, fix) = only_error(set(deployment(), "spec.zzz", json!(1)));
    assert_eq!(message, "unknown field `zzz` in DeploymentSpec (spec)");
    assert_eq!(
        fix,
        "remove it, or see the fields Kubernetes knows here: `kubectl explain deployment.spec`"
    );
    let (_, message, _) = only_error(set(deployment(), "status2", json!({})));
    assert_eq!(message, "unknown field `status2` in Deployment");
}

#[test]
fn wrong_types_say_what_was_expected_and_how_to_write_it() {
    let (path, message, fix) = only_error(set(deployment(), "spec.replicas", json!("3")));
    assert_eq!(path, "spec.replicas");
    assert_eq!(
        message,
        "`replicas` in DeploymentSpec (spec) must be an integer, not a string"
    );
    assert_eq!(fix, "write it without quotes: 3");
    let (path, message, fix) = only_error(set(
        deployment(),
        "spec.template.spec.containers[0].env[0].value",
        json!(8080),
    ));
    assert_eq!(path, "spec.template.spec.containers[0].env[0].value");
    assert_eq!(
        message,
        "`value` in EnvVar (spec.template.spec.containers[0].env[0]) must be a string, not an integer"
    );
    assert_eq!(fix, "quote it: \"8080\"");
    let (_, message, fix) = only_error(set(
        deployment(),
        "spec.template.spec.containers",
        json!({"name": "web", "image": "nginx"}),
    ));
    assert_eq!(
        message,
        "`containers` in PodSpec (spec.template.spec) must be a list, not a map"
    );
    assert!(fix.starts_with("write a list"), "{fix}");
    let (_, message, _) = only_error(set(deployment(), "spec.template", json!("web")));
    assert_eq!(
        message,
        "`template` in DeploymentSpec (spec) must be a map (PodTemplateSpec), not a string"
    );
    let (_, message, fix) = only_error(set(deployment(), "spec.paused", json!("true")));
    assert_eq!(
        message,
        "`paused` in DeploymentSpec (spec) must be a boolean, not a string"
    );
    assert_eq!(fix, "write it without quotes: true");
    // int-or-string and quantities take both; a float is not an integer.
    let (_, message, _) = only_error(set(deployment(), "spec.replicas", json!(2.5)));
    assert!(
        message.ends_with("must be an integer, not a number"),
        "{message}"
    );
    let (_, message, _) = only_error(set(
        deployment(),
        "spec.strategy.rollingUpdate.maxSurge",
        json!(true),
    ));
    assert!(
        message.ends_with("must be an integer or a string, not a boolean"),
        "{message}"
    );
}

#[test]
fn numbers_quantities_and_base64_follow_the_api_server() {
    let (path, message, _) =
        only_error(set(deployment(), "spec.replicas", json!(3_000_000_000_i64)));
    assert_eq!(path, "spec.replicas");
    assert!(message.contains("does not fit in 32 bits"), "{message}");
    let (path, message, fix) = only_error(set(
        deployment(),
        "spec.template.spec.containers[0].resources.limits.memory",
        json!("1GB"),
    ));
    assert_eq!(
        path,
        "spec.template.spec.containers[0].resources.limits.memory"
    );
    assert!(
        message.starts_with("`limits.memory` in ResourceRequirements (spec.template.spec.containers[0].resources) `1GB` is not a quantity"),
        "{message}"
    );
    assert!(fix.contains("1Gi"), "{fix}");
    let (path, message, fix) = only_error(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"password": "hunter2!"}}),
    );
    assert_eq!(path, "data.password");
    assert_eq!(message, "`data.password` in Secret is not base64");
    assert!(fix.contains("stringData"), "{fix}");
}

#[test]
fn a_missing_required_field_is_reported_on_its_map() {
    let mut o = deployment();
    o["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("name");
    let (path, message, fix) = only_error(o);
    assert_eq!(path, "spec.template.spec.containers[0]");
    assert_eq!(
        message,
        "missing required field `name` in Container (spec.template.spec.containers[0])"
    );
    assert_eq!(fix, "add `name:`");
    // A null does not count as set.
    let (_, message, _) = only_error(set(deployment(), "spec.selector", json!(null)));
    assert_eq!(
        message,
        "missing required field `selector` in DeploymentSpec (spec)"
    );
    // But is otherwise accepted, as the API server reads it as unset.
    assert_eq!(
        check(set(deployment(), "spec.replicas", json!(null))),
        vec![]
    );
}

#[test]
fn names_follow_the_rule_of_their_kind() {
    let (path, message, fix) = only_error(set(deployment(), "metadata.name", json!("Web_App")));
    assert_eq!(path, "metadata.name");
    assert!(
        message.starts_with(
            "`Web_App` is not a valid Deployment name: a lowercase RFC 1123 subdomain"
        ),
        "{message}"
    );
    assert_eq!(fix, "e.g. `web-app`");
    // A dot is fine in most names but not in a Service's (a DNS label).
    assert_eq!(
        check(set(deployment(), "metadata.name", json!("web.v2"))),
        vec![]
    );
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web.v2"}, "spec": {"ports": [{"port": 80}]}});
    let (_, message, fix) = only_error(svc);
    assert!(message.contains("RFC 1123 label"), "{message}");
    assert_eq!(fix, "e.g. `web-v2`");
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a".repeat(64)}});
    let (_, message, _) = only_error(ns);
    assert!(
        message.ends_with("must be no more than 63 characters"),
        "{message}"
    );
    let (path, message, _) = only_error(set(deployment(), "metadata.namespace", json!("Shop")));
    assert_eq!(path, "metadata.namespace");
    assert!(
        message.starts_with("namespace `Shop` is not valid"),
        "{message}"
    );
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "a/b"}});
    let (_, message, _) = only_error(role);
    assert!(message.ends_with("may not contain '/' or '%'"), "{message}");
}

#[test]
fn labels_and_annotations_follow_kubernetes_rules() {
    let (path, message, fix) = only_error(set(
        deployment(),
        "metadata.labels.tier",
        json!("front end"),
    ));
    assert_eq!(path, "metadata.labels.tier");
    assert!(
        message.starts_with("label value `front end` of `tier` is not valid"),
        "{message}"
    );
    assert!(fix.contains("annotation"), "{fix}");
    let (path, message, _) = only_error(set(
        deployment(),
        "spec.template.metadata.labels",
        json!({"Example.com/app": "web"}),
    ));
    assert_eq!(path, "spec.template.metadata.labels.Example.com/app");
    assert!(
        message.starts_with("label key `Example.com/app` is not valid: the prefix part"),
        "{message}"
    );
    let (path, message, _) = only_error(set(
        deployment(),
        "spec.selector.matchLabels.app",
        json!("-web"),
    ));
    assert_eq!(path, "spec.selector.matchLabels.app");
    assert!(
        message.starts_with("label selector value `-web`"),
        "{message}"
    );
    let (path, message, _) = only_error(set(
        deployment(),
        "metadata.annotations",
        json!({"bad key": "x"}),
    ));
    assert_eq!(path, "metadata.annotations.bad key");
    assert!(
        message.starts_with("annotation key `bad key` is not valid"),
        "{message}"
    );
    // A label value must be a string: the schema says so.
    let (_, message, fix) = only_error(set(deployment(), "metadata.labels.version", json!(2)));
    assert!(
        message.ends_with("must be a string, not an integer"),
        "{message}"
    );
    assert_eq!(fix, "quote it: \"2\"");
}

#[test]
fn values_not_known_yet_pass_whatever_their_type() {
    let mut o = set(deployment(), "spec.replicas", json!("${var.replicas}"));
    o = set(o, "metadata.name", json!("${input.name}"));
    o = set(
        o,
        "spec.template.spec.containers[0].ports[0].containerPort",
        json!("${input.port}"),
    );
    let mut value = v(o);
    let Value::Map(m) = &mut value else {
        unreachable!()
    };
    let Some(Value::Map(spec)) = m.get_mut("spec") else {
        unreachable!()
    };
    spec.insert("paused".into(), Value::Unknown("module.x.y".into()));
    spec.insert(
        "minReadySeconds".into(),
        Value::Sensitive(Sensitive::from_string("5".into())),
    );
    assert_eq!(validate(&value, &Crds::default()), vec![]);
}

fn crd() -> serde_json::Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets"},
            "scope": "Namespaced",
            "versions": [
                {"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "properties": {
                                "size": {"type": "integer"},
                                "colour": {"type": "string", "enum": ["red", "green"]},
                                "port": {"x-kubernetes-int-or-string": true},
                                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                                "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                                "shape": {"type": "string", "default": "round"}
                            }
                        }
                    }
                }}},
                {"name": "v1alpha1", "served": false, "storage": false, "schema": {"openAPIV3Schema": {"type": "object"}}}
            ]
        }
    })
}

fn widget() -> serde_json::Value {
    json!({
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "labels": {"app": "w"}},
        "spec": {"size": 3, "colour": "red", "port": "http", "extra": {"anything": [1]}, "tags": {"a": "b"}}
    })
}

#[test]
fn custom_resources_are_checked_against_their_declared_definition() {
    assert_eq!(check(crd()), vec![], "the CRD itself is a valid object");
    let crds = Crds::from_objects([&v(crd())]);
    assert_eq!(check_with(widget(), &crds), vec![]);
    let mut o = set(widget(), "spec.colour", json!("blue"));
    o = set(o, "spec.tags.a", json!(1));
    o["spec"].as_object_mut().unwrap().shift_remove("size");
    o = set(o, "spec.sise", json!(3));
    let got = check_with(o, &crds);
    let messages: Vec<&str> = got.iter().map(|p| p.2.as_str()).collect();
    assert_eq!(
        messages,
        [
            "`spec.colour` in Widget must be one of `red`, `green`, not `blue`",
            "`spec.tags.a` in Widget must be a string, not an integer",
            "unknown field `sise` in `spec` of Widget",
            "missing required field `size` in `spec` of Widget",
        ],
        "{got:#?}"
    );
    assert_eq!(got[0].3, "write one of `red`, `green`");
    assert_eq!(got[2].3, "did you mean `size`?");
}

#[test]
fn a_version_the_definition_does_not_serve_is_an_error() {
    let crds = Crds::from_objects([&v(crd())]);
    let got = check_with(
        set(widget(), "apiVersion", json!("example.com/v1alpha1")),
        &crds,
    );
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].0, Severity::Error);
    assert!(got[0].2.contains("sets `served: false`"), "{}", got[0].2);
    assert_eq!(got[0].3, "write `apiVersion: example.com/v1`");
    let got = check_with(set(widget(), "apiVersion", json!("example.com/v2")), &crds);
    assert_eq!(
        got[0].2,
        "CustomResourceDefinition widgets.example.com does not define version v2 of Widget"
    );
}

#[test]
fn a_kind_nobody_declared_is_not_checked_and_says_so() {
    let got = check(widget());
    assert_eq!(got.len(), 1, "{got:#?}");
    let (severity, path, message, fix) = &got[0];
    assert_eq!(*severity, Severity::Warning);
    assert_eq!(path, "kind");
    assert_eq!(
        message,
        "not checked: Widget (example.com/v1) is neither built into Kubernetes 1.37.2 nor defined by a CustomResourceDefinition in the repository"
    );
    assert!(
        fix.starts_with("declare its CustomResourceDefinition"),
        "{fix}"
    );
    // Its metadata is still checked.
    let got = check(set(widget(), "metadata.name", json!("W")));
    assert_eq!(got.len(), 2, "{got:#?}");
    // A near miss of a declared kind is pointed out, still as a warning.
    let crds = Crds::from_objects([&v(crd())]);
    let got = check_with(set(widget(), "kind", json!("Widgte")), &crds);
    assert_eq!(got[0].0, Severity::Warning);
    assert!(got[0].3.contains("did you mean `Widget`"), "{}", got[0].3);
    // A group without a dot cannot be a CRD's: an error.
    let (path, message, _) = only_error(
        json!({"apiVersion": "widgets/v1", "kind": "Widget", "metadata": {"name": "w"}}),
    );
    assert_eq!(path, "apiVersion");
    assert!(
        message.contains("a CustomResourceDefinition's group always has a dot"),
        "{message}"
    );
}

#[test]
fn every_version_of_a_crd_has_a_schema() {
    let mut o = crd();
    o["spec"]["versions"][1]
        .as_object_mut()
        .unwrap()
        .shift_remove("schema");
    let (path, message, _) = only_error(o.clone());
    assert_eq!(path, "spec.versions[1]");
    assert!(
        message.starts_with("version v1alpha1 has no `schema.openAPIV3Schema`"),
        "{message}"
    );
    // Its objects are then not checked (the version is not served here).
    o["spec"]["versions"][1]["served"] = json!(true);
    let crds = Crds::from_objects([&v(o)]);
    let got = check_with(
        set(widget(), "apiVersion", json!("example.com/v1alpha1")),
        &crds,
    );
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].0, Severity::Warning);
    assert!(got[0].2.contains("declares no schema"), "{}", got[0].2);
}

#[test]
fn a_crd_is_named_after_its_plural_and_group() {
    let (path, message, _) = only_error(set(crd(), "metadata.name", json!("widget.example.com")));
    assert_eq!(path, "metadata.name");
    assert!(
        message.contains("`widgets.example.com`, not `widget.example.com`"),
        "{message}"
    );
}

#[test]
fn objects_without_a_kind_or_apiversion() {
    let got = check(json!({"metadata": {"name": "x"}}));
    let messages: Vec<&str> = got.iter().map(|p| p.2.as_str()).collect();
    assert_eq!(
        messages,
        [
            "missing required field `apiVersion`",
            "missing required field `kind`"
        ]
    );
    let (path, message, _) = only_error(json!({"apiVersion": "apps/", "kind": "Deployment"}));
    assert_eq!(path, "apiVersion");
    assert_eq!(message, "`apps/` is not an apiVersion");
}
