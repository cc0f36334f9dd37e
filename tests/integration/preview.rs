//! Preview environments end to end through the real binary: EC2 on moto,
//! Kubernetes on kube-sim and on a real kube-apiserver (`sim::`/`real::`),
//! the repository a real Git repository.
//!
//! Two previews of one environment get distinct slots, so distinct CIDRs
//! and hostnames; a third beyond `preview.max` is refused with nothing
//! applied; `preview down` (after the repository changed) leaves nothing of
//! the preview in any kind of the cluster nor in EC2, while the other
//! preview and the source environment stay; a preview whose time to live
//! ended (`TIDEGATE_CLOCK_FILE`) goes with `preview sweep`; every step is
//! in the audit history.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{verbs, Discovery};
use tempfile::TempDir;
use tidegate::state::history::HISTORY_LABEL;

use super::stand::{commit_files, config_map, owned_ec2, Kube, Stand, AMI, REGION};

fn env_doc(name: &str, preview: bool) -> String {
    let block = if preview {
        "  preview:
    max: 2
    ttl: 4h
    branches: preview/*
    vars:
      cidr: \"10.2${preview.slot}.0.0/16\"
      subnet: \"10.2${preview.slot}.1.0/24\"
      host: \"${preview.name}.preview.example.com\"
"
    } else {
        ""
    };
    format!(
        "apiVersion: tidegate.dev/v1
kind: Environment
metadata:
  name: {name}
spec:
  targets:
    kubernetes:
      context: dev
    aws:
      region: {REGION}
  vars:
    cidr: 10.1.0.0/16
    subnet: 10.1.1.0/24
    host: {name}.example.com
  modules:
    - name: network
      source: modules/net
      inputs:
        cidr: ${{var.cidr}}
        subnet: ${{var.subnet}}
    - name: app
      source: modules/app
      inputs:
        vpcId: ${{module.network.vpc_id}}
        host: ${{var.host}}
  policy:
    defaultSeverity: warning
{block}"
    )
}

fn net_doc() -> String {
    format!(
        "apiVersion: tidegate.dev/v1
kind: Module
metadata:
  name: net
spec:
  inputs:
    cidr:
      type: string
    subnet:
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
    - name: subnet
      provider: aws
      type: subnet
      spec:
        vpcId: ${{resource.vpc.id}}
        cidrBlock: ${{input.subnet}}
        availabilityZone: {REGION}a
    - name: sg
      provider: aws
      type: security_group
      spec:
        vpcId: ${{resource.vpc.id}}
        groupName: ${{env.name}}-app
        description: app servers
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
    )
}

/// The app module; `flags` adds a second ConfigMap (the repository
/// "changes" by dropping it).
fn app_doc(flags: bool) -> String {
    let mut s = "apiVersion: tidegate.dev/v1
kind: Module
metadata:
  name: app
spec:
  inputs:
    vpcId:
      type: string
    host:
      type: string
  outputs:
    url:
      value: https://${input.host}/
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
          HOST: ${input.host}
"
    .to_string();
    if flags {
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

fn write_repo(dir: &Path, flags: bool) -> String {
    commit_files(
        dir,
        &[
            ("environments/dev.yaml", env_doc("dev", true)),
            ("environments/staging.yaml", env_doc("staging", false)),
            ("modules/net/module.yaml", net_doc()),
            ("modules/app/module.yaml", app_doc(flags)),
        ],
    )
}

async fn cli(stand: &Stand, repo: &Path, args: &[&str], clock: Option<&Path>) -> (i32, String) {
    let mut c = stand.command(repo, args);
    if let Some(clock) = clock {
        c.env("TIDEGATE_CLOCK_FILE", clock);
    }
    let out = c.output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The CIDR of the VPC owned by `owner`.
async fn vpc_cidr(stand: &Stand, owner: &str) -> String {
    let owned = owned_ec2(stand, owner).await;
    let id = &owned["vpc"][0].1;
    let vpcs = stand
        .ec2()
        .describe_vpcs()
        .vpc_ids(id)
        .send()
        .await
        .unwrap();
    vpcs.vpcs()[0].cidr_block().unwrap().to_string()
}

/// Every object of every listable kind in the cluster that belongs to
/// owner `owner`: its ownership label, its name or its namespace naming it
/// (its audit history, which stays by design, left out).
async fn cluster_leftovers(client: &kube::Client, owner: &str) -> Vec<String> {
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let ns = format!("app-{owner}");
    let mut found = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST) {
                continue;
            }
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            let Ok(list) = api.list(&ListParams::default()).await else {
                continue;
            };
            for o in list.items {
                let labels = o.metadata.labels.clone().unwrap_or_default();
                if labels.contains_key(HISTORY_LABEL) {
                    continue;
                }
                let name = o.metadata.name.clone().unwrap_or_default();
                let namespace = o.metadata.namespace.clone().unwrap_or_default();
                let marked = labels
                    .get(tidegate::provider::labels::ENVIRONMENT)
                    .is_some_and(|v| v == owner);
                let named = name.contains(&format!(".{owner}"))
                    || name.contains(&format!("-{owner}"))
                    || name == owner;
                // Events about a deleted object are the cluster's record,
                // not something tidegate left.
                if ar.kind == "Event" {
                    continue;
                }
                // The administrator's grants above are theirs, not tidegate's.
                let grant = name.starts_with("tidegate-delete-");
                if (marked || named || namespace == ns) && !grant {
                    found.push(format!("{} {namespace}/{name}", ar.kind));
                }
            }
        }
    }
    found.sort();
    found
}

/// [`cluster_leftovers`] until empty (a Namespace terminates for a while
/// on a real cluster), or what is left after 60 s.
async fn until_clean(client: &kube::Client, owner: &str) -> Vec<String> {
    let t0 = std::time::Instant::now();
    loop {
        let left = cluster_leftovers(client, owner).await;
        if left.is_empty() || t0.elapsed() > Duration::from_secs(60) {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn counts(owned: &BTreeMap<&'static str, Vec<(String, String)>>) -> BTreeMap<&'static str, usize> {
    owned.iter().map(|(k, v)| (*k, v.len())).collect()
}

async fn previews_are_apart_capped_deleted_completely_and_swept(kube: Kube) {
    let stand = Stand::on(kube, &["dev"]).await;
    let repo = TempDir::new().unwrap();
    write_repo(repo.path(), true);
    let client = stand.kube("dev").await;
    if kube == Kube::Real {
        // The administrator's step for namespaces beyond deploy/'s: allow
        // tidegate to delete the previews' namespaces by name
        // (docs/operations.md, "Previews").
        for ns in ["app-pr-1", "app-pr-2"] {
            let grant = super::kubernetes::grant_namespace_delete(ns);
            stand
                .real()
                .kubectl_stdin(&["apply", "-f", "-"], Some(&grant))
                .unwrap();
        }
    }

    let (code, text) = cli(
        &stand,
        repo.path(),
        &["apply", "--env", "dev", "--yes"],
        None,
    )
    .await;
    assert_eq!(code, 0, "{text}");

    // An environment without the block refuses, naming it.
    let (code, text) = cli(
        &stand,
        repo.path(),
        &[
            "preview", "up", "--from", "staging", "--name", "st-1", "--yes",
        ],
        None,
    )
    .await;
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("has no `spec.preview` block"), "{text}");
    // A name that is an environment's is refused.
    let (code, text) = cli(
        &stand,
        repo.path(),
        &[
            "preview", "up", "--from", "dev", "--name", "staging", "--yes",
        ],
        None,
    )
    .await;
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("is the name of an environment"), "{text}");

    let t0 = std::time::Instant::now();
    let (code, one) = cli(
        &stand,
        repo.path(),
        &["preview", "up", "--from", "dev", "--name", "pr-1", "--yes"],
        None,
    )
    .await;
    assert_eq!(code, 0, "{one}");
    eprintln!("preview up pr-1: {:.1}s", t0.elapsed().as_secs_f64());
    assert!(one.contains("slot 0"), "{one}");
    assert!(
        one.contains("output app.url = https://pr-1.preview.example.com/"),
        "{one}"
    );
    assert!(one.contains("output network.vpc_id = vpc-"), "{one}");
    assert!(
        one.contains("cost: 7 resources: 1 aws/instance, 1 aws/security_group, 1 aws/subnet, 1 aws/vpc, 2 kubernetes/v1/ConfigMap, 1 kubernetes/v1/Namespace"),
        "{one}"
    );
    let (code, two) = cli(
        &stand,
        repo.path(),
        &[
            "preview", "up", "--from", "dev", "--name", "pr-2", "--ttl", "1h", "--yes",
        ],
        None,
    )
    .await;
    assert_eq!(code, 0, "{two}");
    assert!(two.contains("slot 1"), "{two}");

    // Apart: their own CIDRs, hosts, names and ownership.
    assert_eq!(vpc_cidr(&stand, "pr-1").await, "10.20.0.0/16");
    assert_eq!(vpc_cidr(&stand, "pr-2").await, "10.21.0.0/16");
    assert_eq!(vpc_cidr(&stand, "dev").await, "10.1.0.0/16");
    for p in ["pr-1", "pr-2"] {
        let cm = config_map(&stand, "dev", &format!("app-{p}"), "network")
            .await
            .unwrap_or_else(|| panic!("app-{p}/network"));
        let data = cm.data.unwrap();
        assert_eq!(data["HOST"], format!("{p}.preview.example.com"));
        let want = BTreeMap::from([
            ("instance", 1),
            ("security_group", 1),
            ("subnet", 1),
            ("vpc", 1),
        ]);
        assert_eq!(counts(&owned_ec2(&stand, p).await), want, "{p}");
    }

    // A third is over the cap: refused, the live ones listed, nothing applied.
    let (code, three) = cli(
        &stand,
        repo.path(),
        &["preview", "up", "--from", "dev", "--name", "pr-3", "--yes"],
        None,
    )
    .await;
    assert_eq!(code, 1, "{three}");
    assert!(three.contains("already has 2 live preview(s)"), "{three}");
    assert!(
        three.contains("pr-1 (expires ") && three.contains("pr-2 (expires "),
        "{three}"
    );
    assert!(owned_ec2(&stand, "pr-3").await.is_empty());
    assert!(cluster_leftovers(&client, "pr-3").await.is_empty());

    // Up again renews: same slot, nothing to change.
    let (code, again) = cli(
        &stand,
        repo.path(),
        &["preview", "up", "--from", "dev", "--name", "pr-1", "--yes"],
        None,
    )
    .await;
    assert_eq!(code, 0, "{again}");
    assert!(again.contains("slot 0"), "{again}");

    let (code, list) = cli(
        &stand,
        repo.path(),
        &["preview", "list", "--format", "json"],
        None,
    )
    .await;
    assert_eq!(code, 0, "{list}");
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pr-1", "pr-2"]);
    assert_eq!(list[0]["resources"]["kubernetes/v1/ConfigMap"], 2);

    // The repository changes (flags is no longer declared): down still
    // deletes everything pr-1 owns, flags included.
    write_repo(repo.path(), false);
    // And pr-1's inventory is gone, as after a run killed between its
    // applies and its inventory write: down finds its objects by their
    // marks all the same.
    let admin = stand.admin_kube("dev").await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(admin, "default");
    cms.delete("tidegate-inventory-test.pr-1", &Default::default())
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    let (code, down) = cli(
        &stand,
        repo.path(),
        &["preview", "down", "pr-1", "--yes"],
        None,
    )
    .await;
    assert_eq!(code, 0, "{down}");
    eprintln!("preview down pr-1: {:.1}s", t0.elapsed().as_secs_f64());
    assert!(down.contains("app.flags"), "{down}");
    assert!(down.contains("preview pr-1 deleted"), "{down}");
    assert!(owned_ec2(&stand, "pr-1").await.is_empty());
    let left = until_clean(&client, "pr-1").await;
    assert!(left.is_empty(), "left of pr-1: {left:#?}");
    // The other preview and the source are untouched.
    let want = BTreeMap::from([
        ("instance", 1),
        ("security_group", 1),
        ("subnet", 1),
        ("vpc", 1),
    ]);
    assert_eq!(counts(&owned_ec2(&stand, "pr-2").await), want);
    assert_eq!(counts(&owned_ec2(&stand, "dev").await), want);
    assert!(config_map(&stand, "dev", "app-pr-2", "flags")
        .await
        .is_some());
    // The listing finds a live preview's objects (so its emptiness above
    // means something): its Namespace, its ConfigMaps, its record and
    // inventory.
    let live = cluster_leftovers(&client, "pr-2").await;
    for want in [
        "Namespace /app-pr-2",
        "ConfigMap app-pr-2/network",
        "ConfigMap app-pr-2/flags",
        "ConfigMap tidegate-system/tidegate-state-test.pr-2",
        "ConfigMap default/tidegate-inventory-test.pr-2",
    ] {
        assert!(live.iter().any(|l| l == want), "no {want} in {live:#?}");
    }
    assert!(config_map(&stand, "dev", "app-dev", "flags")
        .await
        .is_some());

    // pr-2 lives 1 h: at +30 min the sweep leaves it, at +2 h it goes.
    let clock = stand.dir.path().join("clock");
    let at = |d: i64| {
        let t = jiff::Timestamp::now() + jiff::SignedDuration::from_mins(d);
        std::fs::write(&clock, t.to_string()).unwrap();
    };
    at(30);
    let (code, text) = cli(
        &stand,
        repo.path(),
        &["preview", "sweep", "--yes"],
        Some(&clock),
    )
    .await;
    assert_eq!(code, 0, "{text}");
    assert!(owned_ec2(&stand, "pr-2").await.contains_key("vpc"));
    at(120);
    let (code, text) = cli(
        &stand,
        repo.path(),
        &["preview", "sweep", "--yes"],
        Some(&clock),
    )
    .await;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("1 expired preview(s) deleted"), "{text}");
    assert!(owned_ec2(&stand, "pr-2").await.is_empty());
    let left = until_clean(&client, "pr-2").await;
    assert!(left.is_empty(), "left of pr-2: {left:#?}");
    assert_eq!(counts(&owned_ec2(&stand, "dev").await), want);

    let (code, text) = cli(&stand, repo.path(), &["preview", "list"], None).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("no live previews"), "{text}");

    // The history of dev tells the story; pr-1's own history stays.
    let (code, text) = cli(&stand, repo.path(), &["history", "dev"], None).await;
    assert_eq!(code, 0, "{text}");
    for (event, outcome, what) in [
        ("preview-up", "succeeded", "preview pr-1 (slot 0"),
        ("preview-up", "refused", "already has 2 live preview(s)"),
        ("preview-down", "succeeded", "preview pr-1 (slot 0)"),
        ("preview-expire", "succeeded", "preview pr-2 (slot 1)"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains(event) && l.contains(outcome) && l.contains(what)),
            "no {event} {outcome} {what}: {text}"
        );
    }
    let (code, text) = cli(&stand, repo.path(), &["history", "pr-1"], None).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("preview-down"), "{text}");
}

/// The reconciler's preview timer: it lists the live previews with their
/// expiry on `/api/v1/status` and the status page, and deletes one whose
/// time to live ended (audited as the reconciler's `preview-expire`).
async fn the_reconciler_timer_lists_previews_and_deletes_expired_ones(kube: Kube) {
    let stand = Stand::on(kube, &["dev"]).await;
    let repo = TempDir::new().unwrap();
    let commit = write_repo(repo.path(), true);
    let client = stand.kube("dev").await;
    if kube == Kube::Real {
        let grant = super::kubernetes::grant_namespace_delete("app-pr-9");
        stand
            .real()
            .kubectl_stdin(&["apply", "-f", "-"], Some(&grant))
            .unwrap();
    }
    let clock = stand.dir.path().join("clock");
    std::fs::write(&clock, jiff::Timestamp::now().to_string()).unwrap();
    let (code, text) = cli(
        &stand,
        repo.path(),
        &[
            "preview", "up", "--from", "dev", "--name", "pr-9", "--ttl", "1h", "--yes",
        ],
        Some(&clock),
    )
    .await;
    assert_eq!(code, 0, "{text}");

    let ports = super::stand::Ports::free();
    let mut reconcile = stand.reconcile(repo.path(), ports);
    reconcile
        .args(["--preview-sweep-interval", "1s"])
        .env("TIDEGATE_CLOCK_FILE", &clock);
    let mut child = reconcile.spawn().unwrap();
    if let Err(last) =
        super::stand::until_converged(ports.api, &commit, 1, Duration::from_secs(60)).await
    {
        panic!("dev healthy at {commit}: {last}");
    }
    let status = |want: usize| async move {
        let t0 = std::time::Instant::now();
        loop {
            let (_, body) = super::stand::http_get(ports.api, "/api/v1/status")
                .await
                .unwrap();
            let s: serde_json::Value = serde_json::from_str(&body).unwrap();
            let n = s["previews"].as_array().map_or(0, Vec::len);
            if n == want || t0.elapsed() > Duration::from_secs(30) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let s = status(1).await;
    assert_eq!(s["previews"][0]["name"], "pr-9", "{s}");
    assert_eq!(s["previews"][0]["from"], "dev", "{s}");
    assert!(s["previews"][0]["expires"].as_str().is_some(), "{s}");
    let (_, page) = super::stand::http_get(ports.api, "/").await.unwrap();
    assert!(
        page.contains("<h2>Previews</h2>") && page.contains("pr-9"),
        "{page}"
    );

    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2);
    std::fs::write(&clock, later.to_string()).unwrap();
    let s = status(0).await;
    assert_eq!(s["previews"], serde_json::json!([]), "{s}");
    assert!(owned_ec2(&stand, "pr-9").await.is_empty());
    let left = until_clean(&client, "pr-9").await;
    assert!(left.is_empty(), "left of pr-9: {left:#?}");
    let want = BTreeMap::from([
        ("instance", 1),
        ("security_group", 1),
        ("subnet", 1),
        ("vpc", 1),
    ]);
    assert_eq!(counts(&owned_ec2(&stand, "dev").await), want);
    let status = super::stand::sigterm(&mut child).await;
    assert!(status.success(), "{status:?}");

    let (code, text) = cli(
        &stand,
        repo.path(),
        &["history", "dev", "--format", "json"],
        None,
    )
    .await;
    assert_eq!(code, 0, "{text}");
    let entries: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        entries
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "preview-expire"
                && e["outcome"] == "succeeded"
                && e["subject"]["kind"] == "reconciler"),
        "{text}"
    );
}

/// `preview.branches`: the reconciler keeps a preview for each branch of
/// its remote matching the pattern, named after the branch's last segment,
/// and deletes it completely when the branch is deleted.
async fn the_reconciler_keeps_a_preview_per_branch_until_the_branch_goes(kube: Kube) {
    let stand = Stand::on(kube, &["dev"]).await;
    let repo = TempDir::new().unwrap();
    let commit = write_repo(repo.path(), true);
    let client = stand.kube("dev").await;
    if kube == Kube::Real {
        let grant = super::kubernetes::grant_namespace_delete("app-login");
        stand
            .real()
            .kubectl_stdin(&["apply", "-f", "-"], Some(&grant))
            .unwrap();
    }
    crate::support::git(repo.path(), &["branch", "preview/Login"]);
    let ports = super::stand::Ports::free();
    let mut reconcile = stand.reconcile(repo.path(), ports);
    reconcile.args(["--preview-sweep-interval", "1s"]);
    let mut child = reconcile.spawn().unwrap();
    if let Err(last) =
        super::stand::until_converged(ports.api, &commit, 1, Duration::from_secs(60)).await
    {
        panic!("dev healthy at {commit}: {last}");
    }
    let previews = |want: usize| async move {
        let t0 = std::time::Instant::now();
        loop {
            let (_, body) = super::stand::http_get(ports.api, "/api/v1/status")
                .await
                .unwrap();
            let s: serde_json::Value = serde_json::from_str(&body).unwrap();
            let p = s["previews"].clone();
            let done = p.as_array().map_or(0, Vec::len) == want
                && (want == 0 || p[0]["resources"].as_object().is_some_and(|r| !r.is_empty()));
            if done || t0.elapsed() > Duration::from_secs(60) {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let p = previews(1).await;
    assert_eq!(p[0]["name"], "login", "{p}");
    assert_eq!(p[0]["branch"], "refs/heads/preview/Login", "{p}");
    assert_eq!(p[0]["commit"], commit.as_str(), "{p}");
    assert_eq!(vpc_cidr(&stand, "login").await, "10.20.0.0/16");
    let cm = config_map(&stand, "dev", "app-login", "network")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["HOST"], "login.preview.example.com");

    // The branch moves: the preview is built again at the new commit.
    let git = |args: &[&str]| crate::support::git(repo.path(), args);
    git(&["checkout", "-q", "preview/Login"]);
    git(&["commit", "-q", "--allow-empty", "-m", "move the branch"]);
    let moved = git(&["rev-parse", "HEAD"]);
    git(&["checkout", "-q", "main"]);
    let t0 = std::time::Instant::now();
    loop {
        let p = previews(1).await;
        if p[0]["commit"] == moved.as_str() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "not moved to {moved}: {p}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(vpc_cidr(&stand, "login").await, "10.20.0.0/16");

    crate::support::git(repo.path(), &["branch", "-D", "preview/Login"]);
    let p = previews(0).await;
    assert_eq!(p, serde_json::json!([]));
    assert!(owned_ec2(&stand, "login").await.is_empty());
    let left = until_clean(&client, "login").await;
    assert!(left.is_empty(), "left of login: {left:#?}");
    let want = BTreeMap::from([
        ("instance", 1),
        ("security_group", 1),
        ("subnet", 1),
        ("vpc", 1),
    ]);
    assert_eq!(counts(&owned_ec2(&stand, "dev").await), want);
    let status = super::stand::sigterm(&mut child).await;
    assert!(status.success(), "{status:?}");

    let (code, text) = cli(&stand, repo.path(), &["history", "dev"], None).await;
    assert_eq!(code, 0, "{text}");
    for (event, what) in [
        ("preview-up", "branch refs/heads/preview/Login"),
        ("preview-down", "preview login"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains(event) && l.contains("succeeded") && l.contains(what)),
            "no {event} {what}: {text}"
        );
    }
}

/// A bad preview block is refused by `tidegate validate` (and so by every
/// command) with each problem at its file:line and nothing applied.
#[test]
fn a_bad_preview_block_is_an_error_at_its_line() {
    let repo = TempDir::new().unwrap();
    let bad = env_doc("dev", false)
        + "  preview:\n    max: 0\n    ttl: a while\n    vars:\n      region: x\n      cidr: \"${var.subnet}\"\n";
    commit_files(
        repo.path(),
        &[
            ("environments/dev.yaml", bad),
            ("modules/net/module.yaml", net_doc()),
            ("modules/app/module.yaml", app_doc(false)),
        ],
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["validate", "--repo"])
        .arg(repo.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for want in [
        "environments/dev.yaml:29:10: error: `preview.max` is 0",
        "environments/dev.yaml:30:10: error: `preview.ttl` is `a while`, which is not a duration",
        "environments/dev.yaml:32:7: error: `preview.vars` overrides `region`, which is not a variable of this environment",
        "environments/dev.yaml:33:13: error: `preview.vars.cidr` uses `${var.subnet}`",
    ] {
        assert!(text.contains(want), "no `{want}` in:\n{text}");
    }
}

crate::on_both_kubes!(
    previews_are_apart_capped_deleted_completely_and_swept,
    the_reconciler_timer_lists_previews_and_deletes_expired_ones,
    the_reconciler_keeps_a_preview_per_branch_until_the_branch_goes,
);
