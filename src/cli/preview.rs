//! `tidegate preview up|down|list|sweep`: short-lived copies of an
//! environment (see [`crate::preview`]).
//!
//! - `up` registers the preview (cap, slot, expiry) in the registry
//!   ([`crate::state::preview`]) before anything is built, then builds it
//!   with the `rebuild --as` path (no promotion gate) with the
//!   environment's `preview.vars` overriding its vars, and prints its
//!   outputs and its cost (owned resources per kind).
//! - `down` deletes everything the preview's owner name owns, found by
//!   its ownership marks and the Kubernetes inventory, not by today's
//!   repository: it runs the environment with no modules, so every owned
//!   resource is a prune candidate, deleted in reverse dependency order
//!   (the provider's delete waves). Only when nothing failed are its
//!   record, controls, inventory and registry entry removed; the audit
//!   history stays.
//! - `sweep` runs `down` for every preview whose time to live has ended.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::apply::{self, CommonArgs, Mode};
use crate::execute::{self, Status};
use crate::load::Files;
use crate::model::Environment;
use crate::pipeline::{self, Audit, Checked, EnvJob, Ran, RunOptions};
use crate::preview::{self, Entry, PreviewSpec};
use crate::resource::ProviderKind;
use crate::secrets::{Identities, IdentityOptions};
use crate::state::history::{self, EventKind, Subject};
use crate::state::{self, RecordStore};

/// A preview command could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cli(#[from] super::Error),
    /// The build (the apply pipeline) could not run.
    #[error(transparent)]
    Apply(Box<apply::Error>),
    #[error(transparent)]
    State(#[from] state::Error),
    #[error(transparent)]
    Secrets(#[from] crate::secrets::Error),
    /// The async runtime could not start.
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<apply::Error> for Error {
    fn from(e: apply::Error) -> Self {
        Error::Apply(Box::new(e))
    }
}

/// `tidegate preview`.
#[derive(Debug, Clone, clap::Args)]
pub struct PreviewArgs {
    #[command(subcommand)]
    pub command: PreviewCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum PreviewCommand {
    /// Build (or renew) a copy of an environment under a new name.
    Up(UpArgs),
    /// Delete a preview and everything it owns.
    Down(DownArgs),
    /// List the live previews with their slot and expiry.
    List(ListArgs),
    /// Delete every preview whose time to live has ended. Exit 0: none
    /// had; 2: every expired preview was deleted; 1: some could not be.
    Sweep(SweepArgs),
}

/// Where the repository and the registries are.
#[derive(Debug, Clone, clap::Args)]
pub struct Place {
    /// The repository (a folder, or a file:// URL of a local Git
    /// repository).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Where records (and the registry) of environments without a
    /// Kubernetes target are kept.
    #[arg(long, default_value = ".tidegate/state")]
    pub state_dir: PathBuf,
}

/// Options of the runs that build and delete.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Apply without asking.
    #[arg(long)]
    pub yes: bool,
    /// Resources in flight at once.
    #[arg(long, default_value_t = 8)]
    pub parallelism: usize,
    /// Seconds to wait for one resource to become healthy.
    #[arg(long, default_value_t = 300)]
    pub health_timeout: u64,
}

/// `tidegate preview up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// The environment to copy (it needs a `spec.preview` block).
    #[arg(long)]
    pub from: String,
    /// The preview's name: a DNS label, not an environment's name.
    #[arg(long)]
    pub name: String,
    /// Build this Git revision of the repository.
    #[arg(long)]
    pub revision: Option<String>,
    /// How long it lives (default and longest: the environment's
    /// `preview.ttl`); `up` again renews it.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    #[command(flatten)]
    pub place: Place,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub identities: IdentityOptions,
    #[command(flatten)]
    pub trust: super::TrustOptions,
}

/// `tidegate preview down`.
#[derive(Debug, Clone, clap::Args)]
pub struct DownArgs {
    /// The preview's name.
    pub name: String,
    #[command(flatten)]
    pub place: Place,
    #[command(flatten)]
    pub run: RunArgs,
}

/// How `list` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// `tidegate preview list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    pub place: Place,
}

/// `tidegate preview sweep`.
#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub place: Place,
    #[command(flatten)]
    pub run: RunArgs,
}

fn w(out: &mut dyn Write, s: std::fmt::Arguments<'_>) -> Result<()> {
    out.write_fmt(s).map_err(super::Error::from)?;
    Ok(())
}

/// Runs `tidegate preview ...`; returns the exit code.
pub fn run(args: &PreviewArgs, out: &mut dyn Write) -> Result<u8> {
    let rt = tokio::runtime::Runtime::new().map_err(Error::Runtime)?;
    match &args.command {
        PreviewCommand::Up(a) => up(a, &rt, out),
        PreviewCommand::Down(a) => rt.block_on(down_named(a, out)),
        PreviewCommand::List(a) => rt.block_on(list(a, out)),
        PreviewCommand::Sweep(a) => rt.block_on(sweep(a, out)),
    }
}

