//! The `--notifications FILE` format (docs/notifications.md), read like the
//! repository's own files: every problem with file:line:column and a fix,
//! unknown fields refused with a suggestion.
//!
//! Secrets (webhook URLs, signing keys, tokens) are never written in the
//! file: a plain string where a secret goes is an error. They are given as
//! `{fromFile: PATH}` (a mounted Secret) or `{fromEnv: VAR}` and read at
//! each delivery, so a rotated Secret is picked up without a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diag::{Diagnostics, Report};
use crate::load::decode::{self, Fields};
use crate::load::yaml::{self, Node, NodeKind};
use crate::sensitive::Sensitive;
use crate::value::Origin;

use super::{Error, Kind, Result, Severity};

/// The whole file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The status page, linked from Slack messages and commit statuses.
    pub status_url: Option<String>,
    pub delivery: Delivery,
    pub targets: Vec<Target>,
}

/// How events are queued and sent (the same for every target).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Events queued per target at most.
    pub queue_size: usize,
    /// Attempts per event, the first included.
    pub max_attempts: u32,
    /// Delay before the first retry; doubled each time, capped at
    /// `max_backoff`, each jittered to between half and all of it.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Time one HTTP attempt may take.
    pub timeout: Duration,
    /// Identical events within this window are sent once.
    pub dedupe_window: Duration,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            queue_size: 1000,
            max_attempts: 8,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            dedupe_window: Duration::from_secs(600),
        }
    }
}

/// One receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Unique in the file; the `target` metric label.
    pub name: String,
    pub kind: TargetKind,
    pub filter: Filter,
    /// Requests per minute at most (a token bucket of that size).
    pub rate_per_minute: u32,
    /// This target's queue bound, when it differs from `delivery.queueSize`.
    pub queue_size: Option<usize>,
}

/// The kinds of receivers and what each needs.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetKind {
    /// JSON body (schema version 1), `X-Tidegate-Signature: sha256=<hex>`.
    Webhook {
        url: SecretRef,
        signing_key: SecretRef,
    },
    /// A Slack-compatible incoming webhook (text + blocks).
    Slack { url: SecretRef },
    /// A Microsoft Teams incoming webhook (Workflows): an Adaptive Card.
    Teams { url: SecretRef },
    /// A Google Chat space webhook: text and a card.
    GoogleChat { url: SecretRef },
    /// `POST {apiUrl}/repos/{owner}/{repo}/statuses/{sha}`.
    GitHub {
        api_url: String,
        repository: String,
        token: SecretRef,
        context: String,
    },
    /// `POST {apiUrl}/api/v4/projects/{id}/statuses/{sha}`.
    GitLab {
        api_url: String,
        project: String,
        token: SecretRef,
        context: String,
    },
}

impl TargetKind {
    pub fn label(&self) -> &'static str {
        match self {
            TargetKind::Webhook { .. } => "webhook",
            TargetKind::Slack { .. } => "slack",
            TargetKind::Teams { .. } => "teams",
            TargetKind::GoogleChat { .. } => "googlechat",
            TargetKind::GitHub { .. } => "github",
            TargetKind::GitLab { .. } => "gitlab",
        }
    }
}

/// Which events a target gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// `None`: every environment (and the `reconciler.*` events).
    pub environments: Option<Vec<String>>,
    /// `None`: every kind the target can show.
    pub events: Option<Vec<Kind>>,
    pub min_severity: Severity,
}

impl Filter {
    /// Whether an event of `kind` about `env` passes.
    pub fn admits(&self, kind: Kind, env: Option<&str>) -> bool {
        let env_ok = match (&self.environments, env) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(list), Some(e)) => list.iter().any(|l| l == e),
        };
        let kind_ok = self.events.as_ref().is_none_or(|ks| ks.contains(&kind));
        env_ok && kind_ok && kind.severity() >= self.min_severity
    }
}

