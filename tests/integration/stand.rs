//! The stand the end-to-end tests run on: moto for EC2, Kubernetes on
//! either target ([`Kube::Sim`]: kube-sim; [`Kube::Real`]: a real
//! kube-apiserver with RBAC, tidegate authenticated as the ServiceAccount
//! deploy/rbac.yaml binds), a kubeconfig for it, the real `tidegate` binary
//! pointed at both, a fixture repository committed with the real `git`,
//! and the queries that say what tidegate owns afterwards. Shared by
//! `execute` (apply, rebuild, reconcile), `fault` (kill -9 trials, fault
//! soak) and `real_kube`. [`on_both_kubes!`] runs one test body on both
//! targets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use aws_sdk_ec2::config::{Credentials, Region};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::{Config, Handle, Simulator};
use tempfile::TempDir;
use tidegate::model::Model;
use tidegate::observe::Providers;
use tidegate::provider::aws::{AwsProvider, RetryPolicy};
use tidegate::provider::kubernetes::transport::RetryConfig;
use tidegate::provider::kubernetes::Kubernetes;
use tidegate::provider::Provider;

use super::support_moto::MotoServer;

pub const REGION: &str = "us-east-1";
pub const AMI: &str = "ami-1e749f67";

/// Which Kubernetes API server a stand runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kube {
    /// kube-sim: fast, fault-injectable, one isolated cluster per context.
    Sim,
    /// A real kube-apiserver (etcd, controller-manager, scheduler, kwok) of
    /// the stand's own, every context pointing at it, tidegate as its
    /// ServiceAccount.
    Real,
}

/// The running Kubernetes side of a stand.
pub enum KubeServer {
    Sim(Handle),
    Real(Box<real_kube::ControlPlane>),
}

impl KubeServer {
    /// Starts `kube` with `contexts` and writes its kubeconfig (on a real
    /// server, as tidegate's ServiceAccount) to `kubeconfig`.
    pub async fn start(kube: Kube, contexts: &[&str], kubeconfig: &Path) -> KubeServer {
        match kube {
            Kube::Sim => {
                let sim = Simulator::start(Config {
                    contexts: contexts.iter().map(|c| c.to_string()).collect(),
                    ..Config::default()
                })
                .await
                .expect("kube-sim starts");
                sim.kubeconfig(kubeconfig).unwrap();
                KubeServer::Sim(sim)
            }
            Kube::Real => {
                let plane = tokio::task::spawn_blocking(real_kube::ControlPlane::start)
                    .await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("the real kube-apiserver stand: {e}"));
                plane
                    .cluster()
                    .write_kubeconfig(kubeconfig, contexts, real_kube::Identity::Tidegate)
                    .unwrap();
                KubeServer::Real(Box::new(plane))
            }
        }
    }
}

/// A kube client for `context` of the kubeconfig at `path`.
pub async fn kube_client(path: &Path, context: &str) -> kube::Client {
    tidegate::provider::kubernetes::transport::install_crypto_provider();
    let kc = Kubeconfig::read_from(path).unwrap();
    let opts = KubeConfigOptions {
        context: Some(context.into()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Runs each named `async fn name(kube: Kube)` once per Kubernetes target,
/// as `<module>::sim::name` and `<module>::real::name`.
#[macro_export]
macro_rules! on_both_kubes {
    ($($name:ident),* $(,)?) => {
        mod sim {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::stand::Kube::Sim).await
                }
            )*
        }
        mod real {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::stand::Kube::Real).await
                }
            )*
        }
    };
}

/// moto, a Kubernetes API server (contexts named after the environments)
/// and a kubeconfig for them.
pub struct Stand {
    pub moto: MotoServer,
    pub kube: KubeServer,
    pub kubeconfig: PathBuf,
    pub dir: TempDir,
    /// Where the `tidegate` binary sends EC2 requests: moto, or a fault
    /// proxy in front of it.
    pub aws_endpoint: String,
}

impl Stand {
    /// A kube-sim stand with `contexts`.
    pub async fn with_contexts(contexts: &[&str]) -> Stand {
        Stand::on(Kube::Sim, contexts).await
    }

    /// A stand on `kube` with the contexts `dev` and `staging`.
    pub async fn start_on(kube: Kube) -> Stand {
        Stand::on(kube, &["dev", "staging"]).await
    }

    /// A stand on `kube` with `contexts`.
    pub async fn on(kube: Kube, contexts: &[&str]) -> Stand {
        let moto = MotoServer::start();
        let dir = TempDir::new().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let kube = KubeServer::start(kube, contexts, &kubeconfig).await;
        let aws_endpoint = moto.endpoint.clone();
        Stand {
            moto,
            kube,
            kubeconfig,
            dir,
            aws_endpoint,
        }
    }

    /// The simulator (fault injection, counters); panics on a real server.
    pub fn sim(&self) -> &Handle {
        match &self.kube {
            KubeServer::Sim(sim) => sim,
            KubeServer::Real(_) => panic!("this test needs kube-sim"),
        }
    }

