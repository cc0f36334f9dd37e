//! Fuzzes the repository loader, `tidegate::load::load(&Files)`.
//!
//! Input: a text archive of repository files. A line `=== <path>` starts a
//! file; the bytes up to the next such line are its contents. Input without
//! any header is loaded as `environments/dev.yaml`. Seeds are the example
//! repository and every `tests/fixtures/repos/*` case in that form (see
//! `tests/fuzz/seed.sh`).
//!
//! Checks: no panic, no stack overflow, and the error report formats.
//!
//! The body of the `load` fuzz target, kept apart from libFuzzer so the
//! stable test suite replays the committed corpus through the same code
//! (`tests/integration/fuzz_corpus.rs`).

use tidegate::load::{self, Files};

const HEADER: &[u8] = b"=== ";

fn files(data: &[u8]) -> Files {
    let mut files = Files::new();
    if !data.starts_with(HEADER) {
        files.insert("environments/dev.yaml".into(), data.to_vec());
        return files;
    }
    // Split at every line that starts with the header.
    let mut starts = vec![0];
    for (i, w) in data.windows(HEADER.len() + 1).enumerate() {
        if w[0] == b'\n' && &w[1..] == HEADER {
            starts.push(i + 1);
        }
    }
    starts.push(data.len());
    for pair in starts.windows(2) {
        let chunk = &data[pair[0]..pair[1]];
        let chunk = &chunk[HEADER.len()..];
        let (path, body) = match chunk.iter().position(|&b| b == b'\n') {
            Some(n) => (&chunk[..n], &chunk[n + 1..]),
            None => (chunk, &[][..]),
        };
        files.insert(String::from_utf8_lossy(path).into_owned(), body.to_vec());
    }
    files
}

/// Runs one input; panics on a finding.
pub fn run(data: &[u8]) {
    let files = files(data);
    match load::load(&files) {
        Ok(model) => {
            let _ = format!("{model:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
