//! The value tree that flows from the loader to the providers.
//!
//! It is JSON-shaped with two extra leaves: [`Value::Sensitive`] for secret
//! plaintext (masked everywhere but in the one provider call that needs it) and
//! [`Value::Unknown`] for a value that exists only after something else has been
//! applied (rendered as `(known after apply)`). Maps keep the author's order so
//! rendered diffs read like the files they came from.

use std::collections::BTreeMap;
use std::fmt;

use indexmap::IndexMap;
use serde::ser::{SerializeMap, SerializeSeq};

use crate::sensitive::Sensitive;

/// Where something was declared, for messages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Origin {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Where each node of a value was written, so that any later check (schema,
/// policy) can point at file:line:column. Paths are map keys joined by `.`
/// with `[i]` for list items (`spec.template.spec.containers[0].image`); the
/// empty path is the value itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Spans {
    map: BTreeMap<String, Origin>,
}

impl Spans {
    /// Records where the node at `path` starts.
    pub fn insert(&mut self, path: impl Into<String>, origin: Origin) {
        self.map.insert(path.into(), origin);
    }

    /// Where the node at `path` starts, if recorded.
    pub fn get(&self, path: &str) -> Option<&Origin> {
        self.map.get(path)
    }

    /// The origin of `path` or of its closest recorded ancestor, so a
    /// missing field can point at the map that should hold it.
    pub fn nearest(&self, path: &str) -> Option<&Origin> {
        let mut p = path;
        loop {
            if let Some(o) = self.map.get(p) {
                return Some(o);
            }
            if p.is_empty() {
                return None;
            }
            p = match p.rfind(['.', '[']) {
                Some(i) => &p[..i],
                None => "",
            };
        }
    }

    /// Every recorded path and origin, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Origin)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// The path of a map entry below `parent`.
pub fn key_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// The path of a list item below `parent`.
pub fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// What an unknown value renders as.
pub const KNOWN_AFTER_APPLY: &str = "(known after apply)";

/// An ordered map of values.
pub type Map = IndexMap<String, Value>;

/// A desired or observed value.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    List(Vec<Value>),
    Map(Map),
    /// Secret plaintext; never rendered.
    Sensitive(Sensitive),
    /// Known only after apply; holds the reference it waits on
    /// (e.g. `module.network.vpc.id`).
    Unknown(String),
}

/// Converting a value for a provider failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// A value still waits on a reference that has not been applied.
    #[error("value at {path} is not known yet (waits on {reference})")]
    Unknown { path: String, reference: String },
    /// A float that JSON cannot carry (NaN or infinite).
    #[error("value at {path} is not a finite number")]
    NonFinite { path: String },
}

