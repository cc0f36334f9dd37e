//! The registry of live previews ([`crate::preview::Entry`], by name),
//! kept beside the records of the environment they copy: a ConfigMap
//! `tidegate-previews-<project>` in [`NAMESPACE`] of its cluster, else
//! `<state-dir>/<project>.previews.json`. Changed like the controls
//! ([`super::control`]): the ConfigMap is replaced only at the
//! resourceVersion read (a conflict reads again), the file under an
//! exclusive lock on `.<project>.previews.lock`; so two `preview up` at
//! once cannot take the same slot or both pass the cap.
//!
//! Also here: forgetting an owner name once its preview is down (its
//! record, controls, Kubernetes inventory and lock file; the audit history
//! stays).

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams};

use super::document::Doc;
use super::{object_name, scoped, Error, RecordStore, Result, NAMESPACE};
use crate::preview::Entry;

/// The live previews, by name.
pub type Registry = BTreeMap<String, Entry>;

fn registry_key(project: &str) -> String {
    if project.is_empty() {
        "default".to_string()
    } else {
        project.to_string()
    }
}

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let p = p.display().to_string();
    move |source| Error::Io { path: p, source }
}

impl RecordStore {
    fn registry_doc(&self) -> Doc {
        Doc {
            kind: "previews",
            data_key: "previews",
            key: registry_key(self.project()),
            label: ("tidegate.dev/previews", "true".to_string()),
        }
    }

    /// The live previews of this store's project (empty when none).
    pub async fn previews(&self) -> Result<Registry> {
        self.read_doc(&self.registry_doc()).await
    }

    /// Changes the registry with `change` (which may refuse with an error
    /// of its own, leaving it as it was) and returns the stored result.
    pub async fn change_previews<E>(
        &self,
        change: impl FnMut(&mut Registry) -> std::result::Result<(), E>,
    ) -> Result<std::result::Result<Registry, E>> {
        self.change_doc(&self.registry_doc(), change).await
    }

    /// Deletes what the store keeps for owner name `owner` besides its
    /// audit history: its record, its controls, its lock file, and (in a
    /// cluster) its Kubernetes inventory. What is already gone is fine.
    pub async fn forget(&self, owner: &str) -> Result<()> {
        let key = scoped(self.project(), owner);
        match self {
            RecordStore::File { dir, .. } => {
                for f in [
                    format!("{key}.json"),
                    format!("{key}.controls.json"),
                    format!(".{key}.controls.lock"),
                    format!("{key}.lock"),
                ] {
                    let path = dir.join(f);
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(source) => return Err(io(&path)(source)),
                    }
                }
                Ok(())
            }
            RecordStore::ConfigMap { client, .. } => {
                // Where the Kubernetes provider keeps inventories.
                let inventory = crate::provider::kubernetes::Options::default().inventory_namespace;
                let places = [
                    (NAMESPACE, object_name("state", &key)),
                    (NAMESPACE, object_name("controls", &key)),
                    (inventory.as_str(), object_name("inventory", &key)),
                ];
                for (ns, name) in places {
                    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
                    match api.delete(&name, &DeleteParams::default()).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(source) => {
                            return Err(Error::Kube {
                                operation: format!("delete configmap {ns}/{name}"),
                                source,
                            })
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, slot: u32) -> Entry {
        Entry {
            name: name.into(),
            from: "dev".into(),
            revision: None,
            commit: "abc".into(),
            slot,
            created: "2026-01-01T00:00:00Z".into(),
            expires: "2026-01-01T04:00:00Z".into(),
            branch: None,
            who: "me".into(),
            vars: Default::default(),
            resources: Default::default(),
        }
    }

    #[tokio::test]
    async fn the_file_registry_keeps_changes_and_refusals_leave_it_alone() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = RecordStore::File {
            dir: dir.path().to_path_buf(),
            project: "shop".into(),
        };
        assert!(store.previews().await.unwrap().is_empty());
        let r = store
            .change_previews(|r| -> std::result::Result<(), String> {
                r.insert("a".into(), entry("a", 0));
                Ok(())
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.len(), 1);
        let refused = store
            .change_previews(|r| {
                r.clear();
                Err("no")
            })
            .await
            .unwrap();
        assert_eq!(refused, Err("no"));
        assert_eq!(store.previews().await.unwrap()["a"].slot, 0);
        assert!(dir.path().join("shop.previews.json").exists());

        std::fs::write(dir.path().join("shop.a.json"), "{}").unwrap();
        store.forget("a").await.unwrap();
        store.forget("a").await.unwrap();
        assert!(!dir.path().join("shop.a.json").exists());
    }
}