/// The checked repository at `revision`, or the report of its problems
/// printed and `None`.
fn checked(repo: &Path, revision: Option<&str>, out: &mut dyn Write) -> Result<Option<Checked>> {
    let files = super::read_repo_at(repo, revision)?;
    match pipeline::check(&files) {
        Ok(c) => Ok(Some(c)),
        Err(report) => {
            for d in &report.0 {
                w(out, format_args!("{d}\n"))?;
            }
            w(
                out,
                format_args!("invalid: {}; nothing changed\n", report.counts()),
            )?;
            Ok(None)
        }
    }
}

/// The preview block of `env`, or why `preview up` refuses it.
fn spec_of(env: &Environment) -> std::result::Result<&PreviewSpec, String> {
    env.preview.as_ref().ok_or_else(|| {
        format!(
            "environment {} has no `spec.preview` block in {}, so it cannot be copied as a preview; add `preview: {{max: 3, ttl: 4h, vars: {{...}}}}` to its spec (docs/format.md, \"Previews\")",
            env.name, env.file
        )
    })
}

async fn store_of(env: &Environment, state_dir: &Path) -> Result<RecordStore> {
    Ok(RecordStore::for_target(env.kubernetes.as_ref(), state_dir, &env.project).await?)
}

/// The registries of the repository's environments with a preview block,
/// each once (environments sharing a cluster, or the state directory,
/// share one), with the environments it serves.
async fn stores<'a>(
    checked: &'a Checked,
    state_dir: &Path,
) -> Result<Vec<(RecordStore, Vec<&'a Environment>)>> {
    let mut by_place: BTreeMap<String, Vec<&Environment>> = BTreeMap::new();
    for env in checked
        .model
        .environments
        .iter()
        .filter(|e| e.preview.is_some())
    {
        let place = match &env.kubernetes {
            Some(k) => format!("kube:{}", k.context.clone().unwrap_or_default()),
            None => "file".to_string(),
        };
        by_place.entry(place).or_default().push(env);
    }
    let mut out = Vec::new();
    for envs in by_place.into_values() {
        out.push((store_of(envs[0], state_dir).await?, envs));
    }
    Ok(out)
}

/// Appends `entry` to the history; failing only warns.
async fn audit(store: &RecordStore, entry: &history::Entry) {
    if let Err(e) = store.append_history(entry).await {
        tracing::warn!(environment = %entry.environment, error = %e, "could not append to the audit history");
    }
}

fn up(args: &UpArgs, rt: &tokio::runtime::Runtime, out: &mut dyn Write) -> Result<u8> {
    let Some(checked) = checked(&args.place.repo, args.revision.as_deref(), out)? else {
        return Ok(1);
    };
    let Some(env) = checked.model.environment(&args.from) else {
        let names: Vec<&str> = checked.graph.environments();
        return Err(super::Error::Usage(format!(
            "--from {}: no such environment; the repository has {}",
            args.from,
            names.join(", ")
        ))
        .into());
    };
    let spec = spec_of(env).map_err(super::Error::Usage)?;
    preview::check_name(
        &args.name,
        checked.model.environments.iter().map(|e| e.name.as_str()),
    )
    .map_err(super::Error::Usage)?;
    let ttl = preview::ttl(args.ttl, spec).map_err(super::Error::Usage)?;
    let now = crate::promotion::Clock::from_env().now();
    let expires = preview::expiry(now, ttl).map_err(super::Error::Usage)?;
    let commit = super::load_commit(&args.place.repo, args.revision.as_deref())?.commit;
    let subject = Subject::cli();
    let store = rt.block_on(store_of(env, &args.place.state_dir))?;

    // Registered before anything is built, so the cap and the slot hold
    // across concurrent `up`s, and a failed build can still be downed.
    let ask = Ask {
        spec,
        from: &args.from,
        name: &args.name,
        revision: args.revision.clone(),
        commit: &commit,
        branch: None,
        now,
        expires,
        who: subject.to_string(),
    };
    let registered = rt.block_on(store.change_previews(|reg| register(reg, &ask)))?;
    let registry = match registered {
        Ok(r) => r,
        Err(why) => {
            w(out, format_args!("{why}\nnothing applied\n"))?;
            let mut entry = history::Entry::new(&args.from, EventKind::PreviewUp, subject);
            entry.outcome = history::Outcome::Refused;
            entry.reason = Some(format!("preview {}", args.name));
            entry.error = Some(why);
            rt.block_on(audit(&store, &entry));
            return Ok(1);
        }
    };
    let entry = registry[&args.name].clone();
    w(
        out,
        format_args!(
            "preview {} of {}: slot {}, expires {}\n",
            entry.name, entry.from, entry.slot, entry.expires
        ),
    )?;
    let mut note = history::Entry::new(&args.from, EventKind::PreviewUp, subject.clone());
    note.commit = Some(commit.clone());
    note.reason = Some(format!(
        "preview {} (slot {}, expires {})",
        entry.name, entry.slot, entry.expires
    ));

    let common = CommonArgs {
        all: false,
        env: Some(args.from.clone()),
        yes: args.run.yes,
        parallelism: args.run.parallelism,
        repo: args.place.repo.clone(),
        revision: args.revision.clone(),
        state_dir: args.place.state_dir.clone(),
        health_timeout: args.run.health_timeout,
        allow_mass_delete: false,
        allow_destroy: false,
        identities: args.identities.clone(),
        trust: args.trust.clone(),
    };
    let overrides = preview::vars(spec, &args.name, entry.slot);
    let mode = Mode {
        rebuild: true,
        owner: Some(args.name.clone()),
        prune: true,
        dry_run: false,
        saved: None,
        targets: Vec::new(),
        vars: Some(overrides.clone()),
        event: Some(EventKind::PreviewUp),
    };
    let (code, results) = apply::run_pipeline(&common, &mode, out)?;
    let outcome = results.iter().find_map(|r| r.outcome.as_ref());
    let cost = outcome.map(cost).unwrap_or_default();
    if outcome.is_some() {
        rt.block_on(store.change_previews(|reg| -> std::result::Result<(), ()> {
            if let Some(e) = reg.get_mut(&args.name) {
                e.resources = cost.clone();
            }
            Ok(())
        }))?
        .ok();
    }
    if code != 0 {
        note.outcome = history::Outcome::Failed;
        note.error = results.iter().find_map(|r| r.held.clone());
    }
    rt.block_on(audit(&store, &note));

    w(out, format_args!("\npreview {}:\n", args.name))?;
    for (k, v) in &overrides {
        w(out, format_args!("  var {k} = {}\n", display(v)))?;
    }
    if code == 0 {
        let outputs = rt.block_on(outputs(&checked, &args.from, &args.name, &overrides));
        for (k, v) in outputs {
            w(out, format_args!("  output {k} = {v}\n"))?;
        }
    }
    w(out, format_args!("  expires {}\n", entry.expires))?;
    w(out, format_args!("  cost: {}\n", cost_line(&cost)))?;
    if code != 0 {
        w(
            out,
            format_args!(
                "preview {} is registered but did not converge: run `tidegate preview up` again, or `tidegate preview down {}`\n",
                args.name, args.name
            ),
        )?;
    }
    Ok(code)
}

