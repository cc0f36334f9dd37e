//! Which values sops encrypts, and the MAC over them, exactly as sops 3.x
//! computes them (`sops.go`: `Tree.Encrypt`, `Tree.Decrypt`, `ToBytes`; the
//! file's `shouldBeEncrypted` rule is [`Rule`], kept in [`super::sops`] with
//! the metadata that records it).
//!
//! The top of the secrets core: it walks [`super::sops`] documents and
//! seals or opens their leaves with [`super::crypto`], as [`super::enc`]
//! values; none of those imports this module.
//!
//! The walk visits leaves in document order. Map keys form the path (list
//! indices do not); the AAD of a value is the path joined with `:` plus a
//! trailing `:`. Nulls are skipped. The MAC is SHA-512 over each leaf's
//! plaintext in its Go form (`True`/`False`, `strconv.FormatFloat(f, 'f',
//! -1, 64)`), over encrypted leaves only when `mac_only_encrypted` is set
//! (then seeded with a fixed 32-byte prefix), rendered as uppercase hex.

use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use super::crypto::{self, DataKey};
use super::enc::{parse_enc, Plain};
use super::sops::{Kind, Node, Rule, SopsDoc};
use super::{At, Error, Result};
use crate::sensitive::Sensitive;
use crate::value::{Map, Value};

/// sops' seed for MACs over encrypted values only (`sha256("sops")`).
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// Go's float form, which the MAC covers ([`Plain::mac_bytes`]); defined
/// with the value format in [`super::enc`].
pub use super::enc::go_format_float;

/// A leaf of a document as the plaintext it holds; `None` for a null or a
/// collection.
fn plain_of(kind: &Kind) -> Option<Plain> {
    Some(match kind {
        Kind::Str(s) => Plain::Str(s.clone()),
        Kind::Int(i) => Plain::Int(*i),
        Kind::Float(f) => Plain::Float(*f),
        Kind::Bool(b) => Plain::Bool(*b),
        _ => return None,
    })
}

/// The node a plaintext document (`sops -d` output) holds for this leaf.
fn kind_of(plain: &Plain) -> Kind {
    match plain {
        Plain::Str(s) => Kind::Str(s.clone()),
        Plain::Int(i) => Kind::Int(*i),
        Plain::Float(f) => Kind::Float(*f),
        Plain::Bool(b) => Kind::Bool(*b),
        Plain::Bytes(b) => Kind::Str(Zeroizing::new(String::from_utf8_lossy(b).into_owned())),
    }
}

/// A decrypted tree: plaintext leaves tagged with whether they were
/// encrypted in the file.
#[derive(Clone, Debug)]
pub enum PlainNode {
    Null,
    Leaf { plain: Plain, encrypted: bool },
    List(Vec<PlainNode>),
    Map(Vec<(String, PlainNode)>),
}

struct Hasher {
    sha: Sha512,
    only_encrypted: bool,
}

impl Hasher {
    fn new(only_encrypted: bool) -> Self {
        let mut sha = Sha512::new();
        if only_encrypted {
            sha.update(MAC_ONLY_ENCRYPTED_INIT);
        }
        Hasher {
            sha,
            only_encrypted,
        }
    }

    fn add(&mut self, plain: &Plain, encrypted: bool) {
        if !self.only_encrypted || encrypted {
            self.sha.update(plain.mac_bytes().as_slice());
        }
    }

    fn hex(self) -> Zeroizing<String> {
        let digest = self.sha.finalize();
        Zeroizing::new(hex::encode_upper(digest))
    }
}

/// Decrypts every value and verifies the MAC; only a tree whose MAC matches
/// is returned.
pub fn decrypt_tree(doc: &SopsDoc, key: &DataKey, file: &str) -> Result<PlainNode> {
    let mut hasher = Hasher::new(doc.meta.mac_only_encrypted);
    let mut path = Vec::new();
    let ctx = Ctx { doc, key, file };
    let tree = ctx.decrypt_node(&doc.data, &mut path, &mut hasher)?;
    let computed = hasher.hex();
    let stored =
        crypto::decrypt_mac(&doc.meta.mac, &doc.meta.lastmodified, key).map_err(|message| {
            Error::MacUnreadable {
                file: file.to_string(),
                message,
            }
        })?;
    if !crypto::ct_eq(computed.as_bytes(), stored.as_bytes()) {
        return Err(Error::MacMismatch {
            file: file.to_string(),
        });
    }
    Ok(tree)
}

