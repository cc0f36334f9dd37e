//! `${...}` references: parsing and evaluation.
//!
//! A string value may hold references: `${input.x}`, `${var.x}`,
//! `${env.name}`, `${secret.db.password}`, `${module.network.vpc_id}`,
//! `${resource.vpc.id}`. `$${` writes a literal `${`.
//!
//! Evaluation rules:
//! - a string that is exactly one reference takes the referenced value with
//!   its type (a number stays a number, a map stays a map);
//! - references inside a longer string are interpolated and yield a string;
//! - interpolating a sensitive value makes the whole string sensitive;
//! - a reference whose value is not known yet makes the whole string
//!   [`Value::Unknown`] holding the reference text.

use std::fmt;

use crate::sensitive::Sensitive;
use crate::value::{Map, Value};

/// What a reference points into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `input.<name>[.path]`: an input of the current module instance.
    Input,
    /// `var.<name>[.path]`: a variable of the environment.
    Var,
    /// `env.<name|region|context>`: environment metadata.
    Env,
    /// `secret.<key path>`: a key of the environment's SOPS files.
    Secret,
    /// `module.<instance>.<output>[.path]`: another instance's output.
    Module,
    /// `resource.<name>.<attribute path>`: a resource of the same module.
    Resource,
    /// `each.key`, `each.value[.path]`: the item of a `forEach`/`count`
    /// copy, bound when the copies are made ([`bind_each`]).
    Each,
}

impl Scope {
    fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "input" => Scope::Input,
            "var" => Scope::Var,
            "env" => Scope::Env,
            "secret" => Scope::Secret,
            "module" => Scope::Module,
            "resource" => Scope::Resource,
            "each" => Scope::Each,
            _ => return None,
        })
    }

    /// How many path segments after the scope name it needs at least.
    fn min_segments(self) -> usize {
        match self {
            Scope::Module | Scope::Resource => 2,
            _ => 1,
        }
    }

    /// The scope's name as written.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Input => "input",
            Scope::Var => "var",
            Scope::Env => "env",
            Scope::Secret => "secret",
            Scope::Module => "module",
            Scope::Resource => "resource",
            Scope::Each => "each",
        }
    }
}

/// The environment metadata `${env.x}` can name.
pub const ENV_FIELDS: &[&str] = &["name", "region", "context"];

/// One parsed reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ref {
    pub scope: Scope,
    /// The segments after the scope (`["network", "vpc_id"]`).
    pub path: Vec<String>,
}

impl Ref {
    /// The path segments as `&str`.
    pub fn segments(&self) -> Vec<&str> {
        self.path.iter().map(String::as_str).collect()
    }

    /// The path after the first `n` segments, dotted (an attribute or
    /// sub-path).
    pub fn rest(&self, n: usize) -> String {
        self.path[n.min(self.path.len())..].join(".")
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.scope.name(), self.path.join("."))
    }
}

/// A piece of a template string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Lit(String),
    Ref(Ref),
}

/// A reference could not be parsed or evaluated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `${` without a closing `}`.
    #[error("unclosed `${{` in `{text}`")]
    Unclosed { text: String },
    /// The text inside `${...}` is not a reference.
    #[error("invalid reference `${{{inner}}}`: {reason}")]
    Invalid { inner: String, reason: String },
    /// The reference names something that does not exist (at render time).
    #[error("`${{{reference}}}`: {message}")]
    Unresolved { reference: String, message: String },
    /// A list, map or null was interpolated into a longer string.
    #[error("`${{{reference}}}` is a {kind} and cannot be interpolated into a string")]
    NotScalar {
        reference: String,
        kind: &'static str,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Splits a string into literal parts and references.
pub fn parse(s: &str) -> Result<Vec<Part>> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            lit.push_str(&rest[..i]);
            lit.push_str("${");
            rest = tail;
        } else if let Some(body) = after.strip_prefix("${") {
            lit.push_str(&rest[..i]);
            let end = body.find('}').ok_or_else(|| Error::Unclosed {
                text: s.to_string(),
            })?;
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(Part::Ref(parse_ref(&body[..end])?));
            rest = &body[end + 1..];
        } else {
            lit.push_str(&rest[..=i]);
            rest = &after[1..];
        }
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        parts.push(Part::Lit(lit));
    }
    Ok(parts)
}

