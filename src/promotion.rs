//! Promotion controls: *when* a commit may move on to an environment, on
//! top of the same-commit gate (every environment it is `after` converged
//! and healthy at the commit, [`crate::state::gate`]).
//!
//! - `spec.promotion` in the environment file ([`Promotion`]): `mode:
//!   manual` (the commit needs an approval), `soak` (the environments
//!   before it must have been good at the commit that long), `windows`
//!   (allow and deny windows in a time zone), `heal` (whether drift healing
//!   follows the windows).
//! - What operators decide at run time ([`Controls`], kept beside the
//!   environment's record by [`crate::state::control`]): approvals (one
//!   commit each), a hold (a change freeze), a pin (a rollback).
//!
//! Everything here is pure: the clock is a parameter ([`Clock`] gives the
//! one the commands use), so every rule is a unit test.

use std::time::Duration;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// `spec.promotion` of an environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Promotion {
    pub mode: Mode,
    /// The environments before this one must have been converged and
    /// healthy at the commit for this long before it starts.
    pub soak: Option<Duration>,
    pub windows: Vec<Window>,
    pub heal: Heal,
}

impl Promotion {
    /// Nothing beyond the same-commit gate.
    pub fn is_default(&self) -> bool {
        self.mode == Mode::Auto && self.soak.is_none() && self.windows.is_empty()
    }
}

/// `promotion.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A commit moves on as soon as the gate opens.
    #[default]
    Auto,
    /// A commit waits until someone approves it (`tidegate approve`).
    Manual,
}

/// `promotion.heal`: whether drift healing waits for the windows too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Heal {
    /// Outside the windows drift is found and reported, not healed.
    #[default]
    Windows,
    /// Drift is healed at any time.
    Always,
}

/// An allow or deny window: days of the week and a time range in a zone.
#[derive(Clone, Debug)]
pub struct Window {
    pub allow: bool,
    /// Monday first.
    pub days: [bool; 7],
    /// Minutes after midnight; `to` may be 1440 (`24:00`), and smaller than
    /// `from` for a range that runs past midnight (into the next day).
    pub from: u16,
    pub to: u16,
    pub zone: TimeZone,
    /// As written (`Fri 12:00-24:00 Europe/Berlin`), for messages.
    pub text: String,
}

impl PartialEq for Window {
    fn eq(&self, o: &Self) -> bool {
        (self.allow, self.days, self.from, self.to, &self.text)
            == (o.allow, o.days, o.from, o.to, &o.text)
    }
}

impl Eq for Window {}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const LONG_DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

fn day(s: &str) -> Option<usize> {
    let l = s.to_ascii_lowercase();
    DAYS.iter()
        .position(|d| *d == l)
        .or_else(|| LONG_DAYS.iter().position(|d| *d == l))
}

