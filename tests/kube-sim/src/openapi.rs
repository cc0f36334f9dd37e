//! Just enough OpenAPI v3 for kubectl: the `/openapi/v3` index and one
//! document per group/version whose PATCH operations carry the
//! `x-kubernetes-group-version-kind` extension and the `fieldValidation`
//! query parameter. kubectl reads these to decide that validation happens
//! server-side; without them `kubectl apply` refuses to run. No schemas are
//! served, so `kubectl explain` does not work.

use crate::kinds::ResourceType;
use serde_json::{json, Map, Value};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the group/version documents and their URLs.
pub fn index(types: &[ResourceType]) -> Value {
    let mut paths = Map::new();
    for t in types {
        let p = gv_path(&t.group, &t.version);
        paths.entry(p.clone()).or_insert_with(
            || json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=kube-sim")}),
        );
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<gv path>`, or `None` when the group/version is not served.
pub fn group_version(types: &[ResourceType], path: &str) -> Option<Value> {
    let mut paths = Map::new();
    for t in types
        .iter()
        .filter(|t| gv_path(&t.group, &t.version) == path)
    {
        let ns = if t.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let url = format!("/{path}{ns}/{}/{{name}}", t.plural);
        let op = json!({
            "operationId": format!("patch{}", t.kind),
            "x-kubernetes-group-version-kind": {"group": t.group, "version": t.version, "kind": t.kind},
            "x-kubernetes-action": "patch",
            "parameters": [
                {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}
            ],
            "responses": {"200": {"description": "OK"}},
        });
        paths.insert(url, json!({"patch": op}));
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0-kube-sim"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::builtins;

    #[test]
    fn patch_operations_advertise_field_validation() {
        let types = builtins();
        assert!(index(&types)["paths"]["apis/apps/v1"]["serverRelativeURL"].is_string());
        let doc = group_version(&types, "apis/apps/v1").unwrap();
        let op = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(group_version(&types, "apis/nope/v1").is_none());
    }
}
