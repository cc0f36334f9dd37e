//! What only a real kube-apiserver shows: fields the server defaults,
//! validation and unknown kinds caught at plan time, immutable fields that
//! force a replacement, finalizers that hold a deletion, the object size
//! limit, and deploy/ itself (RBAC included) accepted by the server. Every
//! test runs the real `tidegate` binary as the ServiceAccount that
//! deploy/rbac.yaml binds (never as an administrator); the administrator's
//! kubectl only arranges and inspects.

use std::path::Path;

use tempfile::TempDir;

use super::stand::{commit_files, Kube, Stand};

/// An environment `dev` (Kubernetes only, policies as warnings) with one
/// module `k` whose `resources:` list is `resources` (YAML, indented for it).
fn write_repo(dir: &Path, resources: &str) -> String {
    let env = "apiVersion: tidegate.dev/v1
kind: Environment
metadata:
  name: dev
spec:
  targets:
    kubernetes:
      context: dev
  modules:
    - name: k
      source: modules/k
  policy:
    defaultSeverity: warning
"
    .to_string();
    let module = format!(
        "apiVersion: tidegate.dev/v1
kind: Module
metadata:
  name: k
spec:
  resources:
{resources}"
    );
    commit_files(
        dir,
        &[
            ("environments/dev.yaml", env),
            ("modules/k/module.yaml", module),
        ],
    )
}

/// A namespaced resource of module `k`: `kind`, `name` in namespace `ns`,
/// with `rest` (YAML at the manifest's indentation) after its metadata.
fn resource(id: &str, api: &str, kind: &str, name: &str, ns: Option<&str>, rest: &str) -> String {
    let ns = ns
        .map(|n| format!("\n          namespace: {n}"))
        .unwrap_or_default();
    format!(
        "    - name: {id}
      provider: kubernetes
      manifest:
        apiVersion: {api}
        kind: {kind}
        metadata:
          name: {name}{ns}
{rest}"
    )
}

fn namespace(name: &str) -> String {
    resource("ns", "v1", "Namespace", name, None, "")
}

/// A Deployment as people write it: no strategy, no imagePullPolicy, no
/// terminationMessagePath, no dnsPolicy, no securityContext defaults.
fn deployment(ns: &str, app: &str, replicas: u32) -> String {
    resource(
        "deploy",
        "apps/v1",
        "Deployment",
        "web",
        Some(ns),
        &format!(
            "        spec:
          replicas: {replicas}
          selector:
            matchLabels: {{app: {app}}}
          template:
            metadata:
              labels: {{app: {app}}}
            spec:
              containers:
                - name: web
                  image: registry.example.com/web@sha256:8074748e826827434bbc9e3e5272c2b8fc34cf74eb9e94ebb489afe6cfcef7aa
                  ports: [{{containerPort: 8080}}]
"
        ),
    )
}

fn service(ns: &str, cluster_ip: Option<&str>) -> String {
    let ip = cluster_ip
        .map(|ip| format!("\n          clusterIP: {ip}"))
        .unwrap_or_default();
    resource(
        "svc",
        "v1",
        "Service",
        "web",
        Some(ns),
        &format!(
            "        spec:{ip}
          selector: {{app: web}}
          ports: [{{port: 80, targetPort: 8080}}]
"
        ),
    )
}

fn job(ns: &str, command: &str) -> String {
    resource(
        "job",
        "batch/v1",
        "Job",
        "migrate",
        Some(ns),
        &format!(
            "        spec:
          template:
            spec:
              restartPolicy: Never
              containers:
                - name: migrate
                  image: registry.example.com/migrate@sha256:8074748e826827434bbc9e3e5272c2b8fc34cf74eb9e94ebb489afe6cfcef7aa
                  command: [{command}]
"
        ),
    )
}

/// A real stand with context `dev`; tidegate may also manage Jobs (the
/// rule deploy/rbac.yaml asks users to add for kinds beyond its own).
async fn real() -> (Stand, TempDir) {
    let stand = Stand::on(Kube::Real, &["dev"]).await;
    let jobs = super::kubernetes::grant("jobs", "batch", "jobs");
    stand
        .real()
        .kubectl_stdin(&["apply", "-f", "-"], Some(&jobs))
        .unwrap();
    (stand, TempDir::new().unwrap())
}

