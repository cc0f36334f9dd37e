//! Changing EC2, for every kind alike: create, update in place, replace,
//! delete. The calls that differ by type are the kinds' (`kinds/`).
//!
//! # Expected flow
//! A create first searches for the resource's own tags (a create that
//! succeeded just before a crash is adopted, not repeated), then makes the
//! bare resource tagged at creation, waits until EC2 shows it (eventual
//! consistency) and converges the rest (attachments, routes, rules,
//! attributes) through the same update code an in-place change uses.
//! Creates are sent without SDK retries: when an answer is lost, tidegate
//! searches by tag before sending again (with the same ClientToken where the
//! API takes one), so a resource is never made twice even where EC2 or a
//! stand-in ignores the token.

use aws_sdk_ec2::types::Tag;

use super::calls::ApiError;
use super::kind::{Created, Kind, Raw, Update};
use super::kinds;
use super::model;
use super::observe::{self, id_filter, list};
use super::sdk::{ec2_tags, filter, Ec2};
use super::tags;
use crate::provider::{Action, Desired, Error, Live, ResourceId, Result, RetryReason};
use crate::value::Value;

/// The error of an unknown resource type (the checks before every plan
/// and apply refuse one first).
fn unknown_kind(id: &ResourceId, kind: &str) -> Error {
    Error::Invalid {
        id: id.clone(),
        origin: Default::default(),
        message: format!("unknown AWS resource type `{kind}`"),
    }
}

/// The kind of `desired`.
pub(super) fn kind_of(id: &ResourceId, kind: &str) -> Result<&'static dyn Kind> {
    kinds::find(kind).ok_or_else(|| unknown_kind(id, kind))
}

/// The owned, not deposed resource carrying `desired`'s resource tag.
async fn find_owned(
    ec2: &Ec2,
    kind: &dyn Kind,
    desired: &Desired,
    replacing: Option<&str>,
) -> Result<Option<Live>> {
    let by_tag = filter(
        &format!("tag:{}", tags::TAG_RESOURCE),
        &[&desired.id.to_string()],
    );
    let raws = list(ec2, kind, vec![by_tag])
        .await
        .map_err(|e| e.into_error(&format!("search {}", desired.kind)))?;
    Ok(raws
        .iter()
        .filter(|r| !r.is_deposed() && Some(r.external_id.as_str()) != replacing)
        .find_map(|r| observe::to_live(r, &ec2.owner)))
}

/// The owned resource with this id, re-read; `None` when it is gone.
pub(super) async fn read(ec2: &Ec2, kind: &dyn Kind, external_id: &str) -> Result<Option<Raw>> {
    let raws = list(ec2, kind, vec![id_filter(kind, external_id)])
        .await
        .map_err(|e| e.into_error(&format!("read {}", kind.name())))?;
    Ok(raws.into_iter().next())
}

/// Reads a just-created resource, waiting while EC2 does not show it yet.
async fn wait_visible(ec2: &Ec2, kind: &dyn Kind, external_id: &str) -> Result<Live> {
    let mut n = 1;
    loop {
        if let Some(live) = read(ec2, kind, external_id)
            .await?
            .as_ref()
            .and_then(|r| observe::to_live(r, &ec2.owner))
        {
            return Ok(live);
        }
        if n >= ec2.policy.attempts {
            let name = kind.name();
            return Err(ApiError {
                code: Some("NotVisible".into()),
                message: format!("{name} {external_id} was created but EC2 does not list it"),
                transport: false,
                unreached: None,
            }
            .into_error(&format!("read {name}")));
        }
        ec2.policy.count_reason(RetryReason::NotYetVisible);
        tokio::time::sleep(ec2.policy.backoff(n)).await;
        n += 1;
    }
}

/// Creates the resource (or adopts the one a lost answer or a crash left
/// behind) and converges it to `d`.
pub(super) async fn create(ec2: &Ec2, desired: &Desired, d: &Value) -> Result<Live> {
    create_new(ec2, desired, d, None).await
}

