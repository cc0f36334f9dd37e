//! `tidegate switch ENV --to COPY | --back | --status`: blue/green
//! cutover of the environment's traffic entry points (`spec.traffic`)
//! between the environment and its `rebuild --as` copies
//! ([`crate::traffic`]). Exit 0 switched (or nothing to do), 1 refused
//! (nothing changed), 3 fell back (the copy turned unhealthy during a
//! stepped switch; the entry points are where they were).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use crate::model::EntryKind;
use crate::state::{self, RecordStore};
use crate::traffic::{self, plan, Ended, Switch};

/// `tidegate switch`.
#[derive(Debug, Clone, clap::Args)]
pub struct SwitchArgs {
    /// The environment whose entry points move.
    pub env: String,
    /// Move the entry points to this copy (`prod-green`, or `prod` itself)
    /// once its record says it converged and it is healthy now.
    #[arg(long, value_name = "COPY", conflicts_with_all = ["back", "status"], required_unless_present_any = ["back", "status"])]
    pub to: Option<String>,
    /// Move back to the copy live before the last switch, in one step.
    #[arg(long, conflicts_with = "status")]
    pub back: bool,
    /// Show where each entry point routes now.
    #[arg(long)]
    pub status: bool,
    /// Shift in weighted steps, percentages of the traffic the copy gets
    /// (`10,50,100`); Ingress entry points only (ingress-nginx canary
    /// weights), an Elastic IP moves at the last step.
    #[arg(long, value_name = "PERCENTS", requires = "to")]
    pub steps: Option<String>,
    /// How long each step runs before the copy's health is checked again.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub step_wait: Duration,
    /// Switch without asking.
    #[arg(long)]
    pub yes: bool,
    /// The repository (its working tree declares the entry points).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Where records of environments without a Kubernetes target are kept.
    #[arg(long, default_value = ".tidegate/state")]
    pub state_dir: PathBuf,
}

/// Runs `tidegate switch`; returns the exit code.
pub fn run(args: &SwitchArgs, out: &mut dyn Write) -> super::Result<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(super::Error::Write)?;
    rt.block_on(run_async(args, out))
}

async fn run_async(args: &SwitchArgs, out: &mut dyn Write) -> super::Result<u8> {
    let steps = match &args.steps {
        Some(s) => plan::parse_steps(s).map_err(super::Error::Usage)?,
        None => vec![100],
    };
    let files = super::read_repo_at(&args.repo, None)?;
    let checked = super::check(&files).map_err(crate::load::Error::Invalid)?;
    let Some(env) = checked.model.environment(&args.env) else {
        let known: Vec<&str> = checked
            .model
            .environments
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        return Err(super::Error::Usage(format!(
            "unknown environment `{}` (environments: {})",
            args.env,
            known.join(", ")
        )));
    };
    let store =
        RecordStore::for_target(env.kubernetes.as_ref(), &args.state_dir, &env.project).await?;
    let ingress = env
        .traffic
        .iter()
        .any(|e| matches!(e.kind, EntryKind::Ingress(_)));
    let kube = match (&env.kubernetes, ingress) {
        (Some(k), true) => Some(state::kube_client(k).await?),
        (None, true) => {
            return Err(super::Error::Usage(format!(
                "{} has Ingress entry points but no `targets.kubernetes`",
                env.name
            )))
        }
        _ => None,
    };
    let ec2 = if env
        .traffic
        .iter()
        .any(|e| matches!(e.kind, EntryKind::ElasticIp { .. }))
    {
        let target = env.target(None);
        let p = crate::provider::aws::AwsProvider::connect(&target)
            .await
            .map_err(|e| super::Error::Usage(e.to_string()))?;
        Some(p.client().clone())
    } else {
        None
    };
    let switch = Switch {
        env,
        graph: &checked.graph,
        store,
        kube,
        ec2,
        subject: state::history::Subject::cli(),
    };
    if args.status {
        let routing = switch.store.routing(&env.name).await?;
        if env.traffic.is_empty() {
            writeln!(out, "{} declares no traffic entry points", env.name)?;
        }
        traffic::describe(env, &routing, out)?;
        let off = switch
            .disagreements(&routing)
            .await
            .map_err(|e| super::Error::Usage(format!("switch {}: {e}", env.name)))?;
        for line in &off {
            writeln!(out, "warning: {line}")?;
        }
        return Ok(u8::from(!off.is_empty()));
    }
    if !args.yes {
        let what = match &args.to {
            Some(copy) => format!("move {}'s entry points to {copy}", env.name),
            None => format!("move {}'s entry points back", env.name),
        };
        if !std::io::stdin().is_terminal() {
            return Err(super::Error::Usage(format!(
                "stdin is not a terminal, so tidegate cannot ask before it may {what}; pass --yes"
            )));
        }
        eprint!("{what}? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            writeln!(out, "nothing changed")?;
            return Ok(1);
        }
    }
    // One switch of an environment at a time (a Lease `tidegate-lock-
    // <project>.<env>.traffic`, or a file lock), apart from its applies.
    let lock = state::EnvLock::acquire(
        env.kubernetes.as_ref(),
        &args.state_dir,
        &format!("{}.traffic", state::scoped(&env.project, &env.name)),
        &state::this_process(),
    )
    .await?;
    let ended = match &args.to {
        Some(copy) => switch.to(copy, &steps, args.step_wait, out).await,
        None => switch.back(out).await,
    };
    if let Err(e) = lock.release().await {
        tracing::warn!(environment = %env.name, error = %e, "could not release the switch lock");
    }
    let ended = ended.map_err(|e| super::Error::Usage(format!("switch {}: {e}", env.name)))?;
    let code = match ended {
        Ended::Switched => 0,
        Ended::Refused(why) => {
            writeln!(out, "refused: {why}")?;
            1
        }
        Ended::FellBack(_) => 3,
    };
    let routing = switch.store.routing(&env.name).await?;
    traffic::describe(env, &routing, out)?;
    Ok(code)
}
