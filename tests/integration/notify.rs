//! Notifications through the real `tidegate reconcile` binary: a Git
//! repository made with `git` (dev < staging < test < prod, prod requiring
//! signed commits so its commit is refused), and receivers that are real
//! HTTP servers on loopback checking what the real services check:
//!
//! - generic webhook: POST, JSON, `X-Tidegate-Signature` = HMAC-SHA256 of
//!   the body under the shared key, `X-Tidegate-Delivery`/`-Event` matching
//!   the body, the schema (version 1) field by field; it answers 503 to
//!   its first three requests;
//! - Slack incoming webhook: POST to the secret path, `text` and Block Kit
//!   blocks within Slack's documented limits, answers `ok`;
//! - GitHub (Enterprise base URL): `POST /api/v3/repos/{owner}/{repo}/statuses/{sha}`
//!   with `Authorization: Bearer`, `Accept: application/vnd.github+json`,
//!   `X-GitHub-Api-Version`, a User-Agent, a state GitHub accepts, a
//!   description of at most 140 characters; answers 201;
//! - GitLab: `POST /api/v4/projects/{url-encoded path}/statuses/{sha}` with
//!   `PRIVATE-TOKEN` and a state GitLab accepts; answers 201;
//! - a webhook target whose receiver is down (nothing listens).
//!
//! Every body is searched for canary secrets (the signing key, the tokens,
//! the Slack URL's secret path, the Git token file).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hyper::body::Bytes;
use tidegate::notify::target::signature;

use crate::support::git;

const KEY: &str = "hmac-CANARY-5f1e";
const GH_TOKEN: &str = "ghp_CANARY_7d2c";
const GL_TOKEN: &str = "glpat-CANARY-91ab";
const SLACK_PATH: &str = "/services/T000/B000/CANARYslack";
const GIT_TOKEN: &str = "git-CANARY-33aa";
const CANARIES: [&str; 7] = [
    KEY,
    GH_TOKEN,
    GL_TOKEN,
    "CANARYslack",
    "CANARYteams",
    GIT_TOKEN,
    "CANARY",
];

/// What the receivers saw.
#[derive(Default)]
struct Seen {
    /// Accepted webhook bodies.
    hook: Vec<serde_json::Value>,
    /// Every webhook request's delivery id, accepted or not.
    hook_attempts: Vec<String>,
    slack: Vec<serde_json::Value>,
    teams: Vec<serde_json::Value>,
    gchat: Vec<serde_json::Value>,
    /// (sha, context, state, time) per accepted status.
    github: Vec<(String, String, String, Instant)>,
    gitlab: Vec<(String, String, String)>,
    /// Requests a receiver refused, and why (a test failure).
    refused: Vec<String>,
    canary_leaks: Vec<String>,
}

type Shared = Arc<Mutex<Seen>>;

fn check_canaries(s: &mut Seen, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    for c in CANARIES {
        if text.contains(c) {
            s.canary_leaks.push(text.to_string());
        }
    }
}

fn header<'h>(h: &'h HeaderMap, name: &str) -> &'h str {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn refuse(s: &mut Seen, why: String) -> StatusCode {
    s.refused.push(why);
    StatusCode::BAD_REQUEST
}

