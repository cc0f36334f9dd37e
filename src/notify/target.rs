//! One event to one HTTP request, per kind of receiver. Pure apart from
//! reading the target's secrets (at each delivery, so rotation works).
//!
//! What each receiver is sent follows its public documentation:
//! - generic webhook: `POST <url>`, the [`Event`] as JSON,
//!   `X-Tidegate-Signature: sha256=<hex HMAC-SHA256 of the body>`;
//! - Slack incoming webhook: `POST <url>`, `{"text", "blocks"}` (Block Kit:
//!   header, section with fields, context);
//! - Microsoft Teams (Workflows incoming webhook): `POST <url>`,
//!   `{"type": "message", "attachments": [Adaptive Card 1.4]}`;
//! - Google Chat space webhook: `POST <url>`, `{"text", "cardsV2"}`;
//! - GitHub: `POST {api}/repos/{owner}/{repo}/statuses/{sha}`,
//!   `Authorization: Bearer`, `{"state", "target_url", "description",
//!   "context"}`, description at most 140 characters;
//! - GitLab: `POST {api}/api/v4/projects/{id}/statuses/{sha}`,
//!   `PRIVATE-TOKEN`, `{"state", "name", "target_url", "description"}`.

use hmac::{Hmac, Mac};
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{Method, Uri};
use hyper::body::Bytes;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::json;
use sha2::Sha256;

use super::config::{SecretRef, Target, TargetKind};
use super::{short, truncate, Event, Kind};

/// A request ready to send. Secret headers are marked sensitive; the URI
/// of a webhook or Slack target is itself a secret and never logged.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The signature header of the generic webhook.
pub const SIGNATURE_HEADER: &str = "x-tidegate-signature";

/// `sha256=<hex>` of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length: new_from_slice cannot fail.
    let mac = <Hmac<Sha256> as Mac>::new_from_slice(key).map(|mut m| {
        m.update(body);
        hex::encode(m.finalize().into_bytes())
    });
    format!("sha256={}", mac.unwrap_or_default())
}

/// Whether `kind` means anything to this target (commit statuses only
/// show the state of an environment at a commit).
pub fn handles(kind: &TargetKind, event: &Event) -> bool {
    match kind {
        TargetKind::Webhook { .. }
        | TargetKind::Slack { .. }
        | TargetKind::Teams { .. }
        | TargetKind::GoogleChat { .. } => true,
        TargetKind::GitHub { .. } | TargetKind::GitLab { .. } => {
            if event.kind == Kind::PlanReady {
                return event.pull_request.is_some() || commit_sha(event).is_some();
            }
            event.commit.is_some()
                && event.environment.is_some()
                && status_state(event.kind).is_some()
        }
    }
}

