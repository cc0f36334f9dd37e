//! The reconciler's HTTP surface (axum) on two listeners, so that a flood
//! of one cannot starve the other:
//!
//! | listener | route | what |
//! |---|---|---|
//! | probe | `GET /healthz` | 200 while the process serves |
//! | probe | `GET /readyz` | 200 once a commit was fetched and loaded, else 503 |
//! | probe | `GET /metrics` | Prometheus text (see [`crate::reconcile::metrics`]) |
//! | API | `GET /` | the status page (HTML, no external assets) |
//! | API | `GET /api/v1/status` | [`Status`] as JSON |
//! | API | `GET /api/v1/history?env=&since=` | the audit history as JSON lines, oldest first (400 bad `since`, 404 unknown env, 503 no commit yet) |
//! | API | `POST /api/v1/environments/{env}/suspend`, `.../resume` | 202, 404 unknown env, 409 suspended in its file |
//! | API | `POST /api/v1/environments/{env}/approve`, `.../hold`, `.../release`, `.../rollback` (JSON body `{"revision": "<commit>", "reason": "..."}`) | 200 with the controls, 400, 404 unknown env or commit, 409 refused (nothing to release, never applied there) |
//! | API | `POST /api/v1/reconcile` | poll the remote now (202) |
//! | API | `POST /webhook` | GitHub/GitLab push hook (202 accepted, 200 ignored, 401, 409 replay) |
//!
//! The state-changing `POST /api/v1/...` routes need a same-site request
//! and an authenticated, authorised caller ([`auth`]); the webhook its
//! signature ([`crate::reconcile::webhook`]). Every listener is bounded
//! ([`listen`]): connections, header-read time, head size; every route:
//! body size and request time; the API listener: requests in flight.

pub mod auth;
pub mod listen;
pub mod page;

use std::future::Future;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::reconcile::driver::{Command, ControlAsk, ControlRefused, Shared, Status};
use crate::reconcile::webhook::{self, Rejection};
use crate::sensitive::Sensitive;
use crate::state::history::{Entry, EventKind, Subject};
use auth::{Action, ApiAuth, Caller};
use listen::ConnLimits;

/// Everything that stops the HTTP server from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The descriptor limit could not be read or raised.
    #[error("cannot read or raise RLIMIT_NOFILE: {0}")]
    Rlimit(#[source] std::io::Error),
    /// The connection caps leave too few descriptors for Git and the
    /// providers.
    #[error("RLIMIT_NOFILE is {soft}: {api} API connections (--max-connections) + {probe} probe connections (--probe-max-connections) + {reserved} kept for Git, providers and files do not fit; lower --max-connections or raise the limit (ulimit -n)")]
    Descriptors {
        soft: u64,
        api: u64,
        probe: u64,
        reserved: u64,
    },
    /// A listener could not be bound.
    #[error("cannot serve HTTP on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// A secret file (webhook secret, API token) cannot be read.
    #[error("cannot read the {what} {path}: {source}")]
    SecretFile {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A secret file is empty or only whitespace: anything would match it.
    #[error("the {what} {path} is empty (or only whitespace): refusing to start, since an empty key would accept forged requests")]
    EmptySecret { what: &'static str, path: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Reads a secret file (`what`: "webhook secret", "API token"), without
/// surrounding whitespace; empty is an error.
pub fn read_secret_file(what: &'static str, path: &FsPath) -> Result<Sensitive> {
    let bytes = std::fs::read(path).map_err(|source| Error::SecretFile {
        what,
        path: path.display().to_string(),
        source,
    })?;
    let secret = Sensitive::new(bytes.trim_ascii().to_vec());
    drop(Sensitive::new(bytes));
    if secret.expose().is_empty() {
        return Err(Error::EmptySecret {
            what,
            path: path.display().to_string(),
        });
    }
    Ok(secret)
}

/// The bounds and authenticators of the server.
#[derive(Clone)]
pub struct Config {
    pub auth: ApiAuth,
    /// The API listener (status page, API, webhook).
    pub api: ConnLimits,
    /// The probe listener (healthz, readyz, metrics).
    pub probe: ConnLimits,
    /// Time a request may take, body included (408 after it).
    pub request_timeout: Duration,
    /// Largest request body on any route (413 above it).
    pub max_body_bytes: usize,
    /// Requests in flight on the API listener at once (more wait).
    pub max_requests: usize,
}

impl Default for Config {
    fn default() -> Self {
        let conn = |max_connections| ConnLimits {
            max_connections,
            header_read_timeout: Duration::from_secs(10),
        };
        Config {
            auth: ApiAuth::default(),
            api: conn(listen::DEFAULT_MAX_CONNECTIONS),
            probe: conn(32),
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 1024 * 1024,
            max_requests: 32,
        }
    }
}

/// The two bound listeners.
pub struct Listeners {
    pub api: TcpListener,
    pub probe: TcpListener,
}

impl Listeners {
    /// Binds both addresses.
    pub async fn bind(api: std::net::SocketAddr, probe: std::net::SocketAddr) -> Result<Self> {
        let bind = |addr: std::net::SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Listen {
                    addr: addr.to_string(),
                    source,
                })
        };
        Ok(Listeners {
            api: bind(api).await?,
            probe: bind(probe).await?,
        })
    }
}

#[derive(Clone)]
struct App {
    shared: Arc<Shared>,
    auth: Arc<ApiAuth>,
}

/// The API listener's router: status page, status API, state-changing
/// API, webhook.
pub fn api_router(shared: Arc<Shared>, config: &Config) -> Router {
    let app = App {
        shared,
        auth: Arc::new(config.auth.clone()),
    };
    Router::new()
        .route("/", get(status_page))
        .route("/api/v1/status", get(status))
        .route("/api/v1/history", get(history))
        .route("/api/v1/environments/{env}/{action}", post(environment))
        .route("/api/v1/reconcile", post(reconcile))
        .route("/webhook", post(hook))
        .with_state(app)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(tokio::sync::Semaphore::new(config.max_requests.max(1))),
            one_of_max_requests,
        ))
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
}

