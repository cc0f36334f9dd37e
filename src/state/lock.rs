//! One apply per environment at a time: a Kubernetes Lease
//! `tidegate-lock-<env>` in the environment's cluster, or an flock-ed file
//! `<state-dir>/<env>.lock` in CLI-only setups.
//!
//! # Guarantees
//! - A second apply of the same environment fails at once with
//!   [`Error::Locked`] naming the holder and since when.
//! - A holder killed with SIGKILL does not block the next run: the kernel
//!   drops an flock with its process; a lease whose holder is a process of
//!   this host that no longer exists is taken over, and any other lease
//!   expires `lease_duration` after its last renewal (renewed every third of
//!   it while held).

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};

use super::{ensure_namespace, object_name, Error, Result, NAMESPACE};
use crate::resource::KubeTarget;

/// This process as a lock holder: `tidegate@<host> pid <pid>`.
pub fn this_process() -> String {
    format!("tidegate@{} pid {}", hostname(), std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// True when `identity` names a process of this host that has exited.
fn is_dead_local_process(identity: &str) -> bool {
    let Some(rest) = identity.strip_prefix("tidegate@") else {
        return false;
    };
    let Some((host, pid)) = rest.split_once(" pid ") else {
        return false;
    };
    let Ok(pid) = pid.trim().parse::<u32>() else {
        return false;
    };
    host == hostname() && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// A held lock; released by [`EnvLock::release`] (or, for files, on drop
/// and process exit).
pub enum EnvLock {
    File {
        file: std::fs::File,
        path: PathBuf,
    },
    Lease {
        client: kube::Client,
        name: String,
        identity: String,
        renew: Renewal,
    },
}

/// The background renewal of a held Lease. It stops when the lock is
/// released, and also when the lock is dropped without a release: the
/// converge holding it was aborted (the reconciler lost the environment's
/// leader Lease, or is stopping), so the lock expires `lease_duration`
/// after its last renewal, like a dead holder's. Before, a dropped
/// `JoinHandle` only detached the task, which went on renewing for as long
/// as the process lived and kept the environment locked for every other
/// replica.
pub struct Renewal(tokio::task::JoinHandle<()>);

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for EnvLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvLock::File { path, .. } => write!(f, "EnvLock::File({})", path.display()),
            EnvLock::Lease { name, .. } => write!(f, "EnvLock::Lease({NAMESPACE}/{name})"),
        }
    }
}

/// How long a lease lasts without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(60);

impl EnvLock {
    /// Locks environment `env` (`<project>.<owner name>`, see
    /// [`super::scoped`]): a Lease in its cluster when `kube` is set, else a
    /// file under `state_dir`.
    pub async fn acquire(
        kube: Option<&KubeTarget>,
        state_dir: &Path,
        env: &str,
        identity: &str,
    ) -> Result<EnvLock> {
        match kube {
            Some(k) => {
                let client = super::kube_client(k).await?;
                Self::lease(client, env, identity, LEASE_DURATION).await
            }
            None => Self::file(state_dir, env, identity),
        }
    }

    /// An flock on `<dir>/<env>.lock`, holding the holder's identity and
    /// since when.
    pub fn file(dir: &Path, env: &str, identity: &str) -> Result<EnvLock> {
        let path = dir.join(format!("{env}.lock"));
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let mut lines = text.lines();
                return Err(Error::Locked {
                    environment: env.to_string(),
                    holder: lines.next().unwrap_or("an unknown process").to_string(),
                    since: lines.next().unwrap_or("an unknown time").to_string(),
                    place: format!("lock file {}", path.display()),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{identity}\n{}", super::now_rfc3339()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(EnvLock::File { file, path })
    }

    /// The Lease `tidegate-lock-<env>` in [`NAMESPACE`], renewed in the
    /// background while held.
    pub async fn lease(
        client: kube::Client,
        env: &str,
        identity: &str,
        duration: Duration,
    ) -> Result<EnvLock> {
        ensure_namespace(&client).await?;
        let name = object_name("lock", env);
        let api: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
        let kube_err = |operation: String| move |source| Error::Kube { operation, source };
        let seconds = i32::try_from(duration.as_secs()).unwrap_or(i32::MAX);
        let now = MicroTime(Timestamp::now());
        let ours = LeaseSpec {
            holder_identity: Some(identity.to_string()),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_duration_seconds: Some(seconds),
            ..LeaseSpec::default()
        };
        let existing = api
            .get_opt(&name)
            .await
            .map_err(kube_err(format!("read lease {NAMESPACE}/{name}")))?;
        let taken = match existing {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(NAMESPACE.into()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(ours),
                };
                api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let holder = spec.holder_identity.clone().unwrap_or_default();
                let free = holder.is_empty()
                    || holder == identity
                    || lease_expired(&spec, Timestamp::now())
                    || is_dead_local_process(&holder);
                if !free {
                    return Err(locked(env, &name, &spec));
                }
                lease.spec = Some(ours);
                api.replace(&name, &PostParams::default(), &lease).await
            }
        };
        match taken {
            Ok(_) => {}
            // Someone else created or took it between our read and write.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let now = api
                    .get_opt(&name)
                    .await
                    .map_err(kube_err(format!("read lease {NAMESPACE}/{name}")))?;
                let spec = now.and_then(|l| l.spec).unwrap_or_default();
                return Err(locked(env, &name, &spec));
            }
            Err(e) => return Err(kube_err(format!("take lease {NAMESPACE}/{name}"))(e)),
        }
        let renew = Renewal(tokio::spawn(renew_loop(
            api,
            name.clone(),
            identity.to_string(),
            duration / 3,
        )));
        Ok(EnvLock::Lease {
            client,
            name,
            identity: identity.to_string(),
            renew,
        })
    }

