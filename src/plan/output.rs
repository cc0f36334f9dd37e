//! The plan as people and programs read it: coloured (or plain) text for a
//! terminal, Markdown parts for a pull-request comment, JSON for tools.
//!
//! Nothing here can print a secret: a changed secret arrives as
//! [`FieldChange::Sensitive`] and values are printed through their masked
//! serialisation.

use std::fmt::Write;

use anstyle::{AnsiColor, Style};
use similar::TextDiff;

use crate::diff::FieldChange;
use crate::resource::Action;
use crate::value::{Value, KNOWN_AFTER_APPLY};

use super::{Counts, EnvPlan, ModulePlan, Plan, PlanSource, ResourcePlan};

/// GitHub's limit on the length of one comment, in characters.
pub const COMMENT_LIMIT: usize = 65_535;

/// What a created secret renders as.
pub const SENSITIVE: &str = "(sensitive)";
/// What a changed secret renders as (the same words as every other diff).
pub use crate::diff::SENSITIVE_CHANGED;

/// The plan as JSON (schema: docs/plan-json.md), with a trailing newline.
pub fn json(plan: &Plan) -> String {
    let mut s = serde_json::to_string_pretty(plan).expect("a plan always serialises");
    s.push('\n');
    s
}

fn symbol(a: &Action) -> &'static str {
    match a {
        Action::Create => "+",
        Action::Update => "~",
        Action::Replace { .. } => "-/+",
        Action::Delete => "-",
        Action::NoOp => " ",
    }
}

fn verb(a: &Action) -> &'static str {
    match a {
        Action::Create => "create",
        Action::Update => "update",
        Action::Replace { .. } => "replace",
        Action::Delete => "delete",
        Action::NoOp => "no change",
    }
}

fn counts_line(c: &Counts) -> String {
    format!(
        "{} to create, {} to update, {} to replace, {} to delete, {} unchanged",
        c.create, c.update, c.replace, c.delete, c.no_op
    )
}

/// The counts of every environment of `plan`, added up.
pub fn total(plan: &Plan) -> Counts {
    let mut t = Counts::default();
    for e in &plan.environments {
        t.create += e.counts.create;
        t.update += e.counts.update;
        t.replace += e.counts.replace;
        t.delete += e.counts.delete;
        t.no_op += e.counts.no_op;
    }
    t
}

