//! `tidegate reconcile`: run the in-cluster reconciler until SIGTERM.
//!
//! The command converges with [`reconcile::converge::Executor`]: each new
//! commit is planned and applied environment by environment through the
//! promotion gates by the same executor as `tidegate apply` (`--dry-run`
//! plans and reports only). [`run_with`] takes any [`Converge`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::reconcile::converge::Executor;
use crate::reconcile::lease::LeaseConfig;
use crate::reconcile::{self, Converge, Options, Reconciler, Shared};
use crate::secrets::{Identities, IdentityOptions};
use crate::server::{self, auth::ApiAuth, auth::KubernetesAuth, listen::ConnLimits};
use crate::source::{SecretFrom, Source, SourceConfig, SshAuth};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Extra authenticators of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApiAuthMode {
    /// Kubernetes TokenReview and SubjectAccessReview.
    Kubernetes,
}

/// Options of `tidegate reconcile`.
#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    /// The Git remote (file://, https://, ssh://, git://).
    #[arg(long, env = "TIDEGATE_REMOTE")]
    pub remote: String,
    /// Branch, tag or commit id to follow.
    #[arg(long, default_value = "main", env = "TIDEGATE_BRANCH")]
    pub branch: String,
    /// Time between polls of the remote (a webhook polls at once).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Address of the API listener (status page, API, webhook).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the probe listener (/healthz, /readyz, /metrics).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub probe_listen: SocketAddr,
    /// File holding the webhook secret (GitHub HMAC key / GitLab token);
    /// without it webhooks are refused. Empty is an error.
    #[arg(long)]
    pub webhook_secret_file: Option<PathBuf>,
    /// File holding a bearer token that may suspend, resume and reconcile
    /// through the API. Empty is an error.
    #[arg(long)]
    pub api_token_file: Option<PathBuf>,
    /// Also accept Kubernetes bearer tokens for the API: TokenReview, then
    /// a SubjectAccessReview (group tidegate.dev, verb create) decides.
    #[arg(long, value_enum)]
    pub api_auth: Option<ApiAuthMode>,
    /// Open connections at most on the API listener (default 512, lowered
    /// to leave 256 descriptors for Git and providers).
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Open connections at most on the probe listener.
    #[arg(long, default_value_t = 32)]
    pub probe_max_connections: usize,
    /// Time a client has to send a request's headers; also how long an
    /// idle kept-alive connection stays open.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// Time a request may take, body included (408 after it).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Largest request body on any route (413 above it).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Requests handled at once on the API listener (more wait).
    #[arg(long, default_value_t = 32)]
    pub max_requests: usize,
    /// Plan only: walk every environment in report-only mode.
    #[arg(long)]
    pub dry_run: bool,
    /// Directory of the bare Git cache.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("tidegate-git-cache"))]
    pub cache_dir: PathBuf,
    /// Time the step in flight gets to finish after SIGTERM.
    #[arg(long, default_value = "25s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Namespace of the per-environment leader Leases; without it this
    /// replica holds every environment (run one replica only).
    #[arg(long, env = "TIDEGATE_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's lease identity (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long a Lease stays valid without renewal.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// HTTPS remotes: file holding an access token (a mounted Secret).
    /// Never put credentials in --remote.
    #[arg(long)]
    pub git_token_file: Option<PathBuf>,
    /// HTTPS remotes: name of the environment variable holding an access
    /// token (e.g. set from a Secret with `secretKeyRef`).
    #[arg(long, value_name = "VAR", conflicts_with = "git_token_file")]
    pub git_token_env: Option<String>,
    /// HTTPS remotes: user name sent with the token.
    #[arg(long)]
    pub git_username: Option<String>,
    /// SSH remotes: the private key file (a mounted Secret).
    #[arg(long, requires = "git_known_hosts")]
    pub git_ssh_key: Option<PathBuf>,
    /// SSH remotes: known_hosts file pinning the server's host key.
    #[arg(long)]
    pub git_known_hosts: Option<PathBuf>,
    /// Resources in flight at once per environment.
    #[arg(long, default_value_t = 8)]
    pub parallelism: usize,
    /// Seconds to wait for one resource to become healthy.
    #[arg(long, default_value_t = 300)]
    pub health_timeout: u64,
    /// Where records of environments without a Kubernetes target are kept.
    #[arg(long, default_value = "/tmp/tidegate-state")]
    pub state_dir: PathBuf,
    /// How often the preview timer deletes previews whose time to live
    /// has ended and refreshes the list on the status page (beside the
    /// converge loop, never in it).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub preview_sweep_interval: Duration,
    /// A force-push (or reset) of the branch to a commit that does not
    /// descend from the one last applied to an environment: `refuse` keeps
    /// the environment where it is (reason `not-a-descendant`), `follow`
    /// applies it. Default: refuse where `requireSignedCommits: true`.
    #[arg(long, value_enum, env = "TIDEGATE_FORCE_PUSH")]
    pub force_push: Option<crate::source::ForcePush>,
    /// Apply this commit (id or prefix) even though it does not descend
    /// from the last applied one: an explicit rollback.
    #[arg(long, value_name = "COMMIT", value_parser = reconcile::driver::commit_prefix)]
    pub allow_rollback_to: Option<String>,
    /// Notification targets (webhook, Slack, GitHub/GitLab commit
    /// statuses): a `kind: Notifications` file, docs/notifications.md.
    #[arg(long, value_name = "FILE", env = "TIDEGATE_NOTIFICATIONS")]
    pub notifications: Option<PathBuf>,
    #[command(flatten)]
    pub identities: IdentityOptions,
    #[command(flatten)]
    pub trust: super::TrustOptions,
}

