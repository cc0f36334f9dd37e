//! Pure rules about Kubernetes objects: kind strings, ownership marks,
//! normalisation for comparison, and reading API error statuses.
//!
//! Everything here works on plain values so the rules can be tested without
//! a server; the provider only moves objects between these functions and
//! the API.

use std::collections::BTreeSet;

use kube::core::Status;

use crate::provider::{labels, Claim, Owner, ResourceId};
use crate::sensitive::Sensitive;
use crate::value::{Map, Value};

/// A parsed `group/version/Kind` (core: `v1/ConfigMap`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gvk {
    /// Empty for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
}

impl Gvk {
    /// Parses a `Desired.kind` string; `None` when it has not 2 or 3 parts.
    pub fn parse(s: &str) -> Option<Gvk> {
        let parts: Vec<&str> = s.split('/').collect();
        let (group, version, kind) = match parts.as_slice() {
            [v, k] => ("", *v, *k),
            [g, v, k] => (*g, *v, *k),
            _ => return None,
        };
        if version.is_empty() || kind.is_empty() || (parts.len() == 3 && group.is_empty()) {
            return None;
        }
        Some(Gvk {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
        })
    }

    /// The manifest's `apiVersion` (`apps/v1`, `v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// True for `apiextensions.k8s.io/*/CustomResourceDefinition`.
    pub fn is_crd(&self) -> bool {
        self.group == "apiextensions.k8s.io" && self.kind == "CustomResourceDefinition"
    }

    /// True for core `v1/Secret`.
    pub fn is_secret(&self) -> bool {
        self.group.is_empty() && self.kind == "Secret"
    }
}

impl std::fmt::Display for Gvk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.api_version(), self.kind)
    }
}

/// The label selector that finds what one environment owns.
pub fn owned_selector(environment: &str) -> String {
    format!(
        "{}={},{}={}",
        labels::MANAGED_BY,
        labels::MANAGER,
        labels::ENVIRONMENT,
        environment
    )
}

/// `metadata.<field>` as a string.
pub fn meta_str<'a>(body: &'a Value, field: &str) -> Option<&'a str> {
    body.get_path("metadata")?.as_map()?.get(field)?.as_str()
}

/// `metadata.<field>` of a JSON object as a string.
pub fn json_meta_str<'a>(obj: &'a serde_json::Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// Whose an object is, by the labels `labels_of` (a JSON map) carries.
pub fn claim(labels_of: Option<&serde_json::Value>, owner: &Owner) -> Claim {
    claim_by(owner, |k| {
        labels_of
            .and_then(|l| l.get(k))
            .and_then(serde_json::Value::as_str)
    })
}

/// Whose a normalised body is, by its labels.
pub fn value_claim(body: &Value, owner: &Owner) -> Claim {
    let l = body.get_path("metadata.labels").and_then(Value::as_map);
    claim_by(owner, |k| l.and_then(|m| m.get(k)).and_then(Value::as_str))
}

/// Whose an object is, from its ownership labels as `label` reads them.
fn claim_by<'a>(owner: &Owner, label: impl Fn(&str) -> Option<&'a str>) -> Claim {
    owner.claim(
        label(labels::MANAGED_BY) == Some(labels::MANAGER),
        label(labels::ENVIRONMENT),
        label(labels::PROJECT),
    )
}

/// True when the object's annotation [`labels::PRUNE`] is `disabled`.
pub fn prune_disabled(obj: &serde_json::Value) -> bool {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(labels::PRUNE))
        .and_then(serde_json::Value::as_str)
        == Some("disabled")
}

/// The desired manifest with tidegate's ownership labels and annotation,
/// `apiVersion`/`kind` taken from the resource kind so the request path and
/// the body cannot disagree.
pub fn with_ownership(body: &Value, gvk: &Gvk, owner: &Owner, id: &ResourceId) -> Value {
    let mut root = body.as_map().cloned().unwrap_or_default();
    root.insert("apiVersion".into(), Value::String(gvk.api_version()));
    root.insert("kind".into(), Value::String(gvk.kind.clone()));
    let meta = entry_map(&mut root, "metadata");
    let l = entry_map(meta, "labels");
    l.insert(labels::MANAGED_BY.into(), text(labels::MANAGER));
    l.insert(labels::PROJECT.into(), text(&owner.project));
    l.insert(labels::ENVIRONMENT.into(), text(&owner.environment));
    l.insert(labels::MODULE.into(), text(&id.module));
    let a = entry_map(meta, "annotations");
    a.insert(labels::RESOURCE.into(), Value::String(id.to_string()));
    Value::Map(root)
}

