//! The tags tidegate writes on EC2 resources and reads back: ownership
//! (who manages a resource, for which project, environment, module and
//! resource), the deposed mark of a replaced resource, and the keyed
//! fingerprints of fields EC2 never shows back.
//!
//! EC2 keeps no state for tidegate; these tags are the state. Pure, and a
//! leaf of the provider: the kinds, the drivers and the rules all read
//! them from here.

use std::collections::BTreeMap;

use crate::provider::{Claim, Owner, ResourceId};
use crate::sensitive::Sensitive;
use crate::value::Value;

/// Ownership tag: who manages the resource.
pub const TAG_MANAGED_BY: &str = "managed-by";
/// The value of [`TAG_MANAGED_BY`].
pub const MANAGER: &str = "tidegate";
/// Ownership tag: owning environment.
pub const TAG_ENVIRONMENT: &str = "tidegate:environment";
/// Ownership tag: owning project (`tidegate.yaml`); missing on resources
/// tagged before projects existed.
pub const TAG_PROJECT: &str = "tidegate:project";
/// Ownership tag: owning module instance.
pub const TAG_MODULE: &str = "tidegate:module";
/// Ownership tag: `<module>.<name>`.
pub const TAG_RESOURCE: &str = "tidegate:resource";
/// Keyed fingerprint of plain user data, for change detection. Secret user
/// data gets none: it is compared with the instance's own (see
/// `AwsProvider::secret_user_data_seen`); an instance tagged before that
/// has the tag removed by the next apply.
pub const TAG_USER_DATA: &str = "tidegate:user-data-sha256";
/// Fingerprint of the imported public key.
pub const TAG_PUBLIC_KEY: &str = "tidegate:public-key-sha256";
/// Set on a resource that a replacement superseded; it is pruned later.
pub const TAG_DEPOSED: &str = "tidegate:deposed";

/// A field EC2 never shows back (user data, an imported public key): it is
/// observed as a keyed fingerprint in a tag of its own, and a change of it
/// is described without its value (it may be secret, or long).
pub struct Fingerprinted {
    pub field: &'static str,
    /// The tag holding the fingerprint.
    pub tag: &'static str,
    /// Why a change replaces the resource.
    pub why: &'static str,
    /// The part of a plain value that counts (a public key's type and key
    /// material, not its comment).
    pub material: fn(&str) -> String,
}

impl Fingerprinted {
    /// The fingerprint (`sha256:<hex>`) of the desired value `v`. Keyed, so
    /// a low-entropy secret cannot be guessed from a tag by anyone without
    /// the key.
    pub fn of(&self, v: &Value, key: &[u8]) -> Option<String> {
        let secret = match v {
            Value::Sensitive(s) => s.clone(),
            Value::String(s) => Sensitive::from_string((self.material)(s)),
            _ => return None,
        };
        Some(format!("sha256:{}", secret.fingerprint_hex(key)))
    }
}
/// True for tags tidegate writes itself, and AWS's own.
pub fn is_reserved_tag(key: &str) -> bool {
    key == TAG_MANAGED_BY || key.starts_with("tidegate:") || key.starts_with("aws:")
}

/// The ownership tags of a resource.
pub fn owner_tags(owner: &Owner, id: &ResourceId) -> Vec<(String, String)> {
    vec![
        (TAG_MANAGED_BY.into(), MANAGER.into()),
        (TAG_PROJECT.into(), owner.project.clone()),
        (TAG_ENVIRONMENT.into(), owner.environment.clone()),
        (TAG_MODULE.into(), id.module.clone()),
        (TAG_RESOURCE.into(), id.to_string()),
    ]
}

/// Whose a resource is, by its tags.
pub fn claim(tags: &BTreeMap<String, String>, owner: &Owner) -> Claim {
    owner.claim(
        tags.get(TAG_MANAGED_BY).map(String::as_str) == Some(MANAGER),
        tags.get(TAG_ENVIRONMENT).map(String::as_str),
        tags.get(TAG_PROJECT).map(String::as_str),
    )
}

/// The resource id a `tidegate:resource` / `tidegate:module` tag pair names.
pub fn id_from_tags(tags: &BTreeMap<String, String>) -> Option<ResourceId> {
    let module = tags.get(TAG_MODULE)?;
    let name = tags
        .get(TAG_RESOURCE)?
        .strip_prefix(&format!("{module}."))?;
    Some(ResourceId {
        module: module.clone(),
        name: name.to_string(),
    })
}

/// The user's tags among all tags, as a map value.
pub fn user_tags(tags: &BTreeMap<String, String>) -> Value {
    Value::Map(
        tags.iter()
            .filter(|(k, _)| !is_reserved_tag(k))
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// Tags to set and tag keys to remove so that the user tags become `desired`.
pub fn tag_changes(desired: &Value, live: &Value) -> (Vec<(String, String)>, Vec<String>) {
    let strings = |v: &Value| -> BTreeMap<String, String> {
        v.as_map()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (d, l) = (strings(desired), strings(live));
    let set = d
        .iter()
        .filter(|(k, v)| l.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let remove = l.keys().filter(|k| !d.contains_key(*k)).cloned().collect();
    (set, remove)
}
