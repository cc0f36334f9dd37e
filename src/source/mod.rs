//! The Git edge of the pipeline: turns a remote repository into in-memory
//! [`Snapshot`]s the loader reads, without a working directory.
//!
//! # Expected flow
//! [`Source::open`] opens (or creates, or re-creates when corrupt) a bare
//! cache on disk. Each [`Source::poll`] asks the remote where the tracked ref
//! points (one ls-remote round trip), fetches only when it moved, checks
//! whether the move is a fast-forward, reads the new snapshot, and returns
//! an [`Event`] with the snapshot being served. The CLI reads fixed
//! revisions with [`Source::snapshot_at`] and [`Source::snapshot_pair`].
//!
//! # Guarantees
//! - A poll where nothing moved costs one ref listing: no fetch, no tree read.
//! - An unreachable remote never loses the last good snapshot; it is served
//!   while the poll backs off exponentially.
//! - A force-push is always reported; it is followed or refused per
//!   [`ForcePush`].
//! - Memory is bounded by the configured paths ([`ReadLimits`]).
//!
//! # Errors
//! Network failures during [`Source::poll`] are events, not errors; errors are
//! local failures (cache, object store, configuration).

pub mod cache;
pub mod credentials;
pub mod poll;
pub mod signature;
pub mod snapshot;
pub mod url;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use git2::Oid;

pub use cache::{Cache, RemoteTip};
pub use credentials::{Credentials, HttpsAuth, SecretFrom, SshAuth};
pub use poll::{step, Backoff, Event, ForcePush, Observation, State};
pub use signature::{
    verify_in_repo, SignaturePolicy, TrustList, TrustedPgpKey, TrustedSshKey, Verification,
};
pub use snapshot::{CommitMeta, Files, ReadLimits, Snapshot, TreeCache, DEFAULT_PATHS};
pub use url::{redact as redact_url, split_credentials, UrlCredentials};

