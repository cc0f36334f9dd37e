//! Sources of many objects (issue 20) end to end with the real binary and
//! the real `kustomize` and `helm`: a folder of manifests, a Kustomize
//! overlay and a Helm chart apply, re-plan clean, show exactly the fields
//! an input changes, and prune what the overlay or chart stops rendering.

use std::path::Path;

use tempfile::TempDir;

use crate::stand::{commit_files, Kube, Stand};
use crate::support::go_tool;

fn env_doc(replicas: u32) -> String {
    format!(
        "apiVersion: tidegate.dev/v1
kind: Environment
metadata:
  name: dev
spec:
  targets:
    kubernetes:
      context: dev
  modules:
    - name: web
      source: modules/web
      inputs:
        replicas: {replicas}
        team: payments
  policy:
    defaultSeverity: warning
"
    )
}

const MODULE: &str = "apiVersion: tidegate.dev/v1
kind: Module
metadata:
  name: web
spec:
  inputs:
    replicas:
      type: number
    team:
      type: string
  resources:
    - name: ns
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: Namespace
        metadata:
          name: web-${env.name}
    - name: extras
      provider: kubernetes
      manifests:
        path: manifests
        substitute: true
    - name: app
      provider: kubernetes
      dependsOn: [extras]
      kustomize:
        path: overlays/dev
        namespace: web-${env.name}
        replicas:
          - name: web
            count: ${input.replicas}
        labels:
          team: ${input.team}
";

const EXTRAS: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: web-${env.name}
data:
  team: ${input.team}
  script: echo $${HOME}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: flags
  namespace: web-${env.name}
data:
  beta: \"true\"
";

const BASE: &str = "resources:\n  - deploy.yaml\n  - svc.yaml\n";
const BASE_NO_SVC: &str = "resources:\n  - deploy.yaml\n";

const DEPLOY: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
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
          image: nginx:1.27
          env:
            - name: GREETING
              value: hello ${USER}
";

const SVC: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
    - port: 80
";

const OVERLAY: &str = "resources:\n  - ../../base\ncommonAnnotations:\n  overlay: dev\n";

fn write(repo: &Path, replicas: u32, base: &str) {
    commit_files(
        repo,
        &[
            ("environments/dev.yaml", env_doc(replicas)),
            ("modules/web/module.yaml", MODULE.into()),
            ("modules/web/manifests/config.yaml", EXTRAS.into()),
            ("modules/web/base/kustomization.yaml", base.into()),
            ("modules/web/base/deploy.yaml", DEPLOY.into()),
            ("modules/web/base/svc.yaml", SVC.into()),
            (
                "modules/web/overlays/dev/kustomization.yaml",
                OVERLAY.into(),
            ),
        ],
    );
}

