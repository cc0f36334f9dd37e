//! `kustomize:` an overlay folder of the repository, built with the real
//! `kustomize`, plus settings from the module on top.
//!
//! ```yaml
//! - name: app
//!   provider: kubernetes
//!   kustomize:
//!     path: overlays/prod            # relative to the module folder
//!     namespace: web-${env.name}
//!     images:
//!       - {name: web, newName: registry.example/web, digest: "${input.digest}"}
//!     replicas:
//!       - {name: web, count: "${input.replicas}"}
//!     labels: {team: "${input.team}"}
//!     patches:
//!       - target: {kind: Deployment, name: web}
//!         patch: |
//!           - {op: add, path: /spec/template/spec/priorityClassName, value: "${input.priority}"}
//! ```
//!
//! How: the files under `modules/` are written to a private temporary
//! folder, a Kustomization of tidegate's own lists the overlay as its only
//! resource and carries the settings, and `kustomize build` runs there
//! (no network, a time limit). The settings' `${...}` references reach
//! kustomize as text and come back in the objects, where tidegate renders
//! them per instance like any manifest: one build serves every
//! environment, and no value (secret or not) is given to kustomize. A count
//! of `replicas` that is a reference becomes a JSON patch of
//! `/spec/replicas`, because kustomize wants a number there. The objects'
//! `config.kubernetes.io/origin` annotations (kustomize's
//! `buildMetadata: [originAnnotations]`) say which file each came from, so
//! problems point at that file; the annotation is removed before apply.
//!
//! The output is cached by the digest of what went in (the files, the
//! settings, the tool), in memory and on disk
//! (`$XDG_CACHE_HOME/tidegate/render`), so an unchanged overlay is built
//! once. It holds no secret: kustomize never sees a value.

use std::collections::BTreeMap;

use crate::diag::Diagnostics;
use crate::model::{Located, SourceDecl, SourceSpec};
use crate::tool::{self, Network, Tool};
use crate::value::{Map, Origin, Spans, Value};

use super::super::decode::{self, Fields};
use super::super::yaml::{self, Node, NodeKind};
use super::super::Files;
use super::Object;

/// The settings a Kustomize entry may add to its overlay.
const SETTINGS: [&str; 5] = ["namespace", "images", "replicas", "labels", "patches"];

/// The annotation kustomize writes with `originAnnotations`.
const ORIGIN: &str = "config.kubernetes.io/origin";

/// Reads `kustomize: PATH` or `kustomize: {path, substitute, settings...}`.
pub fn decode(n: &Node, diags: &mut Diagnostics) -> Option<SourceSpec> {
    if let NodeKind::Str(path) = &n.kind {
        return Some(SourceSpec::Kustomize {
            path: path.clone(),
            path_origin: n.origin.clone(),
            substitute: false,
            settings: Located {
                value: Value::Map(Map::new()),
                spans: Spans::default(),
            },
        });
    }
    let mut f = Fields::new(n, "`kustomize`", diags)?;
    let path = f.req("path", diags).and_then(|p| {
        Some((
            decode::string(p, "`kustomize.path`", diags)?,
            p.origin.clone(),
        ))
    });
    let substitute = f
        .opt("substitute")
        .and_then(|s| decode::boolean(s, "`kustomize.substitute`", diags));
    let mut settings = Map::new();
    let mut spans = Spans::default();
    for key in SETTINGS {
        if let Some(v) = f.opt(key) {
            check_setting(key, v, diags);
            decode::ambiguous_values(v, diags);
            settings.insert(key.to_string(), v.to_value(key, &mut spans));
        }
    }
    let mut known = vec!["path", "substitute"];
    known.extend(SETTINGS);
    f.finish(&known, diags);
    let (path, path_origin) = path?;
    Some(SourceSpec::Kustomize {
        path,
        path_origin,
        substitute: substitute.unwrap_or(false),
        settings: Located {
            value: Value::Map(settings),
            spans,
        },
    })
}

