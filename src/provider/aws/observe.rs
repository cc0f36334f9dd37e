//! Reading owned EC2 resources, batched, into the spec shape.
//!
//! Each type is read with one Describe call sequence filtered by the
//! environment's tag (paginated where EC2 paginates; instances add one
//! DescribeVolumes sequence for all their root volumes), which its kind
//! makes (`kinds/<type>.rs`) and normalises into the spec shape of
//! CONTRACTS.md, so that a desired spec and an observed one compare field
//! by field. The same listing reads a single resource by id (an extra id
//! filter), which apply and health use. Ownership is decided here, from
//! the tags, for every kind alike.

use std::collections::BTreeMap;
use std::future::Future;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{Filter, Tag};

use super::calls::{sdk, ApiError};
use super::kinds::{Kind, Raw};
use super::tags;
use super::AwsProvider;
use crate::provider::{labels, Claim, Live, Owner, ResourceId};
use crate::value::{Map, Value};

/// Filter of one name and values.
pub fn filter(name: &str, values: &[&str]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

/// The Describe filter naming one resource of `kind` by id.
pub(super) fn id_filter(kind: &dyn Kind, id: &str) -> Filter {
    filter(kind.id_filter(), &[id])
}

impl AwsProvider {
    /// Owned resources of `kind`, narrowed by `extra` filters: its kind's
    /// one Describe call sequence.
    pub(super) async fn list(
        &self,
        kind: &dyn Kind,
        extra: Vec<Filter>,
    ) -> Result<Vec<Raw>, ApiError> {
        let mut filters = vec![filter(
            &format!("tag:{}", tags::TAG_ENVIRONMENT),
            &[&self.owner.environment],
        )];
        filters.extend(extra);
        let mut raws = kind.describe(self, filters.clone()).await?;
        raws.retain(|r| tags_match(&filters, &r.tags));
        Ok(raws)
    }
}

/// Whether `tags` satisfy every `tag:<key>` filter of `filters`. EC2
/// applies them itself; they are checked again because a stand-in may
/// ignore them (moto does for NAT gateways), and a search by resource tag
/// must never find another resource.
fn tags_match(filters: &[Filter], tags: &BTreeMap<String, String>) -> bool {
    filters.iter().all(|f| {
        let Some(key) = f.name().and_then(|n| n.strip_prefix("tag:")) else {
            return true;
        };
        tags.get(key)
            .is_some_and(|v| f.values().iter().any(|want| want == v))
    })
}

/// Runs one Describe call sequence (every page) under the retry policy:
/// `pages` sends it.
pub(super) async fn describe<O, E, R, F, Fut>(
    p: &AwsProvider,
    operation: &str,
    pages: F,
) -> Result<Vec<O>, ApiError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Vec<O>, SdkError<E, R>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    p.policy
        .run(operation, false, || async { sdk(pages().await) })
        .await
}

/// Tags as a map.
pub(super) fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

/// A string value, `Null` when absent.
pub(super) fn s(v: Option<&str>) -> Value {
    v.map(|s| Value::String(s.to_string()))
        .unwrap_or(Value::Null)
}

/// A sorted set of strings.
pub(super) fn strings<'a>(items: impl Iterator<Item = &'a str>) -> Value {
    let mut v: Vec<&str> = items.collect();
    v.sort();
    v.dedup();
    Value::List(v.into_iter().map(|s| Value::String(s.into())).collect())
}

/// A map of the entries that are not `Null`.
pub(super) fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .filter(|(_, v)| !matches!(v, Value::Null))
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// Attributes: the entries that are not `Null`.
pub(super) fn attrs(entries: Vec<(&str, Value)>) -> Map {
    match map(entries) {
        Value::Map(m) => m,
        _ => Map::new(),
    }
}

/// The ARN of an EC2 resource: `arn:<partition>:ec2:<region>:<account>:<type>/<id>`.
pub fn arn(region: &str, account: Option<&str>, resource: &str, id: &str) -> String {
    let partition = if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    };
    let account = account.unwrap_or("000000000000");
    format!("arn:{partition}:ec2:{region}:{account}:{resource}/{id}")
}

/// The normalised live state of a listed resource; `None` when it does not
/// carry tidegate's ownership marks.
pub(super) fn to_live(raw: &Raw, owner: &Owner) -> Option<Live> {
    let legacy = match tags::claim(&raw.tags, owner) {
        Claim::Ours => false,
        Claim::Legacy => true,
        Claim::Foreign(_) | Claim::Unmanaged => return None,
    };
    let keep = raw.tags.get(labels::PRUNE).map(String::as_str) == Some("disabled");
    let mut id = tags::id_from_tags(&raw.tags)?;
    if raw.is_deposed() {
        id = ResourceId {
            module: id.module,
            name: format!("{}~deposed~{}", id.name, raw.external_id),
        };
    }
    Some(
        Live {
            id,
            kind: raw.kind.to_string(),
            external_id: raw.external_id.clone(),
            body: raw.body.clone(),
            attributes: raw.attributes.clone(),
        }
        .with_marks(legacy, keep),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_carry_partition_region_account_and_type() {
        assert_eq!(
            arn("eu-west-1", Some("123456789012"), "vpc", "vpc-1"),
            "arn:aws:ec2:eu-west-1:123456789012:vpc/vpc-1"
        );
        assert_eq!(
            arn("cn-north-1", Some("1"), "subnet", "subnet-2"),
            "arn:aws-cn:ec2:cn-north-1:1:subnet/subnet-2"
        );
        assert!(
            arn("us-gov-west-1", None, "vpc", "v").starts_with("arn:aws-us-gov:ec2:us-gov-west-1:")
        );
    }

    #[test]
    fn tag_filters_are_checked_again_on_what_ec2_answered() {
        let tags: BTreeMap<String, String> = [
            ("tidegate:environment".to_string(), "dev".to_string()),
            ("tidegate:resource".to_string(), "network.nat".to_string()),
        ]
        .into_iter()
        .collect();
        let env = |e: &str| filter("tag:tidegate:environment", &[e]);
        assert!(tags_match(
            &[env("dev"), filter("vpc-id", &["vpc-1"])],
            &tags
        ));
        assert!(!tags_match(&[env("prod")], &tags));
        assert!(tags_match(
            &[filter("tag:tidegate:resource", &["network.nat", "x"])],
            &tags
        ));
        assert!(!tags_match(&[filter("tag:owner", &["me"])], &tags));
    }
}
