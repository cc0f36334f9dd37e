//! The SOPS file format on bytes: parsing YAML and JSON the way sops (Go,
//! `gopkg.in/yaml.v3` and `encoding/json`) reads them, the `sops` metadata
//! section (with the selection [`Rule`] it records), and emitting files
//! sops reads back. Values are opaque strings here: their `ENC[...]` form
//! is [`super::enc`]'s, the wrapped data keys [`AgeKey`] are
//! [`super::crypto`]'s; nothing here imports [`super::mac`].
//!
//! Pure: no I/O, no crypto. Scalars resolve with yaml.v3's rules (not
//! saphyr's YAML 1.2 core schema) because the MAC covers unencrypted values
//! in their Go form: `0755` is the int 493 for sops, `1_000` is 1000, and a
//! JSON number is always a float64.

use regex::Regex;
use saphyr::{MarkedYaml, ScalarStyle, YamlData, YamlLoader};
use zeroize::Zeroizing;

use super::crypto::AgeKey;
use super::{At, Error, Result};

/// Where a node starts (1-based line and column); `None` for JSON.
pub type Pos = Option<(usize, usize)>;

/// A document node, in document order.
#[derive(Clone, Debug)]
pub struct Node {
    pub at: Pos,
    pub kind: Kind,
}

/// What a node holds. Strings are zeroized on drop: a plaintext file being
/// encrypted passes through here.
#[derive(Clone, Debug)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Zeroizing<String>),
    List(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl Node {
    pub fn new(kind: Kind) -> Self {
        Node { at: None, kind }
    }

    pub fn str(s: impl Into<String>) -> Self {
        Node::new(Kind::Str(Zeroizing::new(s.into())))
    }

    /// The map entry `key`, if this is a map holding it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s.as_str()),
            _ => None,
        }
    }
}

