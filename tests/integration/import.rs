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

crate::on_both_kubes!(existing_objects_are_adopted_without_being_recreated,);