/// Adds [`labels::APPLIED_HASH`] to a manifest made by [`with_ownership`]:
/// the SHA-256 of the manifest without it. Left out (`None`) for Secrets,
/// for manifests holding a secret value (a hash of a weak secret can be
/// guessed) and for manifests still waiting on a value; those are always
/// predicted by a server-side dry run.
pub fn with_applied_hash(manifest: &mut Value, gvk: &Gvk) -> Option<String> {
    use sha2::{Digest, Sha256};
    if gvk.is_secret() || manifest.has_sensitive() || manifest.has_unknown() {
        return None;
    }
    let json = manifest.to_json_exposed().ok()?;
    let hash = format!("{:x}", Sha256::digest(json.to_string().as_bytes()));
    let Value::Map(root) = manifest else {
        return None;
    };
    let meta = entry_map(root, "metadata");
    let a = entry_map(meta, "annotations");
    a.insert(labels::APPLIED_HASH.into(), Value::String(hash.clone()));
    Some(hash)
}

/// The [`labels::APPLIED_HASH`] annotation of an object as read from the API.
pub fn applied_hash(obj: &serde_json::Value) -> Option<&str> {
    obj.get("metadata")?
        .get("annotations")?
        .get(labels::APPLIED_HASH)?
        .as_str()
}

/// True when every leaf of `desired` is in `live` with the same value:
/// maps by key (the server may add defaults), lists element by element
/// with the same length. The hash annotation of `desired` is not compared
/// (normalised live objects do not carry it).
pub fn contained_in(desired: &Value, live: &Value) -> bool {
    contains(live, desired, 0)
}

fn contains(live: &Value, desired: &Value, depth: usize) -> bool {
    match (desired, live) {
        (Value::Map(d), Value::Map(l)) => d.iter().all(|(k, dv)| {
            // metadata.annotations.<applied hash>
            if depth == 2 && k == labels::APPLIED_HASH {
                return true;
            }
            let depth = match (depth, k.as_str()) {
                (0, "metadata") => 1,
                (1, "annotations") => 2,
                _ => 3,
            };
            match l.get(k) {
                Some(lv) => contains(lv, dv, depth),
                // Normalising drops an empty annotation map.
                None if depth == 2 => contains(&Value::Map(Map::new()), dv, depth),
                None => false,
            }
        }),
        (Value::List(d), Value::List(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| contains(lv, dv, 3))
        }
        (Value::Int(a), Value::Float(b)) | (Value::Float(b), Value::Int(a)) => (*a as f64) == *b,
        (d, l) => d == l,
    }
}

/// A string leaf.
fn text(s: &str) -> Value {
    Value::String(s.to_string())
}

/// The map under `key`, created (or replacing a non-map) when missing.
fn entry_map<'a>(m: &'a mut Map, key: &str) -> &'a mut Map {
    let slot = m
        .entry(key.to_string())
        .or_insert_with(|| Value::Map(Map::new()));
    if !matches!(slot, Value::Map(_)) {
        *slot = Value::Map(Map::new());
    }
    match slot {
        Value::Map(inner) => inner,
        _ => unreachable!("just made a map"),
    }
}

/// `desired` cut to the fields the live object has, each at its live
/// value (a list taken whole): what `tidegate import` applies so that
/// tidegate manages the fields Git declares without changing one.
/// `metadata.name` and `metadata.namespace` are kept as declared.
pub fn at_live_values(desired: &Value, live: &Value) -> Value {
    fn cut(d: &Value, l: &Value) -> Option<Value> {
        match (d, l) {
            (Value::Map(dm), Value::Map(lm)) => {
                let mut out = Map::new();
                for (k, dv) in dm {
                    if let Some(v) = lm.get(k).and_then(|lv| cut(dv, lv)) {
                        out.insert(k.clone(), v);
                    }
                }
                Some(Value::Map(out))
            }
            (_, Value::Null) => None,
            (_, l) => Some(l.clone()),
        }
    }
    let mut out = cut(desired, live).unwrap_or_else(|| Value::Map(Map::new()));
    if let (Value::Map(o), Some(Value::Map(dmeta))) =
        (&mut out, desired.as_map().and_then(|m| m.get("metadata")))
    {
        let meta = o
            .entry("metadata".to_string())
            .or_insert_with(|| Value::Map(Map::new()));
        if let Value::Map(meta) = meta {
            for key in ["name", "namespace"] {
                if let Some(v) = dmeta.get(key) {
                    meta.insert(key.to_string(), v.clone());
                }
            }
        }
    }
    out
}

