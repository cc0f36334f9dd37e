//! Pruning: owned live resources Git no longer declares (and duplicates a
//! crash left behind) are deleted after the creates and updates, dependents
//! before what they depend on.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use futures::stream::{self, StreamExt};

use super::{EnvRun, Event, Outcome, ResourceOutcome, Status};
use crate::observe::{LiveState, Observed};
use crate::resource::{ProviderKind, ResourceId};

/// What to delete: owned and not declared, plus every duplicate; not what
/// is being deleted already (a finalizer holds it: deleting it again would
/// change nothing), nor what is kept ([`crate::observe::kept`]: prune
/// disabled, or marked before projects).
pub(super) fn candidates(live: &LiveState, declared: &HashSet<&ResourceId>) -> Vec<Observed> {
    let mut out: Vec<Observed> = live
        .resources
        .iter()
        .filter(|(id, _)| !declared.contains(id))
        .map(|(_, o)| o.clone())
        .collect();
    out.extend(live.duplicates.iter().cloned());
    out.retain(|o| o.live.deleting().is_none() && crate::observe::kept(&o.live).is_none());
    out
}

/// The wave a resource of `kind` is deleted in: lower first. Git no longer
/// declares these, so the graph cannot order them; the order of kinds can
/// (workloads before their Namespace, instances before their subnet,
/// everything in a VPC before the VPC).
pub(super) fn wave(provider: ProviderKind, kind: &str) -> u8 {
    crate::provider::registry::spec(provider).delete_wave(kind)
}

/// Deletes the candidates wave by wave (in parallel within a wave) and
/// returns those still there.
/// Records every candidate as skipped with `why` and keeps it in
/// `remaining` (still owned, so it stays in the inventory).
pub(super) fn skip_all(
    candidates: impl IntoIterator<Item = Observed>,
    why: &str,
    out: &mut Outcome,
    remaining: &mut Vec<Observed>,
) {
    for c in candidates {
        let r = ResourceOutcome::skipped(&c.live.id, &c.live.kind, c.provider, why.to_string());
        out.push(r);
        remaining.push(c);
    }
}

pub(super) async fn delete_all(
    run: &EnvRun<'_>,
    candidates: Vec<Observed>,
    t0: Instant,
    out: &mut Outcome,
) -> Vec<Observed> {
    let mut waves: BTreeMap<u8, Vec<Observed>> = BTreeMap::new();
    for c in candidates {
        waves
            .entry(wave(c.provider, &c.live.kind))
            .or_default()
            .push(c);
    }
    let mut remaining = Vec::new();
    for (_, wave) in waves {
        if run.stopped() {
            skip_all(
                wave,
                "stopped before it started (signal)",
                out,
                &mut remaining,
            );
            continue;
        }
        // Futures collected before they are streamed, so the caller's future
        // stays provably `Send` (the reconciler spawns it).
        let deletes: Vec<_> = wave
            .into_iter()
            .map(|c| async move {
                run.emit(Event::Started {
                    id: c.live.id.clone(),
                });
                let started = t0.elapsed();
                let t = Instant::now();
                let (status, reason) = match run.providers.get(c.provider) {
                    Some(p) => match p.delete(&c.live).await {
                        Ok(()) => (Status::Deleted, format!("pruned {}", c.live.external_id)),
                        Err(e) => (Status::Failed, format!("delete: {e}")),
                    },
                    None => (
                        Status::Failed,
                        format!("no {} provider connected", c.provider),
                    ),
                };
                let r = ResourceOutcome {
                    id: c.live.id.clone(),
                    kind: c.live.kind.clone(),
                    provider: c.provider,
                    status,
                    started,
                    duration: t.elapsed(),
                    reason,
                };
                (c, r)
            })
            .collect();
        let results: Vec<(Observed, ResourceOutcome)> = stream::iter(deletes)
            .buffer_unordered(run.options.parallelism.max(1))
            .collect()
            .await;
        for (c, r) in results {
            run.emit(Event::Finished(r.clone()));
            if r.status != Status::Deleted {
                remaining.push(c);
            }
            out.push(r);
        }
    }
    remaining
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependents_are_deleted_before_what_they_live_in() {
        let k = ProviderKind::Kubernetes;
        let a = ProviderKind::Aws;
        assert!(wave(k, "apps/v1/Deployment") < wave(k, "v1/Namespace"));
        assert!(
            wave(k, "v1/Namespace") < wave(k, "apiextensions.k8s.io/v1/CustomResourceDefinition")
        );
        assert!(wave(a, "instance") < wave(a, "subnet"));
        assert!(wave(a, "instance") < wave(a, "security_group"));
        assert!(wave(a, "subnet") < wave(a, "vpc"));
        assert!(wave(a, "internet_gateway") < wave(a, "vpc"));
        assert!(wave(a, "eip") < wave(a, "instance"));
    }
}
