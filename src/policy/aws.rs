//! Checks on AWS resource specs: tags on everything, IMDSv2 on
//! instances, security groups open to the world only on public ports.

use crate::value::{index_path, Value};

use super::config::PolicyConfig;
use super::field::{at, Field, Text};
use super::{CheckId, Hit};

/// Runs the checks that apply to an AWS resource of type `kind`.
pub(crate) fn check(config: &PolicyConfig, kind: &str, body: &Value, out: &mut Vec<Hit>) {
    required_tags(&config.required_tags, body, out);
    match kind {
        "instance" => {
            imdsv2(body, out);
            unencrypted(body, &["rootVolume", "encrypted"], "the root volume", out);
        }
        "security_group" => open_security_group(&config.public_ports, body, out),
        "security_group_rule" => open_security_group_rule(&config.public_ports, body, out),
        "ebs_volume" => unencrypted(body, &["encrypted"], "the volume", out),
        "launch_template" => {
            let devices = at(body, &["data", "blockDeviceMappings"])
                .items()
                .unwrap_or_default();
            for (i, d) in devices.iter().enumerate() {
                if matches!(at(d, &["ebs"]), Field::Missing) {
                    continue;
                }
                let mut hits = Vec::new();
                unencrypted(d, &["ebs", "encrypted"], "the block device", &mut hits);
                for mut h in hits {
                    h.path = format!("data.{}.{}", index_path("blockDeviceMappings", i), h.path);
                    h.message = format!("block device {i}: {}", h.message);
                    out.push(h);
                }
            }
        }
        "route" => {
            if let Some(hit) = public_route(body) {
                out.push(hit);
            }
        }
        "route_table" => {
            let routes = at(body, &["routes"]).items().unwrap_or_default();
            for (i, r) in routes.iter().enumerate() {
                if let Some(mut hit) = public_route(r) {
                    hit.path = format!("{}.{}", index_path("routes", i), hit.path);
                    hit.message = format!("route {i}: {}", hit.message);
                    out.push(hit);
                }
            }
        }
        _ => {}
    }
}

/// A finding when the boolean at `path` of `body` is not `true` (unset:
/// EC2 leaves the volume unencrypted unless the account encrypts by
/// default, which tidegate cannot see).
fn unencrypted(body: &Value, path: &[&str], what: &str, out: &mut Vec<Hit>) {
    let problem = match at(body, path) {
        Field::Unknown => return,
        Field::Present(Value::Bool(true)) => return,
        Field::Present(Value::Bool(false)) => format!("`{}` is `false`", path.join(".")),
        Field::Present(v) => match Text::of(v) {
            Some(t) if t.raw == "true" => return,
            Some(t) => format!("`{}` is `{}`", path.join("."), t.shown()),
            None => format!("`{}` is not `true`", path.join(".")),
        },
        Field::Missing => format!(
            "`{}` is not set (EC2 leaves it unencrypted unless the account encrypts new volumes by default)",
            path.join(".")
        ),
    };
    out.push(Hit {
        check: CheckId::EbsEncryption,
        path: path.join("."),
        message: format!("{what} is not encrypted at rest: {problem}"),
        fix: format!("set `{}: true`", path.join(".")),
    });
}

/// A default route (0.0.0.0/0 or ::/0) through an internet gateway: a
/// `gatewayId` that is not a virtual private gateway (`vgw-`); a reference
/// not yet known counts, since the gateway it names is most often an
/// internet gateway.
fn public_route(route: &Value) -> Option<Hit> {
    let default = ["destinationCidrBlock", "destinationIpv6CidrBlock"]
        .into_iter()
        .find_map(|k| match at(route, &[k]) {
            Field::Present(v) => {
                Text::of(v).and_then(|t| WORLD.into_iter().find(|w| *w == t.raw.trim()))
            }
            _ => None,
        })?;
    let gateway = match at(route, &["gatewayId"]) {
        Field::Missing => return None,
        Field::Unknown => "a gateway known after apply".to_string(),
        Field::Present(v) => {
            let t = Text::of(v)?;
            if t.raw.starts_with("vgw-") || t.raw == "local" {
                return None;
            }
            format!("gateway {}", t.shown())
        }
    };
    Some(Hit {
        check: CheckId::PublicRoute,
        path: "gatewayId".into(),
        message: format!("a default route to {default} through {gateway} makes the table's subnets public"),
        fix: "route through a NAT gateway (`natGatewayId`) instead, or add a `public-route` waiver with the reason these subnets are public".into(),
    })
}

/// [`open_security_group`] of one `security_group_rule`.
fn open_security_group_rule(public: &[u16], body: &Value, out: &mut Vec<Hit>) {
    match at(body, &["type"]) {
        Field::Present(v) if Text::of(v).is_some_and(|t| t.raw == "ingress") => {}
        _ => return,
    }
    let Some(cidr) =
        ["cidrBlock", "ipv6CidrBlock"]
            .into_iter()
            .find_map(|k| match at(body, &[k]) {
                Field::Present(v) => Text::of(v)
                    .and_then(|t| WORLD.into_iter().find(|w| *w == t.raw.trim()))
                    .map(|w| (k, w)),
                _ => None,
            })
    else {
        return;
    };
    let Some(ports) = exposed_ports(body) else {
        return;
    };
    if ports.is_public(public) {
        return;
    }
    let list: Vec<String> = public.iter().map(u16::to_string).collect();
    let allowed = if list.is_empty() {
        "no port is public in this environment".to_string()
    } else {
        format!("only {} may be public", list.join(", "))
    };
    out.push(Hit {
        check: CheckId::OpenSecurityGroup,
        path: cidr.0.into(),
        message: format!("the rule opens {ports} to {}; {allowed}", cidr.1),
        fix: "restrict `cidrBlock` to known networks (or use `sourceSecurityGroupId`), or add the port to `policy.publicPorts` if it is meant to be public".into(),
    });
}

