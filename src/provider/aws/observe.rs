//! Reading owned EC2 resources, batched, and normalising them.
//!
//! Each type is read with one Describe call sequence filtered by the
//! environment's tag (paginated where EC2 paginates); instances add one
//! DescribeVolumes sequence for all their root volumes. The same functions
//! read a single resource by id (an extra id filter), which apply and health
//! use. The SDK structures are then turned into the spec shape of
//! CONTRACTS.md, so that a desired spec and an observed one compare field by
//! field.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    Address, Filter, Instance, InternetGateway, IpPermission, KeyPairInfo, RouteTable,
    SecurityGroup, Subnet, Tag, Volume, Vpc,
};

use super::calls::{sdk, ApiError};
use super::model::{self, RuleAtom, Source};
use super::AwsProvider;
use crate::provider::{labels, Claim, Live, Owner, ResourceId};
use crate::value::{Map, Value};

/// One observed resource as EC2 described it.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // short-lived, one per observed resource
pub enum Raw {
    Vpc(Vpc),
    Subnet(Subnet),
    InternetGateway(InternetGateway),
    RouteTable(RouteTable),
    SecurityGroup(SecurityGroup),
    KeyPair(KeyPairInfo),
    Instance(Box<Instance>, Option<Volume>),
    Eip(Address),
}