/// The two formats sops stores structured data in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// sops picks the format by extension: `.json` is JSON, `.yaml`/`.yml`
    /// (and, here, anything else) YAML.
    pub fn for_path(file: &str) -> Format {
        if file.ends_with(".json") {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

/// The default rule when a file names none.
pub const DEFAULT_UNENCRYPTED_SUFFIX: &str = "_unencrypted";

/// The one selection rule of a file.
#[derive(Clone, Debug)]
pub enum Rule {
    /// Values under a key ending in the suffix stay plaintext.
    UnencryptedSuffix(String),
    /// Only values under a key ending in the suffix are encrypted.
    EncryptedSuffix(String),
    /// Values under a key matching the regex stay plaintext.
    UnencryptedRegex(Regex),
    /// Only values under a key matching the regex are encrypted.
    EncryptedRegex(Regex),
}

impl Default for Rule {
    fn default() -> Self {
        Rule::UnencryptedSuffix(DEFAULT_UNENCRYPTED_SUFFIX.into())
    }
}

impl Rule {
    /// Builds the rule from the four metadata fields; at most one may be set.
    pub fn from_fields(
        unencrypted_suffix: Option<String>,
        encrypted_suffix: Option<String>,
        unencrypted_regex: Option<String>,
        encrypted_regex: Option<String>,
    ) -> std::result::Result<Rule, String> {
        let regex = |field: &str, r: String| {
            Regex::new(&r).map_err(|e| format!("`{field}` is not a valid regex: {e}"))
        };
        let set: Vec<_> = [
            ("unencrypted_suffix", unencrypted_suffix),
            ("encrypted_suffix", encrypted_suffix),
            ("unencrypted_regex", unencrypted_regex),
            ("encrypted_regex", encrypted_regex),
        ]
        .into_iter()
        .filter_map(|(f, v)| v.filter(|v| !v.is_empty()).map(|v| (f, v)))
        .collect();
        match set.as_slice() {
            [] => Ok(Rule::default()),
            [(f, v)] => Ok(match *f {
                "unencrypted_suffix" => Rule::UnencryptedSuffix(v.clone()),
                "encrypted_suffix" => Rule::EncryptedSuffix(v.clone()),
                "unencrypted_regex" => Rule::UnencryptedRegex(regex(f, v.clone())?),
                _ => Rule::EncryptedRegex(regex(f, v.clone())?),
            }),
            _ => Err("more than one of unencrypted_suffix, encrypted_suffix, unencrypted_regex, encrypted_regex is set; sops allows one".into()),
        }
    }

    /// The metadata field and value that record this rule.
    pub fn field(&self) -> (&'static str, String) {
        match self {
            Rule::UnencryptedSuffix(s) => ("unencrypted_suffix", s.clone()),
            Rule::EncryptedSuffix(s) => ("encrypted_suffix", s.clone()),
            Rule::UnencryptedRegex(r) => ("unencrypted_regex", r.as_str().to_string()),
            Rule::EncryptedRegex(r) => ("encrypted_regex", r.as_str().to_string()),
        }
    }

    /// sops' `shouldBeEncrypted` for the map keys leading to a value.
    pub fn should_encrypt(&self, path: &[String]) -> bool {
        match self {
            Rule::UnencryptedSuffix(s) => !path.iter().any(|k| k.ends_with(s.as_str())),
            Rule::EncryptedSuffix(s) => path.iter().any(|k| k.ends_with(s.as_str())),
            Rule::UnencryptedRegex(r) => !path.iter().any(|k| r.is_match(k)),
            Rule::EncryptedRegex(r) => path.iter().any(|k| r.is_match(k)),
        }
    }
}

/// The `sops` section, as far as tidegate uses it.
#[derive(Clone, Debug)]
pub struct Metadata {
    pub age: Vec<AgeKey>,
    pub lastmodified: String,
    /// `ENC[...]` of the uppercase hex SHA-512 MAC.
    pub mac: String,
    pub rule: Rule,
    pub mac_only_encrypted: bool,
    pub version: String,
}

/// An encrypted file: the data tree (a map, `sops` removed) and metadata.
#[derive(Clone, Debug)]
pub struct SopsDoc {
    pub format: Format,
    pub data: Node,
    pub meta: Metadata,
}

/// Parses a plaintext or encrypted document into a tree (top level must be
/// a map, as sops requires).
pub fn parse_document(bytes: &[u8], file: &str) -> Result<Node> {
    let text = std::str::from_utf8(bytes).map_err(|e| Error::Shape {
        file: file.to_string(),
        at: At(None),
        message: format!("not UTF-8 text (byte {})", e.valid_up_to()),
    })?;
    let node = match Format::for_path(file) {
        Format::Yaml => parse_yaml(text, file)?,
        Format::Json => parse_json(text, file)?,
    };
    if !matches!(node.kind, Kind::Map(_)) {
        return Err(shape(file, node.at, "the top level must be a map of keys"));
    }
    Ok(node)
}

/// Parses an encrypted file: data tree plus checked metadata.
pub fn parse_encrypted(bytes: &[u8], file: &str) -> Result<SopsDoc> {
    let mut data = parse_document(bytes, file)?;
    let Kind::Map(entries) = &mut data.kind else {
        unreachable!("parse_document returns a map")
    };
    let i = entries
        .iter()
        .position(|(k, _)| k == "sops")
        .ok_or_else(|| Error::NotEncrypted {
            file: file.to_string(),
        })?;
    let (_, sops) = entries.remove(i);
    let meta = parse_metadata(&sops, file)?;
    Ok(SopsDoc {
        format: Format::for_path(file),
        data,
        meta,
    })
}

fn shape(file: &str, at: Pos, message: impl Into<String>) -> Error {
    Error::Shape {
        file: file.to_string(),
        at: At(at),
        message: message.into(),
    }
}

// ---------------------------------------------------------------- YAML in

fn parse_yaml(text: &str, file: &str) -> Result<Node> {
    let mut parser = saphyr_parser::Parser::new_from_str(text);
    let mut loader: YamlLoader<MarkedYaml> = YamlLoader::default();
    loader.early_parse(false);
    let syntax = |e: &saphyr::ScanError| Error::Syntax {
        file: file.to_string(),
        line: e.marker().line(),
        column: e.marker().col() + 1,
        message: format!("malformed YAML: {}", e.info()),
    };
    parser.load(&mut loader, true).map_err(|e| syntax(&e))?;
    if let Some(e) = loader.error() {
        return Err(syntax(e));
    }
    let docs = loader.into_documents();
    match docs.as_slice() {
        [] => Err(shape(file, None, "empty document")),
        [doc] => yaml_node(doc, file),
        [_, second, ..] => Err(shape(
            file,
            pos(second),
            "several YAML documents in one file; tidegate secret files hold one",
        )),
    }
}

fn pos(n: &MarkedYaml) -> Pos {
    Some((n.span.start.line(), n.span.start.col() + 1))
}

fn yaml_node(n: &MarkedYaml, file: &str) -> Result<Node> {
    let at = pos(n);
    let kind = match &n.data {
        YamlData::Representation(text, style, tag) => {
            resolve_scalar(text, *style, tag.as_deref()).map_err(|m| shape(file, at, m))?
        }
        YamlData::Value(_) => unreachable!("early_parse is off"),
        YamlData::Sequence(items) => Kind::List(
            items
                .iter()
                .map(|i| yaml_node(i, file))
                .collect::<Result<_>>()?,
        ),
        YamlData::Mapping(map) => {
            let mut entries = Vec::with_capacity(map.len());
            for (k, v) in map {
                let key = match yaml_node(k, file)?.kind {
                    Kind::Str(s) => s.to_string(),
                    _ => {
                        return Err(shape(
                            file,
                            pos(k),
                            "a non-string map key; sops supports only string keys: quote it",
                        ))
                    }
                };
                entries.push((key, yaml_node(v, file)?));
            }
            Kind::Map(entries)
        }
        YamlData::Tagged(tag, inner) => {
            return Err(shape(
                file,
                pos(inner).or(at),
                format!("unsupported YAML tag `{}{}`", tag.handle, tag.suffix),
            ))
        }
        YamlData::Alias(_) | YamlData::BadValue => {
            return Err(shape(file, at, "invalid YAML node"));
        }
    };
    Ok(Node { at, kind })
}

/// Resolves a scalar as yaml.v3 does when decoding into `interface{}`.
fn resolve_scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&saphyr::Tag>,
) -> std::result::Result<Kind, String> {
    let s = || Kind::Str(Zeroizing::new(text.to_string()));
    match tag {
        Some(t) if t.is_yaml_core_schema() => match t.suffix.as_str() {
            "str" => Ok(s()),
            "null" => Ok(Kind::Null),
            "bool" => match resolve_plain(text) {
                k @ Kind::Bool(_) => Ok(k),
                _ => Err("a !!bool tag on a value that is not a boolean".into()),
            },
            "int" => match resolve_plain(text) {
                k @ Kind::Int(_) => Ok(k),
                _ => Err("an !!int tag on a value that is not an integer".into()),
            },
            "float" => match resolve_plain(text) {
                Kind::Int(i) => Ok(Kind::Float(i as f64)),
                k @ Kind::Float(_) => Ok(k),
                _ => Err("a !!float tag on a value that is not a number".into()),
            },
            other => Err(format!("unsupported YAML tag `!!{other}`")),
        },
        Some(t) => Err(format!("unsupported YAML tag `{}{}`", t.handle, t.suffix)),
        None if style != ScalarStyle::Plain => Ok(s()),
        None => Ok(resolve_plain(text)),
    }
}

/// yaml.v3's resolution of an untagged plain scalar.
pub fn resolve_plain(text: &str) -> Kind {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "true" | "True" | "TRUE" => return Kind::Bool(true),
        "false" | "False" | "FALSE" => return Kind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Kind::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Kind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Kind::Float(f64::NAN),
        _ => {}
    }
    let first = text.as_bytes()[0];
    if first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'.') {
        let plain = text.replace('_', "");
        if let Some(i) = go_parse_int_base0(&plain) {
            return Kind::Int(i);
        }
        if yaml_float_re().is_match(&plain) {
            if let Ok(f) = plain.parse::<f64>() {
                return Kind::Float(f);
            }
        }
    }
    Kind::Str(Zeroizing::new(text.to_string()))
}

