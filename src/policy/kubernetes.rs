//! Checks on the pods Kubernetes workloads create: image pinning,
//! resources, probes, non-root, read-only root filesystem, secrets as
//! files. Every workload kind is reduced to its pod spec first, so each
//! check is written once.

use crate::value::{index_path, key_path, Value};

use super::field::{at, name_or, Field, Text};
use super::{CheckId, Hit};

/// Runs the pod checks when `kind` carries a pod spec.
pub(crate) fn check(kind: &str, body: &Value, out: &mut Vec<Hit>) {
    let Some((path, spec)) = pod_spec(kind, body) else {
        return;
    };
    let pod = Pod { path, spec };
    for c in pod.containers() {
        image_digest(&c, out);
        resources(&c, out);
        probes(&c, out);
        non_root(&pod, &c, out);
        read_only_root_fs(&c, out);
        secret_volumes(&c, out);
    }
}

/// Splits `group/version/Kind` (core: `version/Kind`) into group and Kind.
pub(crate) fn group_kind(kind: &str) -> (&str, &str) {
    let mut parts = kind.rsplit('/');
    let k = parts.next().unwrap_or("");
    let _version = parts.next();
    (parts.next().unwrap_or(""), k)
}

/// Where the pod spec of a workload is.
fn pod_spec_keys(kind: &str) -> Option<&'static [&'static str]> {
    const TEMPLATE: &[&str] = &["spec", "template", "spec"];
    match group_kind(kind) {
        ("apps" | "extensions", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            Some(TEMPLATE)
        }
        ("batch", "Job") | ("", "ReplicationController") => Some(TEMPLATE),
        ("batch", "CronJob") => Some(&["spec", "jobTemplate", "spec", "template", "spec"]),
        ("", "Pod") => Some(&["spec"]),
        ("", "PodTemplate") => Some(&["template", "spec"]),
        _ => None,
    }
}

fn pod_spec<'a>(kind: &str, body: &'a Value) -> Option<(String, &'a Value)> {
    let keys = pod_spec_keys(kind)?;
    match at(body, keys) {
        Field::Present(spec) => Some((keys.join("."), spec)),
        _ => None,
    }
}

struct Pod<'a> {
    path: String,
    spec: &'a Value,
}

/// A container with what messages need to name it.
struct Container<'a> {
    path: String,
    /// `container `web`` or `init container `migrate``.
    label: String,
    body: &'a Value,
    init: bool,
}

impl<'a> Pod<'a> {
    fn containers(&self) -> Vec<Container<'a>> {
        let mut out = Vec::new();
        for (list, init) in [("initContainers", true), ("containers", false)] {
            let items = at(self.spec, &[list]).items().unwrap_or_default();
            let list_path = key_path(&self.path, list);
            for (i, body) in items.iter().enumerate() {
                if matches!(body, Value::Unknown(_)) {
                    continue;
                }
                let name = name_or(at(body, &["name"]), format!("#{i}"));
                let what = if init { "init container" } else { "container" };
                out.push(Container {
                    path: index_path(&list_path, i),
                    label: format!("{what} `{name}`"),
                    body,
                    init,
                });
            }
        }
        out
    }
}

impl Container<'_> {
    fn at(&self, rel: &str) -> String {
        key_path(&self.path, rel)
    }

    fn hit(&self, check: CheckId, rel: &str, message: String, fix: String) -> Hit {
        Hit {
            check,
            path: self.at(rel),
            message,
            fix,
        }
    }
}

fn image_digest(c: &Container<'_>, out: &mut Vec<Hit>) {
    let Field::Present(v) = at(c.body, &["image"]) else {
        return;
    };
    let Some(image) = Text::of(v) else {
        return;
    };
    let problem = match image_pin(image.raw) {
        Pin::Digest => return,
        Pin::BadDigest => "has a malformed digest (expected `@sha256:` and 64 hex digits)",
        Pin::Latest => "uses the `latest` tag",
        Pin::NoTag => "has no tag or digest (it resolves to `latest`)",
        Pin::Tag => "is pinned by tag, not by digest",
    };
    let shown = image.shown();
    let fix = if shown == image.raw {
        format!(
            "pin the image of {} by digest: `{}@sha256:<digest>` (`docker buildx imagetools inspect {}` prints the digest)",
            c.label,
            repository(shown),
            shown.split('@').next().unwrap_or(shown)
        )
    } else {
        format!(
            "pin the image of {} by digest: `<repository>@sha256:<digest>`",
            c.label
        )
    };
    out.push(c.hit(
        CheckId::ImageDigest,
        "image",
        format!("{} image `{shown}` {problem}", c.label),
        fix,
    ));
}

