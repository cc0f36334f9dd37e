//! The HTTP edge of the Kubernetes provider: a kube `Client` whose every
//! request is counted and retried.
//!
//! Counting and retrying sit in the tower stack under the client, so they see
//! each HTTP request, including every retry attempt and the discovery
//! requests kube makes on our behalf. Retrying there (rather than around each
//! call site) is the only place where the `Retry-After` header of a 429 is
//! still visible: kube turns error responses into a `Status` without headers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode};
use kube::client::{Body, ClientBuilder};
use tower::buffer::BufferLayer;
use tower::retry::{Policy, RetryLayer};
use tower::util::MapRequestLayer;
use tower::BoxError;

use crate::provider::{RetryCounter, RetryReason};

/// How requests are retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// Retries after the first attempt; 0 disables retrying.
    pub max_retries: u32,
    /// The first backoff delay; it doubles on each retry.
    pub base_delay: Duration,
    /// The largest backoff delay, and the largest `Retry-After` honoured.
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryConfig {
    /// The delay before retry number `attempt` (0-based) when the server
    /// gave no `Retry-After`: exponential, capped, with a little jitter so
    /// concurrent callers do not retry in lockstep.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.min(16)));
        let capped = exp.min(self.max_delay);
        capped + jitter(capped / 10)
    }
}

/// Up to `max` of pseudo-random delay, from the clock's low bits (no RNG
/// dependency needed for spreading retries).
fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let max_ms = max.as_millis() as u32;
    if max_ms == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(u64::from(nanos % max_ms))
    }
}

/// Whether a response status is worth another attempt.
pub fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

/// The server's `Retry-After` in seconds (the HTTP-date form is not used by
/// the Kubernetes API server and is ignored).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Why a failed attempt is sent again: `None` for an answer that is not
/// retried. 429 is throttling; a transport error is a timeout when any
/// error in its chain says so (kube's read/connect timeouts are
/// `io::ErrorKind::TimedOut`), else a failed or dropped connection.
pub fn retry_reason<B>(result: &Result<Response<B>, BoxError>) -> Option<RetryReason> {
    match result {
        Ok(res) if res.status() == StatusCode::TOO_MANY_REQUESTS => Some(RetryReason::Throttled),
        Ok(res) if retryable_status(res.status()) => Some(RetryReason::ServerError),
        Ok(_) => None,
        Err(e) if is_timeout(e.as_ref()) => Some(RetryReason::Timeout),
        Err(_) => Some(RetryReason::Connection),
    }
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        if e.is::<tokio::time::error::Elapsed>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The tower retry policy: one value per request, counting its attempts.
#[derive(Clone, Debug)]
struct RetryPolicy {
    config: RetryConfig,
    attempt: u32,
    retries: RetryCounter,
}

impl<B> Policy<Request<Body>, Response<B>, BoxError> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        req: &mut Request<Body>,
        result: &mut Result<Response<B>, BoxError>,
    ) -> Option<Self::Future> {
        if self.attempt >= self.config.max_retries {
            return None;
        }
        let reason = retry_reason(result)?;
        let delay = match result {
            Ok(res) if retryable_status(res.status()) => retry_after(res.headers())
                .map(|d| d.min(self.config.max_delay))
                .unwrap_or_else(|| self.config.backoff(self.attempt)),
            Ok(_) => return None,
            // Connection reset, refused, read timeout: the request may not
            // have reached the server; every request we make is idempotent.
            Err(_) => self.config.backoff(self.attempt),
        };
        tracing::debug!(
            method = %req.method(),
            uri = %req.uri(),
            attempt = self.attempt + 1,
            reason = reason.label(),
            ?delay,
            "retrying Kubernetes API request"
        );
        self.retries.record(reason);
        self.attempt += 1;
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &Request<Body>) -> Option<Request<Body>> {
        let body = req.body().try_clone()?;
        let mut clone = Request::builder()
            .method(req.method().clone())
            .uri(req.uri().clone())
            .version(req.version())
            .body(body)
            .ok()?;
        *clone.headers_mut() = req.headers().clone();
        *clone.extensions_mut() = req.extensions().clone();
        Some(clone)
    }
}

/// HTTP requests made, by operation name, and the retries among them.
#[derive(Clone, Debug, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    retries: RetryCounter,
}

impl CallCounter {
    fn record(&self, operation: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(operation.to_string()).or_default() += 1;
    }

    /// A copy of the counts so far.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Retries so far, by reason.
    pub fn retries(&self) -> BTreeMap<String, u64> {
        self.retries.snapshot()
    }
}

/// The operation name of a request: kube tags each API call with its verb
/// (`get`, `list`, `patch`, `delete`); a patch is `apply`, or `dry_run` when
/// it carries `dryRun=All`; untagged GETs under `/api(s)` are discovery.
pub fn operation_of(req: &Request<Body>) -> &'static str {
    let dry_run = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "dryRun=All"));
    match req.extensions().get::<&'static str>() {
        Some(&"patch") if dry_run => "dry_run",
        Some(&"patch") => "apply",
        Some(op) => op,
        None if req.method() == http::Method::GET && req.uri().path().starts_with("/api") => {
            "discovery"
        }
        None => "other",
    }
}

