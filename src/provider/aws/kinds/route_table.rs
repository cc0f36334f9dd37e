//! `route_table`: a route table of a VPC, its routes (created, replaced and
//! deleted one by one) and its subnet associations. The local route and
//! the main table's association are EC2's and left out, and so are the
//! routes a separate `route` resource owns (a `tidegate:route:<destination>`
//! tag on the table, which the tag updates never touch: they manage the
//! user's tags only), so inline and separate routes coexist.
//!
//! CreateRouteTable carries a ClientToken. A token that names a table
//! deleted since (out of band, then recreated with the same spec) gets
//! that table's id back, which never shows up; the create is then sent once
//! more with a salted token.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, ResourceType, RouteTable as Item, Tag};

use crate::provider::aws::calls::{sdk, ApiError};
use crate::provider::aws::kind::{created, Created, Ec2Kind, KindSpec, Seen, Update};
use crate::provider::aws::schema::{f, fixed, req, Field, Ty, TAGS};
use crate::provider::aws::sdk::{
    attrs, describe, map, no_sdk_retries, s, str_at, string_at, strings, strs, Ec2,
};
use crate::provider::aws::values::cidr;

use super::route::ROUTE_TAG_PREFIX;
use crate::provider::{Desired, Problem, Result};
use crate::value::{Map, Value};

/// The `route_table` kind.
#[derive(Clone, Copy)]
pub(super) struct RouteTable;

const ROUTE: &[Field] = &[
    req(f("destinationCidrBlock", Ty::Str)),
    req(f("gatewayId", Ty::Str)),
];

const FIELDS: &[Field] = &[
    req(fixed(f("vpcId", Ty::Str))),
    f("routes", Ty::ObjectSet(ROUTE)),
    f("subnetIds", Ty::StrSet),
    TAGS,
];

impl KindSpec for RouteTable {
    fn name(&self) -> &'static str {
        "route_table"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn attributes(&self) -> &'static [&'static str] {
        &["id"]
    }

    /// It routes to its gateway and is associated with its subnets; the
    /// security groups wait for it too (the order prune has always used).
    fn deleted_before(&self) -> &'static [&'static str] {
        &["security_group", "subnet", "internet_gateway", "vpc"]
    }

    fn check_string(&self, field: &str, s: &str, path: &str, out: &mut Vec<Problem>) {
        if field == "destinationCidrBlock" {
            cidr(field, s, None, path, out);
        }
    }

    /// Routes sorted by destination.
    fn canonical_set(&self, _field: &str, routes: &Value) -> Value {
        let Value::List(items) = routes else {
            return routes.clone();
        };
        let mut routes: Vec<Value> = items.to_vec();
        routes.sort_by_key(|r| {
            r.get_path("destinationCidrBlock")
                .and_then(Value::as_str)
                .unwrap_or("~")
                .to_string()
        });
        routes.dedup();
        Value::List(routes)
    }

    fn resalt_when_invisible(&self) -> bool {
        true
    }
}

/// Destination → gateway of the routes of a body.
fn routes(v: &Value) -> BTreeMap<String, String> {
    match v.get_path("routes") {
        Some(Value::List(l)) => l
            .iter()
            .filter_map(|r| {
                Some((
                    str_at(r, "destinationCidrBlock")?.to_string(),
                    str_at(r, "gatewayId")?.to_string(),
                ))
            })
            .collect(),
        _ => Default::default(),
    }
}

