//! The Git source against real repositories made with the `git` CLI,
//! served over file://, `git daemon` and smart HTTP (`git http-backend`
//! behind a small CGI server in this file), with commits signed by real
//! `ssh-keygen` and `gpg` keys.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tidegate::source::{
    load_pair, load_revision, Credentials, Error, Event, ForcePush, HttpsAuth, SecretFrom, Source,
    SourceConfig, State, TrustList, Verification,
};

use crate::support::{git, git_env};

/// An upstream repository with a working tree; the source fetches from it.
struct Upstream {
    dir: TempDir,
}

impl Upstream {
    fn new() -> Upstream {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q", "-b", "main"]);
        let up = Upstream { dir };
        up.write("environments/dev.yaml", "kind: Environment\n");
        up.write("modules/web/module.yaml", "kind: Module\n");
        up.write("secrets/dev.sops.yaml", "sops: {}\n");
        up.write(".sops.yaml", "creation_rules: []\n");
        up.write("README.md", "not read\n");
        up.write("docs/big.txt", "not read either\n");
        up.commit("initial");
        up
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn commit(&self, msg: &str) -> String {
        git(self.path(), &["add", "-A"]);
        git(self.path(), &["commit", "-q", "--allow-empty", "-m", msg]);
        self.head()
    }

    fn head(&self) -> String {
        git(self.path(), &["rev-parse", "HEAD"])
    }
}

fn config(url: &str, reference: &str, cache: &TempDir) -> SourceConfig {
    let mut cfg = SourceConfig::new(url, reference, cache.path().join("cache"));
    cfg.backoff.base = Duration::from_millis(100);
    cfg.backoff.max = Duration::from_secs(1);
    cfg
}

fn new_commit(ev: &Event) -> (Option<String>, String, bool) {
    match ev {
        Event::NewCommit {
            from,
            to,
            fast_forward,
        } => (from.clone(), to.clone(), *fast_forward),
        other => panic!("expected NewCommit, got {other:?}"),
    }
}

#[tokio::test]
async fn file_remote_reads_only_tidegate_paths_and_polls_cheaply() {
    let up = Upstream::new();
    let tmp = tempfile::tempdir().unwrap();
    let src = Source::open(config(&up.url(), "main", &tmp)).await.unwrap();

    let p = src.poll().await.unwrap();
    let (from, to, ff) = new_commit(&p.event);
    assert_eq!((from, to.as_str(), ff), (None, up.head().as_str(), true));
    let snap = p.snapshot.unwrap();
    let paths: Vec<&str> = snap.files.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            ".sops.yaml",
            "environments/dev.yaml",
            "modules/web/module.yaml",
            "secrets/dev.sops.yaml"
        ]
    );
    assert_eq!(snap.files["environments/dev.yaml"], b"kind: Environment\n");
    assert_eq!(snap.tree, git(up.path(), &["rev-parse", "HEAD^{tree}"]));
    assert_eq!(src.status().tree_reads, 1);

    // Nothing moved: no tree read.
    for _ in 0..3 {
        let p = src.poll().await.unwrap();
        assert_eq!(p.event, Event::Unchanged);
        assert_eq!(p.snapshot.unwrap().commit, snap.commit);
    }
    assert_eq!(src.status().tree_reads, 1);

    // A commit touching only unread paths: new snapshot, files from the cache.
    up.write("README.md", "changed\n");
    let readme_commit = up.commit("docs only");
    let p = src.poll().await.unwrap();
    let (from, to, ff) = new_commit(&p.event);
    assert_eq!(
        (from.as_deref(), to.as_str(), ff),
        (Some(snap.commit.as_str()), readme_commit.as_str(), true)
    );
    assert_eq!(src.status().tree_reads, 1);
    assert!(Arc::ptr_eq(&p.snapshot.unwrap().files, &snap.files));

    // A commit touching a read path: read again.
    up.write("environments/prod.yaml", "kind: Environment\n");
    up.commit("prod");
    let p = src.poll().await.unwrap();
    assert!(new_commit(&p.event).2);
    assert!(p
        .snapshot
        .unwrap()
        .files
        .contains_key("environments/prod.yaml"));
    assert_eq!(src.status().tree_reads, 2);
    assert_eq!(
        src.status().state,
        State::Ready {
            last_good: up.head()
        }
    );
}

#[tokio::test]
async fn force_push_is_followed_or_refused() {
    for policy in [ForcePush::Follow, ForcePush::Refuse] {
        let up = Upstream::new();
        let first = up.head();
        up.write("environments/dev.yaml", "v: 2\n");
        let second = up.commit("second");
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(&up.url(), "main", &tmp);
        cfg.force_push = policy;
        let src = Source::open(cfg).await.unwrap();
        assert_eq!(new_commit(&src.poll().await.unwrap().event).1, second);

        // Rewrite history: drop `second`, commit something else.
        git(up.path(), &["reset", "-q", "--hard", &first]);
        up.write("environments/dev.yaml", "v: rewritten\n");
        let rewritten = up.commit("rewritten");
        for _ in 0..2 {
            let p = src.poll().await.unwrap();
            match policy {
                ForcePush::Follow => {
                    assert_eq!(
                        p.event,
                        Event::NewCommit {
                            from: Some(second.clone()),
                            to: rewritten.clone(),
                            fast_forward: false
                        }
                    );
                    assert_eq!(
                        p.snapshot.unwrap().files["environments/dev.yaml"],
                        b"v: rewritten\n"
                    );
                    break;
                }
                ForcePush::Refuse => {
                    // Reported on every poll, the old commit stays served.
                    assert_eq!(
                        p.event,
                        Event::ForcePushRefused {
                            from: second.clone(),
                            to: rewritten.clone()
                        }
                    );
                    assert_eq!(p.snapshot.unwrap().commit, second);
                }
            }
        }
    }
}

