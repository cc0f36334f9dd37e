//! Fault injection and request accounting: the knobs tests turn to see how
//! a client copes with an apiserver that fails, throttles, hangs, resets
//! connections or drops watches, and the counters that let a test assert
//! how many calls of each verb a client made.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What an injected fault does to a matching request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum FaultAction {
    /// Answer with a `Status` of this code (500 by default).
    Error {
        /// HTTP status code.
        #[serde(default = "default_code")]
        code: u16,
    },
    /// 429 TooManyRequests with a `Retry-After` header.
    Throttle {
        /// Seconds in `Retry-After`.
        #[serde(default = "one", rename = "retryAfterSeconds")]
        retry_after_seconds: u64,
    },
    /// Close the connection without answering.
    Reset,
    /// Wait this long, then answer normally (a hung apiserver, as far as a
    /// client with a shorter timeout can tell).
    Stall {
        /// Milliseconds to wait.
        millis: u64,
    },
}

fn default_code() -> u16 {
    500
}

fn one() -> u64 {
    1
}

/// Injects `action` into the next `times` requests that match, or, with
/// `probability`, into that fraction of all matching requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    /// HTTP method to match (`GET`, `PATCH`, ...); any when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// Path prefix to match (after any `/clusters/<name>` prefix); any when
    /// absent.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Query substring to match (e.g. `watch=true`); any when absent.
    #[serde(default)]
    pub query_contains: Option<String>,
    /// How many requests to affect (ignored with `probability`).
    #[serde(default = "one_u32")]
    pub times: u32,
    /// Affect each matching request with this probability (0.0 to 1.0)
    /// instead of the next `times`; the rule is never used up. When the
    /// draw spares a request, later rules are tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Seed of the rule's draws: the same seed and the same request order
    /// give the same faults.
    #[serde(default)]
    pub seed: u64,
    /// What to do.
    pub action: FaultAction,
    /// The state of the rule's generator (starts at `seed`).
    #[serde(skip)]
    draws: Option<u64>,
}

fn one_u32() -> u32 {
    1
}

impl FaultRule {
    /// A rule for the next `times` requests of `method` under `path_prefix`.
    pub fn new(
        method: Option<&str>,
        path_prefix: Option<&str>,
        times: u32,
        action: FaultAction,
    ) -> Self {
        FaultRule {
            method: method.map(str::to_string),
            path_prefix: path_prefix.map(str::to_string),
            query_contains: None,
            times,
            probability: None,
            seed: 0,
            action,
            draws: None,
        }
    }

    /// A rule affecting each request of `method` under `path_prefix` with
    /// `probability`, drawn from a generator seeded with `seed`; never
    /// used up.
    pub fn with_probability(
        method: Option<&str>,
        path_prefix: Option<&str>,
        probability: f64,
        seed: u64,
        action: FaultAction,
    ) -> Self {
        FaultRule {
            probability: Some(probability),
            seed,
            ..FaultRule::new(method, path_prefix, 1, action)
        }
    }

    /// Whether the rule lasts until removed.
    fn is_probabilistic(&self) -> bool {
        self.probability.is_some()
    }

    /// The next draw in [0, 1) (splitmix64: small, seedable, no dependency).
    fn draw(&mut self) -> f64 {
        let state = self.draws.get_or_insert(self.seed);
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn matches(&self, method: &str, path: &str, query: &str) -> bool {
        (self.is_probabilistic() || self.times > 0)
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
            && self
                .query_contains
                .as_deref()
                .is_none_or(|q| query.contains(q))
    }
}

/// The fault configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Faults {
    /// Rules, first match wins; a rule is used up after `times` matches; a
    /// rule with `probability` that spares a request passes it on to the
    /// next rules.
    #[serde(default)]
    pub rules: Vec<FaultRule>,
    /// Latency added to every API request, in milliseconds.
    #[serde(default)]
    pub latency_millis: u64,
}

impl Faults {
    /// The action for this request, consuming one use of the matching rule.
    pub fn take(&mut self, method: &str, path: &str, query: &str) -> Option<FaultAction> {
        for rule in self.rules.iter_mut() {
            if !rule.matches(method, path, query) {
                continue;
            }
            if let Some(p) = rule.probability {
                if rule.draw() < p {
                    return Some(rule.action.clone());
                }
                continue;
            }
            rule.times -= 1;
            let action = rule.action.clone();
            self.rules.retain(|r| r.is_probabilistic() || r.times > 0);
            return Some(action);
        }
        None
    }
}

/// Request counts per `(cluster, verb, resource)`; verbs are `get`, `list`,
/// `watch`, `create`, `update`, `patch`, `apply`, `delete`,
/// `deletecollection`; resources are `plural` or `plural.group`
/// (`configmaps`, `deployments.apps`), with `/status` for the subresource.
/// Every other request (discovery, OpenAPI, `/version`, health) is verb
/// `discovery` with its first path segment (`api`, `apis`, `openapi`) as
/// the resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters(pub BTreeMap<String, u64>);

