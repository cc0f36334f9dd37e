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
}

/// What to read and how much at most.
#[derive(Debug, Clone)]
pub struct ReadLimits {
    /// Path prefixes (`dir/`) or exact file paths, repo-relative with `/`.
    pub paths: Vec<String>,
    /// Upper bound on the summed size of the files read.
    pub max_bytes: u64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            paths: DEFAULT_PATHS.iter().map(|p| p.to_string()).collect(),
            max_bytes: 256 * 1024 * 1024,
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
    let files = match cache.get(&key) {
        Some(files) => files,
        None => {
            cache.tree_reads += 1;
            let files = Arc::new(read_files(repo, &tree, limits)?);
            cache.put(key, files.clone());
            files
        }
    };
    Ok(Snapshot {
        commit: commit.to_string(),
        tree: tree.id().to_string(),
        files,
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

fn read_files(repo: &Repository, root: &Tree, limits: &ReadLimits) -> Result<Files> {
    let mut files = Files::new();
    let mut budget = limits.max_bytes;
    for p in &limits.paths {
        let trimmed = p.trim_end_matches('/');
        let Ok(entry) = root.get_path(std::path::Path::new(trimmed)) else {
            continue;
        };
        match entry.kind() {
            Some(ObjectType::Tree) => {
                let tree = repo.find_tree(entry.id()).map_err(read_err(trimmed))?;
                walk(repo, &tree, trimmed, &mut files, &mut budget)?;
            }
            Some(ObjectType::Blob) if !p.ends_with('/') => {
                add_blob(
                    repo,
                    entry.id(),
                    trimmed.to_string(),
                    &mut files,
                    &mut budget,
                )?;
            }
            _ => {}
        }
    }
    Ok(files)
}

fn walk(
    repo: &Repository,
    tree: &Tree,
    prefix: &str,
    files: &mut Files,
    budget: &mut u64,
) -> Result<()> {
    for entry in tree.iter() {
        let Ok(name) = entry.name() else {
            continue; // not UTF-8: no tidegate file is named that way
        };
        let path = format!("{prefix}/{name}");
        match entry.kind() {
            Some(ObjectType::Tree) => {
                let sub = repo.find_tree(entry.id()).map_err(read_err(&path))?;
                walk(repo, &sub, &path, files, budget)?;
            }
            Some(ObjectType::Blob) => add_blob(repo, entry.id(), path, files, budget)?,
            _ => {} // submodules (commits) are not followed
        }
    }
    Ok(())
}

fn add_blob(
    repo: &Repository,
    id: Oid,
    path: String,
    files: &mut Files,
    budget: &mut u64,
) -> Result<()> {
    let blob = repo.find_blob(id).map_err(read_err(&path))?;
    let size = blob.size() as u64;
    if size > *budget {
        return Err(Error::TooLarge { path });
    }
    *budget -= size;
    files.insert(path, blob.content().to_vec());
    Ok(())
}

fn read_err(path: &str) -> impl FnOnce(git2::Error) -> Error + '_ {
    move |source| Error::ReadPath {
        path: path.to_string(),
        source,
    }
}