/// `s` as a literal: every `${` written `$${`, so [`parse`] gives back
/// `s` itself with no reference.
pub fn escape(s: &str) -> String {
    s.replace("${", "$${")
}

/// True when `s` holds a reference (cheap pre-check before [`parse`]).
pub fn has_refs(s: &str) -> bool {
    s.contains("${")
}

fn parse_ref(inner: &str) -> Result<Ref> {
    let invalid = |reason: String| Error::Invalid {
        inner: inner.to_string(),
        reason,
    };
    let text = inner.trim();
    let mut segs = text.split('.');
    let head = segs.next().unwrap_or_default();
    let scope = Scope::parse(head).ok_or_else(|| {
        invalid(format!(
            "`{head}` is not a reference kind; use input, var, env, secret, module, resource or each"
        ))
    })?;
    let path: Vec<String> = segs.map(str::to_string).collect();
    if let Some(bad) = path.iter().find(|s| !valid_segment(s)) {
        return Err(invalid(format!(
            "`{bad}` is not a valid name (letters, digits, `_` and `-` only)"
        )));
    }
    if path.len() < scope.min_segments() {
        let want = match scope {
            Scope::Module => "module.<instance>.<output>",
            Scope::Resource => "resource.<name>.<attribute>",
            _ => "<kind>.<name>",
        };
        return Err(invalid(format!("too short; write `{want}`")));
    }
    if scope == Scope::Each && !(path[0] == "value" || (path[0] == "key" && path.len() == 1)) {
        return Err(invalid(
            "write `each.key` or `each.value` (`each.value.<field>` for a field of a map item)"
                .into(),
        ));
    }
    if scope == Scope::Env && (path.len() != 1 || !ENV_FIELDS.contains(&path[0].as_str())) {
        return Err(invalid(format!(
            "environment metadata is one of {}",
            ENV_FIELDS.join(", ")
        )));
    }
    Ok(Ref { scope, path })
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Every reference in a value, with the path (below `base`) of the string
/// holding it. Parse errors are returned with their path.
pub fn refs(value: &Value, base: &str) -> Vec<(String, Result<Ref>)> {
    let mut out = Vec::new();
    walk_refs(value, base, &mut out);
    out
}

fn walk_refs(value: &Value, path: &str, out: &mut Vec<(String, Result<Ref>)>) {
    match value {
        Value::String(s) if has_refs(s) => match parse(s) {
            Ok(parts) => out.extend(parts.into_iter().filter_map(|p| match p {
                Part::Ref(r) => Some((path.to_string(), Ok(r))),
                Part::Lit(_) => None,
            })),
            Err(e) => out.push((path.to_string(), Err(e))),
        },
        Value::List(items) => {
            for (i, v) in items.iter().enumerate() {
                walk_refs(v, &crate::value::index_path(path, i), out);
            }
        }
        Value::Map(m) => {
            for (k, v) in m {
                walk_refs(v, &crate::value::key_path(path, k), out);
            }
        }
        _ => {}
    }
}

/// Resolves one reference to its value during evaluation.
pub trait Resolve {
    /// The value `r` refers to ([`Value::Unknown`] when not known yet).
    fn resolve(&self, r: &Ref) -> Result<Value>;
}

/// Evaluates every string of a template, returning the value with
/// references replaced. Errors carry the path (below `base`) of the string.
pub fn eval(value: &Value, base: &str, res: &dyn Resolve) -> Result<Value, (String, Error)> {
    match value {
        Value::String(s) if has_refs(s) => eval_str(s, res).map_err(|e| (base.to_string(), e)),
        Value::List(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| eval(v, &crate::value::index_path(base, i), res))
            .collect::<Result<_, _>>()
            .map(Value::List),
        Value::Map(m) => {
            let mut out = Map::with_capacity(m.len());
            for (k, v) in m {
                out.insert(k.clone(), eval(v, &crate::value::key_path(base, k), res)?);
            }
            Ok(Value::Map(out))
        }
        other => Ok(other.clone()),
    }
}

/// Evaluates one template string.
pub fn eval_str(s: &str, res: &dyn Resolve) -> Result<Value> {
    let parts = parse(s)?;
    if let [Part::Ref(r)] = parts.as_slice() {
        return res.resolve(r);
    }
    let mut buf = String::new();
    let mut sensitive = false;
    for part in &parts {
        match part {
            Part::Lit(l) => buf.push_str(l),
            Part::Ref(r) => match res.resolve(r)? {
                Value::Unknown(u) => return Ok(Value::Unknown(u)),
                Value::Sensitive(v) => {
                    sensitive = true;
                    buf.push_str(&String::from_utf8_lossy(v.expose()));
                }
                Value::String(v) => buf.push_str(&v),
                Value::Int(i) => buf.push_str(&i.to_string()),
                Value::Float(f) => buf.push_str(&f.to_string()),
                Value::Bool(b) => buf.push_str(&b.to_string()),
                other => {
                    return Err(Error::NotScalar {
                        reference: r.to_string(),
                        kind: kind_name(&other),
                    })
                }
            },
        }
    }
    if sensitive {
        Ok(Value::Sensitive(Sensitive::from_string(buf)))
    } else {
        Ok(Value::String(buf))
    }
}

/// `value` with every `${each.key}` / `${each.value[.path]}` replaced by
/// `key` / `item` (the copy of a `forEach`/`count` entry); other
/// references stay as written. A string that is exactly one `each`
/// reference takes the item's value with its type; inside a longer string
/// the item must be a scalar. Errors carry the path (below `base`).
pub fn bind_each(
    value: &Value,
    base: &str,
    key: &str,
    item: &Value,
) -> Result<Value, (String, Error)> {
    match value {
        Value::String(s) if has_refs(s) => {
            bind_str(s, key, item).map_err(|e| (base.to_string(), e))
        }
        Value::List(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| bind_each(v, &crate::value::index_path(base, i), key, item))
            .collect::<Result<_, _>>()
            .map(Value::List),
        Value::Map(m) => {
            let mut out = Map::with_capacity(m.len());
            for (k, v) in m {
                let bound = bind_each(v, &crate::value::key_path(base, k), key, item)?;
                out.insert(k.clone(), bound);
            }
            Ok(Value::Map(out))
        }
        other => Ok(other.clone()),
    }
}

fn bind_str(s: &str, key: &str, item: &Value) -> Result<Value> {
    let parts = parse(s)?;
    if !parts
        .iter()
        .any(|p| matches!(p, Part::Ref(r) if r.scope == Scope::Each))
    {
        return Ok(Value::String(s.to_string()));
    }
    let each = |r: &Ref| -> Result<Value> {
        if r.path[0] == "key" {
            return Ok(Value::String(key.to_string()));
        }
        let segs: Vec<&str> = r.path[1..].iter().map(String::as_str).collect();
        lookup(item, &segs)
            .cloned()
            .ok_or_else(|| Error::Unresolved {
                reference: r.to_string(),
                message: format!("the item of key `{key}` has no `{}`", segs.join(".")),
            })
    };
    if let [Part::Ref(r)] = parts.as_slice() {
        return each(r);
    }
    let mut out = String::new();
    for part in &parts {
        match part {
            Part::Lit(l) => out.push_str(&escape(l)),
            Part::Ref(r) if r.scope == Scope::Each => match each(r)? {
                Value::String(v) => out.push_str(&escape(&v)),
                Value::Int(i) => out.push_str(&i.to_string()),
                Value::Float(f) => out.push_str(&f.to_string()),
                Value::Bool(b) => out.push_str(&b.to_string()),
                other => {
                    return Err(Error::NotScalar {
                        reference: r.to_string(),
                        kind: kind_name(&other),
                    })
                }
            },
            Part::Ref(r) => {
                out.push_str("${");
                out.push_str(&r.to_string());
                out.push('}');
            }
        }
    }
    Ok(Value::String(out))
}

/// A short name of a value's type, for messages.
pub fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Int(_) | Value::Float(_) => "number",
        Value::String(_) => "string",
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Sensitive(_) => "sensitive string",
        Value::Unknown(_) => "value known after apply",
    }
}

