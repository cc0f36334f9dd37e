//! The value rules of AWS specs: what EC2 would refuse (or silently
//! rewrite) although the field has the right type. The walk and the rules
//! every type shares (tags, secrets) are here, with the checks kinds call
//! (CIDR blocks, addresses, ranges); what applies to one type's fields is
//! its kind's (`kinds/<type>.rs`: `check_string`, `check_int`,
//! `check_object`). One set of rules, run on a body at three points: `validate` on the literal values of each
//! module (`${...}` references count as unknown), `validate` and
//! `plan --offline` on every rendered body (values that came through
//! `${var.*}`, `${input.*}`, `${secret.*}`, ...), and the provider's own
//! [`super::check`] before each plan and apply.
//!
//! Every rule skips [`Value::Unknown`] and values of the wrong type (the
//! structure check reports those), so no problem is reported twice. Each
//! [`Problem`] has the path of the value at fault (the port, the list item,
//! the tag), so the report points at the line where it was written.

use std::net::Ipv4Addr;

use crate::provider::Problem;
use crate::value::{index_path, key_path, Map, Value};

use super::kind::KindSpec;
use super::schema::{Field, Ty};
use super::tags::TAG_MANAGED_BY;

/// The prefix of tidegate's own tags (ownership, fingerprints); with
/// [`TAG_MANAGED_BY`] they are reserved.
pub const RESERVED_TAG_PREFIX: &str = "tidegate:";
/// The prefix AWS reserves for its tags.
pub const AWS_TAG_PREFIX: &str = "aws:";

/// EC2's limits on a tag (characters).
const TAG_KEY_MAX: usize = 128;
const TAG_VALUE_MAX: usize = 256;

/// The smallest and largest prefix EC2 accepts for a VPC or subnet block.
pub(super) const BLOCK_PREFIXES: std::ops::RangeInclusive<u8> = 16..=28;

/// Every value problem of the spec `body` of an AWS resource of kind `k`:
/// the rules every type shares (tags, secrets) and its kind's own
/// ([`KindSpec::check_string`], `check_int`, `check_object`).
pub(super) fn check(k: &dyn KindSpec, body: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    object(k, k.fields(), body, "", &mut out);
    out
}

/// A problem at `path`.
pub(super) fn problem(path: &str, message: String, fix: impl Into<String>) -> Problem {
    Problem::error(path, message, fix)
}

fn object(k: &dyn KindSpec, fs: &[Field], v: &Value, path: &str, out: &mut Vec<Problem>) {
    let Some(m) = v.as_map() else {
        return;
    };
    for (name, child) in m {
        if let Some(field) = fs.iter().find(|f| f.name == name) {
            value(k, field, child, &key_path(path, name), out);
        }
    }
    k.check_object(fs, m, path, out);
}

fn value(k: &dyn KindSpec, field: &Field, v: &Value, path: &str, out: &mut Vec<Problem>) {
    match (&field.ty, v) {
        (_, Value::Unknown(_)) | (Ty::SecretStr, _) => {}
        (Ty::Tags, Value::Map(m)) => tags(m, path, out),
        (_, Value::Sensitive(_)) => out.push(secret(field.name, path)),
        (Ty::Str, Value::String(s)) => k.check_string(field.name, s, path, out),
        (Ty::Int, Value::Int(i)) => k.check_int(field.name, *i, path, out),
        (Ty::StrSet, Value::List(items)) => {
            for (i, item) in items.iter().enumerate() {
                let p = index_path(path, i);
                match item {
                    Value::Sensitive(_) => out.push(secret(field.name, &p)),
                    Value::String(s) => k.check_string(field.name, s, &p, out),
                    _ => {}
                }
            }
        }
        (Ty::Object(fs), _) => object(k, fs, v, path, out),
        (Ty::ObjectSet(fs), Value::List(items)) => {
            for (i, item) in items.iter().enumerate() {
                object(k, fs, item, &index_path(path, i), out);
            }
        }
        _ => {}
    }
}

