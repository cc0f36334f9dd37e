//! Field ownership for server-side apply: field sets in the `FieldsV1`
//! format of `metadata.managedFields`, conflict detection between managers,
//! and the removal of fields an applier stops setting. This is the part of
//! the apiserver (structured-merge-diff) a reconciler's correctness rests
//! on, so it is pure and unit-tested apart from HTTP.

use crate::merge::{self, is_set_list, item_key, list_keys, Mode};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// One path element in `FieldsV1` spelling: `f:name`, `k:{"name":"web"}`,
/// `v:"x"`.
pub type Path = Vec<String>;

/// A set of owned paths. A path to a keyed-list item means the item itself.
pub type FieldSet = BTreeSet<Path>;

/// One `metadata.managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Field manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// API version the fields were written in.
    pub api_version: String,
    /// When the entry last changed (RFC 3339).
    pub time: String,
    /// `Some("status")` for writes through the status subresource.
    pub subresource: Option<String>,
    /// The owned fields.
    pub fields: FieldSet,
}

/// A field another manager owns with a different value than the applier's.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    /// The owning manager.
    pub manager: String,
    /// Its API version.
    pub api_version: String,
    /// The field, in the dotted form the apiserver prints (`.spec.replicas`).
    pub field: String,
}

/// Metadata fields the server owns; never part of a field set.
const SERVER_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The field set of an object as written by a client. `status_only` selects
/// the `status` subtree (status subresource); otherwise `status` is left out
/// when `skip_status` (the kind has a status subresource).
pub fn fields_of(obj: &Value, skip_status: bool, status_only: bool) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (k, v) in map {
        let keep = match k.as_str() {
            "apiVersion" | "kind" => false,
            "status" => status_only || !skip_status,
            _ => !status_only,
        };
        if !keep {
            continue;
        }
        let path = vec![format!("f:{k}")];
        if k == "metadata" {
            let meta = v.as_object().cloned().unwrap_or_default();
            for (mk, mv) in meta
                .iter()
                .filter(|(mk, _)| !SERVER_META.contains(&mk.as_str()))
            {
                walk(
                    mk,
                    mv,
                    vec!["f:metadata".into(), format!("f:{mk}")],
                    &mut out,
                );
            }
        } else {
            walk(k, v, path, &mut out);
        }
    }
    out
}

fn walk(field: &str, v: &Value, path: Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, cv) in m {
                let mut p = path.clone();
                p.push(format!("f:{k}"));
                walk(k, cv, p, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            if let Some(keys) = list_keys(field, items) {
                for item in items {
                    let mut p = path.clone();
                    p.push(format!("k:{}", Value::Object(item_key(item, keys))));
                    out.insert(p.clone());
                    if let Some(m) = item.as_object() {
                        for (k, cv) in m {
                            let mut cp = p.clone();
                            cp.push(format!("f:{k}"));
                            walk(k, cv, cp, out);
                        }
                    }
                }
            } else if is_set_list(field) {
                for item in items {
                    let mut p = path.clone();
                    p.push(format!("v:{item}"));
                    out.insert(p);
                }
            } else {
                out.insert(path);
            }
        }
        _ => {
            out.insert(path);
        }
    }
}

/// The value at a path, if present.
pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for pe in path {
        cur = child(cur, pe)?;
    }
    Some(cur)
}

fn child<'a>(cur: &'a Value, pe: &str) -> Option<&'a Value> {
    if let Some(f) = pe.strip_prefix("f:") {
        return cur.get(f);
    }
    let items = cur.as_array()?;
    if let Some(k) = pe.strip_prefix("k:") {
        let want: Map<String, Value> = serde_json::from_str(k).ok()?;
        let keys: Vec<&str> = want.keys().map(String::as_str).collect();
        return items.iter().find(|i| item_key(i, &keys) == want);
    }
    let v: Value = serde_json::from_str(pe.strip_prefix("v:")?).ok()?;
    items.iter().find(|i| **i == v)
}

