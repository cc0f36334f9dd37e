//! The preview: what applying Git would do, per environment, module and
//! resource, with field-level changes, secrets masked.
//!
//! The diff step is pure: desired resources (rendered from the model) are
//! compared with a "before" that is one of
//!
//! - the live state of the environment ([`LiveState`] from
//!   [`crate::observe`]), refined by each provider's own prediction
//!   ([`Provider::plan`]: a server-side dry-run for Kubernetes, replace
//!   reasons for AWS) when one is given ([`build_env_with`]);
//! - nothing (`--offline`: everything is a create; [`build_env`] with no
//!   live state);
//! - the desired state of another revision ([`build_revisions`], for pull
//!   requests: no credentials needed).
//!
//! The I/O around it ([`plan_env`]) observes and asks
//! the providers, then calls the pure step. Text, Markdown and JSON forms are in [`output`].

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use serde::Serialize;

use crate::diff::{self, FieldChange};
use crate::graph::Graph;
use crate::model::{Environment, Model};
use crate::observe::{self, LiveState, Providers};
use crate::policy::{self, Date};
use crate::provider;
use crate::render::{self, RenderOptions, SecretLookup};
use crate::resource::{Action, Change, Desired, ProviderKind, ResourceId};
use crate::value::{key_path, Origin, Value};

pub mod output;
pub mod saved;
pub mod secrets;
pub mod target;

/// The version of the JSON document ([`Plan`]); see docs/plan-json.md.
pub const SCHEMA_VERSION: u32 = 1;

/// How many `Provider::plan` calls run at once per environment.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// Planning failed (as opposed to planning changes, which is a result).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The environment is not in the model.
    #[error("unknown environment `{0}`; the repository declares: {1}")]
    UnknownEnvironment(String, String),
    /// Rendering a desired resource failed.
    #[error("environment {env}: {source}")]
    Render {
        env: String,
        #[source]
        source: Box<render::Error>,
    },
    /// Connecting or observing failed.
    #[error(transparent)]
    Observe(#[from] observe::Error),
    /// A provider could not predict a change: the server rejects the
    /// object (validation, an unknown kind) or could not be asked.
    #[error("environment {env}: planning {id} ({origin}): {}", provider_text(.source))]
    Provider {
        env: String,
        id: ResourceId,
        /// Where the resource is declared.
        origin: provider::Origin,
        #[source]
        source: Box<provider::Error>,
    },
    /// Several resources failed as in [`Error::Provider`]: every one is
    /// listed, so a user fixes them in one pass.
    #[error("environment {env}: {} resources cannot be applied; fix each, then plan again:{}", .failures.len(), list_failures(.failures))]
    Providers { env: String, failures: Vec<Error> },
}

fn list_failures(failures: &[Error]) -> String {
    failures
        .iter()
        .map(|f| match f {
            Error::Provider {
                id, origin, source, ..
            } => format!("\n  {origin}: {id}: {}", provider_text(source)),
            other => format!("\n  {other}"),
        })
        .collect()
}

/// A provider's error under a line that already names the resource and
/// where it is declared: an invalid resource's message without them again.
fn provider_text(e: &provider::Error) -> String {
    match e {
        provider::Error::Invalid { message, .. } => message.clone(),
        other => error_chain(other),
    }
}

/// An error and its sources on one line (`a: b: c`), repeats left out.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = s.source();
    }
    text
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The whole preview: one entry per environment, in promotion order.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// What "before" is.
    pub source: PlanSource,
    pub environments: Vec<EnvPlan>,
}

/// What the desired state was compared with.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum PlanSource {
    /// The live state observed from the providers.
    Live,
    /// Nothing: everything is a create.
    Offline,
    /// The desired state of another revision.
    Revisions { base: Revision, head: Revision },
}

/// One side of a revision comparison.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Revision {
    /// What was asked for (`main`, `HEAD~1`, a commit id).
    pub reference: String,
    /// The commit it resolved to.
    pub commit: String,
}