impl Counters {
    fn key(cluster: &str, verb: &str, resource: &str) -> String {
        format!("{cluster}|{verb}|{resource}")
    }

    /// Counts one request.
    pub fn bump(&mut self, cluster: &str, verb: &str, resource: &str) {
        *self
            .0
            .entry(Self::key(cluster, verb, resource))
            .or_default() += 1;
    }

    /// Requests of `verb` on `resource`, summed over all clusters.
    pub fn get(&self, verb: &str, resource: &str) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| {
                k.split_once('|')
                    .is_some_and(|(_, rest)| rest == format!("{verb}|{resource}"))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// Requests of `verb` on `resource` in one cluster (`""`: the default).
    pub fn get_in(&self, cluster: &str, verb: &str, resource: &str) -> u64 {
        self.0
            .get(&Self::key(cluster, verb, resource))
            .copied()
            .unwrap_or(0)
    }

    /// Total requests of a verb over all resources and clusters.
    pub fn total(&self, verb: &str) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| k.split('|').nth(1) == Some(verb))
            .map(|(_, v)| v)
            .sum()
    }

    /// As a JSON-friendly list of `{cluster, verb, resource, count}`.
    pub fn entries(&self) -> Vec<serde_json::Value> {
        self.0
            .iter()
            .map(|(k, v)| {
                let mut parts = k.splitn(3, '|');
                let (c, verb, r) = (parts.next(), parts.next(), parts.next());
                serde_json::json!({"cluster": c, "verb": verb, "resource": r, "count": v})
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_used_up() {
        let mut f = Faults::default();
        f.rules.push(FaultRule::new(
            Some("GET"),
            Some("/api/v1"),
            2,
            FaultAction::Error { code: 500 },
        ));
        assert_eq!(f.take("POST", "/api/v1/x", ""), None);
        assert!(f.take("get", "/api/v1/x", "").is_some());
        assert!(f.take("GET", "/api/v1/y", "").is_some());
        assert_eq!(f.take("GET", "/api/v1/x", ""), None);
        let parsed: FaultRule =
            serde_json::from_str(r#"{"action": {"type": "throttle", "retryAfterSeconds": 2}}"#)
                .unwrap();
        assert_eq!(
            parsed.action,
            FaultAction::Throttle {
                retry_after_seconds: 2
            }
        );
        assert_eq!(parsed.times, 1);
    }

    #[test]
    fn probabilistic_rules_fire_at_their_rate_reproducibly_and_stay() {
        let rules = || Faults {
            rules: vec![
                FaultRule::with_probability(
                    None,
                    Some("/api"),
                    0.1,
                    7,
                    FaultAction::Throttle {
                        retry_after_seconds: 1,
                    },
                ),
                FaultRule::new(Some("GET"), None, 3, FaultAction::Error { code: 500 }),
            ],
            latency_millis: 0,
        };
        let run = |f: &mut Faults| -> Vec<Option<FaultAction>> {
            (0..2000)
                .map(|_| f.take("PATCH", "/api/v1/x", ""))
                .collect()
        };
        let (mut a, mut b) = (rules(), rules());
        let first = run(&mut a);
        assert_eq!(first, run(&mut b), "the same seed gives the same faults");
        let fired = first.iter().filter(|f| f.is_some()).count();
        assert!((150..=250).contains(&fired), "about 10% of 2000: {fired}");
        // Never used up; a request it spares reaches the next rule.
        assert_eq!(a.rules.len(), 2);
        let mut spared = 0;
        while spared < 3 {
            if a.take("GET", "/api/v1/x", "") == Some(FaultAction::Error { code: 500 }) {
                spared += 1;
            }
        }
        assert_eq!(a.rules.len(), 1, "the counted rule is used up");
        // A different seed gives different faults; other paths are spared.
        let mut c = rules();
        c.rules[0].seed = 8;
        assert_ne!(first, run(&mut c));
        assert!((0..100).all(|_| c.take("PATCH", "/healthz", "").is_none()));

        let parsed: FaultRule = serde_json::from_str(
            r#"{"probability": 0.1, "seed": 42, "action": {"type": "reset"}}"#,
        )
        .unwrap();
        assert_eq!(parsed.probability, Some(0.1));
        assert_eq!(parsed.seed, 42);
        let round: FaultRule =
            serde_json::from_value(serde_json::to_value(&parsed).unwrap()).unwrap();
        assert_eq!(round, parsed);
    }

    #[test]
    fn counters_sum_over_clusters() {
        let mut c = Counters::default();
        c.bump("", "list", "configmaps");
        c.bump("dev", "list", "configmaps");
        c.bump("dev", "get", "configmaps");
        assert_eq!(c.get("list", "configmaps"), 2);
        assert_eq!(c.get_in("dev", "list", "configmaps"), 1);
        assert_eq!(c.total("get"), 1);
    }
}
