//! `vpc`: a VPC and its two DNS attributes.
//!
//! # Caveats
//! EC2 has no batched read of the DNS attributes; they are observed from
//! the tag tidegate writes when it sets them ([`TAG_VPC_DNS`]), so a change
//! made to them by hand is not seen.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, ResourceType, Tag};

use crate::provider::aws::calls::{sdk, ApiError};
use crate::provider::aws::kind::{created, Created, Ec2Kind, KindSpec, Seen, Update};
use crate::provider::aws::schema::{f, fixed, req, Field, Ty, TAGS};
use crate::provider::aws::sdk::{
    arn, attrs, bool_at, describe, ec2_tags, map, no_sdk_retries, s, string_at, Ec2,
};
use crate::provider::aws::values::{cidr, BLOCK_PREFIXES};
use crate::provider::{Desired, Health, Problem, Result};
use crate::value::{Map, Value};

/// The VPC DNS attributes tidegate last applied (EC2 has no batched read
/// for them).
pub(super) const TAG_VPC_DNS: &str = "tidegate:vpc-dns";

/// The value of [`TAG_VPC_DNS`].
fn dns_tag(support: bool, hostnames: bool) -> String {
    format!("support={support},hostnames={hostnames}")
}

/// `(enableDnsSupport, enableDnsHostnames)` from [`TAG_VPC_DNS`]; without
/// it, EC2's defaults.
fn dns(tags: &BTreeMap<String, String>) -> (bool, bool) {
    let t = tags.get(TAG_VPC_DNS).map(String::as_str).unwrap_or("");
    (!t.contains("support=false"), t.contains("hostnames=true"))
}

/// The `vpc` kind.
#[derive(Clone, Copy)]
pub(super) struct Vpc;

const FIELDS: &[Field] = &[
    req(fixed(f("cidrBlock", Ty::Str))),
    f("enableDnsHostnames", Ty::Bool),
    f("enableDnsSupport", Ty::Bool),
    TAGS,
];

impl KindSpec for Vpc {
    fn name(&self) -> &'static str {
        "vpc"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn attributes(&self) -> &'static [&'static str] {
        &["id", "cidrBlock", "arn"]
    }

    fn check_string(&self, field: &str, s: &str, path: &str, out: &mut Vec<Problem>) {
        if field == "cidrBlock" {
            cidr(field, s, Some(BLOCK_PREFIXES), path, out);
        }
    }
}

/// Sets both DNS attributes (a field the spec leaves out keeps its live
/// value) and records them in [`TAG_VPC_DNS`].
async fn set_dns(p: &Ec2, id: &str, d: &Value, live: &Value) -> Result<()> {
    let support = bool_at(d, "enableDnsSupport")
        .or(bool_at(live, "enableDnsSupport"))
        .unwrap_or(true);
    let hostnames = bool_at(d, "enableDnsHostnames")
        .or(bool_at(live, "enableDnsHostnames"))
        .unwrap_or(false);
    let flag = |b| AttributeBooleanValue::builder().value(b).build();
    // EC2 takes one attribute per call; support must be on before hostnames.
    p.call("ModifyVpcAttribute", || async {
        sdk(p
            .client
            .modify_vpc_attribute()
            .vpc_id(id)
            .enable_dns_support(flag(support))
            .send()
            .await)
    })
    .await?;
    p.call("ModifyVpcAttribute", || async {
        sdk(p
            .client
            .modify_vpc_attribute()
            .vpc_id(id)
            .enable_dns_hostnames(flag(hostnames))
            .send()
            .await)
    })
    .await?;
    let t = ec2_tags([(TAG_VPC_DNS.to_string(), dns_tag(support, hostnames))]);
    p.create_tags(id, t).await
}

#[async_trait::async_trait]
impl Ec2Kind for Vpc {
    type Item = aws_sdk_ec2::types::Vpc;

