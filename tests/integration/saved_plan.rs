//! Saved plans end to end with the real binary: `plan --out FILE` then
//! `apply FILE` converges; a file with one byte changed, a live object
//! changed or deleted between plan and apply, and a new commit are each
//! refused with a message naming what moved, and nothing is applied.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use tempfile::TempDir;

use super::execute::{app_doc, write_repo, Spec};
use super::stand::{commit_files, config_map, Kube, Stand};

/// A plan key in the stand's folder.
fn key(stand: &Stand) -> PathBuf {
    let path = stand.dir.path().join("plan.key");
    std::fs::write(&path, format!("{}\n", "5a".repeat(32))).unwrap();
    path
}

/// `tidegate plan --env dev --out <file> --plan-key <key> <extra>`.
async fn plan_out(stand: &Stand, repo: &Path, file: &Path, extra: &[&str]) -> (i32, String) {
    let out = stand
        .binary()
        .args(["plan", "--env", "dev", "--color", "never", "--out"])
        .arg(file)
        .arg("--plan-key")
        .arg(key(stand))
        .args(extra)
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

/// `tidegate apply <file> --plan-key <key> <extra>`.
async fn apply_file(stand: &Stand, repo: &Path, file: &Path, extra: &[&str]) -> (i32, String) {
    let key = key(stand);
    let mut args = vec!["apply", file.to_str().unwrap(), "--plan-key"];
    args.push(key.to_str().unwrap());
    args.extend(extra);
    stand.cli(repo, &args).await
}

/// The fixture with ConfigMap `flags` holding `beta: <beta>`, committed.
fn commit_beta(dir: &Path, beta: &str) -> String {
    let app = app_doc(&Spec::default()).replace("beta: \"on\"", &format!("beta: \"{beta}\""));
    commit_files(dir, &[("modules/app/module.yaml", app)])
}

async fn flags(stand: &Stand) -> Option<std::collections::BTreeMap<String, String>> {
    config_map(stand, "dev", "app-dev", "flags")
        .await
        .map(|c| c.data.unwrap_or_default())
}

/// The audit history of dev as JSON entries.
async fn history(stand: &Stand, repo: &Path) -> Vec<serde_json::Value> {
    let (code, out, err) = stand
        .cli_split(repo, &["history", "dev", "--format", "jsonl"])
        .await;
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn a_saved_plan_applies_exactly_once_and_an_altered_one_never(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let repo = TempDir::new().unwrap();
    write_repo(repo.path(), &Spec::default());
    let file = stand.dir.path().join("dev.plan.json");
    let (code, text) = plan_out(&stand, repo.path(), &file, &[]).await;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("saved the plan of dev"), "{text}");
    let saved = std::fs::read_to_string(&file).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(doc["format"], "tidegate-saved-plan/1");
    assert_eq!(doc["environment"], "dev");
    assert_eq!(doc["changes"].as_array().unwrap().len(), 7, "{saved}");
    assert!(doc["mac"].as_str().unwrap().starts_with("hmac-sha256:"));
    assert!(!saved.contains("10.1.1.0/24"), "no body is stored: {saved}");

    // One byte changed: refused before anything is read from it.
    let altered = stand.dir.path().join("altered.plan.json");
    let at = saved.find("app.flags").unwrap() + 4;
    let mut bytes = saved.clone().into_bytes();
    bytes[at] = b'g';
    std::fs::write(&altered, bytes).unwrap();
    let (code, text) = apply_file(&stand, repo.path(), &altered, &[]).await;
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("was altered after it was saved"), "{text}");
    let namespaces: Api<Namespace> = Api::all(stand.kube("dev").await);
    assert!(
        namespaces.get_opt("app-dev").await.unwrap().is_none(),
        "nothing applied"
    );

    // Without its key it cannot be verified.
    let (code, text) = stand
        .cli(repo.path(), &["apply", file.to_str().unwrap()])
        .await;
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("needs a key"), "{text}");

    let (code, text) = apply_file(&stand, repo.path(), &file, &[]).await;
    assert_eq!(code, 0, "{text}");
    assert_eq!(flags(&stand).await.unwrap()["beta"], "on");
    // A key in the environment does not make a plain plan a saved one.
    let out = stand
        .binary()
        .env("TIDEGATE_PLAN_KEY_FILE", key(&stand))
        .args(["plan", "--env", "dev", "--color", "never", "--repo"])
        .arg(repo.path())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "converged: {out:?}");

    // Applied once: applying it again finds every change already made.
    let (code, text) = apply_file(&stand, repo.path(), &file, &[]).await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("is stale")
            && text.contains("app.flags: the plan would create it, now it needs no change"),
        "{text}"
    );
}