/// The event's commit when it is a commit id (not a working tree's).
fn commit_sha(event: &Event) -> Option<&str> {
    event
        .commit
        .as_deref()
        .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The request for `event`, or why it cannot be made (a secret missing;
/// the message names the reference, never the value).
pub fn prepare(target: &Target, event: &Event) -> Result<Prepared, String> {
    let mut headers = base_headers();
    let (uri, body) = match &target.kind {
        TargetKind::Webhook { url, signing_key } => {
            let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
            let key = read(signing_key, "signingKey")?;
            headers.insert(
                HeaderName::from_static(SIGNATURE_HEADER),
                header(&signature(key.expose(), &body))?,
            );
            headers.insert(
                HeaderName::from_static("x-tidegate-event"),
                header(event.kind.label())?,
            );
            headers.insert(
                HeaderName::from_static("x-tidegate-delivery"),
                header(&event.id)?,
            );
            (secret_uri(url)?, body)
        }
        TargetKind::Slack { url } => {
            let body = serde_json::to_vec(&slack_body(event)).map_err(|e| e.to_string())?;
            (secret_uri(url)?, body)
        }
        TargetKind::Teams { url } => {
            let body = serde_json::to_vec(&teams_body(event)).map_err(|e| e.to_string())?;
            (secret_uri(url)?, body)
        }
        TargetKind::GoogleChat { url } => {
            let body = serde_json::to_vec(&chat_body(event)).map_err(|e| e.to_string())?;
            (secret_uri(url)?, body)
        }
        TargetKind::GitHub {
            api_url,
            repository,
            token,
            context,
        } => {
            let (env, sha, state) = status_parts(event)?;
            let state = match state {
                StatusState::Pending => "pending",
                StatusState::Running => "pending",
                StatusState::Success => "success",
                StatusState::Failed => "failure",
                StatusState::Refused => "error",
            };
            let mut body = json!({
                "state": state,
                "description": truncate(&event.summary(), 140),
                "context": context.replace("{environment}", &env),
            });
            if let Some(u) = target_url(event) {
                body["target_url"] = json!(u);
            }
            github_auth(token, &mut headers)?;
            let uri = format!("{api_url}/repos/{repository}/statuses/{sha}");
            (
                parse_uri(&uri)?,
                serde_json::to_vec(&body).map_err(|e| e.to_string())?,
            )
        }
        TargetKind::GitLab {
            api_url,
            project,
            token,
            context,
        } => {
            let (env, sha, state) = status_parts(event)?;
            let state = match state {
                StatusState::Pending => "pending",
                StatusState::Running => "running",
                StatusState::Success => "success",
                StatusState::Failed | StatusState::Refused => "failed",
            };
            let mut body = json!({
                "state": state,
                "name": context.replace("{environment}", &env),
                "description": truncate(&event.summary(), 255),
            });
            if let Some(u) = target_url(event) {
                body["target_url"] = json!(u);
            }
            gitlab_auth(token, &mut headers)?;
            let id = utf8_percent_encode(project, NON_ALPHANUMERIC);
            let uri = format!("{api_url}/api/v4/projects/{id}/statuses/{sha}");
            (
                parse_uri(&uri)?,
                serde_json::to_vec(&body).map_err(|e| e.to_string())?,
            )
        }
    };
    Ok(Prepared {
        method: Method::POST,
        uri,
        headers,
        body: Bytes::from(body),
    })
}

fn base_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("tidegate/", env!("CARGO_PKG_VERSION"))),
    );
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers
}

/// GitHub's REST headers: the token as `Bearer` (marked sensitive), the
/// media type and the API version its docs ask for.
fn github_auth(token: &SecretRef, headers: &mut HeaderMap) -> Result<(), String> {
    let token = read(token, "token")?;
    let mut auth = header(&format!(
        "Bearer {}",
        token.expose_str().unwrap_or_default()
    ))?;
    auth.set_sensitive(true);
    headers.insert(AUTHORIZATION, auth);
    headers.insert(
        http::header::ACCEPT,
        HeaderValue::from_static("application/vnd.github+json"),
    );
    headers.insert(
        HeaderName::from_static("x-github-api-version"),
        HeaderValue::from_static("2022-11-28"),
    );
    Ok(())
}

/// GitLab's `PRIVATE-TOKEN` header, marked sensitive.
fn gitlab_auth(token: &SecretRef, headers: &mut HeaderMap) -> Result<(), String> {
    let token = read(token, "token")?;
    let mut t = header(token.expose_str().unwrap_or_default())?;
    t.set_sensitive(true);
    headers.insert(HeaderName::from_static("private-token"), t);
    Ok(())
}

/// Comments listed per page (the most both forges allow).
pub const COMMENTS_PER_PAGE: usize = 100;

/// The start of every plan comment's first line.
const MARKER: &str = "<!-- tidegate-plan key=";

/// What marks part `part` (1-based) of the plan comment of `event`: the
/// plan of one environment (`--env dev`) and of all are kept apart, so
/// two plan jobs on one pull request never overwrite each other.
pub fn comment_marker(event: &Event, part: usize) -> String {
    format!("{MARKER}{} part={part} -->", comment_key(event))
}

fn comment_key(event: &Event) -> &str {
    event.environment.as_deref().unwrap_or("all")
}

