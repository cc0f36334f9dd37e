//! The audit history end to end: `tidegate apply`, `rebuild` and a prune
//! through the real binary leave entries with the right event, subject
//! and commit author/committer (a repository made with the real `git`);
//! the ConfigMap store under two concurrent writers and its rotation, on
//! kube-sim and on a real kube-apiserver as the ServiceAccount
//! deploy/rbac.yaml binds; `tidegate history` as text (golden), JSON and
//! JSON lines, skipping a torn last line with a warning; and the
//! reconciler recording its applies and drift heals, shown on the status
//! API and `GET /api/v1/history`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::Value;
use tempfile::TempDir;
use tidegate::state::history::{Entry, EventKind, Outcome, Retention, Subject, HISTORY_LABEL};
use tidegate::state::RecordStore;

use super::execute::{app_doc, env_doc, net_doc, Spec};
use super::stand::{commit_files, http_get, Kube, Ports, Stand};
use super::support::git_env;

const AUTHOR: &str = "Ann Author <ann@example.com>";
const COMMITTER: &str = "Carl Committer <carl@example.com>";
const USER: &str = "audit-tester";

/// The execute fixture (dev < staging, EC2 and Kubernetes) committed by
/// [`AUTHOR`] and [`COMMITTER`]; `drift` checks every 10 s. Returns the
/// commit id.
fn write_repo(dir: &Path, spec: &Spec, drift: bool) -> String {
    let env = |name: &str, after: Option<&str>| {
        let doc = env_doc(name, after);
        if drift {
            doc.replace("  policy:", "  drift:\n    interval: 10s\n  policy:")
        } else {
            doc
        }
    };
    let files = [
        ("environments/dev.yaml", env("dev", None)),
        ("environments/staging.yaml", env("staging", Some("dev"))),
        ("modules/net/module.yaml", net_doc(spec)),
        ("modules/app/module.yaml", app_doc(spec)),
    ];
    commit_files(dir, &files);
    let p = Path::new;
    git_env(
        dir,
        &["commit", "-q", "--amend", "--no-edit", "--reset-author"],
        &[
            ("GIT_AUTHOR_NAME", p("Ann Author")),
            ("GIT_AUTHOR_EMAIL", p("ann@example.com")),
            ("GIT_COMMITTER_NAME", p("Carl Committer")),
            ("GIT_COMMITTER_EMAIL", p("carl@example.com")),
        ],
    );
    git_env(dir, &["rev-parse", "HEAD"], &[])
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// `tidegate <args>` on the stand as [`USER`]: exit code, stdout, stderr.
async fn run(stand: &Stand, repo: &Path, args: &[&str]) -> (i32, String, String) {
    let out = stand
        .command(repo, args)
        .env("USER", USER)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn history_json(stand: &Stand, repo: &Path, args: &[&str]) -> Vec<Entry> {
    let mut all = vec!["history", "--format", "json"];
    all.extend_from_slice(args);
    let (code, out, err) = run(stand, repo, &all).await;
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

async fn history_chunks(stand: &Stand, env: &str) -> Vec<ConfigMap> {
    let api: Api<ConfigMap> = Api::namespaced(stand.kube(env).await, "tidegate-system");
    let selector = format!("{HISTORY_LABEL}={env}");
    api.list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
}

async fn cli_apply_rebuild_and_prune_each_leave_an_entry(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let repo = TempDir::new().unwrap();
    let first = write_repo(repo.path(), &Spec::default(), false);
    // Read from Git (--revision), then from the clean working tree.
    let (code, out, err) = run(
        &stand,
        repo.path(),
        &["apply", "--env", "dev", "--yes", "--revision", "HEAD"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&stand, repo.path(), &["rebuild", "--env", "dev", "--yes"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let spec = Spec {
        extra_config: false,
        ..Spec::default()
    };
    let second = write_repo(repo.path(), &spec, false);
    let (code, out, err) = run(&stand, repo.path(), &["apply", "--env", "dev", "--yes"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("deleted"), "{out}");

    let entries = history_json(&stand, repo.path(), &["dev"]).await;
    let events: Vec<EventKind> = entries.iter().map(|e| e.event).collect();
    assert_eq!(
        events,
        [
            EventKind::Apply,
            EventKind::Rebuild,
            EventKind::Apply,
            EventKind::Prune
        ],
        "{entries:#?}"
    );
    let commits: Vec<&str> = entries.iter().filter_map(|e| e.commit.as_deref()).collect();
    assert_eq!(commits, [&first, &first, &second, &second]);
    let host = hostname();
    for e in &entries {
        assert_eq!(e.environment, "dev");
        assert_eq!(e.outcome, Outcome::Succeeded, "{e:#?}");
        assert_eq!(e.subject.kind, tidegate::state::history::SubjectKind::Cli);
        assert_eq!(e.subject.name, USER);
        assert_eq!(e.subject.host.as_deref(), Some(host.as_str()));
        let info = e.commit_info.as_ref().expect("commit info");
        assert_eq!(info.author.as_deref(), Some(AUTHOR));
        assert_eq!(info.committer.as_deref(), Some(COMMITTER));
        assert_eq!(info.signer, None, "unsigned");
        assert!(e.plan.as_ref().unwrap().digest.starts_with("sha256:"));
    }
    assert!(entries[0].duration_ms.is_some());
    assert_eq!(entries[0].plan.as_ref().unwrap().create, 7);
    assert_eq!(entries[2].plan.as_ref().unwrap().delete, 1);
    assert_eq!(entries[3].plan.as_ref().unwrap().delete, 1);
    assert_eq!(entries[3].resources, ["app.flags"]);

    // Every environment (staging has none yet), as JSON lines and text.
    let (code, out, err) = run(&stand, repo.path(), &["history", "--format", "jsonl"]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["event"], "prune");
    let (code, out, _) = run(&stand, repo.path(), &["history", "dev"]).await;
    assert_eq!(code, 0);
    let text: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(text.len(), 4, "{out}");
    assert!(
        text[1].contains(&format!(
            " dev rebuild succeeded {} cli:{USER}@{host} ",
            &first[..12]
        )),
        "{out}"
    );
    assert!(text[3].contains("[app.flags]"), "{out}");
    let (code, out, _) = run(
        &stand,
        repo.path(),
        &["history", "dev", "--since", "2999-01-01T00:00:00Z"],
    )
    .await;
    assert_eq!((code, out.as_str()), (0, ""));

    // Stored in dev's cluster: one labelled chunk holding the four.
    let chunks = history_chunks(&stand, "dev").await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        chunks[0].metadata.name.as_deref(),
        Some("tidegate-history-test.dev-1")
    );
    assert_eq!(chunks[0].data.as_ref().unwrap().len(), 4);
}

fn entry(writer: u64, i: u64) -> Entry {
    let mut e = Entry::new("dev", EventKind::Apply, Subject::cli());
    e.duration_ms = Some(writer * 100_000 + i);
    e.reason = Some("x".repeat(200));
    e
}

fn ids(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.duration_ms.unwrap()).collect()
}

async fn two_writers_lose_nothing_and_rotation_keeps_the_bound(kube: Kube) {
    let stand = Stand::start_on(kube).await;
    let store = |client| RecordStore::ConfigMap {
        client,
        project: "test".into(),
    };
    // Small chunks, so both writers also race to start new ones.
    let wide = Retention {
        chunk_bytes: 8 * 1024,
        chunks: 1000,
        ..Retention::default()
    };
    let mut writers = Vec::new();
    for w in 1..=2u64 {
        let s = store(stand.kube("dev").await);
        let wide = wide.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..60 {
                s.append_history_within(&entry(w, i), &wide).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let reader = store(stand.kube("dev").await);
    let read = reader.history("dev").await.unwrap();
    let got: BTreeSet<u64> = ids(&read).into_iter().collect();
    let want: BTreeSet<u64> = (1..=2u64)
        .flat_map(|w| (0..60).map(move |i| w * 100_000 + i))
        .collect();
    assert_eq!(read.len(), 120, "no entry twice");
    assert_eq!(got, want, "no entry lost");
    let chunks = history_chunks(&stand, "dev").await.len();
    assert!(chunks >= 4, "{chunks} chunks: the writers did not rotate");

    // Rotation: at most three chunks kept, each bounded; the newest
    // entries survive, contiguous.
    let tight = Retention {
        chunk_bytes: 8 * 1024,
        chunks: 3,
        ..Retention::default()
    };
    for i in 0..60 {
        reader
            .append_history_within(&entry(3, i), &tight)
            .await
            .unwrap();
    }
    let chunks = history_chunks(&stand, "dev").await;
    assert_eq!(chunks.len(), 3);
    for c in &chunks {
        let bytes: usize = c
            .data
            .as_ref()
            .unwrap()
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        assert!(bytes <= 8 * 1024, "{bytes}");
    }
    let read = reader.history("dev").await.unwrap();
    let last: Vec<u64> = ids(&read).into_iter().filter(|i| *i >= 300_000).collect();
    assert!(read.len() < 120, "old chunks were deleted: {}", read.len());
    assert_eq!(*last.last().unwrap(), 300_059);
    let first = last[0] - 300_000;
    assert_eq!(last, (first..60).map(|i| 300_000 + i).collect::<Vec<_>>());
    assert!(first < 50, "three chunks hold more than ten entries");
}

crate::on_both_kubes!(
    cli_apply_rebuild_and_prune_each_leave_an_entry,
    two_writers_lose_nothing_and_rotation_keeps_the_bound,
);

/// An environment without a Kubernetes target: its history is a file.
fn file_repo(dir: &Path) {
    for env in ["dev", "staging"] {
        let after = if env == "staging" {
            "  after: dev\n"
        } else {
            ""
        };
        let doc = format!(
            "apiVersion: tidegate.dev/v1
kind: Environment
metadata:
  name: {env}
spec:
{after}  targets:
    aws:
      region: us-east-1
  modules: []
"
        );
        let path = dir.join(format!("environments/{env}.yaml"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, doc).unwrap();
    }
    super::stand::write_project(dir);
}

fn fixed(env: &str, time: &str, event: EventKind, outcome: Outcome) -> Entry {
    let mut e = Entry::new(
        env,
        event,
        Subject {
            kind: tidegate::state::history::SubjectKind::Cli,
            name: "alice".into(),
            host: Some("laptop".into()),
        },
    );
    e.time = time.into();
    e.outcome = outcome;
    e.commit = Some("0123456789abcdef0123456789abcdef01234567".into());
    e
}

fn tidegate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tidegate history` as text merges every environment by time (golden),
/// filters by `--since`, prints JSON and JSON lines, and skips a torn last
/// line with a warning.
#[test]
fn history_text_is_one_line_per_entry_and_a_torn_line_is_skipped() {
    let dir = TempDir::new().unwrap();
    let repo = dir.path().join("repo");
    file_repo(&repo);
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mut apply = fixed(
        "dev",
        "2024-05-01T10:00:00Z",
        EventKind::Apply,
        Outcome::Succeeded,
    );
    apply.duration_ms = Some(4200);
    apply.plan = Some(tidegate::state::history::PlanSummary {
        digest: "sha256:ab".into(),
        create: 3,
        update: 1,
        delete: 0,
        unchanged: 9,
    });
    let mut failed = fixed(
        "staging",
        "2024-05-01T10:30:00.5Z",
        EventKind::Apply,
        Outcome::Failed,
    );
    failed.error = Some("app.config failed: forbidden\n(403)".into());
    let mut held = fixed(
        "dev",
        "2024-05-01T11:00:00Z",
        EventKind::Rebuild,
        Outcome::Held,
    );
    held.reason = Some("guard mass-delete".into());
    let mut heal = fixed(
        "dev",
        "2024-05-01T12:00:00Z",
        EventKind::DriftHeal,
        Outcome::Succeeded,
    );
    heal.subject = Subject {
        kind: tidegate::state::history::SubjectKind::Reconciler,
        name: "reconciler".into(),
        host: Some("tidegate-0".into()),
    };
    let line = |e: &Entry| serde_json::to_string(e).unwrap() + "\n";
    let torn = line(&heal);
    std::fs::write(
        state.join("test.dev.history.jsonl"),
        format!(
            "{}{}{}{}",
            line(&apply),
            line(&held),
            line(&heal),
            &torn[..torn.len() / 2]
        ),
    )
    .unwrap();
    std::fs::write(state.join("test.staging.history.jsonl"), line(&failed)).unwrap();
    let (r, s) = (repo.to_str().unwrap(), state.to_str().unwrap());

    let (code, out, err) = tidegate(&["history", "--repo", r, "--state-dir", s]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("history_text", out);
    assert!(err.contains("torn last line"), "{err}");

    let (code, out, _) = tidegate(&[
        "history",
        "dev",
        "--since",
        "2024-05-01T11:00:00Z",
        "--format",
        "jsonl",
        "--repo",
        r,
        "--state-dir",
        s,
    ]);
    assert_eq!(code, 0);
    let lines: Vec<Entry> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, [held.clone(), heal.clone()]);
    let (code, out, _) = tidegate(&["history", "--format", "json", "--repo", r, "--state-dir", s]);
    assert_eq!(code, 0);
    let all: Vec<Entry> = serde_json::from_str(&out).unwrap();
    assert_eq!(all, [apply, failed, held, heal]);

    let (code, _, err) = tidegate(&["history", "nope", "--repo", r, "--state-dir", s]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no environment nope in the repository (it has dev, staging)"),
        "{err}"
    );
    let (code, _, err) = tidegate(&["history", "--since", "soon", "--repo", r, "--state-dir", s]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--since \"soon\" is neither a duration"),
        "{err}"
    );

    // An environment whose cluster cannot be reached: the others are
    // printed, the problem named, exit 1.
    std::fs::write(
        repo.join("environments/prod.yaml"),
        "apiVersion: tidegate.dev/v1
kind: Environment
metadata:
  name: prod
spec:
  after: staging
  targets:
    kubernetes:
      context: prod
  modules: []
",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["history", "--repo", r, "--state-dir", s])
        .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    assert!(
        stderr.contains("error: the history of prod could not be read: kubernetes context prod"),
        "{stderr}"
    );
}

/// `POST path` on the reconciler's API with the harness token: the status.
async fn http_post(port: u16, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

const TOKEN: &str = "history-test-token";

/// The reconciler records its applies (subject `reconciler`, the pod
/// name as host, the commit's author and committer), a drift heal, and a
/// suspend and resume through the API (subject `http`, the caller), and
/// serves them on the status API and `GET /api/v1/history`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_reconciler_records_applies_and_drift_heals() {
    let stand = Stand::with_contexts(&["dev", "staging"]).await;
    let repo = TempDir::new().unwrap();
    let commit = write_repo(repo.path(), &Spec::default(), true);
    let port = Ports::free();
    let token = stand.dir.path().join("api-token");
    std::fs::write(&token, TOKEN).unwrap();
    let mut child = stand
        .reconcile(repo.path(), port)
        .arg("--api-token-file")
        .arg(&token)
        .env("POD_NAME", "tidegate-7d9")
        .spawn()
        .unwrap();
    if let Err(last) =
        super::stand::until_converged(port.api, &commit, 2, Duration::from_secs(60)).await
    {
        panic!("dev and staging healthy at {commit}: {last}");
    }
    // Drift: someone deletes a managed ConfigMap; the next drift check
    // (every 10 s) heals it and records a drift heal.
    let api: Api<ConfigMap> = Api::namespaced(stand.admin_kube("dev").await, "app-dev");
    api.delete("flags", &DeleteParams::default()).await.unwrap();
    let mut entries: Vec<Entry> = Vec::new();
    for _ in 0..300 {
        let (code, body) = http_get(port.api, "/api/v1/history?env=dev")
            .await
            .unwrap_or_default();
        if code == 200 {
            entries = body
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if entries.iter().any(|e| e.event == EventKind::DriftHeal) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events: Vec<EventKind> = entries.iter().map(|e| e.event).collect();
    assert_eq!(
        events,
        [EventKind::Apply, EventKind::DriftHeal],
        "{entries:#?}"
    );
    for e in &entries {
        assert_eq!(e.subject.to_string(), "reconciler@tidegate-7d9");
        assert_eq!(e.commit.as_deref(), Some(commit.as_str()));
        let info = e.commit_info.as_ref().unwrap();
        assert_eq!(info.author.as_deref(), Some(AUTHOR));
        assert_eq!(info.committer.as_deref(), Some(COMMITTER));
        assert_eq!(e.outcome, Outcome::Succeeded);
    }
    assert_eq!(entries[1].plan.as_ref().unwrap().create, 1, "{entries:#?}");

    // A suspend and a resume of staging through the API.
    for action in ["suspend", "resume"] {
        let path = format!("/api/v1/environments/staging/{action}");
        assert_eq!(http_post(port.api, &path).await, 202);
        // Each recorded before the next, so they keep their order.
        let mut seen = false;
        for _ in 0..100 {
            let (_, body) = http_get(port.api, "/api/v1/history?env=staging")
                .await
                .unwrap();
            seen = body.contains(&format!("\"event\":\"{action}\""));
            if seen {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(seen, "{action} not recorded");
    }
    let (_, body) = http_get(port.api, "/api/v1/history?env=staging")
        .await
        .unwrap();
    let staging: Vec<Entry> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<EventKind> = staging.iter().map(|e| e.event).collect();
    assert_eq!(
        events,
        [EventKind::Apply, EventKind::Suspend, EventKind::Resume],
        "{staging:#?}"
    );
    for e in &staging[1..] {
        assert_eq!(e.subject.to_string(), "http:api-token@tidegate-7d9");
        assert_eq!(e.commit.as_deref(), Some(commit.as_str()));
        assert_eq!(e.outcome, Outcome::Succeeded);
    }

    // Both environments, merged; the status API has the last entries.
    let (code, body) = http_get(port.api, "/api/v1/history").await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(body.lines().count(), 5, "{body}");
    let (code, body) = http_get(
        port.api,
        "/api/v1/history?env=dev&since=2999-01-01T00:00:00Z",
    )
    .await
    .unwrap();
    assert_eq!((code, body.as_str()), (200, ""));
    let (code, _) = http_get(port.api, "/api/v1/history?env=nope")
        .await
        .unwrap();
    assert_eq!(code, 404);
    let (code, _) = http_get(port.api, "/api/v1/history?since=soon")
        .await
        .unwrap();
    assert_eq!(code, 400);
    let mut shown = 0;
    for _ in 0..50 {
        let (_, body) = http_get(port.api, "/api/v1/status").await.unwrap();
        let s: Value = serde_json::from_str(&body).unwrap();
        shown = s["environments"][0]["history"]
            .as_array()
            .map_or(0, Vec::len);
        if shown == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(shown, 2, "dev's entries on the status API");
    let (_, page) = http_get(port.api, "/").await.unwrap();
    assert!(
        page.contains("<table class=history data-env=\"dev\">"),
        "{page}"
    );
    let status = super::stand::sigterm(&mut child).await;
    assert!(status.success(), "{status:?}");
}
