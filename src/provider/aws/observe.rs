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

use aws_sdk_ec2::types::Filter;

use super::calls::ApiError;
use super::kind::{Kind, Raw};
use super::sdk::{filter, Ec2};
use super::tags;
use crate::provider::{labels, Claim, Live, Owner, ResourceId};

/// The Describe filter naming one resource of `kind` by id.
pub(super) fn id_filter(kind: &dyn Kind, id: &str) -> Filter {
    filter(kind.id_filter(), &[id])
}

/// Owned resources of `kind`, narrowed by `extra` filters: its kind's one
/// Describe call sequence.
pub(super) async fn list(
    ec2: &Ec2,
    kind: &dyn Kind,
    extra: Vec<Filter>,
) -> Result<Vec<Raw>, ApiError> {
    let mut filters = vec![filter(
        &format!("tag:{}", tags::TAG_ENVIRONMENT),
        &[&ec2.owner.environment],
    )];
    filters.extend(extra);
    let mut raws = kind.describe(ec2, filters.clone()).await?;
    raws.retain(|r| tags_match(&filters, &r.tags));
    Ok(raws)
}

/// Whether `tags` satisfy every `tag:<key>` filter of `filters`. EC2
/// applies them itself; they are checked again because a stand-in may
/// ignore them (moto does for NAT gateways), and a search by resource tag
/// must never find another resource.
pub(super) fn tags_match(filters: &[Filter], tags: &BTreeMap<String, String>) -> bool {
    filters.iter().all(|f| {
        let Some(key) = f.name().and_then(|n| n.strip_prefix("tag:")) else {
            return true;
        };
        tags.get(key)
            .is_some_and(|v| f.values().iter().any(|want| want == v))
    })
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