impl Plan {
    /// A plan of `environments` compared with `source`.
    pub fn new(source: PlanSource, environments: Vec<EnvPlan>) -> Plan {
        Plan {
            schema_version: SCHEMA_VERSION,
            source,
            environments,
        }
    }

    /// True when any environment has a create, update, replace or delete.
    pub fn has_changes(&self) -> bool {
        self.environments.iter().any(|e| e.counts.changes() > 0)
    }

    /// True when any environment's policy blocks apply or its policy block
    /// is invalid.
    pub fn policy_blocks(&self) -> bool {
        self.environments.iter().any(|e| {
            !e.policy_errors.is_empty() || e.policy.as_ref().is_some_and(|p| p.blocks_apply())
        })
    }
}

/// The preview of one environment.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvPlan {
    pub name: String,
    /// The owner name in ownership marks (differs from `name` in a
    /// blue/green rebuild).
    pub owner: String,
    /// Environments that must be converged and healthy at the same commit
    /// before this one starts (its promotion gate).
    pub waits_for: Vec<String>,
    pub counts: Counts,
    /// Module instances in declaration order (removed ones last).
    pub modules: Vec<ModulePlan>,
    /// The order changes would run in: each step's resources run in
    /// parallel, after every earlier step; deletes come last.
    pub order: Vec<Step>,
    /// Policy findings of the desired state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<policy::Report>,
    /// Problems in the policy block or waivers (file:line: message).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy_errors: Vec<String>,
    /// What a reader should know about how the plan was made.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The environment's promotion rules beyond the gate (manual approval,
    /// soak, windows), described; part of the gate line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotion: Vec<String>,
    /// Blast-radius guards this plan trips: applying it stops unless the
    /// guard's flag is given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub guards: Vec<GuardTrip>,
    /// A targeted plan (`--target`): its targets and what it leaves out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<target::Targeted>,
}

/// A blast-radius guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guard {
    /// More deletes than the environment's `guards` allow.
    MassDelete,
    /// A delete or replace in an environment with `protect: true`.
    Protected,
}

impl Guard {
    /// The status reason and metric label (`mass-delete`, `protected`).
    pub fn label(self) -> &'static str {
        match self {
            Guard::MassDelete => "mass-delete",
            Guard::Protected => "protected",
        }
    }

    /// The flag that lets `apply` go on.
    pub fn flag(self) -> &'static str {
        match self {
            Guard::MassDelete => "--allow-mass-delete",
            Guard::Protected => "--allow-destroy",
        }
    }
}

/// A guard a plan trips, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GuardTrip {
    pub guard: Guard,
    pub message: String,
}

impl std::fmt::Display for GuardTrip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}; apply stops here unless given {}",
            self.guard.label(),
            self.message,
            self.guard.flag()
        )
    }
}

/// The guards a plan of `environment` with these `counts` trips, when
/// `existing` resources exist before it (those it deletes among them).
pub fn guard_trips<'a>(
    environment: &crate::model::Environment,
    resources: impl IntoIterator<Item = &'a ResourcePlan>,
    existing: usize,
) -> Vec<GuardTrip> {
    let destroying: Vec<&ResourcePlan> = resources
        .into_iter()
        .filter(|r| matches!(r.action, Action::Delete | Action::Replace { .. }))
        .collect();
    let mut out = Vec::new();
    let deletes = destroying
        .iter()
        .filter(|r| r.action == Action::Delete)
        .count();
    if let Some(why) = environment.guards.mass_delete(deletes, existing) {
        out.push(GuardTrip {
            guard: Guard::MassDelete,
            message: format!(
                "the plan deletes {why} (`guards:` in tidegate.yaml or {} set the limits)",
                environment.file
            ),
        });
    }
    let destroyed: Vec<String> = destroying.iter().map(|r| r.id.to_string()).collect();
    if environment.protect && !destroyed.is_empty() {
        const SHOWN: usize = 5;
        let more = destroyed.len().saturating_sub(SHOWN);
        out.push(GuardTrip {
            guard: Guard::Protected,
            message: format!(
                "environment {} is protected (`protect: true` in {}) and the plan destroys {} \
                 resource(s): {}{}",
                environment.name,
                environment.file,
                destroyed.len(),
                destroyed[..destroyed.len().min(SHOWN)].join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ),
        });
    }
    out
}