/// The bodies of the plan comments of `event`: each Markdown part under
/// its marker.
pub fn comment_bodies(event: &Event) -> Vec<String> {
    event
        .markdown
        .iter()
        .enumerate()
        .map(|(i, part)| format!("{}\n{part}", comment_marker(event, i + 1)))
        .collect()
}

/// One call on a pull request's comments (GitHub issue comments, GitLab
/// merge request notes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommentCall {
    /// One page (1-based) of the comments, oldest first.
    List {
        page: usize,
    },
    Create {
        body: String,
    },
    Update {
        id: u64,
        body: String,
    },
    Delete {
        id: u64,
    },
}

/// The request for `call` on pull request `pr` of a GitHub or GitLab
/// target, following each forge's REST documentation:
/// - GitHub: `GET|POST {api}/repos/{repo}/issues/{pr}/comments`,
///   `PATCH|DELETE {api}/repos/{repo}/issues/comments/{id}`;
/// - GitLab: `GET|POST {api}/api/v4/projects/{id}/merge_requests/{iid}/notes`,
///   `PUT|DELETE .../notes/{note_id}`.
pub fn comment_request(target: &Target, pr: u64, call: &CommentCall) -> Result<Prepared, String> {
    let mut headers = base_headers();
    let (base, item) = match &target.kind {
        TargetKind::GitHub {
            api_url,
            repository,
            token,
            ..
        } => {
            github_auth(token, &mut headers)?;
            (
                format!("{api_url}/repos/{repository}/issues/{pr}/comments"),
                format!("{api_url}/repos/{repository}/issues/comments/"),
            )
        }
        TargetKind::GitLab {
            api_url,
            project,
            token,
            ..
        } => {
            gitlab_auth(token, &mut headers)?;
            let id = utf8_percent_encode(project, NON_ALPHANUMERIC);
            let notes = format!("{api_url}/api/v4/projects/{id}/merge_requests/{pr}/notes");
            (notes.clone(), format!("{notes}/"))
        }
        other => {
            return Err(format!(
                "a {} target has no pull-request comments",
                other.label()
            ))
        }
    };
    let gitlab = matches!(target.kind, TargetKind::GitLab { .. });
    let (method, uri, body) = match call {
        CommentCall::List { page } => {
            let order = if gitlab {
                "&sort=asc&order_by=created_at"
            } else {
                ""
            };
            (
                Method::GET,
                format!("{base}?per_page={COMMENTS_PER_PAGE}&page={page}{order}"),
                Vec::new(),
            )
        }
        CommentCall::Create { body } => (Method::POST, base, to_body(body)?),
        CommentCall::Update { id, body } => {
            let method = if gitlab { Method::PUT } else { Method::PATCH };
            (method, format!("{item}{id}"), to_body(body)?)
        }
        CommentCall::Delete { id } => (Method::DELETE, format!("{item}{id}"), Vec::new()),
    };
    Ok(Prepared {
        method,
        uri: parse_uri(&uri)?,
        headers,
        body: Bytes::from(body),
    })
}

fn to_body(text: &str) -> Result<Vec<u8>, String> {
    serde_json::to_vec(&json!({ "body": text })).map_err(|e| e.to_string())
}

/// The plan comments of `event`'s key on one page of a listing: `(id,
/// part)` of each, and how many comments the page held (fewer than
/// [`COMMENTS_PER_PAGE`]: the last page).
pub fn marked_comments(event: &Event, page: &[u8]) -> Result<(Vec<(u64, usize)>, usize), String> {
    let items: Vec<serde_json::Value> = serde_json::from_slice(page)
        .map_err(|_| "the comment listing is not a JSON array".to_string())?;
    let prefix = format!("{MARKER}{} part=", comment_key(event));
    let mut out = Vec::new();
    for item in &items {
        let (Some(id), Some(body)) = (item["id"].as_u64(), item["body"].as_str()) else {
            continue;
        };
        let Some(rest) = body.strip_prefix(&prefix) else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(part) = digits.parse::<usize>() {
            out.push((id, part));
        }
    }
    Ok((out, items.len()))
}

