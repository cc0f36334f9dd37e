//! The Kubernetes provider over real HTTP against kube-sim and against a
//! real kube-apiserver with RBAC (each test that needs no fault injection
//! runs on both, as `sim::` and `real::`):
//! discovery, server-side apply and dry-run, field-manager conflicts,
//! inventory and prune, CRDs, health gates, injected faults, and how many
//! requests an observe costs.

use std::path::PathBuf;
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube_sim::{FaultAction, FaultRule, Handle};

use super::stand::{Kube, KubeServer};
use serde_json::json;
use tempfile::TempDir;
use tidegate::provider::kubernetes::transport::RetryConfig;
use tidegate::provider::kubernetes::{Kubernetes, Options};
use tidegate::provider::{
    Action, Desired, EnvTarget, Error, Health, KubeTarget, Live, Origin, Provider, ResourceId,
    Scope,
};
use tidegate::sensitive::Sensitive;
use tidegate::value::Value;

const CONTEXT: &str = "dev";

/// A Kubernetes API server (kube-sim, or a real kube-apiserver of the
/// test's own with tidegate as its ServiceAccount) and a kubeconfig for
/// context `dev`.
struct Cluster {
    kube: KubeServer,
    kubeconfig: PathBuf,
    _dir: TempDir,
}

impl Cluster {
    async fn start(kube: Kube) -> Cluster {
        let dir = TempDir::new().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let kube = KubeServer::start(kube, &[CONTEXT], &kubeconfig).await;
        Cluster {
            kube,
            kubeconfig,
            _dir: dir,
        }
    }

    /// The simulator, for its request counters; `None` on a real server
    /// (where the tests read resourceVersions instead).
    fn sim(&self) -> Option<&Handle> {
        match &self.kube {
            KubeServer::Sim(sim) => Some(sim),
            KubeServer::Real(_) => None,
        }
    }

    /// The real cluster (its administrator's kubectl), on a real server.
    fn real(&self) -> Option<&real_kube::Cluster> {
        match &self.kube {
            KubeServer::Real(plane) => Some(plane.cluster()),
            KubeServer::Sim(_) => None,
        }
    }

    /// The provider for environment `env` (through the kubeconfig context).
    async fn provider(&self, env: &str, force_conflicts: bool) -> Kubernetes {
        let target = EnvTarget {
            project: "test".into(),
            environment: env.into(),
            kubernetes: Some(KubeTarget {
                context: Some(CONTEXT.into()),
                force_conflicts,
            }),
            aws: None,
        };
        let options = Options {
            request_timeout: Duration::from_secs(2),
            retry: RetryConfig {
                max_retries: 4,
                base_delay: Duration::from_millis(20),
                max_delay: Duration::from_secs(2),
            },
            wait_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(50),
            ..Options::default()
        };
        Kubernetes::connect_kubeconfig(&self.kubeconfig, &target, options)
            .await
            .expect("provider connects")
    }

    /// A plain kube client, for acting as another field manager (someone
    /// else: on the real server the administrator, not tidegate's
    /// ServiceAccount, which may not PUT) and for reading what is stored.
    async fn client(&self) -> kube::Client {
        tidegate::provider::kubernetes::transport::install_crypto_provider();
        let (path, context) = match self.real() {
            Some(real) => (real.admin_kubeconfig().to_path_buf(), None),
            None => (self.kubeconfig.clone(), Some(CONTEXT.to_string())),
        };
        let kc = Kubeconfig::read_from(&path).unwrap();
        let opts = KubeConfigOptions {
            context,
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    async fn dynamic(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        ns: &str,
    ) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
        Api::namespaced_with(self.client().await, ns, &ar)
    }

    async fn configmaps(&self) -> Api<DynamicObject> {
        self.dynamic("", "v1", "ConfigMap", "configmaps", "default")
            .await
    }
}

fn desired(module: &str, name: &str, kind: &str, body: serde_json::Value) -> Desired {
    Desired {
        id: ResourceId {
            module: module.into(),
            name: name.into(),
        },
        kind: kind.into(),
        body: Value::from_json(body),
        origin: Origin {
            file: format!("modules/{module}/module.yaml"),
            line: 1,
            column: 1,
        },
    }
}

fn configmap(name: &str, data: serde_json::Value) -> Desired {
    desired(
        "web",
        name,
        "v1/ConfigMap",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": "default"}, "data": data}),
    )
}

/// A Deployment whose readiness is `ready` on kube-sim (its annotation);
/// on a real server `never` and `fail` pin its Pods to a node that does
/// not exist (and `fail` gives it a 1 s progress deadline), so it never
/// rolls out, or fails with `ProgressDeadlineExceeded`.
fn deployment(name: &str, ready: &str) -> Desired {
    let mut pod =
        json!({"containers": [{"name": "app", "image": "registry.example.com/app@sha256:0123"}]});
    if matches!(ready, "never" | "fail") {
        pod["nodeSelector"] = json!({"tidegate.dev/test-node": "none"});
    }
    let mut spec = json!({
        "replicas": 2,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": pod}
    });
    if ready == "fail" {
        spec["progressDeadlineSeconds"] = json!(1);
    }
    desired(
        "web",
        name,
        "apps/v1/Deployment",
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default",
                         "annotations": {kube_sim::READY_ANNOTATION: ready}},
            "spec": spec
        }),
    )
}

