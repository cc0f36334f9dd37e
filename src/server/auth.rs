//! Who may change state through the API: suspend, resume, reconcile.
//!
//! Two checks, in this order, on every state-changing request:
//!
//! 1. **Not a cross-site request** ([`same_site`]): an `Origin` header,
//!    when present, must name this server (the `Host` header),
//!    `Sec-Fetch-Site: cross-site` is refused, and the request must carry
//!    `Content-Type: application/json` or the header `X-Tidegate-Request`.
//!    A browser sends neither with a "simple" (form) request, and asks
//!    first (a CORS preflight, which this server never grants) before it
//!    sends either from another origin.
//! 2. **An authenticated, authorised caller** ([`ApiAuth::authorize`]): a
//!    bearer token equal to the content of `--api-token-file` (compared as
//!    SHA-256 digests in constant time), or with `--api-auth=kubernetes` a
//!    token the Kubernetes API accepts (TokenReview) for a user RBAC allows
//!    the action (SubjectAccessReview, see [`Action::attributes`]).
//!
//! With neither configured every state-changing request is refused (403),
//! naming the flags.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::sensitive::Sensitive;

/// The API group of the SubjectAccessReviews (no such API is served: RBAC
/// rules may name any group).
pub const API_GROUP: &str = "tidegate.dev";

/// The header that marks a request as sent by a program, not a form.
pub const REQUEST_HEADER: &str = "x-tidegate-request";

