//! `eip`: an elastic IP address and its association with an instance
//! (`instanceId`), which changes in place (disassociate, associate).

use aws_sdk_ec2::types::{Address, DomainType, Filter, ResourceType, Tag};

use crate::provider::aws::calls::{sdk, ApiError};
use crate::provider::aws::kind::{created, Created, Ec2Kind, KindSpec, Seen, Update};
use crate::provider::aws::schema::{f, Field, Ty, TAGS};
use crate::provider::aws::sdk::{attrs, describe, map, no_sdk_retries, s, str_at, Ec2};
use crate::provider::{Desired, Result};
use crate::value::{Map, Value};

/// The `eip` kind.
#[derive(Clone, Copy)]
pub(super) struct Eip;

const FIELDS: &[Field] = &[f("instanceId", Ty::Str), TAGS];

impl KindSpec for Eip {
    fn name(&self) -> &'static str {
        "eip"
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn attributes(&self) -> &'static [&'static str] {
        &["id", "publicIp"]
    }

    /// Its association goes while the instance still exists.
    fn deleted_before(&self) -> &'static [&'static str] {
        &["instance"]
    }
}

/// Removes the address's association, if it has one; `fresh` as in
/// [`Ec2::send`].
async fn disassociate(p: &Ec2, a: &Address, fresh: bool) -> Result<(), ApiError> {
    let Some(assoc) = a.association_id() else {
        return Ok(());
    };
    p.send("DisassociateAddress", fresh, || async {
        sdk(p
            .client
            .disassociate_address()
            .association_id(assoc)
            .send()
            .await)
        .map(|_| ())
    })
    .await
}

#[async_trait::async_trait]
impl Ec2Kind for Eip {
    type Item = Address;

    fn id_filter(&self) -> &'static str {
        "allocation-id"
    }

    async fn describe(&self, p: &Ec2, filters: Vec<Filter>) -> Result<Vec<Self::Item>, ApiError> {
        let pages = describe(p, "DescribeAddresses", || async {
            p.client
                .describe_addresses()
                .set_filters(Some(filters.clone()))
                .send()
                .await
                .map(|o| vec![o])
        })
        .await?;
        Ok(pages
            .into_iter()
            .flat_map(|o| o.addresses.unwrap_or_default())
            .collect())
    }

    fn id<'a>(&self, a: &'a Self::Item) -> Option<&'a str> {
        a.allocation_id()
    }

    fn tags<'a>(&self, a: &'a Self::Item) -> &'a [Tag] {
        a.tags()
    }

    fn normalise(&self, a: &Self::Item, seen: Seen<'_>) -> (Value, Map) {
        let attributes = attrs(vec![
            ("id", seen.id_value()),
            ("publicIp", s(a.public_ip())),
        ]);
        let body = map(vec![
            ("instanceId", s(a.instance_id())),
            ("tags", seen.user_tags),
        ]);
        (body, attributes)
    }

    async fn create(
        &self,
        p: &Ec2,
        desired: &Desired,
        d: &Value,
        _token: &str,
    ) -> Result<Created, ApiError> {
        let o = sdk(p
            .client
            .allocate_address()
            .domain(DomainType::Vpc)
            .tag_specifications(p.tag_spec(ResourceType::ElasticIp, desired, d, vec![]))
            .customize()
            .config_override(no_sdk_retries())
            .send()
            .await)?;
        created(self.name(), o.allocation_id)
    }

    async fn update(&self, p: &Ec2, u: &Update<'_>, a: &Self::Item) -> Result<()> {
        for field in &u.fields {
            if *field != "instanceId" {
                return Err(u.unchangeable(field));
            }
            disassociate(p, a, true)
                .await
                .map_err(|e| e.into_error("DisassociateAddress"))?;
            if let Some(instance) = str_at(u.d, "instanceId") {
                p.call("AssociateAddress", || async {
                    sdk(p
                        .client
                        .associate_address()
                        .allocation_id(u.id)
                        .instance_id(instance)
                        .send()
                        .await)
                })
                .await?;
            }
        }
        Ok(())
    }

    async fn delete(&self, p: &Ec2, id: &str, a: &Self::Item) -> Result<(), ApiError> {
        disassociate(p, a, false).await?;
        p.send("ReleaseAddress", false, || async {
            sdk(p.client.release_address().allocation_id(id).send().await).map(|_| ())
        })
        .await
    }
}