fn source_line(plan: &Plan, markdown: bool) -> String {
    let code = |s: &str| {
        if markdown {
            format!("`{s}`")
        } else {
            s.to_string()
        }
    };
    match &plan.source {
        PlanSource::Live => "compared with the live state".into(),
        PlanSource::Offline => "compared with nothing (offline: everything is a create)".into(),
        PlanSource::Revisions { base, head } => format!(
            "compared {} ({}) with {} ({})",
            code(&head.reference),
            code(short(&head.commit)),
            code(&base.reference),
            code(short(&base.commit)),
        ),
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

fn gate(e: &EnvPlan) -> String {
    let base = if e.waits_for.is_empty() {
        "no gate: starts first".to_string()
    } else {
        format!(
            "waits for {} (converged and healthy at the same commit)",
            e.waits_for.join(", ")
        )
    };
    if e.promotion.is_empty() {
        base
    } else {
        format!("{base}; then {}", e.promotion.join("; "))
    }
}

/// A value on one line: strings quoted, secrets masked, unknowns as
/// `(known after apply)`, maps and lists as compact JSON.
fn scalar(v: &Value) -> String {
    match v {
        Value::Unknown(_) => KNOWN_AFTER_APPLY.to_string(),
        Value::Sensitive(_) => SENSITIVE.to_string(),
        other => serde_json::to_string(other).expect("a value always serialises"),
    }
}

fn multiline(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| s.contains('\n'))
}

/// The lines of one field change, without indentation. The first element
/// of each pair is the diff marker (`+`, `-`, `~`, ` `) for colouring.
fn field_lines(c: &FieldChange, action: &Action) -> Vec<(char, String)> {
    match c {
        FieldChange::Sensitive { path } => {
            let what = if *action == Action::Create {
                SENSITIVE
            } else {
                SENSITIVE_CHANGED
            };
            let m = if *action == Action::Create { '+' } else { '~' };
            vec![(m, format!("{m} {path}: {what}"))]
        }
        FieldChange::Add { path, after } => match multiline(after) {
            Some(text) => {
                let mut out = vec![('+', format!("+ {path}: <<"))];
                out.extend(text.lines().map(|l| ('+', format!("+     {l}"))));
                out
            }
            None => vec![('+', format!("+ {path}: {}", scalar(after)))],
        },
        FieldChange::Remove { path, before } => {
            vec![('-', format!("- {path}: {}", scalar(before)))]
        }
        FieldChange::Change {
            path,
            before,
            after,
        } => match (before.as_str(), after.as_str()) {
            (Some(b), Some(a)) if b.contains('\n') || a.contains('\n') => {
                let mut out = vec![('~', format!("~ {path}:"))];
                let diff = TextDiff::from_lines(b, a);
                let udiff = diff.unified_diff().context_radius(3).to_string();
                for l in udiff.lines() {
                    let m = match l.chars().next() {
                        Some('+') => '+',
                        Some('-') => '-',
                        Some('@') => '@',
                        _ => ' ',
                    };
                    out.push((m, format!("    {l}")));
                }
                out
            }
            _ => vec![(
                '~',
                format!("~ {path}: {} -> {}", scalar(before), scalar(after)),
            )],
        },
    }
}

fn resource_header(r: &ResourcePlan) -> String {
    let mut s = format!(
        "{} {} ({} {}) step {}",
        symbol(&r.action),
        r.id,
        r.provider,
        r.kind,
        r.step
    );
    if let Some(x) = &r.external_id {
        let _ = write!(s, " [{x}]");
    }
    let _ = write!(s, ": {}", verb(&r.action));
    if let Action::Replace { reasons } = &r.action {
        let _ = write!(s, " because {}", reasons.join("; "));
    }
    s
}

/// The lines of one changed resource (header, then its fields indented).
fn resource_lines(r: &ResourcePlan) -> Vec<(char, String)> {
    let m = match r.action {
        Action::Create => '+',
        Action::Delete => '-',
        Action::Replace { .. } => '!',
        _ => '~',
    };
    let mut out = vec![(m, resource_header(r))];
    for c in &r.changes {
        for (m, l) in field_lines(c, &r.action) {
            out.push((m, format!("    {l}")));
        }
    }
    out
}

/// The lines of one changed resource as plain text (header, then its
/// fields indented), as the plan prints them.
pub fn resource_lines_plain(r: &ResourcePlan) -> Vec<String> {
    resource_lines(r).into_iter().map(|(_, l)| l).collect()
}

fn paint(color: bool, style: Style, s: &str) -> String {
    if color {
        format!("{}{s}{}", style.render(), style.render_reset())
    } else {
        s.to_string()
    }
}

fn style_of(m: char) -> Style {
    match m {
        '+' => AnsiColor::Green.on_default(),
        '-' => AnsiColor::Red.on_default(),
        '~' => AnsiColor::Yellow.on_default(),
        '!' => AnsiColor::Magenta.on_default().bold(),
        '@' => AnsiColor::Cyan.on_default(),
        _ => Style::new(),
    }
}

/// A problem report cut to fit one comment (at most 60,000 characters,
/// cut at a line), without backtick fences that would end the block.
pub fn truncate_report(report: &str) -> String {
    const MAX: usize = 60_000;
    let clean = report.replace("```", "'''");
    if clean.len() <= MAX {
        return clean.trim_end().to_string();
    }
    let mut end = MAX;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    let cut = clean[..end].rfind('\n').unwrap_or(end);
    format!(
        "{}\n… (cut; run `tidegate validate` for every problem)",
        &clean[..cut]
    )
}

/// The plan as text for a terminal; `color` adds ANSI colours.
pub fn text(plan: &Plan, color: bool) -> String {
    let bold = Style::new().bold();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}",
        paint(color, bold, "tidegate plan:"),
        source_line(plan, false)
    );
    for e in &plan.environments {
        out.push('\n');
        let _ = writeln!(
            out,
            "{} {} ({})",
            paint(color, bold, "environment"),
            paint(color, bold, &e.name),
            gate(e)
        );
        if e.owner != e.name {
            let _ = writeln!(out, "  owner: {}", e.owner);
        }
        let _ = writeln!(out, "  {}", counts_line(&e.counts));
        if let Some(t) = &e.target {
            for l in targeted_lines(t) {
                let _ = writeln!(out, "  {l}");
            }
        }
        for n in &e.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        for g in &e.guards {
            let _ = writeln!(out, "  {} {g}", paint(color, bold, "guard:"));
        }
        for m in &e.modules {
            if m.counts.changes() == 0 {
                continue;
            }
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "  module {}{}: {}",
                m.name,
                module_source(m),
                counts_line(&m.counts)
            );
            for r in m.resources.iter().filter(|r| r.action != Action::NoOp) {
                for (mark, line) in resource_lines(r) {
                    let _ = writeln!(out, "    {}", paint(color, style_of(mark), &line));
                }
            }
        }
        if !e.order.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "  order:");
            for s in &e.order {
                let _ = writeln!(out, "    {}. {}", s.step, s.resources.join(", "));
            }
        }
        write_policy_text(e, &mut out);
    }
    let t = total(plan);
    out.push('\n');
    let verdict = if t.changes() == 0 {
        "No changes.".to_string()
    } else {
        format!("Plan: {}.", counts_line(&t))
    };
    let _ = writeln!(out, "{}", paint(color, bold, &verdict));
    out
}

