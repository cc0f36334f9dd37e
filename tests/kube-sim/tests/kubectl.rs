//! The real `kubectl` as a client of the simulator: if kubectl's
//! discovery, server-side apply, diff, wait and delete, its imperative
//! `create` generators (protobuf bodies), `scale`, `edit`, `patch`,
//! `label`, `annotate` and `rollout status` work here the way they work
//! against a cluster, the simulator is faithful where tidegate relies on
//! it. kubectl comes from `.ci/.venv/bin` (installed by
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

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(kubectl_path());
        cmd.args(args)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("KUBECACHEDIR", self.dir.path().join("cache"));
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("kubectl runs")
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

/// `kubectl create <generator>` sends protobuf (client-go's typed clients
/// do for built-in kinds, with no JSON fallback); the simulator decodes it.
#[test]
fn create_generators_send_protobuf() {
    let c = Cluster::start();
    let get = |args: &[&str]| c.ok(args);
    assert_eq!(
        c.ok(&[
            "create",
            "configmap",
            "web",
            "--from-literal=a=b",
            "--from-literal=c=d"
        ]),
        "configmap/web created\n"
    );
    assert_eq!(
        get(&["get", "cm", "web", "-o", "jsonpath={.data}"]),
        r#"{"a":"b","c":"d"}"#
    );
    assert_eq!(
        get(&[
            "get",
            "cm",
            "web",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}"
        ]),
        "kubectl-create"
    );
    c.ok(&[
        "create",
        "secret",
        "generic",
        "pw",
        "--from-literal=pw=hunter2",
    ]);
    assert_eq!(
        get(&["get", "secret", "pw", "-o", "jsonpath={.data.pw}"]),
        "aHVudGVyMg=="
    );
    c.ok(&["create", "namespace", "team"]);
    assert_eq!(
        get(&[
            "get",
            "ns",
            "team",
            "-o",
            "jsonpath={.metadata.labels.kubernetes\\.io/metadata\\.name} {.status.phase}"
        ]),
        "team Active"
    );
    c.ok(&["create", "serviceaccount", "bot", "-n", "team"]);
    assert_eq!(
        get(&["get", "sa", "-n", "team", "-o", "name"]),
        "serviceaccount/bot\n"
    );
    c.ok(&[
        "create",
        "deployment",
        "api",
        "--image=nginx:1.27",
        "--replicas=2",
        "--port=8080",
    ]);
    assert_eq!(
        get(&["get", "deploy", "api", "-o",
            "jsonpath={.spec.replicas} {.spec.selector.matchLabels.app} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort} {.status.readyReplicas}"]),
        "2 api nginx:1.27 8080 2"
    );
    // --replicas=0 is a pointer field set to zero: kept, not dropped.
    c.ok(&[
        "create",
        "deployment",
        "idle",
        "--image=nginx",
        "--replicas=0",
    ]);
    assert_eq!(
        get(&["get", "deploy", "idle", "-o", "jsonpath={.spec.replicas}"]),
        "0"
    );
    c.ok(&[
        "create",
        "job",
        "once",
        "--image=busybox",
        "--",
        "echo",
        "hi",
    ]);
    assert_eq!(
        get(&[
            "get",
            "job",
            "once",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].command}"
        ]),
        r#"["echo","hi"]"#
    );
    c.ok(&[
        "create",
        "role",
        "reader",
        "--verb=get,list",
        "--resource=configmaps",
    ]);
    assert_eq!(
        get(&["get", "role", "reader", "-o", "jsonpath={.rules[0].verbs}"]),
        r#"["get","list"]"#
    );
    c.ok(&[
        "create",
        "ingress",
        "ing",
        "--rule=example.com/api=api:8080",
    ]);
    assert_eq!(
        get(&[
            "get",
            "ing",
            "ing",
            "-o",
            "jsonpath={.spec.rules[0].http.paths[0].backend.service.port.number}"
        ]),
        "8080"
    );
    c.ok(&["create", "service", "clusterip", "api", "--tcp=80:8080"]);
    assert_eq!(
        get(&[
            "get",
            "svc",
            "api",
            "-o",
            "jsonpath={.spec.ports[0].port}/{.spec.ports[0].targetPort}"
        ]),
        "80/8080"
    );
    c.ok(&["run", "box", "--image=busybox", "--env=A=1"]);
    assert_eq!(
        get(&[
            "get",
            "pod",
            "box",
            "-o",
            "jsonpath={.spec.containers[0].env[0].value}"
        ]),
        "1"
    );
    // Server-side dry run decodes and checks, stores nothing.
    c.ok(&[
        "create",
        "configmap",
        "dry",
        "--from-literal=a=b",
        "--dry-run=server",
    ]);
    c.fails(&["get", "cm", "dry"]);
    let err = c.fails(&["create", "configmap", "web", "--from-literal=a=b"]);
    assert!(err.contains("configmaps \"web\" already exists"), "{err}");
    assert!(c.sim.counters().get_in("dev", "create", "configmaps") >= 3);
}

