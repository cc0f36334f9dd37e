//! Diagnostics: every problem found in a run, each pointing at
//! file:line:column with what is wrong and how to fix it.
//!
//! Loading never stops at the first problem: each stage pushes what it
//! finds into a [`Diagnostics`] list, and the caller reports them all at
//! once, in a stable order (file, line, column, message), so the same input
//! always yields the same report.

use std::fmt;

use serde::Serialize;

use crate::value::Origin;

/// How much a problem matters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The input is wrong: nothing is applied.
    #[default]
    Error,
    /// Worth knowing, and the run goes on (a Kubernetes object that could
    /// not be checked).
    Warning,
}

impl Severity {
    pub fn is_error(&self) -> bool {
        *self == Severity::Error
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem in the input.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    /// Where the problem is.
    #[serde(flatten)]
    pub origin: Origin,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
    /// Errors are the default and not written out in JSON.
    #[serde(skip_serializing_if = "Severity::is_error")]
    pub severity: Severity,
}

impl Diagnostic {
    /// An error at `origin`.
    pub fn new(origin: Origin, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Diagnostic {
            origin,
            message: message.into(),
            fix: fix.into(),
            severity: Severity::Error,
        }
    }

    /// A warning at `origin`.
    pub fn warning(origin: Origin, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::new(origin, message, fix)
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity.is_error()
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.origin, self.severity, self.message)?;
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// The known name closest to `name` by edit distance, if close enough.
pub fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Every diagnostic of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Records one problem.
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    /// Records one problem at `origin`.
    pub fn error(&mut self, origin: &Origin, message: impl Into<String>, fix: impl Into<String>) {
        self.push(Diagnostic::new(origin.clone(), message, fix));
    }

    /// Records a warning at `origin`.
    pub fn warning(&mut self, origin: &Origin, message: impl Into<String>, fix: impl Into<String>) {
        self.push(Diagnostic::warning(origin.clone(), message, fix));
    }

    /// Takes over all of `other`'s problems.
    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    /// True when nothing was found (no error and no warning).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// True when an error was found (warnings alone do not count).
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    /// How many problems were found.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The problems in report order (file, line, column, message), without
    /// duplicates.
    pub fn sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort();
        self.items.dedup();
        self.items
    }

    /// The problems in the order they were found.
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }
}

/// The report of a failed run: every diagnostic (errors, and the warnings
/// found beside them), sorted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report(pub Vec<Diagnostic>);

impl Report {
    /// Sorts and wraps a list of diagnostics.
    pub fn new(d: Diagnostics) -> Self {
        Report(d.sorted())
    }

    /// How many errors (not warnings) the report holds.
    pub fn errors(&self) -> usize {
        self.0.iter().filter(|d| d.is_error()).count()
    }

    /// `N error(s)`, and `, M warning(s)` when there are any.
    pub fn counts(&self) -> String {
        let warnings = self.0.len() - self.errors();
        match warnings {
            0 => format!("{} error(s)", self.errors()),
            w => format!("{} error(s), {w} warning(s)", self.errors()),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        f.write_str(&self.counts())
    }
}

impl std::error::Error for Report {}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(file: &str, line: usize) -> Origin {
        Origin {
            file: file.into(),
            line,
            column: 1,
        }
    }

    #[test]
    fn reports_in_stable_order_without_duplicates() {
        let mut d = Diagnostics::default();
        d.error(&at("b.yaml", 1), "late", "");
        d.error(&at("a.yaml", 9), "second", "");
        d.error(&at("a.yaml", 2), "first", "do x");
        d.error(&at("a.yaml", 2), "first", "do x");
        let r = Report::new(d);
        assert_eq!(
            r.to_string(),
            "a.yaml:2:1: error: first\n  fix: do x\na.yaml:9:1: error: second\nb.yaml:1:1: error: late\n3 error(s)"
        );
    }
}
