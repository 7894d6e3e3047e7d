//! Policy definitions and their compilation: roles, grants, inheritance
//! flattening and cycle detection.
//!
//! Everything that can be wrong with a policy is found here, at build time,
//! so that a built [`AccessEngine`] never fails a check for policy reasons.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::engine::AccessEngine;
use crate::urn::{Urn, UrnError};

/// The policy shipped with the crate, see [`default_policy`].
const DEFAULT_POLICY_JSON: &str = include_str!("../default_policy.json");

/// Whether a rule grants or forbids what it matches.
///
/// Serialised as `"allow"` / `"deny"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Grants access unless a matching deny rule applies.
    Allow,
    /// Forbids access, whatever allow rules say.
    Deny,
}

/// A role as written in a policy.
///
/// Unknown JSON fields are rejected so that a misspelt key (`"denny"`) is an
/// error instead of a silently missing rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleDef {
    /// Unique role name, as carried in a subject's roles.
    pub name: String,
    /// URNs this role allows.
    #[serde(default)]
    pub allow: Vec<String>,
    /// URNs this role denies; they override any allow.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Roles whose allow and deny rules this role also carries.
    #[serde(default)]
    pub inherits: Vec<String>,
    /// A platform operator role: its own allow rules are not restricted to the
    /// subject's tenant. Rules it inherits keep the scope of the role that
    /// defines them.
    #[serde(default)]
    pub global: bool,
}

/// A direct rule for one subject id, outside any role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantDef {
    /// The subject id ([`Subject::id`](crate::Subject::id)) the rule applies to.
    pub subject: String,
    /// Allow or deny.
    pub effect: Effect,
    /// The rule's URN.
    pub urn: String,
}

/// A whole policy, as loaded from JSON by [`AccessEngine::from_json`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Role definitions; names must be unique.
    #[serde(default)]
    pub roles: Vec<RoleDef>,
    /// Per-subject grants.
    #[serde(default)]
    pub grants: Vec<GrantDef>,
}

/// Why a policy could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A rule's URN does not parse.
    #[error("invalid URN `{urn}` in {defined_in}: {source}")]
    InvalidUrn {
        /// Where the rule was written: ``role `name` `` or ``grant to `subject` ``.
        defined_in: String,
        /// The rule as written.
        urn: String,
        /// What is wrong with it.
        source: UrnError,
    },
    /// A role inherits a role that is not defined.
    #[error("role `{inherited_by}` inherits unknown role `{role}`")]
    UnknownRole {
        /// The missing role.
        role: String,
        /// The role that names it in `inherits`.
        inherited_by: String,
    },
    /// Roles inherit each other in a loop.
    #[error("role inheritance cycle: {path}")]
    RoleCycle {
        /// The loop, starting and ending with the same role: `a -> b -> a`.
        path: String,
    },
    /// Two roles have the same name.
    #[error("role `{0}` is defined more than once")]
    DuplicateRole(String),
    /// The policy JSON could not be read.
    #[error("invalid policy JSON: {0}")]
    Json(String),
}

/// Collects roles and grants and compiles them into an [`AccessEngine`].
///
/// Nothing is validated until [`build`](PolicyBuilder::build), which reports
/// the first problem found.
#[derive(Debug, Clone, Default)]
pub struct PolicyBuilder {
    policy: Policy,
}

impl PolicyBuilder {
    /// An empty builder; an engine built from it denies everything.
    pub fn new() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    /// Adds a role definition.
    pub fn role(mut self, role: RoleDef) -> PolicyBuilder {
        self.policy.roles.push(role);
        self
    }

    /// Adds a rule for the single subject `subject_id`.
    pub fn grant(mut self, subject_id: &str, effect: Effect, urn: &str) -> PolicyBuilder {
        self.policy.grants.push(GrantDef {
            subject: subject_id.to_owned(),
            effect,
            urn: urn.to_owned(),
        });
        self
    }

    /// Validates the policy, flattens role inheritance and builds the index.
    ///
    /// Fails on a malformed URN, a duplicate role name, an inherited role that
    /// is not defined, or an inheritance cycle.
    pub fn build(self) -> Result<AccessEngine, PolicyError> {
        AccessEngine::from_policy(self.policy)
    }
}

/// Builds the policy shipped in `default_policy.json`: roles `user`,
/// `support` (inherits `user`, reads across its tenant), `admin` (everything
/// in its tenant) and `platform-admin` (everything, across tenants).
///
/// # Panics
///
/// Only if the shipped JSON is invalid, which the crate's tests rule out.
pub fn default_policy() -> AccessEngine {
    match AccessEngine::from_json(DEFAULT_POLICY_JSON) {
        Ok(engine) => engine,
        Err(error) => panic!("the shipped default_policy.json is invalid: {error}"),
    }
}