impl Value {
    /// A name for the kind of this value, for type errors (never the value
    /// itself).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::String(_) => "a string",
            Value::List(_) => "a list",
            Value::Map(_) => "a map",
            Value::Sensitive(_) => "a secret value",
            Value::Unknown(_) => "a value known only after apply",
        }
    }

    /// Builds a value from JSON (as read back from an API).
    pub fn from_json(v: serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::String(s),
            serde_json::Value::Array(a) => {
                Value::List(a.into_iter().map(Value::from_json).collect())
            }
            serde_json::Value::Object(o) => Value::Map(
                o.into_iter()
                    .map(|(k, v)| (k, Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// The JSON a provider sends, secrets in plaintext. Call only at the
    /// provider boundary and drop the result right after the request.
    pub fn to_json_exposed(&self) -> Result<serde_json::Value, Error> {
        self.to_json_at("", true)
    }

    /// JSON for output: secrets masked, unknowns as `(known after apply)`.
    pub fn to_json_masked(&self) -> serde_json::Value {
        self.to_json_at("", false)
            .expect("masked conversion never fails")
    }

    fn to_json_at(&self, path: &str, exposed: bool) -> Result<serde_json::Value, Error> {
        use serde_json::Value as J;
        Ok(match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => J::Number(n),
                None if exposed => {
                    return Err(Error::NonFinite {
                        path: path.to_string(),
                    })
                }
                None => J::String(f.to_string()),
            },
            Value::String(s) => J::String(s.clone()),
            Value::List(items) => J::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v.to_json_at(&format!("{path}[{i}]"), exposed))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Map(m) => J::Object(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), v.to_json_at(&format!("{path}.{k}"), exposed)?)))
                    .collect::<Result<_, Error>>()?,
            ),
            Value::Sensitive(s) if exposed => {
                J::String(String::from_utf8_lossy(s.expose()).into_owned())
            }
            Value::Sensitive(_) => J::String(crate::sensitive::MASK.to_string()),
            Value::Unknown(r) if exposed => {
                return Err(Error::Unknown {
                    path: path.to_string(),
                    reference: r.clone(),
                })
            }
            Value::Unknown(_) => J::String(KNOWN_AFTER_APPLY.to_string()),
        })
    }

    /// Looks up a dotted path of map keys (`spec.replicas`).
    pub fn get_path(&self, path: &str) -> Option<&Value> {
        path.split('.')
            .filter(|s| !s.is_empty())
            .try_fold(self, |v, key| match v {
                Value::Map(m) => m.get(key),
                _ => None,
            })
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The map, if this is one.
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// A copy without map entries whose value is null and without maps
    /// and lists left empty by that (as a module would write it: a field
    /// left out, not set to null).
    pub fn without_nulls(&self) -> Value {
        match self {
            Value::Map(m) => Value::Map(
                m.iter()
                    .filter(|(_, v)| !matches!(v, Value::Null))
                    .map(|(k, v)| (k.clone(), v.without_nulls()))
                    .filter(|(_, v)| !matches!(v, Value::Map(m) if m.is_empty()))
                    .collect(),
            ),
            Value::List(l) => Value::List(l.iter().map(Value::without_nulls).collect()),
            other => other.clone(),
        }
    }

    /// SHA-256 of the whole value, compared like `==` compares (map keys
    /// in any order; secrets by their content, unknowns by their
    /// reference): a stand-in for a kept copy where only equality is asked
    /// later. It holds secret content in a digest, so it stays in memory
    /// and is never shown or written.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        self.feed(&mut h);
        h.finalize().into()
    }

    fn feed(&self, h: &mut sha2::Sha256) {
        use sha2::Digest;
        fn bytes(h: &mut sha2::Sha256, tag: u8, b: &[u8]) {
            h.update([tag]);
            h.update((b.len() as u64).to_le_bytes());
            h.update(b);
        }
        match self {
            Value::Null => h.update([0]),
            Value::Bool(b) => h.update([1, u8::from(*b)]),
            Value::Int(i) => bytes(h, 2, &i.to_le_bytes()),
            Value::Float(f) => bytes(h, 3, &f.to_bits().to_le_bytes()),
            Value::String(s) => bytes(h, 4, s.as_bytes()),
            Value::List(l) => {
                bytes(h, 5, &(l.len() as u64).to_le_bytes());
                for x in l {
                    x.feed(h);
                }
            }
            Value::Map(m) => {
                bytes(h, 6, &(m.len() as u64).to_le_bytes());
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                for k in keys {
                    bytes(h, 4, k.as_bytes());
                    m[k].feed(h);
                }
            }
            Value::Sensitive(s) => bytes(h, 7, s.expose()),
            Value::Unknown(r) => bytes(h, 8, r.as_bytes()),
        }
    }

    /// True when any leaf is [`Value::Unknown`].
    pub fn has_unknown(&self) -> bool {
        match self {
            Value::Unknown(_) => true,
            Value::List(l) => l.iter().any(Value::has_unknown),
            Value::Map(m) => m.values().any(Value::has_unknown),
            _ => false,
        }
    }

    /// True when any leaf is [`Value::Sensitive`].
    pub fn has_sensitive(&self) -> bool {
        match self {
            Value::Sensitive(_) => true,
            Value::List(l) => l.iter().any(Value::has_sensitive),
            Value::Map(m) => m.values().any(Value::has_sensitive),
            _ => false,
        }
    }
}

/// Serializes masked: serialization is for output, never for a provider.
impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::String(v) => s.serialize_str(v),
            Value::List(l) => {
                let mut seq = s.serialize_seq(Some(l.len()))?;
                for v in l {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Value::Sensitive(v) => v.serialize(s),
            Value::Unknown(_) => s.serialize_str(KNOWN_AFTER_APPLY),
        }
    }
}

/// `v` as canonical JSON: object keys sorted at every depth, no
/// whitespace (what digests and MACs are taken over; serde_json here keeps
/// insertion order, so two equal documents could otherwise differ).
pub fn canonical_json(v: &serde_json::Value) -> Vec<u8> {
    // Written out directly, keys sorted on the way: no sorted copy of the
    // whole document (a plan digest of 1,000 resources spent more time
    // copying than hashing).
    let mut out = Vec::new();
    write_canonical(v, &mut out);
    out
}

