//! Production-readiness policies, checked before anything is applied.
//!
//! The checks encode the user's production checklists (pinned images,
//! resource limits, probes, non-root, tags, IMDSv2, approved Ingress
//! domains, closed security groups) so that a reviewer does not have to.
//! Each environment says how severe each check is there ([`PolicyConfig`]);
//! a resource can waive one check with a reason recorded in Git
//! ([`Waiver`]). [`evaluate`] is pure: the caller feeds it the resolved
//! resources of one environment as [`Subject`]s and today's date, and gets
//! a [`Report`] that `validate` prints, `plan` embeds, and `apply` obeys
//! ([`Report::blocks_apply`]).
//!
//! # Guarantees
//!
//! - A value known only after apply ([`Value::Unknown`]) never produces a
//!   finding: the check stays silent about what it cannot see.
//! - A [`Value::Sensitive`] leaf is never printed in a message or fix.
//! - Findings point at the offending field (or its nearest recorded
//!   ancestor), and are sorted by file, line and check.

use std::fmt;
use std::str::FromStr;

use crate::resource::{ProviderKind, ResourceId};
use crate::value::{Origin, Spans, Value};

mod aws;
mod config;
mod env;
mod field;
mod ingress;
mod kubernetes;
mod output;
mod trace;
mod waiver;

pub use config::{
    is_production, ConfigError, PolicyConfig, Severity, DEFAULT_PUBLIC_PORTS, DEFAULT_REQUIRED_TAGS,
};
pub use env::evaluate_env;
pub use output::render_check_list;
pub use trace::{Hop, ModelTrace, NoTrace, Tracer};

/// Parsing a policy block or waivers: every problem found, in file order.
pub type Result<T, E = Vec<ConfigError>> = std::result::Result<T, E>;
pub use waiver::{Date, Waiver};

/// The built-in checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckId {
    ImageDigest,
    Resources,
    Probes,
    NonRoot,
    ReadOnlyRootFs,
    SecretVolumes,
    RequiredTags,
    Imdsv2,
    IngressDomain,
    IngressUnique,
    OpenSecurityGroup,
    EbsEncryption,
    PublicRoute,
}

impl CheckId {
    /// Every check, in documentation order.
    pub const ALL: [CheckId; 13] = [
        CheckId::ImageDigest,
        CheckId::Resources,
        CheckId::Probes,
        CheckId::NonRoot,
        CheckId::ReadOnlyRootFs,
        CheckId::SecretVolumes,
        CheckId::RequiredTags,
        CheckId::Imdsv2,
        CheckId::IngressDomain,
        CheckId::IngressUnique,
        CheckId::OpenSecurityGroup,
        CheckId::EbsEncryption,
        CheckId::PublicRoute,
    ];

    /// The id used in YAML, output and docs (`image-digest`).
    pub fn as_str(self) -> &'static str {
        self.info().id
    }

    /// The check's entry in [`CHECKS`].
    pub fn info(self) -> &'static CheckInfo {
        &CHECKS[self as usize]
    }
}

impl FromStr for CheckId {
    type Err = ();

