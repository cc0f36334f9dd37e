use super::*;
use crate::testutil::{self, env, files, module};

fn id(m: &str, n: &str) -> ResourceId {
    ResourceId {
        module: m.into(),
        name: n.into(),
    }
}

fn cm(name: &str, data: &str) -> String {
    format!("    - name: {name}\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: {name}\n        data:\n          v: {data}\n")
}

#[test]
fn levels_follow_references_and_namespaces() {
    let model = crate::load::load(&testutil::repo()).unwrap();
    let g = Graph::build(&model).unwrap();
    assert_eq!(g.environments(), ["dev", "prod"]);
    assert_eq!(
        g.levels("dev"),
        vec![
            vec![id("app", "ns"), id("network", "vpc")],
            vec![id("app", "config"), id("network", "subnet")],
        ]
    );
    assert_eq!(
        g.dependencies("dev", &id("app", "config")),
        [id("app", "ns"), id("network", "vpc")]
    );
    assert_eq!(
        g.dependents("dev", &id("network", "vpc")),
        [id("app", "config"), id("network", "subnet")]
    );
    let e = g
        .edge("dev", &id("network", "vpc"), &id("app", "config"))
        .unwrap();
    assert_eq!(e.kind, EdgeKind::Reference);
    assert!(e.detail.starts_with("${input.vpcId} at modules/app/module.yaml:31:16 <- ${module.network.vpc_id} at environments/dev.yaml:"), "{}", e.detail);
    assert_eq!(
        g.edge("dev", &id("app", "ns"), &id("app", "config"))
            .unwrap()
            .kind,
        EdgeKind::Namespace
    );
    let ns = |i: &ResourceId| g.node("dev", i).and_then(|n| n.namespace.clone());
    assert_eq!(ns(&id("app", "ns")).as_deref(), Some("app-dev"));
    assert_eq!(ns(&id("app", "config")).as_deref(), Some("app-dev"));
    assert_eq!(ns(&id("network", "vpc")), None);
    let scopes = crate::observe::scopes_of(&g, "dev");
    let kube = &scopes[&ProviderKind::Kubernetes];
    assert_eq!(kube.namespaces, Some(["app-dev".to_string()].into()));
    assert_eq!(
        scopes[&ProviderKind::Aws].namespaces,
        Some(Default::default())
    );
    let dot = g.to_dot(None);
    assert!(dot.contains("[style=dashed, label=\"after\"]"), "{dot}");
    assert!(g.to_mermaid(Some("dev")).starts_with("flowchart LR\n"));
}

#[test]
fn a_cycle_across_two_modules_names_every_node_and_edge() {
    let m1 = module(
        "m1",
        &format!(
            "  inputs:\n    p:\n      type: string\n  outputs:\n    out:\n      value: ${{resource.y.metadata.uid}}\n  resources:\n{}{}",
            cm("x", "${input.p}"),
            cm("y", "${resource.x.metadata.uid}")
        ),
    );
    let m2 = module(
        "m2",
        &format!(
            "  inputs:\n    q:\n      type: string\n  outputs:\n    out:\n      value: ${{resource.z.metadata.uid}}\n  resources:\n{}",
            cm("z", "${input.q}")
        ),
    );
    let e = env(
        "dev",
        "  modules:\n    - name: a\n      source: modules/m1\n      inputs:\n        p: ${module.b.out}\n    - name: b\n      source: modules/m2\n      inputs:\n        q: ${module.a.out}\n",
    );
    let f = files(&[
        ("environments/dev.yaml", &e),
        ("modules/m1/module.yaml", &m1),
        ("modules/m2/module.yaml", &m2),
    ]);
    let model = crate::load::load(&f).unwrap();
    let Err(Error::Invalid(r)) = Graph::build(&model) else {
        panic!("cycle not found")
    };
    assert_eq!(r.0.len(), 1);
    let msg = &r.0[0].message;
    assert!(
        msg.starts_with("dependency cycle between 3 resources: dev/a.x, dev/a.y, dev/b.z"),
        "{msg}"
    );
    assert!(
        msg.contains("dev/a.x -> dev/a.y: ${resource.x.metadata.uid} at modules/m1/module.yaml:"),
        "{msg}"
    );
    assert!(msg.contains("dev/a.y -> dev/b.z: ${input.q} at modules/m2/module.yaml:21:14 <- ${module.a.out} at environments/dev.yaml:14:12 <- ${resource.y.metadata.uid} at modules/m1/module.yaml:11:14"), "{msg}");
    assert!(msg.contains("dev/b.z -> dev/a.x: ${input.p} at modules/m1/module.yaml:21:14 <- ${module.b.out} at environments/dev.yaml:10:12"), "{msg}");
}

