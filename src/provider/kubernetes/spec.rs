//! What tidegate knows of Kubernetes objects without a cluster: which
//! attributes can be referenced, where an object lives (its namespace),
//! what it must come after (its Namespace, the CustomResourceDefinition of
//! its kind), whether it fits the schema of its kind ([`schema`]: the
//! bundled built-in kinds and the CRDs declared beside it), and the order
//! pruned kinds are deleted in. Replacements are not known offline: the
//! API server says at plan which fields are immutable.

use std::collections::{BTreeMap, HashMap};

use super::{schema, Kubernetes};
use crate::provider::{
    Arrangement, BodyShape, Declared, EnvTarget, ImplicitEdge, Implied, Problem, Provider,
    ProviderKind, Result, Spec,
};
use crate::value::Value;

/// The Kubernetes provider's [`Spec`].
pub struct KubernetesSpec;

/// The fields that decide placement and order.
const NAME: &str = "metadata.name";
const NAMESPACE: &str = "metadata.namespace";
const CRD_GROUP: &str = "spec.group";
const CRD_KIND: &str = "spec.names.kind";

/// The `Kind` of a `group/version/Kind` or `version/Kind` string.
fn short_kind(kind: &str) -> &str {
    kind.rsplit('/').next().unwrap_or(kind)
}

/// The group of a `group/version/Kind` string (empty for the core group).
fn group(kind: &str) -> &str {
    kind.rsplitn(3, '/').nth(2).unwrap_or("")
}

