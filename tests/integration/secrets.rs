//! Secrets against the real `sops` 3.x and Debian `age-keygen`: files sops
//! writes decrypt here to exactly what `sops -d` prints, files tidegate
//! writes decrypt with `sops -d`, `updatekeys` re-keys, the `fail_*` corpus
//! is refused with the expected error, and a canary secret never leaks.

use std::path::{Path, PathBuf};
use std::process::Command;

use tidegate::secrets::cli;
use tidegate::secrets::encrypt::{self, Config};
use tidegate::secrets::mac::go_format_float;
use tidegate::secrets::sops::{parse_document, Kind, Node};
use tidegate::secrets::{
    decrypt_bytes, decrypt_file, Decrypted, Error, Identities, IdentityOptions,
};
use tidegate::value::Value;

use crate::support;

/// A generated age key: its file and public key.
struct Key {
    file: PathBuf,
    public: String,
}

fn keygen(dir: &Path, name: &str) -> Key {
    let file = dir.join(format!("{name}.txt"));
    let out = Command::new(support::tool("age-keygen"))
        .arg("-o")
        .arg(&file)
        .output()
        .expect("run age-keygen");
    assert!(out.status.success(), "age-keygen failed: {out:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("public key line")
        .to_string();
    Key { file, public }
}

fn ids(key: &Key) -> Identities {
    Identities::load(
        &IdentityOptions {
            age_key_file: Some(key.file.clone()),
            age_key_dir: None,
        },
        &|_| None,
    )
    .unwrap()
}

/// Runs the real sops in `dir` with only the given key file.
fn sops(dir: &Path, key: Option<&Key>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(support::tool("sops"));
    cmd.current_dir(dir)
        .args(args)
        .env("HOME", dir)
        .env_remove("SOPS_AGE_KEY")
        .env_remove("SOPS_AGE_RECIPIENTS")
        .env_remove("XDG_CONFIG_HOME");
    match key {
        Some(k) => cmd.env("SOPS_AGE_KEY_FILE", &k.file),
        None => cmd.env_remove("SOPS_AGE_KEY_FILE"),
    };
    cmd.output().expect("run sops")
}

fn sops_ok(dir: &Path, key: Option<&Key>, args: &[&str]) -> String {
    let out = sops(dir, key, args);
    assert!(
        out.status.success(),
        "sops {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A comparable form of a plaintext document: leaves as their text.
fn canon_node(n: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &n.kind {
        Kind::Null => J::Null,
        Kind::Bool(b) => J::String(b.to_string()),
        Kind::Int(i) => J::String(i.to_string()),
        Kind::Float(f) => J::String(go_format_float(*f)),
        Kind::Str(s) => J::String(s.to_string()),
        Kind::List(l) => J::Array(l.iter().map(canon_node).collect()),
        Kind::Map(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), canon_node(v))).collect()),
    }
}

/// The same form of a decrypted tidegate value (secrets exposed: test only).
fn canon_value(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::String(b.to_string()),
        Value::Int(i) => J::String(i.to_string()),
        Value::Float(f) => J::String(go_format_float(*f)),
        Value::String(s) => J::String(s.clone()),
        Value::Sensitive(s) => J::String(s.expose_str().expect("utf-8").to_string()),
        Value::List(l) => J::Array(l.iter().map(canon_value).collect()),
        Value::Map(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), canon_value(v))).collect()),
        Value::Unknown(_) => panic!("no unknowns in secrets"),
    }
}

fn parsed(text: &str, name: &str) -> serde_json::Value {
    canon_node(&parse_document(text.as_bytes(), name).unwrap())
}

const PLAIN_YAML: &str = r#"# sops encrypts comments (type:comment); tidegate skips them
database:
  # the primary credentials
  password: "p@ss: word # not a comment"
  port: 5432
  ratio: 0.75
  big: 1e21
  enabled: true
  disabled: false
  empty: ""
  nothing: null
  octal: 0755
  quoted_number: "42"
certificate: |
  -----BEGIN CERTIFICATE-----
  MIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBBQUAMBExDzANBgNVBAMMBnVu
  -----END CERTIFICATE-----