/// Where a secret is read from. Never the value itself (a SOPS value is
/// held decrypted only once [`Config::decrypt_sops`] ran, masked in every
/// rendering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    File(PathBuf),
    Env(String),
    /// `{fromSops: FILE, key: a.b}`: a value of a SOPS file, decrypted at
    /// start with the reconciler's age identities.
    Sops {
        file: PathBuf,
        key: String,
        value: Option<Sensitive>,
    },
}

impl SecretRef {
    /// The secret, surrounding whitespace removed; an error (naming the
    /// reference only) when missing or empty.
    pub fn read(&self) -> std::result::Result<Sensitive, String> {
        let bytes = match self {
            SecretRef::File(p) => std::fs::read(p).map_err(|e| e.to_string())?,
            SecretRef::Env(v) => std::env::var(v)
                .map_err(|_| "the variable is not set (or not UTF-8)".to_string())?
                .into_bytes(),
            SecretRef::Sops { value: Some(v), .. } => v.expose().to_vec(),
            SecretRef::Sops { value: None, .. } => {
                return Err("not decrypted (no age identity was given to read it)".to_string())
            }
        };
        let secret = Sensitive::new(bytes.trim_ascii().to_vec());
        drop(Sensitive::new(bytes));
        if secret.expose().is_empty() {
            return Err("it is empty".to_string());
        }
        Ok(secret)
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::File(p) => write!(f, "file {}", p.display()),
            SecretRef::Env(v) => write!(f, "environment variable {v}"),
            SecretRef::Sops { file, key, .. } => {
                write!(f, "key {key} of SOPS file {}", file.display())
            }
        }
    }
}

impl Config {
    /// Reads and checks `path`.
    pub fn read(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&path.display().to_string(), &text)
    }

    /// Parses the text of a notifications file named `file`.
    pub fn parse(file: &str, text: &str) -> Result<Config> {
        let mut diags = Diagnostics::default();
        let config = yaml::parse(file, text, &mut diags).and_then(|docs| match docs.as_slice() {
            [doc] => decode_doc(doc, &mut diags),
            _ => {
                let origin = Origin {
                    file: file.to_string(),
                    line: 1,
                    column: 1,
                };
                diags.error(
                    &origin,
                    format!(
                        "a notifications file holds one document, found {}",
                        docs.len()
                    ),
                    "write one `kind: Notifications` document",
                );
                None
            }
        });
        match config {
            Some(c) if diags.is_empty() => Ok(c),
            _ => Err(Error::Invalid(Report::new(diags))),
        }
    }

    /// Whether any secret is a `fromSops` reference.
    pub fn has_sops(&self) -> bool {
        self.targets
            .iter()
            .flat_map(|t| t.secrets())
            .any(|(_, r)| matches!(r, SecretRef::Sops { .. }))
    }

    /// Decrypts every `fromSops` secret with `identities` (each file once),
    /// keeping the values in memory (masked) for the deliveries. A file
    /// that cannot be decrypted, a key that is missing or not a string
    /// stops the start, named, never the value.
    pub fn decrypt_sops(&mut self, identities: &crate::secrets::Identities) -> Result<()> {
        let mut files: std::collections::HashMap<PathBuf, crate::value::Value> = Default::default();
        for t in &mut self.targets {
            let name = t.name.clone();
            for (what, r) in t.secrets_mut() {
                let SecretRef::Sops { file, key, value } = r else {
                    continue;
                };
                let fail = |why: String| Error::Secret {
                    target: name.clone(),
                    what,
                    from: format!("key {key} of SOPS file {}", file.display()),
                    why,
                };
                let tree = match files.get(file.as_path()) {
                    Some(t) => t,
                    None => {
                        let t = crate::secrets::decrypt_file(file, identities)
                            .map_err(|e| fail(e.to_string()))?;
                        files.entry(file.clone()).or_insert(t)
                    }
                };
                let leaf = match tree.get_path(key) {
                    Some(crate::value::Value::Sensitive(s)) => s.clone(),
                    Some(crate::value::Value::String(s)) => Sensitive::new(s.clone().into_bytes()),
                    Some(other) => {
                        return Err(fail(format!(
                            "the key holds {}, not a string",
                            other.type_name()
                        )))
                    }
                    None => return Err(fail("the file has no such key".to_string())),
                };
                *value = Some(leaf);
            }
        }
        Ok(())
    }

    /// Reads every secret once, so that a missing file or variable stops
    /// the start instead of the first delivery.
    pub fn check_secrets(&self) -> Result<()> {
        for t in &self.targets {
            for (what, r) in t.secrets() {
                let secret = r.read().map_err(|why| Error::Secret {
                    target: t.name.clone(),
                    what,
                    from: r.to_string(),
                    why,
                })?;
                if what == "url" && !is_http_url(secret.expose_str().unwrap_or_default()) {
                    return Err(Error::Url {
                        target: t.name.clone(),
                        what,
                    });
                }
            }
        }
        Ok(())
    }
}

