//! `tidegate import` end to end: a VPC, a subnet and an instance made on
//! moto, and a Namespace and a Deployment made in the cluster, all outside
//! tidegate, are adopted as the resources Git declares; the plan of the
//! takeover is shown first and nothing is stamped without `--yes`; an
//! apply before the import is refused with a pointer to `import`; after
//! it, apply converges them and every id (EC2 ids, Kubernetes uids) is the
//! one they had.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use tempfile::TempDir;

use super::stand::{commit_files, owned_ec2, Kube, Stand, AMI, REGION};

fn env_doc() -> String {
    format!(
        "apiVersion: tidegate.dev/v1
kind: Environment
metadata:
  name: dev
spec:
  targets:
    kubernetes:
      context: dev
    aws:
      region: {REGION}
  modules:
    - name: net
      source: modules/net
    - name: app
      source: modules/app
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
        cidrBlock: 10.42.0.0/16
        tags:
          Name: legacy-vpc
    - name: subnet
      provider: aws
      type: subnet
      spec:
        vpcId: ${{resource.vpc.id}}
        cidrBlock: 10.42.1.0/24
        availabilityZone: {REGION}a
    - name: server
      provider: aws
      type: instance
      spec:
        ami: {AMI}
        instanceType: t3.micro
        subnetId: ${{resource.subnet.id}}
"
    )
}

const APP: &str = "apiVersion: tidegate.dev/v1
kind: Module
metadata:
  name: app
spec:
  resources:
    - name: ns
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: Namespace
        metadata:
          name: legacy
    - name: web
      provider: kubernetes
      manifest:
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
          namespace: legacy
        spec:
          replicas: 2
          selector:
            matchLabels: {app: web}
          template:
            metadata:
              labels: {app: web}
            spec:
              containers:
                - name: web
                  image: registry.example.com/web@sha256:8074748e826827434bbc9e3e5272c2b8fc34cf74eb9e94ebb489afe6cfcef7aa
";