/// Where a compiled rule came from; decides its tenant scope and how it is
/// reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Defined by this role (not necessarily the role the subject holds).
    Role {
        name: Arc<str>,
        global: bool,
    },
    Grant,
}

/// A parsed rule with its origin, as the engine indexes it.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) urn: Urn,
    pub(crate) effect: Effect,
    pub(crate) origin: Origin,
}

/// A role after flattening: its own rules followed by every inherited one.
#[derive(Debug)]
pub(crate) struct CompiledRole {
    pub(crate) name: String,
    /// This role and every role it inherits, sorted.
    pub(crate) closure: Vec<String>,
    pub(crate) rules: Vec<Rule>,
}

/// The validated policy, ready to be indexed.
#[derive(Debug)]
pub(crate) struct CompiledPolicy {
    /// In definition order.
    pub(crate) roles: Vec<CompiledRole>,
    /// Rules per subject id, in the order they were given.
    pub(crate) grants: Vec<(String, Vec<Rule>)>,
}

/// Validates `policy` and flattens role inheritance.
pub(crate) fn compile(policy: Policy) -> Result<CompiledPolicy, PolicyError> {
    let defs = policy.roles;
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(defs.len());
    for (i, def) in defs.iter().enumerate() {
        if index.insert(def.name.as_str(), i).is_some() {
            return Err(PolicyError::DuplicateRole(def.name.clone()));
        }
    }

    let own_rules = defs
        .iter()
        .map(|def| {
            let origin = Origin::Role {
                name: Arc::from(def.name.as_str()),
                global: def.global,
            };
            let defined_in = || format!("role `{}`", def.name);
            let allow = def.allow.iter().map(|u| (Effect::Allow, u));
            let deny = def.deny.iter().map(|u| (Effect::Deny, u));
            parse_rules(allow.chain(deny), &origin, defined_in)
        })
        .collect::<Result<Vec<_>, _>>()?;

    let children = resolve_inherits(&defs, &index)?;

    let roles = defs
        .iter()
        .enumerate()
        .map(|(i, def)| {
            let members = closure(i, &children);
            let rules = members
                .iter()
                .flat_map(|&m| own_rules[m].iter().cloned())
                .collect();
            let mut names: Vec<String> = members.iter().map(|&m| defs[m].name.clone()).collect();
            names.sort();
            CompiledRole {
                name: def.name.clone(),
                closure: names,
                rules,
            }
        })
        .collect();

    let mut grants: Vec<(String, Vec<(Effect, &String)>)> = Vec::new();
    for grant in &policy.grants {
        match grants
            .iter_mut()
            .find(|(subject, _)| *subject == grant.subject)
        {
            Some((_, rules)) => rules.push((grant.effect, &grant.urn)),
            None => grants.push((grant.subject.clone(), vec![(grant.effect, &grant.urn)])),
        }
    }
    let grants = grants
        .into_iter()
        .map(|(subject, rules)| {
            let defined_in = || format!("grant to `{subject}`");
            let rules = parse_rules(rules.into_iter(), &Origin::Grant, defined_in)?;
            Ok((subject, rules))
        })
        .collect::<Result<_, PolicyError>>()?;

    Ok(CompiledPolicy { roles, grants })
}

/// Parses one role's (or one subject's) rules, dropping exact repeats so the
/// index and `list_permissions` do not carry duplicates.
fn parse_rules<'a>(
    rules: impl Iterator<Item = (Effect, &'a String)>,
    origin: &Origin,
    defined_in: impl Fn() -> String,
) -> Result<Vec<Rule>, PolicyError> {
    let mut seen = HashSet::new();
    let mut parsed = Vec::new();
    for (effect, text) in rules {
        let urn = Urn::parse(text).map_err(|source| PolicyError::InvalidUrn {
            defined_in: defined_in(),
            urn: text.clone(),
            source,
        })?;
        if seen.insert((effect, urn.clone())) {
            parsed.push(Rule {
                urn,
                effect,
                origin: origin.clone(),
            });
        }
    }
    Ok(parsed)
}

