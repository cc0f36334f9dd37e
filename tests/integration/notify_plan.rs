//! `tidegate plan --notify FILE --pull-request N` through the real binary
//! against a forge on loopback that checks what GitHub and GitLab check
//! (paths, methods, auth headers, body fields and limits, per their REST
//! docs) and keeps comments and statuses like they do:
//!
//! - GitHub: issue comments listed 100 per page (`per_page`, `page`),
//!   created with POST, edited with PATCH, deleted with DELETE; commit
//!   statuses with POST; `Authorization: Bearer`, `Accept:
//!   application/vnd.github+json`, `X-GitHub-Api-Version: 2022-11-28`;
//! - GitLab: merge request notes (GET/POST `.../merge_requests/{iid}/notes`,
//!   PUT/DELETE `.../notes/{id}`), statuses; `PRIVATE-TOKEN`;
//! - a generic webhook checking the HMAC signature.
//!
//! The pull request already holds 130 other comments (so the plan's is
//! found past the first page) and another job's plan comment (`--env prod`)
//! that must stay untouched. The first plan creates one comment and a
//! status; a push makes the second plan edit that same comment in place and
//! set a status on the new commit; a broken push turns the comment into the
//! problem report and the status into a failure. The comment listing fails
//! twice with 502 on one run: the comment is still made exactly once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, patch, post};
use hyper::body::Bytes;
use tempfile::TempDir;
use tidegate::notify::target::signature;

use super::stand::commit_files;

const GH_TOKEN: &str = "ghp_CANARY_plan_1";
const GL_TOKEN: &str = "glpat-CANARY-plan-2";
const KEY: &str = "hmac-CANARY-plan-3";

#[derive(Default)]
struct Forge {
    /// GitHub comments on PR 7: id → body.
    gh_comments: BTreeMap<u64, String>,
    /// GitLab notes on MR 7: id → body.
    gl_notes: BTreeMap<u64, String>,
    next_id: u64,
    /// (forge, sha, context, state).
    statuses: Vec<(String, String, String, String)>,
    /// Every write call: (method, path).
    writes: Vec<(String, String)>,
    /// GitHub comment listings still to fail with 502.
    fail_lists: usize,
    list_calls: usize,
    hooks: Vec<serde_json::Value>,
    refused: Vec<String>,
    leaks: Vec<String>,
}

type Shared = Arc<Mutex<Forge>>;

fn header<'h>(h: &'h HeaderMap, name: &str) -> &'h str {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

impl Forge {
    fn leak_check(&mut self, body: &[u8]) {
        let text = String::from_utf8_lossy(body);
        if text.contains("CANARY") {
            self.leaks.push(text.into_owned());
        }
    }

    fn github_ok(&mut self, h: &HeaderMap, owner: &str, repo: &str) -> Result<(), StatusCode> {
        if header(h, "authorization") != format!("Bearer {GH_TOKEN}") {
            self.refused.push("github: bad credentials".into());
            return Err(StatusCode::UNAUTHORIZED);
        }
        if header(h, "accept") != "application/vnd.github+json"
            || header(h, "x-github-api-version") != "2022-11-28"
            || header(h, "user-agent").is_empty()
            || (owner, repo) != ("platform", "infra")
        {
            self.refused
                .push(format!("github: headers or repo {owner}/{repo}"));
            return Err(StatusCode::BAD_REQUEST);
        }
        Ok(())
    }

    fn gitlab_ok(&mut self, h: &HeaderMap, project: &str) -> Result<(), StatusCode> {
        if header(h, "private-token") != GL_TOKEN {
            self.refused.push("gitlab: 401".into());
            return Err(StatusCode::UNAUTHORIZED);
        }
        if project != "group/infra" {
            self.refused.push(format!("gitlab: project {project}"));
            return Err(StatusCode::NOT_FOUND);
        }
        Ok(())
    }

    /// A comment body as both forges require: a JSON object with a
    /// non-empty `body` of at most 65,536 characters.
    fn comment_body(&mut self, body: &[u8]) -> Result<String, StatusCode> {
        self.leak_check(body);
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        match v["body"].as_str() {
            Some(b) if !b.is_empty() && b.chars().count() <= 65_536 => Ok(b.to_string()),
            _ => {
                self.refused.push(format!("comment body invalid: {v}"));
                Err(StatusCode::UNPROCESSABLE_ENTITY)
            }
        }
    }
}