/// What a targeted plan says of its scope: the targets, then each change
/// it leaves out (at most 20 named).
fn targeted_lines(t: &super::target::Targeted) -> Vec<String> {
    const SHOWN: usize = 20;
    let mut out = vec![format!(
        "targeted: --target {} ({} resource(s) with their dependencies); nothing is pruned and \
         the environment is recorded as partial",
        t.targets.join(" --target "),
        t.in_scope
    )];
    if t.left_out.is_empty() {
        out.push(format!(
            "left out: no pending change ({} unchanged resource(s) outside the targets)",
            t.left_out_unchanged
        ));
        return out;
    }
    let named: Vec<String> = t
        .left_out
        .iter()
        .take(SHOWN)
        .map(|l| format!("{} ({})", l.id, l.action))
        .collect();
    let more = t.left_out.len().saturating_sub(SHOWN);
    out.push(format!(
        "left out: {} change(s) a full apply would make: {}{}",
        t.left_out.len(),
        named.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    ));
    out
}

fn module_source(m: &ModulePlan) -> String {
    if m.source.is_empty() {
        " (removed from Git)".into()
    } else {
        format!(" ({})", m.source)
    }
}

fn write_policy_text(e: &EnvPlan, out: &mut String) {
    for err in &e.policy_errors {
        let _ = writeln!(out, "  policy error: {err}");
    }
    if let Some(p) = &e.policy {
        out.push('\n');
        for l in p.render_text().lines() {
            let _ = writeln!(out, "  {l}");
        }
    }
}

/// A Markdown fence longer than any backtick run in `body`.
fn fence(body: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in body.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat(longest.max(2) + 1)
}

fn code_block(lines: &[String]) -> String {
    let body = lines.join("\n");
    let f = fence(&body);
    format!("{f}diff\n{body}\n{f}\n")
}

