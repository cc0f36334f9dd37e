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

/// The lines of a report that name a problem, without the `error:` text.
fn places(report: &str) -> Vec<&str> {
    report
        .lines()
        .filter_map(|l| l.split_once(": error: ").map(|(at, _)| at))
        .collect()
}

/// Issue 17: values of the right type that EC2 refuses (a CIDR that is
/// not one, a bad octet in a rule, a /33, ports out of range or reversed,
/// a rule without a source, a reserved tag, a secret passed into a tag)
/// fail validate, each named once at the line where it was written.
#[test]
fn validate_names_each_bad_aws_value_once_at_its_own_line() {
    let repo = "tests/fixtures/repos/fail_aws_bad_values";
    let (code, out, err) = tidegate(&["validate", "--repo", repo]);
    assert_eq!(code, 1, "{out}{err}");
    insta::assert_snapshot!("validate_aws_bad_values", out);
    let cases = [
        (
            "modules/net/module.yaml:37:26",
            "`banana` is not an IPv4 CIDR block",
        ),
        (
            "modules/net/module.yaml:25:20",
            "`10.50.0.0/33` is not an IPv4 CIDR block: /33",
        ),
        (
            "modules/net/module.yaml:40:21",
            "`toPort` 220000 is out of range",
        ),
        (
            "modules/net/module.yaml:43:23",
            "`fromPort` 2222 is above `toPort` 22",
        ),
        ("modules/net/module.yaml:46:13", "the rule has no source"),
        (
            "modules/net/module.yaml:18:23",
            "tag `managed-by` is reserved",
        ),
        (
            "environments/dev.yaml:15:19",
            "tag `api-token` would hold a secret",
        ),
        (
            "modules/net/module.yaml:52:26",
            "`192.0.256.0/24` is not an IPv4 CIDR block: 256 is not an octet",
        ),
    ];
    let mut found = places(&out);
    found.sort();
    let mut want: Vec<&str> = cases.iter().map(|(at, _)| *at).collect();
    want.sort();
    assert_eq!(found, want, "each case once, nothing else:\n{out}");
    for (at, words) in cases {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{at}: error: ")))
            .unwrap_or_else(|| panic!("no line at {at}:\n{out}"));
        assert!(line.contains(words), "{at}: expected `{words}` in `{line}`");
    }
    assert!(!out.contains("quote the tag value"), "{out}");
    assert!(out.ends_with("invalid: 8 error(s)\n"), "{out}");

    // The same problems stop `apply` before it reaches any endpoint.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["apply", "--repo", repo, "--env", "dev"])
        .current_dir(super::support::repo_root())
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .expect("tidegate runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.ends_with("invalid: 8 error(s); nothing applied\n"),
        "{text}"
    );
    assert_eq!(places(&text).len(), 8, "{text}");
}

