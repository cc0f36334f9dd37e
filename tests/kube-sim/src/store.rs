//! One simulated cluster: the object store, the global resourceVersion
//! counter, the event history watches replay from, and every verb's
//! semantics (preconditions, generation, finalizers, managed fields,
//! dry-run). HTTP lives in `server`; this module speaks `serde_json::Value`
//! and [`ApiError`], so the rules can be exercised without a socket.
//!
//! # Guarantees
//! - resourceVersions are one global counter per cluster; every stored
//!   change gets the next value and one watch event, in order.
//! - A write that changes nothing (an idempotent apply) stores nothing and
//!   keeps the resourceVersion.
//! - `dry_run` runs every check and returns the object that would have been
//!   stored, without storing it or emitting events.

use crate::clock;
use crate::kinds::{self, ResourceType};
use crate::kubelet::{self, Phase, Readiness};
use crate::managed::{self, Writer};
use crate::merge::{self, Mode};
use crate::scale;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, Result};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// How many events the history keeps by default for watches that resume
/// from a resourceVersion; older ones answer 410 Gone.
pub const DEFAULT_HISTORY: usize = 20_000;

/// `(namespace, name)`; namespace is empty for cluster-scoped objects.
pub type Key = (String, String);

/// Watch event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// Wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One stored change.
#[derive(Clone, Debug)]
pub struct Event {
    /// resourceVersion of the change.
    pub rv: u64,
    /// `plural.group` of the object.
    pub group_resource: String,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (for deletes: as it was removed).
    pub object: Arc<Value>,
    /// The object before the change, for selector transitions.
    pub old: Option<Arc<Value>>,
}

/// What a request addresses.
#[derive(Clone, Debug)]
pub struct Target {
    /// The served type.
    pub rt: ResourceType,
    /// Namespace from the URL.
    pub namespace: Option<String>,
    /// Name from the URL.
    pub name: Option<String>,
    /// `status`, or `None`.
    pub subresource: Option<String>,
}

impl Target {
    fn key(&self) -> Key {
        (
            self.namespace.clone().unwrap_or_default(),
            self.name.clone().unwrap_or_default(),
        )
    }

    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    fn gr(&self) -> String {
        self.rt.group_resource()
    }
}

/// Options shared by every write.
#[derive(Clone, Debug, Default)]
pub struct WriteOpts {
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `fieldManager`, or the one derived from the user agent.
    pub manager: String,
    /// `force` (apply only).
    pub force: bool,
}

/// A PATCH body with its type.
#[derive(Clone, Debug)]
pub enum PatchBody {
    /// `application/merge-patch+json`.
    Merge(Value),
    /// `application/strategic-merge-patch+json`.
    Strategic(Value),
    /// `application/json-patch+json`.
    Json(Value),
    /// `application/apply-patch+yaml`.
    Apply(Value),
}

/// A write of the `scale` subresource.
#[derive(Clone, Debug)]
pub enum ScaleWrite {
    /// PUT of a whole Scale.
    Update(Value),
    /// PATCH of the current Scale.
    Patch(PatchBody),
}

/// Applies a merge, strategic merge or JSON patch to `doc` (`kind` and
/// `name` for the error when a JSON patch fails).
fn patch_document(
    doc: &mut Value,
    patch: &PatchBody,
    group_resource: &str,
    kind: &str,
    name: &str,
) -> Result<()> {
    match patch {
        PatchBody::Merge(p) => merge::merge(doc, p, Mode::Merge),
        PatchBody::Strategic(p) => merge::merge(doc, p, Mode::Strategic),
        PatchBody::Json(p) => {
            let ops: json_patch::Patch = serde_json::from_value(p.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(doc, &ops).map_err(|e| {
                ApiError::invalid(
                    group_resource,
                    kind,
                    name,
                    &format!("the JSON patch failed: {e}"),
                )
            })?;
        }
        PatchBody::Apply(_) => {
            return Err(ApiError::bad_request(
                "server-side apply is not a patch of the stored document",
            ))
        }
    }
    Ok(())
}

/// List parameters.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit` (0: no limit).
    pub limit: usize,
    /// `continue` token.
    pub continue_token: Option<String>,
}

/// One page of a list.
#[derive(Clone, Debug)]
pub struct ListPage {
    /// resourceVersion of the list.
    pub rv: u64,
    /// The items, in namespace/name order.
    pub items: Vec<Arc<Value>>,
    /// Token for the next page.
    pub continue_token: Option<String>,
    /// How many items the next pages hold.
    pub remaining: Option<usize>,
}

