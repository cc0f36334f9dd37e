//! `security_group_rule`: one ingress or egress rule of a security group
//! as a resource of its own, so several modules can add rules to one group
//! (one protocol, port range and source: a CIDR block or another group).
//! Everything but `description` is immutable; the description changes in
//! place with ModifySecurityGroupRules.
//!
//! # Ownership
//! EC2 gives each rule an id (`sgr-...`) and takes tags on it: the rule is
//! tagged at creation (TagSpecifications of AuthorizeSecurityGroupIngress
//! or Egress) like any resource, and observe reads the rules with one
//! DescribeSecurityGroupRules sequence filtered by the environment's tag.
//! `security_group` leaves every rule tagged `managed-by: tidegate` out of
//! its inline `ingress`/`egress`, so it neither shows nor revokes them.
//!
//! # Guarantees
//! - The authorize call is sent once (no SDK retries; EC2 takes no
//!   ClientToken for it): a lost answer is searched for by tag first, and
//!   a second authorize of the same rule fails as a duplicate instead of
//!   making it twice.
//! - A replacement creates the new rule first, except when it holds the
//!   same permission (EC2 keeps one per protocol, ports and source).

use aws_sdk_ec2::types::{
    Filter, IpPermission, IpRange, ResourceType, SecurityGroupRule as Item,
    SecurityGroupRuleRequest, SecurityGroupRuleUpdate, Tag, UserIdGroupPair,
};

use crate::provider::aws::calls::{sdk, ApiError};
use crate::provider::aws::kind::{created, Created, Ec2Kind, KindSpec, Seen, Update};
use crate::provider::aws::schema::{f, fixed, req, Field, Ty, TAGS};
use crate::provider::aws::sdk::{attrs, describe, int, map, no_sdk_retries, s, str_at, Ec2};
use crate::provider::aws::values::{cidr, problem};
use crate::provider::{Desired, Problem, Result};
use crate::value::{Map, Value};

use super::security_group::{check_ports, PROTOCOLS};

/// The `security_group_rule` kind.
#[derive(Clone, Copy)]
pub(super) struct SecurityGroupRule;

const FIELDS: &[Field] = &[
    req(fixed(f("securityGroupId", Ty::Str))),
    req(fixed(f("type", Ty::Enum(&["ingress", "egress"])))),
    req(fixed(f("protocol", Ty::Enum(PROTOCOLS)))),
    fixed(f("fromPort", Ty::Int)),
    fixed(f("toPort", Ty::Int)),
    fixed(f("cidrBlock", Ty::Str)),
    fixed(f("sourceSecurityGroupId", Ty::Str)),
    f("description", Ty::Str),
    TAGS,
];

impl KindSpec for SecurityGroupRule {
    fn name(&self) -> &'static str {
        "security_group_rule"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn attributes(&self) -> &'static [&'static str] {
        &["id"]
    }

    /// It is a rule of its group.
    fn deleted_before(&self) -> &'static [&'static str] {
        &["security_group"]
    }

    fn check_string(&self, field: &str, s: &str, path: &str, out: &mut Vec<Problem>) {
        if field == "cidrBlock" {
            cidr(field, s, None, path, out);
        }
    }

    /// The ports as for a group's inline rule, and exactly one source.
    fn check_object(&self, _fields: &[Field], m: &Map, path: &str, out: &mut Vec<Problem>) {
        if !path.is_empty() {
            return;
        }
        check_ports(m, path, out);
        let has = |k: &str| m.get(k).is_some_and(|v| !matches!(v, Value::Null));
        // EC2 drops them, so they would differ (and replace) on every plan.
        if m.get("protocol").and_then(Value::as_str) == Some("-1")
            && (has("fromPort") || has("toPort"))
        {
            out.push(problem(
                path,
                "a rule of every protocol (\"-1\") takes no ports: EC2 drops them".into(),
                "remove `fromPort` and `toPort`, or name the protocol (tcp, udp, icmp)",
            ));
        }
        match (has("cidrBlock"), has("sourceSecurityGroupId")) {
            (true, false) | (false, true) => {}
            (false, false) => out.push(problem(
                path,
                "the rule has no source: neither `cidrBlock` nor `sourceSecurityGroupId`".into(),
                "add `cidrBlock:` (addresses) or `sourceSecurityGroupId:` (another security group)",
            )),
            (true, true) => out.push(problem(
                path,
                "the rule has two sources: `cidrBlock` and `sourceSecurityGroupId`".into(),
                "keep one source; write a second `security_group_rule` for the other",
            )),
        }
    }

    /// The same permission cannot exist twice in a group.
    fn destroy_first(&self, desired: &Value, live: &Value) -> Option<String> {
        let permission = [
            "securityGroupId",
            "type",
            "protocol",
            "fromPort",
            "toPort",
            "cidrBlock",
            "sourceSecurityGroupId",
        ];
        permission
            .iter()
            .all(|k| desired.get_path(k) == live.get_path(k))
            .then(|| "destroy before create: a group holds a permission once".into())
    }
}

