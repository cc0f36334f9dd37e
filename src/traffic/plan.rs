//! The pure part of a switch: which weights a stepped switch goes
//! through, and the names of the objects an Ingress entry point is made
//! of.

/// `--steps 10,50,100` as percentages: each from 1 to 100, strictly
/// increasing; a last step below 100 gets 100 appended (a switch always
/// ends with all traffic on the copy).
pub fn parse_steps(text: &str) -> Result<Vec<u8>, String> {
    let mut out: Vec<u8> = Vec::new();
    for part in text.split(',') {
        let part = part.trim().trim_end_matches('%');
        let w: u8 = part
            .parse()
            .ok()
            .filter(|w| (1..=100).contains(w))
            .ok_or_else(|| {
                format!("--steps {text}: `{part}` is not a percentage from 1 to 100; write e.g. `--steps 10,50,100`")
            })?;
        if out.last().is_some_and(|&l| l >= w) {
            return Err(format!(
                "--steps {text}: the weights must increase ({} then {w}); write e.g. `--steps 10,50,100`",
                out.last().copied().unwrap_or_default()
            ));
        }
        out.push(w);
    }
    if out.last() != Some(&100) {
        out.push(100);
    }
    Ok(out)
}

/// The weights the copy is given, in order, ending with 100: `steps` when
/// the shift can be weighted (every entry point is an Ingress and some
/// copy is live to shift from), else one step of 100.
pub fn weights(steps: &[u8], weighted: bool) -> Vec<u8> {
    if weighted && !steps.is_empty() {
        steps.to_vec()
    } else {
        vec![100]
    }
}

/// The ExternalName Service in the entry point's namespace that stands
/// for `copy`'s Service (an Ingress backend must be in the Ingress'
/// namespace): `<ingress name>-<copy>`, within 63 characters (a longer
/// name is cut and ends with a hash of the whole).
pub fn backend_name(ingress: &str, copy: &str) -> String {
    let full = format!("{ingress}-{copy}");
    if full.len() <= 63 {
        return full;
    }
    use sha2::Digest;
    let hash = sha2::Sha256::digest(full.as_bytes());
    let hex: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
    let head = full[..54].trim_end_matches('-');
    format!("{head}-{hex}")
}

/// The canary Ingress of an entry point (`<ingress name>-canary`).
pub fn canary_name(ingress: &str) -> String {
    format!("{ingress}-canary")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_increasing_percentages_ending_at_100() {
        assert_eq!(parse_steps("10,50,100").unwrap(), [10, 50, 100]);
        assert_eq!(parse_steps("25, 50%").unwrap(), [25, 50, 100]);
        assert_eq!(parse_steps("100").unwrap(), [100]);
        for bad in ["0,100", "10,10", "50,20", "abc", "101", ""] {
            let e = parse_steps(bad).unwrap_err();
            assert!(e.contains("--steps"), "{bad}: {e}");
        }
    }

    #[test]
    fn only_a_weighted_shift_takes_steps() {
        assert_eq!(weights(&[10, 50, 100], true), [10, 50, 100]);
        assert_eq!(weights(&[10, 50, 100], false), [100]);
        assert_eq!(weights(&[], true), [100]);
    }

    #[test]
    fn backend_names_stay_within_63_characters() {
        assert_eq!(backend_name("web", "prod-green"), "web-prod-green");
        let long = backend_name(&"a".repeat(40), &"b".repeat(40));
        assert!(long.len() <= 63, "{long}");
        assert_ne!(long, backend_name(&"a".repeat(40), &"b".repeat(39)));
        assert_eq!(canary_name("web"), "web-canary");
    }
}
