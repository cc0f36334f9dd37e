//! Ownership identity and blast-radius guards, end to end with the real
//! binary: two repositories whose environments share a name never observe,
//! change or prune each other's resources; a plan deleting too much, or
//! destroying in a protected environment, stops before anything is
//! applied; objects marked `tidegate.dev/prune: disabled` or carrying marks
//! from before projects are kept when Git stops declaring them.

use std::path::Path;

use tempfile::TempDir;

use super::execute::{app_doc, env_doc, net_doc, write_repo, Spec};
use super::stand::{commit_files, config_map, owned_ec2, Kube, Stand};

/// `tidegate plan <args> --repo <repo>` (plan keeps no state: no
/// `--state-dir`).
async fn plan(stand: &Stand, repo: &Path, args: &[&str]) -> (i32, String) {
    let out = stand
        .binary()
        .arg("plan")
        .args(args)
        .arg("--repo")
        .arg(repo)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn project(dir: &Path, name: &str) {
    std::fs::write(
        dir.join("tidegate.yaml"),
        tidegate::load::project::document(name),
    )
    .unwrap();
}

/// Repository `beta`: the same environment name and modules as the
/// fixture, its Kubernetes objects in namespace `beta-<env>`, plus
/// `extra` appended to its app module's resources.
fn write_beta(dir: &Path, extra: &str) -> String {
    project(dir, "beta");
    let app = app_doc(&Spec::default()).replace("app-${env.name}", "beta-${env.name}") + extra;
    commit_files(
        dir,
        &[
            ("environments/dev.yaml", env_doc("dev", None)),
            ("modules/net/module.yaml", net_doc(&Spec::default())),
            ("modules/app/module.yaml", app),
        ],
    )
}

async fn two_projects_with_one_environment_name_never_touch_each_other(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let alpha = TempDir::new().unwrap();
    project(alpha.path(), "alpha");
    write_repo(alpha.path(), &Spec::default());
    let (code, text) = stand
        .cli(alpha.path(), &["apply", "--env", "dev", "--yes"])
        .await;
    assert_eq!(code, 0, "{text}");
    let alpha_ec2 = owned_ec2(&stand, "dev").await;

    let beta = TempDir::new().unwrap();
    write_beta(beta.path(), "");
    let (code, text) = plan(&stand, beta.path(), &["--env", "dev", "--color", "never"]).await;
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("7 to create, 0 to update, 0 to replace, 0 to delete"),
        "beta sees none of alpha's resources: {text}"
    );
    let (code, text) = stand
        .cli(beta.path(), &["apply", "--env", "dev", "--yes"])
        .await;
    assert_eq!(code, 0, "{text}");

    // alpha's resources are all there and unchanged.
    let (code, text) = plan(&stand, alpha.path(), &["--env", "dev"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("No changes."), "{text}");
    let both = owned_ec2(&stand, "dev").await;
    for (kind, ids) in &alpha_ec2 {
        for id in ids {
            assert!(both[kind].contains(id), "alpha's {kind} {id:?} is gone");
        }
    }
    assert_eq!(both["vpc"].len(), 2, "each project has its own VPC");

    // beta declaring an object alpha owns is refused at plan, naming both.
    let taken = "    - name: stolen
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: network
          namespace: app-dev
        data:
          mine: \"yes\"
";
    write_beta(beta.path(), taken);
    let (code, text) = plan(&stand, beta.path(), &["--env", "dev"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("app.stolen")
            && text.contains("project alpha, environment dev")
            && text.contains("this repository is project beta, environment dev"),
        "{text}"
    );
    let (code, text) = stand
        .cli(beta.path(), &["apply", "--env", "dev", "--yes"])
        .await;
    assert_eq!(code, 1, "{text}");
    let cm = config_map(&stand, "dev", "app-dev", "network")
        .await
        .unwrap();
    assert!(
        !cm.data.unwrap_or_default().contains_key("mine"),
        "alpha's ConfigMap is untouched"
    );
}

async fn a_mass_delete_stops_before_anything_is_applied(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let repo = TempDir::new().unwrap();
    write_repo(repo.path(), &Spec::default());
    let (code, text) = stand
        .cli(repo.path(), &["apply", "--env", "dev", "--yes"])
        .await;
    assert_eq!(code, 0, "{text}");

    // 3 of 7 resources go (43 %, over the default 25 %), and one changes.
    write_repo(
        repo.path(),
        &Spec {
            servers: false,
            extra_config: false,
            subnet_cidr: "10.1.1.0/24",
        },
    );
    let (code, text) = plan(&stand, repo.path(), &["--env", "dev", "--color", "never"]).await;
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("guard: mass-delete: the plan deletes 3 of 7 resources (42%), more than the limit of 25%"),
        "{text}"
    );
    let (code, text) = stand
        .cli(repo.path(), &["apply", "--env", "dev", "--yes"])
        .await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("stopped by guard mass-delete") && text.contains("--allow-mass-delete"),
        "{text}"
    );
    assert!(
        owned_ec2(&stand, "dev").await.contains_key("instance"),
        "nothing deleted"
    );
    assert!(config_map(&stand, "dev", "app-dev", "flags")
        .await
        .is_some());

    let (code, text) = stand
        .cli(
            repo.path(),
            &["apply", "--env", "dev", "--yes", "--allow-mass-delete"],
        )
        .await;
    assert_eq!(code, 0, "{text}");
    assert!(!owned_ec2(&stand, "dev").await.contains_key("instance"));
    assert!(config_map(&stand, "dev", "app-dev", "flags")
        .await
        .is_none());
}