/// Filter of one name and values.
pub fn filter(name: &str, values: &[&str]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

/// The Describe filter naming one resource of `kind` by id.
pub fn id_filter(kind: &str, id: &str) -> Filter {
    let name = match kind {
        "vpc" => "vpc-id",
        "subnet" => "subnet-id",
        "internet_gateway" => "internet-gateway-id",
        "route_table" => "route-table-id",
        "security_group" => "group-id",
        "key_pair" => "key-pair-id",
        "instance" => "instance-id",
        _ => "allocation-id",
    };
    filter(name, &[id])
}

const LIVE_INSTANCE_STATES: &[&str] = &["pending", "running", "stopping", "stopped"];

impl AwsProvider {
    /// Owned resources of `kind`, narrowed by `extra` filters. One call
    /// sequence (two for instances: their root volumes in one batch).
    pub(super) async fn list(&self, kind: &str, extra: Vec<Filter>) -> Result<Vec<Raw>, ApiError> {
        let mut filters = vec![filter(
            &format!("tag:{}", model::TAG_ENVIRONMENT),
            &[&self.owner.environment],
        )];
        filters.extend(extra);
        let p = &self.policy;
        let c = &self.client;
        let f = || Some(filters.clone());
        Ok(match kind {
            "vpc" => {
                p.run("DescribeVpcs", false, || async {
                    let pages = sdk(c
                        .describe_vpcs()
                        .set_filters(f())
                        .into_paginator()
                        .send()
                        .try_collect()
                        .await)?;
                    Ok(pages
                        .into_iter()
                        .flat_map(|o| o.vpcs.unwrap_or_default())
                        .map(Raw::Vpc)
                        .collect())
                })
                .await?
            }
            "subnet" => {
                p.run("DescribeSubnets", false, || async {
                    let pages = sdk(c
                        .describe_subnets()
                        .set_filters(f())
                        .into_paginator()
                        .send()
                        .try_collect()
                        .await)?;
                    Ok(pages
                        .into_iter()
                        .flat_map(|o| o.subnets.unwrap_or_default())
                        .map(Raw::Subnet)
                        .collect())
                })
                .await?
            }
            "internet_gateway" => {
                p.run("DescribeInternetGateways", false, || async {
                    let pages = sdk(c
                        .describe_internet_gateways()
                        .set_filters(f())
                        .into_paginator()
                        .send()
                        .try_collect()
                        .await)?;
                    Ok(pages
                        .into_iter()
                        .flat_map(|o| o.internet_gateways.unwrap_or_default())
                        .map(Raw::InternetGateway)
                        .collect())
                })
                .await?
            }
            "route_table" => {
                p.run("DescribeRouteTables", false, || async {
                    let pages = sdk(c
                        .describe_route_tables()
                        .set_filters(f())
                        .into_paginator()
                        .send()
                        .try_collect()
                        .await)?;
                    Ok(pages
                        .into_iter()
                        .flat_map(|o| o.route_tables.unwrap_or_default())
                        .map(Raw::RouteTable)
                        .collect())
                })
                .await?
            }
            "security_group" => {
                p.run("DescribeSecurityGroups", false, || async {
                    let pages = sdk(c
                        .describe_security_groups()
                        .set_filters(f())
                        .into_paginator()
                        .send()
                        .try_collect()
                        .await)?;
                    Ok(pages
                        .into_iter()
                        .flat_map(|o| o.security_groups.unwrap_or_default())
                        .map(Raw::SecurityGroup)
                        .collect())
                })
                .await?
            }
            "key_pair" => {
                p.run("DescribeKeyPairs", false, || async {
                    let o = sdk(c.describe_key_pairs().set_filters(f()).send().await)?;
                    Ok(o.key_pairs
                        .unwrap_or_default()
                        .into_iter()
                        .map(Raw::KeyPair)
                        .collect())
                })
                .await?
            }
            "instance" => self.list_instances(filters).await?,
            "eip" => {
                p.run("DescribeAddresses", false, || async {
                    let o = sdk(c.describe_addresses().set_filters(f()).send().await)?;
                    Ok(o.addresses
                        .unwrap_or_default()
                        .into_iter()
                        .map(Raw::Eip)
                        .collect())
                })
                .await?
            }
            _ => Vec::new(),
        })
    }

    async fn list_instances(&self, mut filters: Vec<Filter>) -> Result<Vec<Raw>, ApiError> {
        filters.push(filter("instance-state-name", LIVE_INSTANCE_STATES));
        let c = &self.client;
        let instances: Vec<Instance> = self
            .policy
            .run("DescribeInstances", false, || async {
                let pages = sdk(c
                    .describe_instances()
                    .set_filters(Some(filters.clone()))
                    .into_paginator()
                    .send()
                    .try_collect()
                    .await)?;
                Ok(pages
                    .into_iter()
                    .flat_map(|o| o.reservations.unwrap_or_default())
                    .flat_map(|r| r.instances.unwrap_or_default())
                    .collect())
            })
            .await?;
        let volumes = self.root_volumes(&instances).await?;
        Ok(instances
            .into_iter()
            .map(|i| {
                let v = root_volume_id(&i).and_then(|id| volumes.get(id).cloned());
                Raw::Instance(Box::new(i), v)
            })
            .collect())
    }

    /// The root volumes of `instances`, in one call sequence per 200 ids.
    async fn root_volumes(
        &self,
        instances: &[Instance],
    ) -> Result<BTreeMap<String, Volume>, ApiError> {
        let ids: Vec<&str> = instances.iter().filter_map(root_volume_id).collect();
        let mut out = BTreeMap::new();
        for chunk in ids.chunks(200) {
            let c = &self.client;
            let vols: Vec<Volume> = self
                .policy
                .run("DescribeVolumes", false, || async {
                    let pages = sdk(c
                        .describe_volumes()
                        .filters(filter("volume-id", chunk))
                        .into_paginator()
                        .send()
                        .try_collect()
                        .await)?;
                    Ok(pages
                        .into_iter()
                        .flat_map(|o| o.volumes.unwrap_or_default())
                        .collect())
                })
                .await?;
            for v in vols {
                if let Some(id) = v.volume_id.clone() {
                    out.insert(id, v);
                }
            }
        }
        Ok(out)
    }
}

fn root_volume_id(i: &Instance) -> Option<&str> {
    let root = i.root_device_name()?;
    i.block_device_mappings()
        .iter()
        .find(|m| m.device_name() == Some(root))
        .and_then(|m| m.ebs()?.volume_id())
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

fn s(v: Option<&str>) -> Value {
    v.map(|s| Value::String(s.to_string()))
        .unwrap_or(Value::Null)
}

fn strings<'a>(items: impl Iterator<Item = &'a str>) -> Value {
    let mut v: Vec<&str> = items.collect();
    v.sort();
    v.dedup();
    Value::List(v.into_iter().map(|s| Value::String(s.into())).collect())
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .filter(|(_, v)| !matches!(v, Value::Null))
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// The VPC DNS attributes tidegate last applied, from their tag (EC2 has no
/// batched read for them).
pub const TAG_VPC_DNS: &str = "tidegate:vpc-dns";

/// Encodes the VPC DNS attributes for [`TAG_VPC_DNS`].
pub fn vpc_dns_tag(support: bool, hostnames: bool) -> String {
    format!("support={support},hostnames={hostnames}")
}

fn vpc_dns(tags: &BTreeMap<String, String>) -> (bool, bool) {
    let t = tags.get(TAG_VPC_DNS).map(String::as_str).unwrap_or("");
    (!t.contains("support=false"), t.contains("hostnames=true"))
}

/// Rule atoms of one direction of a security group.
pub fn permission_atoms(perms: &[IpPermission]) -> Vec<RuleAtom> {
    let mut out = Vec::new();
    for p in perms {
        let protocol = p.ip_protocol().unwrap_or("-1").to_string();
        let all = protocol == "-1";
        let port = |v: Option<i32>| if all { None } else { v.map(i64::from) };
        let (from_port, to_port) = (port(p.from_port()), port(p.to_port()));
        let desc = |d: Option<&str>| d.filter(|d| !d.is_empty()).map(str::to_string);
        for r in p.ip_ranges() {
            if let Some(c) = r.cidr_ip() {
                out.push(RuleAtom {
                    protocol: protocol.clone(),
                    from_port,
                    to_port,
                    source: Source::Cidr(c.into()),
                    description: desc(r.description()),
                });
            }
        }
        for g in p.user_id_group_pairs() {
            if let Some(id) = g.group_id() {
                out.push(RuleAtom {
                    protocol: protocol.clone(),
                    from_port,
                    to_port,
                    source: Source::Group(id.into()),
                    description: desc(g.description()),
                });
            }
        }
    }
    out
}

/// The normalised live state of a raw resource; `None` when it does not
/// carry tidegate's ownership marks.
pub fn to_live(raw: &Raw, region: &str, owner: &Owner) -> Option<Live> {
    let (kind, tags, external_id) = parts(raw);
    let tags = tag_map(tags);
    let legacy = match model::claim(&tags, owner) {
        Claim::Ours => false,
        Claim::Legacy => true,
        Claim::Foreign(_) | Claim::Unmanaged => return None,
    };
    let keep = tags.get(labels::PRUNE).map(String::as_str) == Some("disabled");
    let external_id = external_id?.to_string();
    let mut id = model::id_from_tags(&tags)?;
    if tags.contains_key(model::TAG_DEPOSED) {
        id = ResourceId {
            module: id.module,
            name: format!("{}~deposed~{external_id}", id.name),
        };
    }
    let user_tags = model::user_tags(&tags);
    let (body, attributes) = normalise(raw, &tags, user_tags, &external_id, region);
    Some(
        Live {
            id,
            kind: kind.to_string(),
            external_id,
            body,
            attributes,
        }
        .with_marks(legacy, keep),
    )
}

/// True when the listing alone shows the resource healthy: anything but
/// an instance (whose health needs its status checks) or a VPC or subnet
/// still `pending`.
pub fn healthy_as_listed(raw: &Raw) -> bool {
    let state = |s: Option<&str>| s != Some("pending");
    match raw {
        Raw::Instance(..) => false,
        Raw::Vpc(v) => state(v.state().map(|s| s.as_str())),
        Raw::Subnet(s) => state(s.state().map(|s| s.as_str())),
        _ => true,
    }
}

/// True when the resource was superseded by a replacement.
pub fn is_deposed(raw: &Raw) -> bool {
    parts(raw)
        .1
        .iter()
        .any(|t| t.key() == Some(model::TAG_DEPOSED))
}

/// The kind, tags and EC2 id of a raw resource.
fn parts(raw: &Raw) -> (&'static str, &[Tag], Option<&str>) {
    match raw {
        Raw::Vpc(v) => ("vpc", v.tags(), v.vpc_id()),
        Raw::Subnet(v) => ("subnet", v.tags(), v.subnet_id()),
        Raw::InternetGateway(v) => ("internet_gateway", v.tags(), v.internet_gateway_id()),
        Raw::RouteTable(v) => ("route_table", v.tags(), v.route_table_id()),
        Raw::SecurityGroup(v) => ("security_group", v.tags(), v.group_id()),
        Raw::KeyPair(v) => ("key_pair", v.tags(), v.key_pair_id()),
        Raw::Instance(v, _) => ("instance", v.tags(), v.instance_id()),
        Raw::Eip(v) => ("eip", v.tags(), v.allocation_id()),
    }
}

fn attrs(entries: Vec<(&str, Value)>) -> Map {
    match map(entries) {
        Value::Map(m) => m,
        _ => Map::new(),
    }
}

/// The ARN of an EC2 resource: `arn:<partition>:ec2:<region>:<account>:<type>/<id>`.
pub fn arn(region: &str, account: Option<&str>, resource: &str, id: &str) -> String {
    let partition = if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    };
    let account = account.unwrap_or("000000000000");
    format!("arn:{partition}:ec2:{region}:{account}:{resource}/{id}")
}

fn normalise(
    raw: &Raw,
    tags: &BTreeMap<String, String>,
    user_tags: Value,
    id: &str,
    region: &str,
) -> (Value, Map) {
    let idv = Value::String(id.to_string());
    let fp = |tag: &str| s(tags.get(tag).map(String::as_str));
    match raw {
        Raw::Vpc(v) => {
            let (support, hostnames) = vpc_dns(tags);
            let body = map(vec![
                ("cidrBlock", s(v.cidr_block())),
                ("enableDnsHostnames", Value::Bool(hostnames)),
                ("enableDnsSupport", Value::Bool(support)),
                ("tags", user_tags),
            ]);
            let arn = arn(region, v.owner_id(), "vpc", id);
            let a = attrs(vec![
                ("id", idv),
                ("cidrBlock", s(v.cidr_block())),
                ("arn", Value::String(arn)),
            ]);
            (body, a)
        }
        Raw::Subnet(v) => {
            let body = map(vec![
                ("vpcId", s(v.vpc_id())),
                ("cidrBlock", s(v.cidr_block())),
                ("availabilityZone", s(v.availability_zone())),
                (
                    "mapPublicIpOnLaunch",
                    Value::Bool(v.map_public_ip_on_launch().unwrap_or(false)),
                ),
                ("tags", user_tags),
            ]);
            let subnet_arn = v
                .subnet_arn()
                .map(str::to_string)
                .unwrap_or_else(|| arn(region, v.owner_id(), "subnet", id));
            let a = attrs(vec![
                ("id", idv),
                ("availabilityZone", s(v.availability_zone())),
                ("cidrBlock", s(v.cidr_block())),
                ("arn", Value::String(subnet_arn)),
            ]);
            (body, a)
        }
        Raw::InternetGateway(v) => {
            let vpc = v.attachments().iter().find_map(|a| a.vpc_id());
            let body = map(vec![("vpcId", s(vpc)), ("tags", user_tags)]);
            (body, attrs(vec![("id", idv)]))
        }
        Raw::RouteTable(v) => {
            let mut routes: Vec<(String, String)> = v
                .routes()
                .iter()
                .filter(|r| r.gateway_id() != Some("local"))
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
            let subnets = strings(
                v.associations()
                    .iter()
                    .filter(|a| a.main() != Some(true))
                    .filter_map(|a| a.subnet_id()),
            );
            let body = map(vec![
                ("vpcId", s(v.vpc_id())),
                ("routes", routes),
                ("subnetIds", subnets),
                ("tags", user_tags),
            ]);
            (body, attrs(vec![("id", idv)]))
        }
        Raw::SecurityGroup(v) => {
            let atoms =
                |p: &[IpPermission]| model::rules_value(&permission_atoms(p).into_iter().collect());
            let body = map(vec![
                ("vpcId", s(v.vpc_id())),
                ("groupName", s(v.group_name())),
                ("description", s(v.description())),
                ("ingress", atoms(v.ip_permissions())),
                ("egress", atoms(v.ip_permissions_egress())),
                ("tags", user_tags),
            ]);
            (
                body,
                attrs(vec![("id", idv), ("groupName", s(v.group_name()))]),
            )
        }
        Raw::KeyPair(v) => {
            let body = map(vec![
                ("keyName", s(v.key_name())),
                ("publicKey", fp(model::TAG_PUBLIC_KEY)),
                ("tags", user_tags),
            ]);
            let a = attrs(vec![
                ("id", idv),
                ("keyName", s(v.key_name())),
                ("fingerprint", s(v.key_fingerprint())),
            ]);
            (body, a)
        }
        Raw::Instance(i, vol) => {
            normalise_instance(i, vol.as_ref(), fp(model::TAG_USER_DATA), user_tags, idv)
        }
        Raw::Eip(v) => {
            let body = map(vec![
                ("instanceId", s(v.instance_id())),
                ("tags", user_tags),
            ]);
            (
                body,
                attrs(vec![("id", idv), ("publicIp", s(v.public_ip()))]),
            )
        }
    }
}

fn normalise_instance(
    i: &Instance,
    vol: Option<&Volume>,
    user_data: Value,
    user_tags: Value,
    idv: Value,
) -> (Value, Map) {
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
    let root = vol.map(|v| {
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
    let body = map(vec![
        ("ami", s(i.image_id())),
        ("instanceType", s(i.instance_type().map(|t| t.as_str()))),
        ("subnetId", s(i.subnet_id())),
        (
            "securityGroupIds",
            strings(i.security_groups().iter().filter_map(|g| g.group_id())),
        ),
        ("keyName", s(i.key_name())),
        ("userData", user_data),
        ("metadata", metadata.unwrap_or_default()),
        ("rootVolume", root.unwrap_or_default()),
        ("privateIp", s(i.private_ip_address())),
        ("tags", user_tags),
    ]);
    let a = attrs(vec![
        ("id", idv),
        ("privateIp", s(i.private_ip_address())),
        ("publicIp", s(i.public_ip_address())),
        ("privateDnsName", s(i.private_dns_name())),
    ]);
    (body, a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::{IpRange, UserIdGroupPair};

    fn tag(k: &str, v: &str) -> Tag {
        Tag::builder().key(k).value(v).build()
    }

    fn owner() -> Owner {
        Owner::new("shop", "dev")
    }

    fn owned_tags() -> Vec<Tag> {
        vec![
            tag("managed-by", "tidegate"),
            tag("tidegate:project", "shop"),
            tag("tidegate:environment", "dev"),
            tag("tidegate:module", "network"),
            tag("tidegate:resource", "network.web"),
            tag("owner", "team"),
        ]
    }

    #[test]
    fn arns_carry_partition_region_account_and_type() {
        assert_eq!(
            arn("eu-west-1", Some("123456789012"), "vpc", "vpc-1"),
            "arn:aws:ec2:eu-west-1:123456789012:vpc/vpc-1"
        );
        assert_eq!(
            arn("cn-north-1", Some("1"), "subnet", "subnet-2"),
            "arn:aws-cn:ec2:cn-north-1:1:subnet/subnet-2"
        );
        assert!(
            arn("us-gov-west-1", None, "vpc", "v").starts_with("arn:aws-us-gov:ec2:us-gov-west-1:")
        );
    }

    #[test]
    fn security_groups_normalise_into_the_spec_shape() {
        let sg = SecurityGroup::builder()
            .group_id("sg-1")
            .group_name("web")
            .description("d")
            .vpc_id("vpc-1")
            .set_tags(Some(owned_tags()))
            .ip_permissions(
                IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(443)
                    .to_port(443)
                    .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                    .user_id_group_pairs(UserIdGroupPair::builder().group_id("sg-2").build())
                    .build(),
            )
            .ip_permissions_egress(
                IpPermission::builder()
                    .ip_protocol("-1")
                    .from_port(-1)
                    .to_port(-1)
                    .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                    .build(),
            )
            .build();
        let live = to_live(&Raw::SecurityGroup(sg), "eu-west-1", &owner()).unwrap();
        assert_eq!(live.id.to_string(), "network.web");
        assert_eq!(
            live.body.to_json_masked(),
            serde_json::json!({
                "vpcId": "vpc-1", "groupName": "web", "description": "d",
                "ingress": [{"protocol": "tcp", "fromPort": 443, "toPort": 443,
                             "cidrBlocks": ["0.0.0.0/0"], "sourceSecurityGroupIds": ["sg-2"]}],
                "egress": [{"protocol": "-1", "cidrBlocks": ["0.0.0.0/0"]}],
                "tags": {"owner": "team"}
            })
        );
        assert_eq!(live.attributes["groupName"], Value::String("web".into()));
    }

    #[test]
    fn unowned_resources_are_ignored_and_deposed_ones_renamed() {
        let vpc = Vpc::builder()
            .vpc_id("vpc-1")
            .tags(tag("tidegate:environment", "dev"))
            .build();
        assert!(to_live(&Raw::Vpc(vpc), "eu-west-1", &owner()).is_none());
        let mut tags = owned_tags();
        tags.push(tag(model::TAG_DEPOSED, "true"));
        let vpc = Vpc::builder()
            .vpc_id("vpc-1")
            .cidr_block("10.0.0.0/16")
            .set_tags(Some(tags))
            .build();
        let raw = Raw::Vpc(vpc);
        assert!(is_deposed(&raw));
        let live = to_live(&raw, "eu-west-1", &owner()).unwrap();
        assert_eq!(live.id.name, "web~deposed~vpc-1");
        assert!(!live.is_legacy());
    }

    #[test]
    fn legacy_tags_are_adopted_and_other_projects_ignored() {
        let vpc = |tags: Vec<Tag>| {
            Raw::Vpc(
                Vpc::builder()
                    .vpc_id("vpc-1")
                    .cidr_block("10.0.0.0/16")
                    .set_tags(Some(tags))
                    .build(),
            )
        };
        let legacy: Vec<Tag> = owned_tags()
            .into_iter()
            .filter(|t| t.key() != Some("tidegate:project"))
            .collect();
        let live = to_live(&vpc(legacy), "eu-west-1", &owner()).unwrap();
        assert!(live.is_legacy() && !live.prune_disabled());
        let mut other = owned_tags();
        other[1] = tag("tidegate:project", "blog");
        assert!(to_live(&vpc(other), "eu-west-1", &owner()).is_none());
        let mut kept = owned_tags();
        kept.push(tag("tidegate.dev/prune", "disabled"));
        let live = to_live(&vpc(kept), "eu-west-1", &owner()).unwrap();
        assert!(live.prune_disabled() && !live.is_legacy());
        assert_eq!(
            live.body.get_path("enableDnsSupport"),
            Some(&Value::Bool(true))
        );
    }
}
