//! The AWS provider against the real moto EC2 server: the bundled network
//! and app-server resources through create, no-op re-plan, update,
//! replace, delete and drift, the cost of observe, a NAT gateway's
//! lifecycle, and (through a fault-injecting proxy) throttling and creates
//! whose answer is lost.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_sdk_ec2::config::{Credentials, Region};
use tidegate::provider::aws::{AwsProvider, Options, RetryPolicy};
use tidegate::provider::{Action, Desired, Live, Provider, ResourceId, Spec};
use tidegate::sensitive::Sensitive;
use tidegate::value::{Map, Value};

use super::support_moto::{FaultProxy, MotoServer};

const AMI: &str = "ami-1e749f67";
const SECRET: &str = "hunter2-db-password";

/// The EC2 provider of environment `env` against moto at `endpoint`, with
/// test-sized retries (shared by the plan tests).
/// The owner identity of the provider tests: project `test`.
pub fn owner(env: &str) -> tidegate::provider::Owner {
    tidegate::provider::Owner {
        project: "test".into(),
        environment: env.into(),
    }
}

pub fn provider(env: &str, endpoint: &str) -> AwsProvider {
    // Generous per attempt: moto on a loaded 2-core CI machine can take
    // seconds for its first EC2 call. The hung-endpoint test uses 2 s.
    provider_with_timeout(env, endpoint, Duration::from_secs(20))
}

fn provider_with_timeout(env: &str, endpoint: &str, attempt_timeout: Duration) -> AwsProvider {
    let conf = aws_sdk_ec2::config::Builder::new()
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"));
    let retry = RetryPolicy {
        sdk_attempts: 3,
        attempts: 6,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(100),
        settle: Duration::from_secs(20),
        poll: Duration::from_millis(50),
        attempt_timeout,
    };
    AwsProvider::with_config(
        owner(env),
        conf,
        Options {
            retry,
            ..Options::default()
        },
    )
}

/// One resource of the test's "Git": kind, id and a body template whose
/// `${module.name.attr}` strings are resolved against applied resources.
#[derive(Clone)]
pub(crate) struct Res {
    pub kind: &'static str,
    pub id: ResourceId,
    pub body: Value,
}

/// The id `<module>.<name>`.
pub(crate) fn id(module: &str, name: &str) -> ResourceId {
    ResourceId {
        module: module.into(),
        name: name.into(),
    }
}

pub(crate) fn res(kind: &'static str, module: &str, name: &str, body: serde_json::Value) -> Res {
    Res {
        kind,
        id: ResourceId {
            module: module.into(),
            name: name.into(),
        },
        body: Value::from_json(body),
    }
}

pub(crate) fn network(subnet_a_cidr: &str) -> Vec<Res> {
    network_in("10.0", subnet_a_cidr)
}

