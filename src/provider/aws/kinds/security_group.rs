//! `security_group`: a security group and its rules, authorized and
//! revoked rule by rule (one protocol, port range and source), so unchanged
//! rules never blink. Its name must stay unique in its VPC, so a
//! replacement keeping the name deletes the old group first.
//!
//! Rules a `security_group_rule` resource owns (tagged `managed-by:
//! tidegate` in EC2, any module or environment) are not the group's: its
//! `ingress` and `egress` leave them out and its updates never revoke
//! them. Observe finds them with one DescribeSecurityGroupRules sequence
//! for all listed groups, besides the DescribeSecurityGroups sequence.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{
    Filter, IpPermission, IpRange, ResourceType, SecurityGroup as Ec2Group, SecurityGroupRule, Tag,
    UserIdGroupPair,
};

use crate::provider::aws::calls::{sdk, ApiError};
use crate::provider::aws::kind::{created, Created, Ec2Kind, KindSpec, Seen, Update};
use crate::provider::aws::schema::{f, fixed, req, Field, Ty, TAGS};
use crate::provider::aws::sdk::{attrs, describe, filter, map, no_sdk_retries, s, string_at, Ec2};
use crate::provider::aws::tags;
use crate::provider::aws::values::{cidr, problem};
use crate::provider::{Desired, Problem, Result};
use crate::value::{key_path, Map, Value};

/// The `security_group` kind.
#[derive(Clone, Copy)]
pub(super) struct SecurityGroup;

/// Protocols a rule may name.
pub const PROTOCOLS: &[&str] = &["tcp", "udp", "icmp", "-1"];

const RULE: &[Field] = &[
    req(f("protocol", Ty::Enum(PROTOCOLS))),
    f("fromPort", Ty::Int),
    f("toPort", Ty::Int),
    f("cidrBlocks", Ty::StrSet),
    f("sourceSecurityGroupIds", Ty::StrSet),
    f("description", Ty::Str),
];

const FIELDS: &[Field] = &[
    req(fixed(f("vpcId", Ty::Str))),
    req(fixed(f("groupName", Ty::Str))),
    req(fixed(f("description", Ty::Str))),
    f("ingress", Ty::ObjectSet(RULE)),
    f("egress", Ty::ObjectSet(RULE)),
    TAGS,
];

impl KindSpec for SecurityGroup {
    fn name(&self) -> &'static str {
        "security_group"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn attributes(&self) -> &'static [&'static str] {
        &["id", "groupName"]
    }

    /// Groups go before the subnets and the VPC they live in.
    fn deleted_before(&self) -> &'static [&'static str] {
        &["subnet", "vpc"]
    }

    fn check_string(&self, field: &str, s: &str, path: &str, out: &mut Vec<Problem>) {
        match field {
            "cidrBlocks" => cidr(field, s, None, path, out),
            "groupName" if s.starts_with("sg-") => out.push(problem(
                path,
                format!("`groupName` `{s}` starts with `sg-`"),
                "EC2 keeps the prefix `sg-` for group ids; choose a name without it",
            )),
            _ => {}
        }
    }

    fn check_object(&self, fields: &[Field], m: &Map, path: &str, out: &mut Vec<Problem>) {
        if fields.iter().any(|f| f.name == "protocol") {
            rule(m, path, out);
        }
    }

    fn canonical_set(&self, _field: &str, rules: &Value) -> Value {
        match rule_atoms(rules) {
            Some(atoms) => rules_value(&atoms),
            None => rules.clone(),
        }
    }

    fn destroy_first(&self, desired: &Value, live: &Value) -> Option<String> {
        let same =
            |k: &str| desired.get_path(k).is_some() && desired.get_path(k) == live.get_path(k);
        (same("groupName") && same("vpcId"))
            .then(|| "destroy before create: groupName must stay unique in its VPC".into())
    }
}

/// Where a security group rule lets traffic come from (or go to).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Cidr(String),
    Group(String),
}

/// One security group rule with one source: the unit EC2 authorizes and
/// revokes, and the unit tidegate diffs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleAtom {
    pub protocol: String,
    pub from_port: Option<i64>,
    pub to_port: Option<i64>,
    pub source: Source,
    pub description: Option<String>,
}

