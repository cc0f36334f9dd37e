//! The steps every way of running an environment shares, below both the
//! command line (`cli`) and the reconciler (`reconcile`): checking a
//! repository, the signed-commit gate, and the record an apply leaves.
//! (Issue 19 grows this into the one per-environment pipeline.)

use std::collections::HashMap;

use crate::diag::{Diagnostics, Report};
use crate::execute::Outcome;
use crate::graph::Graph;
use crate::load::{self, Files};
use crate::model::Model;
use crate::render::{self, RenderOptions, StructuralSecrets};
use crate::state::{self, EnvRecord};

/// A repository that passed every check: model and graph.
pub struct Checked {
    pub model: Model,
    pub graph: Graph,
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

/// The record an outcome leaves.
pub fn record_of(outcome: &Outcome, commit: &str) -> EnvRecord {
    let problems: Vec<String> = outcome
        .resources
        .iter()
        .filter(|r| !r.status.is_success())
        .map(|r| format!("{} {}: {}", r.id, r.status, r.reason))
        .collect();
    EnvRecord {
        environment: outcome.owner.clone(),
        commit: commit.to_string(),
        converged: outcome.converged(),
        healthy: outcome.converged(),
        applied_at: state::now_rfc3339(),
        resources: outcome.resources.len(),
        problems,
    }
}

/// Loads, resolves, graphs and renders (with structural secrets) a file
/// set: everything `validate` checks without a key or network. All
/// problems are reported together.
///
/// AWS values (CIDR blocks, ports, rule sources, tags, secrets) are checked
/// twice without network: the literal values of every module (reported even
/// when other problems stop the run, at the field's line), and every
/// rendered body, at the place each value was written (an environment's
/// var, an instance's input, a default). Neither stops the other stages, so
/// one run lists them all.
pub fn check(files: &Files) -> std::result::Result<Checked, Report> {
    let mut diags = Diagnostics::default();
    let model = load::load_with(files, &mut diags);
    let mut values = Diagnostics::default();
    load::aws_values::check_modules(&model, &mut values);
    if !diags.is_empty() {
        diags.extend(values);
        return Err(Report::new(diags));
    }
    let graph = Graph::build_with(&model, &mut diags);
    if !diags.is_empty() {
        diags.extend(values);
        return Err(Report::new(diags));
    }
    let known = HashMap::new();
    let opts = RenderOptions {
        known: &known,
        secrets: &StructuralSecrets,
        owner: None,
    };
    for env in &model.environments {
        match render::render_env(&model, &env.name, opts) {
            Ok(desired) => {
                load::aws_values::check_rendered(&model, &env.name, &desired, &mut values)
            }
            Err(e) => push_render_error(&mut diags, e),
        }
    }
    diags.extend(values);
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
