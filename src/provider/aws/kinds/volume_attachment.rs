//! `volume_attachment`: an EBS volume attached to an instance at a device
//! name. Every field is immutable (a change detaches and attaches anew).
//!
//! # Ownership
//! EC2 gives an attachment no id and no tags. Its id here is
//! `<volumeId>:<instanceId>`, and its ownership is recorded on the volume,
//! in the tag `tidegate:attachment` whose value is
//! `<instanceId>|<device>|<project>|<environment>|<module>|<resource>`.
//! Observe lists the attachments of the volumes carrying that tag, and
//! gives each one the record names (same instance and device) the
//! ownership tags the record holds, so the shared observe maps it to its
//! resource like any other kind; an attachment without a record (made out
//! of band) is no one's. Attachments cannot carry user `tags`: the value
//! rules refuse them.
//!
//! # Guarantees
//! - Create writes the record first, then AttachVolume (which takes no
//!   ClientToken): a create whose answer was lost is found by its record
//!   before anything is sent again. A record whose attach failed names no
//!   attachment and is overwritten by the next one.
//! - A replacement detaches first (a volume is attached once, a device
//!   name is used once per instance).
//! - A delete is DetachVolume, waits until EC2 no longer shows the
//!   attachment, then removes the record; a prune detaches before it
//!   deletes the volume or the instance.
//! - Observe is one DescribeVolumes sequence (paginated): the volumes with
//!   a record, or, for a lookup by id (import), the named volume.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, Tag, Volume, VolumeAttachmentState};

use crate::provider::aws::calls::{sdk, ApiError};
use crate::provider::aws::kind::{Created, Ec2Kind, KindSpec, Seen, Update};
use crate::provider::aws::schema::{f, fixed, req, Field, Ty, TAGS};
use crate::provider::aws::sdk::{attrs, describe, ec2_tags, filter, map, s, str_at, tag_map, Ec2};
use crate::provider::aws::tags::{
    self, MANAGER, TAG_DEPOSED, TAG_ENVIRONMENT, TAG_MANAGED_BY, TAG_MODULE, TAG_PROJECT,
    TAG_RESOURCE,
};
use crate::provider::aws::values::problem;
use crate::provider::{Desired, Health, Problem, Result};
use crate::value::{key_path, Map, Value};

/// The `volume_attachment` kind.
#[derive(Clone, Copy)]
pub(super) struct VolumeAttachment;

/// One attachment as observe lists it, with the ownership tags its record
/// on the volume gives it.
pub(super) struct Attachment {
    id: String,
    volume: String,
    instance: String,
    device: String,
    state: Option<VolumeAttachmentState>,
    tags: Vec<Tag>,
}

/// The tag on the volume that records who owns its attachment.
pub(super) const TAG_ATTACHMENT: &str = "tidegate:attachment";

/// The id filter tidegate passes (`<volumeId>:<instanceId>`); EC2 is
/// asked for the volume.
const ID_FILTER: &str = "attachment-id";

const FIELDS: &[Field] = &[
    req(fixed(f("volumeId", Ty::Str))),
    req(fixed(f("instanceId", Ty::Str))),
    req(fixed(f("deviceName", Ty::Str))),
    TAGS,
];

/// Attachment states observe lists (not detaching or detached).
fn listed(state: Option<&VolumeAttachmentState>) -> bool {
    !matches!(
        state,
        Some(VolumeAttachmentState::Detaching | VolumeAttachmentState::Detached)
    )
}