    fn from_str(s: &str) -> Result<CheckId, ()> {
        CheckId::ALL.into_iter().find(|c| c.as_str() == s).ok_or(())
    }
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for CheckId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What a check is, for `tidegate policy --list` and the docs.
#[derive(Debug, PartialEq, Eq, serde::Serialize)]
pub struct CheckInfo {
    pub id: &'static str,
    /// What the check looks at.
    pub applies_to: &'static str,
    /// Why it matters, in one line.
    pub rationale: &'static str,
    /// How to satisfy it, in one line.
    pub fix: &'static str,
}

/// Every check, indexed by `CheckId as usize`.
pub const CHECKS: [CheckInfo; 13] = [
    CheckInfo {
        id: "image-digest",
        applies_to: "every container and init container of a pod-bearing Kubernetes kind",
        rationale: "a tag can be moved to other content; only a digest deploys exactly what was reviewed",
        fix: "pin the image by digest: `registry/app@sha256:<64 hex>` (optionally `app:1.2@sha256:...`)",
    },
    CheckInfo {
        id: "resources",
        applies_to: "every container and init container",
        rationale: "without requests the scheduler overcommits nodes; without limits one pod can starve its neighbours",
        fix: "set `resources.requests` and `resources.limits` for both `cpu` and `memory`",
    },
    CheckInfo {
        id: "probes",
        applies_to: "every container that declares `ports`",
        rationale: "without a readiness probe traffic reaches pods that cannot serve; without a liveness probe hung pods are never restarted",
        fix: "add `readinessProbe` and `livenessProbe` (httpGet, tcpSocket, grpc or exec)",
    },
    CheckInfo {
        id: "non-root",
        applies_to: "every container and init container",
        rationale: "a process running as root, or able to gain privileges, turns a container escape into a node compromise",
        fix: "set `securityContext.runAsNonRoot: true` (pod or container) and `securityContext.allowPrivilegeEscalation: false` (container)",
    },
    CheckInfo {
        id: "read-only-root-fs",
        applies_to: "every container and init container",
        rationale: "a writable root filesystem lets an attacker persist tools and modify binaries",
        fix: "set `securityContext.readOnlyRootFilesystem: true`; mount an `emptyDir` where the process must write",
    },
    CheckInfo {
        id: "secret-volumes",
        applies_to: "`env[].valueFrom.secretKeyRef` and `envFrom[].secretRef` of every container",
        rationale: "environment variables leak into crash dumps, child processes and `kubectl describe`; mounted files do not and can rotate",
        fix: "mount the Secret as a volume (`volumes[].secret` + `volumeMounts`) and read the file",
    },
    CheckInfo {
        id: "required-tags",
        applies_to: "every AWS resource",
        rationale: "untagged cloud resources cannot be attributed to an owner, product or environment for cost and incidents",
        fix: "add the environment's `requiredTags` (default: environment, owner, product) to the resource's `tags`",
    },
    CheckInfo {
        id: "imdsv2",
        applies_to: "AWS `instance`",
        rationale: "IMDSv1 answers any request, so one SSRF bug leaks the instance's credentials; IMDSv2 requires a session token",
        fix: "set `metadata: { httpTokens: required }`",
    },
    CheckInfo {
        id: "ingress-domain",
        applies_to: "`spec.rules[].host` and `spec.tls[].hosts[]` of every Ingress",
        rationale: "a host outside the environment's domains is a typo, a takeover risk or traffic for a name nobody owns",
        fix: "use a host under one of the environment's `approvedDomains`, or add the domain there",
    },
    CheckInfo {
        id: "ingress-unique",
        applies_to: "`spec.rules[].host` across all Ingresses of an environment",
        rationale: "two Ingresses claiming one host route traffic unpredictably between two services",
        fix: "give each Ingress its own host, or merge the rules into one Ingress",
    },
    CheckInfo {
        id: "open-security-group",
        applies_to: "`ingress[]` rules of AWS `security_group`, and `security_group_rule` of `type: ingress`",
        rationale: "ports open to 0.0.0.0/0 or ::/0 are scanned within minutes; only deliberate public endpoints should be",
        fix: "restrict `cidrBlocks` (or use `sourceSecurityGroupIds`), or add the port to the environment's `publicPorts`",
    },
    CheckInfo {
        id: "ebs-encryption",
        applies_to: "AWS `ebs_volume`, `instance` root volumes and `launch_template` block devices",
        rationale: "an unencrypted volume or snapshot can be copied and read by anyone who gets at it; encryption at rest costs nothing measurable",
        fix: "set `encrypted: true` (`rootVolume.encrypted`, `blockDeviceMappings[].ebs.encrypted`)",
    },
    CheckInfo {
        id: "public-route",
        applies_to: "default routes (0.0.0.0/0, ::/0) through an internet gateway: AWS `route` and `route_table` `routes[]`",
        rationale: "a default route to an internet gateway makes every subnet of the table public; in production that must be a reviewed decision",
        fix: "route through a NAT gateway (`natGatewayId`) instead, or waive the check on the resource with the reason the subnets are public",
    },
];

/// Every check, for listings.
pub fn checks() -> &'static [CheckInfo] {
    &CHECKS
}

/// One resource, as [`evaluate`] sees it.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// The environment it is applied to.
    pub environment: &'a str,
    pub id: &'a ResourceId,
    pub provider: ProviderKind,
    /// Kubernetes: `group/version/Kind` (`apps/v1/Deployment`, `v1/Pod`);
    /// AWS: the resource type (`instance`).
    pub kind: &'a str,
    /// Kubernetes: the manifest; AWS: the spec.
    pub body: &'a Value,
    /// Where each node of `body` was written; paths relative to `body` (the
    /// empty path is the body). [`spans_below`] cuts a file's spans down.
    pub spans: &'a Spans,
    /// Where the resource is declared: the fallback position of findings.
    pub origin: &'a Origin,
    /// The resource's waivers ([`Waiver::parse_all`]).
    pub waivers: &'a [Waiver],
}