async fn hook(State(seen): State<Shared>, h: HeaderMap, body: Bytes) -> StatusCode {
    let mut s = seen.lock().unwrap();
    check_canaries(&mut s, &body);
    s.hook_attempts
        .push(header(&h, "x-tidegate-delivery").to_string());
    if s.hook_attempts.len() <= 3 {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if header(&h, "content-type") != "application/json" {
        return refuse(&mut s, "hook: content type".into());
    }
    if header(&h, "x-tidegate-signature") != signature(KEY.as_bytes(), &body) {
        s.refused.push("hook: bad signature".into());
        return StatusCode::UNAUTHORIZED;
    }
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return refuse(&mut s, format!("hook: not JSON: {e}")),
    };
    let kinds = [
        "reconciler.started",
        "reconciler.stopped",
        "apply.started",
        "apply.succeeded",
        "apply.failed",
        "drift.detected",
        "drift.healed",
        "gate.waiting",
        "commit.refused",
    ];
    let id = v["id"].as_str().unwrap_or_default();
    let ok = v["schemaVersion"] == 1
        && id.len() == 32
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && header(&h, "x-tidegate-delivery") == id
        && kinds.contains(&v["kind"].as_str().unwrap_or_default())
        && header(&h, "x-tidegate-event") == v["kind"].as_str().unwrap_or_default()
        && ["info", "warning", "error"].contains(&v["severity"].as_str().unwrap_or_default())
        && humantime::parse_rfc3339(v["time"].as_str().unwrap_or_default()).is_ok()
        && v["timeUnix"].is_u64()
        && v["resources"].is_array()
        && v["resourceCount"].is_u64()
        && v["reconciler"]["remote"].is_string()
        && v["reconciler"]["branch"] == "main";
    if !ok {
        return refuse(&mut s, format!("hook: schema: {v}"));
    }
    s.hook.push(v);
    StatusCode::NO_CONTENT
}

async fn slack(
    State(seen): State<Shared>,
    h: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let mut s = seen.lock().unwrap();
    check_canaries(&mut s, &body);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let blocks = v["blocks"].as_array().cloned().unwrap_or_default();
    let block_ok = |b: &serde_json::Value| match b["type"].as_str() {
        Some("header") => {
            b["text"]["type"] == "plain_text"
                && b["text"]["text"]
                    .as_str()
                    .is_some_and(|t| t.chars().count() <= 150)
        }
        Some("section") => {
            let fields = b["fields"].as_array();
            let text_ok = b["text"]["text"]
                .as_str()
                .is_none_or(|t| t.chars().count() <= 3000);
            let fields_ok = fields.is_none_or(|f| {
                f.len() <= 10
                    && f.iter().all(|f| {
                        f["type"] == "mrkdwn"
                            && f["text"]
                                .as_str()
                                .is_some_and(|t| t.chars().count() <= 2000)
                    })
            });
            (fields.is_some() || b["text"].is_object()) && text_ok && fields_ok
        }
        Some("context") => b["elements"]
            .as_array()
            .is_some_and(|e| !e.is_empty() && e.len() <= 10),
        _ => false,
    };
    if header(&h, "content-type") != "application/json"
        || v["text"].as_str().is_none_or(str::is_empty)
        || blocks.is_empty()
        || blocks.len() > 50
        || !blocks.iter().all(block_ok)
    {
        s.refused.push(format!("slack: invalid_blocks: {v}"));
        return (StatusCode::BAD_REQUEST, "invalid_blocks");
    }
    s.slack.push(v);
    (StatusCode::OK, "ok")
}

/// A Teams Workflows webhook: a `message` with one Adaptive Card
/// attachment whose body elements are known types.
async fn teams(State(seen): State<Shared>, h: HeaderMap, body: Bytes) -> StatusCode {
    let mut s = seen.lock().unwrap();
    check_canaries(&mut s, &body);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let card = &v["attachments"][0];
    let content = &card["content"];
    let elements = content["body"].as_array().cloned().unwrap_or_default();
    let known = |e: &serde_json::Value| match e["type"].as_str() {
        Some("TextBlock") => e["text"].as_str().is_some_and(|t| !t.is_empty()),
        Some("FactSet") => e["facts"].as_array().is_some_and(|f| {
            f.iter()
                .all(|f| f["title"].is_string() && f["value"].is_string())
        }),
        _ => false,
    };
    if header(&h, "content-type") != "application/json"
        || v["type"] != "message"
        || v["attachments"].as_array().map(Vec::len) != Some(1)
        || card["contentType"] != "application/vnd.microsoft.card.adaptive"
        || content["type"] != "AdaptiveCard"
        || content["version"] != "1.4"
        || elements.is_empty()
        || !elements.iter().all(known)
    {
        s.refused
            .push(format!("teams: not an Adaptive Card message: {v}"));
        return StatusCode::BAD_REQUEST;
    }
    s.teams.push(v);
    StatusCode::ACCEPTED
}

