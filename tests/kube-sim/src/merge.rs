//! How patch bodies combine with stored objects: JSON merge patch
//! (RFC 7386), strategic merge patch and the merge half of server-side
//! apply. Without OpenAPI schemas the simulator knows the merge keys of the
//! lists a reconciler writes (containers, env, ports, volumes, conditions,
//! ...) by field name; every other list is atomic, as in a CRD without
//! `x-kubernetes-list-type`.

use serde_json::{Map, Value};

/// Which merge semantics to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// RFC 7386: maps merge, `null` deletes, lists replace.
    Merge,
    /// Strategic merge patch: like `Merge`, but keyed lists merge by key and
    /// `$patch: delete` items remove the matching element.
    Strategic,
    /// Server-side apply: like `Strategic`, without the `$` directives.
    Apply,
}

/// Names of the key fields of a keyed list, chosen by the field name and the
/// items it holds; `None` means the list is atomic.
pub fn list_keys(field: &str, items: &[Value]) -> Option<&'static [&'static str]> {
    let keys: &'static [&'static str] = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => &["name"],
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => {
            &["containerPort", "protocol"]
        }
        "ports" => &["port", "protocol"],
        "volumeMounts" => &["mountPath"],
        "conditions" => &["type"],
        "ownerReferences" => &["uid"],
        "hostAliases" => &["ip"],
        _ => return None,
    };
    let all_keyed = items
        .iter()
        .all(|i| i.is_object() && i.get(keys[0]).is_some());
    all_keyed.then_some(keys)
}

/// Whether a list of scalars is a set (`x-kubernetes-list-type: set`).
pub fn is_set_list(field: &str) -> bool {
    field == "finalizers"
}

/// The key of one keyed-list item, with `protocol` defaulted to `TCP` the way
/// the apiserver's defaulting would have filled it in.
pub fn item_key(item: &Value, keys: &[&str]) -> Map<String, Value> {
    keys.iter()
        .filter_map(|k| match item.get(*k) {
            Some(v) => Some((k.to_string(), v.clone())),
            None if *k == "protocol" => Some((k.to_string(), Value::from("TCP"))),
            None => None,
        })
        .collect()
}

/// Applies `patch` onto `target` in place.
pub fn merge(target: &mut Value, patch: &Value, mode: Mode) {
    let Some(patch_map) = patch.as_object() else {
        *target = strip(patch, mode);
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let map = target.as_object_mut().expect("made an object above");
    for (k, pv) in patch_map {
        if mode != Mode::Merge && k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            map.remove(k);
            continue;
        }
        match (map.get_mut(k), pv) {
            (Some(tv @ Value::Object(_)), Value::Object(_)) => merge(tv, pv, mode),
            (Some(Value::Array(tl)), Value::Array(pl)) if mode != Mode::Merge => {
                merge_list(k, tl, pl, mode)
            }
            _ => {
                map.insert(k.clone(), strip(pv, mode));
            }
        }
    }
}

/// Removes `null`s (and `$` directives) from a value being inserted whole.
fn strip(v: &Value, mode: Mode) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !(v.is_null() || mode != Mode::Merge && k.starts_with('$')))
                .map(|(k, v)| (k.clone(), strip(v, mode)))
                .collect(),
        ),
        Value::Array(items) if mode != Mode::Merge => Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").and_then(Value::as_str) != Some("delete"))
                .map(|i| strip(i, mode))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn merge_list(field: &str, target: &mut Vec<Value>, patch: &[Value], mode: Mode) {
    let all: Vec<Value> = target.iter().chain(patch).cloned().collect();
    let Some(keys) = list_keys(field, &all) else {
        *target = patch.iter().map(|p| strip(p, mode)).collect();
        return;
    };
    for item in patch {
        let key = item_key(item, keys);
        let pos = target.iter().position(|t| item_key(t, keys) == key);
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                target.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => merge(&mut target[i], item, mode),
            (None, false) => target.push(strip(item, mode)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_replaces_lists_and_deletes_nulls() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge(
            &mut t,
            &json!({"a": {"b": null, "d": 3}, "l": [3]}),
            Mode::Merge,
        );
        assert_eq!(t, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut t =
            json!({"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]});
        let p = json!({"containers": [
            {"name": "b", "image": "z"},
            {"name": "c", "image": "w"},
            {"name": "a", "$patch": "delete"}
        ]});
        merge(&mut t, &p, Mode::Strategic);
        assert_eq!(
            t,
            json!({"containers": [{"name": "b", "image": "z"}, {"name": "c", "image": "w"}]})
        );
    }

    #[test]
    fn ports_key_defaults_protocol() {
        let a = json!({"containerPort": 80});
        let b = json!({"containerPort": 80, "protocol": "TCP"});
        let keys = list_keys("ports", std::slice::from_ref(&a)).unwrap();
        assert_eq!(item_key(&a, keys), item_key(&b, keys));
    }
}
