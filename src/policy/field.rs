//! Reading fields out of a resource body without mistaking "not known
//! yet" for "missing": a check that cannot see a value stays silent rather
//! than raise a finding that the apply would prove wrong.

use crate::sensitive::MASK;
use crate::value::Value;

/// What a lookup found.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Field<'a> {
    /// Absent or `null` (or below something that is not a map).
    Missing,
    /// The value, or one of the maps on the way to it, is known only after
    /// apply.
    Unknown,
    Present(&'a Value),
}

/// Walks map keys from `v`.
pub(crate) fn at<'a>(v: &'a Value, keys: &[&str]) -> Field<'a> {
    let mut cur = v;
    for key in keys {
        cur = match cur {
            Value::Unknown(_) => return Field::Unknown,
            Value::Map(m) => match m.get(*key) {
                Some(next) => next,
                None => return Field::Missing,
            },
            _ => return Field::Missing,
        };
    }
    match cur {
        Value::Unknown(_) => Field::Unknown,
        Value::Null => Field::Missing,
        other => Field::Present(other),
    }
}

impl<'a> Field<'a> {
    /// The list items; `None` when unknown. Missing or not a list is empty.
    pub(crate) fn items(self) -> Option<&'a [Value]> {
        match self {
            Field::Unknown => None,
            Field::Present(Value::List(l)) => Some(l),
            _ => Some(&[]),
        }
    }

    /// True when the field is present and is the boolean `want`; `None`
    /// when unknown.
    pub(crate) fn is_bool(self, want: bool) -> Option<bool> {
        match self {
            Field::Unknown => None,
            Field::Present(Value::Bool(b)) => Some(*b == want),
            _ => Some(false),
        }
    }
}

/// Text of a string leaf, for checking and for showing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Text<'a> {
    /// The content, for comparisons only.
    pub(crate) raw: &'a str,
    secret: bool,
}

impl<'a> Text<'a> {
    /// Reads a string or a sensitive string; other leaves give `None`.
    pub(crate) fn of(v: &'a Value) -> Option<Text<'a>> {
        match v {
            Value::String(s) => Some(Text {
                raw: s,
                secret: false,
            }),
            Value::Sensitive(s) => s.expose_str().map(|raw| Text { raw, secret: true }),
            _ => None,
        }
    }

    /// What a message may print: the text, or the mask for a secret.
    pub(crate) fn shown(&self) -> &'a str {
        if self.secret {
            MASK
        } else {
            self.raw
        }
    }
}

/// The name of a value for messages (`web`), masked when sensitive, or
/// `fallback` when it is not a string.
pub(crate) fn name_or(v: Field<'_>, fallback: String) -> String {
    match v {
        Field::Present(v) => Text::of(v).map_or(fallback, |t| t.shown().to_string()),
        _ => fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensitive::Sensitive;

    fn body() -> Value {
        Value::from_json(serde_json::json!({"a": {"b": true, "n": null}, "l": [1]}))
    }

    #[test]
    fn lookups_tell_missing_from_unknown() {
        let mut v = body();
        assert!(matches!(
            at(&v, &["a", "b"]),
            Field::Present(Value::Bool(true))
        ));
        assert!(matches!(at(&v, &["a", "n"]), Field::Missing));
        assert!(matches!(at(&v, &["a", "x", "y"]), Field::Missing));
        if let Value::Map(m) = &mut v {
            m.insert("a".into(), Value::Unknown("module.x.y".into()));
        }
        assert!(matches!(at(&v, &["a", "b"]), Field::Unknown));
        assert_eq!(at(&v, &["l"]).items().map(<[Value]>::len), Some(1));
        assert_eq!(at(&v, &["a"]).items(), None);
        assert_eq!(at(&v, &["a"]).is_bool(true), None);
    }

    #[test]
    fn sensitive_text_is_checked_but_masked() {
        let v = Value::Sensitive(Sensitive::from_string("hunter2".into()));
        let t = Text::of(&v).unwrap();
        assert_eq!(t.raw, "hunter2");
        assert_eq!(t.shown(), MASK);
        assert_eq!(name_or(Field::Present(&v), "x".into()), MASK);
    }
}
