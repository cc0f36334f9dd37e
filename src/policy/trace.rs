//! Where a value of a rendered resource was written.
//!
//! A finding points at the offending field of the module template
//! (`modules/web/module.yaml:104:26`, `image: ${input.image}`), but when
//! that field is a reference the value was written elsewhere — prod's
//! `webImage` var in `environments/prod.yaml` — and that is where the user
//! must fix it. [`ModelTrace`] follows the reference the way rendering does
//! (an input of the instance, its default, a var, another instance's
//! output), keeping the position of every step, as the graph keeps the
//! chain of references behind each edge.

use crate::expr::{self, Part, Ref, Scope};
use crate::model::{Environment, Instance, Model};
use crate::resource::ResourceId;
use crate::value::{index_path, key_path, Origin, Spans, Value};

/// One step of the way a value took into a resource.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Hop {
    /// The reference followed (`${input.image}`), or what holds the value
    /// at the last step (``var `webImage` ``).
    pub what: String,
    pub origin: Origin,
}

/// Renders a chain as `written at <last> (<what>), through <ref> at <origin> <- ...`.
pub fn describe(hops: &[Hop]) -> Option<String> {
    let (last, through) = hops.split_last()?;
    let through = through
        .iter()
        .map(|h| format!("{} at {}", h.what, h.origin))
        .collect::<Vec<_>>()
        .join(" <- ");
    Some(format!(
        "value written at {} ({}), through {through}",
        last.origin, last.what
    ))
}

/// Where the values of resource bodies were written.
pub trait Tracer {
    /// The chain from the field at `path` of resource `id`'s body to where
    /// its value was written: first the reference in the template, last the
    /// literal. Empty when the value is written in the resource itself (or
    /// cannot be followed: several references in one string, a secret, a
    /// resource attribute).
    fn trace(&self, id: &ResourceId, path: &str) -> Vec<Hop>;
}

/// A tracer that knows nothing: findings name the template only.
pub struct NoTrace;

impl Tracer for NoTrace {
    fn trace(&self, _: &ResourceId, _: &str) -> Vec<Hop> {
        Vec::new()
    }
}

/// Follows references through the model of one environment.
pub struct ModelTrace<'m> {
    pub model: &'m Model,
    pub env: &'m Environment,
}

/// Longest chain followed (a valid model has no cycles; this bounds a
/// broken one).
const MAX_HOPS: usize = 32;

/// Which references a value may hold.
#[derive(Clone, Copy)]
enum At<'m> {
    /// A module document, in the scope of this instance.
    Module(&'m Instance),
    /// The environment document.
    Env,
}

impl Tracer for ModelTrace<'_> {
    fn trace(&self, id: &ResourceId, path: &str) -> Vec<Hop> {
        let Some(inst) = self.env.instance(&id.module) else {
            return Vec::new();
        };
        let Some(res) = self
            .model
            .modules
            .get(&inst.source)
            .and_then(|m| m.resource(&id.name))
        else {
            return Vec::new();
        };
        let mut hops = Vec::new();
        self.follow(At::Module(inst), &res.body, &res.spans, path, "", &mut hops);
        if hops.len() < 2 {
            hops.clear();
        }
        hops
    }
}

impl<'m> ModelTrace<'m> {
    /// Follows the value at `path` of `value` (whose positions are `spans`).
    /// A literal there ends the chain, described as `literal` (nothing is
    /// added for the resource itself, `literal` empty).
    fn follow(
        &self,
        at: At<'m>,
        value: &Value,
        spans: &Spans,
        path: &str,
        literal: &str,
        hops: &mut Vec<Hop>,
    ) {
        if hops.len() >= MAX_HOPS {
            return;
        }
        let Some((holder, rest, text)) = string_on_path(value, path) else {
            if !literal.is_empty() {
                hops.push(Hop {
                    what: literal.to_string(),
                    origin: spans.nearest(path).cloned().unwrap_or_default(),
                });
            }
            return;
        };
        let Ok(parts) = expr::parse(text) else {
            return;
        };
        let refs: Vec<&Ref> = parts
            .iter()
            .filter_map(|p| match p {
                Part::Ref(r) => Some(r),
                Part::Lit(_) => None,
            })
            .collect();
        // One reference is followed; a string built from several has no
        // single place where "the" value was written.
        let [r] = refs[..] else {
            if !literal.is_empty() {
                hops.push(Hop {
                    what: literal.to_string(),
                    origin: spans.nearest(&holder).cloned().unwrap_or_default(),
                });
            }
            return;
        };
        let whole = parts.len() == 1;
        if !whole && !rest.is_empty() {
            return; // a path below an interpolated string: not a map or list
        }
        let rest = if whole { rest } else { String::new() };
        hops.push(Hop {
            what: format!("${{{r}}}"),
            origin: spans.nearest(&holder).cloned().unwrap_or_default(),
        });
        let segs = r.segments();
        match (at, r.scope) {
            (At::Module(inst), Scope::Input) => self.input(inst, &segs, &rest, hops),
            (At::Env, Scope::Var) => {
                let name = segs[0];
                let sub = sub_path(self.env.vars.get(name), name, &segs[1..], &rest);
                hops.push(Hop {
                    what: format!("var `{name}`"),
                    origin: self
                        .env
                        .var_spans
                        .nearest(&sub)
                        .cloned()
                        .unwrap_or_default(),
                });
            }
            (At::Env, Scope::Module) => {
                let Some(other) = self.env.instance(segs[0]) else {
                    return;
                };
                let Some(out) = self
                    .model
                    .modules
                    .get(&other.source)
                    .and_then(|m| m.outputs.get(segs[1]))
                else {
                    return;
                };
                let sub = sub_path(Some(&out.value.value), "", &segs[2..], &rest);
                let what = format!("output `{}` of module instance {}", segs[1], other.name);
                self.follow(
                    At::Module(other),
                    &out.value.value,
                    &out.value.spans,
                    &sub,
                    &what,
                    hops,
                );
            }
            // Secrets, resource attributes, environment metadata: the
            // reference itself is where the value comes from.
            _ => {}
        }
    }