fn days(s: &str) -> Result<[bool; 7], String> {
    let mut out = [false; 7];
    if matches!(s, "*" | "daily" | "Daily" | "every-day") {
        return Ok([true; 7]);
    }
    for part in s.split(',') {
        let unknown = |d: &str| {
            format!("`{d}` is not a day of the week (write Mon, Tue, Wed, Thu, Fri, Sat, Sun, a range such as Mon-Fri, or `*` for every day)")
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let a = day(a).ok_or_else(|| unknown(a))?;
                let b = day(b).ok_or_else(|| unknown(b))?;
                let mut d = a;
                loop {
                    out[d] = true;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => out[day(part).ok_or_else(|| unknown(part))?] = true,
        }
    }
    Ok(out)
}

fn clock_time(s: &str, end: bool) -> Result<u16, String> {
    let bad = || format!("`{s}` is not a time of day (write HH:MM, 00:00 to 24:00)");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && (m != 0 || !end)) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl Window {
    /// Reads `<days> <HH:MM>-<HH:MM>` (`Fri 12:00-24:00`, `Mon-Fri
    /// 08:00-18:00`, `Sat,Sun 00:00-24:00`, `* 22:00-06:00`) in the time
    /// zone `zone` (an IANA name such as `Europe/Berlin`, or `UTC`).
    pub fn parse(allow: bool, text: &str, zone: &str) -> Result<Window, String> {
        let mut parts = text.split_whitespace();
        let (Some(d), Some(range), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!(
                "`{text}` is not a window: write `<days> <from>-<to>`, for example `Mon-Fri 08:00-18:00` or `Fri 12:00-24:00`"
            ));
        };
        let days = days(d)?;
        let (a, b) = range.split_once('-').ok_or_else(|| {
            format!("`{range}` is not a time range: write `<from>-<to>`, for example `08:00-18:00`")
        })?;
        let (from, to) = (clock_time(a, false)?, clock_time(b, true)?);
        if from == to {
            return Err(format!(
                "`{range}` is an empty time range: for a whole day write `00:00-24:00`"
            ));
        }
        let tz = TimeZone::get(zone).map_err(|_| {
            format!("`{zone}` is not a time zone: write an IANA name such as `UTC`, `Europe/Berlin` or `America/New_York`")
        })?;
        Ok(Window {
            allow,
            days,
            from,
            to,
            zone: tz,
            text: format!("{text} {zone}"),
        })
    }

    /// Whether `t` falls inside the window.
    pub fn contains(&self, t: Timestamp) -> bool {
        let z = t.to_zoned(self.zone.clone());
        let wd = z.weekday().to_monday_zero_offset() as usize;
        let m = u16::from(z.hour() as u8) * 60 + u16::from(z.minute() as u8);
        if self.from < self.to {
            self.days[wd] && (self.from..self.to).contains(&m)
        } else {
            (self.days[wd] && m >= self.from) || (self.days[(wd + 6) % 7] && m < self.to)
        }
    }

    /// The instants the window opens and closes on the days from `start`
    /// (a local date) for `span` days.
    fn edges(&self, start: Date, span: i64) -> Vec<Timestamp> {
        let at = |d: Date, minutes: u16| -> Option<Timestamp> {
            let (d, minutes) = if minutes == 1440 {
                (d.tomorrow().ok()?, 0)
            } else {
                (d, minutes)
            };
            let t = Time::new((minutes / 60) as i8, (minutes % 60) as i8, 0, 0).ok()?;
            let dt = DateTime::from_parts(d, t);
            let z = self.zone.to_ambiguous_zoned(dt).compatible().ok()?;
            Some(z.timestamp())
        };
        let mut out = Vec::new();
        for k in -1..=span {
            let Ok(d) = start.checked_add(jiff::Span::new().days(k)) else {
                continue;
            };
            if !self.days[d.weekday().to_monday_zero_offset() as usize] {
                continue;
            }
            let end_day = if self.from < self.to {
                Some(d)
            } else {
                d.tomorrow().ok()
            };
            out.extend(at(d, self.from));
            out.extend(end_day.and_then(|e| at(e, self.to)));
        }
        out
    }
}

/// Whether changes may run at `t`: inside no deny window, and inside an
/// allow window when there are any.
pub fn in_window(windows: &[Window], t: Timestamp) -> bool {
    if windows.iter().any(|w| !w.allow && w.contains(t)) {
        return false;
    }
    let mut allows = windows.iter().filter(|w| w.allow).peekable();
    allows.peek().is_none() || allows.any(|w| w.contains(t))
}

/// The first instant after `now` at which the windows let changes run, if
/// that is within the next eight days.
pub fn next_opening(windows: &[Window], now: Timestamp) -> Option<Timestamp> {
    let mut edges: Vec<Timestamp> = windows
        .iter()
        .flat_map(|w| w.edges(now.to_zoned(w.zone.clone()).date(), 8))
        .filter(|t| *t > now)
        .collect();
    edges.sort();
    edges.dedup();
    edges.into_iter().find(|t| in_window(windows, *t))
}