    /// The real cluster (its administrator's kubectl); panics on kube-sim.
    pub fn real(&self) -> &real_kube::Cluster {
        match &self.kube {
            KubeServer::Real(plane) => plane.cluster(),
            KubeServer::Sim(_) => panic!("this test needs the real kube-apiserver"),
        }
    }

    /// An EC2 client straight to moto (never through a fault proxy): what
    /// the tests use to look at live state.
    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::new()
                .behavior_version(tidegate::provider::aws::behavior_version())
                .region(Region::new(REGION))
                .endpoint_url(&self.moto.endpoint)
                .credentials_provider(Credentials::new("testing", "testing", None, None, "t"))
                .build(),
        )
    }

    pub async fn kube(&self, context: &str) -> kube::Client {
        kube_client(&self.kubeconfig, context).await
    }

    /// A client as the cluster's administrator, for what someone other
    /// than tidegate does (on kube-sim, which has no RBAC, the same as
    /// [`Stand::kube`]).
    pub async fn admin_kube(&self, context: &str) -> kube::Client {
        match &self.kube {
            KubeServer::Real(plane) => {
                kube_client(plane.cluster().admin_kubeconfig(), "admin").await
            }
            KubeServer::Sim(_) => self.kube(context).await,
        }
    }

    /// The providers of environment `env` (owner `owner`).
    pub async fn providers(&self, model: &Model, env: &str, owner: &str) -> Providers {
        let target = model.environment(env).unwrap().target(Some(owner));
        let k8s = Kubernetes::connect_kubeconfig(
            &self.kubeconfig,
            &target,
            tidegate::provider::kubernetes::Options {
                request_timeout: Duration::from_secs(5),
                retry: RetryConfig {
                    max_retries: 3,
                    base_delay: Duration::from_millis(20),
                    max_delay: Duration::from_secs(1),
                },
                wait_timeout: Duration::from_secs(10),
                poll_interval: Duration::from_millis(50),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let conf = aws_sdk_ec2::config::Builder::new()
            .region(Region::new(REGION))
            .endpoint_url(&self.aws_endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "t"));
        let aws = AwsProvider::with_config(
            tidegate::provider::Owner::of(&target),
            conf,
            tidegate::provider::aws::Options {
                retry: RetryPolicy {
                    sdk_attempts: 3,
                    attempts: 4,
                    base_delay: Duration::from_millis(5),
                    max_delay: Duration::from_millis(100),
                    settle: Duration::from_secs(10),
                    poll: Duration::from_millis(50),
                    attempt_timeout: Duration::from_secs(5),
                },
                ..Default::default()
            },
        );
        let boxed: Vec<Box<dyn Provider>> = vec![Box::new(k8s), Box::new(aws)];
        Providers::from_parts(owner, boxed)
    }

    /// The real `tidegate` binary with this stand's endpoints and no user
    /// configuration; stdout and stderr piped, killed when dropped.
    pub fn binary(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidegate"));
        c.env("KUBECONFIG", &self.kubeconfig)
            .env("AWS_ENDPOINT_URL", &self.aws_endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("SOPS_AGE_KEY_FILE")
            .env_remove("SOPS_AGE_KEY")
            .env("XDG_CONFIG_HOME", self.dir.path().join("no-config"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// `tidegate <args> --repo <repo> --state-dir <stand's>`.
    pub fn command(&self, repo: &Path, args: &[&str]) -> tokio::process::Command {
        let mut c = self.binary();
        c.args(args)
            .arg("--repo")
            .arg(repo)
            .arg("--state-dir")
            .arg(self.dir.path().join("state"));
        c
    }

    /// `tidegate reconcile` following the Git repository at `repo` (as a
    /// `file://` remote, branch main), polling every second, serving the
    /// API on 127.0.0.1:`ports.api` and the probes and metrics on
    /// 127.0.0.1:`ports.probe`; stdout discarded, stderr in
    /// `reconcile-<api port>.log` in the stand's folder.
    pub fn reconcile(&self, repo: &Path, ports: Ports) -> tokio::process::Command {
        let mut c = self.binary();
        c.args(["reconcile", "--branch", "main", "--interval", "1s"])
            .arg("--remote")
            .arg(format!("file://{}", repo.display()))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", ports.api))
            .arg("--probe-listen")
            .arg(format!("127.0.0.1:{}", ports.probe))
            .arg("--cache-dir")
            .arg(self.dir.path().join("git-cache"))
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .args(["--shutdown-grace", "5s"])
            .stdout(Stdio::null())
            // A file, not a pipe nobody reads: a full pipe would block the
            // reconciler on its next log line.
            .stderr(
                std::fs::File::create(self.dir.path().join(format!("reconcile-{}.log", ports.api)))
                    .unwrap(),
            );
        c
    }

    /// Exit code, and stdout followed by stderr.
    pub async fn cli(&self, repo: &Path, args: &[&str]) -> (i32, String) {
        let (code, stdout, stderr) = self.cli_split(repo, args).await;
        (code, format!("{stdout}{stderr}"))
    }

    pub async fn cli_split(&self, repo: &Path, args: &[&str]) -> (i32, String, String) {
        let out = self.command(repo, args).output().await.unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Writes `files` (path, text) into `dir` and commits them with the real
/// `git`; returns the commit id.
pub fn commit_files(dir: &Path, files: &[(&str, String)]) -> String {
    write_project(dir);
    for (p, text) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let git = |args: &[&str]| crate::support::git(dir, args);
    if !dir.join(".git").exists() {
        git(&["init", "-q", "-b", "main"]);
    }
    git(&["add", "-A"]);
    git(&["commit", "-q", "--allow-empty", "-m", "fixture"]);
    git(&["rev-parse", "HEAD"])
}

/// Writes the test repositories' `tidegate.yaml` (project `test`) into
/// `dir` unless it has one.
pub fn write_project(dir: &Path) {
    let path = dir.join("tidegate.yaml");
    if !path.exists() {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(path, tidegate::load::project::document("test")).unwrap();
    }
}

/// Live EC2 resources carrying tidegate's environment tag `env`, by kind,
/// each as (resource tag, id); terminated instances left out.
pub async fn owned_ec2(stand: &Stand, env: &str) -> BTreeMap<&'static str, Vec<(String, String)>> {
    use aws_sdk_ec2::types::{Filter, Tag};
    let ec2 = stand.ec2();
    let filter = Filter::builder()
        .name("tag:tidegate:environment")
        .values(env)
        .build();
    let resource = |tags: &[Tag]| {
        tags.iter()
            .find(|t| t.key() == Some("tidegate:resource"))
            .and_then(|t| t.value())
            .unwrap_or("")
            .to_string()
    };
    let mut out: BTreeMap<&'static str, Vec<(String, String)>> = BTreeMap::new();
    let vpcs = ec2
        .describe_vpcs()
        .filters(filter.clone())
        .send()
        .await
        .unwrap();
    for v in vpcs.vpcs() {
        out.entry("vpc")
            .or_default()
            .push((resource(v.tags()), v.vpc_id().unwrap().into()));
    }
    let subnets = ec2
        .describe_subnets()
        .filters(filter.clone())
        .send()
        .await
        .unwrap();
    for s in subnets.subnets() {
        out.entry("subnet")
            .or_default()
            .push((resource(s.tags()), s.subnet_id().unwrap().into()));
    }
    let sgs = ec2
        .describe_security_groups()
        .filters(filter.clone())
        .send()
        .await
        .unwrap();
    for g in sgs.security_groups() {
        out.entry("security_group")
            .or_default()
            .push((resource(g.tags()), g.group_id().unwrap().into()));
    }
    let inst = ec2
        .describe_instances()
        .filters(filter)
        .send()
        .await
        .unwrap();
    for r in inst.reservations() {
        for i in r.instances() {
            let state = i
                .state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_string());
            if matches!(state.as_deref(), Some("terminated" | "shutting-down")) {
                continue;
            }
            out.entry("instance")
                .or_default()
                .push((resource(i.tags()), i.instance_id().unwrap().into()));
        }
    }
    out
}

pub async fn config_map(stand: &Stand, ctx: &str, ns: &str, name: &str) -> Option<ConfigMap> {
    let api: Api<ConfigMap> = Api::namespaced(stand.kube(ctx).await, ns);
    api.get_opt(name).await.unwrap()
}

/// GET `path` from the reconciler's HTTP surface: (status, body).
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// The loopback ports of a reconciler's two listeners.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Status page, API, webhook.
    pub api: u16,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub probe: u16,
}

impl Ports {
    /// Two free loopback ports.
    pub fn free() -> Ports {
        Ports {
            api: free_port(),
            probe: free_port(),
        }
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends SIGTERM to `child` (as Kubernetes stops a pod) and waits at most
/// 10 s for it to exit.
pub async fn sigterm(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    let pid = child.id().expect("still running").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .expect("exits within the grace period")
        .unwrap()
}

/// Polls the reconciler on `port` until its first `envs` environments are
/// healthy at `commit`; the time it took, or the last status seen once
/// `bound` has passed (a bound so a broken build fails instead of hanging,
/// not a timing assertion).
pub async fn until_converged(
    port: u16,
    commit: &str,
    envs: usize,
    bound: std::time::Duration,
) -> Result<std::time::Duration, String> {
    let started = std::time::Instant::now();
    let mut last = String::new();
    while started.elapsed() < bound {
        if let Some((200, body)) = http_get(port, "/api/v1/status").await {
            let s: serde_json::Value = serde_json::from_str(&body).unwrap();
            let good = |i: usize| {
                let e = &s["environments"][i];
                e["lastGood"] == commit && e["healthy"] == true
            };
            if (0..envs).all(good) {
                return Ok(started.elapsed());
            }
            last = body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(last)
}
