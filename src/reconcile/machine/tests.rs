use super::*;
use crate::reconcile::{EnvHealth, ErrorReason, ReportError};

const ENVS: [&str; 4] = ["dev", "staging", "test", "prod"];

fn specs() -> Vec<EnvSpec> {
    let mut prev: Option<&str> = None;
    ENVS.iter()
        .map(|name| {
            let s = EnvSpec {
                name: name.to_string(),
                after: prev.map(|p| vec![p.to_string()]).unwrap_or_default(),
                drift: DriftPolicy::default(),
                suspend: false,
                promotion: Promotion::default(),
                controls: Controls::default(),
            };
            prev = Some(name);
            s
        })
        .collect()
}

/// The environment a gate waits on (`reason: previous`).
fn waits_on(g: &Gate) -> Option<&str> {
    match g {
        Gate::Waiting {
            reason: Reason::Previous,
            on,
            ..
        } => on.as_deref(),
        _ => None,
    }
}

fn backoff() -> Backoff {
    Backoff {
        base: Duration::from_secs(10),
        max: Duration::from_secs(60),
    }
}

fn start(commit: &str) -> (State, Vec<Action>, Instant) {
    let now = Instant::now();
    let (s, a) = step(
        State::new(true, backoff()),
        Event::Commit {
            commit: commit.into(),
            envs: specs(),
        },
        now,
    );
    (s, a, now)
}

fn apply(env: &str, commit: &str) -> Action {
    Action::Converge {
        env: env.into(),
        commit: commit.into(),
        mode: Mode::Apply,
    }
}

fn report(commit: &str, mode: Mode, ok: bool) -> EnvReport {
    EnvReport {
        commit: commit.into(),
        mode,
        health: EnvHealth::Healthy,
        error: (!ok).then(|| ReportError::new(ErrorReason::Apply, "boom")),
        ..EnvReport::default()
    }
}

fn finish(s: State, env: &str, commit: &str, ok: bool, now: Instant) -> (State, Vec<Action>) {
    let event = Event::Finished {
        env: env.into(),
        report: report(commit, Mode::Apply, ok),
        jitter: 1.0,
    };
    step(s, event, now)
}

#[test]
fn a_commit_walks_the_environments_in_order() {
    let (s, a, now) = start("c1");
    assert_eq!(a, vec![apply("dev", "c1")]);
    assert_eq!(waits_on(&s.gate("staging", now)), Some("dev"));
    let (s, a) = finish(s, "dev", "c1", true, now);
    assert_eq!(a, vec![apply("staging", "c1")]);
    let (s, a) = finish(s, "staging", "c1", true, now);
    assert_eq!(a, vec![apply("test", "c1")]);
    let (s, a) = finish(s, "test", "c1", true, now);
    assert_eq!(a, vec![apply("prod", "c1")]);
    let (s, a) = finish(s, "prod", "c1", true, now);
    assert!(a.is_empty());
    for env in ENVS {
        assert_eq!(s.gate(env, now), Gate::Converged, "{env}");
    }
}

#[test]
fn a_failing_environment_holds_the_later_ones_at_their_last_good_commit() {
    let (mut s, _, now) = start("c1");
    for env in ENVS {
        (s, _) = finish(s, env, "c1", true, now);
    }
    let (s, a) = step(
        s,
        Event::Commit {
            commit: "c2".into(),
            envs: specs(),
        },
        now,
    );
    assert_eq!(a, vec![apply("dev", "c2")]);
    let (s, a) = finish(s, "dev", "c2", true, now);
    assert_eq!(a, vec![apply("staging", "c2")]);
    let (s, a) = finish(s, "staging", "c2", false, now);
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(s.envs["staging"].last_good.as_deref(), Some("c1"));
    assert_eq!(s.envs["prod"].last_good.as_deref(), Some("c1"));
    assert_eq!(waits_on(&s.gate("test", now)), Some("staging"));
    assert_eq!(
        s.gate("staging", now),
        Gate::BackingOff {
            attempt: 1,
            retry_in_secs: 10
        }
    );
}

