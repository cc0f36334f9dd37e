//! Decoding `spec.traffic` of an environment: the entry points
//! `tidegate switch` moves between copies (docs/format.md, "Traffic entry
//! points"). Whether the resources they name exist, and are of the right
//! kind, is checked against the graph ([`crate::pipeline::check`]).

use crate::diag::Diagnostics;
use crate::model::{EntryKind, EntryPoint, IngressEntry};
use crate::resource::ResourceId;
use crate::value::Origin;

use super::decode::{self, Fields};
use super::yaml::{Node, NodeKind};

const ENTRY_FIELDS: &[&str] = &["name", "ingress", "elasticIp"];
const INGRESS_FIELDS: &[&str] = &[
    "namespace",
    "name",
    "host",
    "service",
    "port",
    "className",
    "path",
];
const EIP_FIELDS: &[&str] = &["allocation", "instance"];

/// Decodes `traffic:`; problems become diagnostics and the entry is left
/// out.
pub fn decode(n: &Node, diags: &mut Diagnostics) -> Vec<EntryPoint> {
    let mut out: Vec<EntryPoint> = Vec::new();
    for item in decode::list(n, "`traffic`", diags).unwrap_or_default() {
        let Some(e) = entry(item, diags) else {
            continue;
        };
        if out.iter().any(|o| o.name == e.name) {
            diags.error(
                &e.origin,
                format!("traffic entry point `{}` is declared twice", e.name),
                "give each entry point its own `name`",
            );
            continue;
        }
        out.push(e);
    }
    out
}

fn entry(n: &Node, diags: &mut Diagnostics) -> Option<EntryPoint> {
    let mut f = Fields::new(n, "a `traffic` entry", diags)?;
    let name = f
        .req("name", diags)
        .and_then(|v| decode::name(v, "`traffic[].name`", diags));
    let ingress = f.opt("ingress");
    let eip = f.opt("elasticIp");
    let origin = f.origin().clone();
    f.finish(ENTRY_FIELDS, diags);
    let kind = match (ingress, eip) {
        (Some(i), None) => ingress_entry(i, diags).map(EntryKind::Ingress),
        (None, Some(e)) => elastic_ip(e, diags),
        (Some(_), Some(_)) => {
            diags.error(
                &origin,
                "a `traffic` entry has both `ingress` and `elasticIp`",
                "declare one kind per entry point; write two entries for two",
            );
            None
        }
        (None, None) => {
            diags.error(
                &origin,
                "a `traffic` entry has neither `ingress` nor `elasticIp`",
                "add `ingress: {namespace, name, host, service, port}` or `elasticIp: {allocation, instance}`",
            );
            None
        }
    };
    Some(EntryPoint {
        name: name?,
        origin,
        kind: kind?,
    })
}

fn ingress_entry(n: &Node, diags: &mut Diagnostics) -> Option<IngressEntry> {
    let mut f = Fields::new(n, "`traffic[].ingress`", diags)?;
    let namespace = f
        .req("namespace", diags)
        .and_then(|v| dns_name(v, "`ingress.namespace`", diags));
    let name = f
        .req("name", diags)
        .and_then(|v| dns_name(v, "`ingress.name`", diags));
    let host = f
        .req("host", diags)
        .and_then(|v| decode::string(v, "`ingress.host`", diags));
    let service = f
        .req("service", diags)
        .and_then(|v| resource_id(v, "`ingress.service`", diags));
    let port = f.req("port", diags).and_then(|v| port(v, diags));
    let class_name = f
        .opt("className")
        .and_then(|v| decode::string(v, "`ingress.className`", diags));
    let path = match f.opt("path") {
        Some(v) => {
            let p = decode::string(v, "`ingress.path`", diags)?;
            if !p.starts_with('/') {
                diags.error(
                    &v.origin,
                    format!("`ingress.path` is `{p}`, which does not start with `/`"),
                    "write an absolute path prefix such as `/` or `/shop`",
                );
                return None;
            }
            p
        }
        None => "/".to_string(),
    };
    f.finish(INGRESS_FIELDS, diags);
    Some(IngressEntry {
        namespace: namespace?,
        name: name?,
        host: host?,
        service: service?,
        port: port?,
        class_name,
        path,
    })
}

fn elastic_ip(n: &Node, diags: &mut Diagnostics) -> Option<EntryKind> {
    let mut f = Fields::new(n, "`traffic[].elasticIp`", diags)?;
    let allocation = f
        .req("allocation", diags)
        .and_then(|v| resource_id(v, "`elasticIp.allocation`", diags));
    let instance = f
        .req("instance", diags)
        .and_then(|v| resource_id(v, "`elasticIp.instance`", diags));
    f.finish(EIP_FIELDS, diags);
    Some(EntryKind::ElasticIp {
        allocation: allocation?,
        instance: instance?,
    })
}