/// The shape of one setting: what kustomize would refuse, said here with
/// the module's line.
fn check_setting(key: &str, v: &Node, diags: &mut Diagnostics) {
    let items = |v: &Node, what: &str, fields: &[&str], diags: &mut Diagnostics| {
        for item in decode::list(v, what, diags).unwrap_or_default() {
            if let Some(mut f) = Fields::new(item, &format!("an item of {what}"), diags) {
                for field in fields {
                    f.opt(field);
                }
                if f.opt("name").is_none() && what != "`patches`" {
                    diags.error(
                        &item.origin,
                        format!("missing `name` in an item of {what}"),
                        "name the image or workload it changes",
                    );
                }
                f.finish(fields, diags);
            }
        }
    };
    match key {
        "namespace" => {
            decode::string(v, "`kustomize.namespace`", diags);
        }
        "images" => items(
            v,
            "`images`",
            &["name", "newName", "newTag", "digest"],
            diags,
        ),
        "replicas" => items(v, "`replicas`", &["name", "count"], diags),
        "labels" => {
            if let Some(f) = Fields::new(v, "`kustomize.labels`", diags) {
                drop(f);
                if let NodeKind::Map(entries) = &v.kind {
                    for (k, val) in entries {
                        decode::string(val, &format!("label `{}`", k.name), diags);
                    }
                }
            }
        }
        _ => items(
            v,
            "`patches`",
            &["patch", "path", "target", "options"],
            diags,
        ),
    }
}

/// Builds the overlay and reads its objects.
pub(crate) fn objects(
    dir: &str,
    source: &SourceDecl,
    files: &Files,
    diags: &mut Diagnostics,
) -> Vec<Object> {
    let SourceSpec::Kustomize {
        path,
        path_origin,
        substitute,
        settings,
    } = &source.spec
    else {
        return Vec::new();
    };
    let Some(overlay) = super::resolve(dir, path, path_origin, "`kustomize.path`", diags) else {
        return Vec::new();
    };
    let has_kustomization = ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .any(|f| files.contains_key(&format!("{overlay}/{f}")));
    if !has_kustomization {
        diags.error(
            path_origin,
            format!("`{path}` ({overlay}) holds no kustomization.yaml"),
            "point `path` at the folder of a Kustomize overlay, or use `manifests:` for plain files",
        );
        return Vec::new();
    }
    let wrapper = match wrapper(dir, &overlay, settings, files) {
        Ok(w) => w,
        Err((at, message, fix)) => {
            diags.error(&at.unwrap_or_else(|| source.origin.clone()), message, fix);
            return Vec::new();
        }
    };
    let output = match build(&wrapper, *substitute, files) {
        Ok(out) => out,
        Err(e) => {
            diags.error(
                &source.origin,
                format!("kustomize overlay {overlay} of `{}`: {}", source.name, e),
                format!("fix the overlay (`kustomize build {overlay}` shows the same error)"),
            );
            return Vec::new();
        }
    };
    read_output(&output, &overlay, source, files, diags)
}

/// The folder tidegate's own Kustomization is written in, inside the
/// temporary copy of the repository.
const WRAPPER_DIR: &str = ".tidegate/kustomize";

/// Problem with a setting: where, what, fix.
type SettingError = (Option<Origin>, String, String);

/// tidegate's Kustomization (as JSON, which is YAML): the overlay as its
/// resource, the origin annotations, and the settings.
fn wrapper(
    dir: &str,
    overlay: &str,
    settings: &Located,
    files: &Files,
) -> Result<String, SettingError> {
    let mut k = serde_json::Map::new();
    k.insert(
        "apiVersion".into(),
        "kustomize.config.k8s.io/v1beta1".into(),
    );
    k.insert("kind".into(), "Kustomization".into());
    k.insert(
        "resources".into(),
        serde_json::json!([format!("../../{overlay}")]),
    );
    k.insert(
        "buildMetadata".into(),
        serde_json::json!(["originAnnotations"]),
    );
    let get = |key: &str| settings.value.get_path(key).map(Value::to_json_masked);
    if let Some(ns) = get("namespace") {
        k.insert("namespace".into(), ns);
    }
    if let Some(images) = get("images") {
        k.insert("images".into(), images);
    }
    if let Some(serde_json::Value::Object(labels)) = get("labels") {
        k.insert(
            "labels".into(),
            serde_json::json!([{"pairs": labels, "includeTemplates": true}]),
        );
    }
    let mut patches = Vec::new();
    let mut literal_replicas = Vec::new();
    if let Some(serde_json::Value::Array(items)) = get("replicas") {
        for item in items {
            match item.get("count") {
                Some(serde_json::Value::Number(_)) => literal_replicas.push(item),
                Some(count) => {
                    let name = item.get("name").cloned().unwrap_or_default();
                    let op = serde_json::json!([{"op": "add", "path": "/spec/replicas", "value": count}]);
                    patches.push(serde_json::json!({
                        "target": {"kind": "^(Deployment|StatefulSet|ReplicaSet|ReplicationController)$", "name": name},
                        "patch": op.to_string(),
                    }));
                }
                None => {
                    return Err((
                        settings.spans.get("replicas").cloned(),
                        "an item of `replicas` has no `count`".into(),
                        "add `count:` (a number or a reference)".into(),
                    ))
                }
            }
        }
    }
    if !literal_replicas.is_empty() {
        k.insert("replicas".into(), literal_replicas.into());
    }
    if let Some(serde_json::Value::Array(items)) = get("patches") {
        for (i, mut item) in items.into_iter().enumerate() {
            let Some(obj) = item.as_object_mut() else {
                continue;
            };
            if let Some(serde_json::Value::String(p)) = obj.remove("path") {
                let at = settings.spans.get(&format!("patches[{i}].path")).cloned();
                let mut d = Diagnostics::default();
                let file =
                    super::resolve(dir, &p, &Origin::default(), "patch", &mut d).and_then(|f| {
                        files
                            .get(&f)
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                    });
                let Some(text) = file else {
                    return Err((
                        at,
                        format!("patch file `{p}` is not in the module's repository folder"),
                        "write the path relative to the module folder, under modules/".into(),
                    ));
                };
                obj.insert("patch".into(), text.into());
            }
            patches.push(item);
        }
    }
    if !patches.is_empty() {
        k.insert("patches".into(), patches.into());
    }
    Ok(serde_json::Value::Object(k).to_string())
}