/// A rule list split into atoms; `None` while a part is unknown.
pub fn rule_atoms(rules: &Value) -> Option<BTreeSet<RuleAtom>> {
    let Value::List(items) = rules else {
        return Some(BTreeSet::new());
    };
    let mut out = BTreeSet::new();
    for r in items {
        let protocol = r.get_path("protocol")?.as_str()?.to_string();
        let all = protocol == "-1";
        let port = |k: &str| match r.get_path(k) {
            Some(Value::Int(i)) if !all => Some(Some(*i)),
            Some(Value::Unknown(_)) => None,
            _ => Some(None),
        };
        let (from_port, to_port) = (port("fromPort")?, port("toPort")?);
        let description = r
            .get_path("description")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
            .map(str::to_string);
        let strings = |k: &str| -> Option<Vec<String>> {
            match r.get_path(k) {
                Some(Value::List(l)) => l.iter().map(|v| v.as_str().map(str::to_string)).collect(),
                _ => Some(vec![]),
            }
        };
        let sources = strings("cidrBlocks")?.into_iter().map(Source::Cidr).chain(
            strings("sourceSecurityGroupIds")?
                .into_iter()
                .map(Source::Group),
        );
        for source in sources {
            out.insert(RuleAtom {
                protocol: protocol.clone(),
                from_port,
                to_port,
                source,
                description: description.clone(),
            });
        }
    }
    Some(out)
}

/// Atoms grouped back into spec rules by (protocol, ports, description).
pub fn rules_value(atoms: &BTreeSet<RuleAtom>) -> Value {
    type Key = (String, Option<i64>, Option<i64>, Option<String>);
    let mut groups: BTreeMap<Key, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for a in atoms {
        let key = (
            a.protocol.clone(),
            a.from_port,
            a.to_port,
            a.description.clone(),
        );
        let g = groups.entry(key).or_default();
        match &a.source {
            Source::Cidr(c) => g.0.push(c.clone()),
            Source::Group(s) => g.1.push(s.clone()),
        }
    }
    let strings = |l: Vec<String>| Value::List(l.into_iter().map(Value::String).collect());
    Value::List(
        groups
            .into_iter()
            .map(|((protocol, from, to, description), (cidrs, sgs))| {
                let mut m = Map::new();
                m.insert("protocol".into(), Value::String(protocol));
                if let (Some(f), Some(t)) = (from, to) {
                    m.insert("fromPort".into(), Value::Int(f));
                    m.insert("toPort".into(), Value::Int(t));
                }
                if !cidrs.is_empty() {
                    m.insert("cidrBlocks".into(), strings(cidrs));
                }
                if !sgs.is_empty() {
                    m.insert("sourceSecurityGroupIds".into(), strings(sgs));
                }
                if let Some(d) = description {
                    m.insert("description".into(), Value::String(d));
                }
                Value::Map(m)
            })
            .collect(),
    )
}

/// A security group rule: its ports for its protocol, and a source.
fn rule(m: &Map, path: &str, out: &mut Vec<Problem>) {
    check_ports(m, path, out);
    let has = |k: &str| match m.get(k) {
        None | Some(Value::Null) => false,
        Some(Value::List(l)) => !l.is_empty(),
        Some(_) => true,
    };
    if !has("cidrBlocks") && !has("sourceSecurityGroupIds") {
        // At the empty list when there is one: that is what to fill in.
        let at = ["cidrBlocks", "sourceSecurityGroupIds"]
            .into_iter()
            .find(|k| m.contains_key(*k))
            .map_or_else(|| path.to_string(), |k| key_path(path, k));
        out.push(problem(
            &at,
            "the rule has no source: neither `cidrBlocks` nor `sourceSecurityGroupIds`".into(),
            "add `cidrBlocks: [..]` (addresses) or `sourceSecurityGroupIds: [..]` (other security groups)",
        ));
    }
}

