//! Decoding `modules/<name>/module.yaml` (kind `Module`).

use indexmap::IndexMap;

use crate::diag::Diagnostics;
use crate::model::{
    DependsOn, InputDecl, InputType, Located, Module, OutputDecl, Resource, SourceDecl, SourceSpec,
};
use crate::resource::ProviderKind;
use crate::value::{Spans, Value};

use super::decode::{self, Fields};
use super::sources;
use super::typed;
use super::yaml::{Node, NodeKind};
use crate::provider::BodyShape;

/// Decodes one module file; `None` when its header is unusable.
pub fn decode(path: &str, text: &str, diags: &mut Diagnostics) -> Option<Module> {
    let doc = super::one_document(path, text, diags)?;
    let (name, origin, spec) = super::header(&doc, "Module", diags)?;
    let source = path.rsplit_once('/').map_or("", |(d, _)| d).to_string();
    let folder = source.rsplit('/').next().unwrap_or_default();
    if name != folder {
        diags.error(
            &origin,
            format!("module `{name}` is declared in folder {source}"),
            format!("rename the folder to modules/{name} or set `metadata.name: {folder}`"),
        );
    }
    let mut m = Module {
        name,
        source,
        file: path.to_string(),
        origin,
        ..Module::default()
    };
    let mut f = Fields::new(spec, "Module spec", diags)?;
    if let Some(n) = f.opt("inputs") {
        m.inputs = inputs(n, diags);
    }
    if let Some(n) = f.opt("outputs") {
        m.outputs = outputs(n, diags);
    }
    if let Some(n) = f.opt("resources") {
        for r in decode::list(n, "`resources`", diags).unwrap_or_default() {
            let Some(entry) = resource(r, diags) else {
                continue;
            };
            let (name, origin) = match &entry {
                Entry::Resource(r) => (r.name.clone(), r.origin.clone()),
                Entry::Source(s) => (s.name.clone(), s.origin.clone()),
            };
            let first = m
                .resource(&name)
                .map(|r| r.origin.line)
                .or_else(|| m.source(&name).map(|s| s.origin.line));
            if let Some(line) = first {
                diags.error(
                    &origin,
                    format!("duplicate resource name `{name}` (first at line {line})"),
                    "give each resource of a module its own name",
                );
                continue;
            }
            match entry {
                Entry::Resource(r) => m.resources.push(r),
                Entry::Source(s) => m.sources.push(s),
            }
        }
    }
    f.finish(&["inputs", "outputs", "resources"], diags);
    Some(m)
}

fn entries(n: &Node, what: &str, diags: &mut Diagnostics) -> Vec<(String, Node)> {
    if Fields::new(n, what, diags).is_none() {
        return Vec::new();
    }
    match &n.kind {
        NodeKind::Map(e) => e
            .iter()
            .filter(|(k, _)| {
                let ok = decode::valid_name(&k.name);
                if !ok {
                    diags.error(
                        &k.origin,
                        format!("`{}` is not a valid name in {what}", k.name),
                        "use letters, digits, `-` and `_`, starting with a letter",
                    );
                }
                ok
            })
            .map(|(k, v)| (k.name.clone(), v.clone()))
            .collect(),
        _ => Vec::new(),
    }
}

fn inputs(n: &Node, diags: &mut Diagnostics) -> IndexMap<String, InputDecl> {
    entries(n, "`inputs`", diags)
        .into_iter()
        .filter_map(|(name, v)| Some((name.clone(), input(name, &v, diags)?)))
        .collect()
}

