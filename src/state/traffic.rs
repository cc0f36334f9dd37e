//! Where the routing of an environment's traffic entry points is kept
//! (which copy is live per entry point, a weighted shift under way, the
//! copy before, when and by whom): beside the environment's record, a
//! ConfigMap `tidegate-traffic-<project>.<env>` in [`NAMESPACE`] of its
//! cluster, else `<state-dir>/<project>.<env>.traffic.json`.
//!
//! Written like the controls ([`super::control`]): a ConfigMap is
//! replaced only at the resourceVersion read (a conflict reads again), a
//! file is changed under an exclusive lock on `.<file>.lock`.

use std::collections::BTreeMap;
use std::io::Write;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use serde::{Deserialize, Serialize};

use super::{ensure_namespace, object_name, scoped, Error, RecordStore, Result, NAMESPACE};
use crate::provider::labels;

const KEY: &str = "routing";
const ATTEMPTS: usize = 8;

/// The routing of every entry point of one environment, by entry name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Routing {
    #[serde(default)]
    pub entries: BTreeMap<String, Route>,
}

/// Where one entry point sends its traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// The copy (owner name) receiving the traffic (all of it, less the
    /// canary's share while a stepped switch runs).
    pub live: String,
    /// A stepped switch under way: the copy getting `weight` percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// The copy live before the last completed switch (`--back` goes there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// RFC 3339, UTC, of the last change.
    pub at: String,
    /// Who made the last change.
    pub by: String,
    /// An Elastic IP entry: the allocation id the address has (pinned at
    /// the first switch, so a later change of the environment's own `eip`
    /// never moves the entry point elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// A share of the traffic on its way to another copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Canary {
    pub copy: String,
    /// Percent, 1..=99.
    pub weight: u8,
}

impl Route {
    /// The share of the traffic `copy` gets, in percent.
    pub fn weight_of(&self, copy: &str) -> u8 {
        match &self.canary {
            Some(c) if c.copy == copy => c.weight,
            Some(c) if self.live == copy => 100 - c.weight,
            _ if self.live == copy => 100,
            _ => 0,
        }
    }
}

impl RecordStore {
    /// The routing of `env` (empty when nothing was ever switched).
    pub async fn routing(&self, env: &str) -> Result<Routing> {
        let key = scoped(self.project(), env);
        match self {
            RecordStore::File { dir, .. } => {
                let path = dir.join(format!("{key}.traffic.json"));
                match std::fs::read_to_string(&path) {
                    Ok(text) => parse(&text, &path.display().to_string()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Routing::default()),
                    Err(source) => Err(Error::Io {
                        path: path.display().to_string(),
                        source,
                    }),
                }
            }
            RecordStore::ConfigMap { client, .. } => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
                let name = object_name("traffic", &key);
                let cm = api.get_opt(&name).await.map_err(|source| Error::Kube {
                    operation: format!("read configmap {NAMESPACE}/{name}"),
                    source,
                })?;
                routing_of(cm.as_ref(), &name)
            }
        }
    }

    /// Changes the routing of `env` with `change` (which may refuse,
    /// leaving it as it was) and returns the stored result.
    pub async fn change_routing<E>(
        &self,
        env: &str,
        mut change: impl FnMut(&mut Routing) -> std::result::Result<(), E>,
    ) -> Result<std::result::Result<Routing, E>> {
        let key = scoped(self.project(), env);
        match self {
            RecordStore::File { dir, .. } => {
                let io = |p: &std::path::Path| {
                    let p = p.display().to_string();
                    move |source| Error::Io { path: p, source }
                };
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                let path = dir.join(format!("{key}.traffic.json"));
                let lock_path = dir.join(format!(".{key}.traffic.lock"));
                let lock = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .map_err(io(&lock_path))?;
                lock.lock().map_err(io(&lock_path))?;
                let mut routing = self.routing(env).await?;
                if let Err(e) = change(&mut routing) {
                    return Ok(Err(e));
                }
                let tmp = dir.join(format!(".{key}.traffic.json.tmp"));
                let text = serde_json::to_string_pretty(&routing).expect("routing serialises");
                let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
                f.write_all(text.as_bytes()).map_err(io(&tmp))?;
                f.sync_all().map_err(io(&tmp))?;
                std::fs::rename(&tmp, &path).map_err(io(&path))?;
                drop(lock);
                Ok(Ok(routing))
            }
            RecordStore::ConfigMap { client, project } => {
                ensure_namespace(client).await?;
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
                let name = object_name("traffic", &key);
                for _ in 0..ATTEMPTS {
                    let found = api.get_opt(&name).await.map_err(|source| Error::Kube {
                        operation: format!("read configmap {NAMESPACE}/{name}"),
                        source,
                    })?;
                    let mut routing = routing_of(found.as_ref(), &name)?;
                    if let Err(e) = change(&mut routing) {
                        return Ok(Err(e));
                    }
                    let text = serde_json::to_string_pretty(&routing).expect("routing serialises");
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
                                ("tidegate.dev/traffic".to_string(), env.to_string()),
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
                        Ok(_) => return Ok(Ok(routing)),
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

fn routing_of(cm: Option<&ConfigMap>, name: &str) -> Result<Routing> {
    match cm.and_then(|c| c.data.as_ref()).and_then(|d| d.get(KEY)) {
        Some(text) => parse(text, &format!("configmap {NAMESPACE}/{name}")),
        None => Ok(Routing::default()),
    }
}

fn parse(text: &str, place: &str) -> Result<Routing> {
    serde_json::from_str(text).map_err(|source| Error::Corrupt {
        place: place.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_split_between_live_and_canary() {
        let mut r = Route {
            live: "prod".into(),
            ..Route::default()
        };
        assert_eq!((r.weight_of("prod"), r.weight_of("prod-green")), (100, 0));
        r.canary = Some(Canary {
            copy: "prod-green".into(),
            weight: 30,
        });
        assert_eq!((r.weight_of("prod"), r.weight_of("prod-green")), (70, 30));
    }

    #[tokio::test]
    async fn file_routing_round_trips_and_a_refused_change_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::File {
            dir: dir.path().to_path_buf(),
            project: "shop".into(),
        };
        assert_eq!(store.routing("prod").await.unwrap(), Routing::default());
        store
            .change_routing("prod", |r| {
                r.entries.insert(
                    "web".into(),
                    Route {
                        live: "prod-green".into(),
                        ..Route::default()
                    },
                );
                Ok::<_, String>(())
            })
            .await
            .unwrap()
            .unwrap();
        let refused = store
            .change_routing("prod", |r| {
                r.entries.clear();
                Err("no")
            })
            .await
            .unwrap();
        assert_eq!(refused, Err("no"));
        let r = store.routing("prod").await.unwrap();
        assert_eq!(r.entries["web"].live, "prod-green");
        assert!(dir.path().join("shop.prod.traffic.json").exists());
    }
}
