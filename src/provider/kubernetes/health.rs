//! Readiness of a Kubernetes object, judged from its status alone.
//!
//! The rules follow what `kubectl rollout status` and `kubectl wait` check,
//! so "healthy" here means what an operator would accept as done: a rollout
//! whose controller has seen the latest spec and whose replicas are all
//! updated and available, a Job that completed, a CRD that is Established,
//! and for other kinds a `Ready` or `Available` condition when they have one.

use serde_json::Value as J;

use crate::provider::Health;

/// The health of `obj` (a full object with `status`) of kind `kind` in
/// API group `group`.
pub fn assess(group: &str, kind: &str, obj: &J) -> Health {
    let status = obj.get("status").unwrap_or(&J::Null);
    match (group, kind) {
        ("apps", "Deployment") => deployment(obj, status),
        ("apps", "StatefulSet") => statefulset(obj, status),
        ("apps", "DaemonSet") => daemonset(obj, status),
        ("batch", "Job") => job(status),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            by_condition(status, &["Established"]).unwrap_or_else(|| {
                Health::Progressing("waiting for the CRD to be Established".into())
            })
        }
        _ => by_condition(status, &["Ready", "Available"]).unwrap_or(Health::Healthy),
    }
}

fn int(v: &J, key: &str) -> Option<i64> {
    v.get(key).and_then(J::as_i64)
}

/// `Progressing` while the controller has not seen the latest spec.
fn stale_generation(obj: &J, status: &J) -> Option<Health> {
    let generation = obj
        .get("metadata")
        .and_then(|m| int(m, "generation"))
        .unwrap_or(0);
    let observed = int(status, "observedGeneration").unwrap_or(0);
    (observed < generation).then(|| {
        Health::Progressing(format!(
            "waiting for the controller to observe generation {generation} (observed {observed})"
        ))
    })
}

fn desired_replicas(obj: &J) -> i64 {
    obj.get("spec")
        .and_then(|s| int(s, "replicas"))
        .unwrap_or(1)
}

fn deployment(obj: &J, status: &J) -> Health {
    if let Some(h) = stale_generation(obj, status) {
        return h;
    }
    if let Some(c) = condition(status, "Progressing") {
        if c.get("reason").and_then(J::as_str) == Some("ProgressDeadlineExceeded") {
            return Health::Failed(format!(
                "rollout exceeded its progress deadline: {}",
                message(c)
            ));
        }
    }
    replicas_ready(
        desired_replicas(obj),
        status,
        &["updatedReplicas", "readyReplicas", "availableReplicas"],
        "replicas",
    )
}

fn statefulset(obj: &J, status: &J) -> Health {
    if let Some(h) = stale_generation(obj, status) {
        return h;
    }
    let revisions = (
        status.get("currentRevision").and_then(J::as_str),
        status.get("updateRevision").and_then(J::as_str),
    );
    if let (Some(cur), Some(upd)) = revisions {
        if cur != upd && int(status, "updatedReplicas").unwrap_or(0) < desired_replicas(obj) {
            return Health::Progressing(format!("rolling out revision {upd} (current {cur})"));
        }
    }
    replicas_ready(
        desired_replicas(obj),
        status,
        &["updatedReplicas", "readyReplicas", "availableReplicas"],
        "replicas",
    )
}

fn daemonset(obj: &J, status: &J) -> Health {
    if let Some(h) = stale_generation(obj, status) {
        return h;
    }
    let desired = int(status, "desiredNumberScheduled").unwrap_or(0);
    replicas_ready(
        desired,
        status,
        &["updatedNumberScheduled", "numberReady", "numberAvailable"],
        "pods",
    )
}

/// `Healthy` when every named counter reaches `desired`; otherwise which
/// counter lags. A missing counter counts as 0, except `availableReplicas`
/// on servers that do not report it (falls back to ready).
fn replicas_ready(desired: i64, status: &J, counters: &[&str], noun: &str) -> Health {
    for key in counters {
        let have = int(status, key).unwrap_or(0);
        if have < desired {
            return Health::Progressing(format!("{key}: {have} of {desired} {noun}"));
        }
    }
    Health::Healthy
}

