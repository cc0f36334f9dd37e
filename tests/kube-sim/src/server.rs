//! The HTTP face of the simulator: routes apiserver URLs (optionally under
//! `/clusters/<name>`) to a [`Cluster`], applies injected faults, counts
//! requests, renders lists, tables and watch streams, and serves the
//! `/_sim` control API.

use crate::clock;
use crate::discovery;
use crate::faults::{Counters, FaultAction, Faults};
use crate::kinds::ResourceType;
use crate::kubelet::{Phase, Readiness};
use crate::openapi;
use crate::protobuf::{self, ProtoError};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{
    filter_event, present, Cluster, ListPage, ListQuery, PatchBody, ScaleWrite, Target, WriteOpts,
};
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// Shared state of one simulator process.
pub struct Sim {
    clusters: Mutex<HashMap<String, Arc<Cluster>>>,
    /// Injected faults.
    pub faults: Mutex<Faults>,
    /// Request counters.
    pub counters: Mutex<Counters>,
    /// Bumped to end every open watch stream.
    pub drop_watches: watch::Sender<u64>,
    /// Readiness of workloads without the annotation.
    pub kubelet_default: Arc<Mutex<Readiness>>,
    /// `host:port` the server listens on.
    pub address: String,
    /// Watch history length per cluster.
    pub history: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sim {
    /// New state for a server at `address`.
    pub fn new(address: String, readiness: Readiness, history: usize) -> Arc<Self> {
        Arc::new(Sim {
            clusters: Mutex::new(HashMap::new()),
            faults: Mutex::new(Faults::default()),
            counters: Mutex::new(Counters::default()),
            drop_watches: watch::channel(0).0,
            kubelet_default: Arc::new(Mutex::new(readiness)),
            address,
            history,
        })
    }

    /// The cluster with this name, created on first use.
    pub fn cluster(&self, name: &str) -> Arc<Cluster> {
        let mut map = lock(&self.clusters);
        map.entry(name.to_string())
            .or_insert_with(|| Cluster::new(name, self.kubelet_default.clone(), self.history))
            .clone()
    }

    /// Ends every open watch stream.
    pub fn drop_all_watches(&self) {
        self.drop_watches.send_modify(|n| *n += 1);
    }
}

fn json_response(code: u16, body: &Value) -> Response {
    bytes_response(code, serde_json::to_vec(body).unwrap_or_default())
}

fn bytes_response(code: u16, body: Vec<u8>) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("static response parts are valid")
}

fn error_response(e: &ApiError) -> Response {
    let mut r = json_response(e.code, &e.to_status());
    if let Some(s) = e.details.get("retryAfterSeconds").and_then(Value::as_u64) {
        r.headers_mut().insert(header::RETRY_AFTER, s.into());
    }
    r
}

/// Splits `/clusters/<name>/rest` into `(name, /rest)`.
fn split_cluster(path: &str) -> (&str, &str) {
    if let Some(rest) = path.strip_prefix("/clusters/") {
        let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
        return (
            name,
            if tail.is_empty() {
                "/"
            } else {
                &path[10 + name.len()..]
            },
        );
    }
    ("", path)
}

/// A parsed apiserver URL.
#[derive(Debug, PartialEq)]
enum Route<'a> {
    Version,
    Health,
    Api,
    Apis,
    Group(&'a str),
    GroupVersion(&'a str, &'a str),
    OpenApiIndex,
    OpenApi(String),
    Resource {
        group: &'a str,
        version: &'a str,
        namespace: Option<&'a str>,
        plural: &'a str,
        name: Option<&'a str>,
        sub: Option<&'a str>,
    },
    Unknown,
}

fn parse_route(path: &str) -> Route<'_> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["version"] => Route::Version,
        ["healthz"] | ["readyz"] | ["livez"] => Route::Health,
        ["api"] => Route::Api,
        ["api", v] => Route::GroupVersion("", v),
        ["api", v, rest @ ..] => resource_route("", v, rest),
        ["apis"] => Route::Apis,
        ["openapi", "v3"] => Route::OpenApiIndex,
        ["openapi", "v3", rest @ ..] => Route::OpenApi(rest.join("/")),
        ["apis", g] => Route::Group(g),
        ["apis", g, v] => Route::GroupVersion(g, v),
        ["apis", g, v, rest @ ..] => resource_route(g, v, rest),
        _ => Route::Unknown,
    }
}