/// The resource id recorded on a live object: the `tidegate.dev/resource`
/// annotation, split after the module label's value (module instance names
/// and resource names may both contain dots).
pub fn resource_id(obj: &serde_json::Value) -> Option<ResourceId> {
    let meta = obj.get("metadata")?;
    let annotation = meta.get("annotations")?.get(labels::RESOURCE)?.as_str()?;
    let module = meta
        .get("labels")
        .and_then(|l| l.get(labels::MODULE))
        .and_then(serde_json::Value::as_str);
    parse_resource_id(annotation, module)
}

/// Splits `<module>.<name>`, preferring the known module prefix.
pub fn parse_resource_id(s: &str, module: Option<&str>) -> Option<ResourceId> {
    if let Some(m) = module {
        if let Some(name) = s.strip_prefix(m).and_then(|r| r.strip_prefix('.')) {
            if !name.is_empty() {
                return Some(ResourceId {
                    module: m.into(),
                    name: name.into(),
                });
            }
        }
    }
    let (module, name) = s.split_once('.')?;
    (!module.is_empty() && !name.is_empty()).then(|| ResourceId {
        module: module.into(),
        name: name.into(),
    })
}

/// The path and reference of the first [`Value::Unknown`] leaf.
pub fn first_unknown(v: &Value, path: &str) -> Option<(String, String)> {
    match v {
        Value::Unknown(r) => Some((path.to_string(), r.clone())),
        Value::List(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| first_unknown(x, &crate::value::index_path(path, i))),
        Value::Map(m) => m
            .iter()
            .find_map(|(k, x)| first_unknown(x, &crate::value::key_path(path, k))),
        _ => None,
    }
}

/// Field managers of the cluster itself: controllers and the API server
/// set these fields, no author wrote them.
const SYSTEM_MANAGERS: &[&str] = &[
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-apiserver",
    "cloud-controller-manager",
];

/// The part of a listed object its authors set, by its
/// `metadata.managedFields`: the union of the fields of every manager but
/// the cluster's own controllers and the `status` subresource, with
/// `apiVersion`, `kind`, `metadata.name` and `metadata.namespace` always
/// kept. Defaulted fields no one set are left out, so a module generated
/// from it reads like one a person wrote. An object without usable
/// managed fields is returned whole.
pub fn authored(obj: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    // `kubectl apply` (client side) keeps what its author wrote: the
    // fields it names, at their live values.
    let last_applied = obj
        .pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration")
        .and_then(J::as_str)
        .and_then(|s| serde_json::from_str::<J>(s).ok())
        .filter(J::is_object);
    if let Some(written) = last_applied {
        return cut_to(obj, &written).unwrap_or_else(|| obj.clone());
    }
    let entries = obj
        .pointer("/metadata/managedFields")
        .and_then(J::as_array)
        .into_iter()
        .flatten()
        .filter(|e| {
            e.get("subresource")
                .and_then(J::as_str)
                .is_none_or(str::is_empty)
                && !e
                    .get("manager")
                    .and_then(J::as_str)
                    .is_some_and(|m| SYSTEM_MANAGERS.contains(&m))
        })
        .filter_map(|e| e.get("fieldsV1"))
        .cloned()
        .collect::<Vec<_>>();
    if entries.is_empty() {
        return obj.clone();
    }
    let mut set = J::Object(Default::default());
    for e in &entries {
        merge_fields(&mut set, e);
    }
    let mut out = project(obj, &set).unwrap_or_else(|| J::Object(Default::default()));
    // What the API server adds to every Namespace in its creator's name.
    if obj.get("kind").and_then(J::as_str) == Some("Namespace") {
        if let Some(J::Object(l)) = out.pointer_mut("/metadata/labels") {
            l.remove("kubernetes.io/metadata.name");
        }
        if let Some(J::Object(spec)) = out.get_mut("spec") {
            if spec.get("finalizers") == Some(&serde_json::json!(["kubernetes"])) {
                spec.remove("finalizers");
            }
        }
        if out
            .get("spec")
            .and_then(J::as_object)
            .is_some_and(|m| m.is_empty())
        {
            if let J::Object(root) = &mut out {
                root.remove("spec");
            }
        }
    }
    if let J::Object(root) = &mut out {
        for key in ["apiVersion", "kind"] {
            if let Some(v) = obj.get(key) {
                root.insert(key.into(), v.clone());
            }
        }
        let meta = root
            .entry("metadata")
            .or_insert_with(|| J::Object(Default::default()));
        if let J::Object(meta) = meta {
            for key in ["name", "namespace"] {
                if let Some(v) = obj.pointer(&format!("/metadata/{key}")) {
                    meta.insert(key.into(), v.clone());
                }
            }
        }
    }
    out
}

