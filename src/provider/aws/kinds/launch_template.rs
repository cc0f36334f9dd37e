//! `launch_template`: a launch template, managed through its default
//! version. Its name is immutable; a change of `data` or
//! `versionDescription` is made in place as a new version
//! (CreateLaunchTemplateVersion) made the default (ModifyLaunchTemplate).
//! `data` is the whole of that version: what it leaves out, the new
//! version does not have.
//!
//! # Guarantees
//! - CreateLaunchTemplate carries a ClientToken and tags the template at
//!   creation; CreateLaunchTemplateVersion carries one derived from the
//!   template and the version's data, so a retry makes no second version.
//! - Observe is two call sequences, whatever the number of templates:
//!   DescribeLaunchTemplates (paginated), then one
//!   DescribeLaunchTemplateVersions of the `$Default` versions (of the one
//!   template listed, or of every template of the account when there are
//!   more: EC2 takes one template id per call, or none with `$Default`).
//! - A replacement (a new name) deletes the old template first.
//! - `data.userData` is compared with what EC2 shows back (it keeps it
//!   base64-encoded; observe decodes it). It cannot hold a secret: anyone
//!   who may describe launch template versions reads it, so the value
//!   rules refuse one.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    Filter, InstanceType, LaunchTemplate, LaunchTemplateBlockDeviceMappingRequest,
    LaunchTemplateEbsBlockDeviceRequest, LaunchTemplateHttpTokensState,
    LaunchTemplateInstanceMetadataOptionsRequest, LaunchTemplateVersion, RequestLaunchTemplateData,
    ResourceType, ResponseLaunchTemplateData, Tag, VolumeType,
};
use base64::Engine;

use crate::provider::aws::calls::{sdk, ApiError};
use crate::provider::aws::kind::{created, Created, Ec2Kind, KindSpec, Seen, Update};
use crate::provider::aws::schema::{f, fixed, req, Field, Ty, TAGS};
use crate::provider::aws::sdk::{
    arn, attrs, bool_at, describe, int, map, no_sdk_retries, none_when_gone, s, str_at, string_at,
    strings, strs, Ec2,
};
use crate::provider::aws::values::{in_range, problem};
use crate::provider::{Desired, Problem, Result};
use crate::value::{key_path, Map, Value};

/// The `launch_template` kind.
#[derive(Clone, Copy)]
pub(super) struct LaunchTemplateKind;

/// A template as observe lists it: with its default version.
pub(super) struct WithDefault {
    template: LaunchTemplate,
    default: Option<LaunchTemplateVersion>,
}

const METADATA: &[Field] = &[
    f("httpTokens", Ty::Enum(&["required", "optional"])),
    f("httpPutResponseHopLimit", Ty::Int),
];

const EBS: &[Field] = &[
    f("volumeSizeGiB", Ty::Int),
    f(
        "volumeType",
        Ty::Enum(&["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"]),
    ),
    f("encrypted", Ty::Bool),
];

const BLOCK_DEVICE: &[Field] = &[req(f("deviceName", Ty::Str)), f("ebs", Ty::Object(EBS))];

const DATA: &[Field] = &[
    f("imageId", Ty::Str),
    f("instanceType", Ty::Str),
    f("keyName", Ty::Str),
    f("securityGroupIds", Ty::StrSet),
    f("metadata", Ty::Object(METADATA)),
    f("blockDeviceMappings", Ty::ObjectSet(BLOCK_DEVICE)),
    f("userData", Ty::SecretStr),
];

const FIELDS: &[Field] = &[
    req(fixed(f("launchTemplateName", Ty::Str))),
    f("data", Ty::Object(DATA)),
    f("versionDescription", Ty::Str),
    TAGS,
];

/// The id filter tidegate passes; EC2 takes ids as `LaunchTemplateIds`.
const ID_FILTER: &str = "launch-template-id";

/// The most bytes of user data EC2 takes (before base64).
const USER_DATA_MAX: usize = 16 * 1024;

