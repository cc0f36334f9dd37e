//! A real Kubernetes control plane on loopback, for tidegate's tests and
//! benchmarks: etcd, kube-apiserver (TLS with certificates made at start,
//! `--authorization-mode=Node,RBAC`, ServiceAccount token signing, the
//! default admission plugins), kube-controller-manager, kube-scheduler and
//! kwok (the kubelet stand-in that keeps a fake Node Ready and moves its
//! Pods to Running/Ready and Jobs' Pods to Succeeded).
//!
//! The binaries are built from their Go modules by `build.sh` beside this
//! crate (pinned by its go.mod/go.sum, cached machine-wide by version);
//! [`binaries`] runs it, which only checks once the cache holds them.
//!
//! Tidegate never runs as an administrator here: [`Cluster::write_kubeconfig`]
//! with [`Identity::Tidegate`] writes a token of the ServiceAccount that
//! `deploy/rbac.yaml` binds, got through the TokenRequest API, so every
//! test proves the shipped RBAC sufficient. [`Identity::Admin`] (a client
//! certificate in `system:masters`) is for the tests' own setup and checks.
//!
//! # Guarantees
//! Every process is started with `PR_SET_PDEATHSIG`, from one thread that
//! lives as long as the test process, so nothing outlives a test run, even
//! one killed with SIGKILL. [`ControlPlane`] kills its processes on drop.
//!
//! # Caveats
//! A cluster takes several seconds of CPU to start on a 2-core machine: the
//! tests share one per process ([`ControlPlane::shared`]) and keep apart by
//! names (their own namespaces and environment names), and start a second
//! API server on the same etcd ([`ControlPlane::add_cluster`], its own
//! `--etcd-prefix`) only where they need two separate clusters.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The Kubernetes release the control plane is built from.
pub const VERSION: &str = "v1.37.2";

/// The ServiceAccount tidegate runs as (deploy/serviceaccount.yaml).
pub const SERVICE_ACCOUNT: (&str, &str) = ("tidegate", "tidegate");

/// Starting or driving the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `build.sh` failed or printed no folder (Go missing, module proxy
    /// unreachable, a compile error).
    #[error("building the control plane with {script} failed: {message}")]
    Build { script: String, message: String },
    /// A file of the stand could not be written or read.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Making a key or certificate failed.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A process did not start.
    #[error("starting {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// A process did not become ready in time (its log's tail is included).
    #[error("{what} not ready after {seconds}s; last log lines:\n{log}")]
    NotReady {
        what: String,
        seconds: u64,
        log: String,
    },
    /// A kubectl call of the setup failed.
    #[error("kubectl {args} failed: {stderr}")]
    Kubectl { args: String, stderr: String },
    /// No free loopback port.
    #[error("no free loopback port: {0}")]
    Port(#[source] std::io::Error),
}

/// Result of this crate's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The repository root (this crate is `tests/real-kube`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The folder holding the built binaries: runs `build.sh`, which builds
/// them on the first call on a machine and only checks afterwards.
pub fn binaries() -> Result<PathBuf> {
    static DIR: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("build.sh");
    let found = DIR.get_or_init(|| {
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout.lines().last() {
            Some(dir) if out.status.success() => Ok(PathBuf::from(dir.trim())),
            _ => Err(format!("exit {}: {}", out.status, stdout.trim())),
        }
    });
    found.clone().map_err(|message| Error::Build {
        script: script.display().to_string(),
        message,
    })
}

/// Path of the real `kubectl` (`.ci/.venv/bin`, else `PATH`).
pub fn kubectl_path() -> PathBuf {
    let venv = repo_root().join(".ci/.venv/bin/kubectl");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("kubectl")
}

/// A free port on 127.0.0.1.
fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(Error::Port)
}

