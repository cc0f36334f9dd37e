//! SOPS-compatible secrets: decrypt, encrypt and re-key files the real `sops`
//! 3.x tool reads and writes, with age X25519 recipients.
//!
//! Secrets live in Git as SOPS files (`secrets/<env>.sops.yaml`): keys in
//! plaintext, values as `ENC[AES256_GCM,...]`, a data key wrapped to each age
//! recipient and a MAC over all values. This module exists so tidegate can
//! use those files without shelling out to `sops`, and so the plaintext never
//! leaves memory: decrypted values come back as [`Value::Sensitive`] leaves.
//!
//! The pieces, pure apart from [`identity`] and [`cli`] (the I/O edges);
//! the first four import one another in this order only, each from those
//! before it:
//! - [`enc`]: the `ENC[...]` value format and the typed plaintext it holds.
//! - [`crypto`]: AES-256-GCM with sops' 32-byte IV, and the age data key wrap.
//! - [`sops`]: the file format on bytes (YAML and JSON, metadata with its
//!   selection rule).
//! - [`mac`]: the walk that decrypts or encrypts a document's selected
//!   values, and the MAC, exactly as sops computes them.
//! - [`identity`]: where age identities come from (file, env, mounted dir).
//! - [`encrypt`]: writing files `sops -d` reads, `.sops.yaml` creation rules,
//!   `updatekeys`.
//! - [`cli`]: `tidegate secrets encrypt|decrypt|updatekeys`.
//!
//! # Guarantees
//! - The MAC is verified before any decrypted value is returned; a tampered
//!   file is an error, never garbage.
//! - No error message, log line or `Debug` output carries plaintext, the MAC
//!   or the data key.
//! - Features that would make a file only half-readable (Shamir key groups,
//!   comment-driven selection rules, files without age recipients) are refused.

pub mod cli;
pub mod crypto;
pub mod enc;
pub mod encrypt;
pub mod identity;
pub mod mac;
pub mod sops;

use std::fmt;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use zeroize::Zeroizing;

use crate::render::Secret;
use crate::sensitive::Sensitive;
use crate::value::Value;

pub use identity::{Identities, IdentityOptions};

/// Something about a secret file or its keys is wrong. No variant carries
/// plaintext.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a file (secret, identity, `.sops.yaml`) failed.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Writing an encrypted file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not well-formed YAML or JSON.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The document has a shape sops does not accept (not a map at the top,
    /// a non-string key, an unsupported tag, several documents).
    #[error("{file}{at}: {message}")]
    Shape {
        file: String,
        at: At,
        message: String,
    },
    /// The file has no `sops` metadata: it is not encrypted.
    #[error("{file}: no `sops` metadata section: the file is not SOPS-encrypted (encrypt it with `tidegate secrets encrypt {file} --in-place`)")]
    NotEncrypted { file: String },
    /// The file already has `sops` metadata and cannot be encrypted again.
    #[error("{file}: already SOPS-encrypted (it has a `sops` section); use `tidegate secrets updatekeys` to change recipients")]
    AlreadyEncrypted { file: String },
    /// The `sops` metadata section is malformed.
    #[error("{file}: sops metadata: {message}")]
    Metadata { file: String, message: String },
    /// The file uses a SOPS feature tidegate refuses rather than half-read.
    #[error("{file}: uses {feature}, which tidegate does not support: {why}")]
    Unsupported {
        file: String,
        feature: String,
        why: String,
    },
    /// The data key is wrapped only for key types other than age.
    #[error("{file}: the data key is encrypted only to {types}, not to any age recipient; add an age recipient with `sops updatekeys` (or `tidegate secrets updatekeys`) using a key that has access")]
    NoAgeRecipients { file: String, types: String },
    /// An identity source holds something that is not an age X25519 identity.
    #[error("{source_name}:{line}: not an age X25519 identity (expected a line starting with AGE-SECRET-KEY-1, `#` comments or blank lines)")]
    IdentitySyntax { source_name: String, line: usize },
    /// No identity source was configured or found.
    #[error("{file}: no age identity available to decrypt it (it is encrypted to {recipients}); pass --age-key-file FILE|DIR, set SOPS_AGE_KEY_FILE or SOPS_AGE_KEY, or mount a directory of *.agekey files")]
    NoIdentity { file: String, recipients: String },
    /// None of the loaded identities can unwrap the data key.
    #[error("{file}: none of the age identities loaded from {sources} (public keys {have}) can decrypt it; it is encrypted to {recipients}; use the private key of one of those recipients, or re-key the file with `tidegate secrets updatekeys`")]
    WrongIdentity {
        file: String,
        sources: String,
        have: String,
        recipients: String,
    },
    /// The armored age block holding the wrapped data key is malformed or truncated.
    #[error("{file}: the wrapped data key for recipient {recipient} is not a valid armored age file ({message}); the file is damaged: restore it from Git history")]
    Armor {
        file: String,
        recipient: String,
        message: String,
    },
    /// A value could not be decrypted (bad `ENC[...]` syntax, bad type, or
    /// authentication failure).
    #[error("{file}{at}: value at key path `{path}`: {message}")]
    Value {
        file: String,
        at: At,
        path: String,
        message: String,
    },
    /// The MAC stored in the file could not be read.
    #[error("{file}: the stored MAC cannot be decrypted ({message}); the file was modified or damaged: restore it from Git history")]
    MacUnreadable { file: String, message: String },
    /// The MAC computed over the values differs from the stored one.
    #[error("{file}: MAC mismatch: values, keys or their order were changed after encryption (tampered file); restore it from Git history or re-encrypt it from a trusted plaintext")]
    MacMismatch { file: String },
    /// A secret file key handed to the lookup is not loaded.
    #[error("no secret file `{file_key}` is loaded")]
    UnknownFile { file_key: String },
    /// A key path does not exist in a decrypted file.
    #[error("{file}: no secret at key path `{path}`")]
    MissingPath { file: String, path: String },
    /// A key path names a map or list, not a single value.
    #[error("{file}: key path `{path}` is a map or list, not a single secret value")]
    NotALeaf { file: String, path: String },
    /// `.sops.yaml` is malformed or has no rule for the file.
    #[error("{file}: {message}")]
    Config { file: String, message: String },
    /// An age recipient string is invalid.
    #[error("invalid age recipient `{recipient}`: {message}")]
    Recipient { recipient: String, message: String },
    /// Wrapping the data key with age failed.
    #[error("cannot wrap the data key with age: {message}")]
    Wrap { message: String },
}