/// Follows `path` (map keys, or list indexes as numbers) into `v`.
pub fn lookup<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, seg| match v {
        Value::Map(m) => m.get(*seg),
        Value::List(l) => seg.parse::<usize>().ok().and_then(|i| l.get(i)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Resolve for Fixed {
        fn resolve(&self, r: &Ref) -> Result<Value> {
            Ok(match r.to_string().as_str() {
                "var.replicas" => Value::Int(3),
                "var.list" => Value::List(vec![]),
                "secret.db.password" => Value::Sensitive(Sensitive::from_string("pw".into())),
                "resource.vpc.id" => Value::Unknown("module.network.vpc.id".into()),
                _ => Value::String("x".into()),
            })
        }
    }

    #[test]
    fn parses_literals_references_and_escapes() {
        for s in ["${x}", "$${x}", "a$", "$$", "${", "}${y.z}"] {
            let parts = parse(&escape(s)).unwrap();
            assert_eq!(parts, vec![Part::Lit(s.to_string())], "{s}");
        }
        let p = parse("a-${var.x}-$${b}").unwrap();
        assert_eq!(
            p,
            vec![
                Part::Lit("a-".into()),
                Part::Ref(Ref {
                    scope: Scope::Var,
                    path: vec!["x".into()]
                }),
                Part::Lit("-${b}".into()),
            ]
        );
        assert!(matches!(parse("${var.x"), Err(Error::Unclosed { .. })));
        assert!(matches!(parse("${foo.x}"), Err(Error::Invalid { .. })));
        assert!(matches!(parse("${module.x}"), Err(Error::Invalid { .. })));
        assert!(matches!(parse("${env.zone}"), Err(Error::Invalid { .. })));
        assert_eq!(
            parse("cost: $5").unwrap(),
            vec![Part::Lit("cost: $5".into())]
        );
    }

    #[test]
    fn whole_references_keep_their_type() {
        assert_eq!(eval_str("${var.replicas}", &Fixed).unwrap(), Value::Int(3));
        assert_eq!(
            eval_str("n=${var.replicas}", &Fixed).unwrap(),
            Value::String("n=3".into())
        );
    }

    #[test]
    fn sensitive_and_unknown_parts_taint_the_string() {
        let v = eval_str("postgres://u:${secret.db.password}@db", &Fixed).unwrap();
        assert_eq!(
            v,
            Value::Sensitive(Sensitive::from_string("postgres://u:pw@db".into()))
        );
        let v = eval_str("vpc/${resource.vpc.id}", &Fixed).unwrap();
        assert_eq!(v, Value::Unknown("module.network.vpc.id".into()));
        assert!(matches!(
            eval_str("l=${var.list}", &Fixed),
            Err(Error::NotScalar { .. })
        ));
    }

    #[test]
    fn finds_references_with_their_paths() {
        let v = Value::from_json(serde_json::json!({"a": ["${var.x}", {"b": "${input.y.z}"}]}));
        let r: Vec<String> = refs(&v, "")
            .into_iter()
            .map(|(p, r)| format!("{p}={}", r.unwrap()))
            .collect();
        assert_eq!(r, vec!["a[0]=var.x", "a[1].b=input.y.z"]);
    }
}