/// `module.resource`.
fn resource_id(n: &Node, what: &str, diags: &mut Diagnostics) -> Option<(ResourceId, Origin)> {
    let s = decode::string(n, what, diags)?;
    match s.split_once('.') {
        Some((m, r)) if decode::valid_name(m) && decode::valid_name(r) => Some((
            ResourceId {
                module: m.to_string(),
                name: r.to_string(),
            },
            n.origin.clone(),
        )),
        _ => {
            diags.error(
                &n.origin,
                format!("{what} is `{s}`, which is not a resource id"),
                "write `<module instance>.<resource>`, e.g. `web.service`",
            );
            None
        }
    }
}

/// A Kubernetes object name (RFC 1123 label, at most 40 characters so the
/// names derived from it stay within 63).
fn dns_name(n: &Node, what: &str, diags: &mut Diagnostics) -> Option<String> {
    let s = decode::string(n, what, diags)?;
    let ok = !s.is_empty()
        && s.len() <= 40
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Some(s)
    } else {
        diags.error(
            &n.origin,
            format!("{what} `{s}` is not a Kubernetes name of at most 40 characters"),
            "use lowercase letters, digits and `-`, starting with a letter",
        );
        None
    }
}

fn port(n: &Node, diags: &mut Diagnostics) -> Option<u16> {
    match &n.kind {
        NodeKind::Int(i) if (1..=65535).contains(i) => u16::try_from(*i).ok(),
        _ => {
            diags.error(
                &n.origin,
                "`ingress.port` must be a port number from 1 to 65535",
                "write the Service port the copies serve on, e.g. `port: 80`",
            );
            None
        }
    }
}