/// `pub type Result<T, E = Error>` for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An optional `:line:column` suffix for messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct At(pub Option<(usize, usize)>);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((line, column)) => write!(f, ":{line}:{column}"),
            None => Ok(()),
        }
    }
}

/// Reads and decrypts one SOPS file with the given identities.
///
/// Errors: [`Error::Read`], any parse error, [`Error::NoIdentity`],
/// [`Error::WrongIdentity`], [`Error::Value`], [`Error::MacMismatch`], ...
pub fn decrypt_file(path: &Path, identities: &Identities) -> Result<Value> {
    let bytes = read(path)?;
    decrypt_bytes(&bytes, &path.display().to_string(), identities)
}

/// Decrypts SOPS file contents (`file` names it in messages and picks the
/// format: `.json` is JSON, anything else YAML). The MAC is verified before
/// the tree is returned.
pub fn decrypt_bytes(bytes: &[u8], file: &str, identities: &Identities) -> Result<Value> {
    let doc = sops::parse_encrypted(bytes, file)?;
    tracing::debug!(
        file,
        recipients = doc.meta.age.len(),
        identities = identities.recipients().len(),
        "decrypting SOPS file"
    );
    let key = crypto::unwrap_data_key(&doc.meta.age, file, identities)?;
    let plain = mac::decrypt_tree(&doc, &key, file)?;
    tracing::trace!(file, "MAC verified, values decrypted");
    Ok(mac::to_value(&plain))
}

pub(crate) fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })
}

/// The decrypted secret files of one run, each known by the key its
/// environment gives it (e.g. `staging` for `secrets/staging.sops.yaml`).
/// This is what the loader's `SecretLookup` reads from.
#[derive(Default)]
pub struct Decrypted {
    files: IndexMap<String, DecryptedFile>,
}

struct DecryptedFile {
    path: String,
    tree: Value,
}

impl fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.files.iter().map(|(k, v)| (k, &v.path)))
            .finish()
    }
}

impl Decrypted {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decrypts `path` and records it under `file_key`.
    pub fn load(&mut self, file_key: &str, path: &Path, identities: &Identities) -> Result<()> {
        let tree = decrypt_file(path, identities)?;
        self.insert(file_key, path.display().to_string(), tree);
        Ok(())
    }