/// Appends `v` as [`canonical_json`] to `out`.
fn write_canonical(v: &serde_json::Value, out: &mut Vec<u8>) {
    match v {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).expect("a JSON string serialises");
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        serde_json::Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("a JSON value serialises"),
    }
}

/// Sorts the object keys of `v` at every depth.
pub fn sort_keys(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, serde_json::Value)> =
                std::mem::take(map).into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, mut v) in entries {
                sort_keys(&mut v);
                map.insert(k, v);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_is_the_compact_form_with_sorted_keys() {
        let v = serde_json::json!({"z": [{"b": 1, "a": "x\"y"}, null, 1.5, true],
            "a": {"d": {}, "c": []}, "é": "ü", "m": -3});
        let mut sorted = v.clone();
        sort_keys(&mut sorted);
        let expected = serde_json::to_vec(&sorted).unwrap();
        assert_eq!(canonical_json(&v), expected);
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            r#"{"a":{"c":[],"d":{}},"m":-3,"z":[{"a":"x\"y","b":1},null,1.5,true],"é":"ü"}"#
        );
    }

    #[test]
    fn digests_compare_like_equality() {
        let a = Value::from_json(serde_json::json!({"a": 1, "b": [true, "x", null, 1.5]}));
        let mut reordered = Map::new();
        reordered.insert("b".into(), a.get_path("b").unwrap().clone());
        reordered.insert("a".into(), Value::Int(1));
        assert_eq!(a, Value::Map(reordered.clone()));
        assert_eq!(a.digest(), Value::Map(reordered).digest());
        for other in [
            serde_json::json!({"a": 2, "b": [true, "x", null, 1.5]}),
            serde_json::json!({"a": 1, "b": [true, "x", null]}),
            serde_json::json!({"a": "1", "b": [true, "x", null, 1.5]}),
            serde_json::json!({"ab": 1, "b": [true, "x", null, 1.5]}),
        ] {
            assert_ne!(a.digest(), Value::from_json(other).digest());
        }
        let secret = |s: &str| Value::Sensitive(Sensitive::from_string(s.into()));
        assert_eq!(secret("p1").digest(), secret("p1").digest());
        assert_ne!(secret("p1").digest(), secret("p2").digest());
        assert_ne!(secret("p1").digest(), Value::String("p1".into()).digest());
        assert_ne!(
            Value::Unknown("r.a".into()).digest(),
            Value::String("r.a".into()).digest()
        );
    }

    fn sample() -> Value {
        let mut m = Map::new();
        m.insert("name".into(), Value::String("web".into()));
        m.insert(
            "password".into(),
            Value::Sensitive(Sensitive::from_string("pw".into())),
        );
        m.insert("vpc".into(), Value::Unknown("module.network.vpc.id".into()));
        Value::Map(m)
    }

    #[test]
    fn masked_json_hides_secrets_and_marks_unknowns() {
        let j = sample().to_json_masked();
        assert_eq!(j["password"], "(sensitive)");
        assert_eq!(j["vpc"], KNOWN_AFTER_APPLY);
        assert_eq!(serde_json::to_value(sample()).unwrap(), j);
    }

    #[test]
    fn exposed_json_refuses_unknowns() {
        let err = sample().to_json_exposed().unwrap_err();
        assert_eq!(
            err,
            Error::Unknown {
                path: ".vpc".into(),
                reference: "module.network.vpc.id".into()
            }
        );
    }

    #[test]
    fn spans_fall_back_to_the_nearest_ancestor() {
        let mut s = Spans::default();
        let o = |line| Origin {
            file: "m.yaml".into(),
            line,
            column: 1,
        };
        s.insert("", o(1));
        s.insert(key_path("spec", "containers"), o(5));
        assert_eq!(s.nearest("spec.containers[0].image"), Some(&o(5)));
        assert_eq!(s.nearest("metadata.name"), Some(&o(1)));
        assert_eq!(index_path("a", 2), "a[2]");
    }

    #[test]
    fn json_round_trip_and_paths() {
        let v = Value::from_json(serde_json::json!({"spec": {"replicas": 3, "ratio": 0.5}}));
        assert_eq!(v.get_path("spec.replicas"), Some(&Value::Int(3)));
        assert_eq!(v.to_json_exposed().unwrap()["spec"]["ratio"], 0.5);
    }
}