greeting: "héllo wörld ✓ 日本語"
public_key: ssh-ed25519 AAAA
servers:
  - name: web
    token: abc
    ports: [80, 443]
  - name: db
    tags:
      - primary
      - - nested
        - 3.5
api_key_secret: s3cr3t
note_plain: visible
data:
  key: value
stringData:
  other: thing
"#;

const PLAIN_JSON: &str = r#"{
  "token": "abc\ndef",
  "count": 7,
  "ratio": 1.25,
  "flags": [true, false, null],
  "nested": {"deep": {"unicode": "ü✓", "empty": ""}},
  "empty_map": {},
  "empty_list": []
}
"#;

#[test]
fn files_made_by_sops_decrypt_to_what_sops_prints() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k1 = keygen(d, "k1");
    let k2 = keygen(d, "k2");
    std::fs::write(d.join("plain.yaml"), PLAIN_YAML).unwrap();
    std::fs::write(d.join("plain.json"), PLAIN_JSON).unwrap();
    let both = format!("{},{}", k1.public, k2.public);
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("default.yaml", vec![]),
        (
            "enc_regex.yaml",
            vec!["--encrypted-regex", "^(data|stringData|password)$"],
        ),
        (
            "unenc_regex.yaml",
            vec!["--unencrypted-regex", "^(public_key|name)$"],
        ),
        ("enc_suffix.yaml", vec!["--encrypted-suffix", "_secret"]),
        ("unenc_suffix.yaml", vec!["--unencrypted-suffix", "_plain"]),
    ];
    for (name, extra) in &cases {
        let mut args = vec!["encrypt", "--age", &both];
        args.extend(extra.iter().copied());
        args.push("plain.yaml");
        let encrypted = sops_ok(d, None, &args);
        if *name == "default.yaml" {
            assert!(
                encrypted.contains("type:comment]"),
                "sops encrypted the comments"
            );
        }
        std::fs::write(d.join(name), &encrypted).unwrap();
        let expected = parsed(&sops_ok(d, Some(&k1), &["decrypt", name]), "x.yaml");
        for key in [&k1, &k2] {
            let got = decrypt_file(&d.join(name), &ids(key)).unwrap();
            assert_eq!(canon_value(&got), expected, "{name} with {}", key.public);
        }
    }
    // Selection rules decide what is Sensitive.
    let enc_regex = decrypt_file(&d.join("enc_regex.yaml"), &ids(&k1)).unwrap();
    assert!(matches!(
        enc_regex.get_path("data.key"),
        Some(Value::Sensitive(_))
    ));
    assert!(matches!(
        enc_regex.get_path("greeting"),
        Some(Value::String(_))
    ));
    let default = decrypt_file(&d.join("default.yaml"), &ids(&k1)).unwrap();
    assert!(matches!(
        default.get_path("database.port"),
        Some(Value::Sensitive(_))
    ));
    assert_eq!(
        default.get_path("note_plain"),
        Some(&Value::Sensitive(
            tidegate::sensitive::Sensitive::from_string("visible".into())
        ))
    );
    let unenc = decrypt_file(&d.join("unenc_suffix.yaml"), &ids(&k1)).unwrap();
    assert_eq!(
        unenc.get_path("note_plain"),
        Some(&Value::String("visible".into()))
    );

    let json = sops_ok(d, None, &["encrypt", "--age", &both, "plain.json"]);
    std::fs::write(d.join("s.json"), &json).unwrap();
    let expected = parsed(&sops_ok(d, Some(&k2), &["decrypt", "s.json"]), "x.json");
    let got = decrypt_file(&d.join("s.json"), &ids(&k2)).unwrap();
    assert_eq!(canon_value(&got), expected);
}