/// `kustomize build` of the wrapper over a copy of `modules/`, cached.
fn build(wrapper: &str, substitute: bool, files: &Files) -> tool::Result<String> {
    let kustomize = Tool::find("kustomize")?;
    let mut key = tool::Digest::new(&kustomize);
    key.part(&[u8::from(substitute)])
        .part(wrapper.as_bytes())
        .files(
            files
                .range("modules/".to_string()..)
                .take_while(|(p, _)| p.starts_with("modules/")),
        );
    tool::cached("kustomize", key, || {
        let tmp = tool::workdir("kustomize")?;
        for (p, b) in files
            .range("modules/".to_string()..)
            .take_while(|(p, _)| p.starts_with("modules/"))
        {
            let bytes = match std::str::from_utf8(b) {
                Ok(text) if !substitute && text.contains("${") => {
                    crate::expr::escape(text).into_bytes()
                }
                _ => b.clone(),
            };
            tool::write_file("kustomize", tmp.path(), p, &bytes)?;
        }
        tool::write_file(
            "kustomize",
            tmp.path(),
            &format!("{WRAPPER_DIR}/kustomization.yaml"),
            wrapper.as_bytes(),
        )?;
        let result = kustomize.run(&["build", WRAPPER_DIR], tmp.path(), b"", Network::Blocked);
        let out = result.map_err(|e| match e {
            tool::Error::Failed { tool, stderr } => tool::Error::Failed {
                tool,
                stderr: stderr.replace(&format!("{}/", tmp.path().display()), ""),
            },
            other => other,
        })?;
        Ok(out)
    })
}

/// The objects of kustomize's output, each with the spans of the document
/// it came from.
fn read_output(
    output: &str,
    overlay: &str,
    source: &SourceDecl,
    files: &Files,
    diags: &mut Diagnostics,
) -> Vec<Object> {
    let label = format!("{overlay} (kustomize output)");
    let mut parse_diags = Diagnostics::default();
    let docs = yaml::parse(&label, output, &mut parse_diags).unwrap_or_default();
    if !parse_diags.is_empty() {
        diags.error(
            &source.origin,
            format!(
                "the output of kustomize for {overlay} is not YAML tidegate reads: {}",
                parse_diags
                    .iter()
                    .next()
                    .map(|d| d.message.clone())
                    .unwrap_or_default()
            ),
            "report this with the overlay; `kustomize build` shows the output",
        );
        return Vec::new();
    }
    let mut originals: BTreeMap<String, Vec<Node>> = BTreeMap::new();
    let mut out = Vec::new();
    for doc in docs.iter().filter(|d| d.kind != NodeKind::Null) {
        let Some(mut o) = super::object(doc, "an object kustomize rendered", diags) else {
            continue;
        };
        let from = take_origin(&mut o.body);
        o.spans = Spans::default();
        o.origin = source.origin.clone();
        if let Some(file) = from {
            let docs = originals.entry(file.clone()).or_insert_with(|| {
                files
                    .get(&file)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|t| yaml::parse(&file, t, &mut Diagnostics::default()))
                    .unwrap_or_default()
            });
            if let Some(src) = matching(docs, &o) {
                let (_, spans) = src.to_value_spans();
                o.spans = spans;
                o.origin = src.origin.clone();
            } else if files.contains_key(&file) {
                o.origin = Origin {
                    file,
                    line: 1,
                    column: 1,
                };
            }
        }
        out.push(o);
    }
    out
}