impl KindSpec for VolumeAttachment {
    fn name(&self) -> &'static str {
        "volume_attachment"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn attributes(&self) -> &'static [&'static str] {
        &["id"]
    }

    /// It holds both the volume and the instance.
    fn deleted_before(&self) -> &'static [&'static str] {
        &["ebs_volume", "instance"]
    }

    fn check_string(&self, field: &str, s: &str, path: &str, out: &mut Vec<Problem>) {
        let bad = match field {
            "volumeId" => (!s.starts_with("vol-"))
                .then_some("write a volume id (vol-..., e.g. `${resource.<ebs_volume>.id}`)"),
            "instanceId" => (!s.starts_with("i-"))
                .then_some("write an instance id (i-..., e.g. `${resource.<instance>.id}`)"),
            "deviceName" => (!(s.starts_with("/dev/") || s.starts_with("xvd")) || s.contains('|'))
                .then_some("write a device name such as /dev/sdf (Linux) or xvdf (Windows)"),
            _ => None,
        };
        if let Some(fix) = bad {
            out.push(problem(
                path,
                format!("`{field}` `{s}` is not valid here"),
                fix,
            ));
        }
    }

    /// EC2 cannot tag an attachment.
    fn check_object(&self, _fields: &[Field], m: &Map, path: &str, out: &mut Vec<Problem>) {
        if !path.is_empty() {
            return;
        }
        if let Some(Value::Map(t)) = m.get("tags") {
            if !t.is_empty() {
                out.push(problem(
                    &key_path(path, "tags"),
                    "a volume attachment cannot carry tags (EC2 gives attachments none)".into(),
                    "remove `tags`; tag the `ebs_volume` or the `instance` instead",
                ));
            }
        }
    }

    fn destroy_first(&self, _desired: &Value, _live: &Value) -> Option<String> {
        Some("destroy before create: a volume is attached to one instance at a time".into())
    }
}

/// The record of the attachment of `instance` at `device` for `owner_tags`
/// (ownership tags as a map).
fn record(instance: &str, device: &str, owner: &BTreeMap<String, String>) -> Option<String> {
    let get = |k: &str| owner.get(k).map(String::as_str);
    Some(
        [
            instance,
            device,
            get(TAG_PROJECT).unwrap_or_default(),
            get(TAG_ENVIRONMENT)?,
            get(TAG_MODULE)?,
            get(TAG_RESOURCE)?,
        ]
        .join("|"),
    )
}

/// The ownership tags a record gives the attachment of `instance` at
/// `device`; none when it records another attachment.
fn owner_tags(value: &str, instance: &str, device: &str) -> Vec<Tag> {
    let parts: Vec<&str> = value.splitn(6, '|').collect();
    let [i, d, project, environment, module, resource] = parts[..] else {
        return Vec::new();
    };
    if i != instance || d != device {
        return Vec::new();
    }
    let mut pairs = vec![
        (TAG_MANAGED_BY.to_string(), MANAGER.to_string()),
        (TAG_ENVIRONMENT.to_string(), environment.to_string()),
        (TAG_MODULE.to_string(), module.to_string()),
        (TAG_RESOURCE.to_string(), resource.to_string()),
    ];
    if !project.is_empty() {
        pairs.push((TAG_PROJECT.to_string(), project.to_string()));
    }
    ec2_tags(pairs)
}

/// The attachments of `v`, listed ones only.
fn attachments(v: &Volume) -> Vec<Attachment> {
    let volume = v.volume_id().unwrap_or_default();
    let recorded = v
        .tags()
        .iter()
        .find(|t| t.key() == Some(TAG_ATTACHMENT))
        .and_then(|t| t.value());
    v.attachments()
        .iter()
        .filter(|a| listed(a.state()))
        .filter_map(|a| {
            let instance = a.instance_id()?.to_string();
            let device = a.device().unwrap_or_default().to_string();
            let tags = recorded
                .map(|r| owner_tags(r, &instance, &device))
                .unwrap_or_default();
            Some(Attachment {
                id: format!("{volume}:{instance}"),
                volume: volume.to_string(),
                instance,
                device,
                state: a.state().cloned(),
                tags,
            })
        })
        .collect()
}

/// The volume and the instance of an attachment id.
fn split_id(id: &str) -> Option<(&str, &str)> {
    id.split_once(':')
}