#[test]
fn mac_only_encrypted_files_from_sops_decrypt() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = keygen(d, "k");
    std::fs::write(
        d.join(".sops.yaml"),
        format!(
            "creation_rules:\n  - age: {}\n    encrypted_regex: ^password$\n    mac_only_encrypted: true\n",
            k.public
        ),
    )
    .unwrap();
    std::fs::write(d.join("p.yaml"), PLAIN_YAML).unwrap();
    let encrypted = sops_ok(d, None, &["encrypt", "p.yaml"]);
    assert!(encrypted.contains("mac_only_encrypted: true"));
    // Plain values are outside the MAC: changing one is allowed, as in sops.
    let edited = encrypted.replace("note_plain: visible", "note_plain: changed");
    std::fs::write(d.join("s.yaml"), &edited).unwrap();
    let expected = parsed(&sops_ok(d, Some(&k), &["decrypt", "s.yaml"]), "x.yaml");
    let got = decrypt_file(&d.join("s.yaml"), &ids(&k)).unwrap();
    assert_eq!(canon_value(&got), expected);
}

fn write_sops_config(d: &Path, dev: &Key, prod: &Key) {
    std::fs::create_dir_all(d.join("secrets")).unwrap();
    std::fs::write(
        d.join(".sops.yaml"),
        format!(
            "creation_rules:\n  - path_regex: secrets/prod\\.sops\\.(yaml|json)$\n    age: {}\n    encrypted_regex: ^(password|token|data)$\n  - path_regex: secrets/.*\n    age: {}\n",
            prod.public, dev.public
        ),
    )
    .unwrap();
}

#[test]
fn files_tidegate_encrypts_decrypt_with_sops() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dev = keygen(d, "dev");
    let prod = keygen(d, "prod");
    write_sops_config(d, &dev, &prod);
    for (file, plain) in [
        ("secrets/dev.sops.yaml", PLAIN_YAML),
        ("secrets/prod.sops.yaml", PLAIN_YAML),
        ("secrets/dev.sops.json", PLAIN_JSON),
        ("secrets/prod.sops.json", PLAIN_JSON),
    ] {
        let path = d.join(file);
        std::fs::write(&path, plain).unwrap();
        cli::encrypt_file(None, &path, true, &mut Vec::new()).unwrap();
        let encrypted = std::fs::read_to_string(&path).unwrap();
        assert!(
            !encrypted.contains("p@ss") && !encrypted.contains("abc\\ndef"),
            "{file}"
        );
        let (right, wrong) = if file.contains("prod") {
            (&prod, &dev)
        } else {
            (&dev, &prod)
        };
        let printed = sops_ok(d, Some(right), &["decrypt", file]);
        assert_eq!(parsed(&printed, file), parsed(plain, file), "{file}");
        let refused = sops(d, Some(wrong), &["decrypt", file]);
        assert!(
            !refused.status.success(),
            "{file} must not open with the other environment's key"
        );
        let ours = decrypt_file(&path, &ids(right)).unwrap();
        assert_eq!(canon_value(&ours), parsed(plain, file));
    }
    let prod_text = std::fs::read_to_string(d.join("secrets/prod.sops.yaml")).unwrap();
    assert!(prod_text.contains(r#"encrypted_regex: "^(password|token|data)$""#));
    assert!(
        prod_text.contains("greeting: \"héllo"),
        "unselected values stay readable"
    );
}

#[test]
fn mac_only_encrypted_files_tidegate_writes_decrypt_with_sops() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = keygen(d, "k");
    std::fs::write(
        d.join(".sops.yaml"),
        format!(
            "creation_rules:\n  - age: [{}]\n    encrypted_suffix: _secret\n    mac_only_encrypted: true\n",
            k.public
        ),
    )
    .unwrap();
    for (file, plain) in [
        ("s.yaml", PLAIN_YAML),
        ("s.json", "{\"a_secret\": 1, \"b\": [2]}\n"),
    ] {
        std::fs::write(d.join(file), plain).unwrap();
        cli::encrypt_file(None, &d.join(file), true, &mut Vec::new()).unwrap();
        let printed = sops_ok(d, Some(&k), &["decrypt", file]);
        assert_eq!(parsed(&printed, file), parsed(plain, file), "{file}");
        let ours = decrypt_file(&d.join(file), &ids(&k)).unwrap();
        assert_eq!(canon_value(&ours), parsed(plain, file), "{file}");
    }
}