fn secret(name: &str, path: &str) -> Problem {
    problem(
        path,
        format!("`{name}` cannot hold a secret"),
        "only an instance's `userData` may hold a secret; pass a value that is not secret here",
    )
}

/// An IPv4 address (`privateIp`).
pub(super) fn address(name: &str, s: &str, path: &str, out: &mut Vec<Problem>) {
    if ipv4(s).is_err() {
        out.push(problem(
            path,
            format!("`{name}` `{s}` is not an IPv4 address"),
            "write four numbers from 0 to 255 inside the subnet's block, e.g. 10.0.1.10",
        ));
    }
}

/// A number of `what` in `range`.
pub(super) fn in_range(
    name: &str,
    i: i64,
    range: std::ops::RangeInclusive<i64>,
    what: &str,
    path: &str,
    out: &mut Vec<Problem>,
) {
    if !range.contains(&i) {
        out.push(problem(
            path,
            format!(
                "`{name}` {i} is out of range ({} to {} {what})",
                range.start(),
                range.end()
            ),
            format!("write a number from {} to {}", range.start(), range.end()),
        ));
    }
}

/// Checks one CIDR block; `prefixes` limits the prefix length (VPC and
/// subnet blocks).
pub(super) fn cidr(
    name: &str,
    s: &str,
    prefixes: Option<std::ops::RangeInclusive<u8>>,
    path: &str,
    out: &mut Vec<Problem>,
) {
    let (message, fix) = match parse_cidr(s) {
        Ok((ip, bits)) => {
            let network = network(ip, bits);
            if network != ip {
                (
                    format!("`{name}` `{s}` has host bits set; its network is {network}/{bits}"),
                    format!(
                        "write {network}/{bits}: EC2 keeps the network address, so any other address differs from Git on every plan"
                    ),
                )
            } else if let Some(r) = prefixes.filter(|r| !r.contains(&bits)) {
                (
                    format!(
                        "`{name}` `{s}` is a /{bits} block; EC2 takes /{} to /{} for a VPC or subnet",
                        r.start(),
                        r.end()
                    ),
                    format!(
                        "use a prefix length from {} to {}, e.g. 10.0.0.0/16",
                        r.start(),
                        r.end()
                    ),
                )
            } else {
                return;
            }
        }
        Err(CidrError::Ipv6) => (
            format!("`{name}` `{s}` is an IPv6 block; this field takes IPv4 blocks"),
            "write an IPv4 block such as 10.0.0.0/16 (tidegate does not manage IPv6 addresses yet)"
                .to_string(),
        ),
        Err(CidrError::NoPrefix) => (
            format!("`{name}` `{s}` has no prefix length"),
            format!(
                "write {s}/32 for this one address, or the network and its length (10.0.0.0/16)"
            ),
        ),
        Err(CidrError::Octet(o)) => (
            format!("`{name}` `{s}` is not an IPv4 CIDR block: {o} is not an octet (0 to 255)"),
            "each of the four numbers is from 0 to 255, e.g. 192.0.2.0/24".to_string(),
        ),
        Err(CidrError::Prefix(p)) => (
            format!(
                "`{name}` `{s}` is not an IPv4 CIDR block: /{p} is not a prefix length (0 to 32)"
            ),
            "the number after `/` is from 0 to 32, e.g. 10.0.0.0/16".to_string(),
        ),
        Err(CidrError::Shape) => (
            format!("`{name}` `{s}` is not an IPv4 CIDR block"),
            "write it as a.b.c.d/n, e.g. 10.0.0.0/16".to_string(),
        ),
    };
    out.push(problem(path, message, fix));
}

/// Why a string is not an IPv4 CIDR block.
#[derive(Debug, PartialEq, Eq)]
pub enum CidrError {
    /// Not `a.b.c.d/n` at all.
    Shape,
    /// An IPv6 block (`::/0`).
    Ipv6,
    /// An address without `/n`.
    NoPrefix,
    /// A part of the address over 255 (or not a number).
    Octet(String),
    /// A prefix length over 32 (or not a number).
    Prefix(String),
}

