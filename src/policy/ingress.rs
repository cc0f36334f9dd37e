//! Checks on Ingress hosts: only the environment's approved domains, and
//! no host claimed by two Ingresses.

use std::collections::BTreeMap;

use crate::resource::ProviderKind;
use crate::value::{index_path, Value};

use super::config::normalise_host;
use super::field::{at, Text};
use super::kubernetes::group_kind;
use super::{CheckId, Hit, Subject};

/// True for `networking.k8s.io/*/Ingress` (and the old `extensions` group).
pub(crate) fn is_ingress(kind: &str) -> bool {
    matches!(
        group_kind(kind),
        ("networking.k8s.io" | "extensions", "Ingress")
    )
}

/// Every known host of an Ingress with its path: rule hosts first, then
/// TLS hosts. Hosts known only after apply are left out.
fn hosts(body: &Value, with_tls: bool) -> Vec<(String, Text<'_>)> {
    let mut out = Vec::new();
    let rules = at(body, &["spec", "rules"]).items().unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        if let Some(h) = at_text(rule, "host") {
            out.push((format!("{}.host", index_path("spec.rules", i)), h));
        }
    }
    if !with_tls {
        return out;
    }
    let tls = at(body, &["spec", "tls"]).items().unwrap_or_default();
    for (i, t) in tls.iter().enumerate() {
        let list = at(t, &["hosts"]).items().unwrap_or_default();
        for (j, h) in list.iter().enumerate() {
            if let Some(h) = Text::of(h) {
                let base = format!("{}.hosts", index_path("spec.tls", i));
                out.push((index_path(&base, j), h));
            }
        }
    }
    out
}

fn at_text<'a>(v: &'a Value, key: &str) -> Option<Text<'a>> {
    match at(v, &[key]) {
        super::field::Field::Present(v) => Text::of(v),
        _ => None,
    }
}

/// Hosts not under any approved domain.
pub(crate) fn domain(approved: &[String], kind: &str, body: &Value, out: &mut Vec<Hit>) {
    if !is_ingress(kind) {
        return;
    }
    for (path, host) in hosts(body, true) {
        let h = normalise_host(host.raw);
        let ok = approved
            .iter()
            .any(|d| h == *d || h.ends_with(&format!(".{d}")));
        if !ok {
            out.push(Hit {
                check: CheckId::IngressDomain,
                path,
                message: format!(
                    "host `{}` is not under an approved domain ({})",
                    host.shown(),
                    approved.join(", ")
                ),
                fix: "use a host under one of the approved domains, or add its domain to the environment's `policy.approvedDomains`".into(),
            });
        }
    }
}

/// One Ingress rule's use of a host.
struct HostUse {
    subject: usize,
    path: String,
    secret: bool,
}

/// Rule hosts used by more than one Ingress of the same environment; each
/// Ingress involved gets a finding naming the others.
pub(crate) fn unique(subjects: &[Subject<'_>]) -> Vec<(usize, Hit)> {
    let mut users: BTreeMap<(&str, String), Vec<HostUse>> = BTreeMap::new();
    for (i, s) in subjects.iter().enumerate() {
        if s.provider != ProviderKind::Kubernetes || !is_ingress(s.kind) {
            continue;
        }
        for (path, host) in hosts(s.body, false) {
            let entry = users
                .entry((s.environment, normalise_host(host.raw)))
                .or_default();
            // Subjects come in order: one already counted is the last.
            if entry.last().is_none_or(|u| u.subject != i) {
                entry.push(HostUse {
                    subject: i,
                    path,
                    secret: host.shown() != host.raw,
                });
            }
        }
    }
    let mut out = Vec::new();
    for ((_, host), list) in users.into_iter().filter(|(_, l)| l.len() > 1) {
        let shown = if list.iter().any(|u| u.secret) {
            crate::sensitive::MASK
        } else {
            &host
        };
        for u in &list {
            // A few by name: a host shared by thousands would otherwise
            // make each finding list all the others (quadratic text).
            const NAMED: usize = 3;
            let mut others: Vec<String> = list
                .iter()
                .filter(|o| o.subject != u.subject)
                .take(NAMED)
                .map(|o| {
                    format!(
                        "{} ({})",
                        subjects[o.subject].id, subjects[o.subject].origin
                    )
                })
                .collect();
            let more = list.len() - 1 - others.len();
            if more > 0 {
                others.push(format!("{more} more"));
            }
            out.push((
                u.subject,
                Hit {
                    check: CheckId::IngressUnique,
                    path: u.path.clone(),
                    message: format!("host `{shown}` is also used by {}", others.join(", ")),
                    fix: "give each Ingress its own host, or merge their rules into one Ingress"
                        .into(),
                },
            ));
        }
    }
    out
}
