//! `vpc_peering`: a VPC peering connection requested from `vpcId` to
//! `peerVpcId` (in `peerRegion` and account `peerOwnerId`, this region
//! and account when left out). All of that is immutable. With `autoAccept`
//! tidegate accepts the request itself when the peer is in the same
//! account and region: in the converge right after the create, and on any
//! later apply that finds the request still pending.
//!
//! # Health
//! `active` is healthy; `initiating-request`, `provisioning` and a pending
//! request tidegate is to accept (`autoAccept: true`, same account and
//! region) are progressing. A request left to the peer's owner
//! (`autoAccept` false, or another account or region) is healthy while it
//! is `pending-acceptance`: tidegate's part is done, and an apply must not
//! wait for another owner. `failed`, `rejected` and `expired` are failed.
//!
//! # Guarantees
//! - `autoAccept` is not EC2's: it is recorded in the tag
//!   `tidegate:auto-accept` at creation, and observed as true only once
//!   there is nothing left for tidegate to accept, so a lost accept is
//!   retried by the next apply.
//! - One DescribeVpcPeeringConnections sequence per observe, of live
//!   connections only (not deleted, rejected or expired). moto 5.2.5
//!   ignores every filter of this call, so the state is checked again on
//!   the answer (and the tag filters by observe), and a read by id names
//!   the connection in `VpcPeeringConnectionIds`.
//! - CreateVpcPeeringConnection takes no ClientToken: a lost answer is
//!   searched for by tag before anything is sent again.

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, VpcPeeringConnection as Item};

use crate::provider::aws::calls::{sdk, ApiError};
use crate::provider::aws::kind::{created, Created, Ec2Kind, KindSpec, Seen, Update};
use crate::provider::aws::schema::{f, fixed, req, Field, Ty, TAGS};
use crate::provider::aws::sdk::{
    attrs, bool_at, describe, ec2_tags, filter, map, no_sdk_retries, none_when_gone, s, string_at,
    take_filter, Ec2,
};
use crate::provider::{Desired, Health, Result};
use crate::value::{Map, Value};

/// The `vpc_peering` kind.
#[derive(Clone, Copy)]
pub(super) struct VpcPeering;

const FIELDS: &[Field] = &[
    req(fixed(f("vpcId", Ty::Str))),
    req(fixed(f("peerVpcId", Ty::Str))),
    fixed(f("peerRegion", Ty::Str)),
    fixed(f("peerOwnerId", Ty::Str)),
    f("autoAccept", Ty::Bool),
    TAGS,
];

/// The id filter, sent as `VpcPeeringConnectionIds`.
const ID_FILTER: &str = "vpc-peering-connection-id";

/// The tag recording `autoAccept`.
pub(super) const TAG_AUTO_ACCEPT: &str = "tidegate:auto-accept";

/// States of a connection that observe lists.
const LIVE_STATES: &[&str] = &[
    "initiating-request",
    "pending-acceptance",
    "provisioning",
    "active",
    "failed",
];

/// States in which the accepter may still accept.
const PENDING: &[&str] = &["initiating-request", "pending-acceptance"];

impl KindSpec for VpcPeering {
    fn name(&self) -> &'static str {
        "vpc_peering"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn attributes(&self) -> &'static [&'static str] {
        &["id", "status"]
    }

    /// It joins its VPC to the peer.
    fn deleted_before(&self) -> &'static [&'static str] {
        &["vpc"]
    }
}

/// The status code of a connection.
fn status(c: &Item) -> &str {
    c.status()
        .and_then(|s| s.code())
        .map_or("pending-acceptance", |c| c.as_str())
}

/// Whether tidegate can accept it: the accepter is in the requester's
/// account and region.
fn acceptable(c: &Item) -> bool {
    let (r, a) = (c.requester_vpc_info(), c.accepter_vpc_info());
    let same = |x: Option<&str>, y: Option<&str>| x.is_some() && x == y;
    same(r.and_then(|r| r.owner_id()), a.and_then(|a| a.owner_id()))
        && same(r.and_then(|r| r.region()), a.and_then(|a| a.region()))
}

/// Whether the tag asks tidegate to accept.
fn auto_accept(c: &Item) -> bool {
    c.tags()
        .iter()
        .any(|t| t.key() == Some(TAG_AUTO_ACCEPT) && t.value() == Some("true"))
}

/// Whether an accept is owed: asked for, possible, and not done.
fn accept_owed(c: &Item) -> bool {
    auto_accept(c) && acceptable(c) && PENDING.contains(&status(c))
}

#[async_trait::async_trait]
impl Ec2Kind for VpcPeering {
    type Item = Item;