fn page_of(map: &BTreeMap<u64, String>, q: &BTreeMap<String, String>) -> String {
    let per: usize = q.get("per_page").and_then(|v| v.parse().ok()).unwrap_or(30);
    let page: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1);
    let items: Vec<serde_json::Value> = map
        .iter()
        .skip(per.min(100) * (page.max(1) - 1))
        .take(per.min(100))
        .map(|(id, body)| serde_json::json!({"id": id, "body": body, "user": {"login": "bot"}}))
        .collect();
    serde_json::Value::Array(items).to_string()
}

async fn gh_list(
    State(f): State<Shared>,
    UrlPath((owner, repo, n)): UrlPath<(String, String, u64)>,
    Query(q): Query<BTreeMap<String, String>>,
    h: HeaderMap,
) -> (StatusCode, String) {
    let mut f = f.lock().unwrap();
    if let Err(c) = f.github_ok(&h, &owner, &repo) {
        return (c, "{}".into());
    }
    f.list_calls += 1;
    if f.fail_lists > 0 {
        f.fail_lists -= 1;
        return (StatusCode::BAD_GATEWAY, "{}".into());
    }
    if n != 7 {
        return (StatusCode::NOT_FOUND, "{}".into());
    }
    (StatusCode::OK, page_of(&f.gh_comments, &q))
}

async fn gh_create(
    State(f): State<Shared>,
    UrlPath((owner, repo, n)): UrlPath<(String, String, u64)>,
    h: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let mut f = f.lock().unwrap();
    if let Err(c) = f.github_ok(&h, &owner, &repo) {
        return (c, "{}".into());
    }
    let text = match f.comment_body(&body) {
        Ok(t) => t,
        Err(c) => return (c, "{}".into()),
    };
    if n != 7 {
        return (StatusCode::NOT_FOUND, "{}".into());
    }
    f.next_id += 1;
    let id = f.next_id;
    f.gh_comments.insert(id, text);
    f.writes
        .push(("POST".into(), format!("gh/issues/{n}/comments")));
    (
        StatusCode::CREATED,
        serde_json::json!({"id": id}).to_string(),
    )
}

async fn gh_edit(
    State(f): State<Shared>,
    UrlPath((owner, repo, id)): UrlPath<(String, String, u64)>,
    h: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut f = f.lock().unwrap();
    if let Err(c) = f.github_ok(&h, &owner, &repo) {
        return c;
    }
    let text = match f.comment_body(&body) {
        Ok(t) => t,
        Err(c) => return c,
    };
    if !f.gh_comments.contains_key(&id) {
        return StatusCode::NOT_FOUND;
    }
    f.gh_comments.insert(id, text);
    f.writes.push(("PATCH".into(), format!("gh/comments/{id}")));
    StatusCode::OK
}

async fn gh_delete(
    State(f): State<Shared>,
    UrlPath((owner, repo, id)): UrlPath<(String, String, u64)>,
    h: HeaderMap,
) -> StatusCode {
    let mut f = f.lock().unwrap();
    if let Err(c) = f.github_ok(&h, &owner, &repo) {
        return c;
    }
    f.writes
        .push(("DELETE".into(), format!("gh/comments/{id}")));
    match f.gh_comments.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT,
        None => StatusCode::NOT_FOUND,
    }
}

