//! Decoding `environments/<name>.yaml` (kind `Environment`).

use indexmap::IndexMap;

use crate::diag::Diagnostics;
use crate::model::{DriftMode, DriftPolicy, Environment, Instance, Located, Project};
use crate::promotion::{self, Promotion};
use crate::resource::{AwsTarget, KubeTarget};
use crate::value::{Origin, Value};

use super::decode::{self, Fields};
use super::yaml::{Node, NodeKind};

const SPEC_FIELDS: &[&str] = &[
    "after",
    "targets",
    "vars",
    "secrets",
    "modules",
    "policy",
    "drift",
    "suspend",
    "requireSignedCommits",
    "guards",
    "protect",
    "promotion",
    "preview",
    "traffic",
];

/// The shortest drift interval accepted (each check observes every resource).
const MIN_DRIFT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Decodes one environment file; `None` when its header is unusable.
pub fn decode(
    path: &str,
    text: &str,
    project: &Project,
    diags: &mut Diagnostics,
) -> Option<Environment> {
    let doc = super::one_document(path, text, diags)?;
    let (name, origin, spec) = super::header(&doc, "Environment", diags)?;
    let stem = path
        .rsplit('/')
        .next()
        .and_then(|f| f.rsplit_once('.'))
        .map_or("", |(s, _)| s);
    if name != stem {
        diags.error(
            &origin,
            format!("environment `{name}` is declared in {path}"),
            format!("name the file environments/{name}.yaml or set `metadata.name: {stem}`"),
        );
    }
    let mut env = Environment {
        name,
        file: path.to_string(),
        origin,
        project: project.name.clone(),
        guards: project.guards,
        ..Environment::default()
    };
    let mut f = Fields::new(spec, "Environment spec", diags)?;
    if let Some(n) = f.opt("after") {
        env.after = decode::strings(n, "`after`", diags);
    }
    if let Some(n) = f.opt("targets") {
        targets(&mut env, n, diags);
    }
    if let Some(n) = f.opt("vars") {
        if Fields::new(n, "`vars`", diags).is_some() {
            decode::ambiguous_values(n, diags);
            let (value, spans) = n.to_value_spans();
            env.vars = match value {
                Value::Map(m) => m,
                _ => Default::default(),
            };
            env.var_spans = spans;
        }
    }
    if let Some(n) = f.opt("secrets") {
        env.secret_files = decode::strings(n, "an entry of `secrets`", diags)
            .into_iter()
            .map(|(p, o)| (normalise(&p), o))
            .collect();
    }
    if let Some(n) = f.opt("modules") {
        env.instances = decode::list(n, "`modules`", diags)
            .unwrap_or_default()
            .iter()
            .filter_map(|i| instance(i, diags))
            .collect();
    }
    if let Some(n) = f.opt("policy") {
        let (value, spans) = n.to_value_spans();
        env.policy = Some(Located { value, spans });
    }
    if let Some(n) = f.opt("drift") {
        env.drift = drift(n, diags);
    }
    if let Some(n) = f.opt("suspend") {
        env.suspend = decode::boolean(n, "`suspend`", diags).unwrap_or(false);
    }
    if let Some(n) = f.opt("requireSignedCommits") {
        env.require_signed_commits =
            decode::boolean(n, "`requireSignedCommits`", diags).unwrap_or(false);
    }
    if let Some(n) = f.opt("guards") {
        env.guards = super::project::guards(n, env.guards, diags);
    }
    if let Some(n) = f.opt("protect") {
        env.protect = decode::boolean(n, "`protect`", diags).unwrap_or(false);
    }
    if let Some(n) = f.opt("promotion") {
        env.promotion = promotion(n, diags);
    }
    if let Some(n) = f.opt("preview") {
        env.preview = preview(n, &env.vars, diags);
    }
    if let Some(n) = f.opt("traffic") {
        env.traffic = super::traffic::decode(n, diags);
    }
    f.finish(SPEC_FIELDS, diags);
    Some(env)
}

/// A repo path as written (`./modules/web/`) in canonical form (`modules/web`).
pub fn normalise(p: &str) -> String {
    p.trim_start_matches("./").trim_end_matches('/').to_string()
}

