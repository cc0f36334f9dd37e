//! `forEach:` and `count:` on module instances and resources.
//!
//! Expanded at load time, before any check, into ordinary instances and
//! resources named `<name>-<key>`: so ids, ownership marks, graph edges,
//! policies, plans, prune and health need nothing new, and ids are keyed by
//! the item's key (removing one item deletes only its copy; the others keep
//! their ids). `${each.key}` and `${each.value[.path]}` are bound in each
//! copy ([`expr::bind_each`]).
//!
//! What a repeat may iterate must be known without applying anything:
//! - on an instance: a literal list or map, a number (`count`), or exactly
//!   one `${var.<name>[.path]}`;
//! - on a resource: the same literals, or exactly one `${input.<name>[.path]}`
//!   whose value in each instance is a literal or a `${var...}`. Then each
//!   instance gets its own copy of the module (`<folder>@<env>/<instance>`),
//!   as a Helm chart's instance does.
//!
//! Keys: a list's items (strings or numbers, no duplicates), a map's keys,
//! `0`..`n-1` for `count`; letters, digits, `-` and `_` only, so that
//! `<name>-<key>` is a name. At most [`MAX_ITEMS`] per repeat.
//!
//! `dependsOn` naming a repeated entry stands for all its copies.

use std::collections::{BTreeMap, HashMap};

use crate::diag::Diagnostics;
use crate::expr::{self, Part, Scope};
use crate::model::{Environment, Located, Module, Repeat};
use crate::value::{Map, Value};

use super::decode::Fields;

/// Most copies one `forEach`/`count` makes.
pub const MAX_ITEMS: usize = 10_000;

/// Reads `forEach:` or `count:` (not both) of an instance or a resource.
pub fn decode(f: &mut Fields<'_>, diags: &mut Diagnostics) -> Option<Repeat> {
    let for_each = f.opt("forEach");
    let count = f.opt("count");
    let (node, is_count) = match (for_each, count) {
        (Some(n), None) => (n, false),
        (None, Some(n)) => (n, true),
        (None, None) => return None,
        (Some(_), Some(c)) => {
            diags.error(
                &c.origin,
                "both `forEach` and `count` are set",
                "keep one: `forEach` over a list or map, or `count: <number>`",
            );
            return None;
        }
    };
    let (value, spans) = node.to_value_spans();
    Some(Repeat {
        count: is_count,
        origin: node.origin.clone(),
        value: Located { value, spans },
    })
}

/// Expands every repeated instance of `envs`, then every repeated resource
/// of `modules` (in place when the repeat is literal, else per instance).
pub fn expand(
    modules: &mut BTreeMap<String, Module>,
    envs: &mut [Environment],
    diags: &mut Diagnostics,
) {
    for env in envs.iter_mut() {
        expand_instances(env, diags);
    }
    expand_resources(modules, envs, diags);
}

/// The items of a repeat: `(key, value)` in order.
type Items = Vec<(String, Value)>;

fn expand_instances(env: &mut Environment, diags: &mut Diagnostics) {
    if env.instances.iter().all(|i| i.repeat.is_none()) {
        return;
    }
    let mut copies: HashMap<String, Vec<String>> = HashMap::new();
    let mut out = Vec::with_capacity(env.instances.len());
    for inst in std::mem::take(&mut env.instances) {
        let Some(rep) = inst.repeat.clone() else {
            out.push(inst);
            continue;
        };
        let names = copies.entry(inst.name.clone()).or_default();
        let resolve = |r: &expr::Ref| {
            match r.scope {
            Scope::Var => {
                let segs = r.segments();
                let var = env.vars.get(segs[0]).ok_or_else(|| {
                    format!(
                        "`${{{r}}}`: environment {} has no var `{}`",
                        env.name, segs[0]
                    )
                })?;
                expr::lookup(var, &segs[1..])
                    .cloned()
                    .ok_or_else(|| format!("`${{{r}}}`: var `{}` has no such field", segs[0]))
            }
            _ => Err(format!(
                "`${{{r}}}` is not known before apply; a module instance repeats over a literal list or map, a number, or one `${{var...}}`"
            )),
        }
        };
        let Some(items) = items(&rep, &inst.name, &resolve, diags) else {
            continue;
        };
        for (key, item) in items {
            let mut copy = inst.clone();
            copy.repeat = None;
            copy.copy_of = Some(inst.name.clone());
            copy.name = format!("{}-{key}", inst.name);
            let mut ok = true;
            for located in copy.inputs.values_mut() {
                match expr::bind_each(&located.value, "", &key, &item) {
                    Ok(v) => located.value = v,
                    Err((path, e)) => {
                        let at = located.spans.nearest(&path).cloned().unwrap_or_default();
                        diags.error(&at, e.to_string(), "fix the `${each...}` reference");
                        ok = false;
                    }
                }
            }
            if ok {
                names.push(copy.name.clone());
                out.push(copy);
            }
        }
    }
    for inst in &mut out {
        inst.depends_on = std::mem::take(&mut inst.depends_on)
            .into_iter()
            .flat_map(|(name, o)| match copies.get(&name) {
                Some(all) => all.iter().map(|n| (n.clone(), o.clone())).collect(),
                None => vec![(name, o)],
            })
            .collect();
    }
    env.instances = out;
    env.instance_index = std::sync::OnceLock::new();
}