/// Where a watch starts.
pub struct WatchStart {
    /// Events to send first (synthetic ADDED or replayed history).
    pub backlog: Vec<Arc<Event>>,
    /// Live events after the backlog.
    pub live: broadcast::Receiver<Arc<Event>>,
    /// The requested resourceVersion is older than the history kept.
    pub expired: bool,
    /// resourceVersion at the start (for the initial-events bookmark).
    pub rv: u64,
}

struct Store {
    rv: u64,
    types: Vec<ResourceType>,
    objects: HashMap<String, BTreeMap<Key, Arc<Value>>>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    compacted: u64,
}

/// One simulated cluster.
pub struct Cluster {
    /// Name (the `/clusters/<name>` prefix; empty for the default cluster).
    pub name: String,
    state: Mutex<Store>,
    events: broadcast::Sender<Arc<Event>>,
    kubelet_default: Arc<Mutex<Readiness>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn meta(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

fn str_at<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj["metadata"][field].as_str().filter(|s| !s.is_empty())
}

/// Checks a name the way the apiserver checks a DNS subdomain.
fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!("metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"))
    }
}

/// Base64 (RFC 4648, padded), as Go's JSON writes `[]byte`: Secret
/// `stringData`, protobuf `bytes` fields.
pub(crate) fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Removes empty `labels`, `annotations`, `finalizers` and
/// `ownerReferences`, which Go's `omitempty` leaves out of the JSON (so
/// removing the last label leaves no `labels: {}` behind).
fn drop_empty_meta(obj: &mut Value) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in ["labels", "annotations", "finalizers", "ownerReferences"] {
            let empty = match m.get(k) {
                Some(Value::Object(o)) => o.is_empty(),
                Some(Value::Array(a)) => a.is_empty(),
                _ => false,
            };
            if empty {
                m.remove(k);
            }
        }
    }
}

