//! Request bodies in `application/vnd.kubernetes.protobuf`, turned into the
//! JSON object the apiserver would have decoded.
//!
//! client-go's generated clientsets send built-in kinds as protobuf — that
//! is what `kubectl create configmap|secret|namespace|serviceaccount|
//! deployment|job|role|...` use — and never fall back to JSON: client-go
//! retries in JSON after a 415 only for CBOR bodies. So the simulator
//! decodes them, like a real apiserver, with the upstream schemas of the
//! pinned Go modules k8s.io/api and k8s.io/apimachinery (read at build
//! time by `proto/schemas.sh`, compiled by `build.rs`) and prost-reflect.
//!
//! The wire format: the magic `k8s\0`, then a `runtime.Unknown` whose
//! `typeMeta` names apiVersion and kind and whose `raw` is the object's
//! message (`k8s.io.api.<group>.<version>.<Kind>`). The JSON rendering
//! follows the Go types' JSON tags, which the `.proto` files do not carry;
//! `go-fields.txt` (generated from the Go types by `proto/schemas.sh`) supplies them:
//! inlined structs, the one renamed field, and the fields whose zero value
//! the Go JSON keeps (pointers and fields without `omitempty`). Go writes
//! every non-pointer field on the wire, so a zero value of any other
//! scalar field is left out, as `omitempty` would. Well-known types get
//! their Go JSON form: Time/MicroTime as RFC 3339, IntOrString as number
//! or string, Quantity as string, RawExtension/FieldsV1 as embedded JSON,
//! bytes as base64. A field the schema does not know is an error rather
//! than silently dropped.

use prost_reflect::prost::DecodeError;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, ReflectMessage, Value as Pb,
};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Version of k8s.io/api the schemas come from.
pub const SCHEMA_VERSION: &str = include_str!(concat!(env!("OUT_DIR"), "/proto/VERSION"));

const MAGIC: &[u8] = b"k8s\0";
const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/k8s-descriptors.bin"));
const GO_FIELDS: &str = include_str!(concat!(env!("OUT_DIR"), "/proto/go-fields.txt"));

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";
const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";
const RAW_EXTENSION: &str = "k8s.io.apimachinery.pkg.runtime.RawExtension";
const INT_OR_STRING: &str = "k8s.io.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "k8s.io.apimachinery.pkg.api.resource.Quantity";

/// Why a protobuf body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The embedded descriptors or `go-fields.txt` are unusable (a build
    /// problem, not the client's).
    #[error("kube-sim's protobuf schemas are unusable: {0}")]
    Schema(String),
    /// The body lacks the `k8s\0` prefix.
    #[error("the protobuf body does not start with the Kubernetes magic number \"k8s\\x00\"")]
    NoMagic,
    /// The `runtime.Unknown` envelope is malformed.
    #[error("the protobuf envelope (runtime.Unknown) is invalid")]
    Envelope(#[source] DecodeError),
    /// `contentEncoding` (compression) is set.
    #[error("protobuf bodies with contentEncoding {0:?} are not supported")]
    ContentEncoding(String),
    /// No schema of k8s.io/api has this kind.
    #[error("no protobuf schema for kind {kind:?} in {api_version:?}")]
    UnknownKind {
        /// `typeMeta.apiVersion`.
        api_version: String,
        /// `typeMeta.kind`.
        kind: String,
    },
    /// The object's message is malformed.
    #[error("the protobuf body is not a valid {message}")]
    Decode {
        /// Full message name.
        message: String,
        /// Cause.
        #[source]
        source: DecodeError,
    },
    /// A field number the schema does not have (a newer client).
    #[error("field number {number} of {message} is not in the protobuf schema of Kubernetes {}", SCHEMA_VERSION.trim())]
    UnknownField {
        /// Full message name.
        message: String,
        /// Field number.
        number: u32,
    },
    /// A RawExtension or FieldsV1 that does not hold JSON.
    #[error("{message} does not hold JSON")]
    RawNotJson {
        /// Full message name.
        message: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A type with no JSON rendering here.
    #[error("{0} is not supported in protobuf bodies")]
    Unsupported(String),
}

/// Go JSON facts about one message's fields (from `go-fields.txt`).
#[derive(Default)]
struct Facts {
    inline: HashSet<String>,
    keep_zero: HashSet<String>,
    json_name: HashMap<String, String>,
}

struct Schema {
    pool: DescriptorPool,
    facts: HashMap<String, Facts>,
}

fn schema() -> Result<&'static Schema, ProtoError> {
    static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();
    SCHEMA
        .get_or_init(load)
        .as_ref()
        .map_err(|e| ProtoError::Schema(e.clone()))
}