/// The permission a desired rule grants.
fn permission(d: &Value) -> IpPermission {
    let protocol = str_at(d, "protocol").unwrap_or("-1");
    let mut b = IpPermission::builder().ip_protocol(protocol);
    if protocol != "-1" {
        b = b
            .set_from_port(int(d.get_path("fromPort")))
            .set_to_port(int(d.get_path("toPort")));
    }
    let description = str_at(d, "description").map(str::to_string);
    if let Some(c) = str_at(d, "cidrBlock") {
        b = b.ip_ranges(
            IpRange::builder()
                .cidr_ip(c)
                .set_description(description.clone())
                .build(),
        );
    }
    if let Some(g) = str_at(d, "sourceSecurityGroupId") {
        b = b.user_id_group_pairs(
            UserIdGroupPair::builder()
                .group_id(g)
                .set_description(description)
                .build(),
        );
    }
    b.build()
}

/// The rule as ModifySecurityGroupRules takes it (what stays, and the
/// desired description).
fn rule_request(d: &Value) -> SecurityGroupRuleRequest {
    let protocol = str_at(d, "protocol").unwrap_or("-1");
    let (from, to) = if protocol == "-1" {
        (Some(-1), Some(-1))
    } else {
        (int(d.get_path("fromPort")), int(d.get_path("toPort")))
    };
    SecurityGroupRuleRequest::builder()
        .ip_protocol(protocol)
        .set_from_port(from)
        .set_to_port(to)
        .set_cidr_ipv4(str_at(d, "cidrBlock").map(str::to_string))
        .set_referenced_group_id(str_at(d, "sourceSecurityGroupId").map(str::to_string))
        .description(str_at(d, "description").unwrap_or(""))
        .build()
}

#[async_trait::async_trait]
impl Ec2Kind for SecurityGroupRule {
    type Item = Item;