#[async_trait::async_trait]
impl Spec for KubernetesSpec {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Kubernetes
    }

    fn body_shape(&self) -> BodyShape {
        BodyShape::Manifest
    }

    fn configured(&self, target: &EnvTarget) -> bool {
        target.kubernetes.is_some()
    }

    async fn connect(&self, target: &EnvTarget) -> Result<Box<dyn Provider>> {
        Ok(Box::new(Kubernetes::connect(target).await?))
    }

    fn has_attribute(&self, _kind: &str, body: &Value, attr: &str) -> bool {
        matches!(attr, NAME | NAMESPACE | "metadata.uid")
            || crate::expr::lookup(body, &attr.split('.').collect::<Vec<_>>()).is_some()
    }

    fn attributes_hint(&self, _kind: &str) -> String {
        "metadata.name, metadata.namespace, metadata.uid or a path in the manifest".into()
    }

    fn order_fields(&self, kind: &str) -> &'static [&'static str] {
        match short_kind(kind) {
            "CustomResourceDefinition" => &[NAME, NAMESPACE, CRD_GROUP, CRD_KIND],
            _ => &[NAME, NAMESPACE],
        }
    }

    fn arrange(&self, declared: &[Declared]) -> Arrangement {
        let mut out = Arrangement::default();
        let mut namespaces: HashMap<&str, &Declared> = HashMap::new();
        let mut crds: HashMap<(&str, &str), &Declared> = HashMap::new();
        let mut identities: BTreeMap<(&str, &str, &str), &Declared> = BTreeMap::new();
        for d in declared {
            let field = |p: &str| d.fields.get(p).map(String::as_str);
            match short_kind(&d.kind) {
                "Namespace" => {
                    if let Some(n) = field(NAME) {
                        namespaces.insert(n, d);
                        out.placement.insert(d.id.clone(), n.to_string());
                    }
                }
                "CustomResourceDefinition" => {
                    if let (Some(g), Some(k)) = (field(CRD_GROUP), field(CRD_KIND)) {
                        crds.insert((g, k), d);
                    }
                }
                // A Secret without a namespace lands in `default`.
                "Secret" => {
                    let ns = field(NAMESPACE).unwrap_or("default");
                    out.placement.insert(d.id.clone(), ns.to_string());
                }
                _ => {
                    if let Some(ns) = field(NAMESPACE) {
                        out.placement.insert(d.id.clone(), ns.to_string());
                    }
                }
            }
            if let Some(name) = field(NAME) {
                let key = (d.kind.as_str(), field(NAMESPACE).unwrap_or(""), name);
                match identities.get(&key) {
                    Some(first) => {
                        let object = match key.1 {
                            "" => format!("{} {}", key.0, key.2),
                            ns => format!("{} {ns}/{}", key.0, key.2),
                        };
                        out.clashes.push((first.id.clone(), d.id.clone(), object));
                    }
                    None => {
                        identities.insert(key, d);
                    }
                }
            }
        }
        for d in declared {
            let ns = d.fields.get(NAMESPACE).map(String::as_str);
            if let Some(owner) = ns.and_then(|n| namespaces.get(n)) {
                if owner.id != d.id {
                    out.edges.push(ImplicitEdge {
                        from: owner.id.clone(),
                        to: d.id.clone(),
                        why: Implied::Inside,
                    });
                }
            }
            if let Some(crd) = crds.get(&(group(&d.kind), short_kind(&d.kind))) {
                if crd.id != d.id {
                    out.edges.push(ImplicitEdge {
                        from: crd.id.clone(),
                        to: d.id.clone(),
                        why: Implied::DefinesKind,
                    });
                }
            }
        }
        out
    }

    fn replace_reasons(&self, _kind: &str, _before: &Value, _after: &Value) -> Vec<String> {
        Vec::new()
    }

    fn check_values(&self, _kind: &str, body: &Value) -> Vec<Problem> {
        schema::validate(body, &schema::Crds::default())
    }

    fn check_set(
        &self,
        bodies: &[(&str, &Value)],
        beside: &[(&str, &Value)],
    ) -> Vec<(usize, Problem)> {
        // The kinds declared with the bodies first, then the repository's.
        let crds = schema::Crds::from_objects(
            bodies
                .iter()
                .chain(beside)
                .filter(|(kind, _)| short_kind(kind) == "CustomResourceDefinition")
                .map(|(_, body)| *body),
        );
        bodies
            .iter()
            .enumerate()
            .flat_map(|(i, (_, body))| {
                schema::validate(body, &crds)
                    .into_iter()
                    .map(move |p| (i, p))
            })
            .collect()
    }

    fn delete_wave(&self, kind: &str) -> u8 {
        // Workloads before their Namespace, custom resources before the
        // definition of their kind.
        match short_kind(kind) {
            "Namespace" => 7,
            "CustomResourceDefinition" => 8,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ResourceId;

    fn declared(name: &str, kind: &str, fields: &[(&'static str, &str)]) -> Declared {
        Declared {
            id: ResourceId {
                module: "m".into(),
                name: name.into(),
            },
            kind: kind.into(),
            fields: fields.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        }
    }

    #[test]
    fn objects_come_after_their_namespace_and_the_definition_of_their_kind() {
        let all = [
            declared("ns", "v1/Namespace", &[(NAME, "app")]),
            declared("cm", "v1/ConfigMap", &[(NAME, "c"), (NAMESPACE, "app")]),
            declared("s", "v1/Secret", &[(NAME, "s")]),
            declared(
                "crd",
                "apiextensions.k8s.io/v1/CustomResourceDefinition",
                &[
                    (NAME, "widgets.example.com"),
                    (CRD_GROUP, "example.com"),
                    (CRD_KIND, "Widget"),
                ],
            ),
            declared(
                "w",
                "example.com/v1/Widget",
                &[(NAME, "w"), (NAMESPACE, "app")],
            ),
            declared("again", "v1/ConfigMap", &[(NAME, "c"), (NAMESPACE, "app")]),
        ];
        let a = KubernetesSpec.arrange(&all);
        let id = |n: &str| all.iter().find(|d| d.id.name == n).unwrap().id.clone();
        assert_eq!(a.placement[&id("ns")], "app");
        assert_eq!(a.placement[&id("cm")], "app");
        assert_eq!(a.placement[&id("s")], "default");
        assert!(!a.placement.contains_key(&id("crd")));
        let edge = |from: &str, to: &str, why| ImplicitEdge {
            from: id(from),
            to: id(to),
            why,
        };
        assert!(a.edges.contains(&edge("ns", "cm", Implied::Inside)));
        assert!(a.edges.contains(&edge("ns", "w", Implied::Inside)));
        assert!(a.edges.contains(&edge("crd", "w", Implied::DefinesKind)));
        assert!(!a.edges.iter().any(|e| e.to == id("s")));
        assert_eq!(
            a.clashes,
            [(id("cm"), id("again"), "v1/ConfigMap app/c".to_string())]
        );
    }
}
