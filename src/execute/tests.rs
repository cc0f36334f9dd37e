use std::time::Duration;

use super::*;
use crate::testutil;

fn id(m: &str, n: &str) -> ResourceId {
    ResourceId {
        module: m.into(),
        name: n.into(),
    }
}

fn done(i: ResourceId, ms: u64) -> ResourceOutcome {
    ResourceOutcome {
        id: i,
        kind: String::new(),
        provider: ProviderKind::Aws,
        status: Status::Created,
        started: Duration::ZERO,
        duration: Duration::from_millis(ms),
        reason: String::new(),
    }
}

#[test]
fn the_critical_path_is_the_longest_dependency_chain() {
    let model = crate::load::load(&testutil::repo()).unwrap();
    let graph = Graph::build(&model).unwrap();
    // network.vpc -> network.subnet; network.vpc -> app.config; app.ns -> app.config
    let mut out = Outcome::new("dev", "dev");
    out.push(done(id("network", "vpc"), 100));
    out.push(done(id("network", "subnet"), 50));
    out.push(done(id("app", "ns"), 400));
    out.push(done(id("app", "config"), 30));
    assert_eq!(out.critical_path(&graph, "dev"), Duration::from_millis(430));
    assert_eq!(out.counts_line(), "4 created");
    assert!(out.converged() && out.wrote());
    out.push(ResourceOutcome::skipped(
        &id("x", "y"),
        "vpc",
        ProviderKind::Aws,
        "because".into(),
    ));
    assert!(!out.converged());
    assert_eq!(out.counts_line(), "4 created, 1 skipped");
}

#[test]
fn unknown_values_are_found_anywhere_in_a_body() {
    use crate::value::Value;
    let mut m = Map::new();
    m.insert(
        "a".into(),
        Value::List(vec![
            Value::Int(1),
            Value::Unknown("module.n.vpc.id".into()),
        ]),
    );
    assert_eq!(
        first_unknown(&Value::Map(m)),
        Some("module.n.vpc.id".to_string())
    );
    assert_eq!(first_unknown(&Value::Int(1)), None);
}
