//! Log setup shared by every command: `RUST_LOG` (or a quiet default),
//! with the libraries that can write request bodies capped, so that no
//! setting puts a secret in a log.
//!
//! What a body can hold: RunInstances carries the user data (a secret
//! rendered into it) base64-encoded in its form body; a Secret's apply
//! carries its data. Three libraries can print bodies at some level:
//! `aws-sigv4` (the canonical request at trace, and the body itself when
//! `LOG_SIGNABLE_BODY=true`), the smithy orchestrator (the whole request at
//! trace) and the HTTP stacks under kube and the SDK (`hyper`, `h2`).
//! Their directives are replaced by the caps below whatever `RUST_LOG`
//! says, and `LOG_SIGNABLE_BODY` is removed from the process environment
//! before any client exists.

use tracing_subscriber::EnvFilter;

/// The highest level each body-printing target may log at; a `RUST_LOG`
/// directive for one of them (or a module below it) is dropped.
pub const CAPS: &[(&str, &str)] = &[
    ("aws_sigv4", "off"),
    ("aws_smithy_runtime", "debug"),
    ("aws_smithy_runtime_api", "debug"),
    ("aws_smithy_http_client", "debug"),
    ("aws_smithy_http", "debug"),
    ("hyper", "debug"),
    ("hyper_util", "debug"),
    ("h2", "debug"),
    ("kube_client", "debug"),
    ("tower_http", "debug"),
];

/// The variable that makes `aws-sigv4` log request bodies.
pub const SIGNABLE_BODY_VAR: &str = "LOG_SIGNABLE_BODY";

static SCRUBBED: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Removes [`SIGNABLE_BODY_VAR`] from the process environment; call first
/// in `main`, while the process has one thread. [`warn_scrubbed`] logs
/// that it did, once logging is set up.
pub fn scrub_process_env() {
    if std::env::var_os(SIGNABLE_BODY_VAR).is_some() {
        std::env::remove_var(SIGNABLE_BODY_VAR);
        let _ = SCRUBBED.set(SIGNABLE_BODY_VAR);
    }
}

/// Logs one warning when [`scrub_process_env`] removed a variable.
pub fn warn_scrubbed() {
    if let Some(var) = SCRUBBED.get() {
        tracing::warn!(
            "{var} is ignored: it would log request bodies, which carry secrets (user data, Secret data)"
        );
    }
}

/// The directives of `rust_log` (or `default` when it is unset or empty)
/// without any that would lift a cap, followed by a cap for each capped
/// target that the kept directives would log above its cap. A cap only
/// ever lowers: a target the filter logs at `warn` stays at `warn`.
pub fn directives(rust_log: Option<&str>, default: &str) -> String {
    let given = rust_log.map(str::trim).filter(|s| !s.is_empty());
    let kept: Vec<&str> = given
        .unwrap_or(default)
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !capped(d))
        .collect();
    let mut out: Vec<String> = kept.iter().map(|d| d.to_string()).collect();
    for (target, cap) in CAPS {
        let Some(cap_rank) = rank(cap) else { continue };
        let wanted = kept.iter().filter_map(|d| reach(d, target)).max();
        if wanted.is_some_and(|w| w > cap_rank) {
            out.push(format!("{target}={cap}"));
        }
    }
    out.join(",")
}

/// How verbosely directive `d` may log `target`, when it may: a bare level,
/// a directive whose target is a prefix of `target` (tracing matches by
/// prefix), or one with a span filter (it may apply anywhere). A directive
/// without a level means `trace`.
fn reach(d: &str, target: &str) -> Option<u8> {
    let Some((head, level)) = d.rsplit_once('=') else {
        // `warn` (every target), or `hyper` (that target at trace).
        return rank(d).or_else(|| target.starts_with(d).then_some(5));
    };
    let spans = head.contains('[');
    let t = &head[..head.find('[').unwrap_or(head.len())];
    (spans || target.starts_with(t)).then(|| rank(level.trim()).unwrap_or(5))
}

/// True when directive `d` names a capped target or a module below one at
/// a level above its cap (a directive that quietens one is kept).
fn capped(d: &str) -> bool {
    let end = d.find(['[', '=']).unwrap_or(d.len());
    let target = &d[..end];
    let level = d.rsplit_once('=').map(|(_, l)| l.trim());
    CAPS.iter().any(|(t, cap)| {
        let below = target == *t
            || target
                .strip_prefix(t)
                .is_some_and(|rest| rest.starts_with("::"));
        let quietens = level
            .and_then(rank)
            .zip(rank(cap))
            .is_some_and(|(l, c)| l <= c);
        below && !quietens
    })
}

/// Verbosity of a level name (`off` least), `None` when not one.
fn rank(level: &str) -> Option<u8> {
    ["off", "error", "warn", "info", "debug", "trace"]
        .iter()
        .position(|l| level.eq_ignore_ascii_case(l))
        .map(|p| p as u8)
}

/// The filter for a command whose quiet default level is `level`.
pub fn filter(level: &str) -> EnvFilter {
    let rust_log = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let default = crate::provider::kubernetes::quiet_log_filter(level);
    let text = directives(rust_log.as_deref(), &default);
    EnvFilter::try_new(&text).unwrap_or_else(|_| {
        // An unparsable RUST_LOG: the default, still capped.
        EnvFilter::new(directives(None, &default))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_replace_what_rust_log_says_of_capped_targets() {
        let d = directives(
            Some("trace,aws_sigv4=trace,aws_sigv4::sign[x]=trace,hyper_util::client=trace,tidegate=debug"),
            "warn",
        );
        assert!(d.starts_with("trace,tidegate=debug,aws_sigv4=off,"), "{d}");
        assert!(!d.contains("=trace"), "{d}");
        for (t, l) in CAPS {
            assert!(d.contains(&format!(",{t}={l}")), "{d}");
        }
        // A target that only shares a prefix is not capped.
        assert_eq!(directives(Some("hyperion=trace"), "warn"), "hyperion=trace");
        // A directive that quietens a capped target is kept (the default
        // silences kube's client builder), and nothing is raised.
        assert_eq!(
            directives(None, "info,kube_client::client::builder=off,h2=warn"),
            "info,kube_client::client::builder=off,h2=warn,aws_sigv4=off"
        );
        assert_eq!(
            directives(
                Some("aws_smithy_runtime=info,hyper=trace,aws_sigv4=error"),
                "warn"
            ),
            "aws_smithy_runtime=info"
        );
        // Unset or empty: the default; caps only where it would log above
        // them.
        assert_eq!(directives(None, "warn"), "warn,aws_sigv4=off");
        assert_eq!(directives(Some("  "), "info"), "info,aws_sigv4=off");
        // A prefix reaches every target it starts (tracing's matching).
        assert_eq!(
            directives(Some("aws=trace"), "warn"),
            "aws=trace,aws_sigv4=off,aws_smithy_runtime=debug,aws_smithy_runtime_api=debug,aws_smithy_http_client=debug,aws_smithy_http=debug"
        );
        let d = directives(Some("debug"), "warn");
        assert!(
            d.contains("aws_sigv4=off") && !d.contains("hyper=debug"),
            "{d}"
        );
        EnvFilter::try_new(directives(Some("trace"), "warn")).unwrap();
    }

    #[test]
    fn the_filter_built_from_trace_has_every_cap() {
        let f = EnvFilter::try_new(directives(Some("trace"), "warn")).unwrap();
        let text = f.to_string();
        for (t, l) in CAPS {
            assert!(text.contains(&format!("{t}={l}")), "{text}");
        }
    }
}
