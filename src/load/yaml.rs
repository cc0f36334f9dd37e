//! Stage 1 of loading: YAML text to a tree of nodes that remember where
//! they were written.
//!
//! Built directly on `saphyr-parser`'s event stream so that every node
//! (keys included) carries its file:line:column, duplicate keys are caught,
//! and scalars resolve by the YAML 1.2 core schema (`yes` is a string, not
//! a boolean; typed fields report it as a likely YAML 1.1 mistake).

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

use crate::diag::{Diagnostic, Diagnostics};
use crate::value::{Map, Origin, Spans, Value};

/// One YAML node and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub origin: Origin,
    /// True for a plain (unquoted) scalar.
    pub plain: bool,
    /// True for a plain integer written with a leading zero (`0400`):
    /// YAML 1.2 reads it as decimal 400, YAML 1.1 (kubectl) as octal 256.
    pub leading_zero: bool,
}

/// The shape of a node, scalars resolved by the core schema.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order; keys are string scalars.
    Map(Vec<(Key, Node)>),
}

/// A map key and where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub origin: Origin,
}

impl Node {
    /// A short name of the node's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            NodeKind::Null => "null",
            NodeKind::Bool(_) => "boolean",
            NodeKind::Int(_) | NodeKind::Float(_) => "number",
            NodeKind::Str(_) => "string",
            NodeKind::Seq(_) => "list",
            NodeKind::Map(_) => "map",
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The entry under `key`, if this is a map holding it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Converts to a [`Value`], recording the origin of every node below
    /// `path` in `spans`.
    pub fn to_value(&self, path: &str, spans: &mut Spans) -> Value {
        spans.insert(path, self.origin.clone());
        match &self.kind {
            NodeKind::Null => Value::Null,
            NodeKind::Bool(b) => Value::Bool(*b),
            NodeKind::Int(i) => Value::Int(*i),
            NodeKind::Float(f) => Value::Float(*f),
            NodeKind::Str(s) => Value::String(s.clone()),
            NodeKind::Seq(items) => Value::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| n.to_value(&crate::value::index_path(path, i), spans))
                    .collect(),
            ),
            NodeKind::Map(entries) => {
                let mut m = Map::with_capacity(entries.len());
                for (k, v) in entries {
                    let p = crate::value::key_path(path, &k.name);
                    m.insert(k.name.clone(), v.to_value(&p, spans));
                }
                Value::Map(m)
            }
        }
    }

    /// Converts to a [`Value`] and its spans, rooted at the empty path.
    pub fn to_value_spans(&self) -> (Value, Spans) {
        let mut spans = Spans::default();
        let v = self.to_value("", &mut spans);
        (v, spans)
    }
}

/// How many nodes the aliases (`*x`) of one file may copy in all. Each alias
/// copies its anchored node, so nested aliases grow exponentially: a
/// 600-byte file of ten aliases to ten aliases to ... asks for 10^9 nodes
/// ("billion laughs"). Real files copy a few small maps.
pub const MAX_ALIAS_NODES: usize = 100_000;

/// Parses every document of `text`. Problems (syntax, duplicate keys,
/// unsupported tags) go to `diags`; `None` when the text could not be
/// parsed at all, or its aliases copy more than [`MAX_ALIAS_NODES`] nodes.
pub fn parse(file: &str, text: &str, diags: &mut Diagnostics) -> Option<Vec<Node>> {
    let mut b = Builder {
        file,
        stack: Vec::new(),
        docs: Vec::new(),
        anchors: HashMap::new(),
        alias_nodes: 0,
        too_many_aliased: None,
        diags,
    };
    for ev in Parser::new_from_str(text) {
        match ev {
            Ok((ev, span)) => {
                b.event(ev, span);
                if let Some(origin) = b.too_many_aliased.take() {
                    b.diags.error(
                        &origin,
                        format!("YAML aliases expand to more than {MAX_ALIAS_NODES} nodes"),
                        "write the values out, or use fewer (nested) `*alias` references",
                    );
                    return None;
                }
            }
            Err(e) => {
                let m = e.marker();
                b.diags.push(Diagnostic::new(
                    Origin {
                        file: file.to_string(),
                        line: m.line(),
                        column: m.col() + 1,
                    },
                    format!("malformed YAML: {}", e.info()),
                    syntax_fix(text, m.line()),
                ));
                return None;
            }
        }
    }
    Some(b.docs)
}