/// What `up` asks of the registry.
struct Ask<'a> {
    spec: &'a PreviewSpec,
    from: &'a str,
    name: &'a str,
    revision: Option<String>,
    commit: &'a str,
    /// The branch the reconciler keeps the preview for.
    branch: Option<String>,
    now: jiff::Timestamp,
    expires: jiff::Timestamp,
    who: String,
}

/// Registers (or renews) the preview `ask.name`: its slot kept, or the
/// lowest free one below `preview.max`; refused (with the live previews
/// and their expiry) at the cap or when the name copies another
/// environment.
fn register(reg: &mut state::preview::Registry, ask: &Ask<'_>) -> std::result::Result<(), String> {
    let existing = reg.get(ask.name).cloned();
    let slot = match &existing {
        Some(e) if e.from != ask.from => {
            return Err(format!(
                "preview {} is a copy of {}, not {}; `tidegate preview down {}` first, or pick another name",
                ask.name, e.from, ask.from, ask.name
            ))
        }
        Some(e) => e.slot,
        None => {
            let live: Vec<&Entry> = reg.values().filter(|e| e.from == ask.from).collect();
            let Some(slot) = preview::choose_slot(live.iter().map(|e| e.slot), ask.spec.max)
            else {
                let list: Vec<String> = live
                    .iter()
                    .map(|e| format!("{} (expires {})", e.name, e.expires))
                    .collect();
                return Err(format!(
                    "environment {} already has {} live preview(s), its `preview.max`: {}; `tidegate preview down NAME` one of them, wait for one to expire, or raise `preview.max`",
                    ask.from,
                    live.len(),
                    list.join(", ")
                ));
            };
            slot
        }
    };
    let vars = preview::vars(ask.spec, ask.name, slot)
        .iter()
        .map(|(k, v)| (k.clone(), display(v)))
        .collect();
    reg.insert(
        ask.name.to_string(),
        Entry {
            name: ask.name.to_string(),
            from: ask.from.to_string(),
            revision: ask.revision.clone(),
            commit: ask.commit.to_string(),
            slot,
            created: existing
                .as_ref()
                .map_or_else(|| ask.now.to_string(), |e| e.created.clone()),
            expires: ask.expires.to_string(),
            branch: ask
                .branch
                .clone()
                .or_else(|| existing.as_ref().and_then(|e| e.branch.clone())),
            who: ask.who.clone(),
            vars,
            resources: existing.map(|e| e.resources).unwrap_or_default(),
        },
    );
    Ok(())
}

/// A value as the outputs print it (secrets masked).
fn display(v: &crate::value::Value) -> String {
    match v {
        crate::value::Value::String(s) => s.clone(),
        other => other.to_json_masked().to_string(),
    }
}

/// Owned resources per kind after a run: what it has, not what it deleted
/// or failed to create.
fn cost(outcome: &execute::Outcome) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in &outcome.resources {
        if r.status.is_success() && r.status != Status::Deleted {
            *out.entry(format!("{}/{}", r.provider, r.kind)).or_insert(0) += 1;
        }
    }
    out
}

fn cost_line(cost: &BTreeMap<String, usize>) -> String {
    if cost.is_empty() {
        return "no resources".into();
    }
    let total: usize = cost.values().sum();
    let each: Vec<String> = cost.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!("{total} resources: {}", each.join(", "))
}

