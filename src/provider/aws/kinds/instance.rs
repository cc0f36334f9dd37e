//! `instance`: an EC2 instance with its root volume, IMDS options and user
//! data.
//!
//! # Guarantees
//! - RunInstances carries a ClientToken; a token that names an instance
//!   terminated since (a drift recreate of an unchanged spec) is salted.
//! - Secret user data reaches EC2 only in RunInstances and is compared
//!   with the instance's own (DescribeInstanceAttribute), never through a
//!   stored fingerprint: anyone who can read tags could test guesses
//!   against one. Plain user data is compared through a keyed fingerprint
//!   tag.
//! - Observe skips instances shutting down or terminated, and reads the
//!   root volumes of all the others in one DescribeVolumes sequence.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    AttributeValue, BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState,
    Instance as Ec2Instance, InstanceAttributeName, InstanceMetadataOptionsRequest,
    InstanceStateName, InstanceType, ResourceType, SummaryStatus, Tag, Volume, VolumeType,
};
use base64::Engine;

use crate::provider::aws::calls::{sdk, ApiError};
use crate::provider::aws::kind::{Created, Ec2Kind, KindSpec, SecretView, Seen, Update};
use crate::provider::aws::schema::{f, fixed, req, Field, Ty, TAGS};
use crate::provider::aws::sdk::{
    attrs, bool_at, describe, filter, int, map, no_sdk_retries, s, str_at, string_at, strings,
    strs, Ec2,
};
use crate::provider::aws::tags::{Fingerprinted, TAG_USER_DATA};
use crate::provider::aws::values::{address, in_range};
use crate::provider::{Desired, Health, Live, Problem, Result};
use crate::sensitive::Sensitive;
use crate::value::{Map, Value};

/// The `instance` kind.
#[derive(Clone, Copy)]
pub(super) struct Instance;

/// An instance as observe lists it: with its root volume.
pub(super) struct WithVolume {
    instance: Ec2Instance,
    root: Option<Volume>,
}

const METADATA: &[Field] = &[
    f("httpTokens", Ty::Enum(&["required", "optional"])),
    f("httpPutResponseHopLimit", Ty::Int),
];

const ROOT_VOLUME: &[Field] = &[
    f("sizeGiB", Ty::Int),
    f("encrypted", Ty::Bool),
    f(
        "volumeType",
        Ty::Enum(&["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"]),
    ),
];

const FIELDS: &[Field] = &[
    req(fixed(f("ami", Ty::Str))),
    req(f("instanceType", Ty::Str)),
    req(fixed(f("subnetId", Ty::Str))),
    f("securityGroupIds", Ty::StrSet),
    fixed(f("keyName", Ty::Str)),
    fixed(f("userData", Ty::SecretStr)),
    f("metadata", Ty::Object(METADATA)),
    fixed(f("rootVolume", Ty::Object(ROOT_VOLUME))),
    fixed(f("privateIp", Ty::Str)),
    TAGS,
];

/// `userData`, compared through its fingerprint tag.
const USER_DATA: Fingerprinted = Fingerprinted {
    field: "userData",
    tag: TAG_USER_DATA,
    why: "user data runs only at first boot",
    material: str::to_string,
};

const FINGERPRINTED: &[Fingerprinted] = &[USER_DATA];

/// States of an instance that observe lists (not shutting down or gone).
const LIVE_STATES: &[&str] = &["pending", "running", "stopping", "stopped"];

impl KindSpec for Instance {
    fn name(&self) -> &'static str {
        "instance"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn attributes(&self) -> &'static [&'static str] {
        &["id", "privateIp", "publicIp", "privateDnsName"]
    }

    /// What it was launched with and into; the route tables of its subnets
    /// stay until it is gone.
    fn deleted_before(&self) -> &'static [&'static str] {
        &["key_pair", "security_group", "subnet", "route_table"]
    }

    fn computed(&self) -> &'static [&'static str] {
        &["privateIp"]
    }

    fn fingerprinted(&self) -> &'static [Fingerprinted] {
        FINGERPRINTED
    }

    fn check_string(&self, field: &str, s: &str, path: &str, out: &mut Vec<Problem>) {
        if field == "privateIp" {
            address(field, s, path, out);
        }
    }

    fn check_int(&self, field: &str, i: i64, path: &str, out: &mut Vec<Problem>) {
        match field {
            "httpPutResponseHopLimit" => in_range(field, i, 1..=64, "hops", path, out),
            "sizeGiB" => in_range(field, i, 1..=16384, "GiB", path, out),
            _ => {}
        }
    }
}

fn root_volume_id(i: &Ec2Instance) -> Option<&str> {
    let root = i.root_device_name()?;
    i.block_device_mappings()
        .iter()
        .find(|m| m.device_name() == Some(root))
        .and_then(|m| m.ebs()?.volume_id())
}

