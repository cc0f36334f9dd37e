//! `route`: one route of a route table as a resource of its own, so a
//! module can route through a table another module (or nobody) manages.
//! Its table and destination are immutable; its target (exactly one of
//! the `TARGETS`) changes in place with ReplaceRoute.
//!
//! # Ownership
//! EC2 gives a route no id and no tags. tidegate records who owns a route
//! in a tag on its route table: key `tidegate:route:<destination>`, value
//! `<project>/<environment>/<module>/<name>` (project, environment and
//! module never hold a `/`). Describe turns each such tag whose route
//! exists into a listed route carrying synthesized ownership tags
//! (`managed-by`, `tidegate:project`, `tidegate:environment`,
//! `tidegate:module`, `tidegate:resource`), so the generic observe maps it
//! to its resource like any tagged EC2 resource. The external id is
//! `<routeTableId>_<destination>`.
//!
//! A route table holds at most 50 tags, so at most about 40 separately
//! managed routes (besides the table's own tags).
//!
//! # Guarantees
//! - One DescribeRouteTables sequence per observe: the tables carrying a
//!   route tag (`tag-key` filter `tidegate:route:*`; wildcards work in EC2
//!   and in moto 5.2.5); the ownership filters are then applied to the
//!   synthesized tags. A read by id names the table (`route-table-id`) and
//!   needs no tag, so an import finds an unmanaged route too.
//! - The ownership tag is written before CreateRoute: a route created is
//!   never unowned. A tag whose route is gone (deleted out of band) lists
//!   nothing; the next apply creates the route again.
//! - `route_table` leaves out of its inline `routes` every route whose
//!   destination carries a route tag on the table, and tag updates never
//!   touch `tidegate:*` keys, so inline routes and separate ones coexist.
//! - A replacement deletes the old route first (there is no id to mark it
//!   deposed with, and a table holds one route per destination).

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, Route as Ec2Route, RouteState, RouteTable, Tag};

use crate::provider::aws::calls::{sdk, ApiError};
use crate::provider::aws::kind::{Created, Ec2Kind, KindSpec, Seen, Update};
use crate::provider::aws::schema::{f, fixed, req, Field, Ty, TAGS};
use crate::provider::aws::sdk::{
    attrs, describe, ec2_tags, filter, map, no_sdk_retries, s, str_at, take_filter, Ec2,
};
use crate::provider::aws::tags;
use crate::provider::aws::values::{cidr, problem};
use crate::provider::{Desired, Health, Owner, Problem, ResourceId, Result};
use crate::value::{Map, Value};

/// The `route` kind.
#[derive(Clone, Copy)]
pub(super) struct Route;

/// The prefix of the route-table tag that records a route's owner.
pub(super) const ROUTE_TAG_PREFIX: &str = "tidegate:route:";

/// The targets a route may name, exactly one of them.
pub(super) const TARGETS: &[&str] = &[
    "gatewayId",
    "natGatewayId",
    "vpcPeeringConnectionId",
    "egressOnlyInternetGatewayId",
    "instanceId",
    "networkInterfaceId",
];

const FIELDS: &[Field] = &[
    req(fixed(f("routeTableId", Ty::Str))),
    req(fixed(f("destinationCidrBlock", Ty::Str))),
    f("gatewayId", Ty::Str),
    f("natGatewayId", Ty::Str),
    f("vpcPeeringConnectionId", Ty::Str),
    f("egressOnlyInternetGatewayId", Ty::Str),
    f("instanceId", Ty::Str),
    f("networkInterfaceId", Ty::Str),
    TAGS,
];

/// The pseudo filter naming routes by external id (`<table>_<destination>`);
/// describe turns it into a `route-table-id` filter.
const ID_FILTER: &str = "route-id";

