//! Loading a repository: files in, a [`Model`] in which every reference is
//! known to exist out.
//!
//! Two stages, like ripgrep's low-level then high-level arguments:
//! 1. [`yaml`]: each file's text to a tree of nodes that know their
//!    file:line:column, then [`env`] / [`module`] decode the documents
//!    field by field (unknown fields are errors);
//! 2. [`check`]: resolution — order the environments, check that every
//!    module, input, output, secret key and `${...}` reference exists.
//!
//! Input is an in-memory file set (repo-relative paths with `/`), so the
//! same code loads a working tree ([`read_dir`]) or a Git commit. Every
//! problem of a run is collected; the caller gets them all, sorted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::diag::{Diagnostics, Report};
use crate::model::Model;
use crate::value::Origin;

pub mod aws_schema;
pub mod aws_values;
mod check;
pub mod decode;
mod env;
mod module;
pub mod project;
pub mod sops;
pub mod yaml;

/// A repository's files: repo-relative path (with `/`) to contents.
pub type Files = BTreeMap<String, Vec<u8>>;

/// The `apiVersion` of every tidegate document.
pub const API_VERSION: &str = "tidegate.dev/v1";

/// Loading failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder of the repository could not be read from disk.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The repository's documents have problems; all of them are listed.
    #[error("{0}")]
    Invalid(Report),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Loads and resolves a repository.
pub fn load(files: &Files) -> Result<Model> {
    let mut diags = Diagnostics::default();
    let model = load_with(files, &mut diags);
    if diags.is_empty() {
        Ok(model)
    } else {
        Err(Error::Invalid(Report::new(diags)))
    }
}

/// Loads as much as possible, recording every problem in `diags`. The
/// model is complete only when `diags` stays empty.
pub fn load_with(files: &Files, diags: &mut Diagnostics) -> Model {
    let mut model = Model::default();
    let project_text = files
        .get(project::FILE)
        .and_then(|b| utf8(project::FILE, b, diags));
    if let Some(p) = project::decode(project_text.as_deref(), diags) {
        model.project = p;
    }
    // Modules whose file has problems: references into them are not
    // checked, so one mistake is reported once, not again at every use.
    let mut broken = std::collections::BTreeSet::new();
    for (path, text) in files_under(files, "modules/", diags) {
        let before = diags.len();
        let decoded = module::decode(&path, &text, diags);
        if diags.len() > before {
            broken.insert(path.rsplit_once('/').map_or("", |(d, _)| d).to_string());
        }
        if let Some(m) = decoded {
            model.modules.insert(m.source.clone(), m);
        }
    }
    let mut envs = Vec::new();
    for (path, text) in files_under(files, "environments/", diags) {
        envs.extend(env::decode(&path, &text, &model.project, diags));
    }
    if envs.is_empty() && diags.is_empty() {
        diags.error(
            &Origin {
                file: "environments/".into(),
                line: 1,
                column: 1,
            },
            "no environments found",
            "add an Environment document as environments/<name>.yaml",
        );
    }
    model.secret_keys = sops::read_referenced(files, &envs, diags);
    model.environments = check::order(envs, diags);
    check::references(&model, &broken, diags);
    model
}

/// The YAML documents tidegate reads under `dir`: `environments/*.yaml`
/// and `modules/<name>/module.yaml` (`.yml` too), decoded as UTF-8.
fn files_under(files: &Files, dir: &str, diags: &mut Diagnostics) -> Vec<(String, String)> {
    let wanted = |rest: &str| match dir {
        "environments/" => !rest.contains('/') && is_yaml(rest),
        _ => {
            matches!(rest.split_once('/'), Some((_, f)) if f == "module.yaml" || f == "module.yml")
        }
    };
    files
        .range(dir.to_string()..)
        .take_while(|(p, _)| p.starts_with(dir))
        .filter(|(p, _)| wanted(&p[dir.len()..]))
        .filter_map(|(p, bytes)| utf8(p, bytes, diags).map(|t| (p.clone(), t)))
        .collect()
}