#[tokio::test]
async fn unreachable_remote_keeps_last_good_and_backs_off() {
    let up = Upstream::new();
    let tmp = tempfile::tempdir().unwrap();
    let src = Source::open(config(&up.url(), "main", &tmp)).await.unwrap();
    let good = new_commit(&src.poll().await.unwrap().event).1;

    let moved = tmp.path().join("away");
    std::fs::rename(up.path(), &moved).unwrap();
    let mut delays = Vec::new();
    for attempt in 1..=3 {
        let p = src.poll().await.unwrap();
        match &p.event {
            Event::Unreachable {
                attempt: a,
                retry_in,
                error,
            } => {
                assert_eq!(*a, attempt);
                assert!(error.contains("unreachable"), "{error}");
                assert_eq!(*retry_in, p.next_poll_in);
                delays.push(retry_in.as_millis());
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
        assert_eq!(p.snapshot.unwrap().commit, good);
    }
    assert_eq!(delays, [100, 200, 400]);
    assert_eq!(
        src.status().state,
        State::Backoff {
            attempt: 3,
            last_good: Some(good.clone())
        }
    );

    std::fs::rename(&moved, up.path()).unwrap();
    let p = src.poll().await.unwrap();
    assert_eq!(p.event, Event::Unchanged);
    assert_eq!(src.status().state, State::Ready { last_good: good });
}

#[tokio::test]
async fn missing_branch_is_reported_like_an_outage() {
    let up = Upstream::new();
    let tmp = tempfile::tempdir().unwrap();
    let src = Source::open(config(&up.url(), "no-such-branch", &tmp))
        .await
        .unwrap();
    let p = src.poll().await.unwrap();
    match p.event {
        Event::Unreachable { error, .. } => assert!(error.contains("no-such-branch"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert!(p.snapshot.is_none());
}

#[tokio::test]
async fn revisions_branches_tags_and_commits_from_one_cache() {
    let up = Upstream::new();
    let v1 = up.head();
    git(up.path(), &["tag", "-a", "v1", "-m", "release 1"]);
    git(up.path(), &["tag", "light", &v1]);
    up.write("environments/dev.yaml", "v: 2\n");
    let v2 = up.commit("two");
    git(up.path(), &["checkout", "-q", "-b", "feature"]);
    up.write("environments/dev.yaml", "v: feature\n");
    let feat = up.commit("feature");
    git(up.path(), &["checkout", "-q", "main"]);

    let tmp = tempfile::tempdir().unwrap();
    let src = Source::open(config(&up.url(), "main", &tmp)).await.unwrap();
    for (rev, want) in [
        ("v1", &v1),
        ("light", &v1),
        ("main", &v2),
        ("main~1", &v1),
        ("feature", &feat),
        (v1.as_str(), &v1),
        (&v2[..12], &v2),
    ] {
        let snap = src.snapshot_at(rev).await.unwrap();
        assert_eq!(&snap.commit, want, "revision {rev}");
    }
    let (base, head) = src.snapshot_pair("main", "feature").await.unwrap();
    assert_eq!(base.files["environments/dev.yaml"], b"v: 2\n");
    assert_eq!(head.files["environments/dev.yaml"], b"v: feature\n");
    let err = src.snapshot_at("nope").await.unwrap_err();
    assert!(matches!(err, Error::UnknownRevision { .. }), "{err}");
    assert!(err.to_string().contains("\"nope\""));

    // One-shot helpers for the CLI (a fresh cache each).
    let tmp2 = tempfile::tempdir().unwrap();
    let snap = load_revision(config(&up.url(), "main", &tmp2), "v1")
        .await
        .unwrap();
    assert_eq!(snap.commit, v1);
    let (b, h) = load_pair(config(&up.url(), "main", &tmp2), "v1", "feature")
        .await
        .unwrap();
    assert_eq!((b.commit, h.commit), (v1, feat));
}

#[tokio::test]
async fn polls_a_tag_and_a_pinned_commit() {
    let up = Upstream::new();
    let v1 = up.head();
    git(up.path(), &["tag", "-a", "v1", "-m", "release 1"]);
    up.commit("after the tag");
    let tmp = tempfile::tempdir().unwrap();
    let src = Source::open(config(&up.url(), "v1", &tmp)).await.unwrap();
    assert_eq!(new_commit(&src.poll().await.unwrap().event).1, v1);
    assert_eq!(src.poll().await.unwrap().event, Event::Unchanged);

    // Moving the tag is a force-push when it does not descend.
    git(up.path(), &["checkout", "-q", "--orphan", "other"]);
    let orphan = up.commit("unrelated history");
    git(
        up.path(),
        &["tag", "-f", "-a", "v1", "-m", "moved", &orphan],
    );
    let p = src.poll().await.unwrap();
    assert_eq!(new_commit(&p.event), (Some(v1.clone()), orphan, false));

    let tmp = tempfile::tempdir().unwrap();
    let src = Source::open(config(&up.url(), &v1, &tmp)).await.unwrap();
    assert_eq!(new_commit(&src.poll().await.unwrap().event).1, v1);
    assert_eq!(src.poll().await.unwrap().event, Event::Unchanged);
}

#[tokio::test]
async fn corrupt_cache_is_cloned_again() {
    let up = Upstream::new();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(&up.url(), "main", &tmp);
    let src = Source::open(cfg.clone()).await.unwrap();
    src.poll().await.unwrap();
    drop(src);

    // Objects gone, refs still there.
    let objects = cfg.cache_dir.join("objects");
    for entry in std::fs::read_dir(&objects).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name != "info" && p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
            std::fs::create_dir(&p).unwrap();
        }
    }
    let src = Source::open(cfg.clone()).await.unwrap();
    let p = src.poll().await.unwrap();
    assert_eq!(new_commit(&p.event).1, up.head());
    assert!(p.snapshot.unwrap().files.contains_key(".sops.yaml"));

    // Garbage where the repository should be.
    drop(src);
    std::fs::write(cfg.cache_dir.join("HEAD"), "garbage").unwrap();
    std::fs::write(cfg.cache_dir.join("config"), "[[[").unwrap();
    let src = Source::open(cfg).await.unwrap();
    assert_eq!(new_commit(&src.poll().await.unwrap().event).1, up.head());
}

#[tokio::test]
async fn read_limit_bounds_memory() {
    let up = Upstream::new();
    up.write("modules/huge/blob.bin", &"x".repeat(4096));
    up.commit("huge");
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&up.url(), "main", &tmp);
    cfg.read.max_bytes = 1024;
    let src = Source::open(cfg.clone()).await.unwrap();
    let err = src.poll().await.unwrap_err();
    assert!(err.to_string().contains("modules/huge/blob.bin"), "{err}");
    cfg.read.paths = vec!["environments/".into(), ".sops.yaml".into()];
    let src = Source::open(cfg).await.unwrap();
    let snap = src.poll().await.unwrap().snapshot.unwrap();
    assert_eq!(snap.files.len(), 2);
}

/// Issue 17: a symbolic link in a commit is a blob holding its target's
/// path, which was read as the file's content. Links are now followed
/// inside the repository (the target's content, under the link's path; a
/// change to the target alone is a new snapshot, not a stale cache hit),
/// and a link leaving it or looping is an error naming link and target.
#[tokio::test]
async fn symlinks_in_commits_are_followed_inside_and_refused_outside() {
    let up = Upstream::new();
    up.write("shared/web.yaml", "kind: Module\nv: 1\n");
    up.write("shared/env/prod.yaml", "kind: Environment\n");
    let module = up.path().join("modules/web/module.yaml");
    std::fs::remove_file(&module).unwrap();
    std::os::unix::fs::symlink("../../shared/web.yaml", &module).unwrap();
    std::os::unix::fs::symlink("../shared/env", up.path().join("environments/more")).unwrap();
    up.commit("links inside");
    let tmp = tempfile::tempdir().unwrap();
    let src = Source::open(config(&up.url(), "main", &tmp)).await.unwrap();
    let snap = src.poll().await.unwrap().snapshot.unwrap();
    assert_eq!(
        snap.files["modules/web/module.yaml"],
        b"kind: Module\nv: 1\n"
    );
    assert_eq!(
        snap.files["environments/more/prod.yaml"],
        b"kind: Environment\n"
    );
    assert!(!snap.files.keys().any(|k| k.starts_with("shared/")));

    up.write("shared/web.yaml", "kind: Module\nv: 2\n");
    up.commit("the target alone changes");
    let snap = src.poll().await.unwrap().snapshot.unwrap();
    assert_eq!(
        snap.files["modules/web/module.yaml"],
        b"kind: Module\nv: 2\n"
    );

    let cases: [(&str, &str, &str); 4] = [
        ("modules/root", "/", "outside the repository"),
        (
            "secrets/key.yaml",
            "../../../etc/key.yaml",
            "outside the repository",
        ),
        (
            "modules/web/loop",
            "..",
            "loops back into a folder that holds it",
        ),
        (
            "environments/gone.yaml",
            "nothing.yaml",
            "which the commit does not hold",
        ),
    ];
    for (link, target, says) in cases {
        std::os::unix::fs::symlink(target, up.path().join(link)).unwrap();
        up.commit(&format!("link {link}"));
        let err = src.poll().await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{link} is a symbolic link to {target}, "))
                && err.contains(says),
            "{err}"
        );
        std::fs::remove_file(up.path().join(link)).unwrap();
        up.commit(&format!("unlink {link}"));
        src.poll().await.unwrap();
    }
    // A dangling link the loader would not read is left alone, as on disk.
    std::os::unix::fs::symlink("nowhere", up.path().join("modules/web/NOTES")).unwrap();
    up.commit("dangling, not read");
    assert!(src.poll().await.is_ok());
}

/// Issue 17: the working-tree loader followed every link: `ln -s /
/// modules/root` made `validate` walk the whole filesystem, and a file or
/// module linked from outside was read and applied. Links inside the
/// repository read the same from the working tree and from a commit;
/// links out and loops are refused by both, naming link and target.
#[test]
fn symlinks_read_the_same_from_the_working_tree_and_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("repo");
    let root = crate::support::repo_root();
    for sub in ["environments", "modules", "secrets"] {
        copy_tree(&root.join(sub), &d.join(sub));
    }
    std::fs::copy(root.join(".sops.yaml"), d.join(".sops.yaml")).unwrap();
    // The web module and the dev environment live elsewhere in the
    // repository, linked in.
    std::fs::create_dir_all(d.join("shared")).unwrap();
    std::fs::rename(d.join("modules/web"), d.join("shared/web")).unwrap();
    std::os::unix::fs::symlink("../shared/web", d.join("modules/web")).unwrap();
    std::fs::rename(d.join("environments/dev.yaml"), d.join("shared/dev.yaml")).unwrap();
    std::os::unix::fs::symlink("../shared/dev.yaml", d.join("environments/dev.yaml")).unwrap();
    crate::stand::write_project(&d);
    git(&d, &["init", "-q", "-b", "main"]);
    let commit = |msg: &str| {
        git(&d, &["add", "-A"]);
        git(&d, &["commit", "-q", "--allow-empty", "-m", msg]);
    };
    commit("linked inside");
    let validate = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
            .arg("validate")
            .args(args)
            .current_dir(&d)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, tree, err) = validate(&[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(tree.starts_with("valid: 4 environments"), "{tree}");
    assert_eq!(validate(&["--revision", "HEAD"]).1, tree);

    let outside = dir.path().join("outside.yaml");
    std::fs::write(&outside, "apiVersion: tidegate.dev/v1\n").unwrap();
    let cases = [
        ("modules/root", "/".to_string(), "outside the repository"),
        (
            "environments/extra.yaml",
            outside.display().to_string(),
            "outside the repository",
        ),
        (
            "secrets/up.yaml",
            "../../outside.yaml".into(),
            "outside the repository",
        ),
        ("modules/web/loop", "..".into(), "a folder that holds it"),
    ];
    for (link, target, says) in cases {
        std::os::unix::fs::symlink(&target, d.join(link)).unwrap();
        let (code, _, err) = validate(&[]);
        assert_eq!(code, Some(1), "{link}: {err}");
        let want = format!("error: {link} is a symbolic link to {target}, ");
        assert!(err.starts_with(&want) && err.contains(says), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        commit(&format!("link {link}"));
        let (code, _, err) = validate(&["--revision", "HEAD"]);
        assert_eq!(code, Some(1), "{link}: {err}");
        let says_git = if says.contains("folder") {
            "loops back"
        } else {
            says
        };
        assert!(err.starts_with(&want) && err.contains(says_git), "{err}");
        std::fs::remove_file(d.join(link)).unwrap();
        commit(&format!("unlink {link}"));
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

// ---------------------------------------------------------------- git daemon

/// A free loopback port (bound then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

/// A child process killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn git_daemon_remote() {
    let up = Upstream::new();
    let port = free_port();
    let base = up.path().parent().unwrap();
    let name = up.path().file_name().unwrap().to_string_lossy().to_string();
    // The git-daemon binary itself: `git daemon` would run it as a child
    // that outlives a kill of the wrapper.
    let exec_path = git(up.path(), &["--exec-path"]);
    let child = Command::new(Path::new(&exec_path).join("git-daemon"))
        .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", base.display()))
        .arg(up.path())
        .stderr(Stdio::null())
        .spawn()
        .expect("git daemon starts");
    let _daemon = Daemon(child);
    wait_for_port(port);

    let tmp = tempfile::tempdir().unwrap();
    let url = format!("git://127.0.0.1:{port}/{name}");
    let src = Source::open(config(&url, "main", &tmp)).await.unwrap();
    assert_eq!(new_commit(&src.poll().await.unwrap().event).1, up.head());
    assert_eq!(src.poll().await.unwrap().event, Event::Unchanged);
    up.write("environments/dev.yaml", "over git://\n");
    let c = up.commit("daemon");
    let p = src.poll().await.unwrap();
    assert_eq!(new_commit(&p.event).1, c);
    assert_eq!(
        p.snapshot.unwrap().files["environments/dev.yaml"],
        b"over git://\n"
    );
}

// ------------------------------------------------------ smart HTTP via CGI

/// A minimal HTTP/1.1 server that runs `git http-backend` as a CGI for each
/// request, optionally demanding Basic authentication.
pub(crate) struct HttpGit {
    pub(crate) port: u16,
    _stop: std::sync::mpsc::Sender<()>,
}

impl HttpGit {
    pub(crate) fn start(root: PathBuf, basic: Option<String>) -> HttpGit {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || loop {
            if rx.try_recv() != Err(std::sync::mpsc::TryRecvError::Empty) {
                return;
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    let (root, basic) = (root.clone(), basic.clone());
                    std::thread::spawn(move || serve(stream, &root, basic.as_deref()));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        });
        HttpGit { port, _stop: tx }
    }
}

fn serve(stream: TcpStream, root: &Path, basic: Option<&str>) {
    stream.set_nonblocking(false).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
        );
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end().to_string();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let body = read_body(
            &mut reader,
            &header("content-length"),
            &header("transfer-encoding"),
        );
        if let Some(expected) = basic {
            if header("authorization").as_deref() != Some(expected) {
                let msg = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\n\r\n";
                out.write_all(msg.as_bytes()).unwrap();
                continue;
            }
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let mut cgi = Command::new("git")
            .arg("http-backend")
            .env("GIT_PROJECT_ROOT", root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("REQUEST_METHOD", &method)
            .env("PATH_INFO", path)
            .env("QUERY_STRING", query)
            .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("GIT_HTTP_MAX_REQUEST_BUFFER", "100M")
            .env("REMOTE_ADDR", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = cgi.stdin.take().unwrap();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&body);
        });
        let output = cgi.wait_with_output().unwrap().stdout;
        let split = output
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| (i, 4));
        let split = split.or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
        let (head_len, sep) = split.unwrap();
        let head = String::from_utf8_lossy(&output[..head_len]).to_string();
        let payload = &output[head_len + sep..];
        let mut status = "200 OK".to_string();
        let mut resp = String::new();
        for h in head.lines() {
            match h.strip_prefix("Status:") {
                Some(s) => status = s.trim().to_string(),
                None => resp.push_str(&format!("{h}\r\n")),
            }
        }
        let msg = format!(
            "HTTP/1.1 {status}\r\n{resp}Content-Length: {}\r\n\r\n",
            payload.len()
        );
        out.write_all(msg.as_bytes()).unwrap();
        out.write_all(payload).unwrap();
    }
}

