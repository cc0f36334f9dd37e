use super::*;
use crate::testutil;

fn model() -> Model {
    crate::load::load(&testutil::repo()).unwrap()
}

fn record(env: &str, commit: &str, converged: bool, healthy: bool) -> EnvRecord {
    EnvRecord {
        environment: env.into(),
        commit: commit.into(),
        converged,
        healthy,
        applied_at: now_rfc3339(),
        resources: 4,
        problems: if healthy {
            vec![]
        } else {
            vec!["app.config: unhealthy".into()]
        },
        good_since: None,
        partial: Vec::new(),
    }
}

#[test]
fn prod_waits_for_dev_good_at_the_same_commit() {
    let m = model();
    assert_eq!(predecessors(&m, "prod"), vec!["dev".to_string()]);
    assert!(predecessors(&m, "dev").is_empty());
    let mut records = BTreeMap::new();
    let held = gate(&m, "prod", "c2", &records).unwrap_err();
    assert_eq!(held.blocked_by, "dev");
    assert!(held.to_string().contains("no record"), "{held}");

    records.insert("dev".to_string(), record("dev", "c1", true, true));
    let held = gate(&m, "prod", "c2", &records).unwrap_err();
    assert!(held.reason.contains("last applied at c1"), "{held}");

    records.insert("dev".to_string(), record("dev", "c2", true, false));
    let held = gate(&m, "prod", "c2", &records).unwrap_err();
    assert!(held.reason.contains("not healthy") && held.reason.contains("app.config"));

    records.insert("dev".to_string(), record("dev", "c2", true, true));
    assert_eq!(gate(&m, "prod", "c2", &records), Ok(()));
    assert_eq!(gate(&m, "dev", "c9", &BTreeMap::new()), Ok(()));
}

#[tokio::test]
async fn file_records_round_trip_and_a_missing_one_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = RecordStore::File {
        dir: dir.path().join("state"),
        project: "shop".into(),
    };
    assert_eq!(store.load("dev").await.unwrap(), None);
    let r = record("dev", "abc", true, true);
    store.save(&r).await.unwrap();
    assert!(dir.path().join("state/shop.dev.json").is_file());
    assert_eq!(store.load("dev").await.unwrap(), Some(r.clone()));
    assert!(r.good_at("abc") && !r.good_at("def"));
    std::fs::write(dir.path().join("state/shop.dev.json"), "{").unwrap();
    let e = store.load("dev").await.unwrap_err().to_string();
    assert!(
        e.contains("shop.dev.json") && e.contains("delete it"),
        "{e}"
    );
}

#[tokio::test]
async fn a_record_from_before_projects_is_read_until_the_new_one_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = RecordStore::File {
        dir: dir.path().to_path_buf(),
        project: String::new(),
    };
    let old = record("dev", "old", true, true);
    legacy.save(&old).await.unwrap();
    assert!(dir.path().join("dev.json").is_file());
    let store = RecordStore::File {
        dir: dir.path().to_path_buf(),
        project: "shop".into(),
    };
    assert_eq!(store.load("dev").await.unwrap(), Some(old));
    let new = record("dev", "new", true, true);
    store.save(&new).await.unwrap();
    assert_eq!(store.load("dev").await.unwrap(), Some(new));
    let other = RecordStore::File {
        dir: dir.path().to_path_buf(),
        project: "blog".into(),
    };
    assert_eq!(other.load("dev").await.unwrap().unwrap().commit, "old");
}

#[test]
fn a_record_keeps_when_it_became_good_until_the_commit_or_health_changes() {
    let mut first = record("dev", "c1", true, true);
    first.applied_at = "2026-12-04T09:00:00Z".into();
    let first = first.after(None);
    assert_eq!(first.good_since.as_deref(), Some("2026-12-04T09:00:00Z"));
    // A heal at the same commit later: still good since 09:00 (a soak in
    // progress survives the reconciler's restart and its first converge).
    let mut again = record("dev", "c1", true, true);
    again.applied_at = "2026-12-04T09:20:00Z".into();
    let again = again.after(Some(&first));
    assert_eq!(again.good_since.as_deref(), Some("2026-12-04T09:00:00Z"));
    assert!(again.same_state(&first));
    // Unhealthy: the streak ends; good again: it starts over.
    let bad = record("dev", "c1", true, false).after(Some(&again));
    assert_eq!(bad.good_since, None);
    let mut back = record("dev", "c1", true, true);
    back.applied_at = "2026-12-04T10:00:00Z".into();
    assert_eq!(
        back.after(Some(&bad)).good_since.as_deref(),
        Some("2026-12-04T10:00:00Z")
    );
    // A new commit starts over too.
    let mut next = record("dev", "c2", true, true);
    next.applied_at = "2026-12-04T11:00:00Z".into();
    assert_eq!(
        next.after(Some(&again)).good_since.as_deref(),
        Some("2026-12-04T11:00:00Z")
    );
}
