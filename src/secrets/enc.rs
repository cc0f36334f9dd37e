//! The sops value format, at the bottom of `secrets`: one
//! `ENC[AES256_GCM,data:...,iv:...,tag:...,type:...]` value ([`EncValue`],
//! [`parse_enc`], [`format_enc`]) and the typed plaintext its `type:` names
//! ([`Plain`]), with the Go forms sops encrypts and MACs (`aes/cipher.go`,
//! `sops.ToBytes`, `strconv.FormatFloat`, `strconv.ParseBool`).
//!
//! A leaf: pure, no crypto, and nothing from the rest of `secrets`.
//! [`super::crypto`] seals and opens these values, [`super::sops`] carries
//! them in documents, [`super::mac`] walks documents over both.

use regex::Regex;
use zeroize::Zeroizing;

use crate::sensitive::Sensitive;

/// One parsed `ENC[AES256_GCM,data:...,iv:...,tag:...,type:...]` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncValue {
    pub data: Vec<u8>,
    pub iv: Vec<u8>,
    pub tag: Vec<u8>,
    pub kind: String,
}

fn enc_re() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]").expect("valid regex")
    })
}

/// Parses the sops value format. The error names the part that is wrong,
/// never the value.
pub fn parse_enc(s: &str) -> std::result::Result<EncValue, String> {
    use base64::Engine;
    let c = enc_re().captures(s).ok_or_else(|| {
        "not in sops' ENC[AES256_GCM,data:...,iv:...,tag:...,type:...] format (was it edited by hand?)"
            .to_string()
    })?;
    let b64 = |i: usize, what: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(&c[i])
            .map_err(|_| format!("the {what} part is not valid base64"))
    };
    Ok(EncValue {
        data: b64(1, "data")?,
        iv: b64(2, "iv")?,
        tag: b64(3, "tag")?,
        kind: c[4].to_string(),
    })
}

/// Formats a value the way sops writes it.
pub fn format_enc(v: &EncValue) -> String {
    use base64::Engine;
    let e = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    format!(
        "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{}]",
        e(&v.data),
        e(&v.iv),
        e(&v.tag),
        v.kind
    )
}

/// A leaf's plaintext with its sops type.
#[derive(Clone, Debug)]
pub enum Plain {
    Str(Zeroizing<String>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Bytes(Zeroizing<Vec<u8>>),
}

impl Plain {
    /// Go's `sops.ToBytes`: the bytes the MAC covers.
    pub fn mac_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(match self {
            Plain::Str(s) => s.as_bytes().to_vec(),
            Plain::Int(i) => i.to_string().into_bytes(),
            Plain::Float(f) => go_format_float(*f).into_bytes(),
            Plain::Bool(true) => b"True".to_vec(),
            Plain::Bool(false) => b"False".to_vec(),
            Plain::Bytes(b) => b.to_vec(),
        })
    }

    /// The type tag and bytes `aes.Cipher.Encrypt` encrypts.
    pub fn enc_parts(&self) -> (&'static str, Zeroizing<Vec<u8>>) {
        let kind = match self {
            Plain::Str(_) => "str",
            Plain::Int(_) => "int",
            Plain::Float(_) => "float",
            Plain::Bool(_) => "bool",
            Plain::Bytes(_) => "bytes",
        };
        (kind, self.mac_bytes())
    }

    /// `aes.Cipher.Decrypt`'s conversion of decrypted bytes by type tag.
    pub fn from_decrypted(
        kind: &str,
        bytes: Zeroizing<Vec<u8>>,
    ) -> std::result::Result<Plain, String> {
        let text =
            || std::str::from_utf8(&bytes).map_err(|_| format!("a `{kind}` value is not UTF-8"));
        let bad = || format!("the decrypted value is not a valid `{kind}`");
        Ok(match kind {
            "str" => Plain::Str(Zeroizing::new(text()?.to_string())),
            "int" | "int64" => Plain::Int(text()?.parse().map_err(|_| bad())?),
            "float" => Plain::Float(text()?.parse().map_err(|_| bad())?),
            "bool" => Plain::Bool(go_parse_bool(text()?).ok_or_else(bad)?),
            "bytes" => Plain::Bytes(bytes),
            other => return Err(format!("unknown value type `{other}`")),
        })
    }

    /// The secret as tidegate hands it on: strings as they are, other types
    /// in their YAML spelling (`true`, `42`, `1.5`).
    pub fn to_sensitive(&self) -> Sensitive {
        match self {
            Plain::Str(s) => Sensitive::new(s.as_bytes().to_vec()),
            Plain::Bytes(b) => Sensitive::new(b.to_vec()),
            Plain::Bool(b) => Sensitive::from_string(b.to_string()),
            Plain::Int(i) => Sensitive::from_string(i.to_string()),
            Plain::Float(f) => Sensitive::from_string(go_format_float(*f)),
        }
    }
}

/// Go's `strconv.ParseBool`.
fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: shortest round-trip digits,
/// never an exponent.
pub fn go_format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f == f64::INFINITY {
        "+Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enc_round_trips() {
        let v = EncValue {
            data: b"abc".to_vec(),
            iv: vec![1; 32],
            tag: vec![2; 16],
            kind: "str".into(),
        };
        assert_eq!(parse_enc(&format_enc(&v)).unwrap(), v);
        assert!(
            parse_enc("ENC[AES256_GCM,data:!!,iv:AA==,tag:AA==,type:str]")
                .unwrap_err()
                .contains("data")
        );
        assert!(parse_enc("hello").is_err());
    }
}
