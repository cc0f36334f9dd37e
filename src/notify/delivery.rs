//! The [`Notifier`]: one bounded queue and one sending task per target.
//!
//! # Expected flow
//! The reconciler calls [`Notifier::notify`] where it learns something. For
//! each target whose filter admits the event, the event is deduplicated,
//! appended to the target's queue (dropping the oldest non-failure event
//! when full) and the target's task woken. The task takes events in order,
//! waits for the target's rate limit, prepares the request (reading the
//! secrets), sends it and retries failed attempts with exponential backoff
//! and jitter. [`Notifier::shutdown`] waits a bounded time for the queues
//! to drain, then stops the tasks.
//!
//! # Guarantees
//! - `notify` never awaits: a dead receiver costs the caller one short
//!   lock, and memory stays at most `queueSize` events per target.
//! - Each target is independent: one receiver failing delays only its own
//!   queue.
//! - Results are counted per target, event kind and result: `sent`,
//!   `failed` (gave up after `maxAttempts`), `rejected` (a 4xx other than
//!   408/429: retrying would not help), `dropped` (queue full, or still
//!   queued at shutdown), `deduplicated`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::{Config, Delivery, Target};
use super::{target, Event, Origin, Result, Severity};

/// Where results and queue depths are reported (the metrics).
pub trait Observer: Send + Sync {
    /// One event's outcome at one target.
    fn count(&self, target: &str, event: &str, result: &str);
    /// The number of events queued for a target now.
    fn queued(&self, target: &str, depth: usize);
}

/// An [`Observer`] that records nothing.
pub struct Unobserved;

impl Observer for Unobserved {
    fn count(&self, _: &str, _: &str, _: &str) {}
    fn queued(&self, _: &str, _: usize) {}
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The handle the reconciler holds; cheap to clone. A disabled notifier
/// (no `--notifications`) does nothing.
#[derive(Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let targets: Vec<&str> = self
            .inner
            .iter()
            .flat_map(|i| i.lanes.iter().map(|l| l.target.name.as_str()))
            .collect();
        f.debug_struct("Notifier")
            .field("targets", &targets)
            .finish()
    }
}

struct Inner {
    origin: Origin,
    lanes: Vec<Arc<Lane>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    observer: Arc<dyn Observer>,
}

/// One target's queue.
struct Lane {
    target: Target,
    opts: Delivery,
    state: Mutex<LaneState>,
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct LaneState {
    queue: VecDeque<Event>,
    /// Dedupe keys of accepted events and when they were accepted.
    seen: HashMap<u64, Instant>,
    /// The kind of the event being sent, if one is.
    busy: Option<&'static str>,
}

/// Most dedupe keys remembered per target (the oldest forgotten first).
const MAX_SEEN: usize = 10_000;

/// Largest response body read (and discarded).
const MAX_RESPONSE: usize = 64 * 1024;

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// Starts one task per target on the current Tokio runtime.
    pub fn start(config: &Config, origin: Origin, observer: Arc<dyn Observer>) -> Result<Notifier> {
        let client = http_client()?;
        let mut origin = origin;
        origin.status_url = config.status_url.clone();
        let lanes: Vec<Arc<Lane>> = config
            .targets
            .iter()
            .map(|t| {
                let mut opts = config.delivery.clone();
                opts.queue_size = t.queue_size.unwrap_or(opts.queue_size).max(1);
                Arc::new(Lane {
                    target: t.clone(),
                    opts,
                    state: Mutex::default(),
                    wake: tokio::sync::Notify::new(),
                })
            })
            .collect();
        let tasks = lanes
            .iter()
            .map(|l| tokio::spawn(run(l.clone(), client.clone(), observer.clone())))
            .collect();
        Ok(Notifier {
            inner: Some(Arc::new(Inner {
                origin,
                lanes,
                tasks: Mutex::new(tasks),
                observer,
            })),
        })
    }

