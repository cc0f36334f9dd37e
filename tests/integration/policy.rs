//! The policy fixture corpus: real YAML files under `tests/fixtures/policy/`,
//! read with positions, run through the public policy API.
//!
//! Each fixture holds one environment slice: `environment`, an optional
//! `policy:` block and `resources:` in the module format (kubernetes
//! `manifest`, aws `type` + `spec`, optional `waivers`). Expectations are
//! comments on the lines they are about, so the positions are tested too:
//!
//! - `# <- error image-digest`: an unwaived finding of that severity and
//!   check on this line;
//! - `# <~ probes`: a finding on this line that a waiver turned off;
//! - `# <x imdsv2`: an expired waiver written on this line;
//! - `# <! unknown check id`: a configuration error on this line whose
//!   message contains the text.
//!
//! `pass_*` files carry no `<-` or `<!` markers; `fail_*` files carry at
//! least one, and `fail_<check_id>` files at least one for that check.
//! In fixtures `${...}` is a value known only after apply and `!secret`
//! marks a sensitive string.

use std::collections::BTreeSet;
use std::path::Path;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use tidegate::policy::{evaluate, spans_below, Date, PolicyConfig, Report, Subject, Waiver};
use tidegate::provider::{ProviderKind, ResourceId};
use tidegate::sensitive::Sensitive;
use tidegate::value::{index_path, key_path, Map, Origin, Spans, Value};

use crate::support::repo_root;

/// The fixed "today" of the corpus, so expiries are deterministic.
const TODAY: (i32, u8, u8) = (2026, 6, 1);

/// Reads YAML into a value and its spans (map entries at their key,
/// list items at the item), as the loader does.
fn load(file: &str, text: &str) -> (Value, Spans) {
    let docs = MarkedYaml::load_from_str(text).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut spans = Spans::default();
    let doc = docs.first().unwrap_or_else(|| panic!("{file}: empty"));
    let origin = |m: &saphyr::Marker| Origin {
        file: file.to_string(),
        line: m.line(),
        column: m.col() + 1,
    };
    spans.insert("", origin(&doc.span.start));
    let value = convert(doc, "", &mut spans, &origin);
    (value, spans)
}

fn convert(
    node: &MarkedYaml<'_>,
    path: &str,
    spans: &mut Spans,
    origin: &dyn Fn(&saphyr::Marker) -> Origin,
) -> Value {
    match &node.data {
        YamlData::Value(s) => scalar(s),
        YamlData::Representation(s, _, _) => scalar(&Scalar::parse_from_cow(s.clone())),
        YamlData::Sequence(items) => Value::List(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let p = index_path(path, i);
                    spans.insert(p.clone(), origin(&item.span.start));
                    convert(item, &p, spans, origin)
                })
                .collect(),
        ),
        YamlData::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match &k.data {
                    YamlData::Value(s) => scalar_text(s),
                    other => panic!("unsupported key {other:?}"),
                };
                let p = key_path(path, &key);
                spans.insert(p.clone(), origin(&k.span.start));
                out.insert(key, convert(v, &p, spans, origin));
            }
            Value::Map(out)
        }
        YamlData::Tagged(tag, inner) if tag.suffix == "secret" => {
            let text = match convert(inner, path, spans, origin) {
                Value::String(s) => s,
                other => panic!("!secret on a non-string {other:?}"),
            };
            Value::Sensitive(Sensitive::from_string(text))
        }
        other => panic!("unsupported YAML node at {path}: {other:?}"),
    }
}

fn scalar(s: &Scalar<'_>) -> Value {
    match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Int(*i),
        Scalar::FloatingPoint(f) => Value::Float(f.into_inner()),
        Scalar::String(t) => match t.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            Some(reference) => Value::Unknown(reference.to_string()),
            None => Value::String(t.to_string()),
        },
    }
}

