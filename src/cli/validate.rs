//! `tidegate validate`: parse, resolve, graph and render every environment
//! without keys or network; exit 0 when clean, 1 with every problem listed.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::diag::Diagnostic;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// What validation found, as printed in JSON.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub valid: bool,
    pub environments: Vec<EnvSummary>,
    pub modules: usize,
    pub resources: usize,
    pub dependencies: usize,
    pub errors: Vec<Diagnostic>,
}

/// One environment's figures.
#[derive(Debug, Serialize)]
pub struct EnvSummary {
    pub name: String,
    pub resources: usize,
    /// Topological levels (steps of parallel apply).
    pub levels: usize,
}

/// Validates the repository at `repo`, writing the result to `out`;
/// returns the exit code.
pub fn run(repo: &Path, format: Format, out: &mut dyn Write) -> super::Result<u8> {
    let files = super::read_repo(repo)?;
    let summary = summarise(&files);
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &summary).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Format::Text => write_text(&summary, out)?,
    }
    Ok(if summary.valid { 0 } else { 1 })
}

/// Checks a file set and summarises the result.
pub fn summarise(files: &crate::load::Files) -> Summary {
    match super::check(files) {
        Ok(c) => Summary {
            valid: true,
            environments: c
                .model
                .environments
                .iter()
                .map(|e| EnvSummary {
                    name: e.name.clone(),
                    resources: c.model.resources(e).count(),
                    levels: c.graph.levels(&e.name).len(),
                })
                .collect(),
            modules: c.model.modules.len(),
            resources: c.model.resource_count(),
            dependencies: c.graph.edge_count(),
            errors: Vec::new(),
        },
        Err(report) => Summary {
            valid: false,
            environments: Vec::new(),
            modules: 0,
            resources: 0,
            dependencies: 0,
            errors: report.0,
        },
    }
}

fn write_text(s: &Summary, out: &mut dyn Write) -> std::io::Result<()> {
    if !s.valid {
        for d in &s.errors {
            writeln!(out, "{d}")?;
        }
        return writeln!(out, "invalid: {} error(s)", s.errors.len());
    }
    let order: Vec<&str> = s.environments.iter().map(|e| e.name.as_str()).collect();
    writeln!(
        out,
        "valid: {} environments ({}), {} modules, {} resources, {} dependencies",
        s.environments.len(),
        order.join(" < "),
        s.modules,
        s.resources,
        s.dependencies
    )?;
    for e in &s.environments {
        writeln!(
            out,
            "  {}: {} resources in {} levels",
            e.name, e.resources, e.levels
        )?;
    }
    Ok(())
}