/// Go's `strconv.ParseInt(s, 0, 64)`: sign, then `0x`, `0o`, `0b` or a
/// leading `0` (octal) prefix.
pub fn go_parse_int_base0(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(digits, radix).ok()?;
    i64::try_from(if neg { -magnitude } else { magnitude }).ok()
}

fn yaml_float_re() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$").expect("valid regex")
    })
}

// ---------------------------------------------------------------- JSON in

fn parse_json(text: &str, file: &str) -> Result<Node> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Syntax {
        file: file.to_string(),
        line: e.line(),
        column: e.column(),
        message: format!("malformed JSON: {}", json_error_kind(&e)),
    })?;
    Ok(json_node(v))
}

fn json_error_kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "invalid data",
        serde_json::error::Category::Eof => "unexpected end of input",
    }
}

fn json_node(v: serde_json::Value) -> Node {
    use serde_json::Value as J;
    Node::new(match v {
        J::Null => Kind::Null,
        J::Bool(b) => Kind::Bool(b),
        // encoding/json decodes every number into a float64.
        J::Number(n) => Kind::Float(n.as_f64().unwrap_or(f64::NAN)),
        J::String(s) => Kind::Str(Zeroizing::new(s)),
        J::Array(a) => Kind::List(a.into_iter().map(json_node).collect()),
        J::Object(o) => Kind::Map(o.into_iter().map(|(k, v)| (k, json_node(v))).collect()),
    })
}