const WORKLOADS: &str = "apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs}
spec:
  replicas: 1
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec: {containers: [{name: c, image: nginx}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 1
  serviceName: db
  selector:
    matchLabels: {app: db}
    matchExpressions: [{key: tier, operator: In, values: [data, cache]}]
  template:
    metadata: {labels: {app: db, tier: data}}
    spec: {containers: [{name: c, image: postgres}]}
";

#[test]
fn scale_subresource_of_workloads() {
    let c = Cluster::start();
    let apps = c.ok(&["get", "--raw", "/apis/apps/v1"]);
    let apps: serde_json::Value = serde_json::from_str(&apps).unwrap();
    let scale = apps["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "deployments/scale")
        .expect("deployments/scale in discovery");
    assert_eq!(
        (&scale["group"], &scale["version"], &scale["kind"]),
        (&"autoscaling".into(), &"v1".into(), &"Scale".into())
    );
    c.ok(&["create", "deployment", "web", "--image=nginx"]);
    assert_eq!(
        c.ok(&["scale", "deployment", "web", "--replicas=3"]),
        "deployment.apps/web scaled\n"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas} {.metadata.generation}"
        ]),
        "3 2"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "--subresource=scale",
            "-o",
            "jsonpath={.apiVersion} {.kind} {.spec.replicas} {.status.replicas} {.status.selector}"
        ]),
        "autoscaling/v1 Scale 3 3 app=web"
    );
    c.ok(&["rollout", "status", "deployment/web", "--timeout=10s"]);
    // With --current-replicas kubectl reads the Scale and PUTs it back.
    let err = c.fails(&[
        "scale",
        "deploy",
        "web",
        "--current-replicas=2",
        "--replicas=5",
    ]);
    assert!(err.contains("Expected replicas to be 2, was 3"), "{err}");
    c.ok(&[
        "scale",
        "deploy",
        "web",
        "--current-replicas=3",
        "--replicas=5",
    ]);
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.status.readyReplicas}"
        ]),
        "5"
    );
    let owners = c.ok(&[
        "get",
        "deploy",
        "web",
        "--show-managed-fields",
        "-o",
        "jsonpath={range .metadata.managedFields[*]}{.manager}/{.subresource};{end}",
    ]);
    assert_eq!(
        owners,
        "kubectl-create/;kube-controller-manager/status;kubectl/scale;"
    );
    let err = c.fails(&[
        "patch",
        "deploy",
        "web",
        "--subresource=scale",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":-1}}"#,
    ]);
    assert!(
        err.contains("spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
        "{err}"
    );
    c.ok(&[
        "patch",
        "deploy",
        "web",
        "--subresource=scale",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#,
    ]);
    assert_eq!(
        c.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "4"
    );
    let f = c.file("workloads.yaml", WORKLOADS);
    c.ok(&["apply", "--server-side", "-f", f.to_str().unwrap()]);
    c.ok(&["scale", "replicaset", "rs", "--replicas=2"]);
    assert_eq!(
        c.ok(&[
            "get",
            "rs",
            "rs",
            "-o",
            "jsonpath={.spec.replicas}/{.status.readyReplicas}"
        ]),
        "2/2"
    );
    c.ok(&["scale", "statefulset", "db", "--replicas=0"]);
    assert_eq!(
        c.ok(&["get", "sts", "db", "--subresource=scale", "-o", "json"])
            .parse::<serde_json::Value>()
            .unwrap()["status"]["selector"],
        "app=db,tier in (cache,data)"
    );
    assert_eq!(
        c.ok(&["get", "sts", "db", "-o", "jsonpath={.spec.replicas}"]),
        "0"
    );
    // DaemonSets have no scale subresource.
    let ds = c.file("ds.yaml", "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: ds}\nspec:\n  selector: {matchLabels: {app: ds}}\n  template:\n    metadata: {labels: {app: ds}}\n    spec: {containers: [{name: c, image: nginx}]}\n");
    c.ok(&["apply", "--server-side", "-f", ds.to_str().unwrap()]);
    c.fails(&["get", "ds", "ds", "--subresource=scale"]);
    let counters = c.sim.counters();
    assert!(counters.get_in("dev", "patch", "deployments.apps/scale") >= 2);
    assert_eq!(
        counters.get_in("dev", "update", "deployments.apps/scale"),
        1
    );
}

