//! The executor, state records, gates, locks and the `apply`/`rebuild`
//! commands end to end: EC2 against moto, Kubernetes against kube-sim and
//! a real kube-apiserver (each test runs on both, `sim::` and `real::`), the
//! repository a real Git repository, the CLI the real binary (SIGKILLed
//! for the crash tests).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use tempfile::TempDir;
use tidegate::execute::{self, EnvRun, Options, Outcome, Status};
use tidegate::graph::Graph;
use tidegate::model::Model;
use tidegate::observe::Providers;
use tidegate::provider::ResourceId;
use tidegate::render::StructuralSecrets;
use tidegate::state::{self, EnvLock};

use super::stand::{
    commit_files, config_map, http_get, owned_ec2, Kube, Ports, Stand, AMI, REGION,
};

/// What the fixture repository declares.
#[derive(Clone)]
pub(crate) struct Spec {
    pub subnet_cidr: &'static str,
    /// Declare the security group and the instance.
    pub servers: bool,
    /// Declare the second ConfigMap.
    pub extra_config: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            subnet_cidr: "10.1.1.0/24",
            servers: true,
            extra_config: true,
        }
    }
}

pub(crate) fn env_doc(name: &str, after: Option<&str>) -> String {
    let after = after.map(|a| format!("  after: {a}\n")).unwrap_or_default();
    format!(
        "apiVersion: tidegate.dev/v1
kind: Environment
metadata:
  name: {name}
spec:
{after}  targets:
    kubernetes:
      context: {name}
    aws:
      region: {REGION}
  vars:
    cidr: 10.1.0.0/16
  modules:
    - name: network
      source: modules/net
      inputs:
        cidr: ${{var.cidr}}
    - name: app
      source: modules/app
      inputs:
        vpcId: ${{module.network.vpc_id}}
  policy:
    defaultSeverity: warning
"
    )
}

pub(crate) fn net_doc(spec: &Spec) -> String {
    let mut s = format!(
        "apiVersion: tidegate.dev/v1
kind: Module
metadata:
  name: net
spec:
  inputs:
    cidr:
      type: string
  outputs:
    vpc_id:
      value: ${{resource.vpc.id}}
  resources:
    - name: vpc
      provider: aws
      type: vpc
      spec:
        cidrBlock: ${{input.cidr}}
        tags:
          Name: ${{env.name}}-vpc
    - name: subnet
      provider: aws
      type: subnet
      spec:
        vpcId: ${{resource.vpc.id}}
        cidrBlock: {}
        availabilityZone: {REGION}a
",
        spec.subnet_cidr
    );
    if spec.servers {
        s.push_str(&format!(
            "    - name: sg
      provider: aws
      type: security_group
      spec:
        vpcId: ${{resource.vpc.id}}
        groupName: ${{env.name}}-app
        description: app servers
        ingress:
          - protocol: tcp
            fromPort: 8080
            toPort: 8080
            cidrBlocks: [10.1.0.0/16]
    - name: server
      provider: aws
      type: instance
      spec:
        ami: {AMI}
        instanceType: t3.micro
        subnetId: ${{resource.subnet.id}}
        securityGroupIds: ['${{resource.sg.id}}']
        metadata:
          httpTokens: required
"
        ));
    }
    s
}

pub(crate) fn app_doc(spec: &Spec) -> String {
    let mut s = "apiVersion: tidegate.dev/v1
kind: Module
metadata:
  name: app
spec:
  inputs:
    vpcId:
      type: string
  resources:
    - name: ns
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: Namespace
        metadata:
          name: app-${env.name}
    - name: config
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: network
          namespace: app-${env.name}
        data:
          VPC: ${input.vpcId}
"
    .to_string();
    if spec.extra_config {
        s.push_str(
            "    - name: flags
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: flags
          namespace: app-${env.name}
        data:
          beta: \"on\"
",
        );
    }
    s
}

/// Writes the fixture into `dir` and commits it with the real `git`;
/// returns the commit id.
pub(crate) fn write_repo(dir: &Path, spec: &Spec) -> String {
    let files = [
        ("environments/dev.yaml", env_doc("dev", None)),
        ("environments/staging.yaml", env_doc("staging", Some("dev"))),
        ("modules/net/module.yaml", net_doc(spec)),
        ("modules/app/module.yaml", app_doc(spec)),
    ];
    commit_files(dir, &files)
}

fn load(dir: &Path) -> (Model, Graph) {
    let files = tidegate::load::read_dir(dir).unwrap();
    let checked = tidegate::cli::check(&files).expect("fixture is valid");
    (checked.model, checked.graph)
}