/// The module outputs of the built preview, rendered from its live state
/// (one observe); an output that cannot be rendered is left out, with a
/// warning in the log.
async fn outputs(
    checked: &Checked,
    from: &str,
    name: &str,
    overrides: &crate::value::Map,
) -> Vec<(String, String)> {
    let mut model = checked.model.clone();
    let Some(env) = model.environments.iter_mut().find(|e| e.name == from) else {
        return Vec::new();
    };
    env.vars.extend(overrides.clone());
    let env = env.clone();
    let scopes = crate::observe::scopes_of(&checked.graph, from);
    let live =
        match crate::observe::Providers::connect(&env.target(Some(name)), scopes.keys().copied())
            .await
        {
            Ok(p) => crate::observe::observe_env(&p, &scopes).await,
            Err(e) => Err(e),
        };
    let live = match live {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(preview = %name, error = %e, "could not observe the preview for its outputs");
            return Vec::new();
        }
    };
    let opts = crate::render::RenderOptions {
        known: &live,
        secrets: &crate::render::StructuralSecrets,
        owner: Some(name),
    };
    let Ok(renderer) = crate::render::Renderer::new(&model, from, opts) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for inst in &env.instances {
        let Some(module) = model.module_of(inst) else {
            continue;
        };
        for o in module.outputs.keys() {
            match renderer.output(inst, o) {
                Ok(v) if !v.has_unknown() => out.push((format!("{}.{o}", inst.name), display(&v))),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(preview = %name, output = %o, error = %e, "could not render an output")
                }
            }
        }
    }
    out
}

/// The registry entry `name` in the repository's registries, with the
/// store and its environment.
async fn find<'a>(
    checked: &'a Checked,
    state_dir: &Path,
    name: &str,
) -> Result<std::result::Result<(RecordStore, &'a Environment, Entry), Vec<String>>> {
    let mut live = Vec::new();
    for (store, envs) in stores(checked, state_dir).await? {
        let reg = store.previews().await?;
        if let Some(e) = reg.get(name) {
            if let Some(env) = envs.iter().find(|env| env.name == e.from) {
                return Ok(Ok((store, env, e.clone())));
            }
        }
        live.extend(reg.into_keys());
    }
    Ok(Err(live))
}

async fn down_named(args: &DownArgs, out: &mut dyn Write) -> Result<u8> {
    let Some(checked) = checked(&args.place.repo, None, out)? else {
        return Ok(1);
    };
    let (store, env, entry) = match find(&checked, &args.place.state_dir, &args.name).await? {
        Ok(found) => found,
        Err(live) => {
            return Err(super::Error::Usage(format!(
                "no live preview {}; the live previews are: {}",
                args.name,
                if live.is_empty() {
                    "none".to_string()
                } else {
                    live.join(", ")
                }
            ))
            .into())
        }
    };
    let mut text = Vec::new();
    let ok = down(
        &checked,
        env,
        &store,
        &entry,
        &args.place.state_dir,
        &args.run,
        EventKind::PreviewDown,
        &Subject::cli(),
        &mut text,
    )
    .await;
    out.write_all(&text).map_err(super::Error::from)?;
    Ok(if ok? { 0 } else { 1 })
}

/// The environment `env` with nothing declared: every resource the
/// preview owns is then a prune candidate. No secrets to decrypt, no
/// policy, no guards: `down` was asked for.
fn emptied(checked: &Checked, env: &Environment) -> (Checked, Environment) {
    let mut model = checked.model.clone();
    let mut bare = env.clone();
    bare.instances.clear();
    bare.secret_files.clear();
    bare.policy = None;
    bare.protect = false;
    if let Some(e) = model.environments.iter_mut().find(|e| e.name == env.name) {
        *e = bare.clone();
    }
    let mut diags = crate::diag::Diagnostics::default();
    let graph = crate::graph::Graph::build_with(&model, &mut diags);
    (
        Checked {
            model,
            graph,
            warnings: Vec::new(),
        },
        bare,
    )
}

