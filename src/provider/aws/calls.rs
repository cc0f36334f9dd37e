//! How every EC2 call is made: counted, retried, and its failure classified.
//!
//! The SDK's adaptive retry mode already backs off on throttling for each
//! call. On top of it tidegate retries whole call sequences with full
//! jitter when EC2 still throttles (`RequestLimitExceeded`) and, right after
//! a create, when EC2 answers `*.NotFound` for an id it has just handed out
//! (eventual consistency). An interceptor counts every attempt by operation
//! name, so metrics and benchmarks see real request numbers, and every
//! retry by reason: it classifies each failed attempt
//! ([`attempt_failure`]) into the request's config bag, and counts that
//! reason when the SDK starts another attempt of the same request
//! (`RequestAttempts` > 1). tidegate's own retries ([`Retrier`]) are
//! counted in the same [`RetryCounter`].

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::config::interceptors::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_sdk_ec2::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_types::config_bag::{Storable, StoreReplace};

use crate::provider::{Error, RetryCounter, RetryReason};

/// Counts request attempts per operation (`DescribeInstances`: 3), and
/// retries by reason.
#[derive(Clone, Debug, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    pub(super) retries: RetryCounter,
}

impl CallCounter {
    /// The counts so far.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Retries so far, by reason.
    pub fn retries(&self) -> BTreeMap<String, u64> {
        self.retries.snapshot()
    }
}

/// Why the last attempt of a request failed, kept in its config bag until
/// the next attempt starts.
#[derive(Clone, Copy, Debug)]
struct AttemptFailure(RetryReason);

impl Storable for AttemptFailure {
    type Storer = StoreReplace<Self>;
}

/// Error codes EC2 uses to ask for slower requests.
const THROTTLING_CODES: [&str; 6] = [
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
];

/// Why one attempt failed, from its HTTP status and error body (`None`
/// when there was no answer) and whether it timed out; `None` when it did
/// not fail in a way worth retrying.
pub fn attempt_failure(
    status: Option<u16>,
    body: Option<&[u8]>,
    timed_out: bool,
) -> Option<RetryReason> {
    let Some(status) = status else {
        return Some(if timed_out {
            RetryReason::Timeout
        } else {
            RetryReason::Connection
        });
    };
    if status < 400 {
        return None;
    }
    let body = body.map(String::from_utf8_lossy).unwrap_or_default();
    let code = body
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code);
    match code {
        Some(c) if THROTTLING_CODES.contains(&c) => Some(RetryReason::Throttled),
        Some("RequestTimeout") => Some(RetryReason::Timeout),
        _ if status == 429 => Some(RetryReason::Throttled),
        _ if status >= 500 => Some(RetryReason::ServerError),
        _ => None,
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "tidegate-call-counter"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let name = cfg
            .load::<Metadata>()
            .map(|m| m.name().to_string())
            .unwrap_or_else(|| "unknown".into());
        if let Ok(mut m) = self.counts.lock() {
            *m.entry(name).or_default() += 1;
        }
        let retry = cfg.load::<RequestAttempts>().map(|a| a.attempts()) > Some(1);
        if let (true, Some(failure)) = (retry, cfg.load::<AttemptFailure>()) {
            self.retries.record(failure.0);
        }
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Err(e)) = context.output_or_error() else {
            return Ok(());
        };
        let response = context.response();
        let timed_out =
            e.is_timeout_error() || e.as_connector_error().is_some_and(|c| c.is_timeout());
        let failure = attempt_failure(
            response.map(|r| r.status().as_u16()),
            response.and_then(|r| r.body().bytes()),
            timed_out,
        );
        if let Some(reason) = failure {
            cfg.interceptor_state().store_put(AttemptFailure(reason));
        }
        Ok(())
    }
}

/// The part of an SDK failure tidegate keeps: EC2's error code and a
/// message. Request parameters (which may hold user data) are never part of
/// it.
#[derive(Debug, thiserror::Error)]
#[error("{}{message}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
pub struct ApiError {
    pub code: Option<String>,
    pub message: String,
    /// The request may not have reached EC2 or its answer was lost.
    pub transport: bool,
    /// The request never left: the endpoint or the credentials are the
    /// problem, not EC2 (the caller says what to set).
    pub unreached: Option<Unreached>,
}

