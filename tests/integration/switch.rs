//! Blue/green cutover end to end, through the real binary on moto and on
//! kube-sim and a real kube-apiserver (as the ServiceAccount
//! deploy/rbac.yaml binds): `tidegate switch prod --to prod-green` moves
//! the declared Ingress entry point (ExternalName backends, an
//! ingress-nginx canary Ingress for the weighted steps) and the Elastic IP
//! association to the `rebuild --as` copy; `--back` restores blue in one
//! step; a copy that turns unhealthy mid-switch makes it fall back on its
//! own; a copy that never converged (or is unhealthy now) is refused with
//! nothing changed; every step is in the audit history.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tempfile::TempDir;
use tidegate::state::history::{EventKind, Outcome};
use tidegate::state::RecordStore;

use super::stand::{commit_files, http_get, owned_ec2, Kube, Ports, Stand, AMI, REGION};

/// Environment `prod`: EC2 (an instance and an address) and, with `web`,
/// Kubernetes (the web module, an Ingress entry point).
fn env_doc(web: bool) -> String {
    let (kube, module, ingress) = if web {
        (
            "    kubernetes:\n      context: prod\n",
            "    - name: web\n      source: modules/web\n",
            "    - name: web
      ingress:
        namespace: edge
        name: shop
        host: shop.example.com
        service: web.service
        port: 80
        className: nginx
",
        )
    } else {
        ("", "", "")
    };
    format!(
        "apiVersion: tidegate.dev/v1
kind: Environment
metadata:
  name: prod
spec:
  targets:
{kube}    aws:
      region: {REGION}
  modules:
    - name: network
      source: modules/net
{module}  traffic:
{ingress}    - name: address
      elasticIp:
        allocation: network.ip
        instance: network.server
  policy:
    defaultSeverity: warning
"
    )
}

fn net_doc() -> String {
    format!(
        "apiVersion: tidegate.dev/v1
kind: Module
metadata:
  name: net
spec:
  resources:
    - name: vpc
      provider: aws
      type: vpc
      spec:
        cidrBlock: 10.7.0.0/16
    - name: subnet
      provider: aws
      type: subnet
      spec:
        vpcId: ${{resource.vpc.id}}
        cidrBlock: 10.7.1.0/24
        availabilityZone: {REGION}a
    - name: server
      provider: aws
      type: instance
      spec:
        ami: {AMI}
        instanceType: t3.micro
        subnetId: ${{resource.subnet.id}}
        metadata:
          httpTokens: required
    - name: ip
      provider: aws
      type: eip
      spec: {{}}
"
    )
}

const WEB: &str = "apiVersion: tidegate.dev/v1
kind: Module
metadata:
  name: web
spec:
  resources:
    - name: ns
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: Namespace
        metadata:
          name: shop-${env.name}
    - name: app
      provider: kubernetes
      manifest:
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
          namespace: shop-${env.name}
        spec:
          replicas: 1
          selector:
            matchLabels: {app: web}
          template:
            metadata:
              labels: {app: web}
            spec:
              containers:
                - name: web
                  image: registry.example.com/web@sha256:0123
    - name: service
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: Service
        metadata:
          name: web
          namespace: shop-${env.name}
        spec:
          selector: {app: web}
          ports:
            - port: 80
              targetPort: 8080
";

fn write_repo(dir: &Path) -> String {
    commit_files(
        dir,
        &[
            ("environments/prod.yaml", env_doc(true)),
            ("modules/net/module.yaml", net_doc()),
            ("modules/web/module.yaml", WEB.to_string()),
        ],
    )
}

/// The backend Service the Ingress `name` in `edge` sends to, with the
/// canary weight annotation, if any.
async fn ingress(stand: &Stand, name: &str) -> Option<(String, Option<String>)> {
    let api: Api<Ingress> = Api::namespaced(stand.admin_kube("prod").await, "edge");
    let i = api.get_opt(name).await.unwrap()?;
    let backend = i.spec.as_ref().unwrap().rules.as_ref().unwrap()[0]
        .http
        .as_ref()
        .unwrap()
        .paths[0]
        .backend
        .service
        .as_ref()
        .unwrap()
        .name
        .clone();
    let weight = i
        .metadata
        .annotations
        .and_then(|a| a.get("nginx.ingress.kubernetes.io/canary-weight").cloned());
    Some((backend, weight))
}

