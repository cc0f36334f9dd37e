//! Unit tests of the checks through [`evaluate`]: one passing and one
//! failing body per check, then severity, waivers, unknowns, secrets and
//! rendering.

use serde_json::json;

use super::*;
use crate::sensitive::{Sensitive, MASK};
use crate::value::{index_path, key_path, Map};

const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn today() -> Date {
    Date::new(2026, 6, 1).unwrap()
}

/// Spans with one synthetic line per node, in document order, so a test
/// can ask which path a finding points at.
fn spans_for(v: &Value) -> Spans {
    fn walk(v: &Value, path: &str, line: &mut usize, out: &mut Spans) {
        *line += 1;
        out.insert(
            path,
            Origin {
                file: "modules/app/module.yaml".into(),
                line: *line,
                column: 1,
            },
        );
        match v {
            Value::Map(m) => m
                .iter()
                .for_each(|(k, v)| walk(v, &key_path(path, k), line, out)),
            Value::List(l) => l
                .iter()
                .enumerate()
                .for_each(|(i, v)| walk(v, &index_path(path, i), line, out)),
            _ => {}
        }
    }
    let mut out = Spans::default();
    walk(v, "", &mut 0, &mut out);
    out
}

/// One resource under test, owning what a [`Subject`] borrows.
struct Res {
    id: ResourceId,
    provider: ProviderKind,
    kind: String,
    body: Value,
    spans: Spans,
    origin: Origin,
    waivers: Vec<Waiver>,
}

impl Res {
    fn new(name: &str, provider: ProviderKind, kind: &str, body: serde_json::Value) -> Res {
        let body = Value::from_json(body);
        Res {
            id: ResourceId {
                module: "app".into(),
                name: name.into(),
            },
            provider,
            kind: kind.into(),
            spans: spans_for(&body),
            body,
            origin: Origin {
                file: "modules/app/module.yaml".into(),
                line: 1,
                column: 1,
            },
            waivers: Vec::new(),
        }
    }

    fn k8s(kind: &str, body: serde_json::Value) -> Res {
        Res::new("res", ProviderKind::Kubernetes, kind, body)
    }

    fn aws(kind: &str, body: serde_json::Value) -> Res {
        Res::new("res", ProviderKind::Aws, kind, body)
    }

    fn subject(&self) -> Subject<'_> {
        Subject {
            environment: "prod",
            id: &self.id,
            provider: self.provider,
            kind: &self.kind,
            body: &self.body,
            spans: &self.spans,
            origin: &self.origin,
            waivers: &self.waivers,
        }
    }

    /// The line [`spans_for`] gave `path`.
    fn line(&self, path: &str) -> usize {
        self.spans
            .get(path)
            .unwrap_or_else(|| panic!("no span {path}"))
            .line
    }

    /// Replaces (or with `None` removes) the value at a dotted path with
    /// `[i]` indices, keeping spans in step.
    fn set(mut self, path: &str, v: Option<Value>) -> Res {
        set_path(&mut self.body, path, v);
        self.spans = spans_for(&self.body);
        self
    }
}

fn set_path(body: &mut Value, path: &str, v: Option<Value>) {
    let (parent, last) = path.rsplit_once('.').unwrap_or(("", path));
    let mut cur = body;
    for seg in parent.split('.').filter(|s| !s.is_empty()) {
        let (key, idx) = match seg.split_once('[') {
            Some((k, i)) => (k, Some(i.trim_end_matches(']').parse::<usize>().unwrap())),
            None => (seg, None),
        };
        let Value::Map(m) = cur else {
            panic!("{seg} not in a map")
        };
        cur = m
            .entry(key.to_string())
            .or_insert_with(|| Value::Map(Map::new()));
        if let Some(i) = idx {
            let Value::List(l) = cur else {
                panic!("{seg} not a list")
            };
            cur = &mut l[i];
        }
    }
    let Value::Map(m) = cur else {
        panic!("{parent} not a map")
    };
    match v {
        Some(v) => {
            m.insert(last.to_string(), v);
        }
        None => {
            m.shift_remove(last);
        }
    }
}

fn container(name: &str) -> serde_json::Value {
    json!({
        "name": name,
        "image": format!("ghcr.io/acme/{name}:1.4@sha256:{DIGEST}"),
        "ports": [{"containerPort": 8080}],
        "resources": {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "128Mi"}
        },
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true}
    })
}

fn pod_spec() -> serde_json::Value {
    json!({
        "securityContext": {"runAsNonRoot": true},
        "initContainers": [{
            "name": "migrate",
            "image": format!("ghcr.io/acme/migrate@sha256:{DIGEST}"),
            "resources": {
                "requests": {"cpu": "100m", "memory": "64Mi"},
                "limits": {"cpu": "1", "memory": "128Mi"}
            },
            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true}
        }],
        "containers": [container("web")]
    })
}

