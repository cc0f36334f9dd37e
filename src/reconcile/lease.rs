//! Leader election per environment with `coordination.k8s.io/v1` Leases.
//!
//! One Lease per environment, `tidegate-leader-<env>`, so several replicas
//! split the environments and two never apply the same one. The holder
//! renews every `renew_every`; another replica takes a Lease over only when
//! its `renewTime + leaseDurationSeconds` has passed, and every write is an
//! update guarded by `resourceVersion`, so of two replicas racing for the
//! same Lease exactly one wins (the other gets 409 Conflict). A replica that
//! fails to renew gives the environment up at once, well before anyone else
//! may take it (`renew_every` < `duration`).
//!
//! The holder also publishes on its Lease, as annotations, the last commit
//! the environment converged at and whether it is healthy, which is what the
//! other replicas need for the promotion gates of the environments they hold.
//!
//! Written on kube's `Api<Lease>` rather than the kube-lease-manager crate:
//! its current release (0.12) depends on kube 4 / k8s-openapi 0.28, and this
//! crate is on kube 5 / k8s-openapi 0.29, whose `Lease` types differ.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::{mpsc, watch};

use super::machine::Event;
use crate::state::lease_expired;

/// Annotation: the last commit converged and healthy in the environment.
pub const LAST_GOOD: &str = "tidegate.dev/last-good-commit";
/// Annotation: `true` when the environment is healthy at that commit.
pub const HEALTHY: &str = "tidegate.dev/healthy";
/// Annotation: since when (RFC 3339) it has been good at that commit (the
/// start of the next environment's soak).
pub const GOOD_SINCE: &str = "tidegate.dev/good-since";

/// Where the Leases live and who this replica is.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    /// This replica (the pod name).
    pub identity: String,
    /// How long a Lease stays valid without a renewal.
    pub duration: Duration,
    /// How often the holder renews and others try to acquire.
    pub renew_every: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaseConfig {
            namespace: namespace.into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }
}

/// The Lease name of an environment.
pub fn lease_name(env: &str) -> String {
    format!("tidegate-leader-{env}")
}

/// What this replica publishes for one environment it may hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// The last commit converged and healthy.
    pub last_good: Option<String>,
    pub healthy: bool,
    pub good_since: Option<String>,
    /// A converge is in flight: never given up to rebalance.
    pub busy: bool,
}

/// Per environment, in promotion order.
pub type Publish = Vec<(String, Published)>;

/// Label telling environment Leases from replica (membership) Leases.
const KIND_LABEL: &str = "tidegate.dev/lease";

/// What one acquire/renew found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub held: bool,
    pub holder: Option<String>,
    /// What the holder published.
    pub last_good: Option<String>,
    pub healthy: bool,
    pub good_since: Option<String>,
}

/// The Leases of one replica.
#[derive(Clone)]
pub struct Leases {
    api: Api<Lease>,
    cfg: LeaseConfig,
}

impl Leases {
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Self {
        Leases {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
        }
    }

    /// Acquire or renew `env`'s Lease; when held, publish `publish`.
    pub async fn try_hold(
        &self,
        env: &str,
        publish: Option<&Published>,
    ) -> Result<Observed, kube::Error> {
        self.hold(&lease_name(env), "environment", publish).await
    }

    /// Renew this replica's membership Lease (`tidegate-replica-<identity>`).
    pub async fn heartbeat(&self) -> Result<Observed, kube::Error> {
        self.hold(&self.member_name(), "replica", None).await
    }

    /// How many replicas have a live membership Lease (at least 1: this one).
    pub async fn members(&self) -> Result<usize, kube::Error> {
        let lp = kube::api::ListParams::default().labels(&format!("{KIND_LABEL}=replica"));
        let now = Timestamp::now();
        let live = self
            .api
            .list(&lp)
            .await?
            .items
            .iter()
            .filter(|l| {
                l.spec.as_ref().is_some_and(|s| {
                    s.holder_identity.as_deref().is_some_and(|h| !h.is_empty())
                        && !lease_expired(s, now)
                })
            })
            .count();
        Ok(live.max(1))
    }