async fn run(stand: &Stand, repo: &Path, args: &[&str]) -> (i32, String) {
    let mut cmd = if args[0] != "apply" {
        let mut c = stand.binary();
        c.args(args).arg("--repo").arg(repo);
        c
    } else {
        stand.command(repo, args)
    };
    let out = cmd
        .env("TIDEGATE_KUSTOMIZE", go_tool("kustomize"))
        .env("TIDEGATE_HELM", go_tool("helm"))
        .env("XDG_CACHE_HOME", stand.dir.path().join("cache"))
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

async fn folders_and_overlays_apply_replan_clean_and_prune(kube: Kube) {
    let stand = Stand::on(kube, &["dev"]).await;
    let repo = TempDir::new().unwrap();
    let repo = repo.path();
    write(repo, 2, BASE);

    let (code, out) = run(&stand, repo, &["validate"]).await;
    assert_eq!(code, 0, "{out}");

    let (code, out) = run(&stand, repo, &["apply", "--env", "dev", "--yes"]).await;
    assert_eq!(code, 0, "{out}");
    for id in [
        "web.extras/ConfigMap/settings",
        "web.extras/ConfigMap/flags",
        "web.app/Deployment/web",
        "web.app/Service/web",
    ] {
        assert!(out.contains(id), "{id} missing from:\n{out}");
    }
    let client = crate::stand::kube_client(&stand.kubeconfig, "dev").await;
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), "web-dev");
    let settings = cms.get("settings").await.unwrap();
    let data = settings.data.unwrap();
    assert_eq!(data["team"], "payments");
    assert_eq!(data["script"], "echo ${HOME}", "escaped text stays literal");
    let deploys: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(client.clone(), "web-dev");
    let web = deploys.get("web").await.unwrap();
    assert_eq!(web.spec.replicas, Some(2));
    let labels = web.metadata.labels.unwrap();
    assert_eq!(labels["team"], "payments");
    let annotations = web.metadata.annotations.unwrap();
    assert_eq!(annotations["overlay"], "dev");
    assert!(
        !annotations.contains_key("config.kubernetes.io/origin"),
        "kustomize's origin annotation is not applied: {annotations:?}"
    );
    let env = &web.spec.template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap()[0];
    assert_eq!(env.value.as_deref(), Some("hello ${USER}"));

    let (code, out) = run(&stand, repo, &["plan", "--env", "dev"]).await;
    assert_eq!(code, 0, "a second plan is empty:\n{out}");
    assert!(out.contains("No changes"), "{out}");

    // An input change shows exactly the rendered field it changes.
    write(repo, 3, BASE);
    let (code, out) = run(&stand, repo, &["plan", "--env", "dev"]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("web.app/Deployment/web"), "{out}");
    assert!(out.contains("spec.replicas"), "{out}");
    assert!(
        !out.contains("web.app/Service/web"),
        "only the Deployment changes:\n{out}"
    );
    assert!(
        !out.contains("extras/ConfigMap"),
        "only the Deployment changes:\n{out}"
    );

    // The overlay stops rendering the Service: it is pruned.
    write(repo, 3, BASE_NO_SVC);
    let (code, out) = run(&stand, repo, &["apply", "--env", "dev", "--yes"]).await;
    assert_eq!(code, 0, "{out}");
    let svcs: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client, "web-dev");
    assert!(svcs.get_opt("web").await.unwrap().is_none(), "{out}");
    assert_eq!(deploys.get("web").await.unwrap().spec.replicas, Some(3));
}

crate::on_both_kubes!(
    folders_and_overlays_apply_replan_clean_and_prune,
    helm_charts_apply_replan_clean_and_prune
);

/// A broken overlay is one error naming the overlay, the module line that
/// uses it and what kustomize said; nothing is applied.
#[tokio::test]
async fn a_broken_overlay_names_the_overlay_and_the_module_line() {
    let stand = Stand::on(Kube::Sim, &["dev"]).await;
    let repo = TempDir::new().unwrap();
    let repo = repo.path();
    write(repo, 2, "resources:\n  - deploy.yaml\n  - missing.yaml\n");
    let (code, out) = run(&stand, repo, &["validate"]).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("modules/web/module.yaml:24:7"), "{out}");
    assert!(
        out.contains("kustomize overlay modules/web/overlays/dev"),
        "{out}"
    );
    assert!(out.contains("missing.yaml"), "{out}");
    assert!(
        !out.contains("tidegate-render-"),
        "no temporary path leaks:\n{out}"
    );
    let (code, out) = run(&stand, repo, &["apply", "--env", "dev", "--yes"]).await;
    assert_ne!(code, 0, "{out}");
    let client = crate::stand::kube_client(&stand.kubeconfig, "dev").await;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    assert!(
        namespaces.get_opt("web-dev").await.unwrap().is_none(),
        "{out}"
    );
}

fn helm_env(replicas: u32, service: bool) -> String {
    format!(
        "apiVersion: tidegate.dev/v1
kind: Environment
metadata:
  name: dev
spec:
  targets:
    kubernetes:
      context: dev
  secrets:
    - secrets/dev.sops.yaml
  modules:
    - name: web
      source: modules/web
      inputs:
        replicas: {replicas}
        service: {service}
        password: ${{secret.db.password}}
  policy:
    defaultSeverity: warning
"
    )
}

