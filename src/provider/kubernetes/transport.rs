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

/// The tower retry policy: one value per request, counting its attempts.
#[derive(Clone, Debug)]
struct RetryPolicy {
    config: RetryConfig,
    attempt: u32,
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
            ?delay,
            "retrying Kubernetes API request"
        );
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

/// HTTP requests made, by operation name.
#[derive(Clone, Debug, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
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
    let counter = counter.clone();
    let count = MapRequestLayer::new(move |req: Request<Body>| {
        counter.record(operation_of(&req));
        req
    });
    let policy = RetryPolicy {
        config: retry.clone(),
        attempt: 0,
    };
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
