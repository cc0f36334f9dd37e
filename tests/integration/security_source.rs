//! Issue 18, the Git source side, against the real binary: credentials in
//! the `--remote` URL and the paths of age identities never show (status
//! API, status page, metrics, text and JSON logs), and an environment that
//! requires signed commits refuses a force-push back to an older
//! trusted-signed commit, also after a restart, unless a rollback is asked
//! for.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::source::{ssh_signer, HttpGit, SshSigner};
use crate::support::git;

/// The token in the URL: it must show nowhere.
const CANARY: &str = "ghp_CANARY7d0e1b2f";
/// Part of the path of the mounted age identity: it must not show in the
/// status or the page.
const KEY_DIR: &str = "mounted-identity-PATHCANARY";

/// An upstream repository made with `git`, with a working tree.
struct Upstream {
    dir: TempDir,
}

impl Upstream {
    fn new() -> Upstream {
        let up = Upstream {
            dir: tempfile::tempdir().unwrap(),
        };
        git(up.path(), &["init", "-q", "-b", "main"]);
        crate::stand::write_project(up.path());
        up
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// Commits everything, signed by `signer` when given.
    fn commit(&self, msg: &str, signer: Option<&SshSigner>) -> String {
        git(self.path(), &["add", "-A"]);
        let key = signer.map(|s| format!("user.signingkey={}", s.key.display()));
        let mut args = vec![];
        if let Some(key) = &key {
            args.extend(["-c", "gpg.format=ssh", "-c", key.as_str()]);
        }
        args.extend(["commit", "-q", "--allow-empty", "-m", msg]);
        if signer.is_some() {
            args.push("-S");
        }
        git(self.path(), &args);
        git(self.path(), &["rev-parse", "HEAD"])
    }
}

fn env_doc(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `tidegate reconcile` running as a child process, its stdout and stderr
/// collected.
struct Reconciler {
    child: Child,
    port: u16,
    /// `--probe-listen`: probes and metrics.
    probe: u16,
    out: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Reconciler {
    fn start(args: &[&str]) -> Reconciler {
        let port = free_port();
        let probe = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidegate"))
            .arg("reconcile")
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--probe-listen", &format!("127.0.0.1:{probe}")])
            .args(["--interval", "300ms", "--shutdown-grace", "3s"])
            .env_remove("RUST_LOG")
            .env_remove("SOPS_AGE_KEY_FILE")
            .env_remove("SOPS_AGE_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let mut readers = vec![];
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for mut stream in streams {
            let out = out.clone();
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }));
        }
        let r = Reconciler {
            child,
            port,
            probe,
            out,
            readers,
        };
        r.until(30, "the HTTP server answers", |_| true);
        r
    }

    /// One GET; (status code, body).
    fn get(&self, path: &str) -> Option<(u16, String)> {
        // Probes and metrics have their own listener.
        let port = match path {
            "/metrics" | "/healthz" | "/readyz" => self.probe,
            _ => self.port,
        };
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let code = text.get(9..12)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((code, body))
    }

    fn status(&self) -> Option<Value> {
        let (_, body) = self.get("/api/v1/status")?;
        serde_json::from_str(&body).ok()
    }

    /// Waits until `cond` holds for the status document.
    fn until(&self, secs: u64, what: &str, mut cond: impl FnMut(&Value) -> bool) -> Value {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(s) = self.status() {
                if cond(&s) {
                    return s;
                }
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for: {what}\nstatus: {:?}\noutput:\n{}",
                self.status(),
                self.out.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait for exit 0; everything it printed.
    fn stop(mut self) -> String {
        let kill = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = self.child.wait().unwrap();
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        let out = self.out.lock().unwrap().clone();
        assert_eq!(status.code(), Some(0), "{out}");
        out
    }
}

impl Drop for Reconciler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment `name` in a status document.
fn env<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or(&Value::Null)
}

/// Status API, status page and metrics, as served now.
fn every_page(r: &Reconciler) -> Vec<(&'static str, String)> {
    ["/api/v1/status", "/", "/metrics"]
        .into_iter()
        .map(|p| (p, r.get(p).expect("the server answers").1))
        .collect()
}

fn assert_nowhere(needle: &str, shown: &[(&str, String)]) {
    for (place, text) in shown {
        assert!(!text.contains(needle), "{needle} shows in {place}:\n{text}");
    }
}

/// Issue 18 part 2. The token in `--remote` is taken out of the URL and
/// used as the HTTPS credentials (the fetch through a server demanding
/// exactly that Basic authentication succeeds), and it shows nowhere: not
/// in `remote`, `sourceError` (the server going away), the status page,
/// /metrics, nor the text and JSON logs. A secrets failure in the status
/// names the public key of the identity loaded, not where it was mounted.
#[test]
fn credentials_in_the_remote_url_and_identity_paths_are_never_shown() {
    use base64::Engine;
    let up = Upstream::new();
    let sops = Path::new(env!("CARGO_MANIFEST_DIR")).join("secrets/dev.sops.yaml");
    std::fs::create_dir_all(up.path().join("secrets")).unwrap();
    std::fs::copy(&sops, up.path().join("secrets/dev.sops.yaml")).unwrap();
    up.write(
        "environments/dev.yaml",
        &env_doc("dev", "  secrets: [secrets/dev.sops.yaml]\n"),
    );
    up.write("environments/prod.yaml", &env_doc("prod", "  after: dev\n"));
    up.commit("dev with a secret", None);
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{CANARY}"));
    let root = up.path().parent().unwrap().to_path_buf();
    let name = up.path().file_name().unwrap().to_string_lossy().to_string();
    let server = HttpGit::start(root, Some(format!("Basic {basic}")));
    let clean = format!("http://127.0.0.1:{}/{name}", server.port);
    let with_token = format!(
        "http://x-access-token:{CANARY}@127.0.0.1:{}/{name}",
        server.port
    );

    // The identity of another environment, mounted under a telling path:
    // dev's secrets cannot be opened with it.
    let scratch = tempfile::tempdir().unwrap();
    let keys: PathBuf = scratch.path().join(KEY_DIR);
    std::fs::create_dir_all(&keys).unwrap();
    let key = keys.join("prod.agekey");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("secrets/demo-keys/prod.agekey"),
        &key,
    )
    .unwrap();
    let (cache, state) = (scratch.path().join("cache"), scratch.path().join("state"));
    let r = Reconciler::start(&[
        "--remote",
        &with_token,
        "--log-format",
        "text",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--age-key-file",
        key.to_str().unwrap(),
    ]);
    let s = r.until(
        60,
        "fetched with the URL's token, dev failed on secrets",
        |s| s["ready"] == true && env(s, "dev")["last"]["error"]["reason"] == "secrets",
    );
    assert_eq!(s["remote"], clean.as_str());
    let msg = env(&s, "dev")["last"]["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("none of the 1 age identities loaded (public keys age13z2dsku6g9g8477g3fm54v97zdt5jrfm6dqjzxnusl4q7zrjs4qszd8dwl)"),
        "{msg}"
    );
    let mut shown = every_page(&r);
    assert!(shown[1].1.contains("secrets"), "{}", shown[1].1);

    // The server goes away: the outage is reported with the clean URL.
    drop(server);
    let s = r.until(30, "the outage is reported", |s| {
        s["sourceError"].as_str().is_some()
    });
    let error = s["sourceError"].as_str().unwrap();
    assert!(error.contains(&clean), "{error}");
    shown.extend(every_page(&r));
    let logs = r.stop();
    assert!(
        logs.contains("the --remote URL carries credentials") && logs.contains("--git-token-file"),
        "{logs}"
    );
    assert!(logs.contains("git remote unreachable"), "{logs}");
    shown.push(("text logs", logs));
    assert_nowhere(CANARY, &shown);
    assert_nowhere(KEY_DIR, &shown);

    // JSON logs, a remote that never answers (`https`, user and token).
    let closed = free_port();
    let r = Reconciler::start(&[
        "--remote",
        &format!("https://x-access-token:{CANARY}@127.0.0.1:{closed}/org/repo.git"),
        "--log-format",
        "json",
        "--cache-dir",
        scratch.path().join("cache2").to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let s = r.until(30, "the outage is reported", |s| {
        s["sourceError"].as_str().is_some()
    });
    assert_eq!(
        s["remote"],
        format!("https://127.0.0.1:{closed}/org/repo.git").as_str()
    );
    let mut shown = every_page(&r);
    let logs = r.stop();
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"]
                == "git remote unreachable; serving the last good commit"),
        "{logs}"
    );
    shown.push(("JSON logs", logs));
    assert_nowhere(CANARY, &shown);
}

/// dev and prod; prod requires a commit signed by `ops`.
fn signed_rev(up: &Upstream, rev: u32, ops: &SshSigner) -> String {
    up.write(
        "environments/dev.yaml",
        &env_doc("dev", &format!("  vars: {{rev: {rev}}}\n")),
    );
    up.write(
        "environments/prod.yaml",
        &env_doc(
            "prod",
            &format!("  after: dev\n  requireSignedCommits: true\n  vars: {{rev: {rev}}}\n"),
        ),
    );
    up.commit(&format!("rev {rev}"), Some(ops))
}

/// The commit of prod's record in the state directory.
fn recorded(state: &Path) -> String {
    let text = std::fs::read_to_string(state.join("test.prod.json")).unwrap();
    let record: Value = serde_json::from_str(&text).unwrap();
    record["commit"].as_str().unwrap().to_string()
}

/// Issue 18 part 5. prod requires trusted signatures; the branch is reset
/// (force-pushed) from c2 back to the older, also trusted-signed c1. prod
/// refuses it with reason `not-a-descendant` (status, page, metric, a log
/// line naming both commits), dev (no signature required) follows; after a
/// restart with an empty Git cache the record still refuses it.
/// `--allow-rollback-to c1` applies it; `--force-push follow` follows.
#[test]
fn a_force_push_back_to_an_older_signed_commit_is_refused_across_restarts() {
    let up = Upstream::new();
    let ops = ssh_signer("ops-laptop");
    let scratch = tempfile::tempdir().unwrap();
    let signers = scratch.path().join("allowed_signers");
    std::fs::write(&signers, format!("ops@example.com {}", ops.public)).unwrap();
    let state = scratch.path().join("state");
    let url = format!("file://{}", up.path().display());
    let args = |cache: &str, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--remote",
            &url,
            "--log-format",
            "json",
            "--trusted-signers",
            signers.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--cache-dir",
            scratch.path().join(cache).to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let start = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        Reconciler::start(&a)
    };
    let applied = |s: &Value, env_name: &str, commit: &str| {
        let e = env(s, env_name);
        e["lastGood"] == commit && e["last"]["error"].is_null()
    };
    let refused = |s: &Value, commit: &str| {
        let last = &env(s, "prod")["last"];
        last["commit"] == commit && last["error"]["reason"] == "not-a-descendant"
    };