impl Target {
    /// [`Target::secrets`], to change.
    fn secrets_mut(&mut self) -> Vec<(&'static str, &mut SecretRef)> {
        match &mut self.kind {
            TargetKind::Webhook { url, signing_key } => {
                vec![("url", url), ("signingKey", signing_key)]
            }
            TargetKind::Slack { url }
            | TargetKind::Teams { url }
            | TargetKind::GoogleChat { url } => vec![("url", url)],
            TargetKind::GitHub { token, .. } | TargetKind::GitLab { token, .. } => {
                vec![("token", token)]
            }
        }
    }

    /// The secret references of this target, by field name.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        match &self.kind {
            TargetKind::Webhook { url, signing_key } => {
                vec![("url", url), ("signingKey", signing_key)]
            }
            TargetKind::Slack { url }
            | TargetKind::Teams { url }
            | TargetKind::GoogleChat { url } => vec![("url", url)],
            TargetKind::GitHub { token, .. } | TargetKind::GitLab { token, .. } => {
                vec![("token", token)]
            }
        }
    }
}

pub(crate) fn is_http_url(s: &str) -> bool {
    s.parse::<http::Uri>()
        .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some())
}

const TOP: &[&str] = &["apiVersion", "kind", "spec"];
const SPEC: &[&str] = &["statusUrl", "delivery", "targets"];
const DELIVERY: &[&str] = &[
    "queueSize",
    "maxAttempts",
    "backoff",
    "maxBackoff",
    "timeout",
    "dedupeWindow",
];
const COMMON: &[&str] = &[
    "name",
    "type",
    "environments",
    "events",
    "minSeverity",
    "ratePerMinute",
    "queueSize",
];
const TYPES: &[&str] = &[
    "webhook",
    "slack",
    "teams",
    "googlechat",
    "github",
    "gitlab",
];
const DEFAULT_CONTEXT: &str = "tidegate/{environment}";

fn decode_doc(doc: &Node, d: &mut Diagnostics) -> Option<Config> {
    let mut f = Fields::new(doc, "the notifications file", d)?;
    if let Some(v) = f.req("apiVersion", d) {
        expect_literal(v, "apiVersion", "tidegate.dev/v1", d);
    }
    if let Some(k) = f.req("kind", d) {
        expect_literal(k, "kind", "Notifications", d);
    }
    let spec = f.req("spec", d);
    f.finish(TOP, d);
    let mut s = Fields::new(spec?, "spec", d)?;
    let status_url = s.opt("statusUrl").and_then(|n| {
        let url = decode::string(n, "statusUrl", d)?;
        if !is_http_url(&url) {
            d.error(
                &n.origin,
                "statusUrl must be an http(s) URL",
                "write e.g. `https://tidegate.example.com/`",
            );
        }
        Some(url)
    });
    let delivery = match s.opt("delivery") {
        Some(n) => decode_delivery(n, d),
        None => Delivery::default(),
    };
    let mut targets = Vec::new();
    if let Some(list) = s
        .req("targets", d)
        .and_then(|n| decode::list(n, "targets", d))
    {
        let mut names = Vec::new();
        for n in list {
            if let Some(name) = n.get("name").and_then(Node::as_str) {
                if names.contains(&name) {
                    d.error(
                        &n.origin,
                        format!("two targets are named {name:?}"),
                        "give each target its own name",
                    );
                }
                names.push(name);
            }
            targets.extend(decode_target(n, d));
        }
    }
    s.finish(SPEC, d);
    Some(Config {
        status_url,
        delivery,
        targets,
    })
}

