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
