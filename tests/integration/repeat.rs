//! `forEach` and `count` through the real binary: a module instance
//! repeated over a var and a resource repeated over an input are applied;
//! removing one item deletes only its copies and leaves every other id and
//! object as it was (nothing renumbered); the revision plan shows the same.

use tempfile::TempDir;

use super::stand::{commit_files, config_map, Kube, Stand};

fn env_doc(tenants: &str) -> String {
    format!(
        "apiVersion: tidegate.dev/v1
kind: Environment
metadata:
  name: dev
spec:
  targets:
    kubernetes:
      context: dev
  vars:
    tenants: {tenants}
  modules:
    - name: base
      source: modules/base
    - name: tenant
      source: modules/tenant
      forEach: ${{var.tenants}}
      dependsOn: [base]
      inputs:
        name: ${{each.key}}
        zones: ${{each.value.zones}}
"
    )
}

const BASE: &str = "apiVersion: tidegate.dev/v1
kind: Module
metadata:
  name: base
spec:
  resources:
    - name: ns
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: Namespace
        metadata:
          name: tenants-${env.name}
";

const TENANT: &str = "apiVersion: tidegate.dev/v1
kind: Module
metadata:
  name: tenant
spec:
  inputs:
    name: {type: string}
    zones: {type: list}
  resources:
    - name: config
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: ${input.name}
          namespace: tenants-${env.name}
        data:
          TENANT: ${input.name}
    - name: zone
      provider: kubernetes
      forEach: ${input.zones}
      dependsOn: [config]
      manifest:
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: ${input.name}-${each.key}
          namespace: tenants-${env.name}
        data:
          ZONE: ${each.value}
";

async fn removing_one_item_deletes_only_its_copies(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let repo = TempDir::new().unwrap();
    let dir = repo.path();
    let all = "{acme: {zones: [a, b]}, globex: {zones: [a]}, initech: {zones: [c]}}";
    commit_files(
        dir,
        &[
            ("environments/dev.yaml", env_doc(all)),
            ("modules/base/module.yaml", BASE.into()),
            ("modules/tenant/module.yaml", TENANT.into()),
        ],
    );
    let (code, text) = stand.cli(dir, &["apply", "--env", "dev", "--yes"]).await;
    assert_eq!(code, 0, "{text}");
    for name in [
        "acme",
        "acme-a",
        "acme-b",
        "globex",
        "globex-a",
        "initech",
        "initech-c",
    ] {
        assert!(
            config_map(&stand, "dev", "tenants-dev", name)
                .await
                .is_some(),
            "{name}: {text}"
        );
    }
    let uid = |c: Option<k8s_openapi::api::core::v1::ConfigMap>| c.unwrap().metadata.uid.unwrap();
    let before = uid(config_map(&stand, "dev", "tenants-dev", "initech-c").await);

    // globex leaves, acme loses zone b.
    commit_files(
        dir,
        &[(
            "environments/dev.yaml",
            env_doc("{acme: {zones: [a]}, initech: {zones: [c]}}"),
        )],
    );
    let out = stand
        .binary()
        .args([
            "plan", "--env", "dev", "--color", "never", "--base", "HEAD~1", "--head", "HEAD",
            "--repo",
        ])
        .arg(dir)
        .output()
        .await
        .unwrap();
    let plan = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(2), "{plan}");
    assert!(
        plan.contains("0 to create, 0 to update, 0 to replace, 3 to delete"),
        "{plan}"
    );
    for gone in [
        "tenant-globex.config",
        "tenant-globex.zone-a",
        "tenant-acme.zone-b",
    ] {
        assert!(plan.contains(&format!("- {gone} ")), "{gone}: {plan}");
    }
    // 3 of 8 is past the mass-delete guard's 25 %.
    let (code, text) = stand.cli(dir, &["apply", "--env", "dev", "--yes"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("stopped by guard mass-delete"), "{text}");
    let (code, text) = stand
        .cli(
            dir,
            &["apply", "--env", "dev", "--yes", "--allow-mass-delete"],
        )
        .await;
    assert_eq!(code, 0, "{text}");
    for gone in ["globex", "globex-a", "acme-b"] {
        assert!(
            config_map(&stand, "dev", "tenants-dev", gone)
                .await
                .is_none(),
            "{gone} deleted"
        );
    }
    for kept in ["acme", "acme-a", "initech", "initech-c"] {
        assert!(config_map(&stand, "dev", "tenants-dev", kept)
            .await
            .is_some());
    }
    assert_eq!(
        uid(config_map(&stand, "dev", "tenants-dev", "initech-c").await),
        before,
        "the others keep their ids and objects"
    );
    assert!(text.contains("3 deleted"), "{text}");
}

crate::on_both_kubes!(removing_one_item_deletes_only_its_copies,);
