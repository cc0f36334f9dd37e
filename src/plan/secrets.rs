//! Secrets for a preview made without a key (`--base/--head` on a pull
//! request from a fork, `--offline`).
//!
//! Without a key a secret's value cannot be known, but whether it changed
//! between two revisions can be judged from its ciphertext: SOPS stores
//! each value as `ENC[AES256_GCM,data:...,iv:...,tag:...]`, so an
//! unchanged ciphertext is an unchanged value. A re-encrypted file (new
//! IVs) shows its values as changed: the preview errs towards showing a
//! change. The ciphertext is wrapped as [`Sensitive`] so that it is
//! compared by fingerprint and never printed either.

use std::collections::HashMap;

use crate::load::Files;
use crate::render::{Secret, SecretLookup};
use crate::secrets::sops::{self, Kind, SopsDoc};
use crate::sensitive::Sensitive;

/// A [`SecretLookup`] that answers each encrypted secret with its
/// ciphertext, and each value the file keeps in plaintext (sops'
/// `_unencrypted` suffix and the like) with that value, as a decrypted
/// file would.
#[derive(Default)]
pub struct CiphertextSecrets {
    files: HashMap<String, SopsDoc>,
}

impl CiphertextSecrets {
    /// Parses every SOPS file of `files` under `secrets/` (and any other
    /// file a lookup names that parses as SOPS). Files that do not parse
    /// are skipped: the loader already reported them.
    pub fn new(files: &Files) -> Self {
        let files = files
            .iter()
            .filter(|(k, _)| k.contains(".sops."))
            .filter_map(|(k, bytes)| {
                sops::parse_encrypted(bytes, k)
                    .ok()
                    .map(|doc| (k.clone(), doc))
            })
            .collect();
        CiphertextSecrets { files }
    }
}

impl SecretLookup for CiphertextSecrets {
    fn lookup(&self, file_key: &str, path: &[&str]) -> Option<Secret> {
        let doc = self.files.get(file_key)?;
        let mut node = &doc.data;
        // The map keys on the way: what sops' selection rule looks at.
        let mut keys = Vec::new();
        for key in path {
            node = match &node.kind {
                Kind::Map(_) => {
                    keys.push(key.to_string());
                    node.get(key)?
                }
                Kind::List(items) => items.get(key.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        let text = match &node.kind {
            Kind::Str(s) => s.to_string(),
            Kind::Int(i) => i.to_string(),
            Kind::Bool(b) => b.to_string(),
            Kind::Float(f) => crate::secrets::enc::go_format_float(*f),
            _ => return None,
        };
        Some(if doc.meta.rule.should_encrypt(&keys) {
            Secret::Sensitive(Sensitive::from_string(text))
        } else {
            Secret::Plain(text)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_secrets_answer_with_distinct_ciphertexts() {
        let files = crate::load::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
            .expect("the bundled example reads");
        let s = CiphertextSecrets::new(&files);
        let dev = s
            .lookup("secrets/dev.sops.yaml", &["db", "password"])
            .unwrap();
        let prod = s
            .lookup("secrets/prod.sops.yaml", &["db", "password"])
            .unwrap();
        assert!(
            matches!(&dev, Secret::Sensitive(s) if s.expose_str().unwrap().starts_with("ENC[")),
            "{dev:?}"
        );
        assert_ne!(dev, prod);
        assert!(s.lookup("secrets/dev.sops.yaml", &["db", "nope"]).is_none());
        assert!(s.lookup("secrets/none.sops.yaml", &["db"]).is_none());
    }

    /// Issue 17: without a key, a value the file keeps in plaintext
    /// (`_unencrypted`, or outside `encrypted_regex`) is answered as it is,
    /// like the decrypted file answers it, so a plan shows it the same way
    /// with or without the key.
    #[test]
    fn plaintext_values_answer_as_themselves() {
        use crate::secrets::encrypt::{encrypt, CreationRule};
        use crate::secrets::sops::Rule;
        let recipient = age::x25519::Identity::generate().to_public().to_string();
        let rule = |r: Rule| CreationRule {
            path_regex: None,
            age: vec![recipient.clone()],
            rule: r,
            mac_only_encrypted: false,
        };
        let plain = "db:\n  password: hunter2\n  user_unencrypted: app\n  port_unencrypted: 5432\n";
        let a = encrypt(
            plain.as_bytes(),
            "secrets/a.sops.yaml",
            &rule(Rule::default()),
        )
        .unwrap();
        let b = encrypt(
            b"db:\n  password: hunter2\n  user: app\n",
            "secrets/b.sops.yaml",
            &rule(Rule::EncryptedRegex(
                regex::Regex::new("^password$").unwrap(),
            )),
        )
        .unwrap();
        let files: Files = [
            ("secrets/a.sops.yaml".to_string(), a.as_bytes().to_vec()),
            ("secrets/b.sops.yaml".to_string(), b.as_bytes().to_vec()),
        ]
        .into_iter()
        .collect();
        let s = CiphertextSecrets::new(&files);
        let get = |f: &str, p: &[&str]| s.lookup(f, p).unwrap();
        assert_eq!(
            get("secrets/a.sops.yaml", &["db", "user_unencrypted"]),
            Secret::Plain("app".into())
        );
        assert_eq!(
            get("secrets/a.sops.yaml", &["db", "port_unencrypted"]),
            Secret::Plain("5432".into())
        );
        assert!(matches!(
            get("secrets/a.sops.yaml", &["db", "password"]),
            Secret::Sensitive(_)
        ));
        assert_eq!(
            get("secrets/b.sops.yaml", &["db", "user"]),
            Secret::Plain("app".into())
        );
        assert!(matches!(
            get("secrets/b.sops.yaml", &["db", "password"]),
            Secret::Sensitive(_)
        ));
    }
}
