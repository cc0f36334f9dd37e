//! `nat_gateway`: a NAT gateway in a subnet; a public one translates
//! through an elastic IP (`allocationId`), a private one through its
//! private address only. Every field is immutable (EC2 changes nothing of
//! a NAT gateway in place but its tags).
//!
//! # Guarantees
//! - CreateNatGateway carries a ClientToken. A token that names a NAT
//!   gateway deleted since gets that gateway's id back, which observe never
//!   lists (it lists `pending` and `available` ones); the create is then
//!   sent once more with a salted token.
//! - An elastic IP serves one NAT gateway at a time, so a replacement that
//!   keeps its `allocationId` deletes the old gateway first.
//! - A delete waits until EC2 reports the gateway `deleted`, so the subnet
//!   and the elastic IP it used can go in the next wave.

use aws_sdk_ec2::types::{
    ConnectivityType, Filter, NatGateway as Item, NatGatewayAddress, NatGatewayState, ResourceType,
    Tag,
};

use crate::provider::aws::calls::{sdk, ApiError};
use crate::provider::aws::kind::{created, Created, Ec2Kind, KindSpec, Seen, Update};
use crate::provider::aws::schema::{f, fixed, req, Field, Ty, TAGS};
use crate::provider::aws::sdk::{
    attrs, describe, filter, map, no_sdk_retries, s, str_at, string_at, Ec2,
};
use crate::provider::aws::values::problem;
use crate::provider::{Desired, Health, Problem, Result};
use crate::value::{key_path, Map, Value};

/// The `nat_gateway` kind.
#[derive(Clone, Copy)]
pub(super) struct NatGateway;

const FIELDS: &[Field] = &[
    req(fixed(f("subnetId", Ty::Str))),
    fixed(f("allocationId", Ty::Str)),
    fixed(f("connectivityType", Ty::Enum(&["public", "private"]))),
    TAGS,
];

/// States of a NAT gateway that observe lists: not failed (EC2 deletes
/// those itself; the next apply creates anew), deleting or deleted.
const LIVE_STATES: &[&str] = &["pending", "available"];

impl KindSpec for NatGateway {
    fn name(&self) -> &'static str {
        "nat_gateway"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn attributes(&self) -> &'static [&'static str] {
        &["id", "publicIp", "privateIp"]
    }

    /// It lives in its subnet and holds its elastic IP.
    fn deleted_before(&self) -> &'static [&'static str] {
        &["subnet", "eip"]
    }

    /// A public gateway (the default) needs an elastic IP; a private one
    /// takes none.
    fn check_object(&self, _fields: &[Field], m: &Map, path: &str, out: &mut Vec<Problem>) {
        if !path.is_empty() {
            return;
        }
        let allocation = m.get("allocationId").filter(|v| !matches!(v, Value::Null));
        match m.get("connectivityType") {
            None | Some(Value::Null) => {}
            Some(Value::String(t)) if t == "public" => {}
            Some(Value::String(t)) if t == "private" => {
                if allocation.is_some() {
                    out.push(problem(
                        &key_path(path, "allocationId"),
                        "a private NAT gateway takes no `allocationId`".into(),
                        "remove `allocationId`, or make the gateway public (`connectivityType: public`)",
                    ));
                }
                return;
            }
            // Unknown until apply, or not one of the two (the structure
            // check says so).
            Some(_) => return,
        }
        if allocation.is_none() {
            out.push(problem(
                path,
                "a public NAT gateway needs `allocationId`".into(),
                "add `allocationId: ${resource.<eip>.id}` (an `eip` of this module), or write `connectivityType: private`",
            ));
        }
    }

    fn destroy_first(&self, desired: &Value, live: &Value) -> Option<String> {
        let ip = desired.get_path("allocationId");
        (ip.is_some() && ip == live.get_path("allocationId"))
            .then(|| "destroy before create: an elastic IP serves one NAT gateway".into())
    }

    fn resalt_when_invisible(&self) -> bool {
        true
    }
}

/// The gateway's primary address (its elastic IP when public).
fn primary(g: &Item) -> Option<&NatGatewayAddress> {
    let addresses = g.nat_gateway_addresses();
    addresses
        .iter()
        .find(|a| a.is_primary() == Some(true))
        .or(addresses.first())
}

#[async_trait::async_trait]
impl Ec2Kind for NatGateway {
    type Item = Item;

