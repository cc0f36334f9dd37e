//! `placement_group`: a cluster, spread or partition placement group.
//! EC2 changes nothing of a placement group in place but its tags: every
//! field is immutable.
//!
//! # Guarantees
//! - CreatePlacementGroup takes no ClientToken; a create whose answer was
//!   lost is found by its tags before anything is sent again, and EC2
//!   refuses a second group of the same name.
//! - A group's name is unique in its region, so a replacement that keeps
//!   the name deletes the old group first, and waits until EC2 no longer
//!   lists it.
//! - Observe is one DescribePlacementGroups call (EC2 does not paginate
//!   it), of the groups `pending` or `available`.

use aws_sdk_ec2::types::{
    Filter, PlacementGroup as Item, PlacementGroupState, PlacementStrategy, ResourceType,
    SpreadLevel, Tag,
};

use crate::provider::aws::calls::{sdk, ApiError};
use crate::provider::aws::kind::{created, Created, Ec2Kind, KindSpec, Seen, Update};
use crate::provider::aws::schema::{f, fixed, req, Field, Ty, TAGS};
use crate::provider::aws::sdk::{
    arn, attrs, describe, filter, int, map, no_sdk_retries, s, str_at, string_at, Ec2,
};
use crate::provider::aws::values::{in_range, problem};
use crate::provider::{Desired, Health, Problem, Result};
use crate::value::{key_path, Map, Value};

/// The `placement_group` kind.
#[derive(Clone, Copy)]
pub(super) struct PlacementGroup;

const FIELDS: &[Field] = &[
    req(fixed(f("groupName", Ty::Str))),
    req(fixed(f(
        "strategy",
        Ty::Enum(&["cluster", "spread", "partition"]),
    ))),
    fixed(f("partitionCount", Ty::Int)),
    fixed(f("spreadLevel", Ty::Enum(&["host", "rack"]))),
    TAGS,
];

/// States of a group that observe lists.
const LIVE_STATES: &[&str] = &["pending", "available"];

/// The id filter tidegate passes; EC2 takes ids as `GroupIds` instead.
const ID_FILTER: &str = "group-id";

impl KindSpec for PlacementGroup {
    fn name(&self) -> &'static str {
        "placement_group"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn attributes(&self) -> &'static [&'static str] {
        &["id", "groupName", "arn"]
    }

    fn check_string(&self, field: &str, s: &str, path: &str, out: &mut Vec<Problem>) {
        if field == "groupName" && (s.is_empty() || s.len() > 255 || !s.is_ascii()) {
            out.push(problem(
                path,
                format!("`groupName` `{s}` is not a placement group name"),
                "write 1 to 255 ASCII characters",
            ));
        }
    }

    fn check_int(&self, field: &str, i: i64, path: &str, out: &mut Vec<Problem>) {
        if field == "partitionCount" {
            in_range(field, i, 1..=7, "partitions", path, out);
        }
    }

    /// `partitionCount` only for a partition group, `spreadLevel` only for
    /// a spread one.
    fn check_object(&self, _fields: &[Field], m: &Map, path: &str, out: &mut Vec<Problem>) {
        if !path.is_empty() {
            return;
        }
        let Some(Value::String(strategy)) = m.get("strategy") else {
            return;
        };
        let given = |k: &str| m.get(k).is_some_and(|v| !matches!(v, Value::Null));
        if given("partitionCount") && strategy != "partition" {
            out.push(problem(
                &key_path(path, "partitionCount"),
                format!("a {strategy} placement group takes no `partitionCount`"),
                "remove `partitionCount`, or write `strategy: partition`",
            ));
        }
        if given("spreadLevel") && strategy != "spread" {
            out.push(problem(
                &key_path(path, "spreadLevel"),
                format!("a {strategy} placement group takes no `spreadLevel`"),
                "remove `spreadLevel`, or write `strategy: spread`",
            ));
        }
    }

    fn destroy_first(&self, desired: &Value, live: &Value) -> Option<String> {
        let name = desired.get_path("groupName");
        (name.is_some() && name == live.get_path("groupName")).then(|| {
            "destroy before create: a placement group's name is unique in its region".into()
        })
    }
}

/// EC2's "no such group" (`InvalidPlacementGroup.Unknown`), which does not
/// end in NotFound.
fn is_unknown(e: &ApiError) -> bool {
    e.code.as_deref() == Some("InvalidPlacementGroup.Unknown")
}

