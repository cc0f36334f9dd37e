//! The stage between loading and the graph: Helm charts (`helm:` entries)
//! rendered per instance with the real `helm`, into ordinary resources.
//!
//! A chart branches on its values and values differ per instance, so a
//! chart cannot be expanded per module like a Kustomize overlay. For each
//! instance of a module with a `helm:` entry, [`expand`] renders the
//! chart and stores a module of that instance's own — a clone of the
//! module plus the chart's objects as resources `<entry>/<Kind>/<name>`
//! (each with [`crate::model::Resource::source`] set) — under the key
//! `<module folder>@<environment>/<instance>`, and points the instance at
//! it. The graph, rendering, plan, execution, prune and health then need
//! nothing new.
//!
//! Values: the entry's `values` are evaluated in the instance's scope
//! without network or key. A value known offline (a literal, an input,
//! a var, `${env.*}`) is given to helm as itself. A secret or a value known
//! only after apply is given as a placeholder token, and each token that
//! comes back verbatim in helm's output is replaced by the reference text
//! as written in the module (`${input.password}`), which tidegate renders
//! per environment like any manifest: secrets stay sensitive and helm
//! never sees them. A token a template transformed (`b64enc`, `upper`,
//! `sha256sum`, ...) would be wrong: the chart is rendered a second time
//! with other tokens, and when the two renderings differ once the tokens
//! are replaced, the value is refused with an error naming it. One
//! transformation is understood: a Secret's `data.<key>` that is the
//! base64 of text holding tokens becomes `stringData.<key>` (the same
//! object once the API server encodes it).
//!
//! Hooks: objects annotated `helm.sh/hook` with `pre-install` or
//! `pre-upgrade` are applied before the chart's other objects,
//! `post-install`/`post-upgrade` after them (graph edges); `test` hooks
//! and hooks only for delete or rollback are left out.
//!
//! A chart from a Helm repository or an OCI registry (`repository:`, or
//! `chart: oci://...`, with an exact `version` and the `digest` of its
//! `.tgz`) is pulled once with `helm pull` — the only run with network —
//! and kept in `$XDG_CACHE_HOME/tidegate/helm/charts/<sha256>.tgz` only
//! when its sha256 is the declared one (helm does not check a repository
//! index's digest itself); the kept `.tgz` is what helm renders.
//!
//! helm runs with no network, a time limit, its home folders under
//! `$XDG_CACHE_HOME/tidegate/helm`, values on standard input. Its output
//! (tokens, never a secret) is cached by the digest of the chart, the
//! values, the release, the namespace and the tool, in memory and in
//! `$XDG_CACHE_HOME/tidegate/render`.

use std::collections::HashMap;
use std::path::PathBuf;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::diag::Diagnostics;
use crate::load::sources::{self, Object};
use crate::load::yaml::{self, NodeKind};
use crate::load::Files;
use crate::model::{DependsOn, Instance, Model, Module, RemoteChart, SourceDecl, SourceSpec};
use crate::render::{RenderOptions, Renderer, StructuralSecrets};
use crate::tool::{self, Network, Tool};
use crate::value::{Map, Origin, Spans, Value};

/// Rendering a chart failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// helm could not run or failed.
    #[error(transparent)]
    Tool(#[from] tool::Error),
    /// The pulled chart is not the one the module declares.
    #[error("the pulled .tgz has sha256 {got}, the module declares {want}: refused")]
    Digest { want: String, got: String },
    /// A value given as a token came back transformed.
    #[error("the chart transforms value {path} (a secret or a value known only after apply), so tidegate cannot put the reference back")]
    Transformed { path: String },
    /// The value cannot be given to helm.
    #[error("{0}")]
    Value(String),
}

/// Kinds without a namespace: they get none from `helm.namespace`.
const CLUSTER_KINDS: [&str; 14] = [
    "Namespace",
    "Node",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "RuntimeClass",
    "CSIDriver",
    "APIService",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
];

const HOOK: &str = "helm.sh/hook";

fn is_helm(s: &&SourceDecl) -> bool {
    matches!(s.spec, SourceSpec::Helm { .. })
}