fn escape_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The plan as Markdown for a pull-request comment, split into parts of
/// at most `limit` characters (pass [`COMMENT_LIMIT`]); each part is valid
/// Markdown on its own (no code block or `<details>` spans two parts).
pub fn markdown_with_limit(plan: &Plan, limit: usize) -> Vec<String> {
    // Room for the part header ("## tidegate plan (part 12 of 34)").
    let budget = limit.saturating_sub(200).max(1000);
    let mut blocks: Vec<String> = vec![summary_markdown(plan)];
    for e in &plan.environments {
        let mut head = format!("### {} — {}\n\n", e.name, counts_line(&e.counts));
        let _ = writeln!(head, "Gate: {}.\n", gate(e));
        if let Some(t) = &e.target {
            for l in targeted_lines(t) {
                let _ = writeln!(head, "> {}\n", escape_cell(&l));
            }
        }
        for n in &e.notes {
            let _ = writeln!(head, "> {}\n", escape_cell(n));
        }
        for g in &e.guards {
            let _ = writeln!(
                head,
                "> [!WARNING]\n> **Guard** {}\n",
                escape_cell(&g.to_string())
            );
        }
        blocks.push(head);
        for m in &e.modules {
            if m.counts.changes() == 0 {
                continue;
            }
            blocks.extend(module_blocks(m, budget));
        }
        if !e.order.is_empty() {
            let mut s =
                String::from("**Order** (each step runs in parallel after the previous ones)\n\n");
            for st in &e.order {
                let ids: Vec<String> = st.resources.iter().map(|r| format!("`{r}`")).collect();
                let _ = writeln!(s, "{}. {}", st.step, ids.join(", "));
            }
            s.push('\n');
            blocks.extend(split_text(&s, budget));
        }
        let mut policy = String::new();
        for err in &e.policy_errors {
            let _ = writeln!(policy, "- ❌ policy block: {}", escape_cell(err));
        }
        if let Some(p) = &e.policy {
            if !p.is_empty() || !policy.is_empty() {
                policy.push_str(&p.render_markdown().replacen(
                    "### Policy",
                    &format!("#### Policy ({})", e.name),
                    1,
                ));
            }
        }
        if !policy.is_empty() {
            policy.push('\n');
            blocks.extend(split_text(&policy, budget));
        }
    }
    pack(blocks, budget)
}

/// [`markdown_with_limit`] with GitHub's comment limit.
pub fn markdown(plan: &Plan) -> Vec<String> {
    markdown_with_limit(plan, COMMENT_LIMIT)
}

fn summary_markdown(plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}\n", source_line(plan, true));
    s.push_str(
        "| Environment | Create | Update | Replace | Delete | Unchanged | Policy | Gate |\n",
    );
    s.push_str("|---|--:|--:|--:|--:|--:|---|---|\n");
    for e in &plan.environments {
        let c = &e.counts;
        let policy = if !e.policy_errors.is_empty() {
            "❌ invalid policy block".to_string()
        } else {
            match &e.policy {
                Some(p) if p.errors() > 0 => {
                    format!("❌ {} error(s), {} warning(s)", p.errors(), p.warnings())
                }
                Some(p) if p.warnings() > 0 => format!("⚠️ {} warning(s)", p.warnings()),
                Some(_) => "✅".to_string(),
                None => "—".to_string(),
            }
        };
        let mut gate = if e.waits_for.is_empty() {
            "—".to_string()
        } else {
            format!("after {}", e.waits_for.join(", "))
        };
        if !e.promotion.is_empty() {
            gate = format!("{gate}; {}", e.promotion.join("; ").replace('|', "\\|"));
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            e.name, c.create, c.update, c.replace, c.delete, c.no_op, policy, gate
        );
    }
    let t = total(plan);
    s.push('\n');
    if t.changes() == 0 {
        s.push_str("**No changes.**\n\n");
    } else {
        let _ = writeln!(s, "**Plan:** {}.\n", counts_line(&t));
    }
    s
}

