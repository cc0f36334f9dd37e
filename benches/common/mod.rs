//! What the benchmarks share: the `--bench` gate, the local stand-ins (moto
//! and the kube-sim binary on loopback ports), provider connections to
//! them, and median/spread/peak-memory figures. Included by each harness
//! with `mod common;` (not a bench target of its own: Cargo.toml lists the
//! targets and `autobenches` is off).

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tidegate::model::Model;
use tidegate::provider::aws::AwsProvider;
use tidegate::provider::kubernetes::Kubernetes;

/// The benchmark's command line without cargo's `--bench` flag, program
/// name first; or `None`, after printing one line saying how to run it,
/// when `--bench` is absent. `cargo bench` appends `--bench` to the
/// arguments of a `harness = false` target; `cargo test --all-targets`
/// (the test suite) builds and runs every bench target without it, and the
/// suite must not do a benchmark's work.
pub fn args_or_skip(name: &str) -> Option<Vec<String>> {
    let all: Vec<String> = std::env::args().collect();
    let args: Vec<String> = all.iter().filter(|a| *a != "--bench").cloned().collect();
    if args.len() == all.len() {
        println!(
            "{name}: a benchmark, not a test; run it with `cargo bench --bench {name} -- [ARGS]`"
        );
        return None;
    }
    Some(args)
}

/// A child process killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The repository root (where `.ci/.venv` lives).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh scratch directory, removed by [`Scratch`]'s drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("tidegate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// moto (EC2) and kube-sim (Kubernetes), started as processes on loopback;
/// with `TIDEGATE_BENCH_KUBE=real`, a real kube-apiserver (the `real-kube`
/// binary) instead of kube-sim.
pub struct Stand {
    _procs: Vec<Killed>,
    /// moto's endpoint, `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// A kubeconfig with one context per name given to [`Stand::start`].
    pub kubeconfig: PathBuf,
    /// kube-sim's process id (for its memory and CPU time).
    pub sim_pid: u32,
    /// kube-sim's port (its `/_sim/counters`); unused with a real API server.
    pub kube_port: u16,
    /// moto's process id (for its CPU time).
    pub moto_pid: u32,
    /// The real API server (`TIDEGATE_BENCH_KUBE=real`) rather than kube-sim.
    pub real: bool,
}

/// The kube-sim binary of the running benchmark's profile.
pub fn kube_sim_binary() -> PathBuf {
    profile_binary("kube-sim", "kube-sim")
}

/// Binary `name` of package `package` in the running benchmark's profile
/// directory: a bench executable is `target/<profile>/deps/<name>-<hash>`
/// (`target/release/deps` under `cargo bench`), the binaries of other
/// packages are `target/<profile>/<name>`. Cargo builds only the library of
/// a dev-dependency, so `package`'s binaries are built by hand.
fn profile_binary(name: &str, package: &str) -> PathBuf {
    let profile = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.to_path_buf()))
        .expect("the benchmark's own path");
    let path = profile.join(name);
    if !path.is_file() {
        let release = if profile.ends_with("release") {
            " --release"
        } else {
            ""
        };
        panic!(
            "{} is missing: cargo build{release} -p {package}",
            path.display()
        );
    }
    path
}

/// A moto server (EC2) on a free loopback port, and its endpoint
/// `http://127.0.0.1:<port>` once it listens.
pub fn start_moto() -> (Killed, String) {
    // The checkout's own (`.ci/setup-tools`), else one on PATH (a second
    // worktree shares the first one's).
    let own = root().join(".ci/.venv/bin/moto_server");
    let bin = std::iter::once(own.clone())
        .chain(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths)
                .map(|d| d.join("moto_server")),
        )
        .find(|p| p.is_file());
    let Some(bin) = bin else {
        panic!(
            "{} missing and no moto_server on PATH: run .ci/setup-tools",
            own.display()
        )
    };
    let port = free_port();
    let moto = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server starts (run .ci/setup-tools)");
    let moto = Killed(moto);
    wait_port(port);
    (moto, format!("http://127.0.0.1:{port}"))
}

