//! `tidegate reconcile` for real: a Git repository made with `git` and
//! served over file://, the HTTP server on a loopback port (probes,
//! metrics, status API and page, webhooks with real HMAC), Leases against
//! kube-sim with two replicas in one process, the deploy manifests through
//! the real `kubectl apply --dry-run=server`, and SIGTERM on the real
//! binary.
//!
//! The one test double: [`Recorder`] implements `reconcile::Converge` in
//! place of the executor (plan/apply of one environment). It records every
//! call and can be told to fail an environment. It stands in for our own
//! executor only, to observe the state machine's order and gates; git,
//! HTTP, webhooks, leases and metrics are the real ones.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tempfile::TempDir;
use tidegate::reconcile::lease::LeaseConfig;
use tidegate::reconcile::webhook::github_signature;
use tidegate::reconcile::{
    ApiCalls, Changes, Converge, EnvHealth, EnvReport, ErrorReason, Mode, Options, Reconciler,
    ReportError, Shared,
};
use tidegate::sensitive::Sensitive;
use tidegate::source::{Snapshot, Source, SourceConfig, TrustList};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stand::Kube;
use crate::support;

const ENVS: [&str; 4] = ["dev", "staging", "test", "prod"];

use crate::support::git;

/// An upstream repository with four environments dev < staging < test < prod.
pub(crate) struct Upstream {
    dir: TempDir,
}

impl Upstream {
    pub(crate) fn new() -> Upstream {
        let up = Upstream {
            dir: tempfile::tempdir().unwrap(),
        };
        git(up.path(), &["init", "-q", "-b", "main"]);
        let mut after = None;
        for env in ENVS {
            up.write(
                &format!("environments/{env}.yaml"),
                &env_doc(env, after, "  vars: {rev: 1}\n"),
            );
            after = Some(env);
        }
        up.commit("four environments");
        up
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// Changes a var in every environment and commits.
    pub(crate) fn bump(&self, rev: u32) -> String {
        let mut after = None;
        for env in ENVS {
            let extra = format!("  vars: {{rev: {rev}}}\n");
            self.write(
                &format!("environments/{env}.yaml"),
                &env_doc(env, after, &extra),
            );
            after = Some(env);
        }
        self.commit(&format!("rev {rev}"))
    }

    fn commit(&self, msg: &str) -> String {
        crate::stand::write_project(self.path());
        git(self.path(), &["add", "-A"]);
        git(self.path(), &["commit", "-q", "--allow-empty", "-m", msg]);
        git(self.path(), &["rev-parse", "HEAD"])
    }
}

fn env_doc(name: &str, after: Option<&str>, extra: &str) -> String {
    let after = after.map(|a| format!("  after: {a}\n")).unwrap_or_default();
    format!("apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: {name}\nspec:\n{after}{extra}")
}

/// Test double of the executor (see the module doc): records calls, fails
/// the environments it is told to.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<(String, String, Mode)>>,
    fail: Mutex<HashSet<String>>,
    delay: Duration,
    /// Shared by the recorders of several replicas: environments being
    /// converged anywhere right now, and every time two overlapped.
    cluster: Option<Arc<Cluster>>,
}

#[derive(Default)]
struct Cluster {
    active: Mutex<HashSet<String>>,
    overlaps: Mutex<Vec<String>>,
}

/// Marks an environment as being converged until dropped (also when the
/// converge is abandoned).
struct Active(Arc<Cluster>, String);

impl Active {
    fn enter(c: &Arc<Cluster>, env: &str) -> Active {
        if !c.active.lock().unwrap().insert(env.to_string()) {
            c.overlaps.lock().unwrap().push(env.to_string());
        }
        Active(c.clone(), env.to_string())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.lock().unwrap().remove(&self.1);
    }
}

impl Recorder {
    fn calls(&self) -> Vec<(String, String, Mode)> {
        self.calls.lock().unwrap().clone()
    }

    /// Environments converged at `commit`, in call order.
    fn envs_at(&self, commit: &str) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|(_, c, _)| c == commit)
            .map(|(e, _, _)| e)
            .collect()
    }

    fn fail(&self, env: &str, yes: bool) {
        let mut f = self.fail.lock().unwrap();
        if yes {
            f.insert(env.into());
        } else {
            f.remove(env);
        }
    }
}

#[async_trait]
impl Converge for Recorder {
    async fn converge(
        &self,
        snap: &Snapshot,
        env: &str,
        mode: Mode,
    ) -> Result<EnvReport, ReportError> {
        self.calls
            .lock()
            .unwrap()
            .push((env.to_string(), snap.commit.clone(), mode));
        let _active = self.cluster.as_ref().map(|c| Active::enter(c, env));
        tokio::time::sleep(self.delay).await;
        if self.fail.lock().unwrap().contains(env) {
            return Err(ReportError::new(
                ErrorReason::Apply,
                format!("{env}: told to fail"),
            ));
        }
        Ok(EnvReport {
            changes: Changes {
                create: 1,
                update: 0,
                delete: 0,
                unchanged: 2,
            },
            health: EnvHealth::Healthy,
            drift: vec![],
            resources: 3,
            api_calls: vec![ApiCalls {
                provider: "kubernetes".into(),
                operation: "apply".into(),
                result: "ok".into(),
                count: 1,
            }],
            ..EnvReport::default()
        })
    }
}

/// A reconciler and its HTTP server running in this process.
/// The bearer token the harness's servers accept (`--api-token-file`).
pub const API_TOKEN: &str = "harness-api-token";

/// The headers of an authenticated, same-site API request.
pub const API_HEADERS: [(&str, &str); 2] = [
    ("Authorization", "Bearer harness-api-token"),
    ("Content-Type", "application/json"),
];

struct Running {
    shared: Arc<Shared>,
    /// The API listener (page, status, API, webhook).
    addr: std::net::SocketAddr,
    /// The probe listener (healthz, readyz, metrics).
    probe: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _cache: TempDir,
}

struct Setup {
    url: String,
    interval: Duration,
    secret: Option<&'static str>,
    leases: Option<(LeaseConfig, kube::Client)>,
    source_backoff: Duration,
    trust: Arc<TrustList>,
}