impl KindSpec for LaunchTemplateKind {
    fn name(&self) -> &'static str {
        "launch_template"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn attributes(&self) -> &'static [&'static str] {
        &["id", "latestVersion", "defaultVersion", "arn"]
    }

    /// Its data names them (instances launched from it are not tidegate's).
    fn deleted_before(&self) -> &'static [&'static str] {
        &["key_pair", "security_group"]
    }

    fn check_string(&self, field: &str, s: &str, path: &str, out: &mut Vec<Problem>) {
        match field {
            "launchTemplateName"
                if s.len() < 3
                    || s.len() > 128
                    || !s
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "()./_-".contains(c)) =>
            {
                out.push(problem(
                    path,
                    format!("`launchTemplateName` `{s}` is not a launch template name"),
                    "write 3 to 128 letters, digits and ( ) . / _ -",
                ))
            }
            "imageId" if !s.starts_with("ami-") => out.push(problem(
                path,
                format!("`imageId` `{s}` is not an AMI id"),
                "write an AMI id (ami-...)",
            )),
            "versionDescription" if s.len() > 255 => out.push(problem(
                path,
                format!("`versionDescription` is {} characters long", s.len()),
                "keep it to 255 characters",
            )),
            _ => {}
        }
    }

    fn check_int(&self, field: &str, i: i64, path: &str, out: &mut Vec<Problem>) {
        match field {
            "httpPutResponseHopLimit" => in_range(field, i, 1..=64, "hops", path, out),
            "volumeSizeGiB" => in_range(field, i, 1..=16384, "GiB", path, out),
            _ => {}
        }
    }

    /// No secret in `userData`, and no more than EC2 takes.
    fn check_object(&self, _fields: &[Field], m: &Map, path: &str, out: &mut Vec<Problem>) {
        if path != "data" {
            return;
        }
        match m.get("userData") {
            Some(Value::Sensitive(_)) => out.push(problem(
                &key_path(path, "userData"),
                "a launch template's `userData` cannot hold a secret: EC2 shows it to anyone who may describe launch template versions".into(),
                "pass the secret at boot instead (read it from Secrets Manager or SSM Parameter Store in the script), or use an `instance`, whose `userData` may hold one",
            )),
            Some(Value::String(u)) if u.len() > USER_DATA_MAX => out.push(problem(
                &key_path(path, "userData"),
                format!("`userData` is {} bytes; EC2 takes at most {USER_DATA_MAX}", u.len()),
                "shorten the script, or fetch the rest at boot",
            )),
            _ => {}
        }
    }

    /// EC2 deletes a launch template that an Auto Scaling group or a fleet
    /// still names (they fail at their next launch), so keeping the old
    /// one deposed until nothing uses it protects nothing: it is deleted
    /// first. (It also keeps stand-ins that show a template's tags as they
    /// were at creation, as moto does, from missing the deposed mark.)
    fn destroy_first(&self, _desired: &Value, _live: &Value) -> Option<String> {
        Some("destroy before create: EC2 does not keep a launch template in use".into())
    }

    /// Block device mappings sorted by device name.
    fn canonical_set(&self, _field: &str, items: &Value) -> Value {
        let Value::List(items) = items else {
            return items.clone();
        };
        let mut items = items.to_vec();
        items.sort_by_key(|m| str_at(m, "deviceName").unwrap_or("~").to_string());
        items.dedup();
        Value::List(items)
    }
}

