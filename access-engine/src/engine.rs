//! The compiled engine: rule index, access checks and permission listing.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::policy::{
    compile, CompiledPolicy, Effect, Origin, Policy, PolicyBuilder, PolicyError, Rule,
};
use crate::urn::{Target, Urn, UrnError, WILDCARD};

/// Who is asking: the authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The caller's id; `own` targets and grants are matched against it.
    pub id: &'a str,
    /// The caller's tenant; rules from non-global roles only reach resources
    /// in this tenant.
    pub tenant: &'a str,
    /// Role names held by the caller. Names the policy does not define grant
    /// nothing.
    pub roles: &'a [String],
}

/// What is known about the instance being accessed. Unknown facts are `None`
/// and never satisfy a target that needs them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resource<'a> {
    /// The instance id, matched by literal-id targets.
    pub id: Option<&'a str>,
    /// The owner's subject id, matched by `own` targets.
    pub owner: Option<&'a str>,
    /// The tenant the instance belongs to, matched by `tenant` targets and
    /// used for tenant isolation.
    pub tenant: Option<&'a str>,
}

impl<'a> Resource<'a> {
    /// Nothing known: a collection-level check. Only `*` targets match it.
    pub fn any() -> Resource<'a> {
        Resource::default()
    }
}

/// What the subject wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Resource kind, compared with the URN's first segment (`wallet`).
    pub resource: &'a str,
    /// Action, compared with the URN's second segment (`read`).
    pub action: &'a str,
    /// The instance, checked against the URN's target.
    pub target: Resource<'a>,
}

/// Where a rule was defined.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleSource {
    /// The role that defines the rule. With inheritance this is the ancestor
    /// that wrote it, not necessarily the role the subject holds.
    Role(String),
    /// A direct grant to the subject.
    Grant,
}

/// The rule that decided a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecidedBy {
    /// The rule as written in the policy.
    pub rule: Urn,
    /// Whether the rule allows or denies.
    pub effect: Effect,
    /// Where the rule was defined.
    pub source: RuleSource,
}

/// The outcome of a check, with what decided it for audit logs.
///
/// `allowed` is true exactly when `decided_by` holds an allow rule. A deny
/// rule is reported whenever one matched, even if allow rules matched too;
/// `decided_by: None` means no rule matched and access is denied by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The deciding rule, or `None` for the default deny.
    pub decided_by: Option<DecidedBy>,
}

impl Decision {
    fn by(rule: &Rule) -> Decision {
        Decision {
            allowed: rule.effect == Effect::Allow,
            decided_by: Some(DecidedBy {
                rule: rule.urn.clone(),
                effect: rule.effect,
                source: rule.origin.source(),
            }),
        }
    }

    fn default_deny() -> Decision {
        Decision {
            allowed: false,
            decided_by: None,
        }
    }
}

/// One effective rule of a subject, as listed by
/// [`AccessEngine::list_permissions`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Permission {
    /// The rule as written in the policy.
    pub rule: Urn,
    /// Whether it allows or denies.
    pub effect: Effect,
    /// Where it was defined.
    pub source: RuleSource,
}

impl Origin {
    fn source(&self) -> RuleSource {
        match self {
            Origin::Role { name, .. } => RuleSource::Role(name.to_string()),
            Origin::Grant => RuleSource::Grant,
        }
    }
}

impl Rule {
    /// Whether this rule matches `target` for `subject`; resource and action
    /// were already matched by the index.
    fn applies(&self, subject: &Subject<'_>, target: &Resource<'_>) -> bool {
        // Isolation only narrows allows: a deny that reaches across tenants
        // can only make the answer stricter, which is the safe direction.
        let global = matches!(self.origin, Origin::Role { global: true, .. });
        if self.effect == Effect::Allow && !global {
            if let Some(tenant) = target.tenant {
                if tenant != subject.tenant {
                    return false;
                }
            }
        }
        match self.urn.target() {
            Target::Any => true,
            Target::Own => target.owner == Some(subject.id),
            Target::Tenant => target.tenant == Some(subject.tenant),
            Target::Id(id) => target.id == Some(id),
        }
    }
}

