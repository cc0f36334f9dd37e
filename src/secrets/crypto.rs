//! The cryptography sops uses: AES-256-GCM with a 32-byte IV for values and
//! the MAC (`aes/cipher.go`), and the 32-byte data key wrapped in an armored
//! age file per X25519 recipient (`age/keysource.go`).
//!
//! The leaf crypto core of `secrets`: it knows the value format
//! ([`super::enc`]) and the loaded identities, never the document model
//! ([`super::sops`]) or the MAC walk ([`super::mac`]), which both build on
//! it. Callers hand it the metadata fields it needs (the MAC string and
//! `lastmodified`, the wrapped keys).

use std::io::{Read, Write};

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce, Tag};
use age::armor::{ArmoredReader, ArmoredWriter, Format as ArmorFormat};
use rand::RngCore;
use zeroize::Zeroizing;

use super::enc::{format_enc, parse_enc, EncValue, Plain};
use super::identity::Identities;
use super::{Error, Result};

/// AES-256-GCM with sops' 32-byte nonce.
type SopsGcm = AesGcm<Aes256, U32>;

/// The size of sops' IV.
pub const IV_LEN: usize = 32;

/// The 32-byte key that encrypts every value of one file.
pub type DataKey = Zeroizing<[u8; 32]>;

/// One wrapped copy of the data key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgeKey {
    pub recipient: String,
    /// Armored age file holding the 32-byte data key.
    pub enc: String,
}

/// A fresh random data key.
pub fn new_data_key() -> DataKey {
    let mut k = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(k.as_mut());
    k
}

/// Decrypts one value; the error says why without showing anything secret.
pub fn decrypt_value(
    v: &EncValue,
    key: &DataKey,
    aad: &str,
) -> std::result::Result<Zeroizing<Vec<u8>>, String> {
    if v.iv.len() != IV_LEN {
        return Err(format!("IV is {} bytes; sops writes {IV_LEN}", v.iv.len()));
    }
    if v.tag.len() != 16 {
        return Err(format!("tag is {} bytes; AES-GCM uses 16", v.tag.len()));
    }
    let cipher = SopsGcm::new_from_slice(key.as_ref()).expect("32-byte key");
    let mut buf = Zeroizing::new(v.data.clone());
    cipher
        .decrypt_in_place_detached(
            Nonce::<U32>::from_slice(&v.iv),
            aad.as_bytes(),
            &mut buf,
            Tag::from_slice(&v.tag),
        )
        .map_err(|_| {
            "authentication failed: the ciphertext, its key path or the data key do not match (tampered or moved value)".to_string()
        })?;
    Ok(buf)
}

/// Encrypts bytes under `aad` with a fresh IV; returns the `ENC[...]` string.
fn seal(kind: &str, plaintext: &[u8], key: &DataKey, aad: &str) -> String {
    let mut iv = [0u8; IV_LEN];
    rand::rngs::OsRng.fill_bytes(&mut iv);
    let cipher = SopsGcm::new_from_slice(key.as_ref()).expect("32-byte key");
    let mut buf = plaintext.to_vec();
    let tag = cipher
        .encrypt_in_place_detached(Nonce::<U32>::from_slice(&iv), aad.as_bytes(), &mut buf)
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    format_enc(&EncValue {
        data: buf,
        iv: iv.to_vec(),
        tag: tag.to_vec(),
        kind: kind.to_string(),
    })
}

/// sops' `Cipher.Encrypt`: an empty string stays empty, everything else
/// becomes `ENC[...]` with its type tag.
pub fn encrypt_value(plain: &Plain, key: &DataKey, aad: &str) -> Result<String> {
    if matches!(plain, Plain::Str(s) if s.is_empty()) {
        return Ok(String::new());
    }
    let (kind, bytes) = plain.enc_parts();
    Ok(seal(kind, &bytes, key, aad))
}

