//! Writing SOPS files the real `sops -d` decrypts, the repo's `.sops.yaml`
//! creation rules that say to whom, and `updatekeys`.
//!
//! # Expected flow
//! `encrypt`: a fresh data key, each selected leaf sealed under its key path,
//! the key wrapped to every age recipient of the first creation rule whose
//! `path_regex` matches the file's path relative to `.sops.yaml`, the MAC
//! sealed under `lastmodified`. `update_keys`: the same data key re-wrapped
//! for the rule's current recipients; values, `lastmodified` and MAC stay
//! byte-identical.
//!
//! # Caveats
//! Comments are not carried over (sops would encrypt them; tidegate does not
//! read them), so a file re-keyed here loses its comments.

use std::path::Path;

use regex::Regex;

use super::crypto::{self, AgeKey, DataKey};
use super::mac;
use super::sops::{self, Format, Kind, Metadata, Node, Rule, SopsDoc};
use super::{Error, Identities, Result};

/// The sops version tidegate writes files compatible with.
pub const SOPS_VERSION: &str = "3.11.0";

/// What a creation rule says about new files.
#[derive(Clone, Debug)]
pub struct CreationRule {
    /// `None` matches every file.
    pub path_regex: Option<Regex>,
    pub age: Vec<String>,
    pub rule: Rule,
    pub mac_only_encrypted: bool,
}

/// The creation rules of a `.sops.yaml`.
#[derive(Clone, Debug)]
pub struct Config {
    pub file: String,
    pub rules: Vec<CreationRule>,
}

impl Config {
    /// Parses `.sops.yaml` contents (`file` names it in messages).
    pub fn parse(bytes: &[u8], file: &str) -> Result<Config> {
        let doc = sops::parse_document(bytes, &yaml_name(file))?;
        let bad = |message: String| Error::Config {
            file: file.to_string(),
            message,
        };
        let Some(Node {
            kind: Kind::List(items),
            ..
        }) = doc.get("creation_rules")
        else {
            return Err(bad("no `creation_rules` list".into()));
        };
        let rules = items
            .iter()
            .enumerate()
            .map(|(i, item)| parse_rule(item, i).map_err(&bad))
            .collect::<Result<_>>()?;
        Ok(Config {
            file: file.to_string(),
            rules,
        })
    }

    /// Reads `.sops.yaml`.
    pub fn load(path: &Path) -> Result<Config> {
        let bytes = super::read(path)?;
        Config::parse(&bytes, &path.display().to_string())
    }

    /// The first rule whose `path_regex` matches `relative` (a path relative
    /// to the directory of `.sops.yaml`, `/`-separated).
    pub fn rule_for(&self, relative: &str) -> Result<&CreationRule> {
        self.rules
            .iter()
            .find(|r| r.path_regex.as_ref().is_none_or(|re| re.is_match(relative)))
            .ok_or_else(|| Error::Config {
                file: self.file.clone(),
                message: format!(
                    "no creation rule's path_regex matches `{relative}`; add a rule with its age recipients"
                ),
            })
    }
}

fn yaml_name(file: &str) -> String {
    if file.ends_with(".json") {
        format!("{file}.yaml")
    } else {
        file.to_string()
    }
}

fn parse_rule(item: &Node, i: usize) -> std::result::Result<CreationRule, String> {
    let text = |k: &str| item.get(k).and_then(Node::as_str).map(str::to_string);
    if item.get("key_groups").is_some() || item.get("shamir_threshold").is_some() {
        return Err(format!(
            "creation_rules[{i}] uses key_groups/shamir_threshold, which tidegate does not support; list age recipients in `age`"
        ));
    }
    let age: Vec<String> = match item.get("age").map(|n| &n.kind) {
        Some(Kind::Str(s)) => s
            .split(',')
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect(),
        Some(Kind::List(l)) => l
            .iter()
            .filter_map(Node::as_str)
            .map(|r| r.trim().to_string())
            .collect(),
        _ => vec![],
    };
    if age.is_empty() {
        return Err(format!("creation_rules[{i}] has no `age` recipients"));
    }
    for r in &age {
        crypto::parse_recipient(r).map_err(|e| format!("creation_rules[{i}]: {e}"))?;
    }
    let path_regex = text("path_regex")
        .map(|r| Regex::new(&r).map_err(|e| format!("creation_rules[{i}].path_regex: {e}")))
        .transpose()?;
    let rule = Rule::from_fields(
        text("unencrypted_suffix"),
        text("encrypted_suffix"),
        text("unencrypted_regex"),
        text("encrypted_regex"),
    )
    .map_err(|e| format!("creation_rules[{i}]: {e}"))?;
    let mac_only_encrypted = matches!(
        item.get("mac_only_encrypted").map(|n| &n.kind),
        Some(Kind::Bool(true))
    );
    Ok(CreationRule {
        path_regex,
        age,
        rule,
        mac_only_encrypted,
    })
}

