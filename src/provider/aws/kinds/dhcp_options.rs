//! `dhcp_options`: a DHCP options set and the VPCs that use it. EC2
//! cannot modify an options set: every option is immutable. `vpcIds`
//! changes in place (AssociateDhcpOptions; a VPC taken out of the list is
//! associated with `default`, EC2's own set).
//!
//! # Guarantees
//! - CreateDhcpOptions takes no ClientToken; a create whose answer was
//!   lost is found by its tags before anything is sent again.
//! - Observe is two call sequences, whatever the number of sets: one
//!   DescribeDhcpOptions (paginated), and one DescribeVpcs filtered by the
//!   ids of every listed set (per 200 ids) for their VPCs.
//! - A delete first associates its VPCs with `default` (EC2 refuses to
//!   delete a set in use), then deletes the set; a prune deletes it before
//!   its VPCs.
//!
//! # Caveats
//! - The server lists are sets: tidegate compares and sends them sorted,
//!   so the order in which clients try the servers is not kept.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{DhcpOptions, Filter, NewDhcpConfiguration, ResourceType, Tag};

use crate::provider::aws::calls::{sdk, ApiError};
use crate::provider::aws::kind::{Created, Ec2Kind, KindSpec, Seen, Update};
use crate::provider::aws::schema::{f, fixed, Field, Ty, TAGS};
use crate::provider::aws::sdk::{
    attrs, describe, filter, map, no_sdk_retries, s, strings, strs, Ec2,
};
use crate::provider::aws::tags::TAG_RESOURCE;
use crate::provider::aws::values::{address, problem};
use crate::provider::{Desired, Problem, Result};
use crate::value::{key_path, Map, Value};

/// The `dhcp_options` kind.
#[derive(Clone, Copy)]
pub(super) struct DhcpOptionsSet;

/// An options set as observe lists it: with the VPCs that use it.
pub(super) struct WithVpcs {
    options: DhcpOptions,
    vpcs: Vec<String>,
}

const FIELDS: &[Field] = &[
    fixed(f("domainName", Ty::Str)),
    fixed(f("domainNameServers", Ty::StrSet)),
    fixed(f("ntpServers", Ty::StrSet)),
    fixed(f("netbiosNameServers", Ty::StrSet)),
    fixed(f("netbiosNodeType", Ty::Enum(&["1", "2", "4", "8"]))),
    f("vpcIds", Ty::StrSet),
    TAGS,
];

/// Spec field → EC2's option key, for the options.
const OPTIONS: &[(&str, &str)] = &[
    ("domainName", "domain-name"),
    ("domainNameServers", "domain-name-servers"),
    ("ntpServers", "ntp-servers"),
    ("netbiosNameServers", "netbios-name-servers"),
    ("netbiosNodeType", "netbios-node-type"),
];

/// The most servers EC2 takes in one list.
const MAX_SERVERS: usize = 4;