/// The secret with its value as a sensitive leaf, as the loader makes it.
fn secret(name: &str, password: &str) -> Desired {
    let mut d = desired(
        "web",
        name,
        "v1/Secret",
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": name, "namespace": "default"}, "type": "Opaque",
               "stringData": {"password": "placeholder"}}),
    );
    if let Value::Map(root) = &mut d.body {
        if let Some(Value::Map(data)) = root.get_mut("stringData") {
            data.insert(
                "password".into(),
                Value::Sensitive(Sensitive::from_string(password.into())),
            );
        }
    }
    d
}

fn find<'a>(lives: &'a [Live], name: &str) -> Option<&'a Live> {
    lives.iter().find(|l| l.id.name == name)
}

fn calls(p: &Kubernetes, op: &str) -> u64 {
    p.api_calls().get(op).copied().unwrap_or(0)
}

async fn resource_version(api: &Api<DynamicObject>, name: &str) -> String {
    api.get(name)
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
}

/// What an environment declaring `all` asks the provider to list: their
/// kinds, and the namespaces they live in (as the graph finds them).
fn scope(all: &[Desired]) -> Scope {
    Scope {
        kinds: all.iter().map(|d| d.kind.clone()).collect(),
        namespaces: Some(
            all.iter()
                .filter_map(|d| d.body.get_path("metadata.namespace"))
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
        ),
    }
}

/// observe → plan → apply for each desired resource, then the inventory;
/// returns what was applied.
async fn converge(p: &Kubernetes, all: &[Desired]) -> Vec<Live> {
    let live = p.observe_in(&scope(all)).await.expect("observe");
    let mut applied = Vec::new();
    for d in all {
        let before = live.iter().find(|l| l.id == d.id);
        let change = p.plan(d, before).await.expect("plan");
        let now = if change.action == Action::NoOp {
            before.unwrap().clone()
        } else {
            p.apply(d, before).await.expect("apply")
        };
        applied.push(now);
    }
    p.record_inventory(&applied).await.expect("inventory");
    applied
}

