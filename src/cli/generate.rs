//! `tidegate import ENV --generate --select tag:K=V|label:SEL --module NAME`:
//! start a repository from what runs today. The environment's providers
//! find the existing objects the selectors select (EC2 by tag, Kubernetes
//! by label), a module is written with one resource per object (EC2 specs
//! as observe reads them, Kubernetes manifests of the fields their authors
//! set, ids of other found objects turned into `${resource...}`
//! references), and an instance of it is added to the environment file.
//! With `--yes` the files are written, the repository is checked again
//! (any problem: the files are put back), and every object is imported as
//! `tidegate import` does, one audit entry for all: the next plan of the
//! environment shows no change for them.
//!
//! Never written: Secrets (their values belong in SOPS), objects a
//! controller made for another (ownerReferences), objects another
//! tidegate or this environment already owns; each is listed with why.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use saphyr::{Mapping, Scalar, Yaml, YamlEmitter};

use crate::observe::{self, Providers};
use crate::plan;
use crate::provider::{Claim, Discovered, Selector};
use crate::resource::{ProviderKind, ResourceId};
use crate::secrets::{self, Identities};
use crate::state::{self, history, EnvLock, RecordStore};
use crate::value::Value;

use super::import::ImportArgs;

/// One object the module will declare.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub provider: ProviderKind,
    /// Its resource name in the module (unique, valid).
    pub name: String,
    pub found: Discovered,
}

/// `tag:KEY=VALUE` or `label:SELECTOR`.
pub(crate) fn parse_selector(s: &str) -> Result<Selector, String> {
    if let Some(rest) = s.strip_prefix("tag:") {
        return match rest.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok(Selector::Tag {
                key: k.to_string(),
                value: v.to_string(),
            }),
            _ => Err(format!(
                "`--select {s}`: write tag:KEY=VALUE (EC2 resources with that tag)"
            )),
        };
    }
    if let Some(rest) = s.strip_prefix("label:") {
        if !rest.trim().is_empty() {
            return Ok(Selector::Label(rest.to_string()));
        }
    }
    Err(format!(
        "`--select {s}`: write tag:KEY=VALUE (EC2) or label:SELECTOR (Kubernetes, e.g. label:app=shop)"
    ))
}

/// A valid resource name from `raw` (letters, digits, `-`, `_`; starting
/// with a letter), lowercase.
fn clean_name(raw: &str, fallback: &str) -> String {
    let mut out = String::new();
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').to_string();
    if out.starts_with(|c: char| c.is_ascii_alphabetic()) {
        out
    } else if out.is_empty() {
        fallback.to_string()
    } else {
        format!("{fallback}-{out}")
    }
}

/// Names each found object: EC2 by its `Name` tag (else its type),
/// Kubernetes as `<kind>-<name>`; a name taken already gets `-2`, `-3`.
pub(crate) fn name_entries(found: Vec<(ProviderKind, Discovered)>) -> Vec<Entry> {
    let mut taken = BTreeSet::new();
    let mut out = Vec::new();
    for (provider, d) in found {
        let short_kind = d.kind.rsplit('/').next().unwrap_or(&d.kind).to_string();
        let base = match provider {
            ProviderKind::Kubernetes => clean_name(
                &format!("{}-{}", short_kind.to_ascii_lowercase(), d.name),
                "object",
            ),
            _ => clean_name(&d.name, &clean_name(&short_kind, "resource")),
        };
        let mut name = base.clone();
        let mut n = 2;
        while !taken.insert(name.clone()) {
            name = format!("{base}-{n}");
            n += 1;
        }
        out.push(Entry {
            provider,
            name,
            found: d,
        });
    }
    out
}

