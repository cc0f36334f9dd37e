use std::path::Path;

use super::*;
use crate::observe::Observed;
use crate::plan::{Counts, ModulePlan, ResourcePlan};
use crate::resource::{Live, ProviderKind, ResourceId};
use crate::value::Map;

fn key(fill: u8) -> PlanKey {
    PlanKey::new(vec![fill; 32])
}

fn id(name: &str) -> ResourceId {
    ResourceId {
        module: "app".into(),
        name: name.into(),
    }
}

fn body(pairs: &[(&str, Value)]) -> Value {
    Value::Map(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

fn desired(name: &str, b: Value) -> Desired {
    Desired {
        id: id(name),
        kind: "v1/ConfigMap".into(),
        body: b,
        origin: Default::default(),
    }
}

fn live(pairs: &[(&str, Value)]) -> LiveState {
    let mut state = LiveState::default();
    for (name, b) in pairs {
        let live = Live {
            id: id(name),
            kind: "v1/ConfigMap".into(),
            external_id: format!("default/{name}"),
            body: b.clone(),
            attributes: Map::new(),
        };
        state.resources.insert(
            id(name),
            Observed {
                provider: ProviderKind::Kubernetes,
                live,
            },
        );
    }
    state
}

fn env_plan(actions: &[(&str, Action)]) -> EnvPlan {
    let resources: Vec<ResourcePlan> = actions
        .iter()
        .map(|(name, action)| ResourcePlan {
            id: id(name),
            provider: ProviderKind::Kubernetes,
            kind: "v1/ConfigMap".into(),
            action: action.clone(),
            step: 1,
            external_id: None,
            origin: None,
            changes: vec![],
        })
        .collect();
    EnvPlan {
        name: "dev".into(),
        owner: "dev".into(),
        waits_for: vec![],
        counts: Counts::default(),
        modules: vec![ModulePlan {
            name: "app".into(),
            source: "modules/app".into(),
            counts: Counts::default(),
            resources,
        }],
        order: vec![],
        policy: None,
        policy_errors: vec![],
        notes: vec![],
        promotion: vec![],
        guards: vec![],
        target: None,
    }
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

fn secret(v: &str) -> Value {
    Value::Sensitive(Sensitive::from_string(v.into()))
}

/// A plan that updates `config` (live differs), leaves `flags` and
/// creates `extra`.
fn world(config: &str, flags: &str) -> (EnvPlan, Vec<Desired>, LiveState) {
    let plan = env_plan(&[
        ("config", Action::Update),
        ("flags", Action::NoOp),
        ("extra", Action::Create),
    ]);
    let desired = vec![
        desired(
            "config",
            body(&[("mode", s("fast")), ("token", secret("hunter2"))]),
        ),
        desired("flags", body(&[("on", s("yes"))])),
        desired("extra", body(&[("n", Value::Int(1))])),
    ];
    let live = live(&[
        ("config", body(&[("mode", s(config))])),
        ("flags", body(&[("on", s(flags))])),
    ]);
    (plan, desired, live)
}

fn saved_of(world: &(EnvPlan, Vec<Desired>, LiveState), k: &PlanKey) -> SavedPlan {
    let (plan, desired, live) = world;
    let seen = seen(plan, desired, live, k);
    SavedPlan::new("c0ffee", Source::Worktree, plan, seen, k)
}

#[test]
fn a_saved_plan_reads_back_exactly_with_its_key_and_holds_no_plaintext() {
    let k = key(7);
    let saved = saved_of(&world("slow", "yes"), &k);
    let text = saved.to_text(&k);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("fast"), "bodies are not stored: {text}");
    assert!(text.contains("\"mac\": \"hmac-sha256:"), "{text}");
    let read = SavedPlan::parse(text.as_bytes(), Path::new("p.json"), &k).unwrap();
    assert_eq!(read, saved);
    assert_eq!(read.key.id, k.id());
    let changes: Vec<(&str, &str)> = read
        .changes
        .iter()
        .map(|c| (c.id.as_str(), c.action.as_str()))
        .collect();
    assert_eq!(changes, [("app.config", "update"), ("app.extra", "create")]);
    let extra = read.resources.iter().find(|r| r.id == "app.extra").unwrap();
    assert!(extra.desired.is_some() && extra.live.is_none());
}

#[test]
fn every_changed_byte_and_another_key_are_refused() {
    let k = key(7);
    let text = saved_of(&world("slow", "yes"), &k).to_text(&k);
    let bytes = text.as_bytes();
    let p = Path::new("p.json");
    for i in 0..bytes.len() {
        let mut altered = bytes.to_vec();
        altered[i] ^= 0x01;
        match SavedPlan::parse(&altered, p, &k) {
            // Flipping a bit of insignificant whitespace keeps the content
            // (a space becomes `!`, which breaks the JSON, or a newline a
            // vertical tab... which is not JSON whitespace either).
            Err(_) => {}
            Ok(read) => panic!("byte {i} changed and still accepted: {read:?}"),
        }
    }
    let other = SavedPlan::parse(bytes, p, &key(8)).unwrap_err();
    assert!(matches!(other, Error::OtherKey { .. }), "{other}");
    assert!(other.to_string().contains(&k.id()), "{other}");
    // The key id rewritten to the other key's does not help.
    let forged = text.replace(&k.id(), &key(8).id());
    let e = SavedPlan::parse(forged.as_bytes(), p, &key(8)).unwrap_err();
    assert!(matches!(e, Error::Altered { .. }), "{e}");
    // Reordering and re-indenting keeps the content: still valid.
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let compact = serde_json::to_vec(&v).unwrap();
    assert!(SavedPlan::parse(&compact, p, &k).is_ok());
}

#[test]
fn a_file_without_mac_or_of_another_format_is_refused_by_name() {
    let k = key(7);
    let text = saved_of(&world("slow", "yes"), &k).to_text(&k);
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object_mut().unwrap().remove("mac");
    let e = SavedPlan::parse(&serde_json::to_vec(&v).unwrap(), Path::new("p"), &k).unwrap_err();
    assert!(matches!(e, Error::Altered { .. }), "{e}");
    v["format"] = "tidegate-saved-plan/9".into();
    let e = SavedPlan::parse(&serde_json::to_vec(&v).unwrap(), Path::new("p"), &k).unwrap_err();
    assert!(e.to_string().contains("tidegate-saved-plan/9"), "{e}");
}

#[test]
fn a_short_or_missing_key_is_refused() {
    let dir = std::env::temp_dir().join(format!("tidegate-plan-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let short = dir.join("short");
    std::fs::write(&short, "abc\n").unwrap();
    let e = PlanKey::load(Some(&short)).unwrap_err();
    assert!(matches!(e, Error::KeyShort { len: 3, .. }), "{e}");
    let good = dir.join("good");
    std::fs::write(&good, format!("{}\n", "ab".repeat(32))).unwrap();
    let k = PlanKey::load(Some(&good)).unwrap();
    // The file's newline is not part of the key.
    assert_eq!(k.id(), PlanKey::new("ab".repeat(32).into_bytes()).id());
    let e = PlanKey::load(Some(&dir.join("absent"))).unwrap_err();
    assert!(matches!(e, Error::KeyRead { .. }), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn nothing_moved_when_the_world_is_the_same() {
    let k = key(1);
    let w = world("slow", "yes");
    let saved = saved_of(&w, &k);
    let now = seen(&w.0, &w.1, &w.2, &k);
    assert!(moved(&saved, &now).is_empty());
}

#[test]
fn a_live_edit_of_a_changed_resource_is_named() {
    let k = key(1);
    let saved = saved_of(&world("slow", "yes"), &k);
    let w = world("medium", "yes");
    let m = moved(&saved, &seen(&w.0, &w.1, &w.2, &k));
    assert_eq!(
        m,
        [Moved::Live {
            id: "app.config".into(),
            planned: true,
            now: true
        }]
    );
    assert!(m[0].to_string().contains("live state changed"), "{}", m[0]);
    // Deleted since: its live digest is gone.
    let (plan, desired, mut live) = world("slow", "yes");
    live.resources.remove(&id("config"));
    let m = moved(&saved, &seen(&plan, &desired, &live, &k));
    assert!(
        m.contains(&Moved::Live {
            id: "app.config".into(),
            planned: true,
            now: false
        }),
        "{m:?}"
    );
}

#[test]
fn a_live_edit_of_an_unchanged_resource_counts_only_through_the_changes() {
    let k = key(1);
    let saved = saved_of(&world("slow", "yes"), &k);
    // `flags` live edited, the plan still leaves it alone: applying the
    // saved changes is still exactly right.
    let w = world("slow", "no");
    assert!(moved(&saved, &seen(&w.0, &w.1, &w.2, &k)).is_empty());
    // ...but if the edit makes it need an update, the changes differ.
    let mut plan = w.0.clone();
    plan.modules[0].resources[1].action = Action::Update;
    let m = moved(&saved, &seen(&plan, &w.1, &w.2, &k));
    assert_eq!(
        m,
        [Moved::Change {
            id: "app.flags".into(),
            planned: None,
            now: Some("update".into())
        }]
    );
    assert_eq!(
        m[0].to_string(),
        "app.flags: the plan left it unchanged, now it needs a update"
    );
}

#[test]
fn a_desired_change_and_a_secret_change_are_named() {
    let k = key(1);
    let saved = saved_of(&world("slow", "yes"), &k);
    let (plan, mut desired, live) = world("slow", "yes");
    desired[0].body = body(&[("mode", s("fast")), ("token", secret("hunter3"))]);
    let m = moved(&saved, &seen(&plan, &desired, &live, &k));
    assert_eq!(
        m,
        [Moved::Desired {
            id: "app.config".into()
        }]
    );
    // A secret is not its mask: a string equal to the mask differs.
    desired[0].body = body(&[("mode", s("fast")), ("token", s(crate::sensitive::MASK))]);
    assert!(!moved(&saved, &seen(&plan, &desired, &live, &k)).is_empty());
}

#[test]
fn another_commit_or_environment_is_named() {
    let k = key(1);
    let saved = saved_of(&world("slow", "yes"), &k);
    assert!(moved_commit(&saved, "c0ffee", "dev").is_empty());
    let m = moved_commit(&saved, "beef", "prod");
    assert_eq!(m.len(), 2);
    let text = refusal(Path::new("p.json"), &m);
    assert!(text.contains("nothing applied"), "{text}");
    assert!(
        text.contains("the plan was made at c0ffee, the repository now reads beef"),
        "{text}"
    );
    assert!(text.contains("for environment dev, not prod"), "{text}");
}

#[test]
fn digests_are_keyed_and_ignore_key_order() {
    let a = serde_json::json!({"a": 1, "b": [1, 2]});
    let b = serde_json::json!({"b": [1, 2], "a": 1});
    assert_eq!(key(1).digest(&a), key(1).digest(&b));
    assert_ne!(key(1).digest(&a), key(2).digest(&a));
}