fn options() -> Options {
    Options {
        health_timeout: Duration::from_secs(20),
        health_poll: Duration::from_millis(20),
        ..Options::default()
    }
}

async fn apply(stand: &Stand, dir: &Path, env: &str) -> (Outcome, Providers) {
    let (model, graph) = load(dir);
    let providers = stand.providers(&model, env, env).await;
    let environment = model.environment(env).expect("the fixture has it");
    let run =
        EnvRun::new(&model, &graph, environment, &providers, &StructuralSecrets).options(options());
    let outcome = execute::run_env(&run).await.expect("the run starts");
    (outcome, providers)
}

fn id(m: &str, n: &str) -> ResourceId {
    ResourceId {
        module: m.into(),
        name: n.into(),
    }
}

fn status(o: &Outcome, m: &str, n: &str) -> Status {
    o.get(&id(m, n))
        .unwrap_or_else(|| panic!("{m}.{n} not in outcome: {o:#?}"))
        .status
}

/// Write operations among API calls: everything but reads.
fn writes(calls: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    calls
        .iter()
        .filter(|(op, _)| {
            let op = op.split('/').nth(1).unwrap_or("");
            !(op.starts_with("Describe")
                || matches!(op, "get" | "list" | "discovery" | "dry_run" | "watch"))
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

async fn apply_converges_outputs_flow_and_a_second_apply_writes_nothing(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let repo = TempDir::new().unwrap();
    write_repo(repo.path(), &Spec::default());

    let (first, _) = apply(&stand, repo.path(), "dev").await;
    assert!(first.converged(), "{first:#?}");
    for (m, n) in [
        ("network", "vpc"),
        ("network", "subnet"),
        ("network", "sg"),
        ("network", "server"),
        ("app", "ns"),
        ("app", "config"),
        ("app", "flags"),
    ] {
        assert_eq!(status(&first, m, n), Status::Created, "{m}.{n}");
    }

    // Outputs flowed: the subnet and the ConfigMap carry the VPC's id.
    let live = owned_ec2(&stand, "dev").await;
    let vpc_id = &live["vpc"][0].1;
    let subnets = stand
        .ec2()
        .describe_subnets()
        .subnet_ids(&live["subnet"][0].1)
        .send()
        .await
        .unwrap();
    assert_eq!(subnets.subnets()[0].vpc_id(), Some(vpc_id.as_str()));
    let cm = config_map(&stand, "dev", "app-dev", "network")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["VPC"], *vpc_id);

    // Dependencies ran first: the subnet started after the VPC finished.
    let vpc = first.get(&id("network", "vpc")).unwrap();
    let subnet = first.get(&id("network", "subnet")).unwrap();
    assert!(subnet.started >= vpc.started + vpc.duration);
    // Independent branches overlapped: the namespace did not wait for AWS.
    let ns = first.get(&id("app", "ns")).unwrap();
    assert!(ns.started < vpc.started + vpc.duration, "{first:#?}");

    let (second, providers) = apply(&stand, repo.path(), "dev").await;
    assert!(second.converged());
    assert_eq!(second.count(Status::Unchanged), 7, "{second:#?}");
    assert!(!second.wrote());
    let w = writes(&providers.api_calls());
    assert!(w.is_empty(), "a converged environment got writes: {w:?}");
    assert_eq!(owned_ec2(&stand, "dev").await, live);
}

async fn a_failing_resource_skips_its_dependents_while_an_independent_branch_completes(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let repo = TempDir::new().unwrap();
    // A subnet outside its VPC's range: EC2 refuses it.
    write_repo(
        repo.path(),
        &Spec {
            subnet_cidr: "192.168.1.0/24",
            ..Spec::default()
        },
    );
    let (o, _) = apply(&stand, repo.path(), "dev").await;
    assert_eq!(status(&o, "network", "subnet"), Status::Failed, "{o:#?}");
    assert!(!o.get(&id("network", "subnet")).unwrap().reason.is_empty());
    let server = o.get(&id("network", "server")).unwrap();
    assert_eq!(server.status, Status::Skipped);
    assert!(
        server.reason.contains("network.subnet"),
        "{}",
        server.reason
    );
    for (m, n) in [
        ("network", "vpc"),
        ("network", "sg"),
        ("app", "ns"),
        ("app", "config"),
        ("app", "flags"),
    ] {
        assert_eq!(status(&o, m, n), Status::Created, "{m}.{n}");
    }
    assert!(!o.converged());
    assert!(config_map(&stand, "dev", "app-dev", "flags")
        .await
        .is_some());
    assert!(!owned_ec2(&stand, "dev").await.contains_key("instance"));
}

async fn prune_deletes_what_git_removed_and_never_an_unowned_object(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let repo = TempDir::new().unwrap();
    write_repo(repo.path(), &Spec::default());
    let (first, _) = apply(&stand, repo.path(), "dev").await;
    assert!(first.converged(), "{first:#?}");

    // Objects nobody declared: an untagged VPC and a ConfigMap without labels.
    let foreign_vpc = stand
        .ec2()
        .create_vpc()
        .cidr_block("10.9.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_string();
    let cms: Api<ConfigMap> = Api::namespaced(stand.kube("dev").await, "app-dev");
    let mut foreign = ConfigMap::default();
    foreign.metadata.name = Some("hand-made".into());
    cms.create(&PostParams::default(), &foreign).await.unwrap();

    write_repo(
        repo.path(),
        &Spec {
            servers: false,
            extra_config: false,
            ..Spec::default()
        },
    );
    let (o, _) = apply(&stand, repo.path(), "dev").await;
    assert!(o.converged(), "{o:#?}");
    for (m, n) in [("network", "sg"), ("network", "server"), ("app", "flags")] {
        assert_eq!(status(&o, m, n), Status::Deleted, "{m}.{n}");
    }
    // The instance went before the security group it used.
    let server = o.get(&id("network", "server")).unwrap();
    let sg = o.get(&id("network", "sg")).unwrap();
    assert!(sg.started >= server.started + server.duration);

    let live = owned_ec2(&stand, "dev").await;
    assert!(!live.contains_key("instance") && !live.contains_key("security_group"));
    assert!(config_map(&stand, "dev", "app-dev", "flags")
        .await
        .is_none());
    assert!(config_map(&stand, "dev", "app-dev", "hand-made")
        .await
        .is_some());
    let vpcs = stand
        .ec2()
        .describe_vpcs()
        .vpc_ids(&foreign_vpc)
        .send()
        .await
        .unwrap();
    assert_eq!(vpcs.vpcs().len(), 1, "an unowned VPC must never be pruned");
}

async fn staging_is_held_until_dev_is_converged_and_healthy_at_the_same_commit(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let repo = TempDir::new().unwrap();
    let c1 = write_repo(repo.path(), &Spec::default());

    let (code, text) = stand
        .cli(repo.path(), &["apply", "--env", "staging", "--yes"])
        .await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "environment staging is held at commit {c1}: dev has no record"
        )),
        "{text}"
    );
    assert!(
        owned_ec2(&stand, "staging").await.is_empty(),
        "nothing applied"
    );

    let (code, text) = stand
        .cli(repo.path(), &["apply", "--env", "dev", "--yes"])
        .await;
    assert_eq!(code, 0, "{text}");
    // The record lives in dev's cluster.
    let store = state::RecordStore::ConfigMap {
        client: stand.kube("dev").await,
        project: "test".into(),
    };
    let record = store.load("dev").await.unwrap().expect("dev's record");
    assert!(record.good_at(&c1), "{record:?}");

    // A new commit: dev's record is at the old one, so staging waits again.
    let c2 = write_repo(
        repo.path(),
        &Spec {
            extra_config: false,
            ..Spec::default()
        },
    );
    let (code, text) = stand
        .cli(repo.path(), &["apply", "--env", "staging", "--yes"])
        .await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("dev was last applied at"), "{text}");

    let (code, text) = stand.cli(repo.path(), &["apply", "--all", "--yes"]).await;
    assert_eq!(code, 0, "{text}");
    let staging = state::RecordStore::ConfigMap {
        client: stand.kube("staging").await,
        project: "test".into(),
    };
    assert!(staging.load("staging").await.unwrap().unwrap().good_at(&c2));
    assert!(owned_ec2(&stand, "staging").await.contains_key("instance"));

    // Losing a record is harmless: applying again recomputes it, changing nothing.
    let api: Api<ConfigMap> = Api::namespaced(stand.kube("dev").await, state::NAMESPACE);
    api.delete("tidegate-state-test.dev", &Default::default())
        .await
        .unwrap();
    let (code, text) = stand
        .cli(repo.path(), &["apply", "--env", "dev", "--yes"])
        .await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("No changes."), "{text}");
    assert!(store.load("dev").await.unwrap().unwrap().good_at(&c2));
}