impl Setup {
    fn new(url: String) -> Setup {
        Setup {
            url,
            interval: Duration::from_millis(200),
            secret: None,
            leases: None,
            source_backoff: Duration::from_millis(100),
            trust: Arc::default(),
        }
    }
}

async fn start(setup: Setup, converge: Arc<dyn Converge>) -> Running {
    let cache = tempfile::tempdir().unwrap();
    let mut cfg = SourceConfig::new(&setup.url, "main", cache.path().join("git"));
    cfg.interval = setup.interval;
    cfg.backoff.base = setup.source_backoff;
    cfg.backoff.max = setup.source_backoff * 4;
    let source = Source::open(cfg).await.unwrap();
    let mut opts = Options::new(&setup.url, "main");
    opts.interval = setup.interval;
    opts.tick = Duration::from_millis(50);
    opts.shutdown_grace = Duration::from_secs(5);
    opts.backoff.base = Duration::from_millis(300);
    opts.backoff.max = Duration::from_secs(2);
    let kube = setup.leases.as_ref().map(|(_, c)| c.clone());
    opts.leases = setup.leases.map(|(l, _)| l);
    opts.trust = setup.trust;
    let secret = setup.secret.map(|s| Sensitive::new(s.as_bytes().to_vec()));
    let (shared, commands) = Shared::new(&opts, secret);
    let listeners = tidegate::server::Listeners::bind(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let addr = listeners.api.local_addr().unwrap();
    let probe = listeners.probe.local_addr().unwrap();
    let mut config = tidegate::server::Config::default();
    config.auth.token = Some(Sensitive::new(API_TOKEN.as_bytes().to_vec()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tidegate::server::serve(
        listeners,
        shared.clone(),
        config,
        async {
            let _ = http_stopped.await;
        },
    ));
    let reconciler = Reconciler::new(source, converge, opts, shared.clone(), commands, kube);
    let task = tokio::spawn(async move {
        reconciler
            .run(async {
                let _ = stopped.await;
            })
            .await;
        let _ = http_stop.send(());
    });
    Running {
        shared,
        addr,
        probe,
        stop: Some(stop),
        task,
        _cache: cache,
    }
}

impl Running {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stops within the grace period")
            .unwrap();
    }

    /// GET from the listener that serves `path`.
    async fn get(&self, path: &str) -> (u16, String) {
        let addr = match path {
            "/healthz" | "/readyz" | "/metrics" => self.probe,
            _ => self.addr,
        };
        http(addr, "GET", path, &[], b"").await
    }

    /// An authenticated state-changing POST (`/api/v1/...`).
    async fn api_post(&self, path: &str) -> (u16, String) {
        http(self.addr, "POST", path, &API_HEADERS, b"").await
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        http(self.addr, "POST", path, headers, body).await
    }

    fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.shared.status()).unwrap()
    }

    fn gate(&self, env: &str) -> serde_json::Value {
        let s = self.status();
        s["environments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == env)
            .map(|e| e["gate"].clone())
            .unwrap_or_default()
    }
}

/// One HTTP/1.1 request over a fresh connection; (status, body).
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Waits until `cond` holds (polling every 20 ms), at most `secs`.
async fn until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_commit_walks_the_environments_in_order_and_a_failure_holds_the_later_ones() {
    let up = Upstream::new();
    let c1 = git(up.path(), &["rev-parse", "HEAD"]);
    let rec = Arc::new(Recorder::default());
    let r = start(Setup::new(up.url()), rec.clone()).await;
    until(20, "c1 reaches prod", || rec.envs_at(&c1).len() == 4).await;
    assert_eq!(rec.envs_at(&c1), ENVS);

    // A new commit, and staging fails: test and prod stay at c1.
    rec.fail("staging", true);
    let c2 = up.bump(2);
    until(20, "staging tried c2 twice (backoff retry)", || {
        rec.envs_at(&c2).iter().filter(|e| *e == "staging").count() >= 2
    })
    .await;
    assert_eq!(rec.envs_at(&c2).first().map(String::as_str), Some("dev"));
    assert!(
        !rec.envs_at(&c2).iter().any(|e| e == "test" || e == "prod"),
        "{:?}",
        rec.calls()
    );
    let s = r.status();
    let envs = s["environments"].as_array().unwrap();
    assert_eq!(envs[0]["lastGood"], c2.as_str());
    assert_eq!(envs[1]["lastGood"], c1.as_str());
    assert_eq!(envs[2]["lastGood"], c1.as_str());
    assert_eq!(r.gate("test")["state"], "waiting");
    assert_eq!(r.gate("test")["on"], "staging");
    assert_eq!(envs[1]["last"]["error"]["reason"], "apply");

    // Fixed: staging's backoff retry goes through and the rest follow.
    rec.fail("staging", false);
    until(20, "c2 reaches prod", || {
        rec.envs_at(&c2).contains(&"prod".to_string())
    })
    .await;

    // A commit that does not load is reported and applies nothing.
    up.write("environments/test.yaml", "apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: test\nspec:\n  after: staging\n  sometimes: true\n");
    let c3 = up.commit("broken");
    until(10, "load error reported", || {
        r.shared.status().load_error.is_some()
    })
    .await;
    let err = r.shared.status().load_error.unwrap();
    assert!(err.contains("environments/test.yaml:7:3"), "{err}");
    assert_eq!(
        r.shared.status().rejected_commit.as_deref(),
        Some(c3.as_str())
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rec.envs_at(&c3).is_empty());
    r.shutdown().await;
}

