//! Promotion controls through the real `tidegate` binary on the stand
//! (kube-sim or the real kube-apiserver): a manual environment waits for
//! the approval of each commit (CLI and HTTP), a hold freezes, a rollback
//! pins an earlier commit while newer ones arrive, a soak survives SIGKILL
//! of the reconciler, and a deny window holds applies and heals until it
//! ends. Time is the injectable clock (`TIDEGATE_CLOCK_FILE`), never a
//! sleep for the rules themselves.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use tempfile::TempDir;

use crate::stand::{commit_files, config_map, http_get, Kube, Ports, Stand};

fn env_doc(name: &str, after: Option<&str>, rev: u32, promotion: &str) -> String {
    let after = after.map(|a| format!("  after: {a}\n")).unwrap_or_default();
    format!(
        "apiVersion: tidegate.dev/v1
kind: Environment
metadata:
  name: {name}
spec:
{after}  targets:
    kubernetes:
      context: {name}
  vars:
    rev: \"{rev}\"
  drift:
    interval: 10s
{promotion}  modules:
    - name: app
      source: modules/app
      inputs:
        rev: ${{var.rev}}
"
    )
}

const MODULE: &str = "apiVersion: tidegate.dev/v1
kind: Module
metadata:
  name: app
spec:
  inputs:
    rev:
      type: string
  resources:
    - name: ns
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
          name: app
          namespace: app-${env.name}
        data:
          rev: ${input.rev}
";

/// dev < prod at `rev`, prod with `promotion` (indented under `spec:`).
fn commit(dir: &Path, rev: u32, promotion: &str) -> String {
    commit_files(
        dir,
        &[
            ("environments/dev.yaml", env_doc("dev", None, rev, "")),
            (
                "environments/prod.yaml",
                env_doc("prod", Some("dev"), rev, promotion),
            ),
            ("modules/app/module.yaml", MODULE.to_string()),
        ],
    )
}

async fn status(port: u16) -> serde_json::Value {
    let (code, body) = http_get(port, "/api/v1/status").await.expect("status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn env<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    static NONE: serde_json::Value = serde_json::Value::Null;
    s["environments"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == name))
        .unwrap_or(&NONE)
}

