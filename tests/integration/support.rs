//! Shared test setup: finding the real tools `.ci/test` installs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The repository root.
#[allow(dead_code)]
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of an external tool (`sops`, `kubectl`, `moto_server`, `age`):
/// first `.ci/.venv/bin`, then `PATH`. Panics with the fix when missing, so
/// a test never passes by skipping its real part.
#[allow(dead_code)]
pub fn tool(name: &str) -> PathBuf {
    let venv = repo_root().join(".ci/.venv/bin").join(name);
    if venv.is_file() {
        return venv;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("`{name}` not found in .ci/.venv/bin or PATH: run `.ci/test` once, which installs the test tools");
}

/// Path of a tool built from its Go module by `tests/tools/build.sh`:
/// `helm` (v4), `kustomize` (v5), `registry` (an in-memory OCI registry,
/// go-containerregistry's `pkg/registry`: `registry -address 127.0.0.1:0`
/// prints `serving on 127.0.0.1:PORT`) or `promtool`. The script runs
/// once per test process: it builds all four into a machine-wide cache on
/// the first run on a machine (about 15 minutes on 2 cores) and only
/// checks afterwards. Panics with the script's output when the build
/// fails or `name` is not one of them, so a test never passes by skipping
/// its real part.
#[allow(dead_code)]
pub fn go_tool(name: &str) -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let script = repo_root().join("tests/tools/build.sh");
    let dir = DIR.get_or_init(|| {
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("{} does not start: {e}", script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout.lines().last() {
            Some(dir) if out.status.success() => Ok(PathBuf::from(dir.trim())),
            _ => Err(format!(
                "{} failed (exit {}): {}",
                script.display(),
                out.status,
                stdout.trim()
            )),
        }
    });
    let dir = dir.as_ref().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "`{name}` is not built by tests/tools/build.sh (it builds helm, kustomize, registry, promtool); looked for {}",
        path.display()
    );
    path
}

/// Runs `cmd` and returns its stdout, trimmed; panics with the command and
/// its stderr unless it succeeds.
#[allow(dead_code)]
pub fn run_ok(cmd: &mut Command) -> String {
    // Program and arguments only: the environment may hold key material.
    let shown = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("`{shown}` does not start: {e}"));
    assert!(
        out.status.success(),
        "`{shown}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The real `git` in `dir` with a clean, reproducible environment (no
/// global or system configuration, a fixed identity); its stdout, trimmed.
#[allow(dead_code)]
pub fn git(dir: &Path, args: &[&str]) -> String {
    git_env(dir, args, &[])
}

/// [`git`] with further environment variables.
#[allow(dead_code)]
pub fn git_env(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_ok(&mut cmd)
}
