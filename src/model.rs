//! The resolved model: what a repository declares, after loading has
//! checked that every name, input, output, secret key and reference exists.
//!
//! Nothing here can be dangling: an [`Instance`]'s `source` names a module in
//! [`Model::modules`], every input it sets is declared, every `${...}` it
//! holds points at something that exists. Values are kept as templates
//! (strings may hold `${...}`); [`crate::render`] turns them into
//! [`crate::provider::Desired`] bodies. Each value keeps its [`Spans`] so later
//! checks (schema, policy) can point at file:line:column.

use std::collections::BTreeMap;

use indexmap::IndexMap;

use crate::resource::{AwsTarget, EnvTarget, KubeTarget, ProviderKind, ResourceId};
use crate::value::{Map, Origin, Spans, Value};

/// Everything a repository declares.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// `tidegate.yaml`: the owner identity of everything this repository
    /// applies.
    pub project: Project,
    /// Environments in promotion order (each after the ones it names in `after`).
    pub environments: Vec<Environment>,
    /// Modules by source path (`modules/web`).
    pub modules: BTreeMap<String, Module>,
    /// The plaintext key structure of every SOPS file read, by repo path.
    pub secret_keys: BTreeMap<String, SecretTree>,
}

/// The repository's `tidegate.yaml`.
#[derive(Clone, Debug, Default)]
pub struct Project {
    /// The owner identity: stamped on every object and resource (label
    /// `tidegate.dev/project`, tag `tidegate:project`) and part of the
    /// names of records, locks and inventories, so two repositories whose
    /// environments share a name never observe, change or prune each
    /// other's resources.
    pub name: String,
    pub origin: Origin,
    /// Guard defaults for every environment.
    pub guards: Guards,
}

/// Blast-radius guards of an environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guards {
    /// A plan deleting more resources than this stops (unless
    /// `--allow-mass-delete`).
    pub max_deletes: u64,
    /// ... or deleting more than this share (percent) of the environment's
    /// resources.
    pub max_delete_percent: u64,
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            max_deletes: 20,
            max_delete_percent: 25,
        }
    }
}

impl Guards {
    /// Why deleting `deletes` of `existing` live resources is a mass
    /// delete, when it is one.
    pub fn mass_delete(&self, deletes: usize, existing: usize) -> Option<String> {
        let (d, n) = (deletes as u64, existing.max(1) as u64);
        if d > self.max_deletes {
            return Some(format!(
                "{d} deletes, more than the limit of {}",
                self.max_deletes
            ));
        }
        // Strictly more than the share: d/n > p/100.
        if d * 100 > self.max_delete_percent * n {
            return Some(format!(
                "{d} of {n} resources ({}%), more than the limit of {}%",
                d * 100 / n,
                self.max_delete_percent
            ));
        }
        None
    }
}

/// A value as written, with where each of its nodes was written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Located {
    pub value: Value,
    pub spans: Spans,
}

impl Located {
    /// Where the value itself starts.
    pub fn origin(&self) -> Origin {
        self.spans.get("").cloned().unwrap_or_default()
    }
}