/// Everything that can fail in the Git source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cache directory cannot be created or opened as a bare repository.
    #[error("cannot open git cache {path}: {source}")]
    OpenCache {
        path: String,
        #[source]
        source: git2::Error,
    },
    /// A corrupt cache directory cannot be deleted before cloning again.
    #[error("cannot delete corrupt git cache {path}: {source}")]
    ResetCache {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The remote cannot be reached, listed or fetched from.
    #[error("git remote {url} is unreachable: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: git2::Error,
    },
    /// The remote does not advertise the tracked branch or tag.
    #[error("git remote {url} has no branch or tag {reference:?}: check the configured reference")]
    RefNotFound { reference: String, url: String },
    /// A revision given on the command line names no commit in the repository.
    #[error("revision {revision:?} names no commit in {repo}: {reason} (give a branch, tag, commit id or any revision git accepts: HEAD, main~1, origin/main, v1.2)")]
    UnknownRevision {
        revision: String,
        /// The repository (path or URL) it was looked up in.
        repo: String,
        /// libgit2's reason, without its class and code.
        reason: String,
    },
    /// `--repo` names no Git repository (a revision was asked of it).
    #[error("{path} is not in a Git repository ({reason}); --revision and file:// URLs read a Git repository: a checkout, a folder inside one, or a bare repository")]
    NotARepository { path: String, reason: String },
    /// A commit or its tree cannot be read from the object store.
    #[error("cannot read commit {commit}: {source}")]
    ReadCommit {
        commit: String,
        #[source]
        source: git2::Error,
    },
    /// A file or directory in a commit cannot be read from the object store.
    #[error("cannot read {path} from the git object store: {source}")]
    ReadPath {
        path: String,
        #[source]
        source: git2::Error,
    },
    /// A symbolic link in a commit leads out of the repository (an
    /// absolute target, or `..` past its top folder).
    #[error("{path} is a symbolic link to {target}, outside the repository: tidegate reads only what the repository holds; commit the file itself, or point the link inside the repository")]
    LinkOutside { path: String, target: String },
    /// A folder link in a commit leads back into a folder that holds it, or
    /// links chain more than 40 times.
    #[error("{path} is a symbolic link to {target}, which loops back into a folder that holds it; remove the link or point it elsewhere in the repository")]
    LinkLoop { path: String, target: String },
    /// A symbolic link to a file tidegate reads (YAML, JSON) leads nowhere
    /// in the commit.
    #[error("{path} is a symbolic link to {target}, which the commit does not hold; commit the target or remove the link")]
    LinkDangling { path: String, target: String },
    /// The files under the read paths exceed the configured byte limit.
    #[error("{path}: the files tidegate reads exceed the size limit; narrow the read paths or raise the limit")]
    TooLarge { path: String },
    /// libgit2 rejected the credentials built from the configuration.
    #[error("cannot build git credentials: {0}")]
    Credentials(#[source] git2::Error),
    /// The remote asks for a kind of credential that is not configured.
    #[error("the remote asks for credentials ({allowed}) but none of that kind is configured")]
    NoCredentials { allowed: String },
    /// A secret file cannot be read.
    #[error("cannot read secret from {from}: {source}")]
    ReadSecret {
        from: String,
        #[source]
        source: std::io::Error,
    },
    /// A secret environment variable is not set.
    #[error("environment variable {var} is not set (it should hold the git credential)")]
    MissingSecret { var: String },
    /// A secret is not valid UTF-8 where a password is expected.
    #[error("the git password/token is not valid UTF-8")]
    SecretNotUtf8,
    /// The known_hosts file cannot be read or parsed.
    #[error("cannot read known_hosts {path}: {source}")]
    KnownHosts {
        path: String,
        #[source]
        source: ssh_key::Error,
    },
    /// A trusted SSH signing key is not a valid OpenSSH public key line.
    #[error("{at}: not an OpenSSH public key (expected `ssh-ed25519 AAAA... name`): {source}")]
    TrustedSshKey {
        at: String,
        #[source]
        source: ssh_key::Error,
    },
    /// The Git repository whose commit is checked cannot be opened.
    #[error("cannot open the git repository holding {path} (a signed commit needs a Git checkout): {source}")]
    OpenRepo {
        path: String,
        #[source]
        source: git2::Error,
    },
    /// A line of the allowed signers file cannot be used.
    #[error("{at}: {reason} (expected git's allowed_signers format: `ops@example.com ssh-ed25519 AAAA...`)")]
    AllowedSigners { at: String, reason: String },
    /// A trust list file cannot be read.
    #[error("cannot read trusted keys from {path}: {source}")]
    ReadTrustFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A trusted OpenPGP key is not a valid armored public key.
    #[error("{at}: not an ASCII-armored OpenPGP public key (export with `gpg --armor --export`): {reason}")]
    TrustedPgpKey { at: String, reason: String },
    /// A blocking git task panicked or was cancelled.
    #[error("git task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which remote, which ref, and how to behave.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// `file://`, `http(s)://`, `git://`, `ssh://` or scp-like URL.
    pub url: String,
    /// Branch, tag, full ref, or a commit id (pinned).
    pub reference: String,
    /// Directory of the bare cache (created when missing).
    pub cache_dir: PathBuf,
    pub read: ReadLimits,
    pub credentials: Credentials,
    pub force_push: ForcePush,
    pub backoff: Backoff,
    /// Delay between polls while the remote answers.
    pub interval: Duration,
}

impl SourceConfig {
    /// A configuration with defaults: default paths, no credentials,
    /// force-pushes followed, 5s..5min backoff, 30s interval.
    pub fn new(
        url: impl Into<String>,
        reference: impl Into<String>,
        cache_dir: impl Into<PathBuf>,
    ) -> Self {
        SourceConfig {
            url: url.into(),
            reference: reference.into(),
            cache_dir: cache_dir.into(),
            read: ReadLimits::default(),
            credentials: Credentials::default(),
            force_push: ForcePush::default(),
            backoff: Backoff::default(),
            interval: Duration::from_secs(30),
        }
    }
}

/// What one poll reports.
#[derive(Debug, Clone)]
pub struct Poll {
    pub event: Event,
    /// The snapshot being served after this poll (the last good one).
    pub snapshot: Option<Arc<Snapshot>>,
    /// When to poll next: the interval, or the backoff delay.
    pub next_poll_in: Duration,
}

/// What the source serves, readable without waiting for a poll in flight.
#[derive(Debug, Clone)]
pub struct Status {
    pub state: State,
    pub last_good: Option<Arc<Snapshot>>,
    /// How many times files were read from the object store (not from cache).
    pub tree_reads: u64,
}

/// A polled Git remote with its on-disk cache.
#[derive(Clone)]
pub struct Source {
    work: Arc<Mutex<Work>>,
    status: Arc<Mutex<Status>>,
}

