use super::*;
use crate::observe::Observed;
use crate::render::{Secret, StructuralSecrets};
use crate::resource::Live;
use crate::sensitive::Sensitive;
use crate::testutil;

struct Secrets(&'static str);
impl SecretLookup for Secrets {
    fn lookup(&self, _: &str, _: &[&str]) -> Option<Secret> {
        Some(Secret::Sensitive(Sensitive::from_string(self.0.into())))
    }
}

fn id(m: &str, n: &str) -> ResourceId {
    ResourceId {
        module: m.into(),
        name: n.into(),
    }
}

fn loaded() -> (Model, Graph) {
    let model = crate::load::load(&testutil::repo()).unwrap();
    let graph = Graph::build(&model).unwrap();
    (model, graph)
}

fn action_of<'a>(p: &'a EnvPlan, i: &ResourceId) -> &'a Action {
    &p.resources().find(|r| &r.id == i).unwrap().action
}

/// Live state as if `desired` had been applied as rendered (with the
/// attributes a provider would report).
fn applied(desired: &[Desired]) -> LiveState {
    let mut live = LiveState::default();
    for d in desired {
        let mut attributes = crate::value::Map::new();
        attributes.insert("id".into(), Value::String(format!("x-{}", d.id.name)));
        live.resources.insert(
            d.id.clone(),
            Observed {
                provider: if d.kind.contains('/') {
                    ProviderKind::Kubernetes
                } else {
                    ProviderKind::Aws
                },
                live: Live {
                    id: d.id.clone(),
                    kind: d.kind.clone(),
                    external_id: format!("x-{}", d.id.name),
                    body: d.body.clone(),
                    attributes,
                },
            },
        );
    }
    live
}

#[test]
fn offline_everything_is_a_create_in_graph_order() {
    let (model, graph) = loaded();
    let p = build_env(&model, &graph, "prod", None, &StructuralSecrets, None).unwrap();
    assert_eq!(p.counts.create, 4);
    assert_eq!(p.counts.changes(), 4);
    assert_eq!(p.waits_for, ["dev"]);
    assert_eq!(p.modules[0].name, "network");
    // vpc first, subnet after it, the ConfigMap after the vpc and namespace.
    assert_eq!(p.order[0].resources, ["app.ns", "network.vpc"]);
    let cfg = p.resources().find(|r| r.id == id("app", "config")).unwrap();
    assert!(cfg.changes.iter().any(|c| matches!(c,
        FieldChange::Add { path, after: Value::Unknown(_) } if path == "data.VPC")));
    assert!(cfg
        .changes
        .iter()
        .any(|c| matches!(c, FieldChange::Sensitive { path } if path == "data.URL")));
}

#[test]
fn live_state_gives_no_ops_updates_and_deletes() {
    let (model, graph) = loaded();
    let first = render_desired(&model, "dev", None, &Secrets("pw1"), None).unwrap();
    let mut live = applied(&first);
    // After the apply the vpc id is known: render again so the ConfigMap
    // carries it, as an apply in level order would have.
    let second = render_desired(&model, "dev", Some(&live), &Secrets("pw1"), None).unwrap();
    live = applied(&second);
    let same = build_env(&model, &graph, "dev", Some(&live), &Secrets("pw1"), None).unwrap();
    assert_eq!(same.counts.changes(), 0, "{same:#?}");
    assert_eq!(same.counts.no_op, 4);
    assert!(same.order.is_empty());

    // A secret change is an update that shows no value.
    let changed = build_env(&model, &graph, "dev", Some(&live), &Secrets("pw2"), None).unwrap();
    assert_eq!(changed.counts.update, 1);
    let cfg = changed
        .resources()
        .find(|r| r.id == id("app", "config"))
        .unwrap();
    assert_eq!(
        cfg.changes,
        vec![FieldChange::Sensitive {
            path: "data.URL".into()
        }]
    );
    let json = serde_json::to_string(&changed).unwrap();
    assert!(!json.contains("pw1") && !json.contains("pw2"), "{json}");

    // Something live that Git no longer has, and a duplicate, are deletes.
    let mut extra = live.clone();
    let gone = id("old", "thing");
    let mut o = extra.resources[&id("network", "vpc")].clone();
    o.live.id = gone.clone();
    o.live.external_id = "vpc-old".into();
    extra.resources.insert(gone.clone(), o);
    let mut dup = extra.resources[&id("network", "subnet")].clone();
    dup.live.external_id = "subnet-dup".into();
    extra.duplicates.push(dup);
    let p = build_env(&model, &graph, "dev", Some(&extra), &Secrets("pw1"), None).unwrap();
    assert_eq!(p.counts.delete, 2);
    assert_eq!(action_of(&p, &gone), &Action::Delete);
    let old = p.modules.iter().find(|m| m.name == "old").unwrap();
    assert_eq!(old.source, "", "a module removed from Git");
    let last = p.order.last().unwrap();
    assert_eq!(last.resources, ["network.subnet", "old.thing"]);
}