fn required_tags(required: &[String], body: &Value, out: &mut Vec<Hit>) {
    let tags = match at(body, &["tags"]) {
        Field::Unknown => return,
        Field::Present(Value::Map(m)) => Some(m),
        _ => None,
    };
    let missing: Vec<&str> = required
        .iter()
        .filter(|k| {
            let v = tags.and_then(|t| t.get(k.as_str()));
            match v {
                None | Some(Value::Null) => true,
                Some(v) => Text::of(v).is_some_and(|t| t.raw.trim().is_empty()),
            }
        })
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return;
    }
    let example: Vec<String> = missing.iter().map(|k| format!("{k}: <value>")).collect();
    out.push(Hit {
        check: CheckId::RequiredTags,
        path: "tags".into(),
        message: format!("missing required tags: {}", missing.join(", ")),
        fix: format!(
            "add `tags: {{ {} }}` to the resource spec",
            example.join(", ")
        ),
    });
}

fn imdsv2(body: &Value, out: &mut Vec<Hit>) {
    let problem = match at(body, &["metadata", "httpTokens"]) {
        Field::Unknown => return,
        Field::Present(v) => match Text::of(v) {
            Some(t) if t.raw == "required" => return,
            Some(t) => format!("metadata.httpTokens is `{}`", t.shown()),
            None => "metadata.httpTokens is not `required`".to_string(),
        },
        Field::Missing => "metadata.httpTokens is not set (AWS defaults to optional)".to_string(),
    };
    out.push(Hit {
        check: CheckId::Imdsv2,
        path: "metadata.httpTokens".into(),
        message: format!("instance metadata service allows IMDSv1: {problem}"),
        fix: "set `metadata: { httpTokens: required }` on the instance".into(),
    });
}

const WORLD: [&str; 2] = ["0.0.0.0/0", "::/0"];

fn open_security_group(public: &[u16], body: &Value, out: &mut Vec<Hit>) {
    let rules = at(body, &["ingress"]).items().unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        let Some((cidr_path, cidr)) = world_cidr(rule) else {
            continue;
        };
        let Some(ports) = exposed_ports(rule) else {
            continue;
        };
        if ports.is_public(public) {
            continue;
        }
        let list: Vec<String> = public.iter().map(u16::to_string).collect();
        let allowed = if list.is_empty() {
            "no port is public in this environment".to_string()
        } else {
            format!("only {} may be public", list.join(", "))
        };
        out.push(Hit {
            check: CheckId::OpenSecurityGroup,
            path: format!("{}.{cidr_path}", index_path("ingress", i)),
            message: format!("ingress rule {i} opens {ports} to {cidr}; {allowed}"),
            fix: "restrict `cidrBlocks` to known networks (or use `sourceSecurityGroupIds`), or add the port to `policy.publicPorts` if it is meant to be public".into(),
        });
    }
}

/// The first world-open CIDR of a rule, with its path inside the rule.
fn world_cidr(rule: &Value) -> Option<(String, &'static str)> {
    for list in ["cidrBlocks", "ipv6CidrBlocks"] {
        let items = at(rule, &[list]).items().unwrap_or_default();
        for (j, c) in items.iter().enumerate() {
            let hit = Text::of(c).and_then(|t| WORLD.into_iter().find(|w| *w == t.raw.trim()));
            if let Some(w) = hit {
                return Some((index_path(list, j), w));
            }
        }
    }
    None
}

/// Which ports a rule opens; `None` when not known or not port based (ICMP).
#[derive(Debug, PartialEq)]
enum Ports {
    All,
    Range(String, i64, i64),
}

impl Ports {
    fn is_public(&self, public: &[u16]) -> bool {
        match self {
            Ports::All => false,
            Ports::Range(_, from, to) => {
                from <= to
                    && (to - from) < 65_536
                    && (*from..=*to).all(|p| u16::try_from(p).is_ok_and(|p| public.contains(&p)))
            }
        }
    }
}

impl std::fmt::Display for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ports::All => f.write_str("all protocols and ports"),
            Ports::Range(proto, a, b) if a == b => write!(f, "{proto} port {a}"),
            Ports::Range(proto, a, b) => write!(f, "{proto} ports {a}-{b}"),
        }
    }
}

fn exposed_ports(rule: &Value) -> Option<Ports> {
    let proto = match at(rule, &["protocol"]) {
        Field::Present(v) => Text::of(v)?.raw.to_ascii_lowercase(),
        Field::Missing => "-1".to_string(),
        Field::Unknown => return None,
    };
    match proto.as_str() {
        "-1" | "all" => Some(Ports::All),
        "icmp" | "icmpv6" | "1" | "58" => None,
        _ => {
            let port = |k: &str| match at(rule, &[k]) {
                Field::Present(Value::Int(n)) => Some(*n),
                _ => None,
            };
            let from = port("fromPort")?;
            let to = port("toPort").unwrap_or(from);
            Some(Ports::Range(proto, from, to))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_are_public_only_when_every_port_is() {
        let r = |a, b| Ports::Range("tcp".into(), a, b);
        assert!(r(443, 443).is_public(&[80, 443]));
        assert!(r(80, 81).is_public(&[80, 81]));
        assert!(!r(80, 443).is_public(&[80, 443]));
        assert!(!r(0, 65535).is_public(&[80, 443]));
        assert!(!Ports::All.is_public(&[80, 443]));
        assert_eq!(r(22, 22).to_string(), "tcp port 22");
        assert_eq!(r(1, 1024).to_string(), "tcp ports 1-1024");
    }
}
