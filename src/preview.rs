//! Short-lived preview environments: copies of an environment under a new
//! owner name (`tidegate preview up --from dev --name pr-42`), built the
//! way `rebuild --as` builds a blue/green copy and deleted completely when
//! their time to live ends (`preview sweep`) or on `preview down`.
//!
//! - `spec.preview` in the environment file ([`PreviewSpec`]): how many
//!   previews of it may live at once (`max`), their default and longest
//!   time to live (`ttl`), the variables a copy overrides (`vars`, where
//!   `${preview.name}` and `${preview.slot}` render as the copy's name and
//!   slot, so CIDRs and hostnames do not collide), and which branches the
//!   reconciler keeps a preview for (`branches`).
//! - The registry of live previews ([`Entry`]) is kept beside the records
//!   by [`crate::state::preview`].
//!
//! Everything here is pure: the clock is a parameter, so the slot choice,
//! the expiry and the variable overrides are unit tests.

use std::collections::BTreeSet;
use std::time::Duration;

use indexmap::IndexMap;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::value::{Map, Origin, Value};

/// The most previews one environment may declare (`preview.max`): a slot
/// is a small integer, so `10.2${preview.slot}.0.0/16` stays a valid CIDR.
pub const MAX_SLOTS: u32 = 50;

/// The default `preview.ttl` (and the longest a preview may ask for).
pub const DEFAULT_TTL: Duration = Duration::from_secs(4 * 3600);

/// `spec.preview` of an environment.
#[derive(Clone, Debug, PartialEq)]
pub struct PreviewSpec {
    /// Live previews of this environment at once.
    pub max: u32,
    /// The default and the longest time to live of a preview.
    pub ttl: Duration,
    /// Variables the copy overrides, as written (with `${preview.name}`
    /// and `${preview.slot}` still in them), with where each was written.
    pub vars: IndexMap<String, (Value, Origin)>,
    /// A branch pattern (`preview/*`): the reconciler keeps a preview for
    /// each branch of its remote matching it.
    pub branches: Option<String>,
    /// Where `preview:` was written.
    pub origin: Origin,
}

impl Default for PreviewSpec {
    fn default() -> Self {
        PreviewSpec {
            max: 3,
            ttl: DEFAULT_TTL,
            vars: IndexMap::new(),
            branches: None,
            origin: Origin::default(),
        }
    }
}

/// One live preview, as the registry keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The preview's owner name (`${env.name}` of the copy).
    pub name: String,
    /// The environment it copies.
    pub from: String,
    /// The revision it was asked for (`--revision`, a branch), as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The commit it was built from.
    pub commit: String,
    /// Its slot: unique among the live previews of `from`, below `max`.
    pub slot: u32,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339: when `preview sweep` (and the reconciler) deletes it.
    pub expires: String,
    /// The branch (pull request) the reconciler keeps it for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Who made (or last renewed) it.
    pub who: String,
    /// The variables it was built with (overrides only).
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, String>,
    /// What it owns, by kind, after its last `up` (its cost).
    #[serde(default)]
    pub resources: std::collections::BTreeMap<String, usize>,
}

impl Entry {
    /// True when its time to live has ended at `now` (an unreadable expiry
    /// counts as ended: a preview nobody can date is not kept forever).
    pub fn expired(&self, now: Timestamp) -> bool {
        self.expires.parse::<Timestamp>().map_or(true, |t| t <= now)
    }
}

/// The lowest slot below `max` that none of `used` holds; `None` when the
/// cap is reached.
pub fn choose_slot(used: impl IntoIterator<Item = u32>, max: u32) -> Option<u32> {
    let used: BTreeSet<u32> = used.into_iter().collect();
    (0..max).find(|s| !used.contains(s))
}

/// When a preview made (or renewed) at `now` for `ttl` expires.
pub fn expiry(now: Timestamp, ttl: Duration) -> Result<Timestamp, String> {
    let d = jiff::SignedDuration::try_from(ttl).map_err(|e| format!("ttl {ttl:?}: {e}"))?;
    now.checked_add(d)
        .map_err(|e| format!("ttl {}: {e}", humantime::format_duration(ttl)))
}