/// `live` cut to the map keys `written` has (lists and scalars whole).
fn cut_to(live: &serde_json::Value, written: &serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    match (live, written) {
        (J::Object(l), J::Object(w)) => Some(J::Object(
            w.iter()
                .filter_map(|(k, wv)| Some((k.clone(), cut_to(l.get(k)?, wv)?)))
                .collect(),
        )),
        (J::Null, _) => None,
        (l, _) => Some(l.clone()),
    }
}

/// Adds the field set `more` (fieldsV1) to `set`.
fn merge_fields(set: &mut serde_json::Value, more: &serde_json::Value) {
    let (serde_json::Value::Object(a), serde_json::Value::Object(b)) = (set, more) else {
        return;
    };
    for (k, v) in b {
        merge_fields(
            a.entry(k.clone())
                .or_insert_with(|| serde_json::Value::Object(Default::default())),
            v,
        );
    }
}

/// `v` cut to the field set `set` (fieldsV1: `f:<field>`, list items by
/// `k:<keys>`, `v:<value>` or `i:<index>`, `.` for the item itself); a
/// leaf of the set keeps the whole value.
fn project(v: &serde_json::Value, set: &serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    let children: Vec<(&String, &J)> = match set {
        J::Object(m) => m.iter().filter(|(k, _)| k.as_str() != ".").collect(),
        _ => Vec::new(),
    };
    if children.is_empty() {
        return Some(v.clone());
    }
    match v {
        J::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, sub) in children {
                let Some(field) = k.strip_prefix("f:") else {
                    continue;
                };
                if let Some(x) = m.get(field).and_then(|x| project(x, sub)) {
                    out.insert(field.to_string(), x);
                }
            }
            Some(J::Object(out))
        }
        J::Array(items) => {
            let mut out = Vec::new();
            for (k, sub) in children {
                let at = if let Some(keys) = k.strip_prefix("k:") {
                    let Ok(J::Object(keys)) = serde_json::from_str::<J>(keys) else {
                        continue;
                    };
                    // Exactly, else leaving out keys the server defaults
                    // (a port's `protocol`) where the object lacks them.
                    items
                        .iter()
                        .position(|item| keys.iter().all(|(f, want)| item.get(f) == Some(want)))
                        .or_else(|| {
                            items.iter().position(|item| {
                                keys.iter().any(|(f, _)| item.get(f).is_some())
                                    && keys
                                        .iter()
                                        .all(|(f, want)| item.get(f).is_none_or(|v| v == want))
                            })
                        })
                } else if let Some(value) = k.strip_prefix("v:") {
                    let Ok(want) = serde_json::from_str::<J>(value) else {
                        continue;
                    };
                    items.iter().position(|item| *item == want)
                } else if let Some(i) = k.strip_prefix("i:") {
                    i.parse::<usize>().ok().filter(|i| *i < items.len())
                } else {
                    None
                };
                if let Some(at) = at {
                    if let Some(x) = project(&items[at], sub) {
                        out.push((at, x));
                    }
                }
            }
            // In the object's own order.
            out.sort_by_key(|(at, _)| *at);
            Some(J::Array(out.into_iter().map(|(_, x)| x).collect()))
        }
        other => Some(other.clone()),
    }
}

/// Metadata fields the server owns; they differ between reads of the same
/// object and never come from Git.
const SERVER_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Annotations written by servers and clients rather than by the author,
/// and tidegate's applied hash and import mark (kept in [`crate::provider::Live`]'s
/// attributes instead, so it never shows in a diff).
const SERVER_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    labels::APPLIED_HASH,
    labels::IMPORTED,
];