/// Resolves `inherits` names to indices and rejects unknown roles and cycles.
fn resolve_inherits(
    defs: &[RoleDef],
    index: &HashMap<&str, usize>,
) -> Result<Vec<Vec<usize>>, PolicyError> {
    let children =
        defs.iter()
            .map(|def| {
                def.inherits
                    .iter()
                    .map(|parent| {
                        index.get(parent.as_str()).copied().ok_or_else(|| {
                            PolicyError::UnknownRole {
                                role: parent.clone(),
                                inherited_by: def.name.clone(),
                            }
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;

    let mut state = vec![Visit::New; defs.len()];
    let mut stack = Vec::new();
    for start in 0..defs.len() {
        if state[start] == Visit::New {
            find_cycle(start, &children, &mut state, &mut stack).map_err(|cycle| {
                let path: Vec<&str> = cycle.iter().map(|&i| defs[i].name.as_str()).collect();
                PolicyError::RoleCycle {
                    path: path.join(" -> "),
                }
            })?;
        }
    }
    Ok(children)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Visit {
    New,
    OnPath,
    Done,
}

/// Depth-first search; on a cycle returns it as indices, first role repeated
/// at the end. Role graphs are small, so recursion depth is not a concern.
fn find_cycle(
    role: usize,
    children: &[Vec<usize>],
    state: &mut [Visit],
    stack: &mut Vec<usize>,
) -> Result<(), Vec<usize>> {
    state[role] = Visit::OnPath;
    stack.push(role);
    for &parent in &children[role] {
        match state[parent] {
            Visit::OnPath => {
                let from = stack.iter().position(|&r| r == parent).unwrap_or(0);
                let mut cycle = stack[from..].to_vec();
                cycle.push(parent);
                return Err(cycle);
            }
            Visit::New => find_cycle(parent, children, state, stack)?,
            Visit::Done => {}
        }
    }
    stack.pop();
    state[role] = Visit::Done;
    Ok(())
}

/// The role and everything it inherits, each once: the role itself first, so
/// its own rules are found (and reported) before inherited ones, then its
/// ancestors nearest first. The graph is known to be acyclic.
fn closure(role: usize, children: &[Vec<usize>]) -> Vec<usize> {
    let mut members = vec![role];
    let mut next = 0;
    while next < members.len() {
        for &parent in &children[members[next]] {
            if !members.contains(&parent) {
                members.push(parent);
            }
        }
        next += 1;
    }
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, inherits: &[&str]) -> RoleDef {
        RoleDef {
            name: name.into(),
            allow: vec![format!("{name}:read:*")],
            inherits: inherits.iter().map(|s| s.to_string()).collect(),
            ..RoleDef::default()
        }
    }

    fn compile_roles(roles: Vec<RoleDef>) -> Result<CompiledPolicy, PolicyError> {
        compile(Policy {
            roles,
            grants: vec![],
        })
    }

    #[test]
    fn flattening_includes_every_ancestor_once() {
        let compiled = compile_roles(vec![
            role("a", &["b", "c"]),
            role("b", &["d"]),
            role("c", &["d"]),
            role("d", &[]),
        ])
        .unwrap();
        let a = &compiled.roles[0];
        assert_eq!(a.closure, ["a", "b", "c", "d"]);
        let urns: Vec<&str> = a.rules.iter().map(|r| r.urn.as_str()).collect();
        assert_eq!(urns, ["a:read:*", "b:read:*", "c:read:*", "d:read:*"]);
    }

    #[test]
    fn repeated_rules_are_kept_once() {
        let compiled = compile_roles(vec![RoleDef {
            name: "a".into(),
            allow: vec!["x:y:*".into(), "x:y:*".into()],
            deny: vec!["x:y:*".into()],
            ..RoleDef::default()
        }])
        .unwrap();
        assert_eq!(compiled.roles[0].rules.len(), 2);
    }

    #[test]
    fn cycles_are_reported_with_their_path() {
        let err = compile_roles(vec![role("a", &["a"])]).unwrap_err();
        assert_eq!(
            err,
            PolicyError::RoleCycle {
                path: "a -> a".into()
            }
        );

        let err = compile_roles(vec![
            role("x", &["a"]),
            role("a", &["b"]),
            role("b", &["c"]),
            role("c", &["a"]),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            PolicyError::RoleCycle {
                path: "a -> b -> c -> a".into()
            }
        );
    }

    #[test]
    fn unknown_and_duplicate_roles_are_rejected() {
        let err = compile_roles(vec![role("a", &["ghost"])]).unwrap_err();
        assert_eq!(
            err,
            PolicyError::UnknownRole {
                role: "ghost".into(),
                inherited_by: "a".into()
            }
        );
        let err = compile_roles(vec![role("a", &[]), role("a", &[])]).unwrap_err();
        assert_eq!(err, PolicyError::DuplicateRole("a".into()));
    }

    #[test]
    fn grant_urns_are_validated() {
        let err = compile(Policy {
            roles: vec![],
            grants: vec![GrantDef {
                subject: "u1".into(),
                effect: Effect::Deny,
                urn: "wallet:read".into(),
            }],
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid URN `wallet:read` in grant to `u1`: \
             expected 3 `:`-separated segments (resource:action:target), found 2"
        );
    }

    #[test]
    fn default_policy_builds() {
        let engine = default_policy();
        let mut roles: Vec<&str> = engine.roles().collect();
        roles.sort();
        assert_eq!(roles, ["admin", "platform-admin", "support", "user"]);
    }
}