/// Runs a request once one of `--max-requests` slots is free (the wait
/// counts against the request timeout), so that request bodies buffered at
/// once stay within `max_requests * max_body_bytes`.
async fn one_of_max_requests(
    State(slots): State<Arc<tokio::sync::Semaphore>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let _slot = slots.acquire().await;
    next.run(request).await
}

/// The probe listener's router: liveness, readiness, metrics.
pub fn probe_router(shared: Arc<Shared>, config: &Config) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
}

/// How long open connections get to finish after `shutdown`.
const DRAIN: Duration = Duration::from_secs(2);

/// Serves both routers on their listeners until `shutdown` resolves.
pub async fn serve(
    listeners: Listeners,
    shared: Arc<Shared>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let api = listen::serve(
        listeners.api,
        api_router(shared.clone(), &config),
        config.api,
        "api",
        stopped.clone(),
        DRAIN,
    );
    let probe = listen::serve(
        listeners.probe,
        probe_router(shared, &config),
        config.probe,
        "probe",
        stopped,
        DRAIN,
    );
    let signal = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    tokio::join!(api, probe, signal);
}

type S = State<Arc<Shared>>;

async fn readyz(State(shared): S) -> Response {
    if shared.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let msg = "not ready: no commit fetched and loaded yet\n";
        (StatusCode::SERVICE_UNAVAILABLE, msg).into_response()
    }
}

async fn metrics(State(shared): S) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
        .into_response()
}

async fn status(State(app): State<App>) -> Json<Status> {
    Json(app.shared.status_with_traffic().await)
}

#[derive(serde::Deserialize)]
struct HistoryQuery {
    env: Option<String>,
    since: Option<String>,
}