fn expand_resources(
    modules: &mut BTreeMap<String, Module>,
    envs: &mut [Environment],
    diags: &mut Diagnostics,
) {
    let repeated: Vec<String> = modules
        .values()
        .filter(|m| m.resources.iter().any(|r| r.repeat.is_some()))
        .map(|m| m.source.clone())
        .collect();
    for source in repeated {
        let module = modules[&source].clone();
        let literal = module
            .resources
            .iter()
            .filter_map(|r| r.repeat.as_ref())
            .all(|rep| expr::refs(&rep.value.value, "").is_empty());
        if literal {
            let no_input = |r: &expr::Ref| -> Result<Value, String> {
                Err(format!("`${{{r}}}` cannot be read here"))
            };
            let resources = expand_module(&module, &no_input, diags);
            if let Some(m) = modules.get_mut(&source) {
                m.resources = resources;
            }
            continue;
        }
        // Input-dependent: one copy of the module per instance using it.
        for env in envs.iter_mut() {
            let vars = env.vars.clone();
            let env_name = env.name.clone();
            for inst in env.instances.iter_mut().filter(|i| i.source == source) {
                let resolve =
                    |r: &expr::Ref| input_value(r, &inst.inputs, &vars, &module, &env_name);
                let resources = expand_module(&module, &resolve, diags);
                let mut copy = module.clone();
                copy.source = format!("{source}@{env_name}/{}", inst.name);
                copy.resources = resources;
                inst.source = copy.source.clone();
                modules.insert(copy.source.clone(), copy);
            }
        }
    }
}

/// The value of `${input.<name>[.path]}` in an instance: what the instance
/// sets (a literal, or exactly one `${var...}`), else the input's default.
fn input_value(
    r: &expr::Ref,
    inputs: &indexmap::IndexMap<String, Located>,
    vars: &Map,
    module: &Module,
    env: &str,
) -> Result<Value, String> {
    if r.scope != Scope::Input {
        return Err(format!(
            "`${{{r}}}` is not known before apply; a resource repeats over a literal list or map, a number, or one `${{input...}}`"
        ));
    }
    let segs = r.segments();
    let written = match inputs.get(segs[0]) {
        Some(l) => l.value.clone(),
        None => match module.inputs.get(segs[0]).and_then(|d| d.default.clone()) {
            Some(v) => v,
            None => {
                return Err(format!(
                    "`${{{r}}}`: input `{}` is not set (in environment {env})",
                    segs[0]
                ))
            }
        },
    };
    let value = match &written {
        Value::String(s) if expr::has_refs(s) => match expr::parse(s).map_err(|e| e.to_string())?.as_slice() {
            [Part::Ref(v)] if v.scope == Scope::Var => {
                let vs = v.segments();
                vars.get(vs[0])
                    .and_then(|x| expr::lookup(x, &vs[1..]))
                    .cloned()
                    .ok_or_else(|| format!("`${{{v}}}`: environment {env} has no such var"))?
            }
            _ => {
                return Err(format!(
                    "`${{{r}}}` is `{s}` in environment {env}, which is not known before apply; a repeat needs a literal or one `${{var...}}`"
                ))
            }
        },
        other => other.clone(),
    };
    expr::lookup(&value, &segs[1..])
        .cloned()
        .ok_or_else(|| format!("`${{{r}}}`: no such field"))
}

/// The resources of `module` with each repeated one replaced by its copies.
fn expand_module(
    module: &Module,
    resolve: &dyn Fn(&expr::Ref) -> Result<Value, String>,
    diags: &mut Diagnostics,
) -> Vec<crate::model::Resource> {
    let mut out = Vec::with_capacity(module.resources.len());
    for r in &module.resources {
        let Some(rep) = &r.repeat else {
            out.push(r.clone());
            continue;
        };
        let Some(items) = items(rep, &r.name, resolve, diags) else {
            continue;
        };
        for (key, item) in items {
            match expr::bind_each(&r.body, "", &key, &item) {
                Ok(body) => {
                    let mut copy = r.clone();
                    copy.repeat = None;
                    copy.name = format!("{}-{key}", r.name);
                    copy.body = body;
                    copy.source = Some(r.name.clone());
                    out.push(copy);
                }
                Err((path, e)) => {
                    let at = r.spans.nearest(&path).cloned().unwrap_or_default();
                    diags.error(&at, e.to_string(), "fix the `${each...}` reference");
                }
            }
        }
    }
    out
}