/// Encrypts a plaintext document for the rule's recipients. `file` names the
/// input in messages and picks the format.
pub fn encrypt(
    plaintext: &[u8],
    file: &str,
    rule: &CreationRule,
) -> Result<zeroize::Zeroizing<String>> {
    let doc = sops::parse_document(plaintext, file)?;
    if doc.get("sops").is_some() {
        return Err(Error::AlreadyEncrypted {
            file: file.to_string(),
        });
    }
    let key = crypto::new_data_key();
    let (data, mac) = mac::encrypt_tree(&doc, &rule.rule, rule.mac_only_encrypted, &key)?;
    let lastmodified = crypto::now_rfc3339();
    let meta = Metadata {
        age: wrap_for(&key, &rule.age)?,
        mac: crypto::encrypt_mac(&mac, &key, &lastmodified),
        lastmodified,
        rule: rule.rule.clone(),
        mac_only_encrypted: rule.mac_only_encrypted,
        version: SOPS_VERSION.into(),
    };
    Ok(sops::emit(
        &data,
        Some(&sops::metadata_node(&meta)),
        Format::for_path(file),
    ))
}

fn wrap_for(key: &DataKey, recipients: &[String]) -> Result<Vec<AgeKey>> {
    recipients
        .iter()
        .map(|r| {
            Ok(AgeKey {
                recipient: r.clone(),
                enc: crypto::wrap_data_key(key, r)?,
            })
        })
        .collect()
}

/// Re-wraps the data key of an encrypted file for `recipients`. The file is
/// fully verified first (MAC included), so a tampered file is never
/// re-keyed; values, `lastmodified` and MAC are kept as they are.
pub fn update_keys(
    encrypted: &[u8],
    file: &str,
    identities: &Identities,
    recipients: &[String],
) -> Result<String> {
    let doc = sops::parse_encrypted(encrypted, file)?;
    let key = crypto::unwrap_data_key(&doc.meta.age, file, identities)?;
    mac::decrypt_tree(&doc, &key, file)?;
    let SopsDoc { format, data, meta } = doc;
    let meta = Metadata {
        age: wrap_for(&key, recipients)?,
        ..meta
    };
    Ok(sops::emit(&data, Some(&sops::metadata_node(&meta)), format).to_string())
}

