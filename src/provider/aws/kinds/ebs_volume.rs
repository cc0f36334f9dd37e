//! `ebs_volume`: an EBS volume in one availability zone. Its size, type,
//! IOPS and throughput change in place (ModifyVolume); where it lives, its
//! encryption and the snapshot it was made from are immutable.
//!
//! # Guarantees
//! - CreateVolume carries a ClientToken and tags the volume at creation,
//!   with the mark `tidegate:kind: ebs_volume` besides the ownership tags:
//!   the root volumes an `instance` creates carry its ownership tags too,
//!   and observe lists only marked volumes, so a root volume is never taken
//!   for a resource of this kind.
//! - A smaller `sizeGiB` than the live volume's is refused at plan and
//!   apply (EC2 cannot shrink a volume, and a replacement would lose its
//!   data), naming the field and the fix; it is never a silent replace.
//! - Observe is one DescribeVolumes sequence (paginated). Attaching is the
//!   `volume_attachment` kind's; a prune detaches (an earlier wave) before
//!   it deletes the volume.
//!
//! # Caveats
//! - EC2 shows `kmsKeyId` back as the key's ARN, so the value rules take
//!   only an ARN (a key id or an alias would differ on every plan).

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, Volume as Item, VolumeState, VolumeType};

use crate::provider::aws::calls::{sdk, ApiError};
use crate::provider::aws::kind::{created, Created, Ec2Kind, KindSpec, Seen, Update};
use crate::provider::aws::schema::{f, fixed, req, Field, Ty, TAGS};
use crate::provider::aws::sdk::{
    arn, attrs, bool_at, describe, filter, int, map, no_sdk_retries, s, str_at, string_at, Ec2,
};
use crate::provider::aws::values::{in_range, problem};
use crate::provider::{Desired, Health, Problem, Result};
use crate::value::{key_path, Map, Value};

/// The `ebs_volume` kind.
#[derive(Clone, Copy)]
pub(super) struct EbsVolume;

/// The volume types EC2 offers.
pub(super) const VOLUME_TYPES: &[&str] = &["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"];

const FIELDS: &[Field] = &[
    req(fixed(f("availabilityZone", Ty::Str))),
    f("sizeGiB", Ty::Int),
    f("volumeType", Ty::Enum(VOLUME_TYPES)),
    f("iops", Ty::Int),
    f("throughput", Ty::Int),
    fixed(f("encrypted", Ty::Bool)),
    fixed(f("kmsKeyId", Ty::Str)),
    fixed(f("snapshotId", Ty::Str)),
    TAGS,
];

/// The tag that marks a volume as an `ebs_volume` (not a root volume).
const MARK: (&str, &str) = ("tidegate:kind", "ebs_volume");

/// IOPS EC2 accepts per volume type (those that take a number).
fn iops_range(volume_type: &str) -> Option<std::ops::RangeInclusive<i64>> {
    match volume_type {
        "gp3" => Some(3000..=80000),
        "io1" => Some(100..=64000),
        "io2" => Some(100..=256000),
        _ => None,
    }
}

