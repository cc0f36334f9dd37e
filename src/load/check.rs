//! Stage 2 of loading: resolution. Orders the environments and checks that
//! every name and `${...}` reference points at something that exists, in
//! the scope where it is written:
//!
//! - environment documents (instance inputs): `var`, `env`, `secret`,
//!   `module.<instance>.<output>`;
//! - module documents (outputs, resource bodies): `input`, `env`,
//!   `resource.<name>.<attribute>`.

use std::collections::{BTreeMap, BTreeSet};

use crate::diag::Diagnostics;
use crate::expr::{self, Ref, Scope};
use crate::model::{DependsOn, Environment, Instance, Model, Module, Resource, SecretTree};
use crate::value::{Origin, Spans, Value};

use super::env::key_origin;

/// Sorts environments so each comes after those in its `after` list (ties
/// by name); reports unknown names and cycles.
pub fn order(envs: Vec<Environment>, diags: &mut Diagnostics) -> Vec<Environment> {
    let names: BTreeSet<String> = envs.iter().map(|e| e.name.clone()).collect();
    for e in &envs {
        for (a, o) in &e.after {
            if a == &e.name {
                diags.error(
                    o,
                    format!("environment `{a}` is after itself"),
                    "remove it from `after`",
                );
            } else if !names.contains(a) {
                diags.error(
                    o,
                    format!("`after` names unknown environment `{a}`"),
                    format!("use one of: {}", join(names.iter())),
                );
            }
        }
    }
    let mut placed: Vec<Environment> = Vec::new();
    let mut rest: BTreeMap<String, Environment> =
        envs.into_iter().map(|e| (e.name.clone(), e)).collect();
    loop {
        let ready: Option<String> = rest
            .values()
            .find(|e| {
                e.after
                    .iter()
                    .all(|(a, _)| a == &e.name || !rest.contains_key(a))
            })
            .map(|e| e.name.clone());
        match ready {
            Some(n) => placed.extend(rest.remove(&n)),
            None => break,
        }
    }
    if !rest.is_empty() {
        let cycle: Vec<String> = rest
            .values()
            .flat_map(|e| {
                e.after
                    .iter()
                    .filter(|(a, _)| rest.contains_key(a) && a != &e.name)
                    .map(move |(a, o)| format!("\n  {} after {a} (declared at {o})", e.name))
            })
            .collect();
        let first = rest
            .values()
            .next()
            .map(|e| e.origin.clone())
            .unwrap_or_default();
        diags.error(
            &first,
            format!(
                "environment order has a cycle between {}:{}",
                join(rest.keys()),
                cycle.concat()
            ),
            "remove one `after` entry so the environments form a line (dev < staging < test < prod)",
        );
        placed.extend(rest.into_values());
    }
    placed
}

/// The names, `, `-separated; past 20 (a `forEach` makes thousands of
/// instances) the first 20 and how many more.
fn join<T: AsRef<str>>(items: impl Iterator<Item = T>) -> String {
    const SHOWN: usize = 20;
    let all: Vec<String> = items.map(|s| s.as_ref().to_string()).collect();
    let mut out = all[..all.len().min(SHOWN)].join(", ");
    if all.len() > SHOWN {
        out.push_str(&format!(" and {} more", all.len() - SHOWN));
    }
    out
}

/// Checks every reference of every module and environment.
/// Modules in `broken` had problems of their own (already reported):
/// references into them are not checked again.
pub fn references(model: &Model, broken: &BTreeSet<String>, diags: &mut Diagnostics) {
    for m in model
        .modules
        .values()
        .filter(|m| !broken.contains(&m.source))
    {
        check_module(m, diags);
    }
    let ctx = Ctx { model, broken };
    for env in &model.environments {
        check_env(&ctx, env, diags);
    }
}

/// What the environment checks look at.
struct Ctx<'a> {
    model: &'a Model,
    broken: &'a BTreeSet<String>,
}

