use std::io::Write;
use std::path::Path;

use super::*;

fn full() -> Entry {
    Entry {
        time: "2024-05-01T12:00:00.5Z".into(),
        environment: "prod".into(),
        event: EventKind::DriftHeal,
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        commit_info: Some(CommitInfo {
            author: Some("Ann Author <ann@example.com>".into()),
            committer: Some("Carl Committer <carl@example.com>".into()),
            signer: Some("ops@example.com (SHA256:abc)".into()),
        }),
        subject: Subject {
            kind: SubjectKind::Http,
            name: "system:serviceaccount:ops:bot".into(),
            host: Some("tidegate-0".into()),
        },
        plan: Some(PlanSummary {
            digest: "sha256:00ff".into(),
            create: 1,
            update: 2,
            delete: 3,
            unchanged: 4,
        }),
        outcome: Outcome::Failed,
        duration_ms: Some(1500),
        error: Some("web.api failed: timeout".into()),
        reason: Some("change freeze".into()),
        resources: vec!["web.old".into()],
    }
}

fn at(time: &str, n: usize) -> Entry {
    let mut e = Entry::new("dev", EventKind::Apply, Subject::reconciler());
    e.time = time.into();
    e.duration_ms = Some(n as u64);
    e
}

#[test]
fn every_field_serialises_under_its_documented_name() {
    let e = full();
    let v = serde_json::to_value(&e).unwrap();
    let expected = serde_json::json!({
        "time": "2024-05-01T12:00:00.5Z",
        "environment": "prod",
        "event": "drift-heal",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "commitInfo": {
            "author": "Ann Author <ann@example.com>",
            "committer": "Carl Committer <carl@example.com>",
            "signer": "ops@example.com (SHA256:abc)",
        },
        "subject": {"kind": "http", "name": "system:serviceaccount:ops:bot", "host": "tidegate-0"},
        "plan": {"digest": "sha256:00ff", "create": 1, "update": 2, "delete": 3, "unchanged": 4},
        "outcome": "failed",
        "durationMs": 1500,
        "error": "web.api failed: timeout",
        "reason": "change freeze",
        "resources": ["web.old"],
    });
    assert_eq!(v, expected);
    let back: Entry = serde_json::from_value(v).unwrap();
    assert_eq!(back, e);
    // Unset fields are left out and read back as unset.
    let bare = Entry::new("dev", EventKind::Apply, Subject::cli());
    let text = serde_json::to_string(&bare).unwrap();
    assert!(
        !text.contains("commit") && !text.contains("error"),
        "{text}"
    );
    assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), bare);
}

#[test]
fn labels_match_the_serialised_names() {
    use EventKind::*;
    for k in [
        Apply, Rebuild, Prune, DriftHeal, Approve, Hold, Release, Rollback, Suspend, Resume,
        Refused,
    ] {
        assert_eq!(serde_json::to_value(k).unwrap(), k.to_string());
    }
    for o in [
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::Held,
        Outcome::Refused,
    ] {
        assert_eq!(serde_json::to_value(o).unwrap(), o.to_string());
    }
    assert_eq!(
        serde_json::to_value(SubjectKind::Reconciler).unwrap(),
        "reconciler"
    );
}

#[test]
fn subjects_name_who_and_where() {
    let s = Subject {
        kind: SubjectKind::Cli,
        name: "alice".into(),
        host: Some("laptop".into()),
    };
    assert_eq!(s.to_string(), "cli:alice@laptop");
    let r = Subject {
        kind: SubjectKind::Reconciler,
        name: "reconciler".into(),
        host: Some("tidegate-7d9".into()),
    };
    assert_eq!(r.to_string(), "reconciler@tidegate-7d9");
    let h = Subject::http("api-token");
    assert_eq!(h.kind, SubjectKind::Http);
    assert_eq!(h.name, "api-token");
    let cli = Subject::cli();
    assert!(!cli.name.is_empty());
    assert!(cli.host.is_some());
    assert_eq!(Subject::reconciler().name, "reconciler");
}

#[test]
fn long_texts_and_lists_are_bounded_when_stored() {
    let mut e = full();
    e.error = Some("é".repeat(MAX_TEXT));
    e.resources = (0..250).map(|i| format!("m.r{i}")).collect();
    let b = e.bounded();
    let error = b.error.unwrap();
    assert!(
        error.len() <= MAX_TEXT && error.ends_with('…'),
        "{}",
        error.len()
    );
    assert_eq!(b.resources.len(), MAX_RESOURCES);
    assert_eq!(b.resources.last().unwrap(), "… and 151 more");
    assert_eq!(b.reason, e.reason);
}

#[test]
fn since_takes_a_duration_or_a_time() {
    let now: Timestamp = "2024-05-01T12:00:00Z".parse().unwrap();
    assert_eq!(
        parse_since("2h", now).unwrap(),
        "2024-05-01T10:00:00Z".parse::<Timestamp>().unwrap()
    );
    assert_eq!(
        parse_since("2024-04-30T00:00:00Z", now).unwrap(),
        "2024-04-30T00:00:00Z".parse::<Timestamp>().unwrap()
    );
    let e = parse_since("yesterday", now).unwrap_err();
    assert!(e.contains("neither a duration"), "{e}");
    let kept = since(
        vec![at("2024-05-01T09:00:00Z", 1), at("2024-05-01T11:00:00Z", 2)],
        Some(parse_since("2h", now).unwrap()),
    );
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].duration_ms, Some(2));
}

