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
use std::io::Write;
use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

use super::{ensure_namespace, object_name, scoped, Error, RecordStore, Result, NAMESPACE};
use crate::preview::Entry;
use crate::provider::labels;

/// The live previews, by name.
pub type Registry = BTreeMap<String, Entry>;

const KEY: &str = "previews";

/// Attempts at a ConfigMap change that keeps meeting a conflict.
const ATTEMPTS: usize = 8;

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
    /// The live previews of this store's project (empty when none).
    pub async fn previews(&self) -> Result<Registry> {
        let key = registry_key(self.project());
        match self {
            RecordStore::File { dir, .. } => {
                let path = dir.join(format!("{key}.previews.json"));
                match std::fs::read_to_string(&path) {
                    Ok(text) => parse(&text, &path.display().to_string()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registry::new()),
                    Err(source) => Err(io(&path)(source)),
                }
            }
            RecordStore::ConfigMap { client, .. } => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
                let name = object_name(KEY, &key);
                let cm = api.get_opt(&name).await.map_err(|source| Error::Kube {
                    operation: format!("read configmap {NAMESPACE}/{name}"),
                    source,
                })?;
                registry_of(cm.as_ref(), &name)
            }
        }
    }

    /// Changes the registry with `change` (which may refuse with an error
    /// of its own, leaving it as it was) and returns the stored result.
    pub async fn change_previews<E>(
        &self,
        mut change: impl FnMut(&mut Registry) -> std::result::Result<(), E>,
    ) -> Result<std::result::Result<Registry, E>> {
        let key = registry_key(self.project());
        match self {
            RecordStore::File { dir, .. } => {
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                let path = dir.join(format!("{key}.previews.json"));
                let lock_path = dir.join(format!(".{key}.previews.lock"));
                let lock = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .map_err(io(&lock_path))?;
                lock.lock().map_err(io(&lock_path))?;
                let mut registry = self.previews().await?;
                if let Err(e) = change(&mut registry) {
                    return Ok(Err(e));
                }
                let tmp = dir.join(format!(".{key}.previews.json.tmp"));
                let text = serde_json::to_string_pretty(&registry).expect("a registry serialises");
                let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
                f.write_all(text.as_bytes()).map_err(io(&tmp))?;
                f.sync_all().map_err(io(&tmp))?;
                std::fs::rename(&tmp, &path).map_err(io(&path))?;
                drop(lock);
                Ok(Ok(registry))
            }
            RecordStore::ConfigMap { client, project } => {
                ensure_namespace(client).await?;
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
                let name = object_name(KEY, &key);
                for _ in 0..ATTEMPTS {
                    let found = api.get_opt(&name).await.map_err(|source| Error::Kube {
                        operation: format!("read configmap {NAMESPACE}/{name}"),
                        source,
                    })?;
                    let mut registry = registry_of(found.as_ref(), &name)?;
                    if let Err(e) = change(&mut registry) {
                        return Ok(Err(e));
                    }
                    let text =
                        serde_json::to_string_pretty(&registry).expect("a registry serialises");
                    let cm = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            namespace: Some(NAMESPACE.into()),
                            resource_version: found
                                .as_ref()
                                .and_then(|c| c.metadata.resource_version.clone()),
                            labels: Some(BTreeMap::from([
                                (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
                                (labels::PROJECT.to_string(), project.clone()),
                                ("tidegate.dev/previews".to_string(), "true".to_string()),
                            ])),
                            ..ObjectMeta::default()
                        },
                        data: Some(BTreeMap::from([(KEY.to_string(), text)])),
                        ..ConfigMap::default()
                    };
                    let pp = PostParams {
                        field_manager: Some(labels::FIELD_MANAGER.into()),
                        ..PostParams::default()
                    };
                    let written = match found {
                        Some(_) => api.replace(&name, &pp, &cm).await,
                        None => api.create(&pp, &cm).await,
                    };
                    match written {
                        Ok(_) => return Ok(Ok(registry)),
                        Err(kube::Error::Api(e)) if e.code == 409 => continue,
                        Err(source) => {
                            return Err(Error::Kube {
                                operation: format!("write configmap {NAMESPACE}/{name}"),
                                source,
                            })
                        }
                    }
                }
                Err(Error::Conflict {
                    place: format!("configmap {NAMESPACE}/{name}"),
                })
            }
        }
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

fn registry_of(cm: Option<&ConfigMap>, name: &str) -> Result<Registry> {
    match cm.and_then(|c| c.data.as_ref()).and_then(|d| d.get(KEY)) {
        Some(text) => parse(text, &format!("configmap {NAMESPACE}/{name}")),
        None => Ok(Registry::new()),
    }
}

fn parse(text: &str, place: &str) -> Result<Registry> {
    serde_json::from_str(text).map_err(|source| Error::Corrupt {
        place: place.to_string(),
        source,
    })
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
