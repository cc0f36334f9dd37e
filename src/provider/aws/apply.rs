//! Changing EC2: create, update in place, replace, delete.
//!
//! # Expected flow
//! A create first searches for the resource's own tags (a create that
//! succeeded just before a crash is adopted, not repeated), then makes the
//! bare resource tagged at creation, waits until EC2 shows it (eventual
//! consistency) and converges the rest (attachments, routes, rules,
//! attributes) through the same update code an in-place change uses.
//! Creates are sent without SDK retries: when an answer is lost, tidegate
//! searches by tag before sending again (with the same ClientToken where the
//! API takes one), so a resource is never made twice even where EC2 or a
//! stand-in ignores the token.

use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, AttributeValue, BlockDeviceMapping, DomainType, EbsBlockDevice,
    HttpTokensState, Instance, InstanceMetadataOptionsRequest, InstanceStateName, InstanceType,
    IpPermission, IpRange, ResourceType, SummaryStatus, Tag, TagSpecification, UserIdGroupPair,
    VolumeType,
};
use base64::Engine;

use super::calls::{sdk, ApiError};
use super::model::{self, RuleAtom, Source};
use super::observe::{self, filter, id_filter, Raw};
use super::AwsProvider;
use crate::provider::{Action, Desired, Error, Health, Live, Result, RetryReason};
use crate::value::Value;

/// Why a replacement must delete the old resource before creating the new
/// one (a name that must stay unique), if it must.
pub fn destroy_first_reason(kind: &str, desired: &Value, live: &Value) -> Option<String> {
    let same = |k: &str| desired.get_path(k).is_some() && desired.get_path(k) == live.get_path(k);
    match kind {
        "security_group" if same("groupName") && same("vpcId") => {
            Some("destroy before create: groupName must stay unique in its VPC".into())
        }
        "key_pair" if same("keyName") => {
            Some("destroy before create: keyName must stay unique in the region".into())
        }
        _ => None,
    }
}

fn no_sdk_retries() -> aws_sdk_ec2::config::Builder {
    aws_sdk_ec2::config::Builder::default().retry_config(RetryConfig::disabled())
}

fn int(v: Option<&Value>) -> Option<i32> {
    match v {
        Some(Value::Int(i)) => i32::try_from(*i).ok(),
        _ => None,
    }
}

fn bool_at(v: &Value, path: &str) -> Option<bool> {
    match v.get_path(path) {
        Some(Value::Bool(b)) => Some(*b),
        _ => None,
    }
}

fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    v.get_path(path).and_then(Value::as_str)
}