#[test]
fn updatekeys_rewraps_for_new_recipients_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dev = keygen(d, "dev");
    let prod = keygen(d, "prod");
    let rotated = keygen(d, "rotated");
    write_sops_config(d, &dev, &prod);
    let path = d.join("secrets/dev.sops.yaml");
    std::fs::write(&path, PLAIN_YAML).unwrap();
    cli::encrypt_file(None, &path, true, &mut Vec::new()).unwrap();
    let before = std::fs::read_to_string(&path).unwrap();
    // Rotate: dev's rule now names the rotated key.
    write_sops_config(d, &rotated, &prod);
    let mut out = Vec::new();
    cli::updatekeys_file(Some(d), &path, &ids(&dev), &mut out).unwrap();
    assert!(String::from_utf8(out).unwrap().contains(&rotated.public));
    let after = std::fs::read_to_string(&path).unwrap();
    let values = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| {
                !l.starts_with("    ")
                    && !l.contains("recipient")
                    && !l.trim_start().starts_with("enc:")
            })
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        values(&before),
        values(&after),
        "values, lastmodified and mac are untouched"
    );
    let printed = sops_ok(d, Some(&rotated), &["decrypt", "secrets/dev.sops.yaml"]);
    assert_eq!(parsed(&printed, "x.yaml"), parsed(PLAIN_YAML, "x.yaml"));
    assert!(!sops(d, Some(&dev), &["decrypt", "secrets/dev.sops.yaml"])
        .status
        .success());
    let e = decrypt_file(&path, &ids(&dev)).unwrap_err().to_string();
    assert!(
        e.contains(&rotated.public) && e.contains(&dev.public),
        "{e}"
    );
}

#[test]
fn cli_binary_decrypts_like_sops() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = keygen(d, "k");
    std::fs::write(d.join("p.yaml"), PLAIN_YAML).unwrap();
    let encrypted = sops_ok(d, None, &["encrypt", "--age", &k.public, "p.yaml"]);
    std::fs::write(d.join("s.yaml"), encrypted).unwrap();
    let mounted = d.join("mounted");
    std::fs::create_dir(&mounted).unwrap();
    std::fs::copy(&k.file, mounted.join("identity.agekey")).unwrap();
    let ours = support::run_ok(
        Command::new(env!("CARGO_BIN_EXE_tidegate"))
            .args(["secrets", "decrypt"])
            .arg(d.join("s.yaml"))
            .arg("--age-key-file")
            .arg(&mounted)
            .env_remove("SOPS_AGE_KEY_FILE")
            .env_remove("SOPS_AGE_KEY")
            .env("HOME", d),
    );
    let theirs = sops_ok(d, Some(&k), &["decrypt", "s.yaml"]);
    assert_eq!(parsed(&ours, "x.yaml"), parsed(&theirs, "x.yaml"));
    // The same file through SOPS_AGE_KEY (key text in the environment).
    let key_text = std::fs::read_to_string(&k.file).unwrap();
    support::run_ok(
        Command::new(env!("CARGO_BIN_EXE_tidegate"))
            .args(["secrets", "decrypt"])
            .arg(d.join("s.yaml"))
            .env_remove("SOPS_AGE_KEY_FILE")
            .env("SOPS_AGE_KEY", key_text)
            .env("HOME", d),
    );
    // No identity at all: a clear error naming the file and its recipient.
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["secrets", "decrypt"])
        .arg(d.join("s.yaml"))
        .env_remove("SOPS_AGE_KEY_FILE")
        .env_remove("SOPS_AGE_KEY")
        .env("HOME", d)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("s.yaml") && err.contains(&k.public) && err.contains("--age-key-file"),
        "{err}"
    );
}

fn fixtures() -> PathBuf {
    support::repo_root().join("tests/fixtures/sops")
}

#[test]
fn fail_corpus_is_refused_with_the_expected_error() {
    let key = Key {
        file: fixtures().join("key.txt"),
        public: String::new(),
    };
    let ids = ids(&key);
    let mut seen = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !name.starts_with("fail_") || name.ends_with(".expect") {
            continue;
        }
        let expect = std::fs::read_to_string(path.with_extension("expect")).unwrap();
        let err = decrypt_file(&path, &ids).expect_err(&name).to_string();
        assert!(
            err.contains(expect.trim()),
            "{name}: `{err}` lacks `{}`",
            expect.trim()
        );
        assert!(
            err.contains(&name),
            "{name}: error must name the file: {err}"
        );
        assert!(!err.contains("s3cret-value"), "{name}: {err}");
        seen += 1;
    }
    assert!(seen >= 10, "corpus has {seen} cases");
}