/// Makes the Kubernetes inventory of owner `name` complete before a
/// `down`: a run killed between its applies and its inventory write leaves
/// owned objects the inventory does not name. Lists, across the cluster,
/// every kind `env` declares today (beside the inventory's kinds) for
/// objects carrying `name`'s marks, and records them all. Secrets (listed
/// namespace by namespace only, where tidegate may read them) are left to
/// the inventory and their Namespace. Best effort: a failure is a warning,
/// and the `down` goes on by the inventory as it is.
async fn complete_inventory(checked: &Checked, env: &Environment, name: &str) {
    use crate::observe::{observe_env, scopes_of, Providers};
    let Some(mut scope) = scopes_of(&checked.graph, &env.name).remove(&ProviderKind::Kubernetes)
    else {
        return;
    };
    scope.namespaces = None;
    scope
        .kinds
        .retain(|k| !crate::provider::kubernetes::PER_NAMESPACE.contains(&k.as_str()));
    let scopes = BTreeMap::from([(ProviderKind::Kubernetes, scope)]);
    let found = async {
        let providers = Providers::connect(&env.target(Some(name)), [ProviderKind::Kubernetes])
            .await
            .map_err(|e| e.to_string())?;
        let live = observe_env(&providers, &scopes)
            .await
            .map_err(|e| e.to_string())?;
        let owned: Vec<crate::provider::Live> = live
            .resources
            .into_values()
            .chain(live.duplicates)
            .map(|o| o.live)
            .collect();
        if owned.is_empty() {
            return Ok(0);
        }
        if let Some(k) = providers.get(ProviderKind::Kubernetes) {
            k.record_inventory(&owned)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok::<usize, String>(owned.len())
    };
    match found.await {
        Ok(n) => tracing::debug!(preview = %name, objects = n, "inventory completed before down"),
        Err(e) => {
            tracing::warn!(preview = %name, error = %e, "could not complete the inventory; deleting by the inventory as it is")
        }
    }
}

/// Deletes preview `entry` (a copy of `env`) and, when nothing is left,
/// forgets it; true when it is gone.
#[allow(clippy::too_many_arguments)]
async fn down(
    checked: &Checked,
    env: &Environment,
    store: &RecordStore,
    entry: &Entry,
    state_dir: &Path,
    run: &RunArgs,
    event: EventKind,
    subject: &Subject,
    out: &mut Vec<u8>,
) -> Result<bool> {
    let name = entry.name.as_str();
    w(
        out,
        format_args!("\n== {name} (preview of {}) ==\n", entry.from),
    )?;
    complete_inventory(checked, env, name).await;
    let (bare_checked, bare) = emptied(checked, env);
    let identities = Identities::from_env(&IdentityOptions::default())?;
    let files = Files::default();
    let job = EnvJob {
        checked: &bare_checked,
        env: &bare,
        files: &files,
        identities: &identities,
        commit: &entry.commit,
        owner: Some(name),
        state_dir,
        options: RunOptions {
            lock: true,
            plan_only: false,
            allow_mass_delete: true,
            allow_destroy: true,
            reobserve: !run.yes,
            execute: execute::Options {
                parallelism: run.parallelism.max(1),
                prune: true,
                wait_healthy: true,
                health_timeout: Duration::from_secs(run.health_timeout),
                ..execute::Options::default()
            },
            targets: Vec::new(),
            providers: bare
                .kubernetes
                .as_ref()
                .map(|_| ProviderKind::Kubernetes)
                .into_iter()
                .chain(bare.aws.as_ref().map(|_| ProviderKind::Aws))
                .collect(),
        },
        progress: None,
        stop: None,
        audit: Audit {
            event,
            subject: subject.clone(),
            commit: None,
        },
    };
    let mut hooks = DownHooks {
        out: &mut *out,
        owner: name,
        yes: run.yes,
    };
    let finished = pipeline::run_env(&job, &mut hooks).await;
    let mut note = history::Entry::new(&entry.from, event, subject.clone());
    note.commit = Some(entry.commit.clone());
    let gone = match finished.ran {
        Err(e) => {
            let why = pipeline::error_message(&e);
            w(out, format_args!("{name}: {why}\n"))?;
            note.outcome = history::Outcome::Failed;
            note.error = Some(why);
            false
        }
        Ok(Ran::Planned(_)) => false,
        Ok(Ran::Held { hold, .. }) => {
            w(out, format_args!("{name}: {hold}; nothing deleted\n"))?;
            note.outcome = history::Outcome::Held;
            note.error = Some(hold.to_string());
            false
        }
        Ok(Ran::Applied { outcome, .. }) => {
            apply::summary(&outcome, out)?;
            note.resources = outcome
                .resources
                .iter()
                .filter(|r| r.status == Status::Deleted)
                .map(|r| r.id.to_string())
                .collect();
            if outcome.converged() {
                true
            } else {
                note.outcome = history::Outcome::Failed;
                note.error = Some(outcome.counts_line());
                w(
                    out,
                    format_args!("{name}: not everything was deleted; the preview stays registered, run `tidegate preview down {name}` again\n"),
                )?;
                false
            }
        }
    };
    if gone {
        store.forget(name).await?;
        store
            .change_previews(|reg| -> std::result::Result<(), ()> {
                reg.remove(name);
                Ok(())
            })
            .await?
            .ok();
        w(out, format_args!("preview {name} deleted\n"))?;
    }
    note.reason = Some(format!("preview {name} (slot {})", entry.slot));
    audit(store, &note).await;
    Ok(gone)
}

async fn list(args: &ListArgs, out: &mut dyn Write) -> Result<u8> {
    let Some(checked) = checked(&args.place.repo, None, out)? else {
        return Ok(1);
    };
    let now = crate::promotion::Clock::from_env().now();
    let mut all: Vec<Entry> = Vec::new();
    for (store, _) in stores(&checked, &args.place.state_dir).await? {
        all.extend(store.previews().await?.into_values());
    }
    all.sort_by(|a, b| (&a.from, a.slot, &a.name).cmp(&(&b.from, b.slot, &b.name)));
    match args.format {
        Format::Json => {
            let json = serde_json::to_string_pretty(&all).expect("entries serialise");
            w(out, format_args!("{json}\n"))?;
        }
        Format::Text => {
            if all.is_empty() {
                w(out, format_args!("no live previews\n"))?;
            }
            for e in &all {
                let total: usize = e.resources.values().sum();
                w(
                    out,
                    format_args!(
                        "{:<20} from {:<10} slot {:<2} expires {}{}  {} resources  by {}\n",
                        e.name,
                        e.from,
                        e.slot,
                        e.expires,
                        if e.expired(now) { " (expired)" } else { "" },
                        total,
                        e.who
                    ),
                )?;
            }
        }
    }
    Ok(0)
}

async fn sweep(args: &SweepArgs, out: &mut dyn Write) -> Result<u8> {
    let Some(checked) = checked(&args.place.repo, None, out)? else {
        return Ok(1);
    };
    let mut text = Vec::new();
    let swept = sweep_checked(
        &checked,
        &args.place.state_dir,
        &args.run,
        &Subject::cli(),
        &mut text,
    )
    .await;
    out.write_all(&text).map_err(super::Error::from)?;
    let (swept, failed) = swept?;
    w(
        out,
        format_args!("sweep: {swept} expired preview(s) deleted, {failed} could not be\n"),
    )?;
    Ok(match (swept, failed) {
        (_, f) if f > 0 => 1,
        (0, _) => 0,
        _ => 2,
    })
}

/// Downs every expired preview of the repository's environments: (deleted,
/// failed).
pub async fn sweep_checked(
    checked: &Checked,
    state_dir: &Path,
    run: &RunArgs,
    subject: &Subject,
    out: &mut Vec<u8>,
) -> Result<(usize, usize)> {
    let now = crate::promotion::Clock::from_env().now();
    let (mut swept, mut failed) = (0, 0);
    for (store, envs) in stores(checked, state_dir).await? {
        for entry in store.previews().await?.into_values() {
            if !entry.expired(now) {
                continue;
            }
            let Some(env) = envs.iter().find(|e| e.name == entry.from) else {
                w(
                    out,
                    format_args!(
                        "preview {} expired, but its environment {} has no `spec.preview` block any more; run `tidegate preview down {}` with a repository that has it\n",
                        entry.name, entry.from, entry.name
                    ),
                )?;
                failed += 1;
                continue;
            };
            let ok = down(
                checked,
                env,
                &store,
                &entry,
                state_dir,
                run,
                EventKind::PreviewExpire,
                subject,
                out,
            )
            .await?;
            if ok {
                swept += 1;
            } else {
                failed += 1;
            }
        }
    }
    Ok((swept, failed))
}

/// `down`'s [`pipeline::Hooks`]: the plan into the (sendable) buffer, and
/// the prompt (with the plan on stderr) unless `--yes`.
struct DownHooks<'a> {
    out: &'a mut Vec<u8>,
    owner: &'a str,
    yes: bool,
}

