//! The generator of the bundled schema file (`v1.37.json.gz`), run by hand
//! when the bundled Kubernetes version changes:
//!
//! ```text
//! K8S_SWAGGER=$(go env GOMODCACHE)/k8s.io/kubernetes@v1.37.2/api/openapi-spec/swagger.json \
//!   cargo test --lib provider::kubernetes::schema::generate -- --ignored --nocapture
//! ```
//!
//! (`K8S_SWAGGER` defaults to that path under `~/go/pkg/mod`; the release
//! is read from the path, or from `K8S_RELEASE`.) It prints the file's
//! size; the file is committed, so a build never needs the document.
//!
//! It reads the OpenAPI (swagger 2.0) document of a Kubernetes release and
//! keeps what validation needs: every kind the API accepts objects of (a
//! `post`, `put` or `patch` operation names its group-version-kind), the
//! definitions reachable from them, and of each definition its type,
//! properties, required fields, `additionalProperties`, `items`, `enum`,
//! the `x-kubernetes-*` flags that change validation, and the formats the
//! validator checks (`byte`, `int32`). Descriptions, patch strategies,
//! list types and the paths themselves are dropped. Two definitions that
//! swagger cannot describe are rewritten: `intstr.IntOrString` (an integer
//! or a string) and `resource.Quantity` (a quantity string or a number).
//! An object definition without properties (`RawExtension`, `FieldsV1`)
//! holds anything and becomes `x-kubernetes-preserve-unknown-fields`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use serde_json::{Map, Value as J};

use super::model::{Bundle, BundledKind};

const DEFINITIONS: &str = "#/definitions/";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";

/// Reduces a swagger document to the bundle of release `release`.
pub fn reduce(swagger: &J, release: &str) -> Bundle {
    let empty = Map::new();
    let defs = swagger["definitions"].as_object().unwrap_or(&empty);
    let creatable = creatable(swagger);
    let mut kinds = Vec::new();
    for (name, def) in defs {
        for gvk in def["x-kubernetes-group-version-kind"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let key = (
                gvk["group"].as_str().unwrap_or("").to_string(),
                gvk["version"].as_str().unwrap_or("").to_string(),
                gvk["kind"].as_str().unwrap_or("").to_string(),
            );
            if creatable.contains(&key) {
                kinds.push(BundledKind {
                    group: key.0,
                    version: key.1,
                    kind: key.2,
                    definition: name.clone(),
                });
            }
        }
    }
    kinds.sort_by(|a, b| (&a.group, &a.version, &a.kind).cmp(&(&b.group, &b.version, &b.kind)));
    let mut todo: Vec<String> = kinds.iter().map(|k| k.definition.clone()).collect();
    let mut seen = BTreeSet::new();
    let mut definitions = BTreeMap::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let reduced = match name.as_str() {
            QUANTITY => serde_json::json!({"format": "quantity"}),
            INT_OR_STRING => serde_json::json!({"x-kubernetes-int-or-string": true}),
            _ => node(&defs[&name], &mut todo),
        };
        let schema = serde_json::from_value(reduced).expect("a reduced node is a schema");
        definitions.insert(name, schema);
    }
    Bundle {
        kubernetes: release.to_string(),
        kinds,
        definitions,
    }
}

/// The group-version-kinds some operation creates or changes.
fn creatable(swagger: &J) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for ops in swagger["paths"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values())
    {
        for op in ops.as_object().into_iter().flat_map(|o| o.values()) {
            let action = op["x-kubernetes-action"].as_str().unwrap_or("");
            let gvk = &op["x-kubernetes-group-version-kind"];
            if matches!(action, "post" | "put" | "patch") && gvk.is_object() {
                out.insert((
                    gvk["group"].as_str().unwrap_or("").to_string(),
                    gvk["version"].as_str().unwrap_or("").to_string(),
                    gvk["kind"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
    }
    out
}

/// One schema node without what validation does not read; the
/// definitions it refers to are queued on `todo`.
fn node(s: &J, todo: &mut Vec<String>) -> J {
    let mut out = Map::new();
    if let Some(r) = s["$ref"].as_str() {
        let name = r.strip_prefix(DEFINITIONS).unwrap_or(r).to_string();
        todo.push(name.clone());
        out.insert("$ref".into(), J::String(name));
        return J::Object(out);
    }
    for key in [
        "type",
        "enum",
        "nullable",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-embedded-resource",
        "x-kubernetes-int-or-string",
    ] {
        if let Some(v) = s.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    match s["format"].as_str() {
        Some(f @ ("byte" | "int32")) => {
            out.insert("format".into(), J::String(f.into()));
        }
        Some("int-or-string") => {
            out.insert("x-kubernetes-int-or-string".into(), J::Bool(true));
        }
        _ => {}
    }
    if let Some(props) = s["properties"].as_object() {
        let reduced: Map<String, J> = props
            .iter()
            .map(|(k, v)| (k.clone(), node(v, todo)))
            .collect();
        out.insert("properties".into(), J::Object(reduced));
    }
    if let Some(r) = s.get("required") {
        out.insert("required".into(), r.clone());
    }
    match s.get("additionalProperties") {
        Some(J::Bool(b)) => {
            out.insert("additionalProperties".into(), J::Bool(*b));
        }
        Some(a @ J::Object(_)) => {
            out.insert("additionalProperties".into(), node(a, todo));
        }
        _ => {}
    }
    if let Some(i) = s.get("items") {
        out.insert("items".into(), node(i, todo));
    }
    let free_form = s["type"] == "object"
        && s.get("properties").is_none()
        && s.get("additionalProperties").is_none();
    if free_form {
        out.insert("x-kubernetes-preserve-unknown-fields".into(), J::Bool(true));
    }
    J::Object(out)
}

/// Writes `bundle` as compact JSON, gzip-compressed at the best level.
pub fn write(bundle: &Bundle, to: &std::path::Path) -> std::io::Result<usize> {
    let json = serde_json::to_vec(bundle)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&json)?;
    let bytes = gz.finish()?;
    std::fs::write(to, &bytes)?;
    Ok(bytes.len())
}

#[test]
#[ignore = "regenerates the bundled schema file from a Kubernetes swagger.json (K8S_SWAGGER)"]
fn regenerate_the_bundled_schema() {
    let path = std::env::var("K8S_SWAGGER").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/go/pkg/mod/k8s.io/kubernetes@v1.37.2/api/openapi-spec/swagger.json")
    });
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let swagger: J = serde_json::from_slice(&text).expect("swagger.json is JSON");
    // The document says `unversioned`: the release is the module's.
    let release = std::env::var("K8S_RELEASE").unwrap_or_else(|_| {
        path.split("kubernetes@v")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("K8S_RELEASE, or a path under kubernetes@v<release>/")
            .to_string()
    });
    let bundle = reduce(&swagger, &release);
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(super::BUNDLE_PATH);
    let size = write(&bundle, &out).expect("written");
    println!(
        "{}: Kubernetes {release}, {} kinds, {} definitions, {size} bytes",
        out.display(),
        bundle.kinds.len(),
        bundle.definitions.len()
    );
}