fn resource_route<'a>(group: &'a str, version: &'a str, rest: &[&'a str]) -> Route<'a> {
    let namespaced =
        rest.len() >= 3 && rest[0] == "namespaces" && !matches!(rest[2], "status" | "finalize")
            || rest.len() > 3 && rest[0] == "namespaces";
    let (namespace, tail) = if namespaced {
        (Some(rest[1]), &rest[2..])
    } else {
        (None, rest)
    };
    if tail.is_empty() || tail.len() > 3 {
        return Route::Unknown;
    }
    Route::Resource {
        group,
        version,
        namespace,
        plural: tail[0],
        name: tail.get(1).copied(),
        sub: tail.get(2).copied(),
    }
}

/// The API verb of a resource request (for counters and dispatch).
fn verb(
    method: &Method,
    has_name: bool,
    query: &HashMap<String, String>,
    content_type: &str,
) -> &'static str {
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    match (method.as_str(), has_name) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) if content_type.starts_with("application/apply-patch") => "apply",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).or_else(|je| {
        serde_saphyr::from_slice::<Value>(body).map_err(|ye| {
            ApiError::bad_request(format!(
                "the request body is neither JSON ({je}) nor YAML ({ye})"
            ))
        })
    })
}

/// Entry point for every request.
pub async fn handle(sim: Arc<Sim>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(e) => {
            return error_response(&ApiError::bad_request(format!(
                "reading the body failed: {e}"
            )))
        }
    };
    let path = parts.uri.path().to_string();
    let query_str = parts.uri.query().unwrap_or("").to_string();
    let query: HashMap<String, String> = axum::extract::Query::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    if let Some(ctl) = path.strip_prefix("/_sim") {
        return control(&sim, &parts.method, ctl, &body);
    }
    let latency = lock(&sim.faults).latency_millis;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let (cluster_name, rest) = split_cluster(&path);
    let cluster = sim.cluster(cluster_name);
    let route = parse_route(rest);
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if let Route::Resource {
        group,
        plural,
        name,
        sub,
        ..
    } = &route
    {
        let v = verb(&parts.method, name.is_some(), &query, &content_type);
        let mut resource = if group.is_empty() {
            plural.to_string()
        } else {
            format!("{plural}.{group}")
        };
        if let Some(s) = sub {
            resource = format!("{resource}/{s}");
        }
        lock(&sim.counters).bump(cluster_name, v, &resource);
    } else {
        // Discovery, OpenAPI, version and health checks are requests too:
        // counted by their first path segment, so a client's whole
        // conversation with the server adds up (kubectl discovers first).
        let first = rest.trim_matches('/').split('/').next().unwrap_or("");
        lock(&sim.counters).bump(cluster_name, "discovery", first);
    }
    let fault = lock(&sim.faults).take(parts.method.as_str(), rest, &query_str);
    match fault {
        Some(FaultAction::Error { code }) => {
            let mut e = ApiError::internal("injected fault: internal error");
            e.code = code;
            return error_response(&e);
        }
        Some(FaultAction::Throttle {
            retry_after_seconds,
        }) => return error_response(&ApiError::too_many_requests(retry_after_seconds)),
        Some(FaultAction::Reset) => {
            std::panic::resume_unwind(Box::new("kube-sim: injected connection reset"))
        }
        Some(FaultAction::Stall { millis }) => {
            tokio::time::sleep(Duration::from_millis(millis)).await
        }
        None => {}
    }
    if let Err(e) = check_media_type(&parts.method, &content_type) {
        return error_response(&e);
    }
    let ctx = RequestCtx {
        sim: &sim,
        cluster: &cluster,
        method: &parts.method,
        headers: &parts.headers,
        query: &query,
        content_type: &content_type,
        body: &body,
    };
    match dispatch(&ctx, route) {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

/// Refuses CBOR bodies (which makes client-go retry in JSON) and protobuf
/// patches (no such patch type).
fn check_media_type(method: &Method, content_type: &str) -> Result<(), ApiError> {
    let is_patch = method == Method::PATCH;
    if is_patch && (content_type.contains("cbor") || protobuf::is_protobuf(content_type)) {
        return Err(ApiError::unsupported_media_type(content_type));
    }
    if content_type.contains("cbor") {
        return Err(ApiError::unsupported_body(content_type));
    }
    Ok(())
}

/// The request body as JSON: parsed JSON or YAML, or a decoded protobuf
/// object (kubectl's typed clients send built-in kinds as protobuf).
fn body_json(ctx: &RequestCtx) -> Result<Value, ApiError> {
    if !protobuf::is_protobuf(ctx.content_type) || ctx.body.is_empty() {
        return parse_body(ctx.body);
    }
    protobuf::decode(ctx.body).map_err(|e| match e {
        ProtoError::UnknownKind { .. } => ApiError::unsupported(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml ({e})"
        )),
        ProtoError::Schema(_) => ApiError::internal(e.to_string()),
        other => ApiError::bad_request(error_chain(&other)),
    })
}

