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
use crate::render::SecretLookup;
use crate::secrets::sops::{self, Kind, Node};
use crate::sensitive::Sensitive;

/// A [`SecretLookup`] that answers each secret with its ciphertext.
#[derive(Default)]
pub struct CiphertextSecrets {
    files: HashMap<String, Node>,
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
                    .map(|doc| (k.clone(), doc.data))
            })
            .collect();
        CiphertextSecrets { files }
    }
}

impl SecretLookup for CiphertextSecrets {
    fn lookup(&self, file_key: &str, path: &[&str]) -> Option<Sensitive> {
        let mut node = self.files.get(file_key)?;
        for key in path {
            node = match &node.kind {
                Kind::Map(_) => node.get(key)?,
                Kind::List(items) => items.get(key.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        match &node.kind {
            Kind::Str(s) => Some(Sensitive::from_string(s.to_string())),
            Kind::Int(i) => Some(Sensitive::from_string(i.to_string())),
            Kind::Bool(b) => Some(Sensitive::from_string(b.to_string())),
            Kind::Float(f) => Some(Sensitive::from_string(f.to_string())),
            _ => None,
        }
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
        assert!(dev.expose_str().unwrap().starts_with("ENC["));
        assert_ne!(dev, prod);
        assert!(s.lookup("secrets/dev.sops.yaml", &["db", "nope"]).is_none());
        assert!(s.lookup("secrets/none.sops.yaml", &["db"]).is_none());
    }
}
