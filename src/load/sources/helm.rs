//! `helm:` a Helm chart folder of the repository: decoded here, rendered
//! per instance by `crate::helm` after loading (a chart branches on its
//! values, and values differ per instance).
//!
//! ```yaml
//! - name: web
//!   provider: kubernetes
//!   helm:
//!     chart: chart                 # relative to the module folder
//!     releaseName: web             # default: the entry's name
//!     namespace: web-${env.name}
//!     includeCRDs: true            # default
//!     values:
//!       replicas: ${input.replicas}
//!       password: ${input.password}   # a secret stays a reference
//! ```
//!
//! or a chart pulled once by name and exact version, kept only when the
//! `.tgz` has the declared sha256:
//!
//! ```yaml
//!   helm:
//!     chart: web                   # or oci://registry.example/charts/web
//!     repository: https://charts.example.com
//!     version: 1.2.3
//!     digest: sha256:0123...
//! ```

use crate::diag::Diagnostics;
use crate::model::{Located, RemoteChart, SourceSpec};
use crate::value::Origin;
use crate::value::{Map, Spans, Value};

use super::super::decode::{self, Fields};
use super::super::yaml::{Node, NodeKind};

/// Reads `helm: {chart, releaseName, namespace, values, includeCRDs}`.
pub fn decode(n: &Node, diags: &mut Diagnostics) -> Option<SourceSpec> {
    let mut f = Fields::new(n, "`helm`", diags)?;
    let chart = f
        .req("chart", diags)
        .and_then(|p| Some((decode::string(p, "`helm.chart`", diags)?, p.origin.clone())));
    let release = f
        .opt("releaseName")
        .and_then(|r| decode::name(r, "`helm.releaseName`", diags));
    let mut settings = Map::new();
    let mut spans = Spans::default();
    if let Some(ns) = f.opt("namespace") {
        decode::string(ns, "`helm.namespace`", diags);
        settings.insert("namespace".into(), ns.to_value("namespace", &mut spans));
    }
    if let Some(crds) = f.opt("includeCRDs") {
        if let Some(b) = decode::boolean(crds, "`helm.includeCRDs`", diags) {
            settings.insert("includeCRDs".into(), Value::Bool(b));
        }
    }
    if let Some(values) = f.opt("values") {
        if matches!(values.kind, NodeKind::Map(_)) {
            decode::ambiguous_values(values, diags);
            settings.insert("values".into(), values.to_value("values", &mut spans));
        } else {
            diags.error(
                &values.origin,
                "`helm.values` must be a map",
                "write the chart's values as a map (`values: {replicas: 2}`)",
            );
        }
    }
    let string = |key: &str, f: &mut Fields<'_>, diags: &mut Diagnostics| {
        let n = f.opt(key)?;
        Some((
            decode::string(n, &format!("`helm.{key}`"), diags)?,
            n.origin.clone(),
        ))
    };
    let repository = string("repository", &mut f, diags);
    let version = string("version", &mut f, diags);
    let digest = string("digest", &mut f, diags);
    f.finish(
        &[
            "chart",
            "releaseName",
            "namespace",
            "values",
            "includeCRDs",
            "repository",
            "version",
            "digest",
        ],
        diags,
    );
    let (chart, chart_origin) = chart?;
    let remote = if repository.is_some() || chart.starts_with("oci://") {
        remote(
            &chart,
            &chart_origin,
            repository,
            version,
            digest,
            &n.origin,
            diags,
        )?
    } else {
        for (key, v) in [("version", &version), ("digest", &digest)] {
            if let Some((_, at)) = v {
                diags.error(
                    at,
                    format!("`helm.{key}` is for a chart from a repository or registry"),
                    "add `repository: <url>` (or write `chart: oci://...`), or remove it for a chart folder of the repository",
                );
            }
        }
        None
    };
    Some(SourceSpec::Helm {
        chart,
        chart_origin,
        release,
        remote,
        settings: Located {
            value: Value::Map(settings),
            spans,
        },
    })
}