impl KindSpec for DhcpOptionsSet {
    fn name(&self) -> &'static str {
        "dhcp_options"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn attributes(&self) -> &'static [&'static str] {
        &["id"]
    }

    /// Its VPCs are associated with `default` before it goes.
    fn deleted_before(&self) -> &'static [&'static str] {
        &["vpc"]
    }

    fn check_string(&self, field: &str, s: &str, path: &str, out: &mut Vec<Problem>) {
        match field {
            "domainNameServers" if s == "AmazonProvidedDNS" => {}
            "domainNameServers" | "ntpServers" | "netbiosNameServers" => {
                address(field, s, path, out)
            }
            "domainName" if s.is_empty() || s.contains(char::is_whitespace) => out.push(problem(
                path,
                format!("`domainName` `{s}` is not a domain name"),
                "write one domain name such as ec2.internal or example.com",
            )),
            "vpcIds" if !s.starts_with("vpc-") => out.push(problem(
                path,
                format!("`{s}` is not a VPC id"),
                "write `${resource.<vpc>.id}` or a vpc-... id",
            )),
            _ => {}
        }
    }

    /// At least one option; at most four servers per list.
    fn check_object(&self, _fields: &[Field], m: &Map, path: &str, out: &mut Vec<Problem>) {
        if !path.is_empty() {
            return;
        }
        let given = |k: &str| m.get(k).is_some_and(|v| !matches!(v, Value::Null));
        if !OPTIONS.iter().any(|(field, _)| given(field)) {
            out.push(problem(
                path,
                "a DHCP options set needs at least one option".into(),
                "add `domainName`, `domainNameServers`, `ntpServers`, `netbiosNameServers` or `netbiosNodeType`",
            ));
        }
        for field in ["domainNameServers", "ntpServers", "netbiosNameServers"] {
            if let Some(Value::List(l)) = m.get(field) {
                if l.len() > MAX_SERVERS {
                    out.push(problem(
                        &key_path(path, field),
                        format!(
                            "`{field}` lists {} servers; EC2 takes at most {MAX_SERVERS}",
                            l.len()
                        ),
                        format!("keep at most {MAX_SERVERS} servers"),
                    ));
                }
            }
        }
    }
}

/// The VPCs using each of `ids`, in one DescribeVpcs sequence per 200 ids.
async fn vpcs_of(p: &Ec2, ids: &[&str]) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for chunk in ids.chunks(200) {
        let pages = describe(p, "DescribeVpcs", || {
            p.client
                .describe_vpcs()
                .filters(filter("dhcp-options-id", chunk))
                .into_paginator()
                .send()
                .try_collect()
        })
        .await?;
        for v in pages.into_iter().flat_map(|o| o.vpcs.unwrap_or_default()) {
            if let (Some(set), Some(vpc)) = (v.dhcp_options_id, v.vpc_id) {
                out.entry(set).or_default().push(vpc);
            }
        }
    }
    Ok(out)
}

/// Associates `vpc` with the set `set` (`default`: EC2's own).
async fn associate(p: &Ec2, set: &str, vpc: &str, fresh: bool) -> Result<(), ApiError> {
    p.send("AssociateDhcpOptions", fresh, || async {
        sdk(p
            .client
            .associate_dhcp_options()
            .dhcp_options_id(set)
            .vpc_id(vpc)
            .send()
            .await)
        .map(|_| ())
    })
    .await
}

#[async_trait::async_trait]
impl Ec2Kind for DhcpOptionsSet {
    type Item = WithVpcs;