async fn kubernetes_create_then_reapply_is_a_noop_with_zero_writes(kube: Kube) {
    let c = Cluster::start(kube).await;
    if let Some(real) = c.real() {
        real.kubectl_stdin(&["apply", "-f", "-"], Some(&grant_secrets_in("default")))
            .unwrap();
    }
    let p = c.provider("dev", false).await;
    let all = vec![
        configmap("settings", json!({"mode": "fast"})),
        secret("db", "hunter2-secret"),
        deployment("api", "now"),
    ];
    assert!(p.observe_in(&scope(&all)).await.unwrap().is_empty());
    for d in &all {
        assert_eq!(
            p.plan(d, None).await.unwrap().action,
            Action::Create,
            "{}",
            d.id
        );
    }
    let applied = converge(&p, &all).await;
    assert_eq!(applied.len(), 3);

    let stored = c.configmaps().await.get("settings").await.unwrap();
    let labels = stored.metadata.labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "tidegate");
    assert_eq!(labels["tidegate.dev/environment"], "dev");
    assert_eq!(labels["tidegate.dev/module"], "web");
    assert_eq!(
        stored.metadata.annotations.unwrap()["tidegate.dev/resource"],
        "web.settings"
    );
    let managers: Vec<String> = stored
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"tidegate".to_string()), "{managers:?}");

    // A real Deployment takes a moment to roll out; until it has, a
    // listing cannot call it healthy.
    for l in &applied {
        p.wait_healthy(l, Duration::from_secs(30)).await.unwrap();
    }
    // Re-apply from Git unchanged: every plan is a no-op and nothing is written.
    let versions = [
        resource_version(&c.configmaps().await, "settings").await,
        resource_version(
            &c.dynamic("", "v1", "Secret", "secrets", "default").await,
            "db",
        )
        .await,
    ];
    let sim_before = c.sim().map(Handle::counters);
    let (dry_before, apply_before) = (calls(&p, "dry_run"), calls(&p, "apply"));
    let live = p.observe_in(&scope(&all)).await.unwrap();
    assert_eq!(live.len(), 3);
    for d in &all {
        let l = find(&live, &d.id.name).expect("observed");
        let change = p.plan(d, Some(l)).await.unwrap();
        assert_eq!(change.action, Action::NoOp, "{}", d.id);
    }
    let sim_after = c.sim().map(Handle::counters);
    let dry_runs = calls(&p, "dry_run") - dry_before;
    // Only the Secret needs a server-side dry run: the ConfigMap and the
    // Deployment carry the hash of the manifest tidegate applied and still
    // hold every field of it.
    assert_eq!(dry_runs, 1);
    assert_eq!(calls(&p, "apply") - apply_before, 0, "no real apply");
    // kube-sim counts dry-run applies as `apply` too: every one seen is
    // ours. (On a real server the unchanged resourceVersions below say
    // that nothing was written.)
    if let (Some(before), Some(after)) = (sim_before, sim_after) {
        assert_eq!(after.total("apply") - before.total("apply"), dry_runs);
        for verb in ["create", "update", "patch", "delete"] {
            assert_eq!(after.total(verb), before.total(verb), "{verb}");
        }
    }
    assert_eq!(
        resource_version(&c.configmaps().await, "settings").await,
        versions[0]
    );
    assert_eq!(
        resource_version(
            &c.dynamic("", "v1", "Secret", "secrets", "default").await,
            "db"
        )
        .await,
        versions[1]
    );

    // Health of an object listed healthy and not written since is the
    // listing's answer: no read per object.
    let gets_before = calls(&p, "get");
    for l in &live {
        assert_eq!(p.health(l).await.unwrap(), Health::Healthy, "{}", l.id);
    }
    assert_eq!(calls(&p, "get"), gets_before, "no GET for listed health");

    // Drift in a field tidegate set is not hidden by the applied hash: the
    // provider asks the server again and does not call it a no-op.
    let mut drifted = c.configmaps().await.get("settings").await.unwrap();
    drifted.data["data"]["mode"] = json!("slow");
    drifted.metadata.managed_fields = None;
    c.configmaps()
        .await
        .replace("settings", &Default::default(), &drifted)
        .await
        .unwrap();
    let dry_before = calls(&p, "dry_run");
    let live_now = p.observe_in(&scope(&all)).await.unwrap();
    let settings = find(&live_now, "settings").unwrap();
    let planned = p.plan(&all[0], Some(settings)).await;
    assert!(
        !matches!(&planned, Ok(c) if c.action == Action::NoOp),
        "drift planned as a no-op: {planned:?}"
    );
    assert_eq!(calls(&p, "dry_run") - dry_before, 1);

    // The secret is observed masked and never printed.
    let db = find(&live, "db").unwrap();
    assert!(matches!(
        db.body.get_path("data.password"),
        Some(Value::Sensitive(_))
    ));
    let printed = format!("{db:?} {}", db.body.to_json_masked());
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(!printed.contains("aHVudGVyMi1zZWNyZXQ"), "{printed}");

    // A changed secret is an update, decided without showing either value.
    let change = p.plan(&secret("db", "rotated"), Some(db)).await.unwrap();
    assert_eq!(change.action, Action::Update);
    let after = format!("{:?}", change.after);
    assert!(
        !after.contains("rotated") && !after.contains("cm90YXRlZA"),
        "{after}"
    );

    // Attributes other resources can reference.
    let settings = find(&live, "settings").unwrap();
    assert_eq!(settings.external_id, "default/settings");
    assert_eq!(
        settings.attributes["metadata.name"],
        Value::String("settings".into())
    );
    assert!(settings.attributes.contains_key("metadata.uid"));
}

/// Secrets are listed in the declared and recorded namespaces, one list
/// each, so RBAC can grant them per namespace: on a real server with
/// deploy/rbac.yaml, tidegate reads its Secrets with RoleBindings in those
/// namespaces only, and a list across the cluster is refused.
async fn kubernetes_secrets_are_listed_per_namespace_never_across_the_cluster(kube: Kube) {
    let c = Cluster::start(kube).await;
    // The administrator's install step: the namespaces, and on the real
    // server tidegate's Secrets grant in each.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.client().await);
    for ns in ["team-a", "team-b"] {
        let mut obj = k8s_openapi::api::core::v1::Namespace::default();
        obj.metadata.name = Some(ns.into());
        namespaces.create(&Default::default(), &obj).await.unwrap();
        if let Some(real) = c.real() {
            real.kubectl_stdin(&["apply", "-f", "-"], Some(&grant_secrets_in(ns)))
                .unwrap();
        }
    }
    let p = c.provider("dev", false).await;
    let in_ns = |ns: &str, name: &str| {
        let mut d = secret(name, "s3cret-value");
        if let Value::Map(root) = &mut d.body {
            if let Some(Value::Map(meta)) = root.get_mut("metadata") {
                meta.insert("namespace".into(), Value::String(ns.into()));
            }
        }
        d
    };
    let both = [in_ns("team-a", "one"), in_ns("team-b", "two")];
    converge(&p, &both).await;

    // Git now declares only the Secret in team-a: the one in team-b is
    // still found (its namespace is in the inventory), so it can be pruned.
    let lists = |p: &Kubernetes| calls(p, "list");
    let before = lists(&p);
    let live = p.observe_in(&scope(&both[..1])).await.unwrap();
    let mut names: Vec<&str> = live.iter().map(|l| l.id.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["one", "two"]);
    assert_eq!(lists(&p) - before, 2, "one list per namespace");

    // Across the cluster: the ServiceAccount of deploy/ may not.
    let wide = p.observe(&["v1/Secret".to_string()]).await;
    if c.real().is_some() {
        let err = wide.expect_err("a cluster-wide Secret list is refused");
        assert!(err.to_string().contains("403"), "{err}");
        // Per namespace without the grant: refused, naming the grant to add.
        let ungranted = Scope {
            kinds: ["v1/Secret".to_string()].into(),
            namespaces: Some(["kube-system".to_string()].into()),
        };
        let err = p.observe_in(&ungranted).await.expect_err("no grant there");
        let text = err.to_string();
        assert!(text.contains("namespace kube-system"), "{text}");
        assert!(text.contains("tidegate-secrets"), "{text}");
    } else {
        assert_eq!(wide.unwrap().len(), 2);
    }
}

