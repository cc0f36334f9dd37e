//! Running the external renderers (`kustomize`, `helm`): where the binary
//! is, a folder to give them files in, a time limit, no network, and their
//! output as text.
//!
//! A renderer is a real program, run as a child process:
//! - found as `TIDEGATE_<NAME>` (a path) or on `PATH`;
//! - given an environment without proxies of its own and with the
//!   HTTP(S) proxy set to a closed loopback port, so a stray remote base or
//!   chart dependency fails at once instead of fetching from the network
//!   (a declared chart pull says so with [`Network::Allowed`]);
//! - killed when it runs longer than its time limit;
//! - its standard input fed from memory (values with secrets never touch
//!   the disk).
//!
//! A leaf: nothing here knows what the tools render.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A tool could not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binary is neither named by its variable nor on `PATH`.
    #[error("`{tool}` is not installed: put it on PATH or set {var} to its path (.ci/setup-tools builds the pinned version)")]
    NotInstalled { tool: String, var: String },
    /// The process could not be started or waited for.
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    /// It ran longer than allowed and was killed.
    #[error("{tool} did not finish within {secs} s and was stopped")]
    Timeout { tool: String, secs: u64 },
    /// It exited with an error; `stderr` is what it printed.
    #[error("{tool} failed: {stderr}")]
    Failed { tool: String, stderr: String },
    /// A temporary folder could not be made or written.
    #[error("cannot prepare files for {tool}: {source}")]
    Files {
        tool: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether a run may reach the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// Proxies point at a closed port: nothing leaves the machine.
    Blocked,
    /// The pull of a declared chart: the caller's proxy settings apply.
    Allowed,
}

/// The default time limit of one run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// One external program.
#[derive(Clone, Debug)]
pub struct Tool {
    name: String,
    path: PathBuf,
    timeout: Duration,
}

impl Tool {
    /// Finds `name` (`kustomize`, `helm`): `TIDEGATE_KUSTOMIZE` /
    /// `TIDEGATE_HELM` first, then `PATH`.
    pub fn find(name: &str) -> Result<Tool> {
        let var = format!("TIDEGATE_{}", name.to_ascii_uppercase());
        let path = std::env::var_os(&var)
            .map(PathBuf::from)
            .filter(|p| p.is_file())
            .or_else(|| on_path(name))
            .ok_or_else(|| Error::NotInstalled {
                tool: name.to_string(),
                var,
            })?;
        Ok(Tool {
            name: name.to_string(),
            path,
            timeout: timeout_from_env(),
        })
    }

    /// The tool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its path, size and modification time: changes when another build
    /// of the tool is installed (for cache keys).
    pub fn identity(&self) -> String {
        let meta = std::fs::metadata(&self.path).ok();
        let modified = meta
            .as_ref()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        format!(
            "{}:{}:{modified}",
            self.path.display(),
            meta.map_or(0, |m| m.len())
        )
    }

    /// Runs it with `args` in `dir`, `stdin` fed from memory; its standard
    /// output on success.
    pub fn run(&self, args: &[&str], dir: &Path, stdin: &[u8], net: Network) -> Result<String> {
        self.run_env(args, dir, stdin, net, &[])
    }