#[test]
fn failures_back_off_exponentially_with_a_cap_and_jitter() {
    let (s, _, t0) = start("c1");
    let mut s = s;
    let mut now = t0;
    let mut delays = Vec::new();
    for _ in 0..5 {
        (s, _) = finish(s, "dev", "c1", false, now);
        let at = s.envs["dev"].retry_at.unwrap();
        delays.push(at.duration_since(now).as_secs());
        // Not before the retry time, at once after it.
        let (s2, a) = step(s, Event::Tick, at - Duration::from_millis(1));
        assert!(a.is_empty());
        let (s2, a) = step(s2, Event::Tick, at);
        assert_eq!(a, vec![apply("dev", "c1")]);
        s = s2;
        now = at;
    }
    assert_eq!(delays, vec![10, 20, 40, 60, 60]);
    assert_eq!(
        jittered(Duration::from_secs(10), 0.0),
        Duration::from_secs(5)
    );
    assert_eq!(
        jittered(Duration::from_secs(10), 7.0),
        Duration::from_secs(10)
    );
}

#[test]
fn one_environment_backing_off_does_not_stop_an_independent_one() {
    let mut envs = specs();
    envs.push(EnvSpec {
        name: "sandbox".into(),
        after: vec![],
        drift: DriftPolicy::default(),
        suspend: false,
        promotion: Promotion::default(),
        controls: Controls::default(),
    });
    let now = Instant::now();
    let (s, a) = step(
        State::new(true, backoff()),
        Event::Commit {
            commit: "c1".into(),
            envs,
        },
        now,
    );
    assert_eq!(a, vec![apply("dev", "c1"), apply("sandbox", "c1")]);
    let (s, _) = finish(s, "dev", "c1", false, now);
    let (_, a) = finish(s, "sandbox", "c1", true, now);
    assert!(a.is_empty());
}

#[test]
fn a_new_commit_retries_a_failed_environment_at_once() {
    let (s, _, now) = start("c1");
    let (s, a) = finish(s, "dev", "c1", false, now);
    assert!(a.is_empty());
    let (_, a) = step(
        s,
        Event::Commit {
            commit: "c2".into(),
            envs: specs(),
        },
        now,
    );
    assert_eq!(a, vec![apply("dev", "c2")]);
}

#[test]
fn drift_checks_run_on_each_environments_interval_in_its_mode() {
    let mut envs = specs();
    envs[1].drift = DriftPolicy {
        interval: Duration::from_secs(60),
        mode: DriftMode::Report,
    };
    let now = Instant::now();
    let (mut s, _) = step(
        State::new(true, backoff()),
        Event::Commit {
            commit: "c1".into(),
            envs,
        },
        now,
    );
    for env in ENVS {
        (s, _) = finish(s, env, "c1", true, now);
    }
    let (s, a) = step(s, Event::Tick, now + Duration::from_secs(59));
    assert!(a.is_empty());
    let (s, a) = step(s, Event::Tick, now + Duration::from_secs(60));
    let report_staging = Action::Converge {
        env: "staging".into(),
        commit: "c1".into(),
        mode: Mode::ReportOnly,
    };
    assert_eq!(a, vec![report_staging]);
    let (s, a) = step(s, Event::Tick, now + Duration::from_secs(300));
    assert_eq!(
        a,
        vec![apply("dev", "c1"), apply("test", "c1"), apply("prod", "c1")]
    );
    // A report-only check that finds drift changes nothing and keeps the gate.
    let mut r = report("c1", Mode::ReportOnly, true);
    r.drift = vec!["web/deployment".into()];
    let later = now + Duration::from_secs(300);
    let (s, _) = step(
        s,
        Event::Finished {
            env: "staging".into(),
            report: r,
            jitter: 0.5,
        },
        later,
    );
    assert_eq!(s.envs["staging"].last_good.as_deref(), Some("c1"));
    assert_eq!(
        s.envs["staging"].drift_due,
        Some(later + Duration::from_secs(60))
    );
}

#[test]
fn a_failed_heal_closes_the_gate_until_it_succeeds() {
    let (mut s, _, now) = start("c1");
    for env in ["dev", "staging"] {
        (s, _) = finish(s, env, "c1", true, now);
    }
    assert!(s.envs["staging"].good_at("c1"));
    let (s, _) = finish(s, "dev", "c1", false, now);
    assert!(!s.envs["dev"].good_at("c1"));
    let retry = s.envs["dev"].retry_at.unwrap();
    let (s, a) = step(s, Event::Tick, retry);
    assert_eq!(a, vec![apply("dev", "c1")]);
    let (s, _) = finish(s, "dev", "c1", true, retry);
    assert!(s.envs["dev"].good_at("c1"));
}

