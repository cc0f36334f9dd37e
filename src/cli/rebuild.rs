//! `tidegate rebuild`: disaster recovery from Git alone. The apply pipeline
//! without the promotion gate, into empty or partly destroyed targets (or a
//! blue/green copy under a new owner name), followed by the RTO report:
//! each step's time, the total, and the critical path of the graph (the
//! lower bound with unlimited parallelism).

use std::io::Write;
use std::time::Duration;

use serde::Serialize;

use super::apply::{self, CommonArgs, EnvResult, Mode, Result};
use crate::execute::ResourceOutcome;

/// `tidegate rebuild`.
#[derive(Debug, Clone, clap::Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Build a parallel copy owned by this name (blue/green: `prod-green`);
    /// `${env.name}` renders as it, so names and ownership marks differ.
    #[arg(long = "as", value_name = "NAME")]
    pub as_name: Option<String>,
    /// Show what would be created and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON (after the progress text on stderr).
    #[arg(long)]
    pub json: bool,
}

/// The RTO report of one environment.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvReport {
    pub environment: String,
    pub owner: String,
    pub converged: bool,
    /// Measured wall time: connect, observe, apply, health, prune.
    pub rto_ms: u64,
    /// Longest dependency chain of per-resource durations.
    pub critical_path_ms: u64,
    /// `rto / critical path` (1.0 is the best parallel schedule).
    pub ratio: f64,
    pub steps: Vec<ResourceOutcome>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The report of one environment's result.
pub fn report(r: &EnvResult) -> EnvReport {
    let ratio = if r.critical_path.is_zero() {
        0.0
    } else {
        r.wall.as_secs_f64() / r.critical_path.as_secs_f64()
    };
    EnvReport {
        environment: r.env.clone(),
        owner: r.owner.clone(),
        converged: r.outcome.as_ref().is_some_and(|o| o.converged()),
        rto_ms: ms(r.wall),
        critical_path_ms: ms(r.critical_path),
        ratio,
        steps: r
            .outcome
            .as_ref()
            .map(|o| o.resources.clone())
            .unwrap_or_default(),
    }
}

/// Runs `tidegate rebuild`; returns the exit code.
pub fn run(args: &RebuildArgs, out: &mut dyn Write) -> Result<u8> {
    let mode = Mode {
        rebuild: true,
        owner: args.as_name.clone(),
        prune: true,
        dry_run: args.dry_run,
        saved: None,
        targets: Vec::new(),
        vars: None,
        event: None,
    };
    let mut text: Vec<u8> = Vec::new();
    let (code, results) = {
        let sink: &mut dyn Write = if args.json { &mut text } else { out };
        apply::run_pipeline(&args.common, &mode, sink)?
    };
    if args.json {
        eprint!("{}", String::from_utf8_lossy(&text));
    }
    let reports: Vec<EnvReport> = results
        .iter()
        .filter(|r| r.outcome.is_some())
        .map(report)
        .collect();
    if args.json {
        let json = serde_json::to_string_pretty(&reports).expect("a report serialises");
        writeln!(out, "{json}").map_err(super::Error::from)?;
        return Ok(code);
    }
    for r in &reports {
        writeln!(
            out,
            "{}: RTO {:.2}s, critical path {:.2}s, ratio {:.2}{}",
            r.owner,
            r.rto_ms as f64 / 1000.0,
            r.critical_path_ms as f64 / 1000.0,
            r.ratio,
            if r.converged { "" } else { " (not converged)" }
        )
        .map_err(super::Error::from)?;
    }
    Ok(code)
}
