//! Decoding `environments/<name>.yaml` (kind `Environment`).

use indexmap::IndexMap;

use crate::diag::Diagnostics;
use crate::model::{Environment, Instance, Located};
use crate::provider::{AwsTarget, KubeTarget};
use crate::value::{Origin, Value};

use super::decode::{self, Fields};
use super::yaml::{Node, NodeKind};

const SPEC_FIELDS: &[&str] = &["after", "targets", "vars", "secrets", "modules", "policy"];

/// Decodes one environment file; `None` when its header is unusable.
pub fn decode(path: &str, text: &str, diags: &mut Diagnostics) -> Option<Environment> {
    let doc = super::one_document(path, text, diags)?;
    let (name, origin, spec) = super::header(&doc, "Environment", diags)?;
    let stem = path
        .rsplit('/')
        .next()
        .and_then(|f| f.rsplit_once('.'))
        .map_or("", |(s, _)| s);
    if name != stem {
        diags.error(
            &origin,
            format!("environment `{name}` is declared in {path}"),
            format!("name the file environments/{name}.yaml or set `metadata.name: {stem}`"),
        );
    }
    let mut env = Environment {
        name,
        file: path.to_string(),
        origin,
        ..Environment::default()
    };
    let mut f = Fields::new(spec, "Environment spec", diags)?;
    if let Some(n) = f.opt("after") {
        env.after = decode::strings(n, "`after`", diags);
    }
    if let Some(n) = f.opt("targets") {
        targets(&mut env, n, diags);
    }
    if let Some(n) = f.opt("vars") {
        if Fields::new(n, "`vars`", diags).is_some() {
            decode::ambiguous_booleans(n, diags);
            let (value, spans) = n.to_value_spans();
            env.vars = match value {
                Value::Map(m) => m,
                _ => Default::default(),
            };
            env.var_spans = spans;
        }
    }
    if let Some(n) = f.opt("secrets") {
        env.secret_files = decode::strings(n, "an entry of `secrets`", diags)
            .into_iter()
            .map(|(p, o)| (normalise(&p), o))
            .collect();
    }
    if let Some(n) = f.opt("modules") {
        env.instances = decode::list(n, "`modules`", diags)
            .unwrap_or_default()
            .iter()
            .filter_map(|i| instance(i, diags))
            .collect();
    }
    if let Some(n) = f.opt("policy") {
        let (value, spans) = n.to_value_spans();
        env.policy = Some(Located { value, spans });
    }
    f.finish(SPEC_FIELDS, diags);
    Some(env)
}

/// A repo path as written (`./modules/web/`) in canonical form (`modules/web`).
pub fn normalise(p: &str) -> String {
    p.trim_start_matches("./").trim_end_matches('/').to_string()
}

fn targets(env: &mut Environment, n: &Node, diags: &mut Diagnostics) {
    let Some(mut f) = Fields::new(n, "`targets`", diags) else {
        return;
    };
    if let Some(k) = f.opt("kubernetes") {
        env.kubernetes = kube_target(k, diags);
    }
    if let Some(a) = f.opt("aws") {
        env.aws = aws_target(a, diags);
    }
    f.finish(&["kubernetes", "aws"], diags);
}

fn kube_target(n: &Node, diags: &mut Diagnostics) -> Option<KubeTarget> {
    let mut f = Fields::new(n, "`targets.kubernetes`", diags)?;
    let mut t = KubeTarget::default();
    if let Some(c) = f.opt("context") {
        t.context = decode::string(c, "`context`", diags);
    }
    if let Some(b) = f.opt("forceConflicts") {
        t.force_conflicts = decode::boolean(b, "`forceConflicts`", diags).unwrap_or(false);
    }
    f.finish(&["context", "forceConflicts"], diags);
    Some(t)
}

fn aws_target(n: &Node, diags: &mut Diagnostics) -> Option<AwsTarget> {
    let mut f = Fields::new(n, "`targets.aws`", diags)?;
    let region = f
        .req("region", diags)
        .and_then(|r| decode::string(r, "`region`", diags));
    let profile = f
        .opt("profile")
        .and_then(|p| decode::string(p, "`profile`", diags));
    f.finish(&["region", "profile"], diags);
    Some(AwsTarget {
        region: region?,
        profile,
    })
}

fn instance(n: &Node, diags: &mut Diagnostics) -> Option<Instance> {
    let mut f = Fields::new(n, "a module instance", diags)?;
    let name = f
        .req("name", diags)
        .and_then(|x| decode::name(x, "module instance `name`", diags));
    let source = f
        .req("source", diags)
        .and_then(|x| decode::string(x, "`source`", diags));
    let mut inst = Instance {
        origin: n.origin.clone(),
        ..Instance::default()
    };
    if let Some(i) = f.opt("inputs") {
        inst.inputs = inputs(i, diags);
    }
    if let Some(d) = f.opt("dependsOn") {
        inst.depends_on = decode::strings(d, "an entry of `dependsOn`", diags);
    }
    f.finish(&["name", "source", "inputs", "dependsOn"], diags);
    inst.name = name?;
    inst.source = normalise(&source?);
    Some(inst)
}

fn inputs(n: &Node, diags: &mut Diagnostics) -> IndexMap<String, Located> {
    let mut out = IndexMap::new();
    if Fields::new(n, "`inputs`", diags).is_none() {
        return out;
    }
    if let NodeKind::Map(entries) = &n.kind {
        for (k, v) in entries {
            decode::ambiguous_booleans(v, diags);
            let (value, mut spans) = v.to_value_spans();
            spans.insert("@key", k.origin.clone());
            out.insert(k.name.clone(), Located { value, spans });
        }
    }
    out
}

/// Where the key of an input entry was written (recorded as `@key`).
pub fn key_origin(l: &Located) -> Origin {
    l.spans.get("@key").cloned().unwrap_or_else(|| l.origin())
}