/// The calls that make the comments of a plan with `parts` parts out of
/// the `existing` marked comments `(id, part)`: each part updates the
/// oldest comment of its number in place, or is created; the rest (parts
/// an earlier, longer plan had, and duplicates) are deleted.
pub fn comment_calls(bodies: Vec<String>, existing: &[(u64, usize)]) -> Vec<CommentCall> {
    let mut ids: std::collections::BTreeMap<usize, Vec<u64>> = Default::default();
    for (id, part) in existing {
        ids.entry(*part).or_default().push(*id);
    }
    for list in ids.values_mut() {
        list.sort_unstable();
    }
    let mut calls = Vec::new();
    for (i, body) in bodies.into_iter().enumerate() {
        match ids
            .get_mut(&(i + 1))
            .and_then(|l| (!l.is_empty()).then(|| l.remove(0)))
        {
            Some(id) => calls.push(CommentCall::Update { id, body }),
            None => calls.push(CommentCall::Create { body }),
        }
    }
    for id in ids.into_values().flatten() {
        calls.push(CommentCall::Delete { id });
    }
    calls
}

/// A commit status's meaning, before each forge's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusState {
    Pending,
    Running,
    Success,
    Failed,
    Refused,
}

fn status_state(kind: Kind) -> Option<StatusState> {
    match kind {
        Kind::GateWaiting | Kind::ApprovalNeeded => Some(StatusState::Pending),
        Kind::ApplyStarted => Some(StatusState::Running),
        Kind::ApplySucceeded => Some(StatusState::Success),
        Kind::ApplyFailed => Some(StatusState::Failed),
        Kind::CommitRefused => Some(StatusState::Refused),
        _ => None,
    }
}

/// What goes in `{environment}` of the status context, the commit, the
/// state. A plan's status has its own context (`plan`, or `plan-<env>` for
/// a plan of one environment), so it never overwrites an apply's.
fn status_parts(event: &Event) -> Result<(String, &str, StatusState), String> {
    let none = || format!("a {} event has no commit status", event.kind.label());
    let sha = commit_sha(event).ok_or_else(none)?;
    if event.kind == Kind::PlanReady {
        let label = match &event.environment {
            Some(e) => format!("plan-{e}"),
            None => "plan".into(),
        };
        let failed = [PLAN_BLOCKED, PLAN_INVALID];
        let state = if failed.contains(&event.reason.as_deref().unwrap_or("")) {
            StatusState::Failed
        } else {
            StatusState::Success
        };
        return Ok((label, sha, state));
    }
    match (event.environment.as_deref(), status_state(event.kind)) {
        (Some(env), Some(state)) => Ok((env.to_string(), sha, state)),
        _ => Err(none()),
    }
}

/// The `reason` of a `plan.ready` whose plan policy blocks (its commit
/// status is a failure).
pub const PLAN_BLOCKED: &str = "policy";

/// The `reason` of a `plan.ready` of a repository that could not be
/// planned (invalid files; its commit status is a failure).
pub const PLAN_INVALID: &str = "invalid";

/// The status page, on the event's environment.
fn target_url(event: &Event) -> Option<String> {
    let base = event.reconciler.status_url.as_deref()?;
    Some(match &event.environment {
        Some(env) => format!(
            "{base}{}env={env}",
            if base.contains('?') { '&' } else { '?' }
        ),
        None => base.to_string(),
    })
}

