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
        "instance" => imdsv2(body, out),
        "security_group" => open_security_group(&config.public_ports, body, out),
        _ => {}
    }
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