// ---------------------------------------------------------------- metadata

const OTHER_KEY_TYPES: [&str; 5] = ["pgp", "kms", "gcp_kms", "azure_kv", "hc_vault"];

fn parse_metadata(sops: &Node, file: &str) -> Result<Metadata> {
    let bad = |message: String| Error::Metadata {
        file: file.to_string(),
        message,
    };
    let unsupported = |feature: &str, why: &str| Error::Unsupported {
        file: file.to_string(),
        feature: feature.to_string(),
        why: why.to_string(),
    };
    if !matches!(sops.kind, Kind::Map(_)) {
        return Err(bad("`sops` must be a map".into()));
    }
    if sops.get("key_groups").is_some_and(non_empty) || sops.get("shamir_threshold").is_some() {
        return Err(unsupported(
            "key groups with Shamir secret sharing (`key_groups`/`shamir_threshold`)",
            "the data key is split across groups; re-encrypt with a single group of age recipients",
        ));
    }
    for f in ["encrypted_comment_regex", "unencrypted_comment_regex"] {
        if sops.get(f).is_some() {
            return Err(unsupported(
                &format!("`{f}`"),
                "which values are encrypted depends on YAML comments, which tidegate does not read; use encrypted_regex or a suffix rule instead",
            ));
        }
    }
    let text = |key: &str| -> Result<Option<String>> {
        match sops.get(key).map(|n| &n.kind) {
            None | Some(Kind::Null) => Ok(None),
            Some(Kind::Str(s)) => Ok(Some(s.to_string())),
            Some(_) => Err(bad(format!("`{key}` must be a string"))),
        }
    };
    let age = parse_age_keys(sops.get("age"), &bad)?;
    if age.is_empty() {
        let others: Vec<&str> = OTHER_KEY_TYPES
            .into_iter()
            .filter(|t| sops.get(t).is_some_and(non_empty))
            .collect();
        if others.is_empty() {
            return Err(bad(
                "no `age` recipients: the data key is not wrapped for anyone".into(),
            ));
        }
        return Err(Error::NoAgeRecipients {
            file: file.to_string(),
            types: others.join(", "),
        });
    }
    let rule = Rule::from_fields(
        text("unencrypted_suffix")?,
        text("encrypted_suffix")?,
        text("unencrypted_regex")?,
        text("encrypted_regex")?,
    )
    .map_err(bad)?;
    let mac_only_encrypted = match sops.get("mac_only_encrypted").map(|n| &n.kind) {
        None | Some(Kind::Null) => false,
        Some(Kind::Bool(b)) => *b,
        Some(_) => return Err(bad("`mac_only_encrypted` must be true or false".into())),
    };
    Ok(Metadata {
        age,
        lastmodified: text("lastmodified")?.ok_or_else(|| bad("no `lastmodified`".into()))?,
        mac: text("mac")?.ok_or_else(|| bad("no `mac`".into()))?,
        rule,
        mac_only_encrypted,
        version: text("version")?.unwrap_or_default(),
    })
}

fn non_empty(n: &Node) -> bool {
    match &n.kind {
        Kind::Null => false,
        Kind::List(l) => !l.is_empty(),
        Kind::Map(m) => !m.is_empty(),
        Kind::Str(s) => !s.is_empty(),
        _ => true,
    }
}

