//! The poll loop as a state machine: a pure `step` from (state, what the
//! remote said) to (event, next state), so every transition — first commit,
//! fast-forward, force-push followed or refused, unreachable remote and
//! recovery — is testable without a network. The I/O that produces an
//! [`Observation`] lives in [`super::Source::poll`].

use std::time::Duration;

/// Where the poll loop stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// No snapshot yet: nothing to serve.
    Initial,
    /// The last poll succeeded; `last_good` is the commit being served.
    Ready { last_good: String },
    /// The remote failed `attempt` times in a row; `last_good` (if any) is
    /// still served meanwhile.
    Backoff {
        attempt: u32,
        last_good: Option<String>,
    },
}

impl State {
    /// The commit being served, if any.
    pub fn last_good(&self) -> Option<&str> {
        match self {
            State::Initial => None,
            State::Ready { last_good } => Some(last_good),
            State::Backoff { last_good, .. } => last_good.as_deref(),
        }
    }
}

/// What one round-trip to the remote found, relative to `last_good`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The tracked ref still points at `last_good`.
    Same,
    /// The tracked ref points at another commit; `fast_forward` is true when
    /// it descends from `last_good` (or there was no `last_good`).
    Moved { to: String, fast_forward: bool },
    /// The remote could not be reached or listed.
    Unreachable { error: String },
}

/// What a poll reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Nothing moved; no fetch happened and no tree was read.
    Unchanged,
    /// A new commit is being served. `fast_forward` is false after a
    /// force-push that the configuration follows.
    NewCommit {
        from: Option<String>,
        to: String,
        fast_forward: bool,
    },
    /// The ref was force-pushed to a commit that does not descend from the
    /// one served, and the configuration refuses to follow: `from` stays.
    ForcePushRefused { from: String, to: String },
    /// The remote failed; the last good snapshot is still served and the
    /// next poll should wait `retry_in`.
    Unreachable {
        error: String,
        attempt: u32,
        retry_in: Duration,
    },
}

/// What to do when the tracked ref is force-pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ForcePush {
    /// Serve the new commit anyway (reported as a non-fast-forward).
    #[default]
    Follow,
    /// Keep serving the last good commit and report the refusal every poll.
    Refuse,
}