fn expect_literal(n: &Node, what: &str, want: &str, d: &mut Diagnostics) {
    if decode::string(n, what, d).is_some_and(|s| s != want) {
        d.error(
            &n.origin,
            format!("{what} must be {want}"),
            format!("write `{what}: {want}`"),
        );
    }
}

fn decode_delivery(n: &Node, d: &mut Diagnostics) -> Delivery {
    let mut out = Delivery::default();
    let Some(mut f) = Fields::new(n, "delivery", d) else {
        return out;
    };
    if let Some(v) = f
        .opt("queueSize")
        .and_then(|n| positive(n, "delivery.queueSize", d))
    {
        out.queue_size = v as usize;
    }
    if let Some(v) = f
        .opt("maxAttempts")
        .and_then(|n| positive(n, "delivery.maxAttempts", d))
    {
        out.max_attempts = u32::try_from(v).unwrap_or(u32::MAX);
    }
    for (key, slot) in [
        ("backoff", &mut out.backoff),
        ("maxBackoff", &mut out.max_backoff),
        ("timeout", &mut out.timeout),
        ("dedupeWindow", &mut out.dedupe_window),
    ] {
        if let Some(v) = f.opt(key).and_then(|n| duration(n, key, d)) {
            *slot = v;
        }
    }
    f.finish(DELIVERY, d);
    out
}

fn positive(n: &Node, what: &str, d: &mut Diagnostics) -> Option<u64> {
    match n.kind {
        NodeKind::Int(i) if i > 0 => u64::try_from(i).ok(),
        _ => {
            decode::wrong_type(n, what, "a whole number above 0", d);
            None
        }
    }
}

fn duration(n: &Node, what: &str, d: &mut Diagnostics) -> Option<Duration> {
    let s = decode::string(n, what, d)?;
    match humantime::parse_duration(&s) {
        Ok(v) => Some(v),
        Err(e) => {
            d.error(
                &n.origin,
                format!("{what}: {s:?} is not a duration ({e})"),
                "write e.g. `30s`, `5m` or `1h`",
            );
            None
        }
    }
}

