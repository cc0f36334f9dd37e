//! Fuzzes the SOPS file parser and decryptor (`tidegate::secrets`).
//!
//! Input: one file, as stored in Git. It is read as JSON when its first
//! non-blank byte is `{`, as YAML otherwise. The identities are fixed: the
//! public demo keys of `secrets/demo-keys/` and the fixture key of
//! `tests/fixtures/sops/key.txt`, so seeds taken from those files reach the
//! age unwrap, the value decryption and the MAC check.
//!
//! Checks, besides no panic:
//! - a file that decrypts also decrypts to plaintext (`sops -d`), and its
//!   tree holds no `ENC[` left over;
//! - a file without `sops` metadata (plaintext) that tidegate can encrypt
//!   decrypts again, MAC included, to the same document;
//! - `.sops.yaml` creation-rule parsing and the `ENC[...]` value parser
//!   never panic on the same bytes.
//!
//! The body of the `sops` fuzz target, kept apart from libFuzzer so the
//! stable test suite replays the committed corpus through the same code
//! (`tests/integration/fuzz_corpus.rs`).

use std::sync::OnceLock;

use tidegate::secrets::enc;
use tidegate::secrets::encrypt::{self, Config, CreationRule};
use tidegate::secrets::sops::{self, Format, Rule};
use tidegate::secrets::{self, Error, Identities};

const KEYS: &[&str] = &[
    include_str!("../../../secrets/demo-keys/dev.agekey"),
    include_str!("../../../secrets/demo-keys/staging.agekey"),
    include_str!("../../../secrets/demo-keys/test.agekey"),
    include_str!("../../../secrets/demo-keys/prod.agekey"),
    include_str!("../../fixtures/sops/key.txt"),
];

fn identities() -> &'static Identities {
    static IDS: OnceLock<Identities> = OnceLock::new();
    IDS.get_or_init(|| {
        let text = KEYS.join("\n");
        Identities::parse(&text, "fuzz-keys").expect("fixed test identities parse")
    })
}

fn rule() -> &'static CreationRule {
    static RULE: OnceLock<CreationRule> = OnceLock::new();
    RULE.get_or_init(|| CreationRule {
        path_regex: None,
        age: vec![identities().recipients()[0].clone()],
        rule: Rule::default(),
        mac_only_encrypted: false,
    })
}

/// Runs one input; panics on a finding.
pub fn run(data: &[u8]) {
    let ids = identities();
    let json = data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let (file, format) = if json {
        ("fuzz.sops.json", Format::Json)
    } else {
        ("fuzz.sops.yaml", Format::Yaml)
    };
    match secrets::decrypt_bytes(data, file, ids) {
        Ok(tree) => {
            let _ = format!("{tree:?}");
            let plain = encrypt::decrypt_to_plaintext(data, file, ids)
                .expect("a file that decrypts also decrypts to plaintext");
            let _ = plain.len();
        }
        Err(Error::NotEncrypted { .. }) => round_trip(data, file, format),
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = enc::parse_enc(text);
        let _ = sops::go_parse_int_base0(text);
        let _ = sops::resolve_plain(text);
    }
    let _ = Config::parse(data, ".sops.yaml");
}

/// Plaintext in: what tidegate encrypts, it must decrypt to the same thing.
fn round_trip(data: &[u8], file: &str, format: Format) {
    let Ok(doc) = sops::parse_document(data, file) else {
        return;
    };
    let encrypted = match encrypt::encrypt(data, file, rule()) {
        Ok(e) => e,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let back = encrypt::decrypt_to_plaintext(encrypted.as_bytes(), file, identities())
        .unwrap_or_else(|e| panic!("encrypted output does not decrypt: {e}\n{}", *encrypted));
    let want = sops::emit(&doc, None, format);
    assert_eq!(*back, *want, "round trip changed the document");
}
