//! `tidegate validate`: parse, resolve, graph and render every environment
//! without keys or network, and evaluate each environment's policies; exit
//! 0 when clean (warnings are shown), 1 with every problem listed or when a
//! policy finding of severity error is not waived.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::diag::Diagnostic;
use crate::policy::{self, Date};
use crate::render::{RenderOptions, StructuralSecrets};

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
    /// What could not be checked (a Kubernetes kind that is neither built
    /// in nor declared by a CustomResourceDefinition): shown, not failing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Diagnostic>,
    /// Policy results, one per environment with anything to show.
    pub policy: Vec<policy::Report>,
}

/// One environment's figures.
#[derive(Debug, Serialize)]
pub struct EnvSummary {
    pub name: String,
    pub resources: usize,
    /// Topological levels (steps of parallel apply).
    pub levels: usize,
}

/// Validates the repository at `repo` (its working tree, or the committed
/// `revision`), writing the result to `out`; returns the exit code.
pub fn run(
    repo: &Path,
    revision: Option<&str>,
    format: Format,
    out: &mut dyn Write,
) -> super::Result<u8> {
    let files = super::read_repo_at(repo, revision)?;
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
    summarise_at(files, Date::today_utc())
}

/// [`summarise`] with the date waivers are judged against.
pub fn summarise_at(files: &crate::load::Files, today: Date) -> Summary {
    match super::check(files) {
        Ok(c) => with_policy(
            Summary {
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
                warnings: c.warnings.clone(),
                policy: Vec::new(),
            },
            &c.model,
            today,
        ),
        Err(report) => {
            let (errors, warnings) = report.0.into_iter().partition(Diagnostic::is_error);
            Summary {
                valid: false,
                environments: Vec::new(),
                modules: 0,
                resources: 0,
                dependencies: 0,
                errors,
                warnings,
                policy: Vec::new(),
            }
        }
    }
}

/// Evaluates every environment's policies (structural secrets: policies
/// look at structure, never at secret values). Problems in a policy block
/// or waiver are errors; unwaived error findings make the summary invalid.
fn with_policy(mut s: Summary, model: &crate::model::Model, today: Date) -> Summary {
    let known = std::collections::HashMap::new();
    let opts = RenderOptions {
        known: &known,
        secrets: &StructuralSecrets,
        owner: None,
    };
    for env in &model.environments {
        let Ok(desired) = crate::render::render_env(model, &env.name, opts) else {
            continue; // `check` already reported it
        };
        match policy::evaluate_env(model, &env.name, &desired, today) {
            Ok(report) => {
                if report.blocks_apply() {
                    s.valid = false;
                }
                if !report.is_empty() {
                    s.policy.push(report);
                }
            }
            Err(errors) => {
                s.valid = false;
                for e in errors {
                    let prefix = format!("{}: ", e.origin());
                    let text = e.to_string();
                    let message = text.strip_prefix(&prefix).unwrap_or(&text).to_string();
                    s.errors.push(Diagnostic::new(
                        e.origin().clone(),
                        message,
                        "fix the environment's `policy:` block or the resource's waivers",
                    ));
                }
            }
        }
    }
    s
}

fn write_text(s: &Summary, out: &mut dyn Write) -> std::io::Result<()> {
    for d in s.errors.iter().chain(&s.warnings) {
        writeln!(out, "{d}")?;
    }
    let warnings = match s.warnings.len() {
        0 => String::new(),
        n => format!(", {n} warning(s)"),
    };
    if s.environments.is_empty() && !s.valid {
        return writeln!(out, "invalid: {} error(s){warnings}", s.errors.len());
    }
    let order: Vec<&str> = s.environments.iter().map(|e| e.name.as_str()).collect();
    writeln!(
        out,
        "{}: {} environments ({}), {} modules, {} resources, {} dependencies{warnings}",
        if s.valid { "valid" } else { "checked" },
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
    for r in &s.policy {
        writeln!(out, "policy of {}:", r.environment)?;
        for line in r.render_text().lines() {
            writeln!(out, "  {line}")?;
        }
    }
    if !s.valid {
        let findings: usize = s.policy.iter().map(|r| r.errors()).sum();
        writeln!(
            out,
            "invalid: {} error(s), {findings} policy error finding(s)",
            s.errors.len()
        )?;
    }
    Ok(())
}