/// Renders every chart of every instance into a module of the instance's
/// own (see the module documentation). Values are evaluated one instance
/// after the other; helm runs in parallel.
pub fn expand(
    model: &mut Model,
    files: &Files,
    rename: Option<(&str, &str)>,
    diags: &mut Diagnostics,
) {
    let known = HashMap::new();
    // (environment, instance, module clone, its charts to render)
    let mut made: Vec<(usize, usize, Module, Vec<Job>)> = Vec::new();
    for (ei, env) in model.environments.iter().enumerate() {
        let opts = RenderOptions {
            known: &known,
            secrets: &StructuralSecrets,
            owner: rename
                .filter(|(e, _)| *e == env.name)
                .map(|(_, as_name)| as_name),
        };
        let Ok(r) = Renderer::new(model, &env.name, opts) else {
            continue;
        };
        for (ii, inst) in env.instances.iter().enumerate() {
            let Some(m) = model.modules.get(&inst.source) else {
                continue;
            };
            if !m.sources.iter().any(|s| is_helm(&s)) {
                continue;
            }
            let jobs = m
                .sources
                .iter()
                .filter(is_helm)
                .filter_map(|source| prepare(&r, inst, m, source, files, diags))
                .collect();
            let mut module = m.clone();
            module.source = format!("{}@{}/{}", m.source, env.name, inst.name);
            made.push((ei, ii, module, jobs));
        }
    }
    let all: Vec<&Job> = made.iter().flat_map(|(_, _, _, jobs)| jobs).collect();
    let limit = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut rendered: Vec<Result<(Vec<Object>, Diagnostics), Error>> = Vec::new();
    for chunk in all.chunks(limit) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|job| scope.spawn(move || render(job)))
                .collect();
            for h in handles {
                rendered.push(h.join().unwrap_or_else(|_| {
                    Err(Error::Value(
                        "rendering the chart stopped unexpectedly".into(),
                    ))
                }));
            }
        });
    }
    let mut rendered = rendered.into_iter();
    for (ei, ii, mut module, jobs) in made {
        for job in &jobs {
            let Some(result) = rendered.next() else {
                break;
            };
            let objects = finish_job(job, result, diags);
            let (objects, phases) = hooks(objects);
            let mut resources = sources::into_resources(&job.source, objects, diags);
            order_hooks(&mut resources, &phases, &job.source);
            module.resources.extend(resources);
        }
        model.environments[ei].instances[ii].source = module.source.clone();
        model.modules.insert(module.source.clone(), module);
    }
}

/// When a hook object is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Pre,
    Main,
    Post,
}

/// The phase of an object by its `helm.sh/hook` annotation; `None` when
/// it is left out (tests, delete and rollback hooks).
fn phase(body: &Value) -> Option<Phase> {
    let Some(hooks) = body
        .get_path("metadata.annotations")
        .and_then(Value::as_map)
        .and_then(|a| a.get(HOOK))
        .and_then(Value::as_str)
    else {
        return Some(Phase::Main);
    };
    let hooks: Vec<&str> = hooks.split(',').map(str::trim).collect();
    if hooks.iter().any(|h| h.starts_with("test")) {
        return None;
    }
    if hooks
        .iter()
        .any(|h| *h == "pre-install" || *h == "pre-upgrade")
    {
        return Some(Phase::Pre);
    }
    if hooks
        .iter()
        .any(|h| *h == "post-install" || *h == "post-upgrade")
    {
        return Some(Phase::Post);
    }
    None
}

/// Pre hooks before the other objects, post hooks after them.
fn order_hooks(
    resources: &mut [crate::model::Resource],
    phases: &[(String, Phase)],
    source: &SourceDecl,
) {
    let phase_of = |r: &crate::model::Resource| {
        let origin_key = sources::meta(&r.body, "name")
            .unwrap_or_default()
            .to_string();
        let kind = r.kind.clone();
        phases
            .iter()
            .find(|(k, _)| *k == format!("{kind}/{origin_key}"))
            .map_or(Phase::Main, |(_, p)| *p)
    };
    let pre: Vec<String> = resources
        .iter()
        .filter(|r| phase_of(r) == Phase::Pre)
        .map(|r| r.name.clone())
        .collect();
    let main: Vec<String> = resources
        .iter()
        .filter(|r| phase_of(r) == Phase::Main)
        .map(|r| r.name.clone())
        .collect();
    for r in resources.iter_mut() {
        let after = match phase_of(r) {
            Phase::Pre => continue,
            Phase::Main => &pre,
            Phase::Post => &main,
        };
        for name in after {
            r.depends_on
                .push((DependsOn::Resource(name.clone()), source.origin.clone()));
        }
    }
}

/// One value given to helm as a token: the two tokens and the text the
/// module wrote.
#[derive(Clone, Debug)]
struct Token {
    a: String,
    b: String,
    reference: String,
    path: String,
}