/// One module as `<details>` blocks, each under `budget` characters: the
/// resources are packed into as few blocks as fit; a resource too large for
/// one block is cut at line boundaries into several.
fn module_blocks(m: &ModulePlan, budget: usize) -> Vec<String> {
    let summary = format!(
        "<b>{}</b>{}: {}",
        m.name,
        module_source(m),
        counts_line(&m.counts)
    );
    let overhead = summary.len() + 120;
    let room = budget.saturating_sub(overhead).max(200);
    // Chunks of lines, each under `room`.
    let mut chunks: Vec<Vec<String>> = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut size = 0;
    for r in m.resources.iter().filter(|r| r.action != Action::NoOp) {
        let lines: Vec<String> = resource_lines(r)
            .into_iter()
            .map(|(_, l)| md_line(&l, room))
            .collect();
        let len: usize = lines.iter().map(|l| l.chars().count() + 1).sum();
        if size + len > room && !current.is_empty() {
            chunks.push(std::mem::take(&mut current));
            size = 0;
        }
        for l in lines {
            let n = l.chars().count() + 1;
            if size + n > room && !current.is_empty() {
                chunks.push(std::mem::take(&mut current));
                size = 0;
            }
            size += n;
            current.push(l);
        }
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, lines)| {
            let part = if n > 1 {
                format!(" (continued {}/{n})", i + 1)
            } else {
                String::new()
            };
            format!(
                "<details><summary>{summary}{part}</summary>\n\n{}\n</details>\n\n",
                code_block(&lines)
            )
        })
        .collect()
}

/// Diff lines start with their marker so GitHub colours them; a line too
/// long for one block is cut.
fn md_line(l: &str, room: usize) -> String {
    let t = l.trim_start();
    let marker = match t.chars().next() {
        _ if t.starts_with("-/+") => '!',
        Some('+') => '+',
        Some('-') => '-',
        Some('~') | Some('@') => '!',
        _ => ' ',
    };
    let line = format!("{marker} {l}");
    if line.chars().count() > room / 2 {
        let cut: String = line.chars().take(room / 2).collect();
        format!("{cut} …(line cut)")
    } else {
        line
    }
}

/// Cuts plain Markdown (no code blocks) at line boundaries.
fn split_text(s: &str, budget: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for l in s.split_inclusive('\n') {
        if cur.chars().count() + l.chars().count() > budget && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.push_str(l);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Packs blocks into numbered parts under `budget` characters each.
fn pack(blocks: Vec<String>, budget: usize) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut size = 0;
    for b in blocks {
        let n = b.chars().count();
        if size + n > budget && !cur.is_empty() {
            parts.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += n;
        cur.push_str(&b);
    }
    if !cur.is_empty() || parts.is_empty() {
        parts.push(cur);
    }
    let total = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let title = if total > 1 {
                format!("## tidegate plan (part {} of {total})\n\n", i + 1)
            } else {
                "## tidegate plan\n\n".to_string()
            };
            let mut s = title + body.trim_end();
            s.push('\n');
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_outgrow_backticks_in_the_body() {
        assert_eq!(fence("plain"), "```");
        assert_eq!(fence("a ```` b"), "`````");
    }

    #[test]
    fn multi_line_strings_get_a_unified_diff() {
        let c = FieldChange::Change {
            path: "data.app.conf".into(),
            before: Value::String("a\nb\nc\n".into()),
            after: Value::String("a\nB\nc\n".into()),
        };
        let lines: Vec<String> = field_lines(&c, &Action::Update)
            .into_iter()
            .map(|(_, l)| l)
            .collect();
        let text = lines.join("\n");
        assert!(
            text.contains("-b") && text.contains("+B") && text.contains("@@"),
            "{text}"
        );
    }

    #[test]
    fn secrets_render_as_created_or_changed_only() {
        let c = FieldChange::Sensitive {
            path: "stringData.pw".into(),
        };
        assert_eq!(
            field_lines(&c, &Action::Create)[0].1,
            "+ stringData.pw: (sensitive)"
        );
        assert_eq!(
            field_lines(&c, &Action::Update)[0].1,
            "~ stringData.pw: (sensitive value changed)"
        );
    }
}