const HELM_MODULE: &str = "apiVersion: tidegate.dev/v1
kind: Module
metadata:
  name: web
spec:
  inputs:
    replicas:
      type: number
    service:
      type: bool
    password:
      type: string
  resources:
    - name: app
      provider: kubernetes
      helm:
        chart: chart
        namespace: web-${env.name}
        values:
          replicas: ${input.replicas}
          password: ${input.password}
          service:
            enabled: ${input.service}
";

const CHART: &str = "apiVersion: v2
name: web
version: 0.1.0
";

const CHART_VALUES: &str = "replicas: 1
password: ''
service:
  enabled: true
";

const CHART_DEPLOY: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
  labels:
    app: web
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: nginx:1.27
          env:
            - name: GREETING
              value: hello ${USER}
            - name: PASSWORD
              valueFrom:
                secretKeyRef: {name: {{ .Release.Name }}-db, key: password}
";

const CHART_SVC: &str = "{{- if .Values.service.enabled }}
apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}-web
spec:
  selector: {app: web}
  ports:
    - port: 80
{{- end }}
";

const CHART_SECRET: &str = "apiVersion: v1
kind: Secret
metadata:
  name: {{ .Release.Name }}-db
type: Opaque
data:
  password: {{ .Values.password | b64enc }}
";

const CHART_TEST: &str = "apiVersion: v1
kind: Pod
metadata:
  name: {{ .Release.Name }}-test
  annotations:
    helm.sh/hook: test
spec:
  containers:
    - name: t
      image: busybox
";

fn write_chart(repo: &Path, replicas: u32, service: bool) {
    std::fs::create_dir_all(repo.join("secrets")).unwrap();
    std::fs::copy(
        crate::support::repo_root().join("secrets/dev.sops.yaml"),
        repo.join("secrets/dev.sops.yaml"),
    )
    .unwrap();
    commit_files(
        repo,
        &[
            ("environments/dev.yaml", helm_env(replicas, service)),
            ("modules/web/module.yaml", HELM_MODULE.into()),
            ("modules/web/chart/Chart.yaml", CHART.into()),
            ("modules/web/chart/values.yaml", CHART_VALUES.into()),
            (
                "modules/web/chart/templates/deploy.yaml",
                CHART_DEPLOY.into(),
            ),
            ("modules/web/chart/templates/svc.yaml", CHART_SVC.into()),
            (
                "modules/web/chart/templates/secret.yaml",
                CHART_SECRET.into(),
            ),
            ("modules/web/chart/templates/test.yaml", CHART_TEST.into()),
        ],
    );
}

/// `run` with the example's demo keys.
async fn run_keyed(stand: &Stand, repo: &Path, args: &[&str]) -> (i32, String) {
    let keys = crate::support::repo_root().join("secrets/demo-keys");
    let mut all: Vec<&str> = args.to_vec();
    let keys = keys.display().to_string();
    all.extend(["--age-key-dir", &keys]);
    run(stand, repo, &all).await
}

/// Every file under `dir`, as text.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push_str(&all_text(&p));
            } else if let Ok(b) = std::fs::read(&p) {
                out.push_str(&String::from_utf8_lossy(&b));
            }
        }
    }
    out
}