    /// [`Tool::run`] with more environment variables (helm's home
    /// folders).
    pub fn run_env(
        &self,
        args: &[&str],
        dir: &Path,
        stdin: &[u8],
        net: Network,
        env: &[(&str, &Path)],
    ) -> Result<String> {
        let mut cmd = Command::new(&self.path);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if net == Network::Blocked {
            for var in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
                cmd.env(var, "http://127.0.0.1:9");
            }
            for var in ["NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"] {
                cmd.env_remove(var);
            }
            // Remote kustomize bases are cloned with git: no protocol but
            // local files.
            cmd.env("GIT_ALLOW_PROTOCOL", "file");
        }
        let spawn = |source| Error::Spawn {
            tool: self.name.clone(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn)?;
        let mut input = child.stdin.take();
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let data = stdin.to_vec();
        let feeder = std::thread::spawn(move || {
            if let Some(mut i) = input.take() {
                // A tool that stops reading early closes the pipe; its exit
                // status says what happened.
                let _ = i.write_all(&data);
            }
        });
        let reader = std::thread::spawn(move || drain(out.as_mut()));
        let err_reader = std::thread::spawn(move || drain(err.as_mut()));
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().map_err(spawn)? {
                break s;
            }
            if started.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Timeout {
                    tool: self.name.clone(),
                    secs: self.timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let _ = feeder.join();
        let stdout = reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        if !status.success() {
            return Err(Error::Failed {
                tool: self.name.clone(),
                stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    }
}

fn drain<R: Read>(r: Option<&mut R>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(r) = r {
        let _ = r.read_to_end(&mut buf);
    }
    buf
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// `TIDEGATE_RENDER_TIMEOUT` (seconds), else [`DEFAULT_TIMEOUT`].
fn timeout_from_env() -> Duration {
    std::env::var("TIDEGATE_RENDER_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
}

/// `$XDG_CACHE_HOME/tidegate` (or `~/.cache/tidegate`): where rendered
/// output and pulled charts are kept.
pub fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("tidegate"))
}

/// The digest that keys a rendering: every part length-prefixed, so two
/// different inputs never hash the same stream.
pub struct Digest(sha2::Sha256);

impl Digest {
    /// A digest for `tool`'s output.
    pub fn new(tool: &Tool) -> Digest {
        use sha2::Digest as _;
        let mut d = Digest(sha2::Sha256::new());
        d.part(tool.name.as_bytes());
        d.part(tool.identity().as_bytes());
        d
    }

    /// Adds one input.
    pub fn part(&mut self, bytes: &[u8]) -> &mut Self {
        use sha2::Digest as _;
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// Adds files (path and contents).
    pub fn files<'f>(
        &mut self,
        files: impl IntoIterator<Item = (&'f String, &'f Vec<u8>)>,
    ) -> &mut Self {
        for (p, b) in files {
            self.part(p.as_bytes()).part(b);
        }
        self
    }

    fn hex(self) -> String {
        use sha2::Digest as _;
        hex::encode(self.0.finalize())
    }
}

type Memory = Mutex<HashMap<String, String>>;

fn memory() -> &'static Memory {
    static CACHE: OnceLock<Memory> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The output of `render`, cached by `key` in memory (64 entries) and in
/// `cache_dir()/render/<tool>-<key>.yaml`. Only output without secrets may
/// be cached: the callers give tools no secret value.
pub fn cached(tool: &str, key: Digest, render: impl FnOnce() -> Result<String>) -> Result<String> {
    let key = format!("{tool}-{}", key.hex());
    if let Some(out) = memory().lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(out);
    }
    let disk = cache_dir().map(|d| d.join("render").join(format!("{key}.yaml")));
    let out = match disk.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        Some(out) => out,
        None => {
            let out = render()?;
            if let Some(p) = &disk {
                if p.parent()
                    .is_some_and(|d| std::fs::create_dir_all(d).is_ok())
                {
                    // A cache that cannot be written costs a render next time.
                    let _ = std::fs::write(p, &out);
                }
            }
            out
        }
    };
    if let Ok(mut c) = memory().lock() {
        if c.len() >= 64 {
            c.clear();
        }
        c.insert(key, out.clone());
    }
    Ok(out)
}

/// A private temporary folder (mode 0700) removed when dropped.
pub fn workdir(tool: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("tidegate-render-")
        .tempdir()
        .map_err(|source| Error::Files {
            tool: tool.to_string(),
            source,
        })
}

/// Writes `bytes` to `dir/rel`, making its folders.
pub fn write_file(tool: &str, dir: &Path, rel: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(rel);
    let err = |source| Error::Files {
        tool: tool.to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    std::fs::write(&path, bytes).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh() -> Tool {
        Tool {
            name: "sh".into(),
            path: "/bin/sh".into(),
            timeout: Duration::from_millis(500),
        }
    }

    #[test]
    fn output_input_and_failures_come_back() {
        let dir = workdir("sh").unwrap();
        let out = sh()
            .run(
                &["-c", "cat; echo done"],
                dir.path(),
                b"in\n",
                Network::Blocked,
            )
            .unwrap();
        assert_eq!(out, "in\ndone\n");
        let err = sh()
            .run(
                &["-c", "echo bad >&2; exit 3"],
                dir.path(),
                b"",
                Network::Blocked,
            )
            .unwrap_err();
        assert!(matches!(err, Error::Failed { ref stderr, .. } if stderr == "bad"));
    }

    #[test]
    fn the_network_is_closed_and_slow_runs_are_stopped() {
        let dir = workdir("sh").unwrap();
        let out = sh()
            .run(
                &["-c", "echo $HTTPS_PROXY"],
                dir.path(),
                b"",
                Network::Blocked,
            )
            .unwrap();
        assert_eq!(out.trim(), "http://127.0.0.1:9");
        let err = sh()
            .run(&["-c", "sleep 5"], dir.path(), b"", Network::Blocked)
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }));
    }

    #[test]
    fn a_missing_tool_names_its_variable() {
        let err = Tool::find("surely-not-a-tool-here").unwrap_err();
        assert!(err.to_string().contains("TIDEGATE_SURELY-NOT-A-TOOL-HERE"));
    }
}
