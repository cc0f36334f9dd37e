//! The vocabulary every stage shares: which provider a resource belongs
//! to, its identity, what Git wants ([`Desired`]), what exists ([`Live`]),
//! the change between them and where an environment's targets are. A leaf:
//! it imports only values, so loading, the graph, planning and policy use
//! it without depending on any provider's I/O.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

pub use crate::diag::Severity;
pub use crate::value::Origin;
use crate::value::{Map, Value};

/// Which provider a resource belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Kubernetes,
    Aws,
}

impl ProviderKind {
    /// Every provider, in the order they are listed to users.
    pub const ALL: [ProviderKind; 2] = [ProviderKind::Kubernetes, ProviderKind::Aws];

    /// The name a module's `provider:` field uses (`kubernetes`, `aws`).
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Kubernetes => "kubernetes",
            ProviderKind::Aws => "aws",
        }
    }

    /// The provider a module's `provider:` field names.
    pub fn from_name(name: &str) -> Option<ProviderKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The stable identity of a resource inside its environment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ResourceId {
    /// The module instance name in the environment (`network`).
    pub module: String,
    /// The resource name inside the module (`vpc`).
    pub name: String,
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.module, self.name)
    }
}

/// The Kubernetes target of an environment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KubeTarget {
    /// Context in `KUBECONFIG`; `None` means the in-cluster configuration.
    pub context: Option<String>,
    /// Take over fields owned by other managers on conflict.
    pub force_conflicts: bool,
}

/// The AWS target of an environment. Endpoint and credentials come from the
/// standard AWS configuration (`AWS_ENDPOINT_URL`, profiles, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AwsTarget {
    pub region: String,
    pub profile: Option<String>,
    /// The EC2 endpoint for this environment (`targets.aws.endpoint`), over
    /// the standard configuration's `AWS_ENDPOINT_URL[_EC2]`.
    pub endpoint: Option<String>,
}

/// Everything a provider needs to reach one environment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EnvTarget {
    /// The repository's project (`tidegate.yaml`): with `environment`, the
    /// owner identity a provider stamps and observes.
    pub project: String,
    /// The owner name written into ownership marks. Usually the environment
    /// name; a blue/green rebuild (`--as prod-green`) uses the new name.
    pub environment: String,
    pub kubernetes: Option<KubeTarget>,
    pub aws: Option<AwsTarget>,
}

/// A resource as Git wants it, references resolved as far as they can be.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub id: ResourceId,
    /// Kubernetes: `group/version/Kind` (`apps/v1/Deployment`, `v1/ConfigMap`);
    /// AWS: the resource type (`vpc`, `instance`, ...).
    pub kind: String,
    /// Kubernetes: the manifest; AWS: the typed spec of the resource type.
    /// May hold [`Value::Unknown`] until its dependencies are applied.
    pub body: Value,
    pub origin: Origin,
}

/// A resource as it is, observed from the provider.
#[derive(Clone, Debug, PartialEq)]
pub struct Live {
    pub id: ResourceId,
    pub kind: String,
    /// The provider's own name for it (`namespace/name`, `vpc-0abc...`).
    pub external_id: String,
    /// Observed state, normalised for comparison with a desired body
    /// (server-owned fields removed, secrets wrapped as sensitive).
    pub body: Value,
    /// Attributes other resources may reference (`id`, `arn`, `private_ip`).
    pub attributes: Map,
}

impl Live {
    /// The attribute that marks a resource whose deletion has begun but
    /// not finished (a Kubernetes object with a `deletionTimestamp`, held
    /// by finalizers); its value says what it waits for.
    pub const DELETING: &'static str = "tidegate:deleting";

    /// The attribute that marks an object carrying the marks of this
    /// environment from before projects existed (no project mark): Git
    /// declaring it adopts it; it is never pruned.
    pub const LEGACY: &'static str = "tidegate:legacy-owner";

