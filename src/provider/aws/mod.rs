//! The AWS EC2 provider: VPCs, subnets, gateways, security groups,
//! instances and the rest of the types in `kinds/`, owned through tags.
//!
//! Each resource type is one file in `kinds/` and one line in
//! `kinds::KINDS`; this module, `observe.rs` and `apply.rs` are the
//! machinery every type shares.
//!
//! EC2 keeps no state for tidegate; the tags are the state. Every resource
//! carries `managed-by: tidegate`, `tidegate:environment`, `tidegate:module`
//! and `tidegate:resource`, observe reads one Describe sequence per type
//! filtered by the environment tag, and a resource without the tags is never
//! touched.
//!
//! # Guarantees
//! - Creates are idempotent: the creates that take a ClientToken
//!   (RunInstances, CreateRouteTable, ...: each kind's file says) carry
//!   one derived from environment, resource id and desired state;
//!   every create is preceded by a search for the resource's tags, and a
//!   create whose answer was lost is retried only after searching again.
//! - Replacement is create-before-destroy: the old resource is tagged
//!   `tidegate:deposed`, the new one created, then the old one deleted. When
//!   something still uses it (a VPC with subnets) it stays deposed and is
//!   listed by observe under `<name>~deposed~<id>`, so the engine prunes it
//!   once its dependents moved. Where a name must stay unique (a security
//!   group keeping its name in its VPC, a key pair keeping its name) the old
//!   one is deleted first.
//! - Secret user data reaches EC2 only in RunInstances and is compared
//!   with the instance's own; plain user data and public keys through a
//!   keyed fingerprint tag.
//!
//! # Caveats
//! - VPC DNS attributes have no batched read; they are observed from the tag
//!   tidegate writes when it sets them, so an out-of-band change to them is
//!   not seen.

mod apply;
mod calls;
mod kind;
mod kinds;
mod model;
mod observe;
pub mod schema;
mod sdk;
pub mod spec;
mod tags;
pub mod values;

use std::collections::BTreeMap;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::Client;

pub use calls::RetryPolicy;
pub use kinds::TYPES;
pub use tags::{
    TAG_DEPOSED, TAG_ENVIRONMENT, TAG_MANAGED_BY, TAG_MODULE, TAG_PROJECT, TAG_RESOURCE,
    TAG_USER_DATA,
};

/// Every problem with the spec `body` of an AWS resource of type `kind`:
/// an unknown type, its structure ([`schema::check_structure`]: unknown
/// field, wrong type, missing required field) and its values
/// ([`values::check`]: CIDR blocks, ports, rule sources, reserved tags,
/// secrets outside `userData`, ...). Pure; unresolved references
/// ([`Value::Unknown`]) pass.
pub fn check(kind: &str, body: &Value) -> Vec<crate::provider::Problem> {
    let Some(k) = kinds::find(kind) else {
        return vec![kinds::unknown_type(kind)];
    };
    let mut out = schema::check_structure(k.fields(), body);
    out.extend(values::check(k, body));
    out
}

use crate::provider::{
    Action, Change, Desired, EnvTarget, Error, Health, ListedHealthy, Live, Owner, Provider,
    ProviderKind, Result,
};
use crate::value::Value;
use calls::{ApiError, CallCounter, Retrier, Unreached};
use sdk::Ec2;

/// The AWS behavior version this build was tested with (pinned, so an SDK
/// upgrade cannot change defaults silently).
pub fn behavior_version() -> BehaviorVersion {
    BehaviorVersion::v2026_01_12()
}

/// Knobs for the provider; the defaults suit real AWS.
#[derive(Clone, Debug)]
pub struct Options {
    pub retry: RetryPolicy,
    /// Key of the user-data fingerprint tag. Keep it secret and stable: a
    /// new key makes every instance with user data look changed.
    pub fingerprint_key: Vec<u8>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retry: RetryPolicy::default(),
            fingerprint_key: b"tidegate:user-data:v1".to_vec(),
        }
    }
}

/// One environment's EC2 region.
#[derive(Clone, Debug)]
pub struct AwsProvider {
    /// What the kinds and the drivers call EC2 with.
    ec2: Ec2,
    /// The EC2 endpoint as the configuration names it, for messages
    /// (`None`: not known, the client was configured directly).
    endpoint: Option<String>,
    counter: CallCounter,
    listed_healthy: ListedHealthy,
}