/// An error and its causes, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(&format!(": {c}"));
        cause = c.source();
    }
    out
}

struct RequestCtx<'a> {
    sim: &'a Arc<Sim>,
    cluster: &'a Arc<Cluster>,
    method: &'a Method,
    headers: &'a HeaderMap,
    query: &'a HashMap<String, String>,
    content_type: &'a str,
    body: &'a Bytes,
}

fn dispatch(ctx: &RequestCtx, route: Route) -> Result<Response, ApiError> {
    let types = || ctx.cluster.types();
    let found = |v: Option<Value>, path: &str| {
        v.map(|v| json_response(200, &v))
            .ok_or_else(|| ApiError::no_route(path))
    };
    match route {
        Route::Version => Ok(json_response(200, &discovery::version())),
        Route::Health => Ok(Response::builder()
            .status(200)
            .body(Body::from("ok"))
            .expect("valid")),
        Route::Api => Ok(json_response(
            200,
            &discovery::core_versions(&ctx.sim.address),
        )),
        Route::Apis => Ok(json_response(200, &discovery::group_list(&types()))),
        Route::Group(g) => found(discovery::group(&types(), g), g),
        Route::GroupVersion(g, v) => found(
            discovery::resource_list(&types(), g, v),
            &format!("{g}/{v}"),
        ),
        Route::OpenApiIndex => Ok(json_response(200, &openapi::index(&types()))),
        Route::OpenApi(p) => found(openapi::group_version(&types(), &p), &p),
        Route::Unknown => Err(ApiError::no_route("")),
        Route::Resource {
            group,
            version,
            namespace,
            plural,
            name,
            sub,
        } => {
            let rt = ctx
                .cluster
                .resolve(group, version, plural)
                .ok_or_else(|| ApiError::no_route(&format!("{plural}.{group}/{version}")))?;
            if namespace.is_some() && !rt.namespaced {
                return Err(ApiError::no_route(&rt.group_resource()));
            }
            let served = |s: &str| match s {
                "status" => rt.status_subresource,
                "scale" => rt.scale_subresource,
                _ => false,
            };
            if sub.is_some_and(|s| !served(s)) {
                return Err(ApiError::no_route(&format!(
                    "{}/{}",
                    rt.group_resource(),
                    sub.unwrap_or_default()
                )));
            }
            let t = Target {
                rt,
                namespace: namespace.map(str::to_string),
                name: name.map(str::to_string),
                subresource: sub.map(str::to_string),
            };
            resource(ctx, t)
        }
    }
}