fn load() -> Result<Schema, String> {
    let pool = DescriptorPool::decode(DESCRIPTORS).map_err(|e| e.to_string())?;
    let mut facts: HashMap<String, Facts> = HashMap::new();
    for (i, line) in GO_FIELDS.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("go-fields.txt line {}: {line:?}", i + 1);
        let words: Vec<&str> = line.split_whitespace().collect();
        let (what, message, field) = match words.as_slice() {
            [what, message, field, ..] => (*what, *message, *field),
            _ => return Err(bad()),
        };
        let known = pool
            .get_message_by_name(message)
            .is_some_and(|m| m.get_field_by_name(field).is_some());
        if !known {
            return Err(format!("{}: no such message field", bad()));
        }
        let f = facts.entry(message.to_string()).or_default();
        match (what, words.get(3)) {
            ("inline", None) => f.inline.insert(field.to_string()),
            ("keep", None) => f.keep_zero.insert(field.to_string()),
            ("json", Some(name)) => f
                .json_name
                .insert(field.to_string(), name.to_string())
                .is_none(),
            _ => return Err(bad()),
        };
    }
    Ok(Schema { pool, facts })
}

/// Whether a `Content-Type` is the Kubernetes protobuf media type.
pub fn is_protobuf(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(MEDIA_TYPE))
}

/// Decodes a protobuf request body into the JSON object it encodes
/// (with `apiVersion` and `kind` from the envelope).
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let schema = schema()?;
    let rest = body.strip_prefix(MAGIC).ok_or(ProtoError::NoMagic)?;
    let envelope =
        DynamicMessage::decode(schema.message(UNKNOWN)?, rest).map_err(ProtoError::Envelope)?;
    let encoding = text(&envelope, "contentEncoding");
    if !encoding.is_empty() {
        return Err(ProtoError::ContentEncoding(encoding));
    }
    let type_meta = envelope.get_field_by_name("typeMeta");
    let type_meta = type_meta.as_deref().and_then(Pb::as_message);
    let api_version = type_meta.map(|t| text(t, "apiVersion")).unwrap_or_default();
    let kind = type_meta.map(|t| text(t, "kind")).unwrap_or_default();
    let desc = schema
        .kind(&api_version, &kind)
        .ok_or_else(|| ProtoError::UnknownKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
    let raw = envelope
        .get_field_by_name("raw")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let message = desc.full_name().to_string();
    let object = DynamicMessage::decode(desc, raw)
        .map_err(|source| ProtoError::Decode { message, source })?;
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!(kind));
    if let Some(Value::Object(fields)) = schema.message_json(&object)? {
        out.extend(fields);
    }
    Ok(Value::Object(out))
}