/// One `environments/<name>.yaml`.
#[derive(Clone, Debug, Default)]
pub struct Environment {
    pub name: String,
    /// The repo path of the document.
    pub file: String,
    /// Where `metadata.name` was written.
    pub origin: Origin,
    /// Environments that must be converged before this one, with where each
    /// was named.
    pub after: Vec<(String, Origin)>,
    pub kubernetes: Option<KubeTarget>,
    pub aws: Option<AwsTarget>,
    /// Literal values for `${var.x}`.
    pub vars: Map,
    pub var_spans: Spans,
    /// SOPS files (repo paths) searched, in order, for `${secret.x.y}`.
    pub secret_files: Vec<(String, Origin)>,
    /// Module instances in declaration order.
    pub instances: Vec<Instance>,
    /// Instance positions by name, built on the first [`Environment::instance`]
    /// (a `forEach` over thousands of items made the linear search
    /// quadratic); checked on every use, so a stale one only costs a scan.
    pub instance_index: std::sync::OnceLock<std::collections::HashMap<String, usize>>,
    /// The raw `policy:` block, parsed by the policy module.
    pub policy: Option<Located>,
    /// How the reconciler checks this environment for drift (`drift:`).
    pub drift: DriftPolicy,
    /// `suspend: true`: the reconciler leaves this environment alone.
    pub suspend: bool,
    /// `requireSignedCommits: true`: only commits signed by a trusted key
    /// (`--trusted-signers`, `--trusted-pgp-keys`) are applied here.
    pub require_signed_commits: bool,
    /// The project (owner identity) of the repository, copied from
    /// [`Model::project`] so a target carries it.
    pub project: String,
    /// `guards:` over the project's defaults.
    pub guards: Guards,
    /// `protect: true`: every delete and replace needs `--allow-destroy`.
    pub protect: bool,
    /// `promotion:`: approval, soak and windows on top of the gate.
    pub promotion: crate::promotion::Promotion,
    /// `preview:`: the environment may be copied as short-lived previews
    /// (`tidegate preview up --from`), with these overrides.
    pub preview: Option<crate::preview::PreviewSpec>,
    /// `traffic:`: the entry points `tidegate switch` moves between this
    /// environment and its `rebuild --as` copies.
    pub traffic: Vec<EntryPoint>,
}

/// One declared traffic entry point (`spec.traffic[]`): owned by the
/// switch, never by a copy, so rebuilding or pruning a copy leaves it.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryPoint {
    /// Unique in the environment (`web`).
    pub name: String,
    /// Where the entry was written.
    pub origin: Origin,
    pub kind: EntryKind,
}

/// What an entry point routes.
#[derive(Clone, Debug, PartialEq)]
pub enum EntryKind {
    /// An Ingress host in `namespace`, routed to the live copy's Service.
    Ingress(IngressEntry),
    /// An Elastic IP associated with the live copy's instance.
    ElasticIp {
        /// The `eip` resource (of the environment itself) whose address
        /// is the entry point.
        allocation: (ResourceId, Origin),
        /// The `instance` resource the address goes to, in each copy.
        instance: (ResourceId, Origin),
    },
}

/// `ingress: {namespace, name, host, service, port, className, path}`.
#[derive(Clone, Debug, PartialEq)]
pub struct IngressEntry {
    pub namespace: String,
    pub name: String,
    pub host: String,
    /// The `v1/Service` resource of each copy that receives the traffic.
    pub service: (ResourceId, Origin),
    pub port: u16,
    pub class_name: Option<String>,
    pub path: String,
}

/// How often the reconciler compares an environment with its live state
/// between commits, and what it does about differences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriftPolicy {
    pub interval: std::time::Duration,
    pub mode: DriftMode,
}

impl Default for DriftPolicy {
    /// Every five minutes, corrected (self-heal).
    fn default() -> Self {
        DriftPolicy {
            interval: std::time::Duration::from_secs(300),
            mode: DriftMode::Heal,
        }
    }
}

/// What the reconciler does about drift.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftMode {
    /// Apply the desired state again.
    #[default]
    Heal,
    /// Only report the drift (status page, metrics, logs).
    Report,
}

impl Environment {
    /// The provider target for this environment; `owner` replaces the
    /// environment name in ownership marks (blue/green rebuild).
    pub fn target(&self, owner: Option<&str>) -> EnvTarget {
        EnvTarget {
            project: self.project.clone(),
            environment: owner.unwrap_or(&self.name).to_string(),
            kubernetes: self.kubernetes.clone(),
            aws: self.aws.clone(),
        }
    }

    /// The instance named `name`.
    pub fn instance(&self, name: &str) -> Option<&Instance> {
        let index = self.instance_index.get_or_init(|| {
            self.instances
                .iter()
                .enumerate()
                .map(|(i, inst)| (inst.name.clone(), i))
                .collect()
        });
        match index.get(name).and_then(|i| self.instances.get(*i)) {
            Some(inst) if inst.name == name => Some(inst),
            _ => self.instances.iter().find(|i| i.name == name),
        }
    }