/// Removes the field or list item at `path`; a missing path is a no-op.
pub fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for pe in parent_path {
        let next = match pe.strip_prefix("f:") {
            Some(f) => cur.get_mut(f),
            None => {
                let idx = child(cur, pe).and_then(|c| {
                    let items = cur.as_array()?;
                    items.iter().position(|i| std::ptr::eq(i, c))
                });
                idx.and_then(|i| cur.get_mut(i))
            }
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
        return;
    }
    let idx =
        child(cur, last).and_then(|c| cur.as_array()?.iter().position(|i| std::ptr::eq(i, c)));
    if let (Some(i), Some(items)) = (idx, cur.as_array_mut()) {
        items.remove(i);
    }
}

/// Dotted spelling of a path for conflict messages.
pub fn dotted(path: &[String]) -> String {
    path.iter()
        .map(|pe| match pe.strip_prefix("f:") {
            Some(f) => format!(".{f}"),
            None => format!("[{}]", pe.replacen(':', "=", 1)),
        })
        .collect()
}

/// `FieldsV1` JSON of a field set.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = json!({});
    for path in set {
        let mut node = &mut root;
        for pe in path {
            node = node
                .as_object_mut()
                .expect("trie nodes are objects")
                .entry(pe.clone())
                .or_insert_with(|| json!({}));
        }
        if let Some(m) = node.as_object_mut() {
            if path.last().is_some_and(|l| l.starts_with("k:")) || !m.is_empty() {
                m.insert(".".into(), json!({}));
            }
        }
    }
    root
}

/// Field set from `FieldsV1` JSON.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    collect(v, &mut vec![], &mut out);
    out
}

fn collect(v: &Value, prefix: &mut Path, out: &mut FieldSet) {
    let Some(m) = v.as_object() else { return };
    if (m.is_empty() || m.contains_key(".")) && !prefix.is_empty() {
        out.insert(prefix.clone());
    }
    for (k, cv) in m.iter().filter(|(k, _)| *k != ".") {
        prefix.push(k.clone());
        collect(cv, prefix, out);
        prefix.pop();
    }
}

/// Entries from `metadata.managedFields`.
pub fn entries_of(obj: &Value) -> Vec<Entry> {
    let list = obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    list.iter()
        .filter_map(|e| {
            Some(Entry {
                manager: e["manager"].as_str()?.to_string(),
                operation: e["operation"].as_str().unwrap_or("Update").to_string(),
                api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
                time: e["time"].as_str().unwrap_or_default().to_string(),
                subresource: e["subresource"].as_str().map(str::to_string),
                fields: from_fields_v1(&e["fieldsV1"]),
            })
        })
        .collect()
}

/// Writes entries back into `metadata.managedFields` (dropping empty ones).
pub fn set_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if let Some(s) = &e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Who is writing and how, for recording ownership.
#[derive(Clone, Debug)]
pub struct Writer<'a> {
    /// Field manager name.
    pub manager: &'a str,
    /// API version of the request.
    pub api_version: &'a str,
    /// Timestamp to record.
    pub now: &'a str,
    /// `Some("status")` for the status subresource.
    pub subresource: Option<&'a str>,
    /// The kind has a status subresource (so `status` is not owned via the
    /// main resource).
    pub skip_status: bool,
}

impl Writer<'_> {
    fn fields(&self, obj: &Value) -> FieldSet {
        fields_of(obj, self.skip_status, self.subresource == Some("status"))
    }

    fn entry_index(&self, entries: &[Entry], operation: &str) -> Option<usize> {
        entries.iter().position(|e| {
            e.manager == self.manager
                && e.operation == operation
                && e.subresource.as_deref() == self.subresource
        })
    }

    fn upsert(&self, entries: &mut Vec<Entry>, operation: &str, fields: FieldSet) {
        match self.entry_index(entries, operation) {
            Some(i) => {
                entries[i].fields = fields;
                entries[i].time = self.now.into();
                entries[i].api_version = self.api_version.into();
            }
            None => entries.push(Entry {
                manager: self.manager.into(),
                operation: operation.into(),
                api_version: self.api_version.into(),
                time: self.now.into(),
                subresource: self.subresource.map(str::to_string),
                fields,
            }),
        }
    }
}