#[test]
fn predictions_win_over_the_local_comparison() {
    let (model, graph) = loaded();
    let desired = render_desired(&model, "dev", None, &StructuralSecrets, None).unwrap();
    let live = applied(&desired);
    let vpc = id("network", "vpc");
    let mut predictions = HashMap::new();
    predictions.insert(
        vpc.clone(),
        Change {
            action: Action::Replace {
                reasons: vec!["cidrBlock changes from a to b (immutable)".into()],
            },
            before: Some(Value::String("a".into())),
            after: Value::String("b".into()),
        },
    );
    let opts = BuildOptions {
        owner: Some("dev-green"),
        today: Date::today_utc(),
        predictions: Some(&predictions),
    };
    let p = build_env_with(
        &model,
        &graph,
        "dev",
        Some(&live),
        &StructuralSecrets,
        &opts,
    )
    .unwrap();
    assert!(matches!(action_of(&p, &vpc), Action::Replace { reasons } if reasons.len() == 1));
    assert_eq!(p.owner, "dev-green");
    assert_eq!(p.counts.replace, 1);
}

#[test]
fn revisions_compare_desired_with_desired() {
    let base_files = testutil::repo();
    let mut head_files = base_files.clone();
    let dev = String::from_utf8(head_files["environments/dev.yaml"].clone()).unwrap();
    head_files.insert(
        "environments/dev.yaml".into(),
        dev.replace("cidr: 10.0.0.0/16", "cidr: 10.9.0.0/16")
            .into_bytes(),
    );
    let (bm, hm) = (
        crate::load::load(&base_files).unwrap(),
        crate::load::load(&head_files).unwrap(),
    );
    let (bg, hg) = (Graph::build(&bm).unwrap(), Graph::build(&hm).unwrap());
    let side = |model, graph| Side {
        model,
        graph,
        secrets: &StructuralSecrets,
    };
    let today = Date::today_utc();
    let p = build_revisions(&side(&bm, &bg), &side(&hm, &hg), "dev", today).unwrap();
    match action_of(&p, &id("network", "vpc")) {
        Action::Replace { reasons } => assert!(
            reasons[0].contains("10.0.0.0/16") && reasons[0].contains("10.9.0.0/16"),
            "{reasons:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.counts.changes(), 1);
    let same = build_revisions(&side(&bm, &bg), &side(&bm, &bg), "prod", today).unwrap();
    assert_eq!(same.counts.changes(), 0);
    assert_eq!(
        revision_environments(&bm, &hm),
        vec!["dev".to_string(), "prod".to_string()]
    );
}

#[test]
fn leaves_flatten_and_mask() {
    let v = Value::from_json(serde_json::json!({"a": {"b": 1, "c": [1, 2]}, "e": {}}));
    let paths: Vec<String> = leaves(&v).iter().map(|c| c.path().to_string()).collect();
    assert_eq!(paths, ["a.b", "a.c[0]", "a.c[1]", "e"]);
    let s = Value::List(vec![Value::Sensitive(Sensitive::from_string("x".into()))]);
    assert_eq!(leaves(&s), vec![FieldChange::Sensitive { path: "".into() }]);
}

#[test]
fn an_invalid_resource_is_named_once_per_line() {
    let origin = crate::value::Origin {
        file: "modules/net/module.yaml".into(),
        line: 12,
        column: 7,
    };
    let failure = || Error::Provider {
        env: "dev".into(),
        id: id("net", "web"),
        origin: origin.clone(),
        source: Box::new(provider::Error::Invalid {
            id: id("net", "web"),
            origin: origin.clone(),
            message: "`toPort` 220000 is out of range".into(),
        }),
    };
    let one = failure().to_string();
    assert_eq!(
        one,
        "environment dev: planning net.web (modules/net/module.yaml:12:7): `toPort` 220000 is out of range"
    );
    let many = Error::Providers {
        env: "dev".into(),
        failures: vec![failure()],
    }
    .to_string();
    assert_eq!(many.matches("net.web").count(), 1, "{many}");
    assert_eq!(many.matches("module.yaml:12:7").count(), 1, "{many}");
}

#[test]
fn a_targeted_plan_keeps_its_scope_and_names_what_it_leaves_out() {
    let (model, graph) = loaded();
    let mut p = build_env(&model, &graph, "dev", None, &StructuralSecrets, None).unwrap();
    let full = p.counts.create;
    let all: Vec<ResourceId> = p.resources().map(|r| r.id.clone()).collect();
    let leaf = all
        .iter()
        .find(|i| graph.dependents("dev", i).is_empty() && !graph.dependencies("dev", i).is_empty())
        .expect("the fixture has a resource with dependencies")
        .clone();
    let targets = vec![leaf.to_string()];
    let scope = target::scope(&graph, &target::Groups::of(&model, "dev"), "dev", &targets).unwrap();
    assert!(scope.contains(&leaf) && scope.len() > 1, "{scope:?}");
    let env = model.environment("dev").unwrap();
    target::restrict(&mut p, env, 0, &targets, &scope);
    assert_eq!(p.counts.create, scope.len());
    let t = p.target.as_ref().unwrap();
    assert_eq!(t.in_scope, scope.len());
    assert_eq!(t.left_out.len(), full - scope.len());
    assert!(t.left_out.iter().all(|l| l.action == "create"));
    // Steps are renumbered from 1 without gaps, and each resource points
    // at its step.
    for (i, s) in p.order.iter().enumerate() {
        assert_eq!(s.step, i + 1);
        for r in &s.resources {
            let plan = p.resources().find(|x| x.id.to_string() == *r).unwrap();
            assert_eq!(plan.step, s.step);
        }
    }
    assert!(p
        .order
        .last()
        .unwrap()
        .resources
        .contains(&leaf.to_string()));
}
