//! Field-level differences between a before and an after value, safe to show.
//!
//! This is the pure heart of every preview: it walks two [`Value`] trees and
//! lists what changed, path by path. Secrets are compared by keyed
//! fingerprint and reported only as changed or not; values known only after
//! apply are reported as such. Nothing here can print a secret because
//! nothing here ever turns a [`Value::Sensitive`] into text.

use std::sync::OnceLock;

use serde::Serialize;

use crate::sensitive::Sensitive;
use crate::value::{index_path, key_path, Value};

/// What a changed secret renders as.
pub const SENSITIVE_CHANGED: &str = "(sensitive value changed)";

/// One changed field.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum FieldChange {
    /// The field is new.
    Add { path: String, after: Value },
    /// The field goes away.
    Remove { path: String, before: Value },
    /// The field has another value (either side may be unknown).
    Change {
        path: String,
        before: Value,
        after: Value,
    },
    /// A secret changed; neither side is shown.
    Sensitive { path: String },
}

impl FieldChange {
    /// The dotted path of the field.
    pub fn path(&self) -> &str {
        match self {
            FieldChange::Add { path, .. }
            | FieldChange::Remove { path, .. }
            | FieldChange::Change { path, .. }
            | FieldChange::Sensitive { path } => path,
        }
    }
}

/// Lists every changed leaf between `before` and `after`, in the order of
/// `after` (fields only in `before` follow their siblings).
pub fn diff(before: &Value, after: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk("", before, after, &mut out);
    out
}

fn walk(path: &str, before: &Value, after: &Value, out: &mut Vec<FieldChange>) {
    match (before, after) {
        (Value::Map(b), Value::Map(a)) => {
            for (k, av) in a {
                let p = key_path(path, k);
                match b.get(k) {
                    Some(bv) => walk(&p, bv, av, out),
                    None => out.push(added(p, av)),
                }
            }
            for (k, bv) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
                out.push(removed(key_path(path, k), bv));
            }
        }
        (Value::List(b), Value::List(a)) => {
            for (i, av) in a.iter().enumerate() {
                let p = index_path(path, i);
                match b.get(i) {
                    Some(bv) => walk(&p, bv, av, out),
                    None => out.push(added(p, av)),
                }
            }
            for (i, bv) in b.iter().enumerate().skip(a.len()) {
                out.push(removed(index_path(path, i), bv));
            }
        }
        (Value::Sensitive(b), Value::Sensitive(a)) => {
            if !same_secret(b, a) {
                out.push(FieldChange::Sensitive {
                    path: path.to_string(),
                });
            }
        }
        (Value::Sensitive(_), _) | (_, Value::Sensitive(_)) => {
            out.push(FieldChange::Sensitive {
                path: path.to_string(),
            });
        }
        (Value::Int(b), Value::Float(a)) | (Value::Float(a), Value::Int(b))
            if (*b as f64) == *a => {}
        (b, a) if b == a => {}
        (b, a) => out.push(FieldChange::Change {
            path: path.to_string(),
            before: b.clone(),
            after: a.clone(),
        }),
    }
}

fn added(path: String, after: &Value) -> FieldChange {
    if after.has_sensitive() {
        FieldChange::Sensitive { path }
    } else {
        FieldChange::Add {
            path,
            after: after.clone(),
        }
    }
}

fn removed(path: String, before: &Value) -> FieldChange {
    if before.has_sensitive() {
        FieldChange::Sensitive { path }
    } else {
        FieldChange::Remove {
            path,
            before: before.clone(),
        }
    }
}

/// Compares two secrets by HMAC under a key that exists only in this
/// process, so equality is decided without comparing plaintexts directly.
fn same_secret(a: &Sensitive, b: &Sensitive) -> bool {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = KEY.get_or_init(process_key);
    a.fingerprint(key) == b.fingerprint(key)
}

fn process_key() -> [u8; 32] {
    use std::hash::{BuildHasher, Hasher};
    // RandomState keys come from the OS once per process (128 bits), which
    // is all the secrecy an in-memory comparison key needs.
    let mut key = [0u8; 32];
    for chunk in key.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id() as u64);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Map;

    fn map(entries: &[(&str, Value)]) -> Value {
        Value::Map(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<Map>(),
        )
    }
    fn s(x: &str) -> Value {
        Value::String(x.into())
    }
    fn secret(x: &str) -> Value {
        Value::Sensitive(Sensitive::from_string(x.into()))
    }

    #[test]
    fn equal_values_have_no_changes() {
        let v = map(&[("a", Value::Int(1)), ("b", Value::List(vec![s("x")]))]);
        assert!(diff(&v, &v).is_empty());
        assert!(diff(&Value::Int(2), &Value::Float(2.0)).is_empty());
    }

    #[test]
    fn lists_and_maps_report_leaf_paths() {
        let before = map(&[("spec", map(&[("replicas", Value::Int(1)), ("old", s("x"))]))]);
        let after = map(&[(
            "spec",
            map(&[
                ("replicas", Value::Int(3)),
                ("ports", Value::List(vec![Value::Int(80)])),
            ]),
        )]);
        let paths: Vec<_> = diff(&before, &after)
            .iter()
            .map(|c| c.path().to_string())
            .collect();
        assert_eq!(paths, ["spec.replicas", "spec.ports", "spec.old"]);
        let lists = diff(
            &Value::List(vec![s("a"), s("b")]),
            &Value::List(vec![s("a")]),
        );
        assert_eq!(
            lists,
            vec![FieldChange::Remove {
                path: "[1]".into(),
                before: s("b")
            }]
        );
    }

    #[test]
    fn secrets_report_only_whether_they_changed() {
        let same = diff(&map(&[("pw", secret("a"))]), &map(&[("pw", secret("a"))]));
        assert!(same.is_empty());
        let changed = diff(&map(&[("pw", secret("a"))]), &map(&[("pw", secret("b"))]));
        assert_eq!(changed, vec![FieldChange::Sensitive { path: "pw".into() }]);
        let added = diff(&map(&[]), &map(&[("data", map(&[("pw", secret("a"))]))]));
        assert_eq!(
            added,
            vec![FieldChange::Sensitive {
                path: "data".into()
            }]
        );
        let json = serde_json::to_string(&changed).unwrap();
        assert!(!json.contains('a') || !json.contains("\"b\""), "{json}");
    }

    #[test]
    fn unknown_after_is_a_change() {
        let c = diff(&s("vpc-1"), &Value::Unknown("module.network.vpc.id".into()));
        assert!(matches!(
            &c[..],
            [FieldChange::Change {
                after: Value::Unknown(_),
                ..
            }]
        ));
    }
}
