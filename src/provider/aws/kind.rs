//! What a resource type is to the provider: [`KindSpec`], what tidegate
//! knows of it without a network call (fields, attributes, value rules,
//! what it takes to replace it, when a prune deletes it), and [`Ec2Kind`],
//! how EC2 reads and changes it (one Describe call sequence, create,
//! in-place updates, delete) through the [`Ec2`] handle. Each type
//! implements both in its own file under `kinds/`, which lists them in
//! its registry; what every kind shares is done once, by the drivers in
//! `observe.rs` and `apply.rs`.
//!
//! # Expected flow
//! The drivers reach a kind through [`Kind`], which [`Ec2Kind`] gets for
//! free: `describe` pairs each resource EC2 lists with its kind in a
//! [`Raw`], already normalised into the spec shape, so the later update,
//! delete or health check of that resource runs the same kind's code on its
//! own SDK type, with nothing to match or downcast. The offline rules
//! (`schema.rs`, `values.rs`, `model.rs`) take a `&dyn KindSpec`; only the
//! registry and what stands above it look a kind up by name.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, Tag};

use super::calls::ApiError;
use super::sdk::{tag_map, Ec2};
use super::tags::{self, Fingerprinted};
use crate::provider::{Desired, Error, Field, Health, Live, Problem, Result};
use crate::value::{Map, Value};

/// What tidegate knows of a resource type without calling EC2.
pub(super) trait KindSpec: Send + Sync {
    /// The `type:` a module writes (`vpc`).
    fn name(&self) -> &'static str;

    /// The fields of its spec, `tags` last.
    fn fields(&self) -> &'static [Field];

    /// What a reference may name besides spec fields: what observe reports
    /// once the resource exists.
    fn attributes(&self) -> &'static [&'static str];

    /// The kinds whose resources a prune deletes only after this kind's
    /// (what it lives in or uses, and what must wait for it): the
    /// relations the registry's `delete_wave` orders prunes by.
    fn deleted_before(&self) -> &'static [&'static str] {
        &[]
    }

    /// Fields EC2 chooses when the spec leaves them out, unknown until
    /// created.
    fn computed(&self) -> &'static [&'static str] {
        &[]
    }

    /// Fields EC2 never shows back, compared through a fingerprint tag.
    fn fingerprinted(&self) -> &'static [Fingerprinted] {
        &[]
    }

    /// The value rules of a string `s` of field `field` (at any depth; the
    /// items of a string set too) at `path`. Unknown values and secrets
    /// never get here.
    fn check_string(&self, _field: &str, _s: &str, _path: &str, _out: &mut Vec<Problem>) {}

    /// The value rules of an integer of field `field` at `path`.
    fn check_int(&self, _field: &str, _i: i64, _path: &str, _out: &mut Vec<Problem>) {}

    /// The value rules of a whole object whose table is `fields` (the spec
    /// itself at path `""`, or a nested one), after its fields.
    fn check_object(&self, _fields: &[Field], _m: &Map, _path: &str, _out: &mut Vec<Problem>) {}

    /// A set of objects of field `field` in canonical form (sorted, grouped),
    /// so a desired and an observed set compare as equal when EC2 holds
    /// the same.
    fn canonical_set(&self, _field: &str, items: &Value) -> Value {
        items.clone()
    }

    /// Why a replacement must delete the old resource before it creates the
    /// new one (something that must stay unique), if it must.
    fn destroy_first(&self, _desired: &Value, _live: &Value) -> Option<String> {
        None
    }

    /// A create whose ClientToken names a resource deleted since gets that
    /// resource's id back, which never becomes visible: true makes the
    /// create driver try once more with a token salted by that id.
    fn resalt_when_invisible(&self) -> bool {
        false
    }
}