fn deployment() -> Res {
    Res::k8s(
        "apps/v1/Deployment",
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"template": {"spec": pod_spec()}}
        }),
    )
}

const C: &str = "spec.template.spec.containers[0]";
const INIT: &str = "spec.template.spec.initContainers[0]";

fn run_env(env: &str, res: &[&Res]) -> Report {
    let config = PolicyConfig {
        approved_domains: vec!["example.com".into()],
        ..PolicyConfig::defaults(env)
    };
    let subjects: Vec<Subject<'_>> = res.iter().map(|r| r.subject()).collect();
    evaluate(&config, &subjects, today())
}

fn run(res: &[&Res]) -> Report {
    run_env("prod", res)
}

/// The (check, line) of every unwaived finding.
fn found(r: &Report) -> Vec<(CheckId, usize)> {
    r.findings
        .iter()
        .map(|f| (f.check, f.origin.line))
        .collect()
}

fn s(text: &str) -> Option<Value> {
    Some(Value::String(text.into()))
}

fn v(j: serde_json::Value) -> Option<Value> {
    Some(Value::from_json(j))
}

#[test]
fn a_compliant_workload_passes_every_check() {
    let d = deployment();
    let r = run(&[&d]);
    assert!(r.is_empty(), "{}", r.render_text());
    assert!(!r.blocks_apply());
}

#[test]
fn every_pod_bearing_kind_is_checked() {
    let bad = json!({"containers": [{"name": "x", "image": "nginx"}]});
    let kinds = [
        (
            "apps/v1/StatefulSet",
            json!({"spec": {"template": {"spec": bad}}}),
        ),
        (
            "apps/v1/DaemonSet",
            json!({"spec": {"template": {"spec": bad}}}),
        ),
        (
            "apps/v1/ReplicaSet",
            json!({"spec": {"template": {"spec": bad}}}),
        ),
        ("batch/v1/Job", json!({"spec": {"template": {"spec": bad}}})),
        (
            "batch/v1/CronJob",
            json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": bad}}}}}),
        ),
        ("v1/Pod", json!({"spec": bad})),
    ];
    for (kind, body) in kinds {
        let r = run(&[&Res::k8s(kind, body)]);
        assert!(
            r.findings.iter().any(|f| f.check == CheckId::ImageDigest),
            "{kind}"
        );
    }
    let cm = Res::k8s("v1/ConfigMap", json!({"data": {"containers": "x"}}));
    assert!(run(&[&cm]).is_empty());
}

#[test]
fn image_digest() {
    for (image, words) in [
        ("nginx:latest", "uses the `latest` tag"),
        ("nginx", "has no tag or digest"),
        ("nginx:1.25", "is pinned by tag, not by digest"),
        ("nginx@sha256:abc", "malformed digest"),
    ] {
        let d = deployment().set(&format!("{C}.image"), s(image));
        let r = run(&[&d]);
        assert_eq!(
            found(&r),
            [(CheckId::ImageDigest, d.line(&format!("{C}.image")))],
            "{image}"
        );
        assert!(
            r.findings[0].message.contains(words),
            "{}",
            r.findings[0].message
        );
        assert!(r.findings[0].fix.contains("nginx@sha256:<digest>"));
    }
    let init = deployment().set(&format!("{INIT}.image"), s("migrate:latest"));
    assert_eq!(
        found(&run(&[&init])),
        [(CheckId::ImageDigest, init.line(&format!("{INIT}.image")))]
    );
}

#[test]
fn resources() {
    let d = deployment().set(&format!("{C}.resources.limits"), None);
    let r = run(&[&d]);
    assert_eq!(
        found(&r),
        [(CheckId::Resources, d.line(&format!("{C}.resources")))]
    );
    assert_eq!(
        r.findings[0].message,
        "container `web` has no resources limits.cpu, limits.memory"
    );
    let init = deployment().set(&format!("{INIT}.resources"), None);
    let r = run(&[&init]);
    assert_eq!(found(&r), [(CheckId::Resources, init.line(INIT))]);
    assert!(r.findings[0]
        .message
        .starts_with("init container `migrate` has no resources requests.cpu"));
}

#[test]
fn probes() {
    let d = deployment().set(&format!("{C}.livenessProbe"), None);
    let r = run(&[&d]);
    assert_eq!(found(&r), [(CheckId::Probes, d.line(C))]);
    assert_eq!(
        r.findings[0].message,
        "container `web` declares ports but has no livenessProbe"
    );
    let worker = deployment()
        .set(&format!("{C}.ports"), None)
        .set(&format!("{C}.livenessProbe"), None)
        .set(&format!("{C}.readinessProbe"), None);
    assert!(
        run(&[&worker]).is_empty(),
        "a container without ports needs no probes"
    );
}