/// One operator decision: who, when, why, and for approvals and pins the
/// commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mark {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// `alice (cli on laptop-7)`, `system:serviceaccount:ops:deployer (http)`.
    pub by: String,
    /// RFC 3339, UTC.
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The approvals kept per environment (the newest; older ones are for
/// commits long gone).
pub const MAX_APPROVALS: usize = 50;

/// What operators decided for one environment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Controls {
    /// Commits approved for a `mode: manual` environment, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<Mark>,
    /// A change freeze (`tidegate hold`) until `tidegate release`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Mark>,
    /// A rollback (`tidegate rollback --to`): the environment stays at this
    /// commit until `tidegate release`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<Mark>,
}

impl Controls {
    /// The approval of `commit`, if any.
    pub fn approval(&self, commit: &str) -> Option<&Mark> {
        self.approvals
            .iter()
            .rev()
            .find(|a| a.commit.as_deref() == Some(commit))
    }

    /// Adds an approval, keeping the newest [`MAX_APPROVALS`].
    pub fn approve(&mut self, mark: Mark) {
        self.approvals.retain(|a| a.commit != mark.commit);
        self.approvals.push(mark);
        let extra = self.approvals.len().saturating_sub(MAX_APPROVALS);
        self.approvals.drain(..extra);
    }

    /// The pinned commit (a rollback), if any.
    pub fn pinned(&self) -> Option<&str> {
        self.pin.as_ref().and_then(|p| p.commit.as_deref())
    }
}

/// An operator's decision (`tidegate approve|hold|release|rollback`, or
/// the same through the reconciler's HTTP API).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Approve one commit (full id) for a `mode: manual` environment.
    Approve { commit: String },
    /// Freeze the environment until released.
    Hold,
    /// End a hold and a rollback pin.
    Release,
    /// Pin the environment to an earlier commit (full id) it had applied.
    Rollback { commit: String },
}

impl Change {
    /// `approve`, `hold`, `release`, `rollback` (the audit event and the
    /// HTTP route).
    pub fn label(&self) -> &'static str {
        match self {
            Change::Approve { .. } => "approve",
            Change::Hold => "hold",
            Change::Release => "release",
            Change::Rollback { .. } => "rollback",
        }
    }

    /// The commit it names, if any.
    pub fn commit(&self) -> Option<&str> {
        match self {
            Change::Approve { commit } | Change::Rollback { commit } => Some(commit),
            Change::Hold | Change::Release => None,
        }
    }

    /// Makes the change to `c`, marked `by` at `at` for `reason`; refuses
    /// a release when nothing is held or pinned, and a second hold.
    pub fn apply(
        &self,
        c: &mut Controls,
        env: &str,
        by: &str,
        at: &str,
        reason: Option<&str>,
    ) -> Result<(), String> {
        let mark = |commit: Option<&str>| Mark {
            commit: commit.map(Into::into),
            by: by.into(),
            at: at.into(),
            reason: reason.map(Into::into),
        };
        match self {
            Change::Approve { commit } => c.approve(mark(Some(commit))),
            Change::Hold => {
                if let Some(h) = &c.hold {
                    return Err(format!(
                        "{env} is already held (by {} at {}); `tidegate release {env}` ends that hold",
                        h.by, h.at
                    ));
                }
                c.hold = Some(mark(None));
            }
            Change::Release => {
                if c.hold.is_none() && c.pin.is_none() {
                    return Err(format!(
                        "{env} is neither held nor pinned: nothing to release"
                    ));
                }
                c.hold = None;
                c.pin = None;
            }
            Change::Rollback { commit } => c.pin = Some(mark(Some(commit))),
        }
        Ok(())
    }
}

