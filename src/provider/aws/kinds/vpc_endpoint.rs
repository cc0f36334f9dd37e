//! `vpc_endpoint`: a VPC endpoint to an AWS service, of type `Gateway`
//! (the default; routes in `routeTableIds`) or `Interface` (network
//! interfaces in `subnetIds`, guarded by `securityGroupIds`, with
//! `privateDnsEnabled`). Its VPC, service and type are immutable; the
//! lists and the private DNS flag change in place with one
//! ModifyVpcEndpoint (what to add, what to remove).
//!
//! # Guarantees
//! - CreateVpcEndpoint carries a ClientToken and tags the endpoint at
//!   creation; a token naming an endpoint deleted since is sent once more,
//!   salted.
//! - One DescribeVpcEndpoints sequence per observe, of live endpoints only
//!   (not deleting, deleted or expired). A read by id names the endpoint in
//!   `VpcEndpointIds` (moto 5.2.5 implements no `vpc-endpoint-id` filter;
//!   EC2 takes both).
//! - A delete waits until EC2 no longer lists the endpoint (or says
//!   `deleted`): its network interfaces leave the subnets and security
//!   groups only then, so those can go in the next wave.

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, VpcEndpoint as Item, VpcEndpointType};

use crate::provider::aws::calls::{sdk, ApiError};
use crate::provider::aws::kind::{created, Created, Ec2Kind, KindSpec, Seen, Update};
use crate::provider::aws::schema::{f, fixed, req, Field, Ty, TAGS};
use crate::provider::aws::sdk::{
    attrs, bool_at, describe, filter, map, no_sdk_retries, none_when_gone, s, str_at, string_at,
    strings, strs, take_filter, Ec2,
};
use crate::provider::aws::values::problem;
use crate::provider::{Desired, Health, Problem, Result};
use crate::value::{key_path, Map, Value};

/// The `vpc_endpoint` kind.
#[derive(Clone, Copy)]
pub(super) struct VpcEndpoint;

const FIELDS: &[Field] = &[
    req(fixed(f("vpcId", Ty::Str))),
    req(fixed(f("serviceName", Ty::Str))),
    fixed(f("vpcEndpointType", Ty::Enum(&["Gateway", "Interface"]))),
    f("routeTableIds", Ty::StrSet),
    f("subnetIds", Ty::StrSet),
    f("securityGroupIds", Ty::StrSet),
    f("privateDnsEnabled", Ty::Bool),
    TAGS,
];

/// The id filter, sent as `VpcEndpointIds`.
const ID_FILTER: &str = "vpc-endpoint-id";

/// States of an endpoint that observe lists: not going or gone.
const LIVE_STATES: &[&str] = &[
    "pendingAcceptance",
    "pending",
    "available",
    "rejected",
    "failed",
    "partial",
];

/// The fields of an Interface endpoint only.
const INTERFACE_ONLY: &[&str] = &["subnetIds", "securityGroupIds", "privateDnsEnabled"];

impl KindSpec for VpcEndpoint {
    fn name(&self) -> &'static str {
        "vpc_endpoint"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn attributes(&self) -> &'static [&'static str] {
        &["id", "dnsName"]
    }

    /// It routes through its tables and sits in its subnets and groups.
    fn deleted_before(&self) -> &'static [&'static str] {
        &["route_table", "subnet", "security_group", "vpc"]
    }

    /// The fields of the other type of endpoint are refused.
    fn check_object(&self, _fields: &[Field], m: &Map, path: &str, out: &mut Vec<Problem>) {
        if !path.is_empty() {
            return;
        }
        let has = |k: &str| m.get(k).is_some_and(|v| !matches!(v, Value::Null));
        let (wrong, fix): (&[&str], &str) = match m.get("vpcEndpointType") {
            None | Some(Value::Null) => (INTERFACE_ONLY, "Gateway"),
            Some(Value::String(t)) if t == "Gateway" => (INTERFACE_ONLY, "Gateway"),
            Some(Value::String(t)) if t == "Interface" => (&["routeTableIds"], "Interface"),
            // Unknown until apply, or not a type (the structure check).
            Some(_) => return,
        };
        for field in wrong.iter().filter(|f| has(f)) {
            let (this, other) = if fix == "Gateway" {
                ("a Gateway", "Interface")
            } else {
                ("an Interface", "Gateway")
            };
            let that = if other == "Gateway" { "a" } else { "an" };
            out.push(problem(
                &key_path(path, field),
                format!("{this} endpoint takes no `{field}` (only {that} {other} endpoint does)"),
                format!("remove `{field}`, or write `vpcEndpointType: {other}`"),
            ));
        }
    }

    fn resalt_when_invisible(&self) -> bool {
        true
    }
}