/// The spans of the node at `prefix`, with paths made relative to it
/// (`resources[0].manifest.spec` → `spec`).
pub fn spans_below(spans: &Spans, prefix: &str) -> Spans {
    let mut out = Spans::default();
    for (path, origin) in spans.iter() {
        let rel = if prefix.is_empty() {
            Some(path)
        } else if path == prefix {
            Some("")
        } else {
            path.strip_prefix(prefix).and_then(|r| {
                r.strip_prefix('.')
                    .or_else(|| r.starts_with('[').then_some(r))
            })
        };
        if let Some(rel) = rel {
            out.insert(rel, origin.clone());
        }
    }
    out
}

/// A check's raw result, before severity, waivers and positions.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Hit {
    pub(crate) check: CheckId,
    /// Path of the offending field inside the body.
    pub(crate) path: String,
    pub(crate) message: String,
    pub(crate) fix: String,
}

/// A check that failed on a resource.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub check: CheckId,
    /// Error or warning (never off: off checks do not run).
    pub severity: Severity,
    #[serde(serialize_with = "as_display")]
    pub resource: ResourceId,
    /// The offending field, or the nearest position known.
    pub origin: Origin,
    pub message: String,
    /// What to change, specific to this finding.
    pub fix: String,
    /// When the field's value came through references (an input, a var,
    /// another instance's output): each reference followed from `origin`,
    /// last the place the value was written, which is where to fix it.
    /// Empty when the value is written in the resource itself.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<Hop>,
}

impl Finding {
    /// `value written at <file:line:col> (var `x`), through ...`, when the
    /// value came from elsewhere.
    pub fn written_at(&self) -> Option<String> {
        trace::describe(&self.trace)
    }
}

/// A finding that a waiver turned off.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WaivedFinding {
    pub finding: Finding,
    pub reason: String,
    pub expires: Option<Date>,
    /// Where the waiver is written.
    pub waiver_origin: Origin,
}

/// A waiver past its expiry; it waives nothing any more.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ExpiredWaiver {
    pub check: CheckId,
    #[serde(serialize_with = "as_display")]
    pub resource: ResourceId,
    pub reason: String,
    pub expires: Date,
    pub origin: Origin,
}

/// Something a reader should know that is not a finding (a check skipped,
/// a waiver that waives nothing).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Note {
    pub origin: Option<Origin>,
    pub message: String,
}

/// The policy result for one environment.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// The environment evaluated ([`PolicyConfig::environment`]).
    pub environment: String,
    /// Unwaived findings, sorted by file, line, check.
    pub findings: Vec<Finding>,
    /// Findings a valid waiver turned off (listed in the plan).
    pub waived: Vec<WaivedFinding>,
    /// Waivers past their expiry (their findings are in `findings`).
    pub expired_waivers: Vec<ExpiredWaiver>,
    pub notes: Vec<Note>,
}

impl Report {
    /// True when an unwaived finding has severity error: `apply` and
    /// `rebuild` of the environment must stop.
    pub fn blocks_apply(&self) -> bool {
        self.errors() > 0
    }

    /// Unwaived findings of severity error.
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    /// Unwaived findings of severity warning.
    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, s: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == s).count()
    }

    /// True when there is nothing to show.
    pub fn is_empty(&self) -> bool {
        self.findings.is_empty()
            && self.waived.is_empty()
            && self.expired_waivers.is_empty()
            && self.notes.is_empty()
    }
}

