//! Errors as the apiserver reports them: `Status` objects with `reason`,
//! `code` and `details`, which kubectl prints and kube-rs decodes into
//! `ErrorResponse`. Every failing request of the simulator goes through here.

use crate::managed::Conflict;
use serde_json::{json, Value};

/// A failed API request, rendered as a `Status` object.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `StatusReason` (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// Human-readable message, worded like the apiserver's.
    pub message: String,
    /// `details` (name, group, kind, causes).
    pub details: Value,
}

/// Result of an API operation.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

fn details(group_resource: &str, name: &str) -> Value {
    let (kind, group) = group_resource
        .split_once('.')
        .unwrap_or((group_resource, ""));
    let mut d = json!({"name": name, "kind": kind});
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    d
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String, details: Value) -> Self {
        ApiError {
            code,
            reason,
            message,
            details,
        }
    }

    /// 404: the object (or the namespace it would live in) does not exist.
    pub fn not_found(group_resource: &str, name: &str) -> Self {
        let msg = format!("{group_resource} \"{name}\" not found");
        Self::new(404, "NotFound", msg, details(group_resource, name))
    }

    /// 404 for a URL that names no served resource.
    pub fn no_route(path: &str) -> Self {
        let msg = format!("the server could not find the requested resource ({path})");
        Self::new(404, "NotFound", msg, json!({}))
    }

    /// 409: create of an existing object.
    pub fn already_exists(group_resource: &str, name: &str) -> Self {
        let msg = format!("{group_resource} \"{name}\" already exists");
        Self::new(409, "AlreadyExists", msg, details(group_resource, name))
    }

    /// 409: a write carried a stale `resourceVersion` (or uid precondition).
    pub fn stale(group_resource: &str, name: &str) -> Self {
        let msg = format!(
            "Operation cannot be fulfilled on {group_resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
        );
        Self::new(409, "Conflict", msg, details(group_resource, name))
    }

    /// 409: server-side apply found fields owned by other managers.
    pub fn apply_conflict(group_resource: &str, name: &str, conflicts: &[Conflict]) -> Self {
        let n = conflicts.len();
        let word = if n == 1 { "conflict" } else { "conflicts" };
        let lines: Vec<String> = conflicts
            .iter()
            .map(|c| {
                format!(
                    "conflict with \"{}\" using {}: {}",
                    c.manager, c.api_version, c.field
                )
            })
            .collect();
        let message = if n == 1 {
            format!("Apply failed with 1 conflict: {}", lines[0])
        } else {
            format!("Apply failed with {n} {word}: {}", lines.join("\n"))
        };
        let mut d = details(group_resource, name);
        d["causes"] = conflicts
            .iter()
            .map(|c| {
                json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                    "field": c.field,
                })
            })
            .collect();
        Self::new(409, "Conflict", message, d)
    }

    /// 422: the object is invalid.
    pub fn invalid(group_resource: &str, kind: &str, name: &str, why: &str) -> Self {
        let msg = format!("{kind} \"{name}\" is invalid: {why}");
        let mut d = details(group_resource, name);
        // `spec.replicas: Invalid value: ...`: the cause names the field,
        // which kubectl prints before the message.
        d["causes"] = match why.split_once(": ") {
            Some((field, message)) if !field.contains(' ') => {
                json!([{"reason": "FieldValueInvalid", "message": message, "field": field}])
            }
            _ => json!([{"reason": "FieldValueInvalid", "message": why}]),
        };
        Self::new(422, "Invalid", msg, d)
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into(), json!({}))
    }

    /// 405: the verb is not supported on this URL.
    pub fn method_not_allowed(what: &str) -> Self {
        let msg =
            format!("the server does not allow this method on the requested resource ({what})");
        Self::new(405, "MethodNotAllowed", msg, json!({}))
    }

    /// 415: a PATCH with a content type the server does not know.
    pub fn unsupported_media_type(ct: &str) -> Self {
        let msg = format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})");
        Self::new(415, "UnsupportedMediaType", msg, json!({}))
    }

    /// 415: a create or update body in a format the server does not decode
    /// (CBOR, or protobuf of a kind without a schema).
    pub fn unsupported_body(ct: &str) -> Self {
        let msg = format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {ct:?})");
        Self::new(415, "UnsupportedMediaType", msg, json!({}))
    }

    /// 415 with a message of its own (a request kube-sim does not simulate).
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message.into(), json!({}))
    }

    /// 410: a watch or continue token from before the retained history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message.into(), json!({}))
    }

    /// 500: an injected failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message.into(), json!({}))
    }

    /// 429: an injected throttle.
    pub fn too_many_requests(retry_after: u64) -> Self {
        let msg = "Too many requests, please try again later.".to_string();
        Self::new(
            429,
            "TooManyRequests",
            msg,
            json!({"retryAfterSeconds": retry_after}),
        )
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shape_matches_apiserver() {
        let s = ApiError::not_found("deployments.apps", "web").to_status();
        assert_eq!(s["message"], "deployments.apps \"web\" not found");
        assert_eq!(
            s["details"],
            json!({"name": "web", "kind": "deployments", "group": "apps"})
        );
        assert_eq!(s["code"], 404);
        let c = Conflict {
            manager: "kubectl".into(),
            api_version: "v1".into(),
            field: ".data.a".into(),
        };
        let e = ApiError::apply_conflict("configmaps", "c", &[c]);
        assert_eq!(
            e.message,
            "Apply failed with 1 conflict: conflict with \"kubectl\" using v1: .data.a"
        );
        assert_eq!(e.details["causes"][0]["reason"], "FieldManagerConflict");
    }
}