/// The ports of a rule (`protocol`, `fromPort`, `toPort` of `m`) for its
/// protocol: a group's inline rule and a `security_group_rule` alike.
pub(super) fn check_ports(m: &Map, path: &str, out: &mut Vec<Problem>) {
    let port = |k: &str| match m.get(k) {
        Some(Value::Int(i)) => Port::Number(*i),
        None | Some(Value::Null) => Port::Missing,
        Some(_) => Port::Other,
    };
    let (from, to) = (port("fromPort"), port("toPort"));
    match m.get("protocol").and_then(Value::as_str) {
        Some(protocol @ ("tcp" | "udp")) => {
            let bounds = 0..=65535;
            let mut in_range = true;
            for (name, p) in [("fromPort", from), ("toPort", to)] {
                if let Port::Number(n) = p {
                    if !bounds.contains(&n) {
                        in_range = false;
                        out.push(problem(
                            &key_path(path, name),
                            format!("`{name}` {n} is out of range: {protocol} ports are 0 to 65535"),
                            "write a port from 0 to 65535 (fromPort: 0 and toPort: 65535 for every port)",
                        ));
                    }
                }
            }
            match (from, to) {
                (Port::Number(a), Port::Number(b)) if in_range && a > b => out.push(problem(
                    &key_path(path, "fromPort"),
                    format!("`fromPort` {a} is above `toPort` {b}"),
                    format!(
                        "a range runs from the lower port to the higher (fromPort: {b}, toPort: {a}); for one port write it twice"
                    ),
                )),
                (Port::Missing, _) | (_, Port::Missing) => out.push(problem(
                    path,
                    format!("a {protocol} rule needs `fromPort` and `toPort`"),
                    "add both ports (the same number twice for a single port)",
                )),
                _ => {}
            }
        }
        Some("icmp") => {
            for (name, p, what) in [("fromPort", from, "type"), ("toPort", to, "code")] {
                if let Port::Number(n) = p {
                    if !(-1..=255).contains(&n) {
                        out.push(problem(
                            &key_path(path, name),
                            format!("`{name}` {n} is not an ICMP {what} (0 to 255, or -1 for all)"),
                            format!("write the ICMP {what} from 0 to 255, or -1 for all"),
                        ));
                    }
                }
            }
            if matches!(from, Port::Missing) || matches!(to, Port::Missing) {
                out.push(problem(
                    path,
                    "an icmp rule needs `fromPort` (the ICMP type) and `toPort` (the ICMP code)"
                        .into(),
                    "write -1 for both to allow every ICMP type and code",
                ));
            }
        }
        _ => {}
    }
}

#[derive(Clone, Copy)]
enum Port {
    Number(i64),
    Missing,
    /// Unknown until apply, or of the wrong type (reported elsewhere).
    Other,
}

/// Rule atoms of one direction of a security group as EC2 describes it.
pub fn permission_atoms(perms: &[IpPermission]) -> Vec<RuleAtom> {
    let mut out = Vec::new();
    for p in perms {
        let protocol = p.ip_protocol().unwrap_or("-1").to_string();
        let all = protocol == "-1";
        let port = |v: Option<i32>| if all { None } else { v.map(i64::from) };
        let (from_port, to_port) = (port(p.from_port()), port(p.to_port()));
        let desc = |d: Option<&str>| d.filter(|d| !d.is_empty()).map(str::to_string);
        for r in p.ip_ranges() {
            if let Some(c) = r.cidr_ip() {
                out.push(RuleAtom {
                    protocol: protocol.clone(),
                    from_port,
                    to_port,
                    source: Source::Cidr(c.into()),
                    description: desc(r.description()),
                });
            }
        }
        for g in p.user_id_group_pairs() {
            if let Some(id) = g.group_id() {
                out.push(RuleAtom {
                    protocol: protocol.clone(),
                    from_port,
                    to_port,
                    source: Source::Group(id.into()),
                    description: desc(g.description()),
                });
            }
        }
    }
    out
}

/// The permission EC2 authorizes or revokes for one atom.
fn permission(a: &RuleAtom) -> IpPermission {
    let mut b = IpPermission::builder().ip_protocol(&a.protocol);
    if let (Some(f), Some(t)) = (a.from_port, a.to_port) {
        b = b.from_port(f as i32).to_port(t as i32);
    }
    match &a.source {
        Source::Cidr(c) => b.ip_ranges(
            IpRange::builder()
                .cidr_ip(c)
                .set_description(a.description.clone())
                .build(),
        ),
        Source::Group(g) => b.user_id_group_pairs(
            UserIdGroupPair::builder()
                .group_id(g)
                .set_description(a.description.clone())
                .build(),
        ),
    }
    .build()
}

