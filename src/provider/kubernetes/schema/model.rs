//! The schema format and its compiled form.
//!
//! [`Schema`] is an OpenAPI v3 schema node as Kubernetes writes one (the
//! `openAPIV3Schema` of a CustomResourceDefinition, and the reduced
//! built-in definitions of the bundled file): only the keywords validation
//! reads are kept, every other keyword is ignored. [`Arena`] is what the
//! validator walks: every `$ref` resolved to a node index once, property
//! names sorted for binary search, so checking an object allocates nothing
//! until a problem is found.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::Error;

/// One OpenAPI v3 schema node (the subset validation reads).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Schema {
    /// Another definition of the same file (bundled definitions only).
    #[serde(rename = "$ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub ty: Option<String>,
    /// `byte` (base64), `int32`, `quantity` (a resource quantity: a string
    /// such as `500m` or `1Gi`, or a number); others are not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, Schema>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<String>,
    #[serde(
        rename = "additionalProperties",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub additional: Option<Additional>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Items>,
    #[serde(rename = "enum", default, skip_serializing_if = "Option::is_none")]
    pub enumeration: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub nullable: bool,
    #[serde(
        rename = "x-kubernetes-preserve-unknown-fields",
        default,
        skip_serializing_if = "is_false"
    )]
    pub preserve_unknown: bool,
    #[serde(
        rename = "x-kubernetes-embedded-resource",
        default,
        skip_serializing_if = "is_false"
    )]
    pub embedded: bool,
    #[serde(
        rename = "x-kubernetes-int-or-string",
        default,
        skip_serializing_if = "is_false"
    )]
    pub int_or_string: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `additionalProperties`: a boolean or the schema of every value.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Additional {
    Allowed(bool),
    Schema(Box<Schema>),
}

/// `items`: one schema for every item (a list of schemas, which structural
/// schemas forbid, is read as "anything").
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Items {
    One(Box<Schema>),
    Many(Vec<Schema>),
}

/// The bundled file: every creatable built-in kind and the definitions
/// reachable from them.
#[derive(Debug, Deserialize, Serialize)]
pub struct Bundle {
    /// The Kubernetes release the definitions come from (`1.37.2`).
    pub kubernetes: String,
    pub kinds: Vec<BundledKind>,
    pub definitions: BTreeMap<String, Schema>,
}

/// One built-in kind and the definition of its objects.
#[derive(Debug, Deserialize, Serialize)]
pub struct BundledKind {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub definition: String,
}

/// An index into an [`Arena`].
pub type NodeId = u32;

/// What a value must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Any,
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
    /// An integer or a string (`x-kubernetes-int-or-string`).
    IntOrString,
    /// A resource quantity: a string in quantity syntax, or a number.
    Quantity,
}

impl Ty {
    /// How a message names a value of this type.
    pub fn expected(self) -> &'static str {
        match self {
            Ty::Any => "anything",
            Ty::Object => "a map",
            Ty::Array => "a list",
            Ty::String => "a string",
            Ty::Integer => "an integer",
            Ty::Number => "a number",
            Ty::Boolean => "a boolean",
            Ty::IntOrString => "an integer or a string",
            Ty::Quantity => "a quantity (a string such as 500m or 1Gi, or a number)",
        }
    }
}

/// What a map accepts besides its properties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extra {
    /// Nothing: another field is unknown.
    Closed,
    /// Anything (`x-kubernetes-preserve-unknown-fields`,
    /// `additionalProperties: true`).
    Any,
    /// Any key, each value of this schema (`map[string]T`).
    Each(NodeId),
}

/// A string format the validator checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    None,
    /// base64 (`[]byte` fields: Secret `data`).
    Byte,
    /// A 32-bit integer.
    Int32,
}

/// A compiled schema node.
#[derive(Clone, Debug)]
pub struct Node {
    pub ty: Ty,
    pub format: Format,
    /// The definition's short name (`Container`) or a custom kind's name,
    /// for messages; `None` for nodes inside another.
    pub name: Option<Box<str>>,
    /// Sorted by name.
    pub properties: Vec<(Box<str>, NodeId)>,
    pub required: Vec<Box<str>>,
    pub extra: Extra,
    pub items: Option<NodeId>,
    pub enumeration: Option<Vec<serde_json::Value>>,
    /// `x-kubernetes-embedded-resource`: also `apiVersion`, `kind` and
    /// `metadata`.
    pub embedded: bool,
}

impl Node {
    /// The node of property `name`.
    pub fn property(&self, name: &str) -> Option<NodeId> {
        self.properties
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .map(|i| self.properties[i].1)
    }

