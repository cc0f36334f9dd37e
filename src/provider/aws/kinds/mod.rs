//! The registry: one file per EC2 resource type, and the one list of
//! them.
//!
//! Each file here implements `KindSpec` and `Ec2Kind` (`kind.rs`) for
//! its type and takes what it needs from the layers below it (`kind.rs`,
//! `sdk.rs`, `schema.rs`, `values.rs`, `tags.rs`), never from the drivers
//! or the provider above. A new type is one file here, its `mod` line and
//! its entry in [`KINDS`].

mod dhcp_options;
mod ebs_volume;
mod egress_only_internet_gateway;
mod eip;
mod instance;
mod internet_gateway;
mod key_pair;
mod launch_template;
mod nat_gateway;
mod network_acl;
// Written and unit-tested, but not in `KINDS`: moto (the EC2 stand-in
// of the tests, and of local setups) answers DescribePlacementGroups with
// an HTTP 500 ("not implemented"), and observe reads every kind, so
// registering it would make every observe against moto fail. The lead
// registers it (`&placement_group::PlacementGroup,` after `nat_gateway`)
// once the tests can run against a stand-in that serves placement groups.
#[allow(dead_code)]
mod placement_group;
mod route;
mod route_table;
mod security_group;
mod security_group_rule;
mod subnet;
mod volume_attachment;
mod vpc;
mod vpc_endpoint;
mod vpc_peering;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use super::kind::Kind;
use crate::provider::Problem;

/// Every kind, in the order a first apply creates them (what the creation
/// order cannot show, references decide).
pub(super) static KINDS: &[&dyn Kind] = &[
    &vpc::Vpc,
    &key_pair::KeyPair,
    &internet_gateway::InternetGateway,
    &subnet::Subnet,
    &security_group::SecurityGroup,
    &route_table::RouteTable,
    &instance::Instance,
    &eip::Eip,
    &nat_gateway::NatGateway,
    &ebs_volume::EbsVolume,
    &volume_attachment::VolumeAttachment,
    &dhcp_options::DhcpOptionsSet,
    &launch_template::LaunchTemplateKind,
    &egress_only_internet_gateway::EgressOnlyInternetGateway,
    &security_group_rule::SecurityGroupRule,
    &network_acl::NetworkAcl,
    &vpc_endpoint::VpcEndpoint,
    &vpc_peering::VpcPeering,
    &route::Route,
];

/// The resource types this provider manages, in creation order.
pub static TYPES: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| KINDS.iter().map(|k| k.name()).collect());

/// The problem of a body whose `type:` names no kind.
pub(super) fn unknown_type(kind: &str) -> Problem {
    Problem::error(
        "",
        format!("unknown AWS resource type `{kind}`"),
        format!("use one of: {}", TYPES.join(", ")),
    )
}

/// The wave a prune deletes resources of `kind` in, lower first: 0 when no
/// kind names it in `KindSpec::deleted_before`, else one after the latest
/// wave of those that do. Within a wave resources are deleted in parallel.
pub(super) fn delete_wave(kind: &dyn Kind) -> u8 {
    static WAVES: LazyLock<BTreeMap<&'static str, u8>> = LazyLock::new(|| {
        KINDS
            .iter()
            .map(|k| (k.name(), wave_of(k.name(), KINDS.len())))
            .collect()
    });
    WAVES.get(kind.name()).copied().unwrap_or(0)
}

/// [`delete_wave`] of `name`, following at most `depth` relations (a cycle
/// in `KindSpec::deleted_before` ends there instead of looping; a test
/// proves there is none).
fn wave_of(name: &str, depth: usize) -> u8 {
    let Some(depth) = depth.checked_sub(1) else {
        return 0;
    };
    KINDS
        .iter()
        .filter(|k| k.deleted_before().contains(&name))
        .map(|k| wave_of(k.name(), depth).saturating_add(1))
        .max()
        .unwrap_or(0)
}

/// The kind named `name`, if there is one.
pub(super) fn find(name: &str) -> Option<&'static dyn Kind> {
    KINDS.iter().copied().find(|k| k.name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_names_each_kind_once_and_finds_it() {
        let names: Vec<&str> = KINDS.iter().map(|k| k.name()).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for n in &names {
            assert_eq!(find(n).map(|k| k.name()), Some(*n));
        }
        assert!(find("load_balancer").is_none());
    }

    #[test]
    fn delete_relations_have_no_cycle_and_name_real_kinds() {
        for k in KINDS {
            for later in k.deleted_before() {
                let later = find(later).unwrap_or_else(|| panic!("{} names {later}", k.name()));
                assert!(
                    delete_wave(*k) < delete_wave(later),
                    "{} before {}",
                    k.name(),
                    later.name()
                );
            }
            assert!(usize::from(delete_wave(*k)) < KINDS.len(), "{}", k.name());
        }
    }

    #[test]
    fn every_kind_has_tags_last_and_an_id_attribute() {
        for k in KINDS {
            assert_eq!(
                k.fields().last().map(|f| f.name),
                Some("tags"),
                "{}",
                k.name()
            );
            assert_eq!(k.attributes().first(), Some(&"id"), "{}", k.name());
        }
    }
}