/// The Slack message: `text` (the fallback and notification line) and
/// blocks: a header, the facts as fields, the message, a link.
pub fn slack_body(event: &Event) -> serde_json::Value {
    let emoji = match event.kind.severity() {
        super::Severity::Error => ":red_circle:",
        super::Severity::Warning => ":warning:",
        super::Severity::Info => ":large_green_circle:",
    };
    let mut fields =
        vec![json!({"type": "mrkdwn", "text": format!("*Event*\n{}", event.kind.label())})];
    if let Some(env) = &event.environment {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Environment*\n{env}")}));
    }
    if let Some(c) = &event.commit {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Commit*\n`{}`", short(c))}));
    }
    if let Some(ch) = &event.changes {
        let text = format!(
            "*Changes*\n{} create, {} update, {} delete, {} unchanged",
            ch.create, ch.update, ch.delete, ch.unchanged
        );
        fields.push(json!({"type": "mrkdwn", "text": text}));
    }
    if event.resource_count > 0 {
        fields.push(
            json!({"type": "mrkdwn", "text": format!("*Resources*\n{}", event.resource_count)}),
        );
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&format!("{emoji} {}", headline(event)), 150), "emoji": true}}),
        json!({"type": "section", "fields": fields}),
    ];
    if let Some(m) = &event.message {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&escape_mrkdwn(m), 3000)}}));
    }
    if !event.resources.is_empty() {
        let list = event
            .resources
            .iter()
            .map(|r| format!("`{}`", escape_mrkdwn(r)))
            .collect::<Vec<_>>()
            .join(", ");
        blocks.push(
            json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&list, 3000)}}),
        );
    }
    let mut context = vec![
        json!({"type": "mrkdwn", "text": format!("{} · {}", escape_mrkdwn(&event.reconciler.remote), event.time)}),
    ];
    if let Some(u) = target_url(event) {
        context.push(json!({"type": "mrkdwn", "text": format!("<{u}|status page>")}));
    }
    blocks.push(json!({"type": "context", "elements": context}));
    json!({"text": truncate(&event.summary(), 3000), "blocks": blocks})
}

/// The facts every chat message shows, as (title, value).
fn facts(event: &Event) -> Vec<(&'static str, String)> {
    let mut facts = vec![("Event", event.kind.label().to_string())];
    if let Some(env) = &event.environment {
        facts.push(("Environment", env.clone()));
    }
    if let Some(c) = &event.commit {
        facts.push(("Commit", short(c).to_string()));
    }
    if let Some(ch) = &event.changes {
        facts.push((
            "Changes",
            format!(
                "{} create, {} update, {} delete, {} unchanged",
                ch.create, ch.update, ch.delete, ch.unchanged
            ),
        ));
    }
    if event.resource_count > 0 {
        facts.push(("Resources", event.resource_count.to_string()));
    }
    if !event.resources.is_empty() {
        facts.push(("Affected", truncate(&event.resources.join(", "), 1000)));
    }
    facts
}

/// The Teams message: an Adaptive Card (1.4) with the headline, the facts,
/// the message and a button to the status page.
pub fn teams_body(event: &Event) -> serde_json::Value {
    let color = match event.kind.severity() {
        super::Severity::Error => "Attention",
        super::Severity::Warning => "Warning",
        super::Severity::Info => "Good",
    };
    let mut body = vec![
        json!({"type": "TextBlock", "size": "Medium", "weight": "Bolder", "wrap": true, "color": color, "text": headline(event)}),
        json!({"type": "FactSet", "facts": facts(event).into_iter().map(|(t, v)| json!({"title": t, "value": v})).collect::<Vec<_>>()}),
    ];
    if let Some(m) = &event.message {
        body.push(json!({"type": "TextBlock", "wrap": true, "text": truncate(m, 3000)}));
    }
    body.push(
        json!({"type": "TextBlock", "wrap": true, "isSubtle": true, "size": "Small",
        "text": format!("{} · {}", event.reconciler.remote, event.time)}),
    );
    let actions: Vec<serde_json::Value> = target_url(event)
        .map(|u| json!({"type": "Action.OpenUrl", "title": "Status page", "url": u}))
        .into_iter()
        .collect();
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "actions": actions,
            }
        }]
    })
}