fn scalar_text(s: &Scalar<'_>) -> String {
    match s {
        Scalar::String(t) => t.to_string(),
        Scalar::Integer(i) => i.to_string(),
        Scalar::Boolean(b) => b.to_string(),
        other => panic!("unsupported key {other:?}"),
    }
}

/// One resource of a fixture, owning what a `Subject` borrows.
struct Resource {
    id: ResourceId,
    provider: ProviderKind,
    kind: String,
    body: Value,
    spans: Spans,
    origin: Origin,
    waivers: Vec<Waiver>,
}

/// What a fixture produced, as comparable marker lines.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    findings: BTreeSet<(usize, String)>,
    waived: BTreeSet<(usize, String)>,
    expired: BTreeSet<(usize, String)>,
    errors: Vec<(usize, String)>,
}

/// Parses the fixture's policy, waivers and resources and evaluates them.
fn run_fixture(file: &str, text: &str) -> (Outcome, Option<Report>) {
    let (doc, spans) = load(file, text);
    let env = doc
        .get_path("environment")
        .and_then(Value::as_str)
        .unwrap_or("prod");
    let mut errors = Vec::new();
    let policy = doc.get_path("policy").cloned().unwrap_or(Value::Null);
    let config = PolicyConfig::parse(env, &policy, &spans, "policy")
        .map_err(|e| errors.extend(e))
        .ok();
    let mut resources = Vec::new();
    let items = match doc.get_path("resources") {
        Some(Value::List(items)) => items.clone(),
        _ => Vec::new(),
    };
    for (i, r) in items.iter().enumerate() {
        let at = index_path("resources", i);
        match resource(r, &spans, &at) {
            Ok(res) => resources.push(res),
            Err(e) => errors.extend(e),
        }
    }
    let mut out = Outcome {
        errors: errors
            .iter()
            .map(|e| (e.origin().line, e.to_string()))
            .collect(),
        ..Outcome::default()
    };
    let Some(config) = config.filter(|_| errors.is_empty()) else {
        return (out, None);
    };
    let subjects: Vec<Subject<'_>> = resources
        .iter()
        .map(|r| Subject {
            environment: env,
            id: &r.id,
            provider: r.provider,
            kind: &r.kind,
            body: &r.body,
            spans: &r.spans,
            origin: &r.origin,
            waivers: &r.waivers,
        })
        .collect();
    let today = Date::new(TODAY.0, TODAY.1, TODAY.2).unwrap();
    let report = evaluate(&config, &subjects, today);
    for f in &report.findings {
        assert_eq!(f.origin.file, file, "{f:?}");
        out.findings
            .insert((f.origin.line, format!("{} {}", f.severity, f.check)));
    }
    for w in &report.waived {
        out.waived
            .insert((w.finding.origin.line, w.finding.check.to_string()));
    }
    for e in &report.expired_waivers {
        out.expired.insert((e.origin.line, e.check.to_string()));
    }
    (out, Some(report))
}

fn resource(
    r: &Value,
    spans: &Spans,
    at: &str,
) -> Result<Resource, Vec<tidegate::policy::ConfigError>> {
    let name = r
        .get_path("name")
        .and_then(Value::as_str)
        .expect("resource name");
    let provider = match r.get_path("provider").and_then(Value::as_str) {
        Some("kubernetes") => ProviderKind::Kubernetes,
        Some("aws") => ProviderKind::Aws,
        other => panic!("{at}: provider {other:?}"),
    };
    let (body_key, kind) = match provider {
        ProviderKind::Kubernetes => {
            let api = r
                .get_path("manifest.apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            let kind = r
                .get_path("manifest.kind")
                .and_then(Value::as_str)
                .unwrap_or("");
            ("manifest", format!("{api}/{kind}"))
        }
        ProviderKind::Aws => {
            let t = r
                .get_path("type")
                .and_then(Value::as_str)
                .expect("aws type");
            ("spec", t.to_string())
        }
    };
    let waivers_path = key_path(at, "waivers");
    let waivers = Waiver::parse_all(
        r.get_path("waivers").unwrap_or(&Value::Null),
        spans,
        &waivers_path,
    )?;
    Ok(Resource {
        id: ResourceId {
            module: "fixture".into(),
            name: name.into(),
        },
        provider,
        kind,
        body: r.get_path(body_key).cloned().unwrap_or(Value::Null),
        spans: spans_below(spans, &key_path(at, body_key)),
        origin: spans.get(at).cloned().expect("resource span"),
        waivers,
    })
}

/// The expectations written as comments in a fixture.
fn markers(text: &str) -> Outcome {
    let mut out = Outcome::default();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        for part in line.split("# <").skip(1) {
            let (mark, rest) = part.split_at(1);
            let rest = rest.trim().to_string();
            match mark {
                "-" => out.findings.insert((n, rest)),
                "~" => out.waived.insert((n, rest)),
                "x" => out.expired.insert((n, rest)),
                "!" => {
                    out.errors.push((n, rest));
                    true
                }
                other => panic!("line {n}: unknown marker `# <{other}`"),
            };
        }
    }
    out
}