/// The items of `rep` on entry `name`: its value (a literal, or the one
/// reference `resolve` reads), checked. `None` after reporting a problem.
fn items(
    rep: &Repeat,
    name: &str,
    resolve: &dyn Fn(&expr::Ref) -> Result<Value, String>,
    diags: &mut Diagnostics,
) -> Option<Items> {
    let what = if rep.count { "count" } else { "forEach" };
    let at = &rep.origin;
    let value = match &rep.value.value {
        Value::String(s) if expr::has_refs(s) => match expr::parse(s) {
            Ok(parts) => match parts.as_slice() {
                [Part::Ref(r)] => match resolve(r) {
                    Ok(v) => v,
                    Err(why) => {
                        diags.error(
                            at,
                            format!("`{what}` of {name}: {why}"),
                            "iterate over a value known before apply",
                        );
                        return None;
                    }
                },
                _ => {
                    diags.error(
                        at,
                        format!("`{what}` of {name} must be exactly one reference, not `{s}`"),
                        "write a list, a map, a number, or one `${var...}` / `${input...}`",
                    );
                    return None;
                }
            },
            Err(e) => {
                diags.error(
                    at,
                    e.to_string(),
                    "write `${var.<name>}` or `${input.<name>}`",
                );
                return None;
            }
        },
        other => other.clone(),
    };
    let list = match (rep.count, value) {
        (true, Value::Int(n)) if n >= 0 => (0..n)
            .map(|i| (i.to_string(), Value::Int(i)))
            .collect::<Items>(),
        (true, other) => {
            diags.error(
                at,
                format!(
                    "`count` of {name} must be a whole number of at least 0, found {}",
                    expr::kind_name(&other)
                ),
                "write `count: 3`",
            );
            return None;
        }
        (false, Value::List(values)) => {
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                let key = match &v {
                    Value::String(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    other => {
                        diags.error(
                            at,
                            format!(
                                "`forEach` of {name} lists a {}; a list's items are its keys, so they must be strings or numbers",
                                expr::kind_name(other)
                            ),
                            "iterate over a map (`key: value`) to give each item a value",
                        );
                        return None;
                    }
                };
                out.push((key, v));
            }
            out
        }
        (false, Value::Map(m)) => m.into_iter().collect(),
        (false, other) => {
            diags.error(
                at,
                format!(
                    "`forEach` of {name} must be a list or a map, found {}",
                    expr::kind_name(&other)
                ),
                "write a list (`[a, b]`) or a map (`{a: 1, b: 2}`)",
            );
            return None;
        }
    };
    if list.len() > MAX_ITEMS {
        diags.error(
            at,
            format!(
                "`{what}` of {name} makes {} copies; at most {MAX_ITEMS}",
                list.len()
            ),
            "split the items over several entries or environments",
        );
        return None;
    }
    let mut seen = std::collections::HashSet::new();
    for (key, _) in &list {
        let copy = format!("{name}-{key}");
        let key_ok = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !key_ok || !super::decode::valid_name(&copy) {
            diags.error(
                at,
                format!("`{what}` of {name}: key `{key}` cannot name a copy (`{copy}`)"),
                "keys are letters, digits, `-` and `_`",
            );
            return None;
        }
        if !seen.insert(key.as_str()) {
            diags.error(
                at,
                format!("`forEach` of {name} lists `{key}` twice"),
                "each item is a key and must be unique",
            );
            return None;
        }
    }
    Some(list)
}

#[cfg(test)]
mod tests {
    use crate::testutil::files;

    fn load(envs: &str, module: &str) -> Result<crate::model::Model, String> {
        let f = files(&[
            ("environments/dev.yaml", envs),
            ("modules/app/module.yaml", module),
        ]);
        crate::load::load(&f).map_err(|e| e.to_string())
    }

    const ENV: &str = "apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: dev\nspec:\n  targets:\n    kubernetes:\n      context: dev\n  vars:\n    tenants: {acme: {size: 2}, globex: {size: 3}}\n  modules:\n    - name: tenant\n      source: modules/app\n      forEach: ${var.tenants}\n      inputs:\n        name: ${each.key}\n        size: ${each.value.size}\n    - name: edge\n      source: modules/app\n      dependsOn: [tenant]\n      inputs:\n        name: edge\n        size: 1\n";