/// The Google Chat message: `text` (the notification line) and a card
/// with the facts, the message and a button to the status page.
pub fn chat_body(event: &Event) -> serde_json::Value {
    let mut widgets: Vec<serde_json::Value> = facts(event)
        .into_iter()
        .map(|(t, v)| json!({"decoratedText": {"topLabel": t, "text": escape_html(&v)}}))
        .collect();
    if let Some(m) = &event.message {
        widgets.push(json!({"textParagraph": {"text": escape_html(&truncate(m, 3000))}}));
    }
    if let Some(u) = target_url(event) {
        widgets.push(json!({"buttonList": {"buttons": [{"text": "Status page", "onClick": {"openLink": {"url": u}}}]}}));
    }
    json!({
        "text": truncate(&event.summary(), 3000),
        "cardsV2": [{
            "cardId": "tidegate",
            "card": {
                "header": {"title": headline(event), "subtitle": format!("{} · {}", event.reconciler.remote, event.time)},
                "sections": [{"widgets": widgets}],
            }
        }]
    })
}

/// Google Chat card text is HTML-like: its markup characters escaped.
fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn headline(event: &Event) -> String {
    let env = event.environment.as_deref().unwrap_or("tidegate");
    match event.kind {
        Kind::ReconcilerStarted => "tidegate reconciler started".into(),
        Kind::ReconcilerStopped => "tidegate reconciler stopped".into(),
        Kind::ApplyStarted => format!("{env}: apply started"),
        Kind::ApplySucceeded => format!("{env}: applied"),
        Kind::ApplyFailed => format!("{env}: apply failed"),
        Kind::DriftDetected => format!("{env}: drift detected"),
        Kind::DriftHealed => format!("{env}: drift healed"),
        Kind::GateWaiting => format!("{env}: waiting at its gate"),
        Kind::CommitRefused => format!("{env}: commit refused"),
        Kind::ApprovalNeeded => format!("{env}: waiting for an approval"),
        Kind::PlanReady => match event.pull_request {
            Some(pr) => format!("plan ready for #{pr}"),
            None => "plan ready".into(),
        },
    }
}

