//! Pure rules between a desired spec and an observed one.
//!
//! Observe normalises EC2's answers into the spec shape; this module puts a
//! desired spec into the same canonical shape (sets sorted, rules grouped)
//! and decides, field by field, what changed and whether EC2 can change it
//! in place. Fields a spec leaves out are not managed (EC2's default stays),
//! except `tags`, which tidegate owns completely. No I/O here: everything is
//! unit-tested.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::kind::KindSpec;
use super::schema::{Field, Ty};
use super::tags::Fingerprinted;
use crate::provider::{Action, Change, ResourceId};
use crate::value::{Map, Value};

/// The fingerprinted field `field` of a kind, if it is one.
fn fingerprinted(k: &dyn KindSpec, field: &str) -> Option<&'static Fingerprinted> {
    k.fingerprinted().iter().find(|fp| fp.field == field)
}

/// A desired spec in canonical form: schema order, nulls dropped, sets
/// sorted and deduplicated, rules grouped, `tags` always present.
pub fn canonical(k: &dyn KindSpec, body: &Value) -> Value {
    let mut out = canonical_object(k, k.fields(), body);
    if let Value::Map(m) = &mut out {
        if !m.contains_key("tags") {
            m.insert("tags".into(), Value::Map(Map::new()));
        }
    }
    out
}

fn canonical_object(k: &dyn KindSpec, fields: &[Field], v: &Value) -> Value {
    let Some(m) = v.as_map() else {
        return v.clone();
    };
    let mut out = Map::new();
    for f in fields {
        match m.get(f.name) {
            None | Some(Value::Null) => {}
            Some(v) => {
                out.insert(f.name.to_string(), canonical_value(k, f, v));
            }
        }
    }
    Value::Map(out)
}