fn check_module(m: &Module, diags: &mut Diagnostics) {
    for out in m.outputs.values() {
        for (path, r) in expr::refs(&out.value.value, "") {
            let at = nearest(&out.value.spans, &path);
            if let Some(r) = parsed(r, &at, diags) {
                module_ref(m, None, &r, &at, diags);
            }
        }
    }
    for res in &m.resources {
        for (path, r) in expr::refs(&res.body, "") {
            let at = nearest(&res.spans, &path);
            if let Some(r) = parsed(r, &at, diags) {
                module_ref(m, Some(res), &r, &at, diags);
            }
        }
        for (d, o) in &res.depends_on {
            if let DependsOn::Resource(n) = d {
                if n == &res.name || res.source.as_ref() == Some(n) {
                    diags.error(
                        o,
                        format!("resource `{n}` depends on itself"),
                        "remove it from `dependsOn`",
                    );
                } else if m.named(n).is_empty() && m.source(n).is_none() {
                    diags.error(
                        o,
                        format!(
                            "`dependsOn` names unknown resource `{n}` of module {}",
                            m.name
                        ),
                        format!(
                            "use a resource name of this module ({}) or `module.<instance>`",
                            resource_names(m)
                        ),
                    );
                }
            }
        }
    }
}

fn nearest(spans: &Spans, path: &str) -> Origin {
    spans.nearest(path).cloned().unwrap_or_default()
}

fn parsed(r: expr::Result<Ref>, at: &Origin, diags: &mut Diagnostics) -> Option<Ref> {
    r.map_err(|e| {
        diags.error(
            at,
            e.to_string(),
            "write `${<kind>.<name>...}`; use `$${` for a literal `${`",
        )
    })
    .ok()
}

fn resource_names(m: &Module) -> String {
    join(
        m.resources
            .iter()
            .filter(|r| r.source.is_none())
            .map(|r| r.name.as_str())
            .chain(m.sources.iter().map(|s| s.name.as_str())),
    )
}

fn module_ref(m: &Module, this: Option<&Resource>, r: &Ref, at: &Origin, diags: &mut Diagnostics) {
    match r.scope {
        Scope::Env => {}
        Scope::Input => {
            if !m.inputs.contains_key(&r.path[0]) {
                diags.error(
                    at,
                    format!("`${{{r}}}`: module {} has no input `{}`", m.name, r.path[0]),
                    format!(
                        "declare it under spec.inputs or use a declared input ({})",
                        join(m.inputs.keys())
                    ),
                );
            }
        }
        Scope::Resource => resource_ref(m, this, r, at, diags),
        // Bound in each copy; the entry as written keeps them.
        Scope::Each if this.is_some_and(|t| t.repeat.is_some()) => {}
        Scope::Each => diags.error(
            at,
            format!("`${{{r}}}` is only known in an entry with `forEach` or `count`"),
            "add `forEach:` or `count:` to this resource, or pass the value as an input",
        ),
        Scope::Var | Scope::Secret | Scope::Module => diags.error(
            at,
            format!("`${{{r}}}` cannot be used inside a module"),
            format!(
                "declare a module input and set it in the environment (`<input>: ${{{r}}}`), then use `${{input.<input>}}`"
            ),
        ),
    }
}

fn resource_ref(
    m: &Module,
    this: Option<&Resource>,
    r: &Ref,
    at: &Origin,
    diags: &mut Diagnostics,
) {
    let name = &r.path[0];
    let Some(target) = m.resource(name) else {
        if let Some(source) = m.source(name) {
            diags.error(
                at,
                format!(
                    "`${{{r}}}`: `{name}` is a {} source of many objects",
                    source.spec.key()
                ),
                format!("refer to one of its objects as `${{resource.{name}/<Kind>/<name>...}}`, or wait for all of them with `dependsOn: [{name}]`"),
            );
            return;
        }
        diags.error(
            at,
            format!("`${{{r}}}`: module {} has no resource `{name}`", m.name),
            format!("use one of its resources ({})", resource_names(m)),
        );
        return;
    };
    if this.is_some_and(|t| t.name == *name) {
        diags.error(
            at,
            format!("`${{{r}}}`: resource `{name}` refers to itself"),
            "a resource cannot depend on its own attributes; use an input or a literal",
        );
        return;
    }
    let attr = r.rest(1);
    if !has_attribute(target, &attr) {
        diags.error(
            at,
            format!(
                "`${{{r}}}`: resource `{name}` ({}) has no attribute `{attr}`",
                target.kind
            ),
            format!("use one of: {}", attributes(target)),
        );
    }
}