impl EnvPlan {
    /// `sha256:<hex>` of the plan as canonical JSON (what `plan --format
    /// json` prints for it, secrets masked): equal plans, equal digests.
    pub fn digest(&self) -> String {
        use sha2::Digest;
        let value = serde_json::to_value(self).expect("a plan serialises");
        let bytes = crate::value::canonical_json(&value);
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
    }

    /// What the audit history keeps of the plan: its digest and counts.
    pub fn summary(&self) -> crate::state::history::PlanSummary {
        let c = self.counts;
        crate::state::history::PlanSummary {
            digest: self.digest(),
            create: c.create,
            update: c.update + c.replace,
            delete: c.delete,
            unchanged: c.no_op,
        }
    }

    /// Every resource, module by module.
    pub fn resources(&self) -> impl Iterator<Item = &ResourcePlan> {
        self.modules.iter().flat_map(|m| m.resources.iter())
    }
}

/// The resources of one module instance.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModulePlan {
    /// The instance name (`network`).
    pub name: String,
    /// The module source (`modules/network`), empty when removed from Git.
    pub source: String,
    pub counts: Counts,
    /// In step order, then by name.
    pub resources: Vec<ResourcePlan>,
}

/// One step of the order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    /// 1-based.
    pub step: usize,
    /// `module.name` of each changed resource in the step.
    pub resources: Vec<String>,
}

/// How many resources get each action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub no_op: usize,
}

impl Counts {
    fn add(&mut self, a: &Action) {
        match a {
            Action::Create => self.create += 1,
            Action::Update => self.update += 1,
            Action::Replace { .. } => self.replace += 1,
            Action::Delete => self.delete += 1,
            Action::NoOp => self.no_op += 1,
        }
    }

    /// Resources that change.
    pub fn changes(&self) -> usize {
        self.create + self.update + self.replace + self.delete
    }
}

/// The preview of one resource.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourcePlan {
    /// `module.name`.
    #[serde(serialize_with = "as_display")]
    pub id: ResourceId,
    pub provider: ProviderKind,
    /// `apps/v1/Deployment`, `vpc`, ...
    pub kind: String,
    /// `{"type": "create"}`, `{"type": "replace", "reasons": [...]}`, ...
    pub action: Action,
    /// The step of [`EnvPlan::order`] it runs in.
    pub step: usize,
    /// The provider's name for the live object, when it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Where it is declared (absent for a delete).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// Changed fields (every field for a create, none for a delete or no-op).
    pub changes: Vec<FieldChange>,
}

fn as_display<T: std::fmt::Display, S: serde::Serializer>(
    v: &T,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// What [`build_env_with`] may use besides the model.
#[derive(Clone, Copy)]
pub struct BuildOptions<'a> {
    /// Renders `${env.name}` and ownership as this name (blue/green).
    pub owner: Option<&'a str>,
    /// The date waivers are judged against.
    pub today: Date,
    /// The providers' predictions, by resource id; a resource without one
    /// is compared locally with its live body.
    pub predictions: Option<&'a HashMap<ResourceId, Change>>,
}

/// The pure diff step for one environment: the desired state of `env`
/// (rendered with `secrets` and, when `live` is given, the live
/// attributes) compared with `live`, or with nothing (`None`, offline:
/// everything is a create). Policy is evaluated on the desired state.
pub fn build_env(
    model: &Model,
    graph: &Graph,
    env: &str,
    live: Option<&LiveState>,
    secrets: &dyn SecretLookup,
    owner: Option<&str>,
) -> Result<EnvPlan> {
    let opts = BuildOptions {
        owner,
        today: Date::today_utc(),
        predictions: None,
    };
    build_env_with(model, graph, env, live, secrets, &opts)
}