async fn external_name(stand: &Stand, name: &str) -> Option<String> {
    let api: Api<Service> = Api::namespaced(stand.admin_kube("prod").await, "edge");
    api.get_opt(name)
        .await
        .unwrap()
        .and_then(|s| s.spec)
        .and_then(|s| s.external_name)
}

/// The instance id of `owner`'s `network.server`.
async fn instance_of(stand: &Stand, owner: &str) -> String {
    let ec2 = owned_ec2(stand, owner).await;
    let found = ec2["instance"]
        .iter()
        .find(|(r, _)| r == "network.server")
        .unwrap_or_else(|| panic!("{owner} has no network.server: {ec2:?}"));
    found.1.clone()
}

/// The instance blue's address is associated with, and the address
/// count (green's own address is never used).
async fn address_instance(stand: &Stand) -> Option<String> {
    let out = stand.ec2().describe_addresses().send().await.unwrap();
    let owner = |a: &&aws_sdk_ec2::types::Address| {
        a.tags()
            .iter()
            .find(|t| t.key() == Some("tidegate:environment"))
            .and_then(|t| t.value())
            .map(str::to_string)
    };
    let blue: Vec<_> = out
        .addresses()
        .iter()
        .filter(|a| owner(a).as_deref() == Some("prod"))
        .collect();
    assert_eq!(blue.len(), 1, "{:?}", out.addresses());
    // Green's own address is never associated: the entry point is blue's.
    for a in out.addresses() {
        if owner(&a).as_deref() == Some("prod-green") {
            assert_eq!(a.instance_id().filter(|i| !i.is_empty()), None, "{a:?}");
        }
    }
    // moto answers an empty instanceId for an address with no association.
    blue[0]
        .instance_id()
        .filter(|i| !i.is_empty())
        .map(str::to_string)
}

async fn events(stand: &Stand) -> Vec<(EventKind, Outcome, Option<String>)> {
    let store = RecordStore::ConfigMap {
        client: stand.kube("prod").await,
        project: "test".into(),
    };
    store
        .history("prod")
        .await
        .unwrap()
        .into_iter()
        .filter(|e| {
            matches!(
                e.event,
                EventKind::Switch
                    | EventKind::SwitchStep
                    | EventKind::SwitchFallback
                    | EventKind::SwitchBack
            )
        })
        .map(|e| (e.event, e.outcome, e.error.or(e.reason)))
        .collect()
}