async fn apply_ok(stand: &Stand, repo: &Path) -> String {
    let (code, out) = stand.cli(repo, &["apply", "--env", "dev", "--yes"]).await;
    assert_eq!(code, 0, "apply failed:\n{out}");
    out
}

async fn plan(stand: &Stand, repo: &Path) -> (i32, String) {
    let out = stand
        .binary()
        .args(["plan", "--env", "dev", "--color", "never", "--repo"])
        .arg(repo)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn defaulted_fields_never_show_as_a_diff() {
    let (stand, dir) = real().await;
    let resources = [
        namespace("defaults"),
        deployment("defaults", "web", 2),
        service("defaults", None),
        job("defaults", "\"true\""),
        resource(
            "config",
            "v1",
            "ConfigMap",
            "settings",
            Some("defaults"),
            "        data: {mode: fast}\n",
        ),
    ]
    .concat();
    write_repo(dir.path(), &resources);
    apply_ok(&stand, dir.path()).await;
    // The controllers really ran: the rollout and the Job finished.
    let k = stand.real();
    let ready = k
        .kubectl(&[
            "get",
            "deployment",
            "web",
            "-n",
            "defaults",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ])
        .unwrap();
    assert_eq!(ready, "2");
    let (code, out) = plan(&stand, dir.path()).await;
    assert_eq!(code, 0, "a defaulted field shows as a change:\n{out}");
    assert!(out.contains("No changes."), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_objects_fail_plan_with_their_file_and_line_and_nothing_is_created() {
    let (stand, dir) = real().await;
    let resources = [
        namespace("invalid"),
        resource(
            "good",
            "v1",
            "ConfigMap",
            "good",
            Some("invalid"),
            "        data: {a: b}\n",
        ),
        resource(
            "badlabel",
            "v1",
            "ConfigMap",
            "badlabel",
            Some("invalid"),
            "        data: {a: b}\n",
        )
        .replace(
            "          name: badlabel\n",
            "          name: badlabel\n          labels: {tier: \"not a valid value!\"}\n",
        ),
        resource(
            "typo",
            "apps/v1",
            "Deploymnet",
            "typo",
            Some("invalid"),
            "        spec: {}\n",
        ),
        resource(
            "badtype",
            "v1",
            "Service",
            "badtype",
            Some("invalid"),
            "        spec:\n          ports: [{port: eighty}]\n",
        ),
    ]
    .concat();
    write_repo(dir.path(), &resources);
    let (code, out) = plan(&stand, dir.path()).await;
    assert_eq!(code, 1, "{out}");
    // The offline schema check (issue 20) names each at the line of the
    // field, before any dry run.
    let module = std::fs::read_to_string(dir.path().join("modules/k/module.yaml")).unwrap();
    for (field, words) in [
        (
            "labels: {tier: \"not a valid value!\"}",
            "label value `not a valid value!`",
        ),
        ("kind: Deploymnet", "unknown kind `Deploymnet` in apps/v1"),
        (
            "ports: [{port: eighty}]",
            "`port` in ServicePort (spec.ports[0]) must be an integer",
        ),
    ] {
        let line = 1 + module.lines().position(|l| l.contains(field)).unwrap();
        let named = out
            .lines()
            .any(|l| l.starts_with(&format!("modules/k/module.yaml:{line}:")) && l.contains(words));
        assert!(
            named,
            "`{field}` (line {line}) not named at its line:\n{out}"
        );
    }
    assert!(!out.contains("k.good"), "{out}");
    let (code, out) = stand
        .cli(dir.path(), &["apply", "--env", "dev", "--yes"])
        .await;
    assert_eq!(code, 1, "{out}");
    let k = stand.real();
    assert!(
        k.kubectl(&["get", "namespace", "invalid"]).is_err(),
        "apply wrote part of an invalid environment:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn immutable_field_changes_plan_a_replace_with_the_reason() {
    let (stand, dir) = real().await;
    let ns = "immutable";
    let first = [
        namespace(ns),
        deployment(ns, "web", 1),
        service(ns, Some("10.96.0.50")),
        job(ns, "\"true\""),
    ]
    .concat();
    write_repo(dir.path(), &first);
    apply_ok(&stand, dir.path()).await;
    let k = stand.real();
    let uid = |kind: &str, name: &str| {
        k.kubectl(&[
            "get",
            kind,
            name,
            "-n",
            ns,
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .unwrap()
    };
    let before = [
        uid("deployment", "web"),
        uid("service", "web"),
        uid("job", "migrate"),
    ];
    let second = [
        namespace(ns),
        deployment(ns, "web2", 1),
        service(ns, Some("10.96.0.51")),
        job(ns, "\"echo\", \"v2\""),
    ]
    .concat();
    write_repo(dir.path(), &second);
    let (code, out) = plan(&stand, dir.path()).await;
    assert_eq!(code, 2, "{out}");
    for (id, field) in [
        ("k.deploy", "spec.selector"),
        ("k.svc", "spec.clusterIP"),
        ("k.job", "spec.template"),
    ] {
        let line = out
            .lines()
            .find(|l| l.contains(id) && l.contains("replace"))
            .unwrap_or_else(|| panic!("{id} is not a replace:\n{out}"));
        assert!(
            out.contains(field),
            "{id}: the reason ({field}) is not shown ({line}):\n{out}"
        );
    }
    apply_ok(&stand, dir.path()).await;
    let after = [
        uid("deployment", "web"),
        uid("service", "web"),
        uid("job", "migrate"),
    ];
    for i in 0..3 {
        assert_ne!(before[i], after[i], "object {i} was not replaced");
    }
    let (code, out) = plan(&stand, dir.path()).await;
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_namespace_held_by_a_finalizer_is_shown_as_deleting_not_deleted_again() {
    let (stand, dir) = real().await;
    let ns = "held";
    // The administrator's step for a namespace beyond deploy/'s: allow
    // tidegate to delete it by name (deploy/rbac.yaml).
    stand
        .real()
        .kubectl_stdin(
            &["apply", "-f", "-"],
            Some(&super::kubernetes::grant_namespace_delete(ns)),
        )
        .unwrap();
    let with = [
        namespace(ns),
        resource(
            "config",
            "v1",
            "ConfigMap",
            "settings",
            Some(ns),
            "        data: {a: b}\n",
        ),
    ]
    .concat();
    write_repo(dir.path(), &with);
    apply_ok(&stand, dir.path()).await;
    // Someone else's controller holds the ConfigMap with a finalizer.
    let k = stand.real();
    k.kubectl(&[
        "patch",
        "configmap",
        "settings",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ])
    .unwrap();
    // Git no longer declares the namespace nor its ConfigMap (2 of 2
    // resources: a mass delete, allowed here).
    write_repo(
        dir.path(),
        &resource(
            "other",
            "v1",
            "ConfigMap",
            "other",
            Some("default"),
            "        data: {a: b}\n",
        ),
    );
    let (code, out) = stand
        .cli(
            dir.path(),
            &["apply", "--env", "dev", "--yes", "--allow-mass-delete"],
        )
        .await;
    assert_eq!(code, 0, "{out}");
    let phase = k
        .kubectl(&["get", "namespace", ns, "-o", "jsonpath={.status.phase}"])
        .unwrap();
    assert_eq!(phase, "Terminating");
    // While it terminates, the plan neither deletes it again nor fails.
    let (code, out) = plan(&stand, dir.path()).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No changes."), "{out}");
    // The finalizer goes; the namespace goes with it.
    k.kubectl(&[
        "patch",
        "configmap",
        "settings",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])
    .unwrap();
    k.kubectl(&[
        "wait",
        "--for=delete",
        &format!("namespace/{ns}"),
        "--timeout=60s",
    ])
    .unwrap();
    let (code, out) = plan(&stand, dir.path()).await;
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_configmap_near_the_size_limit_applies_and_one_over_it_fails_at_plan() {
    let (stand, dir) = real().await;
    let big = |bytes: usize| {
        resource(
            "big",
            "v1",
            "ConfigMap",
            "big",
            Some("default"),
            &format!("        data:\n          blob: \"{}\"\n", "x".repeat(bytes)),
        )
    };
    // 1 MiB is the limit of the whole object; leave room for its metadata.
    write_repo(dir.path(), &big(1024 * 1024 - 4096));
    apply_ok(&stand, dir.path()).await;
    let (code, out) = plan(&stand, dir.path()).await;
    assert_eq!(code, 0, "{out}");
    write_repo(dir.path(), &big(1024 * 1024 + 16));
    let (code, out) = plan(&stand, dir.path()).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("k.big"), "{out}");
    assert!(out.contains("modules/k/module.yaml:"), "{out}");
}

/// deploy/ as an operator applies it: every object accepted by a real
/// server with RBAC (a server-side dry run, as the administrator, after
/// the managed namespaces exist), and the ServiceAccount it binds may do
/// exactly what tidegate needs of records and locks in tidegate-system;
/// Secrets only in the managed namespaces (never across the cluster, never
/// in kube-system or default), and delete only the managed Namespaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_manifests_pass_a_real_server_and_rbac_grants_what_tidegate_needs() {
    let (stand, _dir) = real().await;
    let k = stand.real();
    let deploy = super::support::repo_root().join("deploy");
    let managed = deploy.join("managed-namespaces.yaml");
    k.kubectl(&["apply", "-f", managed.to_str().unwrap()])
        .unwrap();
    let out = k
        .kubectl(&["apply", "--dry-run=server", "-f", deploy.to_str().unwrap()])
        .unwrap();
    for obj in [
        "deployment.apps/tidegate",
        "service/tidegate",
        "ingress.networking.k8s.io/tidegate-webhook",
        "role.rbac.authorization.k8s.io/tidegate-state",
    ] {
        assert!(out.contains(obj), "{obj} not accepted:\n{out}");
    }
    let sa = "system:serviceaccount:tidegate:tidegate";
    let can = |verb: &str, what: &str, ns: &str| {
        k.kubectl(&["auth", "can-i", verb, what, "-n", ns, "--as", sa])
            .map(|s| s == "yes")
            .unwrap_or(false)
    };
    for verb in ["get", "create", "update", "delete"] {
        assert!(can(verb, "leases", "tidegate-system"), "{verb} leases");
    }
    // Records (get, apply), the audit history (list, merge-patch
    // appends, delete of the oldest chunk) and the promotion controls
    // (replaced at the version read: update).
    for verb in ["get", "list", "create", "patch", "update", "delete"] {
        assert!(
            can(verb, "configmaps", "tidegate-system"),
            "{verb} configmaps"
        );
    }
    assert!(can("create", "leases", "tidegate"));
    assert!(!can("delete", "leases", "kube-system"));
    // Secrets: every verb tidegate sends in each managed namespace, and no
    // read anywhere else.
    for ns in ["web-dev", "web-staging", "web-test", "web-prod"] {
        for verb in ["get", "list", "create", "patch", "delete"] {
            assert!(can(verb, "secrets", ns), "{verb} secrets in {ns}");
        }
    }
    for ns in ["kube-system", "default", "tidegate"] {
        for verb in ["get", "list", "watch"] {
            assert!(!can(verb, "secrets", ns), "{verb} secrets in {ns}");
        }
    }
    let all_secrets = k
        .kubectl(&["auth", "can-i", "list", "secrets", "-A", "--as", sa])
        .unwrap_or_else(|e| e.to_string());
    assert!(!all_secrets.starts_with("yes"), "{all_secrets}");
    // Namespaces: created by any name, deleted only by the managed names.
    assert!(can("create", "namespaces", "default"));
    assert!(can("delete", "namespace/web-prod", "default"));
    for ns in ["kube-system", "default", "tidegate", "other-team"] {
        assert!(
            !can("delete", &format!("namespace/{ns}"), "default"),
            "delete {ns}"
        );
    }
}