fn environment<'m>(model: &'m Model, env: &str) -> Result<&'m crate::model::Environment> {
    model.environment(env).ok_or_else(|| {
        let names: Vec<&str> = model.environments.iter().map(|e| e.name.as_str()).collect();
        Error::UnknownEnvironment(env.to_string(), names.join(", "))
    })
}

/// Renders the desired resources of `env` against what `live` knows.
pub fn render_desired(
    model: &Model,
    env: &str,
    live: Option<&LiveState>,
    secrets: &dyn SecretLookup,
    owner: Option<&str>,
) -> Result<Vec<Desired>> {
    let none = HashMap::new();
    let known: &dyn crate::render::Known = match live {
        Some(l) => l,
        None => &none,
    };
    let opts = RenderOptions {
        known,
        secrets,
        owner,
    };
    render::render_env(model, env, opts).map_err(|source| Error::Render {
        env: env.to_string(),
        source: Box::new(source),
    })
}

/// [`build_env`] with the providers' predictions and an explicit date.
pub fn build_env_with(
    model: &Model,
    graph: &Graph,
    env: &str,
    live: Option<&LiveState>,
    secrets: &dyn SecretLookup,
    opts: &BuildOptions<'_>,
) -> Result<EnvPlan> {
    let desired = render_desired(model, env, live, secrets, opts.owner)?;
    build_env_from(model, graph, env, live, &desired, opts)
}

/// [`build_env_with`] from the desired resources already rendered against
/// `live` (the live plan renders once, for the predictions and the plan).
pub fn build_env_from(
    model: &Model,
    graph: &Graph,
    env: &str,
    live: Option<&LiveState>,
    desired: &[Desired],
    opts: &BuildOptions<'_>,
) -> Result<EnvPlan> {
    let environment = environment(model, env)?;
    let steps = step_of(graph, env);
    let last = steps.values().copied().max().unwrap_or(0) + 1;
    let mut out = Vec::new();
    for d in desired {
        let live_obj = live.and_then(|l| l.resources.get(&d.id));
        let local;
        let change = match opts.predictions.and_then(|p| p.get(&d.id)) {
            Some(c) => c,
            None => {
                local = local_change(d, live_obj.map(|o| &o.live.body));
                &local
            }
        };
        let provider = graph.provider_of(env, &d.id);
        out.push(resource_plan(
            d.id.clone(),
            provider,
            d.kind.clone(),
            change,
            steps.get(&d.id).copied().unwrap_or(1),
            live_obj.map(|o| o.live.external_id.clone()),
            Some(d.origin.clone()),
        ));
    }
    let mut notes = Vec::new();
    if let Some(live) = live {
        let desired_ids: std::collections::HashSet<&ResourceId> =
            desired.iter().map(|d| &d.id).collect();
        let gone = live
            .resources
            .values()
            .filter(|o| !desired_ids.contains(&o.live.id));
        for o in gone.chain(live.duplicates.iter()) {
            // Already being deleted (a finalizer holds it): nothing to do.
            if let Some(why) = o.live.deleting() {
                notes.push(format!(
                    "{} {} ({}) is being deleted: {why}",
                    o.live.kind, o.live.external_id, o.live.id
                ));
                continue;
            }
            if let Some(why) = crate::observe::kept(&o.live) {
                notes.push(format!(
                    "{} {} ({}) is no longer declared but kept: {why}",
                    o.live.kind, o.live.external_id, o.live.id
                ));
                continue;
            }
            out.push(delete_plan(
                o.live.id.clone(),
                o.provider,
                o.live.kind.clone(),
                Some(o.live.external_id.clone()),
                last,
            ));
        }
    }
    let (policy, policy_errors) = evaluate_policy(model, env, desired, opts.today);
    let sources: Vec<(String, String)> = environment
        .instances
        .iter()
        .map(|i| (i.name.clone(), i.source.clone()))
        .collect();
    let mut plan = assemble(
        env,
        opts.owner.unwrap_or(env),
        environment.after.iter().map(|(n, _)| n.clone()).collect(),
        &sources,
        out,
        policy,
        policy_errors,
    );
    plan.notes.extend(notes);
    plan.promotion = crate::promotion::describe(&environment.promotion);
    if let Some(live) = live {
        plan.guards = guard_trips(environment, plan.resources(), live.resources.len());
    }
    Ok(plan)
}