impl pipeline::Hooks for DownHooks<'_> {
    fn planned(&mut self, plan: &crate::plan::EnvPlan) -> std::result::Result<(), pipeline::Error> {
        let plan = crate::plan::Plan::new(crate::plan::PlanSource::Live, vec![plan.clone()]);
        self.out
            .extend_from_slice(crate::plan::output::text(&plan, false).as_bytes());
        Ok(())
    }

    fn confirm(
        &mut self,
        _plan: &crate::plan::EnvPlan,
        changes: usize,
    ) -> std::result::Result<bool, pipeline::Error> {
        if changes == 0 || self.yes {
            return Ok(true);
        }
        eprint!("{}", String::from_utf8_lossy(self.out));
        self.out.clear();
        apply::confirm(self.owner, changes).map_err(|e| pipeline::Error::Hook(Box::new(e)))
    }
}

/// The live previews of the repository's registries, by environment, slot
/// and name.
pub async fn live(checked: &Checked, state_dir: &Path) -> Result<Vec<Entry>> {
    let mut all: Vec<Entry> = Vec::new();
    for (store, _) in stores(checked, state_dir).await? {
        all.extend(store.previews().await?.into_values());
    }
    all.sort_by(|a, b| (&a.from, a.slot, &a.name).cmp(&(&b.from, b.slot, &b.name)));
    Ok(all)
}