    fn id_filter(&self) -> &'static str {
        "dhcp-options-id"
    }

    async fn describe(&self, p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Self::Item>, ApiError> {
        let pages = describe(p, "DescribeDhcpOptions", || {
            p.client
                .describe_dhcp_options()
                .set_filters(Some(filters.clone()))
                .into_paginator()
                .send()
                .try_collect()
        })
        .await?;
        let sets: Vec<DhcpOptions> = pages
            .into_iter()
            .flat_map(|o| o.dhcp_options.unwrap_or_default())
            .collect();
        let ids: Vec<&str> = sets.iter().filter_map(|o| o.dhcp_options_id()).collect();
        let mut vpcs = if ids.is_empty() {
            BTreeMap::new()
        } else {
            vpcs_of(p, &ids).await?
        };
        Ok(sets
            .into_iter()
            .map(|options| {
                let vpcs = options
                    .dhcp_options_id()
                    .and_then(|id| vpcs.remove(id))
                    .unwrap_or_default();
                WithVpcs { options, vpcs }
            })
            .collect())
    }

    fn id<'a>(&self, o: &'a Self::Item) -> Option<&'a str> {
        o.options.dhcp_options_id()
    }

    fn tags<'a>(&self, o: &'a Self::Item) -> &'a [Tag] {
        o.options.tags()
    }

    fn normalise(&self, o: &Self::Item, seen: Seen<'_>) -> (Value, Map) {
        let values = |key: &str| -> Vec<&str> {
            o.options
                .dhcp_configurations()
                .iter()
                .filter(|c| c.key() == Some(key))
                .flat_map(|c| c.values())
                .filter_map(|v| v.value())
                .collect()
        };
        let mut entries: Vec<(&str, Value)> = OPTIONS
            .iter()
            .map(|(field, key)| {
                let v = values(key);
                let value = match *field {
                    _ if v.is_empty() => Value::Null,
                    "domainName" | "netbiosNodeType" => s(Some(&v.join(" "))),
                    _ => strings(v.into_iter()),
                };
                (*field, value)
            })
            .collect();
        entries.push(("vpcIds", strings(o.vpcs.iter().map(String::as_str))));
        let attributes = attrs(vec![("id", seen.id_value())]);
        entries.push(("tags", seen.user_tags));
        (map(entries), attributes)
    }

    /// CreateDhcpOptions tagged at creation. A stand-in that drops the
    /// TagSpecifications (moto 5 does) answers without the resource tag:
    /// the set is tagged then, so it is never left unowned.
    async fn create(
        &self,
        p: &Ec2,
        desired: &Desired,
        d: &Value,
        _token: &str,
    ) -> Result<Created, ApiError> {
        let configurations: Vec<NewDhcpConfiguration> = OPTIONS
            .iter()
            .filter_map(|(field, key)| {
                let values = match d.get_path(field)? {
                    Value::String(v) => vec![v.clone()],
                    Value::List(_) => strs(d, field),
                    _ => return None,
                };
                Some(
                    NewDhcpConfiguration::builder()
                        .key(*key)
                        .set_values(Some(values))
                        .build(),
                )
            })
            .collect();
        let spec = p.tag_spec(ResourceType::DhcpOptions, desired, d, vec![]);
        let o = sdk(p
            .client
            .create_dhcp_options()
            .set_dhcp_configurations(Some(configurations))
            .tag_specifications(spec.clone())
            .customize()
            .config_override(no_sdk_retries())
            .send()
            .await)?;
        let set = o.dhcp_options.ok_or_else(|| ApiError {
            code: None,
            message: "EC2 returned no id for the new dhcp_options".into(),
            transport: false,
            unreached: None,
        })?;
        let id = set.dhcp_options_id().unwrap_or_default().to_string();
        let tagged = set.tags().iter().any(|t| t.key() == Some(TAG_RESOURCE));
        if !tagged && !id.is_empty() {
            let t = spec.tags().to_vec();
            p.send("CreateTags", true, || async {
                sdk(p
                    .client
                    .create_tags()
                    .resources(&id)
                    .set_tags(Some(t.clone()))
                    .send()
                    .await)
                .map(|_| ())
            })
            .await?;
        }
        crate::provider::aws::kind::created(self.name(), Some(id).filter(|i| !i.is_empty()))
    }

    async fn update(&self, p: &Ec2, u: &Update<'_>, o: &Self::Item) -> Result<()> {
        for field in &u.fields {
            match *field {
                "vpcIds" => {
                    let want = strs(u.d, field);
                    for vpc in o.vpcs.iter().filter(|v| !want.contains(v)) {
                        associate(p, "default", vpc, true)
                            .await
                            .map_err(|e| e.into_error("AssociateDhcpOptions"))?;
                    }
                    for vpc in want.iter().filter(|v| !o.vpcs.contains(v)) {
                        associate(p, u.id, vpc, true)
                            .await
                            .map_err(|e| e.into_error("AssociateDhcpOptions"))?;
                    }
                }
                other => return Err(u.unchangeable(other)),
            }
        }
        Ok(())
    }

    async fn delete(&self, p: &Ec2, id: &str, o: &Self::Item) -> Result<(), ApiError> {
        for vpc in &o.vpcs {
            associate(p, "default", vpc, false).await?;
        }
        p.send("DeleteDhcpOptions", false, || async {
            sdk(p
                .client
                .delete_dhcp_options()
                .dhcp_options_id(id)
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
    use aws_sdk_ec2::types::{AttributeValue, DhcpConfiguration};

    fn body(j: serde_json::Value) -> Value {
        Value::from_json(j)
    }

    fn messages(b: &Value) -> Vec<String> {
        check("dhcp_options", b)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn an_options_set_needs_an_option_and_servers_are_addresses() {
        assert!(messages(&body(serde_json::json!({
            "domainName": "corp.example", "domainNameServers": ["AmazonProvidedDNS", "10.0.0.2"],
            "ntpServers": ["169.254.169.123"], "netbiosNodeType": "2", "vpcIds": ["vpc-1"]
        })))
        .is_empty());
        assert_eq!(
            messages(&body(serde_json::json!({"vpcIds": ["vpc-1"]}))),
            vec![": a DHCP options set needs at least one option"]
        );
        assert_eq!(
            messages(&body(serde_json::json!({
                "domainName": "a b", "ntpServers": ["10.0.0.300"], "vpcIds": ["v1"],
                "netbiosNameServers": ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]
            }))),
            vec![
                "domainName: `domainName` `a b` is not a domain name",
                "ntpServers[0]: `ntpServers` `10.0.0.300` is not an IPv4 address",
                "vpcIds[0]: `v1` is not a VPC id",
                "netbiosNameServers: `netbiosNameServers` lists 5 servers; EC2 takes at most 4",
            ]
        );
    }

    #[test]
    fn every_option_replaces_and_vpcs_change_in_place() {
        let before = body(serde_json::json!({"domainName": "a.example", "vpcIds": ["vpc-1"]}));
        let after = body(serde_json::json!({"domainName": "b.example", "vpcIds": ["vpc-2"]}));
        assert_eq!(
            model::replace_reasons(&DhcpOptionsSet, &before, &after),
            vec!["domainName changes from a.example to b.example (immutable)"]
        );
        let moved = body(serde_json::json!({"domainName": "a.example", "vpcIds": ["vpc-2"]}));
        assert!(model::replace_reasons(&DhcpOptionsSet, &before, &moved).is_empty());
    }

    #[test]
    fn it_is_deleted_before_its_vpcs() {
        let wave = |k: &str| find(k).map(delete_wave).unwrap();
        assert!(wave("dhcp_options") < wave("vpc"));
    }

    #[test]
    fn it_normalises_into_the_spec_shape_with_its_vpcs() {
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let conf = |k: &str, vs: &[&str]| {
            DhcpConfiguration::builder()
                .key(k)
                .set_values(Some(
                    vs.iter()
                        .map(|v| AttributeValue::builder().value(*v).build())
                        .collect(),
                ))
                .build()
        };
        let options = DhcpOptions::builder()
            .dhcp_options_id("dopt-1")
            .dhcp_configurations(conf("domain-name", &["corp.example"]))
            .dhcp_configurations(conf("domain-name-servers", &["10.0.0.3", "10.0.0.2"]))
            .dhcp_configurations(conf("netbios-node-type", &["2"]))
            .set_tags(Some(vec![
                tag("managed-by", "tidegate"),
                tag("tidegate:project", "shop"),
                tag("tidegate:environment", "dev"),
                tag("tidegate:module", "network"),
                tag("tidegate:resource", "network.dhcp"),
            ]))
            .build();
        let item = WithVpcs {
            options,
            vpcs: vec!["vpc-2".into(), "vpc-1".into()],
        };
        let raw = raw(DhcpOptionsSet, item, "us-east-1").unwrap();
        let live = to_live(&raw, &Owner::new("shop", "dev")).unwrap();
        assert_eq!(live.id.to_string(), "network.dhcp");
        assert_eq!(
            live.body.to_json_masked(),
            serde_json::json!({
                "domainName": "corp.example", "domainNameServers": ["10.0.0.2", "10.0.0.3"],
                "netbiosNodeType": "2", "vpcIds": ["vpc-1", "vpc-2"], "tags": {}
            })
        );
    }
}
