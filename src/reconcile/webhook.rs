//! Push webhooks: GitHub (`X-Hub-Signature-256`, HMAC-SHA256 of the body)
//! and GitLab (`X-Gitlab-Token`, the shared secret itself). Both are
//! compared in constant time; an empty secret verifies nothing.
//!
//! # Replay protection, exactly
//! A delivery id (`X-GitHub-Delivery`, `X-Gitlab-Event-UUID`) is required,
//! and both it and the SHA-256 digest of the body are remembered
//! ([`ReplayCache`]: 24 hours, 10,000 deliveries, in memory, per replica).
//! A hook whose delivery id or body was seen within that window is
//! refused. The delivery id is not signed (GitHub signs the body only), so
//! the body digest is what stops a captured GitHub delivery replayed under
//! a new id. Not covered: a replay after the window, after a restart, or
//! to another replica; a GitLab token, which is the secret itself, lets
//! whoever captured it send any body. The worst a replay can do is what a
//! verified push does: make the reconciler poll at once, since the commit
//! is always read from the remote, never from the hook.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::sensitive::Sensitive;

/// Which forge sent the hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    GitLab,
}

impl Forge {
    pub fn label(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::GitLab => "gitlab",
        }
    }
}

/// A hook whose signature or token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub forge: Forge,
    pub delivery: String,
    /// `push`, `ping`, `Push Hook`, ...
    pub event: String,
    /// The pushed ref (`refs/heads/main`), when the body names one.
    pub git_ref: Option<String>,
}

impl Verified {
    /// Whether this hook should trigger a poll of `reference` (a branch
    /// name, tag or full ref). Pings and pushes to other refs do not.
    pub fn triggers(&self, reference: &str) -> bool {
        let push = matches!(self.event.as_str(), "push" | "Push Hook" | "Tag Push Hook");
        let wanted = |r: &str| {
            r == reference
                || r.strip_prefix("refs/heads/") == Some(reference)
                || r.strip_prefix("refs/tags/") == Some(reference)
        };
        push && self.git_ref.as_deref().is_none_or(wanted)
    }
}

/// Why a hook was refused (the HTTP status is 401 for the first three,
/// 409 for a replay, 400 otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No webhook secret is configured: hooks are not accepted.
    #[error("webhooks are disabled: start with --webhook-secret-file")]
    NotConfigured,
    /// Neither a GitHub signature nor a GitLab token header is present.
    #[error("no X-Hub-Signature-256 or X-Gitlab-Token header")]
    Unsigned,
    /// The signature or token does not match the secret.
    #[error("signature or token does not match")]
    BadSignature,
    /// The delivery id header is missing.
    #[error("no delivery id (X-GitHub-Delivery or X-Gitlab-Event-UUID)")]
    NoDelivery,
    /// This delivery id was accepted before.
    #[error("delivery already received (replay)")]
    Replayed,
    /// This exact body was accepted before, under another delivery id.
    #[error("this body was already received under another delivery id (replay)")]
    ReplayedBody,
}

impl Rejection {
    pub fn label(self) -> &'static str {
        match self {
            Rejection::NotConfigured => "disabled",
            Rejection::Unsigned => "unsigned",
            Rejection::BadSignature => "bad-signature",
            Rejection::NoDelivery => "no-delivery",
            Rejection::Replayed | Rejection::ReplayedBody => "replayed",
        }
    }
}

