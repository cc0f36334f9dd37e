//! `tidegate approve`, `hold`, `release` and `rollback`: operators'
//! promotion decisions, kept beside the environment's record (its
//! cluster's ConfigMap, or the state directory) where the reconciler and
//! `tidegate apply` read them. The reconciler's HTTP API makes the same
//! changes (`POST /api/v1/environments/{env}/approve`, ...).

use std::io::Write;
use std::path::PathBuf;

use crate::promotion::{Change, Controls};
use crate::state::{self, RecordStore};

/// What every control command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlArgs {
    /// The environment.
    pub env: String,
    /// Why (kept in the controls and the audit history).
    #[arg(long)]
    pub reason: Option<String>,
    /// The repository (its working tree names the environment's cluster);
    /// revisions are resolved in the Git repository holding it.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Where records of environments without a Kubernetes target are kept.
    #[arg(long, default_value = ".tidegate/state")]
    pub state_dir: PathBuf,
}

/// `tidegate approve ENV --revision REV`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    pub common: ControlArgs,
    /// The commit approved (any revision git accepts; stored as its full
    /// id: an approval is for that one commit).
    #[arg(long)]
    pub revision: String,
}

/// `tidegate rollback ENV --to REV`.
#[derive(Debug, Clone, clap::Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub common: ControlArgs,
    /// The earlier commit to go back to (it must have been applied to the
    /// environment before).
    #[arg(long)]
    pub to: String,
}

/// Which decision.
#[derive(Debug, Clone)]
pub enum Ask {
    Approve(ApproveArgs),
    Hold(ControlArgs),
    Release(ControlArgs),
    Rollback(RollbackArgs),
}

/// Runs one control command; exit 0 done, 1 refused.
pub fn run(ask: &Ask, out: &mut dyn Write) -> super::Result<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(super::Error::Write)?;
    rt.block_on(run_async(ask, out))
}

fn short(c: &str) -> &str {
    &c[..c.len().min(12)]
}

async fn run_async(ask: &Ask, out: &mut dyn Write) -> super::Result<u8> {
    let common = match ask {
        Ask::Approve(a) => &a.common,
        Ask::Rollback(a) => &a.common,
        Ask::Hold(c) | Ask::Release(c) => c,
    };
    let files = super::read_repo_at(&common.repo, None)?;
    // Only the environment's target is needed: warnings do not stop it.
    let mut diags = crate::diag::Diagnostics::default();
    let model = crate::load::load_with(&files, &mut diags);
    if diags.has_errors() {
        return Err(crate::load::Error::Invalid(crate::diag::Report::new(diags)).into());
    }
    let Some(env) = model.environment(&common.env) else {
        let known: Vec<&str> = model.environments.iter().map(|e| e.name.as_str()).collect();
        return Err(super::Error::Usage(format!(
            "unknown environment `{}` (environments: {})",
            common.env,
            known.join(", ")
        )));
    };
    let resolve = |rev: &str| -> super::Result<String> {
        let path = match super::RepoArg::parse(&common.repo)? {
            super::RepoArg::Dir(p) | super::RepoArg::FileUrl(p) => p,
        };
        Ok(crate::source::read_local(&path, rev)?.commit)
    };
    let change = match ask {
        Ask::Approve(a) => Change::Approve {
            commit: resolve(&a.revision)?,
        },
        Ask::Rollback(a) => Change::Rollback {
            commit: resolve(&a.to)?,
        },
        Ask::Hold(_) => Change::Hold,
        Ask::Release(_) => Change::Release,
    };
    let store =
        RecordStore::for_target(env.kubernetes.as_ref(), &common.state_dir, &env.project).await?;
    let by = state::history::Subject::cli();
    let answer =
        state::control::change(&store, &env.name, &change, &by, common.reason.as_deref()).await?;
    match answer {
        Err(why) => {
            writeln!(out, "refused: {why}")?;
            Ok(1)
        }
        Ok(controls) => {
            let name = &env.name;
            match &change {
                Change::Approve { commit } => writeln!(
                    out,
                    "approved commit {} for {name}; the reconciler (or `tidegate apply --env {name} --revision {}`) applies it once its gate opens",
                    short(commit),
                    short(commit)
                )?,
                Change::Hold => writeln!(
                    out,
                    "{name} is held: nothing is applied or healed there until `tidegate release {name}`"
                )?,
                Change::Release => writeln!(out, "{name} is released: newer commits move in again")?,
                Change::Rollback { commit } => writeln!(
                    out,
                    "{name} is pinned to {}: the reconciler applies it and keeps it there (by hand: `tidegate apply --env {name} --revision {}`) until `tidegate release {name}`",
                    short(commit),
                    short(commit)
                )?,
            }
            describe(&controls, out)?;
            Ok(0)
        }
    }
}

fn describe(c: &Controls, out: &mut dyn Write) -> std::io::Result<()> {
    if let Some(h) = &c.hold {
        writeln!(out, "  held by {} at {}", h.by, h.at)?;
    }
    if let Some(p) = &c.pin {
        let commit = p.commit.as_deref().unwrap_or("");
        writeln!(out, "  pinned to {} by {} at {}", short(commit), p.by, p.at)?;
    }
    Ok(())
}