/// Why an environment waits (the `reason` label of
/// `tidegate_environment_waiting`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// An environment before it is not converged and healthy at the commit.
    Previous,
    /// `tidegate hold`.
    Hold,
    /// `mode: manual` and the commit is not approved.
    Approval,
    /// The environments before it have not been good long enough.
    Soak,
    /// Outside an allow window or inside a deny window.
    Window,
    /// Pinned to another commit by a rollback (`tidegate apply` of any
    /// other commit waits; the reconciler applies the pin).
    Pinned,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::Previous,
        Reason::Hold,
        Reason::Approval,
        Reason::Soak,
        Reason::Window,
        Reason::Pinned,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::Previous => "previous",
            Reason::Hold => "hold",
            Reason::Approval => "approval",
            Reason::Soak => "soak",
            Reason::Window => "window",
            Reason::Pinned => "pinned",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// What an environment waits for, and until when when that is known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Wait {
    pub reason: Reason,
    /// For people: what it waits for and what ends the wait.
    pub detail: String,
    /// RFC 3339, when the wait ends by itself (soak, window).
    pub until: Option<String>,
}

impl Wait {
    fn new(reason: Reason, detail: impl Into<String>, until: Option<Timestamp>) -> Self {
        Wait {
            reason,
            detail: detail.into(),
            until: until.map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string()),
        }
    }
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)?;
        if let Some(u) = &self.until {
            write!(f, " (until {u})")?;
        }
        Ok(())
    }
}

/// What the verdicts read.
pub struct Inputs<'a> {
    pub env: &'a str,
    pub promotion: &'a Promotion,
    pub controls: &'a Controls,
    /// When every environment before this one had been good at the commit
    /// (the latest of their times); `None` when one of them is not good
    /// yet, or there are none.
    pub good_since: Option<Timestamp>,
    pub now: Timestamp,
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// Why `commit` (newer than what the environment has) may not start now;
/// `None` when it may. The same-commit gate is checked elsewhere; a pinned
/// environment starts only its pin (see [`pinned_start`]).
pub fn start(i: &Inputs<'_>, commit: &str) -> Option<Wait> {
    if let Some(w) = held(i) {
        return Some(w);
    }
    let p = i.promotion;
    if p.mode == Mode::Manual && i.controls.approval(commit).is_none() {
        return Some(Wait::new(
            Reason::Approval,
            format!(
                "commit {} needs an approval: `tidegate approve {} --revision {}`",
                short(commit),
                i.env,
                short(commit)
            ),
            None,
        ));
    }
    if let (Some(soak), Some(since)) = (p.soak, i.good_since) {
        let soak_j = jiff::SignedDuration::try_from(soak).unwrap_or(jiff::SignedDuration::MAX);
        let ends = since.checked_add(soak_j).unwrap_or(Timestamp::MAX);
        if i.now < ends {
            return Some(Wait::new(
                Reason::Soak,
                format!(
                    "the environments before it have been good at {} since {}; soak is {}",
                    short(commit),
                    since.round(jiff::Unit::Second).unwrap_or(since),
                    humantime::format_duration(soak)
                ),
                Some(ends),
            ));
        }
    }
    window(i)
}

/// Why `commit` may not be applied to the environment by hand (`tidegate
/// apply`): a pin to another commit, else what [`start`] says.
pub fn manual_start(i: &Inputs<'_>, commit: &str) -> Option<Wait> {
    match i.controls.pinned() {
        Some(pin) if pin == commit => pinned_start(i),
        Some(pin) => {
            let p = i.controls.pin.as_ref().expect("pinned");
            Some(Wait::new(
                Reason::Pinned,
                format!(
                    "pinned to {} by a rollback ({} at {}); apply --revision {} keeps it there, `tidegate release {}` lets newer commits in",
                    short(pin),
                    p.by,
                    p.at,
                    short(pin),
                    i.env
                ),
                None,
            ))
        }
        None => start(i, commit),
    }
}

/// A description of the promotion rules, for the plan's gate line.
pub fn describe(p: &Promotion) -> Vec<String> {
    let mut out = Vec::new();
    if p.mode == Mode::Manual {
        out.push("manual approval of each commit".to_string());
    }
    if let Some(s) = p.soak {
        out.push(format!(
            "soak {} after the environments before it",
            humantime::format_duration(s)
        ));
    }
    for w in &p.windows {
        let kind = if w.allow { "allow" } else { "deny" };
        out.push(format!("{kind} {}", w.text));
    }
    if !p.windows.is_empty() && p.heal == Heal::Always {
        out.push("drift healed at any time".to_string());
    }
    out
}

