//! The command implementations behind `src/main.rs`, one file per command.
//!
//! Each command takes its options and a writer and returns the process exit
//! code, so golden tests can run it in memory and `main` stays a flat match.
//! A new command is one new file here and one arm in `main`.

use std::collections::HashMap;
use std::path::Path;

use crate::diag::{Diagnostics, Report};
use crate::graph::Graph;
use crate::load::{self, Files};
use crate::model::Model;
use crate::render::{self, RenderOptions, StructuralSecrets};

pub mod apply;
pub mod graph;
pub mod plan;
pub mod rebuild;
pub mod reconcile;
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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A repository that passed every check: model and graph.
pub struct Checked {
    pub model: Model,
    pub graph: Graph,
}

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

/// Why a commit may not be applied to `env`, which requires a trusted
/// signature; `None` when it may.
pub fn signature_refusal(
    env: &crate::model::Environment,
    commit: &str,
    verdict: &crate::source::Verification,
    trust: &crate::source::TrustList,
) -> Option<String> {
    use crate::source::SignaturePolicy;
    if !env.require_signed_commits || SignaturePolicy::RequireTrusted.allows(verdict) {
        return None;
    }
    let short = &commit[..commit.len().min(12)];
    let hint = if trust.is_empty() {
        "no trusted keys are configured: pass --trusted-signers FILE or --trusted-pgp-keys FILE"
    } else {
        "sign the commit with a key listed in --trusted-signers or --trusted-pgp-keys"
    };
    Some(format!(
        "commit {short} is not applied to {}: {verdict}, and {} sets `requireSignedCommits: true`; {hint}",
        env.name, env.file
    ))
}

/// Reads the working tree of the folder `repo` from disk.
pub fn read_repo(repo: &Path) -> Result<Files> {
    Ok(load::read_dir(repo)?)
}

/// Reads the repository at `repo`: its working tree, or with `revision`
/// (any revision git accepts: branch, tag, commit id, `HEAD`, `main~1`,
/// `origin/main`) the committed files, read from its object store.
pub fn read_repo_at(repo: &Path, revision: Option<&str>) -> Result<Files> {
    match repo_snapshot(repo, revision)? {
        Some(snap) => Ok((*snap.files).clone()),
        None => read_repo(repo),
    }
}

/// The commit `--revision` names in the Git repository holding `repo`;
/// `None` for the working tree (no `--revision`).
pub fn repo_snapshot(
    repo: &Path,
    revision: Option<&str>,
) -> Result<Option<crate::source::Snapshot>> {
    match revision {
        None => Ok(None),
        Some(revision) => Ok(Some(crate::source::read_local(repo, revision)?)),
    }
}

/// Loads, resolves, graphs and renders (with structural secrets) a file
/// set: everything `validate` checks without a key or network. All
/// problems are reported together.
pub fn check(files: &Files) -> std::result::Result<Checked, Report> {
    let mut diags = Diagnostics::default();
    let model = load::load_with(files, &mut diags);
    if !diags.is_empty() {
        return Err(Report::new(diags));
    }
    let graph = Graph::build_with(&model, &mut diags);
    if !diags.is_empty() {
        return Err(Report::new(diags));
    }
    let known = HashMap::new();
    let opts = RenderOptions {
        known: &known,
        secrets: &StructuralSecrets,
        owner: None,
    };
    for env in &model.environments {
        if let Err(e) = render::render_env(&model, &env.name, opts) {
            push_render_error(&mut diags, e);
        }
    }
    if diags.is_empty() {
        Ok(Checked { model, graph })
    } else {
        Err(Report::new(diags))
    }
}

fn push_render_error(diags: &mut Diagnostics, e: render::Error) {
    match e {
        render::Error::Eval {
            origin,
            what,
            source,
        } => diags.error(
            &origin,
            format!("{what}: {source}"),
            "fix the reference or the value it points at",
        ),
        render::Error::Cycle { origin, what } => diags.error(
            &origin,
            format!("{what} refers to itself through other values (a reference cycle)"),
            "break the chain of `${module...}` / `${input...}` references",
        ),
        other => diags.error(&Default::default(), other.to_string(), ""),
    }
}
