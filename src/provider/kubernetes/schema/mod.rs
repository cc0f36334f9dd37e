//! Offline schema validation of Kubernetes objects, like kubeconform: every
//! manifest is checked against the OpenAPI schema of its kind before
//! anything is planned, so a typo in a kind, a field or a type is an error
//! at the line that wrote it instead of a failed apply after ten other
//! resources were written.
//!
//! # What is checked
//!
//! - `apiVersion`/`kind`: a built-in kind of Kubernetes [`KUBERNETES`]
//!   (the bundled schemas), or a kind defined by a CustomResourceDefinition
//!   declared in the repository ([`Crds`]). A misspelt kind or group is an
//!   error with the closest known one (`Deploymnet` → `Deployment`,
//!   `app/v1` → `apps/v1`). A kind neither built in nor declared is
//!   reported as *not checked* (a warning, never an error, never silent).
//! - Fields: unknown fields (with the closest known one), types (string,
//!   integer, number, boolean, map, list, int-or-string, quantity),
//!   required fields, enums of CRD schemas, 32-bit integers, base64 of
//!   `[]byte` fields (Secret `data`), quantity syntax (`1GB` is not one).
//! - What the schema cannot say and the API server checks anyway:
//!   `metadata.name` by the kind's rule (a DNS-1123 subdomain for most, a
//!   label for Namespace, Service and StatefulSet, RBAC names, ...),
//!   `metadata.namespace`, label keys and values, annotation keys
//!   ([`names`]).
//!
//! # Guarantees
//!
//! - A value not known yet (a `${...}` reference, [`Value::Unknown`],
//!   [`Value::Sensitive`]) passes whatever its type: it is checked again
//!   once rendered. A null passes (the API server reads it as unset) but
//!   does not count as a required field.
//! - Each [`Problem`] carries the path of the field it is about
//!   (`spec.template.spec.containers[0].imagePullPolicy`), relative to the
//!   object, so a caller with the object's spans points at file:line.
//! - The bundled schemas are decompressed and compiled once, on first use
//!   ([`bundled`]); nothing here touches the network.
//!
//! # Caveats
//!
//! Only Kubernetes [`KUBERNETES`] is bundled: an environment cannot
//! choose another version. Cross-field rules of the API server
//! (a Deployment's selector matching its template's labels, unique
//! container names, CEL rules of CRDs) are left to the server-side dry run
//! at plan. Built-in enums are not checked: the OpenAPI document of
//! Kubernetes does not carry them.
//!
//! The bundled file is made by the ignored test in `generate.rs` (see
//! there) from the release's `api/openapi-spec/swagger.json`.

mod check;
#[cfg(test)]
mod generate;
mod model;
pub mod names;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::sync::OnceLock;

use self::check::{Owner, Walk};
use self::model::{Arena, Bundle, Compiler, NodeId, Schema};
use self::names::NameRule;
use crate::diag::Severity;
use crate::provider::Problem;
use crate::value::Value;

/// The Kubernetes release whose schemas are bundled.
pub const KUBERNETES: &str = "1.37";

/// The bundled file, relative to the crate (written by `generate.rs`).
#[cfg(test)]
const BUNDLE_PATH: &str = "src/provider/kubernetes/schema/v1.37.json.gz";

static BUNDLE: &[u8] = include_bytes!("v1.37.json.gz");

