//! Reading a commit's files straight from the object store, without a
//! working directory, limited to the paths tidegate reads. Memory is bounded
//! by those paths: subtrees outside them are never opened, and a byte limit
//! stops a runaway repository. Results are cached by the ids of the read
//! subtrees, so a commit that touches nothing tidegate reads costs one root
//! tree look-up and no blob reads.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use git2::{ObjectType, Oid, Repository, Tree};

use super::{Error, Result};

/// The paths tidegate reads from a repository (directory prefixes end in `/`).
pub const DEFAULT_PATHS: &[&str] = &[
    "environments/",
    "modules/",
    "secrets/",
    ".sops.yaml",
    "tidegate.yaml",
];

/// Repo-relative path (with `/`) → file contents.
pub type Files = BTreeMap<String, Vec<u8>>;

/// The files of one commit, as the loader takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Commit id (hex).
    pub commit: String,
    /// Root tree id (hex).
    pub tree: String,
    /// Only the files under the configured paths. Shared between snapshots
    /// whose read paths are identical; `&snapshot.files` coerces to `&Files`.
    pub files: Arc<Files>,
    /// Who made the commit, and its signature (for the audit history).
    pub meta: CommitMeta,
}

/// Who made a commit, as Git records it, and its signature, unverified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitMeta {
    /// `Name <email>`.
    pub author: String,
    /// `Name <email>`.
    pub committer: String,
    /// The `gpgsig` header and the commit data it signs, when signed.
    pub signature: Option<(Vec<u8>, Vec<u8>)>,
}

impl CommitMeta {
    /// The author, committer and signature of `commit` in `repo`.
    pub fn read(repo: &Repository, commit: Oid) -> Result<CommitMeta> {
        let read_err = |source| Error::ReadCommit {
            commit: commit.to_string(),
            source,
        };
        let c = repo.find_commit(commit).map_err(read_err)?;
        let person = |s: git2::Signature| {
            format!(
                "{} <{}>",
                String::from_utf8_lossy(s.name_bytes()),
                String::from_utf8_lossy(s.email_bytes())
            )
        };
        let signature = match repo.extract_signature(&commit, None) {
            Ok((sig, data)) => Some((sig.to_vec(), data.to_vec())),
            Err(e) if e.code() == git2::ErrorCode::NotFound => None,
            Err(e) => return Err(read_err(e)),
        };
        Ok(CommitMeta {
            author: person(c.author()),
            committer: person(c.committer()),
            signature,
        })
    }

    /// The signature checked against `trust`.
    pub fn verify(&self, trust: &super::TrustList) -> super::Verification {
        match &self.signature {
            None => super::Verification::Unsigned,
            Some((sig, data)) => super::signature::verify(sig, data, trust),
        }
    }
}

/// What to read and how much at most.
#[derive(Debug, Clone)]
pub struct ReadLimits {
    /// Path prefixes (`dir/`) or exact file paths, repo-relative with `/`.
    pub paths: Vec<String>,
    /// Upper bound on the summed size of the files read.
    pub max_bytes: u64,
    /// The folder (repo-relative, `dir/`; empty for the whole tree) that
    /// holds the repository tidegate reads: symbolic links may not lead
    /// out of it.
    pub root: String,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            paths: DEFAULT_PATHS.iter().map(|p| p.to_string()).collect(),
            max_bytes: 256 * 1024 * 1024,
            root: String::new(),
        }
    }
}

/// Filtered file sets by the ids of the entries they were read from.
#[derive(Debug, Default)]
pub struct TreeCache {
    entries: VecDeque<(String, Arc<Files>)>,
    /// How many times files were actually read from the object store.
    pub tree_reads: u64,
}

const CACHE_CAPACITY: usize = 8;

impl TreeCache {
    fn get(&self, key: &str) -> Option<Arc<Files>> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, f)| f.clone())
    }

    fn put(&mut self, key: String, files: Arc<Files>) {
        if self.entries.len() >= CACHE_CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back((key, files));
    }
}