/// The network module with the VPC at `<prefix>.0.0/16`.
pub(crate) fn network_in(prefix: &str, subnet_a_cidr: &str) -> Vec<Res> {
    let vpc_cidr = format!("{prefix}.0.0/16");
    let subnet_b_cidr = format!("{prefix}.2.0/24");
    let tags = serde_json::json!({"environment": "dev", "owner": "platform", "product": "shop"});
    vec![
        res(
            "vpc",
            "network",
            "vpc",
            serde_json::json!({"cidrBlock": vpc_cidr, "enableDnsHostnames": true, "tags": tags}),
        ),
        res(
            "internet_gateway",
            "network",
            "igw",
            serde_json::json!({"vpcId": "${network.vpc.id}", "tags": tags}),
        ),
        res(
            "subnet",
            "network",
            "public_a",
            serde_json::json!({"vpcId": "${network.vpc.id}", "cidrBlock": subnet_a_cidr,
            "availabilityZone": "us-east-1a", "mapPublicIpOnLaunch": true, "tags": tags}),
        ),
        res(
            "subnet",
            "network",
            "public_b",
            serde_json::json!({"vpcId": "${network.vpc.id}", "cidrBlock": subnet_b_cidr,
            "availabilityZone": "us-east-1b", "tags": tags}),
        ),
        res(
            "route_table",
            "network",
            "public",
            serde_json::json!({"vpcId": "${network.vpc.id}",
            "routes": [{"destinationCidrBlock": "0.0.0.0/0", "gatewayId": "${network.igw.id}"}],
            "subnetIds": ["${network.public_a.id}", "${network.public_b.id}"], "tags": tags}),
        ),
        res(
            "security_group",
            "network",
            "web",
            serde_json::json!({"vpcId": "${network.vpc.id}", "groupName": "web",
            "description": "web tier",
            "ingress": [{"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["0.0.0.0/0"], "description": "https"},
                        {"protocol": "tcp", "fromPort": 80, "toPort": 80, "cidrBlocks": ["0.0.0.0/0"]}],
            "egress": [{"protocol": "-1", "cidrBlocks": ["0.0.0.0/0"]}], "tags": tags}),
        ),
        res(
            "security_group",
            "network",
            "app",
            serde_json::json!({"vpcId": "${network.vpc.id}", "groupName": "app",
            "description": "app tier",
            "ingress": [{"protocol": "tcp", "fromPort": 8080, "toPort": 8080, "sourceSecurityGroupIds": ["${network.web.id}"]}],
            "tags": tags}),
        ),
    ]
}

fn app_servers(count: usize) -> Vec<Res> {
    let tags = serde_json::json!({"environment": "dev", "owner": "platform", "product": "shop"});
    let mut out = vec![res(
        "key_pair",
        "app",
        "deploy",
        serde_json::json!({"keyName": "dev-deploy",
        "publicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHr0kR2lJ3Jw2kZ1m3rYbq9Qm0yqYp4wJ6rK3zQx0x8E deploy@example", "tags": tags}),
    )];
    for i in 0..count {
        let mut r = res(
            "instance",
            "app",
            &format!("server{i}"),
            serde_json::json!({"ami": AMI, "instanceType": "t3.micro",
            "subnetId": "${network.public_a.id}", "securityGroupIds": ["${network.app.id}", "${network.web.id}"],
            "keyName": "${app.deploy.keyName}", "metadata": {"httpTokens": "required", "httpPutResponseHopLimit": 1},
            "rootVolume": {"sizeGiB": 20, "encrypted": true, "volumeType": "gp3"}, "tags": tags}),
        );
        if i == 0 {
            if let Value::Map(m) = &mut r.body {
                let script = format!("#!/bin/sh\necho DB_PASSWORD={SECRET} > /etc/app.env\n");
                m.insert(
                    "userData".into(),
                    Value::Sensitive(Sensitive::from_string(script)),
                );
            }
        }
        out.push(r);
    }
    out.push(res(
        "eip",
        "app",
        "ip",
        serde_json::json!({"instanceId": "${app.server0.id}", "tags": tags}),
    ));
    out
}

/// Replaces `${module.name.attr}` strings with applied attributes, or
/// unknowns where the resource is not applied yet.
fn resolve(v: &Value, lives: &BTreeMap<ResourceId, Live>) -> Value {
    match v {
        Value::String(s) if s.starts_with("${") => {
            let path = &s[2..s.len() - 1];
            let mut parts = path.splitn(3, '.');
            let (m, n, a) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let id = ResourceId {
                module: m.into(),
                name: n.into(),
            };
            lives
                .get(&id)
                .and_then(|l| l.attributes.get(a).cloned())
                .unwrap_or_else(|| Value::Unknown(path.into()))
        }
        Value::List(l) => Value::List(l.iter().map(|x| resolve(x, lives)).collect()),
        Value::Map(m) => Value::Map(
            m.iter()
                .map(|(k, x)| (k.clone(), resolve(x, lives)))
                .collect::<Map>(),
        ),
        other => other.clone(),
    }
}

fn desired(r: &Res, lives: &BTreeMap<ResourceId, Live>) -> Desired {
    Desired {
        id: r.id.clone(),
        kind: r.kind.into(),
        body: resolve(&r.body, lives),
        origin: Default::default(),
    }
}

pub(crate) async fn observe(p: &AwsProvider) -> BTreeMap<ResourceId, Live> {
    let lives = p.observe(&[]).await.expect("observe");
    lives.into_iter().map(|l| (l.id.clone(), l)).collect()
}

/// Plans every resource in order against a fresh observe, without applying.
pub(crate) async fn plan_all(p: &AwsProvider, git: &[Res]) -> Vec<(String, Action)> {
    let lives = observe(p).await;
    let mut out = Vec::new();
    for r in git {
        let d = desired(r, &lives);
        let c = p.plan(&d, lives.get(&r.id)).await.expect("plan");
        out.push((r.id.to_string(), c.action));
    }
    out
}

/// How many calls of `op` one observe costs, and what it saw.
pub(crate) async fn observe_cost(p: &AwsProvider, op: &str) -> (u64, BTreeMap<ResourceId, Live>) {
    let before = p.api_calls().get(op).copied().unwrap_or(0);
    let lives = observe(p).await;
    (p.api_calls().get(op).copied().unwrap_or(0) - before, lives)
}

/// Another environment of the same account owns none of what a test made.
pub(crate) async fn nothing_seen_by_another_environment(endpoint: &str) {
    let other = provider("other", endpoint).observe(&[]).await.unwrap();
    assert!(other.is_empty(), "another environment sees {other:?}");
}

pub(crate) fn changes(plan: &[(String, Action)]) -> Vec<&(String, Action)> {
    plan.iter().filter(|(_, a)| *a != Action::NoOp).collect()
}

/// The engine in miniature: apply in order (references resolved from what
/// was applied), then prune what Git no longer declares, newest type first.
pub(crate) async fn converge(p: &AwsProvider, git: &[Res]) -> BTreeMap<ResourceId, Live> {
    let mut lives = observe(p).await;
    for r in git {
        let d = desired(r, &lives);
        let change = p.plan(&d, lives.get(&r.id)).await.expect("plan");
        if change.action != Action::NoOp {
            let live = p
                .apply(&d, lives.get(&r.id))
                .await
                .unwrap_or_else(|e| panic!("apply {}: {e}", r.id));
            lives.insert(r.id.clone(), live);
        }
    }
    // Replacements may leave deposed resources behind: observe again.
    let mut lives = observe(p).await;
    let declared: Vec<&ResourceId> = git.iter().map(|r| &r.id).collect();
    // Prune in the provider's own delete waves (users before what they use).
    let mut order: Vec<&str> = tidegate::provider::aws::TYPES.to_vec();
    order.sort_by_key(|k| tidegate::provider::aws::spec::AwsSpec.delete_wave(k));
    for kind in order {
        let doomed: Vec<Live> = lives
            .values()
            .filter(|l| l.kind == kind && !declared.contains(&&l.id))
            .cloned()
            .collect();
        for l in doomed {
            p.delete(&l)
                .await
                .unwrap_or_else(|e| panic!("delete {}: {e}", l.id));
            lives.remove(&l.id);
        }
    }
    lives
}

pub(crate) fn count_kind(lives: &BTreeMap<ResourceId, Live>, kind: &str) -> usize {
    lives.values().filter(|l| l.kind == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_of_the_network_and_app_servers() {
    let moto = MotoServer::start();
    let p = provider("dev", &moto.endpoint);
    let mut git: Vec<Res> = network("10.0.1.0/24")
        .into_iter()
        .chain(app_servers(2))
        .collect();

    // Create: the first plan creates everything, with later ids unknown.
    let first = plan_all(&p, &git).await;
    assert!(first.iter().all(|(_, a)| *a == Action::Create), "{first:?}");
    let lives = converge(&p, &git).await;
    assert_eq!(lives.len(), git.len());
    let server0 = &lives[&ResourceId {
        module: "app".into(),
        name: "server0".into(),
    }];
    assert!(server0.attributes["privateIp"]
        .as_str()
        .is_some_and(|ip| ip.starts_with("10.0.1.")));
    assert!(
        !format!("{lives:?}").contains(SECRET),
        "a secret reached a Live"
    );

    // Health.
    for l in lives.values() {
        assert_eq!(
            p.health(l).await.unwrap(),
            tidegate::provider::Health::Healthy,
            "{}",
            l.id
        );
    }

    // Re-plan: nothing to do.
    let again = plan_all(&p, &git).await;
    assert!(
        changes(&again).is_empty(),
        "re-plan after apply: {:?}",
        changes(&again)
    );

    // Secret user data leaves no fingerprint in a tag (issue 18).
    let tags = p
        .client()
        .describe_tags()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("resource-id")
                .values(server0.external_id.clone())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(
        !tags
            .tags()
            .iter()
            .any(|t| t.key() == Some("tidegate:user-data-sha256")),
        "{:?}",
        tags.tags()
    );

    // Update: a tag on the VPC.
    if let Value::Map(m) = &mut git[0].body {
        m.insert(
            "tags".into(),
            Value::from_json(
                serde_json::json!({"environment": "dev", "owner": "networking", "product": "shop"}),
            ),
        );
    }
    let plan = plan_all(&p, &git).await;
    assert_eq!(
        changes(&plan),
        vec![&("network.vpc".to_string(), Action::Update)]
    );
    converge(&p, &git).await;
    assert!(changes(&plan_all(&p, &git).await).is_empty());

    // Update in place: a security group rule, an instance type, IMDS options.
    if let Value::Map(m) = &mut git[5].body {
        m.insert("ingress".into(), Value::from_json(serde_json::json!([
            {"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["0.0.0.0/0"], "description": "https"}])));
    }
    if let Value::Map(m) = &mut git[8].body {
        m.insert("instanceType".into(), Value::String("t3.small".into()));
    }
    if let Value::Map(m) = &mut git[9].body {
        m.insert(
            "metadata".into(),
            Value::from_json(
                serde_json::json!({"httpTokens": "required", "httpPutResponseHopLimit": 2}),
            ),
        );
    }
    let plan = plan_all(&p, &git).await;
    assert_eq!(
        changes(&plan),
        vec![
            &("network.web".to_string(), Action::Update),
            &("app.server0".to_string(), Action::Update),
            &("app.server1".to_string(), Action::Update)
        ]
    );
    let lives = converge(&p, &git).await;
    assert!(changes(&plan_all(&p, &git).await).is_empty());
    let web = &lives[&ResourceId {
        module: "network".into(),
        name: "web".into(),
    }];
    let server = |n: &str| {
        lives[&ResourceId {
            module: "app".into(),
            name: n.into(),
        }]
            .body
            .clone()
    };
    assert_eq!(
        server("server0").get_path("instanceType"),
        Some(&Value::String("t3.small".into()))
    );
    assert_eq!(
        server("server1").get_path("metadata.httpPutResponseHopLimit"),
        Some(&Value::Int(2))
    );
    assert_eq!(
        web.body.get_path("ingress").map(|v| match v {
            Value::List(l) => l.len(),
            _ => 0,
        }),
        Some(1)
    );

    // Replace: a subnet CIDR. The plan names the field; the instances in
    // it follow (their subnet id is unknown until the new subnet exists).
    let old_subnet = lives[&ResourceId {
        module: "network".into(),
        name: "public_a".into(),
    }]
        .external_id
        .clone();
    git[2] = network("10.0.3.0/24")[2].clone();
    let plan = plan_all(&p, &git).await;
    let subnet_change = plan
        .iter()
        .find(|(id, _)| id == "network.public_a")
        .unwrap();
    assert_eq!(
        subnet_change.1,
        Action::Replace {
            reasons: vec!["cidrBlock changes from 10.0.1.0/24 to 10.0.3.0/24 (immutable)".into()]
        }
    );
    let lives = converge(&p, &git).await;
    let new_subnet = &lives[&ResourceId {
        module: "network".into(),
        name: "public_a".into(),
    }];
    assert_ne!(new_subnet.external_id, old_subnet);
    assert_eq!(
        new_subnet.body.get_path("cidrBlock"),
        Some(&Value::String("10.0.3.0/24".into()))
    );
    let observed = observe(&p).await;
    assert!(
        !observed.keys().any(|id| id.name.contains("~deposed~")),
        "deposed left behind: {:?}",
        observed.keys()
    );
    assert!(
        changes(&plan_all(&p, &git).await).is_empty(),
        "{:?}",
        plan_all(&p, &git).await
    );
    assert_eq!(count_kind(&observed, "instance"), 2);
    assert_eq!(count_kind(&observed, "subnet"), 2);

    // Delete: the elastic IP leaves Git.
    git.retain(|r| r.kind != "eip");
    let lives = converge(&p, &git).await;
    assert_eq!(count_kind(&lives, "eip"), 0);
    assert_eq!(count_kind(&observe(&p).await, "eip"), 0);

    // Drift: an instance terminated out of band is planned as a create.
    let server1 = lives[&ResourceId {
        module: "app".into(),
        name: "server1".into(),
    }]
        .external_id
        .clone();
    p.client()
        .terminate_instances()
        .instance_ids(&server1)
        .send()
        .await
        .unwrap();
    let plan = plan_all(&p, &git).await;
    assert_eq!(
        changes(&plan),
        vec![&("app.server1".to_string(), Action::Create)]
    );
    converge(&p, &git).await;
    assert!(changes(&plan_all(&p, &git).await).is_empty());

    // Teardown: Git empty, everything owned is gone; deleting again is fine.
    let before = observe(&p).await;
    let after = converge(&p, &[]).await;
    assert!(after.is_empty(), "{:?}", after.keys());
    let left = observe(&p).await;
    assert!(
        left.is_empty(),
        "{:?}",
        left.values()
            .map(|l| (&l.id, &l.external_id))
            .collect::<Vec<_>>()
    );
    for l in before.values() {
        p.delete(l).await.expect("deleting what is gone succeeds");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_costs_the_same_for_one_and_twenty_instances() {
    let moto = MotoServer::start();
    let p = provider("bench", &moto.endpoint);
    let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();

    let git: Vec<Res> = network("10.0.1.0/24")
        .into_iter()
        .chain(app_servers(1))
        .collect();
    converge(&p, &git).await;
    let before = total(&p.api_calls());
    let lives = p.observe(&[]).await.unwrap();
    let one = total(&p.api_calls()) - before;
    assert_eq!(lives.iter().filter(|l| l.kind == "instance").count(), 1);

    let git: Vec<Res> = network("10.0.1.0/24")
        .into_iter()
        .chain(app_servers(20))
        .collect();
    converge(&p, &git).await;
    let before = total(&p.api_calls());
    let lives = p.observe(&[]).await.unwrap();
    let twenty = total(&p.api_calls()) - before;
    assert_eq!(lives.iter().filter(|l| l.kind == "instance").count(), 20);
    println!(
        "observe API calls: {one} with 1 instance, {twenty} with 20 instances; totals {:?}",
        p.api_calls()
    );
    assert_eq!(one, twenty);
    // One Describe sequence per type, plus the instances' root volumes;
    // the second reads of `dhcp_options` and `launch_template` (the VPCs
    // of the sets, the default versions) are made only when they list
    // something, and this environment has neither.
    assert_eq!(
        one,
        tidegate::provider::aws::TYPES.len() as u64 + 2,
        "one Describe per type, plus DescribeVolumes (the instances' root volumes) and DescribeSecurityGroupRules (the rules of the groups that security_group_rule resources own)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_with_backoff() {
    let moto = MotoServer::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let p = provider("throttled", &proxy.endpoint);
    // More throttled answers than the SDK's own attempts for one request:
    // tidegate's retry around the call sequence must carry it through.
    proxy.faults.throttle.store(5, Ordering::SeqCst);
    let git = network("10.0.1.0/24");
    let lives = converge(&p, &git[..1]).await;
    assert_eq!(lives.len(), 1);
    assert_eq!(proxy.faults.throttled.load(Ordering::SeqCst), 5);
    assert_eq!(proxy.faults.forwarded("CreateVpc"), 1);
    let calls = p.api_calls();
    assert!(
        calls.values().sum::<u64>() as usize >= 5 + proxy.faults.forwarded.lock().unwrap().len()
    );
    // Each throttled answer was followed by exactly one retry, by the SDK
    // (counted by the interceptor) or by tidegate around it.
    let retries = p.api_retries();
    assert_eq!(retries.get("throttled"), Some(&5), "{retries:?}");
    assert_eq!(retries.len(), 1, "{retries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_endpoint_times_out_and_is_retried() {
    let moto = MotoServer::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let p = provider_with_timeout("hung", &proxy.endpoint, Duration::from_secs(2));
    let git = network("10.0.1.0/24");
    // The first observe request and later the CreateVpc hang past the
    // 2 s attempt timeout and never reach moto; the read is sent again,
    // the create is searched for by tag first, then sent again.
    proxy.faults.stall.store(1, Ordering::SeqCst);
    assert!(p.observe(&[]).await.unwrap().is_empty());
    let d = desired(&git[0], &BTreeMap::new());
    proxy.faults.stall.store(1, Ordering::SeqCst);
    let searches = proxy.faults.forwarded("DescribeVpcs");
    let t = std::time::Instant::now();
    let vpc = p.apply(&d, None).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "the attempt timed out"
    );
    assert_eq!(
        proxy.faults.forwarded("CreateVpc"),
        1,
        "the stalled create never reached moto; the resend did"
    );
    assert!(proxy.faults.forwarded("DescribeVpcs") > searches);
    assert_eq!(observe(&p).await.len(), 1);
    assert!(vpc.external_id.starts_with("vpc-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_run_instances_answer_makes_no_duplicate() {
    let moto = MotoServer::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let p = provider("lossy", &proxy.endpoint);
    let git: Vec<Res> = network("10.0.1.0/24")
        .into_iter()
        .chain(app_servers(1))
        .collect();
    let git: Vec<Res> = git.into_iter().filter(|r| r.kind != "eip").collect();
    *proxy.faults.lose_answer.lock().unwrap() = Some(("RunInstances".into(), 1));
    let lives = converge(&p, &git).await;
    assert_eq!(count_kind(&lives, "instance"), 1);
    // moto created the instance whose answer was lost; tidegate found it by
    // its tags instead of sending RunInstances again.
    assert_eq!(proxy.faults.forwarded("RunInstances"), 1);
    assert_eq!(
        *proxy.faults.lose_answer.lock().unwrap(),
        Some(("RunInstances".to_string(), 0)),
        "the answer was really lost"
    );
    let all = p
        .client()
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:tidegate:resource")
                .values("app.server0")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let n: usize = all.reservations().iter().map(|r| r.instances().len()).sum();
    assert_eq!(n, 1, "exactly one instance for app.server0");
    assert!(changes(&plan_all(&p, &git).await).is_empty());

    // The same for a create without ClientToken (a VPC): lose the answer.
    *proxy.faults.lose_answer.lock().unwrap() = Some(("CreateVpc".into(), 1));
    let p2 = provider("lossy2", &proxy.endpoint);
    let lives = converge(&p2, &git[..1]).await;
    assert_eq!(lives.len(), 1);
    assert_eq!(
        proxy.faults.forwarded("CreateVpc"),
        2,
        "one per environment"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_vpc_creates_before_destroying_and_prunes_the_deposed_one() {
    let moto = MotoServer::start();
    let p = provider("bluegreen", &moto.endpoint);
    let git: Vec<Res> = network_in("10.0", "10.0.1.0/24")
        .into_iter()
        .chain(app_servers(1))
        .collect();
    let lives = converge(&p, &git).await;
    let vpc_id = ResourceId {
        module: "network".into(),
        name: "vpc".into(),
    };
    let old_vpc = lives[&vpc_id].external_id.clone();

    let git: Vec<Res> = network_in("10.1", "10.1.1.0/24")
        .into_iter()
        .chain(app_servers(1))
        .collect();
    let plan = plan_all(&p, &git).await;
    assert_eq!(
        plan[0].1,
        Action::Replace {
            reasons: vec!["cidrBlock changes from 10.0.0.0/16 to 10.1.0.0/16 (immutable)".into()]
        }
    );

    // The new VPC is made first; the old one still has subnets, so EC2
    // refuses to delete it and it stays, deposed, for the prune.
    let observed = observe(&p).await;
    let d = desired(&git[0], &observed);
    let new_vpc = p.apply(&d, observed.get(&vpc_id)).await.unwrap();
    assert_ne!(new_vpc.external_id, old_vpc);
    let observed = observe(&p).await;
    let deposed: Vec<&Live> = observed
        .values()
        .filter(|l| l.id.name.contains("~deposed~"))
        .collect();
    assert_eq!(deposed.len(), 1, "{:?}", observed.keys());
    assert_eq!(deposed[0].external_id, old_vpc);
    assert_eq!(observed[&vpc_id].external_id, new_vpc.external_id);

    // The rest follows, the deposed resources are pruned, nothing is left over.
    let lives = converge(&p, &git).await;
    assert!(
        !lives.keys().any(|id| id.name.contains("~deposed~")),
        "{:?}",
        lives.keys()
    );
    assert_eq!(lives.len(), git.len());
    assert!(changes(&plan_all(&p, &git).await).is_empty());
    let vpcs = p
        .client()
        .describe_vpcs()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:tidegate:environment")
                .values("bluegreen")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(vpcs.vpcs().len(), 1);
    assert!(
        p.api_calls()["DeleteVpc"] >= 2,
        "one refused while in use, one after the prune"
    );
    converge(&p, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_public_key_replaces_the_key_pair_destroying_first() {
    let moto = MotoServer::start();
    let p = provider("keys", &moto.endpoint);
    let mut git = vec![app_servers(0).remove(0)];
    let lives = converge(&p, &git).await;
    let id = git[0].id.clone();
    let old = lives[&id].clone();
    assert!(old.attributes["fingerprint"].as_str().is_some());

    // Only the comment changes: not a change.
    let key =
        |material: &str, comment: &str| Value::String(format!("ssh-ed25519 {material} {comment}"));
    let material = "AAAAC3NzaC1lZDI1NTE5AAAAIHr0kR2lJ3Jw2kZ1m3rYbq9Qm0yqYp4wJ6rK3zQx0x8E";
    if let Value::Map(m) = &mut git[0].body {
        m.insert("publicKey".into(), key(material, "renamed@example"));
    }
    assert!(changes(&plan_all(&p, &git).await).is_empty());

    let rotated = "AAAAC3NzaC1lZDI1NTE5AAAAIJv2YH1t8wq9bqM0n1XcYpKQ3lN6dLr8sT0uVw5xZ7aB";
    if let Value::Map(m) = &mut git[0].body {
        m.insert("publicKey".into(), key(rotated, "deploy@example"));
    }
    let plan = plan_all(&p, &git).await;
    assert_eq!(
        plan[0].1,
        Action::Replace {
            reasons: vec![
                "publicKey changed (imported key material is immutable)".into(),
                "destroy before create: keyName must stay unique in the region".into(),
            ]
        }
    );
    let lives = converge(&p, &git).await;
    assert_ne!(lives[&id].external_id, old.external_id);
    assert!(changes(&plan_all(&p, &git).await).is_empty());
    assert_eq!(observe(&p).await.len(), 1);
    converge(&p, &[]).await;
}

/// `connect` reaches moto through the standard AWS variables alone
/// (`AWS_ENDPOINT_URL_EC2`, `AWS_REGION`, credentials): run in a child
/// process so the variables never leak into parallel tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_uses_the_standard_aws_configuration() {
    const NAME: &str = "aws::connect_uses_the_standard_aws_configuration";
    let target = tidegate::provider::EnvTarget {
        project: "test".into(),
        environment: "standard".into(),
        aws: Some(tidegate::provider::AwsTarget {
            region: String::new(),
            profile: None,
            // The second child names moto in the environment's target
            // instead of the process environment.
            endpoint: std::env::var("TIDEGATE_CONNECT_ENDPOINT").ok(),
        }),
        ..Default::default()
    };
    if std::env::var_os("TIDEGATE_CONNECT_CHILD").is_some() {
        let p =
            tidegate::provider::registry::connect(tidegate::provider::ProviderKind::Aws, &target)
                .await
                .expect("connect");
        let git = network("10.0.1.0/24");
        let d = desired(&git[0], &BTreeMap::new());
        p.apply(&d, None)
            .await
            .expect("apply through the standard configuration");
        return;
    }
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    // The child connects through the standard configuration in `region`;
    // moto is named either by the environment's `targets.aws.endpoint` or
    // by AWS_ENDPOINT_URL_EC2.
    let child = |region: &str, endpoint_in_target: bool| {
        let mut c = std::process::Command::new(std::env::current_exe().unwrap());
        c.args([NAME, "--exact", "--test-threads=1"])
            .env("TIDEGATE_CONNECT_CHILD", "1")
            .env("AWS_REGION", region)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_CONFIG_FILE", dir.path().join("config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.path().join("credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .stdout(std::process::Stdio::null());
        if endpoint_in_target {
            c.env("TIDEGATE_CONNECT_ENDPOINT", &moto.endpoint)
                .env_remove("AWS_ENDPOINT_URL_EC2");
        } else {
            c.env("AWS_ENDPOINT_URL_EC2", &moto.endpoint)
                .env_remove("TIDEGATE_CONNECT_ENDPOINT");
        }
        c.status().unwrap()
    };
    // `targets.aws.endpoint` alone reaches moto (its VPC lands in us-west-2).
    let status = child("us-west-2", true);
    assert!(
        status.success(),
        "the child with targets.aws.endpoint failed"
    );
    let conf = aws_sdk_ec2::config::Builder::new()
        .region(Region::new("us-west-2"))
        .endpoint_url(&moto.endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"));
    let west2 = AwsProvider::with_config(owner("standard"), conf, Options::default());
    let vpcs = west2.observe(&[]).await.unwrap();
    assert_eq!(vpcs.len(), 1, "the endpoint in the target was used");
    let arn = vpcs[0].attributes["arn"].as_str().unwrap().to_string();
    assert!(
        arn.starts_with("arn:aws:ec2:us-west-2:") && arn.contains(":vpc/vpc-"),
        "{arn}"
    );
    let status = child("eu-west-1", false);
    assert!(status.success(), "the child test failed");
    // The VPC landed in moto, in the region the environment variable named.
    let conf = aws_sdk_ec2::config::Builder::new()
        .region(Region::new("eu-west-1"))
        .endpoint_url(&moto.endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"));
    let p = AwsProvider::with_config(owner("standard"), conf, Options::default());
    let lives = p.observe(&[]).await.unwrap();
    assert_eq!(lives.len(), 1);
    assert_eq!(lives[0].id.to_string(), "network.vpc");
    assert!(
        provider("standard", &moto.endpoint)
            .observe(&[])
            .await
            .unwrap()
            .is_empty(),
        "not in us-east-1"
    );
}

/// Issue 18: a fingerprint of secret user data under a key anyone can read
/// lets whoever reads tags test guesses offline. Secret user data is now
/// compared with the instance's own (DescribeInstanceAttribute): no tag,
/// a changed secret still replaces, an unchanged one plans nothing, and a
/// tag left from before is removed by the next apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_user_data_is_compared_without_a_stored_fingerprint() {
    let moto = MotoServer::start();
    let p = provider("dev", &moto.endpoint);
    let mut git: Vec<Res> = network("10.0.1.0/24")
        .into_iter()
        .chain(app_servers(1))
        .collect();
    let lives = converge(&p, &git).await;
    let server0 = ResourceId {
        module: "app".into(),
        name: "server0".into(),
    };
    let id = lives[&server0].external_id.clone();
    let reads = |p: &AwsProvider| {
        p.api_calls()
            .iter()
            .filter(|(op, _)| op.contains("DescribeInstanceAttribute"))
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    assert_eq!(reads(&p), 0, "a create reads back nothing it just sent");
    let tag_of = |id: String| {
        let client = p.client().clone();
        async move {
            client
                .describe_tags()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("resource-id")
                        .values(id)
                        .build(),
                )
                .send()
                .await
                .unwrap()
                .tags()
                .iter()
                .find(|t| t.key() == Some("tidegate:user-data-sha256"))
                .and_then(|t| t.value().map(str::to_string))
        }
    };
    assert_eq!(tag_of(id.clone()).await, None, "no fingerprint of a secret");
    let again = provider("dev", &moto.endpoint);
    assert!(
        changes(&plan_all(&again, &git).await).is_empty(),
        "an unchanged secret plans nothing, in another process too"
    );
    assert_eq!(
        reads(&again),
        1,
        "one read per instance with secret user data"
    );

    // A fingerprint tag from before (the old fixed key) is removed by the
    // next apply, which the plan shows as an update.
    p.client()
        .create_tags()
        .resources(&id)
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("tidegate:user-data-sha256")
                .value("sha256:0123")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        changes(&plan_all(&p, &git).await),
        vec![&("app.server0".to_string(), Action::Update)]
    );
    let lives = converge(&p, &git).await;
    assert_eq!(lives[&server0].external_id, id, "updated in place");
    assert_eq!(tag_of(id.clone()).await, None, "the old tag is gone");
    assert!(changes(&plan_all(&p, &git).await).is_empty());

    // A changed secret replaces the instance.
    let server = git.iter_mut().find(|r| r.id == server0).unwrap();
    if let Value::Map(m) = &mut server.body {
        m.insert(
            "userData".into(),
            Value::Sensitive(Sensitive::from_string(format!(
                "#!/bin/sh\necho DB_PASSWORD={SECRET}-rotated > /etc/app.env\n"
            ))),
        );
    }
    let plan = plan_all(&p, &git).await;
    let change = changes(&plan);
    assert_eq!(change.len(), 1, "{plan:?}");
    assert!(
        matches!(&change[0], (r, Action::Replace { .. }) if r == "app.server0"),
        "{plan:?}"
    );
    let lives = converge(&p, &git).await;
    assert_ne!(lives[&server0].external_id, id);
    assert!(changes(&plan_all(&p, &git).await).is_empty());
}

/// The network with a public NAT gateway in subnet `subnet` translating
/// through elastic IP `ip` (both of module network), plus the elastic IPs
/// `ips`.
fn with_nat(subnet: &str, ip: &str, ips: &[&str]) -> Vec<Res> {
    let tags = serde_json::json!({"environment": "dev", "owner": "platform", "product": "shop"});
    let mut git = network("10.0.1.0/24");
    for name in ips {
        git.push(res(
            "eip",
            "network",
            name,
            serde_json::json!({"tags": tags}),
        ));
    }
    git.push(res(
        "nat_gateway",
        "network",
        "nat",
        serde_json::json!({"subnetId": format!("${{network.{subnet}.id}}"),
        "allocationId": format!("${{network.{ip}.id}}"), "tags": tags}),
    ));
    git
}

fn nat_id() -> ResourceId {
    ResourceId {
        module: "network".into(),
        name: "nat".into(),
    }
}

/// The NAT gateways moto holds for resource `network.nat`, with their
/// state (moto ignores tag filters of DescribeNatGateways: filtered here).
async fn nat_gateways_in_moto(p: &AwsProvider) -> Vec<(String, String)> {
    let all = p.client().describe_nat_gateways().send().await.unwrap();
    all.nat_gateways()
        .iter()
        .filter(|g| {
            g.tags()
                .iter()
                .any(|t| t.key() == Some("tidegate:resource") && t.value() == Some("network.nat"))
        })
        .map(|g| {
            (
                g.nat_gateway_id().unwrap_or_default().to_string(),
                g.state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

/// Issue 19: the `nat_gateway` kind, added as one file, through create
/// (its answer lost once), observe, a no-op re-plan, replacements of
/// immutable fields and the prune; another environment never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nat_gateway_lifecycle() {
    let moto = MotoServer::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let p = provider("nat", &proxy.endpoint);
    let mut git = with_nat("public_a", "nat_ip", &["nat_ip"]);

    // Create, the answer of CreateNatGateway lost: the gateway moto made is
    // found by its tags and adopted, not made twice.
    let first = plan_all(&p, &git).await;
    assert!(first.iter().all(|(_, a)| *a == Action::Create), "{first:?}");
    *proxy.faults.lose_answer.lock().unwrap() = Some(("CreateNatGateway".into(), 1));
    let lives = converge(&p, &git).await;
    assert_eq!(
        *proxy.faults.lose_answer.lock().unwrap(),
        Some(("CreateNatGateway".to_string(), 0)),
        "the answer was really lost"
    );
    assert_eq!(proxy.faults.forwarded("CreateNatGateway"), 1);
    let in_moto = nat_gateways_in_moto(&p).await;
    assert_eq!(in_moto.len(), 1, "exactly one NAT gateway: {in_moto:?}");
    let nat = &lives[&nat_id()];
    let ip = &lives[&ResourceId {
        module: "network".into(),
        name: "nat_ip".into(),
    }];
    let subnet = &lives[&ResourceId {
        module: "network".into(),
        name: "public_a".into(),
    }];
    assert_eq!(nat.external_id, in_moto[0].0);
    assert!(nat.external_id.starts_with("nat-"), "{}", nat.external_id);
    assert_eq!(
        nat.body.to_json_masked(),
        serde_json::json!({
            "subnetId": subnet.external_id, "allocationId": ip.external_id,
            "connectivityType": "public",
            "tags": {"environment": "dev", "owner": "platform", "product": "shop"}
        })
    );
    assert_eq!(nat.attributes["publicIp"], ip.attributes["publicIp"]);
    assert!(nat.attributes["privateIp"]
        .as_str()
        .is_some_and(|a| a.split('.').count() == 4));

    // Observe: one DescribeNatGateways sequence, whatever else it reads;
    // healthy as listed.
    let before = p.api_calls().get("DescribeNatGateways").copied();
    let observed = observe(&p).await;
    assert_eq!(
        p.api_calls().get("DescribeNatGateways").copied(),
        before.map(|n| n + 1)
    );
    assert_eq!(count_kind(&observed, "nat_gateway"), 1);
    assert_eq!(
        p.health(&observed[&nat_id()]).await.unwrap(),
        tidegate::provider::Health::Healthy
    );
    assert!(
        provider("other", &proxy.endpoint)
            .observe(&[])
            .await
            .unwrap()
            .is_empty(),
        "another environment sees none of it"
    );

    // Re-plan: nothing to do.
    let again = plan_all(&p, &git).await;
    assert!(changes(&again).is_empty(), "{:?}", changes(&again));

    // Another elastic IP: an immutable field, replaced create-before-destroy.
    git = with_nat("public_a", "nat_ip", &["nat_ip", "nat_ip2"]);
    let lives = converge(&p, &git).await;
    assert_eq!(lives[&nat_id()].external_id, nat.external_id);
    let ip2 = lives[&ResourceId {
        module: "network".into(),
        name: "nat_ip2".into(),
    }]
        .external_id
        .clone();
    git = with_nat("public_a", "nat_ip2", &["nat_ip", "nat_ip2"]);
    let plan = plan_all(&p, &git).await;
    assert_eq!(
        changes(&plan),
        vec![&(
            "network.nat".to_string(),
            Action::Replace {
                reasons: vec![format!(
                    "allocationId changes from {} to {ip2} (immutable)",
                    ip.external_id
                )]
            }
        )]
    );
    let lives = converge(&p, &git).await;
    let replaced = &lives[&nat_id()];
    assert_ne!(replaced.external_id, nat.external_id);
    assert_eq!(
        replaced.body.get_path("allocationId"),
        Some(&Value::String(ip2.clone()))
    );
    assert!(changes(&plan_all(&p, &git).await).is_empty());
    let in_moto = nat_gateways_in_moto(&p).await;
    assert!(
        in_moto.contains(&(nat.external_id.clone(), "deleted".into())),
        "the old gateway was deleted: {in_moto:?}"
    );
    assert_eq!(count_kind(&observe(&p).await, "nat_gateway"), 1);

    // Another subnet with the same elastic IP: the address serves one
    // gateway, so the old one must go first, and the plan says so.
    let moved = with_nat("public_b", "nat_ip2", &["nat_ip", "nat_ip2"]);
    let plan = plan_all(&p, &moved).await;
    let subnet_b = &lives[&ResourceId {
        module: "network".into(),
        name: "public_b".into(),
    }];
    assert_eq!(
        changes(&plan),
        vec![&(
            "network.nat".to_string(),
            Action::Replace {
                reasons: vec![
                    format!(
                        "subnetId changes from {} to {} (immutable)",
                        subnet.external_id, subnet_b.external_id
                    ),
                    "destroy before create: an elastic IP serves one NAT gateway".into(),
                ]
            }
        )]
    );

    // Private: no elastic IP; replaced, and the address it used is pruned.
    git = network("10.0.1.0/24");
    git.push(res(
        "nat_gateway",
        "network",
        "nat",
        serde_json::json!({"subnetId": "${network.public_a.id}", "connectivityType": "private"}),
    ));
    let plan = plan_all(&p, &git).await;
    assert_eq!(
        changes(&plan),
        vec![&(
            "network.nat".to_string(),
            Action::Replace {
                reasons: vec!["connectivityType changes from public to private (immutable)".into()]
            }
        )]
    );
    let lives = converge(&p, &git).await;
    let private = &lives[&nat_id()];
    assert_ne!(private.external_id, replaced.external_id);
    assert_eq!(
        private.body.get_path("connectivityType"),
        Some(&Value::String("private".into()))
    );
    assert_eq!(private.body.get_path("allocationId"), None);
    assert_eq!(count_kind(&lives, "eip"), 0);
    assert!(changes(&plan_all(&p, &git).await).is_empty());

    // Prune: the gateway leaves Git, then everything; deleting again is fine.
    git.retain(|r| r.kind != "nat_gateway");
    let lives = converge(&p, &git).await;
    assert_eq!(count_kind(&lives, "nat_gateway"), 0);
    assert!(nat_gateways_in_moto(&p)
        .await
        .iter()
        .all(|(_, state)| state == "deleted"));
    let after = converge(&p, &[]).await;
    assert!(after.is_empty(), "{:?}", after.keys());
    p.delete(private)
        .await
        .expect("deleting a deleted NAT gateway succeeds");
}