/// How EC2 reads and changes a resource type.
#[async_trait::async_trait]
pub(super) trait Ec2Kind: KindSpec + Copy + 'static {
    /// One resource as EC2's Describe answers it.
    type Item: Send + Sync + 'static;

    /// The Describe filter that names one resource by its id (`vpc-id`).
    fn id_filter(&self) -> &'static str;

    /// Every resource `filters` select, in one Describe call sequence
    /// (paginated), plus what the kind reads with them in one batch.
    async fn describe(&self, p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Self::Item>, ApiError>;

    /// The EC2 id of a listed resource.
    fn id<'a>(&self, item: &'a Self::Item) -> Option<&'a str>;

    /// The tags of a listed resource.
    fn tags<'a>(&self, item: &'a Self::Item) -> &'a [Tag];

    /// The spec-shaped body and the attributes of a listed resource.
    fn normalise(&self, item: &Self::Item, seen: Seen<'_>) -> (Value, Map);

    /// Its health as the listing shows it; `None` when that takes a call
    /// ([`Ec2Kind::health`]).
    fn listed_health(&self, _item: &Self::Item) -> Option<Health> {
        Some(Health::Healthy)
    }

    /// Its health, reading more where the listing cannot tell.
    async fn health(&self, _p: &Ec2, item: &Self::Item) -> Result<Health> {
        Ok(self.listed_health(item).unwrap_or(Health::Healthy))
    }

    /// Makes the bare resource, tagged at creation with
    /// [`Ec2::tag_spec`]; the driver converges the rest. Sent once
    /// (no SDK retries): a lost answer is searched for by tag first.
    async fn create(
        &self,
        p: &Ec2,
        desired: &Desired,
        d: &Value,
        token: &str,
    ) -> Result<Created, ApiError>;

    /// Changes `u.fields` in place (the driver sets `tags`).
    async fn update(&self, p: &Ec2, u: &Update<'_>, item: &Self::Item) -> Result<()>;

    /// Deletes the resource and first what EC2 requires (attachments,
    /// associations). "Not found" and "still in use" are the driver's.
    async fn delete(&self, p: &Ec2, id: &str, item: &Self::Item) -> Result<(), ApiError>;

    /// Waits after a delete EC2 finishes later (an instance terminating).
    async fn wait_deleted(&self, _p: &Ec2, _id: &str) -> Result<()> {
        Ok(())
    }

    /// `live` as it compares with the secrets in `d`, read from the
    /// resource itself; `None` when `d` holds none this kind reads back.
    async fn read_secrets(&self, _p: &Ec2, _d: &Value, _live: &Live) -> Result<Option<SecretView>> {
        Ok(None)
    }

    /// Stamps ownership tags `t` on resource `id` (an import's adoption, a
    /// legacy resource's project tag): CreateTags on the resource, unless
    /// the kind records ownership elsewhere (a route, on its table).
    async fn tag(&self, p: &Ec2, id: &str, t: Vec<Tag>) -> Result<()> {
        p.create_tags(id, t).await
    }
}

/// What [`Ec2Kind::normalise`] gets besides the resource.
pub(super) struct Seen<'a> {
    /// Its EC2 id.
    pub id: &'a str,
    /// All its tags, tidegate's among them.
    pub tags: &'a BTreeMap<String, String>,
    /// The user's tags (`tags` of the body).
    pub user_tags: Value,
    /// The client's region (for ARNs).
    pub region: &'a str,
}

impl Seen<'_> {
    /// The id as a value (the `id` attribute).
    pub fn id_value(&self) -> Value {
        Value::String(self.id.to_string())
    }

    /// The value of tag `key` (a fingerprint), `Null` when absent.
    pub fn tag(&self, key: &str) -> Value {
        self.tags
            .get(key)
            .map(|v| Value::String(v.clone()))
            .unwrap_or(Value::Null)
    }
}

/// What a create call produced.
pub(super) enum Created {
    Id(String),
    /// The ClientToken named an instance that is already terminated.
    Stale(String),
}

/// The id a create call answered with, or why there is none.
pub(super) fn created(kind: &str, id: Option<String>) -> Result<Created, ApiError> {
    id.map(Created::Id).ok_or_else(|| ApiError {
        code: None,
        message: format!("EC2 returned no id for the new {kind}"),
        transport: false,
        unreached: None,
    })
}

/// One in-place update, as the driver hands it to a kind.
pub(super) struct Update<'a> {
    pub desired: &'a Desired,
    /// The canonical desired spec.
    pub d: &'a Value,
    /// The live body the change was computed from.
    pub live: &'a Value,
    /// The EC2 id.
    pub id: &'a str,
    /// The changed fields EC2 can change in place, in field-table order,
    /// without `tags`.
    pub fields: Vec<&'a str>,
}

impl Update<'_> {
    /// The error for a field the kind cannot change in place.
    pub fn unchangeable(&self, field: &str) -> Error {
        Error::Invalid {
            id: self.desired.id.clone(),
            origin: self.desired.origin.clone(),
            message: format!(
                "tidegate cannot change `{field}` of a {} in place",
                self.desired.kind
            ),
        }
    }
}

/// `live` read back for its secrets ([`Ec2Kind::read_secrets`]).
pub(super) struct SecretView {
    /// `live` with the resource's own secret values (sensitive).
    pub live: Live,
    /// A fingerprint tag of a secret an earlier version stored, which the
    /// next apply removes.
    pub stale_tag: Option<&'static str>,
}

/// One resource as EC2 listed it, normalised, with its kind's code for the
/// calls that need EC2's own description of it.
pub(super) struct Raw {
    pub kind: &'static str,
    pub external_id: String,
    /// All its tags.
    pub tags: BTreeMap<String, String>,
    /// The spec-shaped body, the user's tags in `tags`.
    pub body: Value,
    pub attributes: Map,
    /// Health as the listing shows it; `None` when that takes a call.
    pub listed: Option<Health>,
    held: Box<dyn Held>,
}