/// Commits `vars: {rev}` in every environment, prod requiring a trusted
/// signature; signed with `signer` (an ssh-keygen key) when given.
fn signed_bump(up: &Upstream, rev: u32, signer: Option<&crate::source::SshSigner>) -> String {
    let mut after = None;
    for env in ENVS {
        let strict = if env == "prod" {
            "  requireSignedCommits: true\n"
        } else {
            ""
        };
        let extra = format!("{strict}  vars: {{rev: {rev}}}\n");
        up.write(
            &format!("environments/{env}.yaml"),
            &env_doc(env, after, &extra),
        );
        after = Some(env);
    }
    git(up.path(), &["add", "-A"]);
    let mut args = vec![];
    let key;
    if let Some(s) = signer {
        key = format!("user.signingkey={}", s.key.display());
        args.extend(["-c", "gpg.format=ssh", "-c", key.as_str()]);
    }
    let msg = format!("rev {rev}");
    args.extend(["commit", "-q", "-m", msg.as_str()]);
    if signer.is_some() {
        args.push("-S");
    }
    git(up.path(), &args);
    git(up.path(), &["rev-parse", "HEAD"])
}

/// prod requires a trusted signature: an unsigned commit and one signed by
/// an untrusted key reach dev, staging and test but not prod, and the
/// status API and page say why; a commit signed by the trusted key
/// (allowed_signers format) reaches prod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prod_requires_a_trusted_signature() {
    let up = Upstream::new();
    let ops = crate::source::ssh_signer("ops-laptop");
    let stranger = crate::source::ssh_signer("stranger");
    let mut trust = TrustList::default();
    trust
        .add_allowed_signers(
            "allowed_signers",
            &format!("ops@example.com {}", ops.public),
        )
        .unwrap();
    let unsigned = signed_bump(&up, 2, None);
    let rec = Arc::new(Recorder::default());
    let mut setup = Setup::new(up.url());
    setup.trust = Arc::new(trust);
    let r = start(setup, rec.clone()).await;

    let prod_error = |r: &Running| {
        let s = r.status();
        let prod = s["environments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "prod")
            .cloned()
            .unwrap();
        (
            prod["last"]["commit"].clone(),
            prod["last"]["error"].clone(),
        )
    };
    until(
        20,
        "the unsigned commit reaches test and is refused in prod",
        || rec.envs_at(&unsigned).len() == 3 && prod_error(&r).1["reason"] == "signature",
    )
    .await;
    assert_eq!(rec.envs_at(&unsigned), ["dev", "staging", "test"]);
    let (commit, error) = prod_error(&r);
    assert_eq!(commit, unsigned.as_str());
    let msg = error["message"].as_str().unwrap();
    assert!(
        msg.contains("is not applied to prod: commit is not signed"),
        "{msg}"
    );
    assert!(msg.contains("and environments/prod.yaml sets `requireSignedCommits: true`; sign the commit with a key listed in --trusted-signers"), "{msg}");
    let (code, body) = r.get("/api/v1/status").await;
    assert_eq!(code, 200);
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api["signature"], "commit is not signed");
    let (_, page) = r.get("/").await;
    assert!(page.contains("signature</span>: commit"), "{page}");
    assert!(page.contains("Commit signature: commit is not signed"));

    let untrusted = signed_bump(&up, 3, Some(&stranger));
    until(20, "the stranger's commit is refused in prod", || {
        prod_error(&r).0 == untrusted.as_str()
    })
    .await;
    let msg = prod_error(&r).1["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("untrusted signature: SSH key SHA256:"),
        "{msg}"
    );
    assert!(msg.contains("not in the trust list"), "{msg}");
    assert!(!rec.envs_at(&untrusted).contains(&"prod".to_string()));

    let signed = signed_bump(&up, 4, Some(&ops));
    // The recorder sees the converge start; the status shows its result
    // a moment later.
    until(20, "the trusted commit reaches prod", || {
        rec.envs_at(&signed).contains(&"prod".to_string())
            && prod_error(&r).0 == signed.as_str()
            && prod_error(&r).1.is_null()
    })
    .await;
    assert_eq!(rec.envs_at(&signed), ENVS);
    assert!(prod_error(&r).1.is_null(), "{:?}", prod_error(&r));
    let sig = r.status()["signature"].as_str().unwrap().to_string();
    assert!(
        sig.starts_with("signed by ops@example.com (SHA256:"),
        "{sig}"
    );
    assert!(rec
        .calls()
        .iter()
        .all(|(e, c, _)| e != "prod" || *c == signed));
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_flips_after_the_first_fetch_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("later");
    let url = format!("file://{}", path.display());
    let rec = Arc::new(Recorder::default());
    let r = start(Setup::new(url), rec.clone()).await;
    assert_eq!(r.get("/healthz").await.0, 200);
    let (code, body) = r.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        r.get("/readyz").await.0,
        503,
        "unreachable remote: still not ready"
    );
    // The remote appears.
    let up = Upstream::new();
    std::fs::rename(up.path(), &path).unwrap();
    let mut ready = false;
    for _ in 0..200 {
        if r.get("/readyz").await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "ready after the first fetch and load");
    r.shutdown().await;
    // The renamed tempdir is cleaned up with `dir`.
    std::mem::forget(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_poll_at_once_and_refuse_bad_signatures_and_replays() {
    const SECRET: &str = "hook-secret-do-not-print";
    let up = Upstream::new();
    let c1 = git(up.path(), &["rev-parse", "HEAD"]);
    let rec = Arc::new(Recorder::default());
    let mut setup = Setup::new(up.url());
    setup.interval = Duration::from_secs(3600); // only the first poll and webhooks
    setup.secret = Some(SECRET);
    let r = start(setup, rec.clone()).await;
    until(20, "c1 reaches prod", || rec.envs_at(&c1).len() == 4).await;
    let c2 = up.bump(2);
    let body = br#"{"ref":"refs/heads/main","after":"x"}"#;

    let bad = github_signature(b"wrong secret", body);
    let (code, _) = r
        .post(
            "/webhook",
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", "d1"),
                ("X-Hub-Signature-256", bad.as_str()),
            ],
            body,
        )
        .await;
    assert_eq!(code, 401);
    let (code, _) = r
        .post(
            "/webhook",
            &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "d0")],
            body,
        )
        .await;
    assert_eq!(code, 401, "unsigned");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        r.shared.status().commit.as_deref(),
        Some(c1.as_str()),
        "no poll after a refused hook"
    );

    let good = github_signature(SECRET.as_bytes(), body);
    let headers = [
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", "d2"),
        ("X-Hub-Signature-256", good.as_str()),
    ];
    let (code, resp) = r.post("/webhook", &headers, body).await;
    assert_eq!(code, 202, "{resp}");
    until(5, "webhook polled c2 at once", || {
        r.shared.status().commit.as_deref() == Some(c2.as_str())
    })
    .await;
    let (code, _) = r.post("/webhook", &headers, body).await;
    assert_eq!(code, 409, "replayed delivery");

    // GitLab: the token itself, a delivery uuid.
    let c3 = up.bump(3);
    let (code, _) = r
        .post(
            "/webhook",
            &[
                ("X-Gitlab-Event", "Push Hook"),
                ("X-Gitlab-Event-UUID", "g1"),
                ("X-Gitlab-Token", "guess"),
            ],
            body,
        )
        .await;
    assert_eq!(code, 401);
    let (code, _) = r
        .post(
            "/webhook",
            &[
                ("X-Gitlab-Event", "Push Hook"),
                ("X-Gitlab-Event-UUID", "g2"),
                ("X-Gitlab-Token", SECRET),
            ],
            // Not the GitHub delivery's body: that one was seen already.
            br#"{"ref":"refs/heads/main","after":"y"}"#,
        )
        .await;
    assert_eq!(code, 202);
    until(5, "gitlab hook polled c3", || {
        r.shared.status().commit.as_deref() == Some(c3.as_str())
    })
    .await;

    let (_, metrics) = r.get("/metrics").await;
    assert!(
        metrics.contains("tidegate_webhooks_total{forge=\"github\",result=\"bad-signature\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tidegate_webhooks_total{forge=\"github\",result=\"replayed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tidegate_webhooks_total{forge=\"gitlab\",result=\"accepted\"} 1"),
        "{metrics}"
    );
    let (_, page) = r.get("/").await;
    let (_, status) = r.get("/api/v1/status").await;
    for text in [&metrics, &page, &status] {
        assert!(!text.contains(SECRET), "the webhook secret leaked");
    }
    r.shutdown().await;
}