fn strs(v: &Value, path: &str) -> Vec<String> {
    match v.get_path(path) {
        Some(Value::List(l)) => l
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn tags(pairs: impl IntoIterator<Item = (String, String)>) -> Vec<Tag> {
    pairs
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn permission(a: &RuleAtom) -> IpPermission {
    let mut b = IpPermission::builder().ip_protocol(&a.protocol);
    if let (Some(f), Some(t)) = (a.from_port, a.to_port) {
        b = b.from_port(f as i32).to_port(t as i32);
    }
    match &a.source {
        Source::Cidr(c) => b.ip_ranges(
            IpRange::builder()
                .cidr_ip(c)
                .set_description(a.description.clone())
                .build(),
        ),
        Source::Group(g) => b.user_id_group_pairs(
            UserIdGroupPair::builder()
                .group_id(g)
                .set_description(a.description.clone())
                .build(),
        ),
    }
    .build()
}

impl AwsProvider {
    async fn call<T, F, Fut>(&self, op: &str, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        self.policy
            .run(op, true, f)
            .await
            .map_err(|e| e.into_error(op))
    }

    /// CreateTags of `t` on resource `id` (adds or overwrites).
    async fn create_tags(&self, id: &str, t: Vec<Tag>) -> Result<()> {
        self.call("CreateTags", || async {
            sdk(self
                .client
                .create_tags()
                .resources(id)
                .set_tags(Some(t.clone()))
                .send()
                .await)
        })
        .await
        .map(|_| ())
    }

    /// DeleteTags of the keys of `t` on resource `id`.
    async fn delete_tags(&self, id: &str, t: Vec<Tag>) -> Result<()> {
        self.call("DeleteTags", || async {
            sdk(self
                .client
                .delete_tags()
                .resources(id)
                .set_tags(Some(t.clone()))
                .send()
                .await)
        })
        .await
        .map(|_| ())
    }

    /// All tags of a new resource: ownership, the user's, and `extra`.
    fn tags_for(&self, desired: &Desired, d: &Value, extra: Vec<(String, String)>) -> Vec<Tag> {
        let user = d
            .get_path("tags")
            .and_then(Value::as_map)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())));
        tags(
            model::owner_tags(&self.owner, &desired.id)
                .into_iter()
                .chain(user)
                .chain(extra),
        )
    }

    fn tag_spec(
        &self,
        rt: ResourceType,
        desired: &Desired,
        d: &Value,
        extra: Vec<(String, String)>,
    ) -> TagSpecification {
        TagSpecification::builder()
            .resource_type(rt)
            .set_tags(Some(self.tags_for(desired, d, extra)))
            .build()
    }

    /// The owned, not deposed resource carrying `desired`'s resource tag.
    async fn find_owned(&self, desired: &Desired) -> Result<Option<Live>> {
        let by_tag = filter(
            &format!("tag:{}", model::TAG_RESOURCE),
            &[&desired.id.to_string()],
        );
        let raws = self
            .list(&desired.kind, vec![by_tag])
            .await
            .map_err(|e| e.into_error(&format!("search {}", desired.kind)))?;
        Ok(raws
            .iter()
            .filter(|r| !observe::is_deposed(r))
            .find_map(|r| observe::to_live(r, &self.region(), &self.owner)))
    }

    /// The owned resource with this id, re-read; `None` when it is gone.
    async fn read(&self, kind: &str, external_id: &str) -> Result<Option<Raw>> {
        let raws = self
            .list(kind, vec![id_filter(kind, external_id)])
            .await
            .map_err(|e| e.into_error(&format!("read {kind}")))?;
        Ok(raws.into_iter().next())
    }

    /// Reads a just-created resource, waiting while EC2 does not show it yet.
    async fn wait_visible(&self, kind: &str, external_id: &str) -> Result<Live> {
        let mut n = 1;
        loop {
            if let Some(live) = self
                .read(kind, external_id)
                .await?
                .as_ref()
                .and_then(|r| observe::to_live(r, &self.region(), &self.owner))
            {
                return Ok(live);
            }
            if n >= self.policy.attempts {
                return Err(ApiError {
                    code: Some("NotVisible".into()),
                    message: format!("{kind} {external_id} was created but EC2 does not list it"),
                    transport: false,
                    unreached: None,
                }
                .into_error(&format!("read {kind}")));
            }
            self.policy.count_reason(RetryReason::NotYetVisible);
            tokio::time::sleep(self.policy.backoff(n)).await;
            n += 1;
        }
    }

    /// Creates the resource (or adopts the one a lost answer or a crash left
    /// behind) and converges it to `d`.
    pub(super) async fn create(&self, desired: &Desired, d: &Value) -> Result<Live> {
        if let Some(found) = self.find_owned(desired).await? {
            tracing::info!(resource = %desired.id, id = %found.external_id, "adopting the resource found by its tags");
            return self.converge(desired, d, &found).await;
        }
        let op = format!("create {}", desired.kind);
        let mut salt = String::new();
        let mut n = 1;
        loop {
            match self.create_call(desired, d, &salt).await {
                Ok(Created::Id(id)) => match self.wait_visible(&desired.kind, &id).await {
                    Ok(live) => {
                        // Its user data is what was just sent: no read-back.
                        let live = with_sent_user_data(live, d);
                        return self.converge(desired, d, &live).await;
                    }
                    // A ClientToken can name a route table deleted since:
                    // EC2 then returns its id again. Create anew, salted.
                    Err(_) if desired.kind == "route_table" && salt.is_empty() => salt = id,
                    Err(e) => return Err(e),
                },
                Ok(Created::Stale(id)) if salt.is_empty() => {
                    tracing::info!(resource = %desired.id, "the ClientToken named a terminated instance; creating anew");
                    salt = id;
                }
                Ok(Created::Stale(id)) => {
                    return Err(ApiError {
                        code: None,
                        message: format!("RunInstances returned terminated {id} twice"),
                        transport: false,
                        unreached: None,
                    }
                    .into_error(&op))
                }
                Err(e) if (e.transport || e.is_throttling()) && n < self.policy.attempts => {
                    tracing::warn!(resource = %desired.id, error = %e, "create failed or its answer was lost; searching before retrying");
                    self.policy.count(&e);
                    tokio::time::sleep(self.policy.backoff(n)).await;
                    if let Some(found) = self.find_owned(desired).await? {
                        return self.converge(desired, d, &found).await;
                    }
                    n += 1;
                }
                Err(e) => return Err(e.into_error(&op)),
            }
        }
    }

    /// Brings an existing resource to `d`: nothing, an update in place, or
    /// a replacement.
    pub(super) async fn converge(&self, desired: &Desired, d: &Value, live: &Live) -> Result<Live> {
        let seen = self.secret_user_data_seen(d, live).await?;
        if let Some((_, true)) = &seen {
            self.delete_user_data_tag(&live.external_id).await?;
        }
        let compared = seen.as_ref().map_or(live, |(l, _)| l);
        let change = model::predict(&desired.kind, d, Some(&compared.body), &self.key);
        match change.action {
            Action::NoOp => Ok(live.clone()),
            Action::Replace { .. } => self.replace(desired, d, live).await,
            _ => self.update(desired, d, live).await,
        }
    }

    /// Secret user data is compared with the instance's own, read back with
    /// DescribeInstanceAttribute (one call per existing instance whose
    /// desired user data is secret), never through a stored fingerprint:
    /// anyone who can read tags could test guesses against one. `None` when
    /// `d` has no secret user data; else `live` with its `userData` the
    /// instance's own (sensitive: compared in constant time by
    /// `model::predict`, never shown) and whether the instance still
    /// carries a fingerprint tag from before (to remove).
    pub(super) async fn secret_user_data_seen(
        &self,
        d: &Value,
        live: &Live,
    ) -> Result<Option<(Live, bool)>> {
        let Some(Value::Sensitive(_)) = d.get_path("userData") else {
            return Ok(None);
        };
        let known = matches!(live.body.get_path("userData"), Some(Value::Sensitive(_)));
        if live.kind != "instance" || known {
            return Ok(None);
        }
        let id = live.external_id.clone();
        let out = self
            .call("DescribeInstanceAttribute", || async {
                sdk(self
                    .client
                    .describe_instance_attribute()
                    .instance_id(&id)
                    .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
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
            m.insert(
                "userData".into(),
                Value::Sensitive(crate::sensitive::Sensitive::new(have)),
            );
        }
        Ok(Some((seen, stored)))
    }

    /// Removes the user-data fingerprint tag an instance got before secret
    /// user data stopped being fingerprinted.
    async fn delete_user_data_tag(&self, id: &str) -> Result<()> {
        let t = vec![Tag::builder().key(model::TAG_USER_DATA).build()];
        self.delete_tags(id, t).await
    }

    async fn replace(&self, desired: &Desired, d: &Value, live: &Live) -> Result<Live> {
        if destroy_first_reason(&desired.kind, d, &live.body).is_some() {
            self.delete_resource(live, true).await?;
            return Box::pin(self.create(desired, d)).await;
        }
        let id = live.external_id.clone();
        let deposed = tags([(model::TAG_DEPOSED.to_string(), "true".to_string())]);
        self.create_tags(&id, deposed).await?;
        let new = Box::pin(self.create(desired, d)).await?;
        if let Err(e) = self.delete_resource(live, false).await {
            tracing::info!(resource = %desired.id, old = %id, error = %e, "the replaced resource is still in use; it stays deposed and is pruned later");
        }
        Ok(new)
    }

    async fn create_call(
        &self,
        desired: &Desired,
        d: &Value,
        salt: &str,
    ) -> Result<Created, ApiError> {
        let c = &self.client;
        let token = model::client_token(
            &self.owner.key(),
            &desired.id,
            d,
            salt,
            &self.key,
            &self.secret_key,
        );
        let s = |k: &str| str_at(d, k).map(str::to_string);
        let id = match desired.kind.as_str() {
            "vpc" => {
                let dns = vec![(
                    observe::TAG_VPC_DNS.to_string(),
                    observe::vpc_dns_tag(true, false),
                )];
                let o = sdk(c
                    .create_vpc()
                    .set_cidr_block(s("cidrBlock"))
                    .tag_specifications(self.tag_spec(ResourceType::Vpc, desired, d, dns))
                    .customize()
                    .config_override(no_sdk_retries())
                    .send()
                    .await)?;
                o.vpc.and_then(|v| v.vpc_id)
            }
            "subnet" => {
                let o = sdk(c
                    .create_subnet()
                    .set_vpc_id(s("vpcId"))
                    .set_cidr_block(s("cidrBlock"))
                    .set_availability_zone(s("availabilityZone"))
                    .tag_specifications(self.tag_spec(ResourceType::Subnet, desired, d, vec![]))
                    .customize()
                    .config_override(no_sdk_retries())
                    .send()
                    .await)?;
                o.subnet.and_then(|v| v.subnet_id)
            }
            "internet_gateway" => {
                let o = sdk(c
                    .create_internet_gateway()
                    .tag_specifications(self.tag_spec(
                        ResourceType::InternetGateway,
                        desired,
                        d,
                        vec![],
                    ))
                    .customize()
                    .config_override(no_sdk_retries())
                    .send()
                    .await)?;
                o.internet_gateway.and_then(|v| v.internet_gateway_id)
            }
            "route_table" => {
                let o = sdk(c
                    .create_route_table()
                    .set_vpc_id(s("vpcId"))
                    .client_token(&token)
                    .tag_specifications(self.tag_spec(ResourceType::RouteTable, desired, d, vec![]))
                    .customize()
                    .config_override(no_sdk_retries())
                    .send()
                    .await)?;
                o.route_table.and_then(|v| v.route_table_id)
            }
            "security_group" => {
                let o = sdk(c
                    .create_security_group()
                    .set_vpc_id(s("vpcId"))
                    .set_group_name(s("groupName"))
                    .set_description(s("description"))
                    .tag_specifications(self.tag_spec(
                        ResourceType::SecurityGroup,
                        desired,
                        d,
                        vec![],
                    ))
                    .customize()
                    .config_override(no_sdk_retries())
                    .send()
                    .await)?;
                o.group_id
            }
            "key_pair" => {
                let key = d.get_path("publicKey").cloned().unwrap_or_default();
                let fp = model::fingerprint("publicKey", &key, &self.key).unwrap_or_default();
                let extra = vec![(model::TAG_PUBLIC_KEY.to_string(), fp)];
                let o = sdk(c
                    .import_key_pair()
                    .set_key_name(s("keyName"))
                    .public_key_material(Blob::new(key.as_str().unwrap_or("").as_bytes()))
                    .tag_specifications(self.tag_spec(ResourceType::KeyPair, desired, d, extra))
                    .customize()
                    .config_override(no_sdk_retries())
                    .send()
                    .await)?;
                o.key_pair_id
            }
            "instance" => return self.run_instance(desired, d, &token).await,
            "eip" => {
                let o = sdk(c
                    .allocate_address()
                    .domain(DomainType::Vpc)
                    .tag_specifications(self.tag_spec(ResourceType::ElasticIp, desired, d, vec![]))
                    .customize()
                    .config_override(no_sdk_retries())
                    .send()
                    .await)?;
                o.allocation_id
            }
            other => {
                return Err(ApiError {
                    code: None,
                    message: format!("unknown resource type {other}"),
                    transport: false,
                    unreached: None,
                })
            }
        };
        id.map(Created::Id).ok_or_else(|| ApiError {
            code: None,
            message: format!("EC2 returned no id for the new {}", desired.kind),
            transport: false,
            unreached: None,
        })
    }

    async fn root_device_name(&self, ami: &str) -> Result<String, ApiError> {
        let o = self
            .policy
            .run("DescribeImages", false, || async {
                sdk(self.client.describe_images().image_ids(ami).send().await)
            })
            .await?;
        Ok(o.images()
            .first()
            .and_then(|i| i.root_device_name())
            .unwrap_or("/dev/xvda")
            .to_string())
    }

    async fn run_instance(
        &self,
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
            .and_then(|u| model::fingerprint("userData", u, &self.key))
        {
            extra.push((model::TAG_USER_DATA.to_string(), fp));
        }
        let mut req = self
            .client
            .run_instances()
            .image_id(ami)
            .instance_type(InstanceType::from(
                str_at(d, "instanceType").unwrap_or_default(),
            ))
            .min_count(1)
            .max_count(1)
            .set_subnet_id(str_at(d, "subnetId").map(str::to_string))
            .set_security_group_ids(Some(strs(d, "securityGroupIds")).filter(|v| !v.is_empty()))
            .set_key_name(str_at(d, "keyName").map(str::to_string))
            .set_private_ip_address(str_at(d, "privateIp").map(str::to_string))
            .client_token(token)
            .metadata_options(metadata_request(d))
            .tag_specifications(self.tag_spec(ResourceType::Instance, desired, d, extra))
            .tag_specifications(self.tag_spec(ResourceType::Volume, desired, d, vec![]));
        if let Some(root) = d.get_path("rootVolume") {
            let ebs = EbsBlockDevice::builder()
                .set_volume_size(int(root.get_path("sizeGiB")))
                .set_encrypted(bool_at(root, "encrypted"))
                .set_volume_type(str_at(root, "volumeType").map(VolumeType::from))
                .delete_on_termination(true)
                .build();
            let device = self.root_device_name(ami).await?;
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

    /// Stamps the full ownership tags (the project among them) on a
    /// resource tagged by a tidegate from before projects.
    pub(super) async fn adopt(&self, live: &Live) -> Result<()> {
        let t = tags(model::owner_tags(&self.owner, &live.id));
        self.create_tags(&live.external_id, t).await
    }

    /// Applies in-place changes, then reads the resource back.
    async fn update(&self, desired: &Desired, d: &Value, live: &Live) -> Result<Live> {
        let Some(raw) = self.read(&live.kind, &live.external_id).await? else {
            return Box::pin(self.create(desired, d)).await;
        };
        let diff = model::diff(&desired.kind, d, &live.body, &self.key);
        let id = live.external_id.as_str();
        for field in &diff.updates {
            match (desired.kind.as_str(), field.as_str()) {
                (_, "tags") => self.update_tags(id, d, &live.body).await?,
                ("vpc", "enableDnsSupport" | "enableDnsHostnames") => {}
                ("subnet", "mapPublicIpOnLaunch") => {
                    let v = AttributeBooleanValue::builder()
                        .set_value(bool_at(d, field))
                        .build();
                    self.call("ModifySubnetAttribute", || async {
                        sdk(self
                            .client
                            .modify_subnet_attribute()
                            .subnet_id(id)
                            .map_public_ip_on_launch(v.clone())
                            .send()
                            .await)
                    })
                    .await?;
                }
                ("internet_gateway", "vpcId") => {
                    self.reattach_gateway(id, &raw, str_at(d, "vpcId")).await?
                }
                ("route_table", "routes") => self.update_routes(id, d, &live.body).await?,
                ("route_table", "subnetIds") => self.update_associations(id, d, &raw).await?,
                ("security_group", "ingress" | "egress") => {
                    self.update_rules(id, field, d, &raw).await?
                }
                ("instance", "instanceType") => {
                    self.resize(id, str_at(d, field).unwrap_or_default())
                        .await?
                }
                ("instance", "securityGroupIds") => {
                    let groups = strs(d, field);
                    self.call("ModifyInstanceAttribute", || async {
                        sdk(self
                            .client
                            .modify_instance_attribute()
                            .instance_id(id)
                            .set_groups(Some(groups.clone()))
                            .send()
                            .await)
                    })
                    .await?;
                }
                ("instance", "metadata") => {
                    let m = d.get_path("metadata").cloned().unwrap_or_default();
                    self.call("ModifyInstanceMetadataOptions", || async {
                        sdk(self
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
                ("eip", "instanceId") => {
                    self.reassociate(id, &raw, str_at(d, "instanceId")).await?
                }
                (kind, field) => {
                    return Err(Error::Invalid {
                        id: desired.id.clone(),
                        origin: desired.origin.clone(),
                        message: format!("tidegate cannot change `{field}` of a {kind} in place"),
                    })
                }
            }
        }
        if desired.kind == "vpc" && diff.updates.iter().any(|f| f.starts_with("enableDns")) {
            self.update_vpc_dns(id, d, &live.body).await?;
        }
        self.wait_visible(&live.kind, id).await
    }

    async fn update_tags(&self, id: &str, d: &Value, live: &Value) -> Result<()> {
        let empty = Value::Map(Default::default());
        let (set, remove) = model::tag_changes(
            d.get_path("tags").unwrap_or(&empty),
            live.get_path("tags").unwrap_or(&empty),
        );
        if !set.is_empty() {
            let t = tags(set);
            self.create_tags(id, t).await?;
        }
        if !remove.is_empty() {
            let t: Vec<Tag> = remove
                .iter()
                .map(|k| Tag::builder().key(k).build())
                .collect();
            self.delete_tags(id, t).await?;
        }
        Ok(())
    }

    async fn update_vpc_dns(&self, id: &str, d: &Value, live: &Value) -> Result<()> {
        let support = bool_at(d, "enableDnsSupport")
            .or(bool_at(live, "enableDnsSupport"))
            .unwrap_or(true);
        let hostnames = bool_at(d, "enableDnsHostnames")
            .or(bool_at(live, "enableDnsHostnames"))
            .unwrap_or(false);
        let flag = |b| AttributeBooleanValue::builder().value(b).build();
        // EC2 takes one attribute per call; support must be on before hostnames.
        self.call("ModifyVpcAttribute", || async {
            sdk(self
                .client
                .modify_vpc_attribute()
                .vpc_id(id)
                .enable_dns_support(flag(support))
                .send()
                .await)
        })
        .await?;
        self.call("ModifyVpcAttribute", || async {
            sdk(self
                .client
                .modify_vpc_attribute()
                .vpc_id(id)
                .enable_dns_hostnames(flag(hostnames))
                .send()
                .await)
        })
        .await?;
        let t = tags([(
            observe::TAG_VPC_DNS.to_string(),
            observe::vpc_dns_tag(support, hostnames),
        )]);
        self.create_tags(id, t).await
    }

    async fn reattach_gateway(&self, id: &str, raw: &Raw, vpc: Option<&str>) -> Result<()> {
        if let Raw::InternetGateway(g) = raw {
            for old in g.attachments().iter().filter_map(|a| a.vpc_id()) {
                self.call("DetachInternetGateway", || async {
                    sdk(self
                        .client
                        .detach_internet_gateway()
                        .internet_gateway_id(id)
                        .vpc_id(old)
                        .send()
                        .await)
                })
                .await?;
            }
        }
        if let Some(vpc) = vpc {
            self.call("AttachInternetGateway", || async {
                sdk(self
                    .client
                    .attach_internet_gateway()
                    .internet_gateway_id(id)
                    .vpc_id(vpc)
                    .send()
                    .await)
            })
            .await?;
        }
        Ok(())
    }

    async fn update_routes(&self, id: &str, d: &Value, live: &Value) -> Result<()> {
        let routes = |v: &Value| -> std::collections::BTreeMap<String, String> {
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
        };
        let (want, have) = (routes(d), routes(live));
        for (dest, gw) in &want {
            match have.get(dest) {
                Some(old) if old == gw => {}
                Some(_) => {
                    self.call("ReplaceRoute", || async {
                        sdk(self
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
                    self.call("CreateRoute", || async {
                        sdk(self
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
            self.call("DeleteRoute", || async {
                sdk(self
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

    async fn update_associations(&self, id: &str, d: &Value, raw: &Raw) -> Result<()> {
        let Raw::RouteTable(rt) = raw else {
            return Ok(());
        };
        let want = strs(d, "subnetIds");
        let have: Vec<(&str, &str)> = rt
            .associations()
            .iter()
            .filter(|a| a.main() != Some(true))
            .filter_map(|a| Some((a.subnet_id()?, a.route_table_association_id()?)))
            .collect();
        for (subnet, assoc) in &have {
            if !want.iter().any(|w| w == subnet) {
                self.call("DisassociateRouteTable", || async {
                    sdk(self
                        .client
                        .disassociate_route_table()
                        .association_id(*assoc)
                        .send()
                        .await)
                })
                .await?;
            }
        }
        for subnet in want.iter().filter(|w| !have.iter().any(|(s, _)| s == w)) {
            self.call("AssociateRouteTable", || async {
                sdk(self
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

    /// Authorizes and revokes rule by rule, so unchanged rules never blink.
    async fn update_rules(&self, id: &str, field: &str, d: &Value, raw: &Raw) -> Result<()> {
        let Raw::SecurityGroup(sg) = raw else {
            return Ok(());
        };
        let want = model::rule_atoms(d.get_path(field).unwrap_or(&Value::Null)).unwrap_or_default();
        let perms = if field == "ingress" {
            sg.ip_permissions()
        } else {
            sg.ip_permissions_egress()
        };
        let have: std::collections::BTreeSet<RuleAtom> =
            observe::permission_atoms(perms).into_iter().collect();
        let revoke: Vec<IpPermission> = have.difference(&want).map(permission).collect();
        let grant: Vec<IpPermission> = want.difference(&have).map(permission).collect();
        let c = &self.client;
        if !revoke.is_empty() {
            if field == "ingress" {
                self.call("RevokeSecurityGroupIngress", || async {
                    sdk(c
                        .revoke_security_group_ingress()
                        .group_id(id)
                        .set_ip_permissions(Some(revoke.clone()))
                        .send()
                        .await)
                })
                .await?;
            } else {
                self.call("RevokeSecurityGroupEgress", || async {
                    sdk(c
                        .revoke_security_group_egress()
                        .group_id(id)
                        .set_ip_permissions(Some(revoke.clone()))
                        .send()
                        .await)
                })
                .await?;
            }
        }
        if !grant.is_empty() {
            if field == "ingress" {
                self.call("AuthorizeSecurityGroupIngress", || async {
                    sdk(c
                        .authorize_security_group_ingress()
                        .group_id(id)
                        .set_ip_permissions(Some(grant.clone()))
                        .send()
                        .await)
                })
                .await?;
            } else {
                self.call("AuthorizeSecurityGroupEgress", || async {
                    sdk(c
                        .authorize_security_group_egress()
                        .group_id(id)
                        .set_ip_permissions(Some(grant.clone()))
                        .send()
                        .await)
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Changes the instance type: stop, modify, start.
    async fn resize(&self, id: &str, instance_type: &str) -> Result<()> {
        self.call("StopInstances", || async {
            sdk(self.client.stop_instances().instance_ids(id).send().await)
        })
        .await?;
        self.wait_instance(id, &[InstanceStateName::Stopped])
            .await?;
        let v = AttributeValue::builder().value(instance_type).build();
        self.call("ModifyInstanceAttribute", || async {
            sdk(self
                .client
                .modify_instance_attribute()
                .instance_id(id)
                .instance_type(v.clone())
                .send()
                .await)
        })
        .await?;
        self.call("StartInstances", || async {
            sdk(self.client.start_instances().instance_ids(id).send().await)
        })
        .await
        .map(|_| ())
    }

    /// Waits until the instance is in one of `states` (gone counts as
    /// terminated).
    async fn wait_instance(&self, id: &str, states: &[InstanceStateName]) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.policy.settle;
        loop {
            let o = self
                .call("DescribeInstances", || async {
                    sdk(self
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
                        self.policy.settle
                    ),
                    transport: false,
                    unreached: None,
                }
                .into_error("wait instance"));
            }
            tokio::time::sleep(self.policy.poll).await;
        }
    }

    async fn reassociate(&self, id: &str, raw: &Raw, instance: Option<&str>) -> Result<()> {
        if let Raw::Eip(a) = raw {
            if let Some(assoc) = a.association_id() {
                self.call("DisassociateAddress", || async {
                    sdk(self
                        .client
                        .disassociate_address()
                        .association_id(assoc)
                        .send()
                        .await)
                })
                .await?;
            }
        }
        if let Some(instance) = instance {
            self.call("AssociateAddress", || async {
                sdk(self
                    .client
                    .associate_address()
                    .allocation_id(id)
                    .instance_id(instance)
                    .send()
                    .await)
            })
            .await?;
        }
        Ok(())
    }

    /// Deletes an owned resource and what EC2 requires first (attachments,
    /// associations). Gone already is success. With `wait`, a resource
    /// still in use is retried until the settle time passes.
    pub(super) async fn delete_resource(&self, live: &Live, wait: bool) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.policy.settle;
        loop {
            let Some(raw) = self.read(&live.kind, &live.external_id).await? else {
                return Ok(());
            };
            match self.delete_raw(&raw, &live.external_id).await {
                Ok(()) => break,
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) if wait && e.is_dependency() && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(id = %live.external_id, error = %e, "still in use; waiting");
                    tokio::time::sleep(self.policy.poll).await;
                }
                Err(e) => return Err(e.into_error(&format!("delete {}", live.kind))),
            }
        }
        if live.kind == "instance" {
            self.wait_instance(&live.external_id, &[InstanceStateName::Terminated])
                .await?;
        }
        Ok(())
    }

    async fn delete_raw(&self, raw: &Raw, id: &str) -> Result<(), ApiError> {
        let p = &self.policy;
        let c = &self.client;
        match raw {
            Raw::Instance(..) => {
                p.run("TerminateInstances", false, || async {
                    sdk(c.terminate_instances().instance_ids(id).send().await).map(|_| ())
                })
                .await
            }
            Raw::Eip(a) => {
                if let Some(assoc) = a.association_id() {
                    p.run("DisassociateAddress", false, || async {
                        sdk(c.disassociate_address().association_id(assoc).send().await).map(|_| ())
                    })
                    .await?;
                }
                p.run("ReleaseAddress", false, || async {
                    sdk(c.release_address().allocation_id(id).send().await).map(|_| ())
                })
                .await
            }
            Raw::InternetGateway(g) => {
                for vpc in g.attachments().iter().filter_map(|a| a.vpc_id()) {
                    p.run("DetachInternetGateway", false, || async {
                        sdk(c
                            .detach_internet_gateway()
                            .internet_gateway_id(id)
                            .vpc_id(vpc)
                            .send()
                            .await)
                        .map(|_| ())
                    })
                    .await?;
                }
                p.run("DeleteInternetGateway", false, || async {
                    sdk(c
                        .delete_internet_gateway()
                        .internet_gateway_id(id)
                        .send()
                        .await)
                    .map(|_| ())
                })
                .await
            }
            Raw::RouteTable(rt) => {
                for a in rt.associations().iter().filter(|a| a.main() != Some(true)) {
                    if let Some(assoc) = a.route_table_association_id() {
                        p.run("DisassociateRouteTable", false, || async {
                            sdk(c
                                .disassociate_route_table()
                                .association_id(assoc)
                                .send()
                                .await)
                            .map(|_| ())
                        })
                        .await?;
                    }
                }
                p.run("DeleteRouteTable", false, || async {
                    sdk(c.delete_route_table().route_table_id(id).send().await).map(|_| ())
                })
                .await
            }
            Raw::SecurityGroup(_) => {
                p.run("DeleteSecurityGroup", false, || async {
                    sdk(c.delete_security_group().group_id(id).send().await).map(|_| ())
                })
                .await
            }
            Raw::Subnet(_) => {
                p.run("DeleteSubnet", false, || async {
                    sdk(c.delete_subnet().subnet_id(id).send().await).map(|_| ())
                })
                .await
            }
            Raw::Vpc(_) => {
                p.run("DeleteVpc", false, || async {
                    sdk(c.delete_vpc().vpc_id(id).send().await).map(|_| ())
                })
                .await
            }
            // By name: the read above proved the name is owned, and some
            // EC2 stand-ins accept only KeyName.
            Raw::KeyPair(k) => {
                p.run("DeleteKeyPair", false, || async {
                    sdk(c
                        .delete_key_pair()
                        .set_key_name(k.key_name().map(str::to_string))
                        .send()
                        .await)
                    .map(|_| ())
                })
                .await
            }
        }
    }

    /// Running with passing status checks is healthy.
    pub(super) async fn instance_health(&self, i: &Instance) -> Result<Health> {
        let state = i
            .state()
            .and_then(|s| s.name())
            .cloned()
            .unwrap_or(InstanceStateName::Pending);
        match state {
            InstanceStateName::Running => {}
            InstanceStateName::Pending => {
                return Ok(Health::Progressing("instance pending".into()))
            }
            other => return Ok(Health::Failed(format!("instance is {}", other.as_str()))),
        }
        let id = i.instance_id().unwrap_or_default();
        let o = self
            .call("DescribeInstanceStatus", || async {
                sdk(self
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
}

/// What a create call produced.
enum Created {
    Id(String),
    /// The ClientToken named an instance that is already terminated.
    Stale(String),
}

fn metadata_request(d: &Value) -> InstanceMetadataOptionsRequest {
    InstanceMetadataOptionsRequest::builder()
        .set_http_tokens(str_at(d, "metadata.httpTokens").map(HttpTokensState::from))
        .set_http_put_response_hop_limit(int(d.get_path("metadata.httpPutResponseHopLimit")))
        .build()
}

/// `live`, a resource just created from `d`, with `d`'s secret user data as
/// its own (RunInstances stored exactly that), so converging it reads
/// nothing back.
fn with_sent_user_data(mut live: Live, d: &Value) -> Live {
    if let (Some(sent @ Value::Sensitive(_)), Value::Map(m)) =
        (d.get_path("userData"), &mut live.body)
    {
        m.insert("userData".into(), sent.clone());
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_must_stay_unique_destroy_first() {
        let d = Value::from_json(
            serde_json::json!({"vpcId": "v", "groupName": "web", "description": "new"}),
        );
        let l = Value::from_json(
            serde_json::json!({"vpcId": "v", "groupName": "web", "description": "old"}),
        );
        assert!(destroy_first_reason("security_group", &d, &l).is_some());
        let d2 = Value::from_json(
            serde_json::json!({"vpcId": "v", "groupName": "web2", "description": "new"}),
        );
        assert!(destroy_first_reason("security_group", &d2, &l).is_none());
        assert!(destroy_first_reason("vpc", &d, &l).is_none());
    }

    #[test]
    fn rule_atoms_become_single_source_permissions() {
        let a = RuleAtom {
            protocol: "-1".into(),
            from_port: None,
            to_port: None,
            source: Source::Group("sg-1".into()),
            description: Some("all".into()),
        };
        let p = permission(&a);
        assert_eq!(p.ip_protocol(), Some("-1"));
        assert_eq!(p.from_port(), None);
        assert_eq!(p.user_id_group_pairs()[0].group_id(), Some("sg-1"));
    }
}
