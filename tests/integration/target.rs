//! Targeted plans and applies end to end with the real binary: `--target`
//! applies the resource and what it depends on, nothing else; the plan
//! names what it leaves out; prune never runs; the record says partial and
//! the next environment's gate stays shut until a full apply; a saved
//! targeted plan applies the same scope.

use std::path::Path;

use tempfile::TempDir;

use super::execute::{app_doc, net_doc, write_repo, Spec};
use super::stand::{commit_files, config_map, owned_ec2, Kube, Stand};

async fn history(stand: &Stand, repo: &Path) -> Vec<serde_json::Value> {
    let (code, out, err) = stand
        .cli_split(repo, &["history", "dev", "--format", "jsonl"])
        .await;
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `tidegate plan --env dev --color never <args>`: exit code and output.
async fn plan(stand: &Stand, repo: &Path, args: &[&str]) -> (i32, String) {
    let out = stand
        .binary()
        .args(["plan", "--env", "dev", "--color", "never"])
        .args(args)
        .arg("--repo")
        .arg(repo)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

async fn a_targeted_apply_touches_its_scope_only_and_opens_no_gate(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let repo = TempDir::new().unwrap();
    write_repo(repo.path(), &Spec::default());
    let dir = repo.path();

    // Unknown targets are refused with the nearest name; nothing applied.
    let (code, text) = stand
        .cli(
            dir,
            &["apply", "--env", "dev", "--yes", "--target", "app.flag"],
        )
        .await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("did you mean app.flags?"), "{text}");
    assert!(config_map(&stand, "dev", "app-dev", "flags")
        .await
        .is_none());

    // The plan: flags and its Namespace; the rest is named as left out.
    let (code, text) = plan(&stand, dir, &["--target", "app.flags"]).await;
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("targeted: --target app.flags (2 resource(s) with their dependencies)"),
        "{text}"
    );
    assert!(text.contains("2 to create, 0 to update"), "{text}");
    for left in [
        "app.config (create)",
        "network.vpc (create)",
        "network.server (create)",
    ] {
        assert!(text.contains(left), "{left} left out: {text}");
    }

    let (code, text) = stand
        .cli(
            dir,
            &["apply", "--env", "dev", "--yes", "--target", "app.flags"],
        )
        .await;
    assert_eq!(code, 0, "{text}");
    assert!(config_map(&stand, "dev", "app-dev", "flags")
        .await
        .is_some());
    assert!(
        config_map(&stand, "dev", "app-dev", "network")
            .await
            .is_none(),
        "app.config is outside the scope"
    );
    assert!(
        owned_ec2(&stand, "dev").await.values().all(Vec::is_empty),
        "no EC2 resource is in the scope of app.flags"
    );
    let entries = history(&stand, dir).await;
    let last = entries.last().unwrap();
    assert_eq!(last["event"], "apply");
    assert_eq!(last["outcome"], "succeeded");
    assert_eq!(
        last["reason"], "targeted apply (partial): --target app.flags",
        "{last:#}"
    );

    // A partial environment opens no gate.
    let (code, text) = stand
        .cli(dir, &["apply", "--env", "staging", "--yes"])
        .await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("did not converge at this commit") && text.contains("partial"),
        "{text}"
    );

    // A full apply converges the rest and opens the gate.
    let (code, text) = stand.cli(dir, &["apply", "--env", "dev", "--yes"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(config_map(&stand, "dev", "app-dev", "network")
        .await
        .is_some());
    let (code, text) = stand
        .cli(dir, &["apply", "--env", "staging", "--yes"])
        .await;
    assert_eq!(code, 0, "the gate opens on a full apply: {text}");

    // Git drops flags and changes the subnet: a targeted apply of app.config
    // neither prunes flags nor touches the subnet.
    let spec = Spec {
        extra_config: false,
        subnet_cidr: "10.1.2.0/24",
        ..Spec::default()
    };
    commit_files(
        dir,
        &[
            ("modules/app/module.yaml", app_doc(&spec)),
            ("modules/net/module.yaml", net_doc(&spec)),
        ],
    );
    let (code, text) = plan(&stand, dir, &["--target", "module.app"]).await;
    assert_eq!(code, 0, "nothing in module.app changes: {text}");
    assert!(text.contains("app.flags (delete)"), "{text}");
    assert!(text.contains("network.subnet (replace)"), "{text}");
    assert!(text.contains("No changes."), "{text}");

    // The saved targeted plan carries its targets to `apply FILE`.
    let key = stand.dir.path().join("plan.key");
    std::fs::write(&key, "7b".repeat(32)).unwrap();
    let file = stand.dir.path().join("dev.plan.json");
    let (file_arg, key_arg) = (file.to_str().unwrap(), key.to_str().unwrap());
    let (code, text) = plan(
        &stand,
        dir,
        &[
            "--target",
            "app.config",
            "--out",
            file_arg,
            "--plan-key",
            key_arg,
        ],
    )
    .await;
    assert_eq!(code, 0, "{text}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["targets"], serde_json::json!(["app.config"]));
    let (code, text) = stand
        .cli(dir, &["apply", file_arg, "--plan-key", key_arg])
        .await;
    assert_eq!(code, 0, "{text}");
    assert!(
        config_map(&stand, "dev", "app-dev", "flags")
            .await
            .is_some(),
        "a targeted apply never prunes"
    );
    let subnets = owned_ec2(&stand, "dev").await["subnet"].clone();
    assert_eq!(subnets.len(), 1, "{subnets:?}");
    let entries = history(&stand, dir).await;
    assert!(
        entries.iter().all(|e| e["event"] != "prune"),
        "{entries:#?}"
    );
    assert_eq!(
        entries.last().unwrap()["reason"],
        "targeted apply (partial): --target app.config"
    );

    // The full apply prunes flags and replaces the subnet.
    let (code, text) = stand.cli(dir, &["apply", "--env", "dev", "--yes"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(config_map(&stand, "dev", "app-dev", "flags")
        .await
        .is_none());
}

crate::on_both_kubes!(a_targeted_apply_touches_its_scope_only_and_opens_no_gate,);