fn canonical_value(k: &dyn KindSpec, f: &Field, v: &Value) -> Value {
    match (&f.ty, v) {
        (Ty::StrSet, Value::List(items)) => sorted_set(items),
        (Ty::Tags, Value::Map(m)) => {
            let sorted: BTreeMap<_, _> = m.iter().collect();
            Value::Map(
                sorted
                    .into_iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
        }
        (Ty::Object(fs), _) => canonical_object(k, fs, v),
        (Ty::ObjectSet(_), Value::List(_)) => k.canonical_set(f.name, v),
        _ => v.clone(),
    }
}

fn sorted_set(items: &[Value]) -> Value {
    let mut strings: Vec<&Value> = items.iter().collect();
    strings.sort_by_key(|v| match v {
        Value::String(s) => (0, s.clone()),
        other => (1, format!("{other:?}")),
    });
    strings.dedup();
    Value::List(strings.into_iter().cloned().collect())
}

/// Whether the desired value `d` of field `f` already holds in `live`.
fn same(k: &dyn KindSpec, f: &Field, d: &Value, live: Option<&Value>, key: &[u8]) -> bool {
    if d.has_unknown() {
        return false;
    }
    if let (Value::Sensitive(want), Some(Value::Sensitive(have))) = (d, live) {
        // Read back from the resource itself (secret user data).
        return want.ct_eq(have);
    }
    if let Some(fp) = fingerprinted(k, f.name) {
        return fp.of(d, key).as_deref() == live.and_then(Value::as_str);
    }
    match (&f.ty, live) {
        (Ty::Object(fs), Some(l)) => d.as_map().is_some_and(|m| {
            m.iter().all(|(name, dv)| {
                fs.iter()
                    .find(|sf| sf.name == name)
                    .is_some_and(|sf| same(k, sf, dv, l.get_path(name), key))
            })
        }),
        (Ty::Tags, None) => d.as_map().is_some_and(|m| m.is_empty()),
        (_, Some(l)) => canonical_value(k, f, d) == canonical_value(k, f, l),
        (_, None) => false,
    }
}

/// Why a changed immutable field forces a replacement, without its value
/// when it is fingerprinted (it may be secret).
fn replace_reason(k: &dyn KindSpec, f: &Field, d: &Value, live: Option<&Value>) -> String {
    if d.has_unknown() {
        return format!("{} is known only after apply (forces replacement)", f.name);
    }
    if let Some(fp) = fingerprinted(k, f.name) {
        return format!("{} changed ({})", f.name, fp.why);
    }
    match (d, live) {
        (Value::String(new), Some(Value::String(old))) => {
            format!("{} changes from {old} to {new} (immutable)", f.name)
        }
        (Value::String(new), _) => format!("{} becomes {new} (immutable)", f.name),
        _ => format!("{} changes (immutable)", f.name),
    }
}

/// The fields of a desired canonical spec that differ from the live body.
#[derive(Debug, Default, PartialEq)]
pub struct Diff {
    /// Changed fields EC2 can modify in place.
    pub updates: Vec<String>,
    /// One reason per changed immutable field.
    pub replace: Vec<String>,
}

/// Compares a canonical desired spec with a normalised live body.
pub fn diff(k: &dyn KindSpec, desired: &Value, live: &Value, key: &[u8]) -> Diff {
    let mut out = Diff::default();
    let Some(d) = desired.as_map() else {
        return out;
    };
    for f in k.fields() {
        let Some(dv) = d.get(f.name) else { continue };
        if same(k, f, dv, live.get_path(f.name), key) {
            continue;
        }
        if f.immutable {
            out.replace
                .push(replace_reason(k, f, dv, live.get_path(f.name)));
        } else {
            out.updates.push(f.name.to_string());
        }
    }
    out
}

/// `desired` with the fields EC2 chooses when the spec leaves them out
/// (`KindSpec::computed`) unknown.
fn with_computed_unknown(k: &dyn KindSpec, desired: &Value) -> Value {
    let mut out = desired.clone();
    if let Value::Map(m) = &mut out {
        for field in k.computed() {
            m.entry(field.to_string())
                .or_insert_with(|| Value::Unknown(format!("{}.{field}", k.name())));
        }
    }
    out
}

/// `live` with every field that already matches the desired spec written
/// the desired way (fingerprints replaced by the value, sets in the
/// author's grouping), so a renderer comparing before and after sees only
/// real changes.
fn aligned_before(k: &dyn KindSpec, desired: &Value, live: &Value, key: &[u8]) -> Value {
    let mut out = live.clone();
    if let (Some(d), Value::Map(m)) = (desired.as_map(), &mut out) {
        for f in k.fields() {
            if let Some(dv) = d.get(f.name) {
                if same(k, f, dv, live.get_path(f.name), key) {
                    let merged = merge(live.get_path(f.name), dv);
                    m.insert(f.name.to_string(), merged);
                }
            }
        }
    }
    out
}

/// `base` with the keys of `over` written over it (one level into objects,
/// so an unmanaged sub-field keeps its live value).
fn merge(base: Option<&Value>, over: &Value) -> Value {
    match (base, over) {
        (Some(Value::Map(b)), Value::Map(o)) => {
            let mut m = b.clone();
            for (k, v) in o {
                m.insert(k.clone(), v.clone());
            }
            Value::Map(m)
        }
        _ => over.clone(),
    }
}

/// The reasons a change between two desired specs of kind `k` forces a
/// replacement (one per changed immutable field), without any network call:
/// the revision-to-revision preview uses it where there is no live state.
pub fn replace_reasons(k: &dyn KindSpec, before: &Value, after: &Value) -> Vec<String> {
    let (b, a) = (canonical(k, before), canonical(k, after));
    k.fields()
        .iter()
        .filter(|f| f.immutable)
        .filter_map(|f| {
            let (bv, av) = (b.get_path(f.name), a.get_path(f.name));
            let changed = match (bv, av) {
                (Some(x), Some(y)) => !crate::diff::diff(x, y).is_empty(),
                (None, None) => false,
                _ => true,
            };
            changed.then(|| replace_reason(k, f, av.unwrap_or(&Value::Null), bv))
        })
        .collect()
}

/// The predicted change from `live` (normalised body) to the canonical
/// `desired` spec.
pub fn predict(k: &dyn KindSpec, desired: &Value, live: Option<&Value>, key: &[u8]) -> Change {
    let Some(live) = live else {
        return Change {
            action: Action::Create,
            before: None,
            after: with_computed_unknown(k, desired),
        };
    };
    let d = diff(k, desired, live, key);
    let before = aligned_before(k, desired, live, key);
    let (action, after) = if !d.replace.is_empty() {
        let after = with_computed_unknown(k, desired);
        (Action::Replace { reasons: d.replace }, after)
    } else if d.updates.is_empty() {
        (Action::NoOp, before.clone())
    } else {
        let mut after = before.clone();
        if let (Value::Map(a), Some(dm)) = (&mut after, desired.as_map()) {
            for field in &d.updates {
                if let Some(v) = dm.get(field) {
                    let merged = merge(live.get_path(field), v);
                    a.insert(field.clone(), merged);
                }
            }
        }
        (Action::Update, after)
    };
    Change {
        action,
        before: Some(before),
        after,
    }
}

/// The idempotency token of one create of a resource of kind `k`: the
/// same owner (project and environment), resource and desired state always
/// give the same token, so a create retried after a lost response is
/// recognised by EC2 (a crash and rerun finds its resource by its tags
/// first). Plain fingerprinted values enter as their fingerprints under
/// `key`; secrets under `secret_key`, a key that never leaves the process,
/// because EC2 shows the token to anyone who may describe the resource.
/// `salt` distinguishes a deliberate second create of the same state (after
/// the first result was deleted).
pub fn client_token(
    k: &dyn KindSpec,
    owner: &str,
    id: &ResourceId,
    desired: &Value,
    salt: &str,
    key: &[u8],
    secret_key: &[u8],
) -> String {
    let mut h = Sha256::new();
    for part in [owner, &id.to_string(), salt] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let mut masked = desired.clone();
    if let Value::Map(m) = &mut masked {
        for (name, v) in m.iter_mut() {
            let key = if matches!(v, Value::Sensitive(_)) {
                secret_key
            } else {
                key
            };
            if let Some(fp) = fingerprinted(k, name).and_then(|fp| fp.of(v, key)) {
                *v = Value::String(fp);
            }
        }
    }
    h.update(serde_json::to_vec(&masked.to_json_masked()).unwrap_or_default());
    let digest = h.finalize();
    let hex: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
    format!("tg-{hex}")
}

#[cfg(test)]
mod tests {
    use super::super::tags::{id_from_tags, owner_tags, tag_changes, user_tags};
    use super::*;
    use crate::provider::Owner;
    use crate::sensitive::Sensitive;

    const KEY: &[u8] = b"k";

    /// The kind named `name`, from the registry.
    fn kind(name: &str) -> &'static dyn KindSpec {
        super::super::kinds::find(name).expect("a registered kind")
    }

    fn canonical(k: &str, body: &Value) -> Value {
        super::canonical(kind(k), body)
    }

    fn predict(k: &str, desired: &Value, live: Option<&Value>, key: &[u8]) -> Change {
        super::predict(kind(k), desired, live, key)
    }

    fn client_token(
        k: &str,
        owner: &str,
        id: &ResourceId,
        desired: &Value,
        salt: &str,
        key: &[u8],
        secret_key: &[u8],
    ) -> String {
        super::client_token(kind(k), owner, id, desired, salt, key, secret_key)
    }

    /// The fingerprint of the value `v` of field `field` of a `kind`.
    fn fingerprint(k: &str, field: &str, v: &Value, key: &[u8]) -> Option<String> {
        fingerprinted(kind(k), field)?.of(v, key)
    }

    fn v(j: serde_json::Value) -> Value {
        Value::from_json(j)
    }

    fn id() -> ResourceId {
        ResourceId {
            module: "network".into(),
            name: "vpc".into(),
        }
    }

    #[test]
    fn equal_state_is_a_no_op_even_when_written_differently() {
        let desired = canonical(
            "security_group",
            &v(serde_json::json!({
                "vpcId": "vpc-1", "groupName": "web", "description": "d",
                "ingress": [{"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["10.0.0.0/8", "0.0.0.0/0"]}],
                "tags": {"b": "2", "a": "1"}
            })),
        );
        let live = v(serde_json::json!({
            "vpcId": "vpc-1", "groupName": "web", "description": "d",
            "ingress": [
                {"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["0.0.0.0/0"]},
                {"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["10.0.0.0/8"]}],
            "egress": [{"protocol": "-1", "cidrBlocks": ["0.0.0.0/0"]}],
            "tags": {"a": "1", "b": "2"}
        }));
        let c = predict("security_group", &desired, Some(&live), KEY);
        assert_eq!(c.action, Action::NoOp);
        assert_eq!(c.before.as_ref(), Some(&c.after));
    }

    #[test]
    fn a_tag_change_is_an_update_and_a_cidr_change_a_replace_with_reason() {
        let live = v(
            serde_json::json!({"cidrBlock": "10.0.0.0/16", "enableDnsSupport": true, "tags": {"owner": "a"}}),
        );
        let d = canonical(
            "vpc",
            &v(serde_json::json!({"cidrBlock": "10.0.0.0/16", "tags": {"owner": "b"}})),
        );
        let c = predict("vpc", &d, Some(&live), KEY);
        assert_eq!(c.action, Action::Update);
        assert_eq!(
            c.after.get_path("tags.owner"),
            Some(&Value::String("b".into()))
        );
        assert_eq!(
            c.after.get_path("enableDnsSupport"),
            Some(&Value::Bool(true))
        );

        let d = canonical(
            "vpc",
            &v(serde_json::json!({"cidrBlock": "10.9.0.0/16", "tags": {"owner": "a"}})),
        );
        let c = predict("vpc", &d, Some(&live), KEY);
        assert_eq!(
            c.action,
            Action::Replace {
                reasons: vec![
                    "cidrBlock changes from 10.0.0.0/16 to 10.9.0.0/16 (immutable)".into()
                ]
            }
        );
    }

    #[test]
    fn create_marks_computed_fields_unknown() {
        let d = canonical(
            "subnet",
            &v(serde_json::json!({"vpcId": "vpc-1", "cidrBlock": "10.0.1.0/24"})),
        );
        let c = predict("subnet", &d, None, KEY);
        assert_eq!(c.action, Action::Create);
        assert!(matches!(
            c.after.get_path("availabilityZone"),
            Some(Value::Unknown(_))
        ));
        assert_eq!(c.after.get_path("tags"), Some(&Value::Map(Map::new())));
    }

    #[test]
    fn secret_user_data_is_compared_by_fingerprint_and_never_shown() {
        let secret = Value::Sensitive(Sensitive::from_string("#!/bin/sh\necho pw=hunter2".into()));
        let mut d =
            v(serde_json::json!({"ami": "ami-1", "instanceType": "t3.micro", "subnetId": "s"}));
        if let Value::Map(m) = &mut d {
            m.insert("userData".into(), secret.clone());
        }
        let d = canonical("instance", &d);
        let fp = fingerprint("instance", "userData", &secret, KEY).unwrap();
        assert!(!fp.contains("hunter2"));
        let live = v(
            serde_json::json!({"ami": "ami-1", "instanceType": "t3.micro", "subnetId": "s",
            "userData": fp, "privateIp": "10.0.0.5", "tags": {}}),
        );
        let c = predict("instance", &d, Some(&live), KEY);
        assert_eq!(c.action, Action::NoOp);
        assert_eq!(c.before.unwrap().get_path("userData"), Some(&secret));

        let live2 = v(
            serde_json::json!({"ami": "ami-1", "instanceType": "t3.micro", "subnetId": "s",
            "userData": "sha256:00", "tags": {}}),
        );
        let c = predict("instance", &d, Some(&live2), KEY);
        let Action::Replace { reasons } = c.action else {
            panic!()
        };
        assert_eq!(
            reasons,
            vec!["userData changed (user data runs only at first boot)"]
        );
        assert!(!format!("{:?}", c.after).contains("hunter2"));
    }

    #[test]
    fn unknown_immutable_fields_force_replacement_and_partial_objects_compare_partially() {
        let mut d = v(serde_json::json!({"cidrBlock": "10.0.1.0/24"}));
        if let Value::Map(m) = &mut d {
            m.insert("vpcId".into(), Value::Unknown("resource.vpc.id".into()));
        }
        let live = v(serde_json::json!({"vpcId": "vpc-1", "cidrBlock": "10.0.1.0/24", "tags": {}}));
        let c = predict("subnet", &canonical("subnet", &d), Some(&live), KEY);
        assert!(
            matches!(c.action, Action::Replace { ref reasons } if reasons[0].starts_with("vpcId is known only after apply"))
        );

        let d = canonical(
            "instance",
            &v(
                serde_json::json!({"ami": "a", "instanceType": "t", "subnetId": "s",
            "metadata": {"httpTokens": "required"}}),
            ),
        );
        let live = v(
            serde_json::json!({"ami": "a", "instanceType": "t", "subnetId": "s",
            "metadata": {"httpTokens": "optional", "httpPutResponseHopLimit": 1}, "tags": {}}),
        );
        let c = predict("instance", &d, Some(&live), KEY);
        assert_eq!(c.action, Action::Update);
        assert_eq!(
            c.after.get_path("metadata"),
            Some(&v(
                serde_json::json!({"httpTokens": "required", "httpPutResponseHopLimit": 1})
            ))
        );
    }

    #[test]
    fn tags_and_tokens() {
        let owner = Owner::new("shop", "dev");
        let tags: BTreeMap<String, String> = owner_tags(&owner, &id())
            .into_iter()
            .chain([("owner".to_string(), "me".to_string())])
            .collect();
        assert_eq!(id_from_tags(&tags), Some(id()));
        assert_eq!(user_tags(&tags), v(serde_json::json!({"owner": "me"})));
        let (set, remove) = tag_changes(
            &v(serde_json::json!({"a": "1", "b": "3"})),
            &v(serde_json::json!({"b": "2", "c": "x"})),
        );
        assert_eq!(
            set,
            vec![("a".into(), "1".into()), ("b".into(), "3".into())]
        );
        assert_eq!(remove, vec!["c".to_string()]);

        let d = v(serde_json::json!({"cidrBlock": "10.0.0.0/16"}));
        let t = client_token("vpc", "dev", &id(), &d, "", KEY, b"s");
        assert_eq!(t, client_token("vpc", "dev", &id(), &d, "", KEY, b"s"));
        assert!(t.len() <= 64);
        assert_ne!(t, client_token("vpc", "prod", &id(), &d, "", KEY, b"s"));
        assert_ne!(t, client_token("vpc", "dev", &id(), &d, "i-1", KEY, b"s"));
        // A secret enters under the process's own key only.
        let secret = Value::Map(
            [(
                "userData".to_string(),
                Value::Sensitive(Sensitive::from_string("hunter2".into())),
            )]
            .into_iter()
            .collect(),
        );
        let a = client_token("instance", "dev", &id(), &secret, "", KEY, b"one");
        assert_eq!(
            a,
            client_token("instance", "dev", &id(), &secret, "", KEY, b"one")
        );
        assert_ne!(
            a,
            client_token("instance", "dev", &id(), &secret, "", KEY, b"two")
        );
    }

    #[test]
    fn public_key_comments_do_not_count() {
        let a = fingerprint(
            "key_pair",
            "publicKey",
            &Value::String("ssh-ed25519 AAAA me@a".into()),
            KEY,
        );
        let b = fingerprint(
            "key_pair",
            "publicKey",
            &Value::String("ssh-ed25519 AAAA you@b".into()),
            KEY,
        );
        assert_eq!(a, b);
    }
}
