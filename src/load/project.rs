//! Decoding `tidegate.yaml` (kind `Project`): the repository's owner
//! identity, stamped on everything it applies, and the guard defaults of
//! its environments.

use crate::diag::Diagnostics;
use crate::model::{Guards, Project};
use crate::value::Origin;

use super::decode::Fields;
use super::yaml::{Node, NodeKind};

/// The project file's path in a repository.
pub const FILE: &str = "tidegate.yaml";

/// The longest project name: it is part of Kubernetes object names and a
/// label value (63 characters at most) beside the environment name.
const MAX_NAME: usize = 40;

/// The text of a minimal `tidegate.yaml` for project `name`.
pub fn document(name: &str) -> String {
    format!("apiVersion: tidegate.dev/v1\nkind: Project\nmetadata:\n  name: {name}\nspec: {{}}\n")
}

/// Decodes `tidegate.yaml`, or reports that it is missing.
pub fn decode(text: Option<&str>, diags: &mut Diagnostics) -> Option<Project> {
    let Some(text) = text else {
        diags.error(
            &Origin {
                file: FILE.into(),
                line: 1,
                column: 1,
            },
            "the repository has no tidegate.yaml: every repository names its project, the owner \
             stamped on everything it applies, so two repositories never touch each other's resources",
            "add tidegate.yaml at the top of the repository:\n  apiVersion: tidegate.dev/v1\n  \
             kind: Project\n  metadata:\n    name: <project>   # lowercase letters, digits, `-`\n  spec: {}",
        );
        return None;
    };
    let doc = super::one_document(FILE, text, diags)?;
    let (name, origin, spec) = super::header(&doc, "Project", diags)?;
    if !valid_project_name(&name) {
        diags.error(
            &origin,
            format!("project name `{name}` cannot be a Kubernetes label value and object name part"),
            format!(
                "use lowercase letters, digits and `-`, starting with a letter, at most {MAX_NAME} characters"
            ),
        );
    }
    let mut project = Project {
        name,
        origin,
        guards: Guards::default(),
    };
    let mut f = Fields::new(spec, "Project spec", diags)?;
    if let Some(g) = f.opt("guards") {
        project.guards = guards(g, Guards::default(), diags);
    }
    f.finish(&["guards"], diags);
    Some(project)
}

/// A DNS-1123 label of at most [`MAX_NAME`] characters.
pub fn valid_project_name(s: &str) -> bool {
    s.len() <= MAX_NAME
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `guards: {maxDeletes: N, maxDeletePercent: P}` over `base`.
pub fn guards(n: &Node, base: Guards, diags: &mut Diagnostics) -> Guards {
    let mut g = base;
    let Some(mut f) = Fields::new(n, "`guards`", diags) else {
        return g;
    };
    if let Some(v) = f.opt("maxDeletes") {
        if let Some(x) = count(v, "`guards.maxDeletes`", u64::MAX, diags) {
            g.max_deletes = x;
        }
    }
    if let Some(v) = f.opt("maxDeletePercent") {
        if let Some(x) = count(v, "`guards.maxDeletePercent`", 100, diags) {
            g.max_delete_percent = x;
        }
    }
    f.finish(&["maxDeletes", "maxDeletePercent"], diags);
    g
}

fn count(n: &Node, what: &str, max: u64, diags: &mut Diagnostics) -> Option<u64> {
    match &n.kind {
        NodeKind::Int(i) if *i >= 0 && (*i as u64) <= max => Some(*i as u64),
        _ => {
            diags.error(
                &n.origin,
                format!("{what} must be a whole number from 0 to {max}"),
                format!("write {what} as a number such as `20`"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> (Option<Project>, Vec<String>) {
        let mut d = Diagnostics::default();
        let p = decode(Some(text), &mut d);
        (p, d.iter().map(|x| x.to_string()).collect())
    }

    #[test]
    fn a_project_file_names_the_owner_and_guard_defaults() {
        let (p, errors) = load(
            "apiVersion: tidegate.dev/v1\nkind: Project\nmetadata:\n  name: shop\n\
             spec:\n  guards:\n    maxDeletes: 5\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let p = p.unwrap();
        assert_eq!(p.name, "shop");
        assert_eq!(p.guards.max_deletes, 5);
        assert_eq!(p.guards.max_delete_percent, 25);
    }

    #[test]
    fn a_missing_project_file_says_what_to_write() {
        let mut d = Diagnostics::default();
        assert!(decode(None, &mut d).is_none());
        let e = d.iter().next().unwrap().to_string();
        assert!(
            e.contains("tidegate.yaml:1:1") && e.contains("kind: Project"),
            "{e}"
        );
    }

    #[test]
    fn project_names_must_fit_labels_and_object_names() {
        for bad in ["Shop", "shop_1", "1shop", "shop-", &"a".repeat(41)] {
            assert!(!valid_project_name(bad), "{bad}");
        }
        for good in ["shop", "a", "team-a-web2"] {
            assert!(valid_project_name(good), "{good}");
        }
        let (_, errors) =
            load("apiVersion: tidegate.dev/v1\nkind: Project\nmetadata:\n  name: Shop\nspec: {}\n");
        assert!(errors[0].contains("tidegate.yaml:4:9"), "{errors:?}");
    }

    #[test]
    fn guard_values_are_checked() {
        let (_, errors) = load(
            "apiVersion: tidegate.dev/v1\nkind: Project\nmetadata:\n  name: shop\n\
             spec:\n  guards:\n    maxDeletePercent: 120\n    maxDelete: 3\n",
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].contains(":7:") && errors[0].contains("0 to 100"),
            "{errors:?}"
        );
        assert!(errors[1].contains("maxDeletes"), "{errors:?}");
    }
}
