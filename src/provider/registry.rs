//! The registry of providers, one line each: which [`Spec`] serves a
//! [`ProviderKind`]. Kept apart from the traits in `mod.rs` so the traits
//! never point at the providers that implement them.

use super::{aws, kubernetes, EnvTarget, Provider, ProviderKind, Result, Spec};

/// The offline knowledge and connector of provider `kind`: the registry
/// of providers, one line each.
pub fn spec(kind: ProviderKind) -> &'static dyn Spec {
    match kind {
        ProviderKind::Kubernetes => &kubernetes::spec::KubernetesSpec,
        ProviderKind::Aws => &aws::spec::AwsSpec,
    }
}

/// Builds the provider of `kind` for one environment.
pub async fn connect(kind: ProviderKind, target: &EnvTarget) -> Result<Box<dyn Provider>> {
    spec(kind).connect(target).await
}