#[test]
fn edit_patch_label_annotate() {
    let c = Cluster::start();
    c.ok(&["create", "configmap", "cfg", "--from-literal=mode=slow"]);
    c.ok(&["create", "deployment", "web", "--image=nginx"]);
    // kubectl edit runs $KUBE_EDITOR on a temporary file and sends the
    // difference as a patch.
    let out = c
        .command(&["edit", "configmap", "cfg"])
        .env("KUBE_EDITOR", "sed -i s/mode:.slow/mode:\\ fast/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "configmap/cfg edited\n"
    );
    assert_eq!(
        c.ok(&["get", "cm", "cfg", "-o", "jsonpath={.data.mode}"]),
        "fast"
    );
    let out = c
        .command(&["edit", "deploy", "web"])
        .env("KUBE_EDITOR", "sed -i s/image:.nginx$/image:\\ nginx:1.27/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].image} {.metadata.generation}"
        ]),
        "nginx:1.27 2"
    );
    // An edit that changes nothing is no write.
    let out = c
        .command(&["edit", "cm", "cfg"])
        .env("KUBE_EDITOR", "true")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("Edit cancelled, no changes made."));
    // Strategic merge: containers merge by name.
    c.ok(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"envoy"}]}}}}"#,
    ]);
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].name}"
        ]),
        "nginx sidecar"
    );
    c.ok(&[
        "patch",
        "deploy",
        "web",
        "--type=strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","$patch":"delete"}]}}}}"#,
    ]);
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].name}"
        ]),
        "nginx"
    );
    // Merge patch: lists are replaced, null deletes.
    c.ok(&[
        "patch",
        "cm",
        "cfg",
        "--type=merge",
        "-p",
        r#"{"data":{"extra":"1","mode":null}}"#,
    ]);
    assert_eq!(
        c.ok(&["get", "cm", "cfg", "-o", "jsonpath={.data}"]),
        r#"{"extra":"1"}"#
    );
    c.ok(&[
        "patch",
        "cm",
        "cfg",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/data/other","value":"2"},{"op":"remove","path":"/data/extra"}]"#,
    ]);
    assert_eq!(
        c.ok(&["get", "cm", "cfg", "-o", "jsonpath={.data}"]),
        r#"{"other":"2"}"#
    );
    let err = c.fails(&[
        "patch",
        "cm",
        "cfg",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/data/none"}]"#,
    ]);
    assert!(err.contains("is invalid"), "{err}");
    assert_eq!(
        c.ok(&["label", "cm", "cfg", "team=a", "tier=web"]),
        "configmap/cfg labeled\n"
    );
    let err = c.fails(&["label", "cm", "cfg", "team=b"]);
    assert!(err.contains("already has a value (a)"), "{err}");
    c.ok(&["label", "cm", "cfg", "team=b", "--overwrite"]);
    c.ok(&["label", "cm", "cfg", "tier-"]);
    assert_eq!(
        c.ok(&["get", "cm", "cfg", "-o", "jsonpath={.metadata.labels}"]),
        r#"{"team":"b"}"#
    );
    assert_eq!(
        c.ok(&["get", "cm", "-l", "team=b", "-o", "name"]),
        "configmap/cfg\n"
    );
    assert_eq!(
        c.ok(&["annotate", "cm", "cfg", "owner=ops"]),
        "configmap/cfg annotated\n"
    );
    c.ok(&["annotate", "deploy", "web", "note=x"]);
    assert_eq!(
        c.ok(&[
            "get",
            "cm",
            "cfg",
            "-o",
            "jsonpath={.metadata.annotations.owner}"
        ]),
        "ops"
    );
    c.ok(&["annotate", "cm", "cfg", "owner-"]);
    assert_eq!(
        c.ok(&["get", "cm", "cfg", "-o", "jsonpath={.metadata.annotations}"]),
        ""
    );
    let managers = c.ok(&[
        "get",
        "cm",
        "cfg",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    // Each writer owns what it last changed: the created and edited keys
    // are gone, the annotation was removed again.
    assert_eq!(managers, "kubectl-patch kubectl-label");
}

#[test]
fn delete_wait_and_rollout_status() {
    let c = Cluster::start();
    c.ok(&["create", "configmap", "gone", "--from-literal=a=b"]);
    assert_eq!(
        c.ok(&["delete", "configmap", "gone", "--wait"]),
        "configmap \"gone\" deleted from default namespace\n"
    );
    c.fails(&["get", "cm", "gone"]);
    // With a finalizer, --wait waits until it is removed.
    let held = c.file(
        "held.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, finalizers: [example.com/hold]}\n",
    );
    c.ok(&["apply", "--server-side", "-f", held.to_str().unwrap()]);
    let err = c.fails(&["delete", "cm", "held", "--wait", "--timeout=2s"]);
    assert!(err.contains("timed out"), "{err}");
    let waiting = c
        .command(&["delete", "cm", "held", "--wait", "--timeout=20s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    c.ok(&[
        "patch",
        "cm",
        "held",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    let out = waiting.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.fails(&["get", "cm", "held"]);
    // rollout status follows the kubelet: slow, stuck and failing rollouts.
    for (name, mode) in [("slow", "after:1s"), ("stuck", "never"), ("bad", "fail")] {
        c.ok(&["create", "deployment", name, "--image=nginx"]);
        c.ok(&[
            "annotate",
            "deploy",
            name,
            &format!("kube-sim.tidegate.dev/ready={mode}"),
        ]);
    }
    // A new template is a new generation, rolled out in the annotated way.
    for name in ["slow", "stuck", "bad"] {
        c.ok(&[
            "set",
            "image",
            &format!("deploy/{name}"),
            "nginx=nginx:1.27",
        ]);
    }
    let out = c.ok(&["rollout", "status", "deployment/slow", "--timeout=10s"]);
    assert!(
        out.contains("deployment \"slow\" successfully rolled out"),
        "{out}"
    );
    let err = c.fails(&["rollout", "status", "deployment/stuck", "--timeout=2s"]);
    assert!(err.contains("timed out waiting for the condition"), "{err}");
    let err = c.fails(&["rollout", "status", "deployment/bad", "--timeout=10s"]);
    assert!(err.contains("exceeded its progress deadline"), "{err}");
}