/// Checks every line against the Prometheus/OpenMetrics text grammar;
/// returns the sample names.
fn parse_exposition(text: &str) -> Vec<String> {
    let sample = regex::Regex::new(
        r#"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*"(,[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")*)?\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$"#,
    )
    .unwrap();
    let meta = regex::Regex::new(r"^# (HELP|TYPE|UNIT) [a-zA-Z_:][a-zA-Z0-9_:]* ?.*$").unwrap();
    let mut names = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    for line in &lines[..lines.len() - 1] {
        if line.starts_with('#') {
            assert!(meta.is_match(line), "bad metadata line: {line}");
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let kind = t.split(' ').nth(1).unwrap();
                assert!(
                    [
                        "counter",
                        "gauge",
                        "histogram",
                        "info",
                        "summary",
                        "unknown"
                    ]
                    .contains(&kind),
                    "{line}"
                );
            }
        } else {
            let c = sample
                .captures(line)
                .unwrap_or_else(|| panic!("bad sample line: {line}"));
            names.push(c[1].to_string());
        }
    }
    names
}

/// The status page in a real browser (Debian `chromium`, headless): it
/// renders the four environments and the dependency graph; the screenshot
/// is kept as a test artifact, `target/test-artifacts/status-page.png`.
fn status_page_in_chromium(addr: std::net::SocketAddr, scratch: &Path) {
    let url = format!("http://{addr}/");
    let browser = |args: &[&str]| {
        let mut cmd = std::process::Command::new(crate::support::tool("chromium"));
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
        ])
        .arg(format!(
            "--user-data-dir={}",
            scratch.join("chromium").display()
        ))
        .args(args)
        .arg(&url);
        crate::support::run_ok(&mut cmd)
    };
    let dom = browser(&["--dump-dom"]);
    for env in ["dev", "staging", "test", "prod"] {
        assert!(
            dom.contains(&format!(">{env}<")),
            "{env} missing from the rendered page:\n{dom}"
        );
    }
    assert!(
        dom.contains("aria-label=\"environments in promotion order\""),
        "{dom}"
    );
    assert!(dom.contains("aria-label=\"dependency graph of"), "{dom}");
    for node in ["app.ns", "app.settings"] {
        assert!(
            dom.contains(&format!(">{node}<")),
            "{node} missing from the graph"
        );
    }
    let shot = crate::support::repo_root().join("target/test-artifacts/status-page.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&shot);
    browser(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1280,1000",
    ]);
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a near-empty screenshot: {} bytes",
        png.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_status_api_page_and_suspend_resume() {
    let up = Upstream::new();
    // dev gets two resources, so the page has a dependency graph to draw.
    up.write(
        "modules/app/module.yaml",
        "apiVersion: tidegate.dev/v1\nkind: Module\nmetadata:\n  name: app\nspec:\n  resources:\n    - name: ns\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: Namespace\n        metadata:\n          name: app\n    - name: settings\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: settings\n          namespace: ${resource.ns.metadata.name}\n",
    );
    up.write(
        "environments/dev.yaml",
        &env_doc(
            "dev",
            None,
            "  vars: {rev: 1}\n  modules:\n    - name: app\n      source: modules/app\n",
        ),
    );
    let c1 = up.commit("dev gets an app");
    let rec = Arc::new(Recorder::default());
    let r = start(Setup::new(up.url()), rec.clone()).await;
    until(20, "c1 reaches prod", || rec.envs_at(&c1).len() == 4).await;
    until(5, "prod converged", || {
        r.gate("prod")["state"] == "converged"
    })
    .await;

    let (code, text) = r.get("/metrics").await;
    assert_eq!(code, 200);
    let names = parse_exposition(&text);
    for series in [
        "tidegate_reconcile_duration_seconds_bucket",
        "tidegate_reconcile_duration_seconds_count",
        "tidegate_applied_revision_info",
        "tidegate_drift_resources",
        "tidegate_environment_healthy",
        "tidegate_api_calls_total",
        "tidegate_source_polls_total",
    ] {
        assert!(
            names.iter().any(|n| n == series),
            "{series} missing:\n{text}"
        );
    }
    for env in ENVS {
        let line =
            format!("tidegate_applied_revision_info{{environment=\"{env}\",revision=\"{c1}\"}} 1");
        assert!(text.contains(&line), "{line}\n{text}");
    }
    assert!(text.contains(
        "tidegate_api_calls_total{provider=\"kubernetes\",operation=\"apply\",result=\"ok\"}"
    ));

    let (code, page) = r.get("/").await;
    assert_eq!(code, 200);
    assert!(page.contains("<svg"), "{page}");
    for env in ENVS {
        assert!(
            page.contains(&format!("data-env=\"{env}\"")),
            "{env} missing from the page"
        );
    }
    assert!(
        !page.contains("<script") && !page.contains("<link"),
        "no scripts, no external assets"
    );
    let scratch = TempDir::new().unwrap();
    status_page_in_chromium(r.addr, scratch.path());

    let (code, json) = r.get("/api/v1/status").await;
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["commit"], c1.as_str());
    assert_eq!(json["environments"].as_array().unwrap().len(), 4);

    // Suspend staging through the API: a new commit stops at dev.
    let (code, _) = r.api_post("/api/v1/environments/staging/suspend").await;
    assert_eq!(code, 202);
    let (code, _) = r.api_post("/api/v1/environments/nope/suspend").await;
    assert_eq!(code, 404);
    until(5, "staging suspended", || {
        r.gate("staging")["state"] == "suspended"
    })
    .await;
    let c2 = up.bump(2);
    let (code, _) = r.api_post("/api/v1/reconcile").await;
    assert_eq!(code, 202);
    until(10, "dev at c2", || {
        rec.envs_at(&c2).contains(&"dev".to_string())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rec.envs_at(&c2), ["dev"]);
    assert_eq!(r.gate("test")["on"], "staging");
    let (_, text) = r.get("/metrics").await;
    assert!(
        text.contains("tidegate_environment_suspended{environment=\"staging\"} 1"),
        "{text}"
    );
    let (code, _) = r.api_post("/api/v1/environments/staging/resume").await;
    assert_eq!(code, 202);
    until(10, "c2 reaches prod after resume", || {
        rec.envs_at(&c2).len() == 4
    })
    .await;
    r.shutdown().await;
}