/// Removes kustomize's origin annotation (and an `annotations` map it
/// leaves empty); the repository path of the file it names.
fn take_origin(body: &mut Value) -> Option<String> {
    let Value::Map(m) = body else { return None };
    let Some(Value::Map(meta)) = m.get_mut("metadata") else {
        return None;
    };
    let Some(Value::Map(ann)) = meta.get_mut("annotations") else {
        return None;
    };
    let text = match ann.shift_remove(ORIGIN) {
        Some(Value::String(s)) => s,
        _ => return None,
    };
    if ann.is_empty() {
        meta.shift_remove("annotations");
    }
    let path = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("path:"))?
        .trim()
        .trim_matches(['"', '\''])
        .to_string();
    // Relative to the wrapper folder (`.tidegate/kustomize`) or, for an
    // object of the overlay itself, to the overlay.
    let mut parts: Vec<&str> = WRAPPER_DIR.split('/').collect();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    Some(parts.join("/"))
}

/// The document of `docs` the rendered object `o` came from: same kind,
/// and the rendered name holds the written one (a prefix or suffix may
/// have been added).
fn matching<'d>(docs: &'d [Node], o: &Object) -> Option<&'d Node> {
    let kind = o.kind.rsplit('/').next().unwrap_or_default();
    let name = o.body.get_path("metadata.name").and_then(Value::as_str)?;
    let candidates: Vec<&Node> = docs
        .iter()
        .filter(|d| d.get("kind").and_then(Node::as_str) == Some(kind))
        .collect();
    candidates
        .iter()
        .find(|d| {
            d.get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Node::as_str)
                == Some(name)
        })
        .or_else(|| {
            candidates.iter().find(|d| {
                d.get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(Node::as_str)
                    .is_some_and(|n| name.contains(n))
            })
        })
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: serde_json::Value) -> Located {
        Located {
            value: Value::from_json(json),
            spans: Spans::default(),
        }
    }

    #[test]
    fn the_wrapper_carries_settings_and_turns_referenced_counts_into_patches() {
        let s = settings(serde_json::json!({
            "namespace": "web-${env.name}",
            "replicas": [{"name": "web", "count": 3}, {"name": "api", "count": "${input.replicas}"}],
            "labels": {"team": "${input.team}"},
            "patches": [{"path": "patches/x.yaml"}],
        }));
        let files: Files = [(
            "modules/web/patches/x.yaml".to_string(),
            b"kind: X".to_vec(),
        )]
        .into();
        let w = wrapper("modules/web", "modules/web/overlays/prod", &s, &files).unwrap();
        let j: serde_json::Value = serde_json::from_str(&w).unwrap();
        assert_eq!(j["resources"][0], "../../modules/web/overlays/prod");
        assert_eq!(j["namespace"], "web-${env.name}");
        assert_eq!(
            j["replicas"],
            serde_json::json!([{"name": "web", "count": 3}])
        );
        assert_eq!(j["labels"][0]["pairs"]["team"], "${input.team}");
        assert!(j["patches"][0]["patch"]
            .as_str()
            .unwrap()
            .contains("${input.replicas}"));
        assert_eq!(j["patches"][1]["patch"], "kind: X");
        let missing = settings(serde_json::json!({"patches": [{"path": "nope.yaml"}]}));
        assert!(wrapper("modules/web", "modules/web/o", &missing, &files).is_err());
    }

    #[test]
    fn the_origin_annotation_is_removed_and_read_as_a_repository_path() {
        let mut body = Value::from_json(serde_json::json!({
            "metadata": {"name": "a", "annotations": {ORIGIN: "path: ../../modules/web/base/deploy.yaml\n"}}
        }));
        assert_eq!(
            take_origin(&mut body).as_deref(),
            Some("modules/web/base/deploy.yaml")
        );
        assert_eq!(body.get_path("metadata.annotations"), None);
    }
}
