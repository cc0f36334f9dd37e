//! Sources: module entries that stand for many Kubernetes objects — a
//! folder of manifests ([`manifests`]) or a Kustomize overlay
//! ([`kustomize`]) — expanded into ordinary module resources. A Helm chart
//! ([`helm`]) is only decoded here: its values differ per instance, so
//! `crate::helm` renders it after loading.
//!
//! Each object becomes a [`Resource`] named `<source>/<Kind>/<name>`
//! (`<source>/<Kind>/<namespace>/<name>` when two objects of one kind share a
//! name), so it gets an id, ownership marks, graph edges (its Namespace, the
//! CRD of its kind, the references it holds), policies, a plan diff, prune
//! and health like a manifest written inline. Its `spans` point into the
//! file the object was written in, so later checks report that file and
//! line. The entry's `dependsOn` and `waivers` go to every object; another
//! entry's `dependsOn: [<source>]` waits for all of them.
//!
//! Expansion is per module, not per instance: `${input.*}`, `${env.*}` and
//! `${resource.*}` in the objects (and in a Kustomize entry's settings)
//! stay references, rendered per instance like any manifest.

use std::collections::BTreeMap;

use crate::diag::Diagnostics;
use crate::model::{Module, Resource, SourceDecl, SourceSpec};
use crate::resource::ProviderKind;
use crate::value::{Origin, Spans, Value};

use super::decode::{self, Fields};
use super::yaml::Node;
use super::Files;

pub mod helm;
pub mod kustomize;
pub mod manifests;

/// Reads the source entry of a Kubernetes resource: `Some(spec)` when it
/// has `manifests:` or `kustomize:` (`Some(None)` when that is written
/// wrongly), `None` when it is an inline `manifest:`.
pub fn decode(
    f: &mut Fields<'_>,
    at: &Origin,
    diags: &mut Diagnostics,
) -> Option<Option<SourceSpec>> {
    let keys: Vec<&str> = ["manifest", "manifests", "kustomize", "helm"]
        .into_iter()
        .filter(|k| f.has(k))
        .collect();
    if keys.len() > 1 {
        diags.error(
            at,
            format!(
                "a resource gives its objects once, found {}",
                keys.iter()
                    .map(|k| format!("`{k}:`"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
            "keep one of them, or split the entry in two resources",
        );
    }
    if let Some(n) = f.opt("manifests") {
        return Some(manifests::decode(n, diags));
    }
    if let Some(n) = f.opt("kustomize") {
        return Some(kustomize::decode(n, diags));
    }
    if let Some(n) = f.opt("helm") {
        return Some(helm::decode(n, diags));
    }
    None
}

/// A path of a source, relative to the module folder `dir`, as a
/// repository path inside `modules/`; an error names the field otherwise.
pub(crate) fn resolve(
    dir: &str,
    path: &str,
    at: &Origin,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<String> {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    if path.starts_with('/') {
        diags.error(
            at,
            format!("{what} `{path}` is an absolute path"),
            "write it relative to the module folder (e.g. `manifests/` or `../shared/app`)",
        );
        return None;
    }
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    if parts.first() != Some(&"modules") || parts.len() < 2 {
        diags.error(
            at,
            format!("{what} `{path}` leads out of `modules/`"),
            "keep what a module renders under modules/ (tidegate reads only environments/, modules/ and secrets/)",
        );
        return None;
    }
    Some(parts.join("/"))
}

/// One object read from a file or a tool's output, before it becomes a
/// resource.
pub(crate) struct Object {
    /// `apiVersion/kind`.
    pub kind: String,
    pub body: Value,
    /// Where its fields were written.
    pub spans: Spans,
    /// Where the object starts.
    pub origin: Origin,
}

/// Checks the header of an object document (`apiVersion`, `kind` and
/// `metadata.name`, each a literal string) and converts it.
pub(crate) fn object(doc: &Node, what: &str, diags: &mut Diagnostics) -> Option<Object> {
    let mut f = Fields::new(doc, what, diags)?;
    let mut literal = |key: &str, f: &mut Fields<'_>| {
        let n = f.req(key, diags)?;
        let s = decode::string(n, &format!("`{key}`"), diags)?;
        if crate::expr::has_refs(&s) {
            diags.error(
                &n.origin,
                format!("`{key}` cannot hold a `${{...}}` reference"),
                format!("write the {key} literally; tidegate needs it to order resources"),
            );
            return None;
        }
        Some(s)
    };
    let api = literal("apiVersion", &mut f);
    let kind = literal("kind", &mut f);
    let name = f.req("metadata", diags).and_then(|m| {
        let n = m.get("name");
        if n.is_none() {
            diags.error(
                &m.origin,
                format!("missing `metadata.name` in {what}"),
                "give the object a name (generateName is not supported: tidegate needs a stable name)",
            );
        }
        n.and_then(|n| decode::string(n, "`metadata.name`", diags))
    });
    let (body, spans) = doc.to_value_spans();
    name?;
    Some(Object {
        kind: format!("{}/{}", api?, kind?),
        body,
        spans,
        origin: doc.origin.clone(),
    })
}

/// Replaces every `${` in the strings of `v` by `$${`: the text is taken
/// literally, with no reference.
pub(crate) fn escape(v: &mut Value) {
    match v {
        Value::String(s) if s.contains("${") => *s = crate::expr::escape(s),
        Value::List(items) => items.iter_mut().for_each(escape),
        Value::Map(m) => m.values_mut().for_each(escape),
        _ => {}
    }
}

/// Expands the sources of every module into resources (appended after the
/// declared ones). Kustomize overlays run in parallel.
pub fn expand(modules: &mut BTreeMap<String, Module>, files: &Files, diags: &mut Diagnostics) {
    let jobs: Vec<(String, SourceDecl)> = modules
        .values()
        .flat_map(|m| m.sources.iter().map(|s| (m.source.clone(), s.clone())))
        // Helm charts render per instance, after loading (`crate::helm`).
        .filter(|(_, s)| !matches!(s.spec, SourceSpec::Helm { .. }))
        .collect();
    if jobs.is_empty() {
        return;
    }
    let limit = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut results: Vec<(String, SourceDecl, Vec<Object>, Diagnostics)> = Vec::new();
    for chunk in jobs.chunks(limit) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|(dir, source)| {
                    scope.spawn(move || {
                        let mut d = Diagnostics::default();
                        let objects = objects_of(dir, source, files, &mut d);
                        (dir.clone(), source.clone(), objects, d)
                    })
                })
                .collect();
            for h in handles {
                if let Ok(r) = h.join() {
                    results.push(r);
                }
            }
        });
    }
    for (dir, source, objects, d) in results {
        if objects.is_empty() && d.is_empty() {
            diags.error(
                &source.origin,
                format!("{} `{}` renders no object", source.spec.key(), source.name),
                "point it at files that hold Kubernetes objects, or remove the entry",
            );
        }
        diags.extend(d);
        let resources = into_resources(&source, objects, diags);
        if let Some(m) = modules.get_mut(&dir) {
            m.resources.extend(resources);
        }
    }
}