#[derive(Debug, PartialEq)]
enum Pin {
    Digest,
    BadDigest,
    Latest,
    NoTag,
    Tag,
}

fn image_pin(image: &str) -> Pin {
    if let Some((_, digest)) = image.split_once('@') {
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        let valid = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        return if valid { Pin::Digest } else { Pin::BadDigest };
    }
    match tag(image) {
        None => Pin::NoTag,
        Some("latest") => Pin::Latest,
        Some(_) => Pin::Tag,
    }
}

/// The tag of an image reference without digest (`localhost:5000/app` has none).
fn tag(image: &str) -> Option<&str> {
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':').map(|(_, t)| t)
}

/// The image without tag or digest.
fn repository(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match tag(no_digest) {
        Some(t) => &no_digest[..no_digest.len() - t.len() - 1],
        None => no_digest,
    }
}

fn resources(c: &Container<'_>, out: &mut Vec<Hit>) {
    let mut missing = Vec::new();
    for section in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            if let Field::Missing = at(c.body, &["resources", section, res]) {
                missing.push(format!("{section}.{res}"));
            }
        }
    }
    let Some(first) = missing.first() else {
        return;
    };
    out.push(c.hit(
        CheckId::Resources,
        &format!("resources.{first}"),
        format!("{} has no resources {}", c.label, missing.join(", ")),
        format!(
            "set `resources.requests` and `resources.limits` for cpu and memory on {}",
            c.label
        ),
    ));
}

fn probes(c: &Container<'_>, out: &mut Vec<Hit>) {
    let serving = at(c.body, &["ports"])
        .items()
        .is_some_and(|p| !p.is_empty());
    if c.init || !serving {
        return;
    }
    let missing: Vec<&str> = ["readinessProbe", "livenessProbe"]
        .into_iter()
        .filter(|p| matches!(at(c.body, &[p]), Field::Missing))
        .collect();
    let Some(first) = missing.first() else {
        return;
    };
    out.push(c.hit(
        CheckId::Probes,
        first,
        format!(
            "{} declares ports but has no {}",
            c.label,
            missing.join(" or ")
        ),
        format!("add {} to {}", missing.join(" and "), c.label),
    ));
}

fn non_root(pod: &Pod<'_>, c: &Container<'_>, out: &mut Vec<Hit>) {
    run_as_non_root(pod, c, out);
    run_as_user(pod, c, out);
    let escalation = at(c.body, &["securityContext", "allowPrivilegeEscalation"]);
    if escalation.is_bool(false) == Some(false) {
        out.push(c.hit(
            CheckId::NonRoot,
            "securityContext.allowPrivilegeEscalation",
            format!(
                "{} may gain privileges (allowPrivilegeEscalation is not false)",
                c.label
            ),
            format!(
                "set `securityContext.allowPrivilegeEscalation: false` on {}",
                c.label
            ),
        ));
    }
}

/// The container's own setting wins over the pod's.
fn effective<'a>(pod: &Pod<'a>, c: &Container<'a>, key: &str) -> (Field<'a>, Option<String>) {
    match at(c.body, &["securityContext", key]) {
        Field::Missing => match at(pod.spec, &["securityContext", key]) {
            Field::Missing => (Field::Missing, None),
            f => (f, Some(format!("{}.securityContext.{key}", pod.path))),
        },
        f => (f, Some(c.at(&format!("securityContext.{key}")))),
    }
}

fn run_as_non_root(pod: &Pod<'_>, c: &Container<'_>, out: &mut Vec<Hit>) {
    let (field, path) = effective(pod, c, "runAsNonRoot");
    if field.is_bool(true) != Some(false) {
        return;
    }
    out.push(Hit {
        check: CheckId::NonRoot,
        path: path.unwrap_or_else(|| c.at("securityContext.runAsNonRoot")),
        message: format!("{} may run as root (runAsNonRoot is not true)", c.label),
        fix: format!(
            "set `securityContext.runAsNonRoot: true` on the pod or on {}",
            c.label
        ),
    });
}