fn tags_of(tags: &[aws_sdk_ec2::types::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn existing_objects_are_adopted_without_being_recreated(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let ec2 = stand.ec2();
    // Made by hand: EC2...
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.42.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_string();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.42.1.0/24")
        .availability_zone(format!("{REGION}a"))
        .send()
        .await
        .unwrap()
        .subnet()
        .unwrap()
        .subnet_id()
        .unwrap()
        .to_string();
    let instance = ec2
        .run_instances()
        .image_id(AMI)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .subnet_id(&subnet)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap()
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_string();
    // ... and Kubernetes.
    let admin = stand.admin_kube("dev").await;
    let mut ns = Namespace::default();
    ns.metadata.name = Some("legacy".into());
    let ns_uid = Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let deploy: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "legacy"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web",
                    "image": "registry.example.com/web@sha256:8074748e826827434bbc9e3e5272c2b8fc34cf74eb9e94ebb489afe6cfcef7aa"}]}}}
    }))
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "legacy");
    let web_uid = deployments
        .create(&PostParams::default(), &deploy)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();

    let repo = TempDir::new().unwrap();
    let dir = repo.path();
    commit_files(
        dir,
        &[
            ("environments/dev.yaml", env_doc()),
            ("modules/net/module.yaml", net_doc()),
            ("modules/app/module.yaml", APP.into()),
        ],
    );

    // The plan of the takeover, and nothing stamped without --yes.
    let (code, text) = stand.cli(dir, &["import", "dev", "net.vpc", &vpc]).await;
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains(&format!("import {vpc} into dev as net.vpc"))
            && text.contains("tags.Name")
            && text.contains("nothing imported; run again with --yes"),
        "{text}"
    );
    let vpcs = ec2.describe_vpcs().vpc_ids(&vpc).send().await.unwrap();
    assert!(!tags_of(vpcs.vpcs()[0].tags()).contains_key("tidegate:resource"));

    // Mistakes are refused with what to do.
    let (code, text) = stand.cli(dir, &["import", "dev", "net.vcp", &vpc]).await;
    assert_ne!(code, 0);
    assert!(text.contains("did you mean net.vpc?"), "{text}");
    let (code, text) = stand.cli(dir, &["import", "dev", "net.vpc", &subnet]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("does not exist"), "{text}");
    let (code, text) = stand
        .cli(dir, &["import", "dev", "app.web", "legacy/other"])
        .await;
    assert_ne!(code, 0);
    assert!(
        text.contains("keeps its kind, namespace and name"),
        "{text}"
    );

    for (id, external) in [
        ("net.vpc", vpc.as_str()),
        ("net.subnet", subnet.as_str()),
        ("net.server", instance.as_str()),
    ] {
        let (code, text) = stand
            .cli(dir, &["import", "dev", id, external, "--yes"])
            .await;
        assert_eq!(code, 0, "{id}: {text}");
        assert!(
            text.contains(&format!("imported {external} as {id}")),
            "{text}"
        );
    }
    // Imported twice: refused.
    let (code, text) = stand
        .cli(dir, &["import", "dev", "net.vpc", &vpc, "--yes"])
        .await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("already managed"), "{text}");

    // The unmarked Namespace stops an apply, which points at import.
    let (code, text) = stand.cli(dir, &["apply", "--env", "dev", "--yes"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("tidegate import dev app.ns"), "{text}");

    for id in ["app.ns", "app.web"] {
        let (code, text) = stand.cli(dir, &["import", "dev", id, "--yes"]).await;
        assert_eq!(code, 0, "{id}: {text}");
    }
    let (code, text) = stand.cli(dir, &["apply", "--env", "dev", "--yes"]).await;
    assert_eq!(code, 0, "{text}");

    // Same objects: ids and uids unchanged, now owned, converged.
    let owned = owned_ec2(&stand, "dev").await;
    assert_eq!(owned["vpc"], [("net.vpc".to_string(), vpc.clone())]);
    assert_eq!(owned["subnet"], [("net.subnet".to_string(), subnet)]);
    assert_eq!(owned["instance"], [("net.server".to_string(), instance)]);
    let vpcs = ec2.describe_vpcs().vpc_ids(&vpc).send().await.unwrap();
    assert_eq!(tags_of(vpcs.vpcs()[0].tags())["Name"], "legacy-vpc");
    let web = deployments.get("web").await.unwrap();
    assert_eq!(web.metadata.uid.as_deref(), Some(web_uid.as_str()));
    assert_eq!(web.spec.replicas, Some(2), "converged to Git");
    assert!(
        !web.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("tidegate.dev/imported"),
        "the first apply took the fields over and dropped the mark"
    );
    let ns = Api::<Namespace>::all(admin).get("legacy").await.unwrap();
    assert_eq!(ns.metadata.uid.as_deref(), Some(ns_uid.as_str()));
    let (code, out, _) = stand
        .cli_split(dir, &["history", "dev", "--format", "jsonl"])
        .await;
    assert_eq!(code, 0);
    let imports = out
        .lines()
        .filter(|l| l.contains("\"event\":\"import\""))
        .count();
    assert_eq!(imports, 5, "{out}");
}

crate::on_both_kubes!(
    existing_objects_are_adopted_without_being_recreated,
    a_generated_module_plans_no_changes_against_what_it_came_from,
);

fn generate_env_doc() -> String {
    format!(
        "apiVersion: tidegate.dev/v1
kind: Environment
metadata:
  name: dev
spec:
  targets:
    kubernetes:
      context: dev
    aws:
      region: {REGION}
  modules:
    - name: base
      source: modules/base
  policy:
    defaultSeverity: warning
"
    )
}

const BASE: &str = "apiVersion: tidegate.dev/v1
kind: Module
metadata:
  name: base
