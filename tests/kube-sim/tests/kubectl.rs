//! The real `kubectl` as a client of the simulator: if kubectl's
//! discovery, server-side apply, diff, wait and delete work here the way
//! they work against a cluster, the simulator is faithful where tidegate
//! relies on it. kubectl comes from `.ci/.venv/bin` (installed by
//! `.ci/setup-tools`) or PATH; the tests fail when it is missing.

use kube_sim::{Config, Handle, Simulator};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// kubectl from the repository's `.ci/.venv/bin`, then PATH.
fn kubectl_path() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = root.join(".ci/.venv/bin/kubectl");
    if venv.is_file() {
        return venv;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            if dir.join("kubectl").is_file() {
                return dir.join("kubectl");
            }
        }
    }
    panic!("`kubectl` not found in .ci/.venv/bin or PATH: run `.ci/setup-tools` once, which installs it");
}

/// A simulator on its own runtime, a kubeconfig and a scratch directory.
struct Cluster {
    _rt: tokio::runtime::Runtime,
    sim: Handle,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cfg = Config {
            contexts: vec!["dev".into(), "prod".into()],
            ..Config::default()
        };
        let sim = rt.block_on(Simulator::start(cfg)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        sim.kubeconfig(&dir.path().join("kubeconfig")).unwrap();
        Cluster { _rt: rt, sim, dir }
    }

    fn file(&self, name: &str, yaml: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, yaml).unwrap();
        p
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(kubectl_path())
            .args(args)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .output()
            .expect("kubectl runs")
    }

    /// Runs kubectl and returns stdout; panics with stderr on failure.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "kubectl {args:?} failed:\n{se}\n{so}");
        so.into_owned()
    }

    /// Runs kubectl expecting failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "kubectl {args:?} should have failed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

const CM: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: web
  namespace: default
  labels: {app: web, tier: front}
data:
  key: one
  other: two
";

