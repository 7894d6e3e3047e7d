//! Who is calling, and what they may do.
//!
//! Every request carries a [`RequestContext`]: its request id, the verified
//! [`Principal`] (or none), and the access engine that answers permission
//! questions. Resolvers ask it instead of inspecting roles by hand, so every
//! decision goes through one set of rules and can name the URN it checked.

use std::fmt;
use std::sync::Arc;

use access_engine::{AccessEngine, Decision, Request, Resource, Subject};

use crate::auth::Claims;
use crate::error::{ApiError, ApiResult};

/// The correlation id of one request, echoed in `x-request-id`, every log
/// line and every downstream call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// The header that carries it.
    pub const HEADER: &'static str = "x-request-id";

    /// A fresh, unique id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string().into())
    }

    /// Accepts a caller's id only if it is short, printable and free of
    /// separators, so it is safe to log and to forward as a header.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= 128
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        ok.then(|| Self(raw.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A signed-in caller, taken from a verified access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The user's id (`sub`).
    pub user_id: String,
    /// The user's tenant (`tid`).
    pub tenant_id: String,
    /// Roles as issued; inherited roles are resolved by the access engine.
    pub roles: Vec<String>,
    /// The flattened permissions the token was issued with (informational:
    /// checks go through the access engine's current rules).
    pub permissions: Vec<String>,
    /// The session the token belongs to (`sid`).
    pub session_id: String,
}

impl From<Claims> for Principal {
    fn from(claims: Claims) -> Self {
        Self {
            user_id: claims.sub,
            tenant_id: claims.tid,
            roles: claims.roles,
            permissions: claims.permissions,
            session_id: claims.sid,
        }
    }
}

impl Principal {
    fn subject(&self) -> Subject<'_> {
        Subject {
            id: &self.user_id,
            tenant: &self.tenant_id,
            roles: &self.roles,
        }
    }
}

/// The caller of one request and the rules that apply to it.
#[derive(Clone)]
pub struct RequestContext {
    request_id: RequestId,
    principal: Option<Principal>,
    access: Arc<AccessEngine>,
}

