//! The bundled example against the real `sops`: each environment's secret
//! file decrypts with its demo identity (and only with it), and the key
//! structure tidegate reads without a key matches the decrypted content.

use std::process::Command;

use tidegate::load::sops;
use tidegate::model::SecretTree;

fn decrypt(file: &str, key: &str) -> std::process::Output {
    let root = super::support::repo_root();
    Command::new(super::support::tool("sops"))
        .args(["--decrypt", "--output-type", "json", file])
        .env(
            "SOPS_AGE_KEY_FILE",
            root.join("secrets/demo-keys").join(key),
        )
        .current_dir(&root)
        .output()
        .expect("sops runs")
}

fn leaves(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    match v.as_object() {
        Some(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, &p, out);
            }
        }
        None => out.push(prefix.to_string()),
    }
}

#[test]
fn example_secrets_decrypt_with_their_own_demo_key_only() {
    let root = super::support::repo_root();
    for env in ["dev", "staging", "test", "prod"] {
        let file = format!("secrets/{env}.sops.yaml");
        let out = decrypt(&file, &format!("{env}.agekey"));
        assert!(
            out.status.success(),
            "{env}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let plain: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let mut decrypted = Vec::new();
        leaves(&plain, "", &mut decrypted);
        decrypted.sort();

        let text = std::fs::read_to_string(root.join(&file)).unwrap();
        let tree: SecretTree = sops::parse_structure(&file, &text).expect("key structure");
        assert_eq!(tree.leaves(), decrypted, "{env}");
        assert!(tree.leaf(&["db", "password"]) && tree.leaf(&["api", "token"]));
    }
    let wrong = decrypt("secrets/prod.sops.yaml", "dev.agekey");
    assert!(
        !wrong.status.success(),
        "prod secrets must not open with the dev key"
    );
}