#[test]
fn unhealthy_is_not_converged() {
    let (s, _, now) = start("c1");
    let mut r = report("c1", Mode::Apply, true);
    r.health = EnvHealth::Degraded("web/deployment: ProgressDeadlineExceeded".into());
    let (s, a) = step(
        s,
        Event::Finished {
            env: "dev".into(),
            report: r,
            jitter: 0.0,
        },
        now,
    );
    assert!(a.is_empty());
    assert_eq!(s.envs["dev"].failures, 1);
    assert_eq!(waits_on(&s.gate("staging", now)), Some("dev"));
}

#[test]
fn suspend_and_resume_through_the_api_or_the_file() {
    let (s, _, now) = start("c1");
    let (s, _) = step(s, Event::Suspend { env: "dev".into() }, now);
    let (s, a) = finish(s, "dev", "c1", false, now);
    assert!(a.is_empty());
    assert_eq!(s.gate("dev", now), Gate::Suspended);
    let (s, a) = step(s, Event::Tick, now + Duration::from_secs(3600));
    assert!(a.is_empty(), "suspended environments are left alone");
    let (s, a) = step(s, Event::Resume { env: "dev".into() }, now);
    assert_eq!(a, vec![apply("dev", "c1")], "resume retries at once");
    let mut envs = specs();
    envs[0].suspend = true;
    let (s, _) = finish(s, "dev", "c1", true, now);
    let (s, _) = finish(s, "staging", "c1", true, now);
    let (s, _) = finish(s, "test", "c1", true, now);
    let (s, a) = step(
        s,
        Event::Commit {
            commit: "c2".into(),
            envs,
        },
        now,
    );
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(s.gate("dev", now), Gate::Suspended);
    assert_eq!(waits_on(&s.gate("staging", now)), Some("dev"));
}

#[test]
fn only_held_environments_run_and_gates_follow_what_peers_publish() {
    let now = Instant::now();
    let (s, a) = step(
        State::new(false, backoff()),
        Event::Commit {
            commit: "c1".into(),
            envs: specs(),
        },
        now,
    );
    assert!(a.is_empty());
    let (s, a) = step(
        s,
        Event::Lease {
            env: "staging".into(),
            held: true,
        },
        now,
    );
    assert!(a.is_empty(), "staging waits for dev, held elsewhere");
    assert_eq!(s.gate("dev", now), Gate::NotHeld);
    let (s, a) = step(
        s,
        Event::Peer {
            env: "dev".into(),
            last_good: Some("c1".into()),
            healthy: true,
            good_since: None,
        },
        now,
    );
    assert_eq!(a, vec![apply("staging", "c1")]);
    // Losing the lease mid-converge abandons it.
    let (s, a) = step(
        s,
        Event::Lease {
            env: "staging".into(),
            held: false,
        },
        now,
    );
    assert_eq!(
        a,
        vec![Action::Abandon {
            env: "staging".into()
        }]
    );
    assert!(!s.busy());
}

#[test]
fn taking_over_an_environment_trusts_the_published_commit_and_checks_drift() {
    let now = Instant::now();
    let (s, _) = step(
        State::new(false, backoff()),
        Event::Commit {
            commit: "c1".into(),
            envs: specs(),
        },
        now,
    );
    let (s, _) = step(
        s,
        Event::Peer {
            env: "dev".into(),
            last_good: Some("c1".into()),
            healthy: true,
            good_since: None,
        },
        now,
    );
    let (s, a) = step(
        s,
        Event::Lease {
            env: "dev".into(),
            held: true,
        },
        now,
    );
    assert_eq!(s.envs["dev"].last_good.as_deref(), Some("c1"));
    assert_eq!(a, vec![apply("dev", "c1")], "drift check (heal) at once");
}

#[test]
fn shutdown_starts_nothing_and_exits_when_idle() {
    let (s, a, now) = start("c1");
    assert_eq!(a, vec![apply("dev", "c1")]);
    let (s, a) = step(s, Event::Shutdown, now);
    assert!(a.is_empty(), "dev is still in flight");
    let (s, a) = step(s, Event::TriggerPoll, now);
    assert!(a.is_empty(), "no poll while stopping");
    let (_, a) = finish(s, "dev", "c1", true, now);
    assert_eq!(a, vec![Action::Exit], "staging is not started");
}

