//! `network_acl`: a network ACL of a VPC, its numbered entries (created,
//! replaced and deleted one by one, keyed by rule number and direction)
//! and the subnets it guards. The default `*` entries (rule 32767) are
//! EC2's and left out. A subnet belongs to exactly one ACL: one added here
//! is moved from wherever it was (ReplaceNetworkAclAssociation), one
//! removed goes back to its VPC's default ACL.
//!
//! # Guarantees
//! - CreateNetworkAcl carries a ClientToken and tags the ACL at creation;
//!   a token naming an ACL deleted since is sent once more, salted.
//! - One DescribeNetworkAcls sequence per observe. A read by id names the
//!   ACL in `NetworkAclIds` (moto 5.2.5 implements no `network-acl-id`
//!   filter; EC2 takes both).
//! - A delete moves the ACL's subnets back to the default ACL first, so
//!   DeleteNetworkAcl never fails on an association.
//! - Protocols compare by name: EC2 answers numbers (`6`), a spec may write
//!   either (`tcp` or `6`).

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    Filter, IcmpTypeCode, NetworkAcl as Item, NetworkAclEntry, PortRange, ResourceType, RuleAction,
    Tag,
};

use crate::provider::aws::calls::{sdk, ApiError};
use crate::provider::aws::kind::{created, Created, Ec2Kind, KindSpec, Seen, Update};
use crate::provider::aws::schema::{f, fixed, req, Field, Ty, TAGS};
use crate::provider::aws::sdk::{
    attrs, bool_at, describe, filter, int, map, no_sdk_retries, none_when_gone, s, str_at,
    string_at, strings, strs, take_filter, Ec2,
};
use crate::provider::aws::values::{cidr, problem};
use crate::provider::{Desired, Problem, Result};
use crate::value::{index_path, key_path, Map, Value};

/// The `network_acl` kind.
#[derive(Clone, Copy)]
pub(super) struct NetworkAcl;

const ENTRY: &[Field] = &[
    req(f("ruleNumber", Ty::Int)),
    req(f("egress", Ty::Bool)),
    req(f("protocol", Ty::Str)),
    req(f("ruleAction", Ty::Enum(&["allow", "deny"]))),
    req(f("cidrBlock", Ty::Str)),
    f("fromPort", Ty::Int),
    f("toPort", Ty::Int),
];

const FIELDS: &[Field] = &[
    req(fixed(f("vpcId", Ty::Str))),
    f("entries", Ty::ObjectSet(ENTRY)),
    f("subnetIds", Ty::StrSet),
    TAGS,
];

/// The id filter, sent as `NetworkAclIds`.
const ID_FILTER: &str = "network-acl-id";

/// EC2's own catch-all entry, in every ACL.
const DEFAULT_RULE: i32 = 32767;

/// The name of protocol `p` (`6` → `tcp`), `-1` for all.
fn protocol_name(p: &str) -> &str {
    match p {
        "6" => "tcp",
        "17" => "udp",
        "1" => "icmp",
        "all" => "-1",
        other => other,
    }
}

impl KindSpec for NetworkAcl {
    fn name(&self) -> &'static str {
        "network_acl"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn attributes(&self) -> &'static [&'static str] {
        &["id"]
    }

    /// It guards its subnets and lives in its VPC.
    fn deleted_before(&self) -> &'static [&'static str] {
        &["subnet", "vpc"]
    }

    fn check_string(&self, field: &str, s: &str, path: &str, out: &mut Vec<Problem>) {
        match field {
            "cidrBlock" => cidr(field, s, None, path, out),
            "protocol" => {
                let named = matches!(protocol_name(s), "tcp" | "udp" | "icmp" | "-1");
                let number = s.parse::<u8>().is_ok() && !s.starts_with('+');
                if !named && !number {
                    out.push(problem(
                        path,
                        format!("`protocol` `{s}` is not a protocol"),
                        "write tcp, udp, icmp, \"-1\" (every protocol) or a protocol number from 0 to 255",
                    ));
                }
            }
            _ => {}
        }
    }

    fn check_int(&self, field: &str, i: i64, path: &str, out: &mut Vec<Problem>) {
        if field == "ruleNumber" && !(1..=32766).contains(&i) {
            out.push(problem(
                path,
                format!(
                    "`ruleNumber` {i} is out of range (1 to 32766; 32767 is EC2's default entry)"
                ),
                "write a number from 1 to 32766; EC2 evaluates entries from the lowest",
            ));
        }
    }

    fn check_object(&self, fields: &[Field], m: &Map, path: &str, out: &mut Vec<Problem>) {
        if fields.iter().any(|f| f.name == "ruleNumber") {
            entry(m, path, out);
        } else if path.is_empty() {
            unique_rule_numbers(m, out);
        }
    }

    /// Entries with protocol names, sorted by direction and rule number.
    fn canonical_set(&self, _field: &str, entries: &Value) -> Value {
        let Value::List(items) = entries else {
            return entries.clone();
        };
        let mut out: Vec<Value> = items
            .iter()
            .map(|e| {
                let mut e = e.clone();
                if let Value::Map(m) = &mut e {
                    if let Some(Value::String(p)) = m.get("protocol") {
                        let name = protocol_name(p).to_string();
                        m.insert("protocol".into(), Value::String(name));
                    }
                }
                e
            })
            .collect();
        out.sort_by_key(|e| {
            (
                bool_at(e, "egress").unwrap_or(false),
                match e.get_path("ruleNumber") {
                    Some(Value::Int(i)) => *i,
                    _ => i64::MAX,
                },
            )
        });
        out.dedup();
        Value::List(out)
    }

    fn resalt_when_invisible(&self) -> bool {
        true
    }
}

