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

mod check;
pub mod decode;
mod env;
mod module;
pub mod project;
pub mod repeat;
pub mod sops;
pub mod sources;
pub mod traffic;
pub mod typed;
pub mod values;
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
    /// A symbolic link in the working tree leads out of the repository.
    #[error("{link} is a symbolic link to {target}, outside the repository: tidegate reads only what the repository holds (a link out would read another machine's files, or the whole filesystem); copy what it points at into the repository, or point the link inside it")]
    LinkOutside { link: String, target: String },
    /// A symbolic link the loader would read leads nowhere.
    #[error("{link} is a symbolic link to {target}, which does not exist; restore the target or remove the link")]
    LinkDangling { link: String, target: String },
    /// A folder link leads back into a folder that holds it.
    #[error("{link} is a symbolic link to {target}, a folder that holds it: following it would loop; remove the link or point it elsewhere in the repository")]
    LinkLoop { link: String, target: String },
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
    sources::expand(&mut model.modules, files, diags);
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
    repeat::expand(&mut model.modules, &mut envs, diags);
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
/// `modules/` (what sources render), the YAML and JSON files under
/// `environments/` and `secrets/`,
/// `tidegate.yaml` and `.sops.yaml`.
///
/// Symbolic links are followed only inside the repository (`root`): a link
/// to a file or folder elsewhere in it reads that file or folder under the
/// link's own path; a link whose target leaves the repository (`ln -s /
/// modules/root`, a secret file linked from a home folder) is an error
/// naming the link and its target, and is never read; a folder link back
/// to a folder being read (a loop) is an error too.
pub fn read_dir(root: &Path) -> Result<Files> {
    let Some(real_root) = root.canonicalize().ok().filter(|r| r.is_dir()) else {
        return Err(Error::Read {
            path: root.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        });
    };
    let mut walker = Walker {
        real_root,
        files: Files::new(),
    };
    for top in [
        "environments",
        "modules",
        "secrets",
        ".sops.yaml",
        project::FILE,
    ] {
        let path = root.join(top);
        if path.symlink_metadata().is_ok() {
            walker.entry(&path, top, &mut Vec::new())?;
        }
    }
    Ok(walker.files)
}

/// One read of a working tree.
struct Walker {
    /// The repository folder with every link resolved: what links may not
    /// leave.
    real_root: PathBuf,
    files: Files,
}

impl Walker {
    /// Reads `path` (repo path `rel`): a folder is walked, a YAML or JSON
    /// file read, a link checked and followed. `open` holds the resolved
    /// folders being walked, outermost first.
    fn entry(&mut self, path: &Path, rel: &str, open: &mut Vec<PathBuf>) -> Result<()> {
        let meta = path.symlink_metadata().map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let real = if meta.file_type().is_symlink() {
            match self.follow(path, rel, open)? {
                Some(real) => real,
                None => return Ok(()),
            }
        } else {
            path.to_path_buf()
        };
        if real.is_dir() {
            let real_dir = real.canonicalize().map_err(|source| Error::Read {
                path: path.to_path_buf(),
                source,
            })?;
            open.push(real_dir);
            let walked = self.dir(path, rel, open);
            open.pop();
            walked
        } else {
            // Everything under modules/ (charts, overlays and their
            // files); YAML and JSON elsewhere.
            if is_yaml(rel) || rel.ends_with(".json") || rel.starts_with("modules/") {
                self.files.insert(rel.to_string(), read(&real)?);
            }
            Ok(())
        }
    }

    /// The entries of the folder `path`, in name order.
    fn dir(&mut self, path: &Path, rel: &str, open: &mut Vec<PathBuf>) -> Result<()> {
        let rd = std::fs::read_dir(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut names: Vec<std::ffi::OsString> =
            rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
        names.sort();
        for name in names {
            let child = format!("{rel}/{}", name.to_string_lossy());
            self.entry(&path.join(&name), &child, open)?;
        }
        Ok(())
    }

    /// Where the link `path` leads, when it may be followed: inside the
    /// repository and not back into a folder being walked. `None` for a
    /// dangling link the loader would not read anyway (not YAML or JSON).
    fn follow(&self, path: &Path, rel: &str, open: &[PathBuf]) -> Result<Option<PathBuf>> {
        let target = std::fs::read_link(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let real = match path.canonicalize() {
            Ok(real) => real,
            // Dangling: outside is still outside, said as such.
            Err(_) if !self.lexically_inside(path, &target) => {
                return Err(Error::LinkOutside {
                    link: rel.to_string(),
                    target: target.display().to_string(),
                })
            }
            Err(_) if !(is_yaml(rel) || rel.ends_with(".json")) => return Ok(None),
            Err(_) => {
                return Err(Error::LinkDangling {
                    link: rel.to_string(),
                    target: target.display().to_string(),
                })
            }
        };
        if !real.starts_with(&self.real_root) {
            return Err(Error::LinkOutside {
                link: rel.to_string(),
                target: target.display().to_string(),
            });
        }
        if real.is_dir() && open.iter().any(|o| o.starts_with(&real)) {
            return Err(Error::LinkLoop {
                link: rel.to_string(),
                target: target.display().to_string(),
            });
        }
        Ok(Some(real))
    }

    /// Whether `target`, read from the folder holding the link `path`,
    /// names a path inside the repository, by its text alone (for a link
    /// whose target does not exist).
    fn lexically_inside(&self, path: &Path, target: &Path) -> bool {
        let Some(dir) = path.parent().and_then(|d| d.canonicalize().ok()) else {
            return false;
        };
        let mut out = PathBuf::new();
        for c in dir.join(target).components() {
            match c {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::CurDir => {}
                other => out.push(other),
            }
        }
        out.starts_with(&self.real_root)
    }
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
