//! The bare cache of the remote: a mirror-layout repository on disk
//! (`refs/heads/*`, `refs/tags/*` as on the remote) that survives restarts.
//! Asking the remote for one ref (ls-remote) is cheap; fetching is done only
//! when that ref points at an object the cache does not hold. A cache that
//! cannot be opened or whose refs point at missing objects is deleted and
//! cloned again: it holds nothing that the remote does not.

use std::path::{Path, PathBuf};

use git2::{AutotagOption, Direction, FetchOptions, Oid, Repository};

use super::credentials::{callbacks, Credentials, Refusal};
use super::{Error, Result};

/// The remote ref a reference resolved to, as the remote advertised it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTip {
    /// Full ref name (`refs/heads/main`, `refs/tags/v1`).
    pub refname: String,
    /// The commit when the remote advertised it peeled (annotated tags),
    /// otherwise the ref's own target.
    pub oid: Oid,
}

/// An open bare cache for one remote URL.
pub struct Cache {
    dir: PathBuf,
    url: String,
    /// `url` as errors show it (user-info masked, should any be left).
    shown: String,
    pub(crate) repo: Repository,
}

impl Cache {
    /// Open the cache in `dir`, creating it, or re-creating it when corrupt.
    pub fn open(dir: &Path, url: &str) -> Result<Cache> {
        let repo = match Repository::open_bare(dir) {
            Ok(repo) if healthy(&repo) => repo,
            Ok(_) | Err(_) if dir.exists() && !is_empty_dir(dir) => {
                tracing::warn!(cache = %dir.display(), "git cache is unreadable or corrupt; cloning again");
                wipe(dir)?;
                init(dir)?
            }
            _ => init(dir)?,
        };
        Ok(Cache {
            dir: dir.to_path_buf(),
            url: url.to_string(),
            shown: super::url::redact(url),
            repo,
        })
    }

    /// Delete the cache and start empty (after a corruption was detected).
    pub fn reset(&mut self) -> Result<()> {
        tracing::warn!(cache = %self.dir.display(), "git cache is corrupt; cloning again");
        wipe(&self.dir)?;
        self.repo = init(&self.dir)?;
        Ok(())
    }

    /// Ask the remote where `reference` (branch, tag or full ref) points,
    /// without fetching anything.
    pub fn ls_remote(&self, creds: &Credentials, reference: &str) -> Result<RemoteTip> {
        let mut remote = self
            .repo
            .remote_anonymous(&self.url)
            .map_err(|e| self.unreachable(e))?;
        let advertised = self.remote_op(creds, |cbs| {
            let conn = remote.connect_auth(Direction::Fetch, Some(cbs), None)?;
            let heads = conn.list()?;
            Ok(heads
                .iter()
                .map(|h| (h.name().to_string(), h.oid()))
                .collect::<Vec<_>>())
        })?;
        pick_ref(&advertised, reference).ok_or_else(|| Error::RefNotFound {
            reference: reference.to_string(),
            url: self.shown.clone(),
        })
    }

    /// Every ref the remote advertises (`refs/heads/...`, `refs/pull/...`),
    /// with the commit it points at; without fetching anything.
    pub fn ls_all(&self, creds: &Credentials) -> Result<Vec<(String, Oid)>> {
        let mut remote = self
            .repo
            .remote_anonymous(&self.url)
            .map_err(|e| self.unreachable(e))?;
        self.remote_op(creds, |cbs| {
            let conn = remote.connect_auth(Direction::Fetch, Some(cbs), None)?;
            let heads = conn.list()?;
            Ok(heads
                .iter()
                .filter(|h| h.name().starts_with("refs/") && !h.name().ends_with("^{}"))
                .map(|h| (h.name().to_string(), h.oid()))
                .collect::<Vec<_>>())
        })
    }

    /// Fetch exactly one ref into the same name in the cache.
    pub fn fetch_ref(&self, creds: &Credentials, refname: &str) -> Result<()> {
        self.fetch(creds, &[format!("+{refname}:{refname}")])
    }

    /// Fetch every branch and tag (for revisions not tracked by polling).
    pub fn fetch_all(&self, creds: &Credentials) -> Result<()> {
        self.fetch(
            creds,
            &[
                "+refs/heads/*:refs/heads/*".to_string(),
                "+refs/tags/*:refs/tags/*".to_string(),
            ],
        )
    }

    fn fetch(&self, creds: &Credentials, refspecs: &[String]) -> Result<()> {
        let mut remote = self
            .repo
            .remote_anonymous(&self.url)
            .map_err(|e| self.unreachable(e))?;
        self.remote_op(creds, |cbs| {
            let mut opts = FetchOptions::new();
            opts.remote_callbacks(cbs)
                .download_tags(AutotagOption::None)
                .update_fetchhead(false);
            remote.fetch(refspecs, Some(&mut opts), None)
        })
    }

