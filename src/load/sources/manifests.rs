//! `manifests:` a file, a folder (read recursively) or a glob of plain
//! Kubernetes manifests in the repository, several documents per file
//! allowed, `v1/List` documents unpacked.
//!
//! ```yaml
//! - name: extras
//!   provider: kubernetes
//!   manifests:
//!     path: manifests/        # relative to the module folder
//!     substitute: true        # ${input.*}, ${env.*} in the files are references
//! ```
//!
//! Without `substitute: true` the files are taken as they are: a `${...}`
//! in them (a shell script in a ConfigMap) is literal text.

use crate::diag::Diagnostics;
use crate::model::SourceSpec;
use crate::value::Origin;

use super::super::decode::{self, Fields};
use super::super::yaml::{self, Node, NodeKind};
use super::super::Files;
use super::Object;

/// Reads `manifests: PATH` or `manifests: {path, substitute}`.
pub fn decode(n: &Node, diags: &mut Diagnostics) -> Option<SourceSpec> {
    if let NodeKind::Str(path) = &n.kind {
        return Some(SourceSpec::Manifests {
            path: path.clone(),
            path_origin: n.origin.clone(),
            substitute: false,
        });
    }
    let mut f = Fields::new(n, "`manifests`", diags)?;
    let path = f.req("path", diags).and_then(|p| {
        Some((
            decode::string(p, "`manifests.path`", diags)?,
            p.origin.clone(),
        ))
    });
    let substitute = f
        .opt("substitute")
        .and_then(|s| decode::boolean(s, "`manifests.substitute`", diags));
    f.finish(&["path", "substitute"], diags);
    let (path, path_origin) = path?;
    Some(SourceSpec::Manifests {
        path,
        path_origin,
        substitute: substitute.unwrap_or(false),
    })
}

fn is_manifest_file(path: &str) -> bool {
    [".yaml", ".yml", ".json"].iter().any(|e| path.ends_with(e))
}

fn is_kustomization(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or(path);
    matches!(
        file,
        "kustomization.yaml" | "kustomization.yml" | "Kustomization"
    )
}

/// The repository files `path` (relative to the module folder `dir`)
/// stands for, in path order.
pub(crate) fn select<'f>(
    dir: &str,
    path: &str,
    at: &Origin,
    files: &'f Files,
    diags: &mut Diagnostics,
) -> Vec<(&'f String, &'f Vec<u8>)> {
    let Some(full) = super::resolve(dir, path, at, "`manifests.path`", diags) else {
        return Vec::new();
    };
    fn under(files: &Files, prefix: String) -> impl Iterator<Item = (&String, &Vec<u8>)> {
        files
            .range(prefix.clone()..)
            .take_while(move |(p, _)| p.starts_with(&prefix))
    }
    let picked: Vec<_> = if full.contains(['*', '?', '[', '{']) {
        let glob = globset::GlobBuilder::new(&full)
            .literal_separator(true)
            .build();
        match glob {
            Ok(g) => {
                let m = g.compile_matcher();
                under(files, "modules/".into())
                    .filter(|(p, _)| m.is_match(p.as_str()) && is_manifest_file(p))
                    .collect()
            }
            Err(e) => {
                diags.error(
                    at,
                    format!("`{path}` is not a valid glob: {}", e.kind()),
                    "use `*` (one path segment), `**` (any depth), `?`, `[abc]` or `{a,b}`",
                );
                return Vec::new();
            }
        }
    } else if let Some((p, bytes)) = files.get_key_value(&full) {
        vec![(p, bytes)]
    } else {
        under(files, format!("{full}/"))
            .filter(|(p, _)| is_manifest_file(p))
            .collect()
    };
    if picked.is_empty() {
        diags.error(
            at,
            format!("`{path}` ({full}) holds no YAML or JSON file"),
            "point `path` at a file, a folder or a glob of manifests under the module folder",
        );
    }
    picked
}