fn input(name: String, n: &Node, diags: &mut Diagnostics) -> Option<InputDecl> {
    let mut f = Fields::new(n, &format!("input `{name}`"), diags)?;
    let ty = f.req("type", diags).and_then(|t| {
        let s = decode::string(t, "`type`", diags)?;
        let ty = match s.as_str() {
            "string" => InputType::String,
            "number" => InputType::Number,
            "bool" => InputType::Bool,
            "list" => InputType::List,
            "map" => InputType::Map,
            _ => {
                diags.error(
                    &t.origin,
                    format!("unknown input type `{s}`"),
                    "use one of string, number, bool, list, map",
                );
                return None;
            }
        };
        Some(ty)
    });
    let default = f.opt("default").map(|d| {
        if ty != Some(InputType::Bool) {
            decode::ambiguous_values(d, diags);
        }
        let (value, spans) = d.to_value_spans();
        (value, spans, d)
    });
    let required = f
        .opt("required")
        .and_then(|r| decode::boolean(r, "`required`", diags));
    let description = f
        .opt("description")
        .and_then(|d| decode::string(d, "`description`", diags));
    f.finish(&["type", "default", "required", "description"], diags);
    let ty = ty?;
    if let Some((v, _, node)) = &default {
        if ty == InputType::Bool && !ty.accepts(v) {
            decode::boolean(node, &format!("default of input `{name}`"), diags);
        } else if !ty.accepts(v) {
            diags.error(
                &node.origin,
                format!(
                    "default of input `{name}` must be a {}, found a {}",
                    ty.name(),
                    node.type_name()
                ),
                format!("write a {} default or change `type`", ty.name()),
            );
        }
        if required == Some(true) {
            diags.error(
                &node.origin,
                format!("input `{name}` is required and has a default"),
                "remove `required: true` or the default",
            );
        }
    }
    let (default, default_spans) = match default {
        Some((v, spans, _)) => (Some(v), spans),
        None => (None, Spans::default()),
    };
    Some(InputDecl {
        required: required.unwrap_or(default.is_none()),
        default,
        default_spans,
        name,
        ty,
        description,
        origin: n.origin.clone(),
    })
}

fn outputs(n: &Node, diags: &mut Diagnostics) -> IndexMap<String, OutputDecl> {
    let mut out = IndexMap::new();
    for (name, v) in entries(n, "`outputs`", diags) {
        let Some(mut f) = Fields::new(&v, &format!("output `{name}`"), diags) else {
            continue;
        };
        let value = f.req("value", diags).map(|x| {
            let (value, spans) = x.to_value_spans();
            Located { value, spans }
        });
        let description = f
            .opt("description")
            .and_then(|d| decode::string(d, "`description`", diags));
        f.finish(&["value", "description"], diags);
        if let Some(value) = value {
            let decl = OutputDecl {
                name: name.clone(),
                value,
                description,
                origin: v.origin.clone(),
            };
            out.insert(name, decl);
        }
    }
    out
}

/// One entry of `resources:`.
enum Entry {
    Resource(Resource),
    Source(SourceDecl),
}

/// The keys of a Kubernetes entry that give its objects.
const OBJECT_KEYS: [&str; 4] = ["manifest", "manifests", "kustomize", "helm"];

fn resource(n: &Node, diags: &mut Diagnostics) -> Option<Entry> {
    let mut f = Fields::new(n, "a resource", diags)?;
    let name = f
        .req("name", diags)
        .and_then(|x| decode::name(x, "resource `name`", diags));
    let provider = f.req("provider", diags).and_then(|p| {
        let name = decode::string(p, "`provider`", diags)?;
        let kind = ProviderKind::from_name(&name);
        if kind.is_none() {
            let names: Vec<String> = ProviderKind::ALL
                .iter()
                .map(|k| format!("`{}`", k.name()))
                .collect();
            diags.error(
                &p.origin,
                format!("unknown provider `{name}`"),
                format!("use {}", names.join(" or ")),
            );
        }
        kind
    });
    let shape = provider.map(|p| crate::provider::registry::spec(p).body_shape());
    let depends_on = f
        .opt("dependsOn")
        .map(|d| decode::strings(d, "an entry of `dependsOn`", diags))
        .unwrap_or_default()
        .into_iter()
        .map(|(s, o)| match s.strip_prefix("module.") {
            Some(m) => (DependsOn::Module(m.to_string()), o),
            None => (DependsOn::Resource(s), o),
        })
        .collect();
    let waivers = f.opt("waivers").map(|w| {
        let (value, spans) = w.to_value_spans();
        Located { value, spans }
    });
    if shape == Some(BodyShape::Manifest) {
        if let Some(source) = sources::decode(&mut f, &n.origin, diags) {
            let key = source.as_ref().map_or("manifests", SourceSpec::key);
            let known = ["name", "provider", "dependsOn", "waivers", key];
            f.finish(&known, diags);
            return Some(Entry::Source(SourceDecl {
                name: name?,
                origin: n.origin.clone(),
                spec: source?,
                depends_on,
                waivers,
            }));
        }
    }
    let (kind, body_node) = match provider.zip(shape) {
        Some((_, BodyShape::Manifest)) => manifest_body(&mut f, diags),
        Some((p, BodyShape::Typed)) => typed_body(p, &mut f, diags),
        None => (None, None),
    };
    let repeat = super::repeat::decode(&mut f, diags);
    let known: &[&str] = match shape {
        Some(BodyShape::Typed) => &[
            "name",
            "provider",
            "type",
            "spec",
            "dependsOn",
            "waivers",
            "forEach",
            "count",
        ],
        _ => &[
            "name",
            "provider",
            "manifest",
            "dependsOn",
            "waivers",
            "forEach",
            "count",
        ],
    };
    f.finish(known, diags);
    let (body, spans) = body_node?.to_value_spans();
    Some(Entry::Resource(Resource {
        name: name?,
        provider: provider?,
        kind: kind?,
        body,
        spans,
        origin: n.origin.clone(),
        depends_on,
        waivers,
        source: None,
        repeat,
    }))
}