/// The ports of one entry for its protocol.
fn entry(m: &Map, path: &str, out: &mut Vec<Problem>) {
    let port = |k: &str| match m.get(k) {
        Some(Value::Int(i)) => Some(Some(*i)),
        None | Some(Value::Null) => Some(None),
        // Unknown, or of the wrong type (reported elsewhere).
        Some(_) => None,
    };
    let (Some(from), Some(to)) = (port("fromPort"), port("toPort")) else {
        return;
    };
    match m.get("protocol").and_then(Value::as_str).map(protocol_name) {
        Some(protocol @ ("tcp" | "udp")) => match (from, to) {
            (Some(a), Some(b)) => {
                for (name, n) in [("fromPort", a), ("toPort", b)] {
                    if !(0..=65535).contains(&n) {
                        out.push(problem(
                            &key_path(path, name),
                            format!("`{name}` {n} is out of range: {protocol} ports are 0 to 65535"),
                            "write a port from 0 to 65535 (fromPort: 0 and toPort: 65535 for every port)",
                        ));
                        return;
                    }
                }
                if a > b {
                    out.push(problem(
                        &key_path(path, "fromPort"),
                        format!("`fromPort` {a} is above `toPort` {b}"),
                        format!("a range runs from the lower port to the higher (fromPort: {b}, toPort: {a})"),
                    ));
                }
            }
            _ => out.push(problem(
                path,
                format!("a {protocol} entry needs `fromPort` and `toPort`"),
                "add both ports (the same number twice for a single port)",
            )),
        },
        Some("icmp") => match (from, to) {
            (Some(t), Some(c)) => {
                for (name, n, what) in [("fromPort", t, "type"), ("toPort", c, "code")] {
                    if !(-1..=255).contains(&n) {
                        out.push(problem(
                            &key_path(path, name),
                            format!("`{name}` {n} is not an ICMP {what} (0 to 255, or -1 for all)"),
                            format!("write the ICMP {what} from 0 to 255, or -1 for all"),
                        ));
                    }
                }
            }
            _ => out.push(problem(
                path,
                "an icmp entry needs `fromPort` (the ICMP type) and `toPort` (the ICMP code)"
                    .into(),
                "write -1 for both to match every ICMP type and code",
            )),
        },
        Some("-1") if from.is_some() || to.is_some() => out.push(problem(
            path,
            "an entry of every protocol (\"-1\") takes no ports: EC2 ignores them".into(),
            "remove `fromPort` and `toPort`, or name the protocol (tcp, udp)",
        )),
        _ => {}
    }
}

/// Two entries of one direction cannot share a rule number.
fn unique_rule_numbers(m: &Map, out: &mut Vec<Problem>) {
    let Some(Value::List(entries)) = m.get("entries") else {
        return;
    };
    let mut seen: BTreeMap<(bool, i64), usize> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        let (Some(Value::Int(n)), Some(Value::Bool(egress))) =
            (e.get_path("ruleNumber"), e.get_path("egress"))
        else {
            continue;
        };
        if let Some(first) = seen.insert((*egress, *n), i) {
            let direction = if *egress { "egress" } else { "ingress" };
            out.push(problem(
                &index_path("entries", i),
                format!("{direction} rule {n} is written twice (also at entries[{first}])"),
                "give each entry of a direction its own `ruleNumber`; EC2 evaluates them in order",
            ));
        }
    }
}

