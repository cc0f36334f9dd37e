//! The history of an environment without a Kubernetes target: JSON-lines
//! files in the state directory, appended under an flock and rotated by
//! size (see the parent module).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{Entry, Retention};
use crate::state::{Error, Result};
/// `<dir>/<key>.history.jsonl`, or its rotated copy `.n`.
pub fn file_path(dir: &Path, key: &str, n: usize) -> PathBuf {
    match n {
        0 => dir.join(format!("{key}.history.jsonl")),
        n => dir.join(format!("{key}.history.jsonl.{n}")),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Appends one line under an flock of `.<key>.history.lock` (not the
/// environment's apply lock, which the same process may hold), rotating
/// first when the file is full.
pub(super) fn append_file(dir: &Path, key: &str, line: &str, retention: &Retention) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let lock_path = dir.join(format!(".{key}.history.lock"));
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;
    let path = file_path(dir, key, 0);
    let size = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_err(&path)(e)),
    };
    if size >= retention.file_bytes {
        rotate(dir, key, retention.files)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)
        .map_err(io_err(&path))?;
    let mut out = String::with_capacity(line.len() + 2);
    if ends_torn(&mut file).map_err(io_err(&path))? {
        // A crash cut the last line short: end it, so this entry stays
        // readable on its own line.
        out.push('\n');
    }
    out.push_str(line);
    out.push('\n');
    file.write_all(out.as_bytes()).map_err(io_err(&path))?;
    file.sync_data().map_err(io_err(&path))?;
    if size == 0 || size >= retention.file_bytes {
        // A new file: its directory entry must survive a crash too.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    drop(lock);
    Ok(())
}

/// True when the file is not empty and does not end with a newline.
fn ends_torn(file: &mut std::fs::File) -> std::io::Result<bool> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// `.n-1` → `.n` … current → `.1`, dropping what passes `keep`.
fn rotate(dir: &Path, key: &str, keep: usize) -> Result<()> {
    let keep = keep.max(1);
    let oldest = file_path(dir, key, keep);
    match std::fs::remove_file(&oldest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&oldest)(e)),
    }
    for n in (0..keep).rev() {
        let from = file_path(dir, key, n);
        let to = file_path(dir, key, n + 1);
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&from)(e)),
        }
    }
    Ok(())
}

/// Every entry of the files, oldest file first.
pub(super) fn read_files(dir: &Path, key: &str) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut rotated: Vec<usize> = Vec::new();
    let prefix = format!("{key}.history.jsonl.");
    if let Ok(list) = std::fs::read_dir(dir) {
        for e in list.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name.strip_prefix(&prefix).and_then(|n| n.parse().ok()) {
                rotated.push(n);
            }
        }
    }
    rotated.sort_unstable_by(|a, b| b.cmp(a));
    rotated.push(0);
    for n in rotated {
        let path = file_path(dir, key, n);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&path)(e)),
        };
        out.extend(parse_lines(
            &String::from_utf8_lossy(&bytes),
            &path.display().to_string(),
        ));
    }
    Ok(out)
}

/// The entries of a JSON-lines text; lines that are not entries (a torn
/// last line after a crash, anything else) are skipped with a warning.
pub fn parse_lines(text: &str, place: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Entry>(line) {
            Ok(e) => out.push(e),
            Err(error) if i + 1 == lines.len() => tracing::warn!(
                file = place,
                line = i + 1,
                %error,
                "skipping a torn last line of the history (a crash while it was written?)"
            ),
            Err(error) => tracing::warn!(
                file = place,
                line = i + 1,
                %error,
                "skipping a line of the history that is not an entry"
            ),
        }
    }
    out
}