fn is_yaml(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

fn utf8(path: &str, bytes: &[u8], diags: &mut Diagnostics) -> Option<String> {
    match std::str::from_utf8(bytes) {
        Ok(t) => Some(t.to_string()),
        Err(e) => {
            diags.error(
                &Origin {
                    file: path.to_string(),
                    line: 1,
                    column: 1,
                },
                format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.valid_up_to()
                ),
                "save the file as UTF-8",
            );
            None
        }
    }
}

/// Reads the files tidegate uses from a working tree: everything under
/// `environments/`, `modules/` and `secrets/` (YAML and JSON only),
/// `tidegate.yaml` and `.sops.yaml`.
pub fn read_dir(root: &Path) -> Result<Files> {
    let mut files = Files::new();
    for top in ["environments", "modules", "secrets"] {
        let dir = root.join(top);
        if dir.is_dir() {
            walk(root, &dir, &mut files)?;
        }
    }
    for top in [".sops.yaml", project::FILE] {
        let file = root.join(top);
        if file.is_file() {
            files.insert(top.into(), read(&file)?);
        }
    }
    if files.is_empty() && !root.is_dir() {
        return Err(Error::Read {
            path: root.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        });
    }
    Ok(files)
}

fn walk(root: &Path, dir: &Path, files: &mut Files) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|source| Error::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(root, &p, files)?;
        } else if p
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            let rel = p.strip_prefix(root).unwrap_or(&p);
            let key = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            files.insert(key, read(&p)?);
        }
    }
    Ok(())
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).map_err(|source| Error::Read {
        path: p.to_path_buf(),
        source,
    })
}

/// Decodes the header shared by every document (`apiVersion`, `kind`,
/// `metadata`) and returns the `metadata.name` node and the `spec` node.
fn header<'n>(
    doc: &'n yaml::Node,
    kind: &str,
    diags: &mut Diagnostics,
) -> Option<(String, Origin, &'n yaml::Node)> {
    let mut f = decode::Fields::new(doc, &format!("{kind} document"), diags)?;
    if let Some(v) = f.req("apiVersion", diags) {
        if v.as_str() != Some(API_VERSION) {
            diags.error(
                &v.origin,
                format!("unsupported apiVersion (expected `{API_VERSION}`)"),
                format!("write `apiVersion: {API_VERSION}`"),
            );
        }
    }
    if let Some(k) = f.req("kind", diags) {
        if k.as_str() != Some(kind) {
            diags.error(
                &k.origin,
                format!("wrong kind: this file must hold a `{kind}` document"),
                format!("write `kind: {kind}`"),
            );
        }
    }
    let name = f.req("metadata", diags).and_then(|m| {
        let mut mf = decode::Fields::new(m, "metadata", diags)?;
        let n = mf.req("name", diags);
        for extra in ["labels", "annotations"] {
            if let Some(x) = mf.opt(extra) {
                decode::Fields::new(x, &format!("metadata.{extra}"), diags);
            }
        }
        mf.finish(&["name", "labels", "annotations"], diags);
        let n = n?;
        Some((decode::name(n, "metadata.name", diags)?, n.origin.clone()))
    });
    let spec = f.req("spec", diags);
    f.finish(&["apiVersion", "kind", "metadata", "spec"], diags);
    let (name, origin) = name?;
    Some((name, origin, spec?))
}

/// Parses `text` as exactly one YAML document.
fn one_document(path: &str, text: &str, diags: &mut Diagnostics) -> Option<yaml::Node> {
    let mut docs = yaml::parse(path, text, diags)?;
    match docs.len() {
        1 => docs.pop(),
        0 => {
            diags.error(
                &Origin {
                    file: path.to_string(),
                    line: 1,
                    column: 1,
                },
                "the file is empty",
                "write one document (apiVersion, kind, metadata, spec)",
            );
            None
        }
        _ => {
            diags.error(
                &docs[1].origin,
                "more than one YAML document in this file",
                "keep one document per file",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests;
