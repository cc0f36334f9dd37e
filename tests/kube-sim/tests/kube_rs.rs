//! kube-rs against the simulator, used the way tidegate's Kubernetes
//! provider uses it: discovery, batched lists with selectors and pages,
//! server-side apply with conflicts and dry-run, watches, status, faults.

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Discovery};
use kube_sim::{Config, FaultAction, FaultRule, Handle, Phase, Readiness, Simulator};
use serde_json::json;
use std::time::Duration;

async fn start() -> (Handle, tempfile::TempDir) {
    let cfg = Config {
        contexts: vec!["dev".into(), "prod".into()],
        ..Config::default()
    };
    let sim = Simulator::start(cfg).await.expect("simulator starts");
    let dir = tempfile::tempdir().unwrap();
    sim.kubeconfig(&dir.path().join("config")).unwrap();
    (sim, dir)
}

async fn client(dir: &tempfile::TempDir, context: &str) -> Client {
    // Built in the workspace, rustls has both ring and aws-lc-rs (from the
    // AWS SDK) and will not choose by itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(dir.path().join("config")).unwrap();
    let opts = KubeConfigOptions {
        context: Some(context.into()),
        ..Default::default()
    };
    let cfg = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

fn cm(name: &str, labels: serde_json::Value, data: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": data})
}

fn api_err(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Discovery requests are counted (verb `discovery`, by first path
/// segment); a metadata-only list without a selector (what tidegate's
/// provider lists before creates) holds every object of the namespace with
/// its labels, and is empty, not an error, for a namespace that does not
/// exist yet, as on a real API server.
#[tokio::test]
async fn discovery_is_counted_and_metadata_lists_hold_labels() {
    let (sim, dir) = start().await;
    let c = client(&dir, "dev").await;
    sim.reset_counters();
    c.list_core_api_resources("v1").await.unwrap();
    c.list_api_groups().await.unwrap();
    let counters = sim.counters();
    assert_eq!(counters.get_in("dev", "discovery", "api"), 1);
    assert_eq!(counters.get_in("dev", "discovery", "apis"), 1);
    assert_eq!(counters.total("discovery"), 2);
    let nowhere: Api<ConfigMap> = Api::namespaced(c.clone(), "nowhere");
    let empty = nowhere.list_metadata(&ListParams::default()).await.unwrap();
    assert!(empty.items.is_empty());
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    for (name, labels) in [("a", json!({"team": "x"})), ("b", json!({}))] {
        api.patch(
            name,
            &PatchParams::apply("someone"),
            &Patch::Apply(&cm(name, labels, json!({"k": "v"}))),
        )
        .await
        .unwrap();
    }
    let meta = api.list_metadata(&ListParams::default()).await.unwrap();
    let mut seen: Vec<(String, Option<String>)> = meta
        .items
        .iter()
        .map(|m| {
            let labels = m.metadata.labels.clone().unwrap_or_default();
            (
                m.metadata.name.clone().unwrap_or_default(),
                labels.get("team").cloned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("a".to_string(), Some("x".to_string())),
            ("b".to_string(), None)
        ]
    );
    assert_eq!(sim.counters().get_in("dev", "list", "configmaps"), 2);
}

#[tokio::test]
async fn discovery_finds_builtins_and_crds() {
    let (_sim, dir) = start().await;
    let c = client(&dir, "dev").await;
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "scope": "Cluster",
            "names": {"kind": "Gadget", "plural": "gadgets"},
            "versions": [{"name": "v1", "served": true, "storage": true}]}
    });
    let crds: Api<kube::api::DynamicObject> = Api::all_with(
        c.clone(),
        &kube::discovery::ApiResource::erase::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(&()),
    );
    crds.patch(
        "gadgets.example.com",
        &PatchParams::apply("t"),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    let d = Discovery::new(c).run().await.unwrap();
    let (ar, caps) = d
        .resolve_gvk(&kube::api::GroupVersionKind::gvk(
            "apps",
            "v1",
            "Deployment",
        ))
        .unwrap();
    assert_eq!(ar.plural, "deployments");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    let (gar, gcaps) = d
        .resolve_gvk(&kube::api::GroupVersionKind::gvk(
            "example.com",
            "v1",
            "Gadget",
        ))
        .unwrap();
    assert_eq!(gar.plural, "gadgets");
    assert_eq!(gcaps.scope, kube::discovery::Scope::Cluster);
}

#[tokio::test]
async fn list_with_selector_and_pages_counts_one_call_per_page() {
    let (sim, dir) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&dir, "dev").await, "default");
    for i in 0..25 {
        let env = if i % 2 == 0 { "dev" } else { "prod" };
        let obj = cm(
            &format!("c{i:02}"),
            json!({"env": env, "managed": "yes"}),
            json!({"i": i.to_string()}),
        );
        api.patch(
            &format!("c{i:02}"),
            &PatchParams::apply("tidegate"),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap();
    }
    sim.reset_counters();
    let mut names = vec![];
    let mut lp = ListParams::default().labels("env=dev,managed").limit(5);
    loop {
        let page = api.list(&lp).await.unwrap();
        names.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(tok) => lp = lp.continue_token(&tok),
            None => break,
        }
    }
    assert_eq!(names.len(), 13);
    assert!(
        names.windows(2).all(|w| w[0] < w[1]),
        "sorted, no duplicates: {names:?}"
    );
    let counters = sim.counters();
    assert_eq!(counters.get("list", "configmaps"), 3);
    assert_eq!(counters.get_in("dev", "list", "configmaps"), 3);
    let notin = api
        .list(&ListParams::default().labels("env notin (dev)"))
        .await
        .unwrap();
    assert_eq!(notin.items.len(), 12);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=c03"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let meta = api
        .list_metadata(&ListParams::default().labels("env=prod"))
        .await
        .unwrap();
    assert_eq!(meta.items.len(), 12);
    // Contexts are separate clusters.
    let prod: Api<ConfigMap> = Api::namespaced(client(&dir, "prod").await, "default");
    assert!(prod
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
async fn server_side_apply_conflicts_force_dry_run_and_noop() {
    let (_sim, dir) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&dir, "dev").await, "default");
    let pp = PatchParams::apply("tidegate");
    let want = cm("app", json!({"a": "1"}), json!({"k": "v", "gone": "soon"}));
    let first = api.patch("app", &pp, &Patch::Apply(&want)).await.unwrap();
    let mf = first.metadata.managed_fields.clone().unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("tidegate"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    assert_eq!(mf[0].fields_type.as_deref(), Some("FieldsV1"));
    // Re-applying the same config changes nothing, not even the resourceVersion.
    let again = api.patch("app", &pp, &Patch::Apply(&want)).await.unwrap();
    assert_eq!(
        again.metadata.resource_version,
        first.metadata.resource_version
    );
    // Another manager changing an owned field conflicts, naming the owner.
    let theirs = cm("app", json!({}), json!({"k": "other"}));
    let err = api_err(
        api.patch(
            "app",
            &PatchParams::apply("intruder"),
            &Patch::Apply(&theirs),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert!(
        err.message.contains("conflict with \"tidegate\""),
        "{}",
        err.message
    );
    assert_eq!(err.details.unwrap().causes[0].field, ".data.k");
    // Dry-run of a forced apply returns the result and stores nothing.
    let dry = api
        .patch(
            "app",
            &PatchParams::apply("intruder").force().dry_run(),
            &Patch::Apply(&theirs),
        )
        .await
        .unwrap();
    assert_eq!(dry.data.unwrap()["k"], "other");
    assert_eq!(api.get("app").await.unwrap().data.unwrap()["k"], "v");
    // Dropping a field from the config removes it.
    let smaller = cm("app", json!({"a": "1"}), json!({"k": "v"}));
    let after = api
        .patch("app", &pp, &Patch::Apply(&smaller))
        .await
        .unwrap();
    assert!(!after.data.unwrap().contains_key("gone"));
    // Dry-run create leaves nothing behind.
    let ghost = cm("ghost", json!({}), json!({}));
    api.patch("ghost", &pp.clone().dry_run(), &Patch::Apply(&ghost))
        .await
        .unwrap();
    assert_eq!(api_err(api.get("ghost").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn optimistic_concurrency_and_missing_namespace() {
    let (_sim, dir) = start().await;
    let c = client(&dir, "dev").await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let mut obj: ConfigMap = serde_json::from_value(cm("x", json!({}), json!({"a": "1"}))).unwrap();
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(
        api_err(api.create(&PostParams::default(), &obj).await.unwrap_err()).reason,
        "AlreadyExists"
    );
    obj.metadata.resource_version = created.metadata.resource_version.clone();
    obj.data = Some([("a".to_string(), "2".to_string())].into());
    api.replace("x", &PostParams::default(), &obj)
        .await
        .unwrap();
    let stale = api_err(
        api.replace("x", &PostParams::default(), &obj)
            .await
            .unwrap_err(),
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    let nowhere: Api<ConfigMap> = Api::namespaced(c.clone(), "missing");
    let err = api_err(
        nowhere
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 404);
    assert_eq!(err.message, "namespaces \"missing\" not found");
    let ns: Api<Namespace> = Api::all(c);
    ns.patch(
        "missing",
        &PatchParams::apply("t"),
        &Patch::Apply(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "missing"}}),
        ),
    )
    .await
    .unwrap();
    obj.metadata.resource_version = None;
    nowhere.create(&PostParams::default(), &obj).await.unwrap();
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let (_sim, dir) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&dir, "dev").await, "default");
    let mut obj = cm("held", json!({}), json!({}));
    obj["metadata"]["finalizers"] = json!(["tidegate.dev/prune"]);
    api.patch("held", &PatchParams::apply("t"), &Patch::Apply(&obj))
        .await
        .unwrap();
    api.delete("held", &DeleteParams::default()).await.unwrap();
    let held = api.get("held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_err(api.get("held").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn watcher_sees_changes_and_survives_dropped_streams() {
    let (sim, dir) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&dir, "dev").await, "default");
    let cfg = watcher::Config::default().labels("app=w");
    let mut stream = watcher(api.clone(), cfg).applied_objects().boxed();
    api.patch(
        "w1",
        &PatchParams::apply("t"),
        &Patch::Apply(cm("w1", json!({"app": "w"}), json!({"v": "1"}))),
    )
    .await
    .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("w1"));
    sim.drop_watches();
    api.patch(
        "w1",
        &PatchParams::apply("t"),
        &Patch::Apply(cm("w1", json!({"app": "w"}), json!({"v": "2"}))),
    )
    .await
    .unwrap();
    let next = loop {
        let o = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if o.data.as_ref().unwrap()["v"] == "2" {
            break o;
        }
    };
    assert_eq!(next.metadata.name.as_deref(), Some("w1"));

    // Raw watch from a resourceVersion replays later events in order, and a
    // label change out of the selector arrives as DELETED.
    let rv = api
        .get("w1")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.patch(
        "w1",
        &PatchParams::apply("t"),
        &Patch::Apply(cm("w1", json!({"app": "other"}), json!({"v": "2"}))),
    )
    .await
    .unwrap();
    let mut raw = api
        .watch(&WatchParams::default().labels("app=w").timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    match raw.try_next().await.unwrap().unwrap() {
        WatchEvent::Deleted(o) => assert_eq!(o.metadata.name.as_deref(), Some("w1")),
        other => panic!("expected DELETED, got {other:?}"),
    }
}

#[tokio::test]
async fn kubelet_makes_workloads_ready_on_request() {
    let (sim, dir) = start().await;
    let c = client(&dir, "dev").await;
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let dep = |name: &str, mode: &str| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "annotations": {"kube-sim.tidegate.dev/ready": mode}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
        })
    };
    let available = |d: &Deployment| {
        let s = d.status.clone().unwrap_or_default();
        s.available_replicas == Some(3)
            && s.observed_generation == d.metadata.generation
            && s.conditions.unwrap_or_default().iter().any(|c| {
                c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
            })
    };
    deploys
        .patch(
            "now",
            &PatchParams::apply("t"),
            &Patch::Apply(dep("now", "now")),
        )
        .await
        .unwrap();
    assert!(available(&deploys.get("now").await.unwrap()));
    deploys
        .patch(
            "later",
            &PatchParams::apply("t"),
            &Patch::Apply(dep("later", "after:300ms")),
        )
        .await
        .unwrap();
    assert!(!available(&deploys.get("later").await.unwrap()));
    let cond = kube::runtime::wait::await_condition(
        deploys.clone(),
        "later",
        move |d: Option<&Deployment>| d.is_some_and(available),
    );
    tokio::time::timeout(Duration::from_secs(10), cond)
        .await
        .unwrap()
        .unwrap();
    deploys
        .patch(
            "stuck",
            &PatchParams::apply("t"),
            &Patch::Apply(dep("stuck", "never")),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!available(&deploys.get("stuck").await.unwrap()));
    sim.set_ready(
        "dev",
        "apps/v1",
        "deployments",
        Some("default"),
        "stuck",
        Phase::Ready,
    )
    .unwrap();
    assert!(available(&deploys.get("stuck").await.unwrap()));
    // Main-resource writes cannot change status; generation follows spec.
    let bumped = deploys
        .patch(
            "now",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"replicas": 3, "paused": true}, "status": {"replicas": 99}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(bumped.metadata.generation, Some(2));
    assert_ne!(bumped.status.unwrap().replicas, Some(99));
    // Jobs complete, or fail on request.
    sim.set_default_readiness(Readiness::Fail);
    let jobs: Api<Job> = Api::namespaced(c, "default");
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
    jobs.patch("j", &PatchParams::apply("t"), &Patch::Apply(&job))
        .await
        .unwrap();
    let failed = jobs
        .get("j")
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions
        .unwrap();
    assert!(failed
        .iter()
        .any(|c| c.type_ == "Failed" && c.status == "True"));
}