#[test]
fn server_side_apply_conflict_force_and_managed_fields() {
    let c = Cluster::start();
    let f = c.file("cm.yaml", CM);
    let f = f.to_str().unwrap();
    assert!(c
        .ok(&["apply", "--server-side", "-f", f])
        .contains("configmap/web serverside-applied"));
    let yaml = c.ok(&["get", "cm", "web", "-o", "yaml", "--show-managed-fields"]);
    for want in [
        "managedFields:",
        "manager: kubectl",
        "operation: Apply",
        "fieldsType: FieldsV1",
        "f:key: {}",
    ] {
        assert!(yaml.contains(want), "missing {want:?} in\n{yaml}");
    }
    let changed = c.file("cm2.yaml", &CM.replace("key: one", "key: changed"));
    let changed = changed.to_str().unwrap();
    let err = c.fails(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "-f",
        changed,
    ]);
    assert!(err.contains("conflict with \"kubectl\""), "{err}");
    assert!(err.contains(".data.key"), "{err}");
    assert_eq!(
        c.ok(&["get", "cm", "web", "-o", "jsonpath={.data.key}"]),
        "one"
    );
    c.ok(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        changed,
    ]);
    assert_eq!(
        c.ok(&["get", "cm", "web", "-o", "jsonpath={.data.key}"]),
        "changed"
    );
    let owners = c.ok(&[
        "get",
        "cm",
        "web",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert_eq!(owners, "kubectl other");
}

#[test]
fn get_with_label_selectors() {
    let c = Cluster::start();
    for (name, tier) in [("a", "front"), ("b", "back"), ("c", "front")] {
        let y = CM
            .replace("name: web", &format!("name: {name}"))
            .replace("tier: front", &format!("tier: {tier}"));
        let f = c.file(&format!("{name}.yaml"), &y);
        c.ok(&["apply", "--server-side", "-f", f.to_str().unwrap()]);
    }
    let plain = c.file(
        "plain.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain}\n",
    );
    c.ok(&["create", "-f", plain.to_str().unwrap()]);
    let names = |sel: &str| c.ok(&["get", "cm", "-l", sel, "-o", "name"]);
    assert_eq!(names("tier=front"), "configmap/a\nconfigmap/c\n");
    assert_eq!(names("tier!=front,app=web"), "configmap/b\n");
    assert_eq!(
        names("tier in (back,front)"),
        "configmap/a\nconfigmap/b\nconfigmap/c\n"
    );
    assert_eq!(names("!tier"), "configmap/plain\n");
    let table = c.ok(&["get", "cm", "-l", "tier=front"]);
    assert!(
        table.starts_with("NAME") && table.contains("\na ") && !table.contains("\nb "),
        "{table}"
    );
}

#[test]
fn diff_server_side_shows_changes_without_storing_them() {
    let c = Cluster::start();
    let f = c.file("cm.yaml", CM);
    c.ok(&["apply", "--server-side", "-f", f.to_str().unwrap()]);
    let same = c.run(&["diff", "--server-side", "-f", f.to_str().unwrap()]);
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );
    let changed = c.file("cm2.yaml", &CM.replace("key: one", "key: changed"));
    let out = c.run(&["diff", "--server-side", "-f", changed.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("-  key: one") && text.contains("+  key: changed"),
        "{text}"
    );
    assert_eq!(
        c.ok(&["get", "cm", "web", "-o", "jsonpath={.data.key}"]),
        "one"
    );
}

#[test]
fn delete_waits_for_finalizers() {
    let c = Cluster::start();
    let f = c.file("cm.yaml", CM);
    c.ok(&["apply", "--server-side", "-f", f.to_str().unwrap()]);
    assert!(c.ok(&["delete", "cm", "web"]).contains("deleted"));
    assert!(c
        .fails(&["get", "cm", "web"])
        .contains("configmaps \"web\" not found"));
    let held = c.file(
        "held.yaml",
        &CM.replace("  labels:", "  finalizers: [example.com/hold]\n  labels:"),
    );
    c.ok(&["apply", "--server-side", "-f", held.to_str().unwrap()]);
    c.ok(&["delete", "cm", "web", "--wait=false"]);
    assert!(!c
        .ok(&[
            "get",
            "cm",
            "web",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}"
        ])
        .is_empty());
    c.ok(&[
        "patch",
        "cm",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    c.fails(&["get", "cm", "web"]);
}

#[test]
fn wait_for_deployment_available() {
    let c = Cluster::start();
    let dep = |name: &str, mode: &str| {
        format!(
            "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  annotations: {{kube-sim.tidegate.dev/ready: \"{mode}\"}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: web, image: nginx, ports: [{{containerPort: 80}}]}}]
"
        )
    };
    let slow = c.file("slow.yaml", &dep("slow", "after:500ms"));
    c.ok(&["apply", "--server-side", "-f", slow.to_str().unwrap()]);
    c.ok(&[
        "wait",
        "--for=condition=Available",
        "deploy/slow",
        "--timeout=20s",
    ]);
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "slow",
            "-o",
            "jsonpath={.status.readyReplicas}"
        ]),
        "2"
    );
    let stuck = c.file("stuck.yaml", &dep("stuck", "never"));
    c.ok(&["apply", "--server-side", "-f", stuck.to_str().unwrap()]);
    c.fails(&[
        "wait",
        "--for=condition=Available",
        "deploy/stuck",
        "--timeout=1s",
    ]);
    c.ok(&["rollout", "status", "deploy/slow", "--timeout=10s"]);
    // Client-side apply twice: the second is a strategic merge patch that
    // merges the container list by name and bumps the generation.
    let plain = c.file("plain.yaml", &dep("plain", "now"));
    c.ok(&["apply", "-f", plain.to_str().unwrap()]);
    let newer = c.file(
        "plain2.yaml",
        &dep("plain", "now").replace("image: nginx", "image: nginx:1.27"),
    );
    c.ok(&["apply", "-f", newer.to_str().unwrap()]);
    let images = c.ok(&[
        "get",
        "deploy",
        "plain",
        "-o",
        "jsonpath={.spec.template.spec.containers[*].image}",
    ]);
    assert_eq!(images, "nginx:1.27");
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "plain",
            "-o",
            "jsonpath={.metadata.generation}/{.status.observedGeneration}"
        ]),
        "2/2"
    );
}

#[test]
fn crd_then_custom_resource_and_isolated_contexts() {
    let c = Cluster::start();
    let crd = c.file(
        "crd.yaml",
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
    subresources: {status: {}}
",
    );
    let cr = c.file("cr.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: default, labels: {size: big}}\nspec: {size: 3}\n");
    c.ok(&["apply", "-f", crd.to_str().unwrap()]);
    c.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
        "--timeout=10s",
    ]);
    c.ok(&["apply", "--server-side", "-f", cr.to_str().unwrap()]);
    assert_eq!(
        c.ok(&["get", "wd", "w1", "-o", "jsonpath={.spec.size}"]),
        "3"
    );
    assert_eq!(
        c.ok(&["get", "widgets", "-l", "size=big", "-o", "name"]),
        "widget.example.com/w1\n"
    );
    // Client-side apply of the same resource works too (three-way merge).
    let cr2 = c.file("cr2.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w2, namespace: default}\nspec: {size: 4}\n");
    c.ok(&["apply", "-f", cr2.to_str().unwrap()]);
    // The prod context is another cluster: no CRD, no widgets.
    c.fails(&["--context", "prod", "get", "widgets"]);
    assert!(c
        .ok(&["--context", "prod", "get", "cm", "-o", "name"])
        .is_empty());
    assert!(
        c.sim
            .counters()
            .get_in("dev", "apply", "widgets.example.com")
            >= 1
    );
    c.ok(&["delete", "-f", crd.to_str().unwrap()]);
    c.fails(&["get", "widgets"]);
}