#[test]
fn entries_sort_by_time_not_by_text() {
    // As text "12:00:00Z" sorts after "12:00:00.5Z".
    let mut v = vec![
        at("2024-05-01T12:00:00.5Z", 3),
        at("2024-05-01T12:00:00Z", 1),
        at("2024-05-01T12:00:00.25Z", 2),
    ];
    sort(&mut v);
    let order: Vec<_> = v.iter().map(|e| e.duration_ms.unwrap()).collect();
    assert_eq!(order, [1, 2, 3]);
}

fn store(dir: &Path) -> RecordStore {
    RecordStore::File {
        dir: dir.to_path_buf(),
        project: "shop".into(),
    }
}

#[tokio::test]
async fn files_append_one_line_each_and_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    assert!(s.history("dev").await.unwrap().is_empty());
    for i in 0..3 {
        s.append_history(&at(&format!("2024-05-01T12:00:0{i}Z"), i))
            .await
            .unwrap();
    }
    let text = std::fs::read_to_string(dir.path().join("shop.dev.history.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(text.ends_with('\n'));
    let read = s.history("dev").await.unwrap();
    let order: Vec<_> = read.iter().map(|e| e.duration_ms.unwrap()).collect();
    assert_eq!(order, [0, 1, 2]);
    // Another environment and another project keep apart.
    assert!(s.history("prod").await.unwrap().is_empty());
    assert!(RecordStore::File {
        dir: dir.path().to_path_buf(),
        project: "blog".into()
    }
    .history("dev")
    .await
    .unwrap()
    .is_empty());
}

#[tokio::test]
async fn a_torn_last_line_is_skipped_and_the_next_append_starts_a_new_line() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.append_history(&at("2024-05-01T12:00:00Z", 1))
        .await
        .unwrap();
    let path = dir.path().join("shop.dev.history.jsonl");
    let whole = serde_json::to_string(&at("2024-05-01T12:00:01Z", 2)).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(&whole.as_bytes()[..whole.len() / 2]).unwrap();
    drop(f);
    assert_eq!(s.history("dev").await.unwrap().len(), 1);
    s.append_history(&at("2024-05-01T12:00:02Z", 3))
        .await
        .unwrap();
    let read = s.history("dev").await.unwrap();
    let order: Vec<_> = read.iter().map(|e| e.duration_ms.unwrap()).collect();
    assert_eq!(order, [1, 3]);
}

#[tokio::test]
async fn files_rotate_at_the_size_bound_and_keep_a_bounded_number() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    // Every line the same length: two-digit durations.
    let one = serde_json::to_string(&at("2024-05-01T12:00:00Z", 10))
        .unwrap()
        .len() as u64
        + 1;
    let retention = Retention {
        file_bytes: one * 3,
        files: 2,
        ..Retention::default()
    };
    for i in 0..20 {
        let e = at(&format!("2024-05-01T12:00:{i:02}Z"), 10 + i);
        s.append_history_within(&e, &retention).await.unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".history.jsonl"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "shop.dev.history.jsonl",
            "shop.dev.history.jsonl.1",
            "shop.dev.history.jsonl.2"
        ]
    );
    for n in &names {
        let size = std::fs::metadata(dir.path().join(n)).unwrap().len();
        assert!(size <= one * 3, "{n}: {size}");
    }
    // The newest entries, contiguous: three per file, two in the current.
    let read = s.history("dev").await.unwrap();
    let order: Vec<_> = read.iter().map(|e| e.duration_ms.unwrap()).collect();
    assert_eq!(order, (22..30).collect::<Vec<u64>>());
}

#[test]
fn the_text_line_has_what_an_auditor_scans_for() {
    let line = full().line();
    assert_eq!(
        line,
        "2024-05-01T12:00:00.5Z prod drift-heal failed 0123456789ab http:system:serviceaccount:ops:bot@tidegate-0 +1 ~2 -3 =4 1.5s [web.old] reason: change freeze error: web.api failed: timeout"
    );
}

#[test]
fn a_signed_commit_names_its_signer_and_an_unsigned_one_none() {
    let unsigned = CommitMeta {
        author: "Ann <ann@example.com>".into(),
        committer: "Carl <carl@example.com>".into(),
        signature: None,
    };
    let info = CommitInfo::of(&unsigned, &TrustList::default());
    assert_eq!(info.author.as_deref(), Some("Ann <ann@example.com>"));
    assert_eq!(info.committer.as_deref(), Some("Carl <carl@example.com>"));
    assert_eq!(info.signer, None);
    let garbled = CommitMeta {
        signature: Some((b"not a signature".to_vec(), b"tree 00\n".to_vec())),
        ..unsigned
    };
    let info = CommitInfo::of(&garbled, &TrustList::default());
    assert!(info.signer.unwrap().starts_with("invalid: "));
}
