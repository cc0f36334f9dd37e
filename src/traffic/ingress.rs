//! An Ingress entry point in Kubernetes, owned by the switch (never by a
//! copy): in the entry point's namespace,
//! - one ExternalName Service per copy (`<name>-<copy>`) pointing at that
//!   copy's Service (`<svc>.<ns>.svc.cluster.local`), because an Ingress
//!   backend must live in the Ingress' own namespace;
//! - the primary Ingress `<name>` for the host, backed by the live copy;
//! - during a stepped switch, the canary Ingress `<name>-canary` for the
//!   same host, backed by the new copy, with ingress-nginx's
//!   `nginx.ingress.kubernetes.io/canary: "true"` and `canary-weight`.
//!
//! Everything is written with server-side apply under the field manager
//! `tidegate-switch` and labelled `app.kubernetes.io/managed-by: tidegate`
//! and `tidegate.dev/traffic: <env>.<entry>`, but never with the
//! `tidegate.dev/environment` mark, so no copy's observe, prune or
//! rebuild ever sees or deletes it.

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{json, Value as J};

use super::plan::{backend_name, canary_name};
use super::{Error, Result};
use crate::model::IngressEntry;
use crate::provider::labels;

/// The field manager of the switch's objects.
pub const FIELD_MANAGER: &str = "tidegate-switch";
/// The label naming the entry point an object serves (`<env>.<entry>`).
pub const TRAFFIC_LABEL: &str = "tidegate.dev/traffic";
/// ingress-nginx: this Ingress is a canary of the one with the same host.
pub const CANARY: &str = "nginx.ingress.kubernetes.io/canary";
/// ingress-nginx: the percentage of requests the canary gets.
pub const CANARY_WEIGHT: &str = "nginx.ingress.kubernetes.io/canary-weight";

/// A copy's Service as the entry point reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub copy: String,
    pub namespace: String,
    pub service: String,
}

/// The entry point's objects.
pub struct Entry<'a> {
    pub client: &'a kube::Client,
    pub project: &'a str,
    /// `<env>.<entry name>`.
    pub label: String,
    pub spec: &'a IngressEntry,
}

fn kube_err(operation: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { operation, source }
}

impl Entry<'_> {
    fn labels(&self) -> J {
        json!({
            labels::MANAGED_BY: labels::MANAGER,
            labels::PROJECT: self.project,
            TRAFFIC_LABEL: self.label,
        })
    }

    fn pp() -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }

    /// Sends all the host's traffic to `b` (the canary aside).
    pub async fn primary(&self, b: &Backend) -> Result<()> {
        self.ensure_namespace().await?;
        self.backend(b).await?;
        self.ingress(&self.spec.name, b, None).await
    }

    /// Gives `b` `weight` percent of the host's traffic.
    pub async fn canary(&self, b: &Backend, weight: u8) -> Result<()> {
        self.ensure_namespace().await?;
        self.backend(b).await?;
        self.ingress(&canary_name(&self.spec.name), b, Some(weight))
            .await
    }

    /// The backend Service of the Ingress `name` (the primary or the
    /// canary), with its canary weight; `None` when it does not exist.
    pub async fn read(&self, name: &str) -> Result<Option<(String, Option<u8>)>> {
        let ns = &self.spec.namespace;
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), ns);
        let Some(i) = api
            .get_opt(name)
            .await
            .map_err(kube_err(format!("read ingress {ns}/{name}")))?
        else {
            return Ok(None);
        };
        let backend = i
            .spec
            .as_ref()
            .and_then(|s| s.rules.as_ref())
            .and_then(|r| r.first())
            .and_then(|r| r.http.as_ref())
            .and_then(|h| h.paths.first())
            .and_then(|p| p.backend.service.as_ref())
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let weight = i
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CANARY_WEIGHT))
            .and_then(|w| w.parse().ok());
        Ok(Some((backend, weight)))
    }

    /// Removes the canary Ingress (gone already is fine).
    pub async fn drop_canary(&self) -> Result<()> {
        let ns = &self.spec.namespace;
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), ns);
        let name = canary_name(&self.spec.name);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(kube_err(format!("delete ingress {ns}/{name}"))(e)),
        }
    }

    async fn ensure_namespace(&self) -> Result<()> {
        let ns = &self.spec.namespace;
        let api: Api<Namespace> = Api::all(self.client.clone());
        if api
            .get_opt(ns)
            .await
            .map_err(kube_err(format!("read namespace {ns}")))?
            .is_some()
        {
            return Ok(());
        }
        let body = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": self.labels()},
        });
        api.patch(ns, &Self::pp(), &Patch::Apply(&body))
            .await
            .map_err(kube_err(format!("create namespace {ns}")))?;
        Ok(())
    }

    async fn backend(&self, b: &Backend) -> Result<()> {
        let ns = &self.spec.namespace;
        let name = backend_name(&self.spec.name, &b.copy);
        let body = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": self.labels()},
            "spec": {
                "type": "ExternalName",
                "externalName": format!("{}.{}.svc.cluster.local", b.service, b.namespace),
                "ports": [{"name": "http", "port": self.spec.port, "protocol": "TCP"}],
            },
        });
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        api.patch(&name, &Self::pp(), &Patch::Apply(&body))
            .await
            .map_err(kube_err(format!("apply service {ns}/{name}")))?;
        Ok(())
    }

    async fn ingress(&self, name: &str, b: &Backend, canary: Option<u8>) -> Result<()> {
        let ns = &self.spec.namespace;
        let mut metadata = json!({"name": name, "namespace": ns, "labels": self.labels()});
        if let Some(w) = canary {
            metadata["annotations"] = json!({CANARY: "true", CANARY_WEIGHT: w.to_string()});
        }
        let mut spec = json!({
            "rules": [{
                "host": self.spec.host,
                "http": {"paths": [{
                    "path": self.spec.path,
                    "pathType": "Prefix",
                    "backend": {"service": {
                        "name": backend_name(&self.spec.name, &b.copy),
                        "port": {"number": self.spec.port},
                    }},
                }]},
            }],
        });
        if let Some(class) = &self.spec.class_name {
            spec["ingressClassName"] = json!(class);
        }
        let body = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": metadata, "spec": spec,
        });
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), ns);
        api.patch(name, &Self::pp(), &Patch::Apply(&body))
            .await
            .map_err(kube_err(format!("apply ingress {ns}/{name}")))?;
        Ok(())
    }
}