fn write_opts(ctx: &RequestCtx, body: &Value) -> Result<WriteOpts, ApiError> {
    let mut dry = ctx.query.get("dryRun").cloned().unwrap_or_default();
    if let Some(d) = body
        .get("dryRun")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
    {
        dry = d.to_string();
    }
    if !dry.is_empty() && dry != "All" {
        return Err(ApiError::bad_request(format!(
            "Invalid value: {dry:?}: supported values: \"All\""
        )));
    }
    let ua = ctx
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let derived = ua
        .split('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown");
    let manager = ctx.query.get("fieldManager").cloned();
    let is_apply = ctx.content_type.starts_with("application/apply-patch");
    let manager = manager.unwrap_or_else(|| {
        if is_apply {
            String::new()
        } else {
            derived.to_string()
        }
    });
    Ok(WriteOpts {
        dry_run: dry == "All",
        manager,
        force: ctx.query.get("force").is_some_and(|f| f == "true"),
    })
}

fn list_query(ctx: &RequestCtx) -> Result<ListQuery, ApiError> {
    let q = ctx.query;
    Ok(ListQuery {
        labels: LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
            .map_err(ApiError::bad_request)?,
        fields: FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str))
            .map_err(ApiError::bad_request)?,
        limit: q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0),
        continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
    })
}

fn wants_metadata(ctx: &RequestCtx) -> bool {
    ctx.headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
}