    /// Gives the lock up.
    pub async fn release(self) -> Result<()> {
        match self {
            EnvLock::File { file, path } => {
                let _ = file.set_len(0);
                file.unlock().map_err(|source| Error::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
            EnvLock::Lease {
                client,
                name,
                identity,
                renew,
            } => {
                drop(renew);
                let api: Api<Lease> = Api::namespaced(client, NAMESPACE);
                let current = api.get_opt(&name).await.map_err(|source| Error::Kube {
                    operation: format!("read lease {NAMESPACE}/{name}"),
                    source,
                })?;
                let ours = current
                    .and_then(|l| l.spec)
                    .and_then(|s| s.holder_identity)
                    .is_some_and(|h| h == identity);
                if ours {
                    api.delete(&name, &DeleteParams::default())
                        .await
                        .map_err(|source| Error::Kube {
                            operation: format!("release lease {NAMESPACE}/{name}"),
                            source,
                        })?;
                }
                Ok(())
            }
        }
    }
}

/// The one rule for a Lease's expiry, shared by the apply lock and the
/// reconciler's leader Leases: expired at `now` when it was last renewed
/// (else acquired) `leaseDurationSeconds` or more ago; 15 s (Kubernetes'
/// leader-election default) when the duration is missing; a Lease never
/// renewed nor acquired is expired.
pub fn lease_expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(MicroTime(renewed)) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    now.as_second() >= renewed.as_second().saturating_add(secs)
}

fn locked(env: &str, name: &str, spec: &LeaseSpec) -> Error {
    Error::Locked {
        environment: env.to_string(),
        holder: spec
            .holder_identity
            .clone()
            .unwrap_or_else(|| "an unknown holder".into()),
        since: spec
            .acquire_time
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| "an unknown time".into()),
        place: format!("lease {NAMESPACE}/{name}"),
    }
}

async fn renew_loop(api: Api<Lease>, name: String, identity: String, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Ok(Some(mut lease)) = api.get_opt(&name).await else {
            continue;
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(identity.as_str()) {
            tracing::warn!(lease = %name, "the apply lock was taken over by another holder");
            return;
        }
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        if let Err(e) = api.replace(&name, &PostParams::default(), &lease).await {
            tracing::warn!(lease = %name, error = %e, "renewing the apply lock failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_expiry_rule_for_locks_and_leader_leases() {
        let at = |secs: i64| Some(MicroTime(Timestamp::from_second(secs).unwrap()));
        let now = Timestamp::from_second(1_000).unwrap();
        let spec = |renew, acquire, duration| LeaseSpec {
            renew_time: renew,
            acquire_time: acquire,
            lease_duration_seconds: duration,
            ..LeaseSpec::default()
        };
        assert!(
            lease_expired(&spec(None, None, Some(15)), now),
            "never held"
        );
        assert!(!lease_expired(&spec(at(990), None, Some(15)), now));
        assert!(
            lease_expired(&spec(at(985), None, Some(15)), now),
            "at the bound"
        );
        // Acquired but never renewed: the acquire time counts.
        assert!(!lease_expired(&spec(None, at(990), Some(15)), now));
        // No duration: Kubernetes' 15 s.
        assert!(!lease_expired(&spec(at(990), None, None), now));
        assert!(lease_expired(&spec(at(984), None, None), now));
    }

    #[test]
    fn a_second_file_lock_names_the_holder_and_the_first_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = EnvLock::file(dir.path(), "dev", "tidegate@ci pid 1").unwrap();
        let e = EnvLock::file(dir.path(), "dev", "tidegate@ci pid 2").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("environment dev is locked by tidegate@ci pid 1 since 20"),
            "{msg}"
        );
        assert!(msg.contains("dev.lock"), "{msg}");
        EnvLock::file(dir.path(), "staging", "x").expect("other environments are free");
        futures::executor::block_on(first.release()).unwrap();
        EnvLock::file(dir.path(), "dev", "tidegate@ci pid 2").expect("free after release");
    }

    #[test]
    fn only_exited_processes_of_this_host_are_stale() {
        let me = this_process();
        assert!(!is_dead_local_process(&me));
        let dead = format!("tidegate@{} pid 4000000000", hostname());
        assert!(is_dead_local_process(&dead));
        assert!(!is_dead_local_process("tidegate@elsewhere pid 4000000000"));
        assert!(!is_dead_local_process("reconciler-pod-1"));
    }
}