impl KindSpec for Route {
    fn name(&self) -> &'static str {
        "route"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn attributes(&self) -> &'static [&'static str] {
        &["id"]
    }

    /// It lives in its table and leads to its target.
    fn deleted_before(&self) -> &'static [&'static str] {
        &[
            "route_table",
            "internet_gateway",
            "nat_gateway",
            "vpc_peering",
            "egress_only_internet_gateway",
            "instance",
        ]
    }

    fn check_string(&self, field: &str, s: &str, path: &str, out: &mut Vec<Problem>) {
        if field == "destinationCidrBlock" {
            cidr(field, s, None, path, out);
        }
    }

    /// Exactly one target; no user tags (EC2 has none for a route).
    fn check_object(&self, _fields: &[Field], m: &Map, path: &str, out: &mut Vec<Problem>) {
        if !path.is_empty() {
            return;
        }
        let named: Vec<&str> = TARGETS
            .iter()
            .copied()
            .filter(|t| m.get(*t).is_some_and(|v| !matches!(v, Value::Null)))
            .collect();
        match named.len() {
            1 => {}
            0 => out.push(problem(
                path,
                "the route has no target".into(),
                format!("add one of: {}", TARGETS.join(", ")),
            )),
            _ => out.push(problem(
                path,
                format!(
                    "the route names {} targets ({}); a route has exactly one",
                    named.len(),
                    named.join(", ")
                ),
                "keep one target; for another destination write another route",
            )),
        }
        if let Some(Value::Map(t)) = m.get("tags") {
            if !t.is_empty() {
                out.push(problem(
                    "tags",
                    "a route cannot carry tags: EC2 has none for routes".into(),
                    "remove `tags` (tag the route table instead)",
                ));
            }
        }
    }

    fn destroy_first(&self, _desired: &Value, _live: &Value) -> Option<String> {
        Some("destroy before create: a route has no id of its own to mark as replaced".into())
    }
}

/// One route as describe lists it: its table, its destination, what EC2
/// shows of it, and the ownership tags synthesized from the table's
/// route tag.
pub(super) struct Listed {
    id: String,
    table: String,
    destination: String,
    /// (field, id) of each target EC2 shows.
    targets: Vec<(&'static str, String)>,
    state: Option<RouteState>,
    tags: Vec<Tag>,
}

/// The external id of the route to `destination` in `table`.
fn external_id(table: &str, destination: &str) -> String {
    format!("{table}_{destination}")
}

/// Table and destination of an external id.
fn split_id(id: &str) -> Option<(&str, &str)> {
    id.split_once('_')
}

/// The route tag's value naming `owner` and `id`.
fn owner_value(owner: &Owner, id: &ResourceId) -> String {
    format!(
        "{}/{}/{}/{}",
        owner.project, owner.environment, id.module, id.name
    )
}

/// The ownership tags a route tag's value stands for; none when it is not
/// one of tidegate's values.
fn synthesized_tags(value: &str) -> Vec<Tag> {
    let mut parts = value.splitn(4, '/');
    let (Some(project), Some(environment), Some(module), Some(name)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Vec::new();
    };
    ec2_tags([
        (tags::TAG_MANAGED_BY.to_string(), tags::MANAGER.to_string()),
        (tags::TAG_PROJECT.to_string(), project.to_string()),
        (tags::TAG_ENVIRONMENT.to_string(), environment.to_string()),
        (tags::TAG_MODULE.to_string(), module.to_string()),
        (tags::TAG_RESOURCE.to_string(), format!("{module}.{name}")),
    ])
}

/// The route tag's value from ownership tags (an import's adoption).
fn value_from_tags(t: &[Tag]) -> Option<String> {
    let m = crate::provider::aws::sdk::tag_map(t);
    let module = m.get(tags::TAG_MODULE)?;
    let name = m
        .get(tags::TAG_RESOURCE)?
        .strip_prefix(&format!("{module}."))?;
    Some(format!(
        "{}/{}/{module}/{name}",
        m.get(tags::TAG_PROJECT)?,
        m.get(tags::TAG_ENVIRONMENT)?
    ))
}

/// The targets EC2 shows of a route.
fn targets(r: &Ec2Route) -> Vec<(&'static str, String)> {
    [
        ("gatewayId", r.gateway_id()),
        ("natGatewayId", r.nat_gateway_id()),
        ("vpcPeeringConnectionId", r.vpc_peering_connection_id()),
        (
            "egressOnlyInternetGatewayId",
            r.egress_only_internet_gateway_id(),
        ),
        ("instanceId", r.instance_id()),
        ("networkInterfaceId", r.network_interface_id()),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v?.to_string())))
    .collect()
}

/// The route to `destination` of `table`, listed with the ownership tags
/// of `owner_value` (none: unmanaged).
fn listed(table: &RouteTable, destination: &str, owner_value: Option<&str>) -> Option<Listed> {
    let table_id = table.route_table_id()?;
    let r = table
        .routes()
        .iter()
        .find(|r| r.destination_cidr_block() == Some(destination))?;
    Some(Listed {
        id: external_id(table_id, destination),
        table: table_id.to_string(),
        destination: destination.to_string(),
        targets: targets(r),
        state: r.state().cloned(),
        tags: owner_value.map(synthesized_tags).unwrap_or_default(),
    })
}