/// Parses `a.b.c.d/n`.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), CidrError> {
    if s.contains(':') {
        return Err(CidrError::Ipv6);
    }
    let Some((ip, bits)) = s.split_once('/') else {
        return Err(match ipv4(s) {
            Ok(_) => CidrError::NoPrefix,
            Err(Some(octet)) => CidrError::Octet(octet),
            Err(None) => CidrError::Shape,
        });
    };
    let ip = match ipv4(ip) {
        Ok(ip) => ip,
        Err(Some(octet)) => return Err(CidrError::Octet(octet)),
        Err(None) => return Err(CidrError::Shape),
    };
    match bits.parse::<u8>() {
        Ok(b) if b <= 32 && !bits.starts_with('+') => Ok((ip, b)),
        _ if !bits.is_empty() && bits.bytes().all(|b| b.is_ascii_digit()) => {
            Err(CidrError::Prefix(bits.to_string()))
        }
        _ => Err(CidrError::Shape),
    }
}

/// True for `a.b.c.d/n` with octets <= 255 and n <= 32.
pub fn is_cidr(s: &str) -> bool {
    parse_cidr(s).is_ok()
}

/// Parses an IPv4 address: `Err(Some(part))` names a part that looks like
/// a number but is not an octet, `Err(None)` a string of another shape.
fn ipv4(s: &str) -> Result<Ipv4Addr, Option<String>> {
    if let Ok(ip) = s.parse::<Ipv4Addr>() {
        return Ok(ip);
    }
    let parts: Vec<&str> = s.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if parts.len() == 4 && parts.iter().all(numeric) {
        if let Some(bad) = parts
            .iter()
            .find(|p| p.parse::<u8>().is_err() || (p.len() > 1 && p.starts_with('0')))
        {
            return Err(Some(bad.to_string()));
        }
    }
    Err(None)
}

fn network(ip: Ipv4Addr, bits: u8) -> Ipv4Addr {
    let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
    Ipv4Addr::from(u32::from(ip) & mask)
}