spec:
  resources:
    - name: settings
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: base-settings
          namespace: default
        data:
          mode: managed
";

/// Issue 24: `import --generate` writes the module of what runs today
/// (EC2 by tag, Kubernetes by label), adds its instance, imports every
/// object; the repository then validates and plans no change, and the
/// objects keep their ids. Secrets and untagged or unlabelled objects are
/// never written.
async fn a_generated_module_plans_no_changes_against_what_it_came_from(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let ec2 = stand.ec2();
    let tag = |k: &str, v: &str| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build();
    let tagged = |rt: aws_sdk_ec2::types::ResourceType, name: &str| {
        aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(rt)
            .tags(tag("team", "legacy"))
            .tags(tag("Name", name))
            .build()
    };
    use aws_sdk_ec2::types::ResourceType as Rt;
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.43.0.0/16")
        .tag_specifications(tagged(Rt::Vpc, "legacy-vpc"))
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_string();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.43.1.0/24")
        .availability_zone(format!("{REGION}a"))
        .tag_specifications(tagged(Rt::Subnet, "legacy-a"))
        .send()
        .await
        .unwrap()
        .subnet()
        .unwrap()
        .subnet_id()
        .unwrap()
        .to_string();
    let sg = ec2
        .create_security_group()
        .vpc_id(&vpc)
        .group_name("legacy-web")
        .description("legacy web")
        .tag_specifications(tagged(Rt::SecurityGroup, "legacy-web"))
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    ec2.authorize_security_group_ingress()
        .group_id(&sg)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(443)
                .to_port(443)
                .ip_ranges(
                    aws_sdk_ec2::types::IpRange::builder()
                        .cidr_ip("10.0.0.0/8")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    // Not selected: no team tag.
    let other = ec2
        .create_vpc()
        .cidr_block("10.44.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_string();

    let admin = stand.admin_kube("dev").await;
    let apply = |doc: serde_json::Value| {
        let admin = admin.clone();
        async move {
            let obj: kube::api::DynamicObject = serde_json::from_value(doc).unwrap();
            let gvk = kube::api::GroupVersionKind::try_from(obj.types.as_ref().unwrap()).unwrap();
            let (ar, _) = kube::discovery::pinned_kind(&admin, &gvk).await.unwrap();
            let api: Api<kube::api::DynamicObject> = match obj.metadata.namespace.as_deref() {
                Some(ns) => Api::namespaced_with(admin, ns, &ar),
                None => Api::all_with(admin, &ar),
            };
            api.create(&PostParams::default(), &obj)
                .await
                .unwrap()
                .metadata
                .uid
                .unwrap()
        }
    };
    let ns_uid = apply(serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "legacy-shop", "labels": {"app": "legacy"}}}))
    .await;
    let web_uid = apply(serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "legacy-shop", "labels": {"app": "legacy"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "legacy"}},
            "template": {"metadata": {"labels": {"app": "legacy"}},
                "spec": {"containers": [{"name": "web",
                    "image": "registry.example.com/web@sha256:8074748e826827434bbc9e3e5272c2b8fc34cf74eb9e94ebb489afe6cfcef7aa",
                    "ports": [{"containerPort": 8080}]}]}}}}))
    .await;
    apply(serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "legacy-shop", "labels": {"app": "legacy"}},
        "spec": {"selector": {"app": "legacy"}, "ports": [{"port": 80, "targetPort": 8080}]}}))
    .await;
    apply(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "flags", "namespace": "legacy-shop", "labels": {"app": "legacy"}},
        "data": {"beta": "on"}}))
    .await;
    apply(serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "legacy-shop", "labels": {"app": "legacy"}},
        "stringData": {"password": "hunter2-generate"}}))
    .await;
    // Not selected: no label.
    apply(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "unlabelled", "namespace": "legacy-shop"}, "data": {"a": "b"}}))
    .await;

    let repo = TempDir::new().unwrap();
    let dir = repo.path();
    commit_files(
        dir,
        &[
            ("environments/dev.yaml", generate_env_doc()),
            ("modules/base/module.yaml", BASE.into()),
        ],
    );
    let (code, text) = stand.cli(dir, &["apply", "--env", "dev", "--yes"]).await;
    assert_eq!(code, 0, "{text}");

    let generate = [
        "import",
        "dev",
        "--generate",
        "--select",
        "tag:team=legacy",
        "--select",
        "label:app=legacy",
        "--module",
        "legacy",
    ];
    // Shown, not written.
    let (code, text) = stand.cli(dir, &generate).await;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("legacy.legacy-vpc  vpc"), "{text}");
    assert!(
        text.contains("legacy.deployment-web  apps/v1/Deployment legacy-shop/web"),
        "{text}"
    );
    // A labelled Secret is never written: left out on kube-sim; on the real
    // server tidegate's RBAC does not even let it list Secrets cluster-wide.
    match kube {
        Kube::Sim => assert!(
            text.contains("left out v1/Secret legacy-shop/creds: a Secret's values belong in SOPS"),
            "{text}"
        ),
        Kube::Real => assert!(text.contains("not read: "), "{text}"),
    }
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        !text.contains(&other) && !text.contains("unlabelled"),
        "{text}"
    );
    assert!(!dir.join("modules/legacy").exists());

    let mut args = generate.to_vec();
    args.push("--yes");
    let (code, text) = stand.cli(dir, &args).await;
    assert_eq!(code, 0, "{text}");
    let module = std::fs::read_to_string(dir.join("modules/legacy/module.yaml")).unwrap();
    for want in [
        "vpcId: \"${resource.legacy-vpc.id}\"",
        "namespace: \"${resource.namespace-legacy-shop.metadata.name}\"",
        "cidrBlock: 10.43.1.0/24",
        "beta: \"on\"",
        "containerPort: 8080",
    ] {
        assert!(module.contains(want), "{want} in:\n{module}");
    }
    assert!(
        !module.contains("hunter2") && !module.contains("creds"),
        "{module}"
    );
    assert!(
        !module.contains("uid:") && !module.contains("resourceVersion"),
        "{module}"
    );
    let env = std::fs::read_to_string(dir.join("environments/dev.yaml")).unwrap();
    assert!(
        env.contains("    - name: legacy\n      source: modules/legacy\n  policy:"),
        "{env}"
    );

    let out = stand
        .binary()
        .args(["validate", "--repo"])
        .arg(dir)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = stand
        .binary()
        .args(["plan", "--env", "dev", "--color", "never", "--repo"])
        .arg(dir)
        .output()
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("No changes."), "{text}\n{module}");

    // Generating again finds nothing new: all of it is managed now.
    let mut again = generate.to_vec();
    again[8] = "legacy2";
    let (code, text) = stand.cli(dir, &again).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("manages it already"), "{text}");

    // An apply changes nothing and keeps every id.
    let (code, text) = stand.cli(dir, &["apply", "--env", "dev", "--yes"]).await;
    assert_eq!(code, 0, "{text}");
    let owned = owned_ec2(&stand, "dev").await;
    assert_eq!(owned["vpc"], [("legacy.legacy-vpc".to_string(), vpc)]);
    assert_eq!(owned["subnet"], [("legacy.legacy-a".to_string(), subnet)]);
    assert_eq!(
        owned["security_group"],
        [("legacy.legacy-web".to_string(), sg)]
    );
    let web = Api::<Deployment>::namespaced(admin.clone(), "legacy-shop")
        .get("web")
        .await
        .unwrap();
    assert_eq!(web.metadata.uid.as_deref(), Some(web_uid.as_str()));
    let ns = Api::<Namespace>::all(admin)
        .get("legacy-shop")
        .await
        .unwrap();
    assert_eq!(ns.metadata.uid.as_deref(), Some(ns_uid.as_str()));
}