/// True when `attr` can be referenced on `res`.
pub fn has_attribute(res: &Resource, attr: &str) -> bool {
    crate::provider::registry::spec(res.provider).has_attribute(&res.kind, &res.body, attr)
}

fn attributes(res: &Resource) -> String {
    crate::provider::registry::spec(res.provider).attributes_hint(&res.kind)
}

fn check_env(ctx: &Ctx<'_>, env: &Environment, diags: &mut Diagnostics) {
    for (path, r) in expr::refs(&Value::Map(env.vars.clone()), "") {
        let at = nearest(&env.var_spans, &path);
        if r.is_ok() {
            diags.error(
                &at,
                "`vars` hold literal values and cannot use `${...}` references",
                "write the value itself; use `$${` for a literal `${`",
            );
        }
    }
    let mut seen: BTreeMap<&str, &Origin> = BTreeMap::new();
    for inst in &env.instances {
        if let Some(first) = seen.insert(&inst.name, &inst.origin) {
            diags.error(
                &inst.origin,
                format!(
                    "duplicate module instance name `{}` in environment {} (first at line {})",
                    inst.name, env.name, first.line
                ),
                "give each module instance of an environment its own name",
            );
            continue;
        }
        check_instance(ctx, env, inst, diags);
    }
}

fn check_instance(ctx: &Ctx<'_>, env: &Environment, inst: &Instance, diags: &mut Diagnostics) {
    let model = ctx.model;
    for (d, o) in &inst.depends_on {
        instance_exists(env, inst, d, o, "`dependsOn`", diags);
    }
    if ctx.broken.contains(&inst.source) {
        return;
    }
    let Some(module) = model.modules.get(&inst.source) else {
        let known = join(model.modules.keys());
        diags.error(
            &inst.origin,
            format!(
                "module instance `{}` uses unknown module `{}`",
                inst.name, inst.source
            ),
            format!("create {}/module.yaml or use one of: {known}", inst.source),
        );
        return;
    };
    for (name, value) in &inst.inputs {
        let Some(decl) = module.inputs.get(name) else {
            diags.error(
                &key_origin(value),
                format!("module {} has no input `{name}`", module.name),
                format!(
                    "remove it or use a declared input ({})",
                    join(module.inputs.keys())
                ),
            );
            continue;
        };
        let known_type = static_value(env, &value.value);
        if let Some(v) = known_type {
            if !decl.ty.accepts(v) {
                diags.error(
                    &value.origin(),
                    format!(
                        "input `{name}` of module {} must be a {}, found a {}",
                        module.name,
                        decl.ty.name(),
                        expr::kind_name(v)
                    ),
                    format!("pass a {} value", decl.ty.name()),
                );
            }
        }
        for (path, r) in expr::refs(&value.value, "") {
            let at = nearest(&value.spans, &path);
            if let Some(r) = parsed(r, &at, diags) {
                env_ref(model, env, inst, &r, &at, diags);
            }
        }
    }
    for decl in module.inputs.values() {
        if decl.required && !inst.inputs.contains_key(&decl.name) {
            diags.error(
                &inst.origin,
                format!(
                    "module instance `{}` does not set required input `{}` ({})",
                    inst.name,
                    decl.name,
                    decl.ty.name()
                ),
                format!("add `{}: <value>` under its `inputs`", decl.name),
            );
        }
    }
    for res in &module.resources {
        for (d, o) in &res.depends_on {
            if let DependsOn::Module(m) = d {
                instance_exists(env, inst, m, o, "`dependsOn`", diags);
            }
        }
    }
}

/// The value of an input when it is known without rendering: a literal, or
/// exactly one `${var.x}` reference.
fn static_value<'v>(env: &'v Environment, v: &'v Value) -> Option<&'v Value> {
    match v {
        Value::String(s) if expr::has_refs(s) => match expr::parse(s).ok()?.as_slice() {
            [expr::Part::Ref(r)] if r.scope == Scope::Var => {
                let segs = r.segments();
                let vars = env.vars.get(segs[0])?;
                expr::lookup(vars, &segs[1..])
            }
            _ => None,
        },
        other if super::module::is_literal(other) => Some(other),
        _ => None,
    }
}