/// Creates, replaces and deletes routes until the live ones are `d`'s.
async fn update_routes(p: &Ec2, id: &str, d: &Value, live: &Value) -> Result<()> {
    let (want, have) = (routes(d), routes(live));
    for (dest, gw) in &want {
        match have.get(dest) {
            Some(old) if old == gw => {}
            Some(_) => {
                p.call("ReplaceRoute", || async {
                    sdk(p
                        .client
                        .replace_route()
                        .route_table_id(id)
                        .destination_cidr_block(dest)
                        .gateway_id(gw)
                        .send()
                        .await)
                })
                .await?;
            }
            None => {
                p.call("CreateRoute", || async {
                    sdk(p
                        .client
                        .create_route()
                        .route_table_id(id)
                        .destination_cidr_block(dest)
                        .gateway_id(gw)
                        .send()
                        .await)
                })
                .await?;
            }
        }
    }
    for dest in have.keys().filter(|k| !want.contains_key(*k)) {
        p.call("DeleteRoute", || async {
            sdk(p
                .client
                .delete_route()
                .route_table_id(id)
                .destination_cidr_block(dest)
                .send()
                .await)
        })
        .await?;
    }
    Ok(())
}

/// The subnet associations of a table (not the main one's): subnet id and
/// association id.
fn associations(rt: &Item) -> Vec<(&str, &str)> {
    rt.associations()
        .iter()
        .filter(|a| a.main() != Some(true))
        .filter_map(|a| Some((a.subnet_id()?, a.route_table_association_id()?)))
        .collect()
}

/// Removes one subnet association; `fresh` as in [`Ec2::send`].
async fn disassociate(p: &Ec2, association: &str, fresh: bool) -> Result<(), ApiError> {
    p.send("DisassociateRouteTable", fresh, || async {
        sdk(p
            .client
            .disassociate_route_table()
            .association_id(association)
            .send()
            .await)
        .map(|_| ())
    })
    .await
}