    /// `${input.<segs>}` of `inst`, then `rest` below it: the instance's
    /// value, else the module's default.
    fn input(&self, inst: &'m Instance, segs: &[&str], rest: &str, hops: &mut Vec<Hop>) {
        let name = segs[0];
        if let Some(v) = inst.inputs.get(name) {
            let sub = sub_path(Some(&v.value), "", &segs[1..], rest);
            let what = format!("input `{name}` of module instance {}", inst.name);
            self.follow(At::Env, &v.value, &v.spans, &sub, &what, hops);
            return;
        }
        let decl = self
            .model
            .modules
            .get(&inst.source)
            .and_then(|m| m.inputs.get(name));
        if let Some(decl) = decl {
            let sub = sub_path(decl.default.as_ref(), "", &segs[1..], rest);
            hops.push(Hop {
                what: format!("default of input `{name}`"),
                origin: decl
                    .default_spans
                    .nearest(&sub)
                    .unwrap_or(&decl.origin)
                    .clone(),
            });
        }
    }
}

/// The first string met walking `path` down `value`: its own path, the
/// part of `path` below it, and its text. `None` when the walk ends on
/// something else (a literal, or a path the value does not have).
fn string_on_path<'v>(value: &'v Value, path: &str) -> Option<(String, String, &'v str)> {
    let mut node = value;
    let mut done = String::new();
    let mut rest = path;
    loop {
        if let Value::String(s) = node {
            return expr::has_refs(s).then(|| (done, rest.to_string(), s.as_str()));
        }
        if rest.is_empty() {
            return None;
        }
        match node {
            Value::List(items) => {
                let inner = rest.strip_prefix('[')?;
                let end = inner.find(']')?;
                let i: usize = inner[..end].parse().ok()?;
                node = items.get(i)?;
                done = index_path(&done, i);
                rest = &inner[end + 1..];
            }
            Value::Map(m) => {
                let r = rest.strip_prefix('.').unwrap_or(rest);
                // The longest key the path starts with (keys may hold dots).
                let (k, v) = m
                    .iter()
                    .filter(|(k, _)| {
                        r.strip_prefix(k.as_str())
                            .is_some_and(|t| t.is_empty() || t.starts_with(['.', '[']))
                    })
                    .max_by_key(|(k, _)| k.len())?;
                node = v;
                done = key_path(&done, k);
                rest = &r[k.len()..];
            }
            _ => return None,
        }
    }
}

/// The path, in `value`'s spans, of the reference path `segs` (map keys and
/// list indices) followed by the rendered-body path `rest`; `base` names
/// `value` itself in those spans (a var's name, or empty).
fn sub_path(value: Option<&Value>, base: &str, segs: &[&str], rest: &str) -> String {
    let mut path = base.to_string();
    let mut node = value;
    for seg in segs {
        match (node, seg.parse::<usize>()) {
            (Some(Value::List(items)), Ok(i)) => {
                path = index_path(&path, i);
                node = items.get(i);
            }
            (Some(Value::Map(m)), _) => {
                path = key_path(&path, seg);
                node = m.get(*seg);
            }
            _ => {
                path = key_path(&path, seg);
                node = None;
            }
        }
    }
    match rest.strip_prefix('.') {
        Some(r) => key_path(&path, r),
        None => format!("{path}{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(j: serde_json::Value) -> Value {
        Value::from_json(j)
    }

    #[test]
    fn the_first_string_on_a_path_is_found_with_what_lies_below() {
        let body = v(
            serde_json::json!({"spec": {"containers": "${input.c}", "a.b": {"x": ["${var.y}"]}}}),
        );
        let (at, rest, s) = string_on_path(&body, "spec.containers[0].image").unwrap();
        assert_eq!(
            (at.as_str(), rest.as_str(), s),
            ("spec.containers", "[0].image", "${input.c}")
        );
        let (at, rest, _) = string_on_path(&body, "spec.a.b.x[0]").unwrap();
        assert_eq!((at.as_str(), rest.as_str()), ("spec.a.b.x[0]", ""));
        assert!(string_on_path(&body, "spec.nope").is_none());
    }

    #[test]
    fn reference_paths_become_span_paths() {
        let list = v(serde_json::json!({"zones": ["a", "b"]}));
        assert_eq!(sub_path(Some(&list), "", &["zones", "1"], ""), "zones[1]");
        assert_eq!(
            sub_path(Some(&list), "cfg", &[], "[0].image"),
            "cfg[0].image"
        );
        assert_eq!(sub_path(None, "", &[], ".name"), "name");
    }
}