    /// The secret file holding the key `path`, if any.
    pub fn secret_file_for<'m>(&self, model: &'m Model, path: &[&str]) -> Option<&'m str> {
        self.secret_files.iter().find_map(|(f, _)| {
            let (k, tree) = model.secret_keys.get_key_value(f)?;
            tree.leaf(path).then_some(k.as_str())
        })
    }
}

/// A module used in an environment under an instance name.
#[derive(Clone, Debug, Default)]
pub struct Instance {
    /// The instance name (the `module` part of every [`ResourceId`]).
    pub name: String,
    /// The module's source path, a key of [`Model::modules`].
    pub source: String,
    pub origin: Origin,
    /// Input values as written (templates in environment scope). Besides the
    /// value's own paths, the spans hold `@key`: where the input's key was
    /// written.
    pub inputs: IndexMap<String, Located>,
    /// Other instances of the same environment this one runs after.
    pub depends_on: Vec<(String, Origin)>,
    /// `forEach:` / `count:` as written; `None` once expanded
    /// (`crate::load::repeat`).
    pub repeat: Option<Repeat>,
    /// The repeated instance this one is a copy of (`tenant` for
    /// `tenant-acme`).
    pub copy_of: Option<String>,
}

/// `forEach:` or `count:` on a module instance or a resource: one copy per
/// item, named `<name>-<key>`, with `${each.key}` and `${each.value}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Repeat {
    /// `count:` (keys `0`..`n-1`) rather than `forEach:`.
    pub count: bool,
    /// The value as written: a list, a map, a number (`count`), or a
    /// string that is exactly one reference.
    pub value: Located,
    /// Where the `forEach`/`count` key was written.
    pub origin: Origin,
}

/// One `modules/<name>/module.yaml`.
#[derive(Clone, Debug, Default)]
pub struct Module {
    pub name: String,
    /// The folder (`modules/web`), as instances name it in `source`.
    pub source: String,
    pub file: String,
    pub origin: Origin,
    pub inputs: IndexMap<String, InputDecl>,
    pub outputs: IndexMap<String, OutputDecl>,
    /// Declared resources, then the objects its sources rendered (each
    /// with [`Resource::source`] set).
    pub resources: Vec<Resource>,
    /// Entries that stand for many objects: a folder of manifests, a
    /// Kustomize overlay (expanded into `resources` by the loader), a Helm
    /// chart (expanded per instance by `crate::helm`, into a module of
    /// that instance's own).
    pub sources: Vec<SourceDecl>,
}

impl Module {
    /// The resource named `name`.
    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.name == name)
    }

    /// What a `dependsOn` entry `name` stands for: the resource of that
    /// name, or every object the source of that name rendered.
    pub fn named(&self, name: &str) -> Vec<&Resource> {
        self.resources
            .iter()
            .filter(|r| r.name == name || r.source.as_deref() == Some(name))
            .collect()
    }

    /// The source named `name`.
    pub fn source(&self, name: &str) -> Option<&SourceDecl> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// A module entry that renders into many Kubernetes objects.
#[derive(Clone, Debug)]
pub struct SourceDecl {
    /// The entry's `name`; each object's resource name starts with it.
    pub name: String,
    /// Where the entry starts in `module.yaml`.
    pub origin: Origin,
    pub spec: SourceSpec,
    /// Given to every object it renders.
    pub depends_on: Vec<(DependsOn, Origin)>,
    /// Given to every object it renders.
    pub waivers: Option<Located>,
}

/// What a source reads.
#[derive(Clone, Debug)]
pub enum SourceSpec {
    /// `manifests:` YAML/JSON files of the repository.
    Manifests {
        /// Relative to the module folder: a file, a folder or a glob.
        path: String,
        path_origin: Origin,
        /// `${...}` in the files are references (else literal text).
        substitute: bool,
    },
    /// `kustomize:` an overlay folder of the repository, plus the settings
    /// tidegate adds on top (`namespace`, `images`, `replicas`, `labels`,
    /// `patches`, as written: templates in module scope).
    Kustomize {
        path: String,
        path_origin: Origin,
        substitute: bool,
        settings: Located,
    },
    /// `helm:` a chart folder of the repository, rendered per instance
    /// after loading (values differ per instance), by `crate::helm`.
    Helm {
        /// The chart folder, relative to the module folder.
        chart: String,
        chart_origin: Origin,
        /// The release name (`.Release.Name`); the entry's name if unset.
        release: Option<String>,
        /// A chart from a Helm repository or an OCI registry (then
        /// `chart` is its name or `oci://` reference, not a folder).
        remote: Option<RemoteChart>,
        /// `namespace`, `values` and `includeCRDs` as written (templates
        /// in module scope).
        settings: Located,
    },
}