/// [`create`], never adopting `replacing` (the resource a replacement
/// supersedes): should its deposed tag not show yet, the search by tags
/// would find it again and replace it again, without end.
async fn create_new(
    ec2: &Ec2,
    desired: &Desired,
    d: &Value,
    replacing: Option<&str>,
) -> Result<Live> {
    let kind = kind_of(&desired.id, &desired.kind)?;
    if let Some(found) = find_owned(ec2, kind, desired, replacing).await? {
        tracing::info!(resource = %desired.id, id = %found.external_id, "adopting the resource found by its tags");
        return converge(ec2, desired, d, &found).await;
    }
    let op = format!("create {}", desired.kind);
    let mut salt = String::new();
    let mut n = 1;
    loop {
        let token = model::client_token(
            kind,
            &ec2.owner.key(),
            &desired.id,
            d,
            &salt,
            &ec2.key,
            &ec2.secret_key,
        );
        match kind.create(ec2, desired, d, &token).await {
            Ok(Created::Id(id)) => match wait_visible(ec2, kind, &id).await {
                Ok(live) => {
                    // Its secrets are what was just sent: no read-back.
                    let live = with_sent_secrets(live, d);
                    return converge(ec2, desired, d, &live).await;
                }
                // A ClientToken can name a resource deleted since: EC2
                // then returns its id again. Create anew, salted.
                Err(_) if kind.resalt_when_invisible() && salt.is_empty() => salt = id,
                Err(e) => return Err(e),
            },
            Ok(Created::Stale(id)) if salt.is_empty() => {
                tracing::info!(resource = %desired.id, "the ClientToken named a terminated instance; creating anew");
                salt = id;
            }
            Ok(Created::Stale(id)) => {
                return Err(ApiError {
                    code: None,
                    message: format!("RunInstances returned terminated {id} twice"),
                    transport: false,
                    unreached: None,
                }
                .into_error(&op))
            }
            Err(e) if (e.transport || e.is_throttling()) && n < ec2.policy.attempts => {
                tracing::warn!(resource = %desired.id, error = %e, "create failed or its answer was lost; searching before retrying");
                ec2.policy.count(&e);
                tokio::time::sleep(ec2.policy.backoff(n)).await;
                if let Some(found) = find_owned(ec2, kind, desired, replacing).await? {
                    return converge(ec2, desired, d, &found).await;
                }
                n += 1;
            }
            Err(e) => return Err(e.into_error(&op)),
        }
    }
}

/// Brings an existing resource to `d`: nothing, an update in place, or
/// a replacement.
pub(super) async fn converge(ec2: &Ec2, desired: &Desired, d: &Value, live: &Live) -> Result<Live> {
    let kind = kind_of(&desired.id, &desired.kind)?;
    let seen = kind.read_secrets(ec2, d, live).await?;
    if let Some(tag) = seen.as_ref().and_then(|s| s.stale_tag) {
        let t = vec![Tag::builder().key(tag).build()];
        ec2.delete_tags(&live.external_id, t).await?;
    }
    let compared = seen.as_ref().map_or(live, |s| &s.live);
    possible(kind, desired, d, &compared.body)?;
    let change = model::predict(kind, d, Some(&compared.body), &ec2.key);
    match change.action {
        Action::NoOp => Ok(live.clone()),
        Action::Replace { .. } => replace(ec2, kind, desired, d, live).await,
        _ => update(ec2, kind, desired, d, live).await,
    }
}

async fn replace(
    ec2: &Ec2,
    kind: &dyn Kind,
    desired: &Desired,
    d: &Value,
    live: &Live,
) -> Result<Live> {
    let id = live.external_id.clone();
    if kind.destroy_first(d, &live.body).is_some() {
        delete_resource(ec2, live, true).await?;
        return Box::pin(create_new(ec2, desired, d, Some(&id))).await;
    }
    let deposed = ec2_tags([(tags::TAG_DEPOSED.to_string(), "true".to_string())]);
    kind.set_tags(ec2, &id, deposed).await?;
    let new = Box::pin(create_new(ec2, desired, d, Some(&id))).await?;
    if let Err(e) = delete_resource(ec2, live, false).await {
        tracing::info!(resource = %desired.id, old = %id, error = %e, "the replaced resource is still in use; it stays deposed and is pruned later");
    }
    Ok(new)
}

/// Refuses a change EC2 cannot make at all (`KindSpec::impossible`),
/// naming the field and the fix.
pub(super) fn possible(kind: &dyn Kind, desired: &Desired, d: &Value, live: &Value) -> Result<()> {
    match kind.impossible(d, live) {
        None => Ok(()),
        Some((message, fix)) => Err(Error::Invalid {
            id: desired.id.clone(),
            origin: desired.origin.clone(),
            message: format!("{message} (fix: {fix})"),
        }),
    }
}