impl fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestContext")
            .field("request_id", &self.request_id)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl RequestContext {
    /// A context for a caller who may or may not be signed in.
    pub fn new(
        request_id: RequestId,
        principal: Option<Principal>,
        access: Arc<AccessEngine>,
    ) -> Self {
        Self {
            request_id,
            principal,
            access,
        }
    }

    /// This request's correlation id.
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }

    /// The signed-in caller, if any.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    /// Whether a verified token came with the request.
    pub fn is_authenticated(&self) -> bool {
        self.principal.is_some()
    }

    /// The signed-in caller, or `MSCoreUnauthenticated`.
    pub fn user(&self) -> ApiResult<&Principal> {
        self.principal
            .as_ref()
            .ok_or_else(ApiError::unauthenticated)
    }

    /// Whether the caller holds `role`, directly or through inheritance.
    pub fn has_role(&self, role: &str) -> bool {
        self.principal.as_ref().is_some_and(|p| {
            self.access
                .effective_role_names(&p.roles)
                .iter()
                .any(|r| r == role)
        })
    }

    /// Whether `owner_id` is the caller.
    pub fn is_owner(&self, owner_id: &str) -> bool {
        self.principal
            .as_ref()
            .is_some_and(|p| p.user_id == owner_id)
    }

    /// Whether `tenant_id` is the caller's tenant.
    pub fn same_tenant(&self, tenant_id: &str) -> bool {
        self.principal
            .as_ref()
            .is_some_and(|p| p.tenant_id == tenant_id)
    }

    /// The access engine's answer for `resource:action` on `target`;
    /// anonymous callers are always denied.
    pub fn decide(&self, resource: &str, action: &str, target: Resource<'_>) -> Decision {
        match &self.principal {
            Some(p) => self.access.check(
                &p.subject(),
                &Request {
                    resource,
                    action,
                    target,
                },
            ),
            None => Decision {
                allowed: false,
                decided_by: None,
            },
        }
    }

    /// Whether the caller may do `resource:action` on `target`.
    pub fn can(&self, resource: &str, action: &str, target: Resource<'_>) -> bool {
        self.decide(resource, action, target).allowed
    }

    /// The caller, if allowed `resource:action` on `target`; otherwise
    /// `MSCoreUnauthenticated` (nobody signed in) or `MSCoreForbidden` naming
    /// the URN checked.
    pub fn require(
        &self,
        resource: &str,
        action: &str,
        target: Resource<'_>,
    ) -> ApiResult<&Principal> {
        let principal = self.user()?;
        let checked = target.id.unwrap_or("*");
        let decision = self.decide(resource, action, target);
        if decision.allowed {
            Ok(principal)
        } else {
            tracing::info!(
                user_id = %principal.user_id,
                permission = %format_args!("{resource}:{action}:{checked}"),
                decided_by = ?decision.decided_by,
                "access denied"
            );
            Err(ApiError::forbidden(format_args!(
                "{resource}:{action}:{checked}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes;

    fn ctx(user: &str, roles: &[&str]) -> RequestContext {
        RequestContext::new(
            RequestId::generate(),
            Some(Principal {
                user_id: user.to_owned(),
                tenant_id: "t1".to_owned(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                permissions: vec![],
                session_id: "s1".to_owned(),
            }),
            Arc::new(access_engine::default_policy()),
        )
    }

    fn owned_by<'a>(owner: &'a str, tenant: &'a str) -> Resource<'a> {
        Resource {
            id: Some("w1"),
            owner: Some(owner),
            tenant: Some(tenant),
        }
    }

    #[test]
    fn request_ids_are_validated() {
        assert!(RequestId::parse("abc-123_x.y:z").is_some());
        assert!(RequestId::parse("").is_none());
        assert!(RequestId::parse("bad id").is_none());
        assert!(RequestId::parse("new\nline").is_none());
        assert!(RequestId::parse(&"a".repeat(129)).is_none());
        assert_ne!(RequestId::generate(), RequestId::generate());
    }

    #[test]
    fn owners_may_read_their_own_wallet_only() {
        let alice = ctx("alice", &["user"]);
        assert!(alice.can("wallet", "read", owned_by("alice", "t1")));
        assert!(!alice.can("wallet", "read", owned_by("bob", "t1")));
        let err = alice
            .require("wallet", "read", owned_by("bob", "t1"))
            .unwrap_err();
        assert_eq!(err.code(), codes::FORBIDDEN);
        assert_eq!(err.extensions()["permission"], "wallet:read:w1");
    }

    #[test]
    fn support_inherits_user_and_reads_everyone() {
        let support = ctx("sam", &["support"]);
        assert!(support.has_role("user"));
        assert!(support.can("wallet", "read", owned_by("bob", "t1")));
        assert!(!support.can("wallet", "read", owned_by("bob", "t2")));
        assert!(!support.can("wallet", "deposit", Resource::any()));
    }

    #[test]
    fn anonymous_callers_are_unauthenticated() {
        let anon = RequestContext::new(
            RequestId::generate(),
            None,
            Arc::new(access_engine::default_policy()),
        );
        assert!(!anon.is_authenticated());
        assert!(!anon.has_role("user"));
        assert!(!anon.can("wallet", "read", Resource::any()));
        let err = anon.require("wallet", "read", Resource::any()).unwrap_err();
        assert_eq!(err.code(), codes::UNAUTHENTICATED);
    }

    #[test]
    fn ownership_and_tenant_helpers() {
        let alice = ctx("alice", &["user"]);
        assert!(alice.is_owner("alice"));
        assert!(!alice.is_owner("bob"));
        assert!(alice.same_tenant("t1"));
        assert!(!alice.same_tenant("t2"));
    }
}