/// Slack's three control characters, escaped as its docs say.
fn escape_mrkdwn(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn read(r: &SecretRef, what: &str) -> Result<crate::sensitive::Sensitive, String> {
    r.read().map_err(|why| format!("{what} from {r}: {why}"))
}

fn secret_uri(r: &SecretRef) -> Result<Uri, String> {
    let url = read(r, "url")?;
    let s = url.expose_str().unwrap_or_default();
    if !super::config::is_http_url(s) {
        return Err(format!("url from {r} is not an http(s) URL"));
    }
    s.parse()
        .map_err(|_| format!("url from {r} is not an http(s) URL"))
}

fn parse_uri(s: &str) -> Result<Uri, String> {
    s.parse().map_err(|e| format!("bad URL {s}: {e}"))
}

fn header(s: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(s)
        .map_err(|_| "a header value holds characters HTTP does not allow".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::config::{Filter, Target};
    use crate::notify::{Origin, Severity};

    fn target(kind: TargetKind) -> Target {
        Target {
            name: "t".into(),
            kind,
            filter: Filter {
                environments: None,
                events: None,
                min_severity: Severity::Info,
            },
            rate_per_minute: 60,
            queue_size: None,
        }
    }

    fn secret_file(dir: &tempfile::TempDir, name: &str, value: &str) -> SecretRef {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("{value}\n")).unwrap();
        SecretRef::File(p)
    }

    fn failed() -> Event {
        let origin = Origin {
            remote: "https://git.example.com/infra.git".into(),
            branch: "main".into(),
            identity: None,
            status_url: Some("https://tidegate.example.com/".into()),
        };
        Event::new(Kind::ApplyFailed, &origin)
            .env("prod", "0123456789abcdef0123456789abcdef01234567")
            .reason("apply", "web/deployment failed: <quota> & more")
    }

    #[test]
    fn the_webhook_body_is_the_event_and_the_signature_is_hmac_sha256_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(TargetKind::Webhook {
            url: secret_file(&dir, "url", "http://127.0.0.1:9/hook"),
            signing_key: secret_file(&dir, "key", "k3y"),
        });
        let e = failed();
        let p = prepare(&t, &e).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(body["schemaVersion"], 1);
        assert_eq!(body["kind"], "apply.failed");
        assert_eq!(body["severity"], "error");
        assert_eq!(body["environment"], "prod");
        assert_eq!(body["reason"], "apply");
        assert_eq!(body["id"], e.id.as_str());
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"k3y").unwrap();
        mac.update(&p.body);
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(p.headers[SIGNATURE_HEADER], want.as_str());
        assert_eq!(p.headers["x-tidegate-event"], "apply.failed");
        assert_eq!(p.uri, "http://127.0.0.1:9/hook");
    }

    #[test]
    fn github_gets_a_failure_status_for_the_commit_with_a_bearer_token() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(TargetKind::GitHub {
            api_url: "https://ghe.example.com/api/v3".into(),
            repository: "platform/infra".into(),
            token: secret_file(&dir, "tok", "ghp_x"),
            context: "tidegate/{environment}".into(),
        });
        let p = prepare(&t, &failed()).unwrap();
        assert_eq!(p.uri, "https://ghe.example.com/api/v3/repos/platform/infra/statuses/0123456789abcdef0123456789abcdef01234567");
        assert_eq!(p.headers[AUTHORIZATION], "Bearer ghp_x");
        assert!(p.headers[AUTHORIZATION].is_sensitive());
        let body: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(body["state"], "failure");
        assert_eq!(body["context"], "tidegate/prod");
        assert_eq!(body["target_url"], "https://tidegate.example.com/?env=prod");
        assert!(body["description"].as_str().unwrap().chars().count() <= 140);
        let drift = Event::new(Kind::DriftDetected, &Origin::default()).env("prod", "abc");
        assert!(!handles(&t.kind, &drift));
        assert!(handles(&t.kind, &failed()));
    }

    #[test]
    fn gitlab_gets_a_failed_status_with_the_project_path_encoded() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(TargetKind::GitLab {
            api_url: "https://gitlab.example.com".into(),
            project: "group/infra".into(),
            token: secret_file(&dir, "tok", "glpat-x"),
            context: "tidegate/{environment}".into(),
        });
        let p = prepare(&t, &failed()).unwrap();
        assert_eq!(p.uri, "https://gitlab.example.com/api/v4/projects/group%2Finfra/statuses/0123456789abcdef0123456789abcdef01234567");
        assert_eq!(p.headers["private-token"], "glpat-x");
        let body: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(body["state"], "failed");
        assert_eq!(body["name"], "tidegate/prod");
    }

    #[test]
    fn slack_blocks_carry_the_facts_escaped_and_a_status_link() {
        let b = slack_body(&failed());
        assert!(b["text"]
            .as_str()
            .unwrap()
            .starts_with("prod: apply of 0123456789ab failed"));
        let blocks = b["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[1]["fields"][1]["text"], "*Environment*\nprod");
        assert_eq!(
            blocks[2]["text"]["text"],
            "web/deployment failed: &lt;quota&gt; &amp; more"
        );
        let last = blocks.last().unwrap();
        assert_eq!(last["type"], "context");
        assert!(last["elements"][1]["text"]
            .as_str()
            .unwrap()
            .contains("<https://tidegate.example.com/?env=prod|status page>"));
    }

    #[test]
    fn teams_and_google_chat_get_cards_with_the_facts_and_a_status_link() {
        let t = teams_body(&failed());
        let card = &t["attachments"][0]["content"];
        assert_eq!(
            t["attachments"][0]["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["body"][0]["color"], "Attention");
        assert_eq!(card["body"][1]["facts"][1]["value"], "prod");
        assert_eq!(
            card["actions"][0]["url"],
            "https://tidegate.example.com/?env=prod"
        );
        let c = chat_body(&failed());
        assert!(c["text"].as_str().unwrap().starts_with("prod: apply of"));
        let widgets = c["cardsV2"][0]["card"]["sections"][0]["widgets"]
            .as_array()
            .unwrap();
        assert_eq!(widgets[1]["decoratedText"]["text"], "prod");
        assert!(widgets.iter().any(
            |w| w["textParagraph"]["text"] == "web/deployment failed: &lt;quota&gt; &amp; more"
        ));
        assert_eq!(
            widgets.last().unwrap()["buttonList"]["buttons"][0]["onClick"]["openLink"]["url"],
            "https://tidegate.example.com/?env=prod"
        );
    }

    #[test]
    fn a_missing_secret_names_the_reference_not_a_value() {
        let t = target(TargetKind::Slack {
            url: SecretRef::Env("TIDEGATE_TEST_UNSET_SLACK_URL".into()),
        });
        let err = prepare(&t, &failed()).unwrap_err();
        assert!(
            err.contains("environment variable TIDEGATE_TEST_UNSET_SLACK_URL"),
            "{err}"
        );
    }

    #[test]
    fn plan_comments_are_edited_in_place_and_surplus_parts_deleted() {
        let e = Event::new(Kind::PlanReady, &super::super::Origin::default())
            .plan(Some(7), vec!["one".into(), "two".into()]);
        let page = serde_json::json!([
            {"id": 3, "body": "lgtm"},
            {"id": 5, "body": "<!-- tidegate-plan key=all part=1 -->\nold"},
            {"id": 6, "body": "<!-- tidegate-plan key=prod part=1 -->\nother job"},
            {"id": 8, "body": "<!-- tidegate-plan key=all part=3 -->\nold"},
            {"id": 9, "body": "<!-- tidegate-plan key=all part=1 -->\ndup"},
            {"id": 10, "body": "quoting <!-- tidegate-plan key=all part=2 -->"}
        ]);
        let (found, count) = marked_comments(&e, page.to_string().as_bytes()).unwrap();
        assert_eq!(count, 6);
        assert_eq!(found, [(5, 1), (8, 3), (9, 1)]);
        let calls = comment_calls(comment_bodies(&e), &found);
        assert_eq!(
            calls,
            [
                CommentCall::Update {
                    id: 5,
                    body: "<!-- tidegate-plan key=all part=1 -->\none".into()
                },
                CommentCall::Create {
                    body: "<!-- tidegate-plan key=all part=2 -->\ntwo".into()
                },
                CommentCall::Delete { id: 9 },
                CommentCall::Delete { id: 8 },
            ]
        );
        assert!(marked_comments(&e, b"{}").is_err());
    }

    #[test]
    fn comment_requests_follow_each_forge() {
        let dir = tempfile::tempdir().unwrap();
        let token = secret_file(&dir, "t", "tok");
        let gh = target(TargetKind::GitHub {
            api_url: "https://ghe.example.com/api/v3".into(),
            repository: "platform/infra".into(),
            token: token.clone(),
            context: "tidegate/{environment}".into(),
        });
        let r = comment_request(&gh, 7, &CommentCall::List { page: 2 }).unwrap();
        assert_eq!(r.method, Method::GET);
        assert_eq!(
            r.uri.to_string(),
            "https://ghe.example.com/api/v3/repos/platform/infra/issues/7/comments?per_page=100&page=2"
        );
        assert_eq!(r.headers[AUTHORIZATION], "Bearer tok");
        let r = comment_request(
            &gh,
            7,
            &CommentCall::Update {
                id: 42,
                body: "b".into(),
            },
        )
        .unwrap();
        assert_eq!(r.method, Method::PATCH);
        assert!(r
            .uri
            .to_string()
            .ends_with("/repos/platform/infra/issues/comments/42"));
        assert_eq!(&r.body[..], br#"{"body":"b"}"#);
        let gl = target(TargetKind::GitLab {
            api_url: "https://gitlab.example.com".into(),
            project: "group/infra".into(),
            token,
            context: "tidegate/{environment}".into(),
        });
        let r = comment_request(
            &gl,
            7,
            &CommentCall::Update {
                id: 42,
                body: "b".into(),
            },
        )
        .unwrap();
        assert_eq!(r.method, Method::PUT);
        assert_eq!(
            r.uri.to_string(),
            "https://gitlab.example.com/api/v4/projects/group%2Finfra/merge_requests/7/notes/42"
        );
        assert_eq!(r.headers["private-token"], "tok");
        let r = comment_request(&gl, 7, &CommentCall::Delete { id: 1 }).unwrap();
        assert_eq!(r.method, Method::DELETE);
    }
}
