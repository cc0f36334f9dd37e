//! The environment's `policy:` block: how severe each check is there, and
//! the environment's own allow-lists (approved domains, required tags,
//! public ports). Parsed strictly, so a typo in a policy never silently
//! turns a check off.

use std::collections::BTreeMap;
use std::fmt;

use crate::value::{index_path, key_path, Origin, Spans, Value};

use super::CheckId;

/// How a check's findings count in an environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Shown, and blocks `apply`/`rebuild` unless waived.
    Error,
    /// Shown; never blocks.
    Warning,
    /// The check does not run.
    Off,
}

impl Severity {
    /// The spelling used in YAML and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Off => "off",
        }
    }

    fn parse(s: &str) -> Option<Severity> {
        match s {
            "error" => Some(Severity::Error),
            "warning" => Some(Severity::Warning),
            "off" => Some(Severity::Off),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The required tags when an environment names none.
pub const DEFAULT_REQUIRED_TAGS: [&str; 3] = ["environment", "owner", "product"];
/// The ports that may be open to the whole internet when an environment
/// names none.
pub const DEFAULT_PUBLIC_PORTS: [u16; 2] = [80, 443];

/// The policy of one environment, validated.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyConfig {
    /// The environment this policy belongs to.
    pub environment: String,
    /// Severity of every check without its own entry.
    pub default_severity: Severity,
    /// Per-check severities.
    pub severity: BTreeMap<CheckId, Severity>,
    /// Domains Ingress hosts may use (the domain itself and any subdomain).
    /// Empty: the `ingress-domain` check is skipped, with a note.
    pub approved_domains: Vec<String>,
    /// Tag keys every AWS resource must carry with a non-empty value.
    pub required_tags: Vec<String>,
    /// Ports a security group may open to `0.0.0.0/0` or `::/0`.
    pub public_ports: Vec<u16>,
}

impl PolicyConfig {
    /// The policy of an environment without a `policy:` block: every check
    /// an error in a production environment ([`is_production`]), a warning
    /// elsewhere; default tags and ports; no approved domains.
    pub fn defaults(environment: &str) -> PolicyConfig {
        let default_severity = if is_production(environment) {
            Severity::Error
        } else {
            Severity::Warning
        };
        PolicyConfig {
            environment: environment.to_string(),
            default_severity,
            severity: BTreeMap::new(),
            approved_domains: Vec::new(),
            required_tags: DEFAULT_REQUIRED_TAGS.map(String::from).to_vec(),
            public_ports: DEFAULT_PUBLIC_PORTS.to_vec(),
        }
    }

    /// Parses the `policy:` block of `environment`. `path` is where the
    /// block sits in `spans` (`spec.policy`), for error positions. A `null`
    /// block gives [`PolicyConfig::defaults`]; fields left out keep their
    /// defaults. Every problem is reported, not only the first.
    pub fn parse(
        environment: &str,
        policy: &Value,
        spans: &Spans,
        path: &str,
    ) -> super::Result<PolicyConfig> {
        let mut config = PolicyConfig::defaults(environment);
        let mut errors = Vec::new();
        let at = Locator { spans, path };
        let entries = match policy {
            Value::Null => return Ok(config),
            Value::Map(m) => m,
            other => return Err(vec![at.wrong_type("", "a map", other)]),
        };
        for (key, value) in entries {
            let r = match key.as_str() {
                "defaultSeverity" => at.severity(key, value).map(|s| config.default_severity = s),
                "severity" => at.severities(key, value).map(|m| config.severity = m),
                "approvedDomains" => at.domains(key, value).map(|d| config.approved_domains = d),
                "requiredTags" => at.strings(key, value).map(|t| config.required_tags = t),
                "publicPorts" => at.ports(key, value).map(|p| config.public_ports = p),
                other => Err(vec![at.unknown_field(other, "the policy block", FIELDS)]),
            };
            if let Err(e) = r {
                errors.extend(e);
            }
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(by_position(errors))
        }
    }

    /// The severity of `check` in this environment.
    pub fn severity_of(&self, check: CheckId) -> Severity {
        self.severity
            .get(&check)
            .copied()
            .unwrap_or(self.default_severity)
    }
}

const FIELDS: &[&str] = &[
    "defaultSeverity",
    "severity",
    "approvedDomains",
    "requiredTags",
    "publicPorts",
];

/// True for environments whose policy defaults to blocking: the name's
/// first `-`, `_` or `.` separated word is `prod`, `production` or `prd`
/// (`prod`, `prod-eu`, `prod-green`; not `product-demo`).
pub fn is_production(environment: &str) -> bool {
    let lower = environment.to_ascii_lowercase();
    let first = lower.split(['-', '_', '.']).next().unwrap_or("");
    matches!(first, "prod" | "production" | "prd")
}

/// A policy block or a waiver is not valid. Each variant names where
/// (file:line:column) and says how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A field the block does not know (usually a typo).
    #[error("{origin}: unknown field `{field}` in {context}{}; allowed fields: {}", did_you_mean(suggestion), allowed.join(", "))]
    UnknownField {
        origin: Origin,
        field: String,
        context: &'static str,
        suggestion: Option<&'static str>,
        allowed: &'static [&'static str],
    },
    /// A severity other than `error`, `warning` or `off`.
    #[error("{origin}: `{given}` is not a severity; use error, warning or off")]
    BadSeverity { origin: Origin, given: String },
    /// A check id that does not exist.
    #[error("{origin}: unknown check id `{given}`{}; known checks: {}", did_you_mean(suggestion), CheckId::ALL.map(CheckId::as_str).join(", "))]
    UnknownCheck {
        origin: Origin,
        given: String,
        suggestion: Option<&'static str>,
    },
    /// A field holds the wrong kind of value (the value itself is not
    /// printed: it might be a secret).
    #[error("{origin}: `{field}` must be {expected}, found {found}")]
    WrongType {
        origin: Origin,
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    /// A port outside 1..=65535.
    #[error("{origin}: port {given} is out of range; use a number from 1 to 65535")]
    BadPort { origin: Origin, given: i64 },
    /// An approved domain that is empty or has characters a host name cannot.
    #[error("{origin}: `{given}` is not a domain; write a DNS name such as example.com")]
    BadDomain { origin: Origin, given: String },
    /// A waiver expiry that is not a calendar date.
    #[error("{origin}: `{given}` is not a date; write the expiry as YYYY-MM-DD (e.g. 2026-12-31)")]
    BadDate { origin: Origin, given: String },
    /// A required field is absent.
    #[error("{origin}: {context} has no `{field}`; add `{field}: ...`")]
    MissingField {
        origin: Origin,
        field: &'static str,
        context: &'static str,
    },
    /// A waiver with an empty reason.
    #[error("{origin}: waiver for `{check}` has an empty reason; say why the check does not apply, so that reviewers can judge it")]
    EmptyReason { origin: Origin, check: CheckId },
    /// Two waivers on one resource for the same check.
    #[error(
        "{origin}: a second waiver for `{check}` on this resource (first at {first}); keep one"
    )]
    DuplicateWaiver {
        origin: Origin,
        check: CheckId,
        first: Origin,
    },
}