impl AwsProvider {
    /// Connects through the standard AWS configuration chain (environment,
    /// profile, `AWS_ENDPOINT_URL[_EC2]`, credentials) with the target's
    /// region, profile and, when it names one, endpoint.
    pub async fn connect(target: &EnvTarget) -> Result<Self> {
        let aws = target.aws.as_ref().ok_or_else(|| Error::Target {
            provider: ProviderKind::Aws,
            environment: target.environment.clone(),
            message: "the environment has no `targets.aws`; add `aws: { region: ... }`".into(),
        })?;
        let mut loader = aws_config::defaults(behavior_version());
        if !aws.region.is_empty() {
            loader = loader.region(Region::new(aws.region.clone()));
        }
        if let Some(p) = &aws.profile {
            loader = loader.profile_name(p);
        }
        if let Some(e) = &aws.endpoint {
            loader = loader.endpoint_url(e);
        }
        let shared = loader.load().await;
        if shared.region().is_none() {
            return Err(Error::Target {
                provider: ProviderKind::Aws,
                environment: target.environment.clone(),
                message: "no AWS region: set `targets.aws.region` or AWS_REGION".into(),
            });
        }
        // What the SDK will call, as its configuration chain picks it.
        let endpoint = aws
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_EC2").ok())
            .or_else(|| shared.endpoint_url().map(str::to_string))
            .unwrap_or_else(|| {
                format!(
                    "https://ec2.{}.amazonaws.com (AWS itself: no AWS_ENDPOINT_URL is set)",
                    aws.region
                )
            });
        let mut provider = Self::with_config(
            Owner::of(target),
            aws_sdk_ec2::config::Builder::from(&shared),
            Options::default(),
        );
        provider.endpoint = Some(endpoint);
        Ok(provider)
    }

    /// Builds the provider from an explicit EC2 client configuration (tests
    /// point it at a local endpoint without touching process environment).
    pub fn with_config(
        owner: Owner,
        config: aws_sdk_ec2::config::Builder,
        options: Options,
    ) -> Self {
        let counter = CallCounter::default();
        let retry = RetryConfig::adaptive()
            .with_max_attempts(options.retry.sdk_attempts)
            .with_initial_backoff(options.retry.base_delay)
            .with_max_backoff(options.retry.max_delay);
        let timeouts = TimeoutConfig::builder()
            .operation_attempt_timeout(options.retry.attempt_timeout)
            .build();
        let config = config
            .behavior_version(behavior_version())
            .retry_config(retry)
            .timeout_config(timeouts)
            .interceptor(counter.clone())
            .build();
        let ec2 = Ec2 {
            client: Client::from_conf(config),
            policy: Retrier::new(options.retry, counter.retries.clone()),
            owner,
            key: options.fingerprint_key,
            secret_key: {
                let mut k = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
                k
            },
        };
        AwsProvider {
            ec2,
            endpoint: None,
            counter,
            listed_healthy: ListedHealthy::default(),
        }
    }

    /// The owner written into ownership tags.
    pub fn owner(&self) -> &Owner {
        &self.ec2.owner
    }

    /// The underlying client, for callers that need EC2 beyond the trait
    /// (tests simulating out-of-band changes).
    pub fn client(&self) -> &Client {
        &self.ec2.client
    }

    /// The provider error of `operation`. A request that never reached EC2
    /// (no connection to the endpoint, no credentials) is a target error
    /// that names the environment, the endpoint and what to set, once,
    /// instead of the SDK's chain of causes.
    fn api_error(&self, e: ApiError, operation: &str) -> Error {
        let Some(unreached) = e.unreached else {
            return e.into_error(operation);
        };
        let endpoint = self
            .endpoint
            .as_deref()
            .unwrap_or("the configured endpoint");
        let message = match unreached {
            Unreached::Endpoint => format!(
                "cannot reach EC2 at {endpoint} ({operation}: {}); set AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_EC2, or `targets.aws.endpoint` in the environment's file) to a reachable EC2 endpoint such as a local stand-in, or allow this machine to reach AWS",
                e.message
            ),
            Unreached::Credentials => format!(
                "no AWS credentials to call EC2 at {endpoint} ({operation}: {}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (or `targets.aws.profile`), or run where an instance role or web identity provides them (a local stand-in takes any values)",
                e.message
            ),
        };
        Error::Target {
            provider: ProviderKind::Aws,
            environment: self.ec2.owner.environment.clone(),
            message,
        }
    }

    fn invalid(desired: &Desired, message: String) -> Error {
        Error::Invalid {
            id: desired.id.clone(),
            origin: desired.origin.clone(),
            message,
        }
    }