fn job(status: &J) -> Health {
    if let Some(c) = condition(status, "Failed").filter(|c| is_true(c)) {
        return Health::Failed(format!("job failed: {}", message(c)));
    }
    if condition(status, "Complete").is_some_and(is_true) {
        return Health::Healthy;
    }
    let succeeded = int(status, "succeeded").unwrap_or(0);
    let active = int(status, "active").unwrap_or(0);
    Health::Progressing(format!(
        "job not complete ({active} active, {succeeded} succeeded)"
    ))
}

/// The first of `types` the status has, as health; `None` when it has none.
fn by_condition(status: &J, types: &[&str]) -> Option<Health> {
    let c = types.iter().find_map(|t| condition(status, t))?;
    let kind = c.get("type").and_then(J::as_str).unwrap_or("?");
    Some(if is_true(c) {
        Health::Healthy
    } else {
        Health::Progressing(format!("condition {kind} is not True: {}", message(c)))
    })
}

fn condition<'a>(status: &'a J, kind: &str) -> Option<&'a J> {
    status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(J::as_str) == Some(kind))
}

fn is_true(c: &J) -> bool {
    c.get("status").and_then(J::as_str) == Some("True")
}

/// `reason: message` of a condition, whichever parts it has.
fn message(c: &J) -> String {
    let reason = c.get("reason").and_then(J::as_str).unwrap_or("");
    let msg = c.get("message").and_then(J::as_str).unwrap_or("");
    match (reason.is_empty(), msg.is_empty()) {
        (false, false) => format!("{reason}: {msg}"),
        (false, true) => reason.to_string(),
        (true, false) => msg.to_string(),
        (true, true) => "no reason given".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(generation: i64, status: J) -> J {
        json!({"metadata": {"generation": generation}, "spec": {"replicas": 2}, "status": status})
    }

    #[test]
    fn deployment_waits_for_generation_and_replicas() {
        let h = assess(
            "apps",
            "Deployment",
            &deploy(2, json!({"observedGeneration": 1})),
        );
        assert!(matches!(h, Health::Progressing(r) if r.contains("generation 2")));
        let h = assess(
            "apps",
            "Deployment",
            &deploy(
                2,
                json!({"observedGeneration": 2, "updatedReplicas": 2, "readyReplicas": 1}),
            ),
        );
        assert_eq!(
            h,
            Health::Progressing("readyReplicas: 1 of 2 replicas".into())
        );
        let ok = json!({"observedGeneration": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2});
        assert_eq!(
            assess("apps", "Deployment", &deploy(2, ok)),
            Health::Healthy
        );
    }

    #[test]
    fn deployment_past_its_deadline_failed() {
        let st = json!({"observedGeneration": 1, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "too slow"}]});
        assert!(
            matches!(assess("apps", "Deployment", &deploy(1, st)), Health::Failed(r) if r.contains("too slow"))
        );
    }

    #[test]
    fn statefulset_and_daemonset_rollouts() {
        let sts = json!({"metadata": {"generation": 1}, "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "currentRevision": "a", "updateRevision": "b", "updatedReplicas": 0}});
        assert!(
            matches!(assess("apps", "StatefulSet", &sts), Health::Progressing(r) if r.contains("revision b"))
        );
        let ds = json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1,
            "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberReady": 3, "numberAvailable": 3}});
        assert_eq!(assess("apps", "DaemonSet", &ds), Health::Healthy);
    }

    #[test]
    fn jobs_complete_or_fail() {
        let done = json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(assess("batch", "Job", &done), Health::Healthy);
        let failed = json!({"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}});
        assert_eq!(
            assess("batch", "Job", &failed),
            Health::Failed("job failed: BackoffLimitExceeded".into())
        );
        assert!(matches!(
            assess("batch", "Job", &json!({"status": {"active": 1}})),
            Health::Progressing(_)
        ));
    }

    #[test]
    fn other_kinds_use_ready_or_available_conditions() {
        assert_eq!(assess("", "ConfigMap", &json!({})), Health::Healthy);
        let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Pending"}]}});
        assert_eq!(
            assess("example.com", "Widget", &not_ready),
            Health::Progressing("condition Ready is not True: Pending".into())
        );
        let crd = json!({"status": {"conditions": [{"type": "Established", "status": "True"}]}});
        assert_eq!(
            assess("apiextensions.k8s.io", "CustomResourceDefinition", &crd),
            Health::Healthy
        );
        assert!(matches!(
            assess(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                &json!({})
            ),
            Health::Progressing(_)
        ));
    }
}