/// `drift: {interval: 5m, mode: heal|report}`; absent fields keep the defaults.
fn drift(n: &Node, diags: &mut Diagnostics) -> DriftPolicy {
    let mut policy = DriftPolicy::default();
    let Some(mut f) = Fields::new(n, "`drift`", diags) else {
        return policy;
    };
    if let Some(i) = f.opt("interval") {
        if let Some(d) =
            decode::string(i, "`drift.interval`", diags).and_then(|s| drift_interval(i, &s, diags))
        {
            policy.interval = d;
        }
    }
    if let Some(m) = f.opt("mode") {
        match decode::string(m, "`drift.mode`", diags).as_deref() {
            Some("heal") => policy.mode = DriftMode::Heal,
            Some("report") => policy.mode = DriftMode::Report,
            Some(other) => diags.error(
                &m.origin,
                format!("`drift.mode` is `{other}`, which is not a drift mode"),
                "write `heal` (apply the desired state again) or `report` (only report)",
            ),
            None => {}
        }
    }
    f.finish(&["interval", "mode"], diags);
    policy
}

fn drift_interval(n: &Node, text: &str, diags: &mut Diagnostics) -> Option<std::time::Duration> {
    match humantime::parse_duration(text) {
        Ok(d) if d >= MIN_DRIFT_INTERVAL => Some(d),
        Ok(_) => {
            diags.error(
                &n.origin,
                format!("`drift.interval` is {text}, shorter than the minimum of 10s"),
                "write an interval of at least `10s` (for example `5m`)",
            );
            None
        }
        Err(e) => {
            diags.error(
                &n.origin,
                format!("`drift.interval` is `{text}`, which is not a duration: {e}"),
                "write a duration such as `30s`, `5m` or `1h`",
            );
            None
        }
    }
}

/// `preview: {max, ttl, vars, branches}` (see [`crate::preview`]): the
/// overrides may only name variables the environment has and only use
/// `${preview.name}` and `${preview.slot}`.
fn preview(
    n: &Node,
    env_vars: &crate::value::Map,
    diags: &mut Diagnostics,
) -> Option<crate::preview::PreviewSpec> {
    use crate::preview::{PreviewSpec, MAX_SLOTS};
    let mut f = Fields::new(n, "`preview`", diags)?;
    let mut p = PreviewSpec {
        origin: n.origin.clone(),
        ..PreviewSpec::default()
    };
    if let Some(m) = f.opt("max") {
        match &m.kind {
            NodeKind::Int(i) if (1..=i64::from(MAX_SLOTS)).contains(i) => {
                p.max = u32::try_from(*i).unwrap_or(1)
            }
            NodeKind::Int(i) => diags.error(
                &m.origin,
                format!("`preview.max` is {i}; it must be between 1 and {MAX_SLOTS}"),
                "write how many previews of this environment may live at once, e.g. `max: 3`",
            ),
            _ => decode::wrong_type(m, "`preview.max`", "an integer", diags),
        }
    }
    if let Some(t) = f.opt("ttl") {
        if let Some(text) = decode::string(t, "`preview.ttl`", diags) {
            match humantime::parse_duration(&text) {
                Ok(d) if !d.is_zero() => p.ttl = d,
                Ok(_) => diags.error(
                    &t.origin,
                    "`preview.ttl` is 0",
                    "write how long a preview lives at most, e.g. `4h`",
                ),
                Err(e) => diags.error(
                    &t.origin,
                    format!("`preview.ttl` is `{text}`, which is not a duration: {e}"),
                    "write a duration such as `30m`, `4h` or `2days`",
                ),
            }
        }
    }
    if let Some(b) = f.opt("branches") {
        if let Some(text) = decode::string(b, "`preview.branches`", diags) {
            if text.matches('*').count() != 1 {
                diags.error(
                    &b.origin,
                    format!("`preview.branches` is `{text}`; it needs exactly one `*`"),
                    "write a branch pattern such as `preview/*` or `refs/pull/*/head`",
                );
            } else {
                p.branches = Some(text);
            }
        }
    }
    if let Some(v) = f.opt("vars") {
        if Fields::new(v, "`preview.vars`", diags).is_some() {
            if let NodeKind::Map(entries) = &v.kind {
                for (k, node) in entries {
                    if !env_vars.contains_key(&k.name) {
                        let have: Vec<&str> = env_vars.keys().map(String::as_str).collect();
                        diags.error(
                            &k.origin,
                            format!(
                                "`preview.vars` overrides `{}`, which is not a variable of this environment",
                                k.name
                            ),
                            format!(
                                "override one of spec.vars ({}), or add `{}` to spec.vars first",
                                if have.is_empty() { "none".to_string() } else { have.join(", ") },
                                k.name
                            ),
                        );
                        continue;
                    }
                    let value = match &node.kind {
                        NodeKind::Str(s) => {
                            for r in crate::preview::unknown_refs(s) {
                                diags.error(
                                    &node.origin,
                                    format!("`preview.vars.{}` uses `{r}`; a preview variable may only use `${{preview.name}}` and `${{preview.slot}}`", k.name),
                                    "write the value with those two (`10.2${preview.slot}.0.0/16`, `${preview.name}.preview.example.com`); `$${` is a literal `${`",
                                );
                            }
                            Value::String(s.clone())
                        }
                        NodeKind::Int(_) | NodeKind::Bool(_) | NodeKind::Float(_) => {
                            node.to_value_spans().0
                        }
                        _ => {
                            decode::wrong_type(
                                node,
                                "a value of `preview.vars`",
                                "a scalar",
                                diags,
                            );
                            continue;
                        }
                    };
                    p.vars.insert(k.name.clone(), (value, node.origin.clone()));
                }
            }
        }
    }
    f.finish(&["max", "ttl", "vars", "branches"], diags);
    Some(p)
}