    /// The property names, for suggestions.
    pub fn property_names(&self) -> Vec<&str> {
        self.properties.iter().map(|(k, _)| &**k).collect()
    }
}

/// Compiled schema nodes; [`NodeId`]s index `nodes`.
#[derive(Clone, Debug, Default)]
pub struct Arena {
    pub nodes: Vec<Node>,
}

impl Arena {
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        (self.nodes.len() - 1) as NodeId
    }
}

/// Compiles schemas into an [`Arena`], resolving `$ref`s against
/// `definitions` (each definition compiled once, recursion allowed).
pub struct Compiler<'d> {
    pub arena: Arena,
    definitions: &'d BTreeMap<String, Schema>,
    compiled: HashMap<&'d str, NodeId>,
}

impl<'d> Compiler<'d> {
    pub fn new(definitions: &'d BTreeMap<String, Schema>) -> Self {
        Compiler {
            arena: Arena::default(),
            definitions,
            compiled: HashMap::new(),
        }
    }

    /// The node of definition `name`.
    pub fn definition(&mut self, name: &str) -> Result<NodeId, Error> {
        let (key, schema) =
            self.definitions
                .get_key_value(name)
                .ok_or_else(|| Error::MissingDefinition {
                    name: name.to_string(),
                })?;
        if let Some(&id) = self.compiled.get(key.as_str()) {
            return Ok(id);
        }
        // Reserved first, so a definition that refers to itself (JSON
        // schema props) points back at this node.
        let id = self.arena.push(placeholder());
        self.compiled.insert(key.as_str(), id);
        let short = key.rsplit('.').next().unwrap_or(key);
        let node = self.build(schema, Some(short))?;
        self.arena.nodes[id as usize] = node;
        Ok(id)
    }

    /// Compiles `schema` (and everything below it) as a new node named
    /// `name`.
    pub fn compile(&mut self, schema: &Schema, name: Option<&str>) -> Result<NodeId, Error> {
        if let Some(r) = &schema.reference {
            return self.definition(r);
        }
        let node = self.build(schema, name)?;
        Ok(self.arena.push(node))
    }

    fn build(&mut self, s: &Schema, name: Option<&str>) -> Result<Node, Error> {
        if let Some(r) = &s.reference {
            // A definition that is only a reference: share its node's shape.
            let id = self.definition(r)?;
            return Ok(self.arena.node(id).clone());
        }
        let ty = if s.int_or_string || s.format.as_deref() == Some("int-or-string") {
            Ty::IntOrString
        } else if s.format.as_deref() == Some("quantity") {
            Ty::Quantity
        } else {
            match s.ty.as_deref() {
                Some("object") => Ty::Object,
                Some("array") => Ty::Array,
                Some("string") => Ty::String,
                Some("integer") => Ty::Integer,
                Some("number") => Ty::Number,
                Some("boolean") => Ty::Boolean,
                // No type (or one Kubernetes does not use): anything.
                _ => Ty::Any,
            }
        };
        let format = match (ty, s.format.as_deref()) {
            (Ty::String, Some("byte")) => Format::Byte,
            (Ty::Integer, Some("int32")) => Format::Int32,
            _ => Format::None,
        };
        let mut properties = Vec::with_capacity(s.properties.len());
        for (k, p) in &s.properties {
            properties.push((k.as_str().into(), self.compile(p, None)?));
        }
        properties.sort_by(|a: &(Box<str>, NodeId), b| a.0.cmp(&b.0));
        let extra = if s.preserve_unknown {
            Extra::Any
        } else {
            match &s.additional {
                Some(Additional::Allowed(true)) => Extra::Any,
                Some(Additional::Schema(a)) => Extra::Each(self.compile(a, None)?),
                Some(Additional::Allowed(false)) | None => Extra::Closed,
            }
        };
        let items = match &s.items {
            Some(Items::One(i)) => Some(self.compile(i, None)?),
            Some(Items::Many(_)) | None => None,
        };
        Ok(Node {
            ty,
            format,
            name: name.map(Into::into),
            properties,
            required: s.required.iter().map(|r| r.as_str().into()).collect(),
            extra,
            items,
            enumeration: s.enumeration.clone(),
            embedded: s.embedded,
        })
    }
}

fn placeholder() -> Node {
    Node {
        ty: Ty::Any,
        format: Format::None,
        name: None,
        properties: Vec::new(),
        required: Vec::new(),
        extra: Extra::Any,
        items: None,
        enumeration: None,
        embedded: false,
    }
}
