//! The reconciler's Prometheus metrics (crate prometheus-client), encoded
//! in the text exposition format on `/metrics`.
//!
//! | series | type | labels |
//! |---|---|---|
//! | `tidegate_reconcile_duration_seconds` | histogram | environment, mode, result |
//! | `tidegate_applied_revision_info` | gauge (1) | environment, revision |
//! | `tidegate_drift_resources` | gauge | environment |
//! | `tidegate_environment_healthy` | gauge (0/1) | environment |
//! | `tidegate_environment_suspended` | gauge (0/1) | environment |
//! | `tidegate_environment_waiting` | gauge (0/1) | environment, reason |
//! | `tidegate_api_calls_total` | counter | provider, operation, result |
//! | `tidegate_api_retries_total` | counter | provider, reason |
//! | `tidegate_errors_total` | counter | reason |
//! | `tidegate_source_polls_total` | counter | result |
//! | `tidegate_webhooks_total` | counter | forge, result |
//! | `tidegate_notifications_total` | counter | target, event, result |
//! | `tidegate_notification_queue_depth` | gauge | target |
//!
//! `tidegate_api_retries_total` makes backoff visible: every request a
//! provider sent again (also counted in `tidegate_api_calls_total`), by why
//! the attempt before failed: `throttled` (429, EC2 `RequestLimitExceeded`),
//! `server_error` (other 5xx), `timeout`, `connection` (failed or dropped
//! before an answer), `not_yet_visible` (EC2 did not list an id it had just
//! handed out). Kubernetes counts in its tower retry policy; EC2 counts the
//! SDK's attempts in its interceptor and tidegate's own retries around them.
//!
//! Labels hold names, commit ids and reasons only, never a value from a
//! resource or a secret.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::{EnvReport, ErrorReason};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvLabels {
    environment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WaitLabels {
    environment: String,
    /// `previous`, `hold`, `approval`, `soak`, `window`, `pinned`.
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    environment: String,
    mode: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabels {
    environment: String,
    revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    provider: String,
    operation: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    provider: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifyLabels {
    target: String,
    event: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    forge: String,
    result: String,
}

/// Every series the reconciler exports.
pub struct Metrics {
    registry: Registry,
    durations: Family<RunLabels, Histogram>,
    revisions: Family<RevisionLabels, Gauge>,
    /// The revision label currently set per environment (to remove it when
    /// it changes).
    current_revision: Mutex<std::collections::HashMap<String, String>>,
    drift: Family<EnvLabels, Gauge>,
    healthy: Family<EnvLabels, Gauge>,
    suspended: Family<EnvLabels, Gauge>,
    waiting: Family<WaitLabels, Gauge>,
    api_calls: Family<CallLabels, Counter>,
    api_retries: Family<RetryLabels, Counter>,
    errors: Family<ReasonLabels, Counter>,
    polls: Family<ResultLabels, Counter>,
    webhooks: Family<HookLabels, Counter>,
    notifications: Family<NotifyLabels, Counter>,
    notify_queue: Family<TargetLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn duration_histogram() -> Histogram {
    // 50ms .. ~7 min
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tidegate");
        let durations = Family::<RunLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one converge of one environment took",
            durations.clone(),
        );
        let revisions = Family::<RevisionLabels, Gauge>::default();
        registry.register(
            "applied_revision_info",
            "The commit last applied and healthy per environment (value 1)",
            revisions.clone(),
        );
        let drift = Family::<EnvLabels, Gauge>::default();
        registry.register(
            "drift_resources",
            "Resources found drifted at the last check",
            drift.clone(),
        );
        let healthy = Family::<EnvLabels, Gauge>::default();
        registry.register(
            "environment_healthy",
            "1 when the environment's last converge was healthy",
            healthy.clone(),
        );
        let suspended = Family::<EnvLabels, Gauge>::default();
        registry.register(
            "environment_suspended",
            "1 when the environment is suspended",
            suspended.clone(),
        );
        let waiting = Family::<WaitLabels, Gauge>::default();
        registry.register(
            "environment_waiting",
            "1 for the reason the environment waits at its gate (previous, hold, approval, soak, window), 0 for the others",
            waiting.clone(),
        );
        let api_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "api_calls",
            "Provider API calls by provider, operation and result",
            api_calls.clone(),
        );
        let api_retries = Family::<RetryLabels, Counter>::default();
        registry.register(
            "api_retries",
            "Provider API requests sent again, by provider and the reason the attempt before failed",
            api_retries.clone(),
        );
        let errors = Family::<ReasonLabels, Counter>::default();
        registry.register("errors", "Errors by reason", errors.clone());
        let polls = Family::<ResultLabels, Counter>::default();
        registry.register("source_polls", "Git remote polls by result", polls.clone());
        let webhooks = Family::<HookLabels, Counter>::default();
        registry.register(
            "webhooks",
            "Webhook deliveries by forge and result",
            webhooks.clone(),
        );
        let notifications = Family::<NotifyLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notification events by target, event kind and result (sent, failed, rejected, dropped, deduplicated)",
            notifications.clone(),
        );
        let notify_queue = Family::<TargetLabels, Gauge>::default();
        registry.register(
            "notification_queue_depth",
            "Notification events queued per target",
            notify_queue.clone(),
        );
        Metrics {
            registry,
            durations,
            revisions,
            current_revision: Mutex::default(),
            drift,
            healthy,
            suspended,
            waiting,
            api_calls,
            api_retries,
            errors,
            polls,
            webhooks,
            notifications,
            notify_queue,
        }
    }

    /// Records one converge.
    pub fn converged(&self, env: &str, report: &EnvReport, applied: bool) {
        let result = match &report.error {
            None if report.passes_gate() => "ok",
            None => "unhealthy",
            Some(_) => "error",
        };
        self.durations
            .get_or_create(&RunLabels {
                environment: env.into(),
                mode: report.mode.label().into(),
                result: result.into(),
            })
            .observe(report.duration().as_secs_f64());
        let e = EnvLabels {
            environment: env.into(),
        };
        self.drift.get_or_create(&e).set(report.drift.len() as i64);
        self.healthy
            .get_or_create(&e)
            .set(i64::from(report.passes_gate()));
        for c in &report.api_calls {
            self.api_calls
                .get_or_create(&CallLabels {
                    provider: c.provider.clone(),
                    operation: c.operation.clone(),
                    result: c.result.clone(),
                })
                .inc_by(c.count);
        }
        for r in &report.api_retries {
            self.api_retries
                .get_or_create(&RetryLabels {
                    provider: r.provider.clone(),
                    reason: r.reason.clone(),
                })
                .inc_by(r.count);
        }
        if let Some(err) = &report.error {
            self.error(err.reason);
        } else if !report.passes_gate() {
            self.error(ErrorReason::Health);
        }
        if applied {
            self.revision(env, &report.commit);
        }
    }

    /// Sets the applied revision of `env` (one series per environment).
    pub fn revision(&self, env: &str, commit: &str) {
        let mut current = self
            .current_revision
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(old) = current.insert(env.into(), commit.into()) {
            self.revisions.remove(&RevisionLabels {
                environment: env.into(),
                revision: old,
            });
        }
        self.revisions
            .get_or_create(&RevisionLabels {
                environment: env.into(),
                revision: commit.into(),
            })
            .set(1);
    }

    pub fn suspended(&self, env: &str, suspended: bool) {
        self.suspended
            .get_or_create(&EnvLabels {
                environment: env.into(),
            })
            .set(i64::from(suspended));
    }

    /// Sets `tidegate_environment_waiting`: 1 for `reason`, 0 for every
    /// other reason (so a wait that ends reads 0, not a stale 1).
    pub fn waiting(&self, env: &str, reason: Option<crate::promotion::Reason>) {
        for r in crate::promotion::Reason::ALL {
            self.waiting
                .get_or_create(&WaitLabels {
                    environment: env.into(),
                    reason: r.label().into(),
                })
                .set(i64::from(Some(r) == reason));
        }
    }

    pub fn error(&self, reason: ErrorReason) {
        self.errors
            .get_or_create(&ReasonLabels {
                reason: reason.label().into(),
            })
            .inc();
    }

    pub fn poll(&self, result: &str) {
        self.polls
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    pub fn webhook(&self, forge: &str, result: &str) {
        self.webhooks
            .get_or_create(&HookLabels {
                forge: forge.into(),
                result: result.into(),
            })
            .inc();
    }

    /// One notification event's outcome at one target.
    pub fn notification(&self, target: &str, event: &str, result: &str) {
        self.notifications
            .get_or_create(&NotifyLabels {
                target: target.into(),
                event: event.into(),
                result: result.into(),
            })
            .inc();
    }

    pub fn notification_queue(&self, target: &str, depth: usize) {
        self.notify_queue
            .get_or_create(&TargetLabels {
                target: target.into(),
            })
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{ApiCalls, ApiRetries, EnvHealth, Mode};

    #[test]
    fn a_converge_sets_every_series_and_revisions_replace_each_other() {
        let m = Metrics::new();
        let mut r = EnvReport {
            commit: "c1".into(),
            mode: Mode::Apply,
            health: EnvHealth::Healthy,
            drift: vec!["web/deployment".into()],
            api_calls: vec![ApiCalls {
                provider: "kubernetes".into(),
                operation: "apply".into(),
                result: "ok".into(),
                count: 3,
            }],
            api_retries: vec![ApiRetries {
                provider: "aws".into(),
                reason: "throttled".into(),
                count: 2,
            }],
            duration_ms: 1500,
            ..EnvReport::default()
        };
        m.converged("dev", &r, true);
        r.commit = "c2".into();
        m.converged("dev", &r, true);
        let text = m.encode();
        assert!(
            text.contains("tidegate_applied_revision_info{environment=\"dev\",revision=\"c2\"} 1"),
            "{text}"
        );
        assert!(!text.contains("revision=\"c1\""), "{text}");
        assert!(text.contains("tidegate_api_calls_total{provider=\"kubernetes\",operation=\"apply\",result=\"ok\"} 6"), "{text}");
        assert!(
            text.contains("tidegate_api_retries_total{provider=\"aws\",reason=\"throttled\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("tidegate_drift_resources{environment=\"dev\"} 1"),
            "{text}"
        );
        assert!(text.contains("tidegate_reconcile_duration_seconds_count{environment=\"dev\",mode=\"apply\",result=\"ok\"} 2"), "{text}");
    }
}