async fn kubernetes_update_reports_conflicts_unless_forced(kube: Kube) {
    let c = Cluster::start(kube).await;
    let p = c.provider("dev", false).await;
    let applied = converge(&p, &[configmap("flags", json!({"a": "1"}))]).await;

    // An update tidegate alone owns is predicted exactly by the dry run.
    let change = p
        .plan(
            &configmap("flags", json!({"a": "1", "b": "2"})),
            Some(&applied[0]),
        )
        .await
        .unwrap();
    assert_eq!(change.action, Action::Update);
    assert_eq!(
        change.after.get_path("data.b"),
        Some(&Value::String("2".into()))
    );

    // Another manager takes field `a`.
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "flags", "namespace": "default"}, "data": {"a": "from-other"}});
    c.configmaps()
        .await
        .patch(
            "flags",
            &PatchParams::apply("other-team").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    let live = p.observe(&["v1/ConfigMap".into()]).await.unwrap();
    let want = configmap("flags", json!({"a": "3"}));
    let err = p.plan(&want, live.first()).await.unwrap_err();
    match &err {
        Error::Conflict { id, managers } => {
            assert_eq!(id.name, "flags");
            assert_eq!(managers, "other-team (.data.a)");
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(err.to_string().contains("forceConflicts"), "{err}");
    assert!(matches!(
        p.apply(&want, live.first()).await,
        Err(Error::Conflict { .. })
    ));
    let stored = c.configmaps().await.get("flags").await.unwrap();
    assert_eq!(stored.data["data"]["a"], "from-other");

    // The environment allows taking fields over.
    let forced = c.provider("dev", true).await;
    forced
        .apply(&want, live.first())
        .await
        .expect("forced apply");
    let stored = c.configmaps().await.get("flags").await.unwrap();
    assert_eq!(stored.data["data"]["a"], "3");
}

async fn kubernetes_prune_deletes_only_owned_objects(kube: Kube) {
    let c = Cluster::start(kube).await;
    let p = c.provider("dev", false).await;
    converge(
        &p,
        &[
            configmap("keep", json!({"k": "v"})),
            configmap("gone", json!({"k": "v"})),
            deployment("worker", "now"),
        ],
    )
    .await;
    // An object nobody at tidegate made, and one of another environment.
    c.configmaps()
        .await
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "foreign", "namespace": "default"}, "data": {"x": "y"}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let staging = c.provider("staging", false).await;
    converge(&staging, &[configmap("staging-only", json!({"s": "1"}))]).await;

    // Git now declares only `keep`: the inventory still finds the Deployment
    // kind although no desired resource names it.
    let live = p.observe(&["v1/ConfigMap".into()]).await.unwrap();
    let mut names: Vec<&str> = live.iter().map(|l| l.id.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["gone", "keep", "worker"]);
    for l in live.iter().filter(|l| l.id.name != "keep") {
        p.delete(l).await.expect("prune");
        p.delete(l).await.expect("deleting what is gone succeeds");
    }
    assert!(c
        .configmaps()
        .await
        .get_opt("gone")
        .await
        .unwrap()
        .is_none());
    assert!(c
        .configmaps()
        .await
        .get_opt("keep")
        .await
        .unwrap()
        .is_some());
    assert!(c
        .configmaps()
        .await
        .get_opt("staging-only")
        .await
        .unwrap()
        .is_some());
    let remaining = p.observe(&["v1/ConfigMap".into()]).await.unwrap();
    p.record_inventory(&remaining).await.unwrap();
    assert_eq!(remaining.len(), 1);

    // A Live claiming ownership of the unowned object (same name) is refused
    // after re-reading it, and the object stays.
    let mut claim = find(&live, "keep").unwrap().clone();
    if let Value::Map(root) = &mut claim.body {
        if let Some(Value::Map(meta)) = root.get_mut("metadata") {
            meta.insert("name".into(), Value::String("foreign".into()));
        }
    }
    claim.external_id = "default/foreign".into();
    let err = p.delete(&claim).await.unwrap_err();
    assert!(format!("{err} {err:?}").contains("NotOwned"), "{err:?}");
    assert!(c
        .configmaps()
        .await
        .get_opt("foreign")
        .await
        .unwrap()
        .is_some());
    // Another environment's object is not this environment's to delete.
    let theirs = staging.observe(&["v1/ConfigMap".into()]).await.unwrap();
    assert!(p.delete(&theirs[0]).await.is_err());
    assert!(c
        .configmaps()
        .await
        .get_opt("staging-only")
        .await
        .unwrap()
        .is_some());

    // Applying over the unowned object would take it over: refused.
    let err = p
        .apply(&configmap("foreign", json!({"x": "mine"})), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("not owned by tidegate"), "{err}");
    assert!(p
        .plan(&configmap("foreign", json!({})), None)
        .await
        .is_err());
    let stored = c.configmaps().await.get("foreign").await.unwrap();
    assert_eq!(stored.data["data"]["x"], "y");
}

/// Creates are checked for a namesake with one metadata-only list per kind
/// and namespace after the first few GETs, and the list changes nothing of
/// what is refused: a name it shows (an object made outside tidegate) is
/// refused with the GET's own error, and an object someone else makes
/// after the list is found in the apply's (or the dry run's) response.
async fn kubernetes_creates_check_ownership_with_one_list(kube: Kube) {
    let c = Cluster::start(kube).await;
    let api = c.configmaps().await;
    let cm = |name: &str, v: &str| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"}, "data": {"x": v}}))
        .unwrap()
    };
    api.create(&PostParams::default(), &cm("foreign", "y"))
        .await
        .unwrap();
    let p = c.provider("dev", false).await;
    let ops = |op: &str| p.api_calls().get(op).copied().unwrap_or(0);
    for i in 0..6 {
        p.apply(&configmap(&format!("new{i}"), json!({"i": "1"})), None)
            .await
            .expect("create");
    }
    // Four GETs, then one list for the other creates.
    assert_eq!(ops("get"), 4, "{:?}", p.api_calls());
    assert_eq!(ops("list_metadata"), 1, "{:?}", p.api_calls());
    assert_eq!(ops("apply"), 6, "{:?}", p.api_calls());

    // A name the list showed: the same refusal as through a GET.
    let err = p
        .apply(&configmap("foreign", json!({"x": "mine"})), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("v1/ConfigMap default/foreign already exists and is not owned by tidegate"),
        "{err}"
    );
    let err = p
        .plan(&configmap("foreign", json!({})), None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("is not owned by tidegate"),
        "{err}"
    );
    assert_eq!(ops("list_metadata"), 1, "the list is made once");
    let stored = api.get("foreign").await.unwrap();
    assert_eq!(stored.data["data"]["x"], "y");

    // Made by someone else after the list: a dry run shows it and the plan
    // refuses as through a GET; a real apply merges, then fails naming them.
    let other = PatchParams::apply("someone-else");
    for name in ["late", "later"] {
        api.patch(name, &other, &Patch::Apply(&cm(name, "theirs")))
            .await
            .unwrap();
    }
    let err = p
        .plan(&configmap("late", json!({"z": "mine"})), None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("is not owned by tidegate"),
        "{err}"
    );
    let err = p
        .apply(&configmap("later", json!({"y": "mine"})), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("v1/ConfigMap default/later was created by someone else (someone-else)"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("tidegate withdrew the fields and marks"),
        "{err}"
    );
    let stored = api.get("later").await.unwrap();
    assert_eq!(
        stored.data["data"],
        json!({"x": "theirs"}),
        "nothing of theirs overwritten, nothing of tidegate's left"
    );
    let labels = stored.metadata.labels.clone().unwrap_or_default();
    assert!(
        !labels.keys().any(|k| k.contains("tidegate")),
        "no ownership marks left: {labels:?}"
    );
    // So the next observe does not take it for tidegate's.
    let seen = p.observe(&["v1/ConfigMap".into()]).await.unwrap();
    assert!(
        !seen.iter().any(|l| l.external_id.ends_with("/later")),
        "{seen:?}"
    );

    // An observe starts over: GETs first again.
    p.observe(&["v1/ConfigMap".into()]).await.unwrap();
    let gets = ops("get");
    p.apply(&configmap("fresh", json!({})), None)
        .await
        .expect("create");
    assert_eq!(ops("get"), gets + 1, "{:?}", p.api_calls());
}

fn crd() -> Desired {
    desired(
        "platform",
        "widgets-crd",
        "apiextensions.k8s.io/v1/CustomResourceDefinition",
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object",
                        "x-kubernetes-preserve-unknown-fields": true}}}]
            }
        }),
    )
}