/// The routes of `tables` that `wanted` names (by id), or else every route
/// with a route tag.
fn routes_of(tables: &[RouteTable], wanted: Option<&[String]>) -> Vec<Listed> {
    let mut out = Vec::new();
    for t in tables {
        let owned: BTreeMap<&str, &str> = t
            .tags()
            .iter()
            .filter_map(|tag| {
                let dest = tag.key()?.strip_prefix(ROUTE_TAG_PREFIX)?;
                Some((dest, tag.value().unwrap_or("")))
            })
            .collect();
        match wanted {
            Some(ids) => {
                for (table, dest) in ids.iter().filter_map(|id| split_id(id)) {
                    if Some(table) == t.route_table_id() {
                        out.extend(listed(t, dest, owned.get(dest).copied()));
                    }
                }
            }
            None => {
                for (dest, value) in owned {
                    out.extend(listed(t, dest, Some(value)));
                }
            }
        }
    }
    out
}

/// Whether `t` satisfies each `tag:` filter of `filters`.
fn tags_hold(filters: &[Filter], t: &[Tag]) -> bool {
    let m = crate::provider::aws::sdk::tag_map(t);
    filters.iter().all(|f| {
        let Some(key) = f.name().and_then(|n| n.strip_prefix("tag:")) else {
            return true;
        };
        m.get(key)
            .is_some_and(|v| f.values().iter().any(|w| w == v))
    })
}

/// The one target of a desired route.
fn target(d: &Value) -> Option<(&'static str, &str)> {
    TARGETS.iter().find_map(|t| Some((*t, str_at(d, t)?)))
}

#[async_trait::async_trait]
impl Ec2Kind for Route {
    type Item = Listed;