/// Records a non-apply write (create, update, patch): the writer takes
/// every field whose value it changed; other managers lose those fields
/// and the ones that are gone. Fields outside the writer's reach (the
/// spec for a status write, the status for a main-resource write) keep
/// their owners.
pub fn record_update(old: Option<&Value>, new: &mut Value, w: &Writer) {
    let mut entries = old.map(entries_of).unwrap_or_default();
    let new_fields = w.fields(new);
    let changed: FieldSet = new_fields
        .iter()
        .filter(|p| old.and_then(|o| value_at(o, p)) != value_at(new, p))
        .cloned()
        .collect();
    let present = fields_of(new, false, false);
    for e in entries.iter_mut() {
        e.fields
            .retain(|p| present.contains(p) && !changed.contains(p));
    }
    let mine = w
        .entry_index(&entries, "Update")
        .map(|i| entries[i].fields.clone())
        .unwrap_or_default();
    if !changed.is_empty() || !mine.is_empty() {
        let owned: FieldSet = mine.union(&changed).cloned().collect();
        w.upsert(&mut entries, "Update", owned);
    }
    set_entries(new, &entries);
}

/// Server-side apply of `config` onto `live` (absent: create). Returns the
/// new object with its `managedFields`, or the conflicts when another
/// manager owns a field whose value the config changes and `force` is off.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    w: &Writer,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let mut entries = live.map(entries_of).unwrap_or_default();
    let cfg_fields = w.fields(config);
    let base = live.cloned().unwrap_or_else(|| json!({}));
    let conflicts = find_conflicts(&base, config, &cfg_fields, &entries, w);
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    let mut merged = base.clone();
    merge::merge(&mut merged, config, Mode::Apply);
    let me = w.entry_index(&entries, "Apply");
    let previous = me.map(|i| entries[i].fields.clone()).unwrap_or_default();
    for (i, e) in entries.iter_mut().enumerate() {
        if Some(i) != me {
            e.fields
                .retain(|p| !(cfg_fields.contains(p) && differs(&base, config, p)));
        }
    }
    let others: FieldSet = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != me)
        .flat_map(|(_, e)| e.fields.iter().cloned())
        .collect();
    let dropped: FieldSet = previous
        .iter()
        .filter(|p| !cfg_fields.contains(*p) && !owned_at_or_below(&others, p))
        .cloned()
        .collect();
    // Remove outermost paths only: a removed list item takes its fields along
    // (and its key fields must still be there to find it).
    for p in dropped
        .iter()
        .filter(|p| !(1..p.len()).any(|n| dropped.contains(&p[..n])))
    {
        remove_at(&mut merged, p);
    }
    w.upsert(&mut entries, "Apply", cfg_fields);
    set_entries(&mut merged, &entries);
    Ok(merged)
}

fn differs(live: &Value, config: &Value, p: &Path) -> bool {
    let is_item = p.last().is_some_and(|l| !l.starts_with("f:"));
    let (a, b) = (value_at(live, p), value_at(config, p));
    !is_item && a.is_some() && a != b
}

fn owned_at_or_below(set: &FieldSet, p: &Path) -> bool {
    set.range(p.clone()..)
        .take_while(|q| q.starts_with(p))
        .next()
        .is_some()
}