/// The audit history of `env` (default: every environment, merged by
/// time) since `since` (a duration back from now or an RFC 3339 time), as
/// JSON lines: what a SIEM collects.
async fn history(State(app): State<App>, Query(q): Query<HistoryQuery>) -> Response {
    use crate::state::history as h;
    let now = k8s_openapi::jiff::Timestamp::now();
    let since = match q
        .since
        .as_deref()
        .map(|s| h::parse_since(s, now))
        .transpose()
    {
        Ok(since) => since,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("since: {e}")),
    };
    if let Some(env) = &q.env {
        let status = app.shared.status();
        if !status.environments.iter().any(|e| &e.name == env) {
            let msg = format!("no environment {env:?} in commit {:?}", status.commit);
            return error(StatusCode::NOT_FOUND, &msg);
        }
    }
    let entries = match app.shared.history(q.env.as_deref()).await {
        None => return error(StatusCode::SERVICE_UNAVAILABLE, "no commit loaded yet"),
        Some(Err(e)) => return error(StatusCode::BAD_GATEWAY, &e.to_string()),
        Some(Ok(entries)) => h::since(entries, since),
    };
    let mut body = String::new();
    for e in &entries {
        body.push_str(&serde_json::to_string(e).expect("an entry serialises"));
        body.push('\n');
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

#[derive(serde::Deserialize)]
struct PageQuery {
    env: Option<String>,
}

async fn status_page(State(app): State<App>, Query(q): Query<PageQuery>) -> Html<String> {
    Html(page::render(
        &app.shared.status_with_traffic().await,
        q.env.as_deref(),
    ))
}

/// Checks that a state-changing request is same-site and its caller may
/// do `action`; the refusal to answer with otherwise.
async fn authorize(app: &App, headers: &HeaderMap, action: Action<'_>) -> Result<Caller, Response> {
    let checked = match auth::same_site(headers) {
        Ok(()) => app.auth.authorize(headers, action).await,
        Err(denied) => Err(denied),
    };
    checked.map_err(|denied| {
        tracing::warn!(?action, reason = %denied, "API request refused");
        let code = denied.status();
        let mut response = error(code, &denied.to_string());
        if code == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    })
}

/// The body of a promotion control request.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ControlBody {
    revision: Option<String>,
    reason: Option<String>,
}

/// Longest `reason` accepted (it goes into the audit history).
const MAX_REASON: usize = 1024;

async fn environment(
    State(app): State<App>,
    Path((env, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let wanted = match action.as_str() {
        "suspend" => Action::Suspend(&env),
        "resume" => Action::Resume(&env),
        "approve" => Action::Approve(&env),
        "hold" => Action::Hold(&env),
        "release" => Action::Release(&env),
        "rollback" => Action::Rollback(&env),
        other => {
            let msg = format!(
                "unknown action {other:?}: use suspend, resume, approve, hold, release or rollback"
            );
            return error(StatusCode::NOT_FOUND, &msg);
        }
    };
    let caller = match authorize(&app, &headers, wanted).await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    let status = app.shared.status();
    let Some(e) = status.environments.iter().find(|e| e.name == env) else {
        let msg = format!("no environment {env:?} in commit {:?}", status.commit);
        return error(StatusCode::NOT_FOUND, &msg);
    };
    let ask = match wanted {
        Action::Approve(_) => Some(ControlAsk::Approve),
        Action::Hold(_) => Some(ControlAsk::Hold),
        Action::Release(_) => Some(ControlAsk::Release),
        Action::Rollback(_) => Some(ControlAsk::Rollback),
        _ => None,
    };
    if let Some(ask) = ask {
        return control(&app, env, ask, caller, &body).await;
    }
    let by = caller.0.clone();
    let command = match wanted {
        Action::Resume(_) if e.suspended_in_file => {
            let msg =
                format!("{env} is suspended by `suspend: true` in its file; change it in Git");
            return error(StatusCode::CONFLICT, &msg);
        }
        Action::Resume(_) => Command::Resume {
            env: env.clone(),
            by,
        },
        _ => Command::Suspend {
            env: env.clone(),
            by,
        },
    };
    tracing::info!(who = %caller, environment = %env, action = %action, "requested through the API");
    let event = match command {
        Command::Resume { .. } => EventKind::Resume,
        _ => EventKind::Suspend,
    };
    let response = accepted(
        &app.shared,
        command,
        json!({"environment": env, "action": action, "by": caller.0}),
    );
    if response.status() == StatusCode::ACCEPTED {
        // Recorded beside the answer, which does not wait for the store.
        let entry = Entry::new(&env, event, Subject::http(&caller.0));
        let shared = app.shared.clone();
        tokio::spawn(async move { shared.append_history(entry).await });
    }
    response
}

/// Carries out an authorised promotion control request and answers with
/// the environment's controls.
async fn control(app: &App, env: String, ask: ControlAsk, caller: Caller, body: &[u8]) -> Response {
    let parsed: Result<ControlBody, _> = if body.iter().all(u8::is_ascii_whitespace) {
        Ok(ControlBody::default())
    } else {
        serde_json::from_slice(body)
    };
    let body = match parsed {
        Ok(b) => b,
        Err(e) => {
            let msg = format!(
                "the body must be JSON {{\"revision\": \"<commit id>\", \"reason\": \"...\"}}: {e}"
            );
            return error(StatusCode::BAD_REQUEST, &msg);
        }
    };
    if body.reason.as_ref().is_some_and(|r| r.len() > MAX_REASON) {
        let msg = format!("`reason` is longer than {MAX_REASON} bytes");
        return error(StatusCode::BAD_REQUEST, &msg);
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let command = Command::Control {
        env: env.clone(),
        revision: body.revision,
        change: ask,
        by: caller.0.clone(),
        reason: body.reason,
        reply: tx,
    };
    if !app.shared.send(command) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the reconciler is stopping",
        );
    }
    tracing::info!(who = %caller, environment = %env, action = ?ask, "requested through the API");
    match rx.await {
        Ok(Ok(controls)) => (
            StatusCode::OK,
            Json(json!({"environment": env, "by": caller.0, "controls": controls})),
        )
            .into_response(),
        Ok(Err(refused)) => {
            let (code, msg) = match refused {
                ControlRefused::NotFound(m) => (StatusCode::NOT_FOUND, m),
                ControlRefused::Conflict(m) => (StatusCode::CONFLICT, m),
                ControlRefused::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
                ControlRefused::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            };
            error(code, &msg)
        }
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the reconciler is stopping",
        ),
    }
}