/// Runs the reconciler with the executor until SIGTERM or Ctrl-C.
pub fn run(args: &ReconcileArgs) -> super::Result<u8> {
    let identities = Identities::from_env(&args.identities)?;
    let options = crate::execute::Options {
        parallelism: args.parallelism.max(1),
        health_timeout: Duration::from_secs(args.health_timeout),
        ..crate::execute::Options::default()
    };
    // The audit history records who signed each commit it applies.
    let trust = Arc::new(args.trust.load()?);
    let checks = Arc::new(crate::pipeline::CheckCache::default());
    let converge = Executor::new(identities, options, args.state_dir.clone())
        .trust(trust)
        .checks(checks.clone());
    run_with(args, Arc::new(converge), checks)
}

/// Runs the reconciler with `converge` until SIGTERM or Ctrl-C; exit code
/// 0 after a clean shutdown.
/// `checks` caches the checked repository of the current commit for
/// `converge` and the preview sweep.
pub fn run_with(
    args: &ReconcileArgs,
    converge: Arc<dyn Converge>,
    checks: Arc<crate::pipeline::CheckCache>,
) -> super::Result<u8> {
    init_logs(args.log_format);
    let rt = tokio::runtime::Runtime::new().map_err(reconcile::Error::Runtime)?;
    rt.block_on(serve(args, converge, checks))?;
    Ok(0)
}

fn init_logs(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(super::logs::filter("info"))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    super::logs::warn_scrubbed();
}