/// A chart pulled from a Helm repository or an OCI registry, once, and
/// kept only when its `.tgz` has the declared digest.
#[derive(Clone, Debug)]
pub struct RemoteChart {
    /// The repository URL (`https://charts.example.com`); `None` for an
    /// `oci://` chart.
    pub repository: Option<String>,
    /// The exact version.
    pub version: String,
    /// The sha256 of the chart's `.tgz`, lowercase hex (without `sha256:`).
    pub digest: String,
    /// Where `digest` is written.
    pub digest_origin: Origin,
}

impl SourceSpec {
    /// `manifests` or `kustomize`, as written in the module.
    pub fn key(&self) -> &'static str {
        match self {
            SourceSpec::Manifests { .. } => "manifests",
            SourceSpec::Kustomize { .. } => "kustomize",
            SourceSpec::Helm { .. } => "helm",
        }
    }
}

/// The type of a module input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    String,
    Number,
    Bool,
    List,
    Map,
}

impl InputType {
    /// Its name as written in `type:`.
    pub fn name(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Number => "number",
            InputType::Bool => "bool",
            InputType::List => "list",
            InputType::Map => "map",
        }
    }

    /// True when a (fully known) `v` has this type. Sensitive values count
    /// as strings; unknown values match any type.
    pub fn accepts(self, v: &Value) -> bool {
        matches!(
            (self, v),
            (_, Value::Unknown(_))
                | (InputType::String, Value::String(_) | Value::Sensitive(_))
                | (InputType::Number, Value::Int(_) | Value::Float(_))
                | (InputType::Bool, Value::Bool(_))
                | (InputType::List, Value::List(_))
                | (InputType::Map, Value::Map(_))
        )
    }
}

/// A declared module input.
#[derive(Clone, Debug)]
pub struct InputDecl {
    pub name: String,
    pub ty: InputType,
    pub default: Option<Value>,
    /// Where each node of the default was written (paths below it).
    pub default_spans: Spans,
    /// True when an instance must set it (no default).
    pub required: bool,
    pub description: Option<String>,
    pub origin: Origin,
}

/// A declared module output: a template in module scope.
#[derive(Clone, Debug)]
pub struct OutputDecl {
    pub name: String,
    pub value: Located,
    pub description: Option<String>,
    pub origin: Origin,
}

/// What a resource's `dependsOn` entry names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DependsOn {
    /// Another resource of the same module.
    Resource(String),
    /// Every resource of another instance in the environment.
    Module(String),
}

/// A resource template inside a module.
#[derive(Clone, Debug)]
pub struct Resource {
    pub name: String,
    pub provider: ProviderKind,
    /// Kubernetes: `group/version/Kind` (`apps/v1/Deployment`, `v1/ConfigMap`);
    /// AWS: the resource type (`vpc`, ...). Becomes `Desired::kind`.
    pub kind: String,
    /// The manifest (Kubernetes) or spec (AWS), strings may hold `${...}`.
    pub body: Value,
    /// Where each node of `body` was written (paths relative to the body).
    pub spans: Spans,
    /// Where the resource entry starts.
    pub origin: Origin,
    pub depends_on: Vec<(DependsOn, Origin)>,
    /// The raw `waivers:` list, parsed by the policy module.
    pub waivers: Option<Located>,
    /// The source entry that rendered it (`None` for a declared resource),
    /// or the name of the repeated entry it is one copy of.
    pub source: Option<String>,
    /// `forEach:` / `count:` as written; `None` once expanded.
    pub repeat: Option<Repeat>,
}

impl Resource {
    /// Its id inside `instance`.
    pub fn id(&self, instance: &str) -> ResourceId {
        ResourceId {
            module: instance.to_string(),
            name: self.name.clone(),
        }
    }
}