struct Work {
    cfg: SourceConfig,
    cache: Cache,
    trees: TreeCache,
    state: State,
    last_good: Option<Arc<Snapshot>>,
}

impl Source {
    /// Open the cache (creating or re-creating it). Does not touch the network.
    ///
    /// User-info in `cfg.url` never reaches libgit2 (whose errors could
    /// echo it): it is taken out, and becomes the HTTPS credentials when
    /// none are configured.
    pub async fn open(mut cfg: SourceConfig) -> Result<Source> {
        let (url, from_url) = split_credentials(&cfg.url);
        if from_url.is_some() {
            cfg.url = url;
            if cfg.credentials.https.is_none() {
                cfg.credentials.https = url::https_auth(None, None, from_url);
            }
        }
        let work = blocking(move || {
            let cache = Cache::open(&cfg.cache_dir, &cfg.url)?;
            Ok(Work {
                cfg,
                cache,
                trees: TreeCache::default(),
                state: State::Initial,
                last_good: None,
            })
        })
        .await?;
        let status = Status {
            state: State::Initial,
            last_good: None,
            tree_reads: 0,
        };
        Ok(Source {
            work: Arc::new(Mutex::new(work)),
            status: Arc::new(Mutex::new(status)),
        })
    }

    /// Ask the remote, fetch if the ref moved, and step the poll state.
    pub async fn poll(&self) -> Result<Poll> {
        let work = self.work.clone();
        let status = self.status.clone();
        blocking(move || {
            let mut w = lock(&work);
            let poll = w.poll()?;
            *lock(&status) = w.status();
            Ok(poll)
        })
        .await
    }

    /// The snapshot at `revision` (branch, tag, commit id, `main~1`, ...),
    /// after fetching every branch and tag. When the remote is unreachable
    /// the cache answers if it knows the revision.
    pub async fn snapshot_at(&self, revision: &str) -> Result<Snapshot> {
        let revision = revision.to_string();
        self.with_work(move |w| {
            w.fetch_all_or_warn();
            w.read_revision(&revision)
        })
        .await
    }

    /// Every ref of the remote with its commit id (hex), without fetching
    /// (the reconciler's branch previews: `preview.branches`).
    pub async fn remote_refs(&self) -> Result<Vec<(String, String)>> {
        self.with_work(|w| {
            let refs = w.cache.ls_all(&w.cfg.credentials)?;
            Ok(refs.into_iter().map(|(n, o)| (n, o.to_string())).collect())
        })
        .await
    }

    /// The snapshot at the full ref `refname` (`refs/heads/preview/x`,
    /// `refs/pull/42/head`), fetching that one ref first.
    pub async fn snapshot_of_ref(&self, refname: &str) -> Result<Snapshot> {
        let refname = refname.to_string();
        self.with_work(move |w| {
            if let Err(e) = w.cache.fetch_ref(&w.cfg.credentials, &refname) {
                tracing::warn!(reference = %refname, error = %e, "fetch failed; answering from the git cache");
            }
            w.read_revision(&refname)
        })
        .await
    }

    /// The snapshots at `base` and `head` (for a preview), from one fetch.
    pub async fn snapshot_pair(&self, base: &str, head: &str) -> Result<(Snapshot, Snapshot)> {
        let (base, head) = (base.to_string(), head.to_string());
        self.with_work(move |w| {
            w.fetch_all_or_warn();
            Ok((w.read_revision(&base)?, w.read_revision(&head)?))
        })
        .await
    }

    /// Check the signature of `commit` (hex id) against `trust`.
    pub async fn verify(&self, commit: &str, trust: Arc<TrustList>) -> Result<Verification> {
        let commit = commit.to_string();
        self.with_work(move |w| {
            let oid = w.cache.resolve(&commit)?;
            signature::verify_commit(&w.cache.repo, oid, &trust)
        })
        .await
    }

    /// Whether `commit` is `ancestor` or descends from it (both hex ids).
    /// An `ancestor` the cache does not hold is in the history of no commit
    /// fetched (fetches are never shallow), so the answer is then `false`:
    /// a branch reset to older history after a restart with an empty cache
    /// is told apart as well as one reset while running.
    pub async fn descends_from(&self, commit: &str, ancestor: &str) -> Result<bool> {
        let parse = |hex: &str| {
            Oid::from_str(hex).map_err(|source| Error::ReadCommit {
                commit: hex.to_string(),
                source,
            })
        };
        let (new, old) = (parse(commit)?, parse(ancestor)?);
        self.with_work(move |w| {
            if new == old {
                return Ok(true);
            }
            if !w.cache.has_object(old) {
                return Ok(false);
            }
            w.cache.fast_forward(old, new)
        })
        .await
    }

