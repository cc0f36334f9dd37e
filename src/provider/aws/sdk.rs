//! What the kinds and the drivers call EC2 with, below both: the
//! [`Ec2`] handle of one environment's region (the client, the retry
//! policy, the owner its tags name, the fingerprint keys), tagging at
//! creation, and the small helpers every kind shares to read a spec
//! (`str_at`, `strs`, ...) and to write EC2's answers in the spec shape
//! (`s`, `map`, `attrs`, `arn`, ...).
//!
//! It depends on nothing of the provider above the call machinery
//! (`calls.rs`) and the tags (`tags.rs`): a kind file takes everything it
//! needs from here, its trait (`kind.rs`), the field vocabulary
//! (`schema.rs`) and the value rules (`values.rs`).

use std::collections::BTreeMap;
use std::future::Future;

use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use aws_sdk_ec2::Client;

use super::calls::{sdk, ApiError, Retrier};
use super::tags;
use crate::provider::{Desired, Owner, Result};
use crate::value::{Map, Value};

/// One environment's EC2 region as the kinds and the drivers call it.
#[derive(Clone, Debug)]
pub(super) struct Ec2 {
    pub client: Client,
    pub policy: Retrier,
    /// The owner written into ownership tags.
    pub owner: Owner,
    /// Key of the fingerprint tags (`Options::fingerprint_key`).
    pub key: Vec<u8>,
    /// Random per process: what secrets enter ClientTokens under.
    pub secret_key: [u8; 32],
}

impl Ec2 {
    /// The region the client talks to (for ARNs).
    pub fn region(&self) -> String {
        self.client
            .config()
            .region()
            .map(|r| r.as_ref().to_string())
            .unwrap_or_default()
    }

    /// A change call right after a create or an update: `*.NotFound` is EC2
    /// catching up on an id it has just handed out (retried); a failure is
    /// the provider's error of `op`.
    pub async fn call<T, F, Fut>(&self, op: &str, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        self.send(op, true, f).await.map_err(|e| e.into_error(op))
    }

    /// A call whose EC2 error the caller reads. With `fresh`, `*.NotFound`
    /// is EC2 catching up (retried); without, it is returned (while
    /// deleting it means gone).
    pub async fn send<T, F, Fut>(&self, op: &str, fresh: bool, f: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        self.policy.run(op, fresh, f).await
    }

    /// CreateTags of `t` on resource `id` (adds or overwrites).
    pub async fn create_tags(&self, id: &str, t: Vec<Tag>) -> Result<()> {
        self.call("CreateTags", || async {
            sdk(self
                .client
                .create_tags()
                .resources(id)
                .set_tags(Some(t.clone()))
                .send()
                .await)
        })
        .await
        .map(|_| ())
    }

    /// DeleteTags of the keys of `t` on resource `id`.
    pub async fn delete_tags(&self, id: &str, t: Vec<Tag>) -> Result<()> {
        self.call("DeleteTags", || async {
            sdk(self
                .client
                .delete_tags()
                .resources(id)
                .set_tags(Some(t.clone()))
                .send()
                .await)
        })
        .await
        .map(|_| ())
    }

    /// All tags of a new resource: ownership, the user's, and `extra`.
    fn tags_for(&self, desired: &Desired, d: &Value, extra: Vec<(String, String)>) -> Vec<Tag> {
        let user = d
            .get_path("tags")
            .and_then(Value::as_map)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())));
        ec2_tags(
            tags::owner_tags(&self.owner, &desired.id)
                .into_iter()
                .chain(user)
                .chain(extra),
        )
    }

    /// The TagSpecification that tags a new resource of type `rt` at
    /// creation (so it is never untagged): ownership, the user's, `extra`.
    pub fn tag_spec(
        &self,
        rt: ResourceType,
        desired: &Desired,
        d: &Value,
        extra: Vec<(String, String)>,
    ) -> TagSpecification {
        TagSpecification::builder()
            .resource_type(rt)
            .set_tags(Some(self.tags_for(desired, d, extra)))
            .build()
    }
}

/// Runs one Describe call sequence (every page) under the retry policy:
/// `pages` sends it.
pub(super) async fn describe<O, E, R, F, Fut>(
    p: &Ec2,
    operation: &str,
    pages: F,
) -> Result<Vec<O>, ApiError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Vec<O>, SdkError<E, R>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    p.policy
        .run(operation, false, || async { sdk(pages().await) })
        .await
}

/// The pages of a Describe that named `ids` in its `...Ids` parameter (the
/// kinds whose id filter moto lacks): none when EC2 answers that a named
/// one is gone, where a filter would have matched nothing.
pub(super) fn none_when_gone<O>(
    pages: Result<Vec<O>, ApiError>,
    named: bool,
) -> Result<Vec<O>, ApiError> {
    match pages {
        Err(e) if named && e.is_not_found() => Ok(Vec::new()),
        other => other,
    }
}

