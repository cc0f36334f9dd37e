//! Shared test setup: finding the real tools `.ci/test` installs.

use std::path::PathBuf;

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