impl Stand {
    /// Starts both stand-ins; `contexts` name the kubeconfig contexts.
    pub fn start(dir: &Path, contexts: &str) -> Stand {
        let kube_port = free_port();
        let kubeconfig = dir.join("kubeconfig");
        let _ = std::fs::remove_file(&kubeconfig);
        let real = std::env::var("TIDEGATE_BENCH_KUBE").is_ok_and(|k| k == "real");
        let sim = if real {
            // A real kube-apiserver with RBAC (tests/real-kube), tidegate as
            // its ServiceAccount: `cargo build --release -p real-kube`.
            Command::new(profile_binary("real-kube", "real-kube"))
                .args(["--contexts", contexts])
                .arg("--kubeconfig-out")
                .arg(&kubeconfig)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("real-kube starts")
        } else {
            Command::new(kube_sim_binary())
                .args(["--port", &kube_port.to_string(), "--contexts", contexts])
                .arg("--kubeconfig-out")
                .arg(&kubeconfig)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("kube-sim starts")
        };
        let sim = Killed(sim);
        let sim_pid = sim.0.id();
        // The Kubernetes stand-in starts meanwhile.
        let (moto, endpoint) = start_moto();
        let moto_pid = moto.0.id();
        if !real {
            wait_port(kube_port);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        while !kubeconfig.is_file() {
            assert!(
                std::time::Instant::now() < deadline,
                "no kubeconfig from the Kubernetes stand-in"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Stand {
            _procs: vec![moto, sim],
            endpoint,
            kubeconfig,
            sim_pid,
            kube_port,
            moto_pid,
            real,
        }
    }

    /// Both providers of `env`, connected to the stand-ins under `owner`.
    pub async fn connect(
        &self,
        model: &Model,
        env: &str,
        owner: &str,
    ) -> (Kubernetes, AwsProvider) {
        let target = model
            .environment(env)
            .expect("the environment exists")
            .target(Some(owner));
        let k8s = Kubernetes::connect_kubeconfig(&self.kubeconfig, &target, Default::default())
            .await
            .expect("kube-sim connects");
        let conf = aws_sdk_ec2::config::Builder::new()
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "bench", "bench", None, None, "bench",
            ));
        let aws = AwsProvider::with_config(
            tidegate::provider::Owner::of(&target),
            conf,
            Default::default(),
        );
        (k8s, aws)
    }
}

/// Median of `v` (upper median for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

/// `min..max` of `v`, with `digits` decimals.
pub fn spread(v: &[f64], digits: usize) -> String {
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
    format!("{lo:.digits$}..{hi:.digits$}")
}

/// `median (min..max)` of `v`, with `digits` decimals.
pub fn summary(v: &[f64], digits: usize) -> String {
    format!("{:.digits$} ({})", median(v), spread(v, digits))
}

/// A memory figure of a process from `/proc/<pid>/status` (`VmHWM` for the
/// peak, `VmRSS` for now), in KiB.
pub fn memory_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time (user + system, every thread) a process has used so far, in
/// seconds, from `/proc/<pid>/stat`; `None` when it cannot be read.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may
    // hold spaces: state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 when it cannot be asked).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// KiB as MiB text.
pub fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "unavailable".into())
}

/// The real `tidegate reconcile` binary (the one cargo builds for the
/// benchmark) against `stand`, as the benchmarks run it: the API on
/// `port`, probes and `/metrics` on `probe_port`, the Git cache and state
/// under `dir`, `parallelism` in flight, the stand-ins' endpoints and
/// credentials in the environment. The caller adds the source (`--remote`,
/// `--branch`, `--interval`, ...), `RUST_LOG` and where output goes.
/// (Cargo builds the package's binaries, in the benchmark's profile,
/// before it runs a benchmark.)
pub fn reconciler(
    stand: &Stand,
    dir: &Path,
    port: u16,
    probe_port: u16,
    parallelism: usize,
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tidegate"));
    c.arg("reconcile")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--probe-listen")
        .arg(format!("127.0.0.1:{probe_port}"))
        .arg("--cache-dir")
        .arg(dir.join("git-cache"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--parallelism", &parallelism.to_string()])
        .env("KUBECONFIG", &stand.kubeconfig)
        .env("AWS_ENDPOINT_URL", &stand.endpoint)
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

/// `git args` in `dir` (as user `bench`); its standard output, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One HTTP/1.0 request to `127.0.0.1:port`: the status code and body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// `GET path` on `127.0.0.1:port`; the body on 200.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http(port, "GET", path, &[], b"")
        .filter(|(code, _)| *code == 200)
        .map(|(_, body)| body)
}

/// Writes `files` (path → text) under `dir`.
pub fn write_files(dir: &Path, files: &[(String, String)]) {
    for (p, t) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, t).unwrap();
    }
}