/// A security group as observe lists it: EC2's description and the rules
/// of it that `security_group_rule` resources own.
pub(super) struct Item {
    group: Ec2Group,
    /// (egress, rule) of each separately owned rule, without description.
    separate: Vec<(bool, RuleAtom)>,
}

/// The rule a described `security_group_rule` stands for (description
/// left out: EC2 holds one permission per protocol, ports and source).
pub(super) fn separate_atom(r: &SecurityGroupRule) -> Option<(bool, RuleAtom)> {
    let protocol = r.ip_protocol().unwrap_or("-1").to_string();
    let all = protocol == "-1";
    let port = |v: Option<i32>| if all { None } else { v.map(i64::from) };
    let source = match (
        r.cidr_ipv4(),
        r.referenced_group_info().and_then(|g| g.group_id()),
    ) {
        (Some(c), _) => Source::Cidr(c.to_string()),
        (None, Some(g)) => Source::Group(g.to_string()),
        (None, None) => return None,
    };
    Some((
        r.is_egress() == Some(true),
        RuleAtom {
            protocol,
            from_port: port(r.from_port()),
            to_port: port(r.to_port()),
            source,
            description: None,
        },
    ))
}

/// The rules of one direction of a group that are the group's own: all
/// but those a `security_group_rule` owns.
fn inline_atoms(sg: &Item, egress: bool) -> BTreeSet<RuleAtom> {
    let perms = if egress {
        sg.group.ip_permissions_egress()
    } else {
        sg.group.ip_permissions()
    };
    permission_atoms(perms)
        .into_iter()
        .filter(|a| {
            !sg.separate.iter().any(|(e, s)| {
                *e == egress
                    && s.protocol == a.protocol
                    && s.from_port == a.from_port
                    && s.to_port == a.to_port
                    && s.source == a.source
            })
        })
        .collect()
}

/// Authorizes and revokes the rules of one direction (`ingress` or
/// `egress`) rule by rule, so unchanged rules never blink.
async fn update_rules(p: &Ec2, id: &str, field: &str, d: &Value, sg: &Item) -> Result<()> {
    let want = rule_atoms(d.get_path(field).unwrap_or(&Value::Null)).unwrap_or_default();
    let ingress = field == "ingress";
    let have = inline_atoms(sg, !ingress);
    let revoke: Vec<IpPermission> = have.difference(&want).map(permission).collect();
    let grant: Vec<IpPermission> = want.difference(&have).map(permission).collect();
    let c = &p.client;
    if !revoke.is_empty() {
        let revoke = Some(revoke);
        if ingress {
            p.call("RevokeSecurityGroupIngress", || async {
                sdk(c
                    .revoke_security_group_ingress()
                    .group_id(id)
                    .set_ip_permissions(revoke.clone())
                    .send()
                    .await)
            })
            .await?;
        } else {
            p.call("RevokeSecurityGroupEgress", || async {
                sdk(c
                    .revoke_security_group_egress()
                    .group_id(id)
                    .set_ip_permissions(revoke.clone())
                    .send()
                    .await)
            })
            .await?;
        }
    }
    if !grant.is_empty() {
        let grant = Some(grant);
        if ingress {
            p.call("AuthorizeSecurityGroupIngress", || async {
                sdk(c
                    .authorize_security_group_ingress()
                    .group_id(id)
                    .set_ip_permissions(grant.clone())
                    .send()
                    .await)
            })
            .await?;
        } else {
            p.call("AuthorizeSecurityGroupEgress", || async {
                sdk(c
                    .authorize_security_group_egress()
                    .group_id(id)
                    .set_ip_permissions(grant.clone())
                    .send()
                    .await)
            })
            .await?;
        }
    }
    Ok(())
}