fn objects_of(
    dir: &str,
    source: &SourceDecl,
    files: &Files,
    diags: &mut Diagnostics,
) -> Vec<Object> {
    match &source.spec {
        SourceSpec::Manifests {
            path,
            path_origin,
            substitute,
        } => manifests::objects(dir, path, path_origin, *substitute, files, diags),
        SourceSpec::Kustomize { .. } => kustomize::objects(dir, source, files, diags),
        SourceSpec::Helm { .. } => Vec::new(),
    }
}

/// Names each object and makes it a resource of the source.
pub(crate) fn into_resources(
    source: &SourceDecl,
    objects: Vec<Object>,
    diags: &mut Diagnostics,
) -> Vec<Resource> {
    let short = |o: &Object| {
        let kind = o.kind.rsplit('/').next().unwrap_or_default().to_string();
        let name = meta(&o.body, "name").unwrap_or_default().to_string();
        (kind, name)
    };
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for o in &objects {
        *counts.entry(short(o)).or_default() += 1;
    }
    let mut seen: BTreeMap<String, Origin> = BTreeMap::new();
    let mut out = Vec::new();
    for o in objects {
        let (kind, name) = short(&o);
        let ns = meta(&o.body, "namespace").unwrap_or_default();
        let resource_name = if counts[&(kind.clone(), name.clone())] > 1 && !ns.is_empty() {
            format!("{}/{kind}/{ns}/{name}", source.name)
        } else {
            format!("{}/{kind}/{name}", source.name)
        };
        if let Some(first) = seen.get(&resource_name) {
            diags.error(
                &o.origin,
                format!(
                    "{} `{}` renders {kind} `{name}` twice (first at {first})",
                    source.spec.key(),
                    source.name
                ),
                "keep one of the two objects",
            );
            continue;
        }
        seen.insert(resource_name.clone(), o.origin.clone());
        let mut spans = o.spans;
        if spans.get("").is_none() {
            spans.insert("", o.origin.clone());
        }
        out.push(Resource {
            name: resource_name,
            provider: ProviderKind::Kubernetes,
            kind: o.kind,
            body: o.body,
            spans,
            origin: o.origin,
            depends_on: source.depends_on.clone(),
            waivers: source.waivers.clone(),
            source: Some(source.name.clone()),
            repeat: None,
        });
    }
    out
}

/// A string field of an object's metadata.
pub(crate) fn meta<'v>(body: &'v Value, key: &str) -> Option<&'v str> {
    match body {
        Value::Map(m) => match m.get("metadata")? {
            Value::Map(meta) => match meta.get(key)? {
                Value::String(s) => Some(s),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_modules() {
        let at = Origin::default();
        let mut d = Diagnostics::default();
        assert_eq!(
            resolve("modules/web", "manifests/", &at, "path", &mut d).as_deref(),
            Some("modules/web/manifests")
        );
        assert_eq!(
            resolve("modules/web", "../shared/app", &at, "path", &mut d).as_deref(),
            Some("modules/shared/app")
        );
        assert!(d.is_empty());
        assert_eq!(
            resolve("modules/web", "../../charts", &at, "path", &mut d),
            None
        );
        assert_eq!(resolve("modules/web", "/etc", &at, "path", &mut d), None);
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn escaped_text_has_no_reference() {
        let mut v = Value::from_json(serde_json::json!({"a": ["${x}", "plain"], "b": "$${y}"}));
        escape(&mut v);
        assert!(crate::expr::refs(&v, "").is_empty());
    }
}