/// `filters` with the id filter taken out, and the ids it named.
fn split_ids(filters: Vec<Filter>) -> (Vec<Filter>, Option<Vec<String>>) {
    let mut ids = None;
    let rest = filters
        .into_iter()
        .filter(|f| {
            if f.name() == Some(ID_FILTER) {
                ids = Some(f.values().to_vec());
                false
            } else {
                true
            }
        })
        .collect();
    (rest, ids)
}

#[async_trait::async_trait]
impl Ec2Kind for PlacementGroup {
    type Item = Item;

    fn id_filter(&self) -> &'static str {
        ID_FILTER
    }

    /// An id filter becomes `GroupIds`; an id EC2 does not know (a group
    /// deleted since) is an empty answer.
    async fn describe(&self, p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Self::Item>, ApiError> {
        let (mut filters, ids) = split_ids(filters);
        filters.push(filter("state", LIVE_STATES));
        let answer = describe(p, "DescribePlacementGroups", || async {
            p.client
                .describe_placement_groups()
                .set_filters(Some(filters.clone()))
                .set_group_ids(ids.clone())
                .send()
                .await
                .map(|o| vec![o])
        })
        .await;
        let pages = match answer {
            Err(e) if ids.is_some() && (e.is_not_found() || is_unknown(&e)) => {
                return Ok(Vec::new())
            }
            other => other?,
        };
        Ok(pages
            .into_iter()
            .flat_map(|o| o.placement_groups.unwrap_or_default())
            .collect())
    }

    fn id<'a>(&self, g: &'a Self::Item) -> Option<&'a str> {
        g.group_id()
    }

    fn tags<'a>(&self, g: &'a Self::Item) -> &'a [Tag] {
        g.tags()
    }

    fn normalise(&self, g: &Self::Item, seen: Seen<'_>) -> (Value, Map) {
        let arn = g.group_arn().map(str::to_string).unwrap_or_else(|| {
            arn(
                seen.region,
                None,
                "placement-group",
                g.group_name().unwrap_or(seen.id),
            )
        });
        let attributes = attrs(vec![
            ("id", seen.id_value()),
            ("groupName", s(g.group_name())),
            ("arn", Value::String(arn)),
        ]);
        let partition = g.strategy() == Some(&PlacementStrategy::Partition);
        let body = map(vec![
            ("groupName", s(g.group_name())),
            ("strategy", s(g.strategy().map(|t| t.as_str()))),
            (
                "partitionCount",
                g.partition_count()
                    .filter(|_| partition)
                    .map(|n| Value::Int(n.into()))
                    .unwrap_or_default(),
            ),
            ("spreadLevel", s(g.spread_level().map(|l| l.as_str()))),
            ("tags", seen.user_tags),
        ]);
        (body, attributes)
    }

    fn listed_health(&self, g: &Self::Item) -> Option<Health> {
        Some(match g.state() {
            Some(PlacementGroupState::Available) => Health::Healthy,
            Some(other) => Health::Progressing(format!("placement group {}", other.as_str())),
            None => Health::Progressing("placement group pending".into()),
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
            .create_placement_group()
            .set_group_name(string_at(d, "groupName"))
            .set_strategy(str_at(d, "strategy").map(PlacementStrategy::from))
            .set_partition_count(int(d.get_path("partitionCount")))
            .set_spread_level(str_at(d, "spreadLevel").map(SpreadLevel::from))
            .tag_specifications(p.tag_spec(ResourceType::PlacementGroup, desired, d, vec![]))
            .customize()
            .config_override(no_sdk_retries())
            .send()
            .await)?;
        created(self.name(), o.placement_group.and_then(|g| g.group_id))
    }

    async fn update(&self, _p: &Ec2, u: &Update<'_>, _g: &Self::Item) -> Result<()> {
        match u.fields.first() {
            Some(field) => Err(u.unchangeable(field)),
            None => Ok(()),
        }
    }

    /// DeletePlacementGroup names the group (EC2 takes no id there).
    async fn delete(&self, p: &Ec2, _id: &str, g: &Self::Item) -> Result<(), ApiError> {
        let name = g.group_name().unwrap_or_default();
        let deleted = p
            .send("DeletePlacementGroup", false, || async {
                sdk(p
                    .client
                    .delete_placement_group()
                    .group_name(name)
                    .send()
                    .await)
                .map(|_| ())
            })
            .await;
        match deleted {
            // Gone already (deleted since it was listed).
            Err(e) if is_unknown(&e) => Ok(()),
            other => other,
        }
    }

    /// Until EC2 no longer lists it, so a group of the same name can be
    /// made next.
    async fn wait_deleted(&self, p: &Ec2, id: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + p.policy.settle;
        loop {
            let listed = Ec2Kind::describe(self, p, vec![filter(ID_FILTER, &[id])])
                .await
                .map_err(|e| e.into_error("wait placement_group"))?;
            if listed.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError {
                    code: Some("StateTimeout".into()),
                    message: format!(
                        "placement group {id} was still listed after {:?}",
                        p.policy.settle
                    ),
                    transport: false,
                    unreached: None,
                }
                .into_error("wait placement_group"));
            }
            tokio::time::sleep(p.policy.poll).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::aws::kind::raw;
    use crate::provider::aws::model;
    use crate::provider::aws::observe::to_live;
    use crate::provider::Owner;

    fn body(j: serde_json::Value) -> Value {
        Value::from_json(j)
    }

    /// The problems `check` would report (the kind is not registered).
    fn messages(b: &Value) -> Vec<String> {
        let mut found = crate::provider::aws::schema::check_structure(FIELDS, b);
        found.extend(crate::provider::aws::values::check(&PlacementGroup, b));
        found
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn partitions_only_with_partition_and_levels_only_with_spread() {
        assert!(messages(&body(serde_json::json!({
            "groupName": "db", "strategy": "partition", "partitionCount": 3
        })))
        .is_empty());
        assert!(messages(&body(serde_json::json!({
            "groupName": "web", "strategy": "spread", "spreadLevel": "rack"
        })))
        .is_empty());
        assert_eq!(
            messages(&body(serde_json::json!({
                "groupName": "db", "strategy": "cluster", "partitionCount": 8, "spreadLevel": "host"
            }))),
            vec![
                "partitionCount: `partitionCount` 8 is out of range (1 to 7 partitions)",
                "partitionCount: a cluster placement group takes no `partitionCount`",
                "spreadLevel: a cluster placement group takes no `spreadLevel`",
            ]
        );
        assert_eq!(
            messages(&body(serde_json::json!({"groupName": "db", "strategy": "ring"}))),
            vec!["strategy: `strategy` must be one of \"cluster\", \"spread\", \"partition\", found a string"]
        );
        assert_eq!(
            messages(&body(serde_json::json!({"strategy": "cluster"}))),
            vec![": missing required field `groupName`"]
        );
    }

    #[test]
    fn every_field_replaces_and_keeping_the_name_destroys_first() {
        let before = body(serde_json::json!({"groupName": "db", "strategy": "cluster"}));
        let after = body(serde_json::json!({"groupName": "db", "strategy": "spread"}));
        assert_eq!(
            model::replace_reasons(&PlacementGroup, &before, &after),
            vec!["strategy changes from cluster to spread (immutable)"]
        );
        assert!(PlacementGroup.destroy_first(&after, &before).is_some());
        let renamed = body(serde_json::json!({"groupName": "db2", "strategy": "cluster"}));
        assert!(PlacementGroup.destroy_first(&renamed, &before).is_none());
    }

    #[test]
    fn it_normalises_into_the_spec_shape() {
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let g = Item::builder()
            .group_id("pg-1")
            .group_name("db")
            .strategy(PlacementStrategy::Partition)
            .partition_count(3)
            .state(PlacementGroupState::Available)
            .set_tags(Some(vec![
                tag("managed-by", "tidegate"),
                tag("tidegate:project", "shop"),
                tag("tidegate:environment", "dev"),
                tag("tidegate:module", "data"),
                tag("tidegate:resource", "data.pg"),
            ]))
            .build();
        let raw = raw(PlacementGroup, g, "us-east-1").unwrap();
        assert_eq!(raw.listed, Some(Health::Healthy));
        let live = to_live(&raw, &Owner::new("shop", "dev")).unwrap();
        assert_eq!(
            live.body.to_json_masked(),
            serde_json::json!({"groupName": "db", "strategy": "partition", "partitionCount": 3, "tags": {}})
        );
        assert_eq!(live.attributes["groupName"], Value::String("db".into()));
        assert_eq!(
            live.attributes["arn"],
            Value::String("arn:aws:ec2:us-east-1:000000000000:placement-group/db".into())
        );
    }
}