#[test]
fn non_root() {
    let pod_sc = "spec.template.spec.securityContext.runAsNonRoot";
    let d = deployment().set(pod_sc, None);
    let r = run(&[&d]);
    assert_eq!(found(&r).len(), 2, "init and app container");
    assert!(r.findings.iter().all(|f| f.check == CheckId::NonRoot));

    let container_level = deployment()
        .set(pod_sc, None)
        .set(
            &format!("{C}.securityContext.runAsNonRoot"),
            Some(Value::Bool(true)),
        )
        .set(
            &format!("{INIT}.securityContext.runAsNonRoot"),
            Some(Value::Bool(true)),
        );
    assert!(run(&[&container_level]).is_empty());

    let overridden = deployment().set(
        &format!("{C}.securityContext.runAsNonRoot"),
        Some(Value::Bool(false)),
    );
    let path = format!("{C}.securityContext.runAsNonRoot");
    assert_eq!(
        found(&run(&[&overridden])),
        [(CheckId::NonRoot, overridden.line(&path))]
    );

    let root = deployment().set(
        &format!("{C}.securityContext.runAsUser"),
        Some(Value::Int(0)),
    );
    let r = run(&[&root]);
    assert_eq!(
        r.findings[0].message,
        "container `web` runs as user 0 (root)"
    );

    let esc = deployment().set(
        &format!("{C}.securityContext.allowPrivilegeEscalation"),
        None,
    );
    let r = run(&[&esc]);
    assert_eq!(
        found(&r),
        [(CheckId::NonRoot, esc.line(&format!("{C}.securityContext")))]
    );
    assert!(r.findings[0]
        .fix
        .contains("allowPrivilegeEscalation: false"));
}

#[test]
fn read_only_root_fs() {
    let path = format!("{C}.securityContext.readOnlyRootFilesystem");
    let d = deployment().set(&path, Some(Value::Bool(false)));
    assert_eq!(
        found(&run(&[&d])),
        [(CheckId::ReadOnlyRootFs, d.line(&path))]
    );
}

#[test]
fn secret_volumes() {
    let d = deployment().set(
        &format!("{C}.env"),
        v(json!([
            {"name": "MODE", "value": "x"},
            {"name": "CFG", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}},
            {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
        ])),
    );
    let d = d.set(
        &format!("{C}.envFrom"),
        v(json!([{"configMapRef": {"name": "c"}}, {"secretRef": {"name": "api"}}])),
    );
    let r = run(&[&d]);
    let env = format!("{C}.env[2].valueFrom.secretKeyRef");
    let from = format!("{C}.envFrom[1].secretRef");
    assert_eq!(
        found(&r),
        [
            (CheckId::SecretVolumes, d.line(&env)),
            (CheckId::SecretVolumes, d.line(&from))
        ]
    );
    assert_eq!(
        r.findings[0].message,
        "container `web` reads Secret `db` key `password` into env var `DB_PASSWORD`"
    );
    assert!(r.findings[1].message.contains("every key of Secret `api`"));
    assert!(r.findings[0].fix.contains("secretName: db"));
}

fn instance() -> Res {
    Res::aws(
        "instance",
        json!({
            "ami": "ami-123", "instanceType": "t3.micro", "subnetId": "subnet-1",
            "metadata": {"httpTokens": "required"},
            "rootVolume": {"sizeGiB": 20, "encrypted": true},
            "tags": {"environment": "prod", "owner": "team-a", "product": "shop"}
        }),
    )
}

#[test]
fn required_tags() {
    assert!(run(&[&instance()]).is_empty());
    let i = instance()
        .set("tags.owner", None)
        .set("tags.product", s(" "));
    let r = run(&[&i]);
    assert_eq!(found(&r), [(CheckId::RequiredTags, i.line("tags"))]);
    assert_eq!(
        r.findings[0].message,
        "missing required tags: owner, product"
    );
    let untagged = Res::aws("vpc", json!({"cidrBlock": "10.0.0.0/16"}));
    let r = run(&[&untagged]);
    assert_eq!(
        r.findings[0].message,
        "missing required tags: environment, owner, product"
    );
    assert_eq!(
        r.findings[0].origin.line, 1,
        "points at the spec when tags are absent"
    );
    let config = PolicyConfig {
        required_tags: vec!["cost-center".into()],
        ..PolicyConfig::defaults("prod")
    };
    let r = evaluate(&config, &[instance().subject()], today());
    assert_eq!(r.findings[0].message, "missing required tags: cost-center");
}

#[test]
fn imdsv2() {
    let opt = instance().set("metadata.httpTokens", s("optional"));
    let r = run(&[&opt]);
    assert_eq!(
        found(&r),
        [(CheckId::Imdsv2, opt.line("metadata.httpTokens"))]
    );
    assert!(r.findings[0].message.contains("`optional`"));
    let unset = instance().set("metadata", None);
    let r = run(&[&unset]);
    assert_eq!(found(&r), [(CheckId::Imdsv2, 1)]);
    assert!(r.findings[0].message.contains("defaults to optional"));
}