/// A ClusterRole `tidegate-<name>` granting tidegate's ServiceAccount
/// every verb on `group`/`resource`: the rule deploy/rbac.yaml tells users
/// to add for each kind beyond the bundled modules'.
pub fn grant(name: &str, group: &str, resource: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: tidegate-{name}}}
rules:
  - apiGroups: [\"{group}\"]
    resources: [{resource}]
    verbs: [get, list, watch, create, update, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: tidegate-{name}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: tidegate-{name}}}
subjects: [{{kind: ServiceAccount, name: tidegate, namespace: tidegate}}]
"
    )
}

/// The administrator's step that lets tidegate delete Namespace `ns` (the
/// delete rule of deploy/rbac.yaml names the managed namespaces only).
pub fn grant_namespace_delete(ns: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: tidegate-delete-{ns}}}
rules:
  - apiGroups: [\"\"]
    resources: [namespaces]
    resourceNames: [{ns}]
    verbs: [delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: tidegate-delete-{ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: tidegate-delete-{ns}}}
subjects: [{{kind: ServiceAccount, name: tidegate, namespace: tidegate}}]
"
    )
}

/// The administrator's step that lets tidegate manage Secrets in namespace
/// `ns`: deploy/managed-namespaces.yaml's RoleBinding of the ClusterRole
/// tidegate-secrets (deploy/rbac.yaml).
pub fn grant_secrets_in(ns: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: tidegate-secrets, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: tidegate-secrets}}
subjects: [{{kind: ServiceAccount, name: tidegate, namespace: tidegate}}]
"
    )
}