    /// Rejects a body that fails the schema check, naming every problem
    /// once (`validate` and `plan` already refuse these, at their lines;
    /// this guards bodies that became known only now).
    fn check_spec(desired: &Desired) -> Result<()> {
        let problems = check(&desired.kind, &desired.body);
        if problems.is_empty() {
            return Ok(());
        }
        let text: Vec<String> = problems
            .iter()
            .map(|p| {
                let at = if p.path.is_empty() {
                    String::new()
                } else {
                    format!(" at {}", p.path)
                };
                format!("{}{at} (fix: {})", p.message, p.fix)
            })
            .collect();
        Err(Self::invalid(desired, text.join("; ")))
    }
}

#[async_trait::async_trait]
impl Provider for AwsProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Aws
    }

    /// Reads every owned resource of the environment: one Describe sequence
    /// per type (all types, whatever is asked for, since EC2 tags are the
    /// inventory), concurrently.
    async fn observe(&self, _kinds: &[String]) -> Result<Vec<Live>> {
        self.listed_healthy.clear();
        let reads = kinds::KINDS.iter().map(|k| async move {
            observe::list(&self.ec2, *k, Vec::new())
                .await
                .map_err(|e| self.api_error(e, &format!("observe {}", k.name())))
        });
        let mut out = Vec::new();
        for raws in futures_join_all(reads).await {
            for raw in raws? {
                let Some(live) = observe::to_live(&raw, &self.ec2.owner) else {
                    continue;
                };
                if raw.listed == Some(Health::Healthy) {
                    self.listed_healthy.mark(&live.kind, &live.external_id);
                }
                out.push(live);
            }
        }
        Ok(out)
    }

    /// The resource of the desired type with id `external_id` (one
    /// Describe call filtered by id), whatever its tags.
    async fn lookup(
        &self,
        desired: &Desired,
        external_id: &str,
    ) -> Result<Option<crate::provider::Found>> {
        let kind = apply::kind_of(&desired.id, &desired.kind)?;
        let raws = kind
            .describe(&self.ec2, vec![observe::id_filter(kind, external_id)])
            .await
            .map_err(|e| self.api_error(e, &format!("describe {} {external_id}", kind.name())))?;
        let Some(raw) = raws.into_iter().find(|r| r.external_id == external_id) else {
            return Ok(None);
        };
        let claim = tags::claim(&raw.tags, &self.ec2.owner);
        let live = Live {
            id: desired.id.clone(),
            kind: raw.kind.to_string(),
            external_id: raw.external_id.clone(),
            body: raw.body.clone(),
            attributes: raw.attributes.clone(),
        };
        Ok(Some(crate::provider::Found { live, claim }))
    }

    /// Every resource with the selector's tag: one Describe sequence per
    /// type filtered by it, concurrently. Types with a required field EC2
    /// never shows back (a key pair's public key) are passed over.
    async fn discover(
        &self,
        selector: &crate::provider::Selector,
    ) -> Result<crate::provider::Discovery> {
        let crate::provider::Selector::Tag { key, value } = selector else {
            return Ok(Default::default());
        };
        let wanted = vec![sdk::filter(&format!("tag:{key}"), &[value.as_str()])];
        let reads = kinds::KINDS.iter().map(|k| {
            let wanted = wanted.clone();
            async move {
                let raws = k
                    .describe(&self.ec2, wanted.clone())
                    .await
                    .map_err(|e| self.api_error(e, &format!("discover {}", k.name())))?;
                Ok::<_, Error>((*k, raws, wanted))
            }
        });
        let mut out = crate::provider::Discovery::default();
        for read in futures_join_all(reads).await {
            let (kind, raws, wanted) = read?;
            let unreadable = kind.fingerprinted().iter().find(|f| {
                kind.fields()
                    .iter()
                    .any(|x| x.name == f.field && x.required)
            });
            for raw in raws
                .into_iter()
                .filter(|r| observe::tags_match(&wanted, &r.tags))
            {
                if let Some(f) = unreadable {
                    out.passed.push(crate::provider::Passed {
                        kind: kind.name().into(),
                        external_id: raw.external_id,
                        reason: format!(
                            "EC2 never shows a {}'s `{}`: declare it by hand, then `tidegate import`",
                            kind.name(),
                            f.field
                        ),
                    });
                    continue;
                }
                out.found.push(crate::provider::Discovered {
                    kind: kind.name().into(),
                    name: raw
                        .tags
                        .get("Name")
                        .cloned()
                        .unwrap_or_else(|| kind.name().into()),
                    claim: tags::claim(&raw.tags, &self.ec2.owner),
                    body: raw.body.without_nulls(),
                    external_id: raw.external_id,
                });
            }
        }
        Ok(out)
    }

    /// CreateTags of the ownership tags: nothing else changes.
    async fn adopt(&self, _desired: &Desired, found: &Live) -> Result<()> {
        apply::adopt(&self.ec2, found).await
    }

    async fn plan(&self, desired: &Desired, live: Option<&Live>) -> Result<Change> {
        Self::check_spec(desired)?;
        let kind = apply::kind_of(&desired.id, &desired.kind)?;
        let d = model::canonical(kind, &desired.body);
        let seen = match live {
            Some(l) => kind.read_secrets(&self.ec2, &d, l).await?,
            None => None,
        };
        let compared = seen.as_ref().map(|s| &s.live).or(live);
        if let Some(l) = compared {
            apply::possible(kind, desired, &d, &l.body)?;
        }
        let mut change = model::predict(kind, &d, compared.map(|l| &l.body), &self.ec2.key);
        if seen.as_ref().is_some_and(|s| s.stale_tag.is_some()) && change.action == Action::NoOp {
            // Tagged with a fingerprint of the secret before: the apply
            // removes that tag.
            change.action = Action::Update;
        }
        if let Some(l) = live.filter(|l| l.is_legacy()) {
            // Tagged before projects: the apply stamps the project tag.
            if change.action == Action::NoOp {
                change.action = Action::Update;
            }
            if let Value::Map(m) = &mut change.after {
                let tags = m
                    .entry("tags".to_string())
                    .or_insert_with(|| Value::Map(Default::default()));
                if let Value::Map(tags) = tags {
                    tags.insert(
                        tags::TAG_PROJECT.into(),
                        Value::String(self.ec2.owner.project.clone()),
                    );
                }
            }
            change.before.get_or_insert_with(|| l.body.clone());
        }
        if let Action::Replace { reasons } = &mut change.action {
            if let Some(l) = live {
                if let Some(why) = kind.destroy_first(&d, &l.body) {
                    reasons.push(why);
                }
            }
        }
        Ok(change)
    }

    async fn apply(&self, desired: &Desired, live: Option<&Live>) -> Result<Live> {
        Self::check_spec(desired)?;
        if desired.body.has_unknown() {
            return Err(Self::invalid(
                desired,
                "the spec still has values known only after apply; apply its dependencies first"
                    .into(),
            ));
        }
        let kind = apply::kind_of(&desired.id, &desired.kind)?;
        let d = model::canonical(kind, &desired.body);
        if let Some(l) = live {
            self.listed_healthy.forget(l);
        }
        match live {
            None => apply::create(&self.ec2, desired, &d).await,
            Some(l) if l.is_legacy() => {
                apply::adopt(&self.ec2, l).await?;
                let mut out = apply::converge(&self.ec2, desired, &d, l).await?;
                out.attributes.shift_remove(Live::LEGACY);
                Ok(out)
            }
            Some(l) => apply::converge(&self.ec2, desired, &d, l).await,
        }
    }

    async fn delete(&self, live: &Live) -> Result<()> {
        self.listed_healthy.forget(live);
        apply::delete_resource(&self.ec2, live, true).await
    }

    async fn health(&self, live: &Live) -> Result<Health> {
        if self.listed_healthy.contains(live) {
            return Ok(Health::Healthy);
        }
        let kind = apply::kind_of(&live.id, &live.kind)?;
        let raws = observe::list(
            &self.ec2,
            kind,
            vec![observe::id_filter(kind, &live.external_id)],
        )
        .await
        .map_err(|e| self.api_error(e, &format!("health {}", live.kind)))?;
        match raws.first() {
            Some(raw) => raw.health(&self.ec2).await,
            None => Ok(Health::Failed(format!(
                "{} {} does not exist",
                live.kind, live.external_id
            ))),
        }
    }

    fn api_calls(&self) -> BTreeMap<String, u64> {
        self.counter.snapshot()
    }

    fn api_retries(&self) -> BTreeMap<String, u64> {
        self.counter.retries()
    }
}