/// Stamps the full ownership tags (the project among them), and the
/// kind's marks, on a resource tagged by a tidegate from before projects
/// or imported.
pub(super) async fn adopt(ec2: &Ec2, live: &Live) -> Result<()> {
    let kind = kind_of(&live.id, &live.kind)?;
    let marks = kind
        .marks()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()));
    let t = ec2_tags(
        tags::owner_tags(&ec2.owner, &live.id)
            .into_iter()
            .chain(marks),
    );
    kind.set_tags(ec2, &live.external_id, t).await
}

/// Applies in-place changes (the kind's fields, then the tags), then
/// reads the resource back.
async fn update(
    ec2: &Ec2,
    kind: &dyn Kind,
    desired: &Desired,
    d: &Value,
    live: &Live,
) -> Result<Live> {
    let Some(raw) = read(ec2, kind, &live.external_id).await? else {
        return Box::pin(create(ec2, desired, d)).await;
    };
    let diff = model::diff(kind, d, &live.body, &ec2.key);
    let id = live.external_id.as_str();
    let fields: Vec<&str> = diff
        .updates
        .iter()
        .map(String::as_str)
        .filter(|f| *f != "tags")
        .collect();
    if !fields.is_empty() {
        let u = Update {
            desired,
            d,
            live: &live.body,
            id,
            fields,
        };
        raw.update(ec2, &u).await?;
    }
    if diff.updates.iter().any(|f| f == "tags") {
        update_tags(ec2, id, d, &live.body).await?;
    }
    wait_visible(ec2, kind, id).await
}

async fn update_tags(ec2: &Ec2, id: &str, d: &Value, live: &Value) -> Result<()> {
    let empty = Value::Map(Default::default());
    let (set, remove) = tags::tag_changes(
        d.get_path("tags").unwrap_or(&empty),
        live.get_path("tags").unwrap_or(&empty),
    );
    if !set.is_empty() {
        let t = ec2_tags(set);
        ec2.create_tags(id, t).await?;
    }
    if !remove.is_empty() {
        let t: Vec<Tag> = remove
            .iter()
            .map(|k| Tag::builder().key(k).build())
            .collect();
        ec2.delete_tags(id, t).await?;
    }
    Ok(())
}

/// Deletes an owned resource and what EC2 requires first (attachments,
/// associations). Gone already is success. With `wait`, a resource
/// still in use is retried until the settle time passes.
pub(super) async fn delete_resource(ec2: &Ec2, live: &Live, wait: bool) -> Result<()> {
    let kind = kind_of(&live.id, &live.kind)?;
    let deadline = tokio::time::Instant::now() + ec2.policy.settle;
    loop {
        let Some(raw) = read(ec2, kind, &live.external_id).await? else {
            return Ok(());
        };
        match raw.delete(ec2).await {
            Ok(()) => break,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) if wait && e.is_dependency() && tokio::time::Instant::now() < deadline => {
                tracing::debug!(id = %live.external_id, error = %e, "still in use; waiting");
                tokio::time::sleep(ec2.policy.poll).await;
            }
            Err(e) => return Err(e.into_error(&format!("delete {}", live.kind))),
        }
    }
    kind.wait_deleted(ec2, &live.external_id).await
}
/// `live`, a resource just created from `d`, with `d`'s secrets as its own
/// (EC2 stored exactly what was sent), so converging it reads nothing back.
fn with_sent_secrets(mut live: Live, d: &Value) -> Live {
    if let (Some(sent), Value::Map(m)) = (d.as_map(), &mut live.body) {
        for (field, v) in sent {
            if matches!(v, Value::Sensitive(_)) {
                m.insert(field.clone(), v.clone());
            }
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensitive::Sensitive;

    #[test]
    fn a_new_resource_keeps_the_secrets_it_was_sent_and_nothing_else() {
        let live = Live {
            id: ResourceId {
                module: "app".into(),
                name: "server".into(),
            },
            kind: "instance".into(),
            external_id: "i-1".into(),
            body: Value::from_json(serde_json::json!({"ami": "ami-1", "tags": {}})),
            attributes: Default::default(),
        };
        let secret = Value::Sensitive(Sensitive::from_string("pw".into()));
        let mut d = Value::from_json(serde_json::json!({"ami": "ami-2", "tags": {}}));
        if let Value::Map(m) = &mut d {
            m.insert("userData".into(), secret.clone());
        }
        let out = with_sent_secrets(live, &d);
        assert_eq!(out.body.get_path("userData"), Some(&secret));
        assert_eq!(
            out.body.get_path("ami"),
            Some(&Value::String("ami-1".into())),
            "only secrets are taken from what was sent"
        );
    }
}
