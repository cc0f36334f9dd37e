//! The bundled example against the real `sops`: each environment's secret
//! file decrypts with its demo identity (and only with it), and the key
//! structure tidegate reads without a key matches the decrypted content.

use std::process::Command;

use tidegate::load::sops;
use tidegate::model::SecretTree;

fn decrypt(file: &str, key: &str) -> std::process::Output {
    let root = super::support::repo_root();
    Command::new(super::support::tool("sops"))
        .args(["--decrypt", "--output-type", "json", file])
        .env(
            "SOPS_AGE_KEY_FILE",
            root.join("secrets/demo-keys").join(key),
        )
        .current_dir(&root)
        .output()
        .expect("sops runs")
}

fn leaves(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    match v.as_object() {
        Some(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, &p, out);
            }
        }
        None => out.push(prefix.to_string()),
    }
}

#[test]
fn example_secrets_decrypt_with_their_own_demo_key_only() {
    let root = super::support::repo_root();
    for env in ["dev", "staging", "test", "prod"] {
        let file = format!("secrets/{env}.sops.yaml");
        let out = decrypt(&file, &format!("{env}.agekey"));
        assert!(
            out.status.success(),
            "{env}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let plain: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let mut decrypted = Vec::new();
        leaves(&plain, "", &mut decrypted);
        decrypted.sort();

        let text = std::fs::read_to_string(root.join(&file)).unwrap();
        let tree: SecretTree = sops::parse_structure(&file, &text).expect("key structure");
        assert_eq!(tree.leaves(), decrypted, "{env}");
        assert!(tree.leaf(&["db", "password"]) && tree.leaf(&["api", "token"]));
    }
    let wrong = decrypt("secrets/prod.sops.yaml", "dev.agekey");
    assert!(
        !wrong.status.success(),
        "prod secrets must not open with the dev key"
    );
}

/// Secrets decrypted by the real `sops` with the example's demo identity,
/// held in memory for the test only.
struct SopsSecrets {
    files: std::collections::HashMap<String, serde_json::Value>,
}

impl SopsSecrets {
    fn for_env(env: &str) -> SopsSecrets {
        let file = format!("secrets/{env}.sops.yaml");
        let out = decrypt(&file, &format!("{env}.agekey"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = serde_json::from_slice(&out.stdout).expect("json");
        SopsSecrets {
            files: [(file, v)].into_iter().collect(),
        }
    }
}

impl tidegate::render::SecretLookup for SopsSecrets {
    fn lookup(&self, file_key: &str, path: &[&str]) -> Option<tidegate::render::Secret> {
        let v = path
            .iter()
            .try_fold(self.files.get(file_key)?, |v, k| v.get(*k))?;
        Some(tidegate::render::Secret::Sensitive(
            tidegate::sensitive::Sensitive::from_string(v.as_str()?.to_string()),
        ))
    }
}

#[test]
fn the_example_renders_with_real_secrets_and_known_attributes() {
    use std::collections::HashMap;
    use tidegate::provider::ResourceId;
    use tidegate::render::{RenderOptions, Renderer};
    use tidegate::value::{Map, Value};

    let files = tidegate::load::read_dir(&super::support::repo_root()).unwrap();
    let model = tidegate::load::load(&files).unwrap();
    let secrets = SopsSecrets::for_env("prod");
    let id = |m: &str, n: &str| ResourceId {
        module: m.into(),
        name: n.into(),
    };
    let mut known: HashMap<ResourceId, Map> = HashMap::new();
    let opts = RenderOptions {
        known: &known,
        secrets: &secrets,
        owner: None,
    };
    let r = Renderer::new(&model, "prod", opts).unwrap();

    let secret = r.render(&id("web", "secret")).unwrap();
    let pw = secret.body.get_path("stringData.db-password").unwrap();
    let plain = secrets.files["secrets/prod.sops.yaml"]["db"]["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(matches!(pw, Value::Sensitive(s) if s.expose_str() == Some(plain.as_str())));
    let masked = serde_json::to_string(&secret.body).unwrap();
    assert!(!masked.contains(&plain), "masked output leaks the secret");

    let app = r.render(&id("app-servers", "app_a")).unwrap();
    assert!(matches!(
        app.body.get_path("userData"),
        Some(Value::Sensitive(_))
    ));
    assert_eq!(
        app.body.get_path("tags.Name"),
        Some(&Value::String("prod-app-a".into()))
    );
    assert_eq!(
        app.body.get_path("subnetId"),
        Some(&Value::Unknown("module.network.subnet_a.id".into()))
    );
    let deploy = r.render(&id("web", "deployment")).unwrap();
    assert_eq!(deploy.kind, "apps/v1/Deployment");
    assert_eq!(deploy.body.get_path("spec.replicas"), Some(&Value::Int(3)));

    let config = r.render(&id("web", "config")).unwrap();
    assert!(matches!(
        config.body.get_path("data.APP_SERVERS"),
        Some(Value::Unknown(_))
    ));

    // Once the EC2 side is applied, the ConfigMap carries its attributes.
    let attrs = |pairs: &[(&str, &str)]| -> Map {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect()
    };
    known.insert(id("network", "vpc"), attrs(&[("id", "vpc-0abc")]));
    known.insert(
        id("app-servers", "app_a"),
        attrs(&[("privateIp", "10.40.1.10")]),
    );
    known.insert(
        id("app-servers", "app_b"),
        attrs(&[("privateIp", "10.40.2.10")]),
    );
    let opts = RenderOptions {
        known: &known,
        secrets: &secrets,
        owner: Some("prod-green"),
    };
    let r = Renderer::new(&model, "prod", opts).unwrap();
    let config = r.render(&id("web", "config")).unwrap();
    assert_eq!(
        config.body.get_path("data.APP_SERVERS"),
        Some(&Value::String("10.40.1.10:8080,10.40.2.10:8080".into()))
    );
    assert_eq!(
        config.body.get_path("data.VPC_ID"),
        Some(&Value::String("vpc-0abc".into()))
    );
    assert_eq!(
        config.body.get_path("metadata.namespace"),
        Some(&Value::String("web-prod-green".into()))
    );
    assert_eq!(
        model
            .environment("prod")
            .unwrap()
            .target(Some("prod-green"))
            .environment,
        "prod-green"
    );
}

#[test]
fn the_example_applies_in_levels() {
    use tidegate::provider::ResourceId;
    let files = tidegate::load::read_dir(&super::support::repo_root()).unwrap();
    let model = tidegate::load::load(&files).unwrap();
    let graph = tidegate::graph::Graph::build(&model).unwrap();
    let levels = graph.levels("prod");
    let first: Vec<String> = levels[0].iter().map(ResourceId::to_string).collect();
    assert_eq!(first, ["app-servers.key", "network.vpc", "web.namespace"]);
    let last: Vec<String> = levels
        .last()
        .unwrap()
        .iter()
        .map(ResourceId::to_string)
        .collect();
    assert!(last.contains(&"web.deployment".to_string()), "{levels:?}");
    assert_eq!(levels.iter().map(Vec::len).sum::<usize>(), 16);
    // `${input.subnetIds.0}` waits for the first subnet only.
    let app_a = ResourceId {
        module: "app-servers".into(),
        name: "app_a".into(),
    };
    let deps: Vec<String> = graph
        .dependencies("prod", &app_a)
        .iter()
        .map(ResourceId::to_string)
        .collect();
    assert_eq!(
        deps,
        ["app-servers.key", "network.app_sg", "network.subnet_a"]
    );
}

/// The bundled modules themselves (not a copy) against the real stand-ins:
/// `tidegate apply` creates the example's dev environment (network,
/// app-servers and web) in moto and Kubernetes (kube-sim, and a real API
/// server where the Deployment really rolls out), exactly one EC2 object
/// per declared resource carries its tags, and the next `plan` finds
/// nothing to do (exit 0, `No changes.`): no field the server defaults
/// shows as a perpetual diff.
async fn the_bundled_modules_apply_and_replan_clean(kube: super::stand::Kube) {
    let root = super::support::repo_root();
    let stand = super::stand::Stand::on(kube, &["dev", "staging", "test", "prod"]).await;
    if let super::stand::KubeServer::Real(plane) = &stand.kube {
        // The install step of docs/install.md: the managed namespaces and
        // tidegate's Secrets grant in each (deploy/rbac.yaml gives none
        // across the cluster).
        let managed = root.join("deploy/managed-namespaces.yaml");
        plane
            .cluster()
            .kubectl(&["apply", "-f", managed.to_str().unwrap()])
            .unwrap();
    }
    let key = root.join("secrets/demo-keys/dev.agekey");
    let state = stand.dir.path().join("state");
    let run = |args: &[&str]| {
        let mut c = stand.binary();
        c.args(args)
            .arg("--repo")
            .arg(&root)
            .env("SOPS_AGE_KEY_FILE", &key);
        c
    };
    let state = state.to_str().unwrap();
    let out = run(&["apply", "--env", "dev", "--yes", "--state-dir", state])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What the environment owns in its region (eu-west-1), by EC2 type.
    use tidegate::provider::Provider;
    let conf = aws_sdk_ec2::config::Builder::new()
        .region(aws_sdk_ec2::config::Region::new("eu-west-1"))
        .endpoint_url(&stand.moto.endpoint)
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ));
    let aws = tidegate::provider::aws::AwsProvider::with_config(
        tidegate::provider::Owner::new("shop", "dev"),
        conf,
        Default::default(),
    );
    let mut ec2: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for l in aws.observe(&[]).await.unwrap() {
        ec2.entry(l.kind.clone())
            .or_default()
            .push(l.id.to_string());
    }
    let count = |k: &str| ec2.get(k).map(Vec::len).unwrap_or(0);
    assert_eq!(count("vpc"), 1, "{ec2:?}");
    assert_eq!(count("subnet"), 2, "{ec2:?}");
    assert_eq!(count("internet_gateway"), 1, "{ec2:?}");
    assert_eq!(count("route_table"), 1, "{ec2:?}");
    assert_eq!(count("security_group"), 2, "{ec2:?}");
    assert_eq!(count("key_pair"), 1, "{ec2:?}");
    assert_eq!(count("instance"), 2, "{ec2:?}");
    let out = run(&["plan", "--env", "dev"]).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("No changes."), "{stdout}");

    // Upgrading in place from a tidegate before projects: every mark loses
    // its project, the record and the inventory get their old names. The
    // next plan adopts everything and deletes nothing; the apply stamps the
    // project and the plan after it is empty again.
    let marked = downgrade_to_marks_without_project(&stand, &aws).await;
    assert!(
        marked >= 14,
        "{marked}: every resource of dev carried the project"
    );
    let out = run(&["plan", "--env", "dev", "--color", "never"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "0 to create, {marked} to update, 0 to replace, 0 to delete"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("tidegate.dev/project"), "{stdout}");
    let out = run(&["apply", "--env", "dev", "--yes", "--state-dir", state])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("deleted"), "{stdout}");
    let out = run(&["plan", "--env", "dev"]).output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        downgrade_to_marks_without_project(&stand, &aws).await,
        marked,
        "every object carries the project again"
    );
    let out = run(&["apply", "--env", "dev", "--yes", "--state-dir", state])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());

    // Then every environment in order (dev < staging < test < prod, each
    // with its own demo key), and nothing left to do anywhere.
    let keys = root.join("secrets/demo-keys");
    let all = |args: &[&str]| {
        let mut c = stand.binary();
        c.args(args)
            .arg("--repo")
            .arg(&root)
            .arg("--age-key-dir")
            .arg(&keys);
        c
    };
    let out = all(&["apply", "--all", "--yes", "--state-dir", state])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "apply --all: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = all(&["plan", "--color", "never"]).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("No changes."), "{stdout}");
    assert_eq!(
        stdout
            .matches("0 to create, 0 to update, 0 to replace, 0 to delete")
            .count(),
        4,
        "{stdout}"
    );
}

