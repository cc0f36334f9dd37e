//! `internet_gateway`: a gateway and its attachment to one VPC (`vpcId`),
//! which changes in place (detach, attach).

use aws_sdk_ec2::types::{Filter, InternetGateway as Gateway, ResourceType, Tag};

use crate::provider::aws::calls::{sdk, ApiError};
use crate::provider::aws::kind::{created, Created, Ec2Kind, KindSpec, Seen, Update};
use crate::provider::aws::schema::{f, req, Field, Ty, TAGS};
use crate::provider::aws::sdk::{attrs, describe, map, no_sdk_retries, s, str_at, Ec2};
use crate::provider::{Desired, Result};
use crate::value::{Map, Value};

/// The `internet_gateway` kind.
#[derive(Clone, Copy)]
pub(super) struct InternetGateway;

const FIELDS: &[Field] = &[req(f("vpcId", Ty::Str)), TAGS];

impl KindSpec for InternetGateway {
    fn name(&self) -> &'static str {
        "internet_gateway"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn attributes(&self) -> &'static [&'static str] {
        &["id"]
    }

    fn deleted_before(&self) -> &'static [&'static str] {
        &["vpc"]
    }
}

/// Detaches gateway `id` from every VPC it is attached to; `fresh` as in
/// [`Ec2::send`].
async fn detach_all(p: &Ec2, id: &str, g: &Gateway, fresh: bool) -> Result<(), ApiError> {
    for vpc in g.attachments().iter().filter_map(|a| a.vpc_id()) {
        p.send("DetachInternetGateway", fresh, || async {
            sdk(p
                .client
                .detach_internet_gateway()
                .internet_gateway_id(id)
                .vpc_id(vpc)
                .send()
                .await)
            .map(|_| ())
        })
        .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Ec2Kind for InternetGateway {
    type Item = Gateway;

    fn id_filter(&self) -> &'static str {
        "internet-gateway-id"
    }

    async fn describe(&self, p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Self::Item>, ApiError> {
        let pages = describe(p, "DescribeInternetGateways", || {
            p.client
                .describe_internet_gateways()
                .set_filters(Some(filters.clone()))
                .into_paginator()
                .send()
                .try_collect()
        })
        .await?;
        Ok(pages
            .into_iter()
            .flat_map(|o| o.internet_gateways.unwrap_or_default())
            .collect())
    }

    fn id<'a>(&self, g: &'a Self::Item) -> Option<&'a str> {
        g.internet_gateway_id()
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

    async fn create(
        &self,
        p: &Ec2,
        desired: &Desired,
        d: &Value,
        _token: &str,
    ) -> Result<Created, ApiError> {
        let o = sdk(p
            .client
            .create_internet_gateway()
            .tag_specifications(p.tag_spec(ResourceType::InternetGateway, desired, d, vec![]))
            .customize()
            .config_override(no_sdk_retries())
            .send()
            .await)?;
        created(
            self.name(),
            o.internet_gateway.and_then(|g| g.internet_gateway_id),
        )
    }

    async fn update(&self, p: &Ec2, u: &Update<'_>, g: &Self::Item) -> Result<()> {
        for field in &u.fields {
            if *field != "vpcId" {
                return Err(u.unchangeable(field));
            }
            detach_all(p, u.id, g, true)
                .await
                .map_err(|e| e.into_error("DetachInternetGateway"))?;
            if let Some(vpc) = str_at(u.d, "vpcId") {
                p.call("AttachInternetGateway", || async {
                    sdk(p
                        .client
                        .attach_internet_gateway()
                        .internet_gateway_id(u.id)
                        .vpc_id(vpc)
                        .send()
                        .await)
                })
                .await?;
            }
        }
        Ok(())
    }

    async fn delete(&self, p: &Ec2, id: &str, g: &Self::Item) -> Result<(), ApiError> {
        detach_all(p, id, g, false).await?;
        p.send("DeleteInternetGateway", false, || async {
            sdk(p
                .client
                .delete_internet_gateway()
                .internet_gateway_id(id)
                .send()
                .await)
            .map(|_| ())
        })
        .await
    }
}