async fn a_held_lock_stops_a_second_apply_with_the_holder_named(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let repo = TempDir::new().unwrap();
    write_repo(repo.path(), &Spec::default());
    let lock = EnvLock::lease(
        stand.kube("dev").await,
        "test.dev",
        "reconciler-7f9c",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let (code, text) = stand
        .cli(repo.path(), &["apply", "--env", "dev", "--yes"])
        .await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("environment test.dev is locked by reconciler-7f9c since 20")
            && text.contains("lease tidegate-system/tidegate-lock-test.dev"),
        "{text}"
    );
    assert!(owned_ec2(&stand, "dev").await.is_empty(), "nothing applied");
    lock.release().await.unwrap();
    let (code, text) = stand
        .cli(repo.path(), &["apply", "--env", "dev", "--yes"])
        .await;
    assert_eq!(code, 0, "{text}");
}

async fn sigkill_at_any_point_then_rerun_leaves_exactly_the_desired_resources(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let repo = TempDir::new().unwrap();
    write_repo(repo.path(), &Spec::default());
    let args = ["apply", "--env", "dev", "--yes", "--parallelism", "2"];
    for delay_ms in [150u64, 400, 700, 1000, 1500] {
        let mut child = stand.command(repo.path(), &args).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        // SIGKILL: no handler runs, no lock is released, nothing is recorded.
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    let (code, text) = stand.cli(repo.path(), &args).await;
    assert_eq!(code, 0, "{text}");

    let live = owned_ec2(&stand, "dev").await;
    let expect: HashMap<&str, &str> = [
        ("vpc", "network.vpc"),
        ("subnet", "network.subnet"),
        ("security_group", "network.sg"),
        ("instance", "network.server"),
    ]
    .into_iter()
    .collect();
    for (kind, resource) in &expect {
        let found = live.get(kind).cloned().unwrap_or_default();
        assert_eq!(
            found.len(),
            1,
            "{kind}: exactly one, no duplicate and no orphan: {found:?}"
        );
        assert_eq!(found[0].0, *resource);
    }
    assert_eq!(live.len(), expect.len(), "{live:?}");
    for name in ["network", "flags"] {
        assert!(config_map(&stand, "dev", "app-dev", name).await.is_some());
    }
    let owned: Api<ConfigMap> = Api::namespaced(stand.kube("dev").await, "app-dev");
    let mut names: Vec<String> = owned
        .list(&kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=tidegate"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    names.sort();
    assert_eq!(names, ["flags", "network"]);

    // And the next run changes nothing.
    let (code, text) = stand.cli(repo.path(), &args).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("No changes."), "{text}");
}

async fn rebuild_reports_rto_and_as_builds_a_coexisting_copy(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let repo = TempDir::new().unwrap();
    write_repo(repo.path(), &Spec::default());
    let (code, text) = stand
        .cli(repo.path(), &["rebuild", "--env", "dev", "--yes"])
        .await;
    assert_eq!(code, 0, "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("dev: RTO "))
        .unwrap_or_else(|| panic!("no RTO line: {text}"));
    assert!(
        line.contains("critical path") && line.contains("ratio"),
        "{line}"
    );

    let (code, stdout, stderr) = stand
        .cli_split(
            repo.path(),
            &[
                "rebuild",
                "--env",
                "dev",
                "--as",
                "dev-green",
                "--yes",
                "--json",
            ],
        )
        .await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&stdout).expect("stdout is the JSON report");
    assert_eq!(report[0]["owner"], "dev-green");
    assert!(report[0]["criticalPathMs"].as_u64().unwrap() > 0);
    assert!(report[0]["ratio"].as_f64().unwrap() >= 0.5);
    assert_eq!(report[0]["steps"].as_array().unwrap().len(), 7);

    // Blue and green coexist, apart by name and ownership.
    assert_eq!(owned_ec2(&stand, "dev").await["vpc"].len(), 1);
    assert_eq!(owned_ec2(&stand, "dev-green").await["vpc"].len(), 1);
    assert!(config_map(&stand, "dev", "app-dev", "network")
        .await
        .is_some());
    assert!(config_map(&stand, "dev", "app-dev-green", "network")
        .await
        .is_some());
}

/// The real `tidegate reconcile` binary, converging through the executor:
/// it follows a Git remote (file://), applies dev, then staging behind
/// dev's gate, against moto and kube-sim, reports both healthy at the
/// commit, and exits 0 on SIGTERM.
async fn reconcile_applies_each_environment_through_the_executor(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let repo = TempDir::new().unwrap();
    let commit = write_repo(repo.path(), &Spec::default());
    let port = Ports::free();
    let mut child = stand.reconcile(repo.path(), port).spawn().unwrap();

    if let Err(last) =
        super::stand::until_converged(port.api, &commit, 2, Duration::from_secs(60)).await
    {
        panic!("dev and staging healthy at {commit}: {last}");
    }
    for env in ["dev", "staging"] {
        let ec2 = owned_ec2(&stand, env).await;
        assert_eq!(ec2.get("instance").map(Vec::len), Some(1), "{env}: {ec2:?}");
        let ns = format!("app-{env}");
        assert!(config_map(&stand, env, &ns, "network").await.is_some());
        let record = state::RecordStore::ConfigMap {
            client: stand.kube(env).await,
            project: "test".into(),
        };
        assert!(record.load(env).await.unwrap().unwrap().good_at(&commit));
    }
    let (_, metrics) = http_get(port.probe, "/metrics").await.unwrap();
    assert!(metrics.contains("tidegate_"), "{metrics}");

    let status = crate::stand::sigterm(&mut child).await;
    assert!(status.success(), "{status:?}");
}

crate::on_both_kubes!(
    apply_converges_outputs_flow_and_a_second_apply_writes_nothing,
    a_failing_resource_skips_its_dependents_while_an_independent_branch_completes,
    prune_deletes_what_git_removed_and_never_an_unowned_object,
    staging_is_held_until_dev_is_converged_and_healthy_at_the_same_commit,
    a_held_lock_stops_a_second_apply_with_the_holder_named,
    sigkill_at_any_point_then_rerun_leaves_exactly_the_desired_resources,
    rebuild_reports_rto_and_as_builds_a_coexisting_copy,
    reconcile_applies_each_environment_through_the_executor,
    a_copy_sees_and_prunes_its_own_secrets,
);

/// A `rebuild --as` copy is observed where it lives: its Secret, in a
/// Namespace named after the copy (`${env.name}`), is seen by the next
/// rebuild (unchanged, not created again) and pruned when Git drops it.
async fn a_copy_sees_and_prunes_its_own_secrets(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    // The install step (docs/install.md): the copy's namespace made by the
    // administrator, and on the real server tidegate's Secrets grant in it
    // (deploy/rbac.yaml grants Secrets namespace by namespace only).
    let mut copy_ns = k8s_openapi::api::core::v1::Namespace::default();
    copy_ns.metadata.name = Some("app-dev-green".into());
    Api::<k8s_openapi::api::core::v1::Namespace>::all(stand.admin_kube("dev").await)
        .create(&PostParams::default(), &copy_ns)
        .await
        .unwrap();
    if let super::stand::KubeServer::Real(_) = &stand.kube {
        stand
            .real()
            .kubectl_stdin(
                &["apply", "-f", "-"],
                Some(&super::kubernetes::grant_secrets_in("app-dev-green")),
            )
            .unwrap();
    }
    let repo = TempDir::new().unwrap();
    let dir = repo.path();
    let env = "apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: dev\nspec:\n  targets:\n    kubernetes:\n      context: dev\n  modules:\n    - name: app\n      source: modules/app\n  policy:\n    defaultSeverity: warning\n";
    let ns = "    - name: config\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: config\n          namespace: app-${env.name}\n        data:\n          A: \"1\"\n";
    let secret = "    - name: creds\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: Secret\n        metadata:\n          name: creds\n          namespace: app-${env.name}\n        stringData:\n          user: app\n";
    let module = |with_secret: bool| {
        format!(
            "apiVersion: tidegate.dev/v1\nkind: Module\nmetadata:\n  name: app\nspec:\n  resources:\n{ns}{}",
            if with_secret { secret } else { "" }
        )
    };
    commit_files(
        dir,
        &[
            ("environments/dev.yaml", env.to_string()),
            ("modules/app/module.yaml", module(true)),
        ],
    );
    let rebuild = ["rebuild", "--env", "dev", "--as", "dev-green", "--yes"];
    let (code, text) = stand.cli(dir, &rebuild).await;
    assert_eq!(code, 0, "{text}");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(stand.admin_kube("dev").await, "app-dev-green");
    assert!(secrets.get_opt("creds").await.unwrap().is_some());

    let (code, text) = stand.cli(dir, &rebuild).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        !text.contains("created") && text.contains("2 unchanged"),
        "the copy's Secret is observed, not made again: {text}"
    );

    commit_files(dir, &[("modules/app/module.yaml", module(false))]);
    let (code, text) = stand
        .cli(
            dir,
            &[
                "rebuild",
                "--env",
                "dev",
                "--as",
                "dev-green",
                "--yes",
                "--allow-mass-delete",
            ],
        )
        .await;
    assert_eq!(code, 0, "{text}");
    assert!(
        secrets.get_opt("creds").await.unwrap().is_none(),
        "pruned in the copy: {text}"
    );
}
