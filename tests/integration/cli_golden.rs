//! Golden tests of `tidegate validate` and `tidegate graph` on the bundled
//! example (and one failing fixture), run through the real binary.
//! Update with `INSTA_UPDATE=always cargo test --test integration cli_golden`
//! and review the diff.

use std::process::Command;

fn tidegate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(args)
        .current_dir(super::support::repo_root())
        .output()
        .expect("tidegate runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8(out.stderr).expect("utf-8 stderr"),
    )
}

#[test]
fn validate_the_bundled_example() {
    let (code, out, err) = tidegate(&["validate"]);
    assert_eq!(code, 0, "{out}{err}");
    insta::assert_snapshot!("validate_text", out);
}

#[test]
fn validate_json_on_the_bundled_example() {
    let (code, out, _) = tidegate(&["validate", "--format", "json", "--repo", "."]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v["valid"], true);
    insta::assert_snapshot!("validate_json", out);
}

#[test]
fn validate_reports_errors_with_exit_code_1() {
    let (code, out, _) = tidegate(&[
        "validate",
        "--repo",
        "tests/fixtures/repos/fail_cycle_across_modules",
    ]);
    assert_eq!(code, 1);
    insta::assert_snapshot!("validate_cycle", out);
    let (code, out, _) = tidegate(&[
        "validate",
        "--format",
        "json",
        "--repo",
        "tests/fixtures/repos/fail_unknown_field",
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v["errors"][0]["file"], "environments/dev.yaml");
    assert_eq!(v["errors"][0]["line"], 6);
    assert_eq!(v["errors"][0]["column"], 3);
}

#[test]
fn graph_of_the_bundled_example_as_dot() {
    let (code, out, err) = tidegate(&["graph"]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("graph_dot", out);
}

#[test]
fn graph_of_prod_as_mermaid() {
    let (code, out, err) = tidegate(&["graph", "--env", "prod", "--format", "mermaid"]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("graph_prod_mermaid", out);
}

#[test]
fn apply_order_of_dev_as_text() {
    let (code, out, err) = tidegate(&["graph", "--env", "dev", "--format", "text"]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("graph_dev_text", out);
}

#[test]
fn graph_of_an_unknown_environment_is_an_error() {
    let (code, _, err) = tidegate(&["graph", "--env", "qa"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown environment `qa` (environments: dev, staging, test, prod)"),
        "{err}"
    );
}
