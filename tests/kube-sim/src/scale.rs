//! The `scale` subresource of Deployments, ReplicaSets and StatefulSets:
//! an `autoscaling/v1` Scale that reads `spec.replicas`, `status.replicas`
//! and the label selector of its parent and writes `spec.replicas` back
//! (what `kubectl scale` and HorizontalPodAutoscalers use). Pure; the
//! store does the write.

use serde_json::{json, Map, Value};

/// `apiVersion` of Scale objects.
pub const API_VERSION: &str = "autoscaling/v1";

/// `Scale.autoscaling`, as errors about Scale objects name the kind.
pub const QUALIFIED_KIND: &str = "Scale.autoscaling";

/// `spec.replicas` of a workload; the apiserver defaults a missing one to 1.
pub fn desired(obj: &Value) -> i64 {
    obj["spec"]["replicas"].as_i64().unwrap_or(1)
}

/// The Scale of a stored workload.
pub fn of(obj: &Value) -> Value {
    let mut meta = Map::new();
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = obj["metadata"].get(k) {
            meta.insert(k.into(), v.clone());
        }
    }
    let replicas = desired(obj);
    // `replicas,omitempty` in ScaleSpec: zero replicas is an empty spec.
    let spec = if replicas == 0 {
        json!({})
    } else {
        json!({"replicas": replicas})
    };
    let mut status = json!({"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0)});
    let selector = selector_string(&obj["spec"]["selector"]);
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    json!({"kind": "Scale", "apiVersion": API_VERSION, "metadata": meta, "spec": spec, "status": status})
}

/// A `metav1.LabelSelector` in the string form of
/// `LabelSelectorAsSelector(...).String()`: requirements sorted by key,
/// `k=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.
pub fn selector_string(sel: &Value) -> String {
    let mut reqs: Vec<(String, String)> = vec![];
    if let Some(labels) = sel["matchLabels"].as_object() {
        for (k, v) in labels {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())));
        }
    }
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or_default().to_string();
        let mut values: Vec<&str> = e["values"]
            .as_array()
            .map(|vs| vs.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        values.sort_unstable();
        let text = match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.clone(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        };
        reqs.push((key, text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(",")
}

/// Why a Scale sent by a client is refused.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// Not a Scale of this object (400 BadRequest).
    Malformed(String),
    /// `spec.replicas` out of range (422 Invalid).
    Invalid(String),
}

/// Checks a Scale sent by a client against the URL's object name; returns
/// the requested replicas (`spec.replicas`, absent meaning 0 as in Go).
pub fn requested(scale: &Value, name: &str) -> Result<i64, Refusal> {
    if !scale.is_object() {
        return Err(Refusal::Malformed(
            "the body of the request must be a JSON or YAML object".into(),
        ));
    }
    if let Some(k) = scale["kind"].as_str().filter(|k| *k != "Scale") {
        return Err(Refusal::Malformed(format!(
            "the kind in the data ({k}) does not match the expected kind (Scale)"
        )));
    }
    if let Some(v) = scale["apiVersion"].as_str().filter(|v| *v != API_VERSION) {
        return Err(Refusal::Malformed(format!(
            "the API version in the data ({v}) does not match the expected API version ({API_VERSION})"
        )));
    }
    if let Some(n) = scale["metadata"]["name"].as_str().filter(|n| *n != name) {
        return Err(Refusal::Malformed(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    let replicas = &scale["spec"]["replicas"];
    if replicas.is_null() {
        return Ok(0);
    }
    match replicas.as_i64() {
        Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => Ok(n),
        Some(n) if n < 0 => Err(Refusal::Invalid(format!(
            "spec.replicas: Invalid value: {n}: must be greater than or equal to 0"
        ))),
        _ => Err(Refusal::Malformed(format!(
            "spec.replicas: expected a 32-bit integer, got {replicas}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_of_a_deployment() {
        let d = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u", "resourceVersion": "7",
                "labels": {"x": "y"}, "generation": 2},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "a": "b"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]},
                    {"key": "old", "operator": "DoesNotExist"}]}},
            "status": {"replicas": 2}
        });
        assert_eq!(
            of(&d),
            json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": "web", "namespace": "default", "uid": "u", "resourceVersion": "7"},
                "spec": {"replicas": 3},
                "status": {"replicas": 2, "selector": "a=b,app=web,!old,tier in (back,front)"}})
        );
        let bare = json!({"metadata": {"name": "x"}, "spec": {"replicas": 0}});
        assert_eq!(of(&bare)["spec"], json!({}));
        assert_eq!(of(&bare)["status"], json!({"replicas": 0}));
    }

    #[test]
    fn requested_replicas_are_checked() {
        let s = |v: Value| requested(&v, "web");
        assert_eq!(s(json!({"spec": {"replicas": 4}})), Ok(4));
        assert_eq!(s(json!({"metadata": {"name": "web"}, "spec": {}})), Ok(0));
        assert!(matches!(
            s(json!({"spec": {"replicas": -1}})),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            s(json!({"spec": {"replicas": "x"}})),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(
            s(json!({"metadata": {"name": "api"}})),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(
            s(json!({"kind": "Deployment"})),
            Err(Refusal::Malformed(_))
        ));
    }
}