fn security_group(ingress: serde_json::Value) -> Res {
    Res::aws(
        "security_group",
        json!({
            "vpcId": "vpc-1", "groupName": "web", "description": "web",
            "ingress": ingress,
            "tags": {"environment": "prod", "owner": "team-a", "product": "shop"}
        }),
    )
}

#[test]
fn open_security_group() {
    let ok = security_group(json!([
        {"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["0.0.0.0/0"]},
        {"protocol": "tcp", "fromPort": 80, "toPort": 80, "cidrBlocks": ["::/0"]},
        {"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["10.0.0.0/8"]},
        {"protocol": "icmp", "fromPort": -1, "toPort": -1, "cidrBlocks": ["0.0.0.0/0"]}
    ]));
    assert!(run(&[&ok]).is_empty(), "{}", run(&[&ok]).render_text());
    let bad = security_group(json!([
        {"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["0.0.0.0/0"]},
        {"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["10.0.0.0/8", "0.0.0.0/0"]},
        {"protocol": "-1", "fromPort": 0, "toPort": 0, "cidrBlocks": ["::/0"]}
    ]));
    let r = run(&[&bad]);
    assert_eq!(
        found(&r),
        [
            (
                CheckId::OpenSecurityGroup,
                bad.line("ingress[1].cidrBlocks[1]")
            ),
            (
                CheckId::OpenSecurityGroup,
                bad.line("ingress[2].cidrBlocks[0]")
            ),
        ]
    );
    assert_eq!(
        r.findings[0].message,
        "ingress rule 1 opens tcp port 22 to 0.0.0.0/0; only 80, 443 may be public"
    );
    assert!(r.findings[1]
        .message
        .contains("all protocols and ports to ::/0"));
}

#[test]
fn open_security_group_rule() {
    let rule = |ty: &str, port: i64, cidr: &str| {
        Res::aws(
            "security_group_rule",
            json!({"securityGroupId": "sg-1", "type": ty, "protocol": "tcp",
                   "fromPort": port, "toPort": port, "cidrBlock": cidr,
                   "tags": {"environment": "prod", "owner": "team-a", "product": "shop"}}),
        )
    };
    assert!(run(&[&rule("ingress", 443, "0.0.0.0/0")]).is_empty());
    assert!(run(&[&rule("ingress", 22, "10.0.0.0/8")]).is_empty());
    assert!(run(&[&rule("egress", 22, "0.0.0.0/0")]).is_empty());
    let bad = rule("ingress", 22, "0.0.0.0/0");
    let r = run(&[&bad]);
    assert_eq!(
        found(&r),
        [(CheckId::OpenSecurityGroup, bad.line("cidrBlock"))]
    );
    assert_eq!(
        r.findings[0].message,
        "the rule opens tcp port 22 to 0.0.0.0/0; only 80, 443 may be public"
    );
}

#[test]
fn ebs_encryption() {
    let tags = json!({"environment": "prod", "owner": "team-a", "product": "shop"});
    let volume = |enc: Option<bool>| {
        let mut b = json!({"availabilityZone": "eu-west-1a", "sizeGiB": 10, "tags": tags});
        if let Some(e) = enc {
            b["encrypted"] = json!(e);
        }
        Res::aws("ebs_volume", b)
    };
    assert!(run(&[&volume(Some(true))]).is_empty());
    let off = volume(Some(false));
    let r = run(&[&off]);
    assert_eq!(found(&r), [(CheckId::EbsEncryption, off.line("encrypted"))]);
    assert_eq!(
        r.findings[0].message,
        "the volume is not encrypted at rest: `encrypted` is `false`"
    );
    let r = run(&[&volume(None)]);
    assert!(
        r.findings[0].message.contains("is not set"),
        "{}",
        r.render_text()
    );
    let root = instance().set("rootVolume.encrypted", None);
    assert_eq!(
        found(&run(&[&root])),
        [(CheckId::EbsEncryption, root.line("rootVolume"))]
    );
    let template = Res::aws(
        "launch_template",
        json!({"launchTemplateName": "web", "data": {"blockDeviceMappings": [
            {"deviceName": "/dev/xvda", "ebs": {"volumeSizeGiB": 20, "encrypted": true}},
            {"deviceName": "/dev/xvdb", "ebs": {"volumeSizeGiB": 20}},
            {"deviceName": "/dev/xvdc"}
        ]}, "tags": tags}),
    );
    let r = run(&[&template]);
    assert_eq!(
        found(&r),
        [(
            CheckId::EbsEncryption,
            template.line("data.blockDeviceMappings[1].ebs")
        )]
    );
    assert!(
        r.findings[0].message.starts_with("block device 1: "),
        "{}",
        r.findings[0].message
    );
    // A warning outside production.
    let r = run_env("dev", &[&off]);
    assert!(r.findings.iter().all(|f| f.severity == Severity::Warning));
}

#[test]
fn public_route() {
    let tags = json!({"environment": "prod", "owner": "team-a", "product": "shop"});
    let route = |dest: &str, target: (&str, &str)| {
        let mut b = json!({"routeTableId": "rtb-1", "destinationCidrBlock": dest, "tags": tags});
        b[target.0] = json!(target.1);
        Res::aws("route", b)
    };
    let igw = route("0.0.0.0/0", ("gatewayId", "igw-1"));
    let r = run(&[&igw]);
    assert_eq!(found(&r), [(CheckId::PublicRoute, igw.line("gatewayId"))]);
    assert_eq!(
        r.findings[0].message,
        "a default route to 0.0.0.0/0 through gateway igw-1 makes the table's subnets public"
    );
    for ok in [
        route("0.0.0.0/0", ("natGatewayId", "nat-1")),
        route("0.0.0.0/0", ("gatewayId", "vgw-1")),
        route("10.1.0.0/16", ("gatewayId", "igw-1")),
    ] {
        assert!(run(&[&ok]).is_empty(), "{}", run(&[&ok]).render_text());
    }
    let table = Res::aws(
        "route_table",
        json!({"vpcId": "vpc-1", "routes": [
            {"destinationCidrBlock": "10.9.0.0/16", "gatewayId": "igw-1"},
            {"destinationCidrBlock": "0.0.0.0/0", "gatewayId": "igw-1"}
        ], "tags": tags}),
    );
    let r = run(&[&table]);
    assert_eq!(
        found(&r),
        [(CheckId::PublicRoute, table.line("routes[1].gatewayId"))]
    );
    assert!(r.findings[0].message.starts_with("route 1: "));
    // Waived like any check.
    let mut waived = route("0.0.0.0/0", ("gatewayId", "igw-1"));
    waived.waivers = vec![waiver(CheckId::PublicRoute, None)];
    let r = run(&[&waived]);
    assert!(
        r.findings.is_empty() && r.waived.len() == 1,
        "{}",
        r.render_text()
    );
}

fn ingress(name: &str, hosts: &[&str]) -> Res {
    let rules: Vec<_> = hosts.iter().map(|h| json!({"host": h})).collect();
    let mut r = Res::k8s(
        "networking.k8s.io/v1/Ingress",
        json!({"metadata": {"name": name}, "spec": {"rules": rules, "tls": [{"hosts": hosts}]}}),
    );
    r.id.name = name.into();
    r
}

#[test]
fn ingress_domain() {
    let ok = ingress(
        "a",
        &["example.com", "shop.EXAMPLE.com.", "*.api.example.com"],
    );
    assert!(run(&[&ok]).is_empty());
    let bad = ingress("b", &["shop.example.org", "badexample.com"]);
    let r = run(&[&bad]);
    assert_eq!(
        found(&r),
        [
            (CheckId::IngressDomain, bad.line("spec.rules[0].host")),
            (CheckId::IngressDomain, bad.line("spec.rules[1].host")),
            (CheckId::IngressDomain, bad.line("spec.tls[0].hosts[0]")),
            (CheckId::IngressDomain, bad.line("spec.tls[0].hosts[1]")),
        ]
    );
    assert_eq!(
        r.findings[0].message,
        "host `shop.example.org` is not under an approved domain (example.com)"
    );
}

#[test]
fn ingress_domain_without_approved_domains_is_skipped_with_a_note() {
    let bad = ingress("b", &["shop.example.org"]);
    let r = evaluate(&PolicyConfig::defaults("prod"), &[bad.subject()], today());
    assert!(r.findings.is_empty());
    assert_eq!(r.notes.len(), 1);
    assert!(r.notes[0]
        .message
        .starts_with("ingress-domain skipped in environment prod"));

    let mut waived = ingress("w", &["shop.example.org"]);
    waived.waivers = vec![waiver(CheckId::IngressDomain, None)];
    let r = evaluate(
        &PolicyConfig::defaults("prod"),
        &[waived.subject()],
        today(),
    );
    assert_eq!(
        r.notes.len(),
        1,
        "a waiver for a skipped check is not called useless"
    );
}

#[test]
fn ingress_unique() {
    let a = ingress("a", &["shop.example.com", "shop.example.com"]);
    assert!(run(&[&a]).is_empty(), "one Ingress may repeat its own host");
    let b = ingress("b", &["api.example.com", "SHOP.example.com"]);
    let r = run(&[&a, &b]);
    assert_eq!(
        found(&r),
        [
            (CheckId::IngressUnique, a.line("spec.rules[0].host")),
            (CheckId::IngressUnique, b.line("spec.rules[1].host")),
        ]
    );
    assert_eq!(
        r.findings[0].message,
        "host `shop.example.com` is also used by app.b (modules/app/module.yaml:1:1)"
    );
    assert_eq!(r.findings[1].resource.name, "b");
    // A host shared by many: each finding names three others and counts
    // the rest (it listed them all: quadratic text).
    let many: Vec<Res> = (0..6)
        .map(|i| ingress(&format!("m{i}"), &["many.example.com"]))
        .collect();
    let r = run(&many.iter().collect::<Vec<_>>());
    assert_eq!(r.findings.len(), 6);
    assert_eq!(
        r.findings[0].message,
        "host `many.example.com` is also used by app.m1 (modules/app/module.yaml:1:1), app.m2 (modules/app/module.yaml:1:1), app.m3 (modules/app/module.yaml:1:1), 2 more"
    );
}

#[test]
fn severity_follows_the_environment() {
    let d = deployment().set(&format!("{C}.image"), s("nginx:latest"));
    let prod = run_env("prod", &[&d]);
    assert_eq!(prod.findings[0].severity, Severity::Error);
    assert!(prod.blocks_apply());
    let dev = run_env("dev", &[&d]);
    assert_eq!(dev.findings[0].severity, Severity::Warning);
    assert!(!dev.blocks_apply());
    assert_eq!(dev.warnings(), 1);

    let mut config = PolicyConfig::defaults("prod");
    config
        .severity
        .insert(CheckId::ImageDigest, Severity::Warning);
    let r = evaluate(&config, &[d.subject()], today());
    assert!(!r.blocks_apply());
    config.severity.insert(CheckId::ImageDigest, Severity::Off);
    assert!(evaluate(&config, &[d.subject()], today()).is_empty());
}

fn waiver(check: CheckId, expires: Option<Date>) -> Waiver {
    Waiver {
        check,
        reason: "vendor image, digest tracked upstream".into(),
        expires,
        origin: Origin {
            file: "modules/app/module.yaml".into(),
            line: 40,
            column: 9,
        },
    }
}

#[test]
fn an_active_waiver_moves_the_finding_to_waived() {
    let mut d = deployment().set(&format!("{C}.image"), s("nginx:latest"));
    d.waivers = vec![waiver(CheckId::ImageDigest, None)];
    let r = run(&[&d]);
    assert!(r.findings.is_empty());
    assert!(!r.blocks_apply());
    assert_eq!(r.waived.len(), 1);
    assert_eq!(r.waived[0].finding.check, CheckId::ImageDigest);
    assert_eq!(r.waived[0].waiver_origin.line, 40);

    d.waivers = vec![waiver(CheckId::ImageDigest, Some(today()))];
    assert!(
        run(&[&d]).findings.is_empty(),
        "a waiver holds on its expiry day"
    );
}

#[test]
fn an_expired_waiver_counts_as_none_and_is_reported() {
    let mut d = deployment().set(&format!("{C}.image"), s("nginx:latest"));
    let yesterday = Date::new(2026, 5, 31).unwrap();
    d.waivers = vec![waiver(CheckId::ImageDigest, Some(yesterday))];
    let r = run(&[&d]);
    assert_eq!(r.findings.len(), 1);
    assert!(r.blocks_apply());
    assert!(r.waived.is_empty());
    assert_eq!(r.expired_waivers.len(), 1);
    assert_eq!(r.expired_waivers[0].expires, yesterday);
    assert!(r
        .render_text()
        .contains("expired-waiver[image-digest] app.res: waiver expired on 2026-05-31"));
}

#[test]
fn a_waiver_that_waives_nothing_is_noted() {
    let mut d = deployment();
    d.waivers = vec![waiver(CheckId::Probes, None)];
    let r = run(&[&d]);
    assert!(!r.blocks_apply());
    assert_eq!(r.notes.len(), 1);
    assert!(r.notes[0]
        .message
        .contains("waiver for `probes` waives nothing"));
}

#[test]
fn unknown_values_never_produce_findings() {
    let unknown = || Some(Value::Unknown("module.x.y".into()));
    let cases = [
        deployment().set(&format!("{C}.image"), unknown()),
        deployment().set(&format!("{C}.resources"), unknown()),
        deployment().set(&format!("{C}.resources.limits.cpu"), unknown()),
        deployment().set(&format!("{C}.ports"), unknown()).set(&format!("{C}.livenessProbe"), None),
        deployment().set(&format!("{C}.securityContext"), unknown()).set("spec.template.spec.securityContext", None).set(&format!("{INIT}.securityContext.runAsNonRoot"), Some(Value::Bool(true))),
        deployment().set(&format!("{C}.env"), unknown()),
        deployment().set("spec.template.spec.containers", unknown()),
        deployment().set("spec.template", unknown()),
        instance().set("tags", unknown()),
        instance().set("metadata.httpTokens", unknown()),
        instance().set("metadata", unknown()),
        security_group(json!([{"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["module.net.cidr"]}]))
            .set("ingress[0].cidrBlocks", unknown()),
        security_group(json!([{"protocol": "tcp", "fromPort": 22, "cidrBlocks": ["0.0.0.0/0"]}]))
            .set("ingress[0].fromPort", unknown()),
        ingress("a", &["x"]).set("spec.rules[0].host", unknown()).set("spec.tls", None),
    ];
    for (i, c) in cases.iter().enumerate() {
        let r = run(&[c]);
        assert!(r.findings.is_empty(), "case {i}: {}", r.render_text());
    }
}

#[test]
fn sensitive_values_are_checked_but_never_printed() {
    let secret = |t: &str| Some(Value::Sensitive(Sensitive::from_string(t.into())));
    let d = deployment().set(
        &format!("{C}.image"),
        secret("registry.internal/s3cret-app:latest"),
    );
    let r = run(&[&d]);
    assert_eq!(r.findings.len(), 1);
    let i = ingress("a", &["x"])
        .set("spec.rules[0].host", secret("hidden.example.org"))
        .set("spec.tls", None);
    let r2 = run(&[&i]);
    assert_eq!(r2.findings.len(), 1);
    for r in [r, r2] {
        let all = format!(
            "{}{}{}",
            r.render_text(),
            r.render_markdown(),
            serde_json::to_string(&r).unwrap()
        );
        assert!(!all.contains("s3cret") && !all.contains("hidden"), "{all}");
        assert!(r.findings[0].message.contains(MASK));
    }
}

#[test]
fn findings_are_sorted_by_file_line_and_check() {
    let d = deployment()
        .set(&format!("{C}.image"), s("nginx"))
        .set(&format!("{INIT}.image"), s("busybox"));
    let mut i = instance().set("metadata", None).set("tags", None);
    i.origin.file = "modules/aaa/module.yaml".into();
    i.spans = Spans::default();
    let r = run(&[&d, &i]);
    let keys: Vec<_> = r
        .findings
        .iter()
        .map(|f| (f.origin.file.clone(), f.origin.line, f.check))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(
        keys[0],
        ("modules/aaa/module.yaml".into(), 1, CheckId::RequiredTags)
    );
    assert_eq!(keys[1].2, CheckId::Imdsv2);
}

#[test]
fn rendering_text_markdown_and_json() {
    let mut d = deployment()
        .set(&format!("{C}.image"), s("nginx:latest"))
        .set(&format!("{C}.securityContext.readOnlyRootFilesystem"), None);
    d.waivers = vec![waiver(
        CheckId::ReadOnlyRootFs,
        Some(Date::new(2026, 12, 31).unwrap()),
    )];
    let r = run(&[&d]);
    let text = r.render_text();
    let line = d.line(&format!("{C}.image"));
    let first = text.lines().next().unwrap();
    assert_eq!(
        first,
        format!("modules/app/module.yaml:{line}:1: error[image-digest] app.res: container `web` image `nginx:latest` uses the `latest` tag (fix: pin the image of container `web` by digest: `nginx@sha256:<digest>` (`docker buildx imagetools inspect nginx:latest` prints the digest))")
    );
    assert!(text.contains("waived[read-only-root-fs] app.res:"));
    assert!(
        text.ends_with("policy: 1 error, 0 warnings, 1 waived — apply blocked\n"),
        "{text}"
    );

    let md = r.render_markdown();
    assert!(
        md.starts_with("### Policy\n\n**1 error, 0 warnings, 1 waived** — apply blocked\n"),
        "{md}"
    );
    assert!(md.contains("| ❌ error | `image-digest` | `app.res` |"));
    assert!(md.contains(
        "| `read-only-root-fs` | `app.res` | vendor image, digest tracked upstream | 2026-12-31 |"
    ));

    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(j["environment"], "prod");
    assert_eq!(j["findings"][0]["check"], "image-digest");
    assert_eq!(j["findings"][0]["severity"], "error");
    assert_eq!(j["findings"][0]["resource"], "app.res");
    assert_eq!(j["findings"][0]["origin"]["line"], line);
    assert_eq!(j["waived"][0]["expires"], "2026-12-31");
}

#[test]
fn the_check_table_is_complete_and_documented() {
    let docs = include_str!("../../docs/policies.md");
    for (i, c) in CheckId::ALL.into_iter().enumerate() {
        assert_eq!(c as usize, i);
        assert_eq!(c.as_str().parse::<CheckId>(), Ok(c));
        assert!(
            docs.contains(&format!("## `{c}`")),
            "docs/policies.md lacks a section for {c}"
        );
    }
    assert_eq!(checks().len(), CheckId::ALL.len());
    let list = render_check_list();
    assert_eq!(list.lines().count(), 4 * CheckId::ALL.len());
    assert!(list.starts_with("image-digest\n  applies to: every container"));
    assert!("nope".parse::<CheckId>().is_err());
}

#[test]
fn spans_below_rebases_paths() {
    let mut s = Spans::default();
    let o = |line| Origin {
        file: "f".into(),
        line,
        column: 1,
    };
    s.insert("resources[0]", o(1));
    s.insert("resources[0].manifest", o(2));
    s.insert("resources[0].manifest.spec", o(3));
    s.insert("resources[0].manifestx", o(4));
    s.insert("resources[1].manifest", o(5));
    let b = spans_below(&s, "resources[0].manifest");
    assert_eq!(
        b.iter()
            .map(|(p, o)| (p.to_string(), o.line))
            .collect::<Vec<_>>(),
        [("".to_string(), 2), ("spec".to_string(), 3)]
    );
    let l = spans_below(&s, "resources");
    assert_eq!(l.get("[0]").map(|o| o.line), Some(1));
}

/// Issue 17: a finding on a value that came through an input and a var
/// named only the template line; it now also names where the value was
/// written, with each reference on the way, as graph edges do.
#[test]
fn findings_name_where_a_value_through_references_was_written() {
    use crate::testutil::{env, files, module};
    let container = |image: &str| {
        format!("      manifest:\n        apiVersion: v1\n        kind: Pod\n        metadata:\n          name: p\n        spec:\n          containers:\n            - name: c\n              image: {image}\n")
    };
    let m = module(
        "app",
        &format!(
            "  inputs:\n    image:\n      type: string\n    base:\n      type: string\n      default: busybox:latest\n  outputs:\n    image:\n      value: ${{input.image}}\n  resources:\n    - name: direct\n      provider: kubernetes\n{}    - name: defaulted\n      provider: kubernetes\n{}    - name: literal\n      provider: kubernetes\n{}",
            container("${input.image}"),
            container("${input.base}"),
            container("nginx:latest"),
        ),
    );
    let e = env(
        "prod",
        "  vars:\n    registry: registry.example.com\n    webImage: registry.example.com/web:latest\n  modules:\n    - name: app\n      source: modules/app\n      inputs:\n        image: ${var.webImage}\n    - name: again\n      source: modules/app\n      inputs:\n        image: ${module.app.image}\n",
    );
    let model = crate::load::load(&files(&[
        ("environments/prod.yaml", &e),
        ("modules/app/module.yaml", &m),
    ]))
    .unwrap();
    let known = std::collections::HashMap::new();
    let opts = crate::render::RenderOptions {
        known: &known,
        secrets: &crate::render::StructuralSecrets,
        owner: None,
    };
    let desired = crate::render::render_env(&model, "prod", opts).unwrap();
    let report = evaluate_env(&model, "prod", &desired, today()).unwrap();
    let image = |id: &str| {
        report
            .findings
            .iter()
            .find(|f| f.check == CheckId::ImageDigest && f.resource.to_string() == id)
            .unwrap_or_else(|| panic!("no image finding on {id}: {}", report.render_text()))
    };
    let at = |h: &Hop| format!("{} {}:{}", h.what, h.origin.file, h.origin.line);

    let direct = image("app.direct");
    assert_eq!(direct.origin.line, 26, "{direct:?}");
    let hops: Vec<_> = direct.trace.iter().map(at).collect();
    assert_eq!(
        hops,
        [
            "${input.image} modules/app/module.yaml:26",
            "${var.webImage} environments/prod.yaml:13",
            "var `webImage` environments/prod.yaml:8",
        ]
    );
    assert_eq!(
        direct.written_at().unwrap(),
        "value written at environments/prod.yaml:8:15 (var `webImage`), through ${input.image} at modules/app/module.yaml:26:22 <- ${var.webImage} at environments/prod.yaml:13:16"
    );
    // Through another instance's output, back to the same var.
    let again: Vec<_> = image("again.direct").trace.iter().map(at).collect();
    assert_eq!(
        again,
        [
            "${input.image} modules/app/module.yaml:26",
            "${module.app.image} environments/prod.yaml:17",
            "${input.image} modules/app/module.yaml:14",
            "${var.webImage} environments/prod.yaml:13",
            "var `webImage` environments/prod.yaml:8",
        ]
    );
    // An input's default, and a value written in the resource itself.
    let defaulted: Vec<_> = image("app.defaulted").trace.iter().map(at).collect();
    assert_eq!(
        defaulted,
        [
            "${input.base} modules/app/module.yaml:37",
            "default of input `base` modules/app/module.yaml:11",
        ]
    );
    assert!(image("app.literal").trace.is_empty());
    let text = report.render_text();
    assert!(
        text.contains("\n  value written at environments/prod.yaml:8:15 (var `webImage`)"),
        "{text}"
    );
    assert!(report
        .render_markdown()
        .contains("(value written at `environments/prod.yaml:8:15`)"));
}