    fn member_name(&self) -> String {
        format!("tidegate-replica-{}", self.cfg.identity)
    }

    async fn hold(
        &self,
        name: &str,
        kind: &str,
        publish: Option<&Published>,
    ) -> Result<Observed, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(name).await? else {
            let lease = self.fresh(name, kind, now, publish);
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(l) => Ok(observed(&l, &self.cfg.identity)),
                Err(e) if conflict(&e) => Ok(not_held(None)),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.cfg.identity.as_str());
        if !mine && holder.is_some() && !lease_expired(spec, now) {
            return Ok(observed(&lease, &self.cfg.identity));
        }
        if !mine {
            spec.holder_identity = Some(self.cfg.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(self.cfg.duration.as_secs() as i32);
        spec.renew_time = Some(MicroTime(now));
        annotate(&mut lease.metadata, publish);
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(l) => Ok(observed(&l, &self.cfg.identity)),
            Err(e) if conflict(&e) => Ok(not_held(holder)),
            Err(e) => Err(e),
        }
    }

    /// Give `env`'s Lease up if this replica holds it, keeping what was
    /// published so the next holder starts from it.
    pub async fn release(
        &self,
        env: &str,
        publish: Option<&Published>,
    ) -> Result<bool, kube::Error> {
        self.release_name(&lease_name(env), publish).await
    }

    async fn release_name(
        &self,
        name: &str,
        publish: Option<&Published>,
    ) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(name).await? else {
            return Ok(false);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        annotate(&mut lease.metadata, publish);
        self.api
            .replace(name, &PostParams::default(), &lease)
            .await
            .map(|_| true)
    }

    fn fresh(&self, name: &str, kind: &str, now: Timestamp, publish: Option<&Published>) -> Lease {
        let mut metadata = ObjectMeta {
            name: Some(name.into()),
            namespace: Some(self.cfg.namespace.clone()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "tidegate".to_string(),
                ),
                (KIND_LABEL.to_string(), kind.to_string()),
            ])),
            ..ObjectMeta::default()
        };
        annotate(&mut metadata, publish);
        Lease {
            metadata,
            spec: Some(LeaseSpec {
                holder_identity: Some(self.cfg.identity.clone()),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_duration_seconds: Some(self.cfg.duration.as_secs() as i32),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        }
    }
}

fn annotate(meta: &mut ObjectMeta, publish: Option<&Published>) {
    let Some(Published {
        last_good,
        healthy,
        good_since,
        ..
    }) = publish
    else {
        return;
    };
    let a = meta.annotations.get_or_insert_with(BTreeMap::new);
    match last_good {
        Some(c) => a.insert(LAST_GOOD.into(), c.clone()),
        None => a.remove(LAST_GOOD),
    };
    a.insert(HEALTHY.into(), healthy.to_string());
    match good_since {
        Some(t) => a.insert(GOOD_SINCE.into(), t.clone()),
        None => a.remove(GOOD_SINCE),
    };
}

fn observed(lease: &Lease, identity: &str) -> Observed {
    let holder = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty());
    let a = lease.metadata.annotations.as_ref();
    Observed {
        held: holder.as_deref() == Some(identity),
        holder,
        last_good: a.and_then(|a| a.get(LAST_GOOD).cloned()),
        healthy: a.and_then(|a| a.get(HEALTHY)).is_some_and(|h| h == "true"),
        good_since: a.and_then(|a| a.get(GOOD_SINCE).cloned()),
    }
}