impl Raw {
    /// True when a replacement superseded it.
    pub fn is_deposed(&self) -> bool {
        self.tags.contains_key(tags::TAG_DEPOSED)
    }

    /// Its health, reading more where the listing cannot tell.
    pub async fn health(&self, p: &Ec2) -> Result<Health> {
        self.held.health(p).await
    }

    /// Changes it in place.
    pub async fn update(&self, p: &Ec2, u: &Update<'_>) -> Result<()> {
        self.held.update(p, u).await
    }

    /// Deletes it.
    pub async fn delete(&self, p: &Ec2) -> Result<(), ApiError> {
        self.held.delete(p, &self.external_id).await
    }
}

/// `item`, listed by `kind` in `region`, normalised; `None` without an id.
pub(super) fn raw<K: Ec2Kind>(kind: K, item: K::Item, region: &str) -> Option<Raw> {
    let external_id = kind.id(&item)?.to_string();
    let tags = tag_map(kind.tags(&item));
    let seen = Seen {
        id: &external_id,
        tags: &tags,
        user_tags: tags::user_tags(&tags),
        region,
    };
    let (body, attributes) = kind.normalise(&item, seen);
    let listed = kind.listed_health(&item);
    Some(Raw {
        kind: kind.name(),
        external_id,
        tags,
        body,
        attributes,
        listed,
        held: Box::new(Listed { kind, item }),
    })
}

/// A listed resource paired with its kind.
struct Listed<K: Ec2Kind> {
    kind: K,
    item: K::Item,
}

/// The calls on a listed resource, whatever its kind.
#[async_trait::async_trait]
trait Held: Send + Sync {
    async fn health(&self, p: &Ec2) -> Result<Health>;
    async fn update(&self, p: &Ec2, u: &Update<'_>) -> Result<()>;
    async fn delete(&self, p: &Ec2, id: &str) -> Result<(), ApiError>;
}

#[async_trait::async_trait]
impl<K: Ec2Kind> Held for Listed<K> {
    async fn health(&self, p: &Ec2) -> Result<Health> {
        Ec2Kind::health(&self.kind, p, &self.item).await
    }

    async fn update(&self, p: &Ec2, u: &Update<'_>) -> Result<()> {
        Ec2Kind::update(&self.kind, p, u, &self.item).await
    }

    async fn delete(&self, p: &Ec2, id: &str) -> Result<(), ApiError> {
        Ec2Kind::delete(&self.kind, p, id, &self.item).await
    }
}

/// A kind as the drivers and the registry see it; every [`Ec2Kind`] is one.
#[async_trait::async_trait]
pub(super) trait Kind: KindSpec {
    /// The Describe filter that names one resource by its id.
    fn id_filter(&self) -> &'static str;

    /// Every resource `filters` select, each normalised into a [`Raw`]
    /// (those EC2 lists without an id are left out).
    async fn describe(&self, p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Raw>, ApiError>;

    /// See [`Ec2Kind::create`].
    async fn create(
        &self,
        p: &Ec2,
        desired: &Desired,
        d: &Value,
        token: &str,
    ) -> Result<Created, ApiError>;

    /// See [`Ec2Kind::wait_deleted`].
    async fn wait_deleted(&self, p: &Ec2, id: &str) -> Result<()>;

    /// See [`Ec2Kind::read_secrets`].
    async fn read_secrets(&self, p: &Ec2, d: &Value, live: &Live) -> Result<Option<SecretView>>;

    /// See [`Ec2Kind::tag`].
    async fn tag(&self, p: &Ec2, id: &str, t: Vec<Tag>) -> Result<()>;
}

#[async_trait::async_trait]
impl<K: Ec2Kind> Kind for K {
    fn id_filter(&self) -> &'static str {
        Ec2Kind::id_filter(self)
    }

    async fn describe(&self, p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Raw>, ApiError> {
        let region = p.region();
        let items = Ec2Kind::describe(self, p, filters).await?;
        Ok(items
            .into_iter()
            .filter_map(|item| raw(*self, item, &region))
            .collect())
    }

    async fn create(
        &self,
        p: &Ec2,
        desired: &Desired,
        d: &Value,
        token: &str,
    ) -> Result<Created, ApiError> {
        Ec2Kind::create(self, p, desired, d, token).await
    }

    async fn wait_deleted(&self, p: &Ec2, id: &str) -> Result<()> {
        Ec2Kind::wait_deleted(self, p, id).await
    }

    async fn read_secrets(&self, p: &Ec2, d: &Value, live: &Live) -> Result<Option<SecretView>> {
        Ec2Kind::read_secrets(self, p, d, live).await
    }

    async fn tag(&self, p: &Ec2, id: &str, t: Vec<Tag>) -> Result<()> {
        Ec2Kind::tag(self, p, id, t).await
    }
}
