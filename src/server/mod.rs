//! The reconciler's HTTP surface (axum): probes, metrics, the JSON status
//! API, push webhooks and the status page.
//!
//! | route | what |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 once a commit was fetched and loaded, else 503 |
//! | `GET /metrics` | Prometheus text (see [`crate::metrics`]) |
//! | `GET /api/v1/status` | [`Status`] as JSON |
//! | `POST /api/v1/environments/{env}/suspend`, `.../resume` | 202, 404 unknown env, 409 suspended in its file |
//! | `POST /api/v1/reconcile` | poll the remote now (202) |
//! | `POST /webhook` | GitHub/GitLab push hook (202 accepted, 200 ignored, 401, 409 replay) |
//! | `GET /` | the status page (HTML, no external assets) |
//!
//! The API has no authentication of its own: expose only `/webhook`
//! outside the cluster (deploy/ingress.yaml does exactly that).

pub mod page;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::reconcile::driver::{Command, Shared, Status};
use crate::reconcile::webhook::{self, Rejection};

/// The router over the reconciler's shared state.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/environments/{env}/{action}", post(environment))
        .route("/api/v1/reconcile", post(reconcile))
        .route("/webhook", post(hook))
        .with_state(shared)
}

/// Serves `router(shared)` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown)
        .await
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

async fn status(State(shared): S) -> Json<Status> {
    Json(shared.status())
}

#[derive(serde::Deserialize)]
struct PageQuery {
    env: Option<String>,
}

async fn status_page(State(shared): S, Query(q): Query<PageQuery>) -> Html<String> {
    Html(page::render(&shared.status(), q.env.as_deref()))
}

async fn environment(State(shared): S, Path((env, action)): Path<(String, String)>) -> Response {
    let status = shared.status();
    let Some(e) = status.environments.iter().find(|e| e.name == env) else {
        let msg = format!("no environment {env:?} in commit {:?}", status.commit);
        return error(StatusCode::NOT_FOUND, &msg);
    };
    let command = match action.as_str() {
        "suspend" => Command::Suspend(env.clone()),
        "resume" if e.suspended_in_file => {
            let msg =
                format!("{env} is suspended by `suspend: true` in its file; change it in Git");
            return error(StatusCode::CONFLICT, &msg);
        }
        "resume" => Command::Resume(env.clone()),
        other => {
            let msg = format!("unknown action {other:?}: use suspend or resume");
            return error(StatusCode::NOT_FOUND, &msg);
        }
    };
    tracing::info!(environment = %env, action = %action, "requested through the API");
    accepted(
        &shared,
        command,
        json!({"environment": env, "action": action}),
    )
}

async fn reconcile(State(shared): S) -> Response {
    accepted(&shared, Command::Poll, json!({"action": "poll"}))
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

async fn hook(State(shared): S, headers: HeaderMap, body: Bytes) -> Response {
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
        if replay.first_time(&v.delivery, Instant::now()) {
            Ok(v)
        } else {
            Err(Rejection::Replayed)
        }
    });
    match verified {
        Err(r) => {
            tracing::warn!(forge, reason = r.label(), "webhook refused");
            shared.metrics.webhook(forge, r.label());
            let code = match r {
                Rejection::Replayed => StatusCode::CONFLICT,
                Rejection::NotConfigured => StatusCode::NOT_FOUND,
                _ => StatusCode::UNAUTHORIZED,
            };
            error(code, &r.to_string())
        }
        Ok(v) if v.triggers(&shared.reference) => {
            tracing::info!(forge, delivery = %v.delivery, git_ref = ?v.git_ref, "push webhook: polling now");
            shared.metrics.webhook(forge, "accepted");
            accepted(
                &shared,
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
