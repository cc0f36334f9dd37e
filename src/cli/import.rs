//! `tidegate import ENV RESOURCE_ID EXTERNAL_ID`: adopt an object that
//! exists without tidegate's marks (made by hand, by another tool, before
//! tidegate) as the resource Git declares, without recreating it.
//!
//! The object is read (EC2 by id, Kubernetes by the name the manifest
//! gives), the difference between what Git declares and what exists is
//! shown as a plan, and with `--yes` the ownership marks are stamped on it
//! (EC2 tags, Kubernetes labels and annotation) under the environment's
//! apply lock, and the import is written to the audit history. Nothing
//! else changes: the next apply converges the differences shown.
//!
//! Refused: an object another tidegate owns, an object already carrying
//! this environment's marks, a resource id already bound to a live object.

use std::io::Write;
use std::path::PathBuf;

use crate::observe::{self, Providers};
use crate::plan::{self, output, ResourcePlan};
use crate::provider::Claim;
use crate::resource::{Action, ResourceId};
use crate::secrets::{self, Identities, IdentityOptions};
use crate::state::{self, history, EnvLock, RecordStore};

/// `tidegate import`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// The environment that will own it.
    pub env: String,
    /// The resource Git declares for it (`network.vpc`, as the plan
    /// prints ids).
    #[arg(required_unless_present = "generate")]
    pub resource: Option<String>,
    /// The existing object: an EC2 id (`vpc-0abc...`), or for Kubernetes
    /// `[Kind/][namespace/]name` (it must be the object the manifest
    /// names). Default for Kubernetes: the object the manifest names.
    pub external_id: Option<String>,
    /// Stamp the ownership marks (without it: show the plan and stop).
    #[arg(long)]
    pub yes: bool,
    /// Write a module (and its instance in the environment file) for the
    /// existing objects `--select` selects, then import them all.
    #[arg(long, conflicts_with_all = ["resource", "external_id", "revision"], requires_all = ["select", "module"])]
    pub generate: bool,
    /// With --generate: `tag:KEY=VALUE` (EC2 resources with that tag) or
    /// `label:SELECTOR` (Kubernetes objects, e.g. `label:app=shop`);
    /// repeatable.
    #[arg(long, requires = "generate")]
    pub select: Vec<String>,
    /// With --generate: the module to write (`modules/<NAME>`) and its
    /// instance name.
    #[arg(long, requires = "generate")]
    pub module: Option<String>,
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Read the repository at this Git revision.
    #[arg(long)]
    pub revision: Option<String>,
    /// Where records, locks and history of environments without a
    /// Kubernetes target are kept.
    #[arg(long, default_value = ".tidegate/state")]
    pub state_dir: PathBuf,
    #[command(flatten)]
    pub identities: IdentityOptions,
}