    fn id_filter(&self) -> &'static str {
        ID_FILTER
    }

    async fn describe(&self, p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Self::Item>, ApiError> {
        let (mut filters, ids) = take_filter(filters, ID_FILTER);
        filters.push(filter("status-code", LIVE_STATES));
        let pages = describe(p, "DescribeVpcPeeringConnections", || {
            p.client
                .describe_vpc_peering_connections()
                .set_vpc_peering_connection_ids(ids.clone())
                .set_filters(Some(filters.clone()))
                .into_paginator()
                .send()
                .try_collect()
        })
        .await;
        let pages = none_when_gone(pages, ids.is_some())?;
        Ok(pages
            .into_iter()
            .flat_map(|o| o.vpc_peering_connections.unwrap_or_default())
            .filter(|c| LIVE_STATES.contains(&status(c)))
            .collect())
    }

    fn id<'a>(&self, c: &'a Self::Item) -> Option<&'a str> {
        c.vpc_peering_connection_id()
    }

    fn tags<'a>(&self, c: &'a Self::Item) -> &'a [Tag] {
        c.tags()
    }

    fn normalise(&self, c: &Self::Item, seen: Seen<'_>) -> (Value, Map) {
        let (r, a) = (c.requester_vpc_info(), c.accepter_vpc_info());
        let attributes = attrs(vec![
            ("id", seen.id_value()),
            ("status", s(Some(status(c)))),
        ]);
        let body = map(vec![
            ("vpcId", s(r.and_then(|r| r.vpc_id()))),
            ("peerVpcId", s(a.and_then(|a| a.vpc_id()))),
            ("peerRegion", s(a.and_then(|a| a.region()))),
            ("peerOwnerId", s(a.and_then(|a| a.owner_id()))),
            ("autoAccept", Value::Bool(auto_accept(c) && !accept_owed(c))),
            ("tags", seen.user_tags),
        ]);
        (body, attributes)
    }

    fn listed_health(&self, c: &Self::Item) -> Option<Health> {
        Some(match status(c) {
            "active" => Health::Healthy,
            s @ ("failed" | "rejected" | "expired") => Health::Failed(format!(
                "VPC peering {s}{}",
                c.status()
                    .and_then(|s| s.message())
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            )),
            "pending-acceptance" if !accept_owed(c) => Health::Healthy,
            other => Health::Progressing(format!("VPC peering {other}")),
        })
    }

    async fn create(
        &self,
        p: &Ec2,
        desired: &Desired,
        d: &Value,
        _token: &str,
    ) -> Result<Created, ApiError> {
        let accept = bool_at(d, "autoAccept") == Some(true);
        let extra = vec![(TAG_AUTO_ACCEPT.to_string(), accept.to_string())];
        let o = sdk(p
            .client
            .create_vpc_peering_connection()
            .set_vpc_id(string_at(d, "vpcId"))
            .set_peer_vpc_id(string_at(d, "peerVpcId"))
            .set_peer_region(string_at(d, "peerRegion"))
            .set_peer_owner_id(string_at(d, "peerOwnerId"))
            .tag_specifications(p.tag_spec(ResourceType::VpcPeeringConnection, desired, d, extra))
            .customize()
            .config_override(no_sdk_retries())
            .send()
            .await)?;
        created(
            self.name(),
            o.vpc_peering_connection
                .and_then(|c| c.vpc_peering_connection_id),
        )
    }

    /// `autoAccept`: accepts when owed, and records the choice.
    async fn update(&self, p: &Ec2, u: &Update<'_>, c: &Self::Item) -> Result<()> {
        if let Some(other) = u.fields.iter().find(|f| **f != "autoAccept") {
            return Err(u.unchangeable(other));
        }
        let accept = bool_at(u.d, "autoAccept") == Some(true);
        p.create_tags(
            u.id,
            ec2_tags([(TAG_AUTO_ACCEPT.into(), accept.to_string())]),
        )
        .await?;
        if accept && acceptable(c) && PENDING.contains(&status(c)) {
            p.call("AcceptVpcPeeringConnection", || async {
                sdk(p
                    .client
                    .accept_vpc_peering_connection()
                    .vpc_peering_connection_id(u.id)
                    .send()
                    .await)
            })
            .await?;
        }
        Ok(())
    }

    async fn delete(&self, p: &Ec2, id: &str, _c: &Self::Item) -> Result<(), ApiError> {
        p.send("DeleteVpcPeeringConnection", false, || async {
            sdk(p
                .client
                .delete_vpc_peering_connection()
                .vpc_peering_connection_id(id)
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
    use aws_sdk_ec2::types::{
        VpcPeeringConnectionStateReason, VpcPeeringConnectionStateReasonCode,
        VpcPeeringConnectionVpcInfo,
    };

    fn body(j: serde_json::Value) -> Value {
        Value::from_json(j)
    }

    fn connection(
        code: VpcPeeringConnectionStateReasonCode,
        accept: &str,
        peer_owner: &str,
    ) -> Item {
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let info = |vpc: &str, owner: &str| {
            VpcPeeringConnectionVpcInfo::builder()
                .vpc_id(vpc)
                .owner_id(owner)
                .region("eu-west-1")
                .build()
        };
        Item::builder()
            .vpc_peering_connection_id("pcx-1")
            .requester_vpc_info(info("vpc-1", "111111111111"))
            .accepter_vpc_info(info("vpc-2", peer_owner))
            .status(
                VpcPeeringConnectionStateReason::builder()
                    .code(code)
                    .build(),
            )
            .set_tags(Some(vec![
                tag("managed-by", "tidegate"),
                tag("tidegate:project", "shop"),
                tag("tidegate:environment", "dev"),
                tag("tidegate:module", "network"),
                tag("tidegate:resource", "network.peer"),
                tag(TAG_AUTO_ACCEPT, accept),
            ]))
            .build()
    }

    #[test]
    fn it_needs_both_vpcs_and_they_replace_it() {
        let a = body(serde_json::json!({"vpcId": "vpc-1", "peerVpcId": "vpc-2"}));
        assert!(check("vpc_peering", &a).is_empty());
        assert_eq!(
            check("vpc_peering", &body(serde_json::json!({"vpcId": "vpc-1"})))[0].message,
            "missing required field `peerVpcId`"
        );
        let b =
            body(serde_json::json!({"vpcId": "vpc-1", "peerVpcId": "vpc-3", "autoAccept": true}));
        assert_eq!(
            model::replace_reasons(&VpcPeering, &a, &b),
            vec!["peerVpcId changes from vpc-2 to vpc-3 (immutable)"]
        );
    }

    #[test]
    fn it_is_deleted_before_its_vpcs_and_after_the_routes_through_it() {
        let wave = |k: &str| find(k).map(delete_wave).unwrap();
        assert!(wave("vpc_peering") < wave("vpc"));
        assert!(wave("route") < wave("vpc_peering"));
    }

    #[test]
    fn a_pending_request_is_accepted_when_tidegate_can_and_health_says_so() {
        use VpcPeeringConnectionStateReasonCode as Code;
        let owner = Owner::new("shop", "dev");
        // To accept, same account: autoAccept observed false until done.
        let owed = raw(
            VpcPeering,
            connection(Code::PendingAcceptance, "true", "111111111111"),
            "eu-west-1",
        )
        .unwrap();
        assert_eq!(
            to_live(&owed, &owner).unwrap().body.to_json_masked(),
            serde_json::json!({
                "vpcId": "vpc-1", "peerVpcId": "vpc-2", "peerRegion": "eu-west-1",
                "peerOwnerId": "111111111111", "autoAccept": false, "tags": {}
            })
        );
        assert_eq!(
            owed.listed,
            Some(Health::Progressing("VPC peering pending-acceptance".into()))
        );
        // Another account: left to its owner; healthy while pending.
        let theirs = raw(
            VpcPeering,
            connection(Code::PendingAcceptance, "true", "222222222222"),
            "eu-west-1",
        )
        .unwrap();
        assert_eq!(theirs.body.get_path("autoAccept"), Some(&Value::Bool(true)));
        assert_eq!(theirs.listed, Some(Health::Healthy));
        let active = raw(
            VpcPeering,
            connection(Code::Active, "true", "111111111111"),
            "eu-west-1",
        )
        .unwrap();
        assert_eq!(active.body.get_path("autoAccept"), Some(&Value::Bool(true)));
        assert_eq!(active.listed, Some(Health::Healthy));
        let left = raw(
            VpcPeering,
            connection(Code::PendingAcceptance, "false", "111111111111"),
            "eu-west-1",
        )
        .unwrap();
        assert_eq!(left.body.get_path("autoAccept"), Some(&Value::Bool(false)));
        assert_eq!(left.listed, Some(Health::Healthy));
        let failed = raw(
            VpcPeering,
            connection(Code::Failed, "true", "111111111111"),
            "eu-west-1",
        )
        .unwrap();
        assert_eq!(
            failed.listed,
            Some(Health::Failed("VPC peering failed".into()))
        );
    }
}