/// The template data of a desired spec.
fn request_data(d: &Value) -> RequestLaunchTemplateData {
    let Some(data) = d.get_path("data") else {
        return RequestLaunchTemplateData::builder().build();
    };
    let metadata = data.get_path("metadata").map(|m| {
        LaunchTemplateInstanceMetadataOptionsRequest::builder()
            .set_http_tokens(str_at(m, "httpTokens").map(LaunchTemplateHttpTokensState::from))
            .set_http_put_response_hop_limit(int(m.get_path("httpPutResponseHopLimit")))
            .build()
    });
    let devices = match data.get_path("blockDeviceMappings") {
        Some(Value::List(l)) => Some(
            l.iter()
                .map(|b| {
                    let ebs = b.get_path("ebs").map(|e| {
                        LaunchTemplateEbsBlockDeviceRequest::builder()
                            .set_volume_size(int(e.get_path("volumeSizeGiB")))
                            .set_volume_type(str_at(e, "volumeType").map(VolumeType::from))
                            .set_encrypted(bool_at(e, "encrypted"))
                            .build()
                    });
                    LaunchTemplateBlockDeviceMappingRequest::builder()
                        .set_device_name(string_at(b, "deviceName"))
                        .set_ebs(ebs)
                        .build()
                })
                .collect(),
        ),
        _ => None,
    };
    let groups = strs(data, "securityGroupIds");
    RequestLaunchTemplateData::builder()
        .set_image_id(string_at(data, "imageId"))
        .set_instance_type(str_at(data, "instanceType").map(InstanceType::from))
        .set_key_name(string_at(data, "keyName"))
        .set_security_group_ids(Some(groups).filter(|g| !g.is_empty()))
        .set_metadata_options(metadata)
        .set_block_device_mappings(devices)
        .set_user_data(
            str_at(data, "userData").map(|u| base64::engine::general_purpose::STANDARD.encode(u)),
        )
        .build()
}

/// A version's data in the spec shape.
fn data_value(data: &ResponseLaunchTemplateData) -> Value {
    let int = |i: Option<i32>| i.map(|n| Value::Int(n.into())).unwrap_or_default();
    let metadata = data.metadata_options().map(|m| {
        map(vec![
            ("httpTokens", s(m.http_tokens().map(|t| t.as_str()))),
            (
                "httpPutResponseHopLimit",
                int(m.http_put_response_hop_limit()),
            ),
        ])
    });
    let mut devices: Vec<Value> = data
        .block_device_mappings()
        .iter()
        .map(|b| {
            let ebs = b.ebs().map(|e| {
                map(vec![
                    ("volumeSizeGiB", int(e.volume_size())),
                    ("volumeType", s(e.volume_type().map(|t| t.as_str()))),
                    (
                        "encrypted",
                        e.encrypted().map(Value::Bool).unwrap_or_default(),
                    ),
                ])
            });
            map(vec![
                ("deviceName", s(b.device_name())),
                ("ebs", ebs.unwrap_or_default()),
            ])
        })
        .collect();
    devices.sort_by_key(|m| str_at(m, "deviceName").unwrap_or("~").to_string());
    let user_data = data.user_data().map(|b64| {
        match base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        {
            Some(text) => Value::String(text),
            // Not base64 text: shown as EC2 holds it (differs from any
            // desired script, so the next apply writes a new version).
            None => Value::String(b64.to_string()),
        }
    });
    let groups = data.security_group_ids();
    map(vec![
        ("imageId", s(data.image_id())),
        ("instanceType", s(data.instance_type().map(|t| t.as_str()))),
        ("keyName", s(data.key_name())),
        (
            "securityGroupIds",
            if groups.is_empty() {
                Value::Null
            } else {
                strings(groups.iter().map(String::as_str))
            },
        ),
        ("metadata", metadata.unwrap_or_default()),
        (
            "blockDeviceMappings",
            if devices.is_empty() {
                Value::Null
            } else {
                Value::List(devices)
            },
        ),
        ("userData", user_data.unwrap_or_default()),
    ])
}

/// The ClientToken of a new version of template `id` holding `d`'s data
/// and description: a retried call, or the same data written again (after
/// an out-of-band default), gets the version made before instead of a
/// duplicate.
fn version_token(id: &str, d: &Value) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(id.as_bytes());
    h.update([0]);
    for field in ["data", "versionDescription"] {
        let v = d.get_path(field).map(Value::to_json_masked);
        h.update(serde_json::to_vec(&v).unwrap_or_default());
        h.update([0]);
    }
    let hex: String = h
        .finalize()
        .iter()
        .take(20)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("tg-{hex}")
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