/// Reading schemas failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundled file is not gzip (a broken build).
    #[error("the bundled Kubernetes schemas cannot be decompressed: {0}")]
    Decompress(#[source] std::io::Error),
    /// The bundled file is not the bundle format (a broken build).
    #[error("the bundled Kubernetes schemas cannot be read: {0}")]
    Decode(#[source] serde_json::Error),
    /// A `$ref` names a definition the bundle does not hold.
    #[error("the bundled Kubernetes schemas refer to a missing definition {name}")]
    MissingDefinition { name: String },
    /// A CustomResourceDefinition's schema uses `$ref`, which the API
    /// server refuses in one.
    #[error("the schema of version {version} of {crd} uses `$ref` ({reference}), which a CustomResourceDefinition cannot")]
    CrdReference {
        crd: String,
        version: String,
        reference: String,
    },
    /// A CustomResourceDefinition's `openAPIV3Schema` is not a schema.
    #[error("the schema of version {version} of {crd} cannot be read: {source}")]
    CrdSchema {
        crd: String,
        version: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The built-in kinds of one Kubernetes release, compiled.
pub struct Schemas {
    /// The release (`1.37.2`).
    pub release: String,
    arena: Arena,
    /// apiVersion → kind → the node of its objects.
    kinds: HashMap<String, HashMap<String, NodeId>>,
    /// Every built-in group (`""` for the core group).
    groups: BTreeSet<String>,
    object_meta: NodeId,
}

impl Schemas {
    /// Decompresses and compiles a bundle file.
    pub fn load(gz: &[u8]) -> Result<Schemas, Error> {
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut json)
            .map_err(Error::Decompress)?;
        let bundle: Bundle = serde_json::from_slice(&json).map_err(Error::Decode)?;
        let mut c = Compiler::new(&bundle.definitions);
        let mut kinds: HashMap<String, HashMap<String, NodeId>> = HashMap::new();
        let mut groups = BTreeSet::new();
        for k in &bundle.kinds {
            let id = c.definition(&k.definition)?;
            kinds
                .entry(api_version(&k.group, &k.version))
                .or_default()
                .insert(k.kind.clone(), id);
            groups.insert(k.group.clone());
        }
        let object_meta = c.definition("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")?;
        Ok(Schemas {
            release: bundle.kubernetes,
            arena: c.arena,
            kinds,
            groups,
            object_meta,
        })
    }

    /// The node of built-in `kind` in `api_version`.
    fn kind(&self, api_version: &str, kind: &str) -> Option<NodeId> {
        self.kinds.get(api_version)?.get(kind).copied()
    }

    /// Every apiVersion serving `kind`, sorted.
    fn versions_of(&self, kind: &str) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .kinds
            .iter()
            .filter(|(_, ks)| ks.contains_key(kind))
            .map(|(av, _)| av.as_str())
            .collect();
        v.sort_by_key(|av| preference(av));
        v
    }

    /// Every built-in kind name.
    fn kind_names(&self) -> BTreeSet<&str> {
        self.kinds
            .values()
            .flat_map(|ks| ks.keys().map(String::as_str))
            .collect()
    }
}

/// Sorts apiVersions stable first (`v1` before `v1beta1`, `v2` first).
fn preference(av: &str) -> (u8, std::cmp::Reverse<String>) {
    let version = av.rsplit('/').next().unwrap_or(av);
    let rank = if version.contains("alpha") {
        2
    } else if version.contains("beta") {
        1
    } else {
        0
    };
    (rank, std::cmp::Reverse(av.to_string()))
}

fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

static BUNDLED: OnceLock<Result<Schemas, Error>> = OnceLock::new();

/// The bundled schemas of Kubernetes [`KUBERNETES`], loaded on first use.
pub fn bundled() -> Result<&'static Schemas, &'static Error> {
    BUNDLED.get_or_init(|| Schemas::load(BUNDLE)).as_ref()
}

/// The kinds the CustomResourceDefinitions of a repository or environment
/// define, with the compiled schema of each version.
#[derive(Default)]
pub struct Crds {
    /// (group, kind) → its definition; the first declared wins.
    kinds: HashMap<(String, String), CustomKind>,
}

struct CustomKind {
    /// The CRD's name (`widgets.example.com`).
    crd: String,
    versions: Vec<CustomVersion>,
}

struct CustomVersion {
    name: String,
    served: bool,
    /// The compiled schema, or why it cannot be read.
    schema: Result<(Arena, NodeId), String>,
}

impl Crds {
    /// The kinds defined by the CustomResourceDefinitions among `objects`
    /// (other objects are skipped).
    pub fn from_objects<'v>(objects: impl IntoIterator<Item = &'v Value>) -> Crds {
        let mut crds = Crds::default();
        for o in objects {
            crds.add(o);
        }
        crds
    }

    /// Adds the kind `object` defines, if it is an
    /// `apiextensions.k8s.io/v1` CustomResourceDefinition whose group and
    /// kind are known; returns whether it was one.
    pub fn add(&mut self, object: &Value) -> bool {
        let str_at = |p: &str| object.get_path(p).and_then(Value::as_str);
        if str_at("kind") != Some("CustomResourceDefinition")
            || str_at("apiVersion") != Some("apiextensions.k8s.io/v1")
        {
            return false;
        }
        let (Some(group), Some(kind)) = (str_at("spec.group"), str_at("spec.names.kind")) else {
            return false;
        };
        if crate::expr::has_refs(group) || crate::expr::has_refs(kind) {
            return false;
        }
        let crd = str_at("metadata.name").unwrap_or(kind).to_string();
        let mut versions = Vec::new();
        let listed = match object.get_path("spec.versions") {
            Some(Value::List(l)) => l.as_slice(),
            _ => &[],
        };
        for v in listed {
            let Some(name) = v.get_path("name").and_then(Value::as_str) else {
                continue;
            };
            let served = !matches!(v.get_path("served"), Some(Value::Bool(false)));
            let schema = match v.get_path("schema.openAPIV3Schema") {
                Some(s) => compile_crd(s, kind, &crd, name).map_err(|e| e.to_string()),
                None => Err(format!("version {name} of {crd} declares no schema")),
            };
            versions.push(CustomVersion {
                name: name.to_string(),
                served,
                schema,
            });
        }
        self.kinds
            .entry((group.to_string(), kind.to_string()))
            .or_insert(CustomKind { crd, versions });
        true
    }

    /// The kinds declared in `group`.
    fn kinds_of(&self, group: &str) -> Vec<&str> {
        self.kinds
            .keys()
            .filter(|(g, _)| g == group)
            .map(|(_, k)| k.as_str())
            .collect()
    }
}

