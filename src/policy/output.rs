//! The report as people read it: one line per finding for terminals and
//! CI logs, a Markdown section for the pull-request preview.

use std::fmt::Write;

use super::{Report, Severity};

impl Report {
    /// One line per finding
    /// (`file:line:col: error[check-id] module.name: message (fix: ...)`),
    /// then waived findings, expired waivers, notes, and a summary line.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let _ = writeln!(
                out,
                "{}: {}[{}] {}: {} (fix: {})",
                f.origin, f.severity, f.check, f.resource, f.message, f.fix
            );
            if let Some(w) = f.written_at() {
                let _ = writeln!(out, "  {w}");
            }
        }
        for w in &self.waived {
            let f = &w.finding;
            let _ = writeln!(
                out,
                "{}: waived[{}] {}: {} (waiver at {}: {}{})",
                f.origin,
                f.check,
                f.resource,
                f.message,
                w.waiver_origin,
                w.reason,
                w.expires
                    .map(|d| format!("; expires {d}"))
                    .unwrap_or_default()
            );
        }
        for e in &self.expired_waivers {
            let _ = writeln!(
                out,
                "{}: expired-waiver[{}] {}: waiver expired on {} and no longer applies (renew `expires` or fix the finding)",
                e.origin, e.check, e.resource, e.expires
            );
        }
        for n in &self.notes {
            match &n.origin {
                Some(o) => writeln!(out, "{o}: note: {}", n.message),
                None => writeln!(out, "note: {}", n.message),
            }
            .expect("writing to a String cannot fail");
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// `policy: 2 errors, 1 warning, 3 waived — apply blocked`.
    pub fn summary(&self) -> String {
        format!("policy: {} — {}", self.counts(), self.verdict())
    }

    /// `2 errors, 1 warning, 3 waived[, 1 expired waiver]`.
    fn counts(&self) -> String {
        let (e, w) = (self.errors(), self.warnings());
        let mut s = format!(
            "{e} {}, {w} {}, {} waived",
            plural(e, "error"),
            plural(w, "warning"),
            self.waived.len()
        );
        let x = self.expired_waivers.len();
        if x > 0 {
            let _ = write!(s, ", {x} expired {}", plural(x, "waiver"));
        }
        s
    }

    fn verdict(&self) -> &'static str {
        if self.blocks_apply() {
            "apply blocked"
        } else {
            "apply allowed"
        }
    }

    /// A Markdown section (`### Policy`) with a table of findings, the
    /// waivers in force, expired waivers and notes, for the plan preview.
    pub fn render_markdown(&self) -> String {
        let mut out = String::from("### Policy\n\n");
        let _ = writeln!(out, "**{}** — {}\n", self.counts(), self.verdict());
        if !self.findings.is_empty() {
            out.push_str(
                "| | Check | Resource | Where | Finding | Fix |\n|---|---|---|---|---|---|\n",
            );
            for f in &self.findings {
                let icon = match f.severity {
                    Severity::Error => "❌ error",
                    _ => "⚠️ warning",
                };
                let written = match f.trace.last() {
                    Some(last) => format!(" (value written at `{}`)", last.origin),
                    None => String::new(),
                };
                let _ = writeln!(
                    out,
                    "| {icon} | `{}` | `{}` | `{}`{written} | {} | {} |",
                    f.check,
                    f.resource,
                    f.origin,
                    cell(&f.message),
                    cell(&f.fix)
                );
            }
            out.push('\n');
        }
        if !self.waived.is_empty() {
            out.push_str("**Waivers in force**\n\n| Check | Resource | Reason | Expires | Waiver |\n|---|---|---|---|---|\n");
            for w in &self.waived {
                let _ = writeln!(
                    out,
                    "| `{}` | `{}` | {} | {} | `{}` |",
                    w.finding.check,
                    w.finding.resource,
                    cell(&w.reason),
                    w.expires.map_or("never".to_string(), |d| d.to_string()),
                    w.waiver_origin
                );
            }
            out.push('\n');
        }
        if !self.expired_waivers.is_empty() {
            out.push_str("**Expired waivers** (no longer applied)\n\n");
            for e in &self.expired_waivers {
                let _ = writeln!(
                    out,
                    "- `{}` on `{}` expired {} (`{}`): {}",
                    e.check,
                    e.resource,
                    e.expires,
                    e.origin,
                    cell(&e.reason)
                );
            }
            out.push('\n');
        }
        for n in &self.notes {
            let _ = writeln!(out, "> {}", cell(&n.message));
        }
        out
    }
}

/// The check table as text, for `tidegate policy --list`: id, what it
/// looks at, why, and how to fix.
pub fn render_check_list() -> String {
    let mut out = String::new();
    for c in super::checks() {
        let _ = writeln!(
            out,
            "{}\n  applies to: {}\n  why: {}\n  fix: {}",
            c.id, c.applies_to, c.rationale, c.fix
        );
    }
    out
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

/// Text safe inside a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}