/// Rules sharing one (resource, action) pair.
#[derive(Debug, Default)]
struct Bucket {
    /// Literal-id rules by id, so a check costs one lookup however many
    /// instances the policy names.
    by_id: HashMap<String, Vec<Rule>>,
    /// `*`, `own` and `tenant` rules: at most a few per bucket.
    generic: Vec<Rule>,
}

impl Bucket {
    /// Returns the first matching deny; records the first matching allow.
    fn find<'e>(
        &'e self,
        subject: &Subject<'_>,
        target: &Resource<'_>,
        allow: &mut Option<&'e Rule>,
    ) -> Option<&'e Rule> {
        let by_id = match target.id {
            Some(id) if !self.by_id.is_empty() => self.by_id.get(id).map(Vec::as_slice),
            _ => None,
        };
        for rule in by_id.unwrap_or_default().iter().chain(&self.generic) {
            if rule.applies(subject, target) {
                match rule.effect {
                    Effect::Deny => return Some(rule),
                    Effect::Allow => {
                        allow.get_or_insert(rule);
                    }
                }
            }
        }
        None
    }
}

/// The rules of one flattened role or of one grant subject, indexed by
/// resource then action. Nested maps let a check look up borrowed `&str`
/// keys without building a key per check.
#[derive(Debug, Default)]
struct RuleSet {
    /// All rules in definition order, for listing.
    rules: Vec<Rule>,
    index: HashMap<String, HashMap<String, Bucket>>,
}

impl RuleSet {
    fn new(rules: Vec<Rule>) -> RuleSet {
        let mut index: HashMap<String, HashMap<String, Bucket>> = HashMap::new();
        for rule in &rules {
            let bucket = index
                .entry(rule.urn.resource().to_owned())
                .or_default()
                .entry(rule.urn.action().to_owned())
                .or_default();
            match rule.urn.target() {
                Target::Id(id) => bucket
                    .by_id
                    .entry(id.to_owned())
                    .or_default()
                    .push(rule.clone()),
                Target::Any | Target::Own | Target::Tenant => bucket.generic.push(rule.clone()),
            }
        }
        RuleSet { rules, index }
    }

    /// Looks in the (res, act), (res, *), (*, act) and (*, *) buckets;
    /// returns the first matching deny and records the first matching allow.
    fn find<'e>(
        &'e self,
        subject: &Subject<'_>,
        request: &Request<'_>,
        allow: &mut Option<&'e Rule>,
    ) -> Option<&'e Rule> {
        for resource in with_wildcard(request.resource) {
            let Some(actions) = self.index.get(resource) else {
                continue;
            };
            for action in with_wildcard(request.action) {
                if let Some(bucket) = actions.get(action) {
                    if let Some(deny) = bucket.find(subject, &request.target, allow) {
                        return Some(deny);
                    }
                }
            }
        }
        None
    }
}

/// The value itself, then `*` unless the value already is `*`.
fn with_wildcard(value: &str) -> impl Iterator<Item = &str> {
    std::iter::once(value).chain((value != WILDCARD).then_some(WILDCARD))
}

#[derive(Debug)]
struct IndexedRole {
    /// The role and all it inherits, sorted.
    closure: Vec<String>,
    rules: RuleSet,
}

#[derive(Debug)]
struct Inner {
    /// Definition order, for [`AccessEngine::roles`].
    role_names: Vec<String>,
    roles: HashMap<String, IndexedRole>,
    grants: HashMap<String, RuleSet>,
}

/// A compiled, immutable policy answering access checks.
///
/// Callers may rely on: checks never fail and never allocate beyond the
/// returned [`Decision`]; their cost depends on the subject's role count, not
/// on the policy size; deny overrides allow; anything no rule allows is
/// denied. The engine is `Send + Sync` and cloning it only bumps a reference
/// count, so one instance can be shared by every request handler.
#[derive(Clone)]
pub struct AccessEngine {
    inner: Arc<Inner>,
}