fn not_held(holder: Option<String>) -> Observed {
    Observed {
        held: false,
        holder,
        last_good: None,
        healthy: false,
        good_since: None,
    }
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// The lease loop of one replica. Every `renew_every` (and whenever
/// `publish` changes): renew this replica's membership Lease, count the live
/// replicas, and hold a fair share (`ceil(environments / replicas)`) of the
/// environments, in promotion order: renew the ones held up to the share,
/// give up the ones beyond it (unless a converge is in flight), and try to
/// acquire free or expired ones while under it. Changes go to the driver as
/// [`Event::Lease`], what other holders published as [`Event::Peer`]. When
/// `stop` turns true, releases every Lease held (membership included) and
/// returns.
pub async fn run(
    leases: Leases,
    mut publish: watch::Receiver<Publish>,
    events: mpsc::UnboundedSender<Event>,
    mut stop: watch::Receiver<bool>,
) {
    let mut held: BTreeMap<String, bool> = BTreeMap::new();
    let mut ticker = tokio::time::interval(leases.cfg.renew_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let gone = tokio::select! {
            _ = ticker.tick() => false,
            r = publish.changed() => r.is_err(),
            r = stop.changed() => r.is_err(),
        };
        let current = publish.borrow_and_update().clone();
        if gone || *stop.borrow() {
            release_all(&leases, &held, &current).await;
            return;
        }
        if current.is_empty() {
            continue;
        }
        let members = match leases.heartbeat().await.and(leases.members().await) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the lease API; giving every environment up");
                for (env, h) in held.iter_mut().filter(|(_, h)| **h) {
                    *h = false;
                    let _ = events.send(Event::Lease {
                        env: env.clone(),
                        held: false,
                    });
                }
                continue;
            }
        };
        let share = current.len().div_ceil(members);
        let mut holding = 0;
        for (env, mine) in &current {
            let was = held.get(env).copied().unwrap_or(false);
            // `current` was read before this tick's API calls: a converge
            // may have started since. Giving its Lease up would abort it.
            let busy = mine.busy || publish.borrow().iter().any(|(e, p)| e == env && p.busy);
            let now = if was && holding >= share && !busy {
                match leases.release(env, Some(mine)).await {
                    Ok(_) => {
                        tracing::info!(environment = %env, share, members, "lease given up to rebalance")
                    }
                    Err(e) => {
                        tracing::warn!(environment = %env, error = %e, "lease release failed; it expires on its own")
                    }
                }
                false
            } else if was || holding < share {
                hold(&leases, env, mine, &events).await
            } else {
                observe(&leases, env, &events).await;
                false
            };
            holding += usize::from(now);
            if now != was || !held.contains_key(env) {
                tracing::info!(environment = %env, held = now, identity = %leases.cfg.identity, "lease");
                let _ = events.send(Event::Lease {
                    env: env.clone(),
                    held: now,
                });
            }
            held.insert(env.clone(), now);
        }
    }
}

/// Acquire or renew; tells the driver what the holder published when it is
/// someone else.
async fn hold(
    leases: &Leases,
    env: &str,
    mine: &Published,
    events: &mpsc::UnboundedSender<Event>,
) -> bool {
    match leases.try_hold(env, Some(mine)).await {
        Ok(o) => {
            if !o.held {
                peer(env, &o, events);
            }
            o.held
        }
        Err(e) => {
            tracing::warn!(environment = %env, error = %e, "lease renewal failed; giving the environment up");
            false
        }
    }
}

/// Reads what the holder of `env` published, without trying to take it.
async fn observe(leases: &Leases, env: &str, events: &mpsc::UnboundedSender<Event>) {
    match leases.api.get_opt(&lease_name(env)).await {
        Ok(Some(l)) => peer(env, &observed(&l, &leases.cfg.identity), events),
        Ok(None) => {}
        Err(e) => tracing::warn!(environment = %env, error = %e, "cannot read lease"),
    }
}

fn peer(env: &str, o: &Observed, events: &mpsc::UnboundedSender<Event>) {
    let _ = events.send(Event::Peer {
        env: env.to_string(),
        last_good: o.last_good.clone(),
        healthy: o.healthy,
        good_since: o.good_since.clone(),
    });
}

async fn release_all(leases: &Leases, held: &BTreeMap<String, bool>, publish: &Publish) {
    for (env, _) in held.iter().filter(|(_, h)| **h) {
        let mine = publish.iter().find(|(e, _)| e == env).map(|(_, p)| p);
        match leases.release(env, mine).await {
            Ok(_) => tracing::info!(environment = %env, "lease released"),
            Err(e) => {
                tracing::warn!(environment = %env, error = %e, "lease release failed; it expires on its own")
            }
        }
    }
    if let Err(e) = leases.release_name(&leases.member_name(), None).await {
        tracing::warn!(error = %e, "membership lease release failed; it expires on its own");
    }
}
