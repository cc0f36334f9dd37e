//! Benchmark of the Git source: a repository with 5,000 files and 10,000
//! commits (built with `git fast-import`), polled over file://.
//!
//! Prints the first clone + snapshot, the no-change poll (target < 50 ms),
//! and the time from a new commit to a ready snapshot.
//!
//! `cargo bench --bench source -- [files] [commits]`

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tidegate::source::{Event, Source, SourceConfig};

const POLLS: usize = 50;

#[tokio::main]
async fn main() {
    let Some(args) = common::args_or_skip("source") else {
        return;
    };
    let mut args = args
        .into_iter()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let files = args.next().unwrap_or(5_000);
    let commits = args.next().unwrap_or(10_000);
    let root = std::env::temp_dir().join(format!("tidegate-bench-source-{}", std::process::id()));
    let upstream = root.join("upstream.git");
    std::fs::create_dir_all(&upstream).unwrap();

    let t = Instant::now();
    build_repo(&upstream, files, commits);
    println!(
        "built repo: {files} files, {commits} commits in {:.2?}",
        t.elapsed()
    );

    let cfg = SourceConfig::new(
        format!("file://{}", upstream.display()),
        "main",
        root.join("cache"),
    );
    let src = Source::open(cfg).await.unwrap();
    let t = Instant::now();
    let p = src.poll().await.unwrap();
    let snap = p.snapshot.expect("a snapshot");
    println!(
        "first poll (clone + snapshot of {} files): {:.2?}",
        snap.files.len(),
        t.elapsed()
    );

    let reads = src.status().tree_reads;
    let mut times = Vec::with_capacity(POLLS);
    for _ in 0..POLLS {
        let t = Instant::now();
        let p = src.poll().await.unwrap();
        times.push(t.elapsed());
        assert_eq!(p.event, Event::Unchanged);
    }
    assert_eq!(
        src.status().tree_reads,
        reads,
        "a no-change poll read a tree"
    );
    report("no-change poll (target < 50 ms)", &mut times);

    let mut ready = Vec::new();
    let mut unread = Vec::new();
    for i in 0..5 {
        append_commit(&upstream, "modules/m0/f0.yaml", &format!("bench: {i}\n"));
        let t = Instant::now();
        let p = src.poll().await.unwrap();
        ready.push(t.elapsed());
        assert!(matches!(
            p.event,
            Event::NewCommit {
                fast_forward: true,
                ..
            }
        ));
        append_commit(&upstream, "docs/readme.md", &format!("docs {i}\n"));
        let t = Instant::now();
        src.poll().await.unwrap();
        unread.push(t.elapsed());
    }
    report(
        "new commit → ready snapshot (read paths changed)",
        &mut ready,
    );
    report(
        "new commit → ready snapshot (only unread paths changed)",
        &mut unread,
    );
    std::fs::remove_dir_all(&root).ok();
}

fn report(what: &str, times: &mut [Duration]) {
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "{what}: min {:.2?}, median {median:.2?}, max {:.2?} over {} runs",
        times[0],
        times[times.len() - 1],
        times.len()
    );
}

fn git(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1");
    cmd
}

/// One fast-import stream: a first commit with all files, then one small
/// change per commit.
fn build_repo(dir: &Path, files: usize, commits: usize) {
    assert!(git(dir)
        .args(["init", "-q", "--bare", "-b", "main"])
        .status()
        .unwrap()
        .success());
    let mut child = git(dir)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = std::io::BufWriter::new(child.stdin.take().unwrap());
    for c in 0..commits {
        writeln!(w, "commit refs/heads/main").unwrap();
        writeln!(
            w,
            "committer Bench <bench@example.com> {} +0000",
            1_700_000_000 + c
        )
        .unwrap();
        data(&mut w, format!("commit {c}").as_bytes());
        if c == 0 {
            for f in 0..files {
                inline(
                    &mut w,
                    &file_path(f),
                    format!("file: {f}\nvalue: 0\n").as_bytes(),
                );
            }
        } else {
            let f = c % files;
            inline(
                &mut w,
                &file_path(f),
                format!("file: {f}\nvalue: {c}\n").as_bytes(),
            );
        }
    }
    drop(w);
    assert!(child.wait().unwrap().success());
}

fn file_path(f: usize) -> String {
    match f % 10 {
        0 => format!("environments/env{f}.yaml"),
        1 => format!("docs/page{f}.md"),
        _ => format!("modules/m{}/f{f}.yaml", f / 100),
    }
}

fn data(w: &mut impl Write, bytes: &[u8]) {
    writeln!(w, "data {}", bytes.len()).unwrap();
    w.write_all(bytes).unwrap();
    writeln!(w).unwrap();
}

fn inline(w: &mut impl Write, path: &str, bytes: &[u8]) {
    writeln!(w, "M 100644 inline {path}").unwrap();
    data(w, bytes);
}

/// Add one commit on top of `main` changing `path`.
fn append_commit(dir: &Path, path: &str, text: &str) {
    let mut child = git(dir)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = child.stdin.take().unwrap();
    writeln!(w, "commit refs/heads/main").unwrap();
    writeln!(w, "committer Bench <bench@example.com> 1800000000 +0000").unwrap();
    data(&mut w, b"bench change");
    writeln!(w, "from refs/heads/main^0").unwrap();
    inline(&mut w, path, text.as_bytes());
    drop(w);
    assert!(child.wait().unwrap().success());
}
