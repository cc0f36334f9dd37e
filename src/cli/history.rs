//! `tidegate history`: the audit history (crate::state::history) of one
//! environment, or of every environment of the repository merged by time,
//! read from where each environment keeps its records: its cluster, or
//! the state directory. The repository only says where that is.

use std::io::Write;
use std::path::PathBuf;

use k8s_openapi::jiff::Timestamp;

use crate::model::{Environment, Model};
use crate::state::history::{self, Entry};
use crate::state::{self, RecordStore};

/// The history could not be read (problems in the repository are reported
/// and turned into exit code 1 instead).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cli(#[from] super::Error),
    /// A store (ConfigMap, file) could not be read.
    #[error(transparent)]
    State(#[from] state::Error),
    /// The async runtime could not start.
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How entries are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per entry, columns aligned: time, environment, event,
    /// outcome, commit, subject, counts (+create ~update -delete
    /// =unchanged), duration, resources, reason, error.
    Text,
    /// One JSON array.
    Json,
    /// One JSON object per line (for a SIEM).
    Jsonl,
}

/// `tidegate history`.
#[derive(Debug, Clone, clap::Args)]
pub struct HistoryArgs {
    /// The environment (a `rebuild --as` copy by its name); default: every
    /// environment of the repository, merged by time.
    pub env: Option<String>,
    /// Only entries since then: a duration back from now (2h, 30m, 7days)
    /// or an RFC 3339 time (2024-05-01T12:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// The repository whose environments say where each history lives: a
    /// folder, or a file:// URL of a local Git repository (read at
    /// --revision, default HEAD).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Read the environments from this Git revision instead of the working
    /// tree.
    #[arg(long)]
    pub revision: Option<String>,
    /// Where the histories of environments without a Kubernetes target are
    /// kept.
    #[arg(long, default_value = ".tidegate/state")]
    pub state_dir: PathBuf,
}

/// Runs `tidegate history`; returns the exit code: 0, or 1 when the
/// repository is invalid or, without an environment named, the history of
/// some environment could not be read (the others are printed, the
/// problems on `err`).
pub fn run(args: &HistoryArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8> {
    let since = args
        .since
        .as_deref()
        .map(|s| history::parse_since(s, Timestamp::now()))
        .transpose()
        .map_err(|e| super::Error::Usage(format!("--since {e}")))?;
    let files = super::read_repo_at(&args.repo, args.revision.as_deref())?;
    let mut diags = crate::diag::Diagnostics::default();
    let model = crate::load::load_with(&files, &mut diags);
    if diags.has_errors() {
        for d in diags.sorted() {
            writeln!(out, "{d}").map_err(super::Error::from)?;
        }
        writeln!(
            out,
            "invalid repository: the environments say where their history is kept; fix it, or pass --revision"
        )
        .map_err(super::Error::from)?;
        return Ok(1);
    }
    let rt = tokio::runtime::Runtime::new().map_err(Error::Runtime)?;
    let (entries, unread) = rt.block_on(collect(&model, args))?;
    let entries = history::since(entries, since);
    print(&entries, args.format, out)?;
    for (env, e) in &unread {
        writeln!(err, "error: the history of {env} could not be read: {e}")
            .map_err(super::Error::from)?;
    }
    Ok(if unread.is_empty() { 0 } else { 1 })
}

async fn store(env: &Environment, args: &HistoryArgs) -> Result<RecordStore> {
    Ok(RecordStore::for_target(env.kubernetes.as_ref(), &args.state_dir, &env.project).await?)
}

/// The entries asked for, oldest first, and without an environment named,
/// the environments whose history could not be read, with why.
async fn collect(model: &Model, args: &HistoryArgs) -> Result<(Vec<Entry>, Vec<(String, Error)>)> {
    let mut entries = Vec::new();
    let mut unread = Vec::new();
    match &args.env {
        Some(name) => match model.environment(name) {
            Some(env) => entries = store(env, args).await?.history(name).await?,
            None => {
                // A blue/green copy keeps its history beside its
                // environment's record: look in every store once.
                let mut seen = Vec::new();
                for env in &model.environments {
                    let place = (
                        env.kubernetes.as_ref().map(|k| k.context.clone()),
                        env.project.clone(),
                    );
                    if seen.contains(&place) {
                        continue;
                    }
                    seen.push(place);
                    entries.extend(store(env, args).await?.history(name).await?);
                }
                if entries.is_empty() {
                    let names: Vec<&str> =
                        model.environments.iter().map(|e| e.name.as_str()).collect();
                    return Err(super::Error::Usage(format!(
                        "no environment {name} in the repository (it has {}), and no history under that name",
                        names.join(", ")
                    ))
                    .into());
                }
            }
        },
        None => {
            for env in &model.environments {
                let read = match store(env, args).await {
                    Ok(store) => store.history(&env.name).await.map_err(Error::from),
                    Err(e) => Err(e),
                };
                match read {
                    Ok(found) => entries.extend(found),
                    Err(e) => unread.push((env.name.clone(), e)),
                }
            }
        }
    }
    history::sort(&mut entries);
    Ok((entries, unread))
}

/// Prints `entries` in `format`.
pub fn print(entries: &[Entry], format: Format, out: &mut dyn Write) -> Result<()> {
    let mut text = String::new();
    match format {
        Format::Text => text = history::text(entries),
        Format::Json => {
            text = serde_json::to_string_pretty(entries).expect("entries serialise");
            text.push('\n');
        }
        Format::Jsonl => {
            for e in entries {
                text.push_str(&serde_json::to_string(e).expect("an entry serialises"));
                text.push('\n');
            }
        }
    }
    out.write_all(text.as_bytes()).map_err(super::Error::from)?;
    Ok(())
}
