//! Typed reading of YAML nodes: required and optional fields, unknown
//! fields, scalar types. Every problem becomes a diagnostic at the node's
//! position; reading carries on so that one run reports them all.

use crate::diag::Diagnostics;
use crate::value::Origin;

use super::yaml::{yaml11_bool, Key, Node, NodeKind};

/// The fields of one map node, read one by one; [`Fields::finish`] reports
/// those nobody asked for.
pub struct Fields<'a> {
    what: String,
    origin: &'a Origin,
    entries: &'a [(Key, Node)],
    used: Vec<bool>,
}

impl<'a> Fields<'a> {
    /// Opens `node` as a map described as `what` (`Environment spec`);
    /// `None` (with a diagnostic) when it is not a map.
    pub fn new(node: &'a Node, what: &str, diags: &mut Diagnostics) -> Option<Self> {
        match &node.kind {
            NodeKind::Map(entries) => Some(Fields {
                what: what.to_string(),
                origin: &node.origin,
                entries,
                used: vec![false; entries.len()],
            }),
            _ => {
                diags.error(
                    &node.origin,
                    format!("{what} must be a map, found a {}", node.type_name()),
                    "write `key: value` entries here",
                );
                None
            }
        }
    }

    /// The field `key`, if present.
    pub fn opt(&mut self, key: &str) -> Option<&'a Node> {
        let i = self.entries.iter().position(|(k, _)| k.name == key)?;
        self.used[i] = true;
        Some(&self.entries[i].1)
    }

    /// True when the map holds `key` (without reading it).
    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k.name == key)
    }

    /// The field `key`; reports it missing otherwise.
    pub fn req(&mut self, key: &str, diags: &mut Diagnostics) -> Option<&'a Node> {
        let n = self.opt(key);
        if n.is_none() {
            diags.error(
                self.origin,
                format!("missing required field `{key}` in {}", self.what),
                format!("add `{key}:` to {}", self.what),
            );
        }
        n
    }

    /// Where the map starts.
    pub fn origin(&self) -> &'a Origin {
        self.origin
    }

    /// Reports every field not read, suggesting the closest known name.
    pub fn finish(self, known: &[&str], diags: &mut Diagnostics) {
        for ((k, _), used) in self.entries.iter().zip(self.used) {
            if used {
                continue;
            }
            let fix = match closest(&k.name, known) {
                Some(s) => format!("did you mean `{s}`? (allowed: {})", known.join(", ")),
                None => format!("remove it (allowed: {})", known.join(", ")),
            };
            diags.error(
                &k.origin,
                format!("unknown field `{}` in {}", k.name, self.what),
                fix,
            );
        }
    }
}

pub use crate::diag::closest;

/// Reads a string field.
pub fn string(node: &Node, what: &str, diags: &mut Diagnostics) -> Option<String> {
    match &node.kind {
        NodeKind::Str(s) => Some(s.clone()),
        _ => {
            wrong_type(node, what, "a string", diags);
            None
        }
    }
}

/// Reads a boolean field; YAML 1.1 spellings (`yes`, `on`) are errors with
/// a fix.
pub fn boolean(node: &Node, what: &str, diags: &mut Diagnostics) -> Option<bool> {
    match &node.kind {
        NodeKind::Bool(b) => Some(*b),
        NodeKind::Str(s) if node.plain && yaml11_bool(s).is_some() => {
            let b = yaml11_bool(s).unwrap_or_default();
            diags.error(
                &node.origin,
                format!("{what} must be a boolean; `{s}` is a YAML 1.1 boolean, which YAML 1.2 reads as the string \"{s}\""),
                format!("write `{b}`"),
            );
            None
        }
        _ => {
            wrong_type(node, what, "a boolean (true or false)", diags);
            None
        }
    }
}

/// Reports every plain value of a free-form value (vars, input values,
/// manifests) that YAML 1.2 (tidegate) and YAML 1.1 (kubectl, older tools)
/// read differently, so that the author's intent is ambiguous:
/// `yes`/`no`/`on`/`off` (strings here, booleans there) and integers with a
/// leading zero (`0400`: decimal 400 here, octal 256 there, as in a
/// Secret volume's `defaultMode`).
pub fn ambiguous_values(node: &Node, diags: &mut Diagnostics) {
    match &node.kind {
        NodeKind::Str(s) if node.plain && yaml11_bool(s).is_some() && s.len() > 1 => {
            let b = yaml11_bool(s).unwrap_or_default();
            diags.error(
                &node.origin,
                format!("ambiguous value `{s}`: a boolean in YAML 1.1 (kubectl), the string \"{s}\" in YAML 1.2 (tidegate)"),
                format!("write `{b}` for a boolean or quote it (\"{s}\") for a string"),
            );
        }
        NodeKind::Int(decimal) if node.leading_zero => {
            if let Some((message, fix)) = leading_zero(*decimal) {
                diags.error(&node.origin, message, fix);
            }
        }
        NodeKind::Seq(items) => items.iter().for_each(|n| ambiguous_values(n, diags)),
        NodeKind::Map(entries) => entries.iter().for_each(|(_, n)| ambiguous_values(n, diags)),
        _ => {}
    }
}