/// The values as JSON for helm (side a, side b) and the tokens.
fn tokenize(
    evaluated: &Value,
    written: Option<&Value>,
    path: &str,
    tokens: &mut Vec<Token>,
) -> Result<(serde_json::Value, serde_json::Value), Error> {
    let opaque = evaluated.has_sensitive() || evaluated.has_unknown();
    if !opaque {
        let j = evaluated.to_json_masked();
        return Ok((j.clone(), j));
    }
    match (evaluated, written) {
        (Value::Map(m), Some(Value::Map(w))) => {
            let mut a = serde_json::Map::new();
            let mut b = serde_json::Map::new();
            for (k, v) in m {
                let (x, y) = tokenize(v, w.get(k), &format!("{path}.{k}"), tokens)?;
                a.insert(k.clone(), x);
                b.insert(k.clone(), y);
            }
            Ok((a.into(), b.into()))
        }
        (Value::List(l), Some(Value::List(w))) => {
            let mut a = Vec::new();
            let mut b = Vec::new();
            for (i, v) in l.iter().enumerate() {
                let (x, y) = tokenize(v, w.get(i), &format!("{path}[{i}]"), tokens)?;
                a.push(x);
                b.push(y);
            }
            Ok((a.into(), b.into()))
        }
        (Value::Sensitive(_) | Value::Unknown(_) | Value::String(_), Some(Value::String(s))) => {
            let i = tokens.len();
            let t = Token {
                a: format!("tidegate-{i}-a-ref"),
                b: format!("tidegate-{i}-b-ref"),
                reference: s.clone(),
                path: path.to_string(),
            };
            let out = (t.a.clone().into(), t.b.clone().into());
            tokens.push(t);
            Ok(out)
        }
        _ => Err(Error::Value(format!(
            "value {path} holds a secret or a value known only after apply inside a map or list"
        ))),
    }
}

/// A chart to render for one instance: the chart, its values evaluated in
/// the instance's scope and the tokens; `None` (with the problem in
/// `diags`) when it cannot be rendered.
fn prepare(
    r: &Renderer<'_>,
    inst: &Instance,
    m: &Module,
    source: &SourceDecl,
    files: &Files,
    diags: &mut Diagnostics,
) -> Option<Job> {
    let none = None;
    let SourceSpec::Helm {
        chart,
        chart_origin,
        release,
        remote,
        settings,
    } = &source.spec
    else {
        return none;
    };
    let (dir, chart_name, chart_files, target) = match remote {
        Some(r) => {
            let bytes = match fetch(chart, r) {
                Ok(b) => b,
                Err(e) => {
                    let fix = match &e {
                        Error::Digest { got, .. } => format!("check where the chart comes from; if this .tgz is the one to trust, write `digest: sha256:{got}`"),
                        _ => "check `chart`, `repository` and `version` (`helm pull` with them shows the same error)".to_string(),
                    };
                    diags.error(
                        &r.digest_origin,
                        format!("chart `{chart}` {}: {e}", r.version),
                        fix,
                    );
                    return none;
                }
            };
            let label = match &r.repository {
                Some(url) => format!("{}/{chart}@{}", url.trim_end_matches('/'), r.version),
                None => format!("{chart}@{}", r.version),
            };
            let name = chart.rsplit('/').next().unwrap_or(chart).to_string();
            (
                label,
                name,
                vec![("chart.tgz".to_string(), bytes)],
                "chart.tgz",
            )
        }
        None => {
            let Some((dir, name, files)) = local_chart(m, chart, chart_origin, files, diags) else {
                return none;
            };
            (dir, name, files, "chart")
        }
    };
    let what = format!("helm chart {dir} of `{}`", source.name);
    let evaluated = match r.eval_in_module(inst, &settings.value, &settings.spans) {
        Ok(v) => v,
        // The render stage reports the reference at its line.
        Err(_) => return none,
    };
    let namespace = match evaluated.get_path("namespace") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            diags.error(
                settings.spans.get("namespace").unwrap_or(&source.origin),
                format!("{what}: `namespace` must be known before apply and not a secret"),
                "write the namespace with literals, inputs, vars or `${env.name}`",
            );
            return none;
        }
    };
    let include_crds = !matches!(evaluated.get_path("includeCRDs"), Some(Value::Bool(false)));
    let mut tokens = Vec::new();
    let values = match evaluated.get_path("values") {
        Some(v) => tokenize(v, settings.value.get_path("values"), "values", &mut tokens),
        None => Ok((serde_json::json!({}), serde_json::json!({}))),
    };
    let (values_a, values_b) = match values {
        Ok(v) => v,
        Err(e) => {
            diags.error(
                &source.origin,
                format!("{what}: {e}"),
                "give the secret or after-apply value to the chart as a value of its own (a string)",
            );
            return none;
        }
    };
    Some(Job {
        source: source.clone(),
        what,
        release: release.clone().unwrap_or_else(|| source.name.clone()),
        dir,
        chart_name,
        files: chart_files,
        target,
        namespace,
        namespace_template: settings
            .value
            .get_path("namespace")
            .and_then(Value::as_str)
            .map(str::to_string),
        include_crds,
        tokens,
        values_a,
        values_b,
    })
}