    /// What the source serves now.
    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    async fn with_work<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Work) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let work = self.work.clone();
        let status = self.status.clone();
        blocking(move || {
            let mut w = lock(&work);
            let out = f(&mut w);
            *lock(&status) = w.status();
            out
        })
        .await
    }
}

/// One-shot: the snapshot of `revision` of the remote in `cfg` (for
/// `--revision`).
pub async fn load_revision(cfg: SourceConfig, revision: &str) -> Result<Snapshot> {
    Source::open(cfg).await?.snapshot_at(revision).await
}

/// The snapshot of `revision` of the Git repository at `path`, read
/// straight from its object store (no cache, no fetch), so every revision
/// git itself accepts works: `HEAD`, `main~1`, `origin/main`, `v1.2`, a
/// short id, `@{-1}`, `HEAD@{1}`. `path` is a checkout, a folder inside one
/// (its files are then read relative to that folder, as the working-tree
/// loader reads them), or a bare repository.
pub fn read_local(path: &std::path::Path, revision: &str) -> Result<Snapshot> {
    let shown = path.display().to_string();
    let repo = git2::Repository::discover(path).map_err(|e| Error::NotARepository {
        path: shown.clone(),
        reason: e.message().to_string(),
    })?;
    let prefix = folder_in_checkout(&repo, path);
    let not_found = |reason: String| Error::UnknownRevision {
        revision: revision.to_string(),
        repo: shown.clone(),
        reason,
    };
    let object = repo
        .revparse_single(revision)
        .map_err(|e| not_found(e.message().to_string()))?;
    let commit = object.peel_to_commit().map_err(|_| {
        let kind = object.kind().map_or("object", |k| k.str());
        not_found(format!("it names a {kind}, not a commit"))
    })?;
    let limits = ReadLimits {
        paths: DEFAULT_PATHS
            .iter()
            .map(|p| format!("{prefix}{p}"))
            .collect(),
        root: prefix.clone(),
        ..ReadLimits::default()
    };
    let snap = snapshot::read(&repo, commit.id(), &limits, &mut TreeCache::default())?;
    if prefix.is_empty() {
        return Ok(snap);
    }
    let files = snap
        .files
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), v.clone())))
        .collect();
    Ok(Snapshot {
        files: Arc::new(files),
        ..snap
    })
}

/// The folder `path` names inside the checkout of `repo`, as a tree path
/// ending in `/` (`examples/shop/`); empty for the top folder, the `.git`
/// folder and a bare repository.
fn folder_in_checkout(repo: &git2::Repository, path: &std::path::Path) -> String {
    let (Some(workdir), Ok(path)) = (repo.workdir(), path.canonicalize()) else {
        return String::new();
    };
    let inside_git_dir = repo
        .path()
        .canonicalize()
        .is_ok_and(|git_dir| path.starts_with(git_dir));
    let rel = match workdir.canonicalize() {
        Ok(w) if !inside_git_dir => path.strip_prefix(w).map(std::path::Path::to_path_buf),
        _ => return String::new(),
    };
    match rel {
        Ok(rel) if !rel.as_os_str().is_empty() => {
            let parts: Vec<_> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            format!("{}/", parts.join("/"))
        }
        _ => String::new(),
    }
}

/// [`read_local`] of two revisions (for `--base/--head`).
pub fn read_local_pair(
    path: &std::path::Path,
    base: &str,
    head: &str,
) -> Result<(Snapshot, Snapshot)> {
    Ok((read_local(path, base)?, read_local(path, head)?))
}

/// One-shot: the snapshots of `base` and `head` (for `--base/--head`).
pub async fn load_pair(cfg: SourceConfig, base: &str, head: &str) -> Result<(Snapshot, Snapshot)> {
    Source::open(cfg).await?.snapshot_pair(base, head).await
}

impl Work {
    fn status(&self) -> Status {
        Status {
            state: self.state.clone(),
            last_good: self.last_good.clone(),
            tree_reads: self.trees.tree_reads,
        }
    }