    /// Who the events come from (for building them).
    pub fn origin(&self) -> Origin {
        self.inner
            .as_ref()
            .map(|i| i.origin.clone())
            .unwrap_or_default()
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues `event` for every target that wants it. Never waits.
    pub fn notify(&self, event: Event) {
        let Some(inner) = &self.inner else {
            return;
        };
        let key = event.dedupe_key();
        let kind = event.kind.label();
        for lane in &inner.lanes {
            let t = &lane.target;
            if !t.filter.admits(event.kind, event.environment.as_deref())
                || !target::handles(&t.kind, &event)
            {
                continue;
            }
            let now = Instant::now();
            let (dropped, depth) = {
                let mut s = lock(&lane.state);
                let window = lane.opts.dedupe_window;
                s.seen.retain(|_, at| now.duration_since(*at) < window);
                if s.seen.contains_key(&key) {
                    drop(s);
                    inner.observer.count(&t.name, kind, "deduplicated");
                    continue;
                }
                if s.seen.len() >= MAX_SEEN {
                    let oldest = s.seen.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k);
                    if let Some(k) = oldest {
                        s.seen.remove(&k);
                    }
                }
                s.seen.insert(key, now);
                let dropped = if s.queue.len() >= lane.opts.queue_size {
                    let i = s
                        .queue
                        .iter()
                        .position(|e| e.severity < Severity::Error)
                        .unwrap_or(0);
                    s.queue.remove(i)
                } else {
                    None
                };
                s.queue.push_back(event.clone());
                (dropped, s.queue.len())
            };
            if let Some(d) = dropped {
                tracing::warn!(target = %t.name, event = d.kind.label(), environment = ?d.environment, "notification queue full: dropped the oldest event");
                inner.observer.count(&t.name, d.kind.label(), "dropped");
            }
            inner.observer.queued(&t.name, depth);
            lane.wake.notify_one();
        }
    }

    /// Events queued or being sent, over all targets.
    pub fn pending(&self) -> usize {
        self.inner.as_ref().map_or(0, |i| {
            i.lanes
                .iter()
                .map(|l| {
                    let s = lock(&l.state);
                    s.queue.len() + usize::from(s.busy.is_some())
                })
                .sum()
        })
    }