    const MODULE: &str = "apiVersion: tidegate.dev/v1\nkind: Module\nmetadata:\n  name: app\nspec:\n  inputs:\n    name: {type: string}\n    size: {type: number}\n  resources:\n    - name: config\n      provider: kubernetes\n      count: 2\n      manifest:\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: ${input.name}-${each.key}\n          namespace: default\n        data:\n          SIZE: \"${input.size}\"\n";

    #[test]
    fn instances_and_resources_repeat_keyed_by_their_items() {
        let m = load(ENV, MODULE).unwrap();
        let env = &m.environments[0];
        let names: Vec<&str> = env.instances.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["tenant-acme", "tenant-globex", "edge"]);
        assert_eq!(
            env.instances[0].inputs["size"].value,
            crate::value::Value::Int(2)
        );
        let deps: Vec<&str> = env.instances[2]
            .depends_on
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(deps, ["tenant-acme", "tenant-globex"]);
        let module = &m.modules["modules/app"];
        let res: Vec<&str> = module.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(res, ["config-0", "config-1"]);
        let meta = module.resources[1].body.as_map().unwrap()["metadata"].clone();
        assert_eq!(
            meta.as_map().unwrap()["name"],
            crate::value::Value::String("${input.name}-1".into())
        );
    }

    #[test]
    fn a_repeat_over_an_input_gives_each_instance_its_own_copies() {
        let module = MODULE
            .replace("      count: 2\n", "      forEach: ${input.zones}\n")
            .replace(
                "    size: {type: number}\n",
                "    size: {type: number}\n    zones: {type: list, default: [a]}\n",
            );
        let env = ENV.replace(
            "        name: edge\n",
            "        name: edge\n        zones: [x, y, z]\n",
        );
        let m = load(&env, &module).unwrap();
        let env = &m.environments[0];
        let edge = env.instances.iter().find(|i| i.name == "edge").unwrap();
        assert_eq!(edge.source, "modules/app@dev/edge");
        let names: Vec<&str> = m.modules[&edge.source]
            .resources
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["config-x", "config-y", "config-z"]);
        let acme = &m.modules["modules/app@dev/tenant-acme"];
        assert_eq!(acme.resources[0].name, "config-a", "the input's default");
    }

    #[test]
    fn a_target_may_name_a_repeated_entry_for_all_its_copies() {
        use crate::plan::target::{scope, Groups};
        let m = load(ENV, MODULE).unwrap();
        let graph = crate::graph::Graph::build(&m).unwrap();
        let groups = Groups::of(&m, "dev");
        let ids = |targets: &[&str]| -> Vec<String> {
            let t: Vec<String> = targets.iter().map(|s| s.to_string()).collect();
            scope(&graph, &groups, "dev", &t)
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(
            ids(&["module.tenant"]),
            [
                "tenant-acme.config-0",
                "tenant-acme.config-1",
                "tenant-globex.config-0",
                "tenant-globex.config-1"
            ]
        );
        assert_eq!(
            ids(&["tenant-globex.config"]),
            ["tenant-globex.config-0", "tenant-globex.config-1"]
        );
        assert_eq!(ids(&["module.tenant-acme"]).len(), 2);
        let t = vec!["module.tenan".to_string()];
        assert!(scope(&graph, &groups, "dev", &t).is_err());
    }

    #[test]
    fn bad_repeats_are_errors_at_their_line() {
        let bad = |env: &str, module: &str, want: &str| {
            let e = load(env, module).unwrap_err();
            assert!(e.contains(want), "want {want:?} in:\n{e}");
        };
        bad(
            &ENV.replace("${var.tenants}", "${var.nope}"),
            MODULE,
            "environments/dev.yaml:14",
        );
        bad(
            &ENV.replace("${var.tenants}", "[a, a]"),
            MODULE,
            "lists `a` twice",
        );
        bad(
            &ENV.replace("${var.tenants}", "[\"Acme Corp\"]"),
            MODULE,
            "key `Acme Corp` cannot name a copy",
        );
        bad(
            ENV,
            &MODULE.replace("count: 2", "count: two"),
            "whole number",
        );
        bad(
            ENV,
            &MODULE.replace("count: 2", "count: 2\n      forEach: [a]"),
            "both `forEach` and `count`",
        );
        bad(
            &ENV.replace("forEach: ${var.tenants}", "forEach: ${module.edge.x}"),
            MODULE,
            "not known before apply",
        );
        bad(
            ENV,
            &MODULE.replace("${input.name}-${each.key}", "${each.nope}"),
            "each.key",
        );
    }
}