fn text(m: &DynamicMessage, field: &str) -> String {
    m.get_field_by_name(field)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn int(m: &DynamicMessage, field: &str) -> i64 {
    match m.get_field_by_name(field).as_deref() {
        Some(Pb::I64(n)) => *n,
        Some(Pb::I32(n)) => i64::from(*n),
        _ => 0,
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`, or `None` for the zero time (an empty
/// message: Go writes nothing for it and renders it as `null`).
fn time(m: &DynamicMessage, micro: bool) -> Option<Value> {
    m.fields().next()?;
    let s = crate::clock::rfc3339(int(m, "seconds"));
    if !micro {
        return Some(json!(s));
    }
    let micros = int(m, "nanos") / 1000;
    Some(json!(format!(
        "{}.{micros:06}Z",
        s.strip_suffix('Z').unwrap_or(&s)
    )))
}

impl Schema {
    fn message(&self, name: &str) -> Result<MessageDescriptor, ProtoError> {
        self.pool
            .get_message_by_name(name)
            .ok_or_else(|| ProtoError::Schema(format!("message {name} is missing")))
    }

    /// `k8s.io.api.<first label of the group, or core>.<version>.<Kind>`,
    /// else a `meta.k8s.io` kind such as DeleteOptions.
    fn kind(&self, api_version: &str, kind: &str) -> Option<MessageDescriptor> {
        if kind.is_empty() || kind.contains('.') {
            return None;
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let package = if group.is_empty() {
            "core"
        } else {
            group.split('.').next().unwrap_or(group)
        };
        self.pool
            .get_message_by_name(&format!("k8s.io.api.{package}.{version}.{kind}"))
            .or_else(|| self.pool.get_message_by_name(&format!("{META}.{kind}")))
    }

    /// A message as Go's JSON encoding would write it; `None` when Go
    /// writes `null` (the zero time), which callers leave out.
    fn message_json(&self, m: &DynamicMessage) -> Result<Option<Value>, ProtoError> {
        let desc = m.descriptor();
        let name = desc.full_name();
        if let Some(f) = m.unknown_fields().next() {
            return Err(ProtoError::UnknownField {
                message: name.to_string(),
                number: f.number(),
            });
        }
        let raw_json = |field: &str| -> Result<Option<Value>, ProtoError> {
            let raw = m
                .get_field_by_name(field)
                .and_then(|v| v.as_bytes().cloned())
                .unwrap_or_default();
            if raw.is_empty() {
                return Ok(None);
            }
            serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|source| ProtoError::RawNotJson {
                    message: name.to_string(),
                    source,
                })
        };
        match name.strip_prefix(META).and_then(|n| n.strip_prefix('.')) {
            Some("Time") => return Ok(time(m, false)),
            Some("MicroTime") => return Ok(time(m, true)),
            Some("FieldsV1") => return raw_json("Raw"),
            Some("Duration") => return Err(ProtoError::Unsupported(name.to_string())),
            _ => {}
        }
        match name {
            RAW_EXTENSION => return raw_json("raw"),
            QUANTITY => return Ok(Some(json!(text(m, "string")))),
            INT_OR_STRING => {
                return Ok(Some(if int(m, "type") == 1 {
                    json!(text(m, "strVal"))
                } else {
                    json!(int(m, "intVal"))
                }))
            }
            _ => {}
        }
        let none = Facts::default();
        let facts = self.facts.get(name).unwrap_or(&none);
        let mut fields: Vec<_> = m.fields().collect();
        fields.sort_by_key(|(f, _)| f.number());
        let mut out = Map::new();
        for (f, v) in fields {
            let field = f.name();
            if facts.inline.contains(field) {
                if let Pb::Message(inner) = v {
                    if let Some(Value::Object(inner)) = self.message_json(inner)? {
                        out.extend(inner);
                    }
                }
                continue;
            }
            if let Some(j) = self.value_json(v, facts.keep_zero.contains(field))? {
                let key = facts.json_name.get(field).map_or(field, String::as_str);
                out.insert(key.to_string(), j);
            }
        }
        Ok(Some(Value::Object(out)))
    }

    /// One value; `None` to leave the field out (a zero scalar of a
    /// non-pointer `omitempty` field, or the zero time).
    fn value_json(&self, v: &Pb, keep_zero: bool) -> Result<Option<Value>, ProtoError> {
        let scalar = |zero: bool, j: Value| Ok((!zero || keep_zero).then_some(j));
        match v {
            Pb::Bool(b) => scalar(!b, json!(b)),
            Pb::I32(n) => scalar(*n == 0, json!(n)),
            Pb::I64(n) => scalar(*n == 0, json!(n)),
            Pb::U32(n) => scalar(*n == 0, json!(n)),
            Pb::U64(n) => scalar(*n == 0, json!(n)),
            Pb::F32(n) => scalar(*n == 0.0, json!(n)),
            Pb::F64(n) => scalar(*n == 0.0, json!(n)),
            Pb::String(s) => scalar(s.is_empty(), json!(s)),
            Pb::Bytes(b) => scalar(b.is_empty(), json!(crate::store::base64(b))),
            Pb::EnumNumber(n) => scalar(*n == 0, json!(n)),
            Pb::Message(m) => self.message_json(m),
            Pb::List(items) => {
                let items = items
                    .iter()
                    .map(|i| Ok(self.value_json(i, true)?.unwrap_or(Value::Null)))
                    .collect::<Result<Vec<_>, ProtoError>>()?;
                Ok(Some(Value::Array(items)))
            }
            Pb::Map(entries) => {
                let mut sorted: Vec<(String, &Pb)> =
                    entries.iter().map(|(k, v)| (map_key(k), v)).collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                let mut out = Map::new();
                for (k, v) in sorted {
                    out.insert(k, self.value_json(v, true)?.unwrap_or(Value::Null));
                }
                Ok(Some(Value::Object(out)))
            }
        }
    }
}

fn map_key(k: &MapKey) -> String {
    match k {
        MapKey::String(s) => s.clone(),
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `kubectl create configmap web --from-literal=a=b` (v1.37.1)
    /// sends, as printed by `kubectl -v=8`.
    const CONFIGMAP: &[u8] = b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\x1d\x0a\x13\x0a\x03web\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\x12\x06\x0a\x01a\x12\x01b\x1a\x00\x22\x00";

    #[test]
    fn schema_and_go_fields_load() {
        let s = schema().unwrap();
        assert!(s.kind("apps/v1", "Deployment").is_some());
        assert!(s.kind("networking.k8s.io/v1", "Ingress").is_some());
        assert!(s
            .kind("rbac.authorization.k8s.io/v1", "ClusterRole")
            .is_some());
        assert!(s.kind("v1", "DeleteOptions").is_some());
        assert!(s.kind("example.com/v1", "Widget").is_none());
        assert!(s.facts["k8s.io.api.core.v1.Volume"]
            .inline
            .contains("volumeSource"));
        assert!(s.facts["k8s.io.api.core.v1.SecurityContext"]
            .keep_zero
            .contains("runAsUser"));
    }

    #[test]
    fn kubectl_configmap_body_decodes_like_the_apiserver() {
        assert_eq!(
            decode(CONFIGMAP).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"}, "data": {"a": "b"}})
        );
        assert!(matches!(decode(&CONFIGMAP[4..]), Err(ProtoError::NoMagic)));
        assert!(matches!(
            decode(&CONFIGMAP[..20]),
            Err(ProtoError::Envelope(_))
        ));
        assert!(is_protobuf(
            "application/vnd.kubernetes.protobuf; charset=x"
        ));
        assert!(!is_protobuf("application/json"));
    }

    /// Encodes a message for the tests (the inverse of `decode`).
    fn envelope(api_version: &str, kind: &str, object: &DynamicMessage) -> Vec<u8> {
        use prost_reflect::prost::Message;
        let s = schema().unwrap();
        let mut tm = DynamicMessage::new(
            s.message("k8s.io.apimachinery.pkg.runtime.TypeMeta")
                .unwrap(),
        );
        tm.set_field_by_name("apiVersion", Pb::String(api_version.into()));
        tm.set_field_by_name("kind", Pb::String(kind.into()));
        let mut u = DynamicMessage::new(s.message(UNKNOWN).unwrap());
        u.set_field_by_name("typeMeta", Pb::Message(tm));
        u.set_field_by_name("raw", Pb::Bytes(object.encode_to_vec().into()));
        let mut out = MAGIC.to_vec();
        out.extend(u.encode_to_vec());
        out
    }

    /// Builds a message from JSON in proto field names (prost-reflect's
    /// proto3 JSON mapping: int64 as strings, bytes as base64).
    fn message(name: &str, j: Value) -> DynamicMessage {
        let desc = schema().unwrap().message(name).unwrap();
        DynamicMessage::deserialize(desc, j).unwrap()
    }

    #[test]
    fn go_json_rules_apply() {
        let pod = message(
            "k8s.io.api.core.v1.Pod",
            json!({
                "metadata": {"name": "p", "namespace": "", "generation": "0",
                    "creationTimestamp": {"seconds": "1700000000"}},
                "spec": {
                    "containers": [{"name": "c", "image": "", "stdin": false,
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "resources": {"limits": {"cpu": {"string": "500m"}}},
                        "readinessProbe": {"handler": {"httpGet": {"port": {"type": "0", "intVal": 8080}}},
                            "periodSeconds": 0},
                        "securityContext": {"runAsUser": "0", "allowPrivilegeEscalation": false},
                        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {
                            "localObjectReference": {"name": "cm"}, "key": "k"}}}]}],
                    "volumes": [{"name": "v", "volumeSource": {"emptyDir": {}}}]
                }
            }),
        );
        let j = decode(&envelope("v1", "Pod", &pod)).unwrap();
        assert_eq!(
            j,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "creationTimestamp": "2023-11-14T22:13:20Z"},
                "spec": {
                    "volumes": [{"name": "v", "emptyDir": {}}],
                    "containers": [{"name": "c",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}],
                        "resources": {"limits": {"cpu": "500m"}},
                        "readinessProbe": {"httpGet": {"port": 8080}},
                        "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": false}}]
                }
            })
        );
        let secret = message(
            "k8s.io.api.core.v1.Secret",
            json!({"metadata": {"name": "s"}, "data": {"k": "aGk="}, "type": "Opaque"}),
        );
        assert_eq!(
            decode(&envelope("v1", "Secret", &secret)).unwrap()["data"],
            json!({"k": "aGk="})
        );
        let unknown = envelope("example.com/v1", "Widget", &secret);
        assert!(matches!(
            decode(&unknown),
            Err(ProtoError::UnknownKind { .. })
        ));
    }
}