/// On a real server tidegate may apply only what deploy/rbac.yaml grants:
/// a CRD and its custom resources need the rule a user adds for them.
const CRD_RBAC: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: tidegate-widgets}
rules:
  - apiGroups: [apiextensions.k8s.io]
    resources: [customresourcedefinitions]
    verbs: [get, list, watch, create, update, patch, delete]
  - apiGroups: [example.com]
    resources: [widgets]
    verbs: [get, list, watch, create, update, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: tidegate-widgets}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: tidegate-widgets}
subjects: [{kind: ServiceAccount, name: tidegate, namespace: tidegate}]
";

fn widget(name: &str, size: i64) -> Desired {
    desired(
        "platform",
        name,
        "example.com/v1/Widget",
        json!({"apiVersion": "example.com/v1", "kind": "Widget",
               "metadata": {"name": name, "namespace": "default"}, "spec": {"size": size}}),
    )
}

async fn kubernetes_crd_then_custom_resource(kube: Kube) {
    let c = Cluster::start(kube).await;
    if let Some(real) = c.real() {
        real.kubectl_stdin(&["apply", "-f", "-"], Some(CRD_RBAC))
            .unwrap();
    }
    let p = c.provider("dev", false).await;
    let kinds = vec![crd().kind.clone(), widget("w", 1).kind.clone()];
    // Before the CRD exists its kind is not served: nothing observed, and
    // the provider says so (the plan stage predicts a create only when the
    // environment declares the CRD; a typo in a kind is an error).
    assert!(p.observe(&kinds).await.unwrap().is_empty());
    let err = p.plan(&widget("w", 1), None).await.unwrap_err();
    assert!(matches!(err, Error::NotServed { .. }), "{err}");
    assert!(err.to_string().contains("example.com/v1"), "{err}");
    assert!(p.apply(&widget("w", 1), None).await.is_err(), "no CRD yet");

    let applied = p.apply(&crd(), None).await.expect("crd applied");
    assert_eq!(p.health(&applied).await.unwrap(), Health::Healthy);
    let w = p
        .apply(&widget("w", 1), None)
        .await
        .expect("custom resource applied");
    assert_eq!(w.external_id, "default/w");
    let live = p.observe(&kinds).await.unwrap();
    assert_eq!(live.len(), 2);
    let w = find(&live, "w").unwrap();
    assert_eq!(
        p.plan(&widget("w", 1), Some(w)).await.unwrap().action,
        Action::NoOp
    );
    let change = p.plan(&widget("w", 2), Some(w)).await.unwrap();
    assert_eq!(change.action, Action::Update);
    assert_eq!(change.after.get_path("spec.size"), Some(&Value::Int(2)));
}

async fn kubernetes_health_waits_for_rollouts_and_times_out(kube: Kube) {
    let c = Cluster::start(kube).await;
    if let Some(real) = c.real() {
        real.kubectl_stdin(&["apply", "-f", "-"], Some(&grant("jobs", "batch", "jobs")))
            .unwrap();
    }
    let p = c.provider("dev", false).await;
    let later = p
        .apply(&deployment("later", "after:700ms"), None)
        .await
        .unwrap();
    assert!(matches!(
        p.health(&later).await.unwrap(),
        Health::Progressing(_)
    ));
    let h = p
        .wait_healthy(&later, Duration::from_secs(10))
        .await
        .expect("ready in time");
    assert_eq!(h, Health::Healthy);

    let never = p.apply(&deployment("never", "never"), None).await.unwrap();
    // Through `dyn Provider`, as the executor holds it.
    let boxed: Box<dyn Provider> = Box::new(c.provider("dev", false).await);
    let err = tidegate::provider::kubernetes::wait_healthy(
        boxed.as_ref(),
        &never,
        Duration::from_millis(600),
        Duration::from_millis(50),
    )
    .await
    .unwrap_err();
    match err {
        Error::Timeout { id, reason, .. } => {
            assert_eq!(id.name, "never");
            assert!(!reason.is_empty());
        }
        other => panic!("expected a timeout, got {other}"),
    }

    let failing = p.apply(&deployment("broken", "fail"), None).await.unwrap();
    let h = p
        .wait_healthy(&failing, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(matches!(h, Health::Failed(_)), "{h:?}");

    let job = desired(
        "batch",
        "migrate",
        "batch/v1/Job",
        json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "migrate", "namespace": "default"},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "m", "image": "registry.example.com/m@sha256:01"}]}}}}),
    );
    let job = p.apply(&job, None).await.unwrap();
    assert_eq!(
        p.wait_healthy(&job, Duration::from_secs(30)).await.unwrap(),
        Health::Healthy
    );
}