fn parse_age_keys(node: Option<&Node>, bad: &dyn Fn(String) -> Error) -> Result<Vec<AgeKey>> {
    let items = match node.map(|n| &n.kind) {
        None | Some(Kind::Null) => return Ok(vec![]),
        Some(Kind::List(items)) => items,
        Some(_) => return Err(bad("`age` must be a list".into())),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = |k: &str| {
                item.get(k)
                    .and_then(Node::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("age[{i}] has no string `{k}`")))
            };
            Ok(AgeKey {
                recipient: field("recipient")?.trim().to_string(),
                enc: field("enc")?,
            })
        })
        .collect()
}

/// The `sops` section as a node, in the field order sops 3.11 writes.
pub fn metadata_node(meta: &Metadata) -> Node {
    let age = meta
        .age
        .iter()
        .map(|k| {
            Node::new(Kind::Map(vec![
                ("recipient".into(), Node::str(k.recipient.clone())),
                ("enc".into(), Node::str(k.enc.clone())),
            ]))
        })
        .collect();
    let mut entries = vec![
        ("age".to_string(), Node::new(Kind::List(age))),
        ("lastmodified".into(), Node::str(meta.lastmodified.clone())),
        ("mac".into(), Node::str(meta.mac.clone())),
    ];
    let (field, value) = meta.rule.field();
    entries.push((field.to_string(), Node::str(value)));
    if meta.mac_only_encrypted {
        entries.push(("mac_only_encrypted".into(), Node::new(Kind::Bool(true))));
    }
    entries.push(("version".into(), Node::str(meta.version.clone())));
    Node::new(Kind::Map(entries))
}

// ---------------------------------------------------------------- emitting

/// Emits a document (data map, optionally followed by `sops`) in `format`.
pub fn emit(data: &Node, sops: Option<&Node>, format: Format) -> Zeroizing<String> {
    let mut doc = data.clone();
    if let (Kind::Map(entries), Some(s)) = (&mut doc.kind, sops) {
        entries.push(("sops".into(), s.clone()));
    }
    let mut out = Zeroizing::new(String::new());
    match format {
        Format::Yaml => emit_yaml_top(&doc, &mut out),
        Format::Json => {
            emit_json(&doc, 0, &mut out);
            out.push('\n');
        }
    }
    out
}

fn emit_yaml_top(doc: &Node, out: &mut String) {
    match &doc.kind {
        Kind::Map(entries) if !entries.is_empty() => emit_yaml_map(entries, 0, out),
        _ => out.push_str("{}\n"),
    }
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// Keys longer than this are written in the explicit form `? key` then
/// `: value` on the next line, as yaml.v3 (sops) writes them: a YAML parser
/// reads an implicit `key: value` key of at most 1024 characters.
const MAX_IMPLICIT_KEY: usize = 128;

fn emit_yaml_map(entries: &[(String, Node)], ind: usize, out: &mut String) {
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 {
            indent(out, ind);
        }
        if k.len() > MAX_IMPLICIT_KEY {
            out.push_str("? ");
            out.push_str(&yaml_key(k));
            out.push('\n');
            indent(out, ind);
        } else {
            out.push_str(&yaml_key(k));
        }
        out.push(':');
        emit_yaml_value(v, ind, out);
    }
}

/// Emits the value after `key:` or `- ` (the cursor is right after it).
fn emit_yaml_value(v: &Node, ind: usize, out: &mut String) {
    match &v.kind {
        Kind::Map(entries) if !entries.is_empty() => {
            out.push('\n');
            indent(out, ind + 2);
            emit_yaml_map(entries, ind + 2, out);
        }
        Kind::List(items) if !items.is_empty() => {
            out.push('\n');
            for item in items {
                indent(out, ind + 2);
                out.push('-');
                emit_yaml_item(item, ind + 2, out);
            }
        }
        Kind::Str(s) if is_armor(s) => {
            out.push_str(" |\n");
            for line in s.lines() {
                indent(out, ind + 2);
                out.push_str(line);
                out.push('\n');
            }
        }
        _ => {
            out.push(' ');
            out.push_str(&yaml_scalar(v));
            out.push('\n');
        }
    }
}