    fn id_filter(&self) -> &'static str {
        "nat-gateway-id"
    }

    async fn describe(
        &self,
        p: &Ec2,
        mut filters: Vec<Filter>,
    ) -> Result<Vec<Self::Item>, ApiError> {
        filters.push(filter("state", LIVE_STATES));
        let pages = describe(p, "DescribeNatGateways", || {
            p.client
                .describe_nat_gateways()
                .set_filter(Some(filters.clone()))
                .into_paginator()
                .send()
                .try_collect()
        })
        .await?;
        Ok(pages
            .into_iter()
            .flat_map(|o| o.nat_gateways.unwrap_or_default())
            .collect())
    }

    fn id<'a>(&self, g: &'a Self::Item) -> Option<&'a str> {
        g.nat_gateway_id()
    }

    fn tags<'a>(&self, g: &'a Self::Item) -> &'a [Tag] {
        g.tags()
    }

    fn normalise(&self, g: &Self::Item, seen: Seen<'_>) -> (Value, Map) {
        let address = primary(g);
        let attributes = attrs(vec![
            ("id", seen.id_value()),
            ("publicIp", s(address.and_then(|a| a.public_ip()))),
            ("privateIp", s(address.and_then(|a| a.private_ip()))),
        ]);
        // Public unless EC2 says otherwise (its default; some stand-ins
        // leave the field out).
        let connectivity = g.connectivity_type().map_or("public", |t| t.as_str());
        let body = map(vec![
            ("subnetId", s(g.subnet_id())),
            ("allocationId", s(address.and_then(|a| a.allocation_id()))),
            ("connectivityType", s(Some(connectivity))),
            ("tags", seen.user_tags),
        ]);
        (body, attributes)
    }

    fn listed_health(&self, g: &Self::Item) -> Option<Health> {
        Some(match g.state() {
            Some(NatGatewayState::Available) => Health::Healthy,
            Some(NatGatewayState::Failed) => Health::Failed(format!(
                "NAT gateway failed: {}",
                g.failure_message().unwrap_or("no reason given")
            )),
            Some(other) => Health::Progressing(format!("NAT gateway {}", other.as_str())),
            None => Health::Progressing("NAT gateway pending".into()),
        })
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
            .create_nat_gateway()
            .set_subnet_id(string_at(d, "subnetId"))
            .set_allocation_id(string_at(d, "allocationId"))
            .set_connectivity_type(str_at(d, "connectivityType").map(ConnectivityType::from))
            .client_token(token)
            .tag_specifications(p.tag_spec(ResourceType::Natgateway, desired, d, vec![]))
            .customize()
            .config_override(no_sdk_retries())
            .send()
            .await)?;
        created(self.name(), o.nat_gateway.and_then(|g| g.nat_gateway_id))
    }

    async fn update(&self, _p: &Ec2, u: &Update<'_>, _g: &Self::Item) -> Result<()> {
        match u.fields.first() {
            Some(field) => Err(u.unchangeable(field)),
            None => Ok(()),
        }
    }

    async fn delete(&self, p: &Ec2, id: &str, _g: &Self::Item) -> Result<(), ApiError> {
        p.send("DeleteNatGateway", false, || async {
            sdk(p
                .client
                .delete_nat_gateway()
                .nat_gateway_id(id)
                .send()
                .await)
            .map(|_| ())
        })
        .await
    }

    /// Until EC2 reports it `deleted` (or no longer lists it): its elastic
    /// IP and its network interface in the subnet are released only then.
    async fn wait_deleted(&self, p: &Ec2, id: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + p.policy.settle;
        loop {
            let o = p
                .call("DescribeNatGateways", || async {
                    sdk(p
                        .client
                        .describe_nat_gateways()
                        .filter(filter("nat-gateway-id", &[id]))
                        .send()
                        .await)
                })
                .await?;
            let state = o
                .nat_gateways()
                .iter()
                .find_map(|g| g.state().cloned())
                .unwrap_or(NatGatewayState::Deleted);
            if state == NatGatewayState::Deleted {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError {
                    code: Some("StateTimeout".into()),
                    message: format!(
                        "NAT gateway {id} stayed {} for {:?}",
                        state.as_str(),
                        p.policy.settle
                    ),
                    transport: false,
                    unreached: None,
                }
                .into_error("wait nat_gateway"));
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

    fn body(j: serde_json::Value) -> Value {
        Value::from_json(j)
    }

    fn messages(b: &Value) -> Vec<String> {
        check("nat_gateway", b)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn a_public_gateway_needs_an_elastic_ip_and_a_private_one_takes_none() {
        assert!(messages(&body(
            serde_json::json!({"subnetId": "subnet-1", "allocationId": "eipalloc-1"})
        ))
        .is_empty());
        assert!(messages(&body(
            serde_json::json!({"subnetId": "subnet-1", "connectivityType": "private"})
        ))
        .is_empty());
        assert_eq!(
            messages(&body(serde_json::json!({"subnetId": "subnet-1"}))),
            vec![": a public NAT gateway needs `allocationId`"]
        );
        assert_eq!(
            messages(&body(serde_json::json!({
                "subnetId": "subnet-1", "allocationId": "eipalloc-1", "connectivityType": "private"
            }))),
            vec!["allocationId: a private NAT gateway takes no `allocationId`"]
        );
        assert_eq!(
            messages(&body(serde_json::json!({
                "subnetId": "subnet-1", "allocationId": "eipalloc-1", "connectivityType": "both"
            }))),
            vec!["connectivityType: `connectivityType` must be one of \"public\", \"private\", found a string"]
        );
        let mut unknown = Map::new();
        unknown.insert("subnetId".into(), Value::Unknown("resource.a.id".into()));
        unknown.insert(
            "allocationId".into(),
            Value::Unknown("resource.ip.id".into()),
        );
        assert!(check("nat_gateway", &Value::Map(unknown)).is_empty());
    }

    #[test]
    fn every_field_replaces_and_keeping_the_address_destroys_first() {
        let before =
            body(serde_json::json!({"subnetId": "subnet-1", "allocationId": "eipalloc-1"}));
        let after = body(serde_json::json!({"subnetId": "subnet-2", "allocationId": "eipalloc-1"}));
        assert_eq!(
            model::replace_reasons(&NatGateway, &before, &after),
            vec!["subnetId changes from subnet-1 to subnet-2 (immutable)"]
        );
        assert!(NatGateway.destroy_first(&after, &before).is_some());
        let moved = body(serde_json::json!({"subnetId": "subnet-2", "allocationId": "eipalloc-2"}));
        assert_eq!(
            model::replace_reasons(&NatGateway, &before, &moved).len(),
            2
        );
        assert!(NatGateway.destroy_first(&moved, &before).is_none());
    }

    #[test]
    fn it_is_deleted_before_its_subnet_and_its_elastic_ip() {
        let wave = |k: &str| find(k).map(delete_wave).unwrap();
        assert!(wave("nat_gateway") < wave("eip"));
        assert!(wave("nat_gateway") < wave("subnet"));
    }

    #[test]
    fn it_normalises_into_the_spec_shape_with_its_addresses() {
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let g = Item::builder()
            .nat_gateway_id("nat-1")
            .subnet_id("subnet-1")
            .state(NatGatewayState::Pending)
            .nat_gateway_addresses(
                NatGatewayAddress::builder()
                    .allocation_id("eipalloc-1")
                    .public_ip("198.51.100.7")
                    .private_ip("10.0.1.9")
                    .build(),
            )
            .set_tags(Some(vec![
                tag("managed-by", "tidegate"),
                tag("tidegate:project", "shop"),
                tag("tidegate:environment", "dev"),
                tag("tidegate:module", "network"),
                tag("tidegate:resource", "network.nat"),
                tag("owner", "team"),
            ]))
            .build();
        let raw = raw(NatGateway, g, "eu-west-1").unwrap();
        assert_eq!(
            raw.listed,
            Some(Health::Progressing("NAT gateway pending".into()))
        );
        let live = to_live(&raw, &Owner::new("shop", "dev")).unwrap();
        assert_eq!(live.id.to_string(), "network.nat");
        assert_eq!(
            live.body.to_json_masked(),
            serde_json::json!({
                "subnetId": "subnet-1", "allocationId": "eipalloc-1",
                "connectivityType": "public", "tags": {"owner": "team"}
            })
        );
        assert_eq!(
            live.attributes["publicIp"],
            Value::String("198.51.100.7".into())
        );
        assert_eq!(
            live.attributes["privateIp"],
            Value::String("10.0.1.9".into())
        );
    }
}