#[test]
fn dry_run_previews_the_whole_order() {
    let now = Instant::now();
    let mut st = State::new(true, backoff());
    st.dry_run = true;
    let (mut s, mut a) = step(
        st,
        Event::Commit {
            commit: "c1".into(),
            envs: specs(),
        },
        now,
    );
    for env in ENVS {
        let preview = Action::Converge {
            env: env.into(),
            commit: "c1".into(),
            mode: Mode::ReportOnly,
        };
        assert_eq!(a, vec![preview]);
        (s, a) = step(
            s,
            Event::Finished {
                env: env.into(),
                report: report("c1", Mode::ReportOnly, true),
                jitter: 0.0,
            },
            now,
        );
    }
    assert!(a.is_empty());
}

#[test]
fn webhook_or_api_trigger_asks_for_a_poll() {
    let (s, _, now) = start("c1");
    let (_, a) = step(s, Event::TriggerPoll, now);
    assert_eq!(a, vec![Action::Poll]);
}

fn mark(commit: Option<&str>) -> promotion::Mark {
    promotion::Mark {
        commit: commit.map(Into::into),
        by: "alice (cli on laptop)".into(),
        at: "2026-12-04T09:00:00Z".into(),
        reason: None,
    }
}

fn wall(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

/// The four environments, `staging` with `promotion`.
fn start_with(commit: &str, promotion: Promotion, at: &str) -> (State, Vec<Action>, Instant) {
    let now = Instant::now();
    let mut envs = specs();
    envs[1].promotion = promotion;
    let mut s = State::new(true, backoff());
    s.wall = wall(at);
    let (s, a) = step(
        s,
        Event::Commit {
            commit: commit.into(),
            envs,
        },
        now,
    );
    (s, a, now)
}

fn reason(g: &Gate) -> Option<Reason> {
    match g {
        Gate::Waiting { reason, .. } => Some(*reason),
        _ => None,
    }
}

#[test]
fn a_manual_environment_waits_for_the_approval_of_that_commit() {
    let manual = Promotion {
        mode: promotion::Mode::Manual,
        ..Promotion::default()
    };
    let (s, _, now) = start_with("c1", manual, "2026-12-02T10:00:00Z");
    let (s, a) = finish(s, "dev", "c1", true, now);
    assert!(a.is_empty(), "staging waits for its approval: {a:?}");
    assert_eq!(reason(&s.gate("staging", now)), Some(Reason::Approval));
    let mut c = Controls::default();
    c.approve(mark(Some("c0")));
    let (s, a) = step(
        s,
        Event::Controls {
            env: "staging".into(),
            controls: c.clone(),
        },
        now,
    );
    assert!(
        a.is_empty(),
        "an approval of another commit does not count: {a:?}"
    );
    c.approve(mark(Some("c1")));
    let (_, a) = step(
        s,
        Event::Controls {
            env: "staging".into(),
            controls: c,
        },
        now,
    );
    assert_eq!(a, vec![apply("staging", "c1")]);
}

#[test]
fn a_soak_counts_from_the_previous_environments_good_since_and_ends_on_a_tick() {
    let soak = Promotion {
        soak: Some(Duration::from_secs(1800)),
        ..Promotion::default()
    };
    let (s, _, now) = start_with("c1", soak, "2026-12-02T10:00:00Z");
    let mut r = report("c1", Mode::Apply, true);
    // dev became good at 09:50 (its record says so, from before a restart).
    r.good_since = Some("2026-12-02T09:50:00Z".into());
    let (mut s, a) = step(
        s,
        Event::Finished {
            env: "dev".into(),
            report: r,
            jitter: 1.0,
        },
        now,
    );
    assert!(a.is_empty(), "{a:?}");
    match s.gate("staging", now) {
        Gate::Waiting { reason, until, .. } => {
            assert_eq!(reason, Reason::Soak);
            assert_eq!(until.as_deref(), Some("2026-12-02T10:20:00Z"));
        }
        other => panic!("{other:?}"),
    }
    s.wall = wall("2026-12-02T10:20:00Z");
    let (_, a) = step(s, Event::Tick, now);
    assert_eq!(a, vec![apply("staging", "c1")]);
}

#[test]
fn a_pin_applies_its_commit_without_the_gate_and_stays_while_new_commits_arrive() {
    let (s, _, now) = start("c1");
    let (s, _) = finish(s, "dev", "c1", true, now);
    let (s, _) = finish(s, "staging", "c1", true, now);
    let (s, _) = finish(s, "test", "c1", true, now);
    let (s, _) = finish(s, "prod", "c1", true, now);
    // A commit comes with the controls read at its load.
    let commit = |c: &str, prod: &Controls| Event::Commit {
        commit: c.into(),
        envs: {
            let mut e = specs();
            e[3].controls = prod.clone();
            e
        },
    };
    let (mut s, _) = step(s, commit("c2", &Controls::default()), now);
    for env in ["dev", "staging", "test", "prod"] {
        s = finish(s, env, "c2", true, now).0;
    }
    let pinned = Controls {
        pin: Some(mark(Some("c1"))),
        ..Controls::default()
    };
    let control = |c: &Controls| Event::Controls {
        env: "prod".into(),
        controls: c.clone(),
    };
    let (s, a) = step(s, control(&pinned), now);
    assert_eq!(a, vec![apply("prod", "c1")]);
    let (s, a) = finish(s, "prod", "c1", true, now);
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(s.gate("prod", now), Gate::Converged);
    // c3 arrives: prod stays at its pin, the others move.
    let (mut s, a) = step(s, commit("c3", &pinned), now);
    assert_eq!(a, vec![apply("dev", "c3")]);
    for env in ["dev", "staging", "test"] {
        s = finish(s, env, "c3", true, now).0;
    }
    assert!(s.envs.values().all(|e| e.running.is_none()));
    assert_eq!(s.envs["prod"].last_good.as_deref(), Some("c1"));
    // A hold keeps even a pin from being applied again.
    let mut held = pinned.clone();
    held.hold = Some(mark(None));
    let (mut s, _) = step(s, control(&held), now);
    s.envs.get_mut("prod").unwrap().last_good = Some("c2".into());
    let (s, a) = step(s, Event::Tick, now);
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(reason(&s.gate("prod", now)), Some(Reason::Hold));
    // The release (no hold, no pin) lets c3 in.
    let (s, a) = step(s, control(&Controls::default()), now);
    assert_eq!(a, vec![apply("prod", "c3")]);
    assert!(matches!(s.gate("prod", now), Gate::Running { .. }));
}

#[test]
fn a_deny_window_turns_heals_into_reports_and_holds_new_commits_until_it_ends() {
    let friday = Promotion {
        windows: vec![promotion::Window::parse(false, "Fri 12:00-24:00", "UTC").unwrap()],
        ..Promotion::default()
    };
    // Wednesday: staging applies c1.
    let (s, _, now) = start_with("c1", friday.clone(), "2026-12-02T10:00:00Z");
    let (s, _) = finish(s, "dev", "c1", true, now);
    let (mut s, _) = finish(s, "staging", "c1", true, now);
    // Friday afternoon: the drift check only reports.
    s.wall = wall("2026-12-04T13:00:00Z");
    let later = now + Duration::from_secs(301);
    let (s, a) = step(s, Event::Tick, later);
    let check = |mode| Action::Converge {
        env: "staging".into(),
        commit: "c1".into(),
        mode,
    };
    assert!(a.contains(&check(Mode::ReportOnly)), "{a:?}");
    // A failed report leaves it unhealthy; report mode does not rerun it
    // at once (only at its next drift check).
    let failed = Event::Finished {
        env: "staging".into(),
        report: report("c1", Mode::ReportOnly, false),
        jitter: 1.0,
    };
    let (s, a) = step(s, failed, later);
    assert!(
        !a.iter()
            .any(|x| matches!(x, Action::Converge { env, .. } if env == "staging")),
        "{a:?}"
    );
    // c2 arrives: dev takes it, staging waits for the window to end.
    let mut envs = specs();
    envs[1].promotion = friday;
    let (s, _) = step(
        s,
        Event::Commit {
            commit: "c2".into(),
            envs,
        },
        later,
    );
    let (mut s, a) = finish(s, "dev", "c2", true, later);
    assert!(a.is_empty(), "{a:?}");
    match s.gate("staging", later) {
        Gate::Waiting { reason, until, .. } => {
            assert_eq!(reason, Reason::Window);
            assert_eq!(until.as_deref(), Some("2026-12-05T00:00:00Z"));
        }
        other => panic!("{other:?}"),
    }
    // The window ends: c2 goes.
    s.wall = wall("2026-12-05T00:00:00Z");
    let (_, a) = step(s, Event::Tick, later);
    assert!(a.contains(&apply("staging", "c2")), "{a:?}");
}