#[tokio::test]
async fn injected_faults_reach_the_client() {
    let (sim, dir) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&dir, "dev").await, "default");
    sim.add_fault(FaultRule::new(
        Some("GET"),
        Some("/api/v1/namespaces/default/configmaps"),
        1,
        FaultAction::Error { code: 500 },
    ));
    assert_eq!(
        api_err(api.list(&ListParams::default()).await.unwrap_err()).code,
        500
    );
    api.list(&ListParams::default()).await.unwrap();
    // kube-rs retries a 429 by itself: the counters show both attempts.
    sim.reset_counters();
    sim.add_fault(FaultRule::new(
        None,
        None,
        1,
        FaultAction::Throttle {
            retry_after_seconds: 0,
        },
    ));
    assert_eq!(api_err(api.get("x").await.unwrap_err()).code, 404);
    assert_eq!(sim.counters().get("get", "configmaps"), 2);
    sim.add_fault(FaultRule::new(Some("GET"), None, 1, FaultAction::Reset));
    let reset = api.list(&ListParams::default()).await.unwrap_err();
    assert!(
        !matches!(reset, kube::Error::Api(_)),
        "a reset is a transport error: {reset:?}"
    );
    sim.add_fault(FaultRule::new(
        Some("GET"),
        None,
        1,
        FaultAction::Stall { millis: 2_000 },
    ));
    let stalled =
        tokio::time::timeout(Duration::from_millis(300), api.list(&ListParams::default())).await;
    assert!(
        stalled.is_err(),
        "the stalled request did not answer in time"
    );
    api.list(&ListParams::default()).await.unwrap();
}