/// Checks the signature (GitHub) or token (GitLab) of a hook against
/// `secret`. Does not look at the replay cache. An empty `secret` refuses
/// every hook ([`Rejection::NotConfigured`]): an HMAC under the empty key
/// and an empty token are no proof of anything.
pub fn verify(headers: &HeaderMap, body: &[u8], secret: &Sensitive) -> Result<Verified, Rejection> {
    if secret.expose().is_empty() {
        return Err(Rejection::NotConfigured);
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (forge, delivery, event) = if let Some(sig) = header("x-hub-signature-256") {
        let hex = sig.strip_prefix("sha256=").ok_or(Rejection::BadSignature)?;
        let expected = hex::decode(hex).map_err(|_| Rejection::BadSignature)?;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.expose()).map_err(|_| Rejection::BadSignature)?;
        mac.update(body);
        mac.verify_slice(&expected)
            .map_err(|_| Rejection::BadSignature)?;
        (
            Forge::GitHub,
            header("x-github-delivery"),
            header("x-github-event"),
        )
    } else if let Some(token) = header("x-gitlab-token") {
        if !bool::from(token.as_bytes().ct_eq(secret.expose())) {
            return Err(Rejection::BadSignature);
        }
        let delivery = header("x-gitlab-event-uuid").or(header("x-gitlab-webhook-uuid"));
        (Forge::GitLab, delivery, header("x-gitlab-event"))
    } else {
        return Err(Rejection::Unsigned);
    };
    let delivery = delivery
        .filter(|d| !d.is_empty() && d.len() <= 128)
        .ok_or(Rejection::NoDelivery)?;
    let git_ref = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("ref")?.as_str().map(str::to_owned));
    Ok(Verified {
        forge,
        delivery: delivery.to_string(),
        event: event.unwrap_or_default().to_string(),
        git_ref,
    })
}

/// Delivery ids and body digests seen within `ttl`, of at most
/// `capacity` deliveries (the oldest is forgotten first). Forges retry a
/// delivery with the same id only within minutes, and a replay older than
/// `ttl` still only causes a poll.
#[derive(Debug)]
pub struct ReplayCache {
    ids: HashSet<String>,
    bodies: HashSet<[u8; 32]>,
    order: VecDeque<(Instant, String, [u8; 32])>,
    ttl: Duration,
    capacity: usize,
}

impl Default for ReplayCache {
    fn default() -> Self {
        ReplayCache::new(Duration::from_secs(24 * 3600), 10_000)
    }
}

impl ReplayCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        ReplayCache {
            ids: HashSet::new(),
            bodies: HashSet::new(),
            order: VecDeque::new(),
            ttl,
            capacity,
        }
    }

    /// Records a delivery; refused when its id or its body was seen before
    /// (a replay). A refused delivery is not recorded.
    pub fn first_time(
        &mut self,
        delivery: &str,
        body: &[u8],
        now: Instant,
    ) -> Result<(), Rejection> {
        while let Some((at, id, digest)) = self.order.front() {
            if now.duration_since(*at) < self.ttl && self.order.len() < self.capacity {
                break;
            }
            self.ids.remove(id);
            self.bodies.remove(digest);
            self.order.pop_front();
        }
        let digest: [u8; 32] = Sha256::digest(body).into();
        if self.ids.contains(delivery) {
            return Err(Rejection::Replayed);
        }
        if self.bodies.contains(&digest) {
            return Err(Rejection::ReplayedBody);
        }
        self.ids.insert(delivery.to_string());
        self.bodies.insert(digest);
        self.order.push_back((now, delivery.to_string(), digest));
        Ok(())
    }
}