/// The rules of `groups` that `security_group_rule` resources own (tagged
/// `managed-by: tidegate`): one DescribeSecurityGroupRules sequence (one
/// per 200 groups, EC2's limit of filter values), none without groups.
async fn separate_rules(p: &Ec2, groups: &[Ec2Group]) -> Result<Vec<SecurityGroupRule>, ApiError> {
    let ids: Vec<&str> = groups.iter().filter_map(|g| g.group_id()).collect();
    let mut out = Vec::new();
    for chunk in ids.chunks(200) {
        let filters = vec![
            filter("group-id", chunk),
            filter(&format!("tag:{}", tags::TAG_MANAGED_BY), &[tags::MANAGER]),
        ];
        let pages = describe(p, "DescribeSecurityGroupRules", || {
            p.client
                .describe_security_group_rules()
                .set_filters(Some(filters.clone()))
                .into_paginator()
                .send()
                .try_collect()
        })
        .await?;
        out.extend(
            pages
                .into_iter()
                .flat_map(|o| o.security_group_rules.unwrap_or_default()),
        );
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Ec2Kind for SecurityGroup {
    type Item = Item;

    fn id_filter(&self) -> &'static str {
        "group-id"
    }

    async fn describe(&self, p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Self::Item>, ApiError> {
        let pages = describe(p, "DescribeSecurityGroups", || {
            p.client
                .describe_security_groups()
                .set_filters(Some(filters.clone()))
                .into_paginator()
                .send()
                .try_collect()
        })
        .await?;
        let groups: Vec<Ec2Group> = pages
            .into_iter()
            .flat_map(|o| o.security_groups.unwrap_or_default())
            .collect();
        let rules = separate_rules(p, &groups).await?;
        Ok(groups
            .into_iter()
            .map(|group| {
                let separate = rules
                    .iter()
                    .filter(|r| r.group_id().is_some() && r.group_id() == group.group_id())
                    .filter_map(separate_atom)
                    .collect();
                Item { group, separate }
            })
            .collect())
    }

    fn id<'a>(&self, v: &'a Self::Item) -> Option<&'a str> {
        v.group.group_id()
    }

    fn tags<'a>(&self, v: &'a Self::Item) -> &'a [Tag] {
        v.group.tags()
    }

    fn normalise(&self, sg: &Self::Item, seen: Seen<'_>) -> (Value, Map) {
        let v = &sg.group;
        let rules = |egress: bool| rules_value(&inline_atoms(sg, egress));
        let attributes = attrs(vec![
            ("id", seen.id_value()),
            ("groupName", s(v.group_name())),
        ]);
        let body = map(vec![
            ("vpcId", s(v.vpc_id())),
            ("groupName", s(v.group_name())),
            ("description", s(v.description())),
            ("ingress", rules(false)),
            ("egress", rules(true)),
            ("tags", seen.user_tags),
        ]);
        (body, attributes)
    }

    async fn create(
        &self,
        p: &Ec2,
        desired: &Desired,
        d: &Value,
        _token: &str,
    ) -> Result<Created, ApiError> {
        let o = sdk(p
            .client
            .create_security_group()
            .set_vpc_id(string_at(d, "vpcId"))
            .set_group_name(string_at(d, "groupName"))
            .set_description(string_at(d, "description"))
            .tag_specifications(p.tag_spec(ResourceType::SecurityGroup, desired, d, vec![]))
            .customize()
            .config_override(no_sdk_retries())
            .send()
            .await)?;
        created(self.name(), o.group_id)
    }

    async fn update(&self, p: &Ec2, u: &Update<'_>, sg: &Self::Item) -> Result<()> {
        for field in &u.fields {
            if !matches!(*field, "ingress" | "egress") {
                return Err(u.unchangeable(field));
            }
            update_rules(p, u.id, field, u.d, sg).await?;
        }
        Ok(())
    }

    async fn delete(&self, p: &Ec2, id: &str, _v: &Self::Item) -> Result<(), ApiError> {
        p.send("DeleteSecurityGroup", false, || async {
            sdk(p.client.delete_security_group().group_id(id).send().await).map(|_| ())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::aws::kind::raw;
    use crate::provider::aws::observe::to_live;
    use crate::provider::Owner;

    fn tag(k: &str, v: &str) -> Tag {
        Tag::builder().key(k).value(v).build()
    }

    #[test]
    fn security_groups_normalise_into_the_spec_shape() {
        let tags = vec![
            tag("managed-by", "tidegate"),
            tag("tidegate:project", "shop"),
            tag("tidegate:environment", "dev"),
            tag("tidegate:module", "network"),
            tag("tidegate:resource", "network.web"),
            tag("owner", "team"),
        ];
        let sg = Ec2Group::builder()
            .group_id("sg-1")
            .group_name("web")
            .description("d")
            .vpc_id("vpc-1")
            .set_tags(Some(tags))
            .ip_permissions(
                IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(443)
                    .to_port(443)
                    .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                    .user_id_group_pairs(UserIdGroupPair::builder().group_id("sg-2").build())
                    .build(),
            )
            .ip_permissions_egress(
                IpPermission::builder()
                    .ip_protocol("-1")
                    .from_port(-1)
                    .to_port(-1)
                    .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                    .build(),
            )
            .ip_permissions(
                IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(22)
                    .to_port(22)
                    .ip_ranges(
                        IpRange::builder()
                            .cidr_ip("10.0.0.0/8")
                            .description("ssh from the office")
                            .build(),
                    )
                    .build(),
            )
            .build();
        // A rule of another module's `security_group_rule` on this group:
        // not the group's own.
        let separate = SecurityGroupRule::builder()
            .group_id("sg-1")
            .is_egress(false)
            .ip_protocol("tcp")
            .from_port(22)
            .to_port(22)
            .cidr_ipv4("10.0.0.0/8")
            .description("ssh from the office")
            .build();
        let item = Item {
            separate: separate_atom(&separate).into_iter().collect(),
            group: sg,
        };
        let raw = raw(SecurityGroup, item, "eu-west-1").unwrap();
        let live = to_live(&raw, &Owner::new("shop", "dev")).unwrap();
        assert_eq!(live.id.to_string(), "network.web");
        assert_eq!(
            live.body.to_json_masked(),
            serde_json::json!({
                "vpcId": "vpc-1", "groupName": "web", "description": "d",
                "ingress": [{"protocol": "tcp", "fromPort": 443, "toPort": 443,
                             "cidrBlocks": ["0.0.0.0/0"], "sourceSecurityGroupIds": ["sg-2"]}],
                "egress": [{"protocol": "-1", "cidrBlocks": ["0.0.0.0/0"]}],
                "tags": {"owner": "team"}
            })
        );
        assert_eq!(live.attributes["groupName"], Value::String("web".into()));
    }

    #[test]
    fn names_that_must_stay_unique_destroy_first() {
        let d = Value::from_json(
            serde_json::json!({"vpcId": "v", "groupName": "web", "description": "new"}),
        );
        let l = Value::from_json(
            serde_json::json!({"vpcId": "v", "groupName": "web", "description": "old"}),
        );
        assert!(SecurityGroup.destroy_first(&d, &l).is_some());
        let d2 = Value::from_json(
            serde_json::json!({"vpcId": "v", "groupName": "web2", "description": "new"}),
        );
        assert!(SecurityGroup.destroy_first(&d2, &l).is_none());
        let vpc = crate::provider::aws::kinds::find("vpc").unwrap();
        assert!(vpc.destroy_first(&d, &l).is_none());
    }

    #[test]
    fn rule_atoms_become_single_source_permissions() {
        let a = RuleAtom {
            protocol: "-1".into(),
            from_port: None,
            to_port: None,
            source: Source::Group("sg-1".into()),
            description: Some("all".into()),
        };
        let p = permission(&a);
        assert_eq!(p.ip_protocol(), Some("-1"));
        assert_eq!(p.from_port(), None);
        assert_eq!(p.user_id_group_pairs()[0].group_id(), Some("sg-1"));
    }

    #[test]
    fn rules_written_apart_or_together_are_the_same_set() {
        let apart = Value::from_json(serde_json::json!([
            {"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["10.0.0.0/8"]},
            {"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["0.0.0.0/0"]}
        ]));
        let together = Value::from_json(serde_json::json!([
            {"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["0.0.0.0/0", "10.0.0.0/8"]}
        ]));
        assert_eq!(
            SecurityGroup.canonical_set("ingress", &apart),
            SecurityGroup.canonical_set("ingress", &together)
        );
        assert_eq!(rule_atoms(&apart).map(|a| a.len()), Some(2));
    }
}