/// The fix for a syntax error on `line` (1-based). A `${...}` reference
/// inside a `[...]` or `{...}` flow collection is the usual cause in
/// tidegate files: YAML reads its braces as a nested map.
fn syntax_fix(text: &str, line: usize) -> String {
    let l = text.lines().nth(line.saturating_sub(1)).unwrap_or_default();
    let in_flow = l.contains("[${") || l.contains(", ${") || l.contains("{${");
    if in_flow {
        let reference = l
            .find("${")
            .and_then(|i| l[i..].find('}').map(|j| &l[i..i + j + 1]))
            .unwrap_or("${...}");
        format!("quote references inside [ ] or {{ }} lists and maps: '{reference}' (YAML reads their braces as a map)")
    } else {
        "fix the YAML syntax at this position (indentation, quoting, a missing `:`)".to_string()
    }
}

enum Frame {
    Seq(Vec<Node>, Origin, usize),
    Map(MapFrame),
}

/// A map being built: its entries, the key waiting for its value, and an
/// index of the keys seen so far, so that finding a duplicate costs one
/// hash look-up instead of a scan of every earlier key (which made a map of
/// n keys cost n²/2 comparisons: 80,000 keys took 40 s).
struct MapFrame {
    entries: Vec<(Key, Node)>,
    pending: Option<Key>,
    /// Key name → line of its first occurrence.
    seen: HashMap<String, usize>,
    origin: Origin,
    anchor: usize,
}

struct Builder<'a> {
    file: &'a str,
    stack: Vec<Frame>,
    docs: Vec<Node>,
    /// Anchored nodes and how many nodes each holds.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes copied by aliases so far.
    alias_nodes: usize,
    /// Set (at the alias) when `alias_nodes` would pass [`MAX_ALIAS_NODES`].
    too_many_aliased: Option<Origin>,
    diags: &'a mut Diagnostics,
}

impl Builder<'_> {
    fn origin(&self, span: Span) -> Origin {
        Origin {
            file: self.file.to_string(),
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }

    fn event(&mut self, ev: Event<'_>, span: Span) {
        let origin = self.origin(span);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let node = self.scalar(&text, style, tag.as_deref(), origin);
                self.finish(node, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Frame::Seq(Vec::new(), origin, anchor))
            }
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map(MapFrame {
                entries: Vec::new(),
                pending: None,
                seen: HashMap::new(),
                origin,
                anchor,
            })),
            Event::SequenceEnd => {
                if let Some(Frame::Seq(items, o, anchor)) = self.stack.pop() {
                    let node = Node {
                        kind: NodeKind::Seq(items),
                        origin: o,
                        plain: false,
                        leading_zero: false,
                    };
                    self.finish(node, anchor);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(m)) = self.stack.pop() {
                    let node = Node {
                        kind: NodeKind::Map(m.entries),
                        origin: m.origin,
                        plain: false,
                        leading_zero: false,
                    };
                    self.finish(node, m.anchor);
                }
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some((n, size)) => {
                        self.alias_nodes += size;
                        if self.alias_nodes > MAX_ALIAS_NODES {
                            self.too_many_aliased = Some(origin);
                            return;
                        }
                        n.clone()
                    }
                    None => Node {
                        kind: NodeKind::Null,
                        origin,
                        plain: true,
                        leading_zero: false,
                    },
                };
                self.finish(node, 0);
            }
            _ => {}
        }
    }

    fn scalar(
        &mut self,
        text: &str,
        style: ScalarStyle,
        tag: Option<&Tag>,
        origin: Origin,
    ) -> Node {
        let plain = style == ScalarStyle::Plain;
        let kind = match tag {
            Some(t) if t.is_yaml_core_schema() => match t.suffix.as_str() {
                "str" => NodeKind::Str(text.to_string()),
                _ => resolve_plain(text),
            },
            Some(t) => {
                self.diags.error(
                    &origin,
                    format!("unsupported YAML tag `{}{}`", t.handle, t.suffix),
                    "remove the tag; tidegate reads plain YAML values",
                );
                NodeKind::Str(text.to_string())
            }
            None if plain => resolve_plain(text),
            None => NodeKind::Str(text.to_string()),
        };
        let leading_zero = plain && matches!(kind, NodeKind::Int(_)) && octal_like(text);
        Node {
            kind,
            origin,
            plain,
            leading_zero,
        }
    }

    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors
                .insert(anchor, (node.clone(), node_count(&node)));
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq(items, _, _)) => items.push(node),
            Some(Frame::Map(m)) => match m.pending.take() {
                None => {
                    let name = match &node.kind {
                        NodeKind::Str(s) => s.clone(),
                        NodeKind::Null => String::new(),
                        NodeKind::Bool(b) => b.to_string(),
                        NodeKind::Int(i) => i.to_string(),
                        NodeKind::Float(f) => f.to_string(),
                        NodeKind::Seq(_) | NodeKind::Map(_) => {
                            self.diags.error(
                                &node.origin,
                                "a map key must be a plain value, not a list or map",
                                "use a string key",
                            );
                            String::new()
                        }
                    };
                    match m.seen.entry(name.clone()) {
                        Entry::Occupied(first) => self.diags.error(
                            &node.origin,
                            format!("duplicate key `{name}` (first at line {})", first.get()),
                            "remove one of the two entries",
                        ),
                        Entry::Vacant(slot) => {
                            slot.insert(node.origin.line);
                        }
                    }
                    m.pending = Some(Key {
                        name,
                        origin: node.origin,
                    });
                }
                Some(key) => m.entries.push((key, node)),
            },
        }
    }
}

