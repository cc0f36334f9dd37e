//! Waivers: a decision, recorded in Git next to the resource, that one
//! check does not apply to it, with the reason reviewers read and an
//! optional expiry that forces the decision to be made again.

use std::fmt;
use std::str::FromStr;

use crate::value::{index_path, key_path, Origin, Spans, Value};

use super::config::{by_position, ConfigError, Locator};
use super::CheckId;

/// A calendar date (`YYYY-MM-DD`), enough for waiver expiries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: i32,
    month: u8,
    day: u8,
}

impl Date {
    /// The date, if it exists in the Gregorian calendar.
    pub fn new(year: i32, month: u8, day: u8) -> Option<Date> {
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
            2 => 28,
            _ => return None,
        };
        (1..=days)
            .contains(&day)
            .then_some(Date { year, month, day })
    }

    /// Today in UTC, from the system clock (the one impure entry point;
    /// tests pass fixed dates to [`super::evaluate`] instead).
    pub fn today_utc() -> Date {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Date::from_days_since_epoch(i64::try_from(secs / 86_400).unwrap_or(0))
    }

    /// The date `days` after 1970-01-01 (Howard Hinnant's civil_from_days).
    pub fn from_days_since_epoch(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }
}

impl FromStr for Date {
    type Err = ();

    fn from_str(s: &str) -> Result<Date, ()> {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| {
            b[r.clone()]
                .iter()
                .all(u8::is_ascii_digit)
                .then(|| s[r].parse::<u16>().ok())
                .flatten()
        };
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(());
        }
        match (digits(0..4), digits(5..7), digits(8..10)) {
            (Some(y), Some(m), Some(d)) => Date::new(i32::from(y), m as u8, d as u8).ok_or(()),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl serde::Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One waiver on one resource.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Waiver {
    pub check: CheckId,
    /// Why the check does not apply; never empty.
    pub reason: String,
    /// The last day the waiver holds; from the next day on it counts as
    /// absent.
    pub expires: Option<Date>,
    /// Where the waiver is written.
    pub origin: Origin,
}

const FIELDS: &[&str] = &["check", "reason", "expires"];

impl Waiver {
    /// True when the waiver still holds on `today` (the expiry day included).
    pub fn is_active(&self, today: Date) -> bool {
        self.expires.is_none_or(|e| today <= e)
    }

    /// Parses a resource's `waivers:` list. `path` is where the list sits
    /// in `spans` (`resources[2].waivers`). `null` is an empty list. Every
    /// problem is reported: unknown fields or check ids, a missing or empty
    /// reason, a malformed expiry, two waivers for one check.
    pub fn parse_all(waivers: &Value, spans: &Spans, path: &str) -> super::Result<Vec<Waiver>> {
        let at = Locator { spans, path };
        let items = match waivers {
            Value::Null => return Ok(Vec::new()),
            Value::List(items) => items,
            other => return Err(vec![at.wrong_type("", "a list of waivers", other)]),
        };
        let mut out: Vec<Waiver> = Vec::new();
        let mut errors = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = index_path(path, i);
            let at = Locator {
                spans,
                path: &item_path,
            };
            match parse_one(&at, item) {
                Ok(w) => match out.iter().find(|o| o.check == w.check) {
                    Some(first) => errors.push(ConfigError::DuplicateWaiver {
                        origin: w.origin,
                        check: w.check,
                        first: first.origin.clone(),
                    }),
                    None => out.push(w),
                },
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(by_position(errors))
        }
    }
}

fn parse_one(at: &Locator<'_>, item: &Value) -> Result<Waiver, Vec<ConfigError>> {
    let Value::Map(m) = item else {
        return Err(vec![at.wrong_type(
            "",
            "a map with check, reason and optional expires",
            item,
        )]);
    };
    let mut errors: Vec<ConfigError> = m
        .keys()
        .filter(|k| !FIELDS.contains(&k.as_str()))
        .map(|k| at.unknown_field(k, "a waiver", FIELDS))
        .collect();
    let check = match m.get("check") {
        Some(v) => at.check_id("check", v).map_err(|e| errors.push(e)).ok(),
        None => {
            errors.push(missing(at, "check"));
            None
        }
    };
    let reason = match m.get("reason") {
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(v) => {
            errors.push(at.wrong_type("reason", "a string", v));
            None
        }
        None => {
            errors.push(missing(at, "reason"));
            None
        }
    };
    let expires = match m.get("expires") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.parse::<Date>() {
            Ok(d) => Some(d),
            Err(()) => {
                errors.push(ConfigError::BadDate {
                    origin: at.origin("expires"),
                    given: s.clone(),
                });
                None
            }
        },
        Some(v) => {
            errors.push(at.wrong_type("expires", "a date (YYYY-MM-DD)", v));
            None
        }
    };
    if let (Some(check), Some("")) = (check, reason.as_deref()) {
        errors.push(ConfigError::EmptyReason {
            origin: at.origin("reason"),
            check,
        });
    }
    match (check, reason) {
        (Some(check), Some(reason)) if errors.is_empty() => Ok(Waiver {
            check,
            reason,
            expires,
            origin: at.origin(""),
        }),
        _ => Err(errors),
    }
}

fn missing(at: &Locator<'_>, field: &'static str) -> ConfigError {
    ConfigError::MissingField {
        origin: at.origin(&key_path("", field)),
        field,
        context: "a waiver",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans() -> Spans {
        let mut s = Spans::default();
        let o = |line| Origin {
            file: "modules/web/module.yaml".into(),
            line,
            column: 7,
        };
        s.insert("resources[0].waivers", o(20));
        s.insert("resources[0].waivers[0]", o(21));
        s.insert("resources[0].waivers[1]", o(24));
        s.insert("resources[0].waivers[1].expires", o(26));
        s
    }

    fn parse(j: serde_json::Value) -> crate::policy::Result<Vec<Waiver>> {
        Waiver::parse_all(&Value::from_json(j), &spans(), "resources[0].waivers")
    }

    #[test]
    fn dates_parse_strictly_and_order() {
        assert_eq!(
            "2024-02-29".parse::<Date>().unwrap().to_string(),
            "2024-02-29"
        );
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-1-01",
            "24-01-01",
            "2024-01-0x",
            "2024-00-10",
        ] {
            assert!(bad.parse::<Date>().is_err(), "{bad}");
        }
        assert!(Date::new(2026, 1, 31).unwrap() < Date::new(2026, 2, 1).unwrap());
        assert_eq!(Date::from_days_since_epoch(0).to_string(), "1970-01-01");
        assert_eq!(
            Date::from_days_since_epoch(19_782).to_string(),
            "2024-02-29"
        );
        assert!(Date::today_utc() > Date::new(2024, 1, 1).unwrap());
    }

    #[test]
    fn waivers_parse_with_and_without_expiry() {
        let w = parse(serde_json::json!([
            {"check": "image-digest", "reason": "vendor image, digest pinned upstream"},
            {"check": "probes", "reason": " batch worker ", "expires": "2026-12-31"},
        ]))
        .unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].expires, None);
        assert_eq!(w[0].origin.line, 21);
        assert_eq!(w[1].reason, "batch worker");
        let exp = Date::new(2026, 12, 31).unwrap();
        assert_eq!(w[1].expires, Some(exp));
        assert!(w[1].is_active(exp));
        assert!(!w[1].is_active(Date::new(2027, 1, 1).unwrap()));
        assert!(w[0].is_active(Date::new(2999, 1, 1).unwrap()));
        assert_eq!(parse(serde_json::Value::Null).unwrap(), []);
    }

    #[test]
    fn bad_waivers_are_all_reported() {
        let errs = parse(serde_json::json!([
            {"check": "imdsv3", "reason": "x", "expiry": "2026-01-01"},
            {"check": "probes", "reason": "", "expires": "31.12.2026"},
            {"reason": "no check"},
        ]))
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 5, "{text:#?}");
        let has = |s: &str| text.iter().any(|t| t.contains(s));
        assert!(has(
            "unknown field `expiry` in a waiver (did you mean `expires`?)"
        ));
        assert!(has("unknown check id `imdsv3` (did you mean `imdsv2`?)"));
        assert!(has(
            "modules/web/module.yaml:26:7: `31.12.2026` is not a date"
        ));
        assert!(has("waiver for `probes` has an empty reason"));
        assert!(has("a waiver has no `check`"));
        let lines: Vec<usize> = errs.iter().map(|e| e.origin().line).collect();
        assert!(
            lines.windows(2).all(|w| w[0] <= w[1]),
            "sorted by position: {lines:?}"
        );
    }

    #[test]
    fn two_waivers_for_one_check_are_rejected() {
        let errs = parse(serde_json::json!([
            {"check": "probes", "reason": "a"},
            {"check": "probes", "reason": "b"},
        ]))
        .unwrap_err();
        assert!(
            matches!(&errs[..], [ConfigError::DuplicateWaiver { first, .. }] if first.line == 21)
        );
    }
}
