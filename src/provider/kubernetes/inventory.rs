//! The inventory: what tidegate applied to one environment, kept in the
//! cluster as a ConfigMap.
//!
//! Labels alone find owned objects only among kinds someone thinks to list;
//! the inventory remembers the kinds (and exact objects) tidegate applied, so
//! an object whose kind vanished from Git is still observed and can be
//! pruned. Entries use Flux's stable IDs (`<namespace>_<name>_<group>_<kind>`)
//! as ConfigMap keys; each value names the tidegate resource and the full
//! kind. Plain functions, no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::object::{meta_str, Gvk};
use crate::provider::{Live, Owner, ResourceId};

/// One applied object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The tidegate resource id (`module.name`).
    pub resource: String,
    /// The resource kind (`apps/v1/Deployment`).
    pub kind: String,
}

/// Reading the inventory failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An entry's value is not the JSON this module writes.
    #[error("inventory entry {key} is malformed: {source}")]
    Entry {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The ConfigMap name of an environment's inventory.
pub fn configmap_name(owner: &Owner) -> String {
    format!("tidegate-inventory-{}", owner.key())
}

/// The name an inventory had before projects (`tidegate.yaml`).
pub fn legacy_configmap_name(environment: &str) -> String {
    format!("tidegate-inventory-{environment}")
}

/// Flux's stable object ID: `<namespace>_<name>_<group>_<kind>` (empty
/// namespace for cluster-scoped objects, empty group for core).
pub fn stable_id(namespace: &str, name: &str, group: &str, kind: &str) -> String {
    format!("{namespace}_{name}_{group}_{kind}")
}

/// The namespace part of a [`stable_id`] key (`None`: cluster-scoped).
/// Kubernetes names never hold `_`, so the first `_` ends it.
pub fn namespace_of(key: &str) -> Option<&str> {
    key.split_once('_')
        .map(|(ns, _)| ns)
        .filter(|ns| !ns.is_empty())
}

/// The ConfigMap `data` recording `owned`; objects of unparsable kinds or
/// without a name are left out (they cannot have been applied).
pub fn data(owned: &[Live]) -> BTreeMap<String, String> {
    owned
        .iter()
        .filter_map(|live| {
            let gvk = Gvk::parse(&live.kind)?;
            let name = meta_str(&live.body, "name")?;
            let namespace = meta_str(&live.body, "namespace").unwrap_or("");
            let entry = Entry {
                resource: live.id.to_string(),
                kind: live.kind.clone(),
            };
            let value = serde_json::to_string(&entry).expect("entry serializes");
            Some((stable_id(namespace, name, &gvk.group, &gvk.kind), value))
        })
        .collect()
}

/// The entries of a ConfigMap's `data`, by stable ID.
pub fn parse(data: &BTreeMap<String, String>) -> Result<BTreeMap<String, Entry>, Error> {
    data.iter()
        .map(|(key, value)| {
            serde_json::from_str(value)
                .map(|e| (key.clone(), e))
                .map_err(|source| Error::Entry {
                    key: key.clone(),
                    source,
                })
        })
        .collect()
}

/// The resource id an entry records, if it is well formed.
pub fn entry_id(entry: &Entry) -> Option<ResourceId> {
    super::object::parse_resource_id(&entry.resource, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Map, Value};
    use serde_json::json;

    #[test]
    fn the_namespace_of_a_key_is_its_first_part() {
        assert_eq!(
            namespace_of(&stable_id("web-dev", "db", "", "Secret")),
            Some("web-dev")
        );
        assert_eq!(
            namespace_of(&stable_id("", "web-dev", "", "Namespace")),
            None
        );
    }

    fn live(kind: &str, ns: Option<&str>, name: &str) -> Live {
        let mut meta = json!({"name": name});
        if let Some(ns) = ns {
            meta["namespace"] = json!(ns);
        }
        Live {
            id: ResourceId {
                module: "web".into(),
                name: name.into(),
            },
            kind: kind.into(),
            external_id: name.into(),
            body: Value::from_json(json!({"metadata": meta})),
            attributes: Map::new(),
        }
    }

    #[test]
    fn entries_round_trip_with_stable_ids() {
        let owned = [
            live("apps/v1/Deployment", Some("shop"), "api"),
            live("v1/Namespace", None, "shop"),
        ];
        let d = data(&owned);
        let keys: Vec<&String> = d.keys().collect();
        assert_eq!(keys, ["_shop__Namespace", "shop_api_apps_Deployment"]);
        let entries = parse(&d).unwrap();
        let e = &entries["shop_api_apps_Deployment"];
        assert_eq!(e.kind, "apps/v1/Deployment");
        assert_eq!(
            entry_id(e),
            Some(ResourceId {
                module: "web".into(),
                name: "api".into()
            })
        );
    }

    #[test]
    fn malformed_entries_are_named() {
        let mut d = BTreeMap::new();
        d.insert("ns_a__ConfigMap".to_string(), "not json".to_string());
        let err = parse(&d).unwrap_err().to_string();
        assert!(err.contains("ns_a__ConfigMap"), "{err}");
    }

    #[test]
    fn names_follow_the_environment() {
        let owner = Owner::new("shop", "prod");
        assert_eq!(configmap_name(&owner), "tidegate-inventory-shop.prod");
        assert_eq!(legacy_configmap_name("prod"), "tidegate-inventory-prod");
    }
}