/// The time to live a preview gets: `asked` (`--ttl`), at most the
/// environment's `preview.ttl`, else that.
pub fn ttl(asked: Option<Duration>, spec: &PreviewSpec) -> Result<Duration, String> {
    match asked {
        None => Ok(spec.ttl),
        Some(d) if d.is_zero() => Err("--ttl must be longer than 0".into()),
        Some(d) if d > spec.ttl => Err(format!(
            "--ttl {} is longer than the environment's `preview.ttl` of {}; ask for at most that, or raise `preview.ttl`",
            humantime::format_duration(d),
            humantime::format_duration(spec.ttl)
        )),
        Some(d) => Ok(d),
    }
}

/// Why `name` cannot name a preview: not a DNS label (it becomes part of
/// Namespaces and hostnames), or the name of an environment of the
/// repository.
pub fn check_name<'a>(
    name: &str,
    environments: impl IntoIterator<Item = &'a str>,
) -> Result<(), String> {
    let label = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !label {
        return Err(format!(
            "preview name `{name}` is not a DNS label: use 1-63 lowercase letters, digits and `-`, starting and ending with a letter or digit (`pr-42`)"
        ));
    }
    if environments.into_iter().any(|e| e == name) {
        return Err(format!(
            "preview name `{name}` is the name of an environment of the repository; a preview needs a name of its own (`{name}-preview`, `pr-42`)"
        ));
    }
    Ok(())
}

/// The references a preview variable may use.
const REFS: [&str; 2] = ["${preview.name}", "${preview.slot}"];

/// The `${...}` references of `text` other than [`REFS`] (`$${` is a
/// literal `${`).
pub fn unknown_refs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        if i > 0 && rest.as_bytes()[i - 1] == b'$' {
            rest = &rest[i + 2..];
            continue;
        }
        let tail = &rest[i..];
        match tail.find('}') {
            Some(end) => {
                let r = &tail[..=end];
                if !REFS.contains(&r) {
                    out.push(r.to_string());
                }
                rest = &tail[end + 1..];
            }
            None => {
                out.push(tail.to_string());
                break;
            }
        }
    }
    out
}