async fn a_protected_environment_destroys_nothing_without_allow_destroy(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let repo = TempDir::new().unwrap();
    write_repo(repo.path(), &Spec::default());
    let protect = |dir: &Path| {
        let path = dir.join("environments/dev.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("spec:\n", "spec:\n  protect: true\n")).unwrap();
    };
    protect(repo.path());
    let (code, text) = stand
        .cli(repo.path(), &["apply", "--env", "dev", "--yes"])
        .await;
    assert_eq!(code, 0, "creates need no flag: {text}");

    write_repo(
        repo.path(),
        &Spec {
            extra_config: false,
            ..Spec::default()
        },
    );
    protect(repo.path());
    let (code, text) = stand
        .cli(repo.path(), &["apply", "--env", "dev", "--yes"])
        .await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("stopped by guard protected")
            && text.contains("environment dev is protected")
            && text.contains("app.flags")
            && text.contains("--allow-destroy"),
        "{text}"
    );
    assert!(config_map(&stand, "dev", "app-dev", "flags")
        .await
        .is_some());
    let (code, text) = stand
        .cli(
            repo.path(),
            &["apply", "--env", "dev", "--yes", "--allow-destroy"],
        )
        .await;
    assert_eq!(code, 0, "{text}");
    assert!(config_map(&stand, "dev", "app-dev", "flags")
        .await
        .is_none());
}

async fn kept_objects_outlive_their_declaration(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let repo = TempDir::new().unwrap();
    write_repo(repo.path(), &Spec::default());
    // flags asks to be kept; network will carry marks from before projects.
    let app = repo.path().join("modules/app/module.yaml");
    let text = std::fs::read_to_string(&app).unwrap();
    std::fs::write(
        &app,
        text.replace(
            "          name: flags\n",
            "          name: flags\n          annotations:\n            tidegate.dev/prune: disabled\n",
        ),
    )
    .unwrap();
    let (code, text) = stand
        .cli(repo.path(), &["apply", "--env", "dev", "--yes"])
        .await;
    assert_eq!(code, 0, "{text}");
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(stand.kube("dev").await, "app-dev");
    api.patch(
        "network",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(
            serde_json::json!({"metadata": {"labels": {"tidegate.dev/project": null}}}),
        ),
    )
    .await
    .unwrap();

    // Git stops declaring the app module's ConfigMaps.
    let app_text = std::fs::read_to_string(&app).unwrap();
    let cut = app_text.find("    - name: config").unwrap();
    std::fs::write(&app, &app_text[..cut]).unwrap();
    let (code, text) = stand
        .cli(repo.path(), &["apply", "--env", "dev", "--yes"])
        .await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(
            "is no longer declared but kept: it is marked `tidegate.dev/prune: disabled`"
        ),
        "{text}"
    );
    assert!(
        text.contains("is no longer declared but kept: it carries this environment's marks from before projects"),
        "{text}"
    );
    assert!(config_map(&stand, "dev", "app-dev", "flags")
        .await
        .is_some());
    assert!(config_map(&stand, "dev", "app-dev", "network")
        .await
        .is_some());
}

/// One invalid resource among 30, in the last module of the environment:
/// `apply` fails before its first write, naming it, and writes nothing at
/// all, neither to EC2 nor to Kubernetes. On kube-sim the invalid one is a
/// subnet CIDR (`/33`, an EC2 value check); on the real API server a
/// ConfigMap label value the server would refuse, which the offline
/// Kubernetes schema check (issue 20) now names at its line before any
/// dry run.
async fn one_invalid_resource_among_thirty_means_zero_writes(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let repo = TempDir::new().unwrap();
    let real = matches!(kube, Kube::Real);
    let mut app = app_doc(&Spec::default());
    for i in 0..23 {
        let label = if i == 22 && real {
            "not a valid label!"
        } else {
            "ok"
        };
        app.push_str(&format!(
            "    - name: cm{i}
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: cm{i}
          namespace: app-${{env.name}}
          labels:
            tier: {label:?}
        data:
          i: \"{i}\"
"
        ));
    }
    let net = Spec {
        subnet_cidr: if real { "10.1.1.0/24" } else { "10.1.1.0/33" },
        ..Spec::default()
    };
    commit_files(
        repo.path(),
        &[
            ("environments/dev.yaml", env_doc("dev", None)),
            ("modules/net/module.yaml", net_doc(&net)),
            ("modules/app/module.yaml", app),
        ],
    );
    let (code, text) = stand
        .cli(repo.path(), &["apply", "--env", "dev", "--yes"])
        .await;
    assert_eq!(code, 1, "{text}");
    // The CIDR is refused offline at its own line, before any provider.
    let named = if real {
        "label value `not a valid label!` of `tier` is not valid"
    } else {
        "`10.1.1.0/33`"
    };
    assert!(
        text.contains(named),
        "the invalid resource is named: {text}"
    );
    assert!(text.contains("module.yaml:"), "with its file:line: {text}");
    assert!(owned_ec2(&stand, "dev").await.is_empty(), "no EC2 write");
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(stand.kube("dev").await);
    assert!(
        namespaces.get_opt("app-dev").await.unwrap().is_none(),
        "no Kubernetes write"
    );
}

crate::on_both_kubes!(
    one_invalid_resource_among_thirty_means_zero_writes,
    two_projects_with_one_environment_name_never_touch_each_other,
    a_mass_delete_stops_before_anything_is_applied,
    a_protected_environment_destroys_nothing_without_allow_destroy,
    kept_objects_outlive_their_declaration,
);