/// Runs `tidegate import` of one resource (`--generate` is
/// [`super::generate::run`]): exit 0 imported (or nothing to show), 2 the plan
/// of an import not confirmed, 1 refused.
pub fn run(args: &ImportArgs, out: &mut dyn Write) -> super::Result<u8> {
    let wanted = args.resource.clone().unwrap_or_default();
    let loaded = super::load_commit(&args.repo, args.revision.as_deref())?;
    let checked = match super::check(&loaded.files) {
        Ok(c) => c,
        Err(report) => {
            writeln!(out, "{report}")?;
            return Ok(1);
        }
    };
    let (model, graph) = (&checked.model, &checked.graph);
    let Some(env) = model.environment(&args.env) else {
        let known: Vec<&str> = model.environments.iter().map(|e| e.name.as_str()).collect();
        return Err(super::Error::Usage(format!(
            "unknown environment `{}` (environments: {})",
            args.env,
            known.join(", ")
        )));
    };
    let ids: Vec<ResourceId> = graph.levels(&env.name).into_iter().flatten().collect();
    let Some(id) = ids.iter().find(|i| i.to_string() == wanted).cloned() else {
        let names: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let hint = match crate::diag::closest(&wanted, &refs) {
            Some(n) => format!("; did you mean {n}?"),
            None => String::new(),
        };
        return Err(super::Error::Usage(format!(
            "environment {} declares no resource {}{hint} (`tidegate plan --offline --env {}` lists them)",
            env.name, wanted, env.name
        )));
    };
    let node = graph.node(&env.name, &id).expect("listed by the graph");
    let identities = Identities::from_env(&args.identities)?;
    let decrypted = secrets::load_env(env, &loaded.files, &identities)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let scopes = observe::scopes_of(graph, &env.name);
        let providers = Providers::connect(&env.target(None), scopes.keys().copied())
            .await
            .map_err(plan::Error::from)?;
        let live = observe::observe_env(&providers, &scopes)
            .await
            .map_err(plan::Error::from)?;
        if let Some(existing) = live.get(&id) {
            writeln!(
                out,
                "{id} is already managed in {} (it is {}); nothing to import",
                env.name, existing.external_id
            )?;
            return Ok(1);
        }
        let desired = plan::render_desired(model, &env.name, Some(&live), &decrypted, None)?;
        let want = desired
            .iter()
            .find(|d| d.id == id)
            .expect("rendered with its environment");
        let provider = providers.get(node.provider).ok_or_else(|| {
            super::Error::Usage(format!(
                "environment {} has no {} target to import from",
                env.name, node.provider
            ))
        })?;
        let external = match (&args.external_id, node.provider) {
            (Some(x), _) => x.clone(),
            (None, crate::resource::ProviderKind::Kubernetes) => String::new(),
            (None, kind) => {
                return Err(super::Error::Usage(format!(
                    "name the existing {kind} object: tidegate import {} {id} <id>",
                    env.name
                )))
            }
        };
        let lookup = |e: crate::provider::Error| plan::Error::Provider {
            env: env.name.clone(),
            id: id.clone(),
            origin: want.origin.clone(),
            source: Box::new(e),
        };
        // Kubernetes without an id (empty): the object the manifest names.
        let found = provider
            .lookup(want, &external)
            .await
        .map_err(lookup)?;
        let Some(found) = found else {
            let shown = args.external_id.as_deref().unwrap_or("the object the manifest names");
            writeln!(
                out,
                "{} {shown} does not exist in environment {}'s target; nothing imported",
                want.kind, env.name
            )?;
            return Ok(1);
        };
        match &found.claim {
            Claim::Foreign(other) => {
                writeln!(
                    out,
                    "{} belongs to another tidegate installation ({other}); tidegate never takes over another owner's objects",
                    found.live.external_id
                )?;
                return Ok(1);
            }
            Claim::Ours => {
                writeln!(
                    out,
                    "{} already carries environment {}'s marks (not as {id}); nothing imported",
                    found.live.external_id, env.name
                )?;
                return Ok(1);
            }
            Claim::Legacy | Claim::Unmanaged => {}
        }
        let mut taken_from = None;
        let change = match provider.plan(want, Some(&found.live)).await {
            Ok(c) => c,
            // Fields Git declares are managed by whoever made the object:
            // the import makes tidegate their manager (at their live
            // values), so compare those fields locally.
            Err(crate::provider::Error::Conflict { managers, .. }) => {
                taken_from = Some(managers);
                let before = crate::provider::kubernetes::object::at_live_values(
                    &want.body,
                    &found.live.body,
                );
                let action = if before == want.body {
                    Action::NoOp
                } else {
                    Action::Update
                };
                crate::resource::Change {
                    action,
                    before: Some(before),
                    after: want.body.clone(),
                }
            }
            Err(e) => return Err(lookup(e).into()),
        };
        let before = change.before.clone().unwrap_or_else(|| found.live.body.clone());
        let shown = ResourcePlan {
            id: id.clone(),
            provider: node.provider,
            kind: want.kind.clone(),
            action: change.action.clone(),
            step: 1,
            external_id: Some(found.live.external_id.clone()),
            origin: Some(want.origin.clone()),
            // A no-op carries no bodies.
            changes: match change.action {
                Action::NoOp => Vec::new(),
                _ => crate::diff::diff(&before, &change.after),
            },
        };
        writeln!(
            out,
            "import {} into {} as {id} ({}):",
            found.live.external_id, env.name, want.origin
        )?;
        for line in output::resource_lines_plain(&shown) {
            writeln!(out, "  {line}")?;
        }
        let differences = shown.changes.len();
        if let Some(managers) = &taken_from {
            writeln!(
                out,
                "the fields Git declares are managed by {managers} now; the import makes tidegate their manager (at their current values)"
            )?;
        }
        match &change.action {
            Action::NoOp => writeln!(out, "it matches what Git declares")?,
            Action::Replace { reasons } => writeln!(
                out,
                "warning: the next apply would REPLACE it ({}): the object is deleted and made again; change the module first if it must stay",
                reasons.join("; ")
            )?,
            _ => writeln!(
                out,
                "the next apply changes {differences} field(s) to what Git declares"
            )?,
        }
        if !args.yes {
            writeln!(
                out,
                "nothing imported; run again with --yes to stamp environment {}'s marks on it",
                env.name
            )?;
            return Ok(2);
        }
        let owner = state::scoped(&env.project, &env.name);
        let lock = EnvLock::acquire(
            env.kubernetes.as_ref(),
            &args.state_dir,
            &owner,
            &state::this_process(),
        )
        .await?;
        let adopted = provider.adopt(want, &found.live).await.map_err(lookup);
        let mut entry = history::Entry::new(
            &env.name,
            history::EventKind::Import,
            history::Subject::cli(),
        );
        entry.commit = Some(loaded.commit.clone());
        entry.resources = vec![id.to_string()];
        entry.reason = Some(format!("{} {}", want.kind, found.live.external_id));
        if let Err(e) = &adopted {
            entry.outcome = history::Outcome::Failed;
            entry.error = Some(e.to_string());
        }
        let store =
            RecordStore::for_target(env.kubernetes.as_ref(), &args.state_dir, &env.project).await;
        if let Err(e) = match store {
            Ok(s) => s.append_history(&entry).await,
            Err(e) => Err(e),
        } {
            tracing::warn!(environment = %env.name, error = %e, "could not append to the audit history");
        }
        if let Err(e) = lock.release().await {
            tracing::warn!(environment = %env.name, error = %e, "could not release the apply lock");
        }
        adopted?;
        writeln!(
            out,
            "imported {} as {id}; `tidegate apply --env {}` converges it{}",
            found.live.external_id,
            env.name,
            if differences == 0 {
                String::new()
            } else {
                format!(" ({differences} field(s))")
            }
        )?;
        Ok(0)
    })
}
