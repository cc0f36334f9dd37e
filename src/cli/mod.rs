//! The command implementations behind `src/main.rs`, one file per command.
//!
//! Each command takes its options and a writer and returns the process exit
//! code, so golden tests can run it in memory and `main` stays a flat match.
//! A new command is one new file here and one arm in `main`.

use std::path::{Path, PathBuf};

use crate::load::{self, Files};

pub mod apply;
pub mod generate;
pub mod graph;
pub mod history;
pub mod import;
pub mod logs;
pub mod plan;
pub mod preview;
pub mod promote;
pub mod rebuild;
pub mod reconcile;
pub mod switch;
pub mod validate;

/// A command could not run at all (as opposed to finding problems in the
/// repository, which it reports and signals through its exit code).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The repository could not be read from disk.
    #[error(transparent)]
    Load(#[from] load::Error),
    /// Writing the output failed.
    #[error("writing output")]
    Write(#[from] std::io::Error),
    /// An option names something the repository does not have.
    #[error("{0}")]
    Usage(String),
    /// Planning failed (rendering, connecting, observing, a provider).
    #[error(transparent)]
    Plan(#[from] crate::plan::Error),
    /// Secrets could not be decrypted (no key, wrong key, bad file).
    #[error(transparent)]
    Secrets(#[from] crate::secrets::Error),
    /// A revision could not be read from Git.
    #[error(transparent)]
    Source(#[from] crate::source::Error),
    /// The reconciler could not start or serve.
    #[error(transparent)]
    Reconcile(#[from] crate::reconcile::Error),
    /// The reconciler's HTTP server could not start.
    #[error(transparent)]
    Server(#[from] crate::server::Error),
    /// An environment's record or controls could not be read or written.
    #[error(transparent)]
    State(#[from] crate::state::Error),
    /// The `--notifications` file is invalid or names a secret that is missing.
    #[error(transparent)]
    Notify(#[from] crate::notify::Error),
    /// A saved plan could not be written, read or verified, or its key
    /// could not be read.
    #[error(transparent)]
    Saved(#[from] crate::plan::saved::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use crate::pipeline::{check, signature_refusal, Checked};

/// The keys trusted to sign commits for environments with
/// `requireSignedCommits: true`: tidegate's own configuration, never the
/// repository being checked.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrustOptions {
    /// Trusted SSH signing keys, in git's allowed_signers format
    /// (`ops@example.com ssh-ed25519 AAAA...`, one per line).
    #[arg(long, value_name = "FILE", env = "TIDEGATE_TRUSTED_SIGNERS")]
    pub trusted_signers: Option<std::path::PathBuf>,
    /// Trusted OpenPGP keys: a file of ASCII-armored public keys
    /// (`gpg --armor --export`); repeatable.
    #[arg(long, value_name = "FILE")]
    pub trusted_pgp_keys: Vec<std::path::PathBuf>,
}

impl TrustOptions {
    /// Reads the trust list (empty when no file is given).
    pub fn load(&self) -> Result<crate::source::TrustList> {
        Ok(crate::source::TrustList::from_files(
            self.trusted_signers.as_deref(),
            &self.trusted_pgp_keys,
        )?)
    }
}

/// Reads the working tree of the folder `repo` from disk.
pub fn read_repo(repo: &Path) -> Result<Files> {
    Ok(load::read_dir(repo)?)
}

/// What `--repo` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepoArg {
    /// A folder: its working tree, or with `--revision` the committed files
    /// of that folder in the Git repository holding it.
    Dir(PathBuf),
    /// A `file://` URL: the Git repository at that path (bare or not), read
    /// at `--revision` (default `HEAD`), never a working tree.
    FileUrl(PathBuf),
}

/// What `--repo` accepts, for errors and help texts.
pub const REPO_FORMS: &str = "a folder (its working tree; with --revision, that folder in the Git repository holding it) or a file:// URL of a local Git repository, bare or not (file:///srv/git/infra.git, read at --revision, default HEAD)";

impl RepoArg {
    /// Reads `--repo`: a `file://` URL or a folder. Remote URLs (`https://`,
    /// `ssh://`, `git@host:path`) are refused with what to do instead.
    pub fn parse(repo: &Path) -> Result<RepoArg> {
        let Some(text) = repo.to_str() else {
            return Ok(RepoArg::Dir(repo.to_path_buf()));
        };
        if let Some(rest) = text.strip_prefix("file://") {
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(Error::Usage(format!(
                    "--repo {text}: a file:// URL needs an absolute path after `file://` (file:///srv/git/infra.git); --repo takes {REPO_FORMS}"
                )));
            }
            return Ok(RepoArg::FileUrl(PathBuf::from(percent_decode(path))));
        }
        let scp_like = match (text.find(':'), text.find('/')) {
            (Some(colon), slash) => slash.is_none_or(|s| colon < s) && !repo.exists(),
            _ => false,
        };
        if text.contains("://") || scp_like {
            return Err(Error::Usage(format!(
                "--repo {text}: a remote Git URL cannot be read here; --repo takes {REPO_FORMS}. Clone it first, or let `tidegate reconcile --remote URL` poll it"
            )));
        }
        Ok(RepoArg::Dir(repo.to_path_buf()))
    }

    /// The folder or repository path.
    pub fn path(&self) -> &Path {
        match self {
            RepoArg::Dir(p) | RepoArg::FileUrl(p) => p,
        }
    }
}

/// `%20` and the like in a `file://` URL's path, decoded (invalid escapes
/// are kept as written).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Reads the repository at `repo`: its working tree, or with `revision`
/// (any revision git accepts: branch, tag, commit id, `HEAD`, `main~1`,
/// `origin/main`) the committed files, read from its object store. A
/// `file://` URL is always read from Git, at `HEAD` by default.
pub fn read_repo_at(repo: &Path, revision: Option<&str>) -> Result<Files> {
    match repo_snapshot(repo, revision)? {
        Some(snap) => Ok((*snap.files).clone()),
        None => read_repo(repo),
    }
}

/// The commit `--repo` and `--revision` name, read from Git; `None` for a
/// working tree (a folder without `--revision`).
pub fn repo_snapshot(
    repo: &Path,
    revision: Option<&str>,
) -> Result<Option<crate::source::Snapshot>> {
    match (RepoArg::parse(repo)?, revision) {
        (RepoArg::Dir(_), None) => Ok(None),
        (arg, revision) => Ok(Some(crate::source::read_local(
            arg.path(),
            revision.unwrap_or("HEAD"),
        )?)),
    }
}

/// The repository as `apply` and `rebuild` read it.
pub struct Loaded {
    pub files: Files,
    /// The commit id records are kept under.
    pub commit: String,
    /// Who made the commit and its signature, for the audit history; the
    /// default for a working tree that is no commit.
    pub meta: Option<crate::source::CommitMeta>,
}

/// Loads the repository (working tree, or `--revision` / a `file://` URL
/// read from Git) and the commit id records are kept under.
pub fn load_commit(repo: &Path, revision: Option<&str>) -> Result<Loaded> {
    match repo_snapshot(repo, revision)? {
        Some(snap) => Ok(Loaded {
            files: (*snap.files).clone(),
            commit: snap.commit,
            meta: Some(snap.meta),
        }),
        None => {
            let files = read_repo(repo)?;
            let (commit, meta) = worktree_commit(repo, &files);
            Ok(Loaded {
                files,
                commit,
                meta,
            })
        }
    }
}

/// HEAD (and its metadata) when the working tree is a clean Git checkout,
/// else a content hash (`worktree-<hash>`), so the gate compares like with
/// like.
fn worktree_commit(repo: &Path, files: &Files) -> (String, Option<crate::source::CommitMeta>) {
    if let Some((head, meta)) = clean_head(repo) {
        return (head, meta);
    }
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (path, bytes) in files.iter() {
        h.update(path.as_bytes());
        h.update([0]);
        h.update(bytes);
    }
    let hex: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (format!("worktree-{hex}"), None)
}

/// HEAD of the Git checkout holding `repo`, when nothing tidegate reads
/// (environments/, modules/, secrets/, .sops.yaml) differs from it, with
/// its metadata when it can be read.
fn clean_head(repo: &Path) -> Option<(String, Option<crate::source::CommitMeta>)> {
    let r = git2::Repository::discover(repo).ok()?;
    let workdir = r.workdir()?.canonicalize().ok()?;
    let rel = repo.canonicalize().ok()?;
    let rel = rel.strip_prefix(&workdir).ok()?;
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true).recurse_untracked_dirs(true);
    for p in ["environments", "modules", "secrets", ".sops.yaml"] {
        let spec = rel.join(p);
        opts.pathspec(spec.to_string_lossy().as_ref());
    }
    let statuses = r.statuses(Some(&mut opts)).ok()?;
    if !statuses.is_empty() {
        return None;
    }
    let head = r.head().ok()?.peel_to_commit().ok()?.id();
    let meta = crate::source::CommitMeta::read(&r, head).ok();
    Some((head.to_string(), meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_is_a_folder_or_a_file_url() {
        let parse = |s: &str| RepoArg::parse(Path::new(s));
        assert_eq!(parse(".").unwrap(), RepoArg::Dir(".".into()));
        assert_eq!(
            parse("infra/live").unwrap(),
            RepoArg::Dir("infra/live".into())
        );
        assert_eq!(
            parse("file:///srv/git/infra.git").unwrap(),
            RepoArg::FileUrl("/srv/git/infra.git".into())
        );
        assert_eq!(
            parse("file://localhost/srv/my%20infra.git").unwrap(),
            RepoArg::FileUrl("/srv/my infra.git".into())
        );
        for bad in [
            "file://srv/infra.git",
            "https://example.com/infra.git",
            "ssh://git@example.com/infra.git",
            "git@example.com:infra.git",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("a file:// URL of a local Git repository"), "{e}");
        }
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