/// Checks that what each entry point of each environment names exists in
/// the environment and is of the right kind: `ingress.service` a
/// `v1/Service`, `elasticIp.allocation` an `eip`, `elasticIp.instance` an
/// `instance`.
pub fn check_resources(
    model: &crate::model::Model,
    graph: &crate::graph::Graph,
    diags: &mut Diagnostics,
) {
    for env in &model.environments {
        for e in &env.traffic {
            let wanted: Vec<(&(ResourceId, Origin), &str, &str)> = match &e.kind {
                EntryKind::Ingress(i) => vec![(&i.service, "v1/Service", "`ingress.service`")],
                EntryKind::ElasticIp {
                    allocation,
                    instance,
                } => vec![
                    (allocation, "eip", "`elasticIp.allocation`"),
                    (instance, "instance", "`elasticIp.instance`"),
                ],
            };
            for ((id, origin), kind, what) in wanted {
                match graph.node(&env.name, id) {
                    None => diags.error(
                        origin,
                        format!(
                            "{what} names `{id}`, which environment {} does not declare",
                            env.name
                        ),
                        format!("name a `{kind}` resource of one of its module instances (`<instance>.<resource>`)"),
                    ),
                    Some(node) if node.kind != kind => diags.error(
                        origin,
                        format!("{what} names `{id}`, a `{}`, not a `{kind}`", node.kind),
                        format!("name a `{kind}` resource"),
                    ),
                    Some(_) => {}
                }
            }
            // The address's association belongs to the switch: an
            // `instanceId` in the `eip` would make every apply of the
            // environment move it back.
            if let EntryKind::ElasticIp { allocation, .. } = &e.kind {
                let declared = model
                    .resources(env)
                    .find(|(id, _, _)| *id == allocation.0)
                    .filter(|(_, _, r)| r.body.get_path("instanceId").is_some());
                if let Some((id, _, r)) = declared {
                    let at = r
                        .spans
                        .get("instanceId")
                        .cloned()
                        .unwrap_or_else(|| r.origin.clone());
                    diags.error(
                        &at,
                        format!("{id} is the address of traffic entry point `{}`, so `tidegate switch` associates it; its `instanceId` would move it back at every apply", e.name),
                        "remove `instanceId` from the `eip` (the switch associates it with the live copy's instance)",
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{self, module};

    /// The test repository with `traffic` (indented as a spec field) in
    /// prod, and a module `edge` (a Service and an address) used by it.
    fn check(traffic: &str) -> Vec<String> {
        let mut f = testutil::repo();
        let prod = String::from_utf8(f["environments/prod.yaml"].clone()).unwrap();
        let prod = prod.replace(
            "  modules:\n",
            "  modules:\n    - name: edge\n      source: modules/edge\n",
        ) + traffic;
        f.insert("environments/prod.yaml".into(), prod.into_bytes());
        let edge = module(
            "edge",
            "  resources:\n    - name: service\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: Service\n        metadata:\n          name: web\n          namespace: app-${env.name}\n        spec:\n          ports:\n            - port: 80\n    - name: ip\n      provider: aws\n      type: eip\n      spec: {}\n",
        );
        f.insert("modules/edge/module.yaml".into(), edge.into_bytes());
        // The test repository's own ConfigMap has an unquoted number.
        match crate::pipeline::check(&f) {
            Ok(_) => Vec::new(),
            Err(r) => {
                r.0.iter()
                    .map(|d| d.to_string())
                    .filter(|d| !d.contains("data.REPLICAS"))
                    .collect()
            }
        }
    }

    #[test]
    fn a_declared_ingress_entry_point_checks() {
        let e = check("  traffic:\n    - name: web\n      ingress:\n        namespace: edge\n        name: shop\n        host: shop.example.com\n        service: edge.service\n        port: 80\n");
        assert!(e.is_empty(), "{e:#?}");
    }

    #[test]
    fn bad_entry_points_are_reported_at_their_line_with_the_fix() {
        let e = check(
            "  traffic:
    - name: web
      ingress:
        namespace: edge
        name: shop
        host: shop.example.com
        service: edge.service
        port: 80
        weight: 5
    - name: both
      ingress: {namespace: edge, name: a, host: a, service: edge.service, port: 80}
      elasticIp: {allocation: edge.ip, instance: edge.ip}
    - name: neither
    - name: other
      ingress: {namespace: Edge, name: b, host: b, service: service, port: 0}
    - name: web
      elasticIp: {allocation: edge.ip, instance: edge.ip}
",
        );
        let text = e.join("\n");
        let has = |needle: &str| assert!(text.contains(needle), "{needle}\n{text}");
        has("environments/prod.yaml:35:9: error: unknown field `weight` in `traffic[].ingress`");
        has("environments/prod.yaml:36:7: error: a `traffic` entry has both `ingress` and `elasticIp`");
        has("environments/prod.yaml:39:7: error: a `traffic` entry has neither `ingress` nor `elasticIp`");
        has("environments/prod.yaml:41:28: error: `ingress.namespace` `Edge` is not a Kubernetes name");
        has("`ingress.service` is `service`, which is not a resource id");
        has("`ingress.port` must be a port number from 1 to 65535");
        has("environments/prod.yaml:42:7: error: traffic entry point `web` is declared twice");
        assert_eq!(e.len(), 7, "{text}");
    }

    #[test]
    fn entry_points_must_name_resources_of_the_right_kind() {
        let e = check(
            "  traffic:
    - name: web
      ingress: {namespace: edge, name: shop, host: shop.example.com, service: edge.nope, port: 80}
    - name: ip
      elasticIp: {allocation: app.config, instance: edge.ip}
",
        );
        let text = e.join("\n");
        let has = |needle: &str| assert!(text.contains(needle), "{needle}\n{text}");
        has("environments/prod.yaml:29:79: error: `ingress.service` names `edge.nope`, which environment prod does not declare");
        has("`elasticIp.allocation` names `app.config`, a `v1/ConfigMap`, not a `eip`");
        has("`elasticIp.instance` names `edge.ip`, a `eip`, not a `instance`");
    }

    #[test]
    fn an_entry_point_address_must_not_declare_its_association() {
        let mut f = testutil::repo();
        let prod = String::from_utf8(f["environments/prod.yaml"].clone()).unwrap();
        let prod = prod.replace(
            "  modules:\n",
            "  modules:\n    - name: edge\n      source: modules/edge\n",
        ) + "  traffic:\n    - name: ip\n      elasticIp: {allocation: edge.ip, instance: edge.server}\n";
        f.insert("environments/prod.yaml".into(), prod.into_bytes());
        let edge = module(
            "edge",
            "  resources:\n    - name: server\n      provider: aws\n      type: instance\n      spec:\n        ami: ami-1\n        instanceType: t3.micro\n        subnetId: subnet-1\n    - name: ip\n      provider: aws\n      type: eip\n      spec:\n        instanceId: ${resource.server.id}\n",
        );
        f.insert("modules/edge/module.yaml".into(), edge.into_bytes());
        let e: Vec<String> = match crate::pipeline::check(&f) {
            Ok(_) => Vec::new(),
            Err(r) => r.0.iter().map(|d| d.to_string()).collect(),
        };
        let text = e.join("\n");
        assert!(
            text.contains("modules/edge/module.yaml:18:21: error: edge.ip is the address of traffic entry point `ip`"),
            "{text}"
        );
    }
}