fn decode_target(n: &Node, d: &mut Diagnostics) -> Option<Target> {
    let mut f = Fields::new(n, "a target", d)?;
    let name = f
        .req("name", d)
        .and_then(|n| decode::name(n, "target name", d));
    let ty_node = f.req("type", d);
    let ty = ty_node.and_then(|n| decode::string(n, "type", d));
    let environments = f.opt("environments").map(|n| {
        decode::strings(n, "environments", d)
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    });
    let events = f.opt("events").map(|n| {
        decode::strings(n, "events", d)
            .into_iter()
            .filter_map(|(s, origin)| {
                let k = Kind::parse(&s);
                if k.is_none() {
                    let all: Vec<&str> = Kind::ALL.iter().map(|k| k.label()).collect();
                    d.error(
                        &origin,
                        format!("unknown event {s:?}"),
                        format!("use one of {}", all.join(", ")),
                    );
                }
                k
            })
            .collect()
    });
    let min_severity = f
        .opt("minSeverity")
        .and_then(|n| {
            let s = decode::string(n, "minSeverity", d)?;
            let v = Severity::parse(&s);
            if v.is_none() {
                d.error(
                    &n.origin,
                    format!("unknown severity {s:?}"),
                    "use info, warning or error",
                );
            }
            v
        })
        .unwrap_or(Severity::Info);
    let rate_per_minute = f
        .opt("ratePerMinute")
        .and_then(|n| positive(n, "ratePerMinute", d))
        .map_or(60, |v| u32::try_from(v).unwrap_or(u32::MAX));
    let queue_size = f
        .opt("queueSize")
        .and_then(|n| positive(n, "queueSize", d))
        .map(|v| usize::try_from(v).unwrap_or(usize::MAX));
    let mut known: Vec<&str> = COMMON.to_vec();
    let kind = match ty.as_deref() {
        Some("webhook") => {
            known.extend(["url", "signingKey"]);
            let url = f.req("url", d).and_then(|n| secret(n, "url", d));
            let key = f
                .req("signingKey", d)
                .and_then(|n| secret(n, "signingKey", d));
            url.zip(key)
                .map(|(url, signing_key)| TargetKind::Webhook { url, signing_key })
        }
        Some(chat @ ("slack" | "teams" | "googlechat")) => {
            known.push("url");
            f.req("url", d)
                .and_then(|n| secret(n, "url", d))
                .map(|url| match chat {
                    "slack" => TargetKind::Slack { url },
                    "teams" => TargetKind::Teams { url },
                    _ => TargetKind::GoogleChat { url },
                })
        }
        Some("github") => {
            known.extend(["apiUrl", "repository", "token", "context"]);
            let api_url = api_url(&mut f, "https://api.github.com", d);
            let repository = f.req("repository", d).and_then(|n| {
                let s = decode::string(n, "repository", d)?;
                let ok = s.split('/').count() == 2
                    && s.split('/').all(|p| {
                        !p.is_empty()
                            && p.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    });
                if !ok {
                    d.error(
                        &n.origin,
                        format!("repository {s:?} is not `owner/name`"),
                        "write e.g. `platform/infra`",
                    );
                }
                Some(s)
            });
            let token = f.req("token", d).and_then(|n| secret(n, "token", d));
            let context = context(&mut f, d);
            repository
                .zip(token)
                .map(|(repository, token)| TargetKind::GitHub {
                    api_url,
                    repository,
                    token,
                    context,
                })
        }
        Some("gitlab") => {
            known.extend(["apiUrl", "project", "token", "context"]);
            let api_url = api_url(&mut f, "https://gitlab.com", d);
            let project = f.req("project", d).and_then(|n| match &n.kind {
                NodeKind::Int(i) => Some(i.to_string()),
                _ => decode::string(n, "project", d),
            });
            let token = f.req("token", d).and_then(|n| secret(n, "token", d));
            let context = context(&mut f, d);
            project
                .zip(token)
                .map(|(project, token)| TargetKind::GitLab {
                    api_url,
                    project,
                    token,
                    context,
                })
        }
        Some(other) => {
            if let Some(n) = ty_node {
                d.error(
                    &n.origin,
                    format!("unknown target type {other:?}"),
                    format!("use one of {}", TYPES.join(", ")),
                );
            }
            None
        }
        None => None,
    };
    f.finish(&known, d);
    Some(Target {
        name: name?,
        kind: kind?,
        filter: Filter {
            environments,
            events,
            min_severity,
        },
        rate_per_minute,
        queue_size,
    })
}

fn api_url(f: &mut Fields<'_>, default: &str, d: &mut Diagnostics) -> String {
    match f.opt("apiUrl") {
        None => default.to_string(),
        Some(n) => {
            let s = decode::string(n, "apiUrl", d).unwrap_or_default();
            if !is_http_url(&s) {
                d.error(
                    &n.origin,
                    "apiUrl must be an http(s) URL",
                    format!("write e.g. `{default}`"),
                );
            }
            s.trim_end_matches('/').to_string()
        }
    }
}

fn context(f: &mut Fields<'_>, d: &mut Diagnostics) -> String {
    f.opt("context")
        .and_then(|n| decode::string(n, "context", d))
        .unwrap_or_else(|| DEFAULT_CONTEXT.to_string())
}