fn read_body(
    reader: &mut impl BufRead,
    length: &Option<String>,
    encoding: &Option<String>,
) -> Vec<u8> {
    let mut body = Vec::new();
    if encoding.as_deref() == Some("chunked") {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).unwrap();
            if n == 0 {
                return body;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    if let Some(n) = length.as_deref().and_then(|l| l.parse::<usize>().ok()) {
        body.resize(n, 0);
        reader.read_exact(&mut body).unwrap();
    }
    body
}

#[tokio::test]
async fn smart_http_remote_with_token_from_env_and_file() {
    use base64::Engine;
    let up = Upstream::new();
    let root = up.path().parent().unwrap().to_path_buf();
    let name = up.path().file_name().unwrap().to_string_lossy().to_string();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("x-access-token:s3cret-token")
    );
    let server = HttpGit::start(root, Some(expected));
    let url = format!("http://127.0.0.1:{}/{name}", server.port);

    // Token from an environment variable.
    std::env::set_var("TIDEGATE_TEST_GIT_TOKEN", "s3cret-token");
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&url, "main", &tmp);
    cfg.credentials.https = Some(HttpsAuth {
        username: None,
        password: SecretFrom::Env("TIDEGATE_TEST_GIT_TOKEN".into()),
    });
    let src = Source::open(cfg).await.unwrap();
    assert_eq!(new_commit(&src.poll().await.unwrap().event).1, up.head());
    up.write("modules/web/module.yaml", "over http\n");
    let c = up.commit("http");
    assert_eq!(new_commit(&src.poll().await.unwrap().event).1, c);
    assert_eq!(
        src.snapshot_at("main~1").await.unwrap().commit,
        git(up.path(), &["rev-parse", "HEAD~1"])
    );

    // Token from a file.
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let mut cfg = config(&url, "main", &tmp);
    cfg.credentials.https = Some(HttpsAuth {
        username: Some("x-access-token".into()),
        password: SecretFrom::File(token_file.clone()),
    });
    let src = Source::open(cfg.clone()).await.unwrap();
    assert_eq!(new_commit(&src.poll().await.unwrap().event).1, c);

    // A wrong token: bounded attempts, then an outage event that never shows the token.
    std::fs::write(&token_file, "wrong-token").unwrap();
    cfg.cache_dir = tmp.path().join("cache2");
    cfg.credentials.max_attempts = 2;
    let src = Source::open(cfg).await.unwrap();
    let p = tokio::time::timeout(Duration::from_secs(30), src.poll())
        .await
        .unwrap()
        .unwrap();
    match p.event {
        Event::Unreachable { error, .. } => {
            assert!(
                error.contains("giving up") || error.contains("authentication"),
                "{error}"
            );
            assert!(!error.contains("wrong-token"));
        }
        other => panic!("{other:?}"),
    }

    // No credentials configured at all.
    let tmp = tempfile::tempdir().unwrap();
    let src = Source::open(config(&url, "main", &tmp)).await.unwrap();
    assert!(matches!(
        src.poll().await.unwrap().event,
        Event::Unreachable { .. }
    ));
}