/// The objects of the files `path` selects.
pub(crate) fn objects(
    dir: &str,
    path: &str,
    at: &Origin,
    substitute: bool,
    files: &Files,
    diags: &mut Diagnostics,
) -> Vec<Object> {
    let mut out = Vec::new();
    for (file, bytes) in select(dir, path, at, files, diags) {
        if is_kustomization(file) {
            diags.error(
                &Origin {
                    file: file.clone(),
                    line: 1,
                    column: 1,
                },
                "a Kustomize file among plain manifests",
                "render its folder with `kustomize: <folder>` instead of `manifests:`, or narrow `path` to leave it out",
            );
            continue;
        }
        let Ok(text) = std::str::from_utf8(bytes) else {
            diags.error(
                &Origin {
                    file: file.clone(),
                    line: 1,
                    column: 1,
                },
                "not UTF-8 text",
                "save the file as UTF-8",
            );
            continue;
        };
        for doc in yaml::parse(file, text, diags).unwrap_or_default() {
            documents(&doc, substitute, diags, &mut out);
        }
    }
    out
}

/// One document: an object, a `v1/List` of objects, or nothing (an empty
/// document between `---` lines).
fn documents(doc: &Node, substitute: bool, diags: &mut Diagnostics, out: &mut Vec<Object>) {
    if doc.kind == NodeKind::Null {
        return;
    }
    if doc.get("kind").and_then(Node::as_str) == Some("List")
        && doc.get("apiVersion").and_then(Node::as_str) == Some("v1")
    {
        if let Some(items) = doc.get("items") {
            for item in decode::list(items, "`items` of a List", diags).unwrap_or_default() {
                documents(item, substitute, diags, out);
            }
        }
        return;
    }
    decode::ambiguous_values(doc, diags);
    if let Some(mut o) = super::object(doc, "a manifest", diags) {
        if !substitute {
            super::escape(&mut o.body);
        }
        out.push(o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &str)]) -> Files {
        entries
            .iter()
            .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec()))
            .collect()
    }

    fn names(objects: &[Object]) -> Vec<String> {
        objects
            .iter()
            .map(|o| {
                let name = o.body.get_path("metadata.name").and_then(|v| v.as_str());
                format!("{} {}", o.kind, name.unwrap_or("?"))
            })
            .collect()
    }

    const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  run: echo ${HOME}\n---\n# only a comment\n---\napiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: Secret\n    metadata: {name: b}\n";

    #[test]
    fn folders_globs_and_files_select_their_manifests() {
        let fs = files(&[
            ("modules/web/manifests/a.yaml", CM),
            (
                "modules/web/manifests/deep/c.json",
                r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"c"}}"#,
            ),
            ("modules/web/manifests/notes.txt", "not read"),
            ("modules/web/module.yaml", "x"),
        ]);
        let at = Origin::default();
        let mut d = Diagnostics::default();
        let all = objects("modules/web", "manifests", &at, false, &fs, &mut d);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(
            names(&all),
            ["v1/ConfigMap a", "v1/Secret b", "v1/Service c"]
        );
        let top = objects("modules/web", "manifests/*.yaml", &at, false, &fs, &mut d);
        assert_eq!(top.len(), 2);
        let deep = objects(
            "modules/web",
            "manifests/**/*.json",
            &at,
            false,
            &fs,
            &mut d,
        );
        assert_eq!(names(&deep), ["v1/Service c"]);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn text_is_literal_unless_substituted() {
        let fs = files(&[("modules/web/m.yaml", CM)]);
        let at = Origin::default();
        let mut d = Diagnostics::default();
        let plain = objects("modules/web", "m.yaml", &at, false, &fs, &mut d);
        assert!(crate::expr::refs(&plain[0].body, "").is_empty());
        let subst = objects("modules/web", "m.yaml", &at, true, &fs, &mut d);
        assert_eq!(crate::expr::refs(&subst[0].body, "").len(), 1);
    }

    #[test]
    fn problems_name_the_file_and_line() {
        let fs = files(&[
            (
                "modules/web/m/a.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels: {}\n",
            ),
            ("modules/web/m/kustomization.yaml", "resources: []\n"),
        ]);
        let mut d = Diagnostics::default();
        objects("modules/web", "m", &Origin::default(), false, &fs, &mut d);
        let text: Vec<String> = d.sorted().iter().map(ToString::to_string).collect();
        assert!(text[0].starts_with("modules/web/m/a.yaml:"), "{text:?}");
        assert!(text[0].contains("metadata.name"));
        assert!(
            text[1].starts_with("modules/web/m/kustomization.yaml:1:1"),
            "{text:?}"
        );
        let mut d = Diagnostics::default();
        objects(
            "modules/web",
            "missing",
            &Origin::default(),
            false,
            &fs,
            &mut d,
        );
        assert_eq!(d.len(), 1);
    }
}