/// The version and digest of a remote chart: an exact version, and the
/// sha256 of its `.tgz`, both required.
fn remote(
    chart: &str,
    chart_origin: &Origin,
    repository: Option<(String, Origin)>,
    version: Option<(String, Origin)>,
    digest: Option<(String, Origin)>,
    at: &Origin,
    diags: &mut Diagnostics,
) -> Option<Option<RemoteChart>> {
    if let Some((url, o)) = &repository {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            diags.error(
                o,
                format!("`helm.repository` `{url}` is not an http(s) URL"),
                "give the Helm repository's URL (`https://charts.example.com`); for a registry write `chart: oci://<host>/<path>/<name>` instead",
            );
        }
        if chart.contains('/') {
            diags.error(
                chart_origin,
                format!("`helm.chart` `{chart}` is not a chart name"),
                "with `repository`, `chart` is the chart's name in the repository's index",
            );
        }
    }
    let Some((version, version_origin)) = version else {
        diags.error(
            at,
            format!("missing `helm.version` for chart `{chart}`"),
            "give the exact version to pull (`version: 1.2.3`)",
        );
        return None;
    };
    if version.is_empty()
        || version
            .chars()
            .any(|c| matches!(c, '^' | '~' | '>' | '<' | '=' | '*' | ' ' | ',' | '|'))
        || version.split(['.', '-', '+']).any(|p| p == "x" || p == "X")
    {
        diags.error(
            &version_origin,
            format!("`helm.version` `{version}` is not an exact version"),
            "give one version (`1.2.3`): a range would pull a different chart when a new one is published",
        );
        return None;
    }
    let Some((digest, digest_origin)) = digest else {
        diags.error(
            at,
            format!("missing `helm.digest` for chart `{chart}` {version}"),
            "give the sha256 of the chart's .tgz (`digest: sha256:<64 hex>`; `sha256sum <chart>-<version>.tgz` after `helm pull`)",
        );
        return None;
    };
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        diags.error(
            &digest_origin,
            format!("`helm.digest` `{digest}` is not `sha256:` and 64 hex digits"),
            "give the sha256 of the chart's .tgz (`sha256sum <chart>-<version>.tgz`)",
        );
        return None;
    }
    Some(Some(RemoteChart {
        repository: repository.map(|(u, _)| u),
        version,
        digest: hex.to_ascii_lowercase(),
        digest_origin,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::yaml;

    fn decoded(text: &str) -> (Option<SourceSpec>, Vec<String>) {
        let mut d = Diagnostics::default();
        let docs = yaml::parse("m.yaml", text, &mut d).unwrap();
        let spec = decode(&docs[0], &mut d);
        (spec, d.iter().map(|x| x.message.clone()).collect())
    }

    #[test]
    fn a_folder_chart_takes_no_version_or_digest() {
        let (spec, errs) = decoded("chart: chart\nnamespace: web\nvalues: {a: 1}\n");
        assert!(errs.is_empty(), "{errs:?}");
        assert!(matches!(spec, Some(SourceSpec::Helm { remote: None, .. })));
        let (_, errs) = decoded("chart: chart\nversion: 1.0.0\n");
        assert!(errs[0].contains("`helm.version` is for a chart from a repository"));
    }

    #[test]
    fn a_remote_chart_needs_an_exact_version_and_a_sha256() {
        let digest = format!("sha256:{}", "aB".repeat(32));
        let (spec, errs) = decoded(&format!(
            "chart: web\nrepository: https://charts.example.com\nversion: 1.2.3\ndigest: {digest}\n"
        ));
        assert!(errs.is_empty(), "{errs:?}");
        let Some(SourceSpec::Helm {
            remote: Some(r), ..
        }) = spec
        else {
            panic!("a remote chart");
        };
        assert_eq!(r.digest, "ab".repeat(32));
        assert_eq!(r.version, "1.2.3");
        let (_, errs) = decoded(&format!(
            "chart: oci://r.example/charts/web\nversion: ^1.2\ndigest: {digest}\n"
        ));
        assert!(errs[0].contains("not an exact version"), "{errs:?}");
        let (_, errs) = decoded("chart: oci://r.example/charts/web\nversion: 1.2.3\n");
        assert!(errs[0].contains("missing `helm.digest`"), "{errs:?}");
        let (_, errs) =
            decoded("chart: web\nrepository: https://x\nversion: 1.2.3\ndigest: md5:00\n");
        assert!(errs[0].contains("64 hex digits"), "{errs:?}");
    }
}