async fn gh_status(
    State(f): State<Shared>,
    UrlPath((owner, repo, sha)): UrlPath<(String, String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut f = f.lock().unwrap();
    if let Err(c) = f.github_ok(&h, &owner, &repo) {
        return c;
    }
    f.leak_check(&body);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let state = v["state"].as_str().unwrap_or_default().to_string();
    if sha.len() != 40
        || !["error", "failure", "pending", "success"].contains(&state.as_str())
        || v["description"]
            .as_str()
            .is_none_or(|d| d.chars().count() > 140)
    {
        f.refused.push(format!("github status: {v}"));
        return StatusCode::UNPROCESSABLE_ENTITY;
    }
    let context = v["context"].as_str().unwrap_or_default().to_string();
    f.statuses.push(("github".into(), sha, context, state));
    StatusCode::CREATED
}

async fn gl_list(
    State(f): State<Shared>,
    UrlPath((project, iid)): UrlPath<(String, u64)>,
    Query(q): Query<BTreeMap<String, String>>,
    h: HeaderMap,
) -> (StatusCode, String) {
    let mut f = f.lock().unwrap();
    if let Err(c) = f.gitlab_ok(&h, &project) {
        return (c, "{}".into());
    }
    if iid != 7 {
        return (StatusCode::NOT_FOUND, "{}".into());
    }
    (StatusCode::OK, page_of(&f.gl_notes, &q))
}

async fn gl_create(
    State(f): State<Shared>,
    UrlPath((project, iid)): UrlPath<(String, u64)>,
    h: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let mut f = f.lock().unwrap();
    if let Err(c) = f.gitlab_ok(&h, &project) {
        return (c, "{}".into());
    }
    let text = match f.comment_body(&body) {
        Ok(t) => t,
        Err(c) => return (c, "{}".into()),
    };
    f.next_id += 1;
    let id = f.next_id;
    f.gl_notes.insert(id, text);
    f.writes.push(("POST".into(), format!("gl/mr/{iid}/notes")));
    (
        StatusCode::CREATED,
        serde_json::json!({"id": id}).to_string(),
    )
}

async fn gl_edit(
    State(f): State<Shared>,
    UrlPath((project, _iid, id)): UrlPath<(String, u64, u64)>,
    h: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut f = f.lock().unwrap();
    if let Err(c) = f.gitlab_ok(&h, &project) {
        return c;
    }
    let text = match f.comment_body(&body) {
        Ok(t) => t,
        Err(c) => return c,
    };
    if !f.gl_notes.contains_key(&id) {
        return StatusCode::NOT_FOUND;
    }
    f.gl_notes.insert(id, text);
    f.writes.push(("PUT".into(), format!("gl/notes/{id}")));
    StatusCode::OK
}

async fn gl_status(
    State(f): State<Shared>,
    UrlPath((project, sha)): UrlPath<(String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut f = f.lock().unwrap();
    if let Err(c) = f.gitlab_ok(&h, &project) {
        return c;
    }
    f.leak_check(&body);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let state = v["state"].as_str().unwrap_or_default().to_string();
    if sha.len() != 40
        || !["pending", "running", "success", "failed", "canceled"].contains(&state.as_str())
    {
        f.refused.push(format!("gitlab status: {v}"));
        return StatusCode::BAD_REQUEST;
    }
    let name = v["name"].as_str().unwrap_or_default().to_string();
    f.statuses.push(("gitlab".into(), sha, name, state));
    StatusCode::CREATED
}

async fn hook(State(f): State<Shared>, h: HeaderMap, body: Bytes) -> StatusCode {
    let mut f = f.lock().unwrap();
    f.leak_check(&body);
    if header(&h, "x-tidegate-signature") != signature(KEY.as_bytes(), &body) {
        f.refused.push("hook: bad signature".into());
        return StatusCode::UNAUTHORIZED;
    }
    f.hooks
        .push(serde_json::from_slice(&body).unwrap_or_default());
    StatusCode::NO_CONTENT
}

async fn forge(f: Shared) -> std::net::SocketAddr {
    let gh = "/api/v3/repos/{owner}/{repo}";
    let gl = "/api/v4/projects/{project}";
    let app = axum::Router::new()
        .route(
            &format!("{gh}/issues/{{n}}/comments"),
            get(gh_list).post(gh_create),
        )
        .route(
            &format!("{gh}/issues/comments/{{id}}"),
            patch(gh_edit).delete(gh_delete),
        )
        .route(&format!("{gh}/statuses/{{sha}}"), post(gh_status))
        .route(
            &format!("{gl}/merge_requests/{{iid}}/notes"),
            get(gl_list).post(gl_create),
        )
        .route(
            &format!("{gl}/merge_requests/{{iid}}/notes/{{id}}"),
            axum::routing::put(gl_edit),
        )
        .route(&format!("{gl}/statuses/{{sha}}"), post(gl_status))
        .route("/hook", post(hook))
        .with_state(f);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn env_doc() -> String {
    "apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: dev\nspec:\n  targets:\n    kubernetes:\n      context: dev\n  modules:\n    - name: app\n      source: modules/app\n".into()
}

fn module_doc(level: &str) -> String {
    format!(
        "apiVersion: tidegate.dev/v1\nkind: Module\nmetadata:\n  name: app\nspec:\n  resources:\n    - name: config\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: app\n          namespace: default\n        data:\n          LEVEL: \"{level}\"\n"
    )
}

fn notifications(dir: &std::path::Path, addr: std::net::SocketAddr) -> std::path::PathBuf {
    let token = dir.join("gh-token");
    std::fs::write(&token, GH_TOKEN).unwrap();
    let url = dir.join("hook-url");
    std::fs::write(&url, format!("http://{addr}/hook")).unwrap();
    let key = dir.join("hook-key");
    std::fs::write(&key, KEY).unwrap();
    let file = dir.join("notify.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: tidegate.dev/v1
kind: Notifications
spec:
  delivery:
    backoff: 50ms
    maxBackoff: 200ms
  targets:
    - name: gh
      type: github
      apiUrl: http://{addr}/api/v3
      repository: platform/infra
      token: {{fromFile: {}}}
    - name: gl
      type: gitlab
      apiUrl: http://{addr}
      project: group/infra
      token: {{fromEnv: PLAN_TEST_GL_TOKEN}}
    - name: hook
      type: webhook
      url: {{fromFile: {}}}
      signingKey: {{fromFile: {}}}
    - name: prod-only
      type: webhook
      url: {{fromFile: {}}}
      signingKey: {{fromFile: {}}}
      environments: [prod]
",
            token.display(),
            url.display(),
            key.display(),
            url.display(),
            key.display()
        ),
    )
    .unwrap();
    file
}

fn plan(repo: &std::path::Path, notify: &std::path::Path, base: &str) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .env("PLAN_TEST_GL_TOKEN", GL_TOKEN)
        .env("NO_COLOR", "1")
        .args(["plan", "--format", "text", "--base", base, "--head", "HEAD"])
        .arg("--repo")
        .arg(repo)
        .arg("--notify")
        .arg(notify)
        .args(["--pull-request", "7", "--notify-timeout", "20s"])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The plan comments (id, body) of key `all` in `comments`.
fn plan_comments(comments: &BTreeMap<u64, String>) -> Vec<(u64, String)> {
    comments
        .iter()
        .filter(|(_, b)| b.starts_with("<!-- tidegate-plan key=all part="))
        .map(|(i, b)| (*i, b.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_plan_comment_is_made_once_then_edited_in_place() {
    let shared: Shared = Arc::default();
    {
        let mut f = shared.lock().unwrap();
        for i in 0..130 {
            f.next_id += 1;
            let id = f.next_id;
            f.gh_comments.insert(id, format!("looks good {i}"));
            f.gl_notes.insert(id, format!("note {i}"));
        }
        f.next_id += 1;
        let id = f.next_id;
        let other = "<!-- tidegate-plan key=prod part=1 -->\nprod's plan".to_string();
        f.gh_comments.insert(id, other.clone());
        f.gl_notes.insert(id, other);
    }
    let addr = forge(shared.clone()).await;
    let tmp = TempDir::new().unwrap();
    let repo = tmp.path().join("repo");
    let base = commit_files(
        &repo,
        &[
            ("environments/dev.yaml", env_doc()),
            ("modules/app/module.yaml", module_doc("debug")),
        ],
    );
    let c1 = commit_files(&repo, &[("modules/app/module.yaml", module_doc("info"))]);
    let notify = notifications(tmp.path(), addr);

    // First push: one comment on each forge, a status on c1.
    let (code, text) = tokio::task::spawn_blocking({
        let (r, n, b) = (repo.clone(), notify.clone(), base.clone());
        move || plan(&r, &n, &b)
    })
    .await
    .unwrap();
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("notify gh: plan.ready sent"), "{text}");
    assert!(text.contains("notify gl: plan.ready sent"), "{text}");
    assert!(text.contains("notify hook: plan.ready sent"), "{text}");
    assert!(
        text.contains("notify prod-only: plan.ready not sent"),
        "{text}"
    );
    let (gh_id, gl_id) = {
        let f = shared.lock().unwrap();
        assert!(f.refused.is_empty(), "{:?}", f.refused);
        let gh = plan_comments(&f.gh_comments);
        assert_eq!(gh.len(), 1, "{gh:?}");
        assert!(
            gh[0].1.contains("LEVEL") && gh[0].1.contains("info"),
            "{}",
            gh[0].1
        );
        let gl = plan_comments(&f.gl_notes);
        assert_eq!(gl.len(), 1);
        assert!(f.statuses.contains(&(
            "github".into(),
            c1.clone(),
            "tidegate/plan".into(),
            "success".into()
        )));
        assert!(f.statuses.contains(&(
            "gitlab".into(),
            c1.clone(),
            "tidegate/plan".into(),
            "success".into()
        )));
        let h = &f.hooks[0];
        assert_eq!(h["kind"], "plan.ready");
        assert_eq!(h["pullRequest"], 7);
        assert_eq!(h["commit"], c1.as_str());
        assert_eq!(h["reason"], "changes");
        assert!(h["markdown"][0].as_str().unwrap().contains("info"));
        (gh[0].0, gl[0].0)
    };

    // Second push: the same comments edited in place, a status on c2;
    // the listing fails twice first (retried).
    let c2 = commit_files(&repo, &[("modules/app/module.yaml", module_doc("warn"))]);
    shared.lock().unwrap().fail_lists = 2;
    let (code, text) = tokio::task::spawn_blocking({
        let (r, n, b) = (repo.clone(), notify.clone(), base.clone());
        move || plan(&r, &n, &b)
    })
    .await
    .unwrap();
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("notify gh: plan.ready sent"), "{text}");
    {
        let f = shared.lock().unwrap();
        assert!(f.refused.is_empty(), "{:?}", f.refused);
        let gh = plan_comments(&f.gh_comments);
        assert_eq!(gh.len(), 1, "edited, not added: {gh:?}");
        assert_eq!(gh[0].0, gh_id, "the same comment");
        assert!(gh[0].1.contains("warn") && !gh[0].1.contains("\"info\""));
        let gl = plan_comments(&f.gl_notes);
        assert_eq!((gl.len(), gl[0].0), (1, gl_id));
        assert!(gl[0].1.contains("warn"));
        assert!(f.statuses.iter().any(|s| s.0 == "github" && s.1 == c2));
        assert!(f.statuses.iter().any(|s| s.0 == "gitlab" && s.1 == c2));
        let creates = f.writes.iter().filter(|w| w.0 == "POST").count();
        assert_eq!(creates, 2, "one comment per forge, ever: {:?}", f.writes);
        assert!(f.list_calls >= 2 * 2 + 2, "paged past 100 and retried");
        // Another job's plan comment is not touched.
        assert!(f.gh_comments.values().any(|b| b.ends_with("prod's plan")));
    }

    // A broken push: the comment says why, the status fails.
    let c3 = commit_files(
        &repo,
        &[("modules/app/module.yaml", "spec: [unclosed\n".into())],
    );
    let (code, text) = tokio::task::spawn_blocking({
        let (r, n, b) = (repo.clone(), notify.clone(), base.clone());
        move || plan(&r, &n, &b)
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{text}");
    let f = shared.lock().unwrap();
    let gh = plan_comments(&f.gh_comments);
    assert_eq!(gh.len(), 1);
    assert!(
        gh[0].1.contains("The repository has problems")
            && gh[0].1.contains("modules/app/module.yaml"),
        "{}",
        gh[0].1
    );
    assert!(f.statuses.contains(&(
        "github".into(),
        c3.clone(),
        "tidegate/plan".into(),
        "failure".into()
    )));
    assert!(f
        .statuses
        .contains(&("gitlab".into(), c3, "tidegate/plan".into(), "failed".into())));
    assert!(f.leaks.is_empty(), "a secret reached a body: {:?}", f.leaks);
}