impl ConfigError {
    /// Where the problem is.
    pub fn origin(&self) -> &Origin {
        match self {
            ConfigError::UnknownField { origin, .. }
            | ConfigError::BadSeverity { origin, .. }
            | ConfigError::UnknownCheck { origin, .. }
            | ConfigError::WrongType { origin, .. }
            | ConfigError::BadPort { origin, .. }
            | ConfigError::BadDomain { origin, .. }
            | ConfigError::BadDate { origin, .. }
            | ConfigError::MissingField { origin, .. }
            | ConfigError::EmptyReason { origin, .. }
            | ConfigError::DuplicateWaiver { origin, .. } => origin,
        }
    }
}

/// Errors in file order, so they read top to bottom.
pub(crate) fn by_position(mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
    errors.sort_by(|a, b| a.origin().cmp(b.origin()));
    errors
}

fn did_you_mean(s: &Option<&'static str>) -> String {
    s.map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

/// The closest of `candidates` to `given`, if close enough to be a typo.
pub(crate) fn suggest(given: &str, candidates: &[&'static str]) -> Option<&'static str> {
    candidates
        .iter()
        .map(|c| {
            (
                edit_distance(&given.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                *c,
            )
        })
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Turns paths below a block into origins and errors.
pub(crate) struct Locator<'a> {
    pub(crate) spans: &'a Spans,
    pub(crate) path: &'a str,
}

impl Locator<'_> {
    /// The path of `rel` (a key path below the block; empty: the block).
    pub(crate) fn path_of(&self, rel: &str) -> String {
        match (self.path.is_empty(), rel.is_empty()) {
            (_, true) => self.path.to_string(),
            (true, false) => rel.to_string(),
            (false, false) if rel.starts_with('[') => format!("{}{rel}", self.path),
            (false, false) => key_path(self.path, rel),
        }
    }

    pub(crate) fn origin(&self, rel: &str) -> Origin {
        self.spans
            .nearest(&self.path_of(rel))
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn wrong_type(&self, rel: &str, expected: &'static str, v: &Value) -> ConfigError {
        let field = self.path_of(rel);
        ConfigError::WrongType {
            origin: self.origin(rel),
            field: if field.is_empty() {
                "value".into()
            } else {
                field
            },
            expected,
            found: v.type_name(),
        }
    }

    pub(crate) fn unknown_field(
        &self,
        field: &str,
        context: &'static str,
        allowed: &'static [&'static str],
    ) -> ConfigError {
        ConfigError::UnknownField {
            origin: self.origin(field),
            field: field.to_string(),
            context,
            suggestion: suggest(field, allowed),
            allowed,
        }
    }

    pub(crate) fn check_id(&self, rel: &str, v: &Value) -> Result<CheckId, ConfigError> {
        let Value::String(s) = v else {
            return Err(self.wrong_type(rel, "a check id", v));
        };
        s.parse().map_err(|_| self.unknown_check(rel, s))
    }

    pub(crate) fn unknown_check(&self, rel: &str, given: &str) -> ConfigError {
        ConfigError::UnknownCheck {
            origin: self.origin(rel),
            given: given.to_string(),
            suggestion: suggest(given, &CheckId::ALL.map(CheckId::as_str)),
        }
    }

    fn severity(&self, rel: &str, v: &Value) -> Result<Severity, Vec<ConfigError>> {
        let Value::String(s) = v else {
            return Err(vec![self.wrong_type(rel, "error, warning or off", v)]);
        };
        Severity::parse(s).ok_or_else(|| {
            vec![ConfigError::BadSeverity {
                origin: self.origin(rel),
                given: s.clone(),
            }]
        })
    }

    fn severities(
        &self,
        rel: &str,
        v: &Value,
    ) -> Result<BTreeMap<CheckId, Severity>, Vec<ConfigError>> {
        let Value::Map(m) = v else {
            return Err(vec![self.wrong_type(
                rel,
                "a map of check id to severity",
                v,
            )]);
        };
        let mut out = BTreeMap::new();
        let mut errors = Vec::new();
        for (id, sev) in m {
            let entry = key_path(rel, id);
            let check = id
                .parse::<CheckId>()
                .map_err(|_| self.unknown_check(&entry, id));
            match (check, self.severity(&entry, sev)) {
                (Ok(c), Ok(s)) => {
                    out.insert(c, s);
                }
                (c, s) => {
                    errors.extend(c.err());
                    errors.extend(s.err().into_iter().flatten());
                }
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    fn list<'v, T>(
        &self,
        rel: &str,
        v: &'v Value,
        expected: &'static str,
        item: impl Fn(&str, &'v Value) -> Result<T, ConfigError>,
    ) -> Result<Vec<T>, Vec<ConfigError>> {
        let Value::List(items) = v else {
            return Err(vec![self.wrong_type(rel, expected, v)]);
        };
        let mut ok = Vec::new();
        let mut errors = Vec::new();
        for (i, v) in items.iter().enumerate() {
            match item(&index_path(rel, i), v) {
                Ok(t) => ok.push(t),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(ok)
        } else {
            Err(errors)
        }
    }

    fn strings(&self, rel: &str, v: &Value) -> Result<Vec<String>, Vec<ConfigError>> {
        self.list(rel, v, "a list of strings", |p, v| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(self.wrong_type(p, "a string", other)),
        })
    }

    fn domains(&self, rel: &str, v: &Value) -> Result<Vec<String>, Vec<ConfigError>> {
        self.list(rel, v, "a list of domains", |p, v| {
            let Value::String(s) = v else {
                return Err(self.wrong_type(p, "a domain", v));
            };
            let d = normalise_host(s.trim_start_matches("*.").trim_start_matches('.'));
            let valid = !d.is_empty()
                && d.split('.').all(|l| !l.is_empty())
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if valid {
                Ok(d)
            } else {
                Err(ConfigError::BadDomain {
                    origin: self.origin(p),
                    given: s.clone(),
                })
            }
        })
    }

    fn ports(&self, rel: &str, v: &Value) -> Result<Vec<u16>, Vec<ConfigError>> {
        self.list(rel, v, "a list of port numbers", |p, v| match v {
            Value::Int(n) => {
                u16::try_from(*n)
                    .ok()
                    .filter(|port| *port > 0)
                    .ok_or(ConfigError::BadPort {
                        origin: self.origin(p),
                        given: *n,
                    })
            }
            other => Err(self.wrong_type(p, "a port number", other)),
        })
    }
}

/// A host or domain as compared: lower case, no trailing dot.
pub(crate) fn normalise_host(h: &str) -> String {
    h.trim().trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans() -> Spans {
        let mut s = Spans::default();
        for (i, p) in [
            "spec.policy",
            "spec.policy.defaultSeverity",
            "spec.policy.severity",
            "spec.policy.severity.image-digst",
            "spec.policy.publicPorts[1]",
            "spec.policy.approvedDomain",
        ]
        .iter()
        .enumerate()
        {
            s.insert(
                *p,
                Origin {
                    file: "environments/prod.yaml".into(),
                    line: 10 + i,
                    column: 3,
                },
            );
        }
        s
    }

    fn parse(env: &str, j: serde_json::Value) -> crate::policy::Result<PolicyConfig> {
        PolicyConfig::parse(env, &Value::from_json(j), &spans(), "spec.policy")
    }

    #[test]
    fn defaults_depend_on_the_environment_name() {
        for env in ["prod", "prod-eu", "production", "PROD_green"] {
            assert_eq!(
                PolicyConfig::defaults(env).default_severity,
                Severity::Error,
                "{env}"
            );
        }
        for env in ["dev", "staging", "product-demo", "test"] {
            assert_eq!(
                PolicyConfig::defaults(env).default_severity,
                Severity::Warning,
                "{env}"
            );
        }
        let d = PolicyConfig::defaults("dev");
        assert_eq!(d.required_tags, ["environment", "owner", "product"]);
        assert_eq!(d.public_ports, [80, 443]);
        assert!(d.approved_domains.is_empty());
        assert_eq!(parse("dev", serde_json::Value::Null).unwrap(), d);
    }

    #[test]
    fn a_full_block_overrides_defaults() {
        let c = parse(
            "dev",
            serde_json::json!({
                "defaultSeverity": "error",
                "severity": {"image-digest": "warning", "probes": "off"},
                "approvedDomains": ["Example.COM.", "*.apps.example.net"],
                "requiredTags": ["team"],
                "publicPorts": [443, 8443],
            }),
        )
        .unwrap();
        assert_eq!(c.severity_of(CheckId::ImageDigest), Severity::Warning);
        assert_eq!(c.severity_of(CheckId::Probes), Severity::Off);
        assert_eq!(c.severity_of(CheckId::Imdsv2), Severity::Error);
        assert_eq!(c.approved_domains, ["example.com", "apps.example.net"]);
        assert_eq!(c.required_tags, ["team"]);
        assert_eq!(c.public_ports, [443, 8443]);
    }

    #[test]
    fn every_problem_is_reported_with_its_position_and_a_fix() {
        let errs = parse(
            "prod",
            serde_json::json!({
                "defaultSeverity": "fatal",
                "severity": {"image-digst": "warning"},
                "publicPorts": [80, 70000],
                "approvedDomain": ["example.com"],
            }),
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 4, "{text:#?}");
        assert_eq!(
            text[0],
            "environments/prod.yaml:11:3: `fatal` is not a severity; use error, warning or off"
        );
        assert!(text[1].starts_with("environments/prod.yaml:13:3: unknown check id `image-digst` (did you mean `image-digest`?)"), "{}", text[1]);
        assert_eq!(
            text[2],
            "environments/prod.yaml:14:3: port 70000 is out of range; use a number from 1 to 65535"
        );
        assert!(text[3].starts_with("environments/prod.yaml:15:3: unknown field `approvedDomain` in the policy block (did you mean `approvedDomains`?)"), "{}", text[3]);
    }

    #[test]
    fn wrong_types_never_print_the_value() {
        let mut m = crate::value::Map::new();
        m.insert(
            "requiredTags".into(),
            Value::Sensitive(crate::sensitive::Sensitive::from_string("s3cr3t".into())),
        );
        let errs = PolicyConfig::parse("dev", &Value::Map(m), &spans(), "spec.policy").unwrap_err();
        let text = errs[0].to_string();
        assert!(
            text.contains(
                "`spec.policy.requiredTags` must be a list of strings, found a secret value"
            ),
            "{text}"
        );
        assert!(!text.contains("s3cr3t"));
        assert_eq!(errs[0].origin().line, 10);
    }

    #[test]
    fn bad_domains_are_rejected() {
        let errs = parse(
            "dev",
            serde_json::json!({"approvedDomains": ["", "a b.com", "x..y"]}),
        )
        .unwrap_err();
        assert_eq!(errs.len(), 3);
        assert!(matches!(errs[0], ConfigError::BadDomain { .. }));
    }
}
