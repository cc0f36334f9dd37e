//! A Kubernetes API server simulator for tidegate's tests and local demo.
//!
//! No real kube-apiserver can be installed where tidegate's tests run, so
//! this crate serves the parts of the Kubernetes API a GitOps reconciler
//! uses — discovery, get/list/watch, create/update/patch/delete, server-side
//! apply with field managers and dry-run, the status subresource, CRDs —
//! faithfully enough that kubectl and kube-rs work against it unchanged.
//! Workload readiness and faults are controllable for tests.
//!
//! Map: [`kinds`] (served types), [`selector`], [`merge`] (patch
//! semantics), [`managed`] (server-side apply ownership), [`store`] (one
//! cluster and its verbs), [`kubelet`] (workload status), [`faults`],
//! [`discovery`], [`protobuf`] (protobuf request bodies), [`scale`] (the
//! scale subresource), [`server`] (HTTP and the `/_sim` control API),
//! [`kubeconfig`]. Start with [`Simulator::start`].

pub mod clock;
pub mod discovery;
pub mod faults;
pub mod kinds;
pub mod kubeconfig;
pub mod kubelet;
pub mod managed;
pub mod merge;
pub mod openapi;
pub mod protobuf;
pub mod scale;
pub mod selector;
pub mod server;
pub mod status;
pub mod store;

pub use faults::{Counters, FaultAction, FaultRule, Faults};
pub use kubelet::{Phase, Readiness, READY_ANNOTATION};

use server::Sim;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Errors of starting and controlling a simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding the listening socket failed (port in use, no permission).
    #[error("binding 127.0.0.1:{port} failed")]
    Bind {
        /// Requested port.
        port: u16,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing the kubeconfig file failed.
    #[error("writing kubeconfig {path} failed")]
    WriteKubeconfig {
        /// Target path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A control call named a type or object the simulator does not have.
    #[error("simulator control call failed: {0}")]
    Control(#[source] status::ApiError),
}

/// Result of this crate's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to start a simulator.
#[derive(Clone, Debug)]
pub struct Config {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Context names for the kubeconfig (first is the current context).
    /// Empty: one context named `kube-sim`.
    pub contexts: Vec<String>,
    /// Give each context its own cluster state under `/clusters/<name>`
    /// (true), or point every context at the one shared cluster (false).
    pub isolate_contexts: bool,
    /// Readiness of workloads without the [`READY_ANNOTATION`].
    pub readiness: Readiness,
    /// Events kept per cluster for watches resuming from a
    /// resourceVersion; a watch from before them gets 410 Expired.
    pub watch_history: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 0,
            contexts: vec![],
            isolate_contexts: true,
            readiness: Readiness::Now,
            watch_history: store::DEFAULT_HISTORY,
        }
    }
}

/// Entry point.
pub struct Simulator;

impl Simulator {
    /// Binds 127.0.0.1 and serves until [`Handle::shutdown`] (or the handle
    /// is dropped along with the runtime).
    pub async fn start(config: Config) -> Result<Handle> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port))
            .await
            .map_err(|source| Error::Bind {
                port: config.port,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            port: config.port,
            source,
        })?;
        let sim = Sim::new(addr.to_string(), config.readiness, config.watch_history);
        let app = {
            let sim = sim.clone();
            axum::Router::new().fallback(move |req| server::handle(sim.clone(), req))
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                })
                .await;
        });
        let contexts = if config.contexts.is_empty() {
            vec!["kube-sim".to_string()]
        } else {
            config.contexts.clone()
        };
        Ok(Handle {
            addr,
            sim,
            contexts,
            isolate: config.isolate_contexts,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }
}

/// A running simulator.
pub struct Handle {
    addr: SocketAddr,
    sim: Arc<Sim>,
    contexts: Vec<String>,
    isolate: bool,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Handle {
    /// `http://127.0.0.1:<port>` (the default, unprefixed cluster).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Context names in the kubeconfig.
    pub fn contexts(&self) -> &[String] {
        &self.contexts
    }

    /// Server URL a context points at.
    pub fn context_url(&self, context: &str) -> String {
        kubeconfig::server_url(&self.url(), context, self.isolate)
    }

    /// The cluster name the counters and control calls use for a context
    /// (`""` when contexts share one cluster).
    pub fn cluster_of(&self, context: &str) -> String {
        if self.isolate {
            context.to_string()
        } else {
            String::new()
        }
    }

    /// The kubeconfig YAML.
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig::render(&self.url(), &self.contexts, self.isolate)
    }

    /// Writes the kubeconfig to `path`.
    pub fn kubeconfig(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.kubeconfig_yaml()).map_err(|source| Error::WriteKubeconfig {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Replaces the fault configuration.
    pub fn set_faults(&self, faults: Faults) {
        *self.sim.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// Adds one fault rule.
    pub fn add_fault(&self, rule: FaultRule) {
        self.sim
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rules
            .push(rule);
    }

    /// Sets the latency added to every API request.
    pub fn set_latency(&self, latency: Duration) {
        self.sim
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .latency_millis = latency.as_millis() as u64;
    }

    /// A snapshot of the request counters.
    pub fn counters(&self) -> Counters {
        self.sim
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Zeroes the request counters.
    pub fn reset_counters(&self) {
        *self.sim.counters.lock().unwrap_or_else(|e| e.into_inner()) = Counters::default();
    }

    /// Ends every open watch stream (clients see the stream end).
    pub fn drop_watches(&self) {
        self.sim.drop_all_watches();
    }

    /// Readiness of workloads without the annotation, from now on.
    pub fn set_default_readiness(&self, r: Readiness) {
        *self
            .sim
            .kubelet_default
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = r;
    }

    /// Forces a workload's status (`apps/v1`, `deployments`, ...), in the
    /// cluster a context points at.
    pub fn set_ready(
        &self,
        context: &str,
        api_version: &str,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        phase: Phase,
    ) -> Result<()> {
        server::set_ready(
            &self.sim,
            &self.cluster_of(context),
            api_version,
            resource,
            namespace,
            name,
            phase,
        )
        .map_err(Error::Control)
    }

    /// Number of stored objects of `plural.group` in a context's cluster
    /// (white-box check for tests).
    pub fn object_count(&self, context: &str, group_resource: &str) -> usize {
        self.sim
            .cluster(&self.cluster_of(context))
            .count(group_resource)
    }

    /// Stops serving: ends watches, closes the listener, waits for
    /// in-flight requests (at most 5 s).
    pub async fn shutdown(mut self) {
        self.stop_now().await;
    }

    async fn stop_now(&mut self) {
        self.sim.drop_all_watches();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.sim.drop_all_watches();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