/// The plaintext key structure of a SOPS file: maps of keys down to opaque
/// (encrypted) leaves.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum SecretTree {
    /// An encrypted value (or a list, addressed as a whole).
    #[default]
    Leaf,
    Map(BTreeMap<String, SecretTree>),
}

impl SecretTree {
    /// The node at `path`, if present.
    pub fn get(&self, path: &[&str]) -> Option<&SecretTree> {
        path.iter().try_fold(self, |t, k| match t {
            SecretTree::Map(m) => m.get(*k),
            SecretTree::Leaf => None,
        })
    }

    /// True when `path` names a leaf.
    pub fn leaf(&self, path: &[&str]) -> bool {
        matches!(self.get(path), Some(SecretTree::Leaf))
    }

    /// Every leaf path, dotted, in order.
    pub fn leaves(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect("", &mut out);
        out
    }

    fn collect(&self, prefix: &str, out: &mut Vec<String>) {
        match self {
            SecretTree::Leaf => out.push(prefix.to_string()),
            SecretTree::Map(m) => {
                for (k, v) in m {
                    v.collect(&crate::value::key_path(prefix, k), out);
                }
            }
        }
    }
}

impl Model {
    /// The environment named `name`.
    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.name == name)
    }

    /// The module an instance uses (always present in a model that loaded
    /// without errors).
    pub fn module_of(&self, instance: &Instance) -> Option<&Module> {
        self.modules.get(&instance.source)
    }

    /// Every resource of `env` with its id, instance and declaration, in
    /// declaration order.
    pub fn resources<'m>(
        &'m self,
        env: &'m Environment,
    ) -> impl Iterator<Item = (ResourceId, &'m Instance, &'m Resource)> + 'm {
        env.instances.iter().flat_map(move |i| {
            self.module_of(i)
                .map(|m| m.resources.as_slice())
                .unwrap_or_default()
                .iter()
                .map(move |r| (r.id(&i.name), i, r))
        })
    }

    /// The distinct `Desired::kind`s of one provider in `env`, sorted: what
    /// [`crate::provider::Provider::observe`] is asked to list.
    pub fn kinds(&self, env: &Environment, provider: ProviderKind) -> Vec<String> {
        let kinds: std::collections::BTreeSet<&str> = self
            .resources(env)
            .filter(|(_, _, r)| r.provider == provider)
            .map(|(_, _, r)| r.kind.as_str())
            .collect();
        kinds.into_iter().map(str::to_string).collect()
    }

    /// How many resources all environments hold.
    pub fn resource_count(&self) -> usize {
        self.environments
            .iter()
            .map(|e| self.resources(e).count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_trees_answer_leaf_paths() {
        let mut db = BTreeMap::new();
        db.insert("password".to_string(), SecretTree::Leaf);
        let mut top = BTreeMap::new();
        top.insert("db".to_string(), SecretTree::Map(db));
        let t = SecretTree::Map(top);
        assert!(t.leaf(&["db", "password"]));
        assert!(!t.leaf(&["db"]));
        assert!(!t.leaf(&["db", "user"]));
        assert_eq!(t.leaves(), vec!["db.password"]);
    }

    #[test]
    fn input_types_accept_matching_values() {
        assert!(InputType::Number.accepts(&Value::Int(1)));
        assert!(!InputType::Number.accepts(&Value::String("1".into())));
        assert!(InputType::Bool.accepts(&Value::Unknown("x".into())));
    }

    #[test]
    fn mass_delete_trips_above_the_count_or_the_share() {
        let g = Guards::default();
        assert_eq!(g.mass_delete(0, 0), None);
        assert_eq!(g.mass_delete(1, 4), None, "25 % exactly is allowed");
        assert!(g
            .mass_delete(2, 7)
            .unwrap()
            .contains("2 of 7 resources (28%)"));
        assert!(g
            .mass_delete(21, 1000)
            .unwrap()
            .contains("more than the limit of 20"));
        assert_eq!(g.mass_delete(20, 1000), None);
        let loose = Guards {
            max_deletes: 100,
            max_delete_percent: 100,
        };
        assert_eq!(loose.mass_delete(50, 50), None);
    }
}