/// Why a drift heal may not run now (`None`: it may): a hold, and the
/// windows unless `heal: always`.
pub fn heal(i: &Inputs<'_>) -> Option<Wait> {
    held(i).or_else(|| match i.promotion.heal {
        Heal::Windows => window(i),
        Heal::Always => None,
    })
}

/// Why a pinned environment may not (re)apply its pin now: a hold only (a
/// rollback is an operator's decision; it needs no approval, soak or
/// window).
pub fn pinned_start(i: &Inputs<'_>) -> Option<Wait> {
    held(i)
}

fn held(i: &Inputs<'_>) -> Option<Wait> {
    let h = i.controls.hold.as_ref()?;
    let why = h
        .reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    Some(Wait::new(
        Reason::Hold,
        format!(
            "held by {} at {}{why}; `tidegate release {}` ends it",
            h.by, h.at, i.env
        ),
        None,
    ))
}

fn window(i: &Inputs<'_>) -> Option<Wait> {
    let windows = &i.promotion.windows;
    if in_window(windows, i.now) {
        return None;
    }
    let why = match windows.iter().find(|w| !w.allow && w.contains(i.now)) {
        Some(w) => format!("inside deny window `{}`", w.text),
        None => {
            let allows: Vec<&str> = windows
                .iter()
                .filter(|w| w.allow)
                .map(|w| w.text.as_str())
                .collect();
            format!("outside the allow windows `{}`", allows.join("`, `"))
        }
    };
    Some(Wait::new(Reason::Window, why, next_opening(windows, i.now)))
}

/// Wall-clock time for the promotion rules. `TIDEGATE_CLOCK_FILE` names a
/// file holding an RFC 3339 time that is read as "now" each time (for
/// tests of windows and soaks without waiting); otherwise the system
/// clock.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    file: Option<std::path::PathBuf>,
}

impl Clock {
    /// The clock `TIDEGATE_CLOCK_FILE` asks for, else the system clock.
    pub fn from_env() -> Clock {
        Clock {
            file: std::env::var_os("TIDEGATE_CLOCK_FILE").map(Into::into),
        }
    }

