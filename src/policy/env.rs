//! Policy evaluation of one environment of a loaded model: the glue between
//! the loader's model, rendered resources and [`evaluate`].

use crate::model::Model;
use crate::resource::Desired;
use crate::resource::ProviderKind;
use crate::value::Spans;

use super::{evaluate_traced, ConfigError, Date, PolicyConfig, Report, Subject, Waiver};

/// Evaluates the policies of environment `env` over its rendered resources
/// `desired` (from `render::render_env`), with the environment's `policy:`
/// block (or the defaults for its name) and the waivers written on each
/// resource. Errors are problems in the policy block or a waiver list, each
/// with its file:line.
pub fn evaluate_env(
    model: &Model,
    env: &str,
    desired: &[Desired],
    today: Date,
) -> Result<Report, Vec<ConfigError>> {
    let Some(environment) = model.environments.iter().find(|e| e.name == env) else {
        return Ok(Report {
            environment: env.to_string(),
            ..Report::default()
        });
    };
    let mut errors = Vec::new();
    let config = match &environment.policy {
        Some(block) => PolicyConfig::parse(env, &block.value, &block.spans, "")
            .map_err(|e| errors.extend(e))
            .ok(),
        None => Some(PolicyConfig::defaults(env)),
    };
    let mut owned: Vec<(&Desired, ProviderKind, &Spans, Vec<Waiver>)> = Vec::new();
    for d in desired {
        let resource = environment
            .instance(&d.id.module)
            .and_then(|i| model.modules.get(&i.source))
            .and_then(|m| m.resource(&d.id.name));
        let Some(resource) = resource else { continue };
        let spans = &resource.spans;
        let waivers = match resource.waivers.as_ref() {
            Some(w) => Waiver::parse_all(&w.value, &w.spans, "").unwrap_or_else(|e| {
                errors.extend(e);
                Vec::new()
            }),
            None => Vec::new(),
        };
        owned.push((d, resource.provider, spans, waivers));
    }
    let config = match config {
        Some(c) if errors.is_empty() => c,
        _ => return Err(errors),
    };
    let subjects: Vec<Subject<'_>> = owned
        .iter()
        .map(|(d, provider, spans, waivers)| Subject {
            environment: env,
            id: &d.id,
            provider: *provider,
            kind: &d.kind,
            body: &d.body,
            spans,
            origin: &d.origin,
            waivers,
        })
        .collect();
    let tracer = super::ModelTrace {
        model,
        env: environment,
    };
    Ok(evaluate_traced(&config, &subjects, today, &tracer))
}
