//! One JSON document kept beside the environment records, changed by a
//! read-modify-write that cannot lose a concurrent change: a ConfigMap
//! `tidegate-<kind>-<key>` in [`NAMESPACE`] replaced only at the
//! resourceVersion read (a conflict reads again), or the file
//! `<state-dir>/<key>.<kind>.json` changed under an exclusive lock on
//! `.<key>.<kind>.lock` and replaced by a rename. The operators' controls,
//! the blue/green routing and the preview registry are such documents.

use std::collections::BTreeMap;
use std::io::Write;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ensure_namespace, object_name, Error, RecordStore, Result, NAMESPACE};
use crate::provider::labels;

/// Attempts at a ConfigMap change that keeps meeting a conflict.
const ATTEMPTS: usize = 8;

/// Which document.
pub(super) struct Doc {
    /// `controls`, `traffic`, `previews`: the ConfigMap prefix and the
    /// file suffix.
    pub kind: &'static str,
    /// The ConfigMap data key holding the JSON.
    pub data_key: &'static str,
    /// `<project>.<env>` (or the project alone).
    pub key: String,
    /// A label naming what the ConfigMap is about (`tidegate.dev/controls:
    /// <env>`).
    pub label: (&'static str, String),
}

fn io(p: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error {
    let p = p.display().to_string();
    move |source| Error::Io { path: p, source }
}

fn parse<T: DeserializeOwned>(text: &str, place: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|source| Error::Corrupt {
        place: place.to_string(),
        source,
    })
}

impl RecordStore {
    /// The document (its default when it was never written).
    pub(super) async fn read_doc<T: DeserializeOwned + Default>(&self, doc: &Doc) -> Result<T> {
        match self {
            RecordStore::File { dir, .. } => {
                let path = dir.join(format!("{}.{}.json", doc.key, doc.kind));
                match std::fs::read_to_string(&path) {
                    Ok(text) => parse(&text, &path.display().to_string()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
                    Err(source) => Err(io(&path)(source)),
                }
            }
            RecordStore::ConfigMap { client, .. } => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
                let name = object_name(doc.kind, &doc.key);
                let cm = get(&api, &name).await?;
                of(cm.as_ref(), doc, &name)
            }
        }
    }

    /// Changes the document with `change` (which may refuse with an error
    /// of its own, leaving it as it was) and returns the stored result.
    pub(super) async fn change_doc<T, E>(
        &self,
        doc: &Doc,
        mut change: impl FnMut(&mut T) -> std::result::Result<(), E>,
    ) -> Result<std::result::Result<T, E>>
    where
        T: Serialize + DeserializeOwned + Default,
    {
        let (key, kind) = (&doc.key, doc.kind);
        match self {
            RecordStore::File { dir, .. } => {
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                let path = dir.join(format!("{key}.{kind}.json"));
                let lock_path = dir.join(format!(".{key}.{kind}.lock"));
                let lock = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .map_err(io(&lock_path))?;
                lock.lock().map_err(io(&lock_path))?;
                let mut value: T = self.read_doc(doc).await?;
                if let Err(e) = change(&mut value) {
                    return Ok(Err(e));
                }
                let tmp = dir.join(format!(".{key}.{kind}.json.tmp"));
                let text = serde_json::to_string_pretty(&value).expect("a document serialises");
                let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
                f.write_all(text.as_bytes()).map_err(io(&tmp))?;
                f.sync_all().map_err(io(&tmp))?;
                std::fs::rename(&tmp, &path).map_err(io(&path))?;
                drop(lock);
                Ok(Ok(value))
            }
            RecordStore::ConfigMap { client, project } => {
                ensure_namespace(client).await?;
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
                let name = object_name(kind, key);
                for _ in 0..ATTEMPTS {
                    let found = get(&api, &name).await?;
                    let mut value: T = of(found.as_ref(), doc, &name)?;
                    if let Err(e) = change(&mut value) {
                        return Ok(Err(e));
                    }
                    let text = serde_json::to_string_pretty(&value).expect("a document serialises");
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
                                (doc.label.0.to_string(), doc.label.1.clone()),
                            ])),
                            ..ObjectMeta::default()
                        },
                        data: Some(BTreeMap::from([(doc.data_key.to_string(), text)])),
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
                        Ok(_) => return Ok(Ok(value)),
                        // Someone else changed (or created) it since the
                        // read: read again and apply the change to theirs.
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
}

async fn get(api: &Api<ConfigMap>, name: &str) -> Result<Option<ConfigMap>> {
    api.get_opt(name).await.map_err(|source| Error::Kube {
        operation: format!("read configmap {NAMESPACE}/{name}"),
        source,
    })
}

fn of<T: DeserializeOwned + Default>(cm: Option<&ConfigMap>, doc: &Doc, name: &str) -> Result<T> {
    match cm
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.get(doc.data_key))
    {
        Some(text) => parse(text, &format!("configmap {NAMESPACE}/{name}")),
        None => Ok(T::default()),
    }
}
