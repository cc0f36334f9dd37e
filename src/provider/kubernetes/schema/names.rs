//! What the schema cannot say and the API server checks anyway: object
//! names per kind, namespaces, label keys and values, annotation keys, and
//! the syntax of resource quantities and base64 fields. The rules and their
//! wording follow Kubernetes 1.37 (`k8s.io/apimachinery/pkg/util/validation`,
//! `pkg/apis/*/validation`, `api/resource.ParseQuantity`).

/// Which names a kind accepts in `metadata.name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// A lowercase RFC 1123 subdomain (most kinds, custom resources).
    Subdomain,
    /// A lowercase RFC 1123 label: Namespace, Service, StatefulSet.
    Label,
    /// Anything but `.`, `..` or a name holding `/` or `%` (RBAC kinds:
    /// `system:controller:x` is a valid ClusterRole).
    PathSegment,
    /// A subdomain of at most 52 characters (CronJob: the Jobs it creates
    /// add 11).
    CronJob,
    /// Not checked here (CertificateSigningRequest, IPAddress, ...).
    Unchecked,
}

/// The name rule of built-in kind `kind` of `group`.
pub fn name_rule(group: &str, kind: &str) -> NameRule {
    match (group, kind) {
        ("", "Namespace" | "Service") | ("apps", "StatefulSet") => NameRule::Label,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        ("batch", "CronJob") => NameRule::CronJob,
        ("certificates.k8s.io", _) | ("networking.k8s.io", "IPAddress") => NameRule::Unchecked,
        _ => NameRule::Subdomain,
    }
}

const SUBDOMAIN_MAX: usize = 253;
const LABEL_MAX: usize = 63;
const SUBDOMAIN_TEXT: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const LABEL_TEXT: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";

/// Why `name` breaks `rule`, if it does.
pub fn check_name(rule: NameRule, name: &str) -> Option<String> {
    match rule {
        NameRule::Subdomain => subdomain(name),
        NameRule::Label => label(name),
        NameRule::CronJob => subdomain(name).or_else(|| {
            (name.len() > 52).then(|| {
                "must be no more than 52 characters (the Jobs of a CronJob add 11 to its name)"
                    .to_string()
            })
        }),
        NameRule::PathSegment => match name {
            "." | ".." => Some(format!("may not be '{name}'")),
            _ if name.contains(['/', '%']) => Some("may not contain '/' or '%'".to_string()),
            _ => None,
        },
        NameRule::Unchecked => None,
    }
}

/// `name` as `rule` would accept it, for a fix (`My_App` → `my-app`).
pub fn suggest_name(rule: NameRule, name: &str) -> Option<String> {
    let keep_dots = matches!(rule, NameRule::Subdomain | NameRule::CronJob);
    let max = match rule {
        NameRule::Label => LABEL_MAX,
        NameRule::CronJob => 52,
        _ => SUBDOMAIN_MAX,
    };
    let mut s: String = name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            '.' if keep_dots => '.',
            _ => '-',
        })
        .collect();
    s.truncate(max);
    let s = s.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    (!s.is_empty() && s != name && check_name(rule, s).is_none()).then(|| s.to_string())
}

/// Why `s` is not a lowercase RFC 1123 subdomain, if it is not.
pub fn subdomain(s: &str) -> Option<String> {
    if s.len() > SUBDOMAIN_MAX {
        return Some(format!("must be no more than {SUBDOMAIN_MAX} characters"));
    }
    let ok = !s.is_empty() && s.split('.').all(is_label);
    (!ok).then(|| SUBDOMAIN_TEXT.to_string())
}