    fn id_filter(&self) -> &'static str {
        "security-group-rule-id"
    }

    async fn describe(&self, p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Self::Item>, ApiError> {
        let pages = describe(p, "DescribeSecurityGroupRules", || {
            p.client
                .describe_security_group_rules()
                .set_filters(Some(filters.clone()))
                .into_paginator()
                .send()
                .try_collect()
        })
        .await?;
        Ok(pages
            .into_iter()
            .flat_map(|o| o.security_group_rules.unwrap_or_default())
            .collect())
    }

    fn id<'a>(&self, r: &'a Self::Item) -> Option<&'a str> {
        r.security_group_rule_id()
    }

    fn tags<'a>(&self, r: &'a Self::Item) -> &'a [Tag] {
        r.tags()
    }

    fn normalise(&self, r: &Self::Item, seen: Seen<'_>) -> (Value, Map) {
        let protocol = r.ip_protocol().unwrap_or("-1");
        let port = |p: Option<i32>| match p {
            Some(p) if protocol != "-1" => Value::Int(i64::from(p)),
            _ => Value::Null,
        };
        let attributes = attrs(vec![("id", seen.id_value())]);
        let kind = if r.is_egress() == Some(true) {
            "egress"
        } else {
            "ingress"
        };
        let body = map(vec![
            ("securityGroupId", s(r.group_id())),
            ("type", s(Some(kind))),
            ("protocol", s(Some(protocol))),
            ("fromPort", port(r.from_port())),
            ("toPort", port(r.to_port())),
            ("cidrBlock", s(r.cidr_ipv4())),
            (
                "sourceSecurityGroupId",
                s(r.referenced_group_info().and_then(|g| g.group_id())),
            ),
            ("description", s(r.description().filter(|d| !d.is_empty()))),
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
        let group = str_at(d, "securityGroupId").map(str::to_string);
        let tags = p.tag_spec(ResourceType::SecurityGroupRule, desired, d, vec![]);
        // A group made just before may not show yet: "not found" is
        // retried (nothing was authorized then).
        let rules = if str_at(d, "type") == Some("egress") {
            p.send("AuthorizeSecurityGroupEgress", true, || async {
                sdk(p
                    .client
                    .authorize_security_group_egress()
                    .set_group_id(group.clone())
                    .ip_permissions(permission(d))
                    .tag_specifications(tags.clone())
                    .customize()
                    .config_override(no_sdk_retries())
                    .send()
                    .await)
            })
            .await?
            .security_group_rules
        } else {
            p.send("AuthorizeSecurityGroupIngress", true, || async {
                sdk(p
                    .client
                    .authorize_security_group_ingress()
                    .set_group_id(group.clone())
                    .ip_permissions(permission(d))
                    .tag_specifications(tags.clone())
                    .customize()
                    .config_override(no_sdk_retries())
                    .send()
                    .await)
            })
            .await?
            .security_group_rules
        };
        created(
            self.name(),
            rules
                .unwrap_or_default()
                .into_iter()
                .find_map(|r| r.security_group_rule_id),
        )
    }

    /// The description, with ModifySecurityGroupRules.
    async fn update(&self, p: &Ec2, u: &Update<'_>, r: &Self::Item) -> Result<()> {
        if let Some(other) = u.fields.iter().find(|f| **f != "description") {
            return Err(u.unchangeable(other));
        }
        let group = r.group_id().unwrap_or_default();
        let update = SecurityGroupRuleUpdate::builder()
            .security_group_rule_id(u.id)
            .security_group_rule(rule_request(u.d))
            .build();
        p.call("ModifySecurityGroupRules", || async {
            sdk(p
                .client
                .modify_security_group_rules()
                .group_id(group)
                .security_group_rules(update.clone())
                .send()
                .await)
        })
        .await?;
        Ok(())
    }

    /// Revokes the rule by its id.
    async fn delete(&self, p: &Ec2, id: &str, r: &Self::Item) -> Result<(), ApiError> {
        let group = r.group_id().unwrap_or_default();
        if r.is_egress() == Some(true) {
            p.send("RevokeSecurityGroupEgress", false, || async {
                sdk(p
                    .client
                    .revoke_security_group_egress()
                    .group_id(group)
                    .security_group_rule_ids(id)
                    .send()
                    .await)
                .map(|_| ())
            })
            .await
        } else {
            p.send("RevokeSecurityGroupIngress", false, || async {
                sdk(p
                    .client
                    .revoke_security_group_ingress()
                    .group_id(group)
                    .security_group_rule_ids(id)
                    .send()
                    .await)
                .map(|_| ())
            })
            .await
        }
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

    fn body(j: serde_json::Value) -> Value {
        Value::from_json(j)
    }

    fn messages(b: &Value) -> Vec<String> {
        check("security_group_rule", b)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn a_rule_has_ports_for_its_protocol_and_exactly_one_source() {
        assert!(messages(&body(serde_json::json!({
            "securityGroupId": "sg-1", "type": "ingress", "protocol": "tcp",
            "fromPort": 443, "toPort": 443, "cidrBlock": "0.0.0.0/0"
        })))
        .is_empty());
        assert!(messages(&body(serde_json::json!({
            "securityGroupId": "sg-1", "type": "egress", "protocol": "-1",
            "sourceSecurityGroupId": "sg-2"
        })))
        .is_empty());
        assert_eq!(
            messages(&body(serde_json::json!({
                "securityGroupId": "sg-1", "type": "egress", "protocol": "-1",
                "fromPort": 0, "toPort": 0, "cidrBlock": "0.0.0.0/0"
            }))),
            vec![": a rule of every protocol (\"-1\") takes no ports: EC2 drops them"]
        );
        assert_eq!(
            messages(&body(serde_json::json!({
                "securityGroupId": "sg-1", "type": "ingress", "protocol": "tcp",
                "fromPort": 70000, "toPort": 80
            }))),
            vec![
                "fromPort: `fromPort` 70000 is out of range: tcp ports are 0 to 65535",
                ": the rule has no source: neither `cidrBlock` nor `sourceSecurityGroupId`",
            ]
        );
        assert_eq!(
            messages(&body(serde_json::json!({
                "securityGroupId": "sg-1", "type": "inbound", "protocol": "udp",
                "fromPort": 53, "cidrBlock": "10.0.0.1/8", "sourceSecurityGroupId": "sg-2"
            }))),
            vec![
                "type: `type` must be one of \"ingress\", \"egress\", found a string",
                "cidrBlock: `cidrBlock` `10.0.0.1/8` has host bits set; its network is 10.0.0.0/8",
                ": a udp rule needs `fromPort` and `toPort`",
                ": the rule has two sources: `cidrBlock` and `sourceSecurityGroupId`",
            ]
        );
    }

    #[test]
    fn all_but_the_description_replaces() {
        let before = body(serde_json::json!({
            "securityGroupId": "sg-1", "type": "ingress", "protocol": "tcp",
            "fromPort": 22, "toPort": 22, "cidrBlock": "10.0.0.0/8", "description": "a"
        }));
        let described = body(serde_json::json!({
            "securityGroupId": "sg-1", "type": "ingress", "protocol": "tcp",
            "fromPort": 22, "toPort": 22, "cidrBlock": "10.0.0.0/8", "description": "b"
        }));
        assert!(model::replace_reasons(&SecurityGroupRule, &before, &described).is_empty());
        let wider = body(serde_json::json!({
            "securityGroupId": "sg-1", "type": "ingress", "protocol": "tcp",
            "fromPort": 22, "toPort": 22, "cidrBlock": "0.0.0.0/0", "description": "a"
        }));
        assert_eq!(
            model::replace_reasons(&SecurityGroupRule, &before, &wider),
            vec!["cidrBlock changes from 10.0.0.0/8 to 0.0.0.0/0 (immutable)"]
        );
        assert!(SecurityGroupRule.destroy_first(&wider, &before).is_none());
        assert!(SecurityGroupRule
            .destroy_first(&described, &before)
            .is_some());
    }

    #[test]
    fn it_is_deleted_before_its_group() {
        let wave = |k: &str| find(k).map(delete_wave).unwrap();
        assert!(wave("security_group_rule") < wave("security_group"));
    }

    #[test]
    fn it_normalises_into_the_spec_shape() {
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let r = Item::builder()
            .security_group_rule_id("sgr-1")
            .group_id("sg-1")
            .is_egress(false)
            .ip_protocol("tcp")
            .from_port(443)
            .to_port(443)
            .cidr_ipv4("0.0.0.0/0")
            .description("https")
            .set_tags(Some(vec![
                tag("managed-by", "tidegate"),
                tag("tidegate:project", "shop"),
                tag("tidegate:environment", "dev"),
                tag("tidegate:module", "edge"),
                tag("tidegate:resource", "edge.https"),
                tag("owner", "team"),
            ]))
            .build();
        let first = raw(SecurityGroupRule, r, "eu-west-1").unwrap();
        let live = to_live(&first, &Owner::new("shop", "dev")).unwrap();
        assert_eq!(live.id.to_string(), "edge.https");
        assert_eq!(
            live.body.to_json_masked(),
            serde_json::json!({
                "securityGroupId": "sg-1", "type": "ingress", "protocol": "tcp",
                "fromPort": 443, "toPort": 443, "cidrBlock": "0.0.0.0/0",
                "description": "https", "tags": {"owner": "team"}
            })
        );
        let all = Item::builder()
            .security_group_rule_id("sgr-2")
            .group_id("sg-1")
            .is_egress(true)
            .ip_protocol("-1")
            .from_port(-1)
            .to_port(-1)
            .cidr_ipv4("0.0.0.0/0")
            .build();
        let listed = raw(SecurityGroupRule, all, "eu-west-1").unwrap();
        assert_eq!(
            listed.body.to_json_masked(),
            serde_json::json!({
                "securityGroupId": "sg-1", "type": "egress", "protocol": "-1",
                "cidrBlock": "0.0.0.0/0", "tags": {}
            })
        );
    }
}