    /// Run one network operation; on failure, report the callbacks' own
    /// reason when they refused (libgit2 may have replaced it).
    fn remote_op<'a, T>(
        &self,
        creds: &'a Credentials,
        op: impl FnOnce(git2::RemoteCallbacks<'a>) -> std::result::Result<T, git2::Error>,
    ) -> Result<T> {
        let refusal = Refusal::default();
        op(callbacks(creds, &self.url, refusal.clone())).map_err(|e| {
            let noted = refusal.borrow_mut().take();
            self.unreachable(noted.map(|msg| git2::Error::from_str(&msg)).unwrap_or(e))
        })
    }

    /// Whether the object store holds `oid`.
    pub fn has_object(&self, oid: Oid) -> bool {
        self.repo.odb().map(|odb| odb.exists(oid)).unwrap_or(false)
    }

    /// The commit `oid` names (peeling annotated tags).
    pub fn peel_commit(&self, oid: Oid) -> Result<Oid> {
        let obj = self
            .repo
            .find_object(oid, None)
            .map_err(|source| Error::ReadCommit {
                commit: oid.to_string(),
                source,
            })?;
        let commit = obj.peel_to_commit().map_err(|source| Error::ReadCommit {
            commit: oid.to_string(),
            source,
        })?;
        Ok(commit.id())
    }

    /// Whether `new` equals or descends from `old` (a fast-forward).
    pub fn fast_forward(&self, old: Oid, new: Oid) -> Result<bool> {
        if old == new {
            return Ok(true);
        }
        self.repo
            .graph_descendant_of(new, old)
            .map_err(|source| Error::ReadCommit {
                commit: new.to_string(),
                source,
            })
    }

    /// Resolve a revision (branch, tag, commit id, or any git rev syntax
    /// such as `main~2`) to a commit in the cache.
    pub fn resolve(&self, revision: &str) -> Result<Oid> {
        let not_found = |source: git2::Error| Error::UnknownRevision {
            revision: revision.to_string(),
            repo: self.shown.clone(),
            reason: super::url::redact(source.message()),
        };
        let obj = self.repo.revparse_single(revision).map_err(not_found)?;
        Ok(obj.peel_to_commit().map_err(not_found)?.id())
    }

    /// libgit2's message may quote a URL (a redirect target): its
    /// user-info is masked like the remote's own.
    fn unreachable(&self, source: git2::Error) -> Error {
        let message = super::url::redact(source.message());
        let source = if message == source.message() {
            source
        } else {
            git2::Error::new(source.code(), source.class(), message)
        };
        Error::Unreachable {
            url: self.shown.clone(),
            source,
        }
    }
}

/// The advertised ref `reference` names: a full ref as is, else a branch,
/// else a tag (its peeled `^{}` entry preferred, which is the commit).
fn pick_ref(advertised: &[(String, Oid)], reference: &str) -> Option<RemoteTip> {
    let candidates = if reference.starts_with("refs/") {
        vec![reference.to_string()]
    } else {
        vec![
            format!("refs/heads/{reference}"),
            format!("refs/tags/{reference}"),
        ]
    };
    let find = |name: &str| advertised.iter().find(|(n, _)| n == name).map(|(_, o)| *o);
    candidates.into_iter().find_map(|refname| {
        let direct = find(&refname)?;
        let oid = find(&format!("{refname}^{{}}")).unwrap_or(direct);
        Some(RemoteTip { refname, oid })
    })
}

/// Every ref resolves to an object that is present and readable.
fn healthy(repo: &Repository) -> bool {
    let Ok(refs) = repo.references() else {
        return false;
    };
    for r in refs {
        let Ok(r) = r else { return false };
        if r.resolve()
            .and_then(|r| r.peel(git2::ObjectType::Any))
            .is_err()
        {
            return false;
        }
    }
    true
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}

fn init(dir: &Path) -> Result<Repository> {
    Repository::init_bare(dir).map_err(|source| Error::OpenCache {
        path: dir.display().to_string(),
        source,
    })
}

fn wipe(dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir).map_err(|source| Error::ResetCache {
        path: dir.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(n: u8) -> Oid {
        Oid::from_bytes(&[n; 20]).unwrap()
    }

    #[test]
    fn refs_are_picked_branch_then_tag_peeled() {
        let adv = vec![
            ("HEAD".to_string(), oid(1)),
            ("refs/heads/main".to_string(), oid(1)),
            ("refs/heads/v1".to_string(), oid(2)),
            ("refs/tags/v1".to_string(), oid(3)),
            ("refs/tags/v1^{}".to_string(), oid(4)),
            ("refs/tags/light".to_string(), oid(5)),
        ];
        assert_eq!(pick_ref(&adv, "main").unwrap().oid, oid(1));
        assert_eq!(pick_ref(&adv, "v1").unwrap().refname, "refs/heads/v1");
        let tag = pick_ref(&adv, "refs/tags/v1").unwrap();
        assert_eq!((tag.refname.as_str(), tag.oid), ("refs/tags/v1", oid(4)));
        assert_eq!(pick_ref(&adv, "light").unwrap().oid, oid(5));
        assert!(pick_ref(&adv, "nope").is_none());
    }
}
