//! `access-engine`: URN-based access control for the payment platform, as
//! pure logic — no I/O, no async, no global state.
//!
//! A permission is a URN `resource:action:target` ([`Urn`]), where each
//! segment may be `*` and the target may also be `own` (the subject owns the
//! resource), `tenant` (the resource is in the subject's tenant) or a literal
//! id. A [`Policy`] defines roles (allow and deny lists, inheritance, and a
//! `global` flag for platform operators who may cross tenants) and direct
//! grants per subject id. [`PolicyBuilder::build`] validates it once — bad
//! URNs, unknown or duplicate roles, inheritance cycles — flattens
//! inheritance and indexes every rule by resource and action, so that
//! [`AccessEngine::check`] costs a handful of hash lookups whatever the
//! policy size. Allow rules only reach resources in the subject's tenant
//! unless their role is global; deny rules apply whatever the tenant and
//! override any allow; anything not allowed is denied; and each [`Decision`]
//! names the rule that made it, for audit.
//!
//! Layout: URN parsing and matching live in `urn.rs`; policy definitions,
//! flattening and cycle detection in `policy.rs`; the index, checks and
//! listings in `engine.rs`. The default roles ship as data in
//! `default_policy.json`, see [`default_policy`].
//!
//! ```
//! use access_engine::{default_policy, Request, Resource, Subject};
//!
//! let engine = default_policy();
//! let roles = vec!["user".to_string()];
//! let alice = Subject { id: "alice", tenant: "acme", roles: &roles };
//! let request = Request {
//!     resource: "wallet",
//!     action: "read",
//!     target: Resource { id: Some("w-1"), owner: Some("alice"), tenant: Some("acme") },
//! };
//! let decision = engine.check(&alice, &request);
//! assert!(decision.allowed);
//! assert_eq!(decision.decided_by.unwrap().rule.to_string(), "wallet:read:own");
//! ```

#![warn(missing_docs)]

mod engine;
mod policy;
mod urn;

pub use engine::{
    AccessEngine, DecidedBy, Decision, Permission, Request, Resource, RuleSource, Subject,
};
pub use policy::{default_policy, Effect, GrantDef, Policy, PolicyBuilder, PolicyError, RoleDef};
pub use urn::{Segment, Target, Urn, UrnError, MAX_SEGMENT_LEN, WILDCARD};