    fn id_filter(&self) -> &'static str {
        ID_FILTER
    }

    async fn describe(&self, p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Self::Item>, ApiError> {
        let (filters, ids) = take_filter(filters, ID_FILTER);
        // Tag filters name the route's (synthesized) tags, not the table's.
        let (by_tag, mut sent): (Vec<Filter>, Vec<Filter>) = filters
            .into_iter()
            .partition(|f| f.name().is_some_and(|n| n.starts_with("tag:")));
        match &ids {
            Some(ids) => {
                let tables: Vec<&str> = ids
                    .iter()
                    .filter_map(|i| split_id(i))
                    .map(|(t, _)| t)
                    .collect();
                sent.push(filter("route-table-id", &tables));
            }
            None => sent.push(filter("tag-key", &[&format!("{ROUTE_TAG_PREFIX}*")])),
        }
        let pages = describe(p, "DescribeRouteTables", || {
            p.client
                .describe_route_tables()
                .set_filters(Some(sent.clone()))
                .into_paginator()
                .send()
                .try_collect()
        })
        .await?;
        let tables: Vec<RouteTable> = pages
            .into_iter()
            .flat_map(|o| o.route_tables.unwrap_or_default())
            .collect();
        let mut out = routes_of(&tables, ids.as_deref());
        out.retain(|r| tags_hold(&by_tag, &r.tags));
        Ok(out)
    }

    fn id<'a>(&self, r: &'a Self::Item) -> Option<&'a str> {
        Some(&r.id)
    }

    fn tags<'a>(&self, r: &'a Self::Item) -> &'a [Tag] {
        &r.tags
    }

    fn normalise(&self, r: &Self::Item, seen: Seen<'_>) -> (Value, Map) {
        let mut entries = vec![
            ("routeTableId", s(Some(&r.table))),
            ("destinationCidrBlock", s(Some(&r.destination))),
        ];
        for (field, id) in &r.targets {
            entries.push((field, Value::String(id.clone())));
        }
        let attributes = attrs(vec![("id", seen.id_value())]);
        entries.push(("tags", seen.user_tags));
        (map(entries), attributes)
    }

    fn listed_health(&self, r: &Self::Item) -> Option<Health> {
        Some(match &r.state {
            Some(RouteState::Blackhole) => Health::Failed(format!(
                "route to {} is a blackhole: its target is gone",
                r.destination
            )),
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
        let invalid = |m: &str| ApiError {
            code: None,
            message: m.to_string(),
            transport: false,
            unreached: None,
        };
        let table = str_at(d, "routeTableId").ok_or_else(|| invalid("no routeTableId"))?;
        let dest =
            str_at(d, "destinationCidrBlock").ok_or_else(|| invalid("no destinationCidrBlock"))?;
        let (field, to) = target(d).ok_or_else(|| invalid("the route has no target"))?;
        // The owner first: a route that exists is never unowned.
        let key = format!("{ROUTE_TAG_PREFIX}{dest}");
        let value = owner_value(&p.owner, &desired.id);
        let t = ec2_tags([(key, value)]);
        // A table or target made just before may not show yet: "not
        // found" is retried (neither call made anything then).
        p.send("CreateTags", true, || async {
            sdk(p
                .client
                .create_tags()
                .resources(table)
                .set_tags(Some(t.clone()))
                .send()
                .await)
        })
        .await?;
        p.send("CreateRoute", true, || async {
            let c = p
                .client
                .create_route()
                .route_table_id(table)
                .destination_cidr_block(dest);
            let c = match field {
                "gatewayId" => c.gateway_id(to),
                "natGatewayId" => c.nat_gateway_id(to),
                "vpcPeeringConnectionId" => c.vpc_peering_connection_id(to),
                "egressOnlyInternetGatewayId" => c.egress_only_internet_gateway_id(to),
                "instanceId" => c.instance_id(to),
                _ => c.network_interface_id(to),
            };
            sdk(c.customize().config_override(no_sdk_retries()).send().await)
        })
        .await?;
        Ok(Created::Id(external_id(table, dest)))
    }

    /// ReplaceRoute to the desired target.
    async fn update(&self, p: &Ec2, u: &Update<'_>, r: &Self::Item) -> Result<()> {
        if let Some(other) = u.fields.iter().find(|f| !TARGETS.contains(f)) {
            return Err(u.unchangeable(other));
        }
        let Some((field, to)) = target(u.d) else {
            return Err(u.unchangeable("gatewayId"));
        };
        p.call("ReplaceRoute", || async {
            let c = p
                .client
                .replace_route()
                .route_table_id(&r.table)
                .destination_cidr_block(&r.destination);
            let c = match field {
                "gatewayId" => c.gateway_id(to),
                "natGatewayId" => c.nat_gateway_id(to),
                "vpcPeeringConnectionId" => c.vpc_peering_connection_id(to),
                "egressOnlyInternetGatewayId" => c.egress_only_internet_gateway_id(to),
                "instanceId" => c.instance_id(to),
                _ => c.network_interface_id(to),
            };
            sdk(c.send().await)
        })
        .await?;
        Ok(())
    }

    /// DeleteRoute, then the route tag (also when the route was gone).
    async fn delete(&self, p: &Ec2, _id: &str, r: &Self::Item) -> Result<(), ApiError> {
        let deleted = p
            .send("DeleteRoute", false, || async {
                sdk(p
                    .client
                    .delete_route()
                    .route_table_id(&r.table)
                    .destination_cidr_block(&r.destination)
                    .send()
                    .await)
                .map(|_| ())
            })
            .await;
        let gone = match deleted {
            Ok(()) => false,
            Err(e) if e.is_not_found() => true,
            Err(e) => return Err(e),
        };
        let key = format!("{ROUTE_TAG_PREFIX}{}", r.destination);
        let untag = p
            .send("DeleteTags", false, || async {
                sdk(p
                    .client
                    .delete_tags()
                    .resources(&r.table)
                    .tags(Tag::builder().key(&key).build())
                    .send()
                    .await)
                .map(|_| ())
            })
            .await;
        match untag {
            Err(e) if !e.is_not_found() => Err(e),
            // Gone already: the driver's "not found", once the tag is off.
            _ if gone => Err(ApiError {
                code: Some("InvalidRoute.NotFound".into()),
                message: format!("no route to {} in {}", r.destination, r.table),
                transport: false,
                unreached: None,
            }),
            _ => Ok(()),
        }
    }

    /// The ownership is the route tag on the table.
    async fn set_tags(&self, p: &Ec2, id: &str, t: Vec<Tag>) -> Result<()> {
        let (Some((table, dest)), Some(value)) = (split_id(id), value_from_tags(&t)) else {
            return Ok(());
        };
        let t = ec2_tags([(format!("{ROUTE_TAG_PREFIX}{dest}"), value)]);
        p.create_tags(table, t).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::aws::kind::raw;
    use crate::provider::aws::kinds::{delete_wave, find};
    use crate::provider::aws::observe::to_live;
    use crate::provider::aws::{check, model};

    fn body(j: serde_json::Value) -> Value {
        Value::from_json(j)
    }

    fn messages(b: &Value) -> Vec<String> {
        check("route", b)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn a_route_has_one_target_a_clean_block_and_no_tags() {
        assert!(messages(&body(serde_json::json!({
            "routeTableId": "rtb-1", "destinationCidrBlock": "0.0.0.0/0", "gatewayId": "igw-1"
        })))
        .is_empty());
        assert_eq!(
            messages(&body(serde_json::json!({
                "routeTableId": "rtb-1", "destinationCidrBlock": "10.1.0.0/16"
            }))),
            vec![": the route has no target"]
        );
        assert_eq!(
            messages(&body(serde_json::json!({
                "routeTableId": "rtb-1", "destinationCidrBlock": "10.1.0.1/16",
                "gatewayId": "igw-1", "natGatewayId": "nat-1", "tags": {"a": "b"}
            }))),
            vec![
                "destinationCidrBlock: `destinationCidrBlock` `10.1.0.1/16` has host bits set; its network is 10.1.0.0/16",
                ": the route names 2 targets (gatewayId, natGatewayId); a route has exactly one",
                "tags: a route cannot carry tags: EC2 has none for routes",
            ]
        );
    }

    #[test]
    fn table_and_destination_replace_destroying_first_and_the_target_changes_in_place() {
        let before = body(serde_json::json!({
            "routeTableId": "rtb-1", "destinationCidrBlock": "0.0.0.0/0", "gatewayId": "igw-1"
        }));
        let other_target = body(serde_json::json!({
            "routeTableId": "rtb-1", "destinationCidrBlock": "0.0.0.0/0", "natGatewayId": "nat-1"
        }));
        assert!(model::replace_reasons(&Route, &before, &other_target).is_empty());
        let moved = body(serde_json::json!({
            "routeTableId": "rtb-2", "destinationCidrBlock": "0.0.0.0/0", "gatewayId": "igw-1"
        }));
        assert_eq!(
            model::replace_reasons(&Route, &before, &moved),
            vec!["routeTableId changes from rtb-1 to rtb-2 (immutable)"]
        );
        assert!(Route.destroy_first(&moved, &before).is_some());
    }

    #[test]
    fn it_is_deleted_before_its_table_and_its_targets() {
        let wave = |k: &str| find(k).map(delete_wave).unwrap();
        for later in Route.deleted_before() {
            assert!(wave("route") < wave(later), "{later}");
        }
    }

    #[test]
    fn the_route_tag_names_the_owner_and_lists_the_route_as_a_resource() {
        let owner = Owner::new("shop", "dev");
        let id = ResourceId {
            module: "egress".into(),
            name: "default".into(),
        };
        let value = owner_value(&owner, &id);
        assert_eq!(value, "shop/dev/egress/default");
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let route = |dest: &str, gw: &str| {
            Ec2Route::builder()
                .destination_cidr_block(dest)
                .gateway_id(gw)
                .state(RouteState::Active)
                .build()
        };
        let table = RouteTable::builder()
            .route_table_id("rtb-1")
            .routes(route("10.0.0.0/16", "local"))
            .routes(route("0.0.0.0/0", "igw-1"))
            .routes(route("10.9.0.0/16", "igw-1"))
            .tags(tag("tidegate:route:0.0.0.0/0", &value))
            .tags(tag("tidegate:route:10.5.0.0/16", &value))
            .tags(tag("owner", "team"))
            .build();
        let listed = routes_of(std::slice::from_ref(&table), None);
        assert_eq!(listed.len(), 1, "a tag without its route lists nothing");
        let raw = raw(Route, listed.into_iter().next().unwrap(), "eu-west-1").unwrap();
        assert_eq!(raw.external_id, "rtb-1_0.0.0.0/0");
        let live = to_live(&raw, &owner).unwrap();
        assert_eq!(live.id, id);
        assert_eq!(
            live.body.to_json_masked(),
            serde_json::json!({
                "routeTableId": "rtb-1", "destinationCidrBlock": "0.0.0.0/0",
                "gatewayId": "igw-1", "tags": {}
            })
        );
        assert_eq!(value_from_tags(&raw_tags(&raw)), Some(value));
        // By id: an unmanaged route is found too, without owner.
        let by_id = routes_of(&[table], Some(&["rtb-1_10.9.0.0/16".to_string()]));
        assert_eq!(by_id.len(), 1);
        assert!(by_id[0].tags.is_empty());
        let env = |e: &str| filter("tag:tidegate:environment", &[e]);
        assert!(tags_hold(&[env("dev")], &raw_tags(&raw)));
        assert!(!tags_hold(&[env("prod")], &raw_tags(&raw)));
    }

    fn raw_tags(raw: &crate::provider::aws::kind::Raw) -> Vec<Tag> {
        ec2_tags(raw.tags.clone())
    }
}