    fn id_filter(&self) -> &'static str {
        "vpc-id"
    }

    async fn describe(&self, p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Self::Item>, ApiError> {
        let pages = describe(p, "DescribeVpcs", || {
            p.client
                .describe_vpcs()
                .set_filters(Some(filters.clone()))
                .into_paginator()
                .send()
                .try_collect()
        })
        .await?;
        Ok(pages
            .into_iter()
            .flat_map(|o| o.vpcs.unwrap_or_default())
            .collect())
    }

    fn id<'a>(&self, v: &'a Self::Item) -> Option<&'a str> {
        v.vpc_id()
    }

    fn tags<'a>(&self, v: &'a Self::Item) -> &'a [Tag] {
        v.tags()
    }

    fn normalise(&self, v: &Self::Item, seen: Seen<'_>) -> (Value, Map) {
        let (support, hostnames) = dns(seen.tags);
        let arn = arn(seen.region, v.owner_id(), "vpc", seen.id);
        let attributes = attrs(vec![
            ("id", seen.id_value()),
            ("cidrBlock", s(v.cidr_block())),
            ("arn", Value::String(arn)),
        ]);
        let body = map(vec![
            ("cidrBlock", s(v.cidr_block())),
            ("enableDnsHostnames", Value::Bool(hostnames)),
            ("enableDnsSupport", Value::Bool(support)),
            ("tags", seen.user_tags),
        ]);
        (body, attributes)
    }

    fn listed_health(&self, v: &Self::Item) -> Option<Health> {
        Some(match v.state().map(|s| s.as_str()) {
            Some("pending") => Health::Progressing("VPC pending".into()),
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
        let dns = vec![(TAG_VPC_DNS.to_string(), dns_tag(true, false))];
        let o = sdk(p
            .client
            .create_vpc()
            .set_cidr_block(string_at(d, "cidrBlock"))
            .tag_specifications(p.tag_spec(ResourceType::Vpc, desired, d, dns))
            .customize()
            .config_override(no_sdk_retries())
            .send()
            .await)?;
        created(self.name(), o.vpc.and_then(|v| v.vpc_id))
    }

    async fn update(&self, p: &Ec2, u: &Update<'_>, _v: &Self::Item) -> Result<()> {
        for field in &u.fields {
            if !matches!(*field, "enableDnsSupport" | "enableDnsHostnames") {
                return Err(u.unchangeable(field));
            }
        }
        set_dns(p, u.id, u.d, u.live).await
    }

    async fn delete(&self, p: &Ec2, id: &str, _v: &Self::Item) -> Result<(), ApiError> {
        p.send("DeleteVpc", false, || async {
            sdk(p.client.delete_vpc().vpc_id(id).send().await).map(|_| ())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::aws::kind::raw;
    use crate::provider::aws::observe::to_live;
    use crate::provider::aws::tags;
    use crate::provider::Owner;

    fn tag(k: &str, v: &str) -> Tag {
        Tag::builder().key(k).value(v).build()
    }

    fn owner() -> Owner {
        Owner::new("shop", "dev")
    }

    fn owned_tags() -> Vec<Tag> {
        vec![
            tag("managed-by", "tidegate"),
            tag("tidegate:project", "shop"),
            tag("tidegate:environment", "dev"),
            tag("tidegate:module", "network"),
            tag("tidegate:resource", "network.web"),
            tag("owner", "team"),
        ]
    }

    fn vpc(tags: Vec<Tag>) -> aws_sdk_ec2::types::Vpc {
        aws_sdk_ec2::types::Vpc::builder()
            .vpc_id("vpc-1")
            .cidr_block("10.0.0.0/16")
            .set_tags(Some(tags))
            .build()
    }

    #[test]
    fn unowned_resources_are_ignored_and_deposed_ones_renamed() {
        let unowned = raw(
            Vpc,
            vpc(vec![tag("tidegate:environment", "dev")]),
            "eu-west-1",
        );
        assert!(to_live(&unowned.unwrap(), &owner()).is_none());
        let mut tags = owned_tags();
        tags.push(tag(tags::TAG_DEPOSED, "true"));
        let raw = raw(Vpc, vpc(tags), "eu-west-1").unwrap();
        assert!(raw.is_deposed());
        let live = to_live(&raw, &owner()).unwrap();
        assert_eq!(live.id.name, "web~deposed~vpc-1");
        assert!(!live.is_legacy());
    }

    #[test]
    fn legacy_tags_are_adopted_and_other_projects_ignored() {
        let live_of = |tags: Vec<Tag>| to_live(&raw(Vpc, vpc(tags), "eu-west-1")?, &owner());
        let legacy: Vec<Tag> = owned_tags()
            .into_iter()
            .filter(|t| t.key() != Some("tidegate:project"))
            .collect();
        let live = live_of(legacy).unwrap();
        assert!(live.is_legacy() && !live.prune_disabled());
        let mut other = owned_tags();
        other[1] = tag("tidegate:project", "blog");
        assert!(live_of(other).is_none());
        let mut kept = owned_tags();
        kept.push(tag("tidegate.dev/prune", "disabled"));
        let live = live_of(kept).unwrap();
        assert!(live.prune_disabled() && !live.is_legacy());
        assert_eq!(
            live.body.get_path("enableDnsSupport"),
            Some(&Value::Bool(true))
        );
        assert_eq!(
            live.attributes["arn"],
            Value::String("arn:aws:ec2:eu-west-1:000000000000:vpc/vpc-1".into())
        );
    }

    #[test]
    fn dns_attributes_come_from_their_tag() {
        let tags: BTreeMap<String, String> =
            [(TAG_VPC_DNS.to_string(), dns_tag(false, true))].into();
        assert_eq!(dns(&tags), (false, true));
        assert_eq!(dns(&BTreeMap::new()), (true, false));
    }
}