/// The message and fix for an integer written with a leading zero, read
/// by YAML 1.2 as `decimal`; `None` when both readings agree (`07`).
fn leading_zero(decimal: i64) -> Option<(String, String)> {
    let (sign, digits) = match decimal {
        d if d < 0 => ("-", d.unsigned_abs().to_string()),
        d => ("", d.to_string()),
    };
    let written = format!("{sign}0{digits}");
    Some(match i64::from_str_radix(&digits, 8) {
        Ok(octal) if octal == decimal.abs() => return None,
        Ok(octal) => (
            format!("ambiguous number `{written}`: octal {sign}{octal} in YAML 1.1 (kubectl), decimal {decimal} in YAML 1.2 (tidegate)"),
            format!("write `{sign}{octal}` or `{sign}0o{digits}` for octal (file modes such as `defaultMode`), or `{decimal}` for decimal"),
        ),
        Err(_) => (
            format!("ambiguous number `{written}`: the string \"{written}\" in YAML 1.1 (kubectl; not an octal number), decimal {decimal} in YAML 1.2 (tidegate)"),
            format!("write `{decimal}` for a number or quote it (\"{written}\") for a string"),
        ),
    })
}

/// Reads a list field.
pub fn list<'n>(node: &'n Node, what: &str, diags: &mut Diagnostics) -> Option<&'n [Node]> {
    match &node.kind {
        NodeKind::Seq(items) => Some(items),
        _ => {
            wrong_type(node, what, "a list", diags);
            None
        }
    }
}

/// Reads a string, or a list of strings, as a list.
pub fn strings(node: &Node, what: &str, diags: &mut Diagnostics) -> Vec<(String, Origin)> {
    match &node.kind {
        NodeKind::Str(s) => vec![(s.clone(), node.origin.clone())],
        NodeKind::Seq(items) => items
            .iter()
            .filter_map(|n| string(n, what, diags).map(|s| (s, n.origin.clone())))
            .collect(),
        _ => {
            wrong_type(node, what, "a string or a list of strings", diags);
            Vec::new()
        }
    }
}

/// Reports that `node` is not of the expected type.
pub fn wrong_type(node: &Node, what: &str, want: &str, diags: &mut Diagnostics) {
    let found = match &node.kind {
        NodeKind::Str(s) => format!("the string \"{s}\""),
        _ => format!("a {}", node.type_name()),
    };
    diags.error(
        &node.origin,
        format!("{what} must be {want}, found {found}"),
        format!("write {want} here"),
    );
}

/// True when `s` is a valid name (DNS-label-like: lowercase letters,
/// digits, `-`, `_`; starting with a letter).
pub fn valid_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Reads a name field, checking its spelling.
pub fn name(node: &Node, what: &str, diags: &mut Diagnostics) -> Option<String> {
    let s = string(node, what, diags)?;
    if valid_name(&s) {
        Some(s)
    } else {
        diags.error(
            &node.origin,
            format!("{what} `{s}` is not a valid name"),
            "use letters, digits, `-` and `_`, starting with a letter",
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::yaml::parse;
    use super::*;

    fn node(text: &str) -> Node {
        let mut d = Diagnostics::default();
        parse("f.yaml", text, &mut d).unwrap().remove(0)
    }

    #[test]
    fn unknown_fields_are_reported_with_a_suggestion() {
        let n = node("name: a\nafterr: b\n");
        let mut d = Diagnostics::default();
        let mut f = Fields::new(&n, "Environment spec", &mut d).unwrap();
        f.opt("name");
        f.finish(&["name", "after"], &mut d);
        let e = d.iter().next().unwrap();
        assert_eq!(e.message, "unknown field `afterr` in Environment spec");
        assert!(e.fix.starts_with("did you mean `after`?"));
        assert_eq!(e.origin.line, 2);
    }

    #[test]
    fn yaml11_booleans_are_errors_with_a_fix() {
        let n = node("x: yes\n");
        let mut d = Diagnostics::default();
        assert_eq!(boolean(n.get("x").unwrap(), "`x`", &mut d), None);
        let e = d.iter().next().unwrap();
        assert!(e.message.contains("YAML 1.1 boolean"), "{}", e.message);
        assert_eq!(e.fix, "write `true`");
    }

    /// Issue 17: `defaultMode: 0400` is 400 to tidegate and 256 to kubectl.
    #[test]
    fn leading_zero_integers_are_ambiguous_with_the_octal_fix() {
        let n =
            node("defaultMode: 0400\nok: 0o400\nalso: 420\nodd: 089\nsame: 07\nlist: [-0644]\n");
        let mut d = Diagnostics::default();
        ambiguous_values(&n, &mut d);
        let e: Vec<_> = d.iter().collect();
        assert_eq!(e.len(), 3, "{e:?}");
        assert_eq!(
            e[0].message,
            "ambiguous number `0400`: octal 256 in YAML 1.1 (kubectl), decimal 400 in YAML 1.2 (tidegate)"
        );
        assert_eq!(
            e[0].fix,
            "write `256` or `0o400` for octal (file modes such as `defaultMode`), or `400` for decimal"
        );
        assert_eq!((e[0].origin.line, e[0].origin.column), (1, 14));
        assert!(
            e[1].message.contains("the string \"089\" in YAML 1.1"),
            "{}",
            e[1].message
        );
        assert_eq!(
            e[1].fix,
            "write `89` for a number or quote it (\"089\") for a string"
        );
        assert!(
            e[2].message
                .starts_with("ambiguous number `-0644`: octal -420"),
            "{}",
            e[2].message
        );
    }
}