/// A repository of one environment `bench` holding a VPC and a Namespace
/// plus `cells` cells of 10 resources. Every `ec2_every`-th cell is a
/// mixed one (subnet, security group, 6 ConfigMaps, Deployment, Service),
/// the others are Kubernetes-only (8 ConfigMaps, Deployment, Service).
/// `extra` is added to the environment's spec (for example a `drift:`
/// block, indented by two spaces).
pub fn cells_repo(dir: &Path, cells: usize, ec2_every: usize, extra: &str) {
    envs_repo(dir, &["bench"], cells, ec2_every, extra, None);
}

/// Like [`cells_repo`], one environment per name in `envs`, each `after`
/// the one before it (promotion order), with its own kubeconfig context
/// and namespace (both named after it). With `rev`, every object carries
/// it (a ConfigMap data key `REV`, the Deployment's pod template
/// annotation, a label on Services and the Namespace, a tag on the EC2
/// resources), passed to the modules by each environment: writing the
/// repository again with another `rev` changes every object of every
/// environment. The modules are shared; the files are overwritten.
pub fn envs_repo(
    dir: &Path,
    envs: &[&str],
    cells: usize,
    ec2_every: usize,
    extra: &str,
    rev: Option<&str>,
) {
    let mut files = Vec::new();
    let rev_input = |indent: &str| {
        rev.map(|r| format!("{indent}rev: \"{r}\"\n"))
            .unwrap_or_default()
    };
    for (j, name) in envs.iter().enumerate() {
        let after = if j == 0 {
            String::new()
        } else {
            format!("  after: {}\n", envs[j - 1])
        };
        let mut env = format!(
            "apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: {name}\nspec:\n{after}  targets:\n    kubernetes:\n      context: {name}\n    aws:\n      region: us-east-1\n  policy:\n    defaultSeverity: warning\n{extra}  modules:\n    - name: base\n      source: modules/base\n      inputs:\n        namespace: {name}\n{}",
            rev_input("        ")
        );
        for i in 0..cells {
            if i % ec2_every.max(1) == 0 {
                env.push_str(&format!(
                    "    - name: c{i}\n      source: modules/cell\n      inputs:\n        index: \"{i}\"\n        subnet: 10.0.{}.{}/28\n        vpcId: ${{module.base.vpc_id}}\n        namespace: ${{module.base.namespace}}\n{}",
                    i / 16,
                    (i % 16) * 16,
                    rev_input("        ")
                ));
            } else {
                env.push_str(&format!(
                    "    - name: c{i}\n      source: modules/kcell\n      inputs:\n        index: \"{i}\"\n        namespace: ${{module.base.namespace}}\n{}",
                    rev_input("        ")
                ));
            }
        }
        files.push((format!("environments/{name}.yaml"), env));
    }
    // What `rev` adds to the modules: the input, and where it goes.
    let (rev_decl, rev_data, rev_tags, rev_labels, rev_annotations) = match rev {
        Some(_) => (
            "    rev:\n      type: string\n",
            "          REV: ${input.rev}\n",
            "        tags:\n          rev: ${input.rev}\n",
            "          labels:\n            rev: ${input.rev}\n",
            "              annotations:\n                rev: ${input.rev}\n",
        ),
        None => ("", "", "", "", ""),
    };
    let base = format!(
        "apiVersion: tidegate.dev/v1\nkind: Module\nmetadata:\n  name: base\nspec:\n  inputs:\n    namespace:\n      type: string\n{rev_decl}  outputs:\n    vpc_id:\n      value: ${{resource.vpc.id}}\n    namespace:\n      value: ${{resource.ns.metadata.name}}\n  resources:\n    - name: vpc\n      provider: aws\n      type: vpc\n      spec:\n        cidrBlock: 10.0.0.0/16\n{rev_tags}    - name: ns\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: Namespace\n        metadata:\n          name: ${{input.namespace}}\n{rev_labels}",
    );
    let mut cell = format!(
        "apiVersion: tidegate.dev/v1\nkind: Module\nmetadata:\n  name: cell\nspec:\n  inputs:\n    index:\n      type: string\n    subnet:\n      type: string\n    vpcId:\n      type: string\n    namespace:\n      type: string\n{rev_decl}  resources:\n    - name: subnet\n      provider: aws\n      type: subnet\n      spec:\n        vpcId: ${{input.vpcId}}\n        cidrBlock: ${{input.subnet}}\n{rev_tags}    - name: sg\n      provider: aws\n      type: security_group\n      spec:\n        vpcId: ${{input.vpcId}}\n        groupName: cell${{input.index}}\n        description: cell\n        ingress:\n          - protocol: tcp\n            fromPort: 443\n            toPort: 443\n            cidrBlocks: ['${{input.subnet}}']\n{rev_tags}",
    );
    let mut kcell = format!(
        "apiVersion: tidegate.dev/v1\nkind: Module\nmetadata:\n  name: kcell\nspec:\n  inputs:\n    index:\n      type: string\n    namespace:\n      type: string\n{rev_decl}  resources:\n",
    );
    for k in 6..8 {
        kcell.push_str(&format!(
            "    - name: config{k}\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: c${{input.index}}-config{k}\n          namespace: ${{input.namespace}}\n        data:\n          INDEX: ${{input.index}}\n{rev_data}"
        ));
    }
    for k in 0..6 {
        kcell.push_str(&format!(
            "    - name: config{k}\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: c${{input.index}}-config{k}\n          namespace: ${{input.namespace}}\n        data:\n          INDEX: ${{input.index}}\n{rev_data}"
        ));
        cell.push_str(&format!(
            "    - name: config{k}\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: c${{input.index}}-config{k}\n          namespace: ${{input.namespace}}\n        data:\n          SUBNET: ${{resource.subnet.id}}\n          GROUP: ${{resource.sg.id}}\n{rev_data}"
        ));
    }
    let workload = format!("    - name: web\n      provider: kubernetes\n      manifest:\n        apiVersion: apps/v1\n        kind: Deployment\n        metadata:\n          name: c${{input.index}}-web\n          namespace: ${{input.namespace}}\n        spec:\n          replicas: 1\n          selector:\n            matchLabels: {{ app: 'c${{input.index}}-web' }}\n          template:\n            metadata:\n              labels: {{ app: 'c${{input.index}}-web' }}\n{rev_annotations}            spec:\n              containers:\n                - name: web\n                  image: registry.example.com/web@sha256:8074748e826827434bbc9e3e5272c2b8fc34cf74eb9e94ebb489afe6cfcef7aa\n                  envFrom:\n                    - configMapRef:\n                        name: ${{resource.config0.metadata.name}}\n    - name: svc\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: Service\n        metadata:\n          name: c${{input.index}}-web\n          namespace: ${{input.namespace}}\n{rev_labels}        spec:\n          selector: {{ app: 'c${{input.index}}-web' }}\n          ports:\n            - port: 80\n");
    cell.push_str(&workload);
    kcell.push_str(&workload);
    files.extend([
        (
            "tidegate.yaml".into(),
            tidegate::load::project::document("bench"),
        ),
        ("modules/base/module.yaml".into(), base),
        ("modules/cell/module.yaml".into(), cell),
        ("modules/kcell/module.yaml".into(), kcell),
    ]);
    write_files(dir, &files);
}