/// The entries of a body by (egress, rule number).
fn entries(v: &Value) -> BTreeMap<(bool, i64), &Value> {
    match v.get_path("entries") {
        Some(Value::List(l)) => l
            .iter()
            .filter_map(|e| {
                let n = match e.get_path("ruleNumber") {
                    Some(Value::Int(n)) => *n,
                    _ => return None,
                };
                Some(((bool_at(e, "egress")?, n), e))
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// EC2's protocol value of an entry: a number (`tcp` → `6`).
fn protocol_number(e: &Value) -> String {
    match str_at(e, "protocol").map(protocol_name) {
        Some("tcp") => "6".into(),
        Some("udp") => "17".into(),
        Some("icmp") => "1".into(),
        Some(other) => other.into(),
        None => "-1".into(),
    }
}

/// The port range or ICMP type and code of an entry.
fn ports(e: &Value) -> (Option<PortRange>, Option<IcmpTypeCode>) {
    let (from, to) = (int(e.get_path("fromPort")), int(e.get_path("toPort")));
    match str_at(e, "protocol").map(protocol_name) {
        Some("tcp" | "udp") => (
            Some(PortRange::builder().set_from(from).set_to(to).build()),
            None,
        ),
        Some("icmp") => (
            None,
            Some(IcmpTypeCode::builder().set_type(from).set_code(to).build()),
        ),
        _ => (None, None),
    }
}

/// One CreateNetworkAclEntry or ReplaceNetworkAclEntry of entry `e`.
macro_rules! entry_call {
    ($builder:expr, $id:expr, $e:expr) => {{
        let (range, icmp) = ports($e);
        $builder
            .network_acl_id($id)
            .set_rule_number(int($e.get_path("ruleNumber")))
            .set_egress(bool_at($e, "egress"))
            .protocol(protocol_number($e))
            .set_rule_action(str_at($e, "ruleAction").map(RuleAction::from))
            .set_cidr_block(string_at($e, "cidrBlock"))
            .set_port_range(range)
            .set_icmp_type_code(icmp)
            .send()
            .await
            .map(|_| ())
    }};
}

/// Creates, replaces and deletes entries until the live ones are `d`'s.
async fn update_entries(p: &Ec2, id: &str, d: &Value, live: &Value) -> Result<()> {
    // `d` is canonical: protocol names, as observed.
    let (want, have) = (entries(d), entries(live));
    let c = &p.client;
    for (key, e) in &want {
        match have.get(key) {
            Some(old) if old == e => {}
            Some(_) => {
                p.call("ReplaceNetworkAclEntry", || async {
                    sdk(entry_call!(c.replace_network_acl_entry(), id, *e))
                })
                .await?
            }
            None => {
                p.call("CreateNetworkAclEntry", || async {
                    sdk(entry_call!(c.create_network_acl_entry(), id, *e))
                })
                .await?
            }
        }
    }
    for (egress, n) in have.keys().filter(|k| !want.contains_key(*k)) {
        p.call("DeleteNetworkAclEntry", || async {
            sdk(c
                .delete_network_acl_entry()
                .network_acl_id(id)
                .egress(*egress)
                .rule_number(*n as i32)
                .send()
                .await)
        })
        .await?;
    }
    Ok(())
}

/// The subnet associations of an ACL: subnet id and association id.
fn associations(acl: &Item) -> Vec<(&str, &str)> {
    acl.associations()
        .iter()
        .filter_map(|a| Some((a.subnet_id()?, a.network_acl_association_id()?)))
        .collect()
}

/// The default ACL of `vpc`.
async fn default_acl(p: &Ec2, vpc: &str) -> Result<String, ApiError> {
    let o = p
        .send("DescribeNetworkAcls", false, || async {
            sdk(p
                .client
                .describe_network_acls()
                .filters(filter("vpc-id", &[vpc]))
                .filters(filter("default", &["true"]))
                .send()
                .await)
        })
        .await?;
    o.network_acls()
        .iter()
        .find_map(|a| a.network_acl_id())
        .map(str::to_string)
        .ok_or_else(|| ApiError {
            code: None,
            message: format!("EC2 shows no default network ACL of {vpc}"),
            transport: false,
            unreached: None,
        })
}

/// Moves the subnet association `association` to ACL `to`.
async fn move_association(p: &Ec2, association: &str, to: &str) -> Result<(), ApiError> {
    p.send("ReplaceNetworkAclAssociation", false, || async {
        sdk(p
            .client
            .replace_network_acl_association()
            .association_id(association)
            .network_acl_id(to)
            .send()
            .await)
        .map(|_| ())
    })
    .await
}

/// Moves subnets here from their ACLs, and those `d` drops back to the
/// VPC's default ACL.
async fn update_subnets(p: &Ec2, id: &str, d: &Value, acl: &Item) -> Result<()> {
    let want = strs(d, "subnetIds");
    let have = associations(acl);
    let gone: Vec<&str> = have
        .iter()
        .filter(|(s, _)| !want.iter().any(|w| w == s))
        .map(|(_, a)| *a)
        .collect();
    if !gone.is_empty() {
        let vpc = acl.vpc_id().unwrap_or_default();
        let default = default_acl(p, vpc)
            .await
            .map_err(|e| e.into_error("DescribeNetworkAcls"))?;
        for a in gone {
            move_association(p, a, &default)
                .await
                .map_err(|e| e.into_error("ReplaceNetworkAclAssociation"))?;
        }
    }
    let new: Vec<&str> = want
        .iter()
        .filter(|w| !have.iter().any(|(s, _)| s == w))
        .map(String::as_str)
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    // Where each new subnet is now (every subnet has one ACL).
    let o = p
        .call("DescribeNetworkAcls", || async {
            sdk(p
                .client
                .describe_network_acls()
                .filters(filter("association.subnet-id", &new))
                .send()
                .await)
        })
        .await?;
    for subnet in new {
        let association = o
            .network_acls()
            .iter()
            .flat_map(|a| a.associations())
            .find(|a| a.subnet_id() == Some(subnet))
            .and_then(|a| a.network_acl_association_id());
        let Some(association) = association else {
            return Err(ApiError {
                code: Some("InvalidSubnetID.NotFound".into()),
                message: format!("subnet {subnet} has no network ACL association"),
                transport: false,
                unreached: None,
            }
            .into_error("ReplaceNetworkAclAssociation"));
        };
        p.call("ReplaceNetworkAclAssociation", || async {
            sdk(p
                .client
                .replace_network_acl_association()
                .association_id(association)
                .network_acl_id(id)
                .send()
                .await)
        })
        .await?;
    }
    Ok(())
}

/// An entry in the spec shape.
fn entry_value(e: &NetworkAclEntry) -> Value {
    let protocol = protocol_name(e.protocol().unwrap_or("-1")).to_string();
    let (from, to) = match protocol.as_str() {
        "icmp" => (
            e.icmp_type_code().and_then(|c| c.r#type()),
            e.icmp_type_code().and_then(|c| c.code()),
        ),
        "-1" => (None, None),
        _ => (
            e.port_range().and_then(|r| r.from()),
            e.port_range().and_then(|r| r.to()),
        ),
    };
    let int = |v: Option<i32>| v.map_or(Value::Null, |i| Value::Int(i64::from(i)));
    map(vec![
        ("ruleNumber", int(e.rule_number())),
        ("egress", e.egress().map_or(Value::Null, Value::Bool)),
        ("protocol", Value::String(protocol)),
        ("ruleAction", s(e.rule_action().map(|a| a.as_str()))),
        ("cidrBlock", s(e.cidr_block())),
        ("fromPort", int(from)),
        ("toPort", int(to)),
    ])
}

#[async_trait::async_trait]
impl Ec2Kind for NetworkAcl {
    type Item = Item;

    fn id_filter(&self) -> &'static str {
        ID_FILTER
    }

    async fn describe(&self, p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Self::Item>, ApiError> {
        let (filters, ids) = take_filter(filters, ID_FILTER);
        let pages = describe(p, "DescribeNetworkAcls", || {
            p.client
                .describe_network_acls()
                .set_network_acl_ids(ids.clone())
                .set_filters(Some(filters.clone()))
                .into_paginator()
                .send()
                .try_collect()
        })
        .await;
        let pages = none_when_gone(pages, ids.is_some())?;
        Ok(pages
            .into_iter()
            .flat_map(|o| o.network_acls.unwrap_or_default())
            .collect())
    }

    fn id<'a>(&self, a: &'a Self::Item) -> Option<&'a str> {
        a.network_acl_id()
    }

    fn tags<'a>(&self, a: &'a Self::Item) -> &'a [Tag] {
        a.tags()
    }

    fn normalise(&self, a: &Self::Item, seen: Seen<'_>) -> (Value, Map) {
        let entries = Value::List(
            a.entries()
                .iter()
                .filter(|e| e.rule_number() != Some(DEFAULT_RULE))
                .map(entry_value)
                .collect(),
        );
        let attributes = attrs(vec![("id", seen.id_value())]);
        let body = map(vec![
            ("vpcId", s(a.vpc_id())),
            ("entries", NetworkAcl.canonical_set("entries", &entries)),
            (
                "subnetIds",
                strings(associations(a).into_iter().map(|(s, _)| s)),
            ),
            ("tags", seen.user_tags),
        ]);
        (body, attributes)
    }

    async fn create(
        &self,
        p: &Ec2,
        desired: &Desired,
        d: &Value,
        token: &str,
    ) -> Result<Created, ApiError> {
        let o = sdk(p
            .client
            .create_network_acl()
            .set_vpc_id(string_at(d, "vpcId"))
            .client_token(token)
            .tag_specifications(p.tag_spec(ResourceType::NetworkAcl, desired, d, vec![]))
            .customize()
            .config_override(no_sdk_retries())
            .send()
            .await)?;
        created(self.name(), o.network_acl.and_then(|a| a.network_acl_id))
    }

    async fn update(&self, p: &Ec2, u: &Update<'_>, a: &Self::Item) -> Result<()> {
        for field in &u.fields {
            match *field {
                "entries" => update_entries(p, u.id, u.d, u.live).await?,
                "subnetIds" => update_subnets(p, u.id, u.d, a).await?,
                other => return Err(u.unchangeable(other)),
            }
        }
        Ok(())
    }

    /// Its subnets back to the default ACL, then DeleteNetworkAcl.
    async fn delete(&self, p: &Ec2, id: &str, a: &Self::Item) -> Result<(), ApiError> {
        let held = associations(a);
        if !held.is_empty() {
            let default = default_acl(p, a.vpc_id().unwrap_or_default()).await?;
            for (_, association) in held {
                move_association(p, association, &default).await?;
            }
        }
        p.send("DeleteNetworkAcl", false, || async {
            sdk(p
                .client
                .delete_network_acl()
                .network_acl_id(id)
                .send()
                .await)
            .map(|_| ())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::aws::kind::raw;
    use crate::provider::aws::kinds::{delete_wave, find};
    use crate::provider::aws::observe::to_live;
    use crate::provider::aws::{check, model};
    use crate::provider::Owner;
    use aws_sdk_ec2::types::NetworkAclAssociation;

    fn body(j: serde_json::Value) -> Value {
        Value::from_json(j)
    }

    fn messages(b: &Value) -> Vec<String> {
        check("network_acl", b)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    fn acl(entries: serde_json::Value) -> Value {
        body(serde_json::json!({"vpcId": "vpc-1", "entries": entries}))
    }

    #[test]
    fn entries_are_checked_and_numbered_once_per_direction() {
        assert!(messages(&acl(serde_json::json!([
            {"ruleNumber": 100, "egress": false, "protocol": "tcp", "ruleAction": "allow",
             "cidrBlock": "0.0.0.0/0", "fromPort": 443, "toPort": 443},
            {"ruleNumber": 100, "egress": true, "protocol": "-1", "ruleAction": "allow",
             "cidrBlock": "0.0.0.0/0"},
            {"ruleNumber": 110, "egress": false, "protocol": "6", "ruleAction": "deny",
             "cidrBlock": "10.0.0.0/8", "fromPort": 22, "toPort": 22},
            {"ruleNumber": 120, "egress": false, "protocol": "icmp", "ruleAction": "allow",
             "cidrBlock": "10.0.0.0/8", "fromPort": -1, "toPort": -1}
        ])))
        .is_empty());
        assert_eq!(
            messages(&acl(serde_json::json!([
                {"ruleNumber": 0, "egress": false, "protocol": "gre", "ruleAction": "allow",
                 "cidrBlock": "10.0.0.1/8"},
                {"ruleNumber": 100, "egress": false, "protocol": "tcp", "ruleAction": "allow",
                 "cidrBlock": "0.0.0.0/0", "fromPort": 443},
                {"ruleNumber": 100, "egress": false, "protocol": "udp", "ruleAction": "allow",
                 "cidrBlock": "0.0.0.0/0", "fromPort": 60, "toPort": 53},
                {"ruleNumber": 32767, "egress": true, "protocol": "-1", "ruleAction": "deny",
                 "cidrBlock": "0.0.0.0/0", "fromPort": 1, "toPort": 2}
            ]))),
            vec![
                "entries[0].ruleNumber: `ruleNumber` 0 is out of range (1 to 32766; 32767 is EC2's default entry)",
                "entries[0].protocol: `protocol` `gre` is not a protocol",
                "entries[0].cidrBlock: `cidrBlock` `10.0.0.1/8` has host bits set; its network is 10.0.0.0/8",
                "entries[1]: a tcp entry needs `fromPort` and `toPort`",
                "entries[2].fromPort: `fromPort` 60 is above `toPort` 53",
                "entries[3].ruleNumber: `ruleNumber` 32767 is out of range (1 to 32766; 32767 is EC2's default entry)",
                "entries[3]: an entry of every protocol (\"-1\") takes no ports: EC2 ignores them",
                "entries[2]: ingress rule 100 is written twice (also at entries[1])",
            ]
        );
    }

    #[test]
    fn the_vpc_replaces_and_entries_compare_by_protocol_name() {
        let a = acl(serde_json::json!([
            {"ruleNumber": 100, "egress": false, "protocol": "6", "ruleAction": "allow",
             "cidrBlock": "0.0.0.0/0", "fromPort": 443, "toPort": 443}
        ]));
        let b = acl(serde_json::json!([
            {"ruleNumber": 100, "egress": false, "protocol": "tcp", "ruleAction": "allow",
             "cidrBlock": "0.0.0.0/0", "fromPort": 443, "toPort": 443}
        ]));
        assert_eq!(
            model::canonical(&NetworkAcl, &a),
            model::canonical(&NetworkAcl, &b)
        );
        let moved = body(serde_json::json!({"vpcId": "vpc-2"}));
        assert_eq!(
            model::replace_reasons(&NetworkAcl, &a, &moved),
            vec!["vpcId changes from vpc-1 to vpc-2 (immutable)"]
        );
    }

    #[test]
    fn it_is_deleted_before_its_subnets_and_vpc() {
        let wave = |k: &str| find(k).map(delete_wave).unwrap();
        assert!(wave("network_acl") < wave("subnet"));
        assert!(wave("network_acl") < wave("vpc"));
    }

    #[test]
    fn it_normalises_into_the_spec_shape_without_the_default_entries() {
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let a = Item::builder()
            .network_acl_id("acl-1")
            .vpc_id("vpc-1")
            .entries(
                NetworkAclEntry::builder()
                    .rule_number(DEFAULT_RULE)
                    .egress(false)
                    .protocol("-1")
                    .rule_action(RuleAction::Deny)
                    .cidr_block("0.0.0.0/0")
                    .build(),
            )
            .entries(
                NetworkAclEntry::builder()
                    .rule_number(100)
                    .egress(false)
                    .protocol("6")
                    .rule_action(RuleAction::Allow)
                    .cidr_block("0.0.0.0/0")
                    .port_range(PortRange::builder().from(443).to(443).build())
                    .build(),
            )
            .entries(
                NetworkAclEntry::builder()
                    .rule_number(90)
                    .egress(true)
                    .protocol("1")
                    .rule_action(RuleAction::Allow)
                    .cidr_block("10.0.0.0/8")
                    .icmp_type_code(IcmpTypeCode::builder().r#type(-1).code(-1).build())
                    .build(),
            )
            .associations(
                NetworkAclAssociation::builder()
                    .subnet_id("subnet-1")
                    .network_acl_association_id("aclassoc-1")
                    .build(),
            )
            .set_tags(Some(vec![
                tag("managed-by", "tidegate"),
                tag("tidegate:project", "shop"),
                tag("tidegate:environment", "dev"),
                tag("tidegate:module", "network"),
                tag("tidegate:resource", "network.acl"),
            ]))
            .build();
        let raw = raw(NetworkAcl, a, "eu-west-1").unwrap();
        let live = to_live(&raw, &Owner::new("shop", "dev")).unwrap();
        assert_eq!(live.id.to_string(), "network.acl");
        assert_eq!(
            live.body.to_json_masked(),
            serde_json::json!({
                "vpcId": "vpc-1",
                "entries": [
                    {"ruleNumber": 100, "egress": false, "protocol": "tcp", "ruleAction": "allow",
                     "cidrBlock": "0.0.0.0/0", "fromPort": 443, "toPort": 443},
                    {"ruleNumber": 90, "egress": true, "protocol": "icmp", "ruleAction": "allow",
                     "cidrBlock": "10.0.0.0/8", "fromPort": -1, "toPort": -1}
                ],
                "subnetIds": ["subnet-1"], "tags": {}
            })
        );
    }
}
