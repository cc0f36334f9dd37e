//! `tidegate plan`: golden outputs of the bundled example (offline and
//! revision to revision in a real Git repository), a live plan against
//! moto and kube-sim through create → no-op → update/replace/delete, secrets
//! that never appear, Markdown split under GitHub's comment limit, and the
//! exit codes.
//!
//! Update the snapshots with
//! `INSTA_UPDATE=always cargo test --test integration plan` and review them.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;
use tidegate::graph::Graph;
use tidegate::model::Model;
use tidegate::observe::{self, Providers};
use tidegate::plan::{self, output, Counts, EnvPlan, ModulePlan, Plan, PlanSource, ResourcePlan};
use tidegate::provider::{Action, Provider, ProviderKind, ResourceId};
use tidegate::secrets::{Decrypted, Identities, IdentityOptions};

use super::support::{self, repo_root};
use super::support_moto::MotoServer;

/// Runs the real binary in `dir` with no age key reachable unless the
/// arguments name one.
fn tidegate_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let home = TempDir::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(args)
        .current_dir(dir)
        .env_remove("SOPS_AGE_KEY_FILE")
        .env_remove("SOPS_AGE_KEY")
        .env("XDG_CONFIG_HOME", home.path())
        .env("HOME", home.path())
        .output()
        .expect("tidegate runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8(out.stderr).expect("utf-8 stderr"),
    )
}

fn tidegate(args: &[&str]) -> (i32, String, String) {
    tidegate_in(&repo_root(), args)
}

// ---------------------------------------------------------------- offline

#[test]
fn offline_plan_of_the_bundled_example_in_every_format() {
    let (code, text, err) = tidegate(&["plan", "--offline"]);
    assert_eq!(code, 2, "changes → exit 2; {err}");
    assert!(!text.contains('\u{1b}'), "no colour when not a terminal");
    insta::assert_snapshot!("offline_text", text);

    let (code, md, _) = tidegate(&["plan", "--offline", "--format", "markdown"]);
    assert_eq!(code, 2);
    assert!(md.contains("| Environment | Create |"));
    insta::assert_snapshot!("offline_markdown", md);

    let (code, json, _) = tidegate(&["plan", "--offline", "--format", "json"]);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(v["schemaVersion"], 1);
    assert_eq!(v["source"]["mode"], "offline");
    assert_eq!(v["environments"][0]["counts"]["create"], 16);
    assert_eq!(v["environments"][3]["waitsFor"][0], "test");
    insta::assert_snapshot!("offline_json", json);

    let (code, coloured, _) = tidegate(&["plan", "--offline", "--env", "dev", "--color", "always"]);
    assert_eq!(code, 2);
    assert!(coloured.contains("\u{1b}["), "--color always colours");
}