#[tokio::test]
async fn smart_http_without_auth() {
    let up = Upstream::new();
    let root = up.path().parent().unwrap().to_path_buf();
    let name = up.path().file_name().unwrap().to_string_lossy().to_string();
    let server = HttpGit::start(root, None);
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(
        &format!("http://127.0.0.1:{}/{name}", server.port),
        "main",
        &tmp,
    );
    cfg.credentials = Credentials::default();
    let src = Source::open(cfg).await.unwrap();
    assert_eq!(new_commit(&src.poll().await.unwrap().event).1, up.head());
    assert_eq!(src.poll().await.unwrap().event, Event::Unchanged);
}

// ---------------------------------------------------------------- signatures

pub(crate) struct SshSigner {
    _dir: TempDir,
    pub(crate) key: PathBuf,
    pub(crate) public: String,
}

pub(crate) fn ssh_signer(comment: &str) -> SshSigner {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(ok.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    SshSigner {
        _dir: dir,
        key,
        public,
    }
}

fn ssh_signed_commit(up: &Upstream, signer: &SshSigner, msg: &str) -> String {
    let key = signer.key.display().to_string();
    git(up.path(), &["add", "-A"]);
    git(
        up.path(),
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &format!("user.signingkey={key}"),
            "commit",
            "-q",
            "--allow-empty",
            "-S",
            "-m",
            msg,
        ],
    );
    up.head()
}