/// Decrypts to the plaintext document `sops -d` prints (for operators).
pub fn decrypt_to_plaintext(
    encrypted: &[u8],
    file: &str,
    identities: &Identities,
) -> Result<zeroize::Zeroizing<String>> {
    let doc = sops::parse_encrypted(encrypted, file)?;
    let key = crypto::unwrap_data_key(&doc.meta.age, file, identities)?;
    let plain = mac::decrypt_tree(&doc, &key, file)?;
    Ok(sops::emit(&mac::to_plain_node(&plain), None, doc.format))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::decrypt_bytes;
    use crate::sensitive::Sensitive;
    use crate::value::Value;
    use age::secrecy::ExposeSecret;

    fn identity() -> (Identities, String) {
        let id = age::x25519::Identity::generate();
        let ids = Identities::parse(id.to_string().expose_secret(), "test").unwrap();
        (ids, id.to_public().to_string())
    }

    fn rule(recipients: Vec<String>, r: Rule) -> CreationRule {
        CreationRule {
            path_regex: None,
            age: recipients,
            rule: r,
            mac_only_encrypted: false,
        }
    }

    const PLAIN: &str = "db:\n  password: hunter2\n  port: 5432\n  user_unencrypted: app\nlist: [a, 1.5, true, null, \"\"]\n";

    #[test]
    fn encrypt_then_decrypt_round_trips() {
        let (ids, public) = identity();
        let out = encrypt(
            PLAIN.as_bytes(),
            "s.yaml",
            &rule(vec![public], Rule::default()),
        )
        .unwrap();
        assert!(!out.contains("hunter2"));
        assert!(out.contains("user_unencrypted: app\n"));
        let v = decrypt_bytes(out.as_bytes(), "s.yaml", &ids).unwrap();
        let pw = v.get_path("db.password").unwrap();
        assert!(matches!(pw, Value::Sensitive(s) if s.expose_str() == Some("hunter2")));
        assert_eq!(
            v.get_path("db.user_unencrypted"),
            Some(&Value::String("app".into()))
        );
        let Value::List(l) = v.get_path("list").unwrap() else {
            panic!()
        };
        let texts: Vec<_> = l
            .iter()
            .map(|x| match x {
                Value::Sensitive(s) => s.expose_str().unwrap().to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(texts, ["a", "1.5", "true", "Null", ""]);
    }

    #[test]
    fn tampering_is_a_mac_error() {
        let (ids, public) = identity();
        let out = encrypt(
            PLAIN.as_bytes(),
            "s.yaml",
            &rule(vec![public], Rule::default()),
        )
        .unwrap();
        let tampered = out.replace("user_unencrypted: app", "user_unencrypted: root");
        assert_ne!(tampered, *out);
        let e = decrypt_bytes(tampered.as_bytes(), "s.yaml", &ids).unwrap_err();
        assert!(matches!(e, Error::MacMismatch { .. }), "{e}");
        // Moving an encrypted value to another key breaks its AAD.
        let swapped = out.replacen("password:", "passwd:", 1);
        let e = decrypt_bytes(swapped.as_bytes(), "s.yaml", &ids).unwrap_err();
        assert!(e.to_string().contains("db.passwd"), "{e}");
    }

    #[test]
    fn update_keys_keeps_values_and_mac() {
        let (old, old_pub) = identity();
        let (new, new_pub) = identity();
        let only_password = Rule::EncryptedRegex(Regex::new("^password$").unwrap());
        let first = encrypt(
            PLAIN.as_bytes(),
            "s.yaml",
            &rule(vec![old_pub], only_password),
        )
        .unwrap();
        let rekeyed = update_keys(first.as_bytes(), "s.yaml", &old, &[new_pub]).unwrap();
        let value_lines = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| l.contains("ENC[") || l.contains("lastmodified"))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(value_lines(&first), value_lines(&rekeyed));
        let v = decrypt_bytes(rekeyed.as_bytes(), "s.yaml", &new).unwrap();
        assert_eq!(
            v.get_path("db.password"),
            Some(&Value::Sensitive(Sensitive::from_string("hunter2".into())))
        );
        assert_eq!(v.get_path("db.port"), Some(&Value::Int(5432)));
        assert!(decrypt_bytes(rekeyed.as_bytes(), "s.yaml", &old).is_err());
        let e = encrypt(
            PLAIN.as_bytes(),
            "s.json",
            &rule(vec![identity().1], Rule::default()),
        );
        assert!(matches!(e, Err(Error::Syntax { .. })), "YAML is not JSON");
    }

    #[test]
    fn creation_rules_pick_recipients_by_path() {
        let (_, dev) = identity();
        let (_, prod) = identity();
        let cfg = format!(
            "creation_rules:\n  - path_regex: secrets/prod\\.sops\\.yaml$\n    age: {prod}\n    encrypted_regex: ^(password)$\n  - path_regex: secrets/.*\n    age: \"{dev}, {dev}\"\n"
        );
        let c = Config::parse(cfg.as_bytes(), ".sops.yaml").unwrap();
        let p = c.rule_for("secrets/prod.sops.yaml").unwrap();
        assert_eq!(p.age, vec![prod]);
        assert!(matches!(p.rule, Rule::EncryptedRegex(_)));
        assert_eq!(c.rule_for("secrets/dev.sops.yaml").unwrap().age.len(), 2);
        let e = c.rule_for("other/x.yaml").unwrap_err().to_string();
        assert!(e.contains("other/x.yaml"), "{e}");
        let e = Config::parse(
            b"creation_rules:\n  - path_regex: x\n    age: nope\n",
            ".sops.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("invalid age recipient"), "{e}");
    }

    #[test]
    fn already_encrypted_files_are_refused() {
        let (_, public) = identity();
        let r = rule(vec![public], Rule::default());
        let out = encrypt(b"{\"a\": \"b\"}", "s.json", &r).unwrap();
        let e = encrypt(out.as_bytes(), "s.json", &r).unwrap_err();
        assert!(matches!(e, Error::AlreadyEncrypted { .. }));
    }
}