async fn helm_charts_apply_replan_clean_and_prune(kube: Kube) {
    use base64::Engine;
    let stand = Stand::on(kube, &["dev"]).await;
    let repo = TempDir::new().unwrap();
    let repo = repo.path();
    write_chart(repo, 2, true);
    // The administrator's step: the namespace, and on the real server
    // tidegate's Secrets grant in it.
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(stand.admin_kube("dev").await);
    let mut ns = k8s_openapi::api::core::v1::Namespace::default();
    ns.metadata.name = Some("web-dev".into());
    namespaces.create(&Default::default(), &ns).await.unwrap();
    if matches!(kube, Kube::Real) {
        stand
            .real()
            .kubectl_stdin(
                &["apply", "-f", "-"],
                Some(&crate::kubernetes::grant_secrets_in("web-dev")),
            )
            .unwrap();
    }

    let (code, out) = run(&stand, repo, &["validate"]).await;
    assert_eq!(code, 0, "{out}");

    let (code, out) = run_keyed(&stand, repo, &["apply", "--env", "dev", "--yes"]).await;
    assert_eq!(code, 0, "{out}");
    for id in [
        "web.app/Deployment/app-web",
        "web.app/Service/app-web",
        "web.app/Secret/app-db",
    ] {
        assert!(out.contains(id), "{id} missing from:\n{out}");
    }
    assert!(!out.contains("app-test"), "test hooks are left out:\n{out}");
    let client = crate::stand::kube_client(&stand.kubeconfig, "dev").await;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), "web-dev");
    let db = secrets.get("app-db").await.unwrap();
    let password = String::from_utf8(db.data.unwrap()["password"].0.clone()).unwrap();
    assert!(password.len() > 8, "the SOPS secret reached the Secret");
    assert!(!password.contains("tidegate-"), "{password}");
    assert!(
        !out.contains(&password),
        "the secret is not printed:\n{out}"
    );
    let deploys: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(client.clone(), "web-dev");
    let web = deploys.get("app-web").await.unwrap();
    assert_eq!(web.spec.replicas, Some(2));
    let env = &web.spec.template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap()[0];
    assert_eq!(env.value.as_deref(), Some("hello ${USER}"));

    let (code, out) = run_keyed(&stand, repo, &["plan", "--env", "dev"]).await;
    assert_eq!(code, 0, "a second plan is empty:\n{out}");
    assert!(out.contains("No changes"), "{out}");

    // A value change shows exactly the rendered field it changes.
    write_chart(repo, 3, true);
    let (code, out) = run_keyed(&stand, repo, &["plan", "--env", "dev"]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("web.app/Deployment/app-web"), "{out}");
    assert!(out.contains("spec.replicas"), "{out}");
    assert!(
        !out.contains("web.app/Service"),
        "only the Deployment:\n{out}"
    );
    assert!(
        !out.contains("web.app/Secret"),
        "only the Deployment:\n{out}"
    );
    assert!(!out.contains(&password), "{out}");

    // The chart stops rendering the Service: it is pruned.
    write_chart(repo, 3, false);
    let (code, out) = run_keyed(
        &stand,
        repo,
        &["apply", "--env", "dev", "--yes", "--allow-mass-delete"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let svcs: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client, "web-dev");
    assert!(svcs.get_opt("app-web").await.unwrap().is_none(), "{out}");
    assert_eq!(deploys.get("app-web").await.unwrap().spec.replicas, Some(3));

    let cached = all_text(&stand.dir.path().join("cache"));
    assert!(cached.contains("app-web"), "helm's output is cached");
    let encoded = base64::engine::general_purpose::STANDARD.encode(&password);
    assert!(
        !cached.contains(&password) && !cached.contains(&encoded),
        "no secret in the cache"
    );
}

/// A chart that transforms a secret value, and a template error: one error
/// each at the module line, naming the chart and the template.
#[tokio::test]
async fn a_broken_chart_names_the_chart_the_template_and_the_module_line() {
    let stand = Stand::on(Kube::Sim, &["dev"]).await;
    let repo = TempDir::new().unwrap();
    let repo = repo.path();
    write_chart(repo, 2, true);
    commit_files(
        repo,
        &[(
            "modules/web/chart/templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  p: {{ .Values.password | upper }}\n".into(),
        )],
    );
    let (code, out) = run(&stand, repo, &["validate"]).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("modules/web/module.yaml:14:7"), "{out}");
    assert!(out.contains("helm chart modules/web/chart"), "{out}");
    assert!(out.contains("values.password"), "{out}");

    commit_files(
        repo,
        &[(
            "modules/web/chart/templates/cm.yaml",
            "{{ required \"dbHost is required\" .Values.dbHost }}\n".into(),
        )],
    );
    let (code, out) = run(&stand, repo, &["validate"]).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("modules/web/module.yaml:14:7"), "{out}");
    assert!(
        out.contains("modules/web/chart/templates/cm.yaml:1"),
        "{out}"
    );
    assert!(out.contains("dbHost is required"), "{out}");
    assert!(!out.contains("tidegate-render-"), "{out}");
}