fn evaluate_policy(
    model: &Model,
    env: &str,
    desired: &[Desired],
    today: Date,
) -> (Option<policy::Report>, Vec<String>) {
    match policy::evaluate_env(model, env, desired, today) {
        Ok(r) => (Some(r), Vec::new()),
        Err(errors) => (None, errors.iter().map(|e| e.to_string()).collect()),
    }
}

/// The 1-based step of every resource of `env`.
fn step_of(graph: &Graph, env: &str) -> HashMap<ResourceId, usize> {
    graph
        .levels(env)
        .into_iter()
        .enumerate()
        .flat_map(|(i, level)| level.into_iter().map(move |id| (id, i + 1)))
        .collect()
}

/// A change computed without a provider: `live` restricted to the fields
/// the desired body sets (servers add their own), compared with it.
fn local_change(d: &Desired, live: Option<&Value>) -> Change {
    match live {
        None => Change {
            action: Action::Create,
            before: None,
            after: d.body.clone(),
        },
        Some(l) => {
            let before = project(l, &d.body);
            let action = if diff::diff(&before, &d.body).is_empty() {
                Action::NoOp
            } else {
                Action::Update
            };
            Change {
                action,
                before: Some(before),
                after: d.body.clone(),
            }
        }
    }
}

/// `before` with only the map keys `after` has (recursively).
fn project(before: &Value, after: &Value) -> Value {
    match (before, after) {
        (Value::Map(b), Value::Map(a)) => Value::Map(
            b.iter()
                .filter_map(|(k, bv)| a.get(k).map(|av| (k.clone(), project(bv, av))))
                .collect(),
        ),
        _ => before.clone(),
    }
}

fn resource_plan(
    id: ResourceId,
    provider: ProviderKind,
    kind: String,
    change: &Change,
    step: usize,
    external_id: Option<String>,
    origin: Option<Origin>,
) -> ResourcePlan {
    let (mut action, changes) = match &change.action {
        Action::Create => (Action::Create, leaves(&change.after)),
        Action::Delete | Action::NoOp => (change.action.clone(), Vec::new()),
        a => {
            let before = change.before.clone().unwrap_or(Value::Null);
            (a.clone(), diff::diff(&before, &change.after))
        }
    };
    if action == Action::Update && changes.is_empty() {
        action = Action::NoOp;
    }
    ResourcePlan {
        id,
        provider,
        kind,
        action,
        step,
        external_id,
        origin,
        changes,
    }
}

fn delete_plan(
    id: ResourceId,
    provider: ProviderKind,
    kind: String,
    external_id: Option<String>,
    step: usize,
) -> ResourcePlan {
    ResourcePlan {
        id,
        provider,
        kind,
        action: Action::Delete,
        step,
        external_id,
        origin: None,
        changes: Vec::new(),
    }
}