/// An object as read from the API, made comparable with another read of the
/// same object and with a dry-run result: server-owned metadata and
/// `status` dropped, `apiVersion`/`kind` set (list items may lack them),
/// empty label/annotation maps removed, and Secret `data`/`stringData`
/// values wrapped as [`Value::Sensitive`] (they stay in their wire form,
/// base64 for `data`).
pub fn normalise(mut obj: serde_json::Value, gvk: &Gvk) -> Value {
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
        if let Some(meta) = o.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            for f in SERVER_METADATA {
                meta.remove(*f);
            }
            if let Some(a) = meta.get_mut("annotations").and_then(|a| a.as_object_mut()) {
                for f in SERVER_ANNOTATIONS {
                    a.remove(*f);
                }
            }
            for k in ["annotations", "labels"] {
                if meta
                    .get(k)
                    .is_some_and(|v| v.is_null() || v.as_object().is_some_and(|m| m.is_empty()))
                {
                    meta.remove(k);
                }
            }
        }
    }
    let mut v = Value::from_json(obj);
    if let Value::Map(m) = &mut v {
        let mut head = Map::new();
        head.insert("apiVersion".into(), Value::String(gvk.api_version()));
        head.insert("kind".into(), Value::String(gvk.kind.clone()));
        for (k, val) in std::mem::take(m) {
            if k != "apiVersion" && k != "kind" {
                head.insert(k, val);
            }
        }
        *m = head;
        if gvk.is_secret() {
            for field in ["data", "stringData"] {
                if let Some(Value::Map(data)) = m.get_mut(field) {
                    for val in data.values_mut() {
                        mask(val);
                    }
                }
            }
        }
    }
    v
}

/// Wraps a plain leaf as sensitive.
fn mask(v: &mut Value) {
    if let Value::String(s) = v {
        *v = Value::Sensitive(Sensitive::from_string(std::mem::take(s)));
    }
}

/// The fields an API error names as immutable, one reason each; `None`
/// when the error is not about immutable fields.
pub fn immutable_reasons(status: &Status) -> Option<Vec<String>> {
    if status.code != 422 {
        return None;
    }
    let mut reasons: Vec<String> = status
        .details
        .iter()
        .flat_map(|d| d.causes.iter())
        .filter(|c| is_immutable_text(&c.message))
        .map(|c| {
            if c.field.is_empty() {
                c.message.clone()
            } else {
                format!("{}: {}", c.field, immutable_phrase(&c.message))
            }
        })
        .collect();
    if reasons.is_empty() && is_immutable_text(&status.message) {
        reasons = immutable_fields_in_message(&status.message);
    }
    (!reasons.is_empty()).then_some(reasons)
}

fn is_immutable_text(s: &str) -> bool {
    s.contains("immutable") || s.contains("may not change once set")
}

fn immutable_phrase(s: &str) -> &str {
    if s.contains("may not change once set") {
        "may not change once set"
    } else {
        "field is immutable"
    }
}

/// Reasons from a message like `Service "web" is invalid:
/// spec.clusterIP: Invalid value: "10.0.0.1": field is immutable`
/// (several field errors are joined by `, ` in one message).
fn immutable_fields_in_message(message: &str) -> Vec<String> {
    let tail = message
        .split_once(" is invalid: ")
        .map(|(_, t)| t)
        .unwrap_or(message);
    let mut out: Vec<String> = tail
        .split(", ")
        .filter(|part| is_immutable_text(part))
        .filter_map(|part| part.split_once(": ").map(|(field, _)| field.trim()))
        .filter(|field| !field.is_empty() && !field.contains(' '))
        .map(|field| format!("{field}: field is immutable"))
        .collect();
    if out.is_empty() {
        out.push(message.to_string());
    }
    out
}