    /// Records an already decrypted tree under `file_key`.
    pub fn insert(&mut self, file_key: &str, path: impl Into<String>, tree: Value) {
        self.files.insert(
            file_key.to_string(),
            DecryptedFile {
                path: path.into(),
                tree,
            },
        );
    }

    /// The decrypted tree of one file.
    pub fn tree(&self, file_key: &str) -> Option<&Value> {
        self.files.get(file_key).map(|f| &f.tree)
    }

    /// The file keys loaded, in load order.
    pub fn file_keys(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// The secret at `path` (map keys; a number indexes a list) in the file
    /// known as `file_key`, or `None` when the file, the path or a single
    /// value there is missing. Same signature as the loader's `SecretLookup`.
    pub fn lookup(&self, file_key: &str, path: &[&str]) -> Option<Sensitive> {
        self.get(file_key, path).ok()
    }

    /// Like [`Decrypted::lookup`] but says what is missing: an error naming
    /// the file and the key path.
    pub fn get(&self, file_key: &str, path: &[&str]) -> Result<Sensitive> {
        self.secret(file_key, path).map(|s| match s {
            Secret::Sensitive(s) => s,
            Secret::Plain(p) => Sensitive::from_string(p),
        })
    }

    /// Like [`Decrypted::get`], but tells a value the file encrypted
    /// ([`Secret::Sensitive`]) from one it keeps in plaintext
    /// ([`Secret::Plain`]: sops' `unencrypted_suffix`, a key outside
    /// `encrypted_regex`, ...), which rendering shows as it is.
    pub fn secret(&self, file_key: &str, path: &[&str]) -> Result<Secret> {
        let file = self.files.get(file_key).ok_or_else(|| Error::UnknownFile {
            file_key: file_key.to_string(),
        })?;
        let missing = || Error::MissingPath {
            file: file.path.clone(),
            path: path.join("."),
        };
        let node = path.iter().try_fold(&file.tree, |v, key| match v {
            Value::Map(m) => m.get(*key),
            Value::List(l) => key.parse::<usize>().ok().and_then(|i| l.get(i)),
            _ => None,
        });
        match node.ok_or_else(missing)? {
            Value::Null => Err(missing()),
            Value::Map(_) | Value::List(_) => Err(Error::NotALeaf {
                file: file.path.clone(),
                path: path.join("."),
            }),
            leaf => Ok(leaf_secret(leaf)),
        }
    }
}

/// A leaf of a decrypted tree: encrypted leaves are [`Value::Sensitive`]
/// ([`mac::to_value`]); plaintext ones keep their YAML spelling.
fn leaf_secret(leaf: &Value) -> Secret {
    match leaf {
        Value::Sensitive(s) => Secret::Sensitive(s.clone()),
        Value::String(s) => Secret::Plain(s.clone()),
        Value::Bool(b) => Secret::Plain(b.to_string()),
        Value::Int(i) => Secret::Plain(i.to_string()),
        Value::Float(f) => Secret::Plain(enc::go_format_float(*f)),
        other => Secret::Sensitive(Sensitive::from_string(format!("{other:?}"))),
    }
}

/// Whether a secret changed between two renderings, decided by keyed
/// fingerprints so that a diff never holds or shows a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretChange {
    Unchanged,
    Changed,
}

impl fmt::Display for SecretChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecretChange::Unchanged => "(sensitive value unchanged)",
            SecretChange::Changed => "(sensitive value changed)",
        })
    }
}

/// A random per-run key for fingerprinting secrets in diffs. It lives only
/// in memory, so a fingerprint cannot be used to guess a low-entropy secret
/// offline, and fingerprints from different runs do not compare.
pub struct FingerprintKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintKey(")?;
        f.write_str(crate::sensitive::MASK)?;
        f.write_str(")")
    }
}

impl FingerprintKey {
    /// A fresh random key.
    pub fn random() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, key.as_mut());
        Self(key)
    }

    /// The keyed fingerprint of one value.
    pub fn fingerprint(&self, value: &Sensitive) -> [u8; 32] {
        value.fingerprint(self.0.as_ref())
    }

    /// Compares two values by fingerprint (constant time), never by content.
    pub fn compare(&self, old: &Sensitive, new: &Sensitive) -> SecretChange {
        if crypto::ct_eq(&self.fingerprint(old), &self.fingerprint(new)) {
            SecretChange::Unchanged
        } else {
            SecretChange::Changed
        }
    }
}