/// Builds (or moves) the preview `name` of environment `from` for `branch`
/// at the commit of `snapshot`: the reconciler's `up`. True when it
/// converged.
#[allow(clippy::too_many_arguments)]
async fn up_snapshot(
    snapshot: &crate::source::Snapshot,
    from: &str,
    name: &str,
    branch: &str,
    state_dir: &Path,
    identities: &Identities,
    run: &RunArgs,
    subject: &Subject,
) -> Result<bool> {
    let mut checked = match pipeline::check_as(&snapshot.files, Some((from, name))) {
        Ok(c) => c,
        Err(report) => {
            tracing::warn!(preview = %name, branch = %branch, problems = %report.counts(), "the branch does not load: no preview built");
            return Ok(false);
        }
    };
    let Some(env) = checked.model.environment(from).cloned() else {
        return Ok(false);
    };
    let Some(spec) = env.preview.clone() else {
        return Ok(false);
    };
    if env.require_signed_commits {
        // The reconciler checks no signature of a branch: such an
        // environment is copied by hand, from a signed commit.
        tracing::warn!(preview = %name, branch = %branch, environment = %from, "requireSignedCommits: branch previews are not built by the reconciler");
        return Ok(false);
    }
    let names: Vec<String> = checked
        .model
        .environments
        .iter()
        .map(|e| e.name.clone())
        .collect();
    if let Err(why) = preview::check_name(name, names.iter().map(String::as_str)) {
        tracing::warn!(preview = %name, branch = %branch, "{why}");
        return Ok(false);
    }
    let now = crate::promotion::Clock::from_env().now();
    let expires = preview::expiry(now, spec.ttl).map_err(super::Error::Usage)?;
    let store = store_of(&env, state_dir).await?;
    let ask = Ask {
        spec: &spec,
        from,
        name,
        revision: Some(branch.to_string()),
        commit: &snapshot.commit,
        branch: Some(branch.to_string()),
        now,
        expires,
        who: subject.to_string(),
    };
    let mut note = history::Entry::new(from, EventKind::PreviewUp, subject.clone());
    note.commit = Some(snapshot.commit.clone());
    if let Err(why) = store.change_previews(|reg| register(reg, &ask)).await? {
        tracing::warn!(preview = %name, branch = %branch, "{why}");
        note.outcome = history::Outcome::Refused;
        note.reason = Some(format!("preview {name} (branch {branch})"));
        note.error = Some(why);
        audit(&store, &note).await;
        return Ok(false);
    }
    let slot = store.previews().await?.get(name).map_or(0, |e| e.slot);
    let overrides = preview::vars(&spec, name, slot);
    if let Some(e) = checked
        .model
        .environments
        .iter_mut()
        .find(|e| e.name == from)
    {
        e.vars.extend(overrides);
    }
    let env = checked.model.environment(from).cloned().unwrap_or(env);
    let job = EnvJob {
        checked: &checked,
        env: &env,
        files: &snapshot.files,
        identities,
        commit: &snapshot.commit,
        owner: Some(name),
        state_dir,
        options: RunOptions {
            lock: true,
            plan_only: false,
            allow_mass_delete: false,
            allow_destroy: false,
            reobserve: false,
            execute: execute::Options {
                parallelism: run.parallelism.max(1),
                prune: true,
                wait_healthy: true,
                health_timeout: Duration::from_secs(run.health_timeout),
                ..execute::Options::default()
            },
            targets: Vec::new(),
            providers: Vec::new(),
        },
        progress: None,
        stop: None,
        audit: Audit {
            event: EventKind::PreviewUp,
            subject: subject.clone(),
            commit: None,
        },
    };
    let finished = pipeline::run_env(&job, &mut pipeline::Unattended).await;
    let converged = match &finished.ran {
        Ok(Ran::Applied { outcome, .. }) => {
            let c = cost(outcome);
            store
                .change_previews(|reg| -> std::result::Result<(), ()> {
                    if let Some(e) = reg.get_mut(name) {
                        e.resources = c.clone();
                    }
                    Ok(())
                })
                .await?
                .ok();
            outcome.converged()
        }
        _ => false,
    };
    note.reason = Some(format!(
        "preview {name} (slot {slot}, branch {branch}, expires {expires})"
    ));
    if !converged {
        note.outcome = history::Outcome::Failed;
        note.error = Some(match &finished.ran {
            Err(e) => pipeline::error_message(e),
            Ok(Ran::Held { hold, .. }) => hold.to_string(),
            Ok(Ran::Applied { outcome, .. }) => outcome.counts_line(),
            Ok(Ran::Planned(_)) => "planned only".into(),
        });
    }
    audit(&store, &note).await;
    tracing::info!(preview = %name, branch = %branch, commit = %snapshot.commit, converged, "branch preview built");
    Ok(converged)
}

/// What the reconciler needs to keep previews of branches
/// (`preview.branches`): its Git source and its age identities.
#[derive(Clone)]
pub struct Branches {
    pub source: crate::source::Source,
    pub identities: std::sync::Arc<Identities>,
}

/// One pass over the branch previews of `checked`'s environments: a
/// preview for each matching branch of the remote, built again when the
/// branch moves; downed when the branch is gone. A preview that expired
/// is not built again until its branch moves (`expired`: name → commit).
async fn branch_pass(
    checked: &Checked,
    branches: &Branches,
    state_dir: &Path,
    run: &RunArgs,
    subject: &Subject,
    expired: &mut BTreeMap<String, String>,
) -> Result<()> {
    let envs: Vec<&Environment> = checked
        .model
        .environments
        .iter()
        .filter(|e| e.preview.as_ref().is_some_and(|p| p.branches.is_some()))
        .collect();
    if envs.is_empty() {
        return Ok(());
    }
    let refs = match branches.source.remote_refs().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "could not list the remote's branches for previews");
            return Ok(());
        }
    };
    for env in envs {
        let pattern = env
            .preview
            .as_ref()
            .and_then(|p| p.branches.clone())
            .unwrap_or_default();
        let wanted: BTreeMap<String, (String, String)> = refs
            .iter()
            .filter_map(|(r, oid)| {
                preview::name_for_branch(&pattern, r).map(|n| (n, (r.clone(), oid.clone())))
            })
            .collect();
        let store = store_of(env, state_dir).await?;
        let registry = store.previews().await?;
        for e in registry.values() {
            if e.from == env.name && e.branch.is_some() && !wanted.contains_key(&e.name) {
                let mut log = Vec::new();
                let ok = down(
                    checked,
                    env,
                    &store,
                    e,
                    state_dir,
                    run,
                    EventKind::PreviewDown,
                    subject,
                    &mut log,
                )
                .await?;
                tracing::info!(preview = %e.name, deleted = ok, "branch gone: preview downed");
            }
        }
        for (name, (refname, oid)) in &wanted {
            match registry.get(name) {
                Some(e) if e.commit == *oid => continue,
                Some(e) if e.branch.is_none() => {
                    tracing::warn!(preview = %name, branch = %refname, "a preview of that name was made by hand: the branch gets none");
                    continue;
                }
                _ if expired.get(name) == Some(oid) => continue,
                _ => {}
            }
            let snapshot = match branches.source.snapshot_of_ref(refname).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(branch = %refname, error = %e, "could not read the branch");
                    continue;
                }
            };
            up_snapshot(
                &snapshot,
                &env.name,
                name,
                refname,
                state_dir,
                &branches.identities,
                run,
                subject,
            )
            .await?;
        }
    }
    Ok(())
}