/// The default log filter at `level`, less kube's line per failed HTTP
/// answer (`kube_client::client::builder` logs every 4xx/5xx at ERROR) and
/// the AWS credentials chain's warning per request while no credentials
/// are found (one per concurrent Describe): tidegate reports each failure
/// itself, once, with the environment and what to set, and logs its
/// retries at debug. `RUST_LOG` replaces this default; the caps of
/// `cli::logs` hold either way.
pub fn quiet_log_filter(level: &str) -> String {
    format!("{level},kube_client::client::builder=off,aws_config::meta::credentials::chain=error")
}

/// rustls refuses to pick a crypto provider when both `ring` (kube) and
/// `aws-lc-rs` (the AWS SDK) are compiled in; tidegate uses ring for its
/// Kubernetes connections. Installing twice is harmless (the first wins).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A kube client over `config` whose requests are counted in `counter` and
/// retried by `retry`. kube's own retry layer is turned off so attempts are
/// bounded once, here.
pub fn client(
    mut config: kube::Config,
    retry: &RetryConfig,
    request_timeout: Duration,
    counter: &CallCounter,
) -> Result<kube::Client, kube::Error> {
    install_crypto_provider();
    config.default_retry = false;
    config.read_timeout = Some(request_timeout);
    config.write_timeout = Some(request_timeout);
    config.connect_timeout = Some(request_timeout);
    let policy = RetryPolicy {
        config: retry.clone(),
        attempt: 0,
        retries: counter.retries.clone(),
    };
    let counter = counter.clone();
    let count = MapRequestLayer::new(move |req: Request<Body>| {
        counter.record(operation_of(&req));
        req
    });
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&count)
        // The retry layer needs a cloneable service; the buffer provides it.
        .with_layer(&BufferLayer::new(1024))
        .with_layer(&RetryLayer::new(policy))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let c = RetryConfig {
            max_retries: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        };
        let first = c.backoff(0);
        assert!(first >= Duration::from_millis(100) && first < Duration::from_millis(111));
        let second = c.backoff(1);
        assert!(second >= Duration::from_millis(200) && second < Duration::from_millis(221));
        let late = c.backoff(10);
        assert!(late >= Duration::from_millis(500) && late < Duration::from_millis(551));
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(http::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn only_throttling_and_server_errors_are_retried() {
        for code in [429, 500, 502, 503, 504] {
            assert!(retryable_status(StatusCode::from_u16(code).unwrap()));
        }
        for code in [200, 400, 404, 409, 422, 501] {
            assert!(!retryable_status(StatusCode::from_u16(code).unwrap()));
        }
    }

    fn answer(code: u16) -> Result<Response<()>, BoxError> {
        Ok(Response::builder().status(code).body(()).unwrap())
    }

    #[test]
    fn retries_are_counted_by_reason() {
        assert_eq!(retry_reason(&answer(429)), Some(RetryReason::Throttled));
        assert_eq!(retry_reason(&answer(503)), Some(RetryReason::ServerError));
        assert_eq!(retry_reason(&answer(500)), Some(RetryReason::ServerError));
        assert_eq!(retry_reason(&answer(200)), None);
        assert_eq!(retry_reason(&answer(409)), None);
        let timed_out: BoxError = Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "read timed out",
        ));
        let timed_out: Result<Response<()>, BoxError> = Err(timed_out);
        assert_eq!(retry_reason(&timed_out), Some(RetryReason::Timeout));
        // A timeout wrapped in another error is still a timeout.
        #[derive(Debug, thiserror::Error)]
        #[error("client error")]
        struct Wrapper(#[source] std::io::Error);
        let wrapped: Result<Response<()>, BoxError> = Err(Box::new(Wrapper(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "t",
        ))));
        assert_eq!(retry_reason(&wrapped), Some(RetryReason::Timeout));
        let reset: Result<Response<()>, BoxError> = Err(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )));
        assert_eq!(retry_reason(&reset), Some(RetryReason::Connection));

        let counter = CallCounter::default();
        counter.retries.record(RetryReason::Throttled);
        counter.retries.record(RetryReason::Throttled);
        counter.retries.record(RetryReason::Connection);
        let got = counter.retries();
        assert_eq!(got.get("throttled"), Some(&2));
        assert_eq!(got.get("connection"), Some(&1));
        assert_eq!(got.len(), 2);
    }

    fn req(method: &str, uri: &str, tag: Option<&'static str>) -> Request<Body> {
        let mut r = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        if let Some(t) = tag {
            r.extensions_mut().insert(t);
        }
        r
    }

    #[test]
    fn operations_are_named_from_kube_tags() {
        assert_eq!(
            operation_of(&req(
                "PATCH",
                "/api/v1/namespaces/a/configmaps/b?dryRun=All&fieldManager=t",
                Some("patch")
            )),
            "dry_run"
        );
        assert_eq!(
            operation_of(&req(
                "PATCH",
                "/api/v1/namespaces/a/configmaps/b?fieldManager=t",
                Some("patch")
            )),
            "apply"
        );
        assert_eq!(
            operation_of(&req("GET", "/api/v1/configmaps", Some("list"))),
            "list"
        );
        assert_eq!(
            operation_of(&req("GET", "/apis/apps/v1", None)),
            "discovery"
        );
        assert_eq!(operation_of(&req("POST", "/x", None)), "other");
    }
}