/// Decrypts the stored MAC `mac` (the metadata's `ENC[...]`; AAD: the
/// metadata's `lastmodified` in Go's RFC 3339 form).
pub fn decrypt_mac(
    mac: &str,
    lastmodified: &str,
    key: &DataKey,
) -> std::result::Result<Zeroizing<String>, String> {
    if mac.is_empty() {
        return Err("the file has no MAC".into());
    }
    let enc = parse_enc(mac)?;
    let aad = go_rfc3339(lastmodified)
        .ok_or_else(|| "`lastmodified` is not an RFC 3339 timestamp".to_string())?;
    let bytes = decrypt_value(&enc, key, &aad)?;
    String::from_utf8(bytes.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| "the MAC is not text".into())
}

/// Encrypts a MAC for `lastmodified`.
pub fn encrypt_mac(mac: &str, key: &DataKey, lastmodified: &str) -> String {
    seal("str", mac.as_bytes(), key, lastmodified)
}

/// Re-formats an RFC 3339 timestamp the way Go's `time.Parse` then
/// `Format(time.RFC3339)` does: fractional seconds dropped, a zero offset
/// written `Z`.
pub fn go_rfc3339(s: &str) -> Option<String> {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
            .expect("valid regex")
    });
    let c = re.captures(s)?;
    let zone = match &c[3] {
        "+00:00" | "-00:00" => "Z",
        z => z,
    };
    Some(format!("{}{zone}", &c[1]))
}

