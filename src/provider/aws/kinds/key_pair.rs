//! `key_pair`: an imported SSH public key. EC2 never shows the key back,
//! so it is compared through a fingerprint tag; its name must stay unique
//! in the region, so a replacement deletes the old key first (instances
//! launched with it keep running).

use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{Filter, KeyPairInfo, ResourceType, Tag};

use crate::provider::aws::calls::{sdk, ApiError};
use crate::provider::aws::kind::{created, Created, Ec2Kind, KindSpec, Seen, Update};
use crate::provider::aws::schema::{f, fixed, req, Field, Ty, TAGS};
use crate::provider::aws::sdk::{attrs, describe, map, no_sdk_retries, s, string_at, Ec2};
use crate::provider::aws::tags::{Fingerprinted, TAG_PUBLIC_KEY};
use crate::provider::aws::values::problem;
use crate::provider::{Desired, Problem, Result};
use crate::value::{Map, Value};

/// The `key_pair` kind.
#[derive(Clone, Copy)]
pub(super) struct KeyPair;

const FIELDS: &[Field] = &[
    req(fixed(f("keyName", Ty::Str))),
    req(fixed(f("publicKey", Ty::Str))),
    TAGS,
];

/// The type and key material of an OpenSSH public key line, without its
/// comment (a changed comment is not a change).
fn key_material(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `publicKey`, compared through its fingerprint tag.
const PUBLIC_KEY: Fingerprinted = Fingerprinted {
    field: "publicKey",
    tag: TAG_PUBLIC_KEY,
    why: "imported key material is immutable",
    material: key_material,
};

const FINGERPRINTED: &[Fingerprinted] = &[PUBLIC_KEY];

const PUBLIC_KEY_PREFIXES: [&str; 3] = ["ssh-rsa ", "ssh-ed25519 ", "ecdsa-sha2-"];

impl KindSpec for KeyPair {
    fn name(&self) -> &'static str {
        "key_pair"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn attributes(&self) -> &'static [&'static str] {
        &["id", "keyName", "fingerprint"]
    }

    fn fingerprinted(&self) -> &'static [Fingerprinted] {
        FINGERPRINTED
    }

    fn check_string(&self, field: &str, s: &str, path: &str, out: &mut Vec<Problem>) {
        if field == "publicKey"
            && !PUBLIC_KEY_PREFIXES
                .iter()
                .any(|p| s.trim_start().starts_with(p))
        {
            out.push(problem(
                path,
                "`publicKey` is not an OpenSSH public key".into(),
                "paste the one line of an `.pub` file (ssh-ed25519 AAAA... or ssh-rsa AAAA...)",
            ));
        }
    }

    fn destroy_first(&self, desired: &Value, live: &Value) -> Option<String> {
        let name = desired.get_path("keyName");
        (name.is_some() && name == live.get_path("keyName"))
            .then(|| "destroy before create: keyName must stay unique in the region".into())
    }
}

#[async_trait::async_trait]
impl Ec2Kind for KeyPair {
    type Item = KeyPairInfo;

    fn id_filter(&self) -> &'static str {
        "key-pair-id"
    }

    async fn describe(&self, p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Self::Item>, ApiError> {
        let pages = describe(p, "DescribeKeyPairs", || async {
            p.client
                .describe_key_pairs()
                .set_filters(Some(filters.clone()))
                .send()
                .await
                .map(|o| vec![o])
        })
        .await?;
        Ok(pages
            .into_iter()
            .flat_map(|o| o.key_pairs.unwrap_or_default())
            .collect())
    }

    fn id<'a>(&self, k: &'a Self::Item) -> Option<&'a str> {
        k.key_pair_id()
    }

    fn tags<'a>(&self, k: &'a Self::Item) -> &'a [Tag] {
        k.tags()
    }

    fn normalise(&self, k: &Self::Item, seen: Seen<'_>) -> (Value, Map) {
        let attributes = attrs(vec![
            ("id", seen.id_value()),
            ("keyName", s(k.key_name())),
            ("fingerprint", s(k.key_fingerprint())),
        ]);
        let body = map(vec![
            ("keyName", s(k.key_name())),
            ("publicKey", seen.tag(PUBLIC_KEY.tag)),
            ("tags", seen.user_tags),
        ]);
        (body, attributes)
    }

    async fn create(
        &self,
        p: &Ec2,
        desired: &Desired,
        d: &Value,
        _token: &str,
    ) -> Result<Created, ApiError> {
        let key = d.get_path("publicKey").cloned().unwrap_or_default();
        let fp = PUBLIC_KEY.of(&key, &p.key).unwrap_or_default();
        let extra = vec![(PUBLIC_KEY.tag.to_string(), fp)];
        let o = sdk(p
            .client
            .import_key_pair()
            .set_key_name(string_at(d, "keyName"))
            .public_key_material(Blob::new(key.as_str().unwrap_or("").as_bytes()))
            .tag_specifications(p.tag_spec(ResourceType::KeyPair, desired, d, extra))
            .customize()
            .config_override(no_sdk_retries())
            .send()
            .await)?;
        created(self.name(), o.key_pair_id)
    }

    async fn update(&self, _p: &Ec2, u: &Update<'_>, _k: &Self::Item) -> Result<()> {
        match u.fields.first() {
            Some(field) => Err(u.unchangeable(field)),
            None => Ok(()),
        }
    }

    /// By name: the read before proved the name is owned, and some EC2
    /// stand-ins accept only KeyName.
    async fn delete(&self, p: &Ec2, _id: &str, k: &Self::Item) -> Result<(), ApiError> {
        p.send("DeleteKeyPair", false, || async {
            sdk(p
                .client
                .delete_key_pair()
                .set_key_name(k.key_name().map(str::to_string))
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

    #[test]
    fn a_key_keeping_its_name_is_deleted_before_its_replacement() {
        let key = |name: &str, material: &str| {
            Value::from_json(serde_json::json!({"keyName": name, "publicKey": material}))
        };
        let reason = KeyPair.destroy_first(&key("deploy", "ssh-ed25519 B"), &key("deploy", "x"));
        assert_eq!(
            reason.as_deref(),
            Some("destroy before create: keyName must stay unique in the region")
        );
        assert!(KeyPair
            .destroy_first(&key("deploy2", "ssh-ed25519 B"), &key("deploy", "x"))
            .is_none());
        assert_eq!(key_material("ssh-ed25519 AAAA me@a"), "ssh-ed25519 AAAA");
    }
}