fn emit_yaml_item(item: &Node, ind: usize, out: &mut String) {
    match &item.kind {
        Kind::Map(entries) if !entries.is_empty() => {
            out.push(' ');
            emit_yaml_map(entries, ind + 2, out);
        }
        Kind::List(items) if !items.is_empty() => {
            out.push(' ');
            for (i, sub) in items.iter().enumerate() {
                if i > 0 {
                    indent(out, ind + 2);
                }
                out.push('-');
                emit_yaml_item(sub, ind + 2, out);
            }
        }
        _ => emit_yaml_value(item, ind, out),
    }
}

fn is_armor(s: &str) -> bool {
    s.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n")
        && s.ends_with("-----END AGE ENCRYPTED FILE-----\n")
        && s.chars()
            .all(|c| c.is_ascii_graphic() || c == '\n' || c == ' ')
}

fn yaml_key(k: &str) -> String {
    if is_plain_safe(k) {
        k.to_string()
    } else {
        double_quote(k)
    }
}

/// A key or string that yaml.v3 reads back as the same string when plain.
fn is_plain_safe(s: &str) -> bool {
    let simple = !s.is_empty()
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
    let reserved = matches!(
        s.to_ascii_lowercase().as_str(),
        "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
    );
    simple && !reserved && matches!(resolve_plain(s), Kind::Str(_))
}

fn yaml_scalar(v: &Node) -> String {
    match &v.kind {
        Kind::Null => "null".into(),
        Kind::Bool(b) => b.to_string(),
        Kind::Int(i) => i.to_string(),
        Kind::Float(f) => yaml_float(*f),
        Kind::Str(s) if s.starts_with("ENC[AES256_GCM,") && is_plain_enc(s) => s.to_string(),
        Kind::Str(s) if is_plain_safe(s) => s.to_string(),
        Kind::Str(s) => double_quote(s),
        Kind::List(_) => "[]".into(),
        Kind::Map(_) => "{}".into(),
    }
}

fn is_plain_enc(s: &str) -> bool {
    s.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(b, b'[' | b']' | b',' | b':' | b'+' | b'/' | b'=' | b'_')
    })
}

/// A float that yaml.v3 reads back as a float (never as an int).
fn yaml_float(f: f64) -> String {
    if f.is_nan() {
        ".nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { ".inf" } else { "-.inf" }.into()
    } else {
        let s = format!("{f:?}");
        if s.contains(['.', 'e', 'E']) {
            s
        } else {
            format!("{s}.0")
        }
    }
}