/// Now, as sops writes `lastmodified` (UTC, seconds, `Z`).
pub fn now_rfc3339() -> String {
    format_utc(k8s_openapi::jiff::Timestamp::now().as_second())
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn format_utc(secs: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Constant-time equality of two byte strings (the length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses an age X25519 recipient (`age1...`).
pub fn parse_recipient(r: &str) -> Result<age::x25519::Recipient> {
    r.trim().parse().map_err(|e: &str| Error::Recipient {
        recipient: r.to_string(),
        message: format!("{e} (tidegate supports age X25519 recipients, `age1...`)"),
    })
}

/// Wraps the data key for one recipient as sops does: an armored age file
/// holding the 32 raw key bytes.
pub fn wrap_data_key(key: &DataKey, recipient: &str) -> Result<String> {
    let r = parse_recipient(recipient)?;
    let wrap_err = |e: &dyn std::fmt::Display| Error::Wrap {
        message: e.to_string(),
    };
    let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
        .map_err(|e| wrap_err(&e))?;
    let mut out = Vec::new();
    let armor =
        ArmoredWriter::wrap_output(&mut out, ArmorFormat::AsciiArmor).map_err(|e| wrap_err(&e))?;
    let mut w = enc.wrap_output(armor).map_err(|e| wrap_err(&e))?;
    w.write_all(key.as_ref()).map_err(|e| wrap_err(&e))?;
    w.finish()
        .and_then(|a| a.finish())
        .map_err(|e| wrap_err(&e))?;
    String::from_utf8(out).map_err(|e| wrap_err(&e))
}

/// Unwraps the data key from any of the file's wrapped copies `age` (the
/// metadata's `age` list) with any loaded identity.
///
/// Errors: [`Error::NoIdentity`] (nothing loaded), [`Error::Armor`] (an
/// entry is damaged and no other entry worked), [`Error::WrongIdentity`].
pub fn unwrap_data_key(age: &[AgeKey], file: &str, ids: &Identities) -> Result<DataKey> {
    let recipients = age
        .iter()
        .map(|k| k.recipient.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if ids.is_empty() {
        return Err(Error::NoIdentity {
            file: file.to_string(),
            recipients,
        });
    }
    let mut damaged = None;
    for entry in age {
        tracing::trace!(file, recipient = %entry.recipient, "trying to unwrap the data key");
        match try_unwrap(&entry.enc, ids) {
            Ok(Some(key)) => return Ok(key),
            Ok(None) => {}
            Err(message) => {
                damaged.get_or_insert(Error::Armor {
                    file: file.to_string(),
                    recipient: entry.recipient.clone(),
                    message,
                });
            }
        }
    }
    Err(damaged.unwrap_or_else(|| Error::WrongIdentity {
        file: file.to_string(),
        sources: ids.sources().join(", "),
        have: ids.recipients().join(", "),
        recipients,
    }))
}

/// `Ok(None)`: no identity matches this entry; `Err`: the entry is damaged.
fn try_unwrap(enc: &str, ids: &Identities) -> std::result::Result<Option<DataKey>, String> {
    let decryptor = age::Decryptor::new(ArmoredReader::new(enc.as_bytes()))
        .map_err(|e| describe_age_error(&e))?;
    let mut reader = match decryptor.decrypt(ids.as_age()) {
        Ok(r) => r,
        Err(age::DecryptError::NoMatchingKeys) => return Ok(None),
        Err(e) => return Err(describe_age_error(&e)),
    };
    let mut buf = Zeroizing::new(Vec::new());
    reader
        .read_to_end(&mut buf)
        .map_err(|e| format!("truncated or corrupt payload: {e}"))?;
    let key: [u8; 32] = buf
        .as_slice()
        .try_into()
        .map_err(|_| format!("the data key is {} bytes, not 32", buf.len()))?;
    Ok(Some(Zeroizing::new(key)))
}

fn describe_age_error(e: &age::DecryptError) -> String {
    match e {
        age::DecryptError::Io(io) => format!("armor or header unreadable: {io}"),
        age::DecryptError::InvalidHeader => "invalid age header".into(),
        age::DecryptError::InvalidMac => "age header MAC invalid".into(),
        age::DecryptError::UnknownFormat => "unknown age format".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    #[test]
    fn values_round_trip_and_bind_their_path() {
        let key = new_data_key();
        let s = encrypt_value(&Plain::Str(Zeroizing::new("hunter2".into())), &key, "a:b:").unwrap();
        assert!(s.starts_with("ENC[AES256_GCM,data:") && s.ends_with(",type:str]"));
        let v = parse_enc(&s).unwrap();
        assert_eq!(v.iv.len(), 32);
        assert_eq!(*decrypt_value(&v, &key, "a:b:").unwrap(), b"hunter2");
        assert!(decrypt_value(&v, &key, "a:c:")
            .unwrap_err()
            .contains("authentication"));
        assert_eq!(
            encrypt_value(&Plain::Str(Zeroizing::new(String::new())), &key, ":").unwrap(),
            ""
        );
    }

    #[test]
    fn timestamps_in_go_form() {
        assert_eq!(
            go_rfc3339("2024-09-16T19:00:22Z").unwrap(),
            "2024-09-16T19:00:22Z"
        );
        assert_eq!(
            go_rfc3339("2024-09-16T19:00:22.123+00:00").unwrap(),
            "2024-09-16T19:00:22Z"
        );
        assert_eq!(
            go_rfc3339("2024-09-16T19:00:22+02:00").unwrap(),
            "2024-09-16T19:00:22+02:00"
        );
        assert!(go_rfc3339("yesterday").is_none());
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_731_000_000), "2024-11-07T17:20:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn data_key_wraps_to_age_and_back() {
        let id = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let key = new_data_key();
        let enc = wrap_data_key(&key, &id.to_public().to_string()).unwrap();
        assert!(enc.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n"));
        let meta = vec![AgeKey {
            recipient: id.to_public().to_string(),
            enc: enc.clone(),
        }];
        let ids = Identities::parse(id.to_string().expose_secret(), "test").unwrap();
        assert_eq!(*unwrap_data_key(&meta, "f", &ids).unwrap(), *key);
        let wrong = Identities::parse(other.to_string().expose_secret(), "other").unwrap();
        let e = unwrap_data_key(&meta, "f", &wrong).unwrap_err().to_string();
        assert!(
            e.contains(&id.to_public().to_string()) && e.contains("other"),
            "{e}"
        );
        let mut truncated = meta.clone();
        truncated[0].enc = enc[..enc.len() / 2].to_string();
        let e = unwrap_data_key(&truncated, "f", &ids).unwrap_err();
        assert!(matches!(e, Error::Armor { .. }), "{e}");
        let e = unwrap_data_key(&meta, "f", &Identities::default()).unwrap_err();
        assert!(matches!(e, Error::NoIdentity { .. }), "{e}");
        assert!(parse_recipient("age1nope").is_err());
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