/// The default versions of `templates`, in one call sequence.
async fn default_versions(
    p: &Ec2,
    templates: &[LaunchTemplate],
) -> Result<BTreeMap<String, LaunchTemplateVersion>, ApiError> {
    let one = match templates {
        [] => return Ok(BTreeMap::new()),
        [t] => t.launch_template_id().map(str::to_string),
        _ => None,
    };
    let pages = describe(p, "DescribeLaunchTemplateVersions", || {
        p.client
            .describe_launch_template_versions()
            .set_launch_template_id(one.clone())
            .versions("$Default")
            .into_paginator()
            .send()
            .try_collect()
    })
    .await?;
    Ok(pages
        .into_iter()
        .flat_map(|o| o.launch_template_versions.unwrap_or_default())
        .filter_map(|v| Some((v.launch_template_id()?.to_string(), v)))
        .collect())
}

#[async_trait::async_trait]
impl Ec2Kind for LaunchTemplateKind {
    type Item = WithDefault;

    fn id_filter(&self) -> &'static str {
        ID_FILTER
    }

    /// An id filter becomes `LaunchTemplateIds`; an id EC2 does not know
    /// (deleted since) is an empty answer.
    async fn describe(&self, p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Self::Item>, ApiError> {
        let (filters, ids) = split_ids(filters);
        let answer = describe(p, "DescribeLaunchTemplates", || {
            p.client
                .describe_launch_templates()
                .set_filters(Some(filters.clone()).filter(|f| !f.is_empty()))
                .set_launch_template_ids(ids.clone())
                .into_paginator()
                .send()
                .try_collect()
        })
        .await;
        let pages = none_when_gone(answer, ids.is_some())?;
        let templates: Vec<LaunchTemplate> = pages
            .into_iter()
            .flat_map(|o| o.launch_templates.unwrap_or_default())
            .collect();
        let mut versions = default_versions(p, &templates).await?;
        Ok(templates
            .into_iter()
            .map(|template| {
                let default = template
                    .launch_template_id()
                    .and_then(|id| versions.remove(id));
                WithDefault { template, default }
            })
            .collect())
    }

    fn id<'a>(&self, t: &'a Self::Item) -> Option<&'a str> {
        t.template.launch_template_id()
    }

    fn tags<'a>(&self, t: &'a Self::Item) -> &'a [Tag] {
        t.template.tags()
    }

    fn normalise(&self, t: &Self::Item, seen: Seen<'_>) -> (Value, Map) {
        let lt = &t.template;
        let account = lt.created_by().and_then(|c| c.split(':').nth(4));
        let number = |n: Option<i64>| n.map(Value::Int).unwrap_or_default();
        let attributes = attrs(vec![
            ("id", seen.id_value()),
            ("latestVersion", number(lt.latest_version_number())),
            ("defaultVersion", number(lt.default_version_number())),
            (
                "arn",
                Value::String(arn(seen.region, account, "launch-template", seen.id)),
            ),
        ]);
        let version = t.default.as_ref();
        let body = map(vec![
            ("launchTemplateName", s(lt.launch_template_name())),
            (
                "data",
                version
                    .and_then(|v| v.launch_template_data())
                    .map(data_value)
                    .unwrap_or_default(),
            ),
            (
                "versionDescription",
                s(version.and_then(|v| v.version_description())),
            ),
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
            .create_launch_template()
            .set_launch_template_name(string_at(d, "launchTemplateName"))
            .launch_template_data(request_data(d))
            .set_version_description(string_at(d, "versionDescription"))
            .client_token(token)
            .tag_specifications(p.tag_spec(ResourceType::LaunchTemplate, desired, d, vec![]))
            .customize()
            .config_override(no_sdk_retries())
            .send()
            .await)?;
        created(
            self.name(),
            o.launch_template.and_then(|t| t.launch_template_id),
        )
    }

    /// A new version of the whole desired data, made the default.
    async fn update(&self, p: &Ec2, u: &Update<'_>, _t: &Self::Item) -> Result<()> {
        if let Some(other) = u
            .fields
            .iter()
            .find(|f| !matches!(**f, "data" | "versionDescription"))
        {
            return Err(u.unchangeable(other));
        }
        if u.fields.is_empty() {
            return Ok(());
        }
        let data = request_data(u.d);
        let description = string_at(u.d, "versionDescription");
        let token = version_token(u.id, u.d);
        let o = p
            .call("CreateLaunchTemplateVersion", || async {
                sdk(p
                    .client
                    .create_launch_template_version()
                    .launch_template_id(u.id)
                    .launch_template_data(data.clone())
                    .set_version_description(description.clone())
                    .client_token(&token)
                    .send()
                    .await)
            })
            .await?;
        let version = o
            .launch_template_version()
            .and_then(|v| v.version_number())
            .ok_or_else(|| {
                ApiError {
                    code: None,
                    message: format!(
                        "EC2 returned no version number for launch template {}",
                        u.id
                    ),
                    transport: false,
                    unreached: None,
                }
                .into_error("CreateLaunchTemplateVersion")
            })?;
        p.call("ModifyLaunchTemplate", || async {
            sdk(p
                .client
                .modify_launch_template()
                .launch_template_id(u.id)
                .default_version(version.to_string())
                .send()
                .await)
        })
        .await
        .map(|_| ())
    }

    async fn delete(&self, p: &Ec2, id: &str, _t: &Self::Item) -> Result<(), ApiError> {
        p.send("DeleteLaunchTemplate", false, || async {
            sdk(p
                .client
                .delete_launch_template()
                .launch_template_id(id)
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
    use crate::provider::aws::{check, model};
    use crate::provider::Owner;
    use crate::sensitive::Sensitive;
    use aws_sdk_ec2::types::{
        LaunchTemplateBlockDeviceMapping, LaunchTemplateEbsBlockDevice,
        LaunchTemplateInstanceMetadataOptions,
    };

    fn body(j: serde_json::Value) -> Value {
        Value::from_json(j)
    }

    fn messages(b: &Value) -> Vec<String> {
        check("launch_template", b)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    fn spec() -> serde_json::Value {
        serde_json::json!({
            "launchTemplateName": "web",
            "data": {
                "imageId": "ami-1", "instanceType": "t3.micro", "keyName": "deploy",
                "securityGroupIds": ["sg-2", "sg-1"],
                "metadata": {"httpTokens": "required", "httpPutResponseHopLimit": 2},
                "blockDeviceMappings": [{"deviceName": "/dev/xvda",
                    "ebs": {"volumeSizeGiB": 20, "volumeType": "gp3", "encrypted": true}}],
                "userData": "#!/bin/sh\necho hi\n"
            },
            "versionDescription": "first"
        })
    }

    #[test]
    fn names_images_sizes_and_no_secret_user_data() {
        assert!(messages(&body(spec())).is_empty());
        assert_eq!(
            messages(&body(serde_json::json!({
                "launchTemplateName": "a b",
                "data": {"imageId": "img-1", "metadata": {"httpPutResponseHopLimit": 0},
                    "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"volumeSizeGiB": 0}}]}
            }))),
            vec![
                "launchTemplateName: `launchTemplateName` `a b` is not a launch template name",
                "data.imageId: `imageId` `img-1` is not an AMI id",
                "data.metadata.httpPutResponseHopLimit: `httpPutResponseHopLimit` 0 is out of range (1 to 64 hops)",
                "data.blockDeviceMappings[0].ebs.volumeSizeGiB: `volumeSizeGiB` 0 is out of range (1 to 16384 GiB)",
            ]
        );
        let mut secret = body(spec());
        if let Value::Map(m) = &mut secret {
            if let Some(Value::Map(data)) = m.get_mut("data") {
                data.insert(
                    "userData".into(),
                    Value::Sensitive(Sensitive::from_string("pw".into())),
                );
            }
        }
        let found = check("launch_template", &secret);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "data.userData");
        assert!(found[0].message.contains("cannot hold a secret"));
        assert!(found[0].fix.contains("Secrets Manager"));
    }

    #[test]
    fn the_name_replaces_and_the_data_changes_in_place() {
        let before = body(spec());
        let mut after = spec();
        after["data"]["instanceType"] = "t3.large".into();
        after["data"]["blockDeviceMappings"][0]["ebs"]["encrypted"] = false.into();
        assert!(model::replace_reasons(&LaunchTemplateKind, &before, &body(after)).is_empty());
        let mut renamed = spec();
        renamed["launchTemplateName"] = "web2".into();
        assert_eq!(
            model::replace_reasons(&LaunchTemplateKind, &before, &body(renamed)),
            vec!["launchTemplateName changes from web to web2 (immutable)"]
        );
    }

    #[test]
    fn it_normalises_the_default_version_into_the_spec_shape() {
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let data = ResponseLaunchTemplateData::builder()
            .image_id("ami-1")
            .instance_type(InstanceType::T3Micro)
            .key_name("deploy")
            .security_group_ids("sg-2")
            .security_group_ids("sg-1")
            .metadata_options(
                LaunchTemplateInstanceMetadataOptions::builder()
                    .http_tokens(LaunchTemplateHttpTokensState::Required)
                    .http_put_response_hop_limit(2)
                    .build(),
            )
            .block_device_mappings(
                LaunchTemplateBlockDeviceMapping::builder()
                    .device_name("/dev/xvda")
                    .ebs(
                        LaunchTemplateEbsBlockDevice::builder()
                            .volume_size(20)
                            .volume_type(VolumeType::Gp3)
                            .encrypted(true)
                            .build(),
                    )
                    .build(),
            )
            .user_data(base64::engine::general_purpose::STANDARD.encode("#!/bin/sh\necho hi\n"))
            .build();
        let item = WithDefault {
            template: LaunchTemplate::builder()
                .launch_template_id("lt-1")
                .launch_template_name("web")
                .created_by("arn:aws:iam::123456789012:root")
                .default_version_number(1)
                .latest_version_number(1)
                .set_tags(Some(vec![
                    tag("managed-by", "tidegate"),
                    tag("tidegate:project", "shop"),
                    tag("tidegate:environment", "dev"),
                    tag("tidegate:module", "app"),
                    tag("tidegate:resource", "app.web"),
                ]))
                .build(),
            default: Some(
                LaunchTemplateVersion::builder()
                    .launch_template_id("lt-1")
                    .version_number(1)
                    .version_description("first")
                    .launch_template_data(data)
                    .build(),
            ),
        };
        let raw = raw(LaunchTemplateKind, item, "us-east-1").unwrap();
        let live = to_live(&raw, &Owner::new("shop", "dev")).unwrap();
        let mut want = spec();
        want["data"]["securityGroupIds"] = serde_json::json!(["sg-1", "sg-2"]);
        want["tags"] = serde_json::json!({});
        assert_eq!(live.body.to_json_masked(), want);
        assert_eq!(
            model::predict(
                &LaunchTemplateKind,
                &model::canonical(&LaunchTemplateKind, &body(spec())),
                Some(&live.body),
                b"k"
            )
            .action,
            crate::provider::Action::NoOp
        );
        assert_eq!(
            live.attributes["arn"],
            Value::String("arn:aws:ec2:us-east-1:123456789012:launch-template/lt-1".into())
        );
        assert_eq!(live.attributes["defaultVersion"], Value::Int(1));
    }
}