fn run_as_user(pod: &Pod<'_>, c: &Container<'_>, out: &mut Vec<Hit>) {
    if let (Field::Present(Value::Int(0)), Some(path)) = effective(pod, c, "runAsUser") {
        out.push(Hit {
            check: CheckId::NonRoot,
            path,
            message: format!("{} runs as user 0 (root)", c.label),
            fix: format!(
                "set `securityContext.runAsUser` to a non-zero UID for {}",
                c.label
            ),
        });
    }
}

fn read_only_root_fs(c: &Container<'_>, out: &mut Vec<Hit>) {
    if at(c.body, &["securityContext", "readOnlyRootFilesystem"]).is_bool(true) == Some(false) {
        out.push(c.hit(
            CheckId::ReadOnlyRootFs,
            "securityContext.readOnlyRootFilesystem",
            format!("{} has a writable root filesystem", c.label),
            format!(
                "set `securityContext.readOnlyRootFilesystem: true` on {} and mount an emptyDir where it writes",
                c.label
            ),
        ));
    }
}

fn secret_volumes(c: &Container<'_>, out: &mut Vec<Hit>) {
    let env = at(c.body, &["env"]).items().unwrap_or_default();
    for (i, e) in env.iter().enumerate() {
        let Field::Present(r) = at(e, &["valueFrom", "secretKeyRef"]) else {
            continue;
        };
        let var = name_or(at(e, &["name"]), format!("#{i}"));
        let secret = name_or(at(r, &["name"]), "?".into());
        let key = name_or(at(r, &["key"]), "?".into());
        out.push(c.hit(
            CheckId::SecretVolumes,
            &format!("env[{i}].valueFrom.secretKeyRef"),
            format!(
                "{} reads Secret `{secret}` key `{key}` into env var `{var}`",
                c.label
            ),
            mount_fix(&secret, c),
        ));
    }
    let env_from = at(c.body, &["envFrom"]).items().unwrap_or_default();
    for (i, e) in env_from.iter().enumerate() {
        let Field::Present(r) = at(e, &["secretRef"]) else {
            continue;
        };
        let secret = name_or(at(r, &["name"]), "?".into());
        out.push(c.hit(
            CheckId::SecretVolumes,
            &format!("envFrom[{i}].secretRef"),
            format!(
                "{} imports every key of Secret `{secret}` as env vars",
                c.label
            ),
            mount_fix(&secret, c),
        ));
    }
}

fn mount_fix(secret: &str, c: &Container<'_>) -> String {
    format!(
        "mount Secret `{secret}` as a volume (`volumes: [{{name: {secret}, secret: {{secretName: {secret}}}}}]` and a `volumeMounts` entry on {}) and read the key from the file",
        c.label
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_are_classified() {
        let d = "0123456789abcdef".repeat(4);
        assert_eq!(image_pin(&format!("nginx@sha256:{d}")), Pin::Digest);
        assert_eq!(
            image_pin(&format!("r.io:5000/a/b:1.2@sha256:{d}")),
            Pin::Digest
        );
        assert_eq!(image_pin("nginx@sha256:abc"), Pin::BadDigest);
        assert_eq!(image_pin("nginx:latest"), Pin::Latest);
        assert_eq!(image_pin("nginx"), Pin::NoTag);
        assert_eq!(image_pin("localhost:5000/app"), Pin::NoTag);
        assert_eq!(image_pin("ghcr.io/x/app:1.25"), Pin::Tag);
        assert_eq!(repository("localhost:5000/app:1.2"), "localhost:5000/app");
        assert_eq!(repository("nginx"), "nginx");
    }

    #[test]
    fn kinds_are_split_into_group_and_kind() {
        assert_eq!(group_kind("apps/v1/Deployment"), ("apps", "Deployment"));
        assert_eq!(group_kind("v1/Pod"), ("", "Pod"));
        assert_eq!(
            group_kind("networking.k8s.io/v1/Ingress"),
            ("networking.k8s.io", "Ingress")
        );
        assert!(pod_spec_keys("example.com/v1/Deployment").is_none());
        assert_eq!(pod_spec_keys("batch/v1/CronJob").unwrap().len(), 5);
    }
}
