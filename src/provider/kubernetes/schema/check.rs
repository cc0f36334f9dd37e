//! The walk of one value against a compiled schema: types, unknown fields
//! (with the closest known one), required fields, enums, 32-bit integers,
//! base64 and quantity strings, and the label and annotation rules of
//! every `ObjectMeta`, label selector and Service selector on the way.
//! Values not known yet (a `${...}` reference, [`Value::Unknown`],
//! [`Value::Sensitive`]) and nulls pass: they are checked after rendering,
//! and the API server reads a null as "not set".

use super::model::{Arena, Extra, Format, Node, NodeId, Ty};
use super::names;
use crate::diag::Severity;
use crate::provider::Problem;
use crate::value::{Map, Value};

/// The nearest named schema node above a value, for messages
/// (`Container` at `spec.template.spec.containers[0]`).
#[derive(Clone, Copy)]
pub struct Owner<'a> {
    pub name: &'a str,
    /// Its path is `path[..at]`.
    pub at: usize,
}

/// One walk: the arena, the path of the value being checked (a buffer
/// grown and cut back on the way) and the problems found.
pub struct Walk<'a, 'o> {
    pub arena: &'a Arena,
    pub path: String,
    pub out: &'o mut Vec<Problem>,
    /// The object's kind in lowercase, for `kubectl explain` hints.
    pub explain: &'a str,
}

/// True when `v` cannot be judged before rendering (or is unset).
pub fn pending(v: &Value) -> bool {
    match v {
        Value::Null | Value::Unknown(_) | Value::Sensitive(_) => true,
        Value::String(s) => crate::expr::has_refs(s),
        _ => false,
    }
}