/// Turns the ids of other found objects into references, so the module
/// holds together and the graph orders it: an EC2 id anywhere in an EC2
/// spec becomes `${resource.<name>.id}`; the namespace of a Kubernetes
/// object whose Namespace was found becomes
/// `${resource.<name>.metadata.name}`.
pub(crate) fn link(entries: &mut [Entry]) {
    let ec2: BTreeMap<String, String> = entries
        .iter()
        .filter(|e| e.provider == ProviderKind::Aws)
        .map(|e| (e.found.external_id.clone(), e.name.clone()))
        .collect();
    let namespaces: BTreeMap<String, String> = entries
        .iter()
        .filter(|e| e.provider == ProviderKind::Kubernetes && e.found.kind == "v1/Namespace")
        .map(|e| (e.found.external_id.clone(), e.name.clone()))
        .collect();
    for e in entries.iter_mut() {
        match e.provider {
            ProviderKind::Kubernetes => {
                if let Some(Value::Map(meta)) = match &mut e.found.body {
                    Value::Map(root) => root.get_mut("metadata"),
                    _ => None,
                } {
                    let ns = meta.get("namespace").and_then(Value::as_str);
                    if let Some(target) = ns.and_then(|ns| namespaces.get(ns)) {
                        meta.insert(
                            "namespace".into(),
                            Value::String(format!("${{resource.{target}.metadata.name}}")),
                        );
                    }
                }
            }
            _ => {
                let own = e.found.external_id.clone();
                e.found.body = rewrite_ids(&e.found.body, &ec2, &own);
            }
        }
    }
}