    /// Waits up to `within` for every queue to drain, then stops the
    /// tasks; what is still queued is counted `dropped`.
    pub async fn shutdown(&self, within: Duration) {
        let Some(inner) = &self.inner else {
            return;
        };
        let deadline = Instant::now() + within;
        while self.pending() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for task in lock(&inner.tasks).drain(..) {
            task.abort();
        }
        for lane in &inner.lanes {
            let (left, busy) = {
                let mut s = lock(&lane.state);
                let left: Vec<&'static str> = s.queue.drain(..).map(|e| e.kind.label()).collect();
                (left, s.busy.take())
            };
            for kind in left.into_iter().chain(busy) {
                inner.observer.count(&lane.target.name, kind, "dropped");
            }
            inner.observer.queued(&lane.target.name, 0);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn http_client() -> Result<HttpClient> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let https = match builder.with_provider_and_native_roots(provider.clone()) {
        Ok(b) => b.https_or_http().enable_http1().build(),
        Err(e) => {
            // No system roots (a minimal image): plain http still works,
            // https fails per delivery with a TLS error.
            tracing::warn!(error = %e, "no system root certificates: notifications over https will fail");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| super::Error::Client(std::io::Error::other(e)))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_or_http()
                .enable_http1()
                .build()
        }
    };
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// A token bucket: `rate_per_minute` requests per minute, bursts of that
/// many.
#[derive(Debug, Clone)]
pub struct Bucket {
    capacity: f64,
    tokens: f64,
    per_sec: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(rate_per_minute: u32, now: Instant) -> Bucket {
        let capacity = f64::from(rate_per_minute.max(1));
        Bucket {
            capacity,
            tokens: capacity,
            per_sec: capacity / 60.0,
            at: now,
        }
    }

    /// Takes a token if there is one; else how long until there is.
    pub fn take(&mut self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
        }
    }
}

/// The delay before retry `attempt` (1 = the first retry): `base * 2^(n-1)`
/// capped at `max`, scaled by `0.5 + jitter / 2` (`jitter` in `0..1`).
pub fn backoff(opts: &Delivery, attempt: u32, jitter: f64) -> Duration {
    let exp = opts
        .backoff
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    exp.min(opts.max_backoff)
        .mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
}

/// What one attempt came to.
#[derive(Debug, PartialEq)]
enum Attempt {
    Sent,
    /// Worth retrying (after at least the given delay, from Retry-After).
    Retry(String, Option<Duration>),
    /// The receiver refused it; retrying would not help.
    Rejected(String),
}

async fn run(lane: Arc<Lane>, client: HttpClient, observer: Arc<dyn Observer>) {
    let mut bucket = Bucket::new(lane.target.rate_per_minute, Instant::now());
    loop {
        let next = {
            let mut s = lock(&lane.state);
            let e = s.queue.pop_front();
            s.busy = e.as_ref().map(|e| e.kind.label());
            e.map(|e| (e, s.queue.len()))
        };
        let Some((event, depth)) = next else {
            lane.wake.notified().await;
            continue;
        };
        observer.queued(&lane.target.name, depth);
        let result = deliver(&lane, &client, &mut bucket, &event).await;
        observer.count(&lane.target.name, event.kind.label(), result);
        lock(&lane.state).busy = None;
    }
}

/// Sends one event with retries; the result label.
async fn deliver(
    lane: &Lane,
    client: &HttpClient,
    bucket: &mut Bucket,
    event: &Event,
) -> &'static str {
    let t = &lane.target;
    let mut attempt = 0;
    loop {
        attempt += 1;
        while let Some(wait) = bucket.take(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let outcome = attempt_once(t, client, event, lane.opts.timeout).await;
        match outcome {
            Attempt::Sent => {
                tracing::debug!(target = %t.name, event = event.kind.label(), id = %event.id, attempt, "notification sent");
                return "sent";
            }
            Attempt::Rejected(why) => {
                tracing::warn!(target = %t.name, event = event.kind.label(), id = %event.id, error = %why, "notification rejected by the receiver; not retried");
                return "rejected";
            }
            Attempt::Retry(why, _) if attempt >= lane.opts.max_attempts => {
                tracing::warn!(target = %t.name, event = event.kind.label(), id = %event.id, attempts = attempt, error = %why, "notification not delivered; giving up");
                return "failed";
            }
            Attempt::Retry(why, after) => {
                let delay = backoff(&lane.opts, attempt, fastrand::f64());
                let delay = after
                    .map_or(delay, |a| a.max(delay))
                    .min(lane.opts.max_backoff);
                tracing::info!(target = %t.name, event = event.kind.label(), id = %event.id, attempt, retry_in_ms = delay.as_millis() as u64, error = %why, "notification not delivered; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One attempt at delivering `event` to `t`: one request, or for a
/// `plan.ready` at GitHub or GitLab the pull request's plan comments made
/// or updated in place, then the commit status. Every step is idempotent
/// (comments are found by their marker), so a retry repeats them all.
async fn attempt_once(
    t: &Target,
    client: &HttpClient,
    event: &Event,
    timeout: Duration,
) -> Attempt {
    use super::config::TargetKind;
    use super::Kind;
    let forge = matches!(
        t.kind,
        TargetKind::GitHub { .. } | TargetKind::GitLab { .. }
    );
    if !(forge && event.kind == Kind::PlanReady) {
        return match target::prepare(t, event) {
            Ok(req) => send(client, req, timeout).await,
            Err(why) => Attempt::Retry(why, None),
        };
    }
    if let Some(pr) = event.pull_request {
        let outcome = sync_comments(t, client, event, pr, timeout).await;
        if outcome != Attempt::Sent {
            return outcome;
        }
    }
    match target::prepare(t, event) {
        Ok(req) => send(client, req, timeout).await,
        // A plan of a working tree has no commit to set a status on.
        Err(_) if event.pull_request.is_some() => Attempt::Sent,
        Err(why) => Attempt::Retry(why, None),
    }
}

/// Most pages of comments read looking for the plan's (100 each).
const MAX_COMMENT_PAGES: usize = 50;

/// Largest page of comments read (100 comments of up to 65,535 characters).
const MAX_LISTING: usize = 16 * 1024 * 1024;

/// Lists the pull request's comments, then updates the plan's in place,
/// creates missing parts and deletes parts a longer plan left.
async fn sync_comments(
    t: &Target,
    client: &HttpClient,
    event: &Event,
    pr: u64,
    timeout: Duration,
) -> Attempt {
    let mut existing = Vec::new();
    for page in 1..=MAX_COMMENT_PAGES {
        let req = match target::comment_request(t, pr, &target::CommentCall::List { page }) {
            Ok(r) => r,
            Err(why) => return Attempt::Retry(why, None),
        };
        let body = match exchange(client, req, timeout, MAX_LISTING).await {
            Ok(b) => b,
            Err(a) => return a,
        };
        match target::marked_comments(event, &body) {
            Ok((found, count)) => {
                existing.extend(found);
                if count < target::COMMENTS_PER_PAGE {
                    break;
                }
            }
            Err(why) => return Attempt::Retry(why, None),
        }
    }
    for call in target::comment_calls(target::comment_bodies(event), &existing) {
        let req = match target::comment_request(t, pr, &call) {
            Ok(r) => r,
            Err(why) => return Attempt::Retry(why, None),
        };
        match exchange(client, req, timeout, MAX_RESPONSE).await {
            Ok(_) => {}
            // Already gone: what a delete wanted.
            Err(Attempt::Rejected(why))
                if matches!(call, target::CommentCall::Delete { .. }) && why == "HTTP 404" => {}
            Err(a) => return a,
        }
    }
    Attempt::Sent
}

/// One HTTP attempt. Errors are described by class only (the URL of a
/// webhook is a secret, and error chains may quote it).
async fn send(client: &HttpClient, req: target::Prepared, timeout: Duration) -> Attempt {
    match exchange(client, req, timeout, MAX_RESPONSE).await {
        Ok(_) => Attempt::Sent,
        Err(a) => a,
    }
}

/// One HTTP exchange: the body of a 2xx answer (at most `max` bytes), or
/// the [`Attempt`] a failure comes to.
async fn exchange(
    client: &HttpClient,
    req: target::Prepared,
    timeout: Duration,
    max: usize,
) -> std::result::Result<Bytes, Attempt> {
    let mut builder = http::Request::builder().method(req.method).uri(req.uri);
    if let Some(h) = builder.headers_mut() {
        *h = req.headers;
    }
    let request = match builder.body(Full::new(req.body)) {
        Ok(r) => r,
        Err(_) => return Err(Attempt::Rejected("the request could not be built".into())),
    };
    let call = async {
        let resp = client.request(request).await.map_err(|e| {
            if e.is_connect() {
                "connection failed".to_string()
            } else {
                "the connection broke before an answer".to_string()
            }
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Read (a bounded part of) the body, so the connection can be
        // reused and a listing parsed.
        let body = Limited::new(resp.into_body(), max)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok::<_, String>((status, retry_after, body))
    };
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(Attempt::Retry(
            format!("no answer within {}", humantime::format_duration(timeout)),
            None,
        )),
        Ok(Err(why)) => Err(Attempt::Retry(why, None)),
        Ok(Ok((status, _, body))) if status.is_success() => Ok(body),
        Ok(Ok((status, after, _)))
            if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 =>
        {
            Err(Attempt::Retry(format!("HTTP {}", status.as_u16()), after))
        }
        Ok(Ok((status, _, _))) => Err(Attempt::Rejected(format!("HTTP {}", status.as_u16()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::config::{Filter, SecretRef, TargetKind};
    use crate::notify::Kind;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Counts(Mutex<Vec<(String, String, String)>>, AtomicUsize);

    impl Observer for Counts {
        fn count(&self, t: &str, e: &str, r: &str) {
            lock(&self.0).push((t.into(), e.into(), r.into()));
        }
        fn queued(&self, _: &str, depth: usize) {
            self.1.fetch_max(depth, Ordering::SeqCst);
        }
    }

    impl Counts {
        fn results(&self, result: &str) -> usize {
            lock(&self.0).iter().filter(|c| c.2 == result).count()
        }
    }

    fn config(dir: &tempfile::TempDir, url: &str, delivery: Delivery) -> Config {
        let u = dir.path().join("url");
        std::fs::write(&u, url).unwrap();
        let k = dir.path().join("key");
        std::fs::write(&k, "k").unwrap();
        Config {
            status_url: None,
            delivery,
            targets: vec![Target {
                name: "hook".into(),
                kind: TargetKind::Webhook {
                    url: SecretRef::File(u),
                    signing_key: SecretRef::File(k),
                },
                filter: Filter {
                    environments: None,
                    events: None,
                    min_severity: Severity::Info,
                },
                rate_per_minute: 6000,
                queue_size: None,
            }],
        }
    }

    fn fast() -> Delivery {
        Delivery {
            queue_size: 5,
            max_attempts: 5,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(400),
            timeout: Duration::from_secs(2),
            dedupe_window: Duration::from_secs(60),
        }
    }

    fn event(kind: Kind, env: &str, msg: &str) -> Event {
        Event::new(kind, &Origin::default())
            .env(env, "abc")
            .reason("apply", msg)
    }

    /// A real HTTP server on loopback that answers 503 to the first
    /// `fail` requests, then 204, and records the delivery ids it accepted
    /// and when each request came.
    async fn receiver(fail: usize) -> (String, Arc<Mutex<(Vec<String>, Vec<std::time::Instant>)>>) {
        let seen: Arc<Mutex<(Vec<String>, Vec<std::time::Instant>)>> = Arc::default();
        let s = seen.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: http::HeaderMap, body: Bytes| {
                let s = s.clone();
                async move {
                    let mut g = lock(&s);
                    g.1.push(std::time::Instant::now());
                    if g.1.len() <= fail {
                        return http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let sig = headers
                        .get(target::SIGNATURE_HEADER)
                        .and_then(|v| v.to_str().ok());
                    if sig != Some(target::signature(b"k", &body).as_str()) {
                        return http::StatusCode::UNAUTHORIZED;
                    }
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    g.0.push(v["id"].as_str().unwrap_or_default().to_string());
                    http::StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/hook"), seen)
    }

    #[tokio::test]
    async fn a_receiver_failing_three_times_gets_the_event_once_after_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let (url, seen) = receiver(3).await;
        let obs = Arc::new(Counts::default());
        let n =
            Notifier::start(&config(&dir, &url, fast()), Origin::default(), obs.clone()).unwrap();
        let e = event(Kind::ApplyFailed, "prod", "boom");
        n.notify(e.clone());
        n.shutdown(Duration::from_secs(10)).await;
        let g = lock(&seen);
        assert_eq!(g.0, vec![e.id.clone()], "delivered exactly once");
        assert_eq!(g.1.len(), 4, "three failed attempts and one that succeeded");
        // Retry delays: 50, 100, 200 ms, each jittered to between half and all.
        let gaps: Vec<Duration> = g.1.windows(2).map(|w| w[1] - w[0]).collect();
        for (gap, full) in gaps.iter().zip([50u64, 100, 200]) {
            assert!(*gap >= Duration::from_millis(full / 2), "{gaps:?}");
            assert!(*gap < Duration::from_millis(full + 150), "{gaps:?}");
        }
        assert_eq!(obs.results("sent"), 1);
        assert_eq!(obs.results("failed"), 0);
    }

    #[tokio::test]
    async fn a_dead_receiver_never_blocks_notify_and_the_queue_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut d = fast();
        d.max_attempts = 1000;
        let obs = Arc::new(Counts::default());
        let n = Notifier::start(
            &config(&dir, &format!("http://127.0.0.1:{port}/hook"), d),
            Origin::default(),
            obs.clone(),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let failure = event(Kind::ApplyFailed, "prod", "the one failure");
        n.notify(failure.clone());
        for i in 0..10_000 {
            n.notify(event(Kind::ApplySucceeded, "dev", &format!("ok {i}")));
        }
        // A hang guard, not a benchmark: `notify` never awaits the
        // network, so the calls end whatever the receiver does; a bound
        // far above their cost on a loaded machine (~50 ms) catches a
        // notify that waits on delivery, without timing the machine.
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(30),
            "10,001 notify calls took {took:?}: notify waits on delivery"
        );
        assert!(
            n.pending() <= 6,
            "queue + the one in flight: {}",
            n.pending()
        );
        assert!(
            obs.1.load(Ordering::SeqCst) <= 5,
            "depth never above queueSize"
        );
        assert!(
            obs.results("dropped") >= 9_990,
            "{}",
            obs.results("dropped")
        );
        // The failure is never the one dropped while others can be.
        assert!(!lock(&obs.0)
            .iter()
            .any(|c| c.1 == "apply.failed" && c.2 == "dropped"));
        n.shutdown(Duration::from_millis(100)).await;
        assert_eq!(n.pending(), 0);
    }

    #[tokio::test]
    async fn a_flapping_drift_sends_one_message_per_window() {
        let dir = tempfile::tempdir().unwrap();
        let (url, seen) = receiver(0).await;
        let obs = Arc::new(Counts::default());
        let n =
            Notifier::start(&config(&dir, &url, fast()), Origin::default(), obs.clone()).unwrap();
        for _ in 0..1000 {
            n.notify(
                Event::new(Kind::DriftDetected, &Origin::default())
                    .env("prod", "abc")
                    .resources(&["web/deployment".to_string()]),
            );
        }
        n.notify(
            Event::new(Kind::DriftDetected, &Origin::default())
                .env("prod", "abc")
                .resources(&["web/service".to_string()]),
        );
        n.shutdown(Duration::from_secs(5)).await;
        assert_eq!(lock(&seen).0.len(), 2);
        assert_eq!(obs.results("deduplicated"), 999);
    }

    #[test]
    fn the_bucket_allows_a_burst_then_one_per_interval() {
        let t0 = Instant::now();
        let mut b = Bucket::new(60, t0);
        for _ in 0..60 {
            assert_eq!(b.take(t0), None);
        }
        let wait = b.take(t0).unwrap();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        assert_eq!(b.take(t0 + Duration::from_secs(1)), None);
        assert!(b.take(t0 + Duration::from_secs(1)).is_some());
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_between_half_and_all() {
        let d = fast();
        assert_eq!(backoff(&d, 1, 1.0), Duration::from_millis(50));
        assert_eq!(backoff(&d, 2, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(&d, 3, 0.0), Duration::from_millis(100));
        assert_eq!(backoff(&d, 10, 1.0), Duration::from_millis(400));
        assert_eq!(backoff(&d, 40, 1.0), Duration::from_millis(400));
    }

    #[tokio::test]
    async fn a_4xx_is_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let (url, seen) = receiver(0).await;
        let mut c = config(&dir, &url, fast());
        // A wrong signing key: the receiver answers 401.
        if let TargetKind::Webhook {
            signing_key: SecretRef::File(p),
            ..
        } = &c.targets[0].kind
        {
            std::fs::write(p, "wrong").unwrap();
        }
        c.delivery.max_attempts = 5;
        let obs = Arc::new(Counts::default());
        let n = Notifier::start(&c, Origin::default(), obs.clone()).unwrap();
        n.notify(event(Kind::ApplyFailed, "prod", "x"));
        n.shutdown(Duration::from_secs(5)).await;
        assert_eq!(lock(&seen).1.len(), 1);
        assert_eq!(obs.results("rejected"), 1);
    }
}
