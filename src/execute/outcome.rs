//! What a run did, resource by resource, and the figures derived from it
//! (critical path for the RTO report).

use std::collections::HashMap;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::graph::Graph;
use crate::resource::{ProviderKind, ResourceId};

/// What happened to one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Updated,
    Replaced,
    Deleted,
    Unchanged,
    Failed,
    Skipped,
}

impl Status {
    /// True unless failed or skipped.
    pub fn is_success(self) -> bool {
        !matches!(self, Status::Failed | Status::Skipped)
    }

    /// True when the run changed something live.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Status::Created | Status::Updated | Status::Replaced | Status::Deleted
        )
    }

    /// The word printed in summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Updated => "updated",
            Status::Replaced => "replaced",
            Status::Deleted => "deleted",
            Status::Unchanged => "unchanged",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One resource's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceOutcome {
    #[serde(serialize_with = "display")]
    pub id: ResourceId,
    pub kind: String,
    pub provider: ProviderKind,
    pub status: Status,
    /// When work on it started, from the start of the run.
    #[serde(rename = "startedMs", serialize_with = "millis")]
    pub started: Duration,
    /// Plan, apply and health wait together.
    #[serde(rename = "durationMs", serialize_with = "millis")]
    pub duration: Duration,
    /// Why it failed, was skipped or replaced; empty otherwise.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

fn display<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl ResourceOutcome {
    fn without_work(
        id: &ResourceId,
        kind: &str,
        provider: ProviderKind,
        status: Status,
        reason: String,
    ) -> Self {
        ResourceOutcome {
            id: id.clone(),
            kind: kind.to_string(),
            provider,
            status,
            started: Duration::ZERO,
            duration: Duration::ZERO,
            reason,
        }
    }

    /// Not attempted, for `reason`.
    pub fn skipped(id: &ResourceId, kind: &str, provider: ProviderKind, reason: String) -> Self {
        Self::without_work(id, kind, provider, Status::Skipped, reason)
    }

    /// Failed before any call, for `reason`.
    pub fn failed(id: &ResourceId, kind: &str, provider: ProviderKind, reason: String) -> Self {
        Self::without_work(id, kind, provider, Status::Failed, reason)
    }
}

/// The result of one [`super::run_env`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub environment: String,
    /// The owner name written into ownership marks.
    pub owner: String,
    /// Every declared resource and every prune candidate, in finishing order.
    pub resources: Vec<ResourceOutcome>,
    /// Wall time of the run, observe included.
    #[serde(rename = "durationMs", serialize_with = "millis")]
    pub duration: Duration,
    /// True when a stop was requested during the run.
    pub stopped: bool,
    /// Problems that did not fail a resource (an inventory not recorded).
    pub warnings: Vec<String>,
}

impl Outcome {
    pub(super) fn new(environment: &str, owner: &str) -> Self {
        Outcome {
            environment: environment.to_string(),
            owner: owner.to_string(),
            ..Outcome::default()
        }
    }

    pub(super) fn push(&mut self, r: ResourceOutcome) {
        self.resources.push(r);
    }

    /// True when every resource succeeded and nothing was stopped: the
    /// environment is as Git declares it (and healthy, when the run waited
    /// for health).
    pub fn converged(&self) -> bool {
        !self.stopped && self.resources.iter().all(|r| r.status.is_success())
    }

    /// How many resources ended with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.resources.iter().filter(|r| r.status == status).count()
    }

    /// True when something live was changed.
    pub fn wrote(&self) -> bool {
        self.resources.iter().any(|r| r.status.is_write())
    }

    /// The outcome of resource `id` (the last one, if pruned duplicates
    /// share it).
    pub fn get(&self, id: &ResourceId) -> Option<&ResourceOutcome> {
        self.resources.iter().find(|r| &r.id == id)
    }

    /// One line: `3 created, 1 updated, 10 unchanged`.
    pub fn counts_line(&self) -> String {
        let all = [
            Status::Created,
            Status::Updated,
            Status::Replaced,
            Status::Deleted,
            Status::Unchanged,
            Status::Failed,
            Status::Skipped,
        ];
        let parts: Vec<String> = all
            .iter()
            .filter_map(|s| {
                let n = self.count(*s);
                (n > 0).then(|| format!("{n} {s}"))
            })
            .collect();
        if parts.is_empty() {
            "nothing to do".into()
        } else {
            parts.join(", ")
        }
    }

    /// The lower bound of the run's duration with unlimited parallelism: the
    /// longest chain of dependent resources, each counted with its own
    /// duration (plan, apply, health). Resources not in `graph` (pruned ones)
    /// are left out.
    pub fn critical_path(&self, graph: &Graph, env: &str) -> Duration {
        let durations: HashMap<&ResourceId, Duration> =
            self.resources.iter().map(|r| (&r.id, r.duration)).collect();
        let mut finish: HashMap<ResourceId, Duration> = HashMap::new();
        let mut longest = Duration::ZERO;
        for id in graph.levels(env).into_iter().flatten() {
            let before = graph
                .dependencies(env, &id)
                .iter()
                .filter_map(|d| finish.get(d).copied())
                .max()
                .unwrap_or_default();
            let f = before + durations.get(&id).copied().unwrap_or_default();
            longest = longest.max(f);
            finish.insert(id, f);
        }
        longest
    }
}