/// A Google Chat space webhook: `text` and a `cardsV2` card with a header
/// and widgets.
async fn gchat(State(seen): State<Shared>, h: HeaderMap, body: Bytes) -> StatusCode {
    let mut s = seen.lock().unwrap();
    check_canaries(&mut s, &body);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let card = &v["cardsV2"][0]["card"];
    let widgets = card["sections"][0]["widgets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !header(&h, "content-type").starts_with("application/json")
        || v["text"].as_str().is_none_or(str::is_empty)
        || card["header"]["title"].as_str().is_none_or(str::is_empty)
        || widgets.is_empty()
    {
        s.refused.push(format!("gchat: invalid message: {v}"));
        return StatusCode::BAD_REQUEST;
    }
    s.gchat.push(v);
    StatusCode::OK
}

async fn github(
    State(seen): State<Shared>,
    UrlPath((owner, repo, sha)): UrlPath<(String, String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let mut s = seen.lock().unwrap();
    check_canaries(&mut s, &body);
    if header(&h, "authorization") != format!("Bearer {GH_TOKEN}") {
        s.refused.push("github: bad credentials".into());
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"message":"Bad credentials"}"#.into(),
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let state = v["state"].as_str().unwrap_or_default().to_string();
    let ok = (owner, repo) == ("platform".to_string(), "infra".to_string())
        && sha.len() == 40
        && sha.bytes().all(|b| b.is_ascii_hexdigit())
        && header(&h, "accept") == "application/vnd.github+json"
        && header(&h, "x-github-api-version") == "2022-11-28"
        && !header(&h, "user-agent").is_empty()
        && ["error", "failure", "pending", "success"].contains(&state.as_str())
        && v["context"].is_string()
        && v["description"]
            .as_str()
            .is_some_and(|d| d.chars().count() <= 140)
        && v["target_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://tidegate.example.com/"));
    if !ok {
        s.refused.push(format!("github: validation failed: {v}"));
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"message":"Validation Failed"}"#.into(),
        );
    }
    let context = v["context"].as_str().unwrap_or_default().to_string();
    s.github
        .push((sha.clone(), context.clone(), state.clone(), Instant::now()));
    let answer =
        serde_json::json!({"id": s.github.len(), "state": state, "context": context, "sha": sha});
    (StatusCode::CREATED, answer.to_string())
}