/// The reconciler's preview timer, beside its converge loop and never in
/// it: every `every`, with the environments of the commit being
/// reconciled, it deletes the previews whose time to live has ended
/// (audited as `preview-expire` by the reconciler) and publishes the live
/// ones on the status API and page. With `act` false (`--dry-run`) it only
/// publishes the list. Runs until dropped (aborted).
pub async fn timer(
    shared: std::sync::Arc<crate::reconcile::Shared>,
    checks: std::sync::Arc<pipeline::CheckCache>,
    state_dir: PathBuf,
    run: RunArgs,
    every: Duration,
    branches: Option<Branches>,
    act: bool,
) {
    let mut expired: BTreeMap<String, String> = BTreeMap::new();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let subject = Subject::reconciler();
    loop {
        ticker.tick().await;
        let Some(snapshot) = shared.snapshot() else {
            continue;
        };
        // The converge side checked this commit already (and reports one
        // that does not load); not held between ticks, so a new commit's
        // model replaces the old one in the cache alone.
        let Ok(checked) = checks.get(&snapshot.commit, &snapshot.files).await else {
            continue;
        };
        // Branch previews that expire now are not built again until their
        // branch moves.
        let now = crate::promotion::Clock::from_env().now();
        if let Ok(previews) = live(&checked, &state_dir).await {
            for e in previews
                .iter()
                .filter(|e| e.branch.is_some() && e.expired(now))
            {
                expired.insert(e.name.clone(), e.commit.clone());
            }
        }
        let mut log: Vec<u8> = Vec::new();
        let swept = if act {
            sweep_checked(&checked, &state_dir, &run, &subject, &mut log).await
        } else {
            Ok((0, 0))
        };
        match swept {
            Ok((0, 0)) => {}
            Ok((swept, failed)) => {
                tracing::info!(swept, failed, "preview sweep");
                for line in String::from_utf8_lossy(&log)
                    .lines()
                    .filter(|l| !l.is_empty())
                {
                    tracing::debug!(target: "tidegate::preview", "{line}");
                }
            }
            Err(e) => tracing::warn!(error = %e, "preview sweep failed"),
        }
        if let Some(b) = branches.as_ref().filter(|_| act) {
            if let Err(e) = branch_pass(&checked, b, &state_dir, &run, &subject, &mut expired).await
            {
                tracing::warn!(error = %e, "branch previews failed");
            }
        }
        match live(&checked, &state_dir).await {
            Ok(previews) => shared.set_previews(previews),
            Err(e) => tracing::warn!(error = %e, "could not read the preview registries"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask<'a>(spec: &'a PreviewSpec, name: &'a str) -> Ask<'a> {
        let now: jiff::Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
        Ask {
            spec,
            from: "dev",
            name,
            revision: None,
            commit: "c1",
            branch: None,
            now,
            expires: preview::expiry(now, spec.ttl).unwrap(),
            who: "me".into(),
        }
    }

    #[test]
    fn registering_takes_free_slots_keeps_them_on_renewal_and_stops_at_the_cap() {
        let spec = PreviewSpec {
            max: 2,
            ..PreviewSpec::default()
        };
        let mut reg = state::preview::Registry::new();
        register(&mut reg, &ask(&spec, "a")).unwrap();
        register(&mut reg, &ask(&spec, "b")).unwrap();
        assert_eq!((reg["a"].slot, reg["b"].slot), (0, 1));
        let refused = register(&mut reg, &ask(&spec, "c")).unwrap_err();
        assert!(
            refused.contains("already has 2 live preview(s)"),
            "{refused}"
        );
        assert!(
            refused.contains("a (expires 2026-01-01T14:00:00Z)"),
            "{refused}"
        );
        assert!(!reg.contains_key("c"));
        // Renewal: same slot, new commit, kept creation time.
        let mut again = ask(&spec, "b");
        again.commit = "c2";
        again.now = "2026-01-01T11:00:00Z".parse().unwrap();
        register(&mut reg, &again).unwrap();
        assert_eq!(reg["b"].slot, 1);
        assert_eq!(reg["b"].commit, "c2");
        assert_eq!(reg["b"].created, "2026-01-01T10:00:00Z");
        // A freed slot is taken again.
        reg.remove("a");
        register(&mut reg, &ask(&spec, "c")).unwrap();
        assert_eq!(reg["c"].slot, 0);
        // A name copying another environment is refused.
        let mut other = ask(&spec, "c");
        other.from = "staging";
        assert!(register(&mut reg, &other)
            .unwrap_err()
            .contains("is a copy of dev"));
    }
}
