//! The plaintext key structure of SOPS files.
//!
//! SOPS encrypts values, not keys, so which secrets a file holds can be
//! checked without any key: `${secret.db.password}` is valid when some
//! secret file of the environment has the key path `db` → `password`. The
//! top-level `sops` metadata key is not a secret; `ENC[...]` leaves are
//! opaque. Leaf values never reach a message.

use std::collections::BTreeMap;

use crate::diag::Diagnostics;
use crate::model::{Environment, SecretTree};

use super::yaml::{Node, NodeKind};
use super::Files;

/// The key structure of every secret file the environments list.
pub fn read_referenced(
    files: &Files,
    envs: &[Environment],
    diags: &mut Diagnostics,
) -> BTreeMap<String, SecretTree> {
    let mut out = BTreeMap::new();
    for env in envs {
        for (path, origin) in &env.secret_files {
            if out.contains_key(path) {
                continue;
            }
            let Some(bytes) = files.get(path) else {
                diags.error(
                    origin,
                    format!("secret file {path} not found"),
                    "create it with `sops --encrypt` (see .sops.yaml) or fix the path",
                );
                continue;
            };
            if let Some(tree) = structure(path, bytes, diags) {
                out.insert(path.clone(), tree);
            }
        }
    }
    out
}

/// The key structure of one SOPS file.
pub fn structure(path: &str, bytes: &[u8], diags: &mut Diagnostics) -> Option<SecretTree> {
    let text = super::utf8(path, bytes, diags)?;
    let doc = super::one_document(path, &text, diags)?;
    let NodeKind::Map(entries) = &doc.kind else {
        diags.error(
            &doc.origin,
            "a SOPS file must hold a map of keys",
            "encrypt a YAML map with sops",
        );
        return None;
    };
    if doc.get("sops").is_none() {
        diags.error(
            &doc.origin,
            format!("{path} is not encrypted (no `sops` metadata key)"),
            format!(
                "encrypt it: `sops --encrypt --in-place {path}`; never commit plaintext secrets"
            ),
        );
        return None;
    }
    let keys = entries
        .iter()
        .filter(|(k, _)| k.name != "sops")
        .map(|(k, v)| (k.name.clone(), tree(v)))
        .collect();
    Some(SecretTree::Map(keys))
}

fn tree(n: &Node) -> SecretTree {
    match &n.kind {
        NodeKind::Map(entries) => SecretTree::Map(
            entries
                .iter()
                .map(|(k, v)| (k.name.clone(), tree(v)))
                .collect(),
        ),
        _ => SecretTree::Leaf,
    }
}

/// Parses a file's key structure alone (for tools and tests).
pub fn parse_structure(path: &str, text: &str) -> Result<SecretTree, Diagnostics> {
    let mut d = Diagnostics::default();
    match structure(path, text.as_bytes(), &mut d) {
        Some(t) if d.is_empty() => Ok(t),
        _ => Err(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_without_decrypting() {
        let t = parse_structure(
            "s.yaml",
            "db:\n  password: ENC[AES256_GCM,data:xx,type:str]\nsops:\n  mac: ENC[x]\n",
        )
        .unwrap();
        assert!(t.leaf(&["db", "password"]));
        assert!(t.get(&["sops"]).is_none());
    }

    #[test]
    fn plaintext_files_are_rejected() {
        let d = parse_structure("s.yaml", "db:\n  password: hunter2\n").unwrap_err();
        let msg = &d.iter().next().unwrap().message;
        assert!(msg.contains("not encrypted"), "{msg}");
        assert!(!msg.contains("hunter2"));
    }
}
