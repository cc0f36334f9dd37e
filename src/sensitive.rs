//! A value that must never be shown.
//!
//! Secret plaintext travels from decryption to the provider call inside
//! [`Sensitive`]. Its `Debug`, `Display` and `Serialize` all print
//! `(sensitive)`; the bytes are zeroized on drop; equality between two
//! sensitive values is decided by comparing keyed fingerprints, so a diff can say
//! "changed" or "unchanged" without ever holding both plaintexts side by side
//! in output.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// What every masked rendering of a secret prints.
pub const MASK: &str = "(sensitive)";

/// Secret plaintext. Cloning copies the bytes; every copy is zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Sensitive {
    bytes: Vec<u8>,
}

impl Sensitive {
    /// Wraps plaintext. Take ownership so no unzeroized copy stays behind.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self { bytes }
    }

    /// Wraps a UTF-8 plaintext.
    pub fn from_string(s: String) -> Self {
        Self::new(s.into_bytes())
    }

    /// The plaintext, for the one place that must hand it to a provider call.
    pub fn expose(&self) -> &[u8] {
        &self.bytes
    }

    /// The plaintext as UTF-8, if it is.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }

    /// Equal bytes, compared in constant time (for equal lengths).
    pub fn ct_eq(&self, other: &Sensitive) -> bool {
        use subtle::ConstantTimeEq;
        self.expose().len() == other.expose().len()
            && bool::from(self.expose().ct_eq(other.expose()))
    }

    /// A keyed fingerprint (HMAC-SHA-256) that can be stored or compared
    /// without revealing the value. The key must itself be secret (e.g.
    /// derived from the data key of the SOPS file), otherwise a low-entropy
    /// secret could be guessed from its fingerprint.
    pub fn fingerprint(&self, key: &[u8]) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(&self.bytes);
        mac.finalize().into_bytes().into()
    }

    /// The fingerprint as lowercase hex, for annotations and tags.
    pub fn fingerprint_hex(&self, key: &[u8]) -> String {
        self.fingerprint(key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl serde::Serialize for Sensitive {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_plaintext() {
        let s = Sensitive::from_string("hunter2".into());
        assert_eq!(format!("{s}"), MASK);
        assert_eq!(format!("{s:?}"), MASK);
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"(sensitive)\"");
        assert_eq!(s.expose_str(), Some("hunter2"));
    }

    #[test]
    fn fingerprints_depend_on_key_and_value() {
        let a = Sensitive::from_string("a".into());
        let b = Sensitive::from_string("b".into());
        assert_ne!(a.fingerprint(b"k"), b.fingerprint(b"k"));
        assert_ne!(a.fingerprint(b"k1"), a.fingerprint(b"k2"));
        assert_eq!(a.fingerprint(b"k"), a.clone().fingerprint(b"k"));
    }
}