/// The root volumes of `instances`, in one call sequence per 200 ids.
async fn root_volumes(
    p: &Ec2,
    instances: &[Ec2Instance],
) -> Result<BTreeMap<String, Volume>, ApiError> {
    let ids: Vec<&str> = instances.iter().filter_map(root_volume_id).collect();
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(200) {
        let pages = describe(p, "DescribeVolumes", || {
            p.client
                .describe_volumes()
                .filters(filter("volume-id", chunk))
                .into_paginator()
                .send()
                .try_collect()
        })
        .await?;
        for v in pages
            .into_iter()
            .flat_map(|o| o.volumes.unwrap_or_default())
        {
            if let Some(id) = v.volume_id.clone() {
                out.insert(id, v);
            }
        }
    }
    Ok(out)
}

fn metadata_request(d: &Value) -> InstanceMetadataOptionsRequest {
    InstanceMetadataOptionsRequest::builder()
        .set_http_tokens(str_at(d, "metadata.httpTokens").map(HttpTokensState::from))
        .set_http_put_response_hop_limit(int(d.get_path("metadata.httpPutResponseHopLimit")))
        .build()
}

async fn root_device_name(p: &Ec2, ami: &str) -> Result<String, ApiError> {
    let o = p
        .send("DescribeImages", false, || async {
            sdk(p.client.describe_images().image_ids(ami).send().await)
        })
        .await?;
    Ok(o.images()
        .first()
        .and_then(|i| i.root_device_name())
        .unwrap_or("/dev/xvda")
        .to_string())
}

/// Changes the instance type: stop, modify, start.
async fn resize(p: &Ec2, id: &str, instance_type: &str) -> Result<()> {
    p.call("StopInstances", || async {
        sdk(p.client.stop_instances().instance_ids(id).send().await)
    })
    .await?;
    wait_instance(p, id, &[InstanceStateName::Stopped]).await?;
    let v = AttributeValue::builder().value(instance_type).build();
    p.call("ModifyInstanceAttribute", || async {
        sdk(p
            .client
            .modify_instance_attribute()
            .instance_id(id)
            .instance_type(v.clone())
            .send()
            .await)
    })
    .await?;
    p.call("StartInstances", || async {
        sdk(p.client.start_instances().instance_ids(id).send().await)
    })
    .await
    .map(|_| ())
}

/// Waits until the instance is in one of `states` (gone counts as
/// terminated).
async fn wait_instance(p: &Ec2, id: &str, states: &[InstanceStateName]) -> Result<()> {
    let deadline = tokio::time::Instant::now() + p.policy.settle;
    loop {
        let o = p
            .call("DescribeInstances", || async {
                sdk(p
                    .client
                    .describe_instances()
                    .filters(filter("instance-id", &[id]))
                    .send()
                    .await)
            })
            .await?;
        let state = o
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find_map(|i| i.state().and_then(|s| s.name()).cloned());
        let state = state.unwrap_or(InstanceStateName::Terminated);
        if states.contains(&state) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError {
                code: Some("StateTimeout".into()),
                message: format!(
                    "instance {id} stayed {} for {:?}",
                    state.as_str(),
                    p.policy.settle
                ),
                transport: false,
                unreached: None,
            }
            .into_error("wait instance"));
        }
        tokio::time::sleep(p.policy.poll).await;
    }
}

/// Running with passing status checks is healthy.
async fn status_checks(p: &Ec2, i: &Ec2Instance) -> Result<Health> {
    let state = i
        .state()
        .and_then(|s| s.name())
        .cloned()
        .unwrap_or(InstanceStateName::Pending);
    match state {
        InstanceStateName::Running => {}
        InstanceStateName::Pending => return Ok(Health::Progressing("instance pending".into())),
        other => return Ok(Health::Failed(format!("instance is {}", other.as_str()))),
    }
    let id = i.instance_id().unwrap_or_default();
    let o = p
        .call("DescribeInstanceStatus", || async {
            sdk(p
                .client
                .describe_instance_status()
                .instance_ids(id)
                .send()
                .await)
        })
        .await?;
    let statuses: Vec<Option<&SummaryStatus>> = o
        .instance_statuses()
        .iter()
        .flat_map(|s| {
            [
                s.instance_status().and_then(|x| x.status()),
                s.system_status().and_then(|x| x.status()),
            ]
        })
        .collect();
    Ok(
        if statuses
            .iter()
            .any(|s| matches!(s, Some(SummaryStatus::Impaired)))
        {
            Health::Failed("status checks impaired".into())
        } else if statuses
            .iter()
            .any(|s| matches!(s, Some(SummaryStatus::Initializing)))
        {
            Health::Progressing("status checks initializing".into())
        } else {
            Health::Healthy
        },
    )
}