fn find_conflicts(
    live: &Value,
    config: &Value,
    cfg_fields: &FieldSet,
    entries: &[Entry],
    w: &Writer,
) -> Vec<Conflict> {
    let mut out = vec![];
    for e in entries {
        let same = e.manager == w.manager
            && e.operation == "Apply"
            && e.subresource.as_deref() == w.subresource;
        if same {
            continue;
        }
        for p in e.fields.intersection(cfg_fields) {
            if differs(live, config, p) {
                out.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    field: dotted(p),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "v1",
            now: "2026-01-01T00:00:00Z",
            subresource: None,
            skip_status: true,
        }
    }

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data})
    }

    #[test]
    fn fields_v1_round_trips_with_keyed_items() {
        let obj = json!({"spec": {"containers": [{"name": "web", "image": "x"}]}, "metadata": {"labels": {"a": "b"}, "finalizers": ["f"]}});
        let set = fields_of(&obj, true, false);
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"],
            json!({".": {}, "f:image": {}, "f:name": {}})
        );
        assert_eq!(v1["f:metadata"]["f:finalizers"]["v:\"f\""], json!({}));
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn apply_conflicts_with_other_manager_then_force_takes_over() {
        let first = apply(None, &cm(json!({"a": "1", "b": "2"})), &w("one"), false).unwrap();
        let err = apply(Some(&first), &cm(json!({"a": "9"})), &w("two"), false).unwrap_err();
        assert_eq!(
            err,
            vec![Conflict {
                manager: "one".into(),
                api_version: "v1".into(),
                field: ".data.a".into()
            }]
        );
        // Same value: shared ownership, no conflict.
        assert!(apply(Some(&first), &cm(json!({"a": "1"})), &w("two"), false).is_ok());
        let forced = apply(Some(&first), &cm(json!({"a": "9"})), &w("two"), true).unwrap();
        assert_eq!(forced["data"], json!({"a": "9", "b": "2"}));
        let owners = entries_of(&forced);
        assert!(!owners[0]
            .fields
            .contains(&vec!["f:data".to_string(), "f:a".to_string()]));
    }

    #[test]
    fn apply_removes_fields_the_applier_stopped_setting() {
        let first = apply(None, &cm(json!({"a": "1", "b": "2"})), &w("one"), false).unwrap();
        let second = apply(Some(&first), &cm(json!({"a": "1"})), &w("one"), false).unwrap();
        assert_eq!(second["data"], json!({"a": "1"}));
    }

    #[test]
    fn update_takes_ownership_of_changed_fields() {
        let first = apply(None, &cm(json!({"a": "1"})), &w("one"), false).unwrap();
        let mut edited = first.clone();
        edited["data"]["a"] = json!("2");
        record_update(Some(&first), &mut edited, &w("editor"));
        let err = apply(Some(&edited), &cm(json!({"a": "3"})), &w("one"), false).unwrap_err();
        assert_eq!(err[0].manager, "editor");
    }

    #[test]
    fn status_writes_keep_the_owners_of_the_spec() {
        let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 1}});
        let applied = apply(None, &dep, &w("tidegate"), false).unwrap();
        let mut with_status = applied.clone();
        with_status["status"] = json!({"replicas": 1});
        let kcm = Writer {
            subresource: Some("status"),
            ..w("kube-controller-manager")
        };
        record_update(Some(&applied), &mut with_status, &kcm);
        let mut scaled = with_status.clone();
        scaled["spec"]["replicas"] = json!(3);
        let scaler = Writer {
            subresource: Some("scale"),
            ..w("kubectl")
        };
        record_update(Some(&with_status), &mut scaled, &scaler);
        let owners: Vec<(String, Option<String>, String)> = entries_of(&scaled)
            .iter()
            .map(|e| {
                let fields = e.fields.iter().map(|p| dotted(p)).collect::<Vec<_>>();
                (e.manager.clone(), e.subresource.clone(), fields.join(" "))
            })
            .collect();
        assert_eq!(
            owners,
            [
                (
                    "kube-controller-manager".into(),
                    Some("status".into()),
                    ".status.replicas".into()
                ),
                (
                    "kubectl".into(),
                    Some("scale".into()),
                    ".spec.replicas".into()
                ),
            ]
        );
    }

    #[test]
    fn removing_a_container_drops_the_item() {
        let dep = |cs: Value| json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": cs}}}});
        let a = apply(
            None,
            &dep(json!([{"name": "a", "image": "x"}, {"name": "b", "image": "y"}])),
            &w("one"),
            false,
        )
        .unwrap();
        let b = apply(
            Some(&a),
            &dep(json!([{"name": "a", "image": "x"}])),
            &w("one"),
            false,
        )
        .unwrap();
        assert_eq!(
            b["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "x"}])
        );
        assert_eq!(
            dotted(&["f:spec".into(), "k:{\"name\":\"a\"}".into()]),
            ".spec[k={\"name\":\"a\"}]"
        );
    }
}