/// The canary: a known secret goes through decryption, lookup, rendering,
/// error paths and trace-level logging; it must appear in none of them nor
/// in any file written.
#[test]
fn canary_never_leaks() {
    const CANARY: &str = "canary-7d1f0b-do-not-print";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = keygen(d, "k");
    let other = keygen(d, "other");
    let config = Config::parse(
        format!("creation_rules:\n  - age: {}\n", k.public).as_bytes(),
        ".sops.yaml",
    )
    .unwrap();
    let plain = format!("db:\n  password: {CANARY}\n  list: [{CANARY}]\nmeta_unencrypted: x\n");
    let rule = config.rule_for("secrets/canary.sops.yaml").unwrap();

    let logs = LogCapture::default();
    let mut rendered = String::new();
    tracing::subscriber::with_default(logs.subscriber(), || {
        let encrypted = encrypt::encrypt(plain.as_bytes(), "canary.sops.yaml", rule).unwrap();
        let path = d.join("canary.sops.yaml");
        std::fs::write(&path, encrypted.as_bytes()).unwrap();
        let mut all = Decrypted::new();
        all.load("canary", &path, &ids(&k)).unwrap();
        let tree = all.tree("canary").unwrap();
        let secret = all.lookup("canary", &["db", "password"]).unwrap();
        assert_eq!(
            secret.expose_str(),
            Some(CANARY),
            "the secret is really there"
        );
        rendered.push_str(&format!("{tree:?}\n{all:?}\n{secret:?}\n{secret}\n"));
        rendered.push_str(&serde_json::to_string(tree).unwrap());
        rendered.push_str(&tree.to_json_masked().to_string());
        for e in [
            all.get("canary", &["db", "missing"]).unwrap_err(),
            all.get("canary", &["db"]).unwrap_err(),
            decrypt_file(&path, &ids(&other)).unwrap_err(),
            decrypt_bytes(
                std::fs::read_to_string(&path)
                    .unwrap()
                    .replace("meta_unencrypted: x", "meta_unencrypted: y")
                    .as_bytes(),
                "canary.sops.yaml",
                &ids(&k),
            )
            .unwrap_err(),
            decrypt_bytes(b"db: [\n", "broken.yaml", &ids(&k)).unwrap_err(),
        ] {
            rendered.push_str(&format!("{e}\n{e:?}\n"));
        }
        let e: Error =
            encrypt::encrypt(format!("{CANARY}: [").as_bytes(), "p.yaml", rule).unwrap_err();
        rendered.push_str(&format!("{e}\n{e:?}\n"));
    });
    let logged = logs.contents();
    assert!(
        logged.contains("decrypt"),
        "trace logging was captured: {logged}"
    );
    assert!(
        !rendered.contains(CANARY),
        "rendered output leaks: {rendered}"
    );
    assert!(!logged.contains(CANARY), "logs leak: {logged}");
    for entry in walk(d) {
        let bytes = std::fs::read(&entry).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(CANARY), "{} leaks", entry.display());
    }
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Trace-level logs captured into memory.
#[derive(Clone, Default)]
struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish()
    }

    fn contents(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The canary through the real binary: the example's dev secrets are
/// decrypted and used by `validate`, a live `plan` and an `apply` against
/// moto and kube-sim, every one with `RUST_LOG=trace`. No secret value, nor
/// its base64 form, appears in any stdout or stderr, nor in any file the
/// runs wrote, nor in the audit history the apply left (its ConfigMaps in
/// dev's cluster and `tidegate history` in every format).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_through_the_binary_at_trace_level() {
    use base64::Engine;
    let root = support::repo_root();
    let key = root.join("secrets/demo-keys/dev.agekey");
    let plain = support::run_ok(
        Command::new(support::tool("sops"))
            .args(["-d", "secrets/dev.sops.yaml"])
            .env("SOPS_AGE_KEY_FILE", &key)
            .current_dir(&root),
    );
    let mut canaries: Vec<String> = plain
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(_, v)| v.trim().trim_matches('"').trim_matches('\'').to_string())
        .filter(|v| v.len() >= 8 && !v.starts_with('|') && !v.starts_with('>'))
        .collect();
    assert!(
        !canaries.is_empty(),
        "no secret values found in:\n(redacted)"
    );
    // A secret inside a larger text (the example's user data script) is
    // encoded with it: its base64 at each of the three alignments (the
    // characters that depend on its neighbours cut off), plain, as a form
    // body percent-encodes it (RunInstances' UserData), and that as a
    // printed byte list.
    let mut encoded = Vec::new();
    for c in canaries.iter().filter(|c| c.len() >= 16) {
        for pad in 0..3 {
            let mut bytes = vec![b'#'; pad];
            bytes.extend_from_slice(c.as_bytes());
            let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let inner = &b64[if pad == 0 { 0 } else { 4 }..b64.len() - 4];
            let form = inner
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D");
            // A byte slice's Debug form (`[73, 121, ...]`), as aws-sigv4
            // prints a body with LOG_SIGNABLE_BODY.
            let debug = form
                .bytes()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            encoded.extend([inner.to_string(), form, debug]);
        }
    }
    assert!(!encoded.is_empty(), "no secret of 16 bytes or more");
    canaries.extend(encoded);

    let stand = crate::stand::Stand::with_contexts(&["dev"]).await;
    let state = stand.dir.path().join("state");
    let repo = root.display().to_string();
    let state_dir = state.to_str().unwrap();
    let runs: [&[&str]; 6] = [
        &["validate", "--repo", &repo],
        &["plan", "--repo", &repo, "--env", "dev"],
        &[
            "apply",
            "--repo",
            &repo,
            "--env",
            "dev",
            "--yes",
            "--state-dir",
            state_dir,
        ],
        &["history", "dev", "--repo", &repo, "--state-dir", state_dir],
        &[
            "history",
            "dev",
            "--format",
            "json",
            "--repo",
            &repo,
            "--state-dir",
            state_dir,
        ],
        &[
            "history",
            "dev",
            "--format",
            "jsonl",
            "--repo",
            &repo,
            "--state-dir",
            state_dir,
        ],
    ];
    for args in runs {
        let out = stand
            .binary()
            .args(args)
            .env("SOPS_AGE_KEY_FILE", &key)
            .env(
                "RUST_LOG",
                "trace,aws_sigv4=trace,aws_smithy_runtime::client=trace",
            )
            // aws-sigv4 logs whole request bodies with this (issue 18).
            .env("LOG_SIGNABLE_BODY", "true")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code().is_some_and(|c| c == 0 || c == 2),
            "{args:?} failed: {}",
            stderr.lines().rev().take(20).collect::<Vec<_>>().join("\n")
        );
        // validate makes no network call and logs nothing; plan and apply
        // log every request of kube, hyper and the AWS SDK at trace level.
        assert!(
            args[0] == "validate" || stderr.lines().count() > 10,
            "{args:?}: trace logging did not run"
        );
        if args[0] == "history" {
            assert!(stdout.contains("apply"), "{args:?}: no entry: {stdout}");
        }
        for c in &canaries {
            assert!(!stdout.contains(c.as_str()), "{args:?}: a secret in stdout");
            assert!(!stderr.contains(c.as_str()), "{args:?}: a secret in stderr");
        }
    }
    let mut files = vec![stand.dir.path().to_path_buf()];
    let mut read = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if let Ok(bytes) = std::fs::read(&p) {
            read += 1;
            let text = String::from_utf8_lossy(&bytes);
            for c in &canaries {
                assert!(!text.contains(c.as_str()), "a secret in {}", p.display());
            }
        }
    }
    assert!(read > 0, "the runs wrote no file to check");
    // The audit history lives in dev's cluster: every ConfigMap tidegate
    // keeps there (records and history), whole.
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(stand.kube("dev").await, "tidegate-system");
    let kept = api.list(&Default::default()).await.unwrap().items;
    assert!(
        kept.iter()
            .any(|c| c.metadata.name.as_deref() == Some("tidegate-history-shop.dev-1")),
        "no history ConfigMap"
    );
    let text = serde_json::to_string(&kept).unwrap();
    for c in &canaries {
        assert!(
            !text.contains(c.as_str()),
            "a secret in a ConfigMap of tidegate-system"
        );
    }
}