impl AccessEngine {
    /// Starts an empty policy.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::new()
    }

    /// Builds an engine from a policy value, with the same validation as
    /// [`PolicyBuilder::build`].
    pub fn from_policy(policy: Policy) -> Result<AccessEngine, PolicyError> {
        Ok(AccessEngine::from_compiled(compile(policy)?))
    }

    /// Builds an engine from a JSON [`Policy`]
    /// (`{"roles": [...], "grants": [...]}`).
    pub fn from_json(json: &str) -> Result<AccessEngine, PolicyError> {
        let policy: Policy =
            serde_json::from_str(json).map_err(|e| PolicyError::Json(e.to_string()))?;
        AccessEngine::from_policy(policy)
    }

    fn from_compiled(policy: CompiledPolicy) -> AccessEngine {
        let role_names = policy.roles.iter().map(|r| r.name.clone()).collect();
        let roles = policy
            .roles
            .into_iter()
            .map(|role| {
                let indexed = IndexedRole {
                    closure: role.closure,
                    rules: RuleSet::new(role.rules),
                };
                (role.name, indexed)
            })
            .collect();
        let grants = policy
            .grants
            .into_iter()
            .map(|(subject, rules)| (subject, RuleSet::new(rules)))
            .collect();
        AccessEngine {
            inner: Arc::new(Inner {
                role_names,
                roles,
                grants,
            }),
        }
    }

    /// Decides `request` for `subject`.
    ///
    /// Rules considered: those of every role the subject holds (with what it
    /// inherits) and the grants to `subject.id`. Any matching deny decides;
    /// otherwise the first matching allow (held roles in the subject's order,
    /// a role's own rules before inherited ones, grants last); otherwise the
    /// default deny with `decided_by: None`.
    pub fn check(&self, subject: &Subject<'_>, request: &Request<'_>) -> Decision {
        let mut allow = None;
        let roles = subject
            .roles
            .iter()
            .filter_map(|name| self.inner.roles.get(name.as_str()))
            .map(|role| &role.rules);
        for rules in roles.chain(self.inner.grants.get(subject.id)) {
            if let Some(deny) = rules.find(subject, request, &mut allow) {
                return Decision::by(deny);
            }
        }
        allow.map_or_else(Decision::default_deny, Decision::by)
    }

    /// Checks a permission string such as `wallet:read:*` for `subject`.
    ///
    /// The target is read as: `*` a collection-level check
    /// ([`Resource::any`]); `own` a resource owned by the subject in its
    /// tenant; `tenant` a resource in the subject's tenant with unknown owner;
    /// anything else the resource with that id, owner and tenant unknown.
    /// Fails only if `permission` is not a valid URN.
    pub fn can(&self, subject: &Subject<'_>, permission: &str) -> Result<Decision, UrnError> {
        let urn = Urn::parse(permission)?;
        let target = match urn.target() {
            Target::Any => Resource::any(),
            Target::Own => Resource {
                id: None,
                owner: Some(subject.id),
                tenant: Some(subject.tenant),
            },
            Target::Tenant => Resource {
                id: None,
                owner: None,
                tenant: Some(subject.tenant),
            },
            Target::Id(id) => Resource {
                id: Some(id),
                owner: None,
                tenant: None,
            },
        };
        let request = Request {
            resource: urn.resource(),
            action: urn.action(),
            target,
        };
        Ok(self.check(subject, &request))
    }

    /// Every effective rule of `subject` (from its known roles, what they
    /// inherit, and its grants), each once, sorted by rule, then effect, then
    /// source.
    pub fn list_permissions(&self, subject: &Subject<'_>) -> Vec<Permission> {
        let roles = subject
            .roles
            .iter()
            .filter_map(|name| self.inner.roles.get(name.as_str()))
            .map(|role| &role.rules);
        let mut permissions: Vec<Permission> = roles
            .chain(self.inner.grants.get(subject.id))
            .flat_map(|set| &set.rules)
            .map(|rule| Permission {
                rule: rule.urn.clone(),
                effect: rule.effect,
                source: rule.origin.source(),
            })
            .collect();
        permissions.sort();
        permissions.dedup();
        permissions
    }

    /// Names of the defined roles, in definition order.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.inner.role_names.iter().map(String::as_str)
    }

    /// Whether the policy defines a role called `name`.
    pub fn has_role_defined(&self, name: &str) -> bool {
        self.inner.roles.contains_key(name)
    }

    /// `roles` plus every role they inherit, sorted and unique. Names the
    /// policy does not define are left out, as they grant nothing.
    pub fn effective_role_names(&self, roles: &[String]) -> Vec<String> {
        let mut names: Vec<String> = roles
            .iter()
            .filter_map(|name| self.inner.roles.get(name.as_str()))
            .flat_map(|role| role.closure.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

// A summary rather than the derived dump: a policy can hold 100 000 rules.
impl fmt::Debug for AccessEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessEngine")
            .field("roles", &self.inner.role_names)
            .field("grant_subjects", &self.inner.grants.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RoleDef;

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn engine() -> AccessEngine {
        AccessEngine::builder()
            .role(RoleDef {
                name: "reader".into(),
                allow: roles(&["wallet:read:own", "wallet:read:w-1", "*:list:*"]),
                deny: roles(&["wallet:read:w-2"]),
                ..RoleDef::default()
            })
            .grant("u1", Effect::Allow, "wallet:read:w-2")
            .build()
            .unwrap()
    }

    #[test]
    fn engine_is_shareable() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<AccessEngine>();
    }

    #[test]
    fn buckets_separate_literal_ids_from_generic_targets() {
        let engine = engine();
        let reader = &engine.inner.roles["reader"].rules;
        let bucket = &reader.index["wallet"]["read"];
        assert_eq!(bucket.by_id.len(), 2);
        assert_eq!(bucket.generic.len(), 1);
        assert!(reader.index["*"].contains_key("list"));
    }

    #[test]
    fn check_uses_wildcard_buckets_and_literal_ids() {
        let engine = engine();
        let held = roles(&["reader"]);
        let subject = Subject {
            id: "u1",
            tenant: "t1",
            roles: &held,
        };
        let request = |resource, action, id| Request {
            resource,
            action,
            target: Resource {
                id,
                owner: None,
                tenant: Some("t1"),
            },
        };
        assert!(
            engine
                .check(&subject, &request("wallet", "read", Some("w-1")))
                .allowed
        );
        assert!(
            !engine
                .check(&subject, &request("wallet", "read", Some("w-3")))
                .allowed
        );
        assert!(
            engine
                .check(&subject, &request("bonus", "list", None))
                .allowed
        );
        // The role's deny beats the grant's allow.
        let decision = engine.check(&subject, &request("wallet", "read", Some("w-2")));
        assert!(!decision.allowed);
        assert_eq!(decision.decided_by.unwrap().effect, Effect::Deny);
    }

    #[test]
    fn decision_serialises_for_audit() {
        let decision = Decision {
            allowed: true,
            decided_by: Some(DecidedBy {
                rule: Urn::parse("wallet:read:own").unwrap(),
                effect: Effect::Allow,
                source: RuleSource::Role("user".into()),
            }),
        };
        let json = serde_json::to_string(&decision).unwrap();
        assert_eq!(
            json,
            r#"{"allowed":true,"decided_by":{"rule":"wallet:read:own","effect":"allow","source":{"role":"user"}}}"#
        );
        assert_eq!(serde_json::from_str::<Decision>(&json).unwrap(), decision);
        let default = serde_json::to_string(&Decision::default_deny()).unwrap();
        assert_eq!(default, r#"{"allowed":false,"decided_by":null}"#);
    }
}