/// `promotion: {mode, soak, windows, heal}`; absent fields keep the
/// defaults (auto, no soak, no windows, heal follows the windows).
fn promotion(n: &Node, diags: &mut Diagnostics) -> Promotion {
    let mut p = Promotion::default();
    let Some(mut f) = Fields::new(n, "`promotion`", diags) else {
        return p;
    };
    if let Some(m) = f.opt("mode") {
        match decode::string(m, "`promotion.mode`", diags).as_deref() {
            Some("auto") => p.mode = promotion::Mode::Auto,
            Some("manual") => p.mode = promotion::Mode::Manual,
            Some(other) => diags.error(
                &m.origin,
                format!("`promotion.mode` is `{other}`, which is not a promotion mode"),
                "write `auto` (a commit moves on when the gate opens) or `manual` (it waits for `tidegate approve`)",
            ),
            None => {}
        }
    }
    if let Some(s) = f.opt("soak") {
        if let Some(text) = decode::string(s, "`promotion.soak`", diags) {
            match humantime::parse_duration(&text) {
                Ok(d) => p.soak = Some(d),
                Err(e) => diags.error(
                    &s.origin,
                    format!("`promotion.soak` is `{text}`, which is not a duration: {e}"),
                    "write a duration such as `30m`, `2h` or `1d`",
                ),
            }
        }
    }
    if let Some(h) = f.opt("heal") {
        match decode::string(h, "`promotion.heal`", diags).as_deref() {
            Some("windows") => p.heal = promotion::Heal::Windows,
            Some("always") => p.heal = promotion::Heal::Always,
            Some(other) => diags.error(
                &h.origin,
                format!("`promotion.heal` is `{other}`, which is not a heal rule"),
                "write `windows` (drift is healed only when the windows allow changes) or `always`",
            ),
            None => {}
        }
    }
    if let Some(ws) = f.opt("windows") {
        for w in decode::list(ws, "`promotion.windows`", diags).unwrap_or_default() {
            p.windows.extend(window(w, diags));
        }
    }
    f.finish(&["mode", "soak", "windows", "heal"], diags);
    p
}

/// One entry of `promotion.windows`: `{allow|deny: "<days> <from>-<to>",
/// timeZone: NAME}` (UTC when no zone is given).
fn window(n: &Node, diags: &mut Diagnostics) -> Option<promotion::Window> {
    let mut f = Fields::new(n, "an entry of `promotion.windows`", diags)?;
    let allow = f.opt("allow");
    let deny = f.opt("deny");
    let zone = f.opt("timeZone");
    f.finish(&["allow", "deny", "timeZone"], diags);
    let (is_allow, spec) = match (allow, deny) {
        (Some(a), None) => (true, a),
        (None, Some(d)) => (false, d),
        _ => {
            diags.error(
                &n.origin,
                "a promotion window needs exactly one of `allow` and `deny`",
                "write `- deny: Fri 12:00-24:00` or `- allow: Mon-Fri 08:00-18:00`, with `timeZone: Europe/Berlin` when not UTC",
            );
            return None;
        }
    };
    let text = decode::string(spec, "a promotion window", diags)?;
    let zone_name = match zone {
        Some(z) => decode::string(z, "`timeZone`", diags)?,
        None => "UTC".to_string(),
    };
    match promotion::Window::parse(is_allow, &text, &zone_name) {
        Ok(w) => Some(w),
        Err(e) if e.contains("time zone") => {
            let at = zone.map_or(&spec.origin, |z| &z.origin);
            diags.error(at, e, "see docs/format.md, \"Promotion\"");
            None
        }
        Err(e) => {
            diags.error(&spec.origin, e, "see docs/format.md, \"Promotion\"");
            None
        }
    }
}