/// Issue 20: Kubernetes objects are checked offline against the schema
/// of their kind (bundled Kubernetes 1.37, and the CRDs the repository
/// declares): a misspelt kind or group, an unknown field, a wrong type
/// (literal, or through a var), a missing required field, a bad name and
/// a bad label value each fail validate at the line that wrote them; a
/// kind nobody declared is a warning. `plan --offline` and `apply` stop on
/// the same problems before any network.
#[test]
fn validate_checks_kubernetes_objects_against_their_schema() {
    let repo = "tests/fixtures/repos/fail_kubernetes_schema";
    let (code, out, err) = tidegate(&["validate", "--repo", repo]);
    assert_eq!(code, 1, "{out}{err}");
    insta::assert_snapshot!("validate_kubernetes_schema", out);
    let cases = [
        ("modules/web/module.yaml:14:15", "unknown kind `Deploymnet` in apps/v1"),
        ("modules/web/module.yaml:21:21", "unknown apiVersion `app/v1`"),
        (
            "modules/web/module.yaml:48:37",
            "unknown field `imagePullPolicyy` in Container (spec.template.spec.containers[0])",
        ),
        (
            "modules/web/module.yaml:50:38",
            "`containerPort` in ContainerPort (spec.template.spec.containers[0].ports[0]) must be an integer, not a string",
        ),
        (
            "environments/dev.yaml:10:15",
            "`replicas` in DeploymentSpec (spec) must be an integer, not a string",
        ),
        (
            "modules/web/module.yaml:51:19",
            "missing required field `name` in Container (spec.template.spec.containers[1])",
        ),
        (
            "modules/web/module.yaml:58:17",
            "`Web_Service` is not a valid Service name",
        ),
        (
            "modules/web/module.yaml:34:19",
            "label value `front end` of `tier` is not valid",
        ),
        (
            "modules/web/module.yaml:108:19",
            "unknown field `colour` in `spec` of Gadget",
        ),
    ];
    let mut found = places(&out);
    found.sort();
    let mut want: Vec<&str> = cases.iter().map(|(at, _)| *at).collect();
    want.sort();
    assert_eq!(found, want, "each case once, nothing else:\n{out}");
    for (at, words) in cases {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{at}: error: ")))
            .unwrap_or_else(|| panic!("no line at {at}:\n{out}"));
        assert!(line.contains(words), "{at}: expected `{words}` in `{line}`");
    }
    assert!(
        out.contains(
            "modules/web/module.yaml:68:15: warning: not checked: Widget (example.com/v1)"
        ),
        "{out}"
    );
    assert!(
        out.ends_with("invalid: 9 error(s), 1 warning(s)\n"),
        "{out}"
    );
    let (code, json, _) = tidegate(&["validate", "--format", "json", "--repo", repo]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(9));
    assert_eq!(
        v["errors"][0].get("severity"),
        None,
        "errors stay as they were"
    );
    assert_eq!(v["warnings"][0]["severity"], "warning");
    assert_eq!(v["warnings"][0]["line"], 68);

    let (code, _, err) = tidegate(&["plan", "--offline", "--repo", repo]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(places(&err).len(), 9, "{err}");

    let (code, out, _) = tidegate(&["apply", "--repo", repo, "--env", "dev"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.ends_with("invalid: 9 error(s), 1 warning(s); nothing applied\n"),
        "{out}"
    );
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

/// Issue 17: prod's `:latest` image came through the `webImage` var and
/// the web module's `image` input; the finding named only the template
/// line. It now names where the value was written too, in text and JSON.
#[test]
fn policy_findings_name_where_the_value_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = super::support::repo_root();
    for sub in ["environments", "modules", "secrets"] {
        copy_tree(&root.join(sub), &dir.path().join(sub));
    }
    std::fs::copy(root.join(".sops.yaml"), dir.path().join(".sops.yaml")).unwrap();
    std::fs::copy(root.join("tidegate.yaml"), dir.path().join("tidegate.yaml")).unwrap();
    let prod = dir.path().join("environments/prod.yaml");
    let text = std::fs::read_to_string(&prod).unwrap();
    let at = text.find("webImage: ").expect("prod sets webImage");
    let end = at + text[at..].find('\n').unwrap();
    let edited = format!(
        "{}webImage: registry.example.com/shop/web:latest{}",
        &text[..at],
        &text[end..]
    );
    std::fs::write(&prod, edited).unwrap();
    let line = text[..at].matches('\n').count() + 1;

    let repo = dir.path().to_str().unwrap();
    let (code, out, _) = tidegate(&["validate", "--repo", repo]);
    assert_eq!(code, 1, "{out}");
    let finding = out
        .lines()
        .position(|l| l.contains("error[image-digest] web.deployment"))
        .unwrap_or_else(|| panic!("{out}"));
    let next = out.lines().nth(finding + 1).unwrap();
    assert!(
        next.starts_with(&format!(
            "    value written at environments/prod.yaml:{line}:15 (var `webImage`), through ${{input.image}} at modules/web/module.yaml:"
        )),
        "{out}"
    );
    assert!(
        next.contains("<- ${var.webImage} at environments/prod.yaml:"),
        "{out}"
    );

    let (_, out, _) = tidegate(&["validate", "--repo", repo, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let prod = v["policy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["environment"] == "prod")
        .expect("a prod report");
    let trace = &prod["findings"][0]["trace"];
    assert_eq!(trace[0]["what"], "${input.image}", "{prod}");
    assert_eq!(trace[2]["what"], "var `webImage`", "{prod}");
    assert_eq!(trace[2]["origin"]["file"], "environments/prod.yaml");
    assert_eq!(trace[2]["origin"]["line"], line);
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