/// One chart of one instance, ready for helm.
struct Job {
    source: SourceDecl,
    /// `helm chart <dir> of `<entry>``, for messages.
    what: String,
    release: String,
    dir: String,
    chart_name: String,
    files: Vec<(String, Vec<u8>)>,
    target: &'static str,
    namespace: Option<String>,
    namespace_template: Option<String>,
    include_crds: bool,
    tokens: Vec<Token>,
    values_a: serde_json::Value,
    values_b: serde_json::Value,
}

impl Job {
    fn run(&self) -> Run<'_> {
        Run {
            dir: &self.dir,
            chart_name: &self.chart_name,
            files: &self.files,
            target: self.target,
            release: &self.release,
            namespace: self.namespace.as_deref(),
            namespace_template: self.namespace_template.as_deref(),
            include_crds: self.include_crds,
        }
    }
}

/// helm's objects for a job (rendered twice when there are tokens, to
/// find a transformed one), with the problems of the objects.
fn render(job: &Job) -> Result<(Vec<Object>, Diagnostics), Error> {
    let run = job.run();
    let a = read(
        &run.template(&job.values_a)?,
        &run,
        &job.tokens,
        |t| &t.a,
        Diagnostics::default(),
    )?;
    if !job.tokens.is_empty() {
        let b = read(
            &run.template(&job.values_b)?,
            &run,
            &job.tokens,
            |t| &t.b,
            Diagnostics::default(),
        )?;
        if !same(&a.0, &b.0) {
            return Err(transformed(&run, &job.tokens, &job.values_a, &a.0));
        }
    }
    Ok(a)
}

/// The objects of a rendered job, or its error reported at the entry.
fn finish_job(
    job: &Job,
    result: Result<(Vec<Object>, Diagnostics), Error>,
    diags: &mut Diagnostics,
) -> Vec<Object> {
    let (objects, problems) = match result {
        Ok(r) => r,
        Err(e) => {
            let fix = match e {
                Error::Transformed { .. } => "use the value in the chart as it is (`{{ .Values.x }}`, `| quote`), or make it a literal or an input known before apply; a Secret's data may take it through `b64enc`".to_string(),
                _ => format!("fix the chart or its values (`helm template {} {}` shows the same error)", job.release, job.dir),
            };
            diags.error(&job.source.origin, format!("{}: {e}", job.what), fix);
            return Vec::new();
        }
    };
    diags.extend(problems);
    if objects.iter().all(|o| phase(&o.body).is_none()) {
        diags.error(
            &job.source.origin,
            format!("{} renders no object", job.what),
            "check the chart's templates and values, or remove the entry",
        );
    }
    objects
}

/// The objects tidegate applies (hooks it leaves out removed), and the
/// phase of each (`apiVersion/kind/name`).
fn hooks(objects: Vec<Object>) -> (Vec<Object>, Vec<(String, Phase)>) {
    let mut phases = Vec::new();
    let mut out = Vec::new();
    for o in objects {
        if let Some(p) = phase(&o.body) {
            let name = sources::meta(&o.body, "name").unwrap_or_default();
            phases.push((format!("{}/{name}", o.kind), p));
            out.push(o);
        }
    }
    (out, phases)
}

/// A chart folder of the repository: its repository path, its name (from
/// Chart.yaml) and its files as written for helm.
type LocalChart = (String, String, Vec<(String, Vec<u8>)>);

