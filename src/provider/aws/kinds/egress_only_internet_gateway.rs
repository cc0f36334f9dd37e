//! `egress_only_internet_gateway`: an egress-only internet gateway of one
//! VPC (IPv6 traffic out, none in). Its VPC is immutable: EC2 changes
//! nothing of it in place but its tags.
//!
//! # Guarantees
//! - CreateEgressOnlyInternetGateway carries a ClientToken and tags the
//!   gateway at creation.
//! - One DescribeEgressOnlyInternetGateways sequence per observe; a read by
//!   id names the gateway in `EgressOnlyInternetGatewayIds` (moto 5.2.5
//!   ignores every filter of this call, so the tag filters are checked
//!   again on the answer by observe, and the id is never a filter).

use aws_sdk_ec2::types::{
    AttachmentStatus, EgressOnlyInternetGateway as Item, Filter, ResourceType, Tag,
};

use crate::provider::aws::calls::{sdk, ApiError};
use crate::provider::aws::kind::{created, Created, Ec2Kind, KindSpec, Seen, Update};
use crate::provider::aws::schema::{f, fixed, req, Field, Ty, TAGS};
use crate::provider::aws::sdk::{
    attrs, describe, map, no_sdk_retries, none_when_gone, s, string_at, take_filter, Ec2,
};
use crate::provider::{Desired, Health, Result};
use crate::value::{Map, Value};

/// The `egress_only_internet_gateway` kind.
#[derive(Clone, Copy)]
pub(super) struct EgressOnlyInternetGateway;

const FIELDS: &[Field] = &[req(fixed(f("vpcId", Ty::Str))), TAGS];

/// The id filter, sent as `EgressOnlyInternetGatewayIds`.
const ID_FILTER: &str = "egress-only-internet-gateway-id";

impl KindSpec for EgressOnlyInternetGateway {
    fn name(&self) -> &'static str {
        "egress_only_internet_gateway"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn attributes(&self) -> &'static [&'static str] {
        &["id"]
    }

    /// It is attached to its VPC.
    fn deleted_before(&self) -> &'static [&'static str] {
        &["vpc"]
    }

    fn resalt_when_invisible(&self) -> bool {
        true
    }
}

#[async_trait::async_trait]
impl Ec2Kind for EgressOnlyInternetGateway {
    type Item = Item;

    fn id_filter(&self) -> &'static str {
        ID_FILTER
    }

    async fn describe(&self, p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Self::Item>, ApiError> {
        let (filters, ids) = take_filter(filters, ID_FILTER);
        let pages = describe(p, "DescribeEgressOnlyInternetGateways", || {
            p.client
                .describe_egress_only_internet_gateways()
                .set_egress_only_internet_gateway_ids(ids.clone())
                .set_filters(Some(filters.clone()))
                .into_paginator()
                .send()
                .try_collect()
        })
        .await;
        let pages = none_when_gone(pages, ids.is_some())?;
        Ok(pages
            .into_iter()
            .flat_map(|o| o.egress_only_internet_gateways.unwrap_or_default())
            .collect())
    }

    fn id<'a>(&self, g: &'a Self::Item) -> Option<&'a str> {
        g.egress_only_internet_gateway_id()
    }

    fn tags<'a>(&self, g: &'a Self::Item) -> &'a [Tag] {
        g.tags()
    }

    fn normalise(&self, g: &Self::Item, seen: Seen<'_>) -> (Value, Map) {
        let vpc = g.attachments().iter().find_map(|a| a.vpc_id());
        let attributes = attrs(vec![("id", seen.id_value())]);
        let body = map(vec![("vpcId", s(vpc)), ("tags", seen.user_tags)]);
        (body, attributes)
    }

    fn listed_health(&self, g: &Self::Item) -> Option<Health> {
        let state = g.attachments().iter().find_map(|a| a.state());
        Some(match state {
            Some(AttachmentStatus::Attached) => Health::Healthy,
            Some(other) => {
                Health::Progressing(format!("egress-only internet gateway {}", other.as_str()))
            }
            None => Health::Progressing("egress-only internet gateway not attached yet".into()),
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
            .create_egress_only_internet_gateway()
            .set_vpc_id(string_at(d, "vpcId"))
            .client_token(token)
            .tag_specifications(p.tag_spec(
                ResourceType::EgressOnlyInternetGateway,
                desired,
                d,
                vec![],
            ))
            .customize()
            .config_override(no_sdk_retries())
            .send()
            .await)?;
        created(
            self.name(),
            o.egress_only_internet_gateway
                .and_then(|g| g.egress_only_internet_gateway_id),
        )
    }

    async fn update(&self, _p: &Ec2, u: &Update<'_>, _g: &Self::Item) -> Result<()> {
        match u.fields.first() {
            Some(field) => Err(u.unchangeable(field)),
            None => Ok(()),
        }
    }

    async fn delete(&self, p: &Ec2, id: &str, _g: &Self::Item) -> Result<(), ApiError> {
        p.send("DeleteEgressOnlyInternetGateway", false, || async {
            sdk(p
                .client
                .delete_egress_only_internet_gateway()
                .egress_only_internet_gateway_id(id)
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
    use aws_sdk_ec2::types::InternetGatewayAttachment;

    fn body(j: serde_json::Value) -> Value {
        Value::from_json(j)
    }

    #[test]
    fn it_needs_its_vpc_and_a_new_vpc_replaces_it() {
        assert!(check(
            "egress_only_internet_gateway",
            &body(serde_json::json!({"vpcId": "vpc-1"}))
        )
        .is_empty());
        let p = check("egress_only_internet_gateway", &body(serde_json::json!({})));
        assert_eq!(p[0].message, "missing required field `vpcId`");
        assert_eq!(
            model::replace_reasons(
                &EgressOnlyInternetGateway,
                &body(serde_json::json!({"vpcId": "vpc-1"})),
                &body(serde_json::json!({"vpcId": "vpc-2"}))
            ),
            vec!["vpcId changes from vpc-1 to vpc-2 (immutable)"]
        );
    }

    #[test]
    fn it_is_deleted_before_its_vpc_and_after_the_routes_to_it() {
        let wave = |k: &str| find(k).map(delete_wave).unwrap();
        assert!(wave("egress_only_internet_gateway") < wave("vpc"));
        assert!(wave("route") < wave("egress_only_internet_gateway"));
    }

    #[test]
    fn it_normalises_into_the_spec_shape() {
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let g = Item::builder()
            .egress_only_internet_gateway_id("eigw-1")
            .attachments(
                InternetGatewayAttachment::builder()
                    .vpc_id("vpc-1")
                    .state(AttachmentStatus::Attached)
                    .build(),
            )
            .set_tags(Some(vec![
                tag("managed-by", "tidegate"),
                tag("tidegate:project", "shop"),
                tag("tidegate:environment", "dev"),
                tag("tidegate:module", "network"),
                tag("tidegate:resource", "network.eigw"),
                tag("owner", "team"),
            ]))
            .build();
        let raw = raw(EgressOnlyInternetGateway, g, "eu-west-1").unwrap();
        assert_eq!(raw.listed, Some(Health::Healthy));
        let live = to_live(&raw, &Owner::new("shop", "dev")).unwrap();
        assert_eq!(live.id.to_string(), "network.eigw");
        assert_eq!(
            live.body.to_json_masked(),
            serde_json::json!({"vpcId": "vpc-1", "tags": {"owner": "team"}})
        );
        assert_eq!(live.attributes["id"], Value::String("eigw-1".into()));
    }
}