/// A secret reference: `{fromFile: PATH}`, `{fromEnv: VAR}` or
/// `{fromSops: FILE, key: a.b}`; anything else, a plain string above all,
/// is refused (without echoing it).
fn secret(n: &Node, what: &str, d: &mut Diagnostics) -> Option<SecretRef> {
    let fix = format!("write `{what}: {{fromFile: /var/run/secrets/...}}` (a mounted Secret), `{what}: {{fromEnv: VAR}}` or `{what}: {{fromSops: secrets/notify.sops.yaml, key: slack.url}}`");
    let NodeKind::Map(entries) = &n.kind else {
        let msg = match n.kind {
            NodeKind::Str(_) => format!("{what} is a secret and must not be written in the file (the value given here is not shown)"),
            _ => format!("{what} must be a secret reference, found a {}", n.type_name()),
        };
        d.error(&n.origin, msg, fix);
        return None;
    };
    match entries.as_slice() {
        [(k, v)] if k.name == "fromFile" => {
            decode::string(v, "fromFile", d).map(|p| SecretRef::File(PathBuf::from(p)))
        }
        [(k, v)] if k.name == "fromEnv" => decode::string(v, "fromEnv", d).map(SecretRef::Env),
        [(a, f), (b, k)] | [(b, k), (a, f)] if a.name == "fromSops" && b.name == "key" => {
            let file = decode::string(f, "fromSops", d)?;
            let key = decode::string(k, "key", d)?;
            Some(SecretRef::Sops {
                file: PathBuf::from(file),
                key,
                value: None,
            })
        }
        _ => {
            d.error(
                &n.origin,
                format!("{what} must have exactly one of fromFile, fromEnv or fromSops (with key)"),
                fix,
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"apiVersion: tidegate.dev/v1
kind: Notifications
spec:
  statusUrl: https://tidegate.example.com/
  delivery: {queueSize: 10, maxAttempts: 3, backoff: 200ms, maxBackoff: 2s, timeout: 1s, dedupeWindow: 1m}
  targets:
    - name: ops
      type: webhook
      url: {fromEnv: OPS_URL}
      signingKey: {fromFile: /run/hmac}
      environments: [prod]
      events: [apply.failed, commit.refused]
    - name: chat
      type: slack
      url: {fromFile: /run/slack}
      minSeverity: warning
      ratePerMinute: 5
      queueSize: 2
    - name: gh
      type: github
      apiUrl: https://ghe.example.com/api/v3/
      repository: platform/infra
      token: {fromFile: /run/gh}
    - name: gl
      type: gitlab
      project: 42
      token: {fromEnv: GL}
      context: deploy/{environment}
"#;

    #[test]
    fn a_full_file_decodes_with_defaults_filled_in() {
        let c = Config::parse("n.yaml", FULL).unwrap();
        assert_eq!(
            c.status_url.as_deref(),
            Some("https://tidegate.example.com/")
        );
        assert_eq!(c.delivery.queue_size, 10);
        assert_eq!(c.delivery.backoff, Duration::from_millis(200));
        assert_eq!(c.targets.len(), 4);
        let ops = &c.targets[0];
        assert_eq!(ops.filter.environments, Some(vec!["prod".to_string()]));
        assert!(ops.filter.admits(Kind::ApplyFailed, Some("prod")));
        assert!(!ops.filter.admits(Kind::ApplyFailed, Some("dev")));
        assert!(!ops.filter.admits(Kind::ApplySucceeded, Some("prod")));
        assert!(!ops.filter.admits(Kind::ReconcilerStarted, None));
        assert_eq!(c.targets[1].rate_per_minute, 5);
        assert_eq!(c.targets[1].queue_size, Some(2));
        assert_eq!(c.targets[0].queue_size, None);
        assert!(!c.targets[1]
            .filter
            .admits(Kind::ApplySucceeded, Some("dev")));
        assert!(c.targets[1].filter.admits(Kind::DriftDetected, Some("dev")));
        match &c.targets[2].kind {
            TargetKind::GitHub {
                api_url, context, ..
            } => {
                assert_eq!(api_url, "https://ghe.example.com/api/v3");
                assert_eq!(context, "tidegate/{environment}");
            }
            other => panic!("{other:?}"),
        }
        match &c.targets[3].kind {
            TargetKind::GitLab {
                api_url,
                project,
                token,
                ..
            } => {
                assert_eq!(api_url, "https://gitlab.com");
                assert_eq!(project, "42");
                assert_eq!(token, &SecretRef::Env("GL".into()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_plain_secret_is_refused_without_being_echoed() {
        let text = FULL.replace(
            "{fromEnv: OPS_URL}",
            "https://hooks.example.com/T0/CANARY-VALUE",
        );
        let err = Config::parse("n.yaml", &text).unwrap_err().to_string();
        assert!(err.contains("n.yaml:9:12"), "{err}");
        assert!(
            err.contains("url is a secret and must not be written in the file"),
            "{err}"
        );
        assert!(!err.contains("CANARY-VALUE"), "{err}");
        let text = FULL.replace("{fromEnv: GL}", "glpat-CANARY");
        let err = Config::parse("n.yaml", &text).unwrap_err().to_string();
        assert!(err.contains("token is a secret"), "{err}");
        assert!(!err.contains("glpat-CANARY"), "{err}");
    }

    #[test]
    fn a_sops_secret_names_its_file_and_key_and_is_not_read_before_decryption() {
        let text = FULL.replace(
            "{fromEnv: GL}",
            "{fromSops: secrets/notify.sops.yaml, key: gitlab.token}",
        );
        let c = Config::parse("n.yaml", &text).unwrap();
        assert!(c.has_sops());
        let (_, r) = c.targets[3].secrets()[0];
        assert_eq!(
            r.to_string(),
            "key gitlab.token of SOPS file secrets/notify.sops.yaml"
        );
        assert!(r.read().unwrap_err().contains("not decrypted"));
        // A missing file stops decryption, named.
        let mut c = c;
        let err = c
            .decrypt_sops(&crate::secrets::Identities::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("secrets/notify.sops.yaml"), "{err}");
        // fromSops needs its key.
        let text = FULL.replace("{fromEnv: GL}", "{fromSops: secrets/notify.sops.yaml}");
        let err = Config::parse("n.yaml", &text).unwrap_err().to_string();
        assert!(err.contains("fromSops (with key)"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_position_and_a_fix() {
        let text = r#"apiVersion: tidegate.dev/v1
kind: Notifications
spec:
  delivery: {queueSize: 0, backof: 1s, timeout: soon}
  targets:
    - name: a
      type: pager
    - name: b
      type: slack
      url: {fromFile: /x, fromEnv: Y}
      events: [apply.exploded]
    - name: b
      type: github
      repository: just-a-name
      token: {fromEnv: T}
"#;
        let err = Config::parse("n.yaml", text).unwrap_err().to_string();
        for want in [
            "delivery.queueSize must be a whole number above 0",
            "unknown field `backof` in delivery",
            "did you mean `backoff`?",
            "timeout: \"soon\" is not a duration",
            "unknown target type \"pager\"",
            "url must have exactly one of fromFile, fromEnv or fromSops (with key)",
            "unknown event \"apply.exploded\"",
            "two targets are named \"b\"",
            "repository \"just-a-name\" is not `owner/name`",
        ] {
            assert!(err.contains(want), "missing {want:?} in\n{err}");
        }
        assert!(err.contains("n.yaml:4:"), "{err}");
    }

    #[test]
    fn secrets_are_checked_at_start_and_named_by_reference_only() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "  \n").unwrap();
        let text = format!(
            "apiVersion: tidegate.dev/v1\nkind: Notifications\nspec:\n  targets:\n    - {{name: s, type: slack, url: {{fromFile: {}}}}}\n",
            empty.display()
        );
        let c = Config::parse("n.yaml", &text).unwrap();
        let err = c.check_secrets().unwrap_err().to_string();
        assert!(
            err.contains("it is empty") && err.contains("target s"),
            "{err}"
        );
        std::fs::write(&empty, "not a url\n").unwrap();
        let err = c.check_secrets().unwrap_err().to_string();
        assert!(err.contains("url is not an http(s) URL"), "{err}");
        assert!(!err.contains("not a url"), "{err}");
        std::fs::write(&empty, "https://hooks.example.com/services/x\n").unwrap();
        c.check_secrets().unwrap();
    }
}