    fn poll(&mut self) -> Result<Poll> {
        let obs = match self.observe() {
            Err(e) if is_local(&e) => {
                self.cache.reset()?; // corrupt cache: clone again, once
                self.observe()?
            }
            other => other?,
        };
        let cfg = &self.cfg;
        let (event, state) = step(self.state.clone(), obs, cfg.force_push, &cfg.backoff);
        if let Event::NewCommit { to, .. } = &event {
            let snap = match self.read_commit_oid(to) {
                Err(e) if is_local(&e) => {
                    self.cache.reset()?;
                    return Err(e);
                }
                other => other?,
            };
            self.last_good = Some(Arc::new(snap));
        }
        self.state = state;
        let cfg = &self.cfg;
        let next_poll_in = match &event {
            Event::Unreachable { retry_in, .. } => *retry_in,
            _ => cfg.interval,
        };
        Ok(Poll {
            event,
            snapshot: self.last_good.clone(),
            next_poll_in,
        })
    }

    /// One round trip: where the tracked ref is relative to the served commit.
    fn observe(&mut self) -> Result<Observation> {
        let creds = &self.cfg.credentials;
        let last = self
            .state
            .last_good()
            .map(Oid::from_str)
            .transpose()
            .ok()
            .flatten();
        let tip = match self.tip(creds) {
            Ok(tip) => tip,
            Err(e @ (Error::Unreachable { .. } | Error::RefNotFound { .. })) => {
                return Ok(Observation::Unreachable {
                    error: e.to_string(),
                })
            }
            Err(e) => return Err(e),
        };
        if Some(tip.oid) == last {
            return Ok(Observation::Same);
        }
        if !self.cache.has_object(tip.oid) {
            let fetched = match tip.refname.as_str() {
                "" => self.cache.fetch_all(creds),
                refname => self.cache.fetch_ref(creds, refname),
            };
            if let Err(e) = fetched {
                return Ok(Observation::Unreachable {
                    error: e.to_string(),
                });
            }
            if !self.cache.has_object(tip.oid) {
                let error = format!(
                    "{} has no branch or tag containing commit {}",
                    url::redact(&self.cfg.url),
                    tip.oid
                );
                return Ok(Observation::Unreachable { error });
            }
        }
        let to = self.cache.peel_commit(tip.oid)?;
        match last {
            Some(last) if last == to => Ok(Observation::Same),
            Some(last) => Ok(Observation::Moved {
                to: to.to_string(),
                fast_forward: self.cache.fast_forward(last, to)?,
            }),
            None => Ok(Observation::Moved {
                to: to.to_string(),
                fast_forward: true,
            }),
        }
    }

    /// The remote tip of the tracked reference; a pinned commit id needs no
    /// round trip once it is in the cache.
    fn tip(&self, creds: &Credentials) -> Result<RemoteTip> {
        let reference = &self.cfg.reference;
        if let Some(oid) = pinned(reference) {
            return Ok(RemoteTip {
                refname: String::new(),
                oid,
            });
        }
        self.cache.ls_remote(creds, reference)
    }

    fn read_commit_oid(&mut self, hex: &str) -> Result<Snapshot> {
        let oid = Oid::from_str(hex).map_err(|source| Error::ReadCommit {
            commit: hex.to_string(),
            source,
        })?;
        snapshot::read(&self.cache.repo, oid, &self.cfg.read, &mut self.trees)
    }

    fn read_revision(&mut self, revision: &str) -> Result<Snapshot> {
        let oid = self.cache.resolve(revision)?;
        snapshot::read(&self.cache.repo, oid, &self.cfg.read, &mut self.trees)
    }

    fn fetch_all_or_warn(&mut self) {
        if let Err(e) = self.cache.fetch_all(&self.cfg.credentials) {
            tracing::warn!(error = %e, "fetch failed; answering from the git cache");
        }
    }
}

/// A full 40-hex commit id used as the reference pins the commit.
fn pinned(reference: &str) -> Option<Oid> {
    let hex = reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| Oid::from_str(reference).ok()).flatten()
}

/// Errors that mean the cache itself is damaged (not the network, not config).
fn is_local(e: &Error) -> bool {
    matches!(e, Error::ReadCommit { .. } | Error::ReadPath { .. })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(Error::Task)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_hex_ids_pin() {
        assert!(pinned("0123456789abcdef0123456789abcdef01234567").is_some());
        assert!(pinned("main").is_none());
        assert!(pinned("0123456").is_none());
    }
}