impl KindSpec for EbsVolume {
    fn name(&self) -> &'static str {
        "ebs_volume"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn attributes(&self) -> &'static [&'static str] {
        &["id", "arn"]
    }

    fn marks(&self) -> &'static [(&'static str, &'static str)] {
        &[MARK]
    }

    fn check_string(&self, field: &str, s: &str, path: &str, out: &mut Vec<Problem>) {
        match field {
            "kmsKeyId" if !s.starts_with("arn:") => out.push(problem(
                path,
                format!("`kmsKeyId` `{s}` is not a key ARN"),
                "write the key's ARN (arn:aws:kms:<region>:<account>:key/<id>): EC2 shows the ARN back, so a key id or an alias would differ on every plan",
            )),
            "snapshotId" if !s.starts_with("snap-") => out.push(problem(
                path,
                format!("`snapshotId` `{s}` is not a snapshot id"),
                "write the id of an EBS snapshot (snap-...)",
            )),
            _ => {}
        }
    }

    fn check_int(&self, field: &str, i: i64, path: &str, out: &mut Vec<Problem>) {
        match field {
            "sizeGiB" => in_range(field, i, 1..=16384, "GiB", path, out),
            "throughput" => in_range(field, i, 125..=2000, "MiB/s", path, out),
            _ => {}
        }
    }

    /// A size or a snapshot to size it from; IOPS and throughput only
    /// where the volume type takes them; a key only when encrypted.
    fn check_object(&self, _fields: &[Field], m: &Map, path: &str, out: &mut Vec<Problem>) {
        if !path.is_empty() {
            return;
        }
        let given = |k: &str| m.get(k).is_some_and(|v| !matches!(v, Value::Null));
        if !given("sizeGiB") && !given("snapshotId") {
            out.push(problem(
                path,
                "an EBS volume needs `sizeGiB` or `snapshotId`".into(),
                "add `sizeGiB: <GiB>` (1 to 16384), or `snapshotId:` to make it from a snapshot",
            ));
        }
        // Unknown until apply: nothing to say yet.
        let volume_type = match m.get("volumeType") {
            None | Some(Value::Null) => Some("gp2"),
            Some(Value::String(t)) => Some(t.as_str()),
            Some(_) => None,
        };
        if let Some(t) = volume_type {
            match (iops_range(t), m.get("iops")) {
                (None, Some(Value::Int(_))) => out.push(problem(
                    &key_path(path, "iops"),
                    format!("a {t} volume takes no `iops`"),
                    "remove `iops`, or use `volumeType: gp3`, `io1` or `io2`",
                )),
                (Some(r), Some(Value::Int(i))) => {
                    in_range("iops", *i, r, "IOPS", &key_path(path, "iops"), out)
                }
                (Some(_), None) if t == "io1" || t == "io2" => out.push(problem(
                    path,
                    format!("an {t} volume needs `iops`"),
                    "add `iops:` (100 to 64000 for io1, to 256000 for io2)",
                )),
                _ => {}
            }
            if t != "gp3" && matches!(m.get("throughput"), Some(Value::Int(_))) {
                out.push(problem(
                    &key_path(path, "throughput"),
                    format!("a {t} volume takes no `throughput`"),
                    "remove `throughput`, or use `volumeType: gp3`",
                ));
            }
        }
        if given("kmsKeyId") && !matches!(m.get("encrypted"), Some(Value::Bool(true))) {
            out.push(problem(
                &key_path(path, "kmsKeyId"),
                "`kmsKeyId` needs `encrypted: true`".into(),
                "add `encrypted: true`, or remove `kmsKeyId`",
            ));
        }
    }

    /// EC2 grows a volume but never shrinks it, and a new volume would
    /// start empty.
    fn impossible(&self, desired: &Value, live: &Value) -> Option<(String, String)> {
        let (Some(Value::Int(want)), Some(Value::Int(have))) =
            (desired.get_path("sizeGiB"), live.get_path("sizeGiB"))
        else {
            return None;
        };
        (want < have).then(|| {
            (
                format!(
                    "`sizeGiB` {want} is smaller than the volume's {have} GiB: EC2 cannot shrink an EBS volume, and replacing it would lose its data"
                ),
                format!(
                    "write `sizeGiB: {have}` (the live size), or give the resource a new name to make a new, empty volume"
                ),
            )
        })
    }
}

#[async_trait::async_trait]
impl Ec2Kind for EbsVolume {
    type Item = Item;