/// The variables of the copy named `name` in `slot`: each override of
/// `spec` with `${preview.name}` and `${preview.slot}` rendered (strings
/// only; other scalars as written).
pub fn vars(spec: &PreviewSpec, name: &str, slot: u32) -> Map {
    spec.vars
        .iter()
        .map(|(k, (v, _))| {
            let v = match v {
                Value::String(s) => {
                    Value::String(s.replace(REFS[0], name).replace(REFS[1], &slot.to_string()))
                }
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

/// The preview name the reconciler keeps for `branch` when it matches
/// `pattern` (`preview/*`: `*` matches one or more characters of the
/// rest): `pr-<N>` for a pull request ref (`refs/pull/<N>/head`), else the
/// branch's last segment, lowercased, with characters a DNS label cannot
/// hold turned into `-`.
pub fn name_for_branch(pattern: &str, branch: &str) -> Option<String> {
    let branch = branch.strip_prefix("refs/heads/").unwrap_or(branch);
    if !glob(pattern, branch) {
        return None;
    }
    if let Some(n) = branch
        .strip_prefix("refs/pull/")
        .and_then(|r| r.strip_suffix("/head"))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some(format!("pr-{n}"));
    }
    let last = branch.rsplit('/').next().unwrap_or(branch);
    let mut name: String = last
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(63);
    let name = name.trim_matches('-').to_string();
    (!name.is_empty()).then_some(name)
}

/// `pattern` with `*` (one or more characters) matches all of `text`.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else {
                return false;
            };
            (1..=rest.len())
                .filter(|&i| rest.is_char_boundary(i))
                .any(|i| glob(tail, &rest[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_lowest_free_slot_below_max_is_chosen() {
        assert_eq!(choose_slot([], 3), Some(0));
        assert_eq!(choose_slot([0, 2], 3), Some(1));
        assert_eq!(choose_slot([1], 3), Some(0));
        assert_eq!(choose_slot([0, 1, 2], 3), None);
        assert_eq!(choose_slot([5], 1), Some(0));
    }

    #[test]
    fn a_preview_expires_at_its_ttl() {
        let now = t("2026-01-01T10:00:00Z");
        let exp = expiry(now, Duration::from_secs(4 * 3600)).unwrap();
        assert_eq!(exp, t("2026-01-01T14:00:00Z"));
        let e = Entry {
            name: "pr-1".into(),
            from: "dev".into(),
            revision: None,
            commit: "c".into(),
            slot: 0,
            created: now.to_string(),
            expires: exp.to_string(),
            branch: None,
            who: "me".into(),
            vars: Default::default(),
            resources: Default::default(),
        };
        assert!(!e.expired(t("2026-01-01T13:59:59Z")));
        assert!(e.expired(t("2026-01-01T14:00:00Z")));
        let broken = Entry {
            expires: "never".into(),
            ..e
        };
        assert!(broken.expired(now));
    }

    #[test]
    fn ttl_defaults_to_and_is_capped_by_the_environment() {
        let spec = PreviewSpec::default();
        assert_eq!(ttl(None, &spec).unwrap(), DEFAULT_TTL);
        assert_eq!(
            ttl(Some(Duration::from_secs(60)), &spec).unwrap(),
            Duration::from_secs(60)
        );
        let e = ttl(Some(Duration::from_secs(5 * 3600)), &spec).unwrap_err();
        assert!(
            e.contains("longer than the environment's `preview.ttl` of 4h"),
            "{e}"
        );
        assert!(ttl(Some(Duration::ZERO), &spec).is_err());
    }

    #[test]
    fn names_are_dns_labels_apart_from_environments() {
        assert!(check_name("pr-42", ["dev", "prod"]).is_ok());
        for bad in ["", "PR-1", "pr_1", "-pr", "pr-", &"a".repeat(64)] {
            let e = check_name(bad, ["dev"]).unwrap_err();
            assert!(e.contains("not a DNS label"), "{bad}: {e}");
        }
        let e = check_name("prod", ["dev", "prod"]).unwrap_err();
        assert!(e.contains("is the name of an environment"), "{e}");
    }

    #[test]
    fn overrides_render_name_and_slot_and_nothing_else() {
        let mut spec = PreviewSpec::default();
        spec.vars.insert(
            "cidr".into(),
            (
                Value::String("10.2${preview.slot}.0.0/16".into()),
                Origin::default(),
            ),
        );
        spec.vars.insert(
            "host".into(),
            (
                Value::String("${preview.name}.preview.example.com".into()),
                Origin::default(),
            ),
        );
        spec.vars
            .insert("replicas".into(), (Value::Int(1), Origin::default()));
        let v = vars(&spec, "pr-7", 2);
        assert_eq!(v["cidr"], Value::String("10.22.0.0/16".into()));
        assert_eq!(v["host"], Value::String("pr-7.preview.example.com".into()));
        assert_eq!(v["replicas"], Value::Int(1));

        assert!(unknown_refs("a-${preview.name}-${preview.slot}").is_empty());
        assert!(unknown_refs("literal $${var.x}").is_empty());
        assert_eq!(unknown_refs("${env.name}.x"), ["${env.name}"]);
        assert_eq!(unknown_refs("x${preview.nam"), ["${preview.nam"]);
    }

    #[test]
    fn branches_map_to_preview_names() {
        assert_eq!(
            name_for_branch("preview/*", "preview/Login_Page").as_deref(),
            Some("login-page")
        );
        assert_eq!(
            name_for_branch("preview/*", "refs/heads/preview/x").as_deref(),
            Some("x")
        );
        assert_eq!(name_for_branch("preview/*", "main"), None);
        assert_eq!(name_for_branch("preview/*", "preview/"), None);
        assert_eq!(
            name_for_branch("refs/pull/*/head", "refs/pull/42/head").as_deref(),
            Some("pr-42")
        );
    }
}