fn tags(m: &Map, path: &str, out: &mut Vec<Problem>) {
    for (k, v) in m {
        let p = key_path(path, k);
        if k == TAG_MANAGED_BY || k.starts_with(RESERVED_TAG_PREFIX) {
            out.push(problem(
                &p,
                format!("tag `{k}` is reserved for tidegate's ownership tags"),
                "tidegate writes `managed-by` and `tidegate:*` tags itself; give your tag another name (e.g. `owner`)",
            ));
        } else if k.starts_with(AWS_TAG_PREFIX) {
            out.push(problem(
                &p,
                format!("tag `{k}` uses the prefix `aws:`, which AWS reserves"),
                "give the tag a name without `aws:`",
            ));
        } else if k.chars().count() > TAG_KEY_MAX {
            out.push(problem(
                &p,
                format!(
                    "tag name `{k}` is {} characters long; EC2 allows {TAG_KEY_MAX}",
                    k.chars().count()
                ),
                format!("shorten the tag name to at most {TAG_KEY_MAX} characters"),
            ));
        }
        match v {
            Value::Sensitive(_) => out.push(problem(
                &p,
                format!("tag `{k}` would hold a secret"),
                "tags are plain text to anyone who can describe the resource: tag it with something that is not secret (e.g. the secret's name); only an instance's `userData` may hold a secret",
            )),
            Value::String(s) if s.chars().count() > TAG_VALUE_MAX => out.push(problem(
                &p,
                format!(
                    "tag `{k}` is {} characters long; EC2 allows {TAG_VALUE_MAX}",
                    s.chars().count()
                ),
                format!("shorten the value to at most {TAG_VALUE_MAX} characters"),
            )),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensitive::Sensitive;

    fn body(j: serde_json::Value) -> Value {
        Value::from_json(j)
    }

    /// The value problems of `b` as a resource of type `kind` (none for an
    /// unknown type: the structure check names it).
    fn check(kind: &str, b: &Value) -> Vec<Problem> {
        super::super::kinds::find(kind).map_or_else(Vec::new, |k| super::check(k, b))
    }

    fn messages(kind: &str, b: &Value) -> Vec<String> {
        check(kind, b)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    fn sg(rules: serde_json::Value) -> Value {
        body(serde_json::json!({
            "vpcId": "vpc-1", "groupName": "web", "description": "d", "ingress": rules
        }))
    }

    #[test]
    fn cidr_blocks_are_parsed_octet_by_octet() {
        assert_eq!(
            parse_cidr("10.0.0.0/16"),
            Ok((Ipv4Addr::new(10, 0, 0, 0), 16))
        );
        assert_eq!(parse_cidr("0.0.0.0/0"), Ok((Ipv4Addr::UNSPECIFIED, 0)));
        assert_eq!(parse_cidr("banana"), Err(CidrError::Shape));
        assert_eq!(parse_cidr("10.0.0/16"), Err(CidrError::Shape));
        assert_eq!(
            parse_cidr("10.50.0.0/33"),
            Err(CidrError::Prefix("33".into()))
        );
        assert_eq!(parse_cidr("10.50.0.0/"), Err(CidrError::Shape));
        assert_eq!(
            parse_cidr("192.0.256.0/24"),
            Err(CidrError::Octet("256".into()))
        );
        assert_eq!(
            parse_cidr("10.01.0.0/16"),
            Err(CidrError::Octet("01".into()))
        );
        assert_eq!(parse_cidr("10.0.0.1"), Err(CidrError::NoPrefix));
        assert_eq!(parse_cidr("::/0"), Err(CidrError::Ipv6));
        assert_eq!(parse_cidr("2001:db8::/32"), Err(CidrError::Ipv6));
        assert!(is_cidr("255.255.255.255/32"));
        assert!(!is_cidr("10.0.0.0/+8"));
    }

    #[test]
    fn a_rule_cidr_is_checked_like_any_other() {
        let b = sg(serde_json::json!([
            {"protocol": "tcp", "fromPort": 53, "toPort": 53, "cidrBlocks": ["10.0.0.0/8", "192.0.256.0/24"]},
            {"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["banana"]},
            {"protocol": "tcp", "fromPort": 80, "toPort": 80, "cidrBlocks": ["::/0"]},
            {"protocol": "tcp", "fromPort": 80, "toPort": 80, "cidrBlocks": ["10.0.0.1/8"]},
        ]));
        assert_eq!(
            messages("security_group", &b),
            vec![
                "ingress[0].cidrBlocks[1]: `cidrBlocks` `192.0.256.0/24` is not an IPv4 CIDR block: 256 is not an octet (0 to 255)",
                "ingress[1].cidrBlocks[0]: `cidrBlocks` `banana` is not an IPv4 CIDR block",
                "ingress[2].cidrBlocks[0]: `cidrBlocks` `::/0` is an IPv6 block; this field takes IPv4 blocks",
                "ingress[3].cidrBlocks[0]: `cidrBlocks` `10.0.0.1/8` has host bits set; its network is 10.0.0.0/8",
            ]
        );
    }

    #[test]
    fn vpc_subnet_and_route_blocks() {
        let m = |kind: &str, j| messages(kind, &body(j));
        assert_eq!(
            m("vpc", serde_json::json!({"cidrBlock": "10.50.0.0/33"})),
            vec!["cidrBlock: `cidrBlock` `10.50.0.0/33` is not an IPv4 CIDR block: /33 is not a prefix length (0 to 32)"]
        );
        assert_eq!(
            m("vpc", serde_json::json!({"cidrBlock": "10.0.0.0/8"})),
            vec!["cidrBlock: `cidrBlock` `10.0.0.0/8` is a /8 block; EC2 takes /16 to /28 for a VPC or subnet"]
        );
        assert_eq!(
            m(
                "subnet",
                serde_json::json!({"vpcId": "v", "cidrBlock": "10.0.1.0/29"})
            )
            .len(),
            1
        );
        assert!(m(
            "subnet",
            serde_json::json!({"vpcId": "v", "cidrBlock": "10.0.1.0/24"})
        )
        .is_empty());
        let routes = serde_json::json!({"vpcId": "v", "routes": [
            {"destinationCidrBlock": "0.0.0.0/0", "gatewayId": "igw-1"},
            {"destinationCidrBlock": "0.0.0.0/40", "gatewayId": "igw-1"}
        ]});
        assert_eq!(
            m("route_table", routes),
            vec!["routes[1].destinationCidrBlock: `destinationCidrBlock` `0.0.0.0/40` is not an IPv4 CIDR block: /40 is not a prefix length (0 to 32)"]
        );
    }

    #[test]
    fn tcp_and_udp_ports_are_0_to_65535_in_order() {
        let b = sg(serde_json::json!([
            {"protocol": "tcp", "fromPort": 8000, "toPort": 220000, "cidrBlocks": ["10.0.0.0/8"]},
            {"protocol": "udp", "fromPort": 2222, "toPort": 22, "cidrBlocks": ["10.0.0.0/8"]},
            {"protocol": "tcp", "fromPort": -1, "toPort": -1, "cidrBlocks": ["10.0.0.0/8"]},
            {"protocol": "tcp", "fromPort": 443, "cidrBlocks": ["10.0.0.0/8"]},
            {"protocol": "tcp", "fromPort": 0, "toPort": 65535, "cidrBlocks": ["10.0.0.0/8"]},
            {"protocol": "-1", "cidrBlocks": ["10.0.0.0/8"]},
        ]));
        let p = check("security_group", &b);
        let got: Vec<String> = p
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        assert_eq!(
            got,
            vec![
                "ingress[0].toPort: `toPort` 220000 is out of range: tcp ports are 0 to 65535",
                "ingress[1].fromPort: `fromPort` 2222 is above `toPort` 22",
                "ingress[2].fromPort: `fromPort` -1 is out of range: tcp ports are 0 to 65535",
                "ingress[2].toPort: `toPort` -1 is out of range: tcp ports are 0 to 65535",
                "ingress[3]: a tcp rule needs `fromPort` and `toPort`",
            ]
        );
        assert!(
            p[1].fix.contains("fromPort: 22, toPort: 2222"),
            "{}",
            p[1].fix
        );
    }

    #[test]
    fn icmp_ports_are_type_and_code() {
        let b = sg(serde_json::json!([
            {"protocol": "icmp", "fromPort": -1, "toPort": -1, "cidrBlocks": ["10.0.0.0/8"]},
            {"protocol": "icmp", "fromPort": 8, "toPort": 0, "cidrBlocks": ["10.0.0.0/8"]},
            {"protocol": "icmp", "fromPort": 300, "toPort": 0, "cidrBlocks": ["10.0.0.0/8"]},
            {"protocol": "icmp", "cidrBlocks": ["10.0.0.0/8"]},
        ]));
        assert_eq!(
            messages("security_group", &b),
            vec![
                "ingress[2].fromPort: `fromPort` 300 is not an ICMP type (0 to 255, or -1 for all)",
                "ingress[3]: an icmp rule needs `fromPort` (the ICMP type) and `toPort` (the ICMP code)",
            ]
        );
    }

    #[test]
    fn a_rule_needs_a_source_unless_it_is_known_after_apply() {
        let b = sg(serde_json::json!([
            {"protocol": "tcp", "fromPort": 80, "toPort": 80},
            {"protocol": "tcp", "fromPort": 80, "toPort": 80, "cidrBlocks": []},
            {"protocol": "tcp", "fromPort": 80, "toPort": 80, "sourceSecurityGroupIds": ["sg-1"]},
        ]));
        assert_eq!(
            messages("security_group", &b),
            vec![
                "ingress[0]: the rule has no source: neither `cidrBlocks` nor `sourceSecurityGroupIds`",
                "ingress[1].cidrBlocks: the rule has no source: neither `cidrBlocks` nor `sourceSecurityGroupIds`",
            ]
        );
        let mut rule = Map::new();
        rule.insert("protocol".into(), Value::String("tcp".into()));
        rule.insert("fromPort".into(), Value::Unknown("input.port".into()));
        rule.insert("toPort".into(), Value::Int(80));
        rule.insert("cidrBlocks".into(), Value::Unknown("input.cidrs".into()));
        let mut b = Map::new();
        b.insert("ingress".into(), Value::List(vec![Value::Map(rule)]));
        assert_eq!(check("security_group", &Value::Map(b)), vec![]);
    }

    #[test]
    fn reserved_tags_and_secrets_in_tags() {
        let mut tags = Map::new();
        for k in [
            "managed-by",
            "tidegate:resource",
            "aws:cloudformation:stack-name",
            "owner",
        ] {
            tags.insert(k.into(), Value::String("x".into()));
        }
        tags.insert(
            "token".into(),
            Value::Sensitive(Sensitive::from_string("s3cret".into())),
        );
        tags.insert("long".into(), Value::String("v".repeat(257)));
        let mut b = Map::new();
        b.insert("cidrBlock".into(), Value::String("10.0.0.0/16".into()));
        b.insert("tags".into(), Value::Map(tags));
        let p = check("vpc", &Value::Map(b));
        let got: Vec<String> = p
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        assert_eq!(
            got,
            vec![
                "tags.managed-by: tag `managed-by` is reserved for tidegate's ownership tags",
                "tags.tidegate:resource: tag `tidegate:resource` is reserved for tidegate's ownership tags",
                "tags.aws:cloudformation:stack-name: tag `aws:cloudformation:stack-name` uses the prefix `aws:`, which AWS reserves",
                "tags.token: tag `token` would hold a secret",
                "tags.long: tag `long` is 257 characters long; EC2 allows 256",
            ]
        );
        assert!(!p[3].fix.contains("quote"), "{}", p[3].fix);
        assert!(p[3].fix.contains("not secret"), "{}", p[3].fix);
    }

    #[test]
    fn secrets_only_in_user_data() {
        let s = || Value::Sensitive(Sensitive::from_string("x".into()));
        let mut b = Map::new();
        b.insert("ami".into(), Value::String("ami-1".into()));
        b.insert("userData".into(), s());
        b.insert("securityGroupIds".into(), Value::List(vec![s()]));
        b.insert("keyName".into(), s());
        assert_eq!(
            messages("instance", &Value::Map(b)),
            vec![
                "securityGroupIds[0]: `securityGroupIds` cannot hold a secret",
                "keyName: `keyName` cannot hold a secret",
            ]
        );
    }

    #[test]
    fn instance_numbers_addresses_and_names() {
        let b = body(serde_json::json!({
            "ami": "ami-1", "instanceType": "t3.micro", "subnetId": "s", "privateIp": "10.0.1.300",
            "metadata": {"httpTokens": "required", "httpPutResponseHopLimit": 65},
            "rootVolume": {"sizeGiB": 0}
        }));
        assert_eq!(
            messages("instance", &b),
            vec![
                "privateIp: `privateIp` `10.0.1.300` is not an IPv4 address",
                "metadata.httpPutResponseHopLimit: `httpPutResponseHopLimit` 65 is out of range (1 to 64 hops)",
                "rootVolume.sizeGiB: `sizeGiB` 0 is out of range (1 to 16384 GiB)",
            ]
        );
        let b = body(serde_json::json!({"vpcId": "v", "groupName": "sg-web", "description": "d"}));
        assert_eq!(
            messages("security_group", &b),
            vec!["groupName: `groupName` `sg-web` starts with `sg-`"]
        );
        let b = body(serde_json::json!({"keyName": "k", "publicKey": "AAAA"}));
        assert_eq!(
            messages("key_pair", &b),
            vec!["publicKey: `publicKey` is not an OpenSSH public key"]
        );
    }

    #[test]
    fn wrong_types_and_unknown_values_are_left_to_the_structure_check() {
        let b = body(serde_json::json!({
            "cidrBlock": 5, "tags": ["x"], "ingress": "all"
        }));
        assert_eq!(check("vpc", &b), vec![]);
        let mut b = Map::new();
        b.insert("cidrBlock".into(), Value::Unknown("input.cidr".into()));
        assert_eq!(check("vpc", &Value::Map(b)), vec![]);
        assert_eq!(check("load_balancer", &Value::Null), vec![]);
    }
}
