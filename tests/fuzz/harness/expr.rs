//! Fuzzes the `${...}` reference parser and evaluator (`tidegate::expr`).
//!
//! Input: one template string (UTF-8; other inputs are skipped).
//!
//! Checks, besides no panic:
//! - a string without `${` is one literal, unchanged;
//! - parsing is stable: printing the parts back (literals with `${`
//!   escaped as `$${`, references as `${scope.path}`) and parsing again
//!   gives the same parts;
//! - evaluation against a resolver returning every kind of value either
//!   succeeds or fails with an error, and a whole-string reference keeps the
//!   resolved value's type.
//!
//! The body of the `expr` fuzz target, kept apart from libFuzzer so the
//! stable test suite replays the committed corpus through the same code
//! (`tests/integration/fuzz_corpus.rs`).

use tidegate::expr::{self, Part, Ref, Resolve};
use tidegate::sensitive::Sensitive;
use tidegate::value::Value;

/// Answers with a value whose kind depends on the reference, so every arm
/// of the interpolation is reached.
struct AnyKind;

impl Resolve for AnyKind {
    fn resolve(&self, r: &Ref) -> expr::Result<Value> {
        let n: usize = r.path.iter().map(|s| s.len()).sum::<usize>() + r.path.len();
        Ok(match n % 9 {
            0 => Value::Int(-(n as i64)),
            1 => Value::String(r.to_string()),
            2 => Value::Sensitive(Sensitive::from_string(format!("s{n}"))),
            3 => Value::Unknown(r.to_string()),
            4 => Value::Float(f64::NAN),
            5 => Value::Bool(n.is_multiple_of(2)),
            6 => Value::List(vec![Value::Null]),
            7 => Value::Null,
            _ => {
                return Err(expr::Error::Unresolved {
                    reference: r.to_string(),
                    message: "unknown".into(),
                })
            }
        })
    }
}

fn print(parts: &[Part]) -> String {
    let mut s = String::new();
    for p in parts {
        match p {
            Part::Lit(l) => s.push_str(&l.replace("${", "$${")),
            Part::Ref(r) => {
                s.push_str("${");
                s.push_str(&r.to_string());
                s.push('}');
            }
        }
    }
    s
}

/// Runs one input; panics on a finding.
pub fn run(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = expr::parse(s);
    if !expr::has_refs(s) {
        let want: Vec<Part> = if s.is_empty() {
            vec![]
        } else {
            vec![Part::Lit(s.to_string())]
        };
        assert_eq!(parsed.as_ref().ok(), Some(&want), "no `${{` in {s:?}");
    }
    match &parsed {
        Ok(parts) => {
            let printed = print(parts);
            let again = expr::parse(&printed);
            assert_eq!(
                again.as_ref().ok(),
                Some(parts),
                "{s:?} printed as {printed:?} parses differently"
            );
            for p in parts {
                if let Part::Ref(r) = p {
                    for n in 0..=r.path.len() + 1 {
                        let _ = r.rest(n);
                    }
                    let _ = r.segments();
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match expr::eval_str(s, &AnyKind) {
        Ok(v) => {
            if let Ok([Part::Ref(r)]) = parsed.as_deref() {
                let want = AnyKind.resolve(r).expect("resolved once already");
                assert_eq!(expr::kind_name(&v), expr::kind_name(&want));
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    // The same string inside a value tree: refs() and eval() walk it.
    let tree = Value::List(vec![Value::String(s.to_string())]);
    let _ = expr::refs(&tree, "spec");
    let _ = expr::eval(&tree, "spec", &AnyKind);
}