/// Associates and disassociates subnets until they are `d`'s.
async fn update_associations(p: &Ec2, id: &str, d: &Value, rt: &Item) -> Result<()> {
    let want = strs(d, "subnetIds");
    let have = associations(rt);
    for (subnet, assoc) in &have {
        if !want.iter().any(|w| w == subnet) {
            disassociate(p, assoc, true)
                .await
                .map_err(|e| e.into_error("DisassociateRouteTable"))?;
        }
    }
    for subnet in want.iter().filter(|w| !have.iter().any(|(s, _)| s == w)) {
        p.call("AssociateRouteTable", || async {
            sdk(p
                .client
                .associate_route_table()
                .route_table_id(id)
                .subnet_id(subnet)
                .send()
                .await)
        })
        .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Ec2Kind for RouteTable {
    type Item = Item;

    fn id_filter(&self) -> &'static str {
        "route-table-id"
    }

    async fn describe(&self, p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Self::Item>, ApiError> {
        let pages = describe(p, "DescribeRouteTables", || {
            p.client
                .describe_route_tables()
                .set_filters(Some(filters.clone()))
                .into_paginator()
                .send()
                .try_collect()
        })
        .await?;
        Ok(pages
            .into_iter()
            .flat_map(|o| o.route_tables.unwrap_or_default())
            .collect())
    }

    fn id<'a>(&self, v: &'a Self::Item) -> Option<&'a str> {
        v.route_table_id()
    }

    fn tags<'a>(&self, v: &'a Self::Item) -> &'a [Tag] {
        v.tags()
    }

    /// The inline routes leave out those a `route` resource owns (a route
    /// tag on the table names their destination).
    fn normalise(&self, v: &Self::Item, seen: Seen<'_>) -> (Value, Map) {
        let separate = |dest: Option<&str>| {
            dest.is_some_and(|d| seen.tags.contains_key(&format!("{ROUTE_TAG_PREFIX}{d}")))
        };
        let mut routes: Vec<(String, String)> = v
            .routes()
            .iter()
            .filter(|r| r.gateway_id() != Some("local"))
            .filter(|r| !separate(r.destination_cidr_block()))
            .filter_map(|r| {
                Some((
                    r.destination_cidr_block()?.to_string(),
                    r.gateway_id()?.to_string(),
                ))
            })
            .collect();
        routes.sort();
        let routes = Value::List(
            routes
                .into_iter()
                .map(|(d, g)| {
                    map(vec![
                        ("destinationCidrBlock", Value::String(d)),
                        ("gatewayId", Value::String(g)),
                    ])
                })
                .collect(),
        );
        let subnets = strings(associations(v).into_iter().map(|(subnet, _)| subnet));
        let attributes = attrs(vec![("id", seen.id_value())]);
        let body = map(vec![
            ("vpcId", s(v.vpc_id())),
            ("routes", routes),
            ("subnetIds", subnets),
            ("tags", seen.user_tags),
        ]);
        (body, attributes)
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
            .create_route_table()
            .set_vpc_id(string_at(d, "vpcId"))
            .client_token(token)
            .tag_specifications(p.tag_spec(ResourceType::RouteTable, desired, d, vec![]))
            .customize()
            .config_override(no_sdk_retries())
            .send()
            .await)?;
        created(self.name(), o.route_table.and_then(|v| v.route_table_id))
    }

    async fn update(&self, p: &Ec2, u: &Update<'_>, rt: &Self::Item) -> Result<()> {
        for field in &u.fields {
            match *field {
                "routes" => update_routes(p, u.id, u.d, u.live).await?,
                "subnetIds" => update_associations(p, u.id, u.d, rt).await?,
                other => return Err(u.unchangeable(other)),
            }
        }
        Ok(())
    }

    async fn delete(&self, p: &Ec2, id: &str, rt: &Self::Item) -> Result<(), ApiError> {
        // Every association but the main one's: gateway associations too.
        let ids = rt
            .associations()
            .iter()
            .filter(|a| a.main() != Some(true))
            .filter_map(|a| a.route_table_association_id());
        for assoc in ids {
            disassociate(p, assoc, false).await?;
        }
        p.send("DeleteRouteTable", false, || async {
            sdk(p
                .client
                .delete_route_table()
                .route_table_id(id)
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
    use crate::provider::aws::observe::to_live;
    use crate::provider::aws::tags;
    use crate::provider::Owner;
    use aws_sdk_ec2::types::Route;

    /// A route a `route` resource owns (a route tag on the table) is not
    /// one of the table's inline routes, and a tag update of the table
    /// never removes that tag.
    #[test]
    fn routes_owned_by_a_route_resource_are_left_out_and_their_tags_kept() {
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let route = |dest: &str, gw: &str| {
            Route::builder()
                .destination_cidr_block(dest)
                .gateway_id(gw)
                .build()
        };
        let rt = Item::builder()
            .route_table_id("rtb-1")
            .vpc_id("vpc-1")
            .routes(route("10.0.0.0/16", "local"))
            .routes(route("0.0.0.0/0", "igw-1"))
            .routes(route("10.50.0.0/16", "igw-1"))
            .set_tags(Some(vec![
                tag("managed-by", "tidegate"),
                tag("tidegate:project", "shop"),
                tag("tidegate:environment", "dev"),
                tag("tidegate:module", "network"),
                tag("tidegate:resource", "network.public"),
                tag("tidegate:route:10.50.0.0/16", "shop/dev/edge/office"),
                tag("owner", "team"),
            ]))
            .build();
        let raw = raw(RouteTable, rt, "eu-west-1").unwrap();
        let live = to_live(&raw, &Owner::new("shop", "dev")).unwrap();
        assert_eq!(
            live.body.to_json_masked(),
            serde_json::json!({
                "vpcId": "vpc-1",
                "routes": [{"destinationCidrBlock": "0.0.0.0/0", "gatewayId": "igw-1"}],
                "subnetIds": [], "tags": {"owner": "team"}
            })
        );
        let desired = Value::from_json(serde_json::json!({"other": "x"}));
        let (set, remove) = tags::tag_changes(&desired, live.body.get_path("tags").unwrap());
        assert_eq!(set, vec![("other".to_string(), "x".to_string())]);
        assert_eq!(remove, vec!["owner".to_string()]);
    }
}