/// Compiles the `openAPIV3Schema` of `version` of CustomResourceDefinition
/// `crd` (its root named `kind`).
fn compile_crd(
    schema: &Value,
    kind: &str,
    crd: &str,
    version: &str,
) -> Result<(Arena, NodeId), Error> {
    let read_error = |source| Error::CrdSchema {
        crd: crd.to_string(),
        version: version.to_string(),
        source,
    };
    let json = serde_json::to_value(schema).map_err(read_error)?;
    let schema: Schema = serde_json::from_value(json).map_err(read_error)?;
    let none = BTreeMap::new();
    let mut c = Compiler::new(&none);
    // With no definitions, only a `$ref` fails to compile.
    let root = c.compile(&schema, Some(kind)).map_err(|e| match e {
        Error::MissingDefinition { name } => Error::CrdReference {
            crd: crd.to_string(),
            version: version.to_string(),
            reference: name,
        },
        other => other,
    })?;
    Ok((c.arena, root))
}

/// Checks one Kubernetes object against the schema of its
/// `apiVersion`/`kind`: the bundled built-in kinds, or a kind of `crds`.
/// Every problem's path is relative to the object. Never fails: a kind
/// that cannot be checked is a [`Severity::Warning`] problem.
pub fn validate(object: &Value, crds: &Crds) -> Vec<Problem> {
    let mut out = Vec::new();
    let schemas = match bundled() {
        Ok(s) => s,
        Err(e) => {
            out.push(warning(
                "",
                format!("not checked: {e}"),
                "report this as a bug of tidegate",
            ));
            return out;
        }
    };
    let Value::Map(m) = object else {
        if !check::pending(object) {
            out.push(error(
                "",
                format!("a Kubernetes object is a map, not {}", object.type_name()),
                "write `apiVersion`, `kind`, `metadata` and the kind's fields",
            ));
        }
        return out;
    };
    let (Some(av), Some(kind)) = (
        required_str(m, "apiVersion", &mut out),
        required_str(m, "kind", &mut out),
    ) else {
        return out;
    };
    let (group, version) = match av.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", av),
    };
    if version.is_empty() || version.contains('/') || (av.contains('/') && group.is_empty()) {
        out.push(error(
            "apiVersion",
            format!("`{av}` is not an apiVersion"),
            "write `<group>/<version>` (apps/v1) or `v1` for the core group",
        ));
        return out;
    }
    let explain = kind.to_ascii_lowercase();
    let target = match schemas.kind(av, kind) {
        Some(id) => Some((&schemas.arena, id, names::name_rule(group, kind))),
        None => custom(schemas, crds, group, version, kind, av, &mut out)
            .map(|(arena, id)| (arena, id, NameRule::Subdomain)),
    };
    let rule = target.as_ref().map_or(NameRule::Subdomain, |t| t.2);
    metadata(schemas, m, rule, kind, group, &explain, &mut out);
    if let Some((arena, root, _)) = target {
        let mut w = Walk {
            arena,
            path: String::new(),
            out: &mut out,
            explain: &explain,
        };
        w.root(root, m, Owner { name: kind, at: 0 });
    }
    out
}