/// The type of a described endpoint (Gateway unless EC2 says otherwise).
fn endpoint_type(e: &Item) -> &str {
    e.vpc_endpoint_type().map_or("Gateway", |t| t.as_str())
}

/// The state of an endpoint, in lower case (EC2's filter values and
/// answers are `available`; the SDK's names are `Available`).
fn state(e: &Item) -> Option<String> {
    e.state().map(|s| s.as_str().to_ascii_lowercase())
}

/// What to add and what to remove for a set field.
fn delta(d: &Value, live: &Value, field: &str) -> (Option<Vec<String>>, Option<Vec<String>>) {
    let (want, have) = (strs(d, field), strs(live, field));
    let add: Vec<String> = want.iter().filter(|w| !have.contains(w)).cloned().collect();
    let remove: Vec<String> = have.iter().filter(|h| !want.contains(h)).cloned().collect();
    let some = |v: Vec<String>| (!v.is_empty()).then_some(v);
    (some(add), some(remove))
}

#[async_trait::async_trait]
impl Ec2Kind for VpcEndpoint {
    type Item = Item;

    fn id_filter(&self) -> &'static str {
        ID_FILTER
    }

    async fn describe(&self, p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Self::Item>, ApiError> {
        let (mut filters, ids) = take_filter(filters, ID_FILTER);
        filters.push(filter("vpc-endpoint-state", LIVE_STATES));
        let pages = describe(p, "DescribeVpcEndpoints", || {
            p.client
                .describe_vpc_endpoints()
                .set_vpc_endpoint_ids(ids.clone())
                .set_filters(Some(filters.clone()))
                .into_paginator()
                .send()
                .try_collect()
        })
        .await;
        let pages = none_when_gone(pages, ids.is_some())?;
        Ok(pages
            .into_iter()
            .flat_map(|o| o.vpc_endpoints.unwrap_or_default())
            // A stand-in may list a deleted endpoint asked for by id.
            .filter(|e| {
                state(e).is_none_or(|s| LIVE_STATES.iter().any(|l| l.eq_ignore_ascii_case(&s)))
            })
            .collect())
    }

    fn id<'a>(&self, e: &'a Self::Item) -> Option<&'a str> {
        e.vpc_endpoint_id()
    }

    fn tags<'a>(&self, e: &'a Self::Item) -> &'a [Tag] {
        e.tags()
    }

    fn normalise(&self, e: &Self::Item, seen: Seen<'_>) -> (Value, Map) {
        let kind = endpoint_type(e);
        let interface = kind == "Interface";
        let only = |v: Value, when: bool| if when { v } else { Value::Null };
        let attributes = attrs(vec![
            ("id", seen.id_value()),
            (
                "dnsName",
                s(e.dns_entries().iter().find_map(|d| d.dns_name())),
            ),
        ]);
        let body = map(vec![
            ("vpcId", s(e.vpc_id())),
            ("serviceName", s(e.service_name())),
            ("vpcEndpointType", s(Some(kind))),
            (
                "routeTableIds",
                only(
                    strings(e.route_table_ids().iter().map(String::as_str)),
                    !interface,
                ),
            ),
            (
                "subnetIds",
                only(
                    strings(e.subnet_ids().iter().map(String::as_str)),
                    interface,
                ),
            ),
            (
                "securityGroupIds",
                only(
                    strings(e.groups().iter().filter_map(|g| g.group_id())),
                    interface,
                ),
            ),
            (
                "privateDnsEnabled",
                only(
                    e.private_dns_enabled().map_or(Value::Null, Value::Bool),
                    interface,
                ),
            ),
            ("tags", seen.user_tags),
        ]);
        (body, attributes)
    }

    fn listed_health(&self, e: &Self::Item) -> Option<Health> {
        Some(match state(e).as_deref() {
            Some("available") => Health::Healthy,
            Some(s @ ("failed" | "rejected" | "expired")) => Health::Failed(format!(
                "VPC endpoint {s}{}",
                e.last_error()
                    .and_then(|l| l.message())
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            )),
            Some(other) => Health::Progressing(format!("VPC endpoint {other}")),
            None => Health::Progressing("VPC endpoint pending".into()),
        })
    }

    async fn create(
        &self,
        p: &Ec2,
        desired: &Desired,
        d: &Value,
        token: &str,
    ) -> Result<Created, ApiError> {
        let some = |v: Vec<String>| (!v.is_empty()).then_some(v);
        let o = sdk(p
            .client
            .create_vpc_endpoint()
            .set_vpc_id(string_at(d, "vpcId"))
            .set_service_name(string_at(d, "serviceName"))
            .vpc_endpoint_type(VpcEndpointType::from(
                str_at(d, "vpcEndpointType").unwrap_or("Gateway"),
            ))
            .set_route_table_ids(some(strs(d, "routeTableIds")))
            .set_subnet_ids(some(strs(d, "subnetIds")))
            .set_security_group_ids(some(strs(d, "securityGroupIds")))
            .set_private_dns_enabled(bool_at(d, "privateDnsEnabled"))
            .client_token(token)
            .tag_specifications(p.tag_spec(ResourceType::VpcEndpoint, desired, d, vec![]))
            .customize()
            .config_override(no_sdk_retries())
            .send()
            .await)?;
        created(self.name(), o.vpc_endpoint.and_then(|e| e.vpc_endpoint_id))
    }

    /// One ModifyVpcEndpoint of every changed field.
    async fn update(&self, p: &Ec2, u: &Update<'_>, _e: &Self::Item) -> Result<()> {
        if let Some(other) = u.fields.iter().find(|f| {
            !matches!(
                **f,
                "routeTableIds" | "subnetIds" | "securityGroupIds" | "privateDnsEnabled"
            )
        }) {
            return Err(u.unchangeable(other));
        }
        let changed = |f: &str| u.fields.contains(&f);
        let pick = |f: &str| {
            if changed(f) {
                delta(u.d, u.live, f)
            } else {
                (None, None)
            }
        };
        let (add_rt, remove_rt) = pick("routeTableIds");
        let (add_sn, remove_sn) = pick("subnetIds");
        let (add_sg, remove_sg) = pick("securityGroupIds");
        let dns = changed("privateDnsEnabled")
            .then(|| bool_at(u.d, "privateDnsEnabled"))
            .flatten();
        p.call("ModifyVpcEndpoint", || async {
            sdk(p
                .client
                .modify_vpc_endpoint()
                .vpc_endpoint_id(u.id)
                .set_add_route_table_ids(add_rt.clone())
                .set_remove_route_table_ids(remove_rt.clone())
                .set_add_subnet_ids(add_sn.clone())
                .set_remove_subnet_ids(remove_sn.clone())
                .set_add_security_group_ids(add_sg.clone())
                .set_remove_security_group_ids(remove_sg.clone())
                .set_private_dns_enabled(dns)
                .send()
                .await)
        })
        .await?;
        Ok(())
    }

    async fn delete(&self, p: &Ec2, id: &str, _e: &Self::Item) -> Result<(), ApiError> {
        let o = p
            .send("DeleteVpcEndpoints", false, || async {
                sdk(p
                    .client
                    .delete_vpc_endpoints()
                    .vpc_endpoint_ids(id)
                    .send()
                    .await)
            })
            .await?;
        // EC2 answers per endpoint: a refusal is in `Unsuccessful`.
        match o.unsuccessful().iter().find_map(|u| u.error()) {
            Some(err) => Err(ApiError {
                code: err.code().map(str::to_string),
                message: err
                    .message()
                    .unwrap_or("DeleteVpcEndpoints failed")
                    .to_string(),
                transport: false,
                unreached: None,
            }),
            None => Ok(()),
        }
    }

    /// Until EC2 no longer lists it as live.
    async fn wait_deleted(&self, p: &Ec2, id: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + p.policy.settle;
        loop {
            let listed = Ec2Kind::describe(self, p, vec![filter(ID_FILTER, &[id])])
                .await
                .map_err(|e| e.into_error("wait vpc_endpoint"))?;
            let Some(state) = listed.iter().find_map(state) else {
                return Ok(());
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError {
                    code: Some("StateTimeout".into()),
                    message: format!("VPC endpoint {id} stayed {state} for {:?}", p.policy.settle),
                    transport: false,
                    unreached: None,
                }
                .into_error("wait vpc_endpoint"));
            }
            tokio::time::sleep(p.policy.poll).await;
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
    use aws_sdk_ec2::types::{SecurityGroupIdentifier, State};

    fn body(j: serde_json::Value) -> Value {
        Value::from_json(j)
    }

    fn messages(b: &Value) -> Vec<String> {
        check("vpc_endpoint", b)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn each_type_of_endpoint_takes_its_own_fields() {
        assert!(messages(&body(serde_json::json!({
            "vpcId": "vpc-1", "serviceName": "com.amazonaws.eu-west-1.s3",
            "routeTableIds": ["rtb-1"]
        })))
        .is_empty());
        assert!(messages(&body(serde_json::json!({
            "vpcId": "vpc-1", "serviceName": "com.amazonaws.eu-west-1.ec2",
            "vpcEndpointType": "Interface", "subnetIds": ["subnet-1"],
            "securityGroupIds": ["sg-1"], "privateDnsEnabled": true
        })))
        .is_empty());
        assert_eq!(
            messages(&body(serde_json::json!({
                "vpcId": "vpc-1", "serviceName": "s3", "subnetIds": ["subnet-1"],
                "privateDnsEnabled": false
            }))),
            vec![
                "subnetIds: a Gateway endpoint takes no `subnetIds` (only an Interface endpoint does)",
                "privateDnsEnabled: a Gateway endpoint takes no `privateDnsEnabled` (only an Interface endpoint does)",
            ]
        );
        assert_eq!(
            messages(&body(serde_json::json!({
                "vpcId": "vpc-1", "serviceName": "ec2", "vpcEndpointType": "Interface",
                "routeTableIds": ["rtb-1"]
            }))),
            vec!["routeTableIds: an Interface endpoint takes no `routeTableIds` (only a Gateway endpoint does)"]
        );
    }

    #[test]
    fn vpc_service_and_type_replace_and_the_lists_change_in_place() {
        let a = body(serde_json::json!({
            "vpcId": "vpc-1", "serviceName": "com.amazonaws.eu-west-1.s3", "routeTableIds": ["rtb-1"]
        }));
        let b = body(serde_json::json!({
            "vpcId": "vpc-1", "serviceName": "com.amazonaws.eu-west-1.dynamodb", "routeTableIds": ["rtb-2"]
        }));
        assert_eq!(
            model::replace_reasons(&VpcEndpoint, &a, &b),
            vec!["serviceName changes from com.amazonaws.eu-west-1.s3 to com.amazonaws.eu-west-1.dynamodb (immutable)"]
        );
        assert_eq!(
            delta(&b, &a, "routeTableIds"),
            (Some(vec!["rtb-2".into()]), Some(vec!["rtb-1".into()]))
        );
    }

    #[test]
    fn it_is_deleted_before_what_it_sits_in() {
        let wave = |k: &str| find(k).map(delete_wave).unwrap();
        for later in ["route_table", "subnet", "security_group", "vpc"] {
            assert!(wave("vpc_endpoint") < wave(later), "{later}");
        }
    }

    #[test]
    fn it_normalises_the_fields_of_its_type() {
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let owned = vec![
            tag("managed-by", "tidegate"),
            tag("tidegate:project", "shop"),
            tag("tidegate:environment", "dev"),
            tag("tidegate:module", "network"),
            tag("tidegate:resource", "network.s3"),
        ];
        // moto says PrivateDnsEnabled of a Gateway endpoint: not its field.
        let g = Item::builder()
            .vpc_endpoint_id("vpce-1")
            .vpc_id("vpc-1")
            .service_name("com.amazonaws.eu-west-1.s3")
            .state(State::Available)
            .route_table_ids("rtb-2")
            .route_table_ids("rtb-1")
            .private_dns_enabled(true)
            .set_tags(Some(owned.clone()))
            .build();
        let raw_g = raw(VpcEndpoint, g, "eu-west-1").unwrap();
        assert_eq!(raw_g.listed, Some(Health::Healthy));
        let live = to_live(&raw_g, &Owner::new("shop", "dev")).unwrap();
        assert_eq!(
            live.body.to_json_masked(),
            serde_json::json!({
                "vpcId": "vpc-1", "serviceName": "com.amazonaws.eu-west-1.s3",
                "vpcEndpointType": "Gateway", "routeTableIds": ["rtb-1", "rtb-2"], "tags": {}
            })
        );
        let i = Item::builder()
            .vpc_endpoint_id("vpce-2")
            .vpc_endpoint_type(VpcEndpointType::Interface)
            .vpc_id("vpc-1")
            .service_name("com.amazonaws.eu-west-1.ec2")
            .state(State::Pending)
            .subnet_ids("subnet-1")
            .groups(SecurityGroupIdentifier::builder().group_id("sg-1").build())
            .private_dns_enabled(false)
            .set_tags(Some(owned))
            .build();
        let raw_i = raw(VpcEndpoint, i, "eu-west-1").unwrap();
        assert_eq!(
            raw_i.listed,
            Some(Health::Progressing("VPC endpoint pending".into()))
        );
        assert_eq!(
            raw_i.body.to_json_masked(),
            serde_json::json!({
                "vpcId": "vpc-1", "serviceName": "com.amazonaws.eu-west-1.ec2",
                "vpcEndpointType": "Interface", "subnetIds": ["subnet-1"],
                "securityGroupIds": ["sg-1"], "privateDnsEnabled": false, "tags": {}
            })
        );
    }
}