async fn reconcile(State(app): State<App>, headers: HeaderMap) -> Response {
    let caller = match authorize(&app, &headers, Action::Reconcile).await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    tracing::info!(who = %caller, action = "reconcile", "requested through the API");
    accepted(
        &app.shared,
        Command::Poll,
        json!({"action": "poll", "by": caller.0}),
    )
}

fn accepted(shared: &Shared, c: Command, body: serde_json::Value) -> Response {
    if shared.send(c) {
        (StatusCode::ACCEPTED, Json(body)).into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the reconciler is stopping",
        )
    }
}

fn error(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

async fn hook(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let shared = &app.shared;
    let forge = if headers.contains_key("x-gitlab-token") {
        "gitlab"
    } else {
        "github"
    };
    let result = match &shared.webhook_secret {
        None => Err(Rejection::NotConfigured),
        Some(secret) => webhook::verify(&headers, &body, secret),
    };
    let verified = result.and_then(|v| {
        let mut replay = shared.replay.lock().unwrap_or_else(|p| p.into_inner());
        replay.first_time(&v.delivery, &body, Instant::now())?;
        Ok(v)
    });
    match verified {
        Err(r) => {
            tracing::warn!(forge, reason = r.label(), "webhook refused");
            shared.metrics.webhook(forge, r.label());
            let code = match r {
                Rejection::Replayed | Rejection::ReplayedBody => StatusCode::CONFLICT,
                Rejection::NotConfigured => StatusCode::NOT_FOUND,
                _ => StatusCode::UNAUTHORIZED,
            };
            error(code, &r.to_string())
        }
        Ok(v) if v.triggers(&shared.reference) => {
            tracing::info!(forge, delivery = %v.delivery, git_ref = ?v.git_ref, "push webhook: polling now");
            shared.metrics.webhook(forge, "accepted");
            accepted(
                shared,
                Command::Poll,
                json!({"delivery": v.delivery, "action": "poll"}),
            )
        }
        Ok(v) => {
            shared.metrics.webhook(forge, "ignored");
            let body = json!({"delivery": v.delivery, "ignored": format!("event {:?} for {:?}", v.event, v.git_ref)});
            (StatusCode::OK, Json(body)).into_response()
        }
    }
}