/// A kube-sim cluster and a client for context `dev`.
async fn cluster() -> (kube_sim::Handle, kube::Client, TempDir) {
    let sim = kube_sim::Simulator::start(kube_sim::Config {
        contexts: vec!["dev".into()],
        ..kube_sim::Config::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    sim.kubeconfig(&path).unwrap();
    tidegate::provider::kubernetes::transport::install_crypto_provider();
    let kc = Kubeconfig::read_from(&path).unwrap();
    let opts = KubeConfigOptions {
        context: Some("dev".into()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .unwrap();
    (sim, kube::Client::try_from(config).unwrap(), dir)
}

fn lease_cfg(identity: &str) -> LeaseConfig {
    let mut l = LeaseConfig::new("default", identity);
    l.duration = Duration::from_secs(2);
    l.renew_every = Duration::from_millis(200);
    l
}

async fn holders(client: &kube::Client) -> Vec<Option<String>> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "default");
    let mut out = Vec::new();
    for env in ENVS {
        let l = api
            .get_opt(&format!("tidegate-leader-{env}"))
            .await
            .unwrap();
        out.push(l.and_then(|l| l.spec?.holder_identity));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_split_the_environments_by_lease_and_one_takes_over_when_the_other_stops() {
    let (sim, client, _dir) = cluster().await;
    let up = Upstream::new();
    let c1 = git(up.path(), &["rev-parse", "HEAD"]);
    let cl = Arc::new(Cluster::default());
    let recorder = || {
        Arc::new(Recorder {
            delay: Duration::from_millis(50),
            cluster: Some(cl.clone()),
            ..Recorder::default()
        })
    };
    let (ra, rb) = (recorder(), recorder());
    let mut sa = Setup::new(up.url());
    sa.leases = Some((lease_cfg("replica-a"), client.clone()));
    let mut sb = Setup::new(up.url());
    sb.leases = Some((lease_cfg("replica-b"), client.clone()));
    let a = start(sa, ra.clone()).await;
    let b = start(sb, rb.clone()).await;

    // Each environment held by exactly one replica, two each.
    let mut split = Vec::new();
    for _ in 0..200 {
        split = holders(&client).await;
        let na = split
            .iter()
            .filter(|h| h.as_deref() == Some("replica-a"))
            .count();
        let nb = split
            .iter()
            .filter(|h| h.as_deref() == Some("replica-b"))
            .count();
        if na == 2 && nb == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let count = |who: &str| split.iter().filter(|h| h.as_deref() == Some(who)).count();
    assert_eq!(
        (count("replica-a"), count("replica-b")),
        (2, 2),
        "{split:?}"
    );
    // Across replicas the gates still hold: c1 reaches prod, through both.
    until(20, "c1 reaches prod across replicas", || {
        let mut all: Vec<String> = ra.envs_at(&c1);
        all.extend(rb.envs_at(&c1));
        ENVS.iter().all(|e| all.contains(&e.to_string()))
    })
    .await;
    // Never the same environment converged by both at once.
    assert!(
        cl.overlaps.lock().unwrap().is_empty(),
        "{:?}",
        cl.overlaps.lock().unwrap()
    );
    for (i, env) in ENVS.iter().enumerate() {
        let who = split[i].as_deref().unwrap();
        let rec = if who == "replica-a" { &ra } else { &rb };
        until(10, &format!("{env} converged by its holder {who}"), || {
            rec.envs_at(&c1).contains(&env.to_string())
        })
        .await;
    }

    // replica-a stops (releasing its leases): replica-b takes everything over.
    a.shutdown().await;
    let mut all_b = false;
    for _ in 0..200 {
        if holders(&client)
            .await
            .iter()
            .all(|h| h.as_deref() == Some("replica-b"))
        {
            all_b = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(all_b, "{:?}", holders(&client).await);
    assert!(
        cl.overlaps.lock().unwrap().is_empty(),
        "{:?}",
        cl.overlaps.lock().unwrap()
    );
    until(10, "b holds every environment", || {
        b.shared.status().environments.iter().all(|e| e.held)
    })
    .await;
    b.shutdown().await;
    sim.shutdown().await;
}

/// The binary in target/ (built by cargo for this test binary).
fn tidegate_bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_tidegate"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_real_binary_exits_0_within_the_grace_period() {
    let up = Upstream::new();
    let cache = tempfile::tempdir().unwrap();
    let port = free_port();
    let probe_port = free_port();
    let mut child = Command::new(tidegate_bin())
        .args([
            "reconcile",
            "--remote",
            &up.url(),
            "--branch",
            "main",
            "--interval",
            "1s",
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--probe-listen",
            &format!("127.0.0.1:{probe_port}"),
            "--shutdown-grace",
            "3s",
            "--log-format",
            "json",
        ])
        .arg("--cache-dir")
        .arg(cache.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let probe: std::net::SocketAddr = format!("127.0.0.1:{probe_port}").parse().unwrap();
    let mut ready = false;
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(probe).await.is_ok()
            && http(probe, "GET", "/readyz", &[], b"").await.0 == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the binary became ready");
    let (_, page) = http(addr, "GET", "/", &[], b"").await;
    assert!(page.contains("data-env=\"prod\""));
    // Ready means a commit loaded; wait until the last environment in
    // promotion order has converged once, so the logs below must hold it.
    let mut prod_done = false;
    for _ in 0..600 {
        let (code, body) = http(addr, "GET", "/api/v1/status", &[], b"").await;
        if code == 200 {
            let status: serde_json::Value = serde_json::from_str(&body).unwrap();
            prod_done = status["environments"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "prod" && !e["last"].is_null());
            if prod_done {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(prod_done, "prod converged once before SIGTERM");
    let t0 = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "did not exit within the grace period"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut logs = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{logs}");
    // JSON logs with the environment and commit fields.
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!lines.is_empty(), "{logs}");
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["environment"] == "prod" || l["span"]["environment"] == "prod"),
        "{logs}"
    );
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "stopped"),
        "{logs}"
    );
}

#[test]
fn deploy_manifests_pass_kubectl_server_side_dry_run() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt
        .block_on(kube_sim::Simulator::start(kube_sim::Config {
            contexts: vec!["prod".into()],
            ..kube_sim::Config::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    sim.kubeconfig(&dir.path().join("kubeconfig")).unwrap();
    let kubectl = |args: &[&str]| {
        Command::new(support::tool("kubectl"))
            .args(args)
            .env("KUBECONFIG", dir.path().join("kubeconfig"))
            .env("KUBECACHEDIR", dir.path().join("cache"))
            .output()
            .expect("kubectl runs")
    };
    let deploy = support::repo_root().join("deploy");
    // The namespaces must exist for a dry run of the objects in them.
    let out = kubectl(&[
        "apply",
        "-f",
        deploy.join("namespace.yaml").to_str().unwrap(),
        "-f",
        deploy.join("managed-namespaces.yaml").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(&["apply", "--dry-run=server", "-f", deploy.to_str().unwrap()]);
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{se}\n{so}");
    for obj in [
        "namespace/tidegate",
        "serviceaccount/tidegate",
        "role.rbac.authorization.k8s.io/tidegate-leases",
        "rolebinding.rbac.authorization.k8s.io/tidegate-leases",
        "clusterrole.rbac.authorization.k8s.io/tidegate",
        "clusterrolebinding.rbac.authorization.k8s.io/tidegate",
        "deployment.apps/tidegate",
        "service/tidegate",
        "ingress.networking.k8s.io/tidegate-webhook",
        "networkpolicy.networking.k8s.io/tidegate",
    ] {
        assert!(so.contains(obj), "{obj} not applied:\n{so}");
    }
    assert!(so.contains("(server dry run)"), "{so}");
    // Nothing but the namespace was stored.
    assert_eq!(sim.object_count("prod", "deployments.apps"), 0);
    rt.block_on(sim.shutdown());
}

/// An apply lock dropped without a release, as when the reconciler aborts
/// the converge holding it (its leader Lease was lost), is no longer
/// renewed: it expires after its duration and another replica takes it.
/// Before, the renewal task outlived the lock and kept the environment
/// locked for every other replica for as long as the process lived (found
/// by the fleet test below on the real kube-apiserver under load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_lock_dropped_by_an_aborted_converge_expires() {
    use tidegate::state::EnvLock;
    let (sim, client, _dir) = cluster().await;
    let secs = Duration::from_secs(2);
    let lock = EnvLock::lease(client.clone(), "test.dev", "replica-a", secs)
        .await
        .unwrap();
    drop(lock);
    let e = EnvLock::lease(client.clone(), "test.dev", "replica-b", secs)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("locked by replica-a"), "{e}");
    // Renewed every third of the duration until dropped; expired at most
    // one duration after that (plus a second for the whole-second rule).
    tokio::time::sleep(secs + Duration::from_secs(1)).await;
    let b = EnvLock::lease(client, "test.dev", "replica-b", secs)
        .await
        .expect("expired once no longer renewed");
    b.release().await.unwrap();
    sim.shutdown().await;
}

/// Environments of the fleet test: `e01` … `e12`, each with a kube
/// context of its own and no `after`, so all twelve converge in parallel
/// across the replicas.
const FLEET: usize = 12;
/// The fleet's `--lease-duration`; the replicas renew (and try to acquire)
/// every third of it.
const FLEET_LEASE: Duration = Duration::from_secs(3);
/// `--interval` of [`Stand::reconcile`].
const FLEET_INTERVAL: Duration = Duration::from_secs(1);

fn fleet_envs() -> Vec<String> {
    (1..=FLEET).map(|i| format!("e{i:02}")).collect()
}

const FLEET_MODULE: &str = "apiVersion: tidegate.dev/v1
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

/// Twelve environments, one Namespace and one ConfigMap each holding
/// `rev`; returns the commit id.
fn fleet_commit(dir: &Path, rev: u32) -> String {
    let mut files = vec![("modules/app/module.yaml", FLEET_MODULE.to_string())];
    let names = fleet_envs();
    let paths: Vec<String> = names
        .iter()
        .map(|e| format!("environments/{e}.yaml"))
        .collect();
    for (env, path) in names.iter().zip(&paths) {
        let doc = format!(
            "apiVersion: tidegate.dev/v1
kind: Environment
metadata:
  name: {env}
spec:
  targets:
    kubernetes:
      context: {env}
  vars:
    rev: \"{rev}\"
  modules:
    - name: app
      source: modules/app
      inputs:
        rev: ${{var.rev}}
"
        );
        files.push((path.as_str(), doc));
    }
    crate::stand::commit_files(dir, &files)
}

/// One replica of the real binary: [`Stand::reconcile`]'s arguments with
/// a Git cache of its own (as each pod has), leases in `lease_ns` under
/// `name` (also its `POD_NAME`, which the audit history records as the
/// host of the reconciler's entries) and [`FLEET_LEASE`]; stderr in
/// `<name>.log` in the stand's folder.
fn fleet_replica(
    stand: &crate::stand::Stand,
    repo: &Path,
    ports: crate::stand::Ports,
    name: &str,
    lease_ns: &str,
) -> tokio::process::Command {
    let mut c = stand.binary();
    let lease = format!("{}s", FLEET_LEASE.as_secs());
    let interval = format!("{}s", FLEET_INTERVAL.as_secs());
    c.args(["reconcile", "--branch", "main", "--interval", &interval])
        .arg("--remote")
        .arg(format!("file://{}", repo.display()))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", ports.api))
        .arg("--probe-listen")
        .arg(format!("127.0.0.1:{}", ports.probe))
        .arg("--cache-dir")
        .arg(stand.dir.path().join(format!("git-cache-{name}")))
        .arg("--state-dir")
        .arg(stand.dir.path().join("state"))
        .args(["--shutdown-grace", "5s"])
        .args(["--lease-namespace", lease_ns, "--identity", name])
        .args(["--lease-duration", &lease])
        .env("POD_NAME", name)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stand.dir.path().join(format!("{name}.log"))).unwrap());
    c
}

/// The holder of each fleet environment's leader Lease, in [`fleet_envs`]
/// order.
async fn fleet_holders(api: &Api<Lease>) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for env in fleet_envs() {
        let l = api.get_opt(&format!("tidegate-leader-{env}")).await;
        out.push(
            l.ok()
                .flatten()
                .and_then(|l| l.spec?.holder_identity)
                .filter(|h| !h.is_empty()),
        );
    }
    out
}

/// The `rev` of environment `env`'s ConfigMap, as its cluster has it.
async fn fleet_rev(stand: &crate::stand::Stand, env: &str) -> Option<String> {
    let cm = crate::stand::config_map(stand, env, &format!("app-{env}"), "app").await?;
    cm.data?.get("rev").cloned()
}

/// The environments replica on `port` holds and has converged, healthy,
/// at `commit` (gate `converged`: nothing in flight for it).
async fn fleet_settled(port: u16, commit: &str) -> Vec<String> {
    let Some((200, body)) = crate::stand::http_get(port, "/api/v1/status").await else {
        return Vec::new();
    };
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    s["environments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["held"] == true
                && e["lastGood"] == commit
                && e["healthy"] == true
                && e["gate"]["state"] == "converged"
        })
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

/// The tails of the replicas' logs, for a failure message.
fn fleet_logs(stand: &crate::stand::Stand, names: &[&str]) -> String {
    let mut out = String::new();
    for n in names {
        let text =
            std::fs::read_to_string(stand.dir.path().join(format!("{n}.log"))).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        out.push_str(&format!("--- {n}.log (last 15 lines)\n"));
        for l in tail.iter().rev() {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Issue 25, a fleet: three replicas of the real binary share twelve
/// environments through the per-environment leader Leases (four each);
/// one is killed with SIGKILL (no handler runs, no Lease is released), a
/// new commit changes every environment, and the survivors take the dead
/// replica's environments over and apply them within the lease duration
/// plus one poll interval plus a margin (see `bound` below). Throughout,
/// no environment is applied by two replicas at once: every apply of an
/// environment leaves an audit-history entry written under its apply lock,
/// naming the replica (`POD_NAME`) and spanning the lock's whole hold
/// (`time` is its end, `durationMs` runs from before the lock was taken),
/// and no two entries of one environment by different replicas overlap.
async fn a_fleet_of_three_takes_over_a_sigkilled_replicas_environments_within_the_lease(
    kube: Kube,
) {
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    use tidegate::state::history::{Entry, Outcome, SubjectKind};

    let envs = fleet_envs();
    let contexts: Vec<&str> = envs.iter().map(String::as_str).collect();
    let stand = crate::stand::Stand::on(kube, &contexts).await;
    // kube-sim has `default`; on the real server, the namespace
    // deploy/rbac.yaml lets tidegate keep its Leases in.
    let lease_ns = match kube {
        Kube::Sim => "default",
        Kube::Real => "tidegate",
    };
    let repo = TempDir::new().unwrap();
    let c1 = fleet_commit(repo.path(), 1);
    let names = ["replica-a", "replica-b", "replica-c"];
    let mut replicas = Vec::new();
    for name in names {
        let ports = crate::stand::Ports::free();
        let child = fleet_replica(&stand, repo.path(), ports, name, lease_ns)
            .spawn()
            .unwrap();
        replicas.push((name, ports, Some(child)));
    }
    // The Leases live where the replicas' current context points (the
    // first context).
    let leases: Api<Lease> = Api::namespaced(stand.kube(contexts[0]).await, lease_ns);

    // Every environment converged at c1, four held by each replica, each
    // settled on its holder (nothing in flight when the kill comes). The
    // bound allows for one converge abandoned in the rebalance, whose apply
    // lock then expires (60 s) before the new holder may apply.
    let started = Instant::now();
    let split = loop {
        let split = fleet_holders(&leases).await;
        let mut settled = Vec::new();
        for (_, ports, _) in &replicas {
            settled.push(fleet_settled(ports.api, &c1).await);
        }
        let even = names.iter().zip(&settled).all(|(n, s)| {
            let held: Vec<&String> = envs
                .iter()
                .zip(&split)
                .filter(|(_, h)| h.as_deref() == Some(*n))
                .map(|(e, _)| e)
                .collect();
            held.len() == FLEET / names.len() && held.iter().all(|e| s.contains(e))
        });
        if even {
            break split;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "twelve environments settled at c1, four per replica: holders {split:?}, settled {settled:?}\n{}",
            fleet_logs(&stand, &names)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for env in &envs {
        assert_eq!(fleet_rev(&stand, env).await.as_deref(), Some("1"), "{env}");
    }
    let victim = names[1];
    let moved: Vec<String> = envs
        .iter()
        .zip(&split)
        .filter(|(_, h)| h.as_deref() == Some(victim))
        .map(|(e, _)| e.clone())
        .collect();
    eprintln!(
        "fleet: settled at c1 in {:?}; holders {split:?}",
        started.elapsed()
    );

    // SIGKILL the second replica, then change every environment.
    let killed_at = Timestamp::now();
    let t0 = Instant::now();
    let mut child = replicas[1].2.take().unwrap();
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let c2 = fleet_commit(repo.path(), 2);

    // The time until the last of the dead replica's environments holds
    // rev 2 in its cluster.
    let mut applied: Vec<Option<Duration>> = vec![None; moved.len()];
    while applied.iter().any(Option::is_none) {
        for (env, at) in moved.iter().zip(applied.iter_mut()) {
            if at.is_none() && fleet_rev(&stand, env).await.as_deref() == Some("2") {
                *at = Some(t0.elapsed());
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{moved:?} applied at c2 after the kill: {applied:?}\n{}",
            fleet_logs(&stand, &names)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let takeover = applied.iter().flatten().max().copied().unwrap();
    eprintln!(
        "fleet: {} environments of {victim} ({moved:?}) applied at c2 by the survivors {takeover:?} after SIGKILL (each: {applied:?}); lease {FLEET_LEASE:?}, interval {FLEET_INTERVAL:?}",
        moved.len()
    );
    // The bound: the dead replica's Leases expire at most one lease
    // duration after its last renewal (which came before the kill); the
    // survivors try to acquire every third of it; they have fetched c2
    // within one poll interval of the push; then one apply of a Namespace
    // and a ConfigMap. The margin covers that third (1 s) and 2 s for the
    // apply and the lease and status round trips on a loaded 2-core
    // machine.
    let bound = FLEET_LEASE + FLEET_INTERVAL + Duration::from_secs(3);
    assert!(
        takeover <= bound,
        "taken over in {takeover:?}, above {bound:?}\n{}",
        fleet_logs(&stand, &names)
    );

    // All twelve settled at c2 on the two survivors, which now hold six
    // each; then stop them (SIGTERM) so the history is complete.
    let survivors = [0, 2];
    let started = Instant::now();
    loop {
        let mut settled = Vec::new();
        for i in survivors {
            settled.extend(fleet_settled(replicas[i].1.api, &c2).await);
        }
        settled.sort();
        if settled == envs {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "twelve settled at c2 on the survivors: {settled:?}\n{}",
            fleet_logs(&stand, &names)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let holders = fleet_holders(&leases).await;
    for env in &moved {
        let i = envs.iter().position(|e| e == env).unwrap();
        let h = holders[i].as_deref().unwrap_or("");
        assert!(h == names[0] || h == names[2], "{env} held by {h:?}");
    }
    for i in survivors {
        let mut child = replicas[i].2.take().unwrap();
        let status = crate::stand::sigterm(&mut child).await;
        assert_eq!(status.code(), Some(0), "{}", names[i]);
    }

    // The audit history, read back through `tidegate history`.
    let (code, out, err) = stand
        .cli_split(repo.path(), &["history", "--format", "jsonl"])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let entries: Vec<Entry> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // Every run that took the apply lock: (environment, replica, start, end).
    // The start is widened by the millisecond `durationMs` truncates, so
    // the check can only see more overlap than there was, never less.
    let mut runs = Vec::new();
    for e in &entries {
        if e.subject.kind != SubjectKind::Reconciler {
            continue;
        }
        let Some(ms) = e.duration_ms else { continue };
        let host = e.subject.host.clone().unwrap_or_default();
        assert!(names.contains(&host.as_str()), "{e:?}");
        assert_eq!(e.outcome, Outcome::Succeeded, "{e:?}");
        let end = e.timestamp().unwrap();
        let start = end - SignedDuration::from_millis(ms as i64 + 1);
        runs.push((e.environment.clone(), host, start, end, e.commit.clone()));
    }
    for a in &runs {
        for b in &runs {
            if a.0 == b.0 && a.1 != b.1 {
                assert!(
                    a.3 <= b.2 || b.3 <= a.2,
                    "{} applied by {} ({} to {}) and {} ({} to {}) at once",
                    a.0,
                    a.1,
                    a.2,
                    a.3,
                    b.1,
                    b.2,
                    b.3
                );
            }
        }
    }
    // Each of the moved environments: applied at c2 once, by a survivor,
    // after the kill; nothing by the dead replica after it.
    for env in &moved {
        let at_c2: Vec<_> = runs
            .iter()
            .filter(|r| &r.0 == env && r.4.as_deref() == Some(c2.as_str()))
            .collect();
        assert_eq!(at_c2.len(), 1, "{env}: {at_c2:?}");
        assert_ne!(at_c2[0].1, victim, "{env}");
        assert!(at_c2[0].2 > killed_at, "{env}: {at_c2:?}");
    }
    assert!(
        runs.iter().all(|r| r.1 != victim || r.3 <= killed_at),
        "{runs:?}"
    );
    let by_c2 = runs
        .iter()
        .filter(|r| r.4.as_deref() == Some(c2.as_str()))
        .count();
    assert_eq!(
        by_c2, FLEET,
        "every environment applied at c2 once: {runs:?}"
    );
    eprintln!(
        "fleet: {} apply-lock runs in the history, none overlapping across replicas",
        runs.len()
    );
}

crate::on_both_kubes!(
    a_fleet_of_three_takes_over_a_sigkilled_replicas_environments_within_the_lease
);