/// Issue 17: a value sops keeps in plaintext (`_unencrypted` suffix) is
/// as readable as the file in Git, so `${secret.db.user_unencrypted}`
/// renders and prints plain, with the key (decrypted) and without it
/// (`plan --offline`), while `${secret.db.password}` stays `(sensitive)`.
#[test]
fn unencrypted_suffix_values_print_plain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = keygen(d, "k");
    for sub in ["environments", "modules/app", "secrets"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::write(
        d.join("secrets/dev.yaml"),
        "db:\n  password: canary-pw-4711\n  user_unencrypted: app-user\n  port_unencrypted: 5432\n",
    )
    .unwrap();
    let enc = sops_ok(
        d,
        None,
        &["encrypt", "--age", &k.public, "secrets/dev.yaml"],
    );
    std::fs::remove_file(d.join("secrets/dev.yaml")).unwrap();
    assert!(enc.contains("user_unencrypted: app-user"), "{enc}");
    std::fs::write(d.join("secrets/dev.sops.yaml"), &enc).unwrap();
    std::fs::write(
        d.join("modules/app/module.yaml"),
        "apiVersion: tidegate.dev/v1\nkind: Module\nmetadata:\n  name: app\nspec:\n  inputs:\n    user:\n      type: string\n    port:\n      type: string\n    password:\n      type: string\n  resources:\n    - name: config\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: app\n          namespace: default\n        data:\n          USER: ${input.user}\n          PORT: ${input.port}\n          URL: postgres://${input.user}:${input.password}@db\n",
    )
    .unwrap();
    std::fs::write(
        d.join("environments/dev.yaml"),
        "apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: dev\nspec:\n  secrets: [secrets/dev.sops.yaml]\n  modules:\n    - name: app\n      source: modules/app\n      inputs:\n        user: ${secret.db.user_unencrypted}\n        port: ${secret.db.port_unencrypted}\n        password: ${secret.db.password}\n",
    )
    .unwrap();

    crate::stand::write_project(d);
    // With the key: the decrypted file renders the plaintext values plain.
    let files = tidegate::load::read_dir(d).unwrap();
    let model = tidegate::load::load(&files).unwrap();
    let decrypted =
        tidegate::secrets::load_env(model.environment("dev").unwrap(), &files, &ids(&k)).unwrap();
    let known = std::collections::HashMap::new();
    let opts = tidegate::render::RenderOptions {
        known: &known,
        secrets: &decrypted,
        owner: None,
    };
    let body = &tidegate::render::render_env(&model, "dev", opts).unwrap()[0].body;
    assert_eq!(
        body.get_path("data.USER"),
        Some(&Value::String("app-user".into()))
    );
    assert_eq!(
        body.get_path("data.PORT"),
        Some(&Value::String("5432".into()))
    );
    assert!(matches!(
        body.get_path("data.URL"),
        Some(Value::Sensitive(_))
    ));

    // Without it: the offline plan prints them plain too, the password never.
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["plan", "--offline", "--format", "json", "--repo"])
        .arg(d)
        .env_remove("SOPS_AGE_KEY_FILE")
        .env_remove("SOPS_AGE_KEY")
        .env("HOME", d)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let changes = &plan["environments"][0]["modules"][0]["resources"][0]["changes"];
    let change = |path: &str| {
        changes
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == path)
            .cloned()
            .unwrap_or_else(|| panic!("no change at {path}: {changes}"))
    };
    assert_eq!(change("data.USER")["after"], "app-user");
    assert_eq!(change("data.PORT")["after"], "5432");
    assert_eq!(change("data.URL")["op"], "sensitive");
    assert!(!stdout.contains("canary-pw-4711"));
}