#[async_trait::async_trait]
impl Ec2Kind for Instance {
    type Item = WithVolume;

    fn id_filter(&self) -> &'static str {
        "instance-id"
    }

    async fn describe(
        &self,
        p: &Ec2,
        mut filters: Vec<Filter>,
    ) -> Result<Vec<Self::Item>, ApiError> {
        filters.push(filter("instance-state-name", LIVE_STATES));
        let pages = describe(p, "DescribeInstances", || {
            p.client
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .into_paginator()
                .send()
                .try_collect()
        })
        .await?;
        let instances: Vec<Ec2Instance> = pages
            .into_iter()
            .flat_map(|o| o.reservations.unwrap_or_default())
            .flat_map(|r| r.instances.unwrap_or_default())
            .collect();
        let volumes = root_volumes(p, &instances).await?;
        Ok(instances
            .into_iter()
            .map(|instance| {
                let root = root_volume_id(&instance).and_then(|id| volumes.get(id).cloned());
                WithVolume { instance, root }
            })
            .collect())
    }

    fn id<'a>(&self, l: &'a Self::Item) -> Option<&'a str> {
        l.instance.instance_id()
    }

    fn tags<'a>(&self, l: &'a Self::Item) -> &'a [Tag] {
        l.instance.tags()
    }

    fn normalise(&self, l: &Self::Item, seen: Seen<'_>) -> (Value, Map) {
        let i = &l.instance;
        let metadata = i.metadata_options().map(|m| {
            map(vec![
                ("httpTokens", s(m.http_tokens().map(|t| t.as_str()))),
                (
                    "httpPutResponseHopLimit",
                    m.http_put_response_hop_limit()
                        .map(|h| Value::Int(h.into()))
                        .unwrap_or_default(),
                ),
            ])
        });
        let root = l.root.as_ref().map(|v| {
            map(vec![
                (
                    "sizeGiB",
                    v.size().map(|n| Value::Int(n.into())).unwrap_or_default(),
                ),
                (
                    "encrypted",
                    v.encrypted().map(Value::Bool).unwrap_or_default(),
                ),
                ("volumeType", s(v.volume_type().map(|t| t.as_str()))),
            ])
        });
        let attributes = attrs(vec![
            ("id", seen.id_value()),
            ("privateIp", s(i.private_ip_address())),
            ("publicIp", s(i.public_ip_address())),
            ("privateDnsName", s(i.private_dns_name())),
        ]);
        let body = map(vec![
            ("ami", s(i.image_id())),
            ("instanceType", s(i.instance_type().map(|t| t.as_str()))),
            ("subnetId", s(i.subnet_id())),
            (
                "securityGroupIds",
                strings(i.security_groups().iter().filter_map(|g| g.group_id())),
            ),
            ("keyName", s(i.key_name())),
            ("userData", seen.tag(USER_DATA.tag)),
            ("metadata", metadata.unwrap_or_default()),
            ("rootVolume", root.unwrap_or_default()),
            ("privateIp", s(i.private_ip_address())),
            ("tags", seen.user_tags),
        ]);
        (body, attributes)
    }

    fn listed_health(&self, _l: &Self::Item) -> Option<Health> {
        None
    }

    async fn health(&self, p: &Ec2, l: &Self::Item) -> Result<Health> {
        status_checks(p, &l.instance).await
    }

    async fn create(
        &self,
        p: &Ec2,
        desired: &Desired,
        d: &Value,
        token: &str,
    ) -> Result<Created, ApiError> {
        let ami = str_at(d, "ami").unwrap_or_default();
        let user_data = d.get_path("userData");
        let mut extra = Vec::new();
        // Plain user data only: a stored fingerprint of a secret would let
        // anyone who reads tags test guesses of it.
        if let Some(fp) = user_data
            .filter(|u| !matches!(u, Value::Sensitive(_)))
            .and_then(|u| USER_DATA.of(u, &p.key))
        {
            extra.push((USER_DATA.tag.to_string(), fp));
        }
        let mut req = p
            .client
            .run_instances()
            .image_id(ami)
            .instance_type(InstanceType::from(
                str_at(d, "instanceType").unwrap_or_default(),
            ))
            .min_count(1)
            .max_count(1)
            .set_subnet_id(string_at(d, "subnetId"))
            .set_security_group_ids(Some(strs(d, "securityGroupIds")).filter(|v| !v.is_empty()))
            .set_key_name(string_at(d, "keyName"))
            .set_private_ip_address(string_at(d, "privateIp"))
            .client_token(token)
            .metadata_options(metadata_request(d))
            .tag_specifications(p.tag_spec(ResourceType::Instance, desired, d, extra))
            .tag_specifications(p.tag_spec(ResourceType::Volume, desired, d, vec![]));
        if let Some(root) = d.get_path("rootVolume") {
            let ebs = EbsBlockDevice::builder()
                .set_volume_size(int(root.get_path("sizeGiB")))
                .set_encrypted(bool_at(root, "encrypted"))
                .set_volume_type(str_at(root, "volumeType").map(VolumeType::from))
                .delete_on_termination(true)
                .build();
            let device = root_device_name(p, ami).await?;
            req = req.block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(device)
                    .ebs(ebs)
                    .build(),
            );
        }
        let encoded = match user_data {
            Some(Value::Sensitive(s)) => {
                Some(base64::engine::general_purpose::STANDARD.encode(s.expose()))
            }
            Some(Value::String(s)) => Some(base64::engine::general_purpose::STANDARD.encode(s)),
            _ => None,
        };
        let o = sdk(req
            .set_user_data(encoded)
            .customize()
            .config_override(no_sdk_retries())
            .send()
            .await)?;
        let i = o.instances().first().ok_or_else(|| ApiError {
            code: None,
            message: "RunInstances returned no instance".into(),
            transport: false,
            unreached: None,
        })?;
        let id = i.instance_id().unwrap_or_default().to_string();
        let gone = matches!(
            i.state().and_then(|s| s.name()),
            Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown)
        );
        Ok(if gone {
            Created::Stale(id)
        } else {
            Created::Id(id)
        })
    }

    async fn update(&self, p: &Ec2, u: &Update<'_>, _l: &Self::Item) -> Result<()> {
        let id = u.id;
        for field in &u.fields {
            match *field {
                "instanceType" => {
                    resize(p, id, str_at(u.d, field).unwrap_or_default()).await?;
                }
                "securityGroupIds" => {
                    let groups = strs(u.d, field);
                    p.call("ModifyInstanceAttribute", || async {
                        sdk(p
                            .client
                            .modify_instance_attribute()
                            .instance_id(id)
                            .set_groups(Some(groups.clone()))
                            .send()
                            .await)
                    })
                    .await?;
                }
                "metadata" => {
                    let m = u.d.get_path("metadata").cloned().unwrap_or_default();
                    p.call("ModifyInstanceMetadataOptions", || async {
                        sdk(p
                            .client
                            .modify_instance_metadata_options()
                            .instance_id(id)
                            .set_http_tokens(str_at(&m, "httpTokens").map(HttpTokensState::from))
                            .set_http_put_response_hop_limit(int(
                                m.get_path("httpPutResponseHopLimit")
                            ))
                            .send()
                            .await)
                    })
                    .await?;
                }
                other => return Err(u.unchangeable(other)),
            }
        }
        Ok(())
    }

    async fn delete(&self, p: &Ec2, id: &str, _l: &Self::Item) -> Result<(), ApiError> {
        p.send("TerminateInstances", false, || async {
            sdk(p.client.terminate_instances().instance_ids(id).send().await).map(|_| ())
        })
        .await
    }

    async fn wait_deleted(&self, p: &Ec2, id: &str) -> Result<()> {
        wait_instance(p, id, &[InstanceStateName::Terminated]).await
    }

    /// Secret user data, read back with DescribeInstanceAttribute (one call
    /// per existing instance whose desired user data is secret): `live` with
    /// its `userData` the instance's own (sensitive: compared in constant
    /// time, never shown), and the fingerprint tag an earlier version stored
    /// of it, if the instance still carries one.
    async fn read_secrets(&self, p: &Ec2, d: &Value, live: &Live) -> Result<Option<SecretView>> {
        let Some(Value::Sensitive(_)) = d.get_path("userData") else {
            return Ok(None);
        };
        if matches!(live.body.get_path("userData"), Some(Value::Sensitive(_))) {
            return Ok(None);
        }
        let id = live.external_id.as_str();
        let out = p
            .call("DescribeInstanceAttribute", || async {
                sdk(p
                    .client
                    .describe_instance_attribute()
                    .instance_id(id)
                    .attribute(InstanceAttributeName::UserData)
                    .send()
                    .await)
            })
            .await?;
        let have = out
            .user_data()
            .and_then(|v| v.value())
            .map(|b64| {
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        let stored = live
            .body
            .get_path("userData")
            .is_some_and(|v| !matches!(v, Value::Null));
        let mut seen = live.clone();
        if let Value::Map(m) = &mut seen.body {
            m.insert("userData".into(), Value::Sensitive(Sensitive::new(have)));
        }
        Ok(Some(SecretView {
            live: seen,
            stale_tag: stored.then_some(USER_DATA.tag),
        }))
    }
}