/// Exponential backoff: `base * 2^(attempt-1)`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(5),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// Delay before retrying after the `attempt`-th consecutive failure
    /// (1-based; 0 means no failure and no delay).
    pub fn delay(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(attempt - 1).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// One transition of the poll loop.
pub fn step(
    state: State,
    obs: Observation,
    force_push: ForcePush,
    backoff: &Backoff,
) -> (Event, State) {
    let last_good = state.last_good().map(str::to_owned);
    match obs {
        Observation::Same => (Event::Unchanged, settled(last_good)),
        Observation::Moved { to, fast_forward } => moved(last_good, to, fast_forward, force_push),
        Observation::Unreachable { error } => {
            let attempt = match state {
                State::Backoff { attempt, .. } => attempt.saturating_add(1),
                _ => 1,
            };
            let retry_in = backoff.delay(attempt);
            let event = Event::Unreachable {
                error,
                attempt,
                retry_in,
            };
            (event, State::Backoff { attempt, last_good })
        }
    }
}

fn settled(last_good: Option<String>) -> State {
    match last_good {
        Some(last_good) => State::Ready { last_good },
        None => State::Initial,
    }
}

fn moved(
    last_good: Option<String>,
    to: String,
    fast_forward: bool,
    force_push: ForcePush,
) -> (Event, State) {
    let fast_forward = fast_forward || last_good.is_none();
    match (last_good, fast_forward, force_push) {
        (Some(from), false, ForcePush::Refuse) => {
            let event = Event::ForcePushRefused {
                from: from.clone(),
                to,
            };
            (event, State::Ready { last_good: from })
        }
        (from, fast_forward, _) => {
            let next = State::Ready {
                last_good: to.clone(),
            };
            (
                Event::NewCommit {
                    from,
                    to,
                    fast_forward,
                },
                next,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b() -> Backoff {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
        }
    }

    fn ready(c: &str) -> State {
        State::Ready {
            last_good: c.into(),
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = b();
        let got: Vec<u64> = (0..7).map(|a| b.delay(a).as_secs()).collect();
        assert_eq!(got, vec![0, 1, 2, 4, 8, 10, 10]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn first_commit_is_a_fast_forward() {
        let obs = Observation::Moved {
            to: "a".into(),
            fast_forward: false,
        };
        let (ev, st) = step(State::Initial, obs, ForcePush::Refuse, &b());
        assert_eq!(
            ev,
            Event::NewCommit {
                from: None,
                to: "a".into(),
                fast_forward: true
            }
        );
        assert_eq!(st, ready("a"));
    }

    #[test]
    fn same_keeps_ready() {
        let (ev, st) = step(ready("a"), Observation::Same, ForcePush::Follow, &b());
        assert_eq!(ev, Event::Unchanged);
        assert_eq!(st, ready("a"));
    }

    #[test]
    fn fast_forward_moves() {
        let obs = Observation::Moved {
            to: "b".into(),
            fast_forward: true,
        };
        let (ev, st) = step(ready("a"), obs, ForcePush::Refuse, &b());
        assert_eq!(
            ev,
            Event::NewCommit {
                from: Some("a".into()),
                to: "b".into(),
                fast_forward: true
            }
        );
        assert_eq!(st, ready("b"));
    }

    #[test]
    fn force_push_followed_or_refused() {
        let obs = Observation::Moved {
            to: "x".into(),
            fast_forward: false,
        };
        let (ev, st) = step(ready("a"), obs.clone(), ForcePush::Follow, &b());
        assert_eq!(
            ev,
            Event::NewCommit {
                from: Some("a".into()),
                to: "x".into(),
                fast_forward: false
            }
        );
        assert_eq!(st, ready("x"));
        let (ev, st) = step(ready("a"), obs, ForcePush::Refuse, &b());
        assert_eq!(
            ev,
            Event::ForcePushRefused {
                from: "a".into(),
                to: "x".into()
            }
        );
        assert_eq!(st, ready("a"));
    }

    #[test]
    fn unreachable_backs_off_keeping_last_good_then_recovers() {
        let down = || Observation::Unreachable {
            error: "refused".into(),
        };
        let (ev, st) = step(ready("a"), down(), ForcePush::Follow, &b());
        assert!(
            matches!(ev, Event::Unreachable { attempt: 1, retry_in, .. } if retry_in == Duration::from_secs(1))
        );
        assert_eq!(
            st,
            State::Backoff {
                attempt: 1,
                last_good: Some("a".into())
            }
        );
        let (ev, st) = step(st, down(), ForcePush::Follow, &b());
        assert!(
            matches!(ev, Event::Unreachable { attempt: 2, retry_in, .. } if retry_in == Duration::from_secs(2))
        );
        assert_eq!(st.last_good(), Some("a"));
        let (ev, st) = step(st, Observation::Same, ForcePush::Follow, &b());
        assert_eq!(ev, Event::Unchanged);
        assert_eq!(st, ready("a"));
    }

    #[test]
    fn unreachable_from_initial_has_nothing_to_serve() {
        let obs = Observation::Unreachable {
            error: "dns".into(),
        };
        let (_, st) = step(State::Initial, obs, ForcePush::Follow, &b());
        assert_eq!(
            st,
            State::Backoff {
                attempt: 1,
                last_good: None
            }
        );
        let (_, st) = step(st, Observation::Same, ForcePush::Follow, &b());
        assert_eq!(st, State::Initial);
    }

    #[test]
    fn recovery_with_a_new_commit() {
        let st = State::Backoff {
            attempt: 3,
            last_good: Some("a".into()),
        };
        let obs = Observation::Moved {
            to: "b".into(),
            fast_forward: true,
        };
        let (ev, st) = step(st, obs, ForcePush::Follow, &b());
        assert!(matches!(
            ev,
            Event::NewCommit {
                fast_forward: true,
                ..
            }
        ));
        assert_eq!(st, ready("b"));
    }
}