/// The number of nodes in `n` (itself and everything below it; map keys are
/// not counted).
fn node_count(n: &Node) -> usize {
    match &n.kind {
        NodeKind::Seq(items) => 1 + items.iter().map(node_count).sum::<usize>(),
        NodeKind::Map(entries) => 1 + entries.iter().map(|(_, v)| node_count(v)).sum::<usize>(),
        _ => 1,
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema.
pub fn resolve_plain(s: &str) -> NodeKind {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return NodeKind::Null,
        "true" | "True" | "TRUE" => return NodeKind::Bool(true),
        "false" | "False" | "FALSE" => return NodeKind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return NodeKind::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return NodeKind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return NodeKind::Float(f64::NAN),
        _ => {}
    }
    if let Some(i) = parse_int(s) {
        return NodeKind::Int(i);
    }
    if is_float(s) {
        if let Ok(f) = s.parse::<f64>() {
            return NodeKind::Float(f);
        }
    }
    NodeKind::Str(s.to_string())
}

fn parse_int(s: &str) -> Option<i64> {
    if let Some(h) = s.strip_prefix("0x") {
        return i64::from_str_radix(h, 16).ok();
    }
    if let Some(o) = s.strip_prefix("0o") {
        return i64::from_str_radix(o, 8).ok();
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn is_float(s: &str) -> bool {
    let t = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mant, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let mant_ok = {
        let (a, b) = mant.split_once('.').unwrap_or((mant, ""));
        (!a.is_empty() || !b.is_empty())
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit())
    });
    mant_ok && exp_ok
}

/// True for `0` followed by digits (`0400`, `-0755`): an octal number in
/// YAML 1.1 and to kubectl, a decimal one in YAML 1.2. `0o400` (YAML 1.2
/// octal) and `0` are not.
pub fn octal_like(s: &str) -> bool {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The YAML 1.1 spellings of booleans that YAML 1.2 reads as strings.
pub fn yaml11_bool(s: &str) -> Option<bool> {
    match s {
        "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y" | "Y" => Some(true),
        "no" | "No" | "NO" | "off" | "Off" | "OFF" | "n" | "N" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        let mut d = Diagnostics::default();
        let docs = parse("f.yaml", text, &mut d).unwrap();
        assert!(d.is_empty(), "{d:?}");
        docs.into_iter().next().unwrap()
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let n = one("a: yes\nb: true\nc: 3\nd: 1.5\ne: ~\nf: '3'\ng: 0x1f\nh: 1e3\n");
        let k = |key| n.get(key).unwrap().kind.clone();
        assert_eq!(k("a"), NodeKind::Str("yes".into()));
        assert_eq!(k("b"), NodeKind::Bool(true));
        assert_eq!(k("c"), NodeKind::Int(3));
        assert_eq!(k("d"), NodeKind::Float(1.5));
        assert_eq!(k("e"), NodeKind::Null);
        assert_eq!(k("f"), NodeKind::Str("3".into()));
        assert_eq!(k("g"), NodeKind::Int(31));
        assert_eq!(k("h"), NodeKind::Float(1000.0));
        assert_eq!(yaml11_bool("on"), Some(true));
    }

    #[test]
    fn leading_zero_integers_are_marked_and_0o_is_octal() {
        let n = one("a: 0400\nb: 0o400\nc: 400\nd: '0400'\ne: 0\nf: -0755\ng: 0.5\n");
        let k = |key| {
            let n = n.get(key).unwrap();
            (n.kind.clone(), n.leading_zero)
        };
        assert_eq!(k("a"), (NodeKind::Int(400), true));
        assert_eq!(k("b"), (NodeKind::Int(256), false));
        assert_eq!(k("c"), (NodeKind::Int(400), false));
        assert_eq!(k("d"), (NodeKind::Str("0400".into()), false));
        assert_eq!(k("e"), (NodeKind::Int(0), false));
        assert_eq!(k("f"), (NodeKind::Int(-755), true));
        assert_eq!(k("g"), (NodeKind::Float(0.5), false));
    }

    #[test]
    fn every_node_knows_its_line_and_column() {
        let n = one("spec:\n  items:\n    - name: x\n");
        let (_, spans) = n.to_value_spans();
        let o = spans.get("spec.items[0].name").unwrap();
        assert_eq!((o.line, o.column), (3, 13));
        let key = match &n.kind {
            NodeKind::Map(e) => e[0].0.origin.clone(),
            _ => unreachable!(),
        };
        assert_eq!((key.line, key.column), (1, 1));
    }

    #[test]
    fn duplicate_keys_and_syntax_errors_are_reported() {
        let mut d = Diagnostics::default();
        parse("f.yaml", "a: 1\na: 2\n", &mut d).unwrap();
        assert!(d
            .iter()
            .next()
            .unwrap()
            .message
            .contains("duplicate key `a`"));
        let mut d = Diagnostics::default();
        assert!(parse("f.yaml", "ids: [${resource.sg.id}]\n", &mut d).is_none());
        let e = d.iter().next().unwrap();
        assert!(e.fix.contains("'${resource.sg.id}'"), "{}", e.fix);
        let mut d = Diagnostics::default();
        assert!(parse("f.yaml", "a: [1, 2\n", &mut d).is_none());
        assert!(d
            .iter()
            .next()
            .unwrap()
            .message
            .starts_with("malformed YAML"));
    }

    /// Duplicates are found through a per-map index (issue 17: the scan of
    /// every earlier key made 80,000 keys take 40 s;
    /// `cargo bench --bench load -- --yaml-keys` measures it): each map has
    /// its own, the first position is kept, and every entry stays in
    /// document order.
    #[test]
    fn duplicate_keys_are_found_per_map_in_large_maps() {
        let mut text = String::from("data:\n");
        for i in 0..5_000 {
            text += &format!("  k{i}: v\n");
        }
        text += "  k17: again\nother:\n  k17: fine\n";
        let mut d = Diagnostics::default();
        let doc = parse("f.yaml", &text, &mut d).unwrap().remove(0);
        let errors: Vec<_> = d.iter().collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].message, "duplicate key `k17` (first at line 19)");
        assert_eq!((errors[0].origin.line, errors[0].origin.column), (5_002, 3));
        match &doc.get("data").unwrap().kind {
            NodeKind::Map(e) => {
                assert_eq!(e.len(), 5_001);
                assert_eq!(e[4_999].0.name, "k4999");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            doc.get("other").unwrap().get("k17").unwrap().kind,
            NodeKind::Str("fine".into())
        );
    }

    /// Found by `cargo fuzz` (tests/fuzz, target `load`, docs/fuzzing.md):
    /// nested aliases asked for 10^9 nodes and the loader ran out of memory.
    #[test]
    fn nested_aliases_cannot_expand_without_bound() {
        let mut text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n".to_string();
        for i in 1..9 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text += &format!("a{i}: &a{i} [{refs}]\n");
        }
        let mut d = Diagnostics::default();
        assert!(parse("f.yaml", &text, &mut d).is_none());
        let e = d.iter().next().unwrap();
        assert!(
            e.message.contains("aliases expand to more than"),
            "{}",
            e.message
        );
        assert_eq!(e.origin.line, 5, "{e:?}");
        // Up to the limit, aliases still copy.
        let n = one("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b]\n");
        assert!(matches!(&n.get("c").unwrap().kind, NodeKind::Seq(l) if l.len() == 2));
    }

    #[test]
    fn aliases_copy_the_anchored_node() {
        let n = one("a: &x {k: 1}\nb: *x\n");
        assert_eq!(n.get("b").unwrap().get("k").unwrap().kind, NodeKind::Int(1));
    }
}