fn instance_exists(
    env: &Environment,
    inst: &Instance,
    name: &str,
    at: &Origin,
    what: &str,
    diags: &mut Diagnostics,
) -> bool {
    if name == inst.name {
        diags.error(
            at,
            format!("module instance `{name}` refers to itself in {what}"),
            "remove the self-reference",
        );
        false
    } else if env.instance(name).is_none() {
        diags.error(
            at,
            format!(
                "{what} names unknown module instance `{name}` in environment {}",
                env.name
            ),
            format!(
                "use one of: {}",
                join(env.instances.iter().map(|i| i.name.as_str()))
            ),
        );
        false
    } else {
        true
    }
}

fn env_ref(
    model: &Model,
    env: &Environment,
    inst: &Instance,
    r: &Ref,
    at: &Origin,
    diags: &mut Diagnostics,
) {
    let segs = r.segments();
    match r.scope {
        Scope::Var => {
            let found = env
                .vars
                .get(segs[0])
                .and_then(|v| expr::lookup(v, &segs[1..]));
            if found.is_none() {
                diags.error(
                    at,
                    format!("`${{{r}}}`: environment {} has no var `{}`", env.name, r.rest(0)),
                    format!("add it under spec.vars (vars: {})", join(env.vars.keys())),
                );
            }
        }
        Scope::Env => {
            let missing = match segs[0] {
                "region" if env.aws.is_none() => Some("targets.aws.region"),
                "context" if env.kubernetes.as_ref().is_none_or(|k| k.context.is_none()) => {
                    Some("targets.kubernetes.context")
                }
                _ => None,
            };
            if let Some(field) = missing {
                diags.error(
                    at,
                    format!("`${{{r}}}`: environment {} sets no {field}", env.name),
                    format!("set {field} in environments/{}.yaml", env.name),
                );
            }
        }
        Scope::Secret => secret_ref(model, env, r, at, diags),
        Scope::Module => {
            if !instance_exists(env, inst, &r.path[0], at, &format!("`${{{r}}}`"), diags) {
                return;
            }
            let other = env.instance(&r.path[0]).expect("checked above");
            if let Some(m) = model.modules.get(&other.source) {
                if !m.outputs.contains_key(&r.path[1]) {
                    diags.error(
                        at,
                        format!("`${{{r}}}`: module {} (instance `{}`) has no output `{}`", m.name, other.name, r.path[1]),
                        format!("declare it under spec.outputs of {} or use one of: {}", m.file, join(m.outputs.keys())),
                    );
                }
            }
        }
        Scope::Each => diags.error(
            at,
            format!("`${{{r}}}` is only known in a module instance with `forEach` or `count`"),
            "add `forEach:` or `count:` to this instance",
        ),
        Scope::Input | Scope::Resource => diags.error(
            at,
            format!("`${{{r}}}` can only be used inside a module"),
            "in an environment, refer to `${var.x}`, `${env.name}`, `${secret.x}` or `${module.<instance>.<output>}`",
        ),
    }
}

fn secret_ref(model: &Model, env: &Environment, r: &Ref, at: &Origin, diags: &mut Diagnostics) {
    let segs = r.segments();
    if env.secret_file_for(model, &segs).is_some() {
        return;
    }
    let files: Vec<&str> = env.secret_files.iter().map(|(f, _)| f.as_str()).collect();
    if files.iter().any(|f| !model.secret_keys.contains_key(*f)) {
        // A listed file is missing or unreadable: reported at the list.
        return;
    }
    if files.is_empty() {
        diags.error(
            at,
            format!("`${{{r}}}`: environment {} lists no secret files", env.name),
            format!(
                "add `secrets: [secrets/{}.sops.yaml]` to its spec",
                env.name
            ),
        );
        return;
    }
    let is_group = files.iter().any(|f| {
        matches!(
            model.secret_keys.get(*f).and_then(|t| t.get(&segs)),
            Some(SecretTree::Map(_))
        )
    });
    let keys: Vec<String> = files
        .iter()
        .filter_map(|f| model.secret_keys.get(*f))
        .flat_map(SecretTree::leaves)
        .collect();
    let what = if is_group {
        "names a group of keys, not one secret"
    } else {
        "no such key"
    };
    diags.error(
        at,
        format!("`${{{r}}}`: {what} in {}", files.join(", ")),
        format!(
            "add the key with `sops {}` or use one of: {}",
            files[0],
            keys.join(", ")
        ),
    );
}