/// The other field managers a 409 apply conflict names, each with the
/// fields it owns (`kubectl (.spec.replicas)`), from the status causes or,
/// failing that, the quoted names in the message.
pub fn conflict_managers(status: &Status) -> String {
    let mut managers: Vec<(String, BTreeSet<String>)> = Vec::new();
    for cause in status.details.iter().flat_map(|d| d.causes.iter()) {
        for name in quoted(&cause.message) {
            add_manager(&mut managers, name, &cause.field);
        }
    }
    if managers.is_empty() {
        for name in quoted(&status.message) {
            add_manager(&mut managers, name, "");
        }
    }
    if managers.is_empty() {
        return "(unnamed)".into();
    }
    managers
        .into_iter()
        .map(|(name, fields)| {
            if fields.is_empty() {
                name
            } else {
                format!(
                    "{name} ({})",
                    fields.into_iter().collect::<Vec<_>>().join(", ")
                )
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adds `field` under manager `name`, keeping first-seen order of managers.
fn add_manager(managers: &mut Vec<(String, BTreeSet<String>)>, name: String, field: &str) {
    let i = match managers.iter().position(|(n, _)| *n == name) {
        Some(i) => i,
        None => {
            managers.push((name, BTreeSet::new()));
            managers.len() - 1
        }
    };
    if !field.is_empty() {
        managers[i].1.insert(field.to_string());
    }
}

/// Strings in double quotes after `conflict with`/`conflicts with`.
fn quoted(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("with \"") {
        rest = &rest[i + 6..];
        if let Some(end) = rest.find('"') {
            out.push(rest[..end].to_string());
            rest = &rest[end + 1..];
        } else {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value as J};

    fn owner(environment: &str) -> Owner {
        Owner {
            project: "shop".into(),
            environment: environment.into(),
        }
    }

    fn gvk(s: &str) -> Gvk {
        Gvk::parse(s).unwrap()
    }

    #[test]
    fn the_applied_hash_is_stable_and_never_made_of_secrets() {
        let id = ResourceId {
            module: "app".into(),
            name: "config".into(),
        };
        let cm = gvk("v1/ConfigMap");
        let body = Value::from_json(json!({"metadata": {"name": "c"}, "data": {"a": "1"}}));
        let mut one = with_ownership(&body, &cm, &owner("dev"), &id);
        let mut two = with_ownership(&body, &cm, &owner("dev"), &id);
        let h1 = with_applied_hash(&mut one, &cm).expect("a ConfigMap gets a hash");
        assert_eq!(with_applied_hash(&mut two, &cm), Some(h1.clone()));
        assert_eq!(h1.len(), 64);
        let changed = Value::from_json(json!({"metadata": {"name": "c"}, "data": {"a": "2"}}));
        let mut three = with_ownership(&changed, &cm, &owner("dev"), &id);
        assert_ne!(with_applied_hash(&mut three, &cm), Some(h1));

        let secret = gvk("v1/Secret");
        let mut s = with_ownership(&body, &secret, &owner("dev"), &id);
        assert_eq!(with_applied_hash(&mut s, &secret), None);
        let mut m = body.as_map().unwrap().clone();
        m.insert(
            "data".into(),
            Value::Sensitive(Sensitive::new(b"hunter2".to_vec())),
        );
        let mut with_secret = with_ownership(&Value::Map(m), &cm, &owner("dev"), &id);
        assert_eq!(with_applied_hash(&mut with_secret, &cm), None);
        assert!(applied_hash(&json!({"metadata": {}})).is_none());
        assert_eq!(
            applied_hash(
                &json!({"metadata": {"annotations": {"tidegate.dev/applied-hash": "ab"}}})
            ),
            Some("ab")
        );
    }

    #[test]
    fn containment_allows_server_defaults_but_not_changed_or_missing_fields() {
        let desired = Value::from_json(json!({
            "metadata": {"name": "w", "annotations": {"tidegate.dev/applied-hash": "x"}},
            "spec": {"replicas": 2, "ports": [{"port": 80}]}
        }));
        let defaulted = Value::from_json(json!({
            "metadata": {"name": "w", "uidish": "u"},
            "spec": {"replicas": 2, "ports": [{"port": 80, "protocol": "TCP"}], "paused": false}
        }));
        assert!(contained_in(&desired, &defaulted));
        let changed = Value::from_json(json!({
            "metadata": {"name": "w"},
            "spec": {"replicas": 3, "ports": [{"port": 80}]}
        }));
        assert!(!contained_in(&desired, &changed));
        let extra_item = Value::from_json(json!({
            "metadata": {"name": "w"},
            "spec": {"replicas": 2, "ports": [{"port": 80}, {"port": 81}]}
        }));
        assert!(!contained_in(&desired, &extra_item));
        let missing = Value::from_json(json!({"metadata": {"name": "w"}, "spec": {}}));
        assert!(!contained_in(&desired, &missing));
        // Only metadata.annotations' hash key is skipped, not a key of that
        // name anywhere else.
        let nested = Value::from_json(json!({"data": {"tidegate.dev/applied-hash": "x"}}));
        assert!(!contained_in(
            &nested,
            &Value::from_json(json!({"data": {}}))
        ));
    }

    #[test]
    fn kinds_parse_with_and_without_group() {
        assert_eq!(
            gvk("apps/v1/Deployment"),
            Gvk {
                group: "apps".into(),
                version: "v1".into(),
                kind: "Deployment".into()
            }
        );
        assert_eq!(gvk("v1/ConfigMap").api_version(), "v1");
        assert_eq!(gvk("apps/v1/Deployment").to_string(), "apps/v1/Deployment");
        for bad in ["ConfigMap", "a/b/c/d", "/v1/X", "v1/", ""] {
            assert_eq!(Gvk::parse(bad), None, "{bad}");
        }
        assert!(gvk("apiextensions.k8s.io/v1/CustomResourceDefinition").is_crd());
        assert!(gvk("v1/Secret").is_secret());
        assert!(!gvk("example.com/v1/Secret").is_secret());
    }

    #[test]
    fn ownership_marks_are_added_and_win() {
        let body = Value::from_json(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "labels": {"app": "x", "tidegate.dev/environment": "prod"}},
            "data": {"k": "v"}
        }));
        let id = ResourceId {
            module: "web".into(),
            name: "config".into(),
        };
        let out = with_ownership(&body, &gvk("v1/ConfigMap"), &owner("dev"), &id).to_json_masked();
        assert_eq!(out["metadata"]["labels"]["app"], "x");
        assert_eq!(out["metadata"]["labels"]["tidegate.dev/environment"], "dev");
        assert_eq!(
            out["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "tidegate"
        );
        assert_eq!(out["metadata"]["labels"]["tidegate.dev/module"], "web");
        assert_eq!(
            out["metadata"]["annotations"]["tidegate.dev/resource"],
            "web.config"
        );
        assert_eq!(out["metadata"]["labels"]["tidegate.dev/project"], "shop");
        let labels = Some(&out["metadata"]["labels"]);
        assert_eq!(claim(labels, &owner("dev")), Claim::Ours);
        assert_eq!(
            claim(labels, &owner("prod")),
            Claim::Foreign(Owner {
                project: "shop".into(),
                environment: "dev".into()
            })
        );
        assert_eq!(claim(None, &owner("dev")), Claim::Unmanaged);
        assert_eq!(
            value_claim(&Value::from_json(out.clone()), &owner("dev")),
            Claim::Ours
        );
        let mut legacy = out["metadata"]["labels"].clone();
        legacy
            .as_object_mut()
            .unwrap()
            .remove("tidegate.dev/project");
        assert_eq!(claim(Some(&legacy), &owner("dev")), Claim::Legacy);
        let other = Owner::new("blog", "dev");
        assert!(matches!(claim(labels, &other), Claim::Foreign(o) if o.project == "shop"));
    }

    #[test]
    fn resource_ids_split_after_the_module_label() {
        let obj = json!({"metadata": {
            "labels": {"tidegate.dev/module": "web.eu"},
            "annotations": {"tidegate.dev/resource": "web.eu.config"}}});
        assert_eq!(
            resource_id(&obj),
            Some(ResourceId {
                module: "web.eu".into(),
                name: "config".into()
            })
        );
        assert_eq!(
            parse_resource_id("net.vpc", None),
            Some(ResourceId {
                module: "net".into(),
                name: "vpc".into()
            })
        );
        assert_eq!(parse_resource_id("novalue", None), None);
        assert_eq!(resource_id(&json!({"metadata": {}})), None);
    }

    #[test]
    fn normalise_drops_server_fields_and_masks_secrets() {
        let obj = json!({
            "metadata": {
                "name": "s", "namespace": "default", "uid": "u", "resourceVersion": "7",
                "generation": 2, "creationTimestamp": "2026-01-01T00:00:00Z",
                "managedFields": [{"manager": "tidegate"}],
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "labels": {"a": "b"}
            },
            "type": "Opaque",
            "data": {"password": "aHVudGVyMg=="},
            "status": {"x": 1}
        });
        let v = normalise(obj, &gvk("v1/Secret"));
        let keys: Vec<&String> = v.as_map().unwrap().keys().collect();
        assert_eq!(keys, ["apiVersion", "kind", "metadata", "type", "data"]);
        let meta = v.get_path("metadata").unwrap().as_map().unwrap();
        let meta_keys: Vec<&String> = meta.keys().collect();
        assert_eq!(meta_keys, ["name", "namespace", "labels"]);
        assert!(matches!(
            v.get_path("data.password"),
            Some(Value::Sensitive(_))
        ));
        let printed = format!("{v:?} {}", v.to_json_masked());
        assert!(!printed.contains("aHVudGVyMg"), "{printed}");
    }

    #[test]
    fn authored_keeps_what_the_authors_set_and_drops_defaults_and_controllers() {
        let obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u", "generation": 3,
                "labels": {"app": "web"},
                "annotations": {"deployment.kubernetes.io/revision": "2", "team": "a"},
                "managedFields": [
                    {"manager": "kubectl-client-side-apply", "operation": "Update",
                     "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}},
                                                 "f:annotations": {".": {}, "f:team": {}}},
                                  "f:spec": {"f:replicas": {}, "f:selector": {},
                                             "f:template": {"f:spec": {"f:containers": {
                                                 "k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {},
                                                     "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}}}}}}},
                    {"manager": "kube-controller-manager", "operation": "Update",
                     "fieldsV1": {"f:metadata": {"f:annotations": {"f:deployment.kubernetes.io/revision": {}}}}},
                    {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
                     "fieldsV1": {"f:status": {"f:replicas": {}}}}
                ]
            },
            "spec": {
                "replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "progressDeadlineSeconds": 600,
                "template": {"spec": {"dnsPolicy": "ClusterFirst", "containers": [
                    {"name": "side", "image": "s"},
                    {"name": "web", "image": "nginx", "imagePullPolicy": "Always",
                     "ports": [{"containerPort": 80, "protocol": "TCP"}]}
                ]}}
            },
            "status": {"replicas": 2}
        });
        let got = normalise(authored(&obj), &gvk("apps/v1/Deployment"));
        assert_eq!(
            got.to_json_masked(),
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"},
                             "annotations": {"team": "a"}},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                         "template": {"spec": {"containers": [
                             {"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}
                         ]}}}
            })
        );
        // Applied by `kubectl apply`: what its author wrote, at live values.
        let applied = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "namespace": "n", "uid": "u",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration":
                    "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"s\",\"namespace\":\"n\"},\"spec\":{\"ports\":[{\"port\":80}],\"selector\":{\"app\":\"old\"}}}"},
                "managedFields": [{"manager": "kubectl-client-side-apply", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"clusterIP": "10.0.0.9", "ports": [{"port": 80, "protocol": "TCP"}],
                     "selector": {"app": "new"}, "type": "ClusterIP"}});
        assert_eq!(
            normalise(authored(&applied), &gvk("v1/Service")).to_json_masked(),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "n"},
                   "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "new"}}})
        );
        // Without managed fields: the whole object (normalise drops the
        // server's parts).
        let bare = json!({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "c", "uid": "u"}, "data": {"a": "1"}});
        assert_eq!(
            normalise(authored(&bare), &gvk("v1/ConfigMap")).to_json_masked(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}})
        );
    }

    #[test]
    fn sensitive_values_compare_by_content() {
        let a = normalise(json!({"data": {"p": "YQ=="}}), &gvk("v1/Secret"));
        let b = normalise(json!({"data": {"p": "YQ=="}}), &gvk("v1/Secret"));
        let c = normalise(json!({"data": {"p": "Yg=="}}), &gvk("v1/Secret"));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    fn status(code: u16, message: &str, causes: Vec<(&str, &str)>) -> Status {
        let causes: Vec<J> = causes
            .into_iter()
            .map(|(field, message)| json!({"reason": "FieldValueInvalid", "message": message, "field": field}))
            .collect();
        serde_json::from_value(json!({
            "status": "Failure", "code": code, "message": message, "reason": "Invalid",
            "details": {"causes": causes}
        }))
        .unwrap()
    }

    #[test]
    fn immutable_fields_are_found_in_causes_or_message() {
        let s = status(
            422,
            "x",
            vec![("spec.selector", "Invalid value: {}: field is immutable")],
        );
        assert_eq!(
            immutable_reasons(&s),
            Some(vec!["spec.selector: field is immutable".to_string()])
        );
        let s = status(
            422,
            "Service \"web\" is invalid: spec.clusterIP: Invalid value: \"10.0.0.9\": field is immutable",
            vec![],
        );
        assert_eq!(
            immutable_reasons(&s),
            Some(vec!["spec.clusterIP: field is immutable".to_string()])
        );
        assert_eq!(immutable_reasons(&status(422, "bad port", vec![])), None);
        assert_eq!(immutable_reasons(&status(409, "immutable", vec![])), None);
    }

    #[test]
    fn conflicts_name_the_other_managers_and_fields() {
        let s = status(
            409,
            "Apply failed with 2 conflicts: conflicts with \"kubectl\"",
            vec![
                (".data.a", "conflict with \"kubectl\""),
                (".data.b", "conflict with \"kubectl\""),
                (".spec.x", "conflict with \"helm\" using v1"),
            ],
        );
        assert_eq!(
            conflict_managers(&s),
            "kubectl (.data.a, .data.b), helm (.spec.x)"
        );
        let s = status(
            409,
            "Apply failed with 1 conflict: conflict with \"other\": .data.k",
            vec![],
        );
        assert_eq!(conflict_managers(&s), "other");
    }
}