/// Why `s` is not a lowercase RFC 1123 label, if it is not.
pub fn label(s: &str) -> Option<String> {
    if s.len() > LABEL_MAX {
        return Some(format!("must be no more than {LABEL_MAX} characters"));
    }
    (!is_label(s)).then(|| LABEL_TEXT.to_string())
}

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= LABEL_MAX
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`: the name part of a
/// qualified name, and a non-empty label value.
fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Why `key` is not a qualified name (a label or annotation key:
/// `[prefix/]name`), if it is not. Annotation keys are checked lowercased,
/// as the API server does.
pub fn qualified_name(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Some("the prefix part (before '/') must be non-empty".into());
        }
        if let Some(why) = subdomain(p) {
            return Some(format!("the prefix part (before '/'): {why}"));
        }
    }
    if name.is_empty() {
        return Some("the name part must be non-empty".into());
    }
    if name.len() > LABEL_MAX {
        return Some(format!(
            "the name part must be no more than {LABEL_MAX} characters"
        ));
    }
    if name.contains('/') || !is_qualified_part(name) {
        return Some("the name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".into());
    }
    None
}

/// Why `value` is not a label value, if it is not.
pub fn label_value(value: &str) -> Option<String> {
    if value.len() > LABEL_MAX {
        return Some(format!("must be no more than {LABEL_MAX} characters"));
    }
    (!value.is_empty() && !is_qualified_part(value)).then(|| "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".to_string())
}

/// The total size of an object's annotations (keys and values) the API
/// server accepts.
pub const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// Why `s` is not a resource quantity (`500m`, `1.5Gi`, `1e3`), if it is
/// not: the grammar of `resource.ParseQuantity` (which reads a bare suffix
/// such as `Gi` as zero).
pub fn quantity(s: &str) -> Option<&'static str> {
    let b = s.as_bytes();
    if b.is_empty() {
        return Some(QUANTITY_TEXT);
    }
    let mut i = usize::from(matches!(b[0], b'+' | b'-'));
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    let suffix = &s[i..];
    match suffix {
        "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti"
        | "Pi" | "Ei" => None,
        _ => {
            let exp = suffix
                .strip_prefix(['e', 'E'])
                .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e));
            match exp {
                Some(d) if !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()) => None,
                _ => Some(QUANTITY_TEXT),
            }
        }
    }
}

const QUANTITY_TEXT: &str = "a quantity is a number with an optional suffix: Ki, Mi, Gi, Ti, Pi, Ei (powers of 1024), n, u, m, k, M, G, T, P, E (powers of 1000) or an exponent (e3)";

/// True when `s` is standard base64 with padding (line breaks allowed), as
/// a `[]byte` field such as Secret `data` needs.
pub fn is_base64(s: &str) -> bool {
    use base64::Engine;
    let compact: String = s.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_each_kinds_rule() {
        assert_eq!(check_name(NameRule::Subdomain, "web.v1-a"), None);
        assert!(check_name(NameRule::Subdomain, "Web").is_some());
        assert!(check_name(NameRule::Subdomain, "web_app").is_some());
        assert!(check_name(NameRule::Subdomain, "-web").is_some());
        assert!(check_name(NameRule::Subdomain, "web.").is_some());
        assert!(check_name(NameRule::Subdomain, &"a".repeat(254)).is_some());
        assert!(check_name(NameRule::Label, "web.v1").is_some());
        assert_eq!(check_name(NameRule::Label, "1web"), None);
        assert!(check_name(NameRule::Label, &"a".repeat(64)).is_some());
        assert_eq!(
            check_name(NameRule::PathSegment, "system:controller:x"),
            None
        );
        assert!(check_name(NameRule::PathSegment, "a/b").is_some());
        assert!(check_name(NameRule::PathSegment, "..").is_some());
        assert!(check_name(NameRule::CronJob, &"a".repeat(53)).is_some());
        assert_eq!(check_name(NameRule::CronJob, &"a".repeat(52)), None);
        assert_eq!(name_rule("", "Service"), NameRule::Label);
        assert_eq!(name_rule("apps", "Deployment"), NameRule::Subdomain);
        assert_eq!(
            name_rule("rbac.authorization.k8s.io", "ClusterRole"),
            NameRule::PathSegment
        );
    }

    #[test]
    fn a_bad_name_gets_a_valid_suggestion() {
        assert_eq!(
            suggest_name(NameRule::Subdomain, "My_App.v1"),
            Some("my-app.v1".into())
        );
        assert_eq!(
            suggest_name(NameRule::Label, "My_App.v1"),
            Some("my-app-v1".into())
        );
        assert_eq!(suggest_name(NameRule::Label, "___"), None);
    }

    #[test]
    fn label_keys_and_values() {
        assert_eq!(qualified_name("app.kubernetes.io/name"), None);
        assert_eq!(qualified_name("Tier"), None);
        assert!(qualified_name("Example.com/x").is_some());
        assert!(qualified_name("/x").is_some());
        assert!(qualified_name("a/b/c").is_some());
        assert!(qualified_name("bad key").is_some());
        assert!(qualified_name(&"k".repeat(64)).is_some());
        assert_eq!(label_value(""), None);
        assert_eq!(label_value("v1.2_3-x"), None);
        assert!(label_value("a b").is_some());
        assert!(label_value("-a").is_some());
        assert!(label_value(&"v".repeat(64)).is_some());
    }

    #[test]
    fn quantities_follow_parse_quantity() {
        for ok in [
            "1", "0", "500m", "1.5Gi", "1Ki", "+1", "-1", ".5", "1.", "1e3", "1E-3", "100M",
            "1e+3", "Gi",
        ] {
            assert_eq!(quantity(ok), None, "{ok}");
        }
        for bad in ["", "1GB", "1K", "1e", "abc", "1 Gi", "1.2.3", "1k3"] {
            assert!(quantity(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn base64_is_standard_with_padding() {
        assert!(is_base64("aGVsbG8="));
        assert!(is_base64("aGVs\nbG8="));
        assert!(is_base64(""));
        assert!(!is_base64("hello!"));
        assert!(!is_base64("aGVsbG8"));
    }
}