/// Tags as a map.
pub(super) fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

/// A string value, `Null` when absent.
pub(super) fn s(v: Option<&str>) -> Value {
    v.map(|s| Value::String(s.to_string()))
        .unwrap_or(Value::Null)
}

/// A sorted set of strings.
pub(super) fn strings<'a>(items: impl Iterator<Item = &'a str>) -> Value {
    let mut v: Vec<&str> = items.collect();
    v.sort();
    v.dedup();
    Value::List(v.into_iter().map(|s| Value::String(s.into())).collect())
}

/// A map of the entries that are not `Null`.
pub(super) fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .filter(|(_, v)| !matches!(v, Value::Null))
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// Attributes: the entries that are not `Null`.
pub(super) fn attrs(entries: Vec<(&str, Value)>) -> Map {
    match map(entries) {
        Value::Map(m) => m,
        _ => Map::new(),
    }
}

/// The ARN of an EC2 resource: `arn:<partition>:ec2:<region>:<account>:<type>/<id>`.
pub fn arn(region: &str, account: Option<&str>, resource: &str, id: &str) -> String {
    let partition = if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    };
    let account = account.unwrap_or("000000000000");
    format!("arn:{partition}:ec2:{region}:{account}:{resource}/{id}")
}

/// Client configuration of a call sent once: creates, whose lost answer
/// is searched for by tag before anything is sent again.
pub(super) fn no_sdk_retries() -> aws_sdk_ec2::config::Builder {
    aws_sdk_ec2::config::Builder::default().retry_config(RetryConfig::disabled())
}

/// The integer at `v`, if it fits EC2's 32 bits.
pub(super) fn int(v: Option<&Value>) -> Option<i32> {
    match v {
        Some(Value::Int(i)) => i32::try_from(*i).ok(),
        _ => None,
    }
}

/// The boolean at `path`.
pub(super) fn bool_at(v: &Value, path: &str) -> Option<bool> {
    match v.get_path(path) {
        Some(Value::Bool(b)) => Some(*b),
        _ => None,
    }
}

/// The string at `path`.
pub(super) fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    v.get_path(path).and_then(Value::as_str)
}

/// The string at `path`, owned (an SDK setter's argument).
pub(super) fn string_at(v: &Value, path: &str) -> Option<String> {
    str_at(v, path).map(str::to_string)
}

/// The strings of the list at `path`.
pub(super) fn strs(v: &Value, path: &str) -> Vec<String> {
    match v.get_path(path) {
        Some(Value::List(l)) => l
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// EC2 tags of key/value pairs.
pub(super) fn ec2_tags(pairs: impl IntoIterator<Item = (String, String)>) -> Vec<Tag> {
    pairs
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// Filter of one name and values.
pub(super) fn filter(name: &str, values: &[&str]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

/// `filters` without the one named `name`, and that one's values: for a
/// Describe call that names resources by id in its `...Ids` parameter
/// (EC2 takes both; moto implements no id filter for some types).
pub(super) fn take_filter(filters: Vec<Filter>, name: &str) -> (Vec<Filter>, Option<Vec<String>>) {
    let mut ids = None;
    let rest = filters
        .into_iter()
        .filter(|f| {
            if f.name() == Some(name) {
                ids = Some(f.values().to_vec());
                false
            } else {
                true
            }
        })
        .collect();
    (rest, ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_resource_that_is_gone_is_no_page_and_other_errors_stay() {
        let err = |code: &str| ApiError {
            code: Some(code.into()),
            message: "m".into(),
            transport: false,
            unreached: None,
        };
        let gone = || Err::<Vec<u8>, _>(err("InvalidNetworkAclID.NotFound"));
        assert_eq!(none_when_gone(gone(), true).unwrap(), Vec::<u8>::new());
        assert!(
            none_when_gone(gone(), false).is_err(),
            "not named: not ours to hide"
        );
        let other = Err::<Vec<u8>, _>(err("UnauthorizedOperation"));
        assert!(none_when_gone(other, true).is_err());
        assert_eq!(none_when_gone(Ok(vec![1]), true).unwrap(), vec![1]);
    }

    #[test]
    fn arns_carry_partition_region_account_and_type() {
        assert_eq!(
            arn("eu-west-1", Some("123456789012"), "vpc", "vpc-1"),
            "arn:aws:ec2:eu-west-1:123456789012:vpc/vpc-1"
        );
        assert_eq!(
            arn("cn-north-1", Some("1"), "subnet", "subnet-2"),
            "arn:aws-cn:ec2:cn-north-1:1:subnet/subnet-2"
        );
        assert!(
            arn("us-gov-west-1", None, "vpc", "v").starts_with("arn:aws-us-gov:ec2:us-gov-west-1:")
        );
    }
}