/// Makes green's Deployment stop being healthy: on kube-sim its readiness
/// annotation turns to `fail`; on the real server its Pods move to a node
/// that does not exist, so the new rollout never completes.
async fn break_green(stand: &Stand, kube: Kube) {
    let api: Api<Deployment> = Api::namespaced(stand.admin_kube("prod").await, "shop-prod-green");
    let patch = match kube {
        Kube::Sim => json!({
            "metadata": {"annotations": {kube_sim::READY_ANNOTATION: "fail"}},
            "spec": {"template": {"metadata": {"labels": {"broken": "yes"}}}},
        }),
        Kube::Real => json!({
            "spec": {
                "progressDeadlineSeconds": 1,
                "template": {"spec": {"nodeSelector": {"tidegate.dev/test-node": "none"}}},
            },
        }),
    };
    api.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn switch_moves_the_entry_points_steps_back_and_falls_back(kube: Kube) {
    let stand = Stand::on(kube, &["prod"]).await;
    let repo = TempDir::new().unwrap();
    write_repo(repo.path());
    let cli = |args: &'static [&'static str]| {
        let stand = &stand;
        let repo = repo.path();
        async move { stand.cli(repo, args).await }
    };
    let (code, text) = cli(&["apply", "--env", "prod", "--yes"]).await;
    assert_eq!(code, 0, "{text}");

    // A copy that was never built is refused, and nothing is written.
    let t0 = Instant::now();
    let (code, text) = cli(&["switch", "prod", "--to", "prod-green", "--yes"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("refused: prod-green has no record"), "{text}");
    assert_eq!(ingress(&stand, "shop").await, None);
    assert_eq!(address_instance(&stand).await, None);
    let refused_secs = t0.elapsed().as_secs_f64();

    // A copy whose build did not converge (its Deployment fails; kube-sim
    // only: on the real server Deployments roll out by kwok) is refused.
    if kube == Kube::Sim {
        stand.sim().set_default_readiness(kube_sim::Readiness::Fail);
        let (code, text) = cli(&["rebuild", "--env", "prod", "--as", "prod-red", "--yes"]).await;
        stand.sim().set_default_readiness(kube_sim::Readiness::Now);
        assert_ne!(code, 0, "{text}");
        let (code, text) = cli(&["switch", "prod", "--to", "prod-red", "--yes"]).await;
        assert_eq!(code, 1, "{text}");
        assert!(
            text.contains("refused: prod-red did not converge at its last apply (web.app"),
            "{text}"
        );
        assert_eq!(ingress(&stand, "shop").await, None);
        assert_eq!(address_instance(&stand).await, None);
    }

    // The first switch puts the entry points on blue.
    let (code, text) = cli(&["switch", "prod", "--to", "prod", "--yes"]).await;
    assert_eq!(code, 0, "{text}");
    let blue = instance_of(&stand, "prod").await;
    assert_eq!(
        ingress(&stand, "shop").await,
        Some(("shop-prod".into(), None))
    );
    assert_eq!(
        external_name(&stand, "shop-prod").await.as_deref(),
        Some("web.shop-prod.svc.cluster.local")
    );
    assert_eq!(
        address_instance(&stand).await.as_deref(),
        Some(blue.as_str())
    );

    let (code, text) = cli(&["rebuild", "--env", "prod", "--as", "prod-green", "--yes"]).await;
    assert_eq!(code, 0, "{text}");
    let green = instance_of(&stand, "prod-green").await;

    // Stepped: 50 % through the canary Ingress, then all of it.
    let t0 = Instant::now();
    let (code, text) = cli(&[
        "switch",
        "prod",
        "--to",
        "prod-green",
        "--steps",
        "50,100",
        "--step-wait",
        "1s",
        "--yes",
    ])
    .await;
    assert_eq!(code, 0, "{text}");
    let switch_secs = t0.elapsed().as_secs_f64();
    assert!(
        text.contains("prod: prod-green gets 50% (step 1 of 2)"),
        "{text}"
    );
    assert!(
        text.contains(
            "web: ingress edge/shop host shop.example.com: prod-green 100%; before: prod"
        ),
        "{text}"
    );
    assert_eq!(
        ingress(&stand, "shop").await,
        Some(("shop-prod-green".into(), None))
    );
    assert_eq!(ingress(&stand, "shop-canary").await, None);
    assert_eq!(
        external_name(&stand, "shop-prod-green").await.as_deref(),
        Some("web.shop-prod-green.svc.cluster.local")
    );
    assert_eq!(
        address_instance(&stand).await.as_deref(),
        Some(green.as_str())
    );

    // The entry points are no copy's: applying blue again (its `eip`
    // declares no `instanceId`) and green again changes nothing of them.
    for args in [
        &["apply", "--env", "prod", "--yes"][..],
        &["rebuild", "--env", "prod", "--as", "prod-green", "--yes"][..],
    ] {
        let (code, text) = stand.cli(repo.path(), args).await;
        assert_eq!(code, 0, "{text}");
    }
    assert_eq!(
        ingress(&stand, "shop").await,
        Some(("shop-prod-green".into(), None))
    );
    assert_eq!(
        address_instance(&stand).await.as_deref(),
        Some(green.as_str())
    );

    // Back to blue in one step.
    let t0 = Instant::now();
    let (code, text) = cli(&["switch", "prod", "--back", "--yes"]).await;
    assert_eq!(code, 0, "{text}");
    let back_secs = t0.elapsed().as_secs_f64();
    assert!(
        text.contains("routes to prod again (from prod-green)"),
        "{text}"
    );
    assert_eq!(
        ingress(&stand, "shop").await,
        Some(("shop-prod".into(), None))
    );
    assert_eq!(
        address_instance(&stand).await.as_deref(),
        Some(blue.as_str())
    );

    // Green turns unhealthy at 10 %: the switch falls back on its own.
    let child = stand
        .command(
            repo.path(),
            &[
                "switch",
                "prod",
                "--to",
                "prod-green",
                "--steps",
                "10,100",
                "--step-wait",
                "6s",
                "--yes",
            ],
        )
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(canary) = ingress(&stand, "shop-canary").await {
            assert_eq!(canary, ("shop-prod-green".into(), Some("10".into())));
            break;
        }
        assert!(Instant::now() < deadline, "no canary Ingress appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ingress(&stand, "shop").await,
        Some(("shop-prod".into(), None))
    );
    // One switch at a time: a second one meets the first's lock.
    let (code, text) = cli(&["switch", "prod", "--back", "--yes"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("test.prod.traffic is locked by"), "{text}");
    let (code, text) = cli(&["switch", "prod", "--status"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("web: ingress edge/shop host shop.example.com: prod 90%, prod-green 10%"),
        "{text}"
    );
    assert!(
        text.contains("address: elastic IP network.ip: prod 100%"),
        "{text}"
    );
    break_green(&stand, kube).await;
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("the switch ends")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("prod: fell back: prod-green turned unhealthy at 10%: web.app"),
        "{text}"
    );
    assert_eq!(
        ingress(&stand, "shop").await,
        Some(("shop-prod".into(), None))
    );
    assert_eq!(ingress(&stand, "shop-canary").await, None);
    assert_eq!(
        address_instance(&stand).await.as_deref(),
        Some(blue.as_str())
    );

    // Unhealthy now: the gate refuses, nothing moves.
    let (code, text) = cli(&["switch", "prod", "--to", "prod-green", "--yes"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("refused: prod-green is not healthy now: web.app"),
        "{text}"
    );
    assert_eq!(
        ingress(&stand, "shop").await,
        Some(("shop-prod".into(), None))
    );

    let (code, text) = cli(&["switch", "prod", "--status"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(
            "web: ingress edge/shop host shop.example.com: prod 100%; before: prod-green"
        ),
        "{text}"
    );

    let got = events(&stand).await;
    let kinds: Vec<(EventKind, Outcome)> = got.iter().map(|(k, o, _)| (*k, *o)).collect();
    use EventKind as E;
    use Outcome as O;
    assert_eq!(
        kinds[usize::from(kube == Kube::Sim)..],
        [
            (E::Switch, O::Refused),
            (E::Switch, O::Succeeded),
            (E::SwitchStep, O::Succeeded),
            (E::Switch, O::Succeeded),
            (E::SwitchBack, O::Succeeded),
            (E::SwitchStep, O::Succeeded),
            (E::SwitchFallback, O::Failed),
            (E::Switch, O::Refused),
        ],
        "{got:#?}"
    );
    assert!(
        got.iter()
            .find(|(k, _, _)| *k == E::SwitchFallback)
            .and_then(|(_, _, why)| why.as_deref())
            .unwrap()
            .contains("turned unhealthy at 10%"),
        "{got:#?}"
    );

    // Someone points the Ingress elsewhere by hand: `--status` says so
    // (exit 1), and a switch to the live copy puts it right.
    let api: Api<Ingress> = Api::namespaced(stand.admin_kube("prod").await, "edge");
    let by_hand = json!({"spec": {"rules": [{"host": "shop.example.com", "http": {"paths": [{
        "path": "/", "pathType": "Prefix",
        "backend": {"service": {"name": "shop-prod-green", "port": {"number": 80}}}}]}}]}});
    api.patch("shop", &PatchParams::default(), &Patch::Merge(&by_hand))
        .await
        .unwrap();
    let (code, text) = cli(&["switch", "prod", "--status"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("warning: web: the Ingress edge/shop sends to shop-prod-green, the routing says prod (shop-prod)"),
        "{text}"
    );
    let (code, text) = cli(&["switch", "prod", "--to", "prod", "--yes"]).await;
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        ingress(&stand, "shop").await,
        Some(("shop-prod".into(), None))
    );
    let (code, text) = cli(&["switch", "prod", "--status"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("before: prod-green"), "{text}");

    // The reconciler's status API and page show where traffic goes.
    let ports = Ports::free();
    let mut child = stand.reconcile(repo.path(), ports).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some((200, body)) = http_get(ports.api, "/api/v1/status").await {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if v["environments"][0]["traffic"].is_array() {
                break v;
            }
        }
        assert!(Instant::now() < deadline, "no traffic on the status API");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let traffic = &status["environments"][0]["traffic"];
    assert_eq!(traffic.as_array().unwrap().len(), 2, "{traffic}");
    let web = traffic
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["entry"] == "web")
        .unwrap();
    assert_eq!(web["live"], "prod", "{web}");
    assert_eq!(web["weight"], 100, "{web}");
    assert_eq!(web["previous"], "prod-green", "{web}");
    let (code, page) = http_get(ports.api, "/").await.unwrap();
    assert_eq!(code, 200);
    assert!(
        page.contains("<tr data-env=\"prod\" data-entry=\"web\"><td>prod</td><td>web</td><td><span class=ok>prod</span> 100%</td>"),
        "{page}"
    );
    assert!(crate::stand::sigterm(&mut child).await.success());
    eprintln!(
        "switch figures ({kube:?}): refused {refused_secs:.2}s, stepped 50/100 with 1s waits {switch_secs:.2}s, back {back_secs:.2}s"
    );
}

crate::on_both_kubes!(switch_moves_the_entry_points_steps_back_and_falls_back);

/// An environment without a Kubernetes target keeps its routing, lock and
/// history in the state directory; an Elastic IP alone cannot be weighted,
/// so `--steps` moves it in one step.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_elastic_ip_entry_point_switches_with_the_state_in_files() {
    let stand = Stand::with_contexts(&["unused"]).await;
    let repo = TempDir::new().unwrap();
    commit_files(
        repo.path(),
        &[
            ("environments/prod.yaml", env_doc(false)),
            ("modules/net/module.yaml", net_doc()),
        ],
    );
    let cli = |args: &'static [&'static str]| {
        let stand = &stand;
        let repo = repo.path();
        async move { stand.cli(repo, args).await }
    };
    for args in [
        &["apply", "--env", "prod", "--yes"][..],
        &["switch", "prod", "--to", "prod", "--yes"][..],
        &["rebuild", "--env", "prod", "--as", "prod-green", "--yes"][..],
    ] {
        let (code, text) = stand.cli(repo.path(), args).await;
        assert_eq!(code, 0, "{args:?}: {text}");
    }
    let blue = instance_of(&stand, "prod").await;
    let green = instance_of(&stand, "prod-green").await;
    assert_eq!(
        address_instance(&stand).await.as_deref(),
        Some(blue.as_str())
    );
    let (code, text) = cli(&[
        "switch",
        "prod",
        "--to",
        "prod-green",
        "--steps",
        "50,100",
        "--step-wait",
        "1s",
        "--yes",
    ])
    .await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("the shift cannot be weighted"), "{text}");
    assert!(!text.contains("gets 50%"), "{text}");
    assert_eq!(
        address_instance(&stand).await.as_deref(),
        Some(green.as_str())
    );
    let (code, text) = cli(&["switch", "prod", "--status"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("address: elastic IP network.ip: prod-green 100% (address eipalloc-"),
        "{text}"
    );
    let (code, text) = cli(&["switch", "prod", "--back", "--yes"]).await;
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        address_instance(&stand).await.as_deref(),
        Some(blue.as_str())
    );

    let state = stand.dir.path().join("state");
    let routing: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("test.prod.traffic.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(routing["entries"]["address"]["live"], "prod", "{routing}");
    assert_eq!(
        routing["entries"]["address"]["previous"], "prod-green",
        "{routing}"
    );
    let history = std::fs::read_to_string(state.join("test.prod.history.jsonl")).unwrap();
    let events: Vec<String> = history
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"].as_str().unwrap().starts_with("switch"))
        .map(|e| {
            format!(
                "{} {}",
                e["event"].as_str().unwrap(),
                e["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            "switch succeeded",
            "switch succeeded",
            "switch-back succeeded"
        ],
        "{history}"
    );
}