/// A state-changing request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    Suspend(&'a str),
    Resume(&'a str),
    /// Promotion controls: `approve`, `hold`, `release`, `rollback`.
    Approve(&'a str),
    Hold(&'a str),
    Release(&'a str),
    Rollback(&'a str),
    /// `POST /api/v1/reconcile`: poll the remote now.
    Reconcile,
}

impl Action<'_> {
    /// What the SubjectAccessReview asks (verb `create`, group
    /// `tidegate.dev`): `(resource, subresource, name)`.
    ///
    /// | request | resource | subresource | name |
    /// |---|---|---|---|
    /// | `POST /api/v1/environments/{env}/suspend` | `environments` | `suspend` | env |
    /// | `POST /api/v1/environments/{env}/resume` | `environments` | `resume` | env |
    /// | `POST /api/v1/environments/{env}/approve` | `environments` | `approve` | env |
    /// | `POST /api/v1/environments/{env}/hold` | `environments` | `hold` | env |
    /// | `POST /api/v1/environments/{env}/release` | `environments` | `release` | env |
    /// | `POST /api/v1/environments/{env}/rollback` | `environments` | `rollback` | env |
    /// | `POST /api/v1/reconcile` | `reconcile` | | |
    ///
    /// so an RBAC rule reads `resources: ["environments/suspend"],
    /// resourceNames: ["dev"], verbs: ["create"]`, as a POST to a
    /// Kubernetes subresource (`pods/eviction`) does.
    pub fn attributes(&self) -> (&'static str, Option<&'static str>, Option<&str>) {
        match self {
            Action::Suspend(env) => ("environments", Some("suspend"), Some(env)),
            Action::Resume(env) => ("environments", Some("resume"), Some(env)),
            Action::Approve(env) => ("environments", Some("approve"), Some(env)),
            Action::Hold(env) => ("environments", Some("hold"), Some(env)),
            Action::Release(env) => ("environments", Some("release"), Some(env)),
            Action::Rollback(env) => ("environments", Some("rollback"), Some(env)),
            Action::Reconcile => ("reconcile", None, None),
        }
    }

    fn describe(&self) -> String {
        match self {
            Action::Suspend(env) => format!("suspend {env}"),
            Action::Resume(env) => format!("resume {env}"),
            Action::Approve(env) => format!("approve a commit for {env}"),
            Action::Hold(env) => format!("hold {env}"),
            Action::Release(env) => format!("release {env}"),
            Action::Rollback(env) => format!("roll back {env}"),
            Action::Reconcile => "reconcile".into(),
        }
    }
}

/// Who made a request that was allowed: `api-token`, or the Kubernetes
/// user name (`system:serviceaccount:ops:deployer`, `alice@example.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a state-changing request was refused.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// Neither `--api-token-file` nor `--api-auth=kubernetes` is set.
    #[error("state-changing requests are disabled: start tidegate with --api-token-file FILE or --api-auth=kubernetes")]
    NotConfigured,
    /// `Origin` names another site, or `Sec-Fetch-Site: cross-site`.
    #[error("cross-origin request refused (Origin {origin:?}, Host {host:?})")]
    CrossOrigin { origin: String, host: String },
    /// Neither `Content-Type: application/json` nor `X-Tidegate-Request`.
    #[error("send Content-Type: application/json or the header X-Tidegate-Request: 1")]
    NotJson,
    /// No `Authorization: Bearer` header.
    #[error("no bearer token: send Authorization: Bearer <token>")]
    NoToken,
    /// The token matches no configured authenticator.
    #[error("the bearer token is not valid")]
    BadToken,
    /// The token is valid but RBAC does not allow the action.
    #[error("{user} may not {action}: {reason}")]
    Forbidden {
        user: String,
        action: String,
        reason: String,
    },
    /// The TokenReview or SubjectAccessReview could not be made.
    #[error("cannot check the token with the Kubernetes API: {0}")]
    Review(#[source] kube::Error),
}

impl Denied {
    /// The HTTP status to answer with.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Denied::NotConfigured | Denied::CrossOrigin { .. } | Denied::Forbidden { .. } => {
                StatusCode::FORBIDDEN
            }
            Denied::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Denied::NoToken | Denied::BadToken => StatusCode::UNAUTHORIZED,
            Denied::Review(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Kubernetes authentication and authorisation of API callers.
#[derive(Clone)]
pub struct KubernetesAuth {
    pub client: kube::Client,
    /// Namespace of the SubjectAccessReview (the installation's own, so a
    /// RoleBinding there grants it); `None`: cluster-scoped.
    pub namespace: Option<String>,
}

/// The authenticators of the API; either or both may be set.
#[derive(Clone, Default)]
pub struct ApiAuth {
    /// `--api-token-file`: one shared bearer token.
    pub token: Option<Sensitive>,
    /// `--api-auth=kubernetes`.
    pub kubernetes: Option<KubernetesAuth>,
}

impl ApiAuth {
    /// Authenticates the bearer token of `headers` and authorises
    /// `action` for its owner.
    pub async fn authorize(
        &self,
        headers: &http::HeaderMap,
        action: Action<'_>,
    ) -> Result<Caller, Denied> {
        if self.token.is_none() && self.kubernetes.is_none() {
            return Err(Denied::NotConfigured);
        }
        let presented = bearer(headers).ok_or(Denied::NoToken)?;
        if let Some(token) = &self.token {
            let a = Sha256::digest(presented.as_bytes());
            let b = Sha256::digest(token.expose());
            if bool::from(a.ct_eq(&b)) {
                return Ok(Caller("api-token".into()));
            }
        }
        match &self.kubernetes {
            Some(k) => k.review(presented, action).await,
            None => Err(Denied::BadToken),
        }
    }
}

impl KubernetesAuth {
    async fn review(&self, token: &str, action: Action<'_>) -> Result<Caller, Denied> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let reviewed = reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(Denied::Review)?;
        let status = reviewed.status.unwrap_or_default();
        let user = match status.user {
            Some(user) if status.authenticated == Some(true) => user,
            _ => return Err(Denied::BadToken),
        };
        let username = user.username.clone().unwrap_or_default();
        let (resource, subresource, name) = action.attributes();
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                resource_attributes: Some(ResourceAttributes {
                    group: Some(API_GROUP.into()),
                    resource: Some(resource.into()),
                    subresource: subresource.map(Into::into),
                    name: name.map(Into::into),
                    namespace: self.namespace.clone(),
                    verb: Some("create".into()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let sars: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = sars
            .create(&PostParams::default(), &sar)
            .await
            .map_err(Denied::Review)?
            .status
            .unwrap_or_default();
        if answer.allowed {
            Ok(Caller(username))
        } else {
            let reason = answer
                .reason
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "RBAC allows no such action".into());
            Err(Denied::Forbidden {
                user: username,
                action: action.describe(),
                reason,
            })
        }
    }
}

fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Refuses what a browser may send from another site without asking
/// first: see the module documentation.
pub fn same_site(headers: &http::HeaderMap) -> Result<(), Denied> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let host = header("host").unwrap_or_default();
    let cross = |origin: &str| Denied::CrossOrigin {
        origin: origin.into(),
        host: host.into(),
    };
    if header("sec-fetch-site") == Some("cross-site") {
        return Err(cross(header("origin").unwrap_or_default()));
    }
    if let Some(origin) = headers.get(http::header::ORIGIN) {
        let origin = origin.to_str().map_err(|_| cross("(not text)"))?;
        if !same_origin(origin, host) {
            return Err(cross(origin));
        }
    }
    let json = header("content-type").is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    });
    if json || headers.contains_key(REQUEST_HEADER) {
        Ok(())
    } else {
        Err(Denied::NotJson)
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the server reached as
/// `host` (the Host header); default ports are ignored on both sides.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // `null` and anything else that names no server
    };
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let norm = |a: &str| {
        let a = a.to_ascii_lowercase();
        a.strip_suffix(default).map(str::to_owned).unwrap_or(a)
    };
    !host.is_empty() && norm(authority) == norm(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn form_posts_and_foreign_origins_are_refused() {
        let host = ("host", "127.0.0.1:8080");
        let json = ("content-type", "application/json; charset=utf-8");
        assert!(same_site(&headers(&[host, json])).is_ok());
        assert!(same_site(&headers(&[host, ("x-tidegate-request", "1")])).is_ok());
        let form = ("content-type", "application/x-www-form-urlencoded");
        assert!(matches!(
            same_site(&headers(&[host, form])),
            Err(Denied::NotJson)
        ));
        assert!(matches!(same_site(&headers(&[host])), Err(Denied::NotJson)));
        for origin in ["https://evil.example", "null", "http://127.0.0.1:8081"] {
            assert!(
                matches!(
                    same_site(&headers(&[host, json, ("origin", origin)])),
                    Err(Denied::CrossOrigin { .. })
                ),
                "{origin}"
            );
        }
        assert!(same_site(&headers(&[host, json, ("origin", "http://127.0.0.1:8080")])).is_ok());
        let site = ("sec-fetch-site", "cross-site");
        assert!(same_site(&headers(&[host, json, site])).is_err());
    }

    #[test]
    fn default_ports_are_the_same_origin() {
        assert!(same_origin(
            "https://tidegate.example.com",
            "tidegate.example.com:443"
        ));
        assert!(same_origin("http://LOCALHOST:80", "localhost"));
        assert!(!same_origin("https://localhost", "localhost:80"));
    }

    #[tokio::test]
    async fn the_token_must_match_and_nothing_configured_refuses_all() {
        let auth = ApiAuth {
            token: Some(Sensitive::new(b"s3cret".to_vec())),
            kubernetes: None,
        };
        let ok = headers(&[("authorization", "Bearer s3cret")]);
        assert_eq!(
            auth.authorize(&ok, Action::Reconcile).await.unwrap(),
            Caller("api-token".into())
        );
        for h in [
            headers(&[("authorization", "Bearer s3cre")]),
            headers(&[("authorization", "Bearer ")]),
            headers(&[("authorization", "Basic s3cret")]),
            headers(&[]),
        ] {
            let e = auth.authorize(&h, Action::Suspend("prod")).await;
            assert!(
                matches!(e, Err(Denied::NoToken | Denied::BadToken)),
                "{e:?}"
            );
        }
        let none = ApiAuth::default();
        let e = none.authorize(&ok, Action::Reconcile).await.unwrap_err();
        assert!(matches!(e, Denied::NotConfigured));
        assert!(e.to_string().contains("--api-token-file"), "{e}");
    }
}
