//! Replays the committed fuzz corpora (`tests/fuzz/corpus/<target>/`)
//! through the fuzz targets' own harnesses on the stable toolchain, so every
//! input that once found a bug or new coverage is checked on each test run
//! without libFuzzer or nightly. Fuzzing itself: docs/fuzzing.md.

#[path = "../fuzz/harness/expr.rs"]
mod expr;
#[path = "../fuzz/harness/load.rs"]
mod load;
#[path = "../fuzz/harness/sops.rs"]
mod sops;

use crate::support::repo_root;

/// Runs `run` on every file of the target's corpus; returns how many. A
/// failing input is named so it can be replayed with
/// `cargo +nightly fuzz run --fuzz-dir tests/fuzz <target> <file>`.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = repo_root().join("tests/fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files {
        let data = std::fs::read(f).unwrap();
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            panic!("fuzz target {target} fails on {}", f.display());
        }
    }
    files.len()
}

#[test]
fn the_load_corpus_replays_cleanly() {
    assert!(replay("load", load::run) > 100);
}

#[test]
fn the_expr_corpus_replays_cleanly() {
    assert!(replay("expr", expr::run) > 100);
}

#[test]
fn the_sops_corpus_replays_cleanly() {
    assert!(replay("sops", sops::run) > 100);
}
