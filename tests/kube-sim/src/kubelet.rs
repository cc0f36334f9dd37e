//! The workload "kubelet": what a cluster's controllers would write into
//! the status of Deployments, ReplicaSets, StatefulSets, DaemonSets and
//! Jobs, so that health gates can be tested. Each object's readiness mode comes from the
//! annotation [`READY_ANNOTATION`] or the simulator's default; this module
//! only computes statuses (pure), the store schedules them.

use serde_json::{json, Value};
use std::time::Duration;

/// Annotation selecting an object's readiness: `now`, `never`,
/// `after:<duration>` (`500ms`, `2s`, `1m`) or `fail`.
pub const READY_ANNOTATION: &str = "kube-sim.tidegate.dev/ready";

/// How a workload becomes ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Ready as soon as it is written.
    Now,
    /// Ready after a delay (not ready until then).
    After(Duration),
    /// Never ready (rolling out forever).
    Never,
    /// Fails: Deployment progress deadline exceeded, Job failed.
    Fail,
}

impl Readiness {
    /// Parses a mode string; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "now" | "" => Some(Readiness::Now),
            "never" => Some(Readiness::Never),
            "fail" => Some(Readiness::Fail),
            other => parse_duration(other.strip_prefix("after:")?).map(Readiness::After),
        }
    }
}

/// Parses `250ms`, `2s`, `1m`, `1.5s`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    (secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// Whether objects of this group/resource get a simulated status.
pub fn is_workload(group_resource: &str) -> bool {
    matches!(
        group_resource,
        "deployments.apps"
            | "replicasets.apps"
            | "statefulsets.apps"
            | "daemonsets.apps"
            | "jobs.batch"
    )
}

/// The object's readiness mode: annotation first, else `default`.
pub fn mode_of(obj: &Value, default: Readiness) -> Readiness {
    obj["metadata"]["annotations"][READY_ANNOTATION]
        .as_str()
        .and_then(Readiness::parse)
        .unwrap_or(default)
}

/// What a workload's phase is at the moment of computing status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Rolling out, not ready yet.
    Pending,
    /// Ready / complete.
    Ready,
    /// Failed.
    Failed,
}

fn condition(kind: &str, status: bool, reason: &str, message: &str, now: &str) -> Value {
    json!({
        "type": kind,
        "status": if status { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    })
}

/// The status the controllers would write for this object in this phase.
pub fn status_for(group_resource: &str, obj: &Value, phase: Phase, now: &str) -> Value {
    let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let ready = if phase == Phase::Ready { replicas } else { 0 };
    match group_resource {
        "deployments.apps" => {
            let rs = format!("ReplicaSet \"{name}-sim\"");
            let progressing = match phase {
                Phase::Ready => condition(
                    "Progressing",
                    true,
                    "NewReplicaSetAvailable",
                    &format!("{rs} has successfully progressed."),
                    now,
                ),
                Phase::Pending => condition(
                    "Progressing",
                    true,
                    "ReplicaSetUpdated",
                    &format!("{rs} is progressing."),
                    now,
                ),
                Phase::Failed => condition(
                    "Progressing",
                    false,
                    "ProgressDeadlineExceeded",
                    &format!("{rs} has timed out progressing."),
                    now,
                ),
            };
            let available = if phase == Phase::Ready {
                condition(
                    "Available",
                    true,
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.",
                    now,
                )
            } else {
                condition(
                    "Available",
                    false,
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.",
                    now,
                )
            };
            let mut s = json!({
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "conditions": [available, progressing],
            });
            if ready < replicas {
                s["unavailableReplicas"] = json!(replicas - ready);
            }
            s
        }
        "replicasets.apps" => json!({
            "observedGeneration": generation,
            "replicas": replicas,
            "fullyLabeledReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
        }),
        "statefulsets.apps" => json!({
            "observedGeneration": generation,
            "replicas": replicas,
            "readyReplicas": ready,
            "currentReplicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": ready,
            "currentRevision": format!("{name}-sim"),
            "updateRevision": format!("{name}-sim"),
            "collisionCount": 0,
        }),
        "daemonsets.apps" => json!({
            "observedGeneration": generation,
            "currentNumberScheduled": 1,
            "desiredNumberScheduled": 1,
            "numberMisscheduled": 0,
            "numberReady": i64::from(phase == Phase::Ready),
            "numberAvailable": i64::from(phase == Phase::Ready),
            "updatedNumberScheduled": 1,
        }),
        "jobs.batch" => job_status(obj, phase, now),
        _ => Value::Null,
    }
}

fn job_status(obj: &Value, phase: Phase, now: &str) -> Value {
    let completions = obj["spec"]["completions"].as_i64().unwrap_or(1);
    match phase {
        Phase::Pending => json!({"active": 1, "startTime": now, "ready": 0}),
        Phase::Ready => json!({
            "startTime": now,
            "completionTime": now,
            "succeeded": completions,
            "ready": 0,
            "conditions": [
                condition("SuccessCriteriaMet", true, "CompletionsReached", "Reached expected number of succeeded pods", now),
                condition("Complete", true, "CompletionsReached", "Reached expected number of succeeded pods", now),
            ],
        }),
        Phase::Failed => json!({
            "startTime": now,
            "failed": 1,
            "ready": 0,
            "conditions": [
                condition("FailureTarget", true, "BackoffLimitExceeded", "Job has reached the specified backoff limit", now),
                condition("Failed", true, "BackoffLimitExceeded", "Job has reached the specified backoff limit", now),
            ],
        }),
    }
}

/// Whether `current` already says what `wanted` says (ignoring timestamps),
/// so the kubelet does not write the same status again and again.
pub fn same_status(current: &Value, wanted: &Value) -> bool {
    strip_times(current) == strip_times(wanted)
}

fn strip_times(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.ends_with("Time"))
                .map(|(k, v)| (k.clone(), strip_times(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_times).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!(Readiness::parse("never"), Some(Readiness::Never));
        assert_eq!(
            Readiness::parse("after:2s"),
            Some(Readiness::After(Duration::from_secs(2)))
        );
        assert_eq!(
            Readiness::parse("after:250ms"),
            Some(Readiness::After(Duration::from_millis(250)))
        );
        assert_eq!(Readiness::parse("soon"), None);
    }

    #[test]
    fn ready_deployment_is_available() {
        let d = json!({"metadata": {"name": "web", "generation": 3}, "spec": {"replicas": 2}});
        let s = status_for("deployments.apps", &d, Phase::Ready, "t");
        assert_eq!(s["observedGeneration"], 3);
        assert_eq!(s["availableReplicas"], 2);
        assert_eq!(s["conditions"][0]["type"], "Available");
        assert_eq!(s["conditions"][0]["status"], "True");
        let p = status_for("deployments.apps", &d, Phase::Pending, "t");
        assert_eq!(p["conditions"][0]["status"], "False");
        assert!(!same_status(&s, &p));
        assert!(same_status(
            &s,
            &status_for("deployments.apps", &d, Phase::Ready, "u")
        ));
    }
}