/// Every leaf of a new value as an added field; a secret (or a value with
/// one inside) as [`FieldChange::Sensitive`].
pub fn leaves(v: &Value) -> Vec<FieldChange> {
    fn walk(path: &str, v: &Value, out: &mut Vec<FieldChange>) {
        match v {
            Value::Map(m) if !m.is_empty() => {
                for (k, x) in m {
                    walk(&key_path(path, k), x, out);
                }
            }
            Value::List(l) if !l.is_empty() && !l.iter().any(Value::has_sensitive) => {
                for (i, x) in l.iter().enumerate() {
                    walk(&crate::value::index_path(path, i), x, out);
                }
            }
            x if x.has_sensitive() => out.push(FieldChange::Sensitive {
                path: path.to_string(),
            }),
            x => out.push(FieldChange::Add {
                path: path.to_string(),
                after: x.clone(),
            }),
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out
}

/// Groups resources by module (declaration order, removed ones last),
/// sorts each module by step and name, and derives counts and order.
fn assemble(
    env: &str,
    owner: &str,
    waits_for: Vec<String>,
    sources: &[(String, String)],
    resources: Vec<ResourcePlan>,
    policy: Option<policy::Report>,
    policy_errors: Vec<String>,
) -> EnvPlan {
    let mut by_module: BTreeMap<String, Vec<ResourcePlan>> = BTreeMap::new();
    let mut counts = Counts::default();
    let mut order: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for r in resources {
        counts.add(&r.action);
        if r.action != Action::NoOp {
            order.entry(r.step).or_default().push(r.id.to_string());
        }
        by_module.entry(r.id.module.clone()).or_default().push(r);
    }
    let mut modules = Vec::new();
    let mut push = |name: &str, source: &str, mut rs: Vec<ResourcePlan>| {
        rs.sort_by(|a, b| {
            (a.step, &a.id.name, a.external_id.as_deref()).cmp(&(
                b.step,
                &b.id.name,
                b.external_id.as_deref(),
            ))
        });
        let mut c = Counts::default();
        rs.iter().for_each(|r| c.add(&r.action));
        modules.push(ModulePlan {
            name: name.to_string(),
            // The folder, not a per-instance copy's key (`modules/app@dev/x`,
            // made for a Helm chart or an input-dependent `forEach`).
            source: source.split('@').next().unwrap_or(source).to_string(),
            counts: c,
            resources: rs,
        });
    };
    for (name, source) in sources {
        if let Some(rs) = by_module.remove(name) {
            push(name, source, rs);
        }
    }
    for (name, rs) in by_module {
        push(&name, "", rs);
    }
    let order = order
        .into_iter()
        .map(|(step, mut resources)| {
            resources.sort();
            resources.dedup();
            Step { step, resources }
        })
        .collect();
    EnvPlan {
        name: env.to_string(),
        owner: owner.to_string(),
        waits_for,
        counts,
        modules,
        order,
        policy,
        policy_errors,
        notes: Vec::new(),
        promotion: Vec::new(),
        guards: Vec::new(),
        target: None,
    }
}

/// One side of a revision comparison: a loaded model, its graph and the
/// secrets to render it with.
pub struct Side<'a> {
    pub model: &'a Model,
    pub graph: &'a Graph,
    pub secrets: &'a dyn SecretLookup,
}

/// The pure diff of environment `env` between two revisions: desired
/// against desired, no providers. An environment only in `head` is all
/// creates; only in `base`, all deletes. AWS replacements are predicted
/// from the provider's table of immutable fields.
pub fn build_revisions(
    base: &Side<'_>,
    head: &Side<'_>,
    env: &str,
    today: Date,
) -> Result<EnvPlan> {
    let in_base = base.model.environment(env).is_some();
    let in_head = head.model.environment(env).is_some();
    if !in_base && !in_head {
        environment(head.model, env)?;
    }
    let before: Vec<Desired> = if in_base {
        render_desired(base.model, env, None, base.secrets, None)?
    } else {
        Vec::new()
    };
    let after: Vec<Desired> = if in_head {
        render_desired(head.model, env, None, head.secrets, None)?
    } else {
        Vec::new()
    };
    let steps = step_of(head.graph, env);
    let last = steps.values().copied().max().unwrap_or(0) + 1;
    let old: HashMap<&ResourceId, &Desired> = before.iter().map(|d| (&d.id, d)).collect();
    let mut out = Vec::new();
    for d in &after {
        let provider = head.graph.provider_of(env, &d.id);
        let change = match old.get(&d.id) {
            None => Change {
                action: Action::Create,
                before: None,
                after: d.body.clone(),
            },
            Some(b) if b.kind != d.kind => Change {
                action: Action::Replace {
                    reasons: vec![format!("kind changes from {} to {}", b.kind, d.kind)],
                },
                before: Some(b.body.clone()),
                after: d.body.clone(),
            },
            Some(b) => {
                let reasons =
                    provider::registry::spec(provider).replace_reasons(&d.kind, &b.body, &d.body);
                let action = if !reasons.is_empty() {
                    Action::Replace { reasons }
                } else {
                    Action::Update
                };
                Change {
                    action,
                    before: Some(b.body.clone()),
                    after: d.body.clone(),
                }
            }
        };
        out.push(resource_plan(
            d.id.clone(),
            provider,
            d.kind.clone(),
            &change,
            steps.get(&d.id).copied().unwrap_or(1),
            None,
            Some(d.origin.clone()),
        ));
    }
    let new: std::collections::HashSet<&ResourceId> = after.iter().map(|d| &d.id).collect();
    for b in before.iter().filter(|b| !new.contains(&b.id)) {
        let provider = base.graph.provider_of(env, &b.id);
        out.push(delete_plan(
            b.id.clone(),
            provider,
            b.kind.clone(),
            None,
            last,
        ));
    }
    let (model, desired) = if in_head {
        (head.model, &after)
    } else {
        (base.model, &before)
    };
    let (policy, policy_errors) = if in_head {
        evaluate_policy(model, env, desired, today)
    } else {
        (None, Vec::new())
    };
    let environment = environment(model, env)?;
    let sources: Vec<(String, String)> = environment
        .instances
        .iter()
        .map(|i| (i.name.clone(), i.source.clone()))
        .collect();
    let waits_for = if in_head {
        environment.after.iter().map(|(n, _)| n.clone()).collect()
    } else {
        Vec::new()
    };
    let existing = before.len();
    let mut plan = assemble(env, env, waits_for, &sources, out, policy, policy_errors);
    if in_head {
        plan.promotion = crate::promotion::describe(&environment.promotion);
    }
    plan.guards = guard_trips(environment, plan.resources(), existing);
    if !in_head {
        plan.notes
            .push(format!("environment {env} is removed from Git in head"));
    }
    Ok(plan)
}

/// The environment names of `head` in promotion order, then those only in
/// `base` (removed).
pub fn revision_environments(base: &Model, head: &Model) -> Vec<String> {
    let mut names: Vec<String> = head.environments.iter().map(|e| e.name.clone()).collect();
    for e in &base.environments {
        if !names.contains(&e.name) {
            names.push(e.name.clone());
        }
    }
    names
}

/// What planning one environment against live state needs.
#[derive(Clone, Copy)]
pub struct PlanInput<'a> {
    pub model: &'a Model,
    pub graph: &'a Graph,
    /// The environment, resolved once by the caller.
    pub env: &'a Environment,
    pub providers: &'a Providers,
    pub secrets: &'a (dyn SecretLookup + Sync),
    /// Owner name in ownership marks and `${env.name}` (`rebuild --as`);
    /// `None` is the environment's own name.
    pub owner: Option<&'a str>,
    /// Provider predictions in flight at once (at least 1).
    pub concurrency: usize,
}

