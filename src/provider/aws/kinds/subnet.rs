//! `subnet`: a subnet of a VPC, in an availability zone EC2 picks when the
//! spec leaves it out.

use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, ResourceType, Subnet as Item, Tag};

use crate::provider::aws::calls::{sdk, ApiError};
use crate::provider::aws::kind::{created, Created, Ec2Kind, KindSpec, Seen, Update};
use crate::provider::aws::schema::{f, fixed, req, Field, Ty, TAGS};
use crate::provider::aws::sdk::{
    arn, attrs, bool_at, describe, map, no_sdk_retries, s, string_at, Ec2,
};
use crate::provider::aws::values::{cidr, BLOCK_PREFIXES};
use crate::provider::{Desired, Health, Problem, Result};
use crate::value::{Map, Value};

/// The `subnet` kind.
#[derive(Clone, Copy)]
pub(super) struct Subnet;

const FIELDS: &[Field] = &[
    req(fixed(f("vpcId", Ty::Str))),
    req(fixed(f("cidrBlock", Ty::Str))),
    fixed(f("availabilityZone", Ty::Str)),
    f("mapPublicIpOnLaunch", Ty::Bool),
    TAGS,
];

impl KindSpec for Subnet {
    fn name(&self) -> &'static str {
        "subnet"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn attributes(&self) -> &'static [&'static str] {
        &["id", "availabilityZone", "cidrBlock", "arn"]
    }

    /// The gateway stays attached while addresses in the subnets are
    /// mapped to it.
    fn deleted_before(&self) -> &'static [&'static str] {
        &["internet_gateway", "vpc"]
    }

    fn computed(&self) -> &'static [&'static str] {
        &["availabilityZone"]
    }

    fn check_string(&self, field: &str, s: &str, path: &str, out: &mut Vec<Problem>) {
        if field == "cidrBlock" {
            cidr(field, s, Some(BLOCK_PREFIXES), path, out);
        }
    }
}

#[async_trait::async_trait]
impl Ec2Kind for Subnet {
    type Item = Item;

    fn id_filter(&self) -> &'static str {
        "subnet-id"
    }

    async fn describe(&self, p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Self::Item>, ApiError> {
        let pages = describe(p, "DescribeSubnets", || {
            p.client
                .describe_subnets()
                .set_filters(Some(filters.clone()))
                .into_paginator()
                .send()
                .try_collect()
        })
        .await?;
        Ok(pages
            .into_iter()
            .flat_map(|o| o.subnets.unwrap_or_default())
            .collect())
    }

    fn id<'a>(&self, v: &'a Self::Item) -> Option<&'a str> {
        v.subnet_id()
    }

    fn tags<'a>(&self, v: &'a Self::Item) -> &'a [Tag] {
        v.tags()
    }

    fn normalise(&self, v: &Self::Item, seen: Seen<'_>) -> (Value, Map) {
        let subnet_arn = v
            .subnet_arn()
            .map(str::to_string)
            .unwrap_or_else(|| arn(seen.region, v.owner_id(), "subnet", seen.id));
        let attributes = attrs(vec![
            ("id", seen.id_value()),
            ("availabilityZone", s(v.availability_zone())),
            ("cidrBlock", s(v.cidr_block())),
            ("arn", Value::String(subnet_arn)),
        ]);
        let body = map(vec![
            ("vpcId", s(v.vpc_id())),
            ("cidrBlock", s(v.cidr_block())),
            ("availabilityZone", s(v.availability_zone())),
            (
                "mapPublicIpOnLaunch",
                Value::Bool(v.map_public_ip_on_launch().unwrap_or(false)),
            ),
            ("tags", seen.user_tags),
        ]);
        (body, attributes)
    }

    fn listed_health(&self, v: &Self::Item) -> Option<Health> {
        Some(match v.state().map(|s| s.as_str()) {
            Some("pending") => Health::Progressing("subnet pending".into()),
            _ => Health::Healthy,
        })
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
            .create_subnet()
            .set_vpc_id(string_at(d, "vpcId"))
            .set_cidr_block(string_at(d, "cidrBlock"))
            .set_availability_zone(string_at(d, "availabilityZone"))
            .tag_specifications(p.tag_spec(ResourceType::Subnet, desired, d, vec![]))
            .customize()
            .config_override(no_sdk_retries())
            .send()
            .await)?;
        created(self.name(), o.subnet.and_then(|v| v.subnet_id))
    }

    async fn update(&self, p: &Ec2, u: &Update<'_>, _v: &Self::Item) -> Result<()> {
        for field in &u.fields {
            if *field != "mapPublicIpOnLaunch" {
                return Err(u.unchangeable(field));
            }
            let v = AttributeBooleanValue::builder()
                .set_value(bool_at(u.d, field))
                .build();
            p.call("ModifySubnetAttribute", || async {
                sdk(p
                    .client
                    .modify_subnet_attribute()
                    .subnet_id(u.id)
                    .map_public_ip_on_launch(v.clone())
                    .send()
                    .await)
            })
            .await?;
        }
        Ok(())
    }

    async fn delete(&self, p: &Ec2, id: &str, _v: &Self::Item) -> Result<(), ApiError> {
        p.send("DeleteSubnet", false, || async {
            sdk(p.client.delete_subnet().subnet_id(id).send().await).map(|_| ())
        })
        .await
    }
}
