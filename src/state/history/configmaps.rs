//! The history of an environment in its cluster: bounded, rotating
//! ConfigMaps in `tidegate-system`, appended with JSON merge patches (see
//! the parent module).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

use super::{Entry, Retention, CHUNK_LABEL, HISTORY_LABEL};
use crate::provider::labels;
use crate::state::{ensure_namespace, object_name, Error, Result, NAMESPACE};
/// The history ConfigMaps of one environment.
pub(super) struct Chunks<'a> {
    pub(super) api: Api<ConfigMap>,
    pub(super) client: &'a kube::Client,
    /// `<project>.<env>`.
    pub(super) key: &'a str,
    pub(super) env: &'a str,
    pub(super) project: &'a str,
}

/// One history ConfigMap: its number, name and entries.
struct Chunk {
    n: u64,
    name: String,
    data: BTreeMap<String, String>,
}

fn kube_err(operation: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { operation, source }
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Bytes of entries in a chunk's data (keys and values).
fn bytes(data: &BTreeMap<String, String>) -> usize {
    data.iter().map(|(k, v)| k.len() + v.len()).sum()
}

impl Chunks<'_> {
    fn name(&self, n: u64) -> String {
        format!("{}-{n}", object_name("history", self.key))
    }

    fn selector(&self) -> String {
        format!("{HISTORY_LABEL}={}", self.env)
    }

    /// The chunk number of a ConfigMap named for this environment.
    fn number(&self, name: &str) -> Option<u64> {
        let prefix = format!("{}-", object_name("history", self.key));
        name.strip_prefix(&prefix)?.parse().ok()
    }

    /// The chunks' numbers and names, oldest first, without their data
    /// (a metadata-only list: an append does not download the history).
    async fn names(&self) -> Result<Vec<(u64, String)>> {
        let selector = self.selector();
        let list = self
            .api
            .list_metadata(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_err(format!(
                "list configmaps {NAMESPACE} -l {selector}"
            )))?;
        let mut names: Vec<(u64, String)> = list
            .items
            .into_iter()
            .filter_map(|m| {
                let name = m.metadata.name?;
                Some((self.number(&name)?, name))
            })
            .collect();
        names.sort_unstable();
        Ok(names)
    }

    /// The chunks with their entries, oldest first.
    async fn list(&self) -> Result<Vec<Chunk>> {
        let selector = self.selector();
        let list = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_err(format!(
                "list configmaps {NAMESPACE} -l {selector}"
            )))?;
        let mut chunks: Vec<Chunk> = list
            .items
            .into_iter()
            .filter_map(|cm| {
                let name = cm.metadata.name?;
                Some(Chunk {
                    n: self.number(&name)?,
                    name,
                    data: cm.data.unwrap_or_default(),
                })
            })
            .collect();
        chunks.sort_by_key(|c| c.n);
        Ok(chunks)
    }

    pub(super) async fn read(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for c in self.list().await? {
            for (key, text) in &c.data {
                match serde_json::from_str::<Entry>(text) {
                    Ok(e) => out.push(e),
                    Err(error) => tracing::warn!(
                        configmap = %format!("{NAMESPACE}/{}", c.name),
                        key = %key,
                        %error,
                        "skipping a history value that is not an entry"
                    ),
                }
            }
        }
        Ok(out)
    }

    /// Adds the entry to the newest chunk when it fits, else starts the
    /// next chunk with it and deletes those past the retention.
    pub(super) async fn append(
        &self,
        entry: &Entry,
        text: &str,
        retention: &Retention,
    ) -> Result<()> {
        let key = entry_key(entry);
        let names = self.names().await?;
        let Some((n, name)) = names.last() else {
            ensure_namespace(self.client).await?;
            return self.create(1, &key, text).await;
        };
        let newest = self
            .api
            .get_opt(name)
            .await
            .map_err(kube_err(format!("read configmap {NAMESPACE}/{name}")))?;
        let used = newest.map(|cm| bytes(&cm.data.unwrap_or_default()));
        let fits =
            used.is_some_and(|b| b == 0 || b + key.len() + text.len() <= retention.chunk_bytes);
        if fits && self.add(name, &key, text).await? {
            return Ok(());
        }
        // Full, or deleted since it was listed: start the next one.
        self.create(n + 1, &key, text).await?;
        self.expire(&names, n + 1, retention).await
    }

    /// Adds one key with a JSON merge patch (the other keys untouched);
    /// false when the ConfigMap does not exist.
    async fn add(&self, name: &str, key: &str, text: &str) -> Result<bool> {
        let patch = serde_json::json!({ "data": { key: text } });
        let params = PatchParams {
            field_manager: Some(labels::FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        match self.api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, 404) => Ok(false),
            Err(e) => Err(kube_err(format!("append to configmap {NAMESPACE}/{name}"))(
                e,
            )),
        }
    }

    /// Creates chunk `n` holding the entry; when another writer created it
    /// first, adds the entry to theirs.
    async fn create(&self, n: u64, key: &str, text: &str) -> Result<()> {
        let name = self.name(n);
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "labels": {
                    labels::MANAGED_BY: labels::MANAGER,
                    labels::PROJECT: self.project,
                    HISTORY_LABEL: self.env,
                    CHUNK_LABEL: n.to_string(),
                },
            },
            "data": { key: text },
        }))
        .expect("a valid ConfigMap");
        let params = PostParams {
            field_manager: Some(labels::FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        match self.api.create(&params, &cm).await {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, 409) => {
                if self.add(&name, key, text).await? {
                    Ok(())
                } else {
                    Err(kube_err(format!("create configmap {NAMESPACE}/{name}"))(e))
                }
            }
            Err(e) => Err(kube_err(format!("create configmap {NAMESPACE}/{name}"))(e)),
        }
    }

    /// Deletes the chunks that fall out of the retention once `newest`
    /// exists.
    async fn expire(
        &self,
        listed: &[(u64, String)],
        newest: u64,
        retention: &Retention,
    ) -> Result<()> {
        let keep = retention.chunks.max(2);
        for (_, name) in listed.iter().filter(|(n, _)| n + keep <= newest) {
            match self.api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_code(&e, 404) => {}
                Err(e) => {
                    return Err(kube_err(format!(
                        "delete configmap {NAMESPACE}/{name} (history rotation)"
                    ))(e))
                }
            }
        }
        Ok(())
    }
}

/// A data key no other writer picks: the entry's time in nanoseconds
/// (so keys sort by time) and 32 random bits.
fn entry_key(entry: &Entry) -> String {
    let nanos = entry
        .timestamp()
        .unwrap_or_else(Timestamp::now)
        .as_nanosecond();
    format!("{nanos:020}-{:08x}", rand::random::<u32>())
}
