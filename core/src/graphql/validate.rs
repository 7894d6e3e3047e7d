//! The validation chain a resolver starts with.
//!
//! ```ignore
//! let user = Check::new(ctx)
//!     .permission("wallet", "deposit", Resource::any())
//!     .that("input.amount", amount > 0, "must be positive")
//!     .max_len("input.description", &description, 500)
//!     .finish()?;
//! ```
//!
//! Steps run in order and stop at the first failure, so a caller who is not
//! signed in learns that before anything about their input.

use std::borrow::Cow;

use access_engine::Resource;

use crate::context::{Principal, RequestContext};
use crate::error::{ApiError, ApiResult};

/// A chain of checks over one request; see the module docs.
#[must_use = "a check does nothing until `finish` is called"]
pub struct Check<'a> {
    ctx: &'a RequestContext,
    outcome: ApiResult<()>,
    needs_user: bool,
}

impl<'a> Check<'a> {
    /// Starts a chain for `ctx`.
    pub fn new(ctx: &'a RequestContext) -> Self {
        Self {
            ctx,
            outcome: Ok(()),
            needs_user: false,
        }
    }

    fn step(mut self, run: impl FnOnce(&RequestContext) -> ApiResult<()>) -> Self {
        if self.outcome.is_ok() {
            self.outcome = run(self.ctx);
        }
        self
    }

    /// The caller must be signed in.
    pub fn authenticated(mut self) -> Self {
        self.needs_user = true;
        self.step(|ctx| ctx.user().map(drop))
    }

    /// The caller must be allowed `resource:action` on `target` (implies
    /// [`Check::authenticated`]).
    pub fn permission(mut self, resource: &str, action: &str, target: Resource<'_>) -> Self {
        self.needs_user = true;
        self.step(|ctx| ctx.require(resource, action, target).map(drop))
    }

    /// `condition` must hold, else `MSCoreValidation` on `field`.
    pub fn that(self, field: &str, condition: bool, message: impl Into<Cow<'static, str>>) -> Self {
        self.step(|_| {
            if condition {
                Ok(())
            } else {
                Err(ApiError::validation(field, message))
            }
        })
    }

    /// `value` must contain something besides white space.
    pub fn required(self, field: &str, value: &str) -> Self {
        self.that(field, !value.trim().is_empty(), "is required")
    }

    /// `value` must be at most `max` characters.
    pub fn max_len(self, field: &str, value: &str, max: usize) -> Self {
        let ok = value.len() <= max || value.chars().count() <= max;
        self.that(field, ok, format!("must be at most {max} characters"))
    }

    /// `value` must be one of `allowed`.
    pub fn one_of(self, field: &str, value: &str, allowed: &[&str]) -> Self {
        self.that(
            field,
            allowed.contains(&value),
            format!("must be one of: {}", allowed.join(", ")),
        )
    }

    /// Runs a custom check.
    pub fn with(self, run: impl FnOnce(&RequestContext) -> ApiResult<()>) -> Self {
        self.step(run)
    }

    /// The first failure, or the caller when any step required one.
    pub fn finish(self) -> ApiResult<Option<&'a Principal>> {
        self.outcome?;
        Ok(if self.needs_user {
            self.ctx.principal()
        } else {
            None
        })
    }

    /// Like [`Check::finish`] for chains that required a signed-in caller.
    pub fn finish_user(self) -> ApiResult<&'a Principal> {
        self.outcome?;
        self.ctx.user()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::codes;
    use crate::context::RequestId;

    fn ctx(roles: Option<&[&str]>) -> RequestContext {
        RequestContext::new(
            RequestId::generate(),
            roles.map(|roles| Principal {
                user_id: "u1".to_owned(),
                tenant_id: "t1".to_owned(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                permissions: vec![],
                session_id: "s1".to_owned(),
            }),
            Arc::new(access_engine::default_policy()),
        )
    }

    #[test]
    fn authentication_is_checked_before_input() {
        let anon = ctx(None);
        let err = Check::new(&anon)
            .authenticated()
            .that("amount", false, "bad")
            .finish()
            .unwrap_err();
        assert_eq!(err.code(), codes::UNAUTHENTICATED);
    }

    #[test]
    fn first_failing_step_wins_and_names_its_field() {
        let user = ctx(Some(&["user"]));
        let err = Check::new(&user)
            .authenticated()
            .required("input.email", "  ")
            .max_len("input.name", "abcdef", 3)
            .finish()
            .unwrap_err();
        assert_eq!(err.code(), codes::VALIDATION);
        assert_eq!(err.extensions()["field"], "input.email");
    }

    #[test]
    fn permissions_go_through_the_access_engine() {
        let user = ctx(Some(&["user"]));
        let err = Check::new(&user)
            .permission("wallet", "deposit", Resource::any())
            .finish()
            .unwrap_err();
        assert_eq!(err.code(), codes::FORBIDDEN);
        let admin = ctx(Some(&["admin"]));
        let principal = Check::new(&admin)
            .permission("wallet", "deposit", Resource::any())
            .one_of("input.kind", "a", &["a", "b"])
            .finish_user()
            .unwrap();
        assert_eq!(principal.user_id, "u1");
    }

    #[test]
    fn max_len_counts_characters_not_bytes() {
        let user = ctx(Some(&["user"]));
        assert!(Check::new(&user).max_len("f", "ééé", 3).finish().is_ok());
        assert!(Check::new(&user).max_len("f", "éééé", 3).finish().is_err());
    }
}