/// A YAML double-quoted scalar (escapes only what YAML requires).
pub fn double_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn emit_json(v: &Node, ind: usize, out: &mut String) {
    match &v.kind {
        Kind::Null => out.push_str("null"),
        Kind::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Kind::Int(i) => out.push_str(&i.to_string()),
        Kind::Float(f) => out.push_str(&json_float(*f)),
        Kind::Str(s) => out.push_str(&serde_json::Value::String(s.to_string()).to_string()),
        Kind::List(items) if items.is_empty() => out.push_str("[]"),
        Kind::Map(entries) if entries.is_empty() => out.push_str("{}"),
        Kind::List(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                indent(out, ind + 2);
                emit_json(item, ind + 2, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            indent(out, ind);
            out.push(']');
        }
        Kind::Map(entries) => {
            out.push_str("{\n");
            for (i, (k, val)) in entries.iter().enumerate() {
                indent(out, ind + 2);
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push_str(": ");
                emit_json(val, ind + 2, out);
                out.push_str(if i + 1 < entries.len() { ",\n" } else { "\n" });
            }
            indent(out, ind);
            out.push('}');
        }
    }
}

fn json_float(f: f64) -> String {
    if f.is_finite() {
        super::enc::go_format_float(f)
    } else {
        // JSON has no NaN/Inf; sops could not have written one either.
        "null".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Node {
        parse_document(s.as_bytes(), "t.yaml").unwrap()
    }

    #[test]
    fn scalars_resolve_like_yaml_v3() {
        assert!(matches!(resolve_plain("0755"), Kind::Int(493)));
        assert!(matches!(resolve_plain("0x1F"), Kind::Int(31)));
        assert!(matches!(resolve_plain("1_000"), Kind::Int(1000)));
        assert!(matches!(resolve_plain("+5"), Kind::Int(5)));
        assert!(matches!(resolve_plain("1e3"), Kind::Float(f) if f == 1000.0));
        assert!(matches!(resolve_plain(".5"), Kind::Float(f) if f == 0.5));
        assert!(matches!(resolve_plain("yes"), Kind::Str(_)));
        assert!(matches!(resolve_plain("2024-01-01"), Kind::Str(_)));
        assert!(matches!(resolve_plain("True"), Kind::Bool(true)));
        assert!(matches!(resolve_plain("~"), Kind::Null));
        assert!(matches!(
            resolve_plain("9223372036854775808"),
            Kind::Float(_)
        ));
    }

    #[test]
    fn yaml_keeps_order_quotes_and_positions() {
        let n = yaml("b: 1\na: '2'\nc:\n  - x\n  - {k: v}\n");
        let Kind::Map(e) = &n.kind else { panic!() };
        let keys: Vec<_> = e.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "a", "c"]);
        assert!(matches!(e[1].1.kind, Kind::Str(_)));
        assert_eq!(e[1].1.at, Some((2, 4)));
    }

    #[test]
    fn bad_yaml_names_line_and_column() {
        let e = parse_document(b"a: 1\nb: [\n", "s.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("s.yaml:"), "{e}");
        let e = parse_document(b"1: x\n", "s.yaml").unwrap_err().to_string();
        assert!(e.contains("s.yaml:1:1") && e.contains("non-string"), "{e}");
        let e = parse_document(b"- a\n", "s.yaml").unwrap_err().to_string();
        assert!(e.contains("top level must be a map"), "{e}");
    }

    #[test]
    fn json_numbers_are_floats() {
        let n = parse_document(br#"{"a": 5, "b": [true, null]}"#, "t.json").unwrap();
        assert!(matches!(n.get("a").unwrap().kind, Kind::Float(f) if f == 5.0));
    }

    #[test]
    fn emitted_yaml_reads_back_identically() {
        let src = "s: \"multi\\nline ü \\\"q\\\"\"\nn: 5\nf: 5.0\nb: false\nz: null\ny: \"y\"\nl:\n  - - 1\n    - 2\n  - k: v\n    j: []\ne: {}\n\"0755\": \"0755\"\n";
        let n = yaml(src);
        let out = emit(&n, None, Format::Yaml);
        let again = yaml(&out);
        assert_eq!(
            format!("{:?}", strip(&n)),
            format!("{:?}", strip(&again)),
            "{}",
            *out
        );
        let json = emit(&n, None, Format::Json);
        let j = parse_document(json.as_bytes(), "x.json").unwrap();
        assert!(matches!(j.get("f").unwrap().kind, Kind::Float(_)));
    }

    /// Found by `cargo fuzz` (tests/fuzz, target `sops`, docs/fuzzing.md): a
    /// 600-byte key of control characters was written as an implicit key
    /// whose escaped form (`"\x1f\x1f..."`) passed the 1024 characters a
    /// YAML parser accepts, so `tidegate secrets encrypt` wrote a file that
    /// neither tidegate nor sops reads back.
    #[test]
    fn long_keys_are_written_explicitly_and_read_back() {
        // As the fuzzer wrote it: a plain key of 300 bytes holding control
        // characters, each escaped as 4 characters when quoted.
        let long = format!("pa{}V", "\u{1f}".repeat(300));
        let src = format!(
            "db:\n  {long}: x\n  {long}2:\n    - 1\n  k{}:\n    a: b\nafter: 1\n",
            "k".repeat(MAX_IMPLICIT_KEY)
        );
        let n = yaml(&src);
        let out = emit(&n, None, Format::Yaml);
        assert!(out.contains("\n  ? \"pa\\x1f\\x1f"), "{}", *out);
        let again = yaml(&out);
        assert_eq!(
            format!("{:?}", strip(&n)),
            format!("{:?}", strip(&again)),
            "{}",
            *out
        );
    }

    fn strip(n: &Node) -> Node {
        let kind = match &n.kind {
            Kind::List(l) => Kind::List(l.iter().map(strip).collect()),
            Kind::Map(m) => Kind::Map(m.iter().map(|(k, v)| (k.clone(), strip(v))).collect()),
            k => k.clone(),
        };
        Node::new(kind)
    }
}
