//! `tidegate graph`: the dependency graph as Graphviz DOT, Mermaid, or the
//! apply order as text.

use std::io::Write;
use std::path::Path;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Graphviz DOT (`| dot -Tsvg`).
    Dot,
    /// A Mermaid flowchart (renders in Markdown).
    Mermaid,
    /// The apply order: levels of resources that can run in parallel.
    Text,
}

/// Prints the graph of the repository at `repo` (its working tree, or the
/// committed `revision`; one environment or all) to `out`; problems go to
/// `err`. Returns the exit code.
pub fn run(
    repo: &Path,
    revision: Option<&str>,
    env: Option<&str>,
    format: Format,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> super::Result<u8> {
    let files = super::read_repo_at(repo, revision)?;
    let checked = match super::check(&files) {
        Ok(c) => c,
        Err(report) => {
            writeln!(err, "{report}")?;
            return Ok(1);
        }
    };
    if let Some(e) = env {
        if checked.model.environment(e).is_none() {
            let known = checked.graph.environments().join(", ");
            return Err(super::Error::Usage(format!(
                "unknown environment `{e}` (environments: {known})"
            )));
        }
    }
    let text = match format {
        Format::Dot => checked.graph.to_dot(env),
        Format::Mermaid => checked.graph.to_mermaid(env),
        Format::Text => checked.graph.to_text(env),
    };
    out.write_all(text.as_bytes())?;
    Ok(0)
}