impl<'a> Walk<'a, '_> {
    /// Checks `v` against node `id`.
    pub fn value(&mut self, id: NodeId, v: &Value, owner: Owner<'a>) {
        if pending(v) {
            return;
        }
        let node = self.arena.node(id);
        let ok = match (node.ty, v) {
            (Ty::Any, _) => true,
            (Ty::Object, Value::Map(m)) => {
                let inner = match &node.name {
                    Some(n) => Owner {
                        name: n,
                        at: self.path.len(),
                    },
                    None => owner,
                };
                self.map(node, m, inner, &[]);
                true
            }
            (Ty::Array, Value::List(items)) => {
                if let Some(item) = node.items {
                    for (i, v) in items.iter().enumerate() {
                        let mark = self.path.len();
                        self.path.push_str(&format!("[{i}]"));
                        self.value(item, v, owner);
                        self.path.truncate(mark);
                    }
                }
                true
            }
            (Ty::String, Value::String(s)) => {
                if node.format == Format::Byte && !names::is_base64(s) {
                    self.not_base64(owner);
                }
                true
            }
            (Ty::Integer, Value::Int(i)) => {
                if node.format == Format::Int32 && i32::try_from(*i).is_err() {
                    self.problem(
                        format!(
                            "{} is out of range: {i} does not fit in 32 bits",
                            self.field(owner)
                        ),
                        "write a number from -2147483648 to 2147483647",
                    );
                }
                true
            }
            (Ty::Number, Value::Int(_) | Value::Float(_))
            | (Ty::Boolean, Value::Bool(_))
            | (Ty::IntOrString, Value::Int(_) | Value::String(_))
            | (Ty::Quantity, Value::Int(_) | Value::Float(_)) => true,
            (Ty::Quantity, Value::String(s)) => {
                if let Some(why) = names::quantity(s) {
                    self.problem(
                        format!("{} `{s}` is not a quantity: {why}", self.field(owner)),
                        "memory in bytes with a suffix (512Mi, 1Gi, or 1G for 10^9), CPU in cores or thousandths (0.5 or 500m)",
                    );
                }
                true
            }
            _ => false,
        };
        if !ok {
            self.wrong_type(node, v, owner);
        } else if let Some(allowed) = &node.enumeration {
            self.enumeration(allowed, v, owner);
        }
    }

    /// Checks the fields of an object's top level against its kind's
    /// node, except `apiVersion`, `kind` (read already) and `metadata`
    /// (checked against the bundled ObjectMeta).
    pub fn root(&mut self, id: NodeId, m: &Map, owner: Owner<'a>) {
        let node = self.arena.node(id);
        self.map(node, m, owner, &["apiVersion", "kind", "metadata"]);
    }

    fn map(&mut self, node: &'a Node, m: &Map, owner: Owner<'a>, skip: &[&str]) {
        for (k, v) in m {
            if skip.contains(&k.as_str()) {
                continue;
            }
            let mark = self.path.len();
            if mark > 0 {
                self.path.push('.');
            }
            self.path.push_str(k);
            match (node.property(k), node.extra) {
                (Some(child), _) | (None, Extra::Each(child)) => self.value(child, v, owner),
                (None, Extra::Any) => {}
                (None, Extra::Closed) => {
                    let embedded =
                        node.embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata");
                    if !embedded {
                        self.unknown_field(node, k, owner);
                    }
                }
            }
            self.path.truncate(mark);
        }
        for r in &node.required {
            if m.get(&**r).is_none_or(|v| matches!(v, Value::Null)) {
                let at = self.place(&self.path, owner);
                self.problem(
                    format!("missing required field `{r}` in {at}"),
                    format!("add `{r}:`"),
                );
            }
        }
        match node.name.as_deref() {
            Some("ObjectMeta") => self.object_meta(m),
            Some("LabelSelector") => self.labels(m, "matchLabels", "label selector"),
            Some("ServiceSpec") => self.labels(m, "selector", "selector"),
            _ => {}
        }
    }

    /// Label keys and values, annotation keys and size, and the namespace
    /// of an `ObjectMeta` (the object's own or a template's).
    fn object_meta(&mut self, m: &Map) {
        if let Some(Value::String(ns)) = m.get("namespace") {
            if !crate::expr::has_refs(ns) {
                if let Some(why) = names::label(ns) {
                    self.at("namespace", |w| {
                        w.problem(
                            format!("namespace `{ns}` is not valid: {why}"),
                            "a namespace name is lowercase letters, digits and '-' (at most 63)",
                        )
                    });
                }
            }
        }
        self.labels(m, "labels", "label");
        let Some(Value::Map(annotations)) = m.get("annotations") else {
            return;
        };
        let mut size = 0;
        for (k, v) in annotations {
            size += k.len() + v.as_str().map_or(0, str::len);
            if let Some(why) = names::qualified_name(&k.to_ascii_lowercase()) {
                self.at(&format!("annotations.{k}"), |w| {
                    w.problem(
                        format!("annotation key `{k}` is not valid: {why}"),
                        "an annotation key is `name` or `prefix/name`: the prefix a DNS subdomain (example.com), the name letters, digits, '-', '_' and '.'",
                    )
                });
            }
        }
        if size > names::ANNOTATIONS_MAX_BYTES {
            self.at("annotations", |w| {
                w.problem(
                    format!(
                        "annotations are {size} bytes; Kubernetes allows 262144 (256 KiB) in all"
                    ),
                    "keep large data in a ConfigMap and refer to it",
                )
            });
        }
    }

    /// The keys and values of the label map at `field` of `m`.
    fn labels(&mut self, m: &Map, field: &str, what: &str) {
        let Some(Value::Map(labels)) = m.get(field) else {
            return;
        };
        for (k, v) in labels {
            let key_problem = names::qualified_name(k);
            let value_problem = match v {
                Value::String(s) if !crate::expr::has_refs(s) => {
                    names::label_value(s).map(|why| (s, why))
                }
                _ => None,
            };
            if key_problem.is_none() && value_problem.is_none() {
                continue;
            }
            self.at(&format!("{field}.{k}"), |w| {
                if let Some(why) = key_problem {
                    w.problem(
                        format!("{what} key `{k}` is not valid: {why}"),
                        "a label key is `name` or `prefix/name`: the prefix a DNS subdomain (example.com), the name letters, digits, '-', '_' and '.' (at most 63)",
                    );
                }
                if let Some((s, why)) = value_problem {
                    w.problem(
                        format!("{what} value `{s}` of `{k}` is not valid: {why}"),
                        "a label value is at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit; put free text in an annotation",
                    );
                }
            });
        }
    }

    /// Runs `f` with `rel` appended to the path.
    fn at(&mut self, rel: &str, f: impl FnOnce(&mut Self)) {
        let mark = self.path.len();
        if mark > 0 {
            self.path.push('.');
        }
        self.path.push_str(rel);
        f(self);
        self.path.truncate(mark);
    }

    /// Records a problem at the current path.
    pub fn problem(&mut self, message: String, fix: impl Into<String>) {
        self.out.push(Problem {
            path: self.path.clone(),
            message,
            fix: fix.into(),
            severity: Severity::Error,
        });
    }

    /// `Container (spec.template.spec.containers[0])`, or `Deployment`
    /// at the top.
    fn owner_text(&self, owner: Owner<'_>) -> String {
        match &self.path[..owner.at] {
            "" => owner.name.to_string(),
            p => format!("{} ({p})", owner.name),
        }
    }

    /// The map at `path`: its owner when it is the owner
    /// (`Container (spec.template.spec.containers[0])`), else
    /// `` `spec.size` of Widget `` (inside a CRD's unnamed nodes).
    fn place(&self, path: &str, owner: Owner<'_>) -> String {
        if path.len() == owner.at {
            self.owner_text(owner)
        } else {
            format!("`{path}` of {}", owner.name)
        }
    }

    /// `` `imagePullPolicy` in Container (spec.template.spec.containers[0]) ``.
    fn field(&self, owner: Owner<'_>) -> String {
        let rel = self.path[owner.at..].trim_start_matches('.');
        format!("`{rel}` in {}", self.owner_text(owner))
    }

    fn unknown_field(&mut self, node: &Node, key: &str, owner: Owner<'_>) {
        let parent = self.path[..self.path.len() - key.len()].trim_end_matches('.');
        let fix = match crate::diag::closest(key, &node.property_names()) {
            Some(k) => format!("did you mean `{k}`?"),
            None => format!(
                "remove it, or see the fields Kubernetes knows here: `kubectl explain {}`",
                explain_path(self.explain, parent)
            ),
        };
        let at = self.place(parent, owner);
        self.problem(format!("unknown field `{key}` in {at}"), fix);
    }

    fn wrong_type(&mut self, node: &Node, v: &Value, owner: Owner<'_>) {
        let expected = match (&node.name, node.ty) {
            (Some(n), Ty::Object) => format!("a map ({n})"),
            (_, ty) => ty.expected().to_string(),
        };
        let fix = match (node.ty, v) {
            (Ty::String, Value::Int(i)) => format!("quote it: \"{i}\""),
            (Ty::String, Value::Float(f)) => format!("quote it: \"{f}\""),
            (Ty::String, Value::Bool(b)) => format!("quote it: \"{b}\""),
            (Ty::Integer | Ty::Number | Ty::IntOrString, Value::String(s))
                if s.trim().parse::<f64>().is_ok() =>
            {
                format!("write it without quotes: {}", s.trim())
            }
            (Ty::Boolean, Value::String(s)) if matches!(s.as_str(), "true" | "false") => {
                format!("write it without quotes: {s}")
            }
            (Ty::Object, _) => "write a map of fields (`key: value` lines below it)".into(),
            (Ty::Array, _) => "write a list (`- item` lines); one item is still a list".into(),
            _ => format!("write {}", node.ty.expected()),
        };
        self.problem(
            format!(
                "{} must be {expected}, not {}",
                self.field(owner),
                v.type_name()
            ),
            fix,
        );
    }

    fn enumeration(&mut self, allowed: &[serde_json::Value], v: &Value, owner: Owner<'_>) {
        let given = match v {
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Value::from(*f),
            Value::Bool(b) => serde_json::Value::Bool(*b),
            _ => return,
        };
        if allowed.contains(&given) {
            return;
        }
        let list: Vec<String> = allowed.iter().map(|a| format!("`{}`", plain(a))).collect();
        let strings: Vec<String> = allowed.iter().map(plain).collect();
        let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
        let fix = match crate::diag::closest(&plain(&given), &refs) {
            Some(c) => format!("did you mean `{c}`?"),
            None => format!("write one of {}", list.join(", ")),
        };
        self.problem(
            format!(
                "{} must be one of {}, not `{}`",
                self.field(owner),
                list.join(", "),
                plain(&given)
            ),
            fix,
        );
    }

    fn not_base64(&mut self, owner: Owner<'_>) {
        let secret = owner.name == "Secret";
        self.problem(
            format!("{} is not base64", self.field(owner)),
            if secret {
                "`data` holds base64 (`echo -n value | base64`); write plain text under `stringData` instead"
            } else {
                "encode the value as base64 (`echo -n value | base64`)"
            },
        );
    }
}

/// A JSON scalar as written (strings without quotes).
fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `deployment.spec.template.spec.containers` for `kubectl explain`.
pub fn explain_path(kind: &str, path: &str) -> String {
    let mut out = kind.to_string();
    let mut in_index = false;
    if !path.is_empty() {
        out.push('.');
    }
    for c in path.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            _ if !in_index => out.push(c),
            _ => {}
        }
    }
    out
}