/// Starts processes from one thread that never exits, so that
/// `PR_SET_PDEATHSIG` (which fires when the *thread* that forked dies)
/// kills them only with the test process.
fn spawn(mut cmd: Command) -> Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("real-kube-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("the spawner thread starts");
        Mutex::new(tx)
    });
    let program = cmd.get_program().to_string_lossy().into_owned();
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    let spawn_failed = |source| Error::Spawn {
        program: program.clone(),
        source,
    };
    sender
        .lock()
        .map_err(|_| spawn_failed(std::io::Error::other("spawner poisoned")))?
        .send((cmd, tx))
        .map_err(|_| spawn_failed(std::io::Error::other("spawner gone")))?;
    rx.recv()
        .map_err(|_| spawn_failed(std::io::Error::other("spawner gone")))?
        .map_err(spawn_failed)
}

/// One started process and its log file.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(bin: &Path, name: &str, args: &[String], dir: &Path) -> Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let file = fs::File::create(&log).map_err(io_err(&log))?;
        let err = file.try_clone().map_err(io_err(&log))?;
        let mut cmd = Command::new(bin.join(name));
        cmd.args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        Ok(Proc {
            name: name.to_string(),
            child: spawn(cmd)?,
            log,
        })
    }

    /// The log's error lines (klog `E`/`F`, etcd `"level":"error"`) and
    /// its last lines: what a failing test shows.
    fn tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let errors: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| {
                l.starts_with('E') || l.starts_with('F') || l.contains("\"level\":\"error\"")
            })
            .take(15)
            .collect();
        let last = &lines[lines.len().saturating_sub(10)..];
        format!(
            "{} ({}):\n{}\n...\n{}",
            self.name,
            self.log.display(),
            errors.join("\n"),
            last.join("\n")
        )
    }

    /// Fails with the log's tail when the process has exited.
    fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            _ => Err(Error::NotReady {
                what: format!("{} (exited)", self.name),
                seconds: 0,
                log: self.tail(),
            }),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The certificates and keys of one control plane.
struct Pki {
    ca_pem: String,
    serving: (String, String),
    admin: (String, String),
    sa_key_pem: String,
    sa_pub_pem: String,
}

impl Pki {
    fn generate() -> Result<Pki> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "tidegate-test-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;

        let mut serving = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "kubernetes.default.svc".to_string(),
        ])?;
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving.signed_by(&serving_key, &ca)?;

        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin
            .distinguished_name
            .push(DnType::CommonName, "tidegate-test-admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_key = KeyPair::generate()?;
        let admin_cert = admin.signed_by(&admin_key, &ca)?;

        let sa = KeyPair::generate()?;
        Ok(Pki {
            ca_pem: ca.pem(),
            serving: (serving_cert.pem(), serving_key.serialize_pem()),
            admin: (admin_cert.pem(), admin_key.serialize_pem()),
            sa_key_pem: sa.serialize_pem(),
            sa_pub_pem: sa.public_key_pem(),
        })
    }

    fn write(&self, dir: &Path) -> Result<()> {
        for (name, text) in [
            ("ca.crt", &self.ca_pem),
            ("apiserver.crt", &self.serving.0),
            ("apiserver.key", &self.serving.1),
            ("sa.key", &self.sa_key_pem),
            ("sa.pub", &self.sa_pub_pem),
        ] {
            let path = dir.join(name);
            fs::write(&path, text).map_err(io_err(&path))?;
        }
        Ok(())
    }
}

/// Whom a kubeconfig authenticates as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A client certificate in `system:masters`: the tests' own setup.
    Admin,
    /// The `tidegate/tidegate` ServiceAccount bound by deploy/rbac.yaml.
    Tidegate,
}

/// One API server (a cluster) with its controllers and kubelet stand-in.
pub struct Cluster {
    name: String,
    url: String,
    dir: PathBuf,
    ca_pem: String,
    admin_kubeconfig: PathBuf,
    tidegate_token: String,
    procs: Vec<Proc>,
}