fn local_chart(
    m: &Module,
    chart: &str,
    chart_origin: &Origin,
    files: &Files,
    diags: &mut Diagnostics,
) -> Option<LocalChart> {
    // The module's folder: its file's (a per-instance copy's `source` is
    // `<folder>@<env>/<instance>`).
    let folder = m
        .file
        .rsplit_once('/')
        .map_or(m.source.as_str(), |(d, _)| d);
    let dir = sources::resolve(folder, chart, chart_origin, "`helm.chart`", diags)?;
    let Some(chart_yaml) = files.get(&format!("{dir}/Chart.yaml")) else {
        diags.error(
            chart_origin,
            format!("`{chart}` ({dir}) holds no Chart.yaml"),
            "point `chart` at the folder of a Helm chart, or give `repository:` for a chart of a Helm repository",
        );
        return None;
    };
    let name = std::str::from_utf8(chart_yaml)
        .ok()
        .and_then(|t| yaml::parse(&dir, t, &mut Diagnostics::default()))
        .and_then(|docs| {
            docs.first()
                .and_then(|d| d.get("name"))
                .and_then(|n| n.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| dir.rsplit('/').next().unwrap_or_default().to_string());
    let prefix = format!("{dir}/");
    let chart_files = files
        .range(prefix.clone()..)
        .take_while(|(p, _)| p.starts_with(&prefix))
        .map(|(p, b)| (format!("chart/{}", &p[prefix.len()..]), b.clone()))
        .collect();
    Some((dir, name, chart_files))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// helm's home folders, under tidegate's cache (or `fallback`).
fn helm_homes(fallback: &std::path::Path) -> [(&'static str, PathBuf); 3] {
    let home = tool::cache_dir()
        .map(|b| b.join("helm"))
        .unwrap_or_else(|| fallback.join(".helm"));
    [
        ("HELM_CACHE_HOME", home.join("cache")),
        ("HELM_CONFIG_HOME", home.join("config")),
        ("HELM_DATA_HOME", home.join("data")),
    ]
}

/// The `.tgz` of a remote chart: from tidegate's cache when it is there
/// with the declared digest, else pulled (the one run with network) and
/// kept only when its sha256 is the declared one.
fn fetch(chart: &str, r: &RemoteChart) -> Result<Vec<u8>, Error> {
    let cached = tool::cache_dir().map(|b| {
        b.join("helm")
            .join("charts")
            .join(format!("{}.tgz", r.digest))
    });
    if let Some(bytes) = cached.as_ref().and_then(|p| std::fs::read(p).ok()) {
        if sha256_hex(&bytes) == r.digest {
            return Ok(bytes);
        }
    }
    let helm = Tool::find("helm")?;
    let tmp = tool::workdir("helm")?;
    let out = tmp.path().join("out");
    let files_err = |source| {
        Error::Tool(tool::Error::Files {
            tool: "helm".into(),
            source,
        })
    };
    std::fs::create_dir_all(&out).map_err(files_err)?;
    let mut args = vec!["pull", chart];
    if let Some(url) = &r.repository {
        args.extend(["--repo", url.as_str()]);
    }
    args.extend(["--version", r.version.as_str(), "-d", "out"]);
    if let Some(host) = chart.strip_prefix("oci://") {
        // A registry on this machine (a test's, a local mirror) speaks
        // plain HTTP; any other is reached over HTTPS only.
        let host = host.split('/').next().unwrap_or_default();
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
            args.push("--plain-http");
        }
    }
    let homes = helm_homes(tmp.path());
    let env: Vec<(&str, &std::path::Path)> = homes.iter().map(|(k, v)| (*k, v.as_path())).collect();
    helm.run_env(&args, tmp.path(), b"", Network::Allowed, &env)
        .map_err(|e| match e {
            tool::Error::Failed { tool, stderr } => tool::Error::Failed {
                tool,
                stderr: stderr.trim().trim_start_matches("Error: ").to_string(),
            },
            other => other,
        })?;
    let tgz = std::fs::read_dir(&out)
        .map_err(files_err)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "tgz"))
        .ok_or_else(|| Error::Value("helm pull wrote no .tgz".into()))?;
    let bytes = std::fs::read(&tgz).map_err(files_err)?;
    let got = sha256_hex(&bytes);
    if got != r.digest {
        return Err(Error::Digest {
            want: format!("sha256:{}", r.digest),
            got,
        });
    }
    if let Some(p) = cached {
        if std::fs::create_dir_all(p.parent().unwrap_or(&p)).is_ok() {
            let _ = std::fs::write(&p, &bytes);
        }
    }
    Ok(bytes)
}

fn same(a: &[Object], b: &[Object]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.kind == y.kind && x.body == y.body)
}