/// Spec-ish content: everything but metadata and status.
fn spec_of(obj: &Value) -> Map<String, Value> {
    obj.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Equality ignoring resourceVersion and managedFields timestamps.
fn same_content(a: &Value, b: &Value) -> bool {
    let norm = |v: &Value| {
        let mut v = v.clone();
        let m = meta(&mut v);
        m.remove("resourceVersion");
        if let Some(Value::Array(list)) = m.get_mut("managedFields") {
            for e in list.iter_mut().filter_map(Value::as_object_mut) {
                e.remove("time");
            }
        }
        v
    };
    norm(a) == norm(b)
}

impl Store {
    fn new(history_limit: usize) -> Self {
        Store {
            rv: 0,
            types: kinds::builtins(),
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
        }
    }

    fn bucket(&self, gr: &str) -> Option<&BTreeMap<Key, Arc<Value>>> {
        self.objects.get(gr)
    }

    fn lookup(&self, gr: &str, key: &Key) -> Option<Arc<Value>> {
        self.bucket(gr)?.get(key).cloned()
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.lookup("namespaces", &(String::new(), ns.to_string()))
            .is_some()
    }

    fn refresh_types(&mut self) {
        let mut types = kinds::builtins();
        if let Some(crds) = self
            .objects
            .get("customresourcedefinitions.apiextensions.k8s.io")
        {
            for crd in crds.values() {
                types.extend(kinds::from_crd(crd));
            }
        }
        self.types = types;
    }

    fn record(&mut self, ev: Event, tx: &broadcast::Sender<Arc<Event>>) {
        let ev = Arc::new(ev);
        self.history.push_back(ev.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        let _ = tx.send(ev);
    }

    /// Stores `obj` (or removes the key when `obj` is `None`), assigning the
    /// next resourceVersion; returns the stored object.
    fn commit(
        &mut self,
        gr: &str,
        key: Key,
        obj: Option<Value>,
        old: Option<Arc<Value>>,
        tx: &broadcast::Sender<Arc<Event>>,
    ) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        let (kind, stored) = match obj {
            Some(mut o) => {
                meta(&mut o).insert("resourceVersion".into(), json!(rv.to_string()));
                let o = Arc::new(o);
                self.objects
                    .entry(gr.to_string())
                    .or_default()
                    .insert(key, o.clone());
                let kind = if old.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                (kind, o)
            }
            None => {
                if let Some(b) = self.objects.get_mut(gr) {
                    b.remove(&key);
                }
                let mut o = old.as_deref().cloned().unwrap_or(Value::Null);
                meta(&mut o).insert("resourceVersion".into(), json!(rv.to_string()));
                (EventType::Deleted, Arc::new(o))
            }
        };
        let ev = Event {
            rv,
            group_resource: gr.to_string(),
            kind,
            object: stored.clone(),
            old,
        };
        self.record(ev, tx);
        if gr == "customresourcedefinitions.apiextensions.k8s.io" {
            self.refresh_types();
        }
        stored
    }
}

/// Presents a stored object in the requested version (CRDs with several
/// versions and no conversion webhook: only `apiVersion` changes).
pub fn present(obj: &Arc<Value>, rt: &ResourceType) -> Arc<Value> {
    let want = rt.api_version();
    if obj["apiVersion"].as_str() == Some(want.as_str()) {
        return obj.clone();
    }
    let mut o = (**obj).clone();
    o["apiVersion"] = json!(want);
    Arc::new(o)
}

fn encode_token(key: &Key) -> String {
    format!("{}/{}", key.0, key.1)
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_token(tok: &str) -> Result<Key> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {tok:?}"));
    if !tok.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Vec<u8> = (0..tok.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(tok.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad())?;
    let s = String::from_utf8(bytes).map_err(|_| bad())?;
    let (ns, name) = s.split_once('/').ok_or_else(bad)?;
    Ok((ns.to_string(), name.to_string()))
}

/// Whether an event is visible to a watch, and as what (selector
/// transitions turn MODIFIED into ADDED/DELETED as the apiserver does).
pub fn filter_event(
    ev: &Event,
    t: &Target,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Option<EventType> {
    if ev.group_resource != t.gr() {
        return None;
    }
    let visible = |o: &Value| {
        t.namespace
            .as_deref()
            .is_none_or(|ns| o["metadata"]["namespace"].as_str() == Some(ns))
            && labels.matches(o)
            && fields.matches(o)
    };
    let now = visible(&ev.object);
    let before = ev.old.as_deref().is_some_and(visible);
    match (ev.kind, before, now) {
        (EventType::Added, _, true) => Some(EventType::Added),
        (EventType::Modified, true, true) => Some(EventType::Modified),
        (EventType::Modified, false, true) => Some(EventType::Added),
        (EventType::Modified, true, false) => Some(EventType::Deleted),
        (EventType::Deleted, _, true) => Some(EventType::Deleted),
        _ => None,
    }
}

impl Cluster {
    /// A new cluster with the default namespaces.
    pub fn new(name: &str, kubelet_default: Arc<Mutex<Readiness>>, history: usize) -> Arc<Self> {
        let (events, _) = broadcast::channel(8192);
        let c = Arc::new(Cluster {
            name: name.to_string(),
            state: Mutex::new(Store::new(history)),
            events,
            kubelet_default,
        });
        {
            let mut st = lock(&c.state);
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let obj = namespace_object(ns);
                st.commit(
                    "namespaces",
                    (String::new(), ns.into()),
                    Some(obj),
                    None,
                    &c.events,
                );
            }
        }
        c
    }

    /// The type served at `group/version/plural`.
    pub fn resolve(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        lock(&self.state)
            .types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    /// Every served type.
    pub fn types(&self) -> Vec<ResourceType> {
        lock(&self.state).types.clone()
    }

    /// Current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.state).rv
    }

    /// How many objects of a group/resource are stored.
    pub fn count(&self, group_resource: &str) -> usize {
        lock(&self.state)
            .bucket(group_resource)
            .map_or(0, BTreeMap::len)
    }

    /// GET one object.
    pub fn get(&self, t: &Target) -> Result<Arc<Value>> {
        let st = lock(&self.state);
        st.lookup(&t.gr(), &t.key())
            .map(|o| present(&o, &t.rt))
            .ok_or_else(|| ApiError::not_found(&t.gr(), t.name()))
    }

    /// LIST with selectors and pagination.
    pub fn list(&self, t: &Target, q: &ListQuery) -> Result<ListPage> {
        let start = q.continue_token.as_deref().map(decode_token).transpose()?;
        let st = lock(&self.state);
        let empty = BTreeMap::new();
        let bucket = st.bucket(&t.gr()).unwrap_or(&empty);
        let lower = match (&start, &t.namespace) {
            (Some(k), _) => std::ops::Bound::Excluded(k.clone()),
            (None, Some(ns)) => std::ops::Bound::Included((ns.clone(), String::new())),
            (None, None) => std::ops::Bound::Unbounded,
        };
        let ns = t.namespace.clone();
        let mut matching = bucket
            .range((lower, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| ns.as_ref().is_none_or(|n| &k.0 == n))
            .filter(|(_, o)| q.labels.matches(o) && q.fields.matches(o));
        let limit = if q.limit == 0 { usize::MAX } else { q.limit };
        let mut items = vec![];
        let mut last = None;
        for (k, o) in matching.by_ref().take(limit) {
            items.push(present(o, &t.rt));
            last = Some(k.clone());
        }
        let remaining = if q.limit == 0 { 0 } else { matching.count() };
        let continue_token = (remaining > 0)
            .then(|| last.as_ref().map(encode_token))
            .flatten();
        Ok(ListPage {
            rv: st.rv,
            items,
            continue_token,
            remaining: (remaining > 0).then_some(remaining),
        })
    }

    /// Starts a watch: subscribes and collects the backlog under one lock so
    /// no event falls between them.
    pub fn watch(&self, t: &Target, rv: Option<&str>, send_initial: bool) -> Result<WatchStart> {
        let st = lock(&self.state);
        let live = self.events.subscribe();
        let from =
            match rv.filter(|r| !r.is_empty() && *r != "0") {
                Some(r) => Some(r.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {r:?}"))
                })?),
                None => None,
            };
        let mut start = WatchStart {
            backlog: vec![],
            live,
            expired: false,
            rv: st.rv,
        };
        match from {
            Some(r) if !send_initial => {
                if r < st.compacted {
                    start.expired = true;
                } else {
                    start.backlog = st.history.iter().filter(|e| e.rv > r).cloned().collect();
                }
            }
            _ => {
                let gr = t.gr();
                if let Some(bucket) = st.bucket(&gr) {
                    start.backlog = bucket
                        .values()
                        .filter(|o| {
                            t.namespace
                                .as_deref()
                                .is_none_or(|ns| o["metadata"]["namespace"].as_str() == Some(ns))
                        })
                        .map(|o| {
                            let rv = o["metadata"]["resourceVersion"]
                                .as_str()
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(0);
                            Arc::new(Event {
                                rv,
                                group_resource: gr.clone(),
                                kind: EventType::Added,
                                object: o.clone(),
                                old: None,
                            })
                        })
                        .collect();
                }
            }
        }
        Ok(start)
    }

    fn writer<'a>(
        &self,
        t: &Target,
        opts: &'a WriteOpts,
        api_version: &'a str,
        now: &'a str,
    ) -> Writer<'a> {
        Writer {
            manager: &opts.manager,
            api_version,
            now,
            subresource: match t.subresource.as_deref() {
                Some("status") => Some("status"),
                Some("scale") => Some("scale"),
                _ => None,
            },
            skip_status: t.rt.status_subresource,
        }
    }

    fn check_namespace(&self, st: &Store, t: &Target) -> Result<()> {
        match (&t.namespace, t.rt.namespaced) {
            (Some(ns), true) if !st.namespace_exists(ns) => Err(ApiError::not_found("namespaces", ns)),
            (None, true) => Err(ApiError::bad_request("the server could not find the requested resource: namespace is required for a namespaced resource")),
            _ => Ok(()),
        }
    }

    /// Checks identity fields of a body against the URL and fills them in.
    fn check_identity(t: &Target, body: &mut Value, name: &str) -> Result<()> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON or YAML object",
            ));
        }
        let want = t.rt.api_version();
        match body["apiVersion"].as_str() {
            Some(v) if v != want => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({want})"
                )))
            }
            _ => body["apiVersion"] = json!(want),
        }
        match body["kind"].as_str() {
            Some(k) if k != t.rt.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    t.rt.kind
                )))
            }
            _ => body["kind"] = json!(t.rt.kind),
        }
        if let Some(n) = str_at(body, "name") {
            if n != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        let ns_body = str_at(body, "namespace").map(str::to_string);
        match (&t.namespace, ns_body, t.rt.namespaced) {
            (Some(u), Some(b), true) if *u != b => {
                return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"))
            }
            (Some(u), _, true) => {
                meta(body).insert("namespace".into(), json!(u));
            }
            (_, _, false) => {
                meta(body).remove("namespace");
            }
            _ => {}
        }
        meta(body).insert("name".into(), json!(name));
        check_name(name).map_err(|why| ApiError::invalid(&t.gr(), &t.rt.kind, name, &why))
    }

    /// Server-side defaulting and derived fields.
    fn normalize(t: &Target, obj: &mut Value) -> Result<()> {
        match t.gr().as_str() {
            "secrets" => {
                if let Some(Value::Object(sd)) =
                    obj.as_object_mut().and_then(|m| m.remove("stringData"))
                {
                    if !obj["data"].is_object() {
                        obj["data"] = json!({});
                    }
                    for (k, v) in sd {
                        obj["data"][&k] = json!(base64(v.as_str().unwrap_or_default().as_bytes()));
                    }
                }
            }
            "customresourcedefinitions.apiextensions.k8s.io" => {
                let name = str_at(obj, "name").unwrap_or_default().to_string();
                kinds::validate_crd(obj).map_err(|why| {
                    ApiError::invalid(&t.gr(), "CustomResourceDefinition", &name, &why)
                })?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Fills server-owned metadata for a new object.
    fn stamp_new(t: &Target, obj: &mut Value, now: &str) {
        drop_empty_meta(obj);
        if t.rt.status_subresource {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        let m = meta(obj);
        m.insert("uid".into(), json!(clock::new_uid()));
        m.insert("creationTimestamp".into(), json!(now));
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        if t.rt.tracks_generation {
            m.insert("generation".into(), json!(1));
        }
        match t.gr().as_str() {
            "namespaces" => {
                let name = m["name"].clone();
                let labels = m.entry("labels").or_insert_with(|| json!({}));
                labels["kubernetes.io/metadata.name"] = name;
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
                obj["status"] = json!({"phase": "Active"});
            }
            "customresourcedefinitions.apiextensions.k8s.io" => crd_status(obj, now),
            _ => {}
        }
    }

    /// POST.
    pub fn create(
        self: &Arc<Self>,
        t: &Target,
        mut body: Value,
        opts: &WriteOpts,
    ) -> Result<Arc<Value>> {
        let now = clock::now();
        let name = match (str_at(&body, "name"), str_at(&body, "generateName")) {
            (Some(n), _) => n.to_string(),
            (None, Some(g)) => format!("{g}{}", clock::name_suffix()),
            (None, None) => {
                return Err(ApiError::invalid(
                    &t.gr(),
                    &t.rt.kind,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ))
            }
        };
        let mut t = t.clone();
        t.name = Some(name.clone());
        if t.rt.namespaced && t.namespace.is_none() {
            t.namespace = str_at(&body, "namespace").map(str::to_string);
        }
        Self::check_identity(&t, &mut body, &name)?;
        Self::normalize(&t, &mut body)?;
        let mut st = lock(&self.state);
        self.check_namespace(&st, &t)?;
        if st.lookup(&t.gr(), &t.key()).is_some() {
            return Err(ApiError::already_exists(&t.gr(), &name));
        }
        Self::stamp_new(&t, &mut body, &now);
        let av = t.rt.api_version();
        managed::record_update(None, &mut body, &self.writer(&t, opts, &av, &now));
        if opts.dry_run {
            return Ok(Arc::new(body));
        }
        let stored = st.commit(&t.gr(), t.key(), Some(body), None, &self.events);
        self.after_write(&mut st, &t, &stored);
        Ok(present(&stored, &t.rt))
    }

    /// PUT (main resource or status).
    pub fn update(
        self: &Arc<Self>,
        t: &Target,
        mut body: Value,
        opts: &WriteOpts,
    ) -> Result<Arc<Value>> {
        let now = clock::now();
        Self::check_identity(t, &mut body, t.name())?;
        Self::normalize(t, &mut body)?;
        let mut st = lock(&self.state);
        let old = st
            .lookup(&t.gr(), &t.key())
            .ok_or_else(|| ApiError::not_found(&t.gr(), t.name()))?;
        if let Some(rv) = str_at(&body, "resourceVersion") {
            if Some(rv) != str_at(&old, "resourceVersion") {
                return Err(ApiError::stale(&t.gr(), t.name()));
            }
        }
        let av = t.rt.api_version();
        let w = self.writer(t, opts, &av, &now);
        let mut new = self.carry_over(t, &old, body);
        managed::record_update(Some(&old), &mut new, &w);
        self.finish_write(&mut st, t, Some(old), new, opts)
    }

    /// PATCH of every type, including server-side apply (which creates).
    pub fn patch(
        self: &Arc<Self>,
        t: &Target,
        patch: PatchBody,
        opts: &WriteOpts,
    ) -> Result<(u16, Arc<Value>)> {
        let now = clock::now();
        let av = t.rt.api_version();
        let w = self.writer(t, opts, &av, &now);
        if let PatchBody::Apply(mut config) = patch {
            if opts.manager.is_empty() {
                return Err(ApiError::bad_request(
                    "PATCH: fieldManager is required for apply requests",
                ));
            }
            if config["apiVersion"].as_str().is_none() || config["kind"].as_str().is_none() {
                return Err(ApiError::bad_request(
                    "apiVersion and kind must be set in an apply configuration",
                ));
            }
            Self::check_identity(t, &mut config, t.name())?;
            Self::normalize(t, &mut config)?;
            let mut st = lock(&self.state);
            self.check_namespace(&st, t)?;
            let old = st.lookup(&t.gr(), &t.key());
            if let (Some(rv), Some(o)) = (str_at(&config, "resourceVersion"), &old) {
                if Some(rv) != str_at(o, "resourceVersion") {
                    return Err(ApiError::stale(&t.gr(), t.name()));
                }
            }
            let live = old.as_deref().map(|o| {
                let mut o = o.clone();
                meta(&mut o).remove("resourceVersion");
                o
            });
            let applied = managed::apply(live.as_ref(), &config, &w, opts.force)
                .map_err(|c| ApiError::apply_conflict(&t.gr(), t.name(), &c))?;
            return match old {
                Some(old) => {
                    let new = self.carry_over(t, &old, applied);
                    self.finish_write(&mut st, t, Some(old), new, opts)
                        .map(|o| (200, o))
                }
                None => {
                    if t.subresource.is_some() {
                        return Err(ApiError::not_found(&t.gr(), t.name()));
                    }
                    let mut new = applied;
                    let entries = managed::entries_of(&new);
                    Self::stamp_new(t, &mut new, &now);
                    managed::set_entries(&mut new, &entries);
                    if opts.dry_run {
                        return Ok((201, Arc::new(new)));
                    }
                    let stored = st.commit(&t.gr(), t.key(), Some(new), None, &self.events);
                    self.after_write(&mut st, t, &stored);
                    Ok((201, present(&stored, &t.rt)))
                }
            };
        }
        let mut st = lock(&self.state);
        let old = st
            .lookup(&t.gr(), &t.key())
            .ok_or_else(|| ApiError::not_found(&t.gr(), t.name()))?;
        let mut doc = (*old).clone();
        patch_document(&mut doc, &patch, &t.gr(), &t.rt.kind, t.name())?;
        if str_at(&doc, "resourceVersion") != str_at(&old, "resourceVersion") {
            return Err(ApiError::stale(&t.gr(), t.name()));
        }
        Self::check_identity(t, &mut doc, t.name())?;
        Self::normalize(t, &mut doc)?;
        let mut new = self.carry_over(t, &old, doc);
        managed::record_update(Some(&old), &mut new, &w);
        self.finish_write(&mut st, t, Some(old), new, opts)
            .map(|o| (200, o))
    }

    /// GET of the `scale` subresource.
    pub fn get_scale(&self, t: &Target) -> Result<Value> {
        let st = lock(&self.state);
        st.lookup(&t.gr(), &t.key())
            .map(|o| scale::of(&o))
            .ok_or_else(|| ApiError::not_found(&t.gr(), t.name()))
    }

    /// PUT (`ScaleWrite::Update`) or PATCH of the `scale` subresource:
    /// sets the parent's `spec.replicas` (checking a `resourceVersion`
    /// precondition), records the writer's ownership of it under
    /// `subresource: scale`, and returns the new Scale.
    pub fn write_scale(
        self: &Arc<Self>,
        t: &Target,
        write: ScaleWrite,
        opts: &WriteOpts,
    ) -> Result<Value> {
        let now = clock::now();
        let mut st = lock(&self.state);
        let old = st
            .lookup(&t.gr(), &t.key())
            .ok_or_else(|| ApiError::not_found(&t.gr(), t.name()))?;
        let current = scale::of(&old);
        let wanted = match write {
            ScaleWrite::Update(body) => body,
            ScaleWrite::Patch(PatchBody::Apply(_)) => {
                return Err(ApiError::unsupported(
                    "kube-sim does not simulate server-side apply of the scale subresource; use a merge, strategic merge or JSON patch, or PUT",
                ))
            }
            ScaleWrite::Patch(p) => {
                let mut doc = current.clone();
                patch_document(&mut doc, &p, scale::QUALIFIED_KIND, "Scale", t.name())?;
                doc
            }
        };
        let replicas = scale::requested(&wanted, t.name()).map_err(|r| match r {
            scale::Refusal::Malformed(why) => ApiError::bad_request(why),
            scale::Refusal::Invalid(why) => {
                ApiError::invalid(scale::QUALIFIED_KIND, scale::QUALIFIED_KIND, t.name(), &why)
            }
        })?;
        if let Some(rv) = str_at(&wanted, "resourceVersion") {
            if Some(rv) != str_at(&old, "resourceVersion") {
                return Err(ApiError::stale(&t.gr(), t.name()));
            }
        }
        let mut new = (*old).clone();
        if !new["spec"].is_object() {
            new["spec"] = json!({});
        }
        new["spec"]["replicas"] = json!(replicas);
        let av = t.rt.api_version();
        let w = self.writer(t, opts, &av, &now);
        let mut new = self.carry_over(t, &old, new);
        managed::record_update(Some(&old), &mut new, &w);
        let stored = self.finish_write(&mut st, t, Some(old), new, opts)?;
        Ok(scale::of(&stored))
    }

    /// Copies server-owned metadata and the untouchable half (status or
    /// spec, by subresource) from the stored object.
    fn carry_over(&self, t: &Target, old: &Value, mut new: Value) -> Value {
        let status_write = t.subresource.as_deref() == Some("status");
        if status_write {
            let mut merged = old.clone();
            match new.get("status") {
                Some(s) => merged["status"] = s.clone(),
                None => {
                    if let Some(m) = merged.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            merged["metadata"]["managedFields"] = new["metadata"]["managedFields"].clone();
            new = merged;
        } else if t.rt.status_subresource {
            let m = new.as_object_mut().expect("checked object");
            match old.get("status") {
                Some(s) => m.insert("status".into(), s.clone()),
                None => m.remove("status"),
            };
        }
        let keep = [
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
        ];
        let nm = meta(&mut new);
        for k in keep {
            match old["metadata"].get(k) {
                Some(v) => nm.insert(k.into(), v.clone()),
                None => nm.remove(k),
            };
        }
        if t.rt.tracks_generation && !status_write && spec_of(old) != spec_of(&new) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            meta(&mut new).insert("generation".into(), json!(g));
        }
        if t.gr() == "customresourcedefinitions.apiextensions.k8s.io" && !status_write {
            crd_status(&mut new, &clock::now());
        }
        drop_empty_meta(&mut new);
        new
    }

    /// Stores an update unless it changes nothing; completes deletion when
    /// the last finalizer went away.
    fn finish_write(
        self: &Arc<Self>,
        st: &mut Store,
        t: &Target,
        old: Option<Arc<Value>>,
        new: Value,
        opts: &WriteOpts,
    ) -> Result<Arc<Value>> {
        let old = old.expect("updates have an old object");
        if same_content(&old, &new) {
            return Ok(present(&old, &t.rt));
        }
        let finalizers_done = new["metadata"]["deletionTimestamp"].is_string()
            && new["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty());
        if opts.dry_run {
            return Ok(Arc::new(new));
        }
        if finalizers_done {
            let stored = st.commit(&t.gr(), t.key(), Some(new), Some(old), &self.events);
            self.remove(st, t, stored.clone());
            return Ok(present(&stored, &t.rt));
        }
        let stored = st.commit(&t.gr(), t.key(), Some(new), Some(old), &self.events);
        if t.subresource.as_deref() != Some("status") {
            self.after_write(st, t, &stored);
        }
        Ok(present(&stored, &t.rt))
    }

    /// Removes an object for good, with what hangs off it (a namespace's
    /// objects, a CRD's custom resources).
    fn remove(&self, st: &mut Store, t: &Target, obj: Arc<Value>) {
        let key = t.key();
        st.commit(&t.gr(), key.clone(), None, Some(obj.clone()), &self.events);
        let dependents: Vec<(String, Key, Arc<Value>)> = match t.gr().as_str() {
            "namespaces" => st
                .objects
                .iter()
                .flat_map(|(gr, b)| {
                    b.range((key.1.clone(), String::new())..)
                        .take_while(|(k, _)| k.0 == key.1)
                        .map(|(k, o)| (gr.clone(), k.clone(), o.clone()))
                        .collect::<Vec<_>>()
                })
                .collect(),
            "customresourcedefinitions.apiextensions.k8s.io" => {
                let gr = format!(
                    "{}.{}",
                    obj["spec"]["names"]["plural"].as_str().unwrap_or_default(),
                    obj["spec"]["group"].as_str().unwrap_or_default()
                );
                st.objects
                    .get(&gr)
                    .map(|b| {
                        b.iter()
                            .map(|(k, o)| (gr.clone(), k.clone(), o.clone()))
                            .collect()
                    })
                    .unwrap_or_default()
            }
            _ => vec![],
        };
        for (gr, k, o) in dependents {
            st.commit(&gr, k, None, Some(o), &self.events);
        }
    }

    /// DELETE one object. Objects with finalizers get a deletionTimestamp
    /// and stay until an update removes the last finalizer.
    pub fn delete(
        self: &Arc<Self>,
        t: &Target,
        opts: &WriteOpts,
        preconditions: &Value,
    ) -> Result<Arc<Value>> {
        let mut st = lock(&self.state);
        let old = st
            .lookup(&t.gr(), &t.key())
            .ok_or_else(|| ApiError::not_found(&t.gr(), t.name()))?;
        let want_rv = preconditions["resourceVersion"].as_str();
        let want_uid = preconditions["uid"].as_str();
        if want_rv.is_some_and(|rv| Some(rv) != str_at(&old, "resourceVersion"))
            || want_uid.is_some_and(|u| Some(u) != str_at(&old, "uid"))
        {
            return Err(ApiError::stale(&t.gr(), t.name()));
        }
        let has_finalizers = old["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if old["metadata"]["deletionTimestamp"].is_string() {
                return Ok(present(&old, &t.rt));
            }
            let mut new = (*old).clone();
            let m = meta(&mut new);
            m.insert("deletionTimestamp".into(), json!(clock::now()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            if opts.dry_run {
                return Ok(Arc::new(new));
            }
            let stored = st.commit(&t.gr(), t.key(), Some(new), Some(old), &self.events);
            return Ok(present(&stored, &t.rt));
        }
        if !opts.dry_run {
            self.remove(&mut st, t, old.clone());
        }
        Ok(present(&old, &t.rt))
    }

    /// DELETE on a collection: deletes every object the list would return.
    pub fn delete_collection(
        self: &Arc<Self>,
        t: &Target,
        q: &ListQuery,
        opts: &WriteOpts,
    ) -> Result<ListPage> {
        let page = self.list(t, q)?;
        let mut deleted = vec![];
        for obj in &page.items {
            let mut one = t.clone();
            one.namespace = str_at(obj, "namespace").map(str::to_string);
            one.name = str_at(obj, "name").map(str::to_string);
            match self.delete(&one, opts, &Value::Null) {
                Ok(o) => deleted.push(o),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ListPage {
            rv: self.resource_version(),
            items: deleted,
            continue_token: None,
            remaining: None,
        })
    }

    /// Lets the kubelet react to a client write of a workload.
    fn after_write(self: &Arc<Self>, st: &mut Store, t: &Target, obj: &Arc<Value>) {
        let gr = t.gr();
        if !kubelet::is_workload(&gr) {
            return;
        }
        let default = *lock(&self.kubelet_default);
        let phase = match kubelet::mode_of(obj, default) {
            Readiness::Now => Phase::Ready,
            Readiness::Never => Phase::Pending,
            Readiness::Fail => Phase::Failed,
            Readiness::After(d) => {
                let me = self.clone();
                let (t2, uid, generation) = (
                    t.clone(),
                    obj["metadata"]["uid"].clone(),
                    obj["metadata"]["generation"].clone(),
                );
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        tokio::time::sleep(d).await;
                        let mut st = lock(&me.state);
                        let Some(cur) = st.lookup(&t2.gr(), &t2.key()) else {
                            return;
                        };
                        if cur["metadata"]["uid"] == uid
                            && cur["metadata"]["generation"] == generation
                        {
                            me.set_status(&mut st, &t2, cur, Phase::Ready);
                        }
                    });
                }
                Phase::Pending
            }
        };
        self.set_status(st, t, obj.clone(), phase);
    }

    fn set_status(&self, st: &mut Store, t: &Target, obj: Arc<Value>, phase: Phase) {
        let now = clock::now();
        let wanted = kubelet::status_for(&t.gr(), &obj, phase, &now);
        if kubelet::same_status(&obj["status"], &wanted) {
            return;
        }
        let mut new = (*obj).clone();
        new["status"] = wanted;
        let av = t.rt.api_version();
        let w = Writer {
            manager: "kube-controller-manager",
            api_version: &av,
            now: &now,
            subresource: Some("status"),
            skip_status: true,
        };
        managed::record_update(Some(&obj), &mut new, &w);
        st.commit(&t.gr(), t.key(), Some(new), Some(obj), &self.events);
    }

    /// Sets a workload's status by hand (the test API of the kubelet):
    /// `ready` true makes it ready now, false makes it not ready.
    pub fn set_ready(&self, t: &Target, phase: Phase) -> Result<()> {
        let mut st = lock(&self.state);
        let obj = st
            .lookup(&t.gr(), &t.key())
            .ok_or_else(|| ApiError::not_found(&t.gr(), t.name()))?;
        if !kubelet::is_workload(&t.gr()) {
            return Err(ApiError::bad_request(format!(
                "{} has no simulated status",
                t.gr()
            )));
        }
        self.set_status(&mut st, t, obj, phase);
        Ok(())
    }
}

fn namespace_object(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": clock::new_uid(),
            "creationTimestamp": clock::now(),
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

/// The status an apiserver gives an accepted CRD.
fn crd_status(crd: &mut Value, now: &str) {
    let stored: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter(|v| v["storage"].as_bool() == Some(true))
                .map(|v| v["name"].clone())
                .collect()
        })
        .unwrap_or_default();
    let cond = |kind: &str, reason: &str, message: &str| json!({"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now});
    crd["status"] = json!({
        "acceptedNames": crd["spec"]["names"].clone(),
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": stored,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"hunter22"), "aHVudGVyMjI=");
    }

    #[test]
    fn continue_tokens_round_trip() {
        let k = ("ns".to_string(), "a.b".to_string());
        assert_eq!(decode_token(&encode_token(&k)).unwrap(), k);
        assert!(decode_token("zz").is_err());
    }
}