impl<'a> PlanInput<'a> {
    /// Plans `env` through `providers` with `secrets`: the environment's own
    /// owner name, [`DEFAULT_CONCURRENCY`].
    pub fn new(
        model: &'a Model,
        graph: &'a Graph,
        env: &'a Environment,
        providers: &'a Providers,
        secrets: &'a (dyn SecretLookup + Sync),
    ) -> Self {
        PlanInput {
            model,
            graph,
            env,
            providers,
            secrets,
            owner: None,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

/// Observes the environment through its providers, asks each provider for
/// its prediction of every desired resource (at most `concurrency` at
/// once), and builds the plan.
pub async fn plan_env(input: &PlanInput<'_>) -> Result<EnvPlan> {
    plan_env_live(input).await.map(|(plan, _)| plan)
}

/// [`plan_env`], also returning the live state it observed, so a run that
/// applies right after (the reconciler) starts from it instead of listing
/// every kind again.
pub async fn plan_env_live(input: &PlanInput<'_>) -> Result<(EnvPlan, LiveState)> {
    plan_env_seen(input)
        .await
        .map(|(plan, live, _)| (plan, live))
}

/// [`plan_env_live`], also returning the desired resources the plan was
/// built from (what a saved plan digests: [`saved::seen`]).
pub async fn plan_env_seen(input: &PlanInput<'_>) -> Result<(EnvPlan, LiveState, Vec<Desired>)> {
    let PlanInput {
        model,
        graph,
        providers,
        secrets,
        owner,
        concurrency,
        ..
    } = *input;
    let env = input.env.name.as_str();
    let kinds = observe::scopes_for(graph, env, owner);
    let live = observe::observe_env(providers, &kinds).await?;
    let desired = render_desired(model, env, Some(&live), secrets, owner)?;
    let predictions = predict(graph, env, &desired, &live, providers, concurrency).await?;
    let opts = BuildOptions {
        owner,
        today: Date::today_utc(),
        predictions: Some(&predictions),
    };
    let mut plan = build_env_from(model, graph, env, Some(&live), &desired, &opts)?;
    let mut live = live;
    live.predictions = desired
        .iter()
        .filter_map(|d| {
            let p = predictions.get(&d.id)?;
            let prediction = observe::Prediction {
                body: d.body.digest(),
                action: p.action.clone(),
            };
            Some((d.id.clone(), prediction))
        })
        .collect();
    let missing: Vec<String> = desired
        .iter()
        .filter_map(|d| graph.node(env, &d.id))
        .filter(|n| providers.get(n.provider).is_none())
        .map(|n| n.provider.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !missing.is_empty() {
        plan.notes.push(format!(
            "no {} provider connected: its resources were compared locally",
            missing.join(", ")
        ));
    }
    Ok((plan, live, desired))
}

async fn predict(
    graph: &Graph,
    env: &str,
    desired: &[Desired],
    live: &LiveState,
    providers: &Providers,
    concurrency: usize,
) -> Result<HashMap<ResourceId, Change>> {
    let calls = desired.iter().filter_map(|d| {
        let observed = live.resources.get(&d.id);
        let kind = observed
            .map(|o| o.provider)
            .or_else(|| graph.node(env, &d.id).map(|n| n.provider))?;
        let p = providers.get(kind)?;
        Some(async move {
            let planned = match p.plan(d, observed.map(|o| &o.live)).await {
                // Served once its CRD, declared here, is applied.
                Err(provider::Error::NotServed { .. }) if graph.defined_by_crd(env, &d.id) => {
                    Ok(Change {
                        action: provider::Action::Create,
                        before: None,
                        after: d.body.clone(),
                    })
                }
                other => other,
            };
            planned
                // Kept for every resource until the plan is built: a no-op
                // keeps no bodies.
                .map(|c| match c.action {
                    provider::Action::NoOp => (d.id.clone(), Change::no_op()),
                    _ => (d.id.clone(), c),
                })
                .map_err(|source| Error::Provider {
                    env: env.to_string(),
                    id: d.id.clone(),
                    origin: d.origin.clone(),
                    source: Box::new(source),
                })
        })
    });
    // Collected first: a lazy iterator of futures behind `stream::iter`
    // makes the caller's future fail the `Send` check rustc can prove
    // (the reconciler spawns it).
    let calls: Vec<_> = calls.collect();
    let results: Vec<Result<(ResourceId, Change)>> = futures::stream::iter(calls)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut changes = HashMap::new();
    let mut failures = Vec::new();
    for r in results {
        match r {
            Ok((id, change)) => {
                changes.insert(id, change);
            }
            Err(e) => failures.push(e),
        }
    }
    match failures.len() {
        0 => Ok(changes),
        1 => Err(failures.remove(0)),
        _ => {
            failures.sort_by_key(|f| match f {
                Error::Provider { origin, .. } => origin.clone(),
                _ => provider::Origin::default(),
            });
            Err(Error::Providers {
                env: env.to_string(),
                failures,
            })
        }
    }
}

#[cfg(test)]
mod tests;