    pub fn now(&self) -> Timestamp {
        let Some(path) = &self.file else {
            return Timestamp::now();
        };
        match std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse::<Timestamp>().ok())
        {
            Some(t) => t,
            None => {
                tracing::warn!(path = %path.display(), "TIDEGATE_CLOCK_FILE does not hold an RFC 3339 time; using the system clock");
                Timestamp::now()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn w(allow: bool, text: &str, zone: &str) -> Window {
        Window::parse(allow, text, zone).unwrap()
    }

    #[test]
    fn windows_parse_days_ranges_and_zones_and_refuse_the_rest() {
        let x = w(false, "Mon-Fri 08:00-18:00", "UTC");
        assert_eq!(x.days, [true, true, true, true, true, false, false]);
        assert_eq!((x.from, x.to), (480, 1080));
        assert_eq!(
            w(true, "Fri-Mon 00:00-24:00", "UTC")
                .days
                .iter()
                .filter(|d| **d)
                .count(),
            4
        );
        assert_eq!(
            w(true, "sat,Sunday 10:00-12:00", "UTC").days[5..],
            [true, true]
        );
        assert_eq!(w(true, "* 22:00-06:00", "Europe/Berlin").days, [true; 7]);
        for (text, zone, says) in [
            ("Fri", "UTC", "is not a window"),
            ("Fri 12:00", "UTC", "is not a time range"),
            ("Fry 12:00-13:00", "UTC", "`Fry` is not a day"),
            ("Fri 12-13", "UTC", "`12` is not a time"),
            ("Fri 12:00-25:00", "UTC", "`25:00` is not a time"),
            ("Fri 24:00-02:00", "UTC", "`24:00` is not a time"),
            ("Fri 12:00-12:00", "UTC", "empty time range"),
            (
                "Fri 12:00-13:00",
                "Mars/Olympus",
                "`Mars/Olympus` is not a time zone",
            ),
        ] {
            let e = Window::parse(false, text, zone).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn a_window_contains_its_range_in_its_zone_and_ranges_run_past_midnight() {
        // 2026-12-04 is a Friday.
        let fri = w(false, "Fri 12:00-24:00", "Europe/Berlin");
        assert!(!fri.contains(t("2026-12-04T10:59:00Z"))); // 11:59 in Berlin
        assert!(fri.contains(t("2026-12-04T11:00:00Z"))); // 12:00 in Berlin
        assert!(fri.contains(t("2026-12-04T22:59:00Z")));
        assert!(!fri.contains(t("2026-12-04T23:00:00Z"))); // Saturday 00:00
        let night = w(false, "Fri 22:00-06:00", "UTC");
        assert!(night.contains(t("2026-12-04T23:00:00Z")));
        assert!(night.contains(t("2026-12-05T05:59:00Z"))); // Saturday morning
        assert!(!night.contains(t("2026-12-05T06:00:00Z")));
        assert!(!night.contains(t("2026-12-04T05:00:00Z"))); // Friday morning: Thursday's night is not in it
    }

    #[test]
    fn allow_and_deny_windows_combine_and_the_next_opening_is_found() {
        let deny = vec![w(false, "Fri 12:00-24:00", "UTC")];
        assert!(in_window(&deny, t("2026-12-04T11:00:00Z")));
        assert!(!in_window(&deny, t("2026-12-04T13:00:00Z")));
        assert_eq!(
            next_opening(&deny, t("2026-12-04T13:00:00Z")),
            Some(t("2026-12-05T00:00:00Z"))
        );
        let allow = vec![
            w(true, "Mon-Thu 09:00-17:00", "UTC"),
            w(false, "* 12:00-13:00", "UTC"),
        ];
        // Friday: no allow window until Monday 09:00.
        assert!(!in_window(&allow, t("2026-12-04T10:00:00Z")));
        assert_eq!(
            next_opening(&allow, t("2026-12-04T10:00:00Z")),
            Some(t("2026-12-07T09:00:00Z"))
        );
        // Monday lunch: denied until 13:00.
        assert!(!in_window(&allow, t("2026-12-07T12:30:00Z")));
        assert_eq!(
            next_opening(&allow, t("2026-12-07T12:30:00Z")),
            Some(t("2026-12-07T13:00:00Z"))
        );
        assert!(in_window(&[], t("2026-12-04T12:00:00Z")));
    }

    #[test]
    fn a_window_follows_its_zone_across_a_daylight_saving_change() {
        // Europe/Berlin leaves summer time on 2026-10-25 (03:00 CEST -> 02:00 CET).
        let deny = vec![w(false, "Sun 01:00-04:00", "Europe/Berlin")];
        assert!(in_window(&deny, t("2026-10-24T22:30:00Z"))); // 00:30 CEST
        assert!(!in_window(&deny, t("2026-10-24T23:30:00Z"))); // 01:30 CEST
        assert!(!in_window(&deny, t("2026-10-25T02:30:00Z"))); // 03:30 CET
        assert!(in_window(&deny, t("2026-10-25T03:00:00Z"))); // 04:00 CET
        assert_eq!(
            next_opening(&deny, t("2026-10-25T00:00:00Z")),
            Some(t("2026-10-25T03:00:00Z")) // 04:00 CET
        );
    }

    fn mark(commit: Option<&str>) -> Mark {
        Mark {
            commit: commit.map(Into::into),
            by: "alice (cli on laptop)".into(),
            at: "2026-12-04T09:00:00Z".into(),
            reason: Some("CAB-42".into()),
        }
    }

    #[test]
    fn manual_waits_for_an_approval_of_that_commit_only() {
        let p = Promotion {
            mode: Mode::Manual,
            ..Promotion::default()
        };
        let mut c = Controls::default();
        let i = |c: &Controls| {
            start(
                &Inputs {
                    env: "prod",
                    promotion: &p,
                    controls: c,
                    good_since: None,
                    now: t("2026-12-04T09:00:00Z"),
                },
                "aaaa1111",
            )
        };
        let waits = i(&c).unwrap();
        assert_eq!(waits.reason, Reason::Approval);
        assert!(
            waits
                .detail
                .contains("tidegate approve prod --revision aaaa1111"),
            "{waits}"
        );
        c.approve(mark(Some("bbbb2222")));
        assert_eq!(i(&c).unwrap().reason, Reason::Approval);
        c.approve(mark(Some("aaaa1111")));
        assert_eq!(i(&c), None);
        for n in 0..60 {
            c.approve(mark(Some(&format!("c{n}"))));
        }
        assert_eq!(c.approvals.len(), MAX_APPROVALS);
        assert!(c.approval("aaaa1111").is_none());
    }

    #[test]
    fn soak_counts_from_when_the_previous_environments_became_good() {
        let p = Promotion {
            soak: Some(Duration::from_secs(1800)),
            ..Promotion::default()
        };
        let c = Controls::default();
        let at = |now: &str, since: Option<&str>| {
            start(
                &Inputs {
                    env: "staging",
                    promotion: &p,
                    controls: &c,
                    good_since: since.map(t),
                    now: t(now),
                },
                "aaaa1111",
            )
        };
        let w = at("2026-12-04T09:10:00Z", Some("2026-12-04T09:00:00Z")).unwrap();
        assert_eq!(w.reason, Reason::Soak);
        assert_eq!(w.until.as_deref(), Some("2026-12-04T09:30:00Z"));
        assert_eq!(
            at("2026-12-04T09:30:00Z", Some("2026-12-04T09:00:00Z")),
            None
        );
        // Not good yet: the same-commit gate holds it, not the soak.
        assert_eq!(at("2026-12-04T09:10:00Z", None), None);
    }

    #[test]
    fn a_hold_comes_first_and_heals_follow_the_windows_unless_told_otherwise() {
        let mut p = Promotion {
            mode: Mode::Manual,
            windows: vec![w(false, "Fri 12:00-24:00", "UTC")],
            ..Promotion::default()
        };
        let mut c = Controls {
            hold: Some(mark(None)),
            ..Controls::default()
        };
        fn i<'a>(p: &'a Promotion, c: &'a Controls) -> Inputs<'a> {
            Inputs {
                env: "prod",
                promotion: p,
                controls: c,
                good_since: None,
                now: "2026-12-04T13:00:00Z".parse().unwrap(),
            }
        }
        assert_eq!(start(&i(&p, &c), "aaaa").unwrap().reason, Reason::Hold);
        assert_eq!(heal(&i(&p, &c)).unwrap().reason, Reason::Hold);
        assert_eq!(pinned_start(&i(&p, &c)).unwrap().reason, Reason::Hold);
        assert!(heal(&i(&p, &c)).unwrap().detail.contains("CAB-42"));
        c.hold = None;
        c.approve(mark(Some("aaaa")));
        let w = start(&i(&p, &c), "aaaa").unwrap();
        assert_eq!(w.reason, Reason::Window);
        assert_eq!(w.until.as_deref(), Some("2026-12-05T00:00:00Z"));
        assert_eq!(heal(&i(&p, &c)).unwrap().reason, Reason::Window);
        assert_eq!(pinned_start(&i(&p, &c)), None);
        p.heal = Heal::Always;
        assert_eq!(heal(&i(&p, &c)), None);
    }

    #[test]
    fn the_clock_file_is_read_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("now");
        std::fs::write(&path, "2026-12-04T13:00:00Z\n").unwrap();
        let clock = Clock {
            file: Some(path.clone()),
        };
        assert_eq!(clock.now(), t("2026-12-04T13:00:00Z"));
        std::fs::write(&path, "2026-12-05T00:00:01Z").unwrap();
        assert_eq!(clock.now(), t("2026-12-05T00:00:01Z"));
    }
}