struct Ctx<'a> {
    doc: &'a SopsDoc,
    key: &'a DataKey,
    file: &'a str,
}

impl Ctx<'_> {
    fn decrypt_node(&self, n: &Node, path: &mut Vec<String>, h: &mut Hasher) -> Result<PlainNode> {
        Ok(match &n.kind {
            Kind::Null => PlainNode::Null,
            Kind::List(items) => PlainNode::List(
                items
                    .iter()
                    .map(|i| self.decrypt_node(i, path, h))
                    .collect::<Result<_>>()?,
            ),
            Kind::Map(entries) => {
                let mut out = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    path.push(k.clone());
                    let child = self.decrypt_node(v, path, h);
                    path.pop();
                    out.push((k.clone(), child?));
                }
                PlainNode::Map(out)
            }
            leaf => {
                let encrypted = self.doc.meta.rule.should_encrypt(path);
                let plain = if encrypted {
                    self.decrypt_leaf(leaf, path, n)?
                } else {
                    plain_of(leaf).expect("scalar leaf")
                };
                h.add(&plain, encrypted);
                PlainNode::Leaf { plain, encrypted }
            }
        })
    }

    fn decrypt_leaf(&self, leaf: &Kind, path: &[String], n: &Node) -> Result<Plain> {
        let fail = |message: String| Error::Value {
            file: self.file.to_string(),
            at: At(n.at),
            path: path.join("."),
            message,
        };
        let Kind::Str(s) = leaf else {
            return Err(fail(
                "is not encrypted, but the file's selection rule says it must be (was it edited by hand?)".into(),
            ));
        };
        if s.is_empty() {
            return Ok(Plain::Str(Zeroizing::new(String::new())));
        }
        let enc = parse_enc(s).map_err(fail)?;
        let aad = aad(path);
        let bytes = crypto::decrypt_value(&enc, self.key, &aad).map_err(fail)?;
        Plain::from_decrypted(&enc.kind, bytes).map_err(fail)
    }
}

/// The additional authenticated data of a value: `a:b:c:`.
pub fn aad(path: &[String]) -> String {
    let mut s = path.join(":");
    s.push(':');
    s
}

/// Encrypts the selected leaves of a plaintext tree with `key`; returns the
/// encrypted tree and the MAC (uppercase hex).
pub fn encrypt_tree(
    plain: &Node,
    rule: &Rule,
    mac_only_encrypted: bool,
    key: &DataKey,
) -> Result<(Node, Zeroizing<String>)> {
    let mut h = Hasher::new(mac_only_encrypted);
    let mut path = Vec::new();
    let tree = encrypt_node(plain, rule, key, &mut path, &mut h)?;
    Ok((tree, h.hex()))
}

fn encrypt_node(
    n: &Node,
    rule: &Rule,
    key: &DataKey,
    path: &mut Vec<String>,
    h: &mut Hasher,
) -> Result<Node> {
    let kind = match &n.kind {
        Kind::Null => Kind::Null,
        Kind::List(items) => Kind::List(
            items
                .iter()
                .map(|i| encrypt_node(i, rule, key, path, h))
                .collect::<Result<_>>()?,
        ),
        Kind::Map(entries) => {
            let mut out = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                path.push(k.clone());
                let child = encrypt_node(v, rule, key, path, h);
                path.pop();
                out.push((k.clone(), child?));
            }
            Kind::Map(out)
        }
        leaf => {
            let plain = plain_of(leaf).expect("scalar leaf");
            let encrypted = rule.should_encrypt(path);
            h.add(&plain, encrypted);
            if encrypted {
                Kind::Str(Zeroizing::new(crypto::encrypt_value(
                    &plain,
                    key,
                    &aad(path),
                )?))
            } else {
                leaf.clone()
            }
        }
    };
    Ok(Node { at: n.at, kind })
}