/// Awaits all futures concurrently, keeping their order.
async fn futures_join_all<F: std::future::Future>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out = Vec::with_capacity(futs.len());
    let mut pending: Vec<_> = futs.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.extend(results.into_iter().flatten());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_environment_without_an_aws_target_is_a_clear_error() {
        let target = EnvTarget {
            environment: "dev".into(),
            ..Default::default()
        };
        let err = AwsProvider::connect(&target).await.unwrap_err();
        assert!(err.to_string().contains("targets.aws"), "{err}");
        let err = crate::provider::registry::connect(ProviderKind::Aws, &target)
            .await
            .err()
            .expect("no target");
        assert_eq!(err.metric_label(), "target");
    }

    /// A provider of project shop, environment dev, whose endpoint nothing
    /// answers at: for checks that must fail before any call.
    fn offline_provider() -> AwsProvider {
        AwsProvider::with_config(
            Owner::new("shop", "dev"),
            aws_sdk_ec2::config::Builder::new()
                .region(Region::new("us-east-1"))
                .endpoint_url("http://127.0.0.1:9"),
            Options::default(),
        )
    }

    /// Issue 17: an endpoint nothing answers at is one target error naming
    /// the environment, the endpoint and what to set.
    #[tokio::test]
    async fn an_unreachable_endpoint_says_what_to_set() {
        let mut p = AwsProvider::with_config(
            Owner::new("shop", "dev"),
            aws_sdk_ec2::config::Builder::new()
                .region(Region::new("us-east-1"))
                .endpoint_url("http://127.0.0.1:9")
                .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                    "x", "y", None, None, "test",
                )),
            Options {
                retry: RetryPolicy {
                    sdk_attempts: 1,
                    attempts: 1,
                    ..RetryPolicy::default()
                },
                ..Options::default()
            },
        );
        p.endpoint = Some("http://127.0.0.1:9".into());
        let err = p.observe(&[]).await.unwrap_err();
        assert_eq!(err.metric_label(), "target");
        let text = err.to_string();
        assert!(
            text.starts_with(
                "aws target of environment dev: cannot reach EC2 at http://127.0.0.1:9 (observe "
            ),
            "{text}"
        );
        assert!(text.contains("set AWS_ENDPOINT_URL"), "{text}");
        assert_eq!(text.matches("onnection refused").count(), 1, "{text}");
    }

    #[tokio::test]
    async fn apply_refuses_invalid_and_unresolved_specs_without_calling_ec2() {
        let p = offline_provider();
        let mut desired = Desired {
            id: crate::provider::ResourceId {
                module: "network".into(),
                name: "vpc".into(),
            },
            kind: "vpc".into(),
            body: crate::value::Value::from_json(serde_json::json!({"cidr": "10.0.0.0/16"})),
            origin: Default::default(),
        };
        let err = p.apply(&desired, None).await.unwrap_err();
        assert!(err.to_string().contains("unknown field `cidr`"), "{err}");
        desired.body = crate::value::Value::Map(
            [(
                "cidrBlock".to_string(),
                crate::value::Value::Unknown("module.x.cidr".into()),
            )]
            .into_iter()
            .collect(),
        );
        let err = p.apply(&desired, None).await.unwrap_err();
        assert!(err.to_string().contains("known only after apply"), "{err}");
        assert!(p.api_calls().is_empty());
    }

    #[tokio::test]
    async fn plan_names_every_bad_value_once_without_calling_ec2() {
        let p = offline_provider();
        let desired = Desired {
            id: crate::provider::ResourceId {
                module: "network".into(),
                name: "web".into(),
            },
            kind: "security_group".into(),
            body: crate::value::Value::from_json(serde_json::json!({
                "vpcId": "vpc-1", "groupName": "web", "description": "d",
                "ingress": [
                    {"protocol": "tcp", "fromPort": 53, "toPort": 53, "cidrBlocks": ["192.0.256.0/24"]},
                    {"protocol": "tcp", "fromPort": 2222, "toPort": 22, "cidrBlocks": ["10.0.0.0/8"]}
                ]
            })),
            origin: Default::default(),
        };
        let err = p.plan(&desired, None).await.unwrap_err().to_string();
        assert!(
            err.contains("`192.0.256.0/24` is not an IPv4 CIDR block: 256 is not an octet (0 to 255) at ingress[0].cidrBlocks[0]"),
            "{err}"
        );
        assert!(
            err.contains("`fromPort` 2222 is above `toPort` 22 at ingress[1].fromPort"),
            "{err}"
        );
        assert_eq!(err.matches("192.0.256.0/24").count(), 1, "{err}");
        assert!(p.api_calls().is_empty());
    }
}