/// Why a request never reached EC2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreached {
    /// No connection to the endpoint: its name does not resolve, nothing
    /// listens, TLS fails.
    Endpoint,
    /// No credentials to sign the request with.
    Credentials,
}

impl ApiError {
    /// Classifies an SDK error.
    pub fn from_sdk<E, R>(e: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug,
    {
        let code = e.code().map(str::to_string);
        let message = match e.message() {
            Some(m) => m.to_string(),
            // The causes, each once (the SDK's `DisplayErrorContext` adds a
            // Debug dump that repeats all of them).
            None => causes(&e),
        };
        // The SDK reports a failed credentials chain as a dispatch failure
        // of kind "other" whose cause says so; it has no type of its own
        // that tidegate can name without another dependency.
        let unreached = match &e {
            SdkError::DispatchFailure(d) if d.is_io() => Some(Unreached::Endpoint),
            SdkError::DispatchFailure(d) if d.is_other() && message.contains("credentials") => {
                Some(Unreached::Credentials)
            }
            _ => None,
        };
        // Credentials do not appear by retrying; a lost connection may.
        let transport = unreached != Some(Unreached::Credentials)
            && matches!(
                e,
                SdkError::DispatchFailure(_)
                    | SdkError::TimeoutError(_)
                    | SdkError::ResponseError(_)
            );
        ApiError {
            code,
            message,
            transport,
            unreached,
        }
    }

    /// EC2 asks the client to slow down.
    pub fn is_throttling(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some(
                "RequestLimitExceeded"
                    | "Throttling"
                    | "ThrottlingException"
                    | "RequestThrottled"
                    | "RequestThrottledException"
                    | "TooManyRequestsException"
                    | "ServiceUnavailable"
                    | "Unavailable"
                    | "InternalError"
            )
        )
    }

    /// EC2 does not know the id (`InvalidVpcID.NotFound`, ...).
    pub fn is_not_found(&self) -> bool {
        self.code
            .as_deref()
            .is_some_and(|c| c.ends_with(".NotFound") || c.ends_with("NotFound"))
    }

    /// The reason label of a retry of this failure.
    pub fn retry_reason(&self) -> RetryReason {
        match self.code.as_deref() {
            Some(c) if THROTTLING_CODES.contains(&c) => RetryReason::Throttled,
            _ if self.is_not_found() => RetryReason::NotYetVisible,
            _ if self.transport => RetryReason::Connection,
            _ => RetryReason::ServerError,
        }
    }

    /// Something else still uses the resource.
    pub fn is_dependency(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some("DependencyViolation" | "InvalidAddress.Locked" | "ResourceInUse")
        )
    }

    /// Converts into the provider error of `operation`.
    pub fn into_error(self, operation: &str) -> Error {
        Error::Api {
            operation: operation.to_string(),
            retryable: self.is_throttling() || self.transport,
            source: Box::new(self),
        }
    }
}