#[test]
fn custom_resources_come_after_their_crd_and_depends_on_adds_edges() {
    let m = module(
        "ops",
        "  resources:\n    - name: crd\n      provider: kubernetes\n      manifest:\n        apiVersion: apiextensions.k8s.io/v1\n        kind: CustomResourceDefinition\n        metadata:\n          name: widgets.example.com\n        spec:\n          group: example.com\n          names:\n            kind: Widget\n    - name: widget\n      provider: kubernetes\n      manifest:\n        apiVersion: example.com/v1\n        kind: Widget\n        metadata:\n          name: w\n    - name: last\n      provider: kubernetes\n      dependsOn: [widget]\n      manifest:\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: last\n",
    );
    let f = files(&[
        (
            "environments/dev.yaml",
            &env(
                "dev",
                "  modules:\n    - name: ops\n      source: modules/ops\n",
            ),
        ),
        ("modules/ops/module.yaml", &m),
    ]);
    let g = Graph::build(&crate::load::load(&f).unwrap()).unwrap();
    assert_eq!(
        g.edge("dev", &id("ops", "crd"), &id("ops", "widget"))
            .unwrap()
            .kind,
        EdgeKind::Crd
    );
    assert_eq!(
        g.edge("dev", &id("ops", "widget"), &id("ops", "last"))
            .unwrap()
            .kind,
        EdgeKind::DependsOn
    );
    assert_eq!(g.levels("dev").len(), 3);
}

#[test]
fn list_items_are_followed_precisely_and_value_cycles_end() {
    // a.o[0] is a.one; a.two takes p[1] = b.o[1] = b's p[0] = a.o[0]: the
    // graph follows the items (a.one -> a.two, no cycle), while rendering,
    // which evaluates whole values, reports the cycle between the outputs.
    let ns = |n: &str| format!("          namespace: ${{input.ns}}\n{n}");
    let model_files = crate::testutil::files(&[
        (
            "environments/dev.yaml",
            &env(
                "dev",
                "  modules:\n    - name: a\n      source: modules/m\n      inputs:\n        ns: a\n        p: ${module.b.o}\n    - name: b\n      source: modules/m\n      inputs:\n        ns: b\n        p: ${module.a.o}\n",
            ),
        ),
        (
            "modules/m/module.yaml",
            &module(
                "m",
                &format!(
                    "  inputs:\n    ns:\n      type: string\n    p:\n      type: list\n  outputs:\n    o:\n      value:\n        - ${{resource.one.metadata.uid}}\n        - ${{input.p.0}}\n  resources:\n{}{}",
                    cm("one", "x").replace("        data:\n", &ns("        data:\n")),
                    cm("two", "${input.p.1}").replace("        data:\n", &ns("        data:\n"))
                ),
            ),
        ),
    ]);
    let model = crate::load::load(&model_files).unwrap();
    let g = Graph::build(&model).unwrap();
    assert_eq!(g.dependencies("dev", &id("a", "two")), [id("a", "one")]);
    let report = crate::pipeline::check(&model_files)
        .err()
        .expect("render finds the cycle");
    assert!(
        report
            .to_string()
            .contains("refers to itself through other values"),
        "{report}"
    );
}