/// `m[field]` as a literal string; a problem when it is missing or not one.
fn required_str<'m>(
    m: &'m crate::value::Map,
    field: &str,
    out: &mut Vec<Problem>,
) -> Option<&'m str> {
    match m.get(field) {
        Some(Value::String(s)) if !crate::expr::has_refs(s) => Some(s),
        Some(v) if check::pending(v) && !matches!(v, Value::Null) => {
            out.push(warning(
                field,
                format!("not checked: `{field}` is not known before rendering"),
                format!("write `{field}` literally"),
            ));
            None
        }
        Some(v) if !matches!(v, Value::Null) => {
            out.push(error(
                field,
                format!("`{field}` must be a string, not {}", v.type_name()),
                format!("write `{field}` as a string"),
            ));
            None
        }
        _ => {
            out.push(error(
                "",
                format!("missing required field `{field}`"),
                format!("add `{field}:`"),
            ));
            None
        }
    }
}

/// The schema of a custom kind, or the problem that explains why there is
/// none (an error for a typo or an unserved version, a warning for a kind
/// nobody declared).
fn custom<'c>(
    schemas: &Schemas,
    crds: &'c Crds,
    group: &str,
    version: &str,
    kind: &str,
    av: &str,
    out: &mut Vec<Problem>,
) -> Option<(&'c Arena, NodeId)> {
    if let Some(ck) = crds.kinds.get(&(group.to_string(), kind.to_string())) {
        let served: Vec<&str> = ck
            .versions
            .iter()
            .filter(|v| v.served)
            .map(|v| v.name.as_str())
            .collect();
        return match ck.versions.iter().find(|v| v.name == version) {
            Some(v) if !v.served => {
                out.push(error(
                    "apiVersion",
                    format!(
                        "version {version} of {kind} is not served: CustomResourceDefinition {} sets `served: false` for it",
                        ck.crd
                    ),
                    served_fix(group, &served),
                ));
                None
            }
            Some(v) => match &v.schema {
                Ok((arena, root)) => Some((arena, *root)),
                Err(why) => {
                    out.push(warning(
                        "kind",
                        format!("not checked: {kind} ({av}): {why}"),
                        format!("give version {version} of CustomResourceDefinition {} an `openAPIV3Schema`", ck.crd),
                    ));
                    None
                }
            },
            None => {
                out.push(error(
                    "apiVersion",
                    format!(
                        "CustomResourceDefinition {} does not define version {version} of {kind}",
                        ck.crd
                    ),
                    served_fix(group, &served),
                ));
                None
            }
        };
    }
    out.push(unknown_kind(schemas, crds, group, kind, av));
    None
}