/// Backoff and waiting limits.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts the SDK makes per request (adaptive mode).
    pub sdk_attempts: u32,
    /// Attempts tidegate makes per call sequence on throttling or a lost answer.
    pub attempts: u32,
    /// First backoff; doubles per attempt, with full jitter.
    pub base_delay: Duration,
    /// Backoff cap.
    pub max_delay: Duration,
    /// How long to wait for eventual consistency, dependencies and
    /// instance state changes.
    pub settle: Duration,
    /// Poll interval while waiting.
    pub poll: Duration,
    /// Longest wait for one HTTP attempt; a hung endpoint then counts as a
    /// lost answer (retried, and for creates searched for first).
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            sdk_attempts: 5,
            attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
            settle: Duration::from_secs(300),
            poll: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Full-jitter backoff before attempt `n` (1-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(1u32 << n.min(16))
            .min(self.max_delay);
        cap.mul_f64(fastrand::f64())
    }

    /// Runs `call` until it succeeds or fails for good, calling `on_retry`
    /// with each failure that is retried ([`Retrier::run`] counts them).
    async fn run_observed<T, F, Fut>(
        &self,
        operation: &str,
        not_found_is_transient: bool,
        mut call: F,
        on_retry: impl Fn(&ApiError),
    ) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let mut n = 1;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e)
                    if n < self.attempts && retry_worthy(operation, &e, not_found_is_transient) =>
                {
                    tracing::debug!(operation, attempt = n, error = %e, "retrying");
                    on_retry(&e);
                    tokio::time::sleep(self.backoff(n)).await;
                    n += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// [`RetryPolicy`] with the provider's [`RetryCounter`]: what the provider
/// calls through, so its own retries are counted beside the SDK's.
#[derive(Clone, Debug)]
pub struct Retrier {
    policy: RetryPolicy,
    retries: RetryCounter,
}

impl std::ops::Deref for Retrier {
    type Target = RetryPolicy;

    fn deref(&self) -> &RetryPolicy {
        &self.policy
    }
}

impl Retrier {
    pub fn new(policy: RetryPolicy, retries: RetryCounter) -> Self {
        Retrier { policy, retries }
    }

    /// Counts one retry of a call that failed with `e`.
    pub fn count(&self, e: &ApiError) {
        self.retries.record(e.retry_reason());
    }

    /// Counts one retry for `reason`.
    pub fn count_reason(&self, reason: RetryReason) {
        self.retries.record(reason);
    }

    /// Runs `call` until it succeeds or fails for good, counting each
    /// retry. Throttling is retried with backoff; `*.NotFound` too when
    /// `not_found_is_transient` (an id EC2 has just handed out).
    pub async fn run<T, F, Fut>(
        &self,
        operation: &str,
        not_found_is_transient: bool,
        call: F,
    ) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        self.policy
            .run_observed(operation, not_found_is_transient, call, |e| self.count(e))
            .await
    }
}

fn retry_worthy(operation: &str, e: &ApiError, not_found_is_transient: bool) -> bool {
    e.is_throttling()
        || (not_found_is_transient && e.is_not_found())
        || (e.transport && is_idempotent(operation))
}

/// Operations that may be sent again after a lost answer: reads, and
/// changes whose repetition either does nothing or fails as "not found",
/// which the delete path reads as done. Creates, authorizations and
/// associations are not among them (their repetition would fail or
/// duplicate): a lost answer there surfaces, and the next run converges.
fn is_idempotent(operation: &str) -> bool {
    [
        "Describe",
        "Modify",
        "CreateTags",
        "Delete",
        "Stop",
        "Start",
        "Terminate",
        "Release",
    ]
    .iter()
    .any(|p| operation.starts_with(p))
}

/// `e` and its causes, `: `-separated, each said once.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

