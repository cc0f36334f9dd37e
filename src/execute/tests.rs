use std::time::Duration;

use super::*;
use crate::resource::Change;
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

/// A provider that predicts an update for everything and counts its calls.
#[derive(Default)]
struct Counting {
    plans: std::sync::atomic::AtomicUsize,
    applies: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Provider for Counting {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Kubernetes
    }
    async fn observe(&self, _kinds: &[String]) -> crate::provider::Result<Vec<Live>> {
        Ok(Vec::new())
    }
    async fn plan(&self, d: &Desired, l: Option<&Live>) -> crate::provider::Result<Change> {
        self.plans.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Change {
            action: Action::Update,
            before: l.map(|l| l.body.clone()),
            after: d.body.clone(),
        })
    }
    async fn apply(&self, d: &Desired, _l: Option<&Live>) -> crate::provider::Result<Live> {
        self.applies
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(live_of(d))
    }
    async fn delete(&self, _l: &Live) -> crate::provider::Result<()> {
        Ok(())
    }
    async fn health(&self, _l: &Live) -> crate::provider::Result<Health> {
        Ok(Health::Healthy)
    }
    async fn record_inventory(&self, _owned: &[Live]) -> crate::provider::Result<()> {
        Ok(())
    }
    fn api_calls(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
}

fn desired(v: i64) -> Desired {
    let mut m = Map::new();
    m.insert("v".into(), crate::value::Value::Int(v));
    Desired {
        id: id("app", "config"),
        kind: "v1/ConfigMap".into(),
        body: crate::value::Value::Map(m),
        origin: crate::value::Origin {
            file: "modules/app/module.yaml".into(),
            line: 1,
            column: 1,
        },
    }
}

fn live_of(d: &Desired) -> Live {
    Live {
        id: d.id.clone(),
        kind: d.kind.clone(),
        external_id: "app/config".into(),
        body: d.body.clone(),
        attributes: Map::new(),
    }
}

#[tokio::test]
async fn a_prediction_for_the_same_body_is_reused_and_any_other_body_is_planned_again() {
    let p = Counting::default();
    let options = Options::default();
    let current = Some(live_of(&desired(1)));
    // The plan foresaw no change for body v=1 and this is body v=1: no
    // second prediction, no write.
    let (status, _, written) = step(
        &p,
        desired(1),
        current.as_ref(),
        Some(Action::NoOp),
        &options,
    )
    .await;
    assert_eq!(status, Status::Unchanged);
    assert_eq!(written, None, "nothing written: the listed object stands");
    assert_eq!(p.plans.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(p.applies.load(std::sync::atomic::Ordering::SeqCst), 0);
    // No prediction: the provider is asked.
    let (status, _, written) = step(&p, desired(2), current.as_ref(), None, &options).await;
    assert_eq!(status, Status::Updated);
    assert!(written.is_some(), "the written object is returned");
    assert_eq!(p.plans.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(p.applies.load(std::sync::atomic::Ordering::SeqCst), 1);

    // LiveState hands a prediction out only for the body it was made for.
    let mut live = LiveState::default();
    live.predictions.insert(
        id("app", "config"),
        observe::Prediction {
            body: desired(1).body.digest(),
            action: Action::NoOp,
        },
    );
    assert_eq!(
        live.predicted(&id("app", "config"), &desired(1).body),
        Some(&Action::NoOp)
    );
    assert_eq!(live.predicted(&id("app", "config"), &desired(2).body), None);
}