/// Polls the status until `cond` holds for it (a bound so a broken build
/// fails instead of hanging).
async fn until(
    port: u16,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let end = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((200, body)) = http_get(port, "/api/v1/status").await {
            let s: serde_json::Value = serde_json::from_str(&body).unwrap();
            if cond(&s) {
                return s;
            }
            if std::time::Instant::now() > end {
                panic!("{what}: last status {s:#}");
            }
        } else if std::time::Instant::now() > end {
            panic!("{what}: no status");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn good_at(s: &serde_json::Value, name: &str, commit: &str) -> bool {
    let e = env(s, name);
    e["lastGood"] == commit && e["healthy"] == true && e["gate"]["state"] == "converged"
}

fn waits(s: &serde_json::Value, name: &str, reason: &str) -> bool {
    let g = &env(s, name)["gate"];
    g["state"] == "waiting" && g["reason"] == reason
}

async fn rev_in(stand: &Stand, env: &str) -> Option<String> {
    let cm = config_map(stand, env, &format!("app-{env}"), "app").await?;
    cm.data?.get("rev").cloned()
}

/// POST a control request with the API token.
async fn control(port: u16, token: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, text.split_once("\r\n\r\n").unwrap().1.to_string())
}

async fn metrics(port: u16) -> String {
    http_get(port, "/metrics").await.expect("metrics").1
}

/// A manual prod: each commit waits for its own approval (CLI, then HTTP);
/// a hold freezes it; a rollback pins an earlier commit while newer ones
/// arrive; a release lets the newest in again.
async fn manual_approval_hold_and_rollback_through_the_binary(kube: Kube) {
    let stand = Stand::on(kube, &["dev", "prod"]).await;
    let repo = TempDir::new().unwrap();
    let manual = "  promotion:\n    mode: manual\n";
    let c1 = commit(repo.path(), 1, manual);
    let token_file = stand.dir.path().join("api-token");
    std::fs::write(&token_file, "s3cret-token-for-tests\n").unwrap();
    let ports = Ports::free();
    let mut child = stand
        .reconcile(repo.path(), ports)
        .arg("--api-token-file")
        .arg(&token_file)
        .spawn()
        .unwrap();
    let token = "s3cret-token-for-tests";

    // dev goes; prod waits for an approval of c1.
    let s = until(ports.api, "prod waits for approval", |s| {
        good_at(s, "dev", &c1) && waits(s, "prod", "approval")
    })
    .await;
    let detail = env(&s, "prod")["gate"]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("tidegate approve prod --revision"),
        "{detail}"
    );
    assert!(metrics(ports.probe)
        .await
        .contains("tidegate_environment_waiting{environment=\"prod\",reason=\"approval\"} 1"));
    assert_eq!(
        rev_in(&stand, "prod").await,
        None,
        "nothing applied to prod"
    );

    // Approved from the CLI: prod applies c1.
    let (code, out) = stand
        .cli(
            repo.path(),
            &[
                "approve",
                "prod",
                "--revision",
                &c1[..10],
                "--reason",
                "CAB-1",
            ],
        )
        .await;
    assert_eq!(code, 0, "{out}");
    until(ports.api, "prod at c1", |s| good_at(s, "prod", &c1)).await;
    assert_eq!(rev_in(&stand, "prod").await.as_deref(), Some("1"));

    // c2: the approval of c1 does not count.
    let c2 = commit(repo.path(), 2, manual);
    until(ports.api, "prod waits for c2's approval", |s| {
        good_at(s, "dev", &c2) && waits(s, "prod", "approval")
    })
    .await;
    assert_eq!(rev_in(&stand, "prod").await.as_deref(), Some("1"));
    // Approved over HTTP (a prefix of the id): prod applies c2.
    let (code, body) = control(
        ports.api,
        "wrong-token",
        "/api/v1/environments/prod/approve",
        &format!("{{\"revision\": \"{}\"}}", &c2[..12]),
    )
    .await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = control(
        ports.api,
        token,
        "/api/v1/environments/prod/approve",
        &format!("{{\"revision\": \"{}\", \"reason\": \"CAB-2\"}}", &c2[..12]),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    until(ports.api, "prod at c2", |s| good_at(s, "prod", &c2)).await;
    assert_eq!(rev_in(&stand, "prod").await.as_deref(), Some("2"));

    // A hold (HTTP) freezes prod: c3, approved, does not go in.
    let (code, body) = control(
        ports.api,
        token,
        "/api/v1/environments/prod/hold",
        "{\"reason\": \"change freeze\"}",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = control(ports.api, token, "/api/v1/environments/prod/hold", "").await;
    assert_eq!(code, 409, "a second hold is refused: {body}");
    let c3 = commit(repo.path(), 3, manual);
    let (code, out) = stand
        .cli(repo.path(), &["approve", "prod", "--revision", &c3])
        .await;
    assert_eq!(code, 0, "{out}");
    let s = until(ports.api, "prod held at c2", |s| {
        good_at(s, "dev", &c3) && waits(s, "prod", "hold")
    })
    .await;
    let gate = &env(&s, "prod")["gate"];
    assert!(
        gate["detail"].as_str().unwrap().contains("change freeze"),
        "{gate}"
    );
    // Give it the poll interval a few times over: still c2.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(rev_in(&stand, "prod").await.as_deref(), Some("2"));
    // `tidegate apply` obeys the hold too.
    let (code, out) = stand
        .cli(repo.path(), &["apply", "--env", "prod", "--yes"])
        .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("waits (hold"), "{out}");
    // Released from the CLI: c3 goes in.
    let (code, out) = stand.cli(repo.path(), &["release", "prod"]).await;
    assert_eq!(code, 0, "{out}");
    until(ports.api, "prod at c3", |s| good_at(s, "prod", &c3)).await;
    assert_eq!(rev_in(&stand, "prod").await.as_deref(), Some("3"));
    let (code, out) = stand.cli(repo.path(), &["release", "prod"]).await;
    assert_eq!(code, 1, "nothing to release: {out}");

    // A rollback to a commit prod never applied (on a side branch the
    // reconciler does not follow) is refused.
    crate::support::git(repo.path(), &["checkout", "-q", "-b", "side"]);
    let never = commit(repo.path(), 9, manual);
    crate::support::git(repo.path(), &["checkout", "-q", "main"]);
    let (code, out) = stand
        .cli(repo.path(), &["rollback", "prod", "--to", &never])
        .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("never applied"), "{out}");

    // Rollback to c1 (applied before): prod goes back and stays there
    // while c4 arrives; the environments after it would wait on it.
    let (code, out) = stand
        .cli(
            repo.path(),
            &["rollback", "prod", "--to", &c1, "--reason", "bad release"],
        )
        .await;
    assert_eq!(code, 0, "{out}");
    until(ports.api, "prod back at c1", |s| {
        env(s, "prod")["lastGood"] == c1.as_str() && env(s, "prod")["pinned"] == c1.as_str()
    })
    .await;
    assert_eq!(rev_in(&stand, "prod").await.as_deref(), Some("1"));
    let c4 = commit(repo.path(), 4, manual);
    let (code, out) = stand
        .cli(repo.path(), &["approve", "prod", "--revision", &c4])
        .await;
    assert_eq!(code, 0, "{out}");
    until(ports.api, "dev at c4", |s| good_at(s, "dev", &c4)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = status(ports.api).await;
    assert_eq!(env(&s, "prod")["lastGood"], c1.as_str(), "{s:#}");
    assert_eq!(rev_in(&stand, "prod").await.as_deref(), Some("1"));
    // `tidegate apply` of another commit is refused while pinned.
    let (code, out) = stand
        .cli(repo.path(), &["apply", "--env", "prod", "--yes"])
        .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("pinned to"), "{out}");
    // Released over HTTP: the newest (approved) commit goes in.
    let (code, body) = control(ports.api, token, "/api/v1/environments/prod/release", "{}").await;
    assert_eq!(code, 200, "{body}");
    until(ports.api, "prod at c4", |s| good_at(s, "prod", &c4)).await;
    assert_eq!(rev_in(&stand, "prod").await.as_deref(), Some("4"));
    for action in ["suspend", "resume"] {
        let path = format!("/api/v1/environments/prod/{action}");
        let (code, body) = control(ports.api, token, &path, "").await;
        assert_eq!(code, 202, "{body}");
    }

    // The audit history of the day: every decision, by whom, at which
    // commit, and the reconciler's applies in between.
    let end = std::time::Instant::now() + Duration::from_secs(20);
    let history = loop {
        let (code, out, err) = stand
            .cli_split(repo.path(), &["history", "prod", "--format", "json"])
            .await;
        assert_eq!(code, 0, "{out}{err}");
        let h: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        // Each audit append runs in its own task: wait for both.
        let has = |ev: &str| h.iter().any(|e| e["event"] == ev);
        if (has("suspend") && has("resume")) || std::time::Instant::now() > end {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let seen: Vec<String> = history
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["event"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
                e["subject"]["kind"].as_str().unwrap(),
                e["commit"].as_str().map_or("-", |c| &c[..7])
            )
        })
        .collect();
    let want = [
        format!("approve succeeded cli {}", &c1[..7]),
        format!("apply succeeded reconciler {}", &c1[..7]),
        format!("approve succeeded http {}", &c2[..7]),
        format!("apply succeeded reconciler {}", &c2[..7]),
        "hold succeeded http -".to_string(),
        "hold refused http -".to_string(),
        format!("approve succeeded cli {}", &c3[..7]),
        "release succeeded cli -".to_string(),
        format!("apply succeeded reconciler {}", &c3[..7]),
        "release refused cli -".to_string(),
        format!("rollback refused cli {}", &never[..7]),
        format!("rollback succeeded cli {}", &c1[..7]),
        format!("apply succeeded reconciler {}", &c1[..7]),
        format!("approve succeeded cli {}", &c4[..7]),
        "release succeeded http -".to_string(),
        format!("apply succeeded reconciler {}", &c4[..7]),
        format!("suspend succeeded http {}", &c4[..7]),
        format!("resume succeeded http {}", &c4[..7]),
    ];
    // In this order (drift heals in between are allowed).
    let mut at = 0;
    for w in &want {
        match seen[at..].iter().position(|s| s == w) {
            Some(i) => at += i + 1,
            None => {
                let log = std::fs::read_to_string(
                    stand
                        .dir
                        .path()
                        .join(format!("reconcile-{}.log", ports.api)),
                )
                .unwrap_or_default();
                let related: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains("history") || l.contains("uspend"))
                    .collect();
                panic!(
                    "{w} missing (in order) from the history:\n{}\nreconciler log:\n{}",
                    seen.join("\n"),
                    related.join("\n")
                )
            }
        }
    }
    let rollback = history
        .iter()
        .find(|e| e["event"] == "rollback" && e["outcome"] == "succeeded")
        .unwrap();
    assert_eq!(rollback["reason"], "bad release");
    let by_http = history.iter().find(|e| e["event"] == "hold").unwrap();
    assert_eq!(by_http["subject"]["name"], "api-token", "{by_http}");
    assert_eq!(by_http["reason"], "change freeze");
    assert!(!serde_json::to_string(&history).unwrap().contains(token));

    let status = crate::stand::sigterm(&mut child).await;
    assert!(status.success(), "{status:?}");
}

