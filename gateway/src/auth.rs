//! Who is calling: the bearer token is verified once here (a bad or
//! expired one is refused, never treated as anonymous) and the same
//! `Authorization` header is forwarded to every subgraph, which verifies it
//! again — a client cannot forge an identity the subgraphs would accept.
//! The verifier also refuses tokens of revoked sessions (logout, password
//! change, refresh-token reuse, account disabled) when the gateway follows
//! the auth service's revocations (`GatewayDeps::follow_revocations`), so
//! such a token is refused here, before any operation is planned.
//! Each caller also has a rate budget: per user when signed in, per IP
//! otherwise, shared through Redis when one is configured.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{header, HeaderMap};
use service_core::auth::TokenVerifier;
use service_core::context::Principal;
use service_core::error::{codes, ApiError};
use service_core::resilience::RateLimiter;

/// The verified caller of one request.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) principal: Option<Principal>,
    /// The `Authorization` header to forward, only when it verified.
    pub(crate) authorization: Option<String>,
}

impl Caller {
    /// The verified bearer token, when there is one.
    pub(crate) fn token(&self) -> Option<&str> {
        self.authorization.as_deref().and_then(bearer)
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(header: &str) -> Option<&str> {
    header
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Verifies the request's bearer token, if any.
pub(crate) fn authenticate(
    verifier: Option<&TokenVerifier>,
    headers: &HeaderMap,
) -> Result<Caller, Box<ApiError>> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Caller {
            principal: None,
            authorization: None,
        });
    };
    let invalid = || ApiError::new(codes::AUTH_INVALID_TOKEN, "Invalid access token");
    let raw = value.to_str().map_err(|_| Box::new(invalid()))?;
    let token = bearer(raw).ok_or_else(|| Box::new(invalid()))?;
    let verifier = verifier.ok_or_else(|| Box::new(invalid()))?;
    let claims = verifier
        .verify(token)
        .map_err(|err| Box::new(ApiError::from(err)))?;
    Ok(Caller {
        principal: Some(Principal::from(claims)),
        authorization: Some(raw.to_owned()),
    })
}

/// Takes one request from the caller's budget.
pub(crate) async fn rate_limit(
    limiter: &Arc<RateLimiter>,
    caller: &Caller,
    ip: Option<IpAddr>,
) -> Result<(), Box<ApiError>> {
    let key = match (&caller.principal, ip) {
        (Some(principal), _) => format!("user:{}", principal.user_id),
        (None, Some(ip)) => format!("ip:{ip}"),
        (None, None) => "ip:unknown".to_owned(),
    };
    limiter
        .check(&key)
        .await
        .map_err(|retry| Box::new(ApiError::rate_limited(retry.as_secs_ceil().max(1))))
}
