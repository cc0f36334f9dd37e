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

use serde::{Deserialize, Serialize};

use super::document::Doc;
use super::{scoped, RecordStore, Result};

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
    fn routing_doc(&self, env: &str) -> Doc {
        Doc {
            kind: "traffic",
            data_key: "routing",
            key: scoped(self.project(), env),
            label: ("tidegate.dev/traffic", env.to_string()),
        }
    }

    /// The routing of `env` (empty when nothing was ever switched).
    pub async fn routing(&self, env: &str) -> Result<Routing> {
        self.read_doc(&self.routing_doc(env)).await
    }

    /// Changes the routing of `env` with `change` (which may refuse,
    /// leaving it as it was) and returns the stored result.
    pub async fn change_routing<E>(
        &self,
        env: &str,
        change: impl FnMut(&mut Routing) -> std::result::Result<(), E>,
    ) -> Result<std::result::Result<Routing, E>> {
        self.change_doc(&self.routing_doc(env), change).await
    }
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