/// Shorthand: map an SDK result into [`ApiError`].
pub fn sdk<T, E, R>(r: Result<T, SdkError<E, R>>) -> Result<T, ApiError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    r.map_err(ApiError::from_sdk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: &str) -> ApiError {
        ApiError {
            code: Some(code.into()),
            message: "m".into(),
            transport: false,
            unreached: None,
        }
    }

    /// Issue 17: a request that never left (no connection, no
    /// credentials) is told apart, and its causes are said once.
    #[test]
    fn unreached_requests_are_classified_and_said_once() {
        use aws_sdk_ec2::operation::describe_vpcs::DescribeVpcsError;
        use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
        use aws_smithy_runtime_api::client::result::ConnectorError;
        let dns = std::io::Error::other("dns error: failed to lookup address information");
        let e = ApiError::from_sdk(
            SdkError::<DescribeVpcsError, HttpResponse>::dispatch_failure(ConnectorError::io(
                Box::new(dns),
            )),
        );
        assert_eq!(e.unreached, Some(Unreached::Endpoint));
        assert!(e.transport);
        assert_eq!(
            e.message.matches("failed to lookup").count(),
            1,
            "{}",
            e.message
        );
        assert!(!e.message.contains("DispatchFailure"), "{}", e.message);
        let creds = std::io::Error::other("an error occurred while loading credentials");
        let e = ApiError::from_sdk(
            SdkError::<DescribeVpcsError, HttpResponse>::dispatch_failure(ConnectorError::other(
                Box::new(creds),
                None,
            )),
        );
        assert_eq!(e.unreached, Some(Unreached::Credentials));
        assert!(!e.transport, "credentials do not appear by retrying");
        assert_eq!(err("AuthFailure").unreached, None);
    }

    #[test]
    fn classification() {
        assert!(err("RequestLimitExceeded").is_throttling());
        assert!(err("InvalidVpcID.NotFound").is_not_found());
        assert!(!err("InvalidVpcID.Malformed").is_not_found());
        assert!(err("DependencyViolation").is_dependency());
        let lost = ApiError {
            transport: true,
            unreached: None,
            ..err("x")
        };
        assert!(retry_worthy("DescribeVpcs", &lost, false));
        assert!(!retry_worthy("AuthorizeSecurityGroupIngress", &lost, false));
        assert!(matches!(
            err("RequestLimitExceeded").into_error("CreateVpc"),
            Error::Api {
                retryable: true,
                ..
            }
        ));
    }

    #[test]
    fn failed_attempts_are_classified_for_the_retry_counter() {
        let xml = |code: &str| {
            format!("<Response><Errors><Error><Code>{code}</Code><Message>m</Message></Error></Errors></Response>")
        };
        let throttled = xml("RequestLimitExceeded");
        assert_eq!(
            attempt_failure(Some(503), Some(throttled.as_bytes()), false),
            Some(RetryReason::Throttled)
        );
        let throttled_400 = xml("Throttling");
        assert_eq!(
            attempt_failure(Some(400), Some(throttled_400.as_bytes()), false),
            Some(RetryReason::Throttled)
        );
        let internal = xml("InternalError");
        assert_eq!(
            attempt_failure(Some(500), Some(internal.as_bytes()), false),
            Some(RetryReason::ServerError)
        );
        assert_eq!(
            attempt_failure(Some(502), None, false),
            Some(RetryReason::ServerError)
        );
        assert_eq!(
            attempt_failure(Some(429), None, false),
            Some(RetryReason::Throttled)
        );
        let missing = xml("InvalidVpcID.NotFound");
        assert_eq!(
            attempt_failure(Some(400), Some(missing.as_bytes()), false),
            None
        );
        assert_eq!(attempt_failure(Some(200), None, false), None);
        assert_eq!(
            attempt_failure(None, None, true),
            Some(RetryReason::Timeout)
        );
        assert_eq!(
            attempt_failure(None, None, false),
            Some(RetryReason::Connection)
        );
    }

    #[tokio::test]
    async fn the_retrier_counts_its_own_retries_by_reason() {
        let counter = RetryCounter::default();
        let r = Retrier::new(
            RetryPolicy {
                attempts: 3,
                base_delay: Duration::from_millis(1),
                ..Default::default()
            },
            counter.clone(),
        );
        let mut calls = 0;
        let out: Result<u32, _> = r
            .run("DescribeVpcs", false, || {
                calls += 1;
                let n = calls;
                async move {
                    match n {
                        1 => Err(err("RequestLimitExceeded")),
                        2 => Err(ApiError {
                            transport: true,
                            unreached: None,
                            ..err("x")
                        }),
                        _ => Ok(n),
                    }
                }
            })
            .await;
        assert_eq!(out.unwrap(), 3);
        let got = counter.snapshot();
        assert_eq!(got.get("throttled"), Some(&1), "{got:?}");
        assert_eq!(got.get("connection"), Some(&1), "{got:?}");
        assert_eq!(got.len(), 2);
        assert_eq!(
            err("InvalidSubnetID.NotFound").retry_reason(),
            RetryReason::NotYetVisible
        );
        assert_eq!(
            err("InternalError").retry_reason(),
            RetryReason::ServerError
        );
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let p = RetryPolicy::default();
        for n in 1..40 {
            assert!(p.backoff(n) <= p.max_delay);
        }
    }

    #[tokio::test]
    async fn run_retries_throttling_then_gives_up() {
        let p = Retrier::new(
            RetryPolicy {
                attempts: 3,
                base_delay: Duration::from_millis(1),
                ..Default::default()
            },
            RetryCounter::default(),
        );
        let mut calls = 0;
        let r: Result<(), _> = p
            .run("Op", false, || {
                calls += 1;
                async { Err(err("RequestLimitExceeded")) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 3);
        let mut calls = 0;
        let r: Result<(), _> = p
            .run("Op", false, || {
                calls += 1;
                async { Err(err("InvalidVpcID.NotFound")) }
            })
            .await;
        assert!(r.unwrap_err().is_not_found());
        assert_eq!(calls, 1);
    }
}