#[tokio::test]
async fn kubernetes_retries_injected_faults_and_fails_alone() {
    let c = Cluster::start(Kube::Sim).await;
    let sim = c.sim().expect("kube-sim");
    let p = c.provider("dev", false).await;
    // Two 500s on writes, a 429 with Retry-After on reads, a reset.
    sim.add_fault(FaultRule::new(
        Some("PATCH"),
        Some("/api/v1/namespaces/default/configmaps"),
        2,
        FaultAction::Error { code: 500 },
    ));
    sim.add_fault(FaultRule::new(
        Some("GET"),
        Some("/api/v1/configmaps"),
        1,
        FaultAction::Throttle {
            retry_after_seconds: 1,
        },
    ));
    sim.add_fault(FaultRule::new(
        Some("GET"),
        Some("/apis/apps/v1"),
        1,
        FaultAction::Reset,
    ));
    // A hung read: the request times out (2 s here) and is sent again.
    sim.add_fault(FaultRule::new(
        Some("GET"),
        Some("/api/v1/namespaces/default/configmaps/tidegate-inventory-test.dev"),
        1,
        FaultAction::Stall { millis: 4000 },
    ));
    let started = std::time::Instant::now();
    let applied = converge(
        &p,
        &[configmap("a", json!({"k": "1"})), deployment("d", "now")],
    )
    .await;
    assert_eq!(applied.len(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "Retry-After honoured and the stalled read timed out"
    );
    assert!(calls(&p, "get") >= 2, "the stalled read was retried");
    assert!(c.configmaps().await.get_opt("a").await.unwrap().is_some());
    // Every injected fault was followed by one retry, counted by reason.
    let retries = p.api_retries();
    let expect: std::collections::BTreeMap<String, u64> = [
        ("server_error", 2),
        ("throttled", 1),
        ("connection", 1),
        ("timeout", 1),
    ]
    .into_iter()
    .map(|(r, n)| (r.to_string(), n))
    .collect();
    assert_eq!(retries, expect);

    // A resource whose writes keep failing fails alone, with its reason.
    sim.add_fault(FaultRule::new(
        Some("PATCH"),
        Some("/api/v1/namespaces/default/configmaps/doomed"),
        50,
        FaultAction::Error { code: 503 },
    ));
    let err = p
        .apply(&configmap("doomed", json!({"k": "1"})), None)
        .await
        .unwrap_err();
    match &err {
        Error::Api { retryable, .. } => assert!(*retryable),
        other => panic!("expected an API error, got {other}"),
    }
    assert!(err.to_string().contains("doomed"), "{err}");
    p.apply(&configmap("fine", json!({"k": "1"})), None)
        .await
        .expect("other resources still apply");
}

async fn kubernetes_observe_costs_the_same_for_1_or_50_objects(kube: Kube) {
    let c = Cluster::start(kube).await;
    let p = c.provider("dev", false).await;
    let kinds = vec!["v1/ConfigMap".to_string(), "apps/v1/Deployment".to_string()];
    let total = |p: &Kubernetes| p.api_calls().values().sum::<u64>();

    converge(&p, &[configmap("cm-0", json!({"i": "0"}))]).await;
    p.observe(&kinds).await.unwrap(); // warm discovery
    let before = total(&p);
    let lists = |c: &Cluster| c.sim().map(|s| s.counters().total("list"));
    let sim_before = lists(&c);
    assert_eq!(p.observe(&kinds).await.unwrap().len(), 1);
    let one = total(&p) - before;
    let sim_one = lists(&c).zip(sim_before).map(|(a, b)| a - b);

    let many: Vec<Desired> = (0..50)
        .map(|i| configmap(&format!("cm-{i}"), json!({"i": i.to_string()})))
        .collect();
    converge(&p, &many).await;
    let before = total(&p);
    let sim_before = lists(&c);
    assert_eq!(p.observe(&kinds).await.unwrap().len(), 50);
    let fifty = total(&p) - before;
    let sim_fifty = lists(&c).zip(sim_before).map(|(a, b)| a - b);

    eprintln!("observe API calls: 1 object -> {one}, 50 objects -> {fifty}");
    assert_eq!(one, fifty);
    assert_eq!(one, 3, "inventory get + one list per kind");
    // What the server saw (kube-sim counts it; the provider's own count
    // above holds on both targets).
    if c.sim().is_some() {
        assert_eq!(sim_one, Some(2));
        assert_eq!(sim_fifty, Some(2));
    }

    // Pages: 50 objects at 20 a page are three list requests, all found.
    let target = EnvTarget {
        project: "test".into(),
        environment: "dev".into(),
        kubernetes: Some(KubeTarget {
            context: Some(CONTEXT.into()),
            force_conflicts: false,
        }),
        aws: None,
    };
    let paged = Kubernetes::connect_kubeconfig(
        &c.kubeconfig,
        &target,
        Options {
            page_size: 20,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        paged.observe(&["v1/ConfigMap".into()]).await.unwrap().len(),
        50
    );
    assert_eq!(calls(&paged, "list"), 3);
}

async fn kubernetes_unknown_values_and_bad_targets(kube: Kube) {
    let c = Cluster::start(kube).await;
    let p = c.provider("dev", false).await;
    let mut d = configmap("later", json!({"vpc": "x"}));
    if let Value::Map(root) = &mut d.body {
        if let Some(Value::Map(data)) = root.get_mut("data") {
            data.insert("vpc".into(), Value::Unknown("module.network.vpc.id".into()));
        }
    }
    let applies = |c: &Cluster| c.sim().map(|s| s.counters().total("apply"));
    let writes_before = applies(&c);
    let dry_before = calls(&p, "dry_run");
    let change = p.plan(&d, None).await.unwrap();
    assert_eq!(change.action, Action::Create);
    assert_eq!(
        change.after.get_path("data.vpc"),
        Some(&Value::Unknown("module.network.vpc.id".into()))
    );
    assert_eq!(applies(&c), writes_before, "no dry run");
    assert_eq!(calls(&p, "dry_run"), dry_before, "no dry run");
    let err = p.apply(&d, None).await.unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("data.vpc"), "{err}");
    assert!(
        err.to_string().contains("modules/web/module.yaml:1:1"),
        "{err}"
    );

    let bad_kind = desired("web", "x", "ConfigMap", json!({"metadata": {"name": "x"}}));
    assert!(matches!(
        p.plan(&bad_kind, None).await,
        Err(Error::Invalid { .. })
    ));

    let target = |context: Option<&str>| EnvTarget {
        project: "test".into(),
        environment: "dev".into(),
        kubernetes: Some(KubeTarget {
            context: context.map(str::to_string),
            force_conflicts: false,
        }),
        aws: None,
    };
    let err =
        Kubernetes::connect_kubeconfig(&c.kubeconfig, &target(Some("nope")), Options::default())
            .await
            .err()
            .expect("unknown context");
    assert!(matches!(err, Error::Target { .. }), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");
    let no_target = EnvTarget {
        environment: "dev".into(),
        ..EnvTarget::default()
    };
    let err = tidegate::provider::registry::connect(
        tidegate::provider::ProviderKind::Kubernetes,
        &no_target,
    )
    .await
    .err()
    .expect("no kubernetes target");
    assert!(err.to_string().contains("no kubernetes target"), "{err}");
}

async fn kubernetes_namespace_then_its_objects(kube: Kube) {
    let c = Cluster::start(kube).await;
    let p = c.provider("dev", false).await;
    let ns = desired(
        "shop",
        "namespace",
        "v1/Namespace",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
    );
    let cm = desired(
        "shop",
        "settings",
        "v1/ConfigMap",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "settings", "namespace": "shop"}, "data": {"a": "1"}}),
    );
    // Before its namespace exists the object can only be predicted.
    let change = p.plan(&cm, None).await.unwrap();
    assert_eq!(change.action, Action::Create);
    assert!(p.apply(&cm, None).await.is_err(), "namespace missing");

    assert_eq!(p.plan(&ns, None).await.unwrap().action, Action::Create);
    let applied_ns = p.apply(&ns, None).await.unwrap();
    assert_eq!(applied_ns.external_id, "shop");
    let applied_cm = p.apply(&cm, None).await.unwrap();
    assert_eq!(applied_cm.external_id, "shop/settings");
    p.record_inventory(&[applied_ns, applied_cm]).await.unwrap();

    // Both are found from the inventory's kinds alone.
    let live = p.observe(&[]).await.unwrap();
    let mut ids: Vec<String> = live.iter().map(|l| l.id.to_string()).collect();
    ids.sort();
    assert_eq!(ids, ["shop.namespace", "shop.settings"]);
    let inventory = c
        .configmaps()
        .await
        .get("tidegate-inventory-test.dev")
        .await
        .unwrap();
    let keys: Vec<&String> = inventory.data["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["_shop__Namespace", "shop_settings__ConfigMap"]);

    // Recording a smaller set drops the removed entry.
    let settings = find(&live, "settings").unwrap().clone();
    p.record_inventory(&[settings]).await.unwrap();
    let inventory = c
        .configmaps()
        .await
        .get("tidegate-inventory-test.dev")
        .await
        .unwrap();
    let keys: Vec<&String> = inventory.data["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["shop_settings__ConfigMap"]);
}

crate::on_both_kubes!(
    kubernetes_create_then_reapply_is_a_noop_with_zero_writes,
    kubernetes_secrets_are_listed_per_namespace_never_across_the_cluster,
    kubernetes_update_reports_conflicts_unless_forced,
    kubernetes_prune_deletes_only_owned_objects,
    kubernetes_crd_then_custom_resource,
    kubernetes_health_waits_for_rollouts_and_times_out,
    kubernetes_observe_costs_the_same_for_1_or_50_objects,
    kubernetes_unknown_values_and_bad_targets,
    kubernetes_namespace_then_its_objects,
    kubernetes_creates_check_ownership_with_one_list,
);
