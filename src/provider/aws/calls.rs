//! How every EC2 call is made: counted, retried, and its failure classified.
//!
//! The SDK's adaptive retry mode already backs off on throttling for each
//! call. On top of it tidegate retries whole call sequences with full
//! jitter when EC2 still throttles (`RequestLimitExceeded`) and, right after
//! a create, when EC2 answers `*.NotFound` for an id it has just handed out
//! (eventual consistency). An interceptor counts every attempt by operation
//! name, so metrics and benchmarks see real request numbers.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_ec2::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;

use crate::provider::Error;

/// Counts request attempts per operation (`DescribeInstances`: 3).
#[derive(Clone, Debug, Default)]
pub struct CallCounter(Arc<Mutex<BTreeMap<String, u64>>>);

impl CallCounter {
    /// The counts so far.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
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
        if let Ok(mut m) = self.0.lock() {
            *m.entry(name).or_default() += 1;
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
}

impl ApiError {
    /// Classifies an SDK error.
    pub fn from_sdk<E, R>(e: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug,
    {
        let transport = matches!(
            e,
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_)
        );
        let code = e.code().map(str::to_string);
        let message = match e.message() {
            Some(m) => m.to_string(),
            None => aws_sdk_ec2::error::DisplayErrorContext(&e).to_string(),
        };
        ApiError {
            code,
            message,
            transport,
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

    /// Runs `call` until it succeeds or fails for good. Throttling is
    /// retried with backoff; `*.NotFound` too when `not_found_is_transient`
    /// (an id EC2 has just handed out).
    pub async fn run<T, F, Fut>(
        &self,
        operation: &str,
        not_found_is_transient: bool,
        mut call: F,
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
                    tokio::time::sleep(self.backoff(n)).await;
                    n += 1;
                }
                Err(e) => return Err(e),
            }
        }
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
        }
    }

    #[test]
    fn classification() {
        assert!(err("RequestLimitExceeded").is_throttling());
        assert!(err("InvalidVpcID.NotFound").is_not_found());
        assert!(!err("InvalidVpcID.Malformed").is_not_found());
        assert!(err("DependencyViolation").is_dependency());
        let lost = ApiError {
            transport: true,
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
    fn backoff_is_capped_and_jittered() {
        let p = RetryPolicy::default();
        for n in 1..40 {
            assert!(p.backoff(n) <= p.max_delay);
        }
    }

    #[tokio::test]
    async fn run_retries_throttling_then_gives_up() {
        let p = RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(1),
            ..Default::default()
        };
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