    let c1 = signed_rev(&up, 1, &ops);
    let r = start(args("cache-a", &[]));
    r.until(60, "c1 reaches prod", |s| applied(s, "prod", &c1));
    let c2 = signed_rev(&up, 2, &ops);
    r.until(60, "c2 reaches prod", |s| applied(s, "prod", &c2));
    assert_eq!(recorded(&state), c2);

    // The attack: the branch is reset to c1, which is signed and trusted.
    git(up.path(), &["reset", "-q", "--hard", &c1]);
    let s = r.until(60, "dev follows, prod refuses c1", |s| {
        applied(s, "dev", &c1) && refused(s, &c1)
    });
    let prod = env(&s, "prod");
    assert_eq!(prod["lastGood"], c2.as_str());
    let msg = prod["last"]["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!(
            "commit {} is not applied to prod: it does not descend from {}, the commit last applied there",
            &c1[..12],
            &c2[..12]
        )),
        "{msg}"
    );
    assert!(msg.contains("--allow-rollback-to"), "{msg}");
    let (_, page) = r.get("/").unwrap();
    assert!(page.contains("not-a-descendant</span>"), "{page}");
    let (_, metrics) = r.get("/metrics").unwrap();
    assert!(
        metrics.contains("tidegate_errors_total{reason=\"not-a-descendant\"}"),
        "{metrics}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(recorded(&state), c2, "prod was not applied");
    let logs = r.stop();
    let refusal = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["reason"] == "not-a-descendant")
        .unwrap_or_else(|| panic!("no refusal log line:\n{logs}"));
    assert_eq!(refusal["fields"]["environment"], "prod");
    assert_eq!(refusal["fields"]["commit"], c1.as_str());
    assert_eq!(refusal["fields"]["last_applied"], c2.as_str());

    // A restart with an empty cache: the record still refuses c1.
    let r = start(args("cache-b", &[]));
    r.until(60, "after a restart prod still refuses c1", |s| {
        applied(s, "dev", &c1) && refused(s, &c1)
    });
    r.stop();
    assert_eq!(recorded(&state), c2);

    // An explicit rollback.
    let r = start(args("cache-b", &["--allow-rollback-to", &c1[..12]]));
    r.until(60, "the rollback to c1 reaches prod", |s| {
        applied(s, "prod", &c1)
    });
    r.stop();
    assert_eq!(recorded(&state), c1);

    // --force-push follow: forward to c2, then back to c1, both applied.
    git(up.path(), &["reset", "-q", "--hard", &c2]);
    let r = start(args("cache-b", &["--force-push", "follow"]));
    r.until(60, "c2 reaches prod", |s| applied(s, "prod", &c2));
    git(up.path(), &["reset", "-q", "--hard", &c1]);
    r.until(60, "prod follows the force-push to c1", |s| {
        applied(s, "prod", &c1)
    });
    r.stop();
    assert_eq!(recorded(&state), c1);
}