async fn a_live_change_between_plan_and_apply_is_refused(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let repo = TempDir::new().unwrap();
    write_repo(repo.path(), &Spec::default());
    // A key in the environment does not make a plain apply a saved one.
    let out = stand
        .command(repo.path(), &["apply", "--env", "dev", "--yes"])
        .env("TIDEGATE_PLAN_KEY_FILE", key(&stand))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    commit_beta(repo.path(), "off");
    let file = stand.dir.path().join("dev.plan.json");
    let (code, text) = plan_out(&stand, repo.path(), &file, &[]).await;
    assert_eq!(code, 2, "{text}");
    // Someone else writes the object the plan updates.
    let api: Api<ConfigMap> = Api::namespaced(stand.kube("dev").await, "app-dev");
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "flags", "namespace": "app-dev"}, "data": {"owner": "ops"}});
    api.patch(
        "flags",
        &PatchParams::apply("ops-team"),
        &Patch::Apply(&other),
    )
    .await
    .unwrap();
    let (code, text) = apply_file(&stand, repo.path(), &file, &[]).await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("app.flags: its live state changed since the plan"),
        "{text}"
    );
    assert!(text.contains("nothing applied"), "{text}");
    let held = history(&stand, repo.path()).await;
    assert!(
        held.iter().any(|e| e["outcome"] == "held"
            && e["reason"].as_str().is_some_and(|r| r.contains("is stale"))),
        "the refusal is audited: {held:#?}"
    );
    let data = flags(&stand).await.unwrap();
    assert_eq!(
        (data["beta"].as_str(), data["owner"].as_str()),
        ("on", "ops"),
        "nothing applied"
    );

    // Planned again, it applies.
    let (code, text) = plan_out(&stand, repo.path(), &file, &[]).await;
    assert_eq!(code, 2, "{text}");
    let (code, text) = apply_file(&stand, repo.path(), &file, &[]).await;
    assert_eq!(code, 0, "{text}");
    assert_eq!(flags(&stand).await.unwrap()["beta"], "off");

    // Deleted between plan and apply: refused, not recreated.
    commit_beta(repo.path(), "on");
    let (code, text) = plan_out(&stand, repo.path(), &file, &[]).await;
    assert_eq!(code, 2, "{text}");
    api.delete("flags", &DeleteParams::default()).await.unwrap();
    let (code, text) = apply_file(&stand, repo.path(), &file, &[]).await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("app.flags: it was deleted since the plan"),
        "{text}"
    );
    assert!(flags(&stand).await.is_none(), "nothing applied");
}

async fn a_new_commit_after_the_plan_is_refused(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let repo = TempDir::new().unwrap();
    let planned = write_repo(repo.path(), &Spec::default());
    let (code, text) = stand
        .cli(repo.path(), &["apply", "--env", "dev", "--yes"])
        .await;
    assert_eq!(code, 0, "{text}");

    // From the working tree (a clean checkout: its HEAD).
    let worktree = stand.dir.path().join("worktree.plan.json");
    commit_beta(repo.path(), "off");
    let planned_off = crate::support::git(repo.path(), &["rev-parse", "HEAD"]);
    assert_ne!(planned, planned_off);
    let (code, text) = plan_out(&stand, repo.path(), &worktree, &[]).await;
    assert_eq!(code, 2, "{text}");
    // From Git: --revision HEAD.
    let revision = stand.dir.path().join("revision.plan.json");
    let (code, text) = plan_out(&stand, repo.path(), &revision, &["--revision", "HEAD"]).await;
    assert_eq!(code, 2, "{text}");

    let now = commit_beta(repo.path(), "maybe");
    let (code, text) = apply_file(&stand, repo.path(), &worktree, &[]).await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "the commit changed: the plan was made at {planned_off}, the repository now reads {now}"
        )),
        "{text}"
    );
    let (code, text) = apply_file(&stand, repo.path(), &revision, &["--revision", "HEAD"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("the commit changed"), "{text}");
    assert_eq!(
        flags(&stand).await.unwrap()["beta"],
        "on",
        "nothing applied"
    );
    let refused = history(&stand, repo.path()).await;
    let stale: Vec<_> = refused
        .iter()
        .filter(|e| e["event"] == "refused" && e["reason"] == "stale-plan")
        .collect();
    assert_eq!(stale.len(), 2, "each refusal is audited: {refused:#?}");

    // Without --revision, a plan read from Git applies its own commit.
    let (code, text) = apply_file(&stand, repo.path(), &revision, &[]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("commit {planned_off}")), "{text}");
    assert_eq!(flags(&stand).await.unwrap()["beta"], "off");
}

crate::on_both_kubes!(
    a_saved_plan_applies_exactly_once_and_an_altered_one_never,
    a_live_change_between_plan_and_apply_is_refused,
    a_new_commit_after_the_plan_is_refused,
);