/// Turns the marks of everything environment dev of the example applied
/// into those of a tidegate from before projects (no project label or
/// tag), and its record and inventory ConfigMaps into their old names;
/// returns how many objects and resources carried a project mark.
async fn downgrade_to_marks_without_project(
    stand: &super::stand::Stand,
    aws: &tidegate::provider::aws::AwsProvider,
) -> usize {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
    use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
    let client = stand.admin_kube("dev").await;
    let selector = ListParams::default()
        .labels("app.kubernetes.io/managed-by=tidegate,tidegate.dev/project=shop,tidegate.dev/environment=dev");
    let unlabel = serde_json::json!({"metadata": {"labels": {"tidegate.dev/project": null}}});
    let mut n = 0;
    macro_rules! strip {
        ($k:ty, $api:expr) => {{
            let all: Api<$k> = Api::all(client.clone());
            for o in all.list(&selector).await.unwrap() {
                let name = o.metadata.name.clone().unwrap();
                if name.starts_with("tidegate-") {
                    continue; // the record and the inventory: renamed below
                }
                let api: Api<$k> = $api(o.metadata.namespace.as_deref().unwrap_or(""));
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&unlabel))
                    .await
                    .unwrap();
                n += 1;
            }
        }};
    }
    strip!(Namespace, |_: &str| Api::all(client.clone()));
    strip!(ConfigMap, |ns: &str| Api::namespaced(client.clone(), ns));
    strip!(Secret, |ns: &str| Api::namespaced(client.clone(), ns));
    strip!(Deployment, |ns: &str| Api::namespaced(client.clone(), ns));
    // The record and the inventory under their names from before projects.
    for (ns, new, old) in [
        (
            "tidegate-system",
            "tidegate-state-shop.dev",
            "tidegate-state-dev",
        ),
        (
            "default",
            "tidegate-inventory-shop.dev",
            "tidegate-inventory-dev",
        ),
    ] {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        if let Some(mut cm) = api.get_opt(new).await.unwrap() {
            api.delete(new, &Default::default()).await.unwrap();
            cm.metadata = kube::api::ObjectMeta {
                name: Some(old.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            };
            let _ = api.delete(old, &Default::default()).await;
            api.create(&PostParams::default(), &cm).await.unwrap();
        }
    }
    use tidegate::provider::Provider;
    let ids: Vec<String> = aws
        .observe(&[])
        .await
        .unwrap()
        .into_iter()
        .filter(|l| !l.is_legacy())
        .map(|l| l.external_id)
        .collect();
    if !ids.is_empty() {
        aws.client()
            .delete_tags()
            .set_resources(Some(ids.clone()))
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("tidegate:project")
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    n + ids.len()
}

crate::on_both_kubes!(the_bundled_modules_apply_and_replan_clean);