/// The clock file: an RFC 3339 time the reconciler reads as "now".
fn set_clock(path: &Path, t: jiff::Timestamp) {
    std::fs::write(path, format!("{t}\n")).unwrap();
}

/// A soak started before a SIGKILL of the reconciler is still counted from
/// when dev became good after the restart; a deny window then holds the
/// apply, and drift healing, until it ends.
async fn a_soak_survives_sigkill_and_a_deny_window_holds_apply_and_heal(kube: Kube) {
    let stand = Stand::on(kube, &["dev", "prod"]).await;
    let repo = TempDir::new().unwrap();
    // Wednesday 09:00 UTC by the injectable clock (records, soaks and
    // windows all read it); Wednesdays are denied all day.
    let now: jiff::Timestamp = "2026-12-02T09:00:00Z".parse().unwrap();
    let rules = "  promotion:\n    soak: 1h\n    windows:\n      - deny: Wed 00:00-24:00\n        timeZone: UTC\n";
    let c1 = commit(repo.path(), 1, rules);
    let clock = stand.dir.path().join("clock");
    set_clock(&clock, now);
    let ports = Ports::free();
    let spawn = |ports: Ports| {
        stand
            .reconcile(repo.path(), ports)
            .env("TIDEGATE_CLOCK_FILE", &clock)
            .spawn()
            .unwrap()
    };
    let mut child = spawn(ports);
    let s = until(ports.api, "prod soaks", |s| {
        good_at(s, "dev", &c1) && waits(s, "prod", "soak")
    })
    .await;
    let until_1 = env(&s, "prod")["gate"]["until"]
        .as_str()
        .unwrap()
        .to_string();
    let ends: jiff::Timestamp = until_1.parse().unwrap();
    assert!(
        ends > now + jiff::SignedDuration::from_mins(59),
        "{until_1}"
    );

    // SIGKILL in the middle of the soak, and start again.
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    set_clock(&clock, now + jiff::SignedDuration::from_mins(30));
    let ports = Ports::free();
    let mut child = spawn(ports);
    let s = until(ports.api, "prod still soaks after the restart", |s| {
        good_at(s, "dev", &c1) && waits(s, "prod", "soak")
    })
    .await;
    assert_eq!(
        env(&s, "prod")["gate"]["until"],
        until_1.as_str(),
        "the soak did not start over"
    );
    assert_eq!(rev_in(&stand, "prod").await, None);

    // The soak is over, but the day is denied: prod waits for the window.
    set_clock(&clock, ends + jiff::SignedDuration::from_secs(1));
    let s = until(ports.api, "prod waits for the window", |s| {
        waits(s, "prod", "window")
    })
    .await;
    let opens: jiff::Timestamp = env(&s, "prod")["gate"]["until"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(opens.to_string(), "2026-12-03T00:00:00Z");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rev_in(&stand, "prod").await,
        None,
        "nothing applied in the window"
    );

    // The window ends: c1 goes to prod.
    set_clock(&clock, opens);
    until(ports.api, "prod at c1", |s| good_at(s, "prod", &c1)).await;
    assert_eq!(rev_in(&stand, "prod").await.as_deref(), Some("1"));

    // Back inside a deny window (next week's day), drift is reported, not
    // healed; when the window ends, it is healed.
    set_clock(
        &clock,
        opens - jiff::SignedDuration::from_hours(12) + jiff::SignedDuration::from_hours(24 * 7),
    );
    // Someone deletes the ConfigMap by hand.
    let api: Api<ConfigMap> = Api::namespaced(stand.kube("prod").await, "app-prod");
    api.delete("app", &Default::default()).await.unwrap();
    until(ports.api, "drift reported in the window", |s| {
        let last = &env(s, "prod")["last"];
        last["mode"] == "report-only" && !last["drift"].as_array().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rev_in(&stand, "prod").await,
        None,
        "not healed in the window"
    );
    set_clock(&clock, opens + jiff::SignedDuration::from_hours(24 * 7));
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while rev_in(&stand, "prod").await.as_deref() != Some("1") {
        assert!(
            std::time::Instant::now() < end,
            "drift not healed after the window"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = crate::stand::sigterm(&mut child).await;
    assert!(status.success(), "{status:?}");
}

/// A rollback pin is another commit than the one served, so its signature
/// is checked on its own: prod, which started requiring trusted signatures
/// after it applied an unsigned commit, refuses to roll back to it.
async fn a_rollback_pin_needs_the_signature_prod_requires_today(kube: Kube) {
    let stand = Stand::on(kube, &["dev", "prod"]).await;
    let repo = TempDir::new().unwrap();
    let c1 = commit(repo.path(), 1, "");
    let ops = crate::source::ssh_signer("ops-laptop");
    let signers = stand.dir.path().join("allowed_signers");
    std::fs::write(&signers, format!("ops@example.com {}", ops.public)).unwrap();
    let ports = Ports::free();
    let mut child = stand
        .reconcile(repo.path(), ports)
        .arg("--trusted-signers")
        .arg(&signers)
        .spawn()
        .unwrap();
    until(ports.api, "prod at c1", |s| good_at(s, "prod", &c1)).await;

    // c2, signed by ops, makes prod require trusted signatures.
    std::fs::write(
        repo.path().join("environments/prod.yaml"),
        env_doc("prod", Some("dev"), 2, "  requireSignedCommits: true\n"),
    )
    .unwrap();
    std::fs::write(
        repo.path().join("environments/dev.yaml"),
        env_doc("dev", None, 2, ""),
    )
    .unwrap();
    let git = |args: &[&str]| crate::support::git(repo.path(), args);
    git(&["add", "-A"]);
    let key = format!("user.signingkey={}", ops.key.display());
    git(&[
        "-c",
        "gpg.format=ssh",
        "-c",
        &key,
        "commit",
        "-q",
        "-S",
        "-m",
        "rev 2, signed",
    ]);
    let c2 = git(&["rev-parse", "HEAD"]);
    until(ports.api, "prod at c2", |s| good_at(s, "prod", &c2)).await;

    // Rolling back to the unsigned c1 is accepted as a pin (prod applied
    // it), but the reconciler refuses to apply it.
    let (code, out) = stand
        .cli(repo.path(), &["rollback", "prod", "--to", &c1])
        .await;
    assert_eq!(code, 0, "{out}");
    let s = until(ports.api, "the pin refused for its signature", |s| {
        let last = &env(s, "prod")["last"];
        last["commit"] == c1.as_str() && last["error"]["reason"] == "signature"
    })
    .await;
    let msg = env(&s, "prod")["last"]["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("rollback pin") && msg.contains("not signed"),
        "{msg}"
    );
    assert_eq!(rev_in(&stand, "prod").await.as_deref(), Some("2"));
    let (code, out, err) = stand
        .cli_split(repo.path(), &["history", "prod", "--format", "json"])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let h: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(
        h.iter()
            .any(|e| e["event"] == "refused" && e["commit"] == c1.as_str()),
        "{h:#?}"
    );
    let status = crate::stand::sigterm(&mut child).await;
    assert!(status.success(), "{status:?}");
}

crate::on_both_kubes!(
    a_rollback_pin_needs_the_signature_prod_requires_today,
    manual_approval_hold_and_rollback_through_the_binary,
    a_soak_survives_sigkill_and_a_deny_window_holds_apply_and_heal,
);