async fn gitlab(
    State(seen): State<Shared>,
    UrlPath((project, sha)): UrlPath<(String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut s = seen.lock().unwrap();
    check_canaries(&mut s, &body);
    if header(&h, "private-token") != GL_TOKEN {
        s.refused.push("gitlab: 401".into());
        return StatusCode::UNAUTHORIZED;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let state = v["state"].as_str().unwrap_or_default().to_string();
    let ok = project == "group/infra"
        && sha.len() == 40
        && ["pending", "running", "success", "failed", "canceled"].contains(&state.as_str())
        && v["name"].is_string();
    if !ok {
        s.refused.push(format!("gitlab: 400 {project} {v}"));
        return StatusCode::BAD_REQUEST;
    }
    let name = v["name"].as_str().unwrap_or_default().to_string();
    s.gitlab.push((sha, name, state));
    StatusCode::CREATED
}

async fn receivers(seen: Shared) -> std::net::SocketAddr {
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .route(SLACK_PATH, post(slack))
        .route("/teams/CANARYteams", post(teams))
        .route("/v1/spaces/AAAA/messages", post(gchat))
        .route("/api/v3/repos/{owner}/{repo}/statuses/{sha}", post(github))
        .route("/api/v4/projects/{project}/statuses/{sha}", post(gitlab))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn env_doc(name: &str, after: Option<&str>, extra: &str) -> String {
    let after = after.map(|a| format!("  after: {a}\n")).unwrap_or_default();
    format!("apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: {name}\nspec:\n{after}{extra}  vars: {{rev: 1}}\n")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    text.starts_with("HTTP/1.1 200").then(|| {
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_binary_notifies_every_target_and_a_dead_one_blocks_nothing() {
    let repo = tempfile::tempdir().unwrap();
    let mut after = None;
    for env in ["dev", "staging", "test", "prod"] {
        let extra = if env == "prod" {
            "  requireSignedCommits: true\n"
        } else {
            ""
        };
        let p = repo.path().join(format!("environments/{env}.yaml"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, env_doc(env, after, extra)).unwrap();
        after = Some(env);
    }
    git(repo.path(), &["init", "-q", "-b", "main"]);
    crate::stand::write_project(repo.path());
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "four environments"]);
    let commit = git(repo.path(), &["rev-parse", "HEAD"]);

    let seen: Shared = Arc::default();
    let addr = receivers(seen.clone()).await;
    let dead = free_port();
    let scratch = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = scratch.path().join(name);
        std::fs::write(&p, format!("{text}\n")).unwrap();
        p.display().to_string()
    };
    let key = file("hmac", KEY);
    let hook_url = file("hook-url", &format!("http://{addr}/hook"));
    let slack_url = file("slack-url", &format!("http://{addr}{SLACK_PATH}"));
    let gl_token = file("gl-token", GL_TOKEN);
    // The Teams URL comes from a SOPS file made by the real sops, decrypted
    // by the reconciler with its age key.
    let age = std::process::Command::new(crate::support::tool("age-keygen"))
        .arg("-o")
        .arg(scratch.path().join("age.key"))
        .output()
        .unwrap();
    assert!(age.status.success(), "{age:?}");
    let age_text = std::fs::read_to_string(scratch.path().join("age.key")).unwrap();
    let recipient = age_text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    let teams_sops = scratch.path().join("notify.sops.yaml");
    std::fs::write(
        &teams_sops,
        format!("teams:\n  url: http://{addr}/teams/CANARYteams\n"),
    )
    .unwrap();
    let enc = std::process::Command::new(crate::support::tool("sops"))
        .args(["--encrypt", "--age", &recipient, "--in-place"])
        .arg(&teams_sops)
        // Outside this checkout: its .sops.yaml would apply.
        .current_dir(scratch.path())
        .env_remove("SOPS_AGE_KEY_FILE")
        .output()
        .unwrap();
    assert!(enc.status.success(), "{enc:?}");
    assert!(!std::fs::read_to_string(&teams_sops)
        .unwrap()
        .contains("CANARYteams"));
    let teams_sops = teams_sops.display().to_string();
    let gchat_url = file(
        "gchat-url",
        &format!("http://{addr}/v1/spaces/AAAA/messages"),
    );
    let dead_url = file("dead-url", &format!("http://127.0.0.1:{dead}/hook"));
    let git_token = file("git-token", GIT_TOKEN);
    let config = format!(
        r#"apiVersion: tidegate.dev/v1
kind: Notifications
spec:
  statusUrl: https://tidegate.example.com/
  delivery: {{queueSize: 100, maxAttempts: 1000, backoff: 100ms, maxBackoff: 1s, timeout: 2s, dedupeWindow: 10m}}
  targets:
    - {{name: ops, type: webhook, url: {{fromFile: {hook_url}}}, signingKey: {{fromFile: {key}}}}}
    - {{name: chat, type: slack, url: {{fromFile: {slack_url}}}, minSeverity: info}}
    - {{name: teams, type: teams, url: {{fromSops: {teams_sops}, key: teams.url}}}}
    - {{name: gchat, type: googlechat, url: {{fromFile: {gchat_url}}}}}
    - name: gh
      type: github
      apiUrl: http://{addr}/api/v3
      repository: platform/infra
      token: {{fromEnv: TIDEGATE_TEST_GH_TOKEN}}
    - {{name: gl, type: gitlab, apiUrl: "http://{addr}", project: group/infra, token: {{fromFile: {gl_token}}}, environments: [prod, dev]}}
    - {{name: down, type: webhook, queueSize: 3, url: {{fromFile: {dead_url}}}, signingKey: {{fromFile: {key}}}}}
"#
    );
    let notifications = file("notifications.yaml", &config);
    let (port, probe_port) = (free_port(), free_port());
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args([
            "reconcile",
            "--remote",
            &format!("file://{}", repo.path().display()),
        ])
        .args([
            "--branch",
            "main",
            "--interval",
            "1s",
            "--shutdown-grace",
            "3s",
            "--log-format",
            "json",
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--probe-listen",
            &format!("127.0.0.1:{probe_port}"),
        ])
        .args([
            "--notifications",
            &notifications,
            "--git-token-file",
            &git_token,
        ])
        .arg("--age-key-file")
        .arg(scratch.path().join("age.key"))
        .arg("--cache-dir")
        .arg(scratch.path().join("cache"))
        .arg("--state-dir")
        .arg(scratch.path().join("state"))
        .env("TIDEGATE_TEST_GH_TOKEN", GH_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let done = |s: &Seen| {
        let kinds: Vec<(String, String)> = s
            .hook
            .iter()
            .map(|v| {
                (
                    v["kind"].as_str().unwrap_or_default().into(),
                    v["environment"].as_str().unwrap_or_default().into(),
                )
            })
            .collect();
        kinds.contains(&("apply.succeeded".into(), "test".into()))
            && kinds.contains(&("commit.refused".into(), "prod".into()))
    };
    let end = Instant::now() + Duration::from_secs(60);
    while !done(&seen.lock().unwrap()) {
        if Instant::now() > end || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let mut logs = String::new();
            use std::io::Read;
            let _ = child.stderr.take().unwrap().read_to_string(&mut logs);
            panic!(
                "events did not arrive: {:?}\n{logs}",
                seen.lock().unwrap().hook
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let converged_in = started.elapsed();
    let probe: std::net::SocketAddr = format!("127.0.0.1:{probe_port}").parse().unwrap();
    let metrics = get(probe, "/metrics").await.unwrap();

    // SIGTERM: reconciler.stopped goes out in the flush.
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stop_took = t0.elapsed();
    let mut logs = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{logs}");
    for c in CANARIES {
        assert!(!logs.contains(c), "a canary secret in the logs: {c}");
    }
    assert!(
        !logs.contains(&format!("127.0.0.1:{dead}")),
        "a webhook URL (a secret) in the logs"
    );

    let s = seen.lock().unwrap();
    assert!(s.refused.is_empty(), "receivers refused: {:?}", s.refused);
    assert!(
        s.canary_leaks.is_empty(),
        "canary secret in a payload: {:?}",
        s.canary_leaks
    );

    // The webhook failed 3 times; every event still arrived exactly once.
    let ids: Vec<&str> = s.hook.iter().map(|v| v["id"].as_str().unwrap()).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "an event delivered twice");
    assert_eq!(s.hook[0]["kind"], "reconciler.started");
    let first_id = s.hook[0]["id"].as_str().unwrap();
    assert_eq!(
        s.hook_attempts.iter().filter(|a| *a == first_id).count(),
        4,
        "{:?}",
        s.hook_attempts
    );
    let kinds: Vec<String> = s
        .hook
        .iter()
        .map(|v| {
            format!(
                "{} {}",
                v["kind"].as_str().unwrap(),
                v["environment"].as_str().unwrap_or("-")
            )
        })
        .collect();
    for want in [
        "apply.started dev",
        "apply.succeeded dev",
        "gate.waiting staging",
        "apply.succeeded staging",
        "apply.succeeded test",
        "commit.refused prod",
        "reconciler.stopped -",
    ] {
        assert!(kinds.iter().any(|k| k == want), "no {want:?} in {kinds:?}");
    }
    let refused = s
        .hook
        .iter()
        .find(|v| v["kind"] == "commit.refused")
        .unwrap();
    assert_eq!(refused["reason"], "signature");
    assert_eq!(refused["commit"], commit.as_str());
    assert_eq!(refused["severity"], "error");
    let waiting = s
        .hook
        .iter()
        .find(|v| v["kind"] == "gate.waiting" && v["environment"] == "staging")
        .unwrap();
    assert_eq!(waiting["waitingOn"], "dev");

    // Slack got the same events as blocks.
    assert!(
        s.slack
            .iter()
            .any(|v| v["text"].as_str().unwrap().starts_with("prod: commit")),
        "{:?}",
        s.slack
    );

    // Teams and Google Chat got them as cards.
    assert!(
        s.teams.iter().any(|v| {
            v["attachments"][0]["content"]["body"][0]["text"] == "prod: commit refused"
        }),
        "{:?}",
        s.teams
    );
    assert!(
        s.gchat
            .iter()
            .any(|v| v["text"].as_str().unwrap().starts_with("prod: commit")),
        "{:?}",
        s.gchat
    );

    // GitHub: per environment a status on the applied commit, the last one
    // success (dev..test) or error (prod refused).
    let mut last: HashMap<&str, &str> = HashMap::new();
    for (sha, context, state, _) in &s.github {
        assert_eq!(sha, &commit);
        last.insert(context, state);
    }
    assert_eq!(last.get("tidegate/dev"), Some(&"success"), "{:?}", s.github);
    assert_eq!(
        last.get("tidegate/test"),
        Some(&"success"),
        "{:?}",
        s.github
    );
    assert_eq!(last.get("tidegate/prod"), Some(&"error"), "{:?}", s.github);
    assert!(
        s.github
            .iter()
            .any(|g| g.1 == "tidegate/dev" && g.2 == "pending"),
        "apply.started: pending"
    );

    // GitLab, filtered to prod and dev.
    assert!(
        s.gitlab
            .iter()
            .all(|g| g.1 == "tidegate/prod" || g.1 == "tidegate/dev"),
        "{:?}",
        s.gitlab
    );
    assert!(
        s.gitlab
            .contains(&(commit.clone(), "tidegate/dev".into(), "success".into())),
        "{:?}",
        s.gitlab
    );
    assert!(
        s.gitlab
            .contains(&(commit.clone(), "tidegate/prod".into(), "failed".into())),
        "{:?}",
        s.gitlab
    );

    // The dead receiver: converges were not held up, its queue stayed at
    // its bound and the overflow was counted.
    let line =
        |name: &str| -> Vec<&str> { metrics.lines().filter(|l| l.starts_with(name)).collect() };
    let depth: Vec<i64> = line("tidegate_notification_queue_depth{target=\"down\"}")
        .iter()
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(
        depth.iter().all(|d| *d <= 3) && !depth.is_empty(),
        "{metrics}"
    );
    let dropped: u64 = line("tidegate_notifications_total{target=\"down\"")
        .iter()
        .filter(|l| l.contains("result=\"dropped\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(dropped > 0, "{metrics}");
    assert!(
        line("tidegate_notifications_total{target=\"ops\"")
            .iter()
            .any(|l| l.contains("result=\"sent\"")),
        "{metrics}"
    );
    eprintln!(
        "notify: dev..prod decided in {converged_in:?} with the `down` receiver dead; {} webhook events, {} attempts; {} GitHub statuses; {dropped} dropped for `down`; stopped in {stop_took:?}",
        s.hook.len(),
        s.hook_attempts.len(),
        s.github.len()
    );
}

#[test]
fn a_plain_secret_in_the_notifications_file_stops_the_start() {
    let scratch = tempfile::tempdir().unwrap();
    let f = scratch.path().join("n.yaml");
    std::fs::write(
        &f,
        "apiVersion: tidegate.dev/v1\nkind: Notifications\nspec:\n  targets:\n    - {name: chat, type: slack, url: \"https://hooks.slack.com/services/T0/B0/CANARYplain\"}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args([
            "reconcile",
            "--remote",
            "file:///nonexistent",
            "--notifications",
        ])
        .arg(&f)
        .args([
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--probe-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .arg("--cache-dir")
        .arg(scratch.path().join("cache"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("url is a secret and must not be written in the file"),
        "{err}"
    );
    assert!(err.contains("n.yaml:5:"), "{err}");
    assert!(!err.contains("CANARYplain"), "{err}");
}

/// Issue 22: the shipped alert rules (deploy/prometheus/rules.yaml) load in
/// the real `promtool` with every rule counted and no lint finding, and
/// their unit tests (rules.test.yaml: failing environment at 10 and 20
/// minutes, a suspended one ignored, source unreachable, reconciler down)
/// pass.
#[test]
fn shipped_alert_rules_pass_promtool() {
    let promtool = crate::support::go_tool("promtool");
    let dir = crate::support::repo_root().join("deploy/prometheus");
    let rules = std::fs::read_to_string(dir.join("rules.yaml")).unwrap();
    let alerts = rules
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert!(alerts > 0, "no alert in rules.yaml");

    let check = crate::support::run_ok(Command::new(&promtool).current_dir(&dir).args([
        "check",
        "rules",
        "--lint=all",
        "--lint-fatal",
        "rules.yaml",
    ]));
    assert!(
        check.contains(&format!("SUCCESS: {alerts} rules found")),
        "promtool check rules: {check}"
    );

    let test = crate::support::run_ok(Command::new(&promtool).current_dir(&dir).args([
        "test",
        "rules",
        "rules.test.yaml",
    ]));
    assert!(test.contains("SUCCESS"), "promtool test rules: {test}");
}

/// The shipped Grafana dashboard queries only series tidegate exports (by
/// the names and types of a fresh registry), and every query is PromQL the
/// real promtool accepts (each checked as a recording rule, with Grafana's
/// `$__rate_interval` and `$environment` filled in).
#[test]
fn grafana_dashboard_queries_exported_series_in_valid_promql() {
    let path = crate::support::repo_root().join("deploy/grafana/tidegate.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let variable = &dashboard["templating"]["list"][1]["query"]["query"];
    exprs.push(
        variable
            .as_str()
            .unwrap()
            .replace("label_values(", "count by (environment) (")
            .replace(", environment)", ")"),
    );

    // Series names a fresh registry exports: gauges as named, counters with
    // `_total`, histograms with `_bucket`, `_sum`, `_count`.
    use tidegate::reconcile::{ApiCalls, ApiRetries, EnvReport, ErrorReason};
    let metrics = tidegate::reconcile::metrics::Metrics::new();
    let report = EnvReport {
        commit: "abc".into(),
        api_calls: vec![ApiCalls {
            provider: "kubernetes".into(),
            operation: "list".into(),
            result: "ok".into(),
            count: 1,
        }],
        api_retries: vec![ApiRetries {
            provider: "aws".into(),
            reason: "throttled".into(),
            count: 1,
        }],
        ..EnvReport::default()
    };
    metrics.converged("dev", &report, true);
    metrics.suspended("dev", false);
    metrics.waiting("dev", Some(tidegate::promotion::Reason::Approval));
    metrics.error(ErrorReason::Fetch);
    metrics.poll("unchanged");
    metrics.webhook("github", "accepted");
    metrics.notification("ops", "apply.failed", "sent");
    metrics.notification_queue("ops", 0);
    let text = metrics.encode();
    let mut series = std::collections::BTreeSet::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, kind) = line.split_once(' ').unwrap();
        match kind {
            "counter" => {
                series.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["bucket", "sum", "count"] {
                    series.insert(format!("{name}_{s}"));
                }
            }
            _ => {
                series.insert(name.to_string());
            }
        }
    }
    let names = regex::Regex::new(r"\btidegate_[a-z_]+").unwrap();
    for e in &exprs {
        for m in names.find_iter(e) {
            assert!(
                series.contains(m.as_str()),
                "{} in `{e}` is not exported (exported: {series:?})",
                m.as_str()
            );
        }
    }

    let dir = tempfile::TempDir::new().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$environment", ".*");
        rules.push_str(&format!(
            "      - record: tidegate:dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    std::fs::write(dir.path().join("dashboard.yaml"), &rules).unwrap();
    let promtool = crate::support::go_tool("promtool");
    let check = crate::support::run_ok(Command::new(&promtool).current_dir(dir.path()).args([
        "check",
        "rules",
        "dashboard.yaml",
    ]));
    assert!(
        check.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "promtool: {check}\n{rules}"
    );
}