    fn id_filter(&self) -> &'static str {
        "volume-id"
    }

    /// Marked volumes only when searching by tag (observe, a search for a
    /// lost create); a lookup by id (import) finds any volume.
    async fn describe(
        &self,
        p: &Ec2,
        mut filters: Vec<Filter>,
    ) -> Result<Vec<Self::Item>, ApiError> {
        if filters
            .iter()
            .any(|f| f.name().is_some_and(|n| n.starts_with("tag:")))
        {
            filters.push(filter(&format!("tag:{}", MARK.0), &[MARK.1]));
        }
        let pages = describe(p, "DescribeVolumes", || {
            p.client
                .describe_volumes()
                .set_filters(Some(filters.clone()))
                .into_paginator()
                .send()
                .try_collect()
        })
        .await?;
        Ok(pages
            .into_iter()
            .flat_map(|o| o.volumes.unwrap_or_default())
            .collect())
    }

    fn id<'a>(&self, v: &'a Self::Item) -> Option<&'a str> {
        v.volume_id()
    }

    fn tags<'a>(&self, v: &'a Self::Item) -> &'a [Tag] {
        v.tags()
    }

    fn normalise(&self, v: &Self::Item, seen: Seen<'_>) -> (Value, Map) {
        let int = |i: Option<i32>| i.map(|n| Value::Int(n.into())).unwrap_or_default();
        let arn = v
            .volume_arn()
            .map(str::to_string)
            .unwrap_or_else(|| arn(seen.region, v.owner_id(), "volume", seen.id));
        let attributes = attrs(vec![("id", seen.id_value()), ("arn", Value::String(arn))]);
        let body = map(vec![
            ("availabilityZone", s(v.availability_zone())),
            ("sizeGiB", int(v.size())),
            ("volumeType", s(v.volume_type().map(|t| t.as_str()))),
            ("iops", int(v.iops())),
            ("throughput", int(v.throughput())),
            ("encrypted", Value::Bool(v.encrypted().unwrap_or(false))),
            ("kmsKeyId", s(v.kms_key_id().filter(|k| !k.is_empty()))),
            ("snapshotId", s(v.snapshot_id().filter(|k| !k.is_empty()))),
            ("tags", seen.user_tags),
        ]);
        (body, attributes)
    }

    fn listed_health(&self, v: &Self::Item) -> Option<Health> {
        Some(match v.state() {
            Some(VolumeState::Available | VolumeState::InUse) => Health::Healthy,
            Some(VolumeState::Error) => Health::Failed("EBS volume is in state error".into()),
            Some(other) => Health::Progressing(format!("EBS volume {}", other.as_str())),
            None => Health::Progressing("EBS volume creating".into()),
        })
    }

    async fn create(
        &self,
        p: &Ec2,
        desired: &Desired,
        d: &Value,
        token: &str,
    ) -> Result<Created, ApiError> {
        let mark = vec![(MARK.0.to_string(), MARK.1.to_string())];
        let o = sdk(p
            .client
            .create_volume()
            .set_availability_zone(string_at(d, "availabilityZone"))
            .set_size(int(d.get_path("sizeGiB")))
            .set_volume_type(str_at(d, "volumeType").map(VolumeType::from))
            .set_iops(int(d.get_path("iops")))
            .set_throughput(int(d.get_path("throughput")))
            .set_encrypted(bool_at(d, "encrypted"))
            .set_kms_key_id(string_at(d, "kmsKeyId"))
            .set_snapshot_id(string_at(d, "snapshotId"))
            .client_token(token)
            .tag_specifications(p.tag_spec(ResourceType::Volume, desired, d, mark))
            .customize()
            .config_override(no_sdk_retries())
            .send()
            .await)?;
        created(self.name(), o.volume_id)
    }

    /// One ModifyVolume with every changed field (EC2 allows one
    /// modification at a time per volume).
    async fn update(&self, p: &Ec2, u: &Update<'_>, _v: &Self::Item) -> Result<()> {
        let mut req = p.client.modify_volume().volume_id(u.id);
        for field in &u.fields {
            req = match *field {
                "sizeGiB" => req.set_size(int(u.d.get_path(field))),
                "volumeType" => req.set_volume_type(str_at(u.d, field).map(VolumeType::from)),
                "iops" => req.set_iops(int(u.d.get_path(field))),
                "throughput" => req.set_throughput(int(u.d.get_path(field))),
                other => return Err(u.unchangeable(other)),
            };
        }
        if u.fields.is_empty() {
            return Ok(());
        }
        p.call("ModifyVolume", || async { sdk(req.clone().send().await) })
            .await
            .map(|_| ())
    }

    async fn delete(&self, p: &Ec2, id: &str, _v: &Self::Item) -> Result<(), ApiError> {
        p.send("DeleteVolume", false, || async {
            sdk(p.client.delete_volume().volume_id(id).send().await).map(|_| ())
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

    fn body(j: serde_json::Value) -> Value {
        Value::from_json(j)
    }

    fn messages(b: &Value) -> Vec<String> {
        check("ebs_volume", b)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn sizes_types_iops_and_keys_are_checked() {
        assert!(messages(&body(serde_json::json!({
            "availabilityZone": "us-east-1a", "sizeGiB": 100, "volumeType": "gp3",
            "iops": 4000, "throughput": 250, "encrypted": true,
            "kmsKeyId": "arn:aws:kms:us-east-1:123456789012:key/1"
        })))
        .is_empty());
        assert!(messages(&body(serde_json::json!({
            "availabilityZone": "us-east-1a", "snapshotId": "snap-1"
        })))
        .is_empty());
        assert_eq!(
            messages(&body(serde_json::json!({"availabilityZone": "us-east-1a"}))),
            vec![": an EBS volume needs `sizeGiB` or `snapshotId`"]
        );
        assert_eq!(
            messages(&body(serde_json::json!({
                "availabilityZone": "a", "sizeGiB": 20000, "volumeType": "gp2", "iops": 300,
                "throughput": 200, "kmsKeyId": "alias/ebs"
            }))),
            vec![
                "sizeGiB: `sizeGiB` 20000 is out of range (1 to 16384 GiB)",
                "kmsKeyId: `kmsKeyId` `alias/ebs` is not a key ARN",
                "iops: a gp2 volume takes no `iops`",
                "throughput: a gp2 volume takes no `throughput`",
                "kmsKeyId: `kmsKeyId` needs `encrypted: true`",
            ]
        );
        assert_eq!(
            messages(&body(serde_json::json!({
                "availabilityZone": "a", "sizeGiB": 10, "volumeType": "io2"
            }))),
            vec![": an io2 volume needs `iops`"]
        );
        assert_eq!(
            messages(&body(serde_json::json!({
                "availabilityZone": "a", "sizeGiB": 10, "volumeType": "gp3", "iops": 50
            }))),
            vec!["iops: `iops` 50 is out of range (3000 to 80000 IOPS)"]
        );
    }

    #[test]
    fn placement_and_encryption_replace_and_a_shrink_is_refused() {
        let before = body(serde_json::json!({"availabilityZone": "a", "sizeGiB": 10}));
        let after =
            body(serde_json::json!({"availabilityZone": "b", "sizeGiB": 20, "encrypted": true}));
        assert_eq!(
            model::replace_reasons(&EbsVolume, &before, &after),
            vec![
                "availabilityZone changes from a to b (immutable)",
                "encrypted changes (immutable)"
            ]
        );
        let grown =
            body(serde_json::json!({"availabilityZone": "a", "sizeGiB": 20, "volumeType": "gp3"}));
        assert!(model::replace_reasons(&EbsVolume, &before, &grown).is_empty());
        assert!(EbsVolume.impossible(&grown, &before).is_none());
        let (message, fix) = EbsVolume.impossible(&before, &grown).unwrap();
        assert!(
            message.starts_with("`sizeGiB` 10 is smaller than the volume's 20 GiB"),
            "{message}"
        );
        assert!(
            fix.contains("`sizeGiB: 20`") && fix.contains("new name"),
            "{fix}"
        );
    }

    #[test]
    fn it_is_deleted_after_its_attachments() {
        let wave = |k: &str| find(k).map(delete_wave).unwrap();
        assert!(wave("volume_attachment") < wave("ebs_volume"));
    }

    #[test]
    fn it_normalises_into_the_spec_shape() {
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let v = Item::builder()
            .volume_id("vol-1")
            .availability_zone("us-east-1a")
            .size(20)
            .volume_type(VolumeType::Gp3)
            .iops(3000)
            .throughput(125)
            .encrypted(true)
            .snapshot_id("")
            .state(VolumeState::Creating)
            .set_tags(Some(vec![
                tag("managed-by", "tidegate"),
                tag("tidegate:project", "shop"),
                tag("tidegate:environment", "dev"),
                tag("tidegate:module", "data"),
                tag("tidegate:resource", "data.disk"),
                tag("tidegate:kind", "ebs_volume"),
                tag("owner", "team"),
            ]))
            .build();
        let raw = raw(EbsVolume, v, "us-east-1").unwrap();
        assert_eq!(
            raw.listed,
            Some(Health::Progressing("EBS volume creating".into()))
        );
        let live = to_live(&raw, &Owner::new("shop", "dev")).unwrap();
        assert_eq!(live.id.to_string(), "data.disk");
        assert_eq!(
            live.body.to_json_masked(),
            serde_json::json!({
                "availabilityZone": "us-east-1a", "sizeGiB": 20, "volumeType": "gp3",
                "iops": 3000, "throughput": 125, "encrypted": true, "tags": {"owner": "team"}
            })
        );
        assert_eq!(
            live.attributes["arn"],
            Value::String("arn:aws:ec2:us-east-1:000000000000:volume/vol-1".into())
        );
    }
}