impl Cluster {
    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster's name (its etcd prefix is `/registry-<name>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A kubeconfig of the administrator (context `admin`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// Writes a kubeconfig with one context per name in `contexts` (the
    /// first is current), all pointing at this cluster as `identity`.
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        contexts: &[&str],
        identity: Identity,
    ) -> Result<()> {
        let user = match identity {
            Identity::Admin => {
                let pki = self.read_admin()?;
                format!(
                    "    client-certificate-data: {}\n    client-key-data: {}\n",
                    B64.encode(pki.0),
                    B64.encode(pki.1)
                )
            }
            Identity::Tidegate => format!("    token: {}\n", self.tidegate_token),
        };
        let mut ctxs = String::new();
        for c in contexts {
            ctxs.push_str(&format!(
                "- name: {c}\n  context:\n    cluster: {name}\n    user: {name}\n    namespace: default\n",
                name = self.name
            ));
        }
        let text = format!(
            "apiVersion: v1\nkind: Config\npreferences: {{}}\nclusters:\n- name: {name}\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\ncontexts:\n{ctxs}current-context: {current}\nusers:\n- name: {name}\n  user:\n{user}",
            name = self.name,
            url = self.url,
            ca = B64.encode(&self.ca_pem),
            current = contexts.first().copied().unwrap_or("admin"),
        );
        fs::write(path, text).map_err(io_err(path))
    }

    fn read_admin(&self) -> Result<(String, String)> {
        let read = |n: &str| {
            let p = self.dir.join(n);
            fs::read_to_string(&p).map_err(io_err(&p))
        };
        Ok((read("admin.crt")?, read("admin.key")?))
    }

    /// Runs the real kubectl as the administrator; its stdout.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_stdin(args, None)
    }

    /// [`Cluster::kubectl`] with `stdin` piped in (`-f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        kubectl(&self.admin_kubeconfig, args, stdin)
    }

    /// Creates namespace `name` (as the administrator), or does nothing
    /// when it exists.
    pub fn namespace(&self, name: &str) -> Result<()> {
        let manifest = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n");
        self.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest))
            .map(drop)
    }

    /// Log files of this cluster's processes (for a failing test to show).
    pub fn logs(&self) -> Vec<PathBuf> {
        self.procs.iter().map(|p| p.log.clone()).collect()
    }
}

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut cmd = Command::new(kubectl_path());
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = args.join(" ");
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        program: "kubectl".into(),
        source,
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|source| Error::Spawn {
                program: "kubectl".into(),
                source,
            })?;
    }
    let out = child.wait_with_output().map_err(|source| Error::Spawn {
        program: "kubectl".into(),
        source,
    })?;
    if !out.status.success() {
        return Err(Error::Kubectl {
            args: shown,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// etcd and the clusters stored in it.
pub struct ControlPlane {
    bin: PathBuf,
    etcd_url: String,
    pki: Pki,
    clusters: Vec<Cluster>,
    etcd: Proc,
    dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts etcd and one cluster named `main`; blocks until the API
    /// server is ready, the kwok Node is Ready and tidegate's
    /// ServiceAccount has a token.
    pub fn start() -> Result<ControlPlane> {
        let bin = binaries()?;
        let dir = tempfile::Builder::new()
            .prefix("real-kube-")
            .tempdir()
            .map_err(io_err(Path::new("/tmp")))?;
        let pki = Pki::generate()?;
        pki.write(dir.path())?;
        let (etcd, etcd_url) = start_etcd(&bin, dir.path())?;
        let mut plane = ControlPlane {
            bin,
            etcd_url,
            pki,
            clusters: Vec::new(),
            etcd,
            dir,
        };
        plane.add_cluster("main")?;
        Ok(plane)
    }

    /// One control plane per test process, started on first use. Panics
    /// with the reason (and the failing process's log) when it cannot
    /// start: a real-server test never passes by skipping.
    pub fn shared() -> &'static ControlPlane {
        static PLANE: OnceLock<ControlPlane> = OnceLock::new();
        PLANE.get_or_init(|| {
            ControlPlane::start()
                .unwrap_or_else(|e| panic!("the real kube-apiserver stand did not start: {e}"))
        })
    }

    /// The first cluster (`main`).
    pub fn cluster(&self) -> &Cluster {
        &self.clusters[0]
    }

    /// A cluster by name.
    pub fn get(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// Starts another cluster: a second kube-apiserver on the same etcd
    /// under `/registry-<name>`, with its own controllers and kwok.
    pub fn add_cluster(&mut self, name: &str) -> Result<&Cluster> {
        let cluster = start_cluster(self, name)?;
        self.clusters.push(cluster);
        Ok(self.clusters.last().expect("just pushed"))
    }

    /// The etcd client URL.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// etcd's log file.
    pub fn etcd_log(&self) -> &Path {
        &self.etcd.log
    }
}

fn start_etcd(bin: &Path, dir: &Path) -> Result<(Proc, String)> {
    let client = free_port()?;
    let peer = free_port()?;
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let data = dir.join("etcd-data");
    let args: Vec<String> = [
        "--name=etcd",
        &format!("--data-dir={}", data.display()),
        &format!("--listen-client-urls={url}"),
        &format!("--advertise-client-urls={url}"),
        &format!("--listen-peer-urls={peer_url}"),
        &format!("--initial-advertise-peer-urls={peer_url}"),
        &format!("--initial-cluster=etcd={peer_url}"),
        "--unsafe-no-fsync=true",
        "--quota-backend-bytes=4294967296",
        "--log-level=warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut etcd = Proc::start(bin, "etcd", &args, dir)?;
    wait_for("etcd", Duration::from_secs(60), &mut etcd, || {
        std::net::TcpStream::connect(("127.0.0.1", client)).is_ok()
    })?;
    Ok((etcd, url))
}

/// Polls `ready` every 200 ms until it holds, failing early when `proc`
/// exits and with its log after `timeout`.
fn wait_for(
    what: &str,
    timeout: Duration,
    proc: &mut Proc,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if ready() {
            return Ok(());
        }
        proc.check_alive()?;
        if start.elapsed() > timeout {
            return Err(Error::NotReady {
                what: what.to_string(),
                seconds: timeout.as_secs(),
                log: proc.tail(),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start_cluster(plane: &ControlPlane, name: &str) -> Result<Cluster> {
    let dir = plane.dir.path().join(name);
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    for (file, text) in [
        ("admin.crt", &plane.pki.admin.0),
        ("admin.key", &plane.pki.admin.1),
    ] {
        let path = dir.join(file);
        fs::write(&path, text).map_err(io_err(&path))?;
    }
    let top = plane.dir.path();
    let port = free_port()?;
    let url = format!("https://127.0.0.1:{port}");
    let f = |flag: &str, file: &str| format!("--{flag}={}", top.join(file).display());
    let apiserver_args = vec![
        format!("--etcd-servers={}", plane.etcd_url),
        format!("--etcd-prefix=/registry-{name}"),
        format!("--secure-port={port}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        // The endpoints reconciler refuses a loopback address; nothing
        // here reaches the API server through the `kubernetes` Service.
        "--endpoint-reconciler-type=none".into(),
        f("tls-cert-file", "apiserver.crt"),
        f("tls-private-key-file", "apiserver.key"),
        f("client-ca-file", "ca.crt"),
        "--authorization-mode=Node,RBAC".into(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        f("service-account-key-file", "sa.pub"),
        f("service-account-signing-key-file", "sa.key"),
        "--service-cluster-ip-range=10.96.0.0/16".into(),
        format!("--cert-dir={}", dir.join("certs").display()),
        "--profiling=false".into(),
        "--v=1".into(),
    ];
    let mut cluster = Cluster {
        name: name.to_string(),
        url: url.clone(),
        dir: dir.clone(),
        ca_pem: plane.pki.ca_pem.clone(),
        admin_kubeconfig: dir.join("admin.kubeconfig"),
        tidegate_token: String::new(),
        procs: Vec::new(),
    };
    let mut apiserver = Proc::start(&plane.bin, "kube-apiserver", &apiserver_args, &dir)?;
    cluster.write_kubeconfig(
        &cluster.admin_kubeconfig.clone(),
        &["admin"],
        Identity::Admin,
    )?;
    let kc = cluster.admin_kubeconfig.clone();
    wait_for(
        &format!("kube-apiserver {name}"),
        Duration::from_secs(180),
        &mut apiserver,
        || kubectl(&kc, &["get", "--raw", "/readyz"], None).is_ok(),
    )?;
    cluster.procs.push(apiserver);
    start_controllers(plane, &mut cluster)?;
    bootstrap(&mut cluster)?;
    Ok(cluster)
}

fn start_controllers(plane: &ControlPlane, cluster: &mut Cluster) -> Result<()> {
    let kc = format!("--kubeconfig={}", cluster.admin_kubeconfig.display());
    let top = plane.dir.path();
    let kcm = vec![
        kc.clone(),
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={}", free_port()?),
        format!("--root-ca-file={}", top.join("ca.crt").display()),
        format!(
            "--service-account-private-key-file={}",
            top.join("sa.key").display()
        ),
        "--use-service-account-credentials=false".into(),
        format!("--cert-dir={}", cluster.dir.join("kcm-certs").display()),
        "--v=1".into(),
    ];
    let scheduler = vec![
        kc.clone(),
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={}", free_port()?),
        format!(
            "--cert-dir={}",
            cluster.dir.join("scheduler-certs").display()
        ),
        "--v=1".into(),
    ];
    let kwok = vec![
        kc,
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
        format!("--config={}", plane.bin.join("kwok-stages.yaml").display()),
        "--node-lease-duration-seconds=40".into(),
        "--cidr=10.244.0.0/16".into(),
        "--node-ip=10.244.0.1".into(),
        format!("--server-address=127.0.0.1:{}", free_port()?),
    ];
    for (name, args) in [
        ("kube-controller-manager", kcm),
        ("kube-scheduler", scheduler),
        ("kwok", kwok),
    ] {
        cluster
            .procs
            .push(Proc::start(&plane.bin, name, &args, &cluster.dir)?);
    }
    Ok(())
}

/// The fake Node kwok keeps Ready; big enough for the 10,000-object benchmarks.
const NODE: &str = r#"apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-0
    kubernetes.io/os: linux
    type: kwok
status:
  allocatable: {cpu: "256", memory: 1Ti, pods: "20000"}
  capacity: {cpu: "256", memory: 1Ti, pods: "20000"}
"#;

/// tidegate's Namespace, ServiceAccount and RBAC from deploy/, the kwok
/// Node, and a token of the ServiceAccount.
fn bootstrap(cluster: &mut Cluster) -> Result<()> {
    let deploy = repo_root().join("deploy");
    let files: Vec<String> = ["namespace.yaml", "serviceaccount.yaml", "rbac.yaml"]
        .iter()
        .map(|f| deploy.join(f).display().to_string())
        .collect();
    let mut args = vec!["apply"];
    for f in &files {
        args.extend(["-f", f.as_str()]);
    }
    cluster.kubectl(&args)?;
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(NODE))?;
    let start = Instant::now();
    let node_ready = |c: &Cluster| {
        c.kubectl(&[
            "get",
            "node",
            "kwok-node-0",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .is_ok_and(|s| s == "True")
    };
    let default_sa = |c: &Cluster| {
        c.kubectl(&["get", "serviceaccount", "default", "-n", "default"])
            .is_ok()
    };
    while !(node_ready(cluster) && default_sa(cluster)) {
        for p in &mut cluster.procs {
            p.check_alive()?;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let log = cluster.procs.iter().map(Proc::tail).collect::<Vec<_>>();
            return Err(Error::NotReady {
                what: "the kwok node and the default ServiceAccount".into(),
                seconds: 120,
                log: log.join("\n---\n"),
            });
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let (ns, sa) = SERVICE_ACCOUNT;
    cluster.tidegate_token =
        cluster.kubectl(&["create", "token", sa, "-n", ns, "--duration=48h"])?;
    Ok(())
}
