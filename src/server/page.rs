//! The status page: one self-contained HTML document (inline CSS and SVG,
//! no scripts, no external assets) rendered from [`Status`]: the
//! environments in promotion order with commit, health, last reconcile,
//! drift and gate, the last entries of each environment's audit history,
//! and a picture of the dependency graph (levels, edges) drawn on the
//! server. Every text is HTML-escaped; nothing on it comes
//! from a secret.

use std::collections::HashMap;
use std::fmt::Write;

use crate::reconcile::driver::{EnvGraph, EnvStatus, Status};
use crate::reconcile::{EnvHealth, Gate};
use crate::state::history::Outcome as HistoryOutcome;

/// Graphs with more resources than this are listed, not drawn.
const MAX_DRAWN: usize = 400;

/// The page for `status`, drawing the graph of `env` (default: the first
/// environment).
pub fn render(status: &Status, env: Option<&str>) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let commit = status.commit.as_deref().map_or("none yet", short);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"10\"><title>tidegate · {}</title><style>{CSS}</style></head><body>\
         <header><h1>tidegate</h1><p><code>{}</code> @ <code>{}</code> · commit <code>{}</code> · {}{}{}</p></header>",
        esc(commit),
        esc(&status.remote),
        esc(&status.reference),
        esc(commit),
        if status.ready { "<span class=ok>ready</span>" } else { "<span class=warn>not ready</span>" },
        status.identity.as_deref().map(|i| format!(" · replica <code>{}</code>", esc(i))).unwrap_or_default(),
        if status.dry_run { " · <span class=warn>dry run</span>" } else { "" },
    );
    if status.stopping {
        h.push_str("<p class=banner>Shutting down: no new work is started.</p>");
    }
    if let Some(e) = &status.source_error {
        let _ = write!(h, "<p class=banner>Git source: {}</p>", esc(e));
    }
    if let Some(s) = &status.signature {
        let _ = write!(h, "<p>Commit signature: {}</p>", esc(s));
    }
    if let Some(e) = &status.load_error {
        let c = status.rejected_commit.as_deref().map_or("", short);
        let _ = write!(
            h,
            "<div class=banner><p>Commit <code>{}</code> does not load; nothing from it is applied:</p><pre>{}</pre></div>",
            esc(c),
            esc(e)
        );
    }
    h.push_str("<h2>Environments</h2>");
    pipeline(&mut h, &status.environments);
    table(&mut h, status);
    previews(&mut h, status);
    traffic(&mut h, status);
    history(&mut h, status);
    graph(&mut h, status, env);
    h.push_str("</body></html>\n");
    h
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2433;background:#fafbfc}\
h1{margin:0;font-size:1.4em}header p{margin:.2em 0 1em;color:#555}code{font:12px ui-monospace,monospace}\
table{border-collapse:collapse;width:100%;background:#fff}th,td{border:1px solid #dde;padding:.35em .6em;text-align:left;vertical-align:top}\
th{background:#f0f2f5}.ok{color:#17803d;font-weight:600}.warn{color:#a15c00;font-weight:600}.bad{color:#b42318;font-weight:600}\
.banner{background:#fff4e5;border:1px solid #f5c27a;padding:.5em .8em}pre{white-space:pre-wrap;font-size:12px}\
svg{background:#fff;border:1px solid #dde;max-width:100%;height:auto}nav a{margin-right:.8em}";

fn short(c: &str) -> &str {
    c.get(..12).unwrap_or(c)
}

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Fill colour and caption of an environment box.
fn look(e: &EnvStatus) -> (&'static str, String) {
    match &e.gate {
        Gate::Converged if e.last.as_ref().is_some_and(|r| !r.drift.is_empty()) => {
            ("#fde68a", "converged, drifted".into())
        }
        Gate::Converged => ("#bbf7d0", "converged".into()),
        Gate::Running { mode, .. } => ("#bfdbfe", format!("running ({})", mode.label())),
        Gate::Waiting { on: Some(on), .. } => ("#e5e7eb", format!("waiting for {on}")),
        Gate::Waiting { reason, .. } => ("#fef3c7", format!("waiting: {reason}")),
        Gate::BackingOff { attempt, .. } => ("#fecaca", format!("failed ×{attempt}, retrying")),
        Gate::Suspended => ("#fef3c7", "suspended".into()),
        Gate::NotHeld => ("#f3f4f6", "held by another replica".into()),
        Gate::Open => ("#e0f2fe", "starting".into()),
        Gate::NoCommit | Gate::Unknown => ("#f3f4f6", "no commit".into()),
    }
}

/// The environments left to right in promotion order, arrows for `after`.
fn pipeline(h: &mut String, envs: &[EnvStatus]) {
    let (w, gap, bh) = (170, 50, 64);
    let width = envs.len().max(1) * (w + gap) + 10;
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"environments in promotion order\" \
         width=\"{width}\" height=\"{}\" viewBox=\"0 0 {width} {}\" class=\"pipeline\">\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\">\
         <path d=\"M0,0L10,5L0,10z\" fill=\"#667\"/></marker></defs>",
        bh + 30,
        bh + 30
    );
    let x_of: HashMap<&str, usize> = envs
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name.as_str(), 10 + i * (w + gap)))
        .collect();
    for e in envs {
        let x = x_of[e.name.as_str()];
        for a in &e.after {
            if let Some(ax) = x_of.get(a.as_str()) {
                let _ = write!(
                    h,
                    "<path d=\"M{},{} C{},{} {},{} {},{}\" stroke=\"#667\" fill=\"none\" marker-end=\"url(#arrow)\"/>",
                    ax + w,
                    15 + bh / 2,
                    ax + w + gap / 2,
                    15 + bh / 2,
                    x - gap / 2,
                    15 + bh / 2,
                    x - 2,
                    15 + bh / 2
                );
            }
        }
        let (fill, caption) = look(e);
        let dash = if e.held {
            ""
        } else {
            " stroke-dasharray=\"4 3\""
        };
        let commit = e
            .last_good
            .as_deref()
            .map_or("—", |c| c.get(..8).unwrap_or(c));
        let _ = write!(
            h,
            "<g class=\"env\" data-env=\"{n}\"><rect x=\"{x}\" y=\"15\" width=\"{w}\" height=\"{bh}\" rx=\"8\" fill=\"{fill}\" stroke=\"#556\"{dash}/>\
             <text x=\"{tx}\" y=\"36\" text-anchor=\"middle\" font-weight=\"bold\">{n}</text>\
             <text x=\"{tx}\" y=\"54\" text-anchor=\"middle\" font-size=\"12\">{c}</text>\
             <text x=\"{tx}\" y=\"70\" text-anchor=\"middle\" font-size=\"11\">{cap}</text></g>",
            n = esc(&e.name),
            tx = x + w / 2,
            c = esc(commit),
            cap = esc(&caption),
        );
    }
    h.push_str("</svg>");
}

fn ago(unix: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let s = now.saturating_sub(unix);
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

fn table(h: &mut String, status: &Status) {
    h.push_str(
        "<table><thead><tr><th>environment</th><th>commit</th><th>health</th><th>last reconcile</th>\
         <th>drift</th><th>gate</th><th>changes</th></tr></thead><tbody>",
    );
    for e in &status.environments {
        let commit = e.last_good.as_deref().map_or("—".to_string(), |c| {
            format!("<code>{}</code>", esc(short(c)))
        });
        let health = match e.last.as_ref().map(|r| &r.health) {
            _ if !e.healthy => "<span class=bad>failing</span>".to_string(),
            Some(EnvHealth::Healthy) => "<span class=ok>healthy</span>".into(),
            Some(EnvHealth::Progressing(r)) => {
                format!("<span class=warn>progressing</span> {}", esc(r))
            }
            Some(EnvHealth::Degraded(r)) => format!("<span class=bad>degraded</span> {}", esc(r)),
            Some(EnvHealth::NotChecked) => "not checked".into(),
            None => "—".into(),
        };
        let last = e.last.as_ref().map_or("never".to_string(), |r| {
            let result = match &r.error {
                None => "<span class=ok>ok</span>".to_string(),
                Some(err) => format!(
                    "<span class=bad>{}</span>: {}",
                    esc(err.reason.label()),
                    esc(&err.message)
                ),
            };
            format!(
                "{} · {} at <code>{}</code> · {:.1}s · {}",
                ago(r.finished_unix),
                r.mode.label(),
                esc(short(&r.commit)),
                r.duration_ms as f64 / 1000.0,
                result
            )
        });
        let drift = match e.last.as_ref().map(|r| r.drift.len()) {
            Some(0) => "none".to_string(),
            Some(n) => format!("<span class=warn>{n} resources</span>"),
            None => "—".into(),
        };
        let mut gate = match &e.gate {
            Gate::Waiting {
                on: Some(on),
                detail,
                ..
            } => format!(
                "waiting for <b>{}</b><br><small>{}</small>",
                esc(on),
                esc(detail)
            ),
            Gate::Waiting {
                reason,
                detail,
                until,
                ..
            } => format!(
                "waiting: <b>{}</b>{}<br><small>{}</small>",
                esc(reason.label()),
                until
                    .as_deref()
                    .map(|u| format!(" until {}", esc(u)))
                    .unwrap_or_default(),
                esc(detail)
            ),
            g => esc(g.label()),
        };
        if let Some(pin) = &e.pinned {
            let _ = write!(
                gate,
                "<br><span class=warn>pinned to <code>{}</code> by a rollback</span>",
                esc(short(pin))
            );
        }
        if let Some(h) = &e.controls.hold {
            let _ = write!(
                gate,
                "<br><span class=warn>held by {} since {}{}</span>",
                esc(&h.by),
                esc(&h.at),
                h.reason
                    .as_deref()
                    .map(|r| format!(": {}", esc(r)))
                    .unwrap_or_default()
            );
        }
        if !e.promotion.is_empty() {
            let _ = write!(
                gate,
                "<br><small>rules: {}</small>",
                esc(&e.promotion.join("; "))
            );
        }
        let changes = e.last.as_ref().map_or("—".to_string(), |r| {
            let c = r.changes;
            format!("+{} ~{} −{} ={}", c.create, c.update, c.delete, c.unchanged)
        });
        let _ = write!(
            h,
            "<tr data-env=\"{n}\"><td><b>{n}</b>{susp}</td><td>{commit}</td><td>{health}</td><td>{last}</td>\
             <td>{drift} ({mode}, every {every}s)</td><td>{gate}</td><td>{changes}</td></tr>",
            n = esc(&e.name),
            susp = if e.suspended { " <span class=warn>suspended</span>" } else { "" },
            mode = match e.drift_mode {
                crate::model::DriftMode::Heal => "heal",
                crate::model::DriftMode::Report => "report",
            },
            every = e.drift_interval_secs,
        );
    }
    h.push_str("</tbody></table>");
}

/// The live previews with their expiry (`tidegate preview list`).
fn previews(h: &mut String, status: &Status) {
    if status.previews.is_empty() {
        return;
    }
    h.push_str(
        "<h2>Previews</h2><table class=previews><thead><tr><th>name</th><th>from</th><th>slot</th>\
         <th>commit</th><th>expires</th><th>resources</th><th>by</th></tr></thead><tbody>",
    );
    for p in &status.previews {
        let total: usize = p.resources.values().sum();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{total}</td><td>{}</td></tr>",
            esc(&p.name),
            esc(&p.from),
            p.slot,
            esc(short(&p.commit)),
            esc(&p.expires),
            esc(&p.who)
        );
    }
    h.push_str("</tbody></table>");
}

/// Where each environment's traffic entry points route (`tidegate
/// switch`): the live copy and its share, a stepped switch under way, the
/// copy before.
fn traffic(h: &mut String, status: &Status) {
    if status.environments.iter().all(|e| e.traffic.is_empty()) {
        return;
    }
    h.push_str(
        "<h2>Traffic</h2><table class=traffic><thead><tr><th>environment</th><th>entry point</th>\
         <th>live</th><th>shifting to</th><th>before</th><th>last change</th></tr></thead><tbody>",
    );
    for e in &status.environments {
        for t in &e.traffic {
            let canary = t.canary.as_ref().map_or("—".to_string(), |c| {
                format!("<span class=warn>{} {}%</span>", esc(&c.copy), c.weight)
            });
            let _ = write!(
                h,
                "<tr data-env=\"{}\" data-entry=\"{}\"><td>{}</td><td>{}</td><td><span class=ok>{}</span> {}%</td>\
                 <td>{canary}</td><td>{}</td><td>{} by {}</td></tr>",
                esc(&e.name),
                esc(&t.entry),
                esc(&e.name),
                esc(&t.entry),
                esc(&t.live),
                t.weight,
                t.previous.as_deref().map_or("—".to_string(), esc),
                esc(&t.at),
                esc(&t.by),
            );
        }
    }
    h.push_str("</tbody></table>");
}

/// The last audit history entries of each environment, newest first
/// (`GET /api/v1/history` has all of them).
fn history(h: &mut String, status: &Status) {
    h.push_str("<h2>History</h2>");
    if status.environments.iter().all(|e| e.history.is_empty()) {
        h.push_str("<p>No entries yet.</p>");
        return;
    }
    for e in status.environments.iter().filter(|e| !e.history.is_empty()) {
        let _ = write!(
            h,
            "<h3>{n}</h3><table class=history data-env=\"{n}\"><thead><tr><th>time</th><th>event</th><th>outcome</th>\
             <th>commit</th><th>by</th><th>changes</th><th>reason / error</th></tr></thead><tbody>",
            n = esc(&e.name)
        );
        for x in e.history.iter().rev() {
            let class = match x.outcome {
                HistoryOutcome::Succeeded => "ok",
                HistoryOutcome::Held => "warn",
                HistoryOutcome::Failed | HistoryOutcome::Refused => "bad",
            };
            let author = x
                .commit_info
                .as_ref()
                .and_then(|c| c.author.as_deref())
                .map(|a| format!(" by {}", esc(a)))
                .unwrap_or_default();
            let changes = x.plan.as_ref().map_or("—".to_string(), |p| {
                format!("+{} ~{} −{} ={}", p.create, p.update, p.delete, p.unchanged)
            });
            let why = [
                x.reason.as_deref().map(esc),
                x.error
                    .as_deref()
                    .map(|e| format!("<span class=bad>{}</span>", esc(e))),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" · ");
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td><span class={class}>{}</span></td><td><code>{}</code>{author}</td>\
                 <td>{}</td><td>{changes}</td><td>{why}</td></tr>",
                esc(&x.time),
                esc(x.event.label()),
                esc(x.outcome.label()),
                esc(x.commit.as_deref().map_or("—", short)),
                esc(&x.subject.to_string()),
            );
        }
        h.push_str("</tbody></table>");
    }
}

fn graph(h: &mut String, status: &Status, env: Option<&str>) {
    h.push_str("<h2>Dependency graph</h2><nav>");
    for g in &status.graph.environments {
        let _ = write!(h, "<a href=\"?env={0}\">{0}</a>", esc(&g.name));
    }
    h.push_str("</nav>");
    let chosen = status
        .graph
        .environments
        .iter()
        .find(|g| Some(g.name.as_str()) == env)
        .or(status.graph.environments.first());
    match chosen {
        None => h.push_str("<p>No commit loaded yet.</p>"),
        Some(g) if g.levels.iter().map(Vec::len).sum::<usize>() > MAX_DRAWN => {
            let _ = write!(
                h,
                "<p>{} has more than {MAX_DRAWN} resources; the Mermaid text below lists them.</p>",
                esc(&g.name)
            );
        }
        Some(g) => levels_svg(h, g),
    }
    let _ = write!(
        h,
        "<details><summary>Mermaid</summary><pre class=\"mermaid\">{}</pre></details>",
        esc(&status.graph.mermaid)
    );
}

/// Resources in columns by level (level 0 first), edges between them.
fn levels_svg(h: &mut String, g: &EnvGraph) {
    let (cw, gap, rh, vgap) = (210, 60, 26, 10);
    let rows = g.levels.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let width = g.levels.len().max(1) * (cw + gap) + 10;
    let height = rows * (rh + vgap) + 40;
    let mut pos: HashMap<&str, (usize, usize)> = HashMap::new();
    for (li, level) in g.levels.iter().enumerate() {
        for (ri, id) in level.iter().enumerate() {
            pos.insert(id.as_str(), (10 + li * (cw + gap), 30 + ri * (rh + vgap)));
        }
    }
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"dependency graph of {n}\" class=\"graph\" \
         width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\
         <text x=\"10\" y=\"18\" font-weight=\"bold\">{n}: applied left to right</text>",
        n = esc(&g.name)
    );
    for (from, to) in &g.edges {
        if let (Some((fx, fy)), Some((tx, ty))) = (pos.get(from.as_str()), pos.get(to.as_str())) {
            let _ = write!(
                h,
                "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#99a\"/>",
                fx + cw,
                fy + rh / 2,
                tx,
                ty + rh / 2
            );
        }
    }
    for (id, (x, y)) in &pos {
        let _ = write!(
            h,
            "<g class=\"node\"><rect x=\"{x}\" y=\"{y}\" width=\"{cw}\" height=\"{rh}\" rx=\"5\" fill=\"#eef2ff\" stroke=\"#667\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text></g>",
            x + 6,
            y + 17,
            esc(id)
        );
    }
    h.push_str("</svg>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DriftMode;
    use crate::reconcile::driver::GraphView;

    fn env(name: &str, after: &[&str], gate: Gate) -> EnvStatus {
        EnvStatus {
            name: name.into(),
            after: after.iter().map(|s| s.to_string()).collect(),
            gate,
            held: true,
            suspended: false,
            suspended_in_file: false,
            last_good: Some("0123456789abcdef".into()),
            healthy: true,
            drift_mode: DriftMode::Heal,
            drift_interval_secs: 300,
            failures: 0,
            last: None,
            pinned: None,
            promotion: Vec::new(),
            controls: Default::default(),
            history: Vec::new(),
            traffic: Vec::new(),
        }
    }

    #[test]
    fn the_page_shows_every_environment_and_escapes_text() {
        let status = Status {
            remote: "file:///<repo>".into(),
            reference: "main".into(),
            commit: Some("0123456789abcdef".into()),
            environments: vec![
                env("dev", &[], Gate::Converged),
                env(
                    "prod",
                    &["dev"],
                    Gate::Waiting {
                        reason: crate::promotion::Reason::Previous,
                        on: Some("dev".into()),
                        detail: "dev is not converged and healthy at 0123456789ab".into(),
                        until: None,
                    },
                ),
                {
                    let mut e = env(
                        "stage<x>",
                        &["dev"],
                        Gate::Waiting {
                            reason: crate::promotion::Reason::Window,
                            on: None,
                            detail: "inside deny window `Fri 12:00-24:00 UTC`".into(),
                            until: Some("2026-12-05T00:00:00Z".into()),
                        },
                    );
                    e.controls.hold = Some(crate::promotion::Mark {
                        commit: None,
                        by: "alice (cli on laptop)".into(),
                        at: "2026-12-04T09:00:00Z".into(),
                        reason: Some("<freeze>".into()),
                    });
                    e
                },
            ],
            graph: GraphView {
                mermaid: "graph LR\n a --> b".into(),
                environments: vec![EnvGraph {
                    name: "dev".into(),
                    levels: vec![vec!["net/vpc".into()], vec!["web/deploy".into()]],
                    edges: vec![("net/vpc".into(), "web/deploy".into())],
                }],
            },
            ..Status::default()
        };
        let html = render(&status, None);
        assert!(html.contains("file:///&lt;repo&gt;"));
        assert!(html.contains("data-env=\"dev\"") && html.contains("data-env=\"prod\""));
        assert!(html.contains("waiting for <b>dev</b>"));
        assert!(html.contains("waiting: <b>window</b> until 2026-12-05T00:00:00Z"));
        assert!(html
            .contains("held by alice (cli on laptop) since 2026-12-04T09:00:00Z: &lt;freeze&gt;"));
        assert!(html.contains("data-env=\"stage&lt;x&gt;\""));
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(html.contains("a --&gt; b"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("http://") || html.contains("http://www.w3.org/2000/svg"));
        assert!(html.contains("<h2>History</h2><p>No entries yet.</p>"));
    }

    #[test]
    fn the_page_shows_where_traffic_goes_and_a_shift_under_way() {
        use crate::reconcile::driver::TrafficRoute;
        let mut prod = env("prod", &[], Gate::Converged);
        prod.traffic = vec![TrafficRoute {
            entry: "web".into(),
            live: "prod".into(),
            weight: 90,
            canary: Some(crate::state::traffic::Canary {
                copy: "prod-green".into(),
                weight: 10,
            }),
            previous: None,
            at: "2026-12-04T09:00:00Z".into(),
            by: "alice (cli on laptop)".into(),
        }];
        let status = Status {
            environments: vec![env("dev", &[], Gate::Converged), prod],
            ..Status::default()
        };
        let html = render(&status, None);
        assert!(html.contains("<h2>Traffic</h2>"), "{html}");
        assert!(html.contains(
            "<tr data-env=\"prod\" data-entry=\"web\"><td>prod</td><td>web</td><td><span class=ok>prod</span> 90%</td>\
             <td><span class=warn>prod-green 10%</span></td><td>—</td><td>2026-12-04T09:00:00Z by alice (cli on laptop)</td></tr>"
        ), "{html}");
        let none = render(&Status::default(), None);
        assert!(!none.contains("<h2>Traffic</h2>"));
    }

    #[test]
    fn the_page_lists_the_last_history_entries_newest_first() {
        use crate::state::history::{CommitInfo, Entry, EventKind, Outcome, Subject};
        let mut dev = env("dev", &[], Gate::Converged);
        let mut first = Entry::new("dev", EventKind::Apply, Subject::reconciler());
        first.time = "2024-05-01T10:00:00Z".into();
        first.commit = Some("0123456789abcdef".into());
        first.commit_info = Some(CommitInfo {
            author: Some("Ann <ann@example.com>".into()),
            ..CommitInfo::default()
        });
        let mut second = Entry::new("dev", EventKind::Hold, Subject::http("<alice>"));
        second.time = "2024-05-01T11:00:00Z".into();
        second.outcome = Outcome::Held;
        second.reason = Some("freeze".into());
        dev.history = vec![first, second];
        let status = Status {
            environments: vec![dev, env("prod", &["dev"], Gate::Converged)],
            ..Status::default()
        };
        let html = render(&status, None);
        let table = &html[html.find("<table class=history").unwrap()..];
        let (hold, apply) = (
            table.find(">hold<").unwrap(),
            table.find(">apply<").unwrap(),
        );
        assert!(hold < apply, "newest first");
        assert!(table.contains("http:&lt;alice&gt;"));
        assert!(table.contains("Ann &lt;ann@example.com&gt;"));
        assert!(table.contains("<span class=warn>held</span>"));
        assert!(!html.contains("<h3>prod</h3>"));
    }
}