/// A throw-away GnuPG home with one signing key, agent killed on drop.
struct Gpg {
    home: TempDir,
    fingerprint: String,
}

impl Gpg {
    fn new(uid: &str) -> Gpg {
        let home = tempfile::Builder::new()
            .prefix("gpg")
            .tempdir_in("/tmp")
            .unwrap();
        let mut g = Gpg {
            home,
            fingerprint: String::new(),
        };
        g.run(&[
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "ed25519",
            "sign",
            "never",
        ]);
        let listing = g.run(&["--batch", "--with-colons", "--list-secret-keys"]);
        let fingerprint = listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .map(|l| l.trim_matches(':').to_string())
            .unwrap();
        g.fingerprint = fingerprint;
        g
    }

    fn run(&self, args: &[&str]) -> String {
        crate::support::run_ok(
            Command::new("gpg")
                .env("GNUPGHOME", self.home.path())
                .args(args),
        )
    }

    fn armored_public(&self) -> String {
        self.run(&["--batch", "--armor", "--export", &self.fingerprint])
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

fn gpg_signed_commit(up: &Upstream, gpg: &Gpg, msg: &str) -> String {
    git(up.path(), &["add", "-A"]);
    git_env(
        up.path(),
        &[
            "-c",
            "gpg.format=openpgp",
            "-c",
            &format!("user.signingkey={}", gpg.fingerprint),
            "commit",
            "-q",
            "--allow-empty",
            "-S",
            "-m",
            msg,
        ],
        &[("GNUPGHOME", gpg.home.path())],
    );
    up.head()
}

#[tokio::test]
async fn commit_signatures_ssh_and_openpgp() {
    let up = Upstream::new();
    let unsigned = up.head();
    let ops = ssh_signer("ops@example.com");
    let stranger = ssh_signer("stranger@example.com");
    let ssh_ok = ssh_signed_commit(&up, &ops, "signed by ops");
    let ssh_untrusted = ssh_signed_commit(&up, &stranger, "signed by a stranger");
    let gpg_ops = Gpg::new("Release Bot <release@example.com>");
    let gpg_other = Gpg::new("Someone Else <else@example.com>");
    let pgp_ok = gpg_signed_commit(&up, &gpg_ops, "pgp signed");
    let pgp_untrusted = gpg_signed_commit(&up, &gpg_other, "pgp by someone else");

    let mut trust = TrustList::default();
    trust
        .add_ssh_keys("trusted_ssh", &format!("# ops\n{}", ops.public))
        .unwrap();
    trust
        .add_pgp_key("release.asc", &gpg_ops.armored_public())
        .unwrap();
    let trust = Arc::new(trust);

    let tmp = tempfile::tempdir().unwrap();
    let src = Source::open(config(&up.url(), "main", &tmp)).await.unwrap();
    src.poll().await.unwrap();
    let verify = |c: String| {
        let (src, trust) = (src.clone(), trust.clone());
        async move { src.verify(&c, trust).await.unwrap() }
    };

    assert_eq!(verify(unsigned).await, Verification::Unsigned);
    match verify(ssh_ok).await {
        Verification::Trusted {
            fingerprint,
            signer,
        } => {
            assert_eq!(signer, "ops@example.com");
            assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
        }
        other => panic!("{other:?}"),
    }
    match verify(ssh_untrusted).await {
        Verification::Untrusted { reason } => {
            assert!(reason.contains("not in the trust list"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    match verify(pgp_ok).await {
        Verification::Trusted {
            fingerprint,
            signer,
        } => {
            assert_eq!(signer, "Release Bot <release@example.com>");
            assert_eq!(fingerprint, gpg_ops.fingerprint);
        }
        other => panic!("{other:?}"),
    }
    match verify(pgp_untrusted).await {
        Verification::Untrusted { reason } => {
            assert!(reason.contains("not in the trust list"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

/// `tidegate apply --revision` with prod requiring a trusted signature:
/// an unsigned commit and one signed by an untrusted key are applied to dev
/// and refused in prod (exit 1, reason printed); a dirty working tree is
/// refused; a commit signed by the key in `--trusted-signers` reaches prod,
/// and so does a `gpg`-signed one once `--trusted-pgp-keys` names its key.
#[test]
fn apply_refuses_unsigned_commits_where_a_signature_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream {
        dir: tempfile::tempdir().unwrap(),
    };
    git(up.path(), &["init", "-q", "-b", "main"]);
    let env = |name: &str, extra: &str, rev: u32| {
        up.write(
            &format!("environments/{name}.yaml"),
            &format!("apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: {name}\nspec:\n{extra}  vars: {{rev: {rev}}}\n"),
        );
    };
    let revise = |rev: u32| {
        env("dev", "", rev);
        env("prod", "  after: dev\n  requireSignedCommits: true\n", rev);
    };
    let ops = ssh_signer("ops-laptop");
    let stranger = ssh_signer("stranger");
    let signers = dir.path().join("allowed_signers");
    std::fs::write(
        &signers,
        format!("# release keys\nops@example.com {}", ops.public),
    )
    .unwrap();
    let state = dir.path().join("state");
    let apply = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
            .args(["apply", "--all", "--yes", "--repo"])
            .arg(up.path())
            .arg("--state-dir")
            .arg(&state)
            .arg("--trusted-signers")
            .arg(&signers)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };

    crate::stand::write_project(up.path());
    revise(1);
    let unsigned = up.commit("unsigned");
    let (code, out) = apply(&["--revision", "main"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("dev: nothing to do"), "{out}");
    assert!(
        out.contains(&format!(
            "commit {} is not applied to prod: commit is not signed, and environments/prod.yaml sets `requireSignedCommits: true`",
            &unsigned[..12]
        )),
        "{out}"
    );

    // The refusal is in prod's audit history, by the CLI user.
    let history = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["history", "prod", "--format", "json", "--repo"])
        .arg(up.path())
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let h: Vec<serde_json::Value> = serde_json::from_slice(&history.stdout).unwrap();
    let refused = h
        .iter()
        .find(|e| e["event"] == "refused")
        .unwrap_or_else(|| panic!("no refused entry: {h:?}"));
    assert_eq!(refused["commit"], unsigned.as_str());
    assert_eq!(refused["outcome"], "refused");
    assert_eq!(refused["subject"]["kind"], "cli");
    assert!(refused["error"].as_str().unwrap().contains("not signed"));

    revise(2);
    let untrusted = ssh_signed_commit(&up, &stranger, "signed by a stranger");
    let (code, out) = apply(&["--revision", &untrusted]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("untrusted signature: SSH key SHA256:"),
        "{out}"
    );

    revise(3);
    let signed = ssh_signed_commit(&up, &ops, "signed by ops");
    up.write("environments/dev.yaml", "apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: dev\nspec:\n  vars: {rev: 9}\n");
    let (code, out) = apply(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("prod is not applied from the working tree"),
        "{out}"
    );
    assert!(out.contains("pass --revision REF"), "{out}");

    let (code, out) = apply(&["--revision", "main"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("commit {signed}")), "{out}");
    assert!(out.contains("== prod =="), "{out}");
    assert!(out.contains("prod: nothing to do"), "{out}");
    assert!(!out.contains("not applied"), "{out}");

    // An OpenPGP signature by a key given with --trusted-pgp-keys.
    let gpg = Gpg::new("Release Bot <release@example.com>");
    let keys = dir.path().join("release.asc");
    std::fs::write(&keys, gpg.armored_public()).unwrap();
    revise(4);
    let pgp = gpg_signed_commit(&up, &gpg, "pgp signed");
    let (code, out) = apply(&["--revision", &pgp]);
    assert_eq!(code, 1, "without the key: {out}");
    assert!(out.contains("untrusted signature: OpenPGP key"), "{out}");
    let keys_arg = keys.display().to_string();
    let (code, out) = apply(&["--revision", &pgp, "--trusted-pgp-keys", &keys_arg]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("prod: nothing to do"), "{out}");

    // A trust file that is not in allowed_signers format names its line.
    std::fs::write(&signers, "\nops@example.com ssh-ed25519 not-base64\n").unwrap();
    let (code, out) = apply(&["--revision", "main"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("allowed_signers:2: "), "{out}");
}

#[test]
fn tampered_signed_data_is_invalid() {
    let up = Upstream::new();
    let ops = ssh_signer("ops@example.com");
    let gpg = Gpg::new("Release Bot <release@example.com>");
    let ssh_c = ssh_signed_commit(&up, &ops, "ssh");
    let pgp_c = gpg_signed_commit(&up, &gpg, "pgp");
    let mut trust = TrustList::default();
    trust.add_ssh_keys("k", &ops.public).unwrap();
    trust.add_pgp_key("k.asc", &gpg.armored_public()).unwrap();
    let repo = git2::Repository::open(up.path()).unwrap();
    for c in [ssh_c, pgp_c] {
        let (sig, data) = repo
            .extract_signature(&git2::Oid::from_str(&c).unwrap(), None)
            .unwrap();
        let ok = tidegate::source::signature::verify(&sig, &data, &trust);
        assert!(matches!(ok, Verification::Trusted { .. }), "{ok:?}");
        let mut tampered = data.to_vec();
        tampered.extend_from_slice(b"evil\n");
        let bad = tidegate::source::signature::verify(&sig, &tampered, &trust);
        assert!(matches!(bad, Verification::Invalid { .. }), "{bad:?}");
    }
}

// ---------------------------------------------------------------------- SSH

/// A real OpenSSH server on a loopback port, for one test, killed on drop.
struct Sshd {
    _child: Daemon,
    port: u16,
    host_public: String,
}

impl Sshd {
    fn start(dir: &Path, authorized: &str) -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.is_file(),
            "/usr/sbin/sshd missing: run .ci/setup-tools (installs openssh-server)"
        );
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd for sshd");
        let host_key = dir.join("host_key");
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key)
            .status()
            .unwrap();
        assert!(ok.success());
        std::fs::write(dir.join("authorized_keys"), authorized).unwrap();
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
             UsePAM no\nSetEnv PATH=/usr/local/bin:/usr/bin:/bin\n",
            hk = host_key.display(),
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-f")
            .arg(dir.join("sshd_config"))
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd starts");
        let child = Daemon(child);
        wait_for_port(port);
        let host_public = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
        Sshd {
            _child: child,
            port,
            host_public,
        }
    }
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn ssh_remote_with_key_and_known_hosts() {
    let up = Upstream::new();
    let tmp = tempfile::tempdir().unwrap();
    let client = ssh_signer("tidegate-client");
    let sshd = Sshd::start(tmp.path(), &client.public);
    let host_line = |key: &str| {
        let mut parts = key.split_whitespace();
        format!(
            "[127.0.0.1]:{} {} {}\n",
            sshd.port,
            parts.next().unwrap(),
            parts.next().unwrap()
        )
    };
    let known_hosts = tmp.path().join("known_hosts");
    std::fs::write(&known_hosts, host_line(&sshd.host_public)).unwrap();
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        whoami(),
        sshd.port,
        up.path().display()
    );
    let mut cfg = config(&url, "main", &tmp);
    cfg.credentials.ssh = Some(tidegate::source::SshAuth {
        username: None,
        private_key: client.key.clone(),
        passphrase: None,
        known_hosts: known_hosts.clone(),
    });
    let src = Source::open(cfg.clone()).await.unwrap();
    let p = src.poll().await.unwrap();
    assert_eq!(new_commit(&p.event).1, up.head(), "{:?}", p.event);
    assert_eq!(src.poll().await.unwrap().event, Event::Unchanged);
    up.write("secrets/dev.sops.yaml", "over ssh\n");
    let c = up.commit("ssh");
    assert_eq!(new_commit(&src.poll().await.unwrap().event).1, c);

    // A host key that is not the listed one: refused, never trusted blindly.
    let other = ssh_signer("not-the-host");
    std::fs::write(&known_hosts, host_line(&other.public)).unwrap();
    let mut cfg2 = cfg.clone();
    cfg2.cache_dir = tmp.path().join("cache-mitm");
    let src = Source::open(cfg2).await.unwrap();
    match src.poll().await.unwrap().event {
        Event::Unreachable { error, .. } => assert!(error.contains("known_hosts"), "{error}"),
        other => panic!("{other:?}"),
    }

    // A client key the server does not accept: bounded attempts, then an outage.
    std::fs::write(&known_hosts, host_line(&sshd.host_public)).unwrap();
    let mut cfg3 = cfg;
    cfg3.cache_dir = tmp.path().join("cache-badkey");
    cfg3.credentials.ssh.as_mut().unwrap().private_key = other.key.clone();
    let src = Source::open(cfg3).await.unwrap();
    let p = tokio::time::timeout(Duration::from_secs(30), src.poll())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(p.event, Event::Unreachable { .. }),
        "{:?}",
        p.event
    );
}

#[tokio::test]
async fn pinned_commit_missing_on_the_remote_is_reported() {
    let up = Upstream::new();
    let tmp = tempfile::tempdir().unwrap();
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let src = Source::open(config(&up.url(), missing, &tmp))
        .await
        .unwrap();
    match src.poll().await.unwrap().event {
        Event::Unreachable { error, .. } => assert!(error.contains(missing), "{error}"),
        other => panic!("{other:?}"),
    }
}