/// The snapshot of `commit`, from the cache when the read paths are unchanged.
pub fn read(
    repo: &Repository,
    commit: Oid,
    limits: &ReadLimits,
    cache: &mut TreeCache,
) -> Result<Snapshot> {
    let commit_obj = repo
        .find_commit(commit)
        .map_err(|source| Error::ReadCommit {
            commit: commit.to_string(),
            source,
        })?;
    let tree = commit_obj.tree().map_err(|source| Error::ReadCommit {
        commit: commit.to_string(),
        source,
    })?;
    let key = cache_key(&tree, &limits.paths);
    // Files read through a symbolic link depend on the whole tree, not only
    // on the subtrees the key names: they are cached under the root tree
    // too. Same subtrees mean same links, so a plain key never answers for
    // files that followed one.
    let linked_key = format!("{}:{key}", tree.id());
    let files = match cache.get(&key).or_else(|| cache.get(&linked_key)) {
        Some(files) => files,
        None => {
            cache.tree_reads += 1;
            let (files, followed_links) = Reader::new(repo, &tree, limits).read()?;
            let files = Arc::new(files);
            cache.put(if followed_links { linked_key } else { key }, files.clone());
            files
        }
    };
    Ok(Snapshot {
        commit: commit.to_string(),
        tree: tree.id().to_string(),
        files,
        meta: CommitMeta::read(repo, commit)?,
    })
}

/// The ids of the entries named by `paths` (absent ones as `-`).
fn cache_key(root: &Tree, paths: &[String]) -> String {
    let mut key = String::new();
    for p in paths {
        let id = root.get_path(std::path::Path::new(p.trim_end_matches('/')));
        match id {
            Ok(entry) => key.push_str(&entry.id().to_string()),
            Err(_) => key.push('-'),
        }
        key.push(';');
    }
    key
}

/// Git's file mode of a symbolic link (its blob holds the target path).
const LINK_MODE: i32 = 0o120000;

/// How many links one path may pass through, as Linux's `MAXSYMLINKS`.
const MAX_LINK_HOPS: usize = 40;

/// Where a link leads inside the commit.
enum Resolved {
    /// A blob or tree at the repo-relative path `real`.
    Found {
        real: String,
        id: Oid,
        kind: Option<ObjectType>,
    },
    /// Nothing in the commit (a dangling link).
    Missing,
}

/// Reads the files under the configured paths of one commit, following
/// symbolic links the way the working-tree loader does: a link inside the
/// repository reads its target under the link's own path; a link that
/// leaves it (an absolute target, or `..` past the top) or loops is an
/// error; a dangling link is an error when the loader would read it (YAML
/// or JSON) and skipped otherwise. A link blob is never file content.
struct Reader<'r> {
    repo: &'r Repository,
    root: &'r Tree<'r>,
    limits: &'r ReadLimits,
    files: Files,
    budget: u64,
    /// Whether any link was followed: the files then depend on more than
    /// the subtrees the cache key names.
    followed_links: bool,
}

impl<'r> Reader<'r> {
    fn new(repo: &'r Repository, root: &'r Tree<'r>, limits: &'r ReadLimits) -> Self {
        Reader {
            repo,
            root,
            limits,
            files: Files::new(),
            budget: limits.max_bytes,
            followed_links: false,
        }
    }

    fn read(mut self) -> Result<(Files, bool)> {
        for p in &self.limits.paths {
            let trimmed = p.trim_end_matches('/');
            let Ok(entry) = self.root.get_path(std::path::Path::new(trimmed)) else {
                continue;
            };
            let (id, kind, mode) = (entry.id(), entry.kind(), entry.filemode());
            if kind == Some(ObjectType::Blob) && mode != LINK_MODE && p.ends_with('/') {
                continue; // a file where a folder is configured
            }
            self.entry(trimmed, trimmed, id, kind, mode, &mut Vec::new())?;
        }
        Ok((self.files, self.followed_links))
    }

    /// One entry, shown at `path`, really at `real` (they differ below a
    /// followed folder link). `open` holds the real paths of the folders
    /// being walked.
    fn entry(
        &mut self,
        path: &str,
        real: &str,
        id: Oid,
        kind: Option<ObjectType>,
        mode: i32,
        open: &mut Vec<String>,
    ) -> Result<()> {
        if mode == LINK_MODE {
            return self.link(path, real, id, open);
        }
        match kind {
            Some(ObjectType::Tree) => {
                let tree = self.repo.find_tree(id).map_err(read_err(path))?;
                open.push(real.to_string());
                let walked = self.tree(&tree, path, real, open);
                open.pop();
                walked
            }
            Some(ObjectType::Blob) => self.blob(id, path.to_string()),
            _ => Ok(()), // submodules (commits) are not followed
        }
    }

    fn tree(&mut self, tree: &Tree, path: &str, real: &str, open: &mut Vec<String>) -> Result<()> {
        for entry in tree.iter() {
            let Ok(name) = entry.name() else {
                continue; // not UTF-8: no tidegate file is named that way
            };
            self.entry(
                &format!("{path}/{name}"),
                &format!("{real}/{name}"),
                entry.id(),
                entry.kind(),
                entry.filemode(),
                open,
            )?;
        }
        Ok(())
    }