/// Which token the chart transforms: the first one whose b-token alone
/// changes the rendering.
fn transformed(
    run: &Run<'_>,
    tokens: &[Token],
    values_a: &serde_json::Value,
    a: &[Object],
) -> Error {
    for (i, t) in tokens.iter().enumerate() {
        let text = values_a
            .to_string()
            .replace(&format!("\"{}\"", t.a), &format!("\"{}\"", t.b));
        let Ok(values) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let mut swapped = tokens.to_vec();
        swapped[i].a = t.b.clone();
        let Ok(out) = run.template(&values) else {
            continue;
        };
        if let Ok((objects, _)) = read(&out, run, &swapped, |t| &t.a, Diagnostics::default()) {
            if !same(a, &objects) {
                return Error::Transformed {
                    path: t.path.clone(),
                };
            }
        }
    }
    Error::Transformed {
        path: tokens
            .iter()
            .map(|t| t.path.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// One chart to render.
struct Run<'r> {
    /// The chart folder's repository path.
    dir: &'r str,
    /// The name in its Chart.yaml (helm's messages and `# Source:` lines
    /// start with it).
    chart_name: &'r str,
    /// The chart's files as written for helm (path in helm's folder,
    /// bytes): `chart/...` of a folder, or `chart.tgz` of a pulled chart.
    files: &'r [(String, Vec<u8>)],
    /// What helm renders: `chart` or `chart.tgz`.
    target: &'r str,
    release: &'r str,
    /// The namespace for helm (evaluated).
    namespace: Option<&'r str>,
    /// The namespace as written (`web-${env.name}`), given to namespaced
    /// objects without one and rendered per environment like any field.
    namespace_template: Option<&'r str>,
    include_crds: bool,
}

impl Run<'_> {
    /// `helm template` of the chart with `values`, cached.
    fn template(&self, values: &serde_json::Value) -> Result<String, Error> {
        let helm = Tool::find("helm")?;
        let values = values.to_string();
        let mut key = tool::Digest::new(&helm);
        key.part(self.release.as_bytes())
            .part(self.namespace.unwrap_or("").as_bytes())
            .part(if self.include_crds { b"crds" } else { b"" })
            .part(values.as_bytes())
            .files(self.files.iter().map(|(p, b)| (p, b)));
        Ok(tool::cached("helm", key, || {
            let tmp = tool::workdir("helm")?;
            for (p, b) in self.files {
                tool::write_file("helm", tmp.path(), p, b)?;
            }
            let homes = helm_homes(tmp.path());
            let env: Vec<(&str, &std::path::Path)> =
                homes.iter().map(|(k, v)| (*k, v.as_path())).collect();
            let mut args = vec!["template", self.release, self.target, "-f", "-"];
            if let Some(ns) = self.namespace {
                args.extend(["-n", ns]);
            }
            if self.include_crds {
                args.push("--include-crds");
            }
            let out = helm
                .run_env(&args, tmp.path(), values.as_bytes(), Network::Blocked, &env)
                .map_err(|e| match e {
                    tool::Error::Failed { tool, stderr } => tool::Error::Failed {
                        tool,
                        stderr: self.message(&stderr, &tmp.path().display().to_string()),
                    },
                    other => other,
                })?;
            Ok(out)
        })?)
    }

    /// helm's error with the template paths as repository paths, without
    /// the temporary folder and the `--debug` hint.
    fn message(&self, stderr: &str, tmp: &str) -> String {
        let name = self.chart_name;
        stderr
            .lines()
            .filter(|l| !l.starts_with("Use --debug flag"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace(&format!("{tmp}/chart"), self.dir)
            .replace(&format!("({name}/"), &format!("({}/", self.dir))
            .replace(&format!("on {name}/"), &format!("on {}/", self.dir))
            .trim()
            .trim_start_matches("Error: ")
            .to_string()
    }

    /// The repository path of a `# Source:` template path.
    fn template_path(&self, source: &str) -> String {
        match source.split_once('/') {
            Some((_, rest)) => format!("{}/{rest}", self.dir),
            None => self.dir.to_string(),
        }
    }
}

/// The objects of helm's output with the tokens (side `pick`) put back as
/// references; problems with the objects in the second part.
fn read(
    output: &str,
    run: &Run<'_>,
    tokens: &[Token],
    pick: fn(&Token) -> &str,
    mut diags: Diagnostics,
) -> Result<(Vec<Object>, Diagnostics), Error> {
    let mut out = Vec::new();
    let mut chunk = String::new();
    let mut file = run.dir.to_string();
    let mut flush = |chunk: &mut String, file: &str, diags: &mut Diagnostics| {
        if chunk.trim().is_empty() {
            chunk.clear();
            return Ok(());
        }
        let label = format!("{file} (helm output)");
        let mut parse = Diagnostics::default();
        let docs = yaml::parse(&label, chunk, &mut parse).unwrap_or_default();
        if let Some(d) = parse.iter().next() {
            return Err(Error::Value(format!(
                "the output of helm for {file} is not YAML tidegate reads: {}",
                d.message
            )));
        }
        for doc in docs.iter().filter(|d| d.kind != NodeKind::Null) {
            let Some(mut o) = sources::object(doc, "an object helm rendered", diags) else {
                continue;
            };
            o.origin = Origin {
                file: file.to_string(),
                line: 1,
                column: 1,
            };
            o.spans = Spans::default();
            finish(&mut o, run.namespace_template, tokens, pick);
            out.push(o);
        }
        chunk.clear();
        Ok(())
    };
    for line in output.lines() {
        if line == "---" || line.starts_with("--- ") {
            flush(&mut chunk, &file, &mut diags)?;
            file = run.dir.to_string();
            continue;
        }
        if let Some(src) = line.strip_prefix("# Source: ") {
            file = run.template_path(src.trim());
        }
        chunk.push_str(line);
        chunk.push('\n');
    }
    flush(&mut chunk, &file, &mut diags)?;
    Ok((out, diags))
}

/// `${` taken literally, the namespace (as written) of a namespaced object
/// without one, a Secret's data holding tokens as `stringData`, and the
/// tokens as references.
fn finish(o: &mut Object, namespace: Option<&str>, tokens: &[Token], pick: fn(&Token) -> &str) {
    let kind = o.kind.rsplit('/').next().unwrap_or_default().to_string();
    sources::escape(&mut o.body);
    if let (Some(ns), Value::Map(m)) = (namespace, &mut o.body) {
        if !CLUSTER_KINDS.contains(&kind.as_str()) {
            if let Some(Value::Map(meta)) = m.get_mut("metadata") {
                if !meta.contains_key("namespace") {
                    meta.insert("namespace".into(), Value::String(ns.to_string()));
                }
            }
        }
    }
    if tokens.is_empty() {
        return;
    }
    if o.kind == "v1/Secret" {
        secret_data(&mut o.body, tokens, pick);
    }
    put_back(&mut o.body, tokens, pick);
}

/// Moves each `data` entry whose decoded text holds a token to
/// `stringData`.
fn secret_data(body: &mut Value, tokens: &[Token], pick: fn(&Token) -> &str) {
    let Value::Map(m) = body else { return };
    let mut moved = Map::new();
    if let Some(Value::Map(data)) = m.get_mut("data") {
        let keys: Vec<String> = data.keys().cloned().collect();
        for k in keys {
            let Some(Value::String(enc)) = data.get(&k) else {
                continue;
            };
            let Some(text) = base64::engine::general_purpose::STANDARD
                .decode(enc.as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
            else {
                continue;
            };
            if tokens.iter().any(|t| text.contains(pick(t))) {
                data.shift_remove(&k);
                moved.insert(k, Value::String(crate::expr::escape(&text)));
            }
        }
        if data.is_empty() {
            m.shift_remove("data");
        }
    }
    if moved.is_empty() {
        return;
    }
    match m.get_mut("stringData") {
        Some(Value::Map(s)) => s.extend(moved),
        _ => {
            m.insert("stringData".into(), Value::Map(moved));
        }
    }
}

/// Replaces each token in the strings of `v` by its reference text.
fn put_back(v: &mut Value, tokens: &[Token], pick: fn(&Token) -> &str) {
    match v {
        Value::String(s) => {
            for t in tokens {
                if s.contains(pick(t)) {
                    *s = s.replace(pick(t), &t.reference);
                }
            }
        }
        Value::List(items) => items.iter_mut().for_each(|i| put_back(i, tokens, pick)),
        Value::Map(m) => m.values_mut().for_each(|i| put_back(i, tokens, pick)),
        _ => {}
    }
}

/// The hook phases of `(kind/name)` keys, for tests.
#[cfg(test)]
fn phases_of(bodies: &[Value]) -> Vec<Option<Phase>> {
    bodies.iter().map(phase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensitive::Sensitive;

    fn v(j: serde_json::Value) -> Value {
        Value::from_json(j)
    }

    #[test]
    fn secrets_and_after_apply_values_become_tokens_and_known_values_stay() {
        let mut evaluated = v(serde_json::json!({"replicas": 2, "name": "web", "db": {}}));
        if let Value::Map(m) = &mut evaluated {
            if let Some(Value::Map(db)) = m.get_mut("db") {
                db.insert(
                    "password".into(),
                    Value::Sensitive(Sensitive::new(Vec::new())),
                );
                db.insert("host".into(), Value::Unknown("resource.db.host".into()));
            }
        }
        let written = v(serde_json::json!({
            "replicas": "${input.replicas}", "name": "web",
            "db": {"password": "${input.password}", "host": "${input.host}"}
        }));
        let mut tokens = Vec::new();
        let (a, b) = tokenize(&evaluated, Some(&written), "values", &mut tokens).unwrap();
        assert_eq!(a["replicas"], 2);
        assert_eq!(a["db"]["password"], "tidegate-0-a-ref");
        assert_eq!(b["db"]["password"], "tidegate-0-b-ref");
        assert_eq!(tokens[0].reference, "${input.password}");
        assert_eq!(tokens[1].path, "values.db.host");
        assert!(
            !a.to_string().contains("input."),
            "no reference reaches helm"
        );
    }

    #[test]
    fn tokens_come_back_as_references_and_secret_data_as_string_data() {
        let tokens = vec![Token {
            a: "tidegate-0-a-ref".into(),
            b: "tidegate-0-b-ref".into(),
            reference: "${input.password}".into(),
            path: "values.password".into(),
        }];
        let enc = base64::engine::general_purpose::STANDARD.encode("tidegate-0-a-ref");
        let mut o = Object {
            kind: "v1/Secret".into(),
            body: v(serde_json::json!({
                "metadata": {"name": "db"},
                "data": {"password": enc, "user": "YWRtaW4="},
                "x": "run ${HOME} with tidegate-0-a-ref"
            })),
            spans: Spans::default(),
            origin: Origin::default(),
        };
        finish(&mut o, Some("web-dev"), &tokens, |t| &t.a);
        let j = o.body.to_json_masked();
        assert_eq!(j["stringData"]["password"], "${input.password}");
        assert_eq!(j["data"]["user"], "YWRtaW4=");
        assert_eq!(j["x"], "run $${HOME} with ${input.password}");
        assert_eq!(j["metadata"]["namespace"], "web-dev");
    }

    #[test]
    fn pre_hooks_come_first_and_post_hooks_last() {
        let source = SourceDecl {
            name: "app".into(),
            origin: Origin::default(),
            spec: SourceSpec::Manifests {
                path: String::new(),
                path_origin: Origin::default(),
                substitute: false,
            },
            depends_on: Vec::new(),
            waivers: None,
        };
        let object = |kind: &str, name: &str, hook: Option<&str>| {
            let mut meta = serde_json::json!({"name": name});
            if let Some(h) = hook {
                meta["annotations"] = serde_json::json!({HOOK: h});
            }
            Object {
                kind: format!("v1/{kind}"),
                body: v(serde_json::json!({"metadata": meta})),
                spans: Spans::default(),
                origin: Origin::default(),
            }
        };
        let (objects, phases) = hooks(vec![
            object("ConfigMap", "cfg", None),
            object("Pod", "migrate", Some("pre-install,pre-upgrade")),
            object("Pod", "notify", Some("post-install")),
            object("Pod", "smoke", Some("test")),
        ]);
        assert_eq!(objects.len(), 3, "the test hook is left out");
        let mut d = Diagnostics::default();
        let mut resources = sources::into_resources(&source, objects, &mut d);
        order_hooks(&mut resources, &phases, &source);
        let deps = |name: &str| -> Vec<String> {
            resources
                .iter()
                .find(|r| r.name == name)
                .map(|r| {
                    r.depends_on
                        .iter()
                        .map(|(d, _)| match d {
                            DependsOn::Resource(n) => n.clone(),
                            DependsOn::Module(m) => m.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(deps("app/ConfigMap/cfg"), vec!["app/Pod/migrate"]);
        assert!(deps("app/Pod/migrate").is_empty());
        assert_eq!(deps("app/Pod/notify"), vec!["app/ConfigMap/cfg"]);
    }

    #[test]
    fn hooks_are_ordered_or_left_out() {
        let hook = |h: &str| v(serde_json::json!({"metadata": {"annotations": {HOOK: h}}}));
        assert_eq!(
            phases_of(&[
                v(serde_json::json!({"metadata": {}})),
                hook("pre-install,pre-upgrade"),
                hook("post-install"),
                hook("test"),
                hook("pre-delete"),
            ]),
            vec![
                Some(Phase::Main),
                Some(Phase::Pre),
                Some(Phase::Post),
                None,
                None
            ]
        );
    }
}