/// An object reduced to `PartialObjectMetadata` (kube-rs `get_metadata`,
/// `list_metadata`, `watch_metadata`).
fn metadata_only(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

fn wants_table(ctx: &RequestCtx) -> bool {
    ctx.headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

fn resource(ctx: &RequestCtx, t: Target) -> Result<Response, ApiError> {
    let v = verb(ctx.method, t.name.is_some(), ctx.query, ctx.content_type);
    let needs_name = matches!(v, "get" | "update" | "apply" | "patch" | "delete");
    if needs_name && t.name.is_none() || v == "create" && t.name.is_some() {
        return Err(ApiError::method_not_allowed(&t.rt.group_resource()));
    }
    if t.rt.namespaced && t.namespace.is_none() && !matches!(v, "list" | "watch") {
        return Err(ApiError::no_route(&t.rt.group_resource()));
    }
    if t.subresource.as_deref() == Some("scale") {
        return scale(ctx, t, v);
    }
    let c = ctx.cluster;
    match v {
        "get" => {
            let obj = c.get(&t)?;
            if wants_table(ctx) {
                return Ok(json_response(
                    200,
                    &table(std::slice::from_ref(&obj), c.resource_version()),
                ));
            }
            if wants_metadata(ctx) {
                return Ok(json_response(200, &metadata_only(&obj)));
            }
            Ok(json_response(200, &obj))
        }
        "list" => {
            let page = c.list(&t, &list_query(ctx)?)?;
            if wants_table(ctx) {
                return Ok(json_response(200, &table(&page.items, page.rv)));
            }
            if wants_metadata(ctx) {
                let items = page
                    .items
                    .iter()
                    .map(|o| Arc::new(metadata_only(o)))
                    .collect();
                let page = ListPage { items, ..page };
                let kind = "PartialObjectMetadataList";
                return Ok(bytes_response(
                    200,
                    list_json_as(kind, "meta.k8s.io/v1", &page),
                ));
            }
            Ok(bytes_response(200, list_json(&t.rt, &page)))
        }
        "watch" => watch(ctx, t),
        "create" => {
            let body = body_json(ctx)?;
            let opts = write_opts(ctx, &Value::Null)?;
            Ok(json_response(201, &*c.create(&t, body, &opts)?))
        }
        "update" => {
            let body = body_json(ctx)?;
            let opts = write_opts(ctx, &Value::Null)?;
            Ok(json_response(200, &*c.update(&t, body, &opts)?))
        }
        "apply" | "patch" => {
            let patch = patch_body(ctx)?;
            let opts = write_opts(ctx, &Value::Null)?;
            let (code, obj) = c.patch(&t, patch, &opts)?;
            Ok(json_response(code, &obj))
        }
        "delete" => {
            let body = body_json(ctx)?;
            let opts = write_opts(ctx, &body)?;
            Ok(json_response(
                200,
                &*c.delete(&t, &opts, &body["preconditions"])?,
            ))
        }
        "deletecollection" => {
            let body = body_json(ctx)?;
            let opts = write_opts(ctx, &body)?;
            let page = c.delete_collection(&t, &list_query(ctx)?, &opts)?;
            Ok(bytes_response(200, list_json(&t.rt, &page)))
        }
        _ => Err(ApiError::method_not_allowed(&t.rt.group_resource())),
    }
}

/// A PATCH body, typed by its content type.
fn patch_body(ctx: &RequestCtx) -> Result<PatchBody, ApiError> {
    let ct = ctx.content_type.split(';').next().unwrap_or("").trim();
    let make = match ct {
        "application/merge-patch+json" => PatchBody::Merge,
        "application/strategic-merge-patch+json" => PatchBody::Strategic,
        "application/json-patch+json" => PatchBody::Json,
        "application/apply-patch+yaml" | "application/apply-patch+json" => PatchBody::Apply,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    Ok(make(parse_body(ctx.body)?))
}

/// The `scale` subresource: get, update (PUT) and patch.
fn scale(ctx: &RequestCtx, t: Target, v: &str) -> Result<Response, ApiError> {
    let c = ctx.cluster;
    let write = match v {
        "get" => return Ok(json_response(200, &c.get_scale(&t)?)),
        "update" => ScaleWrite::Update(body_json(ctx)?),
        "patch" | "apply" => ScaleWrite::Patch(patch_body(ctx)?),
        _ => {
            return Err(ApiError::method_not_allowed(&format!(
                "{}/scale",
                t.rt.group_resource()
            )))
        }
    };
    let opts = write_opts(ctx, &Value::Null)?;
    Ok(json_response(200, &c.write_scale(&t, write, &opts)?))
}

/// A `<Kind>List` written without cloning the items.
fn list_json(rt: &ResourceType, page: &ListPage) -> Vec<u8> {
    list_json_as(&format!("{}List", rt.kind), &rt.api_version(), page)
}

fn list_json_as(kind: &str, api_version: &str, page: &ListPage) -> Vec<u8> {
    let mut meta = json!({"resourceVersion": page.rv.to_string()});
    if let Some(c) = &page.continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(n) = page.remaining {
        meta["remainingItemCount"] = json!(n);
    }
    let head = json!({"kind": kind, "apiVersion": api_version, "metadata": meta});
    let mut out = serde_json::to_vec(&head).unwrap_or_default();
    out.pop();
    out.extend_from_slice(b",\"items\":[");
    for (i, item) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut out, &**item);
    }
    out.extend_from_slice(b"]}");
    out
}

/// A `meta.k8s.io/v1` Table (Name, Age), what `kubectl get` asks for.
fn table(items: &[Arc<Value>], rv: u64) -> Value {
    let col = |name: &str, format: &str| json!({"name": name, "type": "string", "format": format, "description": name, "priority": 0});
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let created = o["metadata"]["creationTimestamp"].as_str().and_then(clock::parse_rfc3339).unwrap_or_else(clock::unix_now);
            let mut m = o["metadata"].clone();
            if let Some(mm) = m.as_object_mut() {
                mm.remove("managedFields");
            }
            json!({
                "cells": [o["metadata"]["name"], clock::age(created)],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": m},
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": [col("Name", "name"), col("Age", "")],
        "rows": rows,
    })
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut out = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

fn watch(ctx: &RequestCtx, t: Target) -> Result<Response, ApiError> {
    let q = list_query(ctx)?;
    let rv = ctx.query.get("resourceVersion").cloned();
    let send_initial = ctx
        .query
        .get("sendInitialEvents")
        .is_some_and(|v| v == "true");
    let bookmarks = ctx
        .query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let timeout = ctx
        .query
        .get("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1800u64);
    let start = ctx.cluster.watch(&t, rv.as_deref(), send_initial)?;
    let only_meta = wants_metadata(ctx);
    let render = move |obj: &Value| {
        if only_meta {
            metadata_only(obj)
        } else {
            obj.clone()
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut dropped = ctx.sim.drop_watches.subscribe();
    let cluster = ctx.cluster.clone();
    tokio::spawn(async move {
        if start.expired {
            let e = ApiError::expired(format!(
                "too old resource version: {} ({})",
                rv.unwrap_or_default(),
                start.rv
            ));
            let _ = tx.send(event_line("ERROR", &e.to_status())).await;
            return;
        }
        for ev in &start.backlog {
            if let Some(kind) = filter_event(ev, &t, &q.labels, &q.fields) {
                if tx
                    .send(event_line(
                        kind.as_str(),
                        &render(&present(&ev.object, &t.rt)),
                    ))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        let bookmark = |rv: u64, end: bool| {
            let mut m = json!({"resourceVersion": rv.to_string()});
            if end {
                m["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            event_line(
                "BOOKMARK",
                &json!({"kind": t.rt.kind, "apiVersion": t.rt.api_version(), "metadata": m}),
            )
        };
        if send_initial && bookmarks && tx.send(bookmark(start.rv, true)).await.is_err() {
            return;
        }
        let mut live = start.live;
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tokio::select! {
                ev = live.recv() => match ev {
                    Ok(ev) => {
                        if let Some(kind) = filter_event(&ev, &t, &q.labels, &q.fields) {
                            if tx.send(event_line(kind.as_str(), &render(&present(&ev.object, &t.rt)))).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let e = ApiError::expired("too old resource version: the watch fell behind");
                        let _ = tx.send(event_line("ERROR", &e.to_status())).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = dropped.changed() => return,
                _ = &mut deadline => return,
                _ = tick.tick(), if bookmarks => {
                    if tx.send(bookmark(cluster.resource_version(), false)).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    Ok(Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .expect("valid"))
}

/// A kubelet readiness override sent to `POST /_sim/kubelet/ready`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadyRequest {
    #[serde(default)]
    cluster: String,
    api_version: String,
    resource: String,
    #[serde(default)]
    namespace: Option<String>,
    name: String,
    phase: String,
}

/// The `/_sim` control API.
fn control(sim: &Arc<Sim>, method: &Method, path: &str, body: &[u8]) -> Response {
    match control_inner(sim, method, path, body) {
        Ok(v) => json_response(200, &v),
        Err(e) => error_response(&e),
    }
}

fn control_inner(
    sim: &Arc<Sim>,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    let parse = |b: &[u8]| parse_body(b);
    let bad = |e: serde_json::Error| ApiError::bad_request(format!("invalid control request: {e}"));
    match (method.as_str(), path.trim_end_matches('/')) {
        ("GET", "/faults") => Ok(serde_json::to_value(&*lock(&sim.faults)).unwrap_or_default()),
        ("PUT", "/faults") => {
            let f: Faults = serde_json::from_value(parse(body)?).map_err(bad)?;
            *lock(&sim.faults) = f;
            Ok(json!({}))
        }
        ("POST", "/faults") => {
            let v = parse(body)?;
            let mut faults = lock(&sim.faults);
            if v.get("action").is_some() {
                faults.rules.push(serde_json::from_value(v).map_err(bad)?);
            } else {
                let f: Faults = serde_json::from_value(v.clone()).map_err(bad)?;
                faults.rules.extend(f.rules);
                if v.get("latencyMillis").is_some() {
                    faults.latency_millis = f.latency_millis;
                }
            }
            Ok(serde_json::to_value(&*faults).unwrap_or_default())
        }
        ("DELETE", "/faults") => {
            *lock(&sim.faults) = Faults::default();
            Ok(json!({}))
        }
        ("POST", "/watches/drop") => {
            sim.drop_all_watches();
            Ok(json!({}))
        }
        ("GET", "/counters") => Ok(json!({"counters": lock(&sim.counters).entries()})),
        ("DELETE", "/counters") => {
            *lock(&sim.counters) = Counters::default();
            Ok(json!({}))
        }
        ("GET", "/kubelet") => Ok(json!({"default": readiness_str(*lock(&sim.kubelet_default))})),
        ("PUT", "/kubelet") => {
            let v = parse(body)?;
            let mode = v["default"].as_str().and_then(Readiness::parse).ok_or_else(|| {
                ApiError::bad_request("expected {\"default\": \"now\" | \"never\" | \"fail\" | \"after:<duration>\"}")
            })?;
            *lock(&sim.kubelet_default) = mode;
            Ok(json!({"default": readiness_str(mode)}))
        }
        ("POST", "/kubelet/ready") => {
            let r: ReadyRequest = serde_json::from_value(parse(body)?).map_err(bad)?;
            let phase = match r.phase.as_str() {
                "ready" => Phase::Ready,
                "pending" => Phase::Pending,
                "failed" => Phase::Failed,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "phase {other:?}: expected ready, pending or failed"
                    )))
                }
            };
            set_ready(
                sim,
                &r.cluster,
                &r.api_version,
                &r.resource,
                r.namespace.as_deref(),
                &r.name,
                phase,
            )?;
            Ok(json!({}))
        }
        _ => Err(ApiError::no_route(&format!("/_sim{path}"))),
    }
}

/// Forces a workload's simulated status (the kubelet test API).
pub fn set_ready(
    sim: &Sim,
    cluster: &str,
    api_version: &str,
    resource: &str,
    namespace: Option<&str>,
    name: &str,
    phase: Phase,
) -> Result<(), ApiError> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let c = sim.cluster(cluster);
    let rt = c
        .resolve(group, version, resource)
        .ok_or_else(|| ApiError::no_route(resource))?;
    let t = Target {
        rt,
        namespace: namespace.map(str::to_string),
        name: Some(name.to_string()),
        subresource: None,
    };
    c.set_ready(&t, phase)
}

/// Spelling of a readiness mode.
pub fn readiness_str(r: Readiness) -> String {
    match r {
        Readiness::Now => "now".into(),
        Readiness::Never => "never".into(),
        Readiness::Fail => "fail".into(),
        Readiness::After(d) => format!("after:{}ms", d.as_millis()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_are_json_or_yaml() {
        assert_eq!(
            parse_body(b"{\"a\": [1, \"x\"]}").unwrap(),
            serde_json::json!({"a": [1, "x"]})
        );
        assert_eq!(
            parse_body(b"kind: ConfigMap\ndata:\n  n: \"1\"\n  list: [a, b]\n").unwrap(),
            serde_json::json!({"kind": "ConfigMap", "data": {"n": "1", "list": ["a", "b"]}})
        );
        assert_eq!(parse_body(b"  \n").unwrap(), Value::Null);
        assert!(parse_body(b"{: [").is_err());
    }

    #[test]
    fn routes_parse_like_the_apiserver() {
        assert_eq!(
            parse_route("/api/v1/namespaces"),
            Route::Resource {
                group: "",
                version: "v1",
                namespace: None,
                plural: "namespaces",
                name: None,
                sub: None
            }
        );
        assert_eq!(
            parse_route("/api/v1/namespaces/a/status"),
            Route::Resource {
                group: "",
                version: "v1",
                namespace: None,
                plural: "namespaces",
                name: Some("a"),
                sub: Some("status")
            }
        );
        assert_eq!(
            parse_route("/api/v1/namespaces/a/configmaps/b"),
            Route::Resource {
                group: "",
                version: "v1",
                namespace: Some("a"),
                plural: "configmaps",
                name: Some("b"),
                sub: None
            }
        );
        assert_eq!(
            parse_route("/apis/apps/v1/namespaces/a/deployments/b/status"),
            Route::Resource {
                group: "apps",
                version: "v1",
                namespace: Some("a"),
                plural: "deployments",
                name: Some("b"),
                sub: Some("status")
            }
        );
        assert_eq!(parse_route("/apis/apps"), Route::Group("apps"));
        assert_eq!(split_cluster("/clusters/dev/api/v1"), ("dev", "/api/v1"));
        assert_eq!(split_cluster("/clusters/dev"), ("dev", "/"));
        assert_eq!(split_cluster("/api"), ("", "/api"));
    }
}