fn served_fix(group: &str, served: &[&str]) -> String {
    match served {
        [] => "serve a version of the CustomResourceDefinition (`served: true`)".into(),
        [v] => format!("write `apiVersion: {group}/{v}`"),
        _ => format!(
            "write one of {}",
            served
                .iter()
                .map(|v| format!("`apiVersion: {group}/{v}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The problem of a kind that is neither built in nor declared.
fn unknown_kind(schemas: &Schemas, crds: &Crds, group: &str, kind: &str, av: &str) -> Problem {
    let release = &schemas.release;
    let homes = schemas.versions_of(kind);
    if schemas.groups.contains(group) {
        // A built-in group: the kind or the version is wrong.
        if let Some(home) = homes.first() {
            return error(
                "apiVersion",
                format!("{kind} is not served as `{av}` by Kubernetes {release}: it is {home}"),
                format!("write `apiVersion: {home}`"),
            );
        }
        let in_gv: Vec<&str> = schemas
            .kinds
            .get(av)
            .map(|ks| ks.keys().map(String::as_str).collect())
            .unwrap_or_default();
        if in_gv.is_empty() {
            let versions: Vec<&str> = schemas
                .kinds
                .keys()
                .filter(|k| group_of(k) == group)
                .map(String::as_str)
                .collect();
            return error(
                "apiVersion",
                format!("Kubernetes {release} does not serve `{av}`"),
                format!("the group's versions: {}", sorted(versions).join(", ")),
            );
        }
        let fix = match crate::diag::closest(kind, &in_gv) {
            Some(k) => format!("did you mean `{k}`?"),
            None => match closest_builtin(schemas, kind) {
                Some((k, home)) => format!("did you mean `{k}` ({home})?"),
                None => {
                    format!("`kubectl api-resources --api-group={group}` lists the kinds of {av}")
                }
            },
        };
        return error("kind", format!("unknown kind `{kind}` in {av}"), fix);
    }
    let dotless = !group.contains('.');
    let close_group = |home: &str| {
        let g = group_of(home);
        crate::diag::closest(group, &[g]).is_some()
    };
    // A group that no CRD can have (no dot), or a near miss of a built-in
    // group that serves this kind: a typo.
    if let Some(home) = homes.iter().find(|h| dotless || close_group(h)) {
        return error(
            "apiVersion",
            format!("unknown apiVersion `{av}`: Kubernetes {release} has no group `{group}`"),
            format!("did you mean `apiVersion: {home}`? ({kind} is {home})"),
        );
    }
    if dotless {
        let fix = match closest_builtin(schemas, kind) {
            Some((k, home)) => format!("did you mean `apiVersion: {home}` and `kind: {k}`?"),
            None => "check apiVersion: a built-in group (apps, batch, ...) or the group of a CustomResourceDefinition (a domain such as example.com)".into(),
        };
        return error(
            "apiVersion",
            format!("unknown apiVersion `{av}`: Kubernetes {release} has no group `{group}`, and a CustomResourceDefinition's group always has a dot"),
            fix,
        );
    }
    let declared = crds.kinds_of(group);
    let near =
        crate::diag::closest(kind, &declared).filter(|k| k.chars().next() == kind.chars().next());
    let hint = match near {
        Some(k) => format!(
            " (or, if `{kind}` is a typo: did you mean `{k}`, declared in this repository?)"
        ),
        None => String::new(),
    };
    warning(
        "kind",
        format!("not checked: {kind} ({av}) is neither built into Kubernetes {release} nor defined by a CustomResourceDefinition in the repository"),
        format!("declare its CustomResourceDefinition (apiextensions.k8s.io/v1) in a module of the repository so the object is checked before apply{hint}"),
    )
}

/// The built-in kind closest to `kind` and its preferred apiVersion.
fn closest_builtin<'s>(schemas: &'s Schemas, kind: &str) -> Option<(&'s str, &'s str)> {
    let names: Vec<&str> = schemas.kind_names().into_iter().collect();
    let k = crate::diag::closest(kind, &names)?;
    let home = *schemas.versions_of(k).first()?;
    Some((k, home))
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

fn sorted(mut v: Vec<&str>) -> Vec<&str> {
    v.sort_by_key(|av| preference(av));
    v
}

/// Checks `metadata` against the bundled ObjectMeta, and the object's
/// name by `rule`.
fn metadata(
    schemas: &Schemas,
    m: &crate::value::Map,
    rule: NameRule,
    kind: &str,
    group: &str,
    explain: &str,
    out: &mut Vec<Problem>,
) {
    let Some(meta) = m.get("metadata") else {
        return;
    };
    let mut w = Walk {
        arena: &schemas.arena,
        path: "metadata".to_string(),
        out,
        explain,
    };
    w.value(schemas.object_meta, meta, Owner { name: kind, at: 0 });
    let Value::Map(meta) = meta else {
        return;
    };
    if let Some(Value::String(name)) = meta.get("name") {
        if !crate::expr::has_refs(name) {
            if let Some(why) = names::check_name(rule, name) {
                let fix = match names::suggest_name(rule, name) {
                    Some(s) => format!("e.g. `{s}`"),
                    None => "write a lowercase name of letters, digits and '-'".into(),
                };
                out.push(error(
                    "metadata.name",
                    format!("`{name}` is not a valid {kind} name: {why}"),
                    fix,
                ));
            }
        }
    }
    if let Some(Value::String(prefix)) = meta.get("generateName") {
        let masked = match prefix.strip_suffix('-') {
            Some(p) if !p.is_empty() => format!("{p}a"),
            _ => prefix.clone(),
        };
        if !crate::expr::has_refs(prefix) {
            if let Some(why) = names::check_name(rule, &masked) {
                out.push(error(
                    "metadata.generateName",
                    format!("`{prefix}` is not a valid {kind} name prefix: {why}"),
                    "write a lowercase prefix of letters, digits and '-'",
                ));
            }
        }
    }
    if group == "apiextensions.k8s.io" && kind == "CustomResourceDefinition" {
        crd_name(m, meta, out);
        crd_schemas(m, out);
    }
}

/// Every version of an `apiextensions.k8s.io/v1` CustomResourceDefinition
/// has a schema (the API server refuses one without).
fn crd_schemas(m: &crate::value::Map, out: &mut Vec<Problem>) {
    let Some(Value::List(versions)) = m.get("spec").and_then(|s| s.get_path("versions")) else {
        return;
    };
    for (i, v) in versions.iter().enumerate() {
        if !matches!(v, Value::Map(_)) || v.get_path("schema.openAPIV3Schema").is_some() {
            continue;
        }
        let name = v.get_path("name").and_then(Value::as_str).unwrap_or("?");
        out.push(error(
            &format!("spec.versions[{i}]"),
            format!("version {name} has no `schema.openAPIV3Schema`: apiextensions.k8s.io/v1 requires one for every version"),
            "describe the fields (`schema: {openAPIV3Schema: {type: object, properties: ...}}`), or accept anything with `x-kubernetes-preserve-unknown-fields: true`",
        ));
    }
}

/// A CustomResourceDefinition's name is `<plural>.<group>`.
fn crd_name(m: &crate::value::Map, meta: &crate::value::Map, out: &mut Vec<Problem>) {
    let spec = m.get("spec");
    let at = |p: &str| spec.and_then(|s| s.get_path(p)).and_then(Value::as_str);
    let (Some(plural), Some(group), Some(Value::String(name))) =
        (at("names.plural"), at("group"), meta.get("name"))
    else {
        return;
    };
    let want = format!("{plural}.{group}");
    if [plural, group, name.as_str()]
        .iter()
        .any(|s| crate::expr::has_refs(s))
        || *name == want
    {
        return;
    }
    out.push(error(
        "metadata.name",
        format!("a CustomResourceDefinition is named `<spec.names.plural>.<spec.group>`: `{want}`, not `{name}`"),
        format!("write `name: {want}`"),
    ));
}

fn error(path: &str, message: String, fix: impl Into<String>) -> Problem {
    Problem::error(path, message, fix)
}

fn warning(path: &str, message: String, fix: impl Into<String>) -> Problem {
    Problem {
        severity: Severity::Warning,
        ..Problem::error(path, message, fix)
    }
}