    /// The attribute that marks an object carrying [`crate::provider::labels::PRUNE`]
    /// `disabled`: it is kept when Git stops declaring it.
    pub const KEEP: &'static str = "tidegate:prune-disabled";

    /// What the deletion in progress waits for, when one is.
    pub fn deleting(&self) -> Option<&str> {
        match self.attributes.get(Self::DELETING) {
            Some(Value::String(why)) => Some(why),
            _ => None,
        }
    }

    /// Marked by a tidegate from before projects: see [`Self::LEGACY`].
    pub fn is_legacy(&self) -> bool {
        self.attributes.get(Self::LEGACY) == Some(&Value::Bool(true))
    }

    /// Marked `tidegate.dev/prune: disabled`: see [`Self::KEEP`].
    pub fn prune_disabled(&self) -> bool {
        self.attributes.get(Self::KEEP) == Some(&Value::Bool(true))
    }

    /// Sets the [`Self::LEGACY`] and [`Self::KEEP`] attributes.
    pub fn with_marks(mut self, legacy: bool, keep: bool) -> Self {
        if legacy {
            self.attributes
                .insert(Self::LEGACY.into(), Value::Bool(true));
        }
        if keep {
            self.attributes.insert(Self::KEEP.into(), Value::Bool(true));
        }
        self
    }
}

/// What a change to one resource is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Action {
    NoOp,
    Create,
    Update,
    /// Destroy and create again; each reason names an immutable field.
    Replace {
        reasons: Vec<String>,
    },
    Delete,
}

/// The provider's prediction of one change.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub action: Action,
    /// Normalised live state, if the resource exists.
    pub before: Option<Value>,
    /// The state after apply (a server-side dry-run result where the
    /// provider has one), with [`Value::Unknown`] where not yet known.
    pub after: Value,
}

impl Change {
    /// Nothing changes. A no-op carries no bodies (`before` none, `after`
    /// null): nothing reads them, and a plan of 10,000 unchanged objects
    /// held two copies of each until the plan was built.
    pub fn no_op() -> Self {
        Change {
            action: Action::NoOp,
            before: None,
            after: Value::Null,
        }
    }
}

/// Readiness of a live resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum Health {
    Healthy,
    /// Not ready yet; the reason says what is awaited.
    Progressing(String),
    /// Will not become ready without a change; the reason says why.
    Failed(String),
}

/// What one environment asks a provider to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// The kinds (`Desired::kind`) the environment declares through the
    /// provider.
    pub kinds: BTreeSet<String>,
    /// Where the declared objects live (Kubernetes namespaces, as far as
    /// the files decide them); `None`: unknown, look everywhere. Providers
    /// without such places ignore it.
    pub namespaces: Option<BTreeSet<String>>,
}

/// One thing wrong with a resource body, found without any network call.
/// `path` is relative to the body (`ingress[0].fromPort`, empty for the body
/// itself) so the caller can join it with the loader's spans for
/// file:line:column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
    /// An error stops the run; a warning is reported (a Kubernetes object
    /// whose kind nobody declared: not checked) and the run goes on.
    #[serde(skip_serializing_if = "Severity::is_error")]
    pub severity: Severity,
}

impl Problem {
    /// An error at `path`.
    pub fn error(path: &str, message: impl Into<String>, fix: impl Into<String>) -> Problem {
        Problem {
            path: path.to_string(),
            message: message.into(),
            fix: fix.into(),
            severity: Severity::Error,
        }
    }
}

/// What a field holds.
#[derive(Debug)]
pub enum Ty {
    Str,
    /// A string that may be a secret ([`Value::Sensitive`]).
    SecretStr,
    Bool,
    Int,
    /// One of the listed strings.
    Enum(&'static [&'static str]),
    /// A list of strings compared as a set.
    StrSet,
    /// A string-to-string map (tags).
    Tags,
    Object(&'static [Field]),
    /// A list of objects compared as a set.
    ObjectSet(&'static [Field]),
}

/// One field of a spec.
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
    /// EC2 cannot change it in place: a change replaces the resource.
    pub immutable: bool,
}