/// The volumes `filters` select, in one DescribeVolumes sequence.
async fn volumes(p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Volume>, ApiError> {
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

/// Writes (or overwrites) the record on `volume`.
async fn write_record(p: &Ec2, volume: &str, value: String) -> Result<(), ApiError> {
    let t = ec2_tags([(TAG_ATTACHMENT.to_string(), value)]);
    p.send("CreateTags", true, || async {
        sdk(p
            .client
            .create_tags()
            .resources(volume)
            .set_tags(Some(t.clone()))
            .send()
            .await)
        .map(|_| ())
    })
    .await
}

#[async_trait::async_trait]
impl Ec2Kind for VolumeAttachment {
    type Item = Attachment;

    fn id_filter(&self) -> &'static str {
        ID_FILTER
    }

    /// The `tag:` filters name the ownership an attachment gets from its
    /// record, not the volume's own tags: they are left to the shared
    /// observe, which checks them on what this returns. An id filter asks
    /// EC2 for the named volumes (records or not: an import looks up an
    /// attachment made out of band); otherwise for the volumes that carry
    /// a record.
    async fn describe(&self, p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Self::Item>, ApiError> {
        let mut ids: Option<Vec<String>> = None;
        let mut ec2_filters: Vec<Filter> = Vec::new();
        for f in filters {
            match f.name() {
                Some(ID_FILTER) => ids = Some(f.values().to_vec()),
                Some(n) if n.starts_with("tag:") => {}
                _ => ec2_filters.push(f),
            }
        }
        match &ids {
            Some(ids) => {
                let vols: Vec<&str> = ids
                    .iter()
                    .filter_map(|i| split_id(i))
                    .map(|(v, _)| v)
                    .collect();
                if vols.is_empty() {
                    return Ok(Vec::new());
                }
                ec2_filters.push(filter("volume-id", &vols));
            }
            None => ec2_filters.push(filter("tag-key", &[TAG_ATTACHMENT])),
        }
        let found = volumes(p, ec2_filters).await?;
        Ok(found
            .iter()
            .flat_map(attachments)
            .filter(|a| ids.as_ref().is_none_or(|ids| ids.contains(&a.id)))
            .collect())
    }

    fn id<'a>(&self, a: &'a Self::Item) -> Option<&'a str> {
        Some(&a.id)
    }

    fn tags<'a>(&self, a: &'a Self::Item) -> &'a [Tag] {
        &a.tags
    }

    fn normalise(&self, a: &Self::Item, seen: Seen<'_>) -> (Value, Map) {
        let attributes = attrs(vec![("id", seen.id_value())]);
        let body = map(vec![
            ("volumeId", s(Some(&a.volume))),
            ("instanceId", s(Some(&a.instance))),
            ("deviceName", s(Some(&a.device))),
            ("tags", seen.user_tags),
        ]);
        (body, attributes)
    }

    fn listed_health(&self, a: &Self::Item) -> Option<Health> {
        Some(match &a.state {
            Some(VolumeAttachmentState::Attaching) | None => {
                Health::Progressing("volume attaching".into())
            }
            Some(_) => Health::Healthy,
        })
    }

    async fn create(
        &self,
        p: &Ec2,
        desired: &Desired,
        d: &Value,
        _token: &str,
    ) -> Result<Created, ApiError> {
        let (volume, instance, device) = (
            str_at(d, "volumeId").unwrap_or_default(),
            str_at(d, "instanceId").unwrap_or_default(),
            str_at(d, "deviceName").unwrap_or_default(),
        );
        let owner: BTreeMap<String, String> = tags::owner_tags(&p.owner, &desired.id)
            .into_iter()
            .collect();
        let value = record(instance, device, &owner).unwrap_or_default();
        write_record(p, volume, value).await?;
        sdk(p
            .client
            .attach_volume()
            .volume_id(volume)
            .instance_id(instance)
            .device(device)
            .customize()
            .config_override(crate::provider::aws::sdk::no_sdk_retries())
            .send()
            .await)?;
        Ok(Created::Id(format!("{volume}:{instance}")))
    }

    async fn update(&self, _p: &Ec2, u: &Update<'_>, _a: &Self::Item) -> Result<()> {
        match u.fields.first() {
            Some(field) => Err(u.unchangeable(field)),
            None => Ok(()),
        }
    }

    async fn delete(&self, p: &Ec2, _id: &str, a: &Self::Item) -> Result<(), ApiError> {
        p.send("DetachVolume", false, || async {
            sdk(p
                .client
                .detach_volume()
                .volume_id(&a.volume)
                .instance_id(&a.instance)
                .device(&a.device)
                .send()
                .await)
            .map(|_| ())
        })
        .await
    }

    /// Until EC2 shows the volume without this attachment; then the record
    /// goes (when it still names this instance).
    async fn wait_deleted(&self, p: &Ec2, id: &str) -> Result<()> {
        let Some((volume, instance)) = split_id(id) else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + p.policy.settle;
        loop {
            let found = volumes(p, vec![filter("volume-id", &[volume])])
                .await
                .map_err(|e| e.into_error("wait volume_attachment"))?;
            let Some(v) = found.first() else {
                return Ok(());
            };
            let attached = v.attachments().iter().find(|a| {
                a.instance_id() == Some(instance)
                    && a.state() != Some(&VolumeAttachmentState::Detached)
            });
            let Some(a) = attached else {
                let mine = tag_map(v.tags())
                    .get(TAG_ATTACHMENT)
                    .is_some_and(|r| r.split('|').next() == Some(instance));
                if mine {
                    let t = vec![Tag::builder().key(TAG_ATTACHMENT).build()];
                    p.delete_tags(volume, t).await?;
                }
                return Ok(());
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError {
                    code: Some("StateTimeout".into()),
                    message: format!(
                        "volume {volume} stayed {} on {instance} for {:?}",
                        a.state().map_or("attached", |s| s.as_str()),
                        p.policy.settle
                    ),
                    transport: false,
                    unreached: None,
                }
                .into_error("wait volume_attachment"));
            }
            tokio::time::sleep(p.policy.poll).await;
        }
    }

    /// Ownership tags become the record on the volume (an import adopting
    /// an attachment); EC2 has nowhere to put anything else.
    async fn set_tags(&self, p: &Ec2, id: &str, t: Vec<Tag>) -> Result<()> {
        let op = "tag volume_attachment";
        let refuse = |message: String| {
            ApiError {
                code: Some("UnsupportedOperation".into()),
                message,
                transport: false,
                unreached: None,
            }
            .into_error(op)
        };
        let owner = tag_map(&t);
        if owner.contains_key(TAG_DEPOSED) {
            return Err(refuse(
                "a volume attachment cannot be marked deposed (it is replaced by detaching first)"
                    .into(),
            ));
        }
        let Some((volume, instance)) = split_id(id) else {
            return Err(refuse(format!("`{id}` is not <volumeId>:<instanceId>")));
        };
        let found = volumes(p, vec![filter("volume-id", &[volume])])
            .await
            .map_err(|e| e.into_error(op))?;
        let device = found
            .iter()
            .flat_map(|v| v.attachments())
            .find(|a| a.instance_id() == Some(instance) && listed(a.state()))
            .and_then(|a| a.device())
            .ok_or_else(|| refuse(format!("volume {volume} is not attached to {instance}")))?;
        let value = record(instance, device, &owner)
            .ok_or_else(|| refuse("the ownership tags name no resource".into()))?;
        write_record(p, volume, value)
            .await
            .map_err(|e| e.into_error(op))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::aws::kind::raw;
    use crate::provider::aws::kinds::{delete_wave, find};
    use crate::provider::aws::observe::to_live;
    use crate::provider::aws::{check, model};
    use crate::provider::{Owner, ResourceId};
    use aws_sdk_ec2::types::VolumeAttachment as Ec2Attachment;

    fn body(j: serde_json::Value) -> Value {
        Value::from_json(j)
    }

    fn messages(b: &Value) -> Vec<String> {
        check("volume_attachment", b)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn ids_devices_and_no_tags() {
        assert!(messages(&body(serde_json::json!({
            "volumeId": "vol-1", "instanceId": "i-1", "deviceName": "/dev/sdf"
        })))
        .is_empty());
        assert_eq!(
            messages(&body(serde_json::json!({
                "volumeId": "v1", "instanceId": "i-1", "deviceName": "sdf", "tags": {"a": "b"}
            }))),
            vec![
                "volumeId: `volumeId` `v1` is not valid here",
                "deviceName: `deviceName` `sdf` is not valid here",
                "tags: a volume attachment cannot carry tags (EC2 gives attachments none)",
            ]
        );
        assert_eq!(
            messages(&body(
                serde_json::json!({"volumeId": "vol-1", "instanceId": "i-1"})
            )),
            vec![": missing required field `deviceName`"]
        );
    }

    #[test]
    fn every_field_replaces_detaching_first() {
        let before = body(
            serde_json::json!({"volumeId": "vol-1", "instanceId": "i-1", "deviceName": "/dev/sdf"}),
        );
        let after = body(
            serde_json::json!({"volumeId": "vol-1", "instanceId": "i-1", "deviceName": "/dev/sdg"}),
        );
        assert_eq!(
            model::replace_reasons(&VolumeAttachment, &before, &after),
            vec!["deviceName changes from /dev/sdf to /dev/sdg (immutable)"]
        );
        assert!(VolumeAttachment.destroy_first(&after, &before).is_some());
    }

    #[test]
    fn it_is_detached_before_the_volume_and_the_instance_go() {
        let wave = |k: &str| find(k).map(delete_wave).unwrap();
        assert!(wave("volume_attachment") < wave("ebs_volume"));
        assert!(wave("volume_attachment") < wave("instance"));
    }

    #[test]
    fn the_record_on_the_volume_owns_only_the_attachment_it_names() {
        let owner = Owner::new("shop", "dev");
        let id = ResourceId {
            module: "data".into(),
            name: "attach".into(),
        };
        let tagged: BTreeMap<String, String> = tags::owner_tags(&owner, &id).into_iter().collect();
        let value = record("i-1", "/dev/sdf", &tagged).unwrap();
        assert_eq!(value, "i-1|/dev/sdf|shop|dev|data|data.attach");
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let attach = |i: &str, d: &str| {
            Ec2Attachment::builder()
                .instance_id(i)
                .device(d)
                .state(VolumeAttachmentState::Attached)
                .build()
        };
        let v = Volume::builder()
            .volume_id("vol-1")
            .attachments(attach("i-1", "/dev/sdf"))
            .attachments(attach("i-2", "/dev/sdg"))
            .set_tags(Some(vec![
                tag("tidegate:environment", "prod"),
                tag(TAG_ATTACHMENT, &value),
            ]))
            .build();
        let items = attachments(&v);
        assert_eq!(items.len(), 2);
        let raws: Vec<_> = items
            .into_iter()
            .filter_map(|a| raw(VolumeAttachment, a, "us-east-1"))
            .collect();
        assert_eq!(raws[0].external_id, "vol-1:i-1");
        let live = to_live(&raws[0], &owner).unwrap();
        assert_eq!(live.id, id);
        assert_eq!(
            live.body.to_json_masked(),
            serde_json::json!({"volumeId": "vol-1", "instanceId": "i-1", "deviceName": "/dev/sdf", "tags": {}})
        );
        assert_eq!(raws[0].listed, Some(Health::Healthy));
        assert!(
            to_live(&raws[1], &owner).is_none(),
            "the other attachment is no one's"
        );
    }
}