fn as_display<T: fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Runs every check that is not `off` in `config` over `subjects` (the
/// resources of one environment), applies waivers active on `today`, and
/// returns the sorted report.
pub fn evaluate(config: &PolicyConfig, subjects: &[Subject<'_>], today: Date) -> Report {
    evaluate_traced(config, subjects, today, &NoTrace)
}

/// [`evaluate`], each finding also naming where its value was written when
/// it came through references (`tracer`, usually a [`ModelTrace`]).
pub fn evaluate_traced(
    config: &PolicyConfig,
    subjects: &[Subject<'_>],
    today: Date,
    tracer: &dyn Tracer,
) -> Report {
    let mut hits: Vec<(usize, Hit)> = Vec::new();
    for (i, s) in subjects.iter().enumerate() {
        let mut out = Vec::new();
        check_subject(config, s, &mut out);
        hits.extend(out.into_iter().map(|h| (i, h)));
    }
    hits.extend(ingress::unique(subjects));
    hits.retain(|(_, h)| config.severity_of(h.check) != Severity::Off);

    let mut report = Report {
        environment: config.environment.clone(),
        ..Report::default()
    };
    let mut used = vec![Vec::new(); subjects.len()];
    for (i, hit) in hits {
        let s = &subjects[i];
        let finding = to_finding(config, s, hit, tracer);
        match s.waivers.iter().find(|w| w.check == finding.check) {
            Some(w) if w.is_active(today) => {
                used[i].push(w.check);
                report.waived.push(WaivedFinding {
                    finding,
                    reason: w.reason.clone(),
                    expires: w.expires,
                    waiver_origin: w.origin.clone(),
                });
            }
            _ => report.findings.push(finding),
        }
    }
    waiver_notes(config, subjects, &used, today, &mut report);
    skipped_notes(config, subjects, &mut report);
    sort(&mut report);
    report
}

/// The checks written for one provider's resources.
type Pack = fn(&PolicyConfig, &Subject<'_>, &mut Vec<Hit>);

/// The check packs, one line per provider that has checks. A provider
/// without a line gets the rules every resource gets (waivers, notes) and
/// nothing else, so adding a provider needs no change here.
const PACKS: &[(ProviderKind, Pack)] = &[
    (ProviderKind::Kubernetes, kubernetes_pack),
    (ProviderKind::Aws, aws_pack),
];

fn kubernetes_pack(config: &PolicyConfig, s: &Subject<'_>, out: &mut Vec<Hit>) {
    kubernetes::check(s.kind, s.body, out);
    if !config.approved_domains.is_empty() {
        ingress::domain(&config.approved_domains, s.kind, s.body, out);
    }
}

fn aws_pack(config: &PolicyConfig, s: &Subject<'_>, out: &mut Vec<Hit>) {
    aws::check(config, s.kind, s.body, out);
}

fn check_subject(config: &PolicyConfig, s: &Subject<'_>, out: &mut Vec<Hit>) {
    for (provider, pack) in PACKS {
        if *provider == s.provider {
            pack(config, s, out);
        }
    }
}

fn to_finding(config: &PolicyConfig, s: &Subject<'_>, hit: Hit, tracer: &dyn Tracer) -> Finding {
    Finding {
        check: hit.check,
        severity: config.severity_of(hit.check),
        resource: s.id.clone(),
        origin: s.spans.nearest(&hit.path).unwrap_or(s.origin).clone(),
        trace: tracer.trace(s.id, &hit.path),
        message: hit.message,
        fix: hit.fix,
    }
}

/// Expired waivers, and active waivers that waived nothing.
fn waiver_notes(
    config: &PolicyConfig,
    subjects: &[Subject<'_>],
    used: &[Vec<CheckId>],
    today: Date,
    report: &mut Report,
) {
    for (s, used) in subjects.iter().zip(used) {
        for w in s.waivers {
            match w.expires {
                Some(expires) if !w.is_active(today) => {
                    report.expired_waivers.push(ExpiredWaiver {
                        check: w.check,
                        resource: s.id.clone(),
                        reason: w.reason.clone(),
                        expires,
                        origin: w.origin.clone(),
                    })
                }
                _ if used.contains(&w.check) || !runs(config, w.check) || s.body.has_unknown() => {}
                _ => report.notes.push(Note {
                    origin: Some(w.origin.clone()),
                    message: format!(
                        "{}: waiver for `{}` waives nothing (the check passes); remove it",
                        s.id, w.check
                    ),
                }),
            }
        }
    }
}

/// False for checks that are off, or skipped for lack of configuration.
fn runs(config: &PolicyConfig, check: CheckId) -> bool {
    config.severity_of(check) != Severity::Off
        && !(check == CheckId::IngressDomain && config.approved_domains.is_empty())
}

fn skipped_notes(config: &PolicyConfig, subjects: &[Subject<'_>], report: &mut Report) {
    let relevant = config.severity_of(CheckId::IngressDomain) != Severity::Off
        && !runs(config, CheckId::IngressDomain)
        && subjects
            .iter()
            .any(|s| s.provider == ProviderKind::Kubernetes && ingress::is_ingress(s.kind));
    if relevant {
        report.notes.push(Note {
            origin: None,
            message: format!(
                "ingress-domain skipped in environment {}: no `policy.approvedDomains` configured; list the domains Ingress hosts may use to enable it",
                config.environment
            ),
        });
    }
}

fn sort(report: &mut Report) {
    fn key(o: &Origin, check: CheckId) -> (&str, usize, CheckId) {
        (&o.file, o.line, check)
    }
    report
        .findings
        .sort_by(|a, b| key(&a.origin, a.check).cmp(&key(&b.origin, b.check)));
    report.waived.sort_by(|a, b| {
        let (a, b) = (&a.finding, &b.finding);
        key(&a.origin, a.check).cmp(&key(&b.origin, b.check))
    });
    report
        .expired_waivers
        .sort_by(|a, b| key(&a.origin, a.check).cmp(&key(&b.origin, b.check)));
}

#[cfg(test)]
mod tests;