#[tokio::test]
async fn raw_http_status_objects_retry_after_and_expired_watches() {
    let cfg = Config {
        watch_history: 3,
        ..Config::default()
    };
    let sim = Simulator::start(cfg).await.unwrap();
    let raw = |req: String| {
        let addr = sim.addr();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    sim.add_fault(FaultRule::new(
        None,
        Some("/api/v1/namespaces"),
        1,
        FaultAction::Throttle {
            retry_after_seconds: 7,
        },
    ));
    let throttled = raw(get("/api/v1/namespaces")).await;
    assert!(throttled.starts_with("HTTP/1.1 429"), "{throttled}");
    assert!(
        throttled.to_ascii_lowercase().contains("retry-after: 7"),
        "{throttled}"
    );
    assert!(
        throttled.contains("\"reason\":\"TooManyRequests\""),
        "{throttled}"
    );
    let missing = raw(get("/api/v1/namespaces/default/configmaps/nope")).await;
    let body: serde_json::Value =
        serde_json::from_str(missing.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["kind"], "Status");
    assert_eq!(
        body["details"],
        json!({"name": "nope", "kind": "configmaps"})
    );
    // Control API: counters and faults over HTTP.
    let counters = raw(get("/_sim/counters")).await;
    assert!(
        counters.contains("\"verb\":\"get\",\"resource\":\"configmaps\""),
        "{counters}"
    );
    let rule = r#"{"method":"GET","times":1,"action":{"type":"error","code":503}}"#;
    let post = format!("POST /_sim/faults HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{rule}", rule.len());
    assert!(raw(post).await.starts_with("HTTP/1.1 200"));
    assert!(raw(get("/api/v1/namespaces"))
        .await
        .starts_with("HTTP/1.1 503"));
    // More than 3 events later, a watch from resourceVersion 1 is expired.
    let client = kube::Client::try_from(kube::Config::new(sim.url().parse().unwrap())).unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..5 {
        api.patch(
            &format!("e{i}"),
            &PatchParams::apply("t"),
            &Patch::Apply(cm(&format!("e{i}"), json!({}), json!({}))),
        )
        .await
        .unwrap();
    }
    let mut events = api
        .watch(&WatchParams::default().timeout(2), "1")
        .await
        .unwrap()
        .boxed();
    match events.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}