fn rewrite_ids(v: &Value, ids: &BTreeMap<String, String>, own: &str) -> Value {
    match v {
        Value::String(s) if s != own => match ids.get(s) {
            Some(name) => Value::String(format!("${{resource.{name}.id}}")),
            None => v.clone(),
        },
        Value::List(l) => Value::List(l.iter().map(|x| rewrite_ids(x, ids, own)).collect()),
        Value::Map(m) => Value::Map(
            m.iter()
                .map(|(k, x)| (k.clone(), rewrite_ids(x, ids, own)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Keys a reader looks for first, in this order, before the rest (sorted).
const FIRST_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
];

fn yaml_of(v: &Value) -> Yaml<'static> {
    match v {
        Value::Null => Yaml::Value(Scalar::Null),
        Value::Bool(b) => Yaml::Value(Scalar::Boolean(*b)),
        Value::Int(i) => Yaml::Value(Scalar::Integer(*i)),
        Value::Float(f) => Yaml::Value(Scalar::FloatingPoint((*f).into())),
        Value::String(s) => Yaml::Value(Scalar::String(s.clone().into())),
        Value::List(l) => Yaml::Sequence(l.iter().map(yaml_of).collect()),
        Value::Map(m) => {
            let mut out = Mapping::new();
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by_key(|k| {
                FIRST_KEYS
                    .iter()
                    .position(|f| f == k)
                    .unwrap_or(FIRST_KEYS.len())
            });
            for k in keys {
                out.insert(
                    Yaml::Value(Scalar::String(k.clone().into())),
                    yaml_of(&m[k]),
                );
            }
            Yaml::Mapping(out)
        }
        // Discovery never yields these (Secrets are left out, nothing is
        // unknown in a live object); never write one.
        Value::Sensitive(_) | Value::Unknown(_) => Yaml::Value(Scalar::Null),
    }
}

fn key(k: &str) -> Yaml<'static> {
    Yaml::Value(Scalar::String(k.to_string().into()))
}

/// The module file declaring `entries`.
pub(crate) fn module_yaml(
    module: &str,
    env: &str,
    selectors: &[Selector],
    entries: &[Entry],
) -> String {
    let mut resources = Vec::new();
    for e in entries {
        let mut r = Mapping::new();
        r.insert(key("name"), key(&e.name));
        r.insert(key("provider"), key(e.provider.name()));
        match e.provider {
            ProviderKind::Kubernetes => {
                r.insert(key("manifest"), yaml_of(&e.found.body));
            }
            _ => {
                r.insert(key("type"), key(&e.found.kind));
                r.insert(key("spec"), yaml_of(&e.found.body));
            }
        }
        resources.push(Yaml::Mapping(r));
    }
    let mut spec = Mapping::new();
    spec.insert(key("resources"), Yaml::Sequence(resources));
    let mut meta = Mapping::new();
    meta.insert(key("name"), key(module));
    let mut root = Mapping::new();
    root.insert(key("apiVersion"), key("tidegate.dev/v1"));
    root.insert(key("kind"), key("Module"));
    root.insert(key("metadata"), Yaml::Mapping(meta));
    root.insert(key("spec"), Yaml::Mapping(spec));
    let mut body = String::new();
    let mut emitter = YamlEmitter::new(&mut body);
    emitter.multiline(true);
    // Writing into a String cannot fail.
    let _ = emitter.dump(&Yaml::Mapping(root));
    let body = body.strip_prefix("---\n").unwrap_or(&body).to_string();
    let shown: Vec<String> = selectors.iter().map(ToString::to_string).collect();
    format!(
        "# Generated by `tidegate import {env} --generate --select {}` from what\n\
         # ran in environment {env}; every value is the live one. Replace literal\n\
         # values with inputs and vars as the module grows.\n{body}\n",
        shown.join(" --select ")
    )
}

/// `env_text` (an environment file) with an instance of module `module`
/// (at `modules/<module>`, no inputs) added at the end of `spec.modules`.
pub(crate) fn add_instance(env_text: &str, module: &str) -> Result<String, String> {
    let lines: Vec<&str> = env_text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let content = |l: &str| {
        let t = l.trim_start();
        !t.is_empty() && !t.starts_with('#')
    };
    let spec = lines
        .iter()
        .position(|l| l.trim_end() == "spec:")
        .ok_or("the environment file has no top-level `spec:` block line")?;
    let spec_end = (spec + 1..lines.len())
        .find(|&i| content(lines[i]) && indent(lines[i]) == 0)
        .unwrap_or(lines.len());
    let child = (spec + 1..spec_end)
        .find(|&i| content(lines[i]))
        .map(|i| indent(lines[i]))
        .unwrap_or(2);
    let pad = " ".repeat(child);
    let modules = (spec + 1..spec_end)
        .find(|&i| indent(lines[i]) == child && lines[i].trim_start().starts_with("modules:"));
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    match modules {
        None => {
            let mut at = spec_end;
            while at > spec + 1 && !content(lines[at - 1]) {
                at -= 1;
            }
            let block = [
                format!("{pad}modules:"),
                format!("{pad}  - name: {module}"),
                format!("{pad}    source: modules/{module}"),
            ];
            out.splice(at..at, block);
        }
        Some(m) => {
            if lines[m].trim_start().trim_end() != "modules:" {
                return Err(format!(
                    "line {}: `spec.modules` is not a block list; add `- name: {module}` with `source: modules/{module}` by hand",
                    m + 1
                ));
            }
            let item = (m + 1..spec_end)
                .find(|&i| content(lines[i]))
                .map(|i| indent(lines[i]))
                .unwrap_or(child + 2);
            // The list ends at the first line that is neither inside an
            // item nor a new one.
            let mut last = m;
            for (i, l) in lines.iter().enumerate().take(spec_end).skip(m + 1) {
                if !content(l) {
                    continue;
                }
                let at = indent(l);
                if at > item || (at == item && l.trim_start().starts_with('-')) {
                    last = i;
                } else {
                    break;
                }
            }
            let ipad = " ".repeat(item);
            let block = [
                format!("{ipad}- name: {module}"),
                format!("{ipad}  source: modules/{module}"),
            ];
            let mut block: Vec<String> = block.to_vec();
            if last > m {
                block.insert(0, String::new());
            }
            out.splice(last + 1..last + 1, block);
        }
    }
    let mut text = out.join("\n");
    text.push('\n');
    Ok(text)
}

/// Runs `tidegate import ENV --generate`: exit 0 written and imported, 2
/// shown but not confirmed, 1 nothing found or refused.
pub fn run(args: &ImportArgs, out: &mut dyn Write) -> super::Result<u8> {
    let module = args.module.clone().ok_or_else(|| {
        super::Error::Usage("--generate needs --module NAME: the module to write".into())
    })?;
    if !crate::load::decode::valid_name(&module) {
        return Err(super::Error::Usage(format!(
            "`--module {module}`: a module name starts with a letter and has letters, digits, `-` and `_` only"
        )));
    }
    if args.select.is_empty() {
        return Err(super::Error::Usage(
            "--generate needs at least one --select tag:KEY=VALUE or --select label:SELECTOR"
                .into(),
        ));
    }
    let selectors = args
        .select
        .iter()
        .map(|s| parse_selector(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(super::Error::Usage)?;
    if args.revision.is_some() {
        return Err(super::Error::Usage(
            "--generate writes into the working tree: leave out --revision".into(),
        ));
    }
    let loaded = super::load_commit(&args.repo, None)?;
    let checked = match super::check(&loaded.files) {
        Ok(c) => c,
        Err(report) => {
            writeln!(out, "{report}")?;
            return Ok(1);
        }
    };
    let env = checked
        .model
        .environment(&args.env)
        .ok_or_else(|| {
            let known: Vec<&str> = checked
                .model
                .environments
                .iter()
                .map(|e| e.name.as_str())
                .collect();
            super::Error::Usage(format!(
                "unknown environment `{}` (environments: {})",
                args.env,
                known.join(", ")
            ))
        })?
        .clone();
    let module_dir = format!("modules/{module}");
    if env.instance(&module).is_some() {
        return Err(super::Error::Usage(format!(
            "environment {} already has an instance named `{module}`: choose another --module",
            env.name
        )));
    }
    if args.repo.join(&module_dir).exists() {
        return Err(super::Error::Usage(format!(
            "{module_dir} exists already: choose another --module"
        )));
    }
    let env_file = PathBuf::from(env.file.as_str());
    let kinds: BTreeSet<ProviderKind> = selectors
        .iter()
        .map(|s| match s {
            Selector::Tag { .. } => ProviderKind::Aws,
            Selector::Label(_) => ProviderKind::Kubernetes,
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let providers = Providers::connect(&env.target(None), kinds.iter().copied())
            .await
            .map_err(plan::Error::from)?;
        // Every selector, each object once.
        let mut found: Vec<(ProviderKind, Discovered)> = Vec::new();
        let mut seen = BTreeSet::new();
        for selector in &selectors {
            for kind in &kinds {
                let Some(p) = providers.get(*kind) else {
                    continue;
                };
                let d = p.discover(selector).await.map_err(|e| {
                    super::Error::Usage(format!("discovering {selector} in {}: {e}", env.name))
                })?;
                if !d.unlisted.is_empty() {
                    let shown: Vec<&str> = d.unlisted.iter().take(8).map(String::as_str).collect();
                    let more = d.unlisted.len() - shown.len();
                    writeln!(
                        out,
                        "not read: {} kind(s) tidegate may not list ({}{}); run with a kubeconfig that may, or grant list on them",
                        d.unlisted.len(),
                        shown.join(", "),
                        if more > 0 { format!(" and {more} more") } else { String::new() }
                    )?;
                }
                for pass in d.passed {
                    writeln!(
                        out,
                        "left out {} {}: {}",
                        pass.kind, pass.external_id, pass.reason
                    )?;
                }
                for f in d.found {
                    if seen.insert((f.kind.clone(), f.external_id.clone())) {
                        found.push((*kind, f));
                    }
                }
            }
        }
        let mut kept = Vec::new();
        for (kind, f) in found {
            match &f.claim {
                Claim::Ours | Claim::Legacy => writeln!(
                    out,
                    "left out {} {}: environment {} manages it already",
                    f.kind, f.external_id, env.name
                )?,
                Claim::Foreign(o) => writeln!(
                    out,
                    "left out {} {}: another tidegate installation owns it ({o})",
                    f.kind, f.external_id
                )?,
                Claim::Unmanaged => kept.push((kind, f)),
            }
        }
        if kept.is_empty() {
            writeln!(
                out,
                "nothing to import: no unmanaged object matches the selectors"
            )?;
            return Ok(1);
        }
        let mut entries = name_entries(kept);
        link(&mut entries);
        let text = module_yaml(&module, &env.name, &selectors, &entries);
        let env_path = args.repo.join(&env_file);
        let env_text = std::fs::read_to_string(&env_path)?;
        let new_env = add_instance(&env_text, &module)
            .map_err(|e| super::Error::Usage(format!("{}: {e}", env_file.display())))?;
        writeln!(out, "found {} object(s):", entries.len())?;
        for e in &entries {
            writeln!(
                out,
                "  {module}.{}  {} {}",
                e.name, e.found.kind, e.found.external_id
            )?;
        }
        if !args.yes {
            writeln!(out, "\n{module_dir}/module.yaml would be:\n{text}")?;
            writeln!(
                out,
                "and {} would get an instance `{module}` (source: {module_dir}).",
                env_file.display()
            )?;
            writeln!(
                out,
                "nothing written; run again with --yes to write the files and import the objects"
            )?;
            return Ok(2);
        }
        write_files(&args.repo, &module_dir, &text, &env_path, &new_env)?;
        let undo = || {
            let _ = std::fs::remove_dir_all(args.repo.join(&module_dir));
            let _ = std::fs::write(&env_path, &env_text);
        };
        match adopt_all(args, &env.name, &module, &entries, &providers, out).await {
            Ok(Adopted::All) => Ok(0),
            // Objects stamped so far are declared by these files: removing
            // them would make the next apply prune those objects.
            Ok(Adopted::Partly) => Ok(1),
            Ok(Adopted::None) => {
                undo();
                Ok(1)
            }
            Err(e) => {
                undo();
                Err(e)
            }
        }
    })
}

fn write_files(
    repo: &Path,
    module_dir: &str,
    text: &str,
    env_path: &Path,
    env_text: &str,
) -> super::Result<()> {
    std::fs::create_dir_all(repo.join(module_dir))?;
    std::fs::write(repo.join(module_dir).join("module.yaml"), text)?;
    std::fs::write(env_path, env_text)?;
    Ok(())
}

/// How far [`adopt_all`] got.
enum Adopted {
    All,
    /// Some objects carry the marks, not all.
    Partly,
    /// Nothing was stamped.
    None,
}

/// Checks the repository with the new files and stamps the environment's
/// marks on every object, stopping at the first failure.
async fn adopt_all(
    args: &ImportArgs,
    env_name: &str,
    module: &str,
    entries: &[Entry],
    providers: &Providers,
    out: &mut dyn Write,
) -> super::Result<Adopted> {
    let loaded = super::load_commit(&args.repo, None)?;
    let checked = match super::check(&loaded.files) {
        Ok(c) => c,
        Err(report) => {
            writeln!(
                out,
                "the generated files do not check; they were removed again:\n{report}"
            )?;
            return Ok(Adopted::None);
        }
    };
    let env = checked
        .model
        .environment(env_name)
        .expect("checked with the environment");
    let identities = Identities::from_env(&args.identities)?;
    let decrypted = secrets::load_env(env, &loaded.files, &identities)?;
    let scopes = observe::scopes_of(&checked.graph, &env.name);
    let live = observe::observe_env(providers, &scopes)
        .await
        .map_err(plan::Error::from)?;
    let desired = plan::render_desired(&checked.model, &env.name, Some(&live), &decrypted, None)?;
    let owner = state::scoped(&env.project, &env.name);
    let lock = EnvLock::acquire(
        env.kubernetes.as_ref(),
        &args.state_dir,
        &owner,
        &state::this_process(),
    )
    .await?;
    let mut done = Vec::new();
    let mut failed = None;
    for e in entries {
        let id = ResourceId {
            module: module.to_string(),
            name: e.name.clone(),
        };
        let Some(want) = desired.iter().find(|d| d.id == id) else {
            failed = Some(format!("{id} did not render"));
            break;
        };
        let Some(p) = providers.get(e.provider) else {
            continue;
        };
        let stamped = async {
            let found = p.lookup(want, &e.found.external_id).await?.ok_or_else(|| {
                crate::provider::Error::Invalid {
                    id: id.clone(),
                    origin: want.origin.clone(),
                    message: format!("{} is gone", e.found.external_id),
                }
            })?;
            p.adopt(want, &found.live).await
        }
        .await;
        match stamped {
            Ok(()) => done.push(id.to_string()),
            Err(err) => {
                failed = Some(format!("{id} ({}): {err}", e.found.external_id));
                break;
            }
        }
    }
    let mut entry = history::Entry::new(
        &env.name,
        history::EventKind::Import,
        history::Subject::cli(),
    );
    entry.commit = Some(loaded.commit.clone());
    entry.resources = done.clone();
    entry.reason = Some(format!("generated module {module}"));
    if let Some(f) = &failed {
        entry.outcome = history::Outcome::Failed;
        entry.error = Some(f.clone());
    }
    let store =
        RecordStore::for_target(env.kubernetes.as_ref(), &args.state_dir, &env.project).await;
    if let Err(e) = match store {
        Ok(s) => s.append_history(&entry).await,
        Err(e) => Err(e),
    } {
        tracing::warn!(environment = %env.name, error = %e, "could not append to the audit history");
    }
    if let Err(e) = lock.release().await {
        tracing::warn!(environment = %env.name, error = %e, "could not release the apply lock");
    }
    if let Some(f) = failed {
        if done.is_empty() {
            writeln!(out, "nothing imported, the files were removed again: {f}")?;
            return Ok(Adopted::None);
        }
        writeln!(
            out,
            "import stopped after {} of {} object(s): {f}\nthe files stay written (the imported objects are declared there); `tidegate import {} <id> <external id> --yes` imports the rest one by one",
            done.len(),
            entries.len(),
            env.name
        )?;
        return Ok(Adopted::Partly);
    }
    writeln!(
        out,
        "wrote modules/{module}/module.yaml and an instance `{module}` in {}; imported {} object(s) into {}; `tidegate plan --env {}` shows no change for them",
        env.file,
        done.len(),
        env.name,
        env.name
    )?;
    Ok(Adopted::All)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(kind: &str, id: &str, name: &str, body: serde_json::Value) -> Discovered {
        Discovered {
            kind: kind.into(),
            external_id: id.into(),
            name: name.into(),
            body: Value::from_json(body),
            claim: Claim::Unmanaged,
        }
    }

    #[test]
    fn selectors_are_tags_or_labels() {
        assert_eq!(
            parse_selector("tag:team=payments"),
            Ok(Selector::Tag {
                key: "team".into(),
                value: "payments".into()
            })
        );
        assert_eq!(
            parse_selector("label:app=shop,tier"),
            Ok(Selector::Label("app=shop,tier".into()))
        );
        for bad in ["team=payments", "tag:=x", "tag:team", "label:", "name:x"] {
            assert!(parse_selector(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_valid_unique_and_ids_become_references() {
        let mut entries = name_entries(vec![
            (
                ProviderKind::Aws,
                found(
                    "vpc",
                    "vpc-1",
                    "Shop VPC",
                    serde_json::json!({"cidrBlock": "10.0.0.0/16"}),
                ),
            ),
            (
                ProviderKind::Aws,
                found(
                    "subnet",
                    "subnet-1",
                    "subnet",
                    serde_json::json!({"vpcId": "vpc-1", "cidrBlock": "10.0.1.0/24"}),
                ),
            ),
            (
                ProviderKind::Aws,
                found(
                    "subnet",
                    "subnet-2",
                    "subnet",
                    serde_json::json!({"vpcId": "vpc-1", "cidrBlock": "10.0.2.0/24", "tags": {"note": "vpc-9"}}),
                ),
            ),
            (
                ProviderKind::Kubernetes,
                found(
                    "v1/Namespace",
                    "shop",
                    "shop",
                    serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
                ),
            ),
            (
                ProviderKind::Kubernetes,
                found(
                    "apps/v1/Deployment",
                    "shop/web",
                    "web",
                    serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"}}),
                ),
            ),
            (
                ProviderKind::Kubernetes,
                found(
                    "v1/Service",
                    "other/9web",
                    "9web",
                    serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "9web", "namespace": "other"}}),
                ),
            ),
        ]);
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "shop-vpc",
                "subnet",
                "subnet-2",
                "namespace-shop",
                "deployment-web",
                "service-9web"
            ]
        );
        link(&mut entries);
        assert_eq!(
            entries[1].found.body.get_path("vpcId"),
            Some(&Value::String("${resource.shop-vpc.id}".into()))
        );
        assert_eq!(
            entries[2].found.body.get_path("tags.note"),
            Some(&Value::String("vpc-9".into())),
            "an id of nothing found stays literal"
        );
        assert_eq!(
            entries[4].found.body.get_path("metadata.namespace"),
            Some(&Value::String(
                "${resource.namespace-shop.metadata.name}".into()
            ))
        );
        assert_eq!(
            entries[5].found.body.get_path("metadata.namespace"),
            Some(&Value::String("other".into()))
        );
        let text = module_yaml(
            "legacy",
            "dev",
            &[Selector::Label("app=shop".into())],
            &entries,
        );
        assert!(
            text.starts_with(
                "# Generated by `tidegate import dev --generate --select label:app=shop`"
            ),
            "{text}"
        );
        assert!(text.contains("  resources:\n    - name: shop-vpc\n      provider: aws\n      type: vpc\n      spec:\n        cidrBlock: 10.0.0.0/16\n"), "{text}");
        assert!(
            text.contains("vpcId: \"${resource.shop-vpc.id}\""),
            "{text}"
        );
        assert!(
            text.contains("      manifest:\n        apiVersion: apps/v1\n"),
            "{text}"
        );
    }

    #[test]
    fn an_instance_is_added_at_the_end_of_the_modules_list() {
        let env = "apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: dev\nspec:\n  vars:\n    a: 1\n  modules:\n    - name: net\n      source: modules/net\n      inputs:\n        cidr: x\n\n    - name: web\n      source: modules/web\n  # promotion follows\n  promotion:\n    after: []\n";
        let out = add_instance(env, "legacy").unwrap();
        assert_eq!(
            out,
            "apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: dev\nspec:\n  vars:\n    a: 1\n  modules:\n    - name: net\n      source: modules/net\n      inputs:\n        cidr: x\n\n    - name: web\n      source: modules/web\n\n    - name: legacy\n      source: modules/legacy\n  # promotion follows\n  promotion:\n    after: []\n"
        );
        // Items at the key's own indentation; the list last in the file.
        let flat = "spec:\n  modules:\n  - name: net\n    source: modules/net\n";
        assert_eq!(
            add_instance(flat, "legacy").unwrap(),
            "spec:\n  modules:\n  - name: net\n    source: modules/net\n\n  - name: legacy\n    source: modules/legacy\n"
        );
        // No list yet.
        let none = "spec:\n  vars:\n    a: 1\n\n";
        assert_eq!(
            add_instance(none, "legacy").unwrap(),
            "spec:\n  vars:\n    a: 1\n  modules:\n    - name: legacy\n      source: modules/legacy\n\n"
        );
        assert!(add_instance("spec:\n  modules: []\n", "x").is_err());
        assert!(add_instance("kind: Environment\n", "x").is_err());
    }
}