/// The decrypted tree as tidegate values: encrypted leaves become
/// [`Value::Sensitive`], leaves the file kept in plaintext stay plain.
pub fn to_value(n: &PlainNode) -> Value {
    match n {
        PlainNode::Null => Value::Null,
        PlainNode::Leaf {
            plain,
            encrypted: true,
        } => Value::Sensitive(plain.to_sensitive()),
        PlainNode::Leaf { plain, .. } => match plain {
            Plain::Str(s) => Value::String(s.to_string()),
            Plain::Int(i) => Value::Int(*i),
            Plain::Float(f) => Value::Float(*f),
            Plain::Bool(b) => Value::Bool(*b),
            Plain::Bytes(b) => Value::Sensitive(Sensitive::new(b.to_vec())),
        },
        PlainNode::List(items) => Value::List(items.iter().map(to_value).collect()),
        PlainNode::Map(entries) => Value::Map(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), to_value(v)))
                .collect::<Map>(),
        ),
    }
}

/// The plaintext document (what `sops -d` prints), for operators.
pub fn to_plain_node(n: &PlainNode) -> Node {
    Node::new(match n {
        PlainNode::Null => Kind::Null,
        PlainNode::Leaf { plain, .. } => kind_of(plain),
        PlainNode::List(items) => Kind::List(items.iter().map(to_plain_node).collect()),
        PlainNode::Map(entries) => Kind::Map(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), to_plain_node(v)))
                .collect(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(path: &[&str]) -> Vec<String> {
        path.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn selection_rules_follow_sops() {
        let d = Rule::default();
        assert!(d.should_encrypt(&p(&["a", "b"])));
        assert!(!d.should_encrypt(&p(&["a_unencrypted", "b"])));
        let e = Rule::EncryptedSuffix("_secret".into());
        assert!(e.should_encrypt(&p(&["x_secret", "y"])));
        assert!(!e.should_encrypt(&p(&["x"])));
        let r = Rule::from_fields(None, None, None, Some("^(data|stringData)$".into())).unwrap();
        assert!(r.should_encrypt(&p(&["data", "k"])));
        assert!(!r.should_encrypt(&p(&["metadata", "name"])));
        let u = Rule::from_fields(None, None, Some("^public".into()), None).unwrap();
        assert!(!u.should_encrypt(&p(&["public_key"])));
        assert!(Rule::from_fields(Some("_u".into()), Some("_e".into()), None, None).is_err());
        assert!(Rule::from_fields(None, None, Some("(".into()), None).is_err());
    }

    #[test]
    fn go_forms_of_values() {
        assert_eq!(go_format_float(5.0), "5");
        assert_eq!(go_format_float(1.5), "1.5");
        assert_eq!(go_format_float(1e21), "1000000000000000000000");
        assert_eq!(go_format_float(1e-7), "0.0000001");
        assert_eq!(go_format_float(f64::INFINITY), "+Inf");
        assert_eq!(*Plain::Bool(true).mac_bytes(), b"True");
        assert_eq!(aad(&p(&["a", "b"])), "a:b:");
        assert_eq!(aad(&[]), ":");
        let b = Plain::from_decrypted("bool", Zeroizing::new(b"True".to_vec())).unwrap();
        assert!(matches!(b, Plain::Bool(true)));
        assert!(Plain::from_decrypted("int", Zeroizing::new(b"x".to_vec())).is_err());
        assert!(Plain::from_decrypted("weird", Zeroizing::new(b"x".to_vec())).is_err());
    }

    #[test]
    fn mac_only_encrypted_changes_the_mac() {
        let mut a = Hasher::new(false);
        a.add(&Plain::Str(Zeroizing::new("x".into())), true);
        let mut b = Hasher::new(true);
        b.add(&Plain::Str(Zeroizing::new("x".into())), true);
        b.add(&Plain::Str(Zeroizing::new("plain".into())), false);
        assert_ne!(*a.hex(), *b.hex());
    }
}
