//! Discovery documents in the legacy (non-aggregated) shape that kubectl's
//! memory-cached discovery client and kube-rs `Discovery` read: `/version`,
//! `/api` (APIVersions), `/apis` (APIGroupList), `/apis/<group>` (APIGroup)
//! and `/api/v1`, `/apis/<group>/<version>` (APIResourceList). Clients that
//! ask for aggregated discovery get these too (the content type tells them).

use crate::kinds::ResourceType;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Kubernetes version the simulator claims to be.
pub const MINOR: &str = "37";

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": MINOR,
        "gitVersion": format!("v1.{MINOR}.0-kube-sim"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// Versions per non-core group, in first-seen order of the type table.
fn groups(types: &[ResourceType]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        let vs = out.entry(t.group.clone()).or_default();
        if !vs.contains(&t.version) {
            vs.push(t.version.clone());
        }
    }
    out
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs[0].clone()})
}

/// `/apis`.
pub fn group_list(types: &[ResourceType]) -> Value {
    let gs: Vec<Value> = groups(types)
        .iter()
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

/// `/apis/<group>`, or `None` when the group is not served.
pub fn group(types: &[ResourceType], name: &str) -> Option<Value> {
    let gs = groups(types);
    let vs = gs.get(name)?;
    let mut g = group_json(name, vs);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

/// `/api/v1` or `/apis/<group>/<version>`, or `None` when not served.
pub fn resource_list(types: &[ResourceType], group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = types
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .flat_map(ResourceType::discovery_entries)
        .collect();
    if resources.is_empty() && !(group.is_empty() && version == "v1") {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::builtins;

    #[test]
    fn groups_and_resources_are_listed() {
        let types = builtins();
        let list = group_list(&types);
        let names: Vec<&str> = list["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"apps") && names.contains(&"apiextensions.k8s.io"));
        let apps = resource_list(&types, "apps", "v1").unwrap();
        let deploy = &apps["resources"][0];
        assert_eq!(deploy["name"], "deployments");
        assert_eq!(deploy["shortNames"], json!(["deploy"]));
        assert_eq!(apps["resources"][1]["name"], "deployments/scale");
        assert_eq!(apps["resources"][1]["kind"], "Scale");
        assert_eq!(apps["resources"][1]["group"], "autoscaling");
        assert_eq!(apps["resources"][2]["name"], "deployments/status");
        assert!(resource_list(&types, "nope", "v1").is_none());
        assert_eq!(
            group(&types, "apps").unwrap()["preferredVersion"]["groupVersion"],
            "apps/v1"
        );
    }
}