/// The `X-Hub-Signature-256` value GitHub sends for `body` (for tests and
/// for documenting the scheme).
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!("sha256={}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Sensitive {
        Sensitive::new(b"It's a Secret to Everybody".to_vec())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn github_signature_matches_the_documented_example() {
        // The example from GitHub's "Validating webhook deliveries" page.
        assert_eq!(
            github_signature(secret().expose(), b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn github_push_verifies_and_names_the_ref() {
        let body = br#"{"ref":"refs/heads/main","after":"abc"}"#;
        let sig = github_signature(secret().expose(), body);
        let h = headers(&[
            ("x-hub-signature-256", sig.as_str()),
            ("x-github-delivery", "d-1"),
            ("x-github-event", "push"),
        ]);
        let v = verify(&h, body, &secret()).unwrap();
        assert_eq!(v.forge, Forge::GitHub);
        assert_eq!(v.delivery, "d-1");
        assert!(v.triggers("main"));
        assert!(!v.triggers("release"));
        let tampered = br#"{"ref":"refs/heads/main","after":"abd"}"#;
        assert_eq!(
            verify(&h, tampered, &secret()),
            Err(Rejection::BadSignature)
        );
        let h = headers(&[
            ("x-hub-signature-256", "sha256=zz"),
            ("x-github-delivery", "d"),
        ]);
        assert_eq!(verify(&h, body, &secret()), Err(Rejection::BadSignature));
    }

    #[test]
    fn gitlab_token_is_compared_and_delivery_required() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let ok = headers(&[
            ("x-gitlab-token", "It's a Secret to Everybody"),
            ("x-gitlab-event", "Push Hook"),
            ("x-gitlab-event-uuid", "u-1"),
        ]);
        let v = verify(&ok, body, &secret()).unwrap();
        assert_eq!((v.forge, v.delivery.as_str()), (Forge::GitLab, "u-1"));
        assert!(v.triggers("refs/heads/main"));
        let bad = headers(&[("x-gitlab-token", "guess"), ("x-gitlab-event-uuid", "u-2")]);
        assert_eq!(verify(&bad, body, &secret()), Err(Rejection::BadSignature));
        let nodelivery = headers(&[("x-gitlab-token", "It's a Secret to Everybody")]);
        assert_eq!(
            verify(&nodelivery, body, &secret()),
            Err(Rejection::NoDelivery)
        );
        assert_eq!(
            verify(&HeaderMap::new(), body, &secret()),
            Err(Rejection::Unsigned)
        );
    }

    #[test]
    fn pings_do_not_trigger() {
        let v = Verified {
            forge: Forge::GitHub,
            delivery: "x".into(),
            event: "ping".into(),
            git_ref: None,
        };
        assert!(!v.triggers("main"));
    }

    #[test]
    fn replayed_deliveries_are_refused_until_forgotten() {
        let mut c = ReplayCache::new(Duration::from_secs(60), 2);
        let t = Instant::now();
        assert_eq!(c.first_time("a", b"1", t), Ok(()));
        assert_eq!(c.first_time("a", b"2", t), Err(Rejection::Replayed));
        assert_eq!(c.first_time("b", b"2", t), Ok(()));
        // Capacity 2: "a" is forgotten to make room for "c".
        assert_eq!(c.first_time("c", b"3", t), Ok(()));
        assert_eq!(c.first_time("a", b"1", t + Duration::from_secs(1)), Ok(()));
        // ttl: everything older than 60s is forgotten.
        assert_eq!(c.first_time("b", b"2", t + Duration::from_secs(61)), Ok(()));
    }

    #[test]
    fn a_body_replayed_under_a_new_delivery_id_is_refused() {
        let mut c = ReplayCache::default();
        let t = Instant::now();
        assert_eq!(c.first_time("d-1", b"{\"ref\":\"x\"}", t), Ok(()));
        assert_eq!(
            c.first_time("d-2", b"{\"ref\":\"x\"}", t),
            Err(Rejection::ReplayedBody)
        );
        assert_eq!(c.first_time("d-3", b"{\"ref\":\"y\"}", t), Ok(()));
    }

    #[test]
    fn an_empty_secret_verifies_nothing() {
        let empty = Sensitive::new(Vec::new());
        let body = br#"{"ref":"refs/heads/main"}"#;
        let sig = github_signature(b"", body);
        let h = headers(&[
            ("x-hub-signature-256", sig.as_str()),
            ("x-github-delivery", "d-1"),
        ]);
        assert_eq!(verify(&h, body, &empty), Err(Rejection::NotConfigured));
        let h = headers(&[("x-gitlab-token", ""), ("x-gitlab-event-uuid", "u")]);
        assert_eq!(verify(&h, body, &empty), Err(Rejection::NotConfigured));
    }
}