#[test]
fn exit_codes_are_0_2_1() {
    // 1: the repository is invalid; an unknown environment.
    let (code, _, err) = tidegate(&[
        "plan",
        "--offline",
        "--repo",
        "tests/fixtures/repos/fail_cycle_across_modules",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cycle"), "{err}");
    let (code, _, err) = tidegate(&["plan", "--offline", "--env", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown environment `nope`"), "{err}");
    // 2: changes (offline everything is a create); 0: a revision against itself.
    let (code, _, _) = tidegate(&["plan", "--offline", "--env", "dev"]);
    assert_eq!(code, 2);
    let g = GitRepo::with_example();
    let (code, out, err) = tidegate_in(
        g.path(),
        &[
            "plan", "--base", "main", "--head", "main", "--format", "json",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["environments"][0]["counts"]["noOp"], 16);
    // 1: a revision that does not exist.
    let (code, _, err) = tidegate_in(g.path(), &["plan", "--base", "nope", "--head", "main"]);
    assert_eq!(code, 1, "{err}");
}

/// Issue 17: the values of `fail_aws_bad_values`, passed in through
/// `${var.*}`, `${input.*}` (and input defaults) instead of written in the
/// module: `plan --offline` refuses them (exit 1, no plan), each once, at
/// the var, input or default it was written in, like `validate`.
#[test]
fn offline_plan_refuses_bad_values_passed_through_vars_and_inputs() {
    let repo = "tests/fixtures/repos/fail_aws_bad_values_via_refs";
    let (code, out, err) = tidegate(&["plan", "--offline", "--repo", repo]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "no plan: {out}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains(": error: ")).collect();
    let cases = [
        (
            "environments/dev.yaml:10:14",
            "`10.50.0.0/33` is not an IPv4 CIDR block",
            "${var.vpcCidr}",
        ),
        (
            "environments/dev.yaml:11:16",
            "`banana` is not an IPv4 CIDR block",
            "${var.sshCidrs}",
        ),
        (
            "environments/dev.yaml:11:24",
            "`192.0.256.0/24` is not an IPv4 CIDR block",
            "${var.sshCidrs}",
        ),
        (
            "environments/dev.yaml:12:23",
            "`fromPort` 2222 is above `toPort` 22",
            "${var.sshPorts}",
        ),
        (
            "environments/dev.yaml:24:23",
            "tag `managed-by` is reserved",
            "${input.tags}",
        ),
        (
            "environments/dev.yaml:25:19",
            "tag `api-token` would hold a secret",
            "${secret.api.token}",
        ),
        (
            "modules/net/module.yaml:21:16",
            "`fromPort` 220000 is out of range",
            "${input.webPort}",
        ),
        (
            "modules/net/module.yaml:21:16",
            "`toPort` 220000 is out of range",
            "${input.webPort}",
        ),
        (
            "modules/net/module.yaml:24:16",
            "the rule has no source",
            "${input.webCidrs}",
        ),
    ];
    assert_eq!(lines.len(), cases.len(), "{err}");
    for (at, words, via) in cases {
        let hits: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with(&format!("{at}: error: ")) && l.contains(words))
            .collect();
        assert_eq!(hits.len(), 1, "`{words}` once at {at}:\n{err}");
        assert!(hits[0].contains(via), "{} names {via}", hits[0]);
    }
    // validate finds exactly the same problems.
    let (code, vout, _) = tidegate(&["validate", "--repo", repo]);
    assert_eq!(code, 1);
    let vlines: Vec<&str> = vout.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(vlines, lines);
}

/// `--revision REF` on validate, graph and plan reads the committed files
/// at REF from Git, not the working tree (here broken after the commit).
#[test]
fn revision_reads_the_commit_not_the_working_tree() {
    let g = GitRepo::with_example();
    let first = g.git(&["rev-parse", "HEAD"]);
    g.edit("environments/dev.yaml", "replicas: 1", "replicas: 3");
    g.commit("dev: three replicas");
    std::fs::write(
        g.path().join("environments/dev.yaml"),
        "kind: Environment\nspec: [unterminated\n",
    )
    .unwrap();

    let (code, _, _) = tidegate_in(g.path(), &["validate"]);
    assert_eq!(code, 1, "the working tree is broken");
    let (code, out, err) = tidegate_in(g.path(), &["validate", "--revision", "main"]);
    assert_eq!(code, 0, "{out}{err}");

    let (code, _, _) = tidegate_in(g.path(), &["graph", "--format", "text"]);
    assert_eq!(code, 1);
    let (code, out, err) = tidegate_in(
        g.path(),
        &[
            "graph",
            "--revision",
            "main",
            "--env",
            "dev",
            "--format",
            "text",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.trim().is_empty());

    let (code, _, _) = tidegate_in(g.path(), &["plan", "--offline"]);
    assert_eq!(code, 1);
    let replicas = |rev: &str| {
        let (code, out, err) = tidegate_in(
            g.path(),
            &[
                "plan",
                "--offline",
                "--revision",
                rev,
                "--env",
                "dev",
                "--format",
                "json",
            ],
        );
        assert_eq!(code, 2, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["environments"][0]["counts"]["create"], 16);
        let text = out.replace([' ', '\n'], "");
        let key = "\"path\":\"spec.replicas\",\"after\":";
        let at = text.find(key).expect("the plan sets spec.replicas");
        text[at + key.len()..].chars().next().unwrap()
    };
    assert_eq!(replicas("main"), '3', "main has three replicas");
    assert_eq!(replicas(&first), '1', "the first commit has one");
    let (code, _, err) = tidegate_in(g.path(), &["plan", "--offline", "--revision", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("names no commit"), "{err}");
}

/// Issue 17: `--revision HEAD` was refused (`revspec 'HEAD' not found`,
/// printed twice) because revisions were looked up in a bare cache holding
/// only branches and tags. Every revision git accepts now works, on
/// `--revision` and `--base/--head`, and an error is said once.
#[test]
fn revision_takes_every_revspec_git_accepts() {
    let g = GitRepo::with_example();
    let first = g.git(&["rev-parse", "HEAD"]);
    g.edit("environments/dev.yaml", "replicas: 1", "replicas: 3");
    g.commit("dev: three replicas");
    g.git(&["update-ref", "refs/remotes/origin/main", &first]);
    g.git(&["tag", "-a", "-m", "release", "v1", &first]);
    let replicas = |rev: &str| {
        let (code, out, err) = tidegate_in(
            g.path(),
            &[
                "plan",
                "--offline",
                "--revision",
                rev,
                "--env",
                "dev",
                "--format",
                "json",
            ],
        );
        assert_eq!(code, 2, "--revision {rev}: {err}");
        let text = out.replace([' ', '\n'], "");
        let key = "\"path\":\"spec.replicas\",\"after\":";
        let at = text.find(key).expect("the plan sets spec.replicas");
        text[at + key.len()..].chars().next().unwrap()
    };
    for (rev, want) in [
        ("HEAD", '3'),
        ("@", '3'),
        ("HEAD~1", '1'),
        ("main^", '1'),
        ("HEAD@{1}", '1'),
        ("origin/main", '1'),
        ("v1", '1'),
        (&first[..8], '1'),
        (":/three replicas", '3'),
    ] {
        assert_eq!(replicas(rev), want, "--revision {rev}");
    }
    for args in [
        &["validate", "--revision", "HEAD"][..],
        &["graph", "--revision", "HEAD~1", "--format", "text"],
        &[
            "plan",
            "--base",
            "origin/main",
            "--head",
            "HEAD",
            "--env",
            "dev",
        ],
    ] {
        let (code, out, err) = tidegate_in(g.path(), args);
        assert!(code == 0 || code == 2, "{args:?}: {out}{err}");
    }

    let (code, _, err) = tidegate_in(g.path(), &["validate", "--revision", "HEAD~5"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: revision \"HEAD~5\" names no commit in .: "),
        "{err}"
    );
    let (code, _, err) = tidegate_in(g.path(), &["plan", "--offline", "--revision", "nope"]);
    assert_eq!(code, 1);
    assert_eq!(err.matches("revspec 'nope' not found").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Issue 17: `--repo file:///path/repo.git` was joined to the working
/// directory as a relative path. A file:// URL names a local Git
/// repository (a checkout's `.git` or a bare one), read at `--revision`
/// (default HEAD); remote URLs are refused saying which forms `--repo`
/// takes.
#[test]
fn repo_takes_a_file_url() {
    let g = GitRepo::with_example();
    g.edit("environments/dev.yaml", "replicas: 1", "replicas: 3");
    let head = g.commit("dev: three replicas");
    let bare = TempDir::new().unwrap();
    let bare_path = bare.path().join("infra repo.git");
    crate::support::git(
        bare.path(),
        &[
            "clone",
            "-q",
            "--bare",
            &g.path().display().to_string(),
            "infra repo.git",
        ],
    );
    let elsewhere = TempDir::new().unwrap();
    let dot_git = format!("file://{}", g.path().join(".git").display());
    let bare_url = format!("file://{}", bare_path.display()).replace(' ', "%20");
    for (url, rev) in [
        (dot_git.as_str(), None),
        (bare_url.as_str(), None),
        (bare_url.as_str(), Some("main~1")),
    ] {
        let mut args = vec![
            "plan",
            "--offline",
            "--repo",
            url,
            "--env",
            "dev",
            "--format",
            "json",
        ];
        args.extend(rev.iter().flat_map(|r| ["--revision", *r]));
        let (code, out, err) = tidegate_in(elsewhere.path(), &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        let text = out.replace([' ', '\n'], "");
        let want = if rev.is_some() { "1" } else { "3" };
        assert!(
            text.contains(&format!("\"path\":\"spec.replicas\",\"after\":{want}")),
            "{args:?}: {out}"
        );
    }
    let (code, out, err) = tidegate_in(
        elsewhere.path(),
        &["validate", "--repo", &bare_url, "--format", "json"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = tidegate_in(
        elsewhere.path(),
        &[
            "plan", "--repo", &bare_url, "--base", "main~1", "--head", &head, "--env", "dev",
        ],
    );
    assert_eq!(code, 2, "{err}");

    for remote in ["https://example.com/infra.git", "git@example.com:infra.git"] {
        let (code, _, err) = tidegate_in(elsewhere.path(), &["validate", "--repo", remote]);
        assert_eq!(code, 1);
        assert!(
            err.contains("a remote Git URL cannot be read here"),
            "{err}"
        );
        assert!(
            err.contains("or a file:// URL of a local Git repository"),
            "{err}"
        );
    }
    let (code, _, err) = tidegate_in(
        elsewhere.path(),
        &["validate", "--repo", "file://relative/x"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("needs an absolute path"), "{err}");
}

/// Issue 17: without AWS_ENDPOINT_URL or credentials, a live plan printed
/// the same DNS failure three times (the SDK's causes, then its Debug
/// dump, then the chain again), without saying what to do. Now one line
/// names the environment, the endpoint and what to set.
#[test]
fn aws_without_endpoint_or_credentials_says_what_to_set() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    copy_dir(
        &repo_root().join("modules/network"),
        &d.join("modules/network"),
    );
    crate::stand::write_project(d);
    std::fs::create_dir_all(d.join("environments")).unwrap();
    std::fs::write(
        d.join("environments/dev.yaml"),
        "apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: dev\nspec:\n  targets:\n    aws:\n      region: eu-west-1\n  modules:\n    - name: network\n      source: modules/network\n      inputs:\n        cidr: 10.10.0.0/16\n        subnetCidrs: [10.10.1.0/24, 10.10.2.0/24]\n        availabilityZones: [eu-west-1a, eu-west-1b]\n        owner: team\n        product: shop\n",
    )
    .unwrap();
    let plan = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidegate"));
        cmd.args(["plan", "--env", "dev"])
            .current_dir(d)
            .env("HOME", d)
            .env("AWS_EC2_METADATA_DISABLED", "true");
        for var in [
            "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_EC2",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, err) = plan(&[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.starts_with("error: environment dev: "), "{err}");
    assert!(
        err.contains("no AWS credentials to call EC2 at https://ec2.eu-west-1.amazonaws.com"),
        "{err}"
    );
    assert!(
        err.contains("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        "{err}"
    );
    assert!(!err.contains("WARN"), "{err}");

    let (code, err) = plan(&[
        ("AWS_ENDPOINT_URL", "http://ec2.tidegate-test.invalid"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: environment dev: observing aws: aws target of environment dev: cannot reach EC2 at http://ec2.tidegate-test.invalid (observe "),
        "{err}"
    );
    assert!(err.contains("set AWS_ENDPOINT_URL"), "{err}");
    assert_eq!(err.matches("dns error").count(), 1, "{err}");
}

// ---------------------------------------------------------- base vs head

/// A real Git repository (made with `git`) holding a copy of the example.
struct GitRepo {
    dir: TempDir,
}

impl GitRepo {
    fn with_example() -> GitRepo {
        let dir = TempDir::new().unwrap();
        let root = repo_root();
        for sub in ["environments", "modules", "secrets"] {
            copy_dir(&root.join(sub), &dir.path().join(sub));
        }
        std::fs::copy(root.join(".sops.yaml"), dir.path().join(".sops.yaml")).unwrap();
        std::fs::copy(root.join("tidegate.yaml"), dir.path().join("tidegate.yaml")).unwrap();
        let g = GitRepo { dir };
        g.git(&["init", "-q", "-b", "main"]);
        g.commit("the example");
        g
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn git(&self, args: &[&str]) -> String {
        crate::support::git(self.path(), args)
    }

    fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    fn edit(&self, file: &str, from: &str, to: &str) {
        let p = self.path().join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{file} holds {from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    /// Sets a secret with the real `sops` and the example's demo key.
    fn sops_set(&self, env: &str, path: &str, value: &str) {
        let file = format!("secrets/{env}.sops.yaml");
        support::run_ok(
            Command::new(support::tool("sops"))
                .args(["set", &file, path, &format!("\"{value}\"")])
                .env(
                    "SOPS_AGE_KEY_FILE",
                    self.path().join(format!("secrets/demo-keys/{env}.agekey")),
                )
                .current_dir(self.path()),
        );
    }

    fn secret(&self, env: &str, path: &[&str]) -> String {
        let files = tidegate::load::read_dir(self.path()).unwrap();
        let ids = demo_identities(&self.path().join("secrets/demo-keys"));
        let model = tidegate::load::load(&files).unwrap();
        let d = tidegate::secrets::load_env(model.environment(env).unwrap(), &files, &ids).unwrap();
        let s = d.lookup(&format!("secrets/{env}.sops.yaml"), path).unwrap();
        s.expose_str().unwrap().to_string()
    }
}

fn demo_identities(dir: &Path) -> Identities {
    let opts = IdentityOptions {
        age_key_dir: Some(dir.to_path_buf()),
        ..IdentityOptions::default()
    };
    Identities::load(&opts, &|_| None).expect("demo identities")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

const CONF_BASE: &str = "          nginx.conf: |\n            worker_processes 2;\n            events {}\n            http {\n              server { listen 8080; }\n              keepalive_timeout 65;\n            }\n";

/// base: the example with a multi-line file in the web ConfigMap; head:
/// that file changed, a var changed (staging replicas), an immutable field
/// changed (test VPC CIDR), a module removed (prod web) and a secret
/// changed (dev db password, with the real sops).
fn pull_request() -> (GitRepo, String, String) {
    let g = GitRepo::with_example();
    g.edit(
        "modules/web/module.yaml",
        "          APP_SERVERS: ${input.appServerIps.0}:8080,${input.appServerIps.1}:8080\n",
        &format!(
            "          APP_SERVERS: ${{input.appServerIps.0}}:8080,${{input.appServerIps.1}}:8080\n{CONF_BASE}"
        ),
    );
    let base = g.commit("a config file for the web tier");
    g.edit(
        "modules/web/module.yaml",
        "              keepalive_timeout 65;\n",
        "              keepalive_timeout 30;\n              gzip on;\n",
    );
    g.edit("environments/staging.yaml", "replicas: 2", "replicas: 4");
    g.edit(
        "environments/test.yaml",
        "cidr: 10.30.0.0/16",
        "cidr: 10.31.0.0/16",
    );
    let prod = std::fs::read_to_string(g.path().join("environments/prod.yaml")).unwrap();
    let start = prod
        .find("    - name: web\n")
        .expect("prod has a web instance");
    let end = start
        + prod[start..]
            .find("  policy:")
            .expect("prod has a policy block");
    let mut cut = prod.clone();
    cut.replace_range(start..end, "");
    std::fs::write(g.path().join("environments/prod.yaml"), cut).unwrap();
    g.sops_set("dev", "[\"db\"][\"password\"]", "rotated-db-password-7c1f");
    let head = g.commit("the change under review");
    (g, base, head)
}

fn redact(s: &str, commits: &[&str]) -> String {
    let mut out = s.to_string();
    for (i, c) in commits.iter().enumerate() {
        out = out.replace(c, &format!("<commit-{i}>"));
        out = out.replace(&c[..12], &format!("<commit-{i}>"));
    }
    out
}

#[test]
fn base_head_plan_of_a_pull_request() {
    let (g, base, head) = pull_request();
    assert!(
        std::fs::read_to_string(g.path().join("environments/prod.yaml"))
            .unwrap()
            .contains("name: app-servers"),
        "only the web instance was removed"
    );
    let new_pw = g.secret("dev", &["db", "password"]);
    assert_eq!(new_pw, "rotated-db-password-7c1f");
    let token = g.secret("dev", &["api", "token"]);
    g.git(&["checkout", "-q", &base]);
    let old_pw = g.secret("dev", &["db", "password"]);
    g.git(&["checkout", "-q", "main"]);
    let keys = g.path().join("secrets/demo-keys");
    let keys = keys.to_str().unwrap();

    let mut outputs = Vec::new();
    for format in ["text", "markdown", "json"] {
        let (code, out, err) = tidegate_in(
            g.path(),
            &[
                "plan",
                "--base",
                &base,
                "--head",
                "main",
                "--format",
                format,
                "--age-key-dir",
                keys,
            ],
        );
        assert_eq!(code, 2, "{err}");
        outputs.push(redact(&out, &[&base, &head]));
    }
    for (out, secret) in outputs
        .iter()
        .flat_map(|o| [(o, &new_pw), (o, &old_pw), (o, &token)])
    {
        assert!(!out.contains(secret.as_str()), "a secret leaked:\n{out}");
    }
    let v: serde_json::Value = serde_json::from_str(&outputs[2]).unwrap();
    assert_eq!(v["source"]["mode"], "revisions");
    let env = |name: &str| {
        v["environments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap()
            .clone()
    };
    let resource = |e: &serde_json::Value, id: &str| {
        e["modules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m["resources"].as_array().unwrap().clone())
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {}", e["name"]))
    };
    // The changed secret is marked changed; the unchanged one is not.
    let dev = env("dev");
    let secret = resource(&dev, "web.secret");
    assert_eq!(secret["action"]["type"], "update");
    assert_eq!(
        secret["changes"],
        serde_json::json!([{"op": "sensitive", "path": "stringData.db-password"}])
    );
    let app_a = resource(&dev, "app-servers.app_a");
    assert_eq!(app_a["action"]["type"], "replace");
    assert!(app_a["action"]["reasons"][0]
        .as_str()
        .unwrap()
        .contains("userData"));
    // A changed var.
    let staging = env("staging");
    let deploy = resource(&staging, "web.deployment");
    assert_eq!(deploy["action"]["type"], "update");
    assert_eq!(deploy["changes"][0]["path"], "spec.replicas");
    assert_eq!(deploy["changes"][0]["after"], 4);
    // A replaced resource, with the reason.
    let vpc = resource(&env("test"), "network.vpc");
    assert_eq!(vpc["action"]["type"], "replace");
    assert_eq!(
        vpc["action"]["reasons"][0],
        "cidrBlock changes from 10.30.0.0/16 to 10.31.0.0/16 (immutable)"
    );
    // A removed module: its resources are deletes, run last.
    let prod = env("prod");
    assert_eq!(prod["counts"]["delete"], 6);
    assert_eq!(
        resource(&prod, "web.deployment")["action"]["type"],
        "delete"
    );
    // Multi-line fields as unified diffs.
    assert!(
        outputs[0].contains("-  keepalive_timeout 65;"),
        "{}",
        outputs[0]
    );
    assert!(outputs[0].contains("+  gzip on;"));
    assert!(outputs[1].contains("<details>"));

    insta::assert_snapshot!("revisions_text", outputs[0]);
    insta::assert_snapshot!("revisions_markdown", outputs[1]);
    insta::assert_snapshot!("revisions_json", outputs[2]);

    // Without a key (a pull request from a fork) the secrets are judged by
    // their ciphertexts, and still never shown.
    let (code, out, err) = tidegate_in(
        g.path(),
        &["plan", "--base", &base, "--head", &head, "--env", "dev"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        out.contains("stringData.db-password: (sensitive value changed)"),
        "{out}"
    );
    assert!(out.contains("secrets not decrypted"), "{out}");
    for s in [&new_pw, &old_pw, &token] {
        assert!(!out.contains(s.as_str()));
    }
    // --out-dir writes the parts and prints their paths.
    let parts = TempDir::new().unwrap();
    let (code, out, _) = tidegate_in(
        g.path(),
        &[
            "plan",
            "--base",
            &base,
            "--head",
            &head,
            "--format",
            "markdown",
            "--out-dir",
            parts.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2);
    let first = parts.path().join("part-1.md");
    assert_eq!(out.trim(), first.display().to_string());
    assert!(std::fs::read_to_string(first)
        .unwrap()
        .starts_with("## tidegate plan"));
}

// ------------------------------------------------------------ markdown split

fn huge_plan() -> Plan {
    let mut resources = Vec::new();
    for i in 0..2_000 {
        let changes = (0..18)
            .map(|j| tidegate::diff::FieldChange::Change {
                path: format!("data.key{j}"),
                before: tidegate::value::Value::String(format!("old value {i}-{j}")),
                after: tidegate::value::Value::String(format!("new value {i}-{j} ```")),
            })
            .collect();
        resources.push(ResourcePlan {
            id: ResourceId {
                module: format!("m{}", i / 500),
                name: format!("r{i:04}"),
            },
            provider: ProviderKind::Kubernetes,
            kind: "v1/ConfigMap".into(),
            action: Action::Update,
            step: 1,
            external_id: None,
            origin: None,
            changes,
        });
    }
    // One resource whose own diff is larger than a comment.
    let big: String = (0..6_000).map(|i| format!("line {i}\n")).collect();
    resources.push(ResourcePlan {
        id: ResourceId {
            module: "m9".into(),
            name: "huge".into(),
        },
        provider: ProviderKind::Kubernetes,
        kind: "v1/ConfigMap".into(),
        action: Action::Create,
        step: 1,
        external_id: None,
        origin: None,
        changes: vec![tidegate::diff::FieldChange::Add {
            path: "data.file".into(),
            after: tidegate::value::Value::String(big),
        }],
    });
    let mut modules: Vec<ModulePlan> = Vec::new();
    for r in resources {
        match modules.iter_mut().find(|m| m.name == r.id.module) {
            Some(m) => m.resources.push(r),
            None => modules.push(ModulePlan {
                name: r.id.module.clone(),
                source: format!("modules/{}", r.id.module),
                counts: Counts::default(),
                resources: vec![r],
            }),
        }
    }
    for m in &mut modules {
        m.counts.update = m.resources.len();
    }
    let counts = Counts {
        update: 2_001,
        ..Counts::default()
    };
    Plan::new(
        PlanSource::Offline,
        vec![EnvPlan {
            name: "dev".into(),
            owner: "dev".into(),
            waits_for: Vec::new(),
            counts,
            modules,
            order: Vec::new(),
            policy: None,
            policy_errors: Vec::new(),
            notes: Vec::new(),
            promotion: Vec::new(),
            guards: Vec::new(),
            target: None,
        }],
    )
}

#[test]
fn a_huge_plan_splits_into_valid_markdown_parts_under_the_cap() {
    let plan = huge_plan();
    let lines = output::text(&plan, false).lines().count();
    assert!(lines > 40_000, "the plan has {lines} lines");
    let parts = output::markdown(&plan);
    assert!(parts.len() > 3, "{} parts", parts.len());
    for (i, p) in parts.iter().enumerate() {
        let n = p.chars().count();
        assert!(
            n < output::COMMENT_LIMIT,
            "part {} has {n} characters",
            i + 1
        );
        assert!(p.starts_with(&format!(
            "## tidegate plan (part {} of {})",
            i + 1,
            parts.len()
        )));
        // Every fence opened is closed with the same fence, inside the part.
        let mut open: Option<String> = None;
        for l in p.lines() {
            let ticks: String = l.chars().take_while(|c| *c == '`').collect();
            if ticks.len() >= 3 {
                match &open {
                    None => open = Some(ticks),
                    Some(f) if *f == ticks && l.trim() == ticks => open = None,
                    Some(_) => {}
                }
            }
        }
        assert!(open.is_none(), "part {} leaves a code block open", i + 1);
        assert_eq!(
            p.matches("<details>").count(),
            p.matches("</details>").count(),
            "part {}",
            i + 1
        );
    }
    let all = parts.concat();
    assert!(all.contains("r0000") && all.contains("r1999") && all.contains("line 5999"));
}

// ------------------------------------------------------------------- live

const NETWORK: &str = r#"apiVersion: tidegate.dev/v1
kind: Module
metadata:
  name: network
spec:
  inputs:
    cidr:
      type: string
  outputs:
    vpc_id:
      value: ${resource.vpc.id}
  resources:
    - name: vpc
      provider: aws
      type: vpc
      spec:
        cidrBlock: ${input.cidr}
        tags:
          environment: ${env.name}
          owner: platform
          product: shop
    - name: web_sg
      provider: aws
      type: security_group
      spec:
        vpcId: ${resource.vpc.id}
        groupName: web
        description: web tier
        ingress:
          - protocol: tcp
            fromPort: 443
            toPort: 443
            cidrBlocks: [0.0.0.0/0]
        tags:
          environment: ${env.name}
          owner: platform
          product: shop
"#;

const APP: &str = r#"apiVersion: tidegate.dev/v1
kind: Module
metadata:
  name: app
spec:
  inputs:
    vpcId:
      type: string
    greeting:
      type: string
    password:
      type: string
  resources:
    - name: namespace
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: Namespace
        metadata:
          name: app-${env.name}
    - name: config
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: app-config
          namespace: ${resource.namespace.metadata.name}
        data:
          VPC_ID: ${input.vpcId}
          app.conf: |
            greeting = ${input.greeting}
            port = 8080
            workers = 4
    - name: extra
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: app-extra
          namespace: ${resource.namespace.metadata.name}
        data:
          KEEP: "no"
    - name: secret
      provider: kubernetes
      manifest:
        apiVersion: v1
        kind: Secret
        metadata:
          name: app-secret
          namespace: ${resource.namespace.metadata.name}
        type: Opaque
        stringData:
          password: ${input.password}
"#;

const DEV: &str = r#"apiVersion: tidegate.dev/v1
kind: Environment
metadata:
  name: dev
spec:
  targets:
    kubernetes:
      context: dev
    aws:
      region: us-east-1
  vars:
    cidr: 10.20.0.0/16
    greeting: hello
  secrets:
    - secrets/dev.sops.yaml
  modules:
    - name: network
      source: modules/network
      inputs:
        cidr: ${var.cidr}
    - name: app
      source: modules/app
      inputs:
        vpcId: ${module.network.vpc_id}
        greeting: ${var.greeting}
        password: ${secret.db.password}
"#;

/// A small repository on disk: network (AWS) and app (Kubernetes), the
/// example's dev secrets and demo key.
struct LiveRepo {
    dir: TempDir,
}

impl LiveRepo {
    fn new() -> LiveRepo {
        let dir = TempDir::new().unwrap();
        let w = |p: &str, t: &str| {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, t).unwrap();
        };
        w("environments/dev.yaml", DEV);
        crate::stand::write_project(dir.path());
        w("modules/network/module.yaml", NETWORK);
        w("modules/app/module.yaml", APP);
        let root = repo_root();
        std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
        std::fs::copy(
            root.join("secrets/dev.sops.yaml"),
            dir.path().join("secrets/dev.sops.yaml"),
        )
        .unwrap();
        LiveRepo { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn edit(&self, file: &str, from: &str, to: &str) {
        let p = self.path().join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{file} holds {from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    fn load(&self) -> (Model, Graph, Decrypted) {
        let files = tidegate::load::read_dir(self.path()).unwrap();
        let checked = tidegate::cli::check(&files).unwrap_or_else(|r| panic!("{r}"));
        let ids = demo_identities(&repo_root().join("secrets/demo-keys"));
        let secrets =
            tidegate::secrets::load_env(checked.model.environment("dev").unwrap(), &files, &ids)
                .expect("decrypt");
        (checked.model, checked.graph, secrets)
    }
}

struct Targets {
    moto: MotoServer,
    sim: kube_sim::Handle,
    kubeconfig: PathBuf,
    _dir: TempDir,
}

impl Targets {
    async fn start() -> Targets {
        let moto = MotoServer::start();
        let sim = kube_sim::Simulator::start(kube_sim::Config {
            contexts: vec!["dev".into()],
            ..kube_sim::Config::default()
        })
        .await
        .expect("simulator starts");
        let dir = TempDir::new().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        sim.kubeconfig(&kubeconfig).unwrap();
        Targets {
            moto,
            sim,
            kubeconfig,
            _dir: dir,
        }
    }

    async fn providers(&self, model: &Model) -> Providers {
        let aws = super::aws::provider("dev", &self.moto.endpoint);
        let target = model.environment("dev").unwrap().target(None);
        let kube = tidegate::provider::kubernetes::Kubernetes::connect_kubeconfig(
            &self.kubeconfig,
            &target,
            tidegate::provider::kubernetes::Options::default(),
        )
        .await
        .expect("kube provider");
        let _ = &self.sim;
        Providers::from_parts("dev", [Box::new(aws) as Box<dyn Provider>, Box::new(kube)])
    }
}

/// Applies the desired state with the providers directly, level by level
/// (so each level sees the attributes of the ones before), prunes what Git
/// no longer has and records the Kubernetes inventory.
async fn apply(model: &Model, graph: &Graph, providers: &Providers, secrets: &Decrypted) {
    let kinds = observe::scopes_of(graph, "dev");
    for level in graph.levels("dev") {
        let live = observe::observe_env(providers, &kinds).await.unwrap();
        let desired = plan::render_desired(model, "dev", Some(&live), secrets, None).unwrap();
        for id in level {
            let d = desired.iter().find(|d| d.id == id).unwrap();
            let node = graph.node("dev", &id).unwrap();
            let p = providers.get(node.provider).unwrap();
            p.apply(d, live.get(&id))
                .await
                .unwrap_or_else(|e| panic!("{id}: {e}"));
        }
    }
    let live = observe::observe_env(providers, &kinds).await.unwrap();
    for (id, o) in &live.resources {
        if graph.node("dev", id).is_none() {
            providers
                .get(o.provider)
                .unwrap()
                .delete(&o.live)
                .await
                .unwrap();
        }
    }
    let live = observe::observe_env(providers, &kinds).await.unwrap();
    for kind in [ProviderKind::Kubernetes, ProviderKind::Aws] {
        let owned: Vec<_> = live
            .resources
            .values()
            .filter(|o| o.provider == kind)
            .map(|o| o.live.clone())
            .collect();
        providers
            .get(kind)
            .unwrap()
            .record_inventory(&owned)
            .await
            .unwrap();
    }
}

async fn live_plan(repo: &LiveRepo, targets: &Targets) -> (Plan, Model, Graph, Decrypted) {
    let (model, graph, secrets) = repo.load();
    let providers = targets.providers(&model).await;
    let dev = model.environment("dev").expect("the fixture has dev");
    let input = plan::PlanInput {
        concurrency: 4,
        ..plan::PlanInput::new(&model, &graph, dev, &providers, &secrets)
    };
    let env = plan::plan_env(&input)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (
        Plan::new(PlanSource::Live, vec![env]),
        model,
        graph,
        secrets,
    )
}

fn action<'a>(p: &'a Plan, id: &str) -> &'a ResourcePlan {
    p.environments[0]
        .resources()
        .find(|r| r.id.to_string() == id)
        .unwrap_or_else(|| panic!("{id} in plan"))
}

fn all_formats(p: &Plan) -> Vec<String> {
    let mut v = vec![
        output::text(p, false),
        output::text(p, true),
        output::json(p),
    ];
    v.extend(output::markdown(p));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_plan_against_moto_and_kube_sim() {
    let targets = Targets::start().await;
    let repo = LiveRepo::new();
    let old_pw = {
        let (_, _, s) = repo.load();
        s.lookup("secrets/dev.sops.yaml", &["db", "password"])
            .unwrap()
            .expose_str()
            .unwrap()
            .to_string()
    };

    // 1. Nothing exists: every resource is a create, in graph order.
    let (p, model, graph, secrets) = live_plan(&repo, &targets).await;
    let c = p.environments[0].counts;
    assert_eq!(
        (c.create, c.changes()),
        (6, 6),
        "{}",
        output::text(&p, false)
    );
    assert_eq!(
        p.environments[0].order[0].resources,
        ["app.namespace", "network.vpc"]
    );
    let text = output::text(&p, false);
    assert!(
        text.contains("+ data.VPC_ID: (known after apply)"),
        "{text}"
    );
    assert!(text.contains("password: (sensitive)"), "{text}");
    for out in all_formats(&p) {
        assert!(!out.contains(&old_pw), "secret leaked:\n{out}");
    }

    // 2. Applied with the providers directly: nothing to do.
    let providers = targets.providers(&model).await;
    apply(&model, &graph, &providers, &secrets).await;
    let (p, ..) = live_plan(&repo, &targets).await;
    let c = p.environments[0].counts;
    assert_eq!(c.changes(), 0, "{}", output::text(&p, false));
    assert_eq!(c.no_op, 6);
    assert!(!p.has_changes());
    assert!(output::text(&p, false).contains("No changes."));

    // 3. A var, an immutable field, a resource removed, a secret rotated.
    repo.edit(
        "environments/dev.yaml",
        "greeting: hello",
        "greeting: bonjour",
    );
    repo.edit(
        "environments/dev.yaml",
        "cidr: 10.20.0.0/16",
        "cidr: 10.21.0.0/16",
    );
    let app = std::fs::read_to_string(repo.path().join("modules/app/module.yaml")).unwrap();
    let start = app.find("    - name: extra\n").unwrap();
    let end = app.find("    - name: secret\n").unwrap();
    let mut cut = app.clone();
    cut.replace_range(start..end, "");
    std::fs::write(repo.path().join("modules/app/module.yaml"), cut).unwrap();
    support::run_ok(
        Command::new(support::tool("sops"))
            .args([
                "set",
                "secrets/dev.sops.yaml",
                "[\"db\"][\"password\"]",
                "\"rotated-live-pw-93ab\"",
            ])
            .env(
                "SOPS_AGE_KEY_FILE",
                repo_root().join("secrets/demo-keys/dev.agekey"),
            )
            .current_dir(repo.path()),
    );

    let (p, ..) = live_plan(&repo, &targets).await;
    let text = output::text(&p, false);
    let config = action(&p, "app.config");
    assert_eq!(config.action, Action::Update, "{text}");
    assert!(text.contains("-greeting = hello"), "{text}");
    assert!(text.contains("+greeting = bonjour"), "{text}");
    match &action(&p, "network.vpc").action {
        Action::Replace { reasons } => assert!(
            reasons
                .iter()
                .any(|r| r.contains("cidrBlock") && r.contains("10.21.0.0/16")),
            "{reasons:?}"
        ),
        other => panic!("vpc: {other:?}\n{text}"),
    }
    let extra = action(&p, "app.extra");
    assert_eq!(extra.action, Action::Delete);
    assert!(extra.external_id.is_some());
    let secret = action(&p, "app.secret");
    assert_eq!(secret.action, Action::Update, "{text}");
    assert!(
        secret
            .changes
            .iter()
            .all(|c| matches!(c, tidegate::diff::FieldChange::Sensitive { .. })),
        "{:?}",
        secret.changes
    );
    assert!(text.contains("(sensitive value changed)"), "{text}");
    assert_eq!(action(&p, "app.namespace").action, Action::NoOp);
    for out in all_formats(&p) {
        for s in [old_pw.as_str(), "rotated-live-pw-93ab"] {
            assert!(!out.contains(s), "secret leaked:\n{out}");
        }
    }
    let md = output::markdown(&p).concat();
    assert!(md.contains("| dev | 0 | 2 | 1 | 1 |"), "{md}");
}