    /// The link at `path` (really at `real`), whose blob `id` holds its
    /// target.
    fn link(&mut self, path: &str, real: &str, id: Oid, open: &mut Vec<String>) -> Result<()> {
        let target = self.link_target(id, path)?;
        self.followed_links = true;
        let outside = || Error::LinkOutside {
            path: path.to_string(),
            target: target.clone(),
        };
        let parent = real.rsplit_once('/').map_or("", |(dir, _)| dir);
        let (real, id, kind) = match self.resolve(parent, &target, path)? {
            Some(Resolved::Found { real, id, kind }) => (real, id, kind),
            Some(Resolved::Missing) if is_read_by_loader(path) => {
                return Err(Error::LinkDangling {
                    path: path.to_string(),
                    target,
                })
            }
            Some(Resolved::Missing) => return Ok(()),
            None => return Err(outside()),
        };
        let boundary = self.limits.root.trim_end_matches('/');
        let inside =
            boundary.is_empty() || real == boundary || real.starts_with(&format!("{boundary}/"));
        if !inside {
            return Err(outside());
        }
        if kind == Some(ObjectType::Tree)
            && open
                .iter()
                .any(|o| real.is_empty() || *o == real || o.starts_with(&format!("{real}/")))
        {
            return Err(Error::LinkLoop {
                path: path.to_string(),
                target,
            });
        }
        self.entry(path, &real, id, kind, 0, open)
    }

    /// Follows `target` from the folder `dir` (repo-relative), resolving
    /// links met on the way. `None` when the path leaves the repository;
    /// `Err` for a chain of links longer than [`MAX_LINK_HOPS`].
    fn resolve(&self, dir: &str, target: &str, path: &str) -> Result<Option<Resolved>> {
        let mut done: Vec<String> = dir
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        let Some(mut todo) = components(target) else {
            return Ok(None);
        };
        let mut hops = 0;
        while let Some(c) = todo.pop_front() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    if done.pop().is_none() {
                        return Ok(None);
                    }
                    continue;
                }
                _ => done.push(c),
            }
            let Ok(entry) = self.root.get_path(std::path::Path::new(&done.join("/"))) else {
                return Ok(Some(Resolved::Missing));
            };
            if entry.filemode() == LINK_MODE {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(Error::LinkLoop {
                        path: path.to_string(),
                        target: target.to_string(),
                    });
                }
                let next = self.link_target(entry.id(), path)?;
                let Some(next) = components(&next) else {
                    return Ok(None);
                };
                done.pop();
                for c in next.into_iter().rev() {
                    todo.push_front(c);
                }
            } else if entry.kind() != Some(ObjectType::Tree) && !todo.is_empty() {
                return Ok(Some(Resolved::Missing)); // a file used as a folder
            }
        }
        let real = done.join("/");
        if real.is_empty() {
            return Ok(Some(Resolved::Found {
                real,
                id: self.root.id(),
                kind: Some(ObjectType::Tree),
            }));
        }
        let entry = self
            .root
            .get_path(std::path::Path::new(&real))
            .map_err(read_err(path))?;
        Ok(Some(Resolved::Found {
            id: entry.id(),
            kind: entry.kind(),
            real,
        }))
    }

    /// The target a link blob holds.
    fn link_target(&self, id: Oid, path: &str) -> Result<String> {
        let blob = self.repo.find_blob(id).map_err(read_err(path))?;
        Ok(String::from_utf8_lossy(blob.content()).into_owned())
    }

    fn blob(&mut self, id: Oid, path: String) -> Result<()> {
        let blob = self.repo.find_blob(id).map_err(read_err(&path))?;
        let size = blob.size() as u64;
        if size > self.budget {
            return Err(Error::TooLarge { path });
        }
        self.budget -= size;
        self.files.insert(path, blob.content().to_vec());
        Ok(())
    }
}

/// The components of a relative link target; `None` for an absolute one,
/// which leaves the repository.
fn components(target: &str) -> Option<VecDeque<String>> {
    (!target.starts_with('/')).then(|| target.split('/').map(str::to_string).collect())
}

/// Files the loader reads (YAML and JSON), whose dangling links are errors.
fn is_read_by_loader(path: &str) -> bool {
    [".yaml", ".yml", ".json"].iter().any(|e| path.ends_with(e))
}

fn read_err(path: &str) -> impl FnOnce(git2::Error) -> Error + '_ {
    move |source| Error::ReadPath {
        path: path.to_string(),
        source,
    }
}