/// Finds `.sops.yaml` in `start` or the closest ancestor directory.
pub fn find_config(start: &Path) -> Option<PathBuf> {
    let mut dir = if start.is_dir() {
        Some(start)
    } else {
        start.parent()
    };
    while let Some(d) = dir {
        let candidate = d.join(".sops.yaml");
        if candidate.is_file() {
            return Some(candidate);
        }
        dir = d.parent();
    }
    None
}

impl crate::render::SecretLookup for Decrypted {
    fn lookup(&self, file_key: &str, path: &[&str]) -> Option<Secret> {
        self.secret(file_key, path).ok()
    }
}

/// Decrypts the secret files environment `env` lists (`spec.secrets`), read
/// from the repository file set `files` (a Git snapshot or a folder), each
/// recorded under its repository path, the key rendering looks values up by.
/// Only the files of `env` are opened, so a dev run needs no prod key.
pub fn load_env(
    env: &crate::model::Environment,
    files: &crate::load::Files,
    identities: &Identities,
) -> Result<Decrypted> {
    let mut out = Decrypted::new();
    for (file, _origin) in &env.secret_files {
        let bytes = files.get(file).ok_or_else(|| Error::UnknownFile {
            file_key: file.clone(),
        })?;
        let tree = decrypt_bytes(bytes, file, identities)?;
        out.insert(file, file.clone(), tree);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Map;

    fn sample() -> Decrypted {
        let mut inner = Map::new();
        inner.insert(
            "password".into(),
            Value::Sensitive(Sensitive::from_string("pw".into())),
        );
        inner.insert("port".into(), Value::Int(5432));
        let mut top = Map::new();
        top.insert("db".into(), Value::Map(inner));
        top.insert("hosts".into(), Value::List(vec![Value::String("a".into())]));
        let mut d = Decrypted::new();
        d.insert("staging", "secrets/staging.sops.yaml", Value::Map(top));
        d
    }

    #[test]
    fn lookup_finds_leaves_and_list_items() {
        let d = sample();
        let pw = d.lookup("staging", &["db", "password"]).unwrap();
        assert_eq!(pw.expose_str(), Some("pw"));
        assert_eq!(
            d.lookup("staging", &["db", "port"]).unwrap().expose_str(),
            Some("5432")
        );
        assert_eq!(
            d.lookup("staging", &["hosts", "0"]).unwrap().expose_str(),
            Some("a")
        );
        assert!(d.lookup("prod", &["db", "password"]).is_none());
    }

    /// Issue 17: values the file keeps in plaintext (`*_unencrypted`) are
    /// plain to rendering, as docs/secrets.md says; encrypted ones stay
    /// sensitive.
    #[test]
    fn plaintext_leaves_are_plain_secrets() {
        let d = sample();
        assert!(matches!(
            d.secret("staging", &["db", "password"]),
            Ok(Secret::Sensitive(s)) if s.expose_str() == Some("pw")
        ));
        assert_eq!(
            d.secret("staging", &["db", "port"]).unwrap(),
            Secret::Plain("5432".into())
        );
        let r: &dyn crate::render::SecretLookup = &d;
        assert_eq!(
            r.lookup("staging", &["hosts", "0"]).map(Secret::into_value),
            Some(Value::String("a".into()))
        );
    }

    #[test]
    fn missing_paths_name_file_and_path() {
        let d = sample();
        let e = d.get("staging", &["db", "user"]).unwrap_err().to_string();
        assert_eq!(
            e,
            "secrets/staging.sops.yaml: no secret at key path `db.user`"
        );
        let e = d.get("staging", &["db"]).unwrap_err().to_string();
        assert!(e.contains("is a map or list"), "{e}");
        let e = d.get("prod", &["x"]).unwrap_err().to_string();
        assert_eq!(e, "no secret file `prod` is loaded");
    }

    #[test]
    fn fingerprints_compare_without_values() {
        let k = FingerprintKey::random();
        let a = Sensitive::from_string("a".into());
        let b = Sensitive::from_string("b".into());
        assert_eq!(k.compare(&a, &a.clone()), SecretChange::Unchanged);
        assert_eq!(k.compare(&a, &b), SecretChange::Changed);
        assert_eq!(
            SecretChange::Changed.to_string(),
            "(sensitive value changed)"
        );
        assert_ne!(
            k.fingerprint(&a),
            FingerprintKey::random().fingerprint(&a),
            "keys are per run"
        );
        assert!(!format!("{k:?}").contains('['));
    }
}