async fn serve(
    args: &ReconcileArgs,
    converge: Arc<dyn Converge>,
    checks: Arc<crate::pipeline::CheckCache>,
) -> super::Result<()> {
    let secret = match &args.webhook_secret_file {
        None => None,
        Some(path) => Some(server::read_secret_file("webhook secret", path)?),
    };
    let api_token = match &args.api_token_file {
        None => None,
        Some(path) => Some(server::read_secret_file("API token", path)?),
    };
    let notifications = match &args.notifications {
        None => None,
        Some(path) => {
            let mut config = crate::notify::Config::read(path)?;
            if config.has_sops() {
                // The same age identities as the environments' secrets.
                config.decrypt_sops(&Identities::from_env(&args.identities)?)?;
            }
            config.check_secrets()?;
            Some(config)
        }
    };
    let max_connections =
        server::listen::descriptor_budget(args.max_connections, args.probe_max_connections)?;
    // Credentials in the URL are taken out here, so that the URL shown
    // (status, page, logs) and given to libgit2 never holds them.
    let (remote, from_url) = crate::source::split_credentials(&args.remote);
    if from_url.is_some() {
        tracing::warn!(remote = %remote, "the --remote URL carries credentials: they are taken out of it and used as the HTTPS credentials, but command lines and manifests are not the place for them; pass the token with --git-token-file (a mounted Secret) or --git-token-env instead");
    }
    let mut cfg = SourceConfig::new(&remote, &args.branch, &args.cache_dir);
    cfg.interval = args.interval;
    let token = (args.git_token_file.clone().map(SecretFrom::File))
        .or_else(|| args.git_token_env.clone().map(SecretFrom::Env));
    cfg.credentials.https =
        crate::source::url::https_auth(args.git_username.clone(), token, from_url);
    if let (Some(key), Some(known_hosts)) = (&args.git_ssh_key, &args.git_known_hosts) {
        cfg.credentials.ssh = Some(SshAuth {
            username: args.git_username.clone(),
            private_key: key.clone(),
            passphrase: None,
            known_hosts: known_hosts.clone(),
        });
    }
    let trust = crate::source::TrustList::from_files(
        args.trust.trusted_signers.as_deref(),
        &args.trust.trusted_pgp_keys,
    )?;
    let source = Source::open(cfg).await?;
    let mut opts = Options::new(&remote, &args.branch);
    opts.trust = Arc::new(trust);
    opts.interval = args.interval;
    opts.shutdown_grace = args.shutdown_grace;
    opts.dry_run = args.dry_run;
    opts.force_push = args.force_push;
    opts.allow_rollback_to = args.allow_rollback_to.clone();
    let client = if args.lease_namespace.is_some() || args.api_auth.is_some() {
        crate::provider::kubernetes::transport::install_crypto_provider();
        Some(
            kube::Client::try_default()
                .await
                .map_err(reconcile::Error::Kube)?,
        )
    } else {
        None
    };
    if let Some(ns) = &args.lease_namespace {
        let identity = args.identity.clone().unwrap_or_else(default_identity);
        let mut lease = LeaseConfig::new(ns, identity);
        lease.duration = args.lease_duration;
        lease.renew_every = args.lease_duration / 3;
        opts.leases = Some(lease);
    }
    let kube = client.clone().filter(|_| args.lease_namespace.is_some());
    let kubernetes = match (args.api_auth, client) {
        (Some(ApiAuthMode::Kubernetes), Some(client)) => Some(KubernetesAuth {
            client,
            namespace: args.lease_namespace.clone(),
        }),
        _ => None,
    };
    let config = server::Config {
        auth: ApiAuth {
            token: api_token,
            kubernetes,
        },
        api: ConnLimits {
            max_connections,
            header_read_timeout: args.header_read_timeout,
        },
        probe: ConnLimits {
            max_connections: args.probe_max_connections.max(1),
            header_read_timeout: args.header_read_timeout,
        },
        request_timeout: args.request_timeout,
        max_body_bytes: args.max_body_bytes,
        max_requests: args.max_requests,
    };
    if config.auth.token.is_none() && config.auth.kubernetes.is_none() {
        tracing::warn!("no --api-token-file or --api-auth=kubernetes: suspend, resume and reconcile through the API are refused");
    }
    let (shared, commands) = Shared::new(&opts, secret);
    if let Some(config) = &notifications {
        let origin = crate::notify::Origin {
            remote: crate::source::redact_url(&remote),
            branch: args.branch.clone(),
            identity: opts.leases.as_ref().map(|l| l.identity.clone()),
            status_url: None,
        };
        let observer = Arc::new(SharedMetrics(shared.clone()));
        opts.notifier = crate::notify::Notifier::start(config, origin, observer)?;
        tracing::info!(targets = config.targets.len(), "notifications on");
    }
    let notifier = opts.notifier.clone();
    let listeners = server::Listeners::bind(args.listen, args.probe_listen).await?;
    tracing::info!(listen = %args.listen, probe_listen = %args.probe_listen, max_connections, remote = %remote, branch = %args.branch, dry_run = args.dry_run, "tidegate reconcile started");
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(listeners, shared.clone(), config, async {
        let _ = http_stopped.await;
    }));
    let previews = tokio::spawn(super::preview::timer(
        shared.clone(),
        checks,
        args.state_dir.clone(),
        super::preview::RunArgs {
            yes: true,
            parallelism: args.parallelism,
            health_timeout: args.health_timeout,
        },
        args.preview_sweep_interval,
        Some(super::preview::Branches {
            source: source.clone(),
            identities: Arc::new(Identities::from_env(&args.identities)?),
        }),
        !args.dry_run,
    ));
    let reconciler = Reconciler::new(source, converge, opts, shared, commands, kube);
    reconciler.run(terminated()).await;
    // A preview down in flight is abandoned like a converge: the next
    // sweep (of this or another replica) finishes it.
    previews.abort();
    // The events of the last moments (reconciler.stopped among them) get a
    // short, bounded time to go out.
    notifier.shutdown(NOTIFY_FLUSH).await;
    let _ = stop_http.send(());
    let _ = server.await;
    Ok(())
}

/// How long queued notifications may take to go out at shutdown, after the
/// converges in flight (`--shutdown-grace`).
const NOTIFY_FLUSH: Duration = Duration::from_secs(3);

/// Notification results and queue depths into the reconciler's metrics.
struct SharedMetrics(Arc<Shared>);

impl crate::notify::Observer for SharedMetrics {
    fn count(&self, target: &str, event: &str, result: &str) {
        self.0.metrics.notification(target, event, result);
    }
    fn queued(&self, target: &str, depth: usize) {
        self.0.metrics.notification_queue(target, depth);
    }
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn default_identity() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| format!("tidegate-{}", std::process::id()))
}