fn targets(env: &mut Environment, n: &Node, diags: &mut Diagnostics) {
    let Some(mut f) = Fields::new(n, "`targets`", diags) else {
        return;
    };
    if let Some(k) = f.opt("kubernetes") {
        env.kubernetes = kube_target(k, diags);
    }
    if let Some(a) = f.opt("aws") {
        env.aws = aws_target(a, diags);
    }
    f.finish(&["kubernetes", "aws"], diags);
}

fn kube_target(n: &Node, diags: &mut Diagnostics) -> Option<KubeTarget> {
    let mut f = Fields::new(n, "`targets.kubernetes`", diags)?;
    let mut t = KubeTarget::default();
    if let Some(c) = f.opt("context") {
        t.context = decode::string(c, "`context`", diags);
    }
    if let Some(b) = f.opt("forceConflicts") {
        t.force_conflicts = decode::boolean(b, "`forceConflicts`", diags).unwrap_or(false);
    }
    f.finish(&["context", "forceConflicts"], diags);
    Some(t)
}

fn aws_target(n: &Node, diags: &mut Diagnostics) -> Option<AwsTarget> {
    let mut f = Fields::new(n, "`targets.aws`", diags)?;
    let region = f
        .req("region", diags)
        .and_then(|r| decode::string(r, "`region`", diags));
    let profile = f
        .opt("profile")
        .and_then(|p| decode::string(p, "`profile`", diags));
    let endpoint = f.opt("endpoint").and_then(|e| {
        let url = decode::string(e, "`endpoint`", diags)?;
        if url.starts_with("http://") || url.starts_with("https://") {
            Some(url)
        } else {
            diags.error(
                &e.origin,
                format!("`endpoint` must be an http:// or https:// URL, not `{url}`"),
                "write the EC2 endpoint as a URL, e.g. `https://ec2.eu-west-1.amazonaws.com` or `http://127.0.0.1:5000`",
            );
            None
        }
    });
    f.finish(&["region", "profile", "endpoint"], diags);
    Some(AwsTarget {
        region: region?,
        profile,
        endpoint,
    })
}

fn instance(n: &Node, diags: &mut Diagnostics) -> Option<Instance> {
    let mut f = Fields::new(n, "a module instance", diags)?;
    let name = f
        .req("name", diags)
        .and_then(|x| decode::name(x, "module instance `name`", diags));
    let source = f
        .req("source", diags)
        .and_then(|x| decode::string(x, "`source`", diags));
    let mut inst = Instance {
        origin: n.origin.clone(),
        ..Instance::default()
    };
    if let Some(i) = f.opt("inputs") {
        inst.inputs = inputs(i, diags);
    }
    if let Some(d) = f.opt("dependsOn") {
        inst.depends_on = decode::strings(d, "an entry of `dependsOn`", diags);
    }
    inst.repeat = super::repeat::decode(&mut f, diags);
    f.finish(
        &["name", "source", "inputs", "dependsOn", "forEach", "count"],
        diags,
    );
    inst.name = name?;
    inst.source = normalise(&source?);
    Some(inst)
}

fn inputs(n: &Node, diags: &mut Diagnostics) -> IndexMap<String, Located> {
    let mut out = IndexMap::new();
    if Fields::new(n, "`inputs`", diags).is_none() {
        return out;
    }
    if let NodeKind::Map(entries) = &n.kind {
        for (k, v) in entries {
            decode::ambiguous_values(v, diags);
            let (value, mut spans) = v.to_value_spans();
            spans.insert("@key", k.origin.clone());
            out.insert(k.name.clone(), Located { value, spans });
        }
    }
    out
}

/// Where the key of an input entry was written (recorded as `@key`).
pub fn key_origin(l: &Located) -> Origin {
    l.spans.get("@key").cloned().unwrap_or_else(|| l.origin())
}