/// A [`BodyShape::Manifest`] body: its kind and node.
fn manifest_body<'n>(
    f: &mut Fields<'n>,
    diags: &mut Diagnostics,
) -> (Option<String>, Option<&'n Node>) {
    let Some(m) = f.opt("manifest") else {
        diags.error(
            f.origin(),
            "missing the objects of a kubernetes resource",
            format!(
                "add one of {}",
                OBJECT_KEYS.map(|k| format!("`{k}:`")).join(", ")
            ),
        );
        return (None, None);
    };
    decode::ambiguous_values(m, diags);
    let Some(mut mf) = Fields::new(m, "`manifest`", diags) else {
        return (None, None);
    };
    let literal = |key: &str, mf: &mut Fields<'_>, diags: &mut Diagnostics| {
        let n = mf.req(key, diags)?;
        let s = decode::string(n, &format!("manifest `{key}`"), diags)?;
        if crate::expr::has_refs(&s) {
            diags.error(
                &n.origin,
                format!("manifest `{key}` cannot hold a `${{...}}` reference"),
                format!("write the {key} literally; tidegate needs it to order resources"),
            );
            return None;
        }
        Some(s)
    };
    let api = literal("apiVersion", &mut mf, diags);
    let kind = literal("kind", &mut mf, diags);
    if let Some(meta) = mf.req("metadata", diags) {
        if let Some(mut mm) = Fields::new(meta, "manifest `metadata`", diags) {
            if let Some(n) = mm.req("name", diags) {
                decode::string(n, "manifest `metadata.name`", diags);
            }
        }
    }
    let kind = match (api, kind) {
        (Some(a), Some(k)) => Some(format!("{a}/{k}")),
        _ => None,
    };
    (kind, Some(m))
}

/// A [`BodyShape::Typed`] body of `provider`: its type and `spec:` node.
fn typed_body<'n>(
    provider: ProviderKind,
    f: &mut Fields<'n>,
    diags: &mut Diagnostics,
) -> (Option<String>, Option<&'n Node>) {
    let spec = crate::provider::registry::spec(provider);
    let ty = f.req("type", diags).and_then(|t| {
        let s = decode::string(t, "`type`", diags)?;
        match typed::schema(spec, &s) {
            Some(schema) => Some(schema),
            None => {
                diags.error(
                    &t.origin,
                    format!("unknown {provider} resource type `{s}`"),
                    format!("use one of {}", spec.types().join(", ")),
                );
                None
            }
        }
    });
    let body = f.req("spec", diags);
    if let (Some(t), Some(b)) = (&ty, body) {
        typed::check_spec(t, b, diags);
    }
    (ty.map(|t| t.name.to_string()), body)
}

/// True when `v` holds no `${...}` reference anywhere.
pub fn is_literal(v: &Value) -> bool {
    crate::expr::refs(v, "").is_empty()
}