/// A child process killed when the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real helm with its folders in `home`.
fn helm_cmd(home: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(go_tool("helm"))
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .unwrap();
    assert!(out.status.success(), "helm {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn remote_module(chart: &str, repository: Option<&str>, digest: &str) -> String {
    let repository = repository.map_or(String::new(), |r| format!("\n        repository: {r}"));
    format!(
        "apiVersion: tidegate.dev/v1
kind: Module
metadata:
  name: web
spec:
  inputs:
    replicas:
      type: number
    service:
      type: bool
    password:
      type: string
  resources:
    - name: app
      provider: kubernetes
      helm:
        chart: {chart}{repository}
        version: 0.1.0
        digest: sha256:{digest}
        namespace: web-${{env.name}}
        values:
          replicas: ${{input.replicas}}
          password: ${{input.password}}
          service:
            enabled: ${{input.service}}
"
    )
}

/// Charts from a Helm repository (served by `python3 -m http.server` on
/// loopback) and from an OCI registry (go-containerregistry's, on
/// loopback), by name, exact version and the sha256 of the .tgz: pulled
/// once, rendered, and refused when the digest differs.
#[tokio::test]
async fn remote_charts_are_pulled_once_and_checked_by_digest() {
    let stand = Stand::on(Kube::Sim, &["dev"]).await;
    let work = TempDir::new().unwrap();
    let home = work.path().join("helm-home");
    let chart = work.path().join("web");
    for (p, t) in [
        ("Chart.yaml", CHART),
        ("values.yaml", CHART_VALUES),
        ("templates/deploy.yaml", CHART_DEPLOY),
        ("templates/svc.yaml", CHART_SVC),
        ("templates/secret.yaml", CHART_SECRET),
    ] {
        std::fs::create_dir_all(chart.join(p).parent().unwrap()).unwrap();
        std::fs::write(chart.join(p), t).unwrap();
    }
    let served = work.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let (c, s) = (chart.display().to_string(), served.display().to_string());
    helm_cmd(&home, &["package", &c, "-d", &s]);
    let tgz = served.join("web-0.1.0.tgz");
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&tgz).unwrap()))
    };
    let port = crate::stand::free_port();
    let url = format!("http://127.0.0.1:{port}");
    helm_cmd(&home, &["repo", "index", &s, "--url", &url]);
    let server = Killed(
        std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(&served)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let repo = TempDir::new().unwrap();
    let repo = repo.path();
    write_chart(repo, 2, true);
    commit_files(
        repo,
        &[(
            "modules/web/module.yaml",
            remote_module("web", Some(&url), &digest),
        )],
    );
    let (code, out) = run(&stand, repo, &["validate"]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&stand, repo, &["plan", "--offline", "--env", "dev"]).await;
    assert_eq!(code, 2, "{out}");
    for id in [
        "web.app/Deployment/app-web",
        "web.app/Service/app-web",
        "web.app/Secret/app-db",
    ] {
        assert!(out.contains(id), "{id} missing from:\n{out}");
    }
    assert!(out.contains("stringData.password: (sensitive)"), "{out}");
    // Another .tgz under the declared digest is refused.
    let wrong = "0".repeat(64);
    commit_files(
        repo,
        &[(
            "modules/web/module.yaml",
            remote_module("web", Some(&url), &wrong),
        )],
    );
    let (code, out) = run(&stand, repo, &["validate"]).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("modules/web/module.yaml:20:17"), "{out}");
    assert!(out.contains(&format!("has sha256 {digest}")), "{out}");
    assert!(out.contains("refused"), "{out}");

    // Pulled once: with the server gone, the cached chart serves.
    drop(server);
    commit_files(
        repo,
        &[(
            "modules/web/module.yaml",
            remote_module("web", Some(&url), &digest),
        )],
    );
    let (code, out) = run(&stand, repo, &["validate"]).await;
    assert_eq!(code, 0, "the chart comes from tidegate's cache:\n{out}");

    // The same chart from an OCI registry.
    let mut registry = Killed(
        std::process::Command::new(go_tool("registry"))
            .args(["-address", "127.0.0.1:0", "-quiet"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    {
        use std::io::BufRead;
        let stdout = registry.0.stdout.take().unwrap();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
    }
    let addr = line.trim().strip_prefix("serving on ").unwrap().to_string();
    let pushed = helm_cmd(
        &home,
        &[
            "push",
            &tgz.display().to_string(),
            &format!("oci://{addr}/charts"),
            "--plain-http",
        ],
    );
    assert!(pushed.contains("Pushed:"), "{pushed}");
    // A fresh cache: the chart must come from the registry.
    let fresh = TempDir::new().unwrap();
    commit_files(
        repo,
        &[(
            "modules/web/module.yaml",
            remote_module(&format!("oci://{addr}/charts/web"), None, &digest),
        )],
    );
    let out = stand
        .binary()
        .args(["plan", "--offline", "--env", "dev", "--repo"])
        .arg(repo)
        .env("TIDEGATE_HELM", go_tool("helm"))
        .env("XDG_CACHE_HOME", fresh.path())
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("web.app/Deployment/app-web"), "{text}");
    assert!(
        fresh
            .path()
            .join(format!("tidegate/helm/charts/{digest}.tgz"))
            .is_file(),
        "the pulled chart is kept by its digest"
    );
}

/// `rebuild --as` renders a chart's values with the copy's name, so a
/// chart that names its objects from `${env.name}` makes the copy's own
/// objects instead of colliding with the original environment's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_as_a_copy_renders_charts_under_the_new_name() {
    let stand = Stand::on(Kube::Sim, &["dev"]).await;
    let repo = TempDir::new().unwrap();
    let repo = repo.path();
    let env = "apiVersion: tidegate.dev/v1
kind: Environment
metadata:
  name: dev
spec:
  targets:
    kubernetes:
      context: dev
  modules:
    - name: web
      source: modules/web
  policy:
    defaultSeverity: warning
";
    let module = "apiVersion: tidegate.dev/v1
kind: Module
metadata:
  name: web
spec:
  resources:
    - name: app
      provider: kubernetes
      helm:
        chart: chart
        namespace: default
        values:
          name: site-${env.name}
";
    let cm = "apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Values.name }}
data:
  owner: {{ .Values.name | quote }}
";
    commit_files(
        repo,
        &[
            ("environments/dev.yaml", env.into()),
            ("modules/web/module.yaml", module.into()),
            ("modules/web/chart/Chart.yaml", CHART.into()),
            ("modules/web/chart/templates/cm.yaml", cm.into()),
        ],
    );
    let (code, out) = run(&stand, repo, &["plan", "--env", "dev"]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("web.app/ConfigMap/site-dev"), "{out}");
    let out = stand
        .command(
            repo,
            &["rebuild", "--env", "dev", "--as", "dev-green", "--yes"],
        )
        .env("TIDEGATE_HELM", go_tool("helm"))
        .env("XDG_CACHE_HOME", stand.dir.path().join("cache"))
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let client = crate::stand::kube_client(&stand.kubeconfig, "dev").await;
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client, "default");
    let copy = cms.get_opt("site-dev-green").await.unwrap();
    assert!(copy.is_some(), "{text}");
    assert_eq!(copy.unwrap().data.unwrap()["owner"], "site-dev-green");
    assert!(cms.get_opt("site-dev").await.unwrap().is_none(), "{text}");
}