/// Compares what a fixture produced with its markers; `None` when equal.
fn compare(file: &str, text: &str) -> Option<String> {
    let want = markers(text);
    let (got, report) = run_fixture(file, text);
    if std::env::var_os("POLICY_FIXTURE_DUMP").is_some() {
        let shown = report.as_ref().map(Report::render_text);
        eprintln!(
            "== {file}\n{}",
            shown.unwrap_or_else(|| format!("{:#?}", got.errors))
        );
    }
    let name = Path::new(file)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let mut problems = Vec::new();
    if name.starts_with("pass_") && (!want.findings.is_empty() || !want.errors.is_empty()) {
        problems.push("a pass_ fixture must not expect findings or errors".to_string());
    }
    if let Some(check) = name.strip_prefix("fail_") {
        let id = check.replace('_', "-");
        if want.findings.is_empty() && want.errors.is_empty() {
            problems.push("a fail_ fixture must expect a finding or an error".into());
        }
        let is_check = id.parse::<tidegate::policy::CheckId>().is_ok();
        if is_check
            && !want
                .findings
                .iter()
                .any(|(_, f)| f.ends_with(&format!(" {id}")))
        {
            problems.push(format!("fail_{check} expects no `{id}` finding"));
        }
    }
    let err_match = want.errors.len() == got.errors.len()
        && want
            .errors
            .iter()
            .zip(&got.errors)
            .all(|((wl, wt), (gl, gt))| wl == gl && gt.contains(wt.as_str()));
    if !err_match {
        problems.push(format!(
            "config errors: want {:?}\n got {:?}",
            want.errors, got.errors
        ));
    }
    for (what, w, g) in [
        ("findings", &want.findings, &got.findings),
        ("waived", &want.waived, &got.waived),
        ("expired waivers", &want.expired, &got.expired),
    ] {
        if w != g {
            problems.push(format!("{what}: want {w:?}\n got {g:?}"));
        }
    }
    if problems.is_empty() {
        return None;
    }
    let rendered = report.map(|r| r.render_text()).unwrap_or_default();
    Some(format!("{file}:\n  {}\n{rendered}", problems.join("\n  ")))
}

#[test]
fn fixture_corpus() {
    let dir = repo_root().join("tests/fixtures/policy");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "corpus too small: {}", files.len());
    let failures: Vec<String> = files
        .iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let rel = p
                .strip_prefix(repo_root())
                .unwrap()
                .to_string_lossy()
                .to_string();
            compare(&rel, &text)
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn secrets_in_fixtures_never_reach_output() {
    let file = "tests/fixtures/policy/fail_secret_image.yaml";
    let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
    let (_, report) = run_fixture(file, &text);
    let report = report.expect("fixture parses");
    assert!(!report.findings.is_empty());
    let all = format!(
        "{}{}{}",
        report.render_text(),
        report.render_markdown(),
        serde_json::to_string(&report).unwrap()
    );
    assert!(!all.contains("internal-registry"), "{all}");
}
