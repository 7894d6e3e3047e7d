//! Behaviour of the public API: matching, tenancy, inheritance, deny
//! overrides, error reporting, listings and the default policy.

// Clippy's test exemption covers `#[test]` functions only; the fixture
// helpers here should fail just as loudly.
#![allow(clippy::unwrap_used)]

use access_engine::{
    default_policy, AccessEngine, DecidedBy, Decision, Effect, Permission, PolicyError, Request,
    Resource, RoleDef, RuleSource, Segment, Subject, Urn, UrnError,
};
use proptest::prelude::*;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn role(name: &str, allow: &[&str], deny: &[&str], inherits: &[&str]) -> RoleDef {
    RoleDef {
        name: name.into(),
        allow: strings(allow),
        deny: strings(deny),
        inherits: strings(inherits),
        global: false,
    }
}

fn engine(roles: Vec<RoleDef>) -> AccessEngine {
    roles
        .into_iter()
        .fold(AccessEngine::builder(), |b, r| b.role(r))
        .build()
        .unwrap()
}

fn build_err(roles: Vec<RoleDef>) -> PolicyError {
    roles
        .into_iter()
        .fold(AccessEngine::builder(), |b, r| b.role(r))
        .build()
        .unwrap_err()
}

fn subject<'a>(id: &'a str, tenant: &'a str, roles: &'a [String]) -> Subject<'a> {
    Subject { id, tenant, roles }
}

fn request<'a>(resource: &'a str, action: &'a str, target: Resource<'a>) -> Request<'a> {
    Request {
        resource,
        action,
        target,
    }
}

/// A resource in `tenant` with the given id and owner.
fn res<'a>(id: &'a str, owner: &'a str, tenant: &'a str) -> Resource<'a> {
    Resource {
        id: Some(id),
        owner: Some(owner),
        tenant: Some(tenant),
    }
}

fn decided(rule: &str, effect: Effect, source: RuleSource) -> Option<DecidedBy> {
    Some(DecidedBy {
        rule: Urn::parse(rule).unwrap(),
        effect,
        source,
    })
}

fn by_role(name: &str) -> RuleSource {
    RuleSource::Role(name.into())
}

// ---------------------------------------------------------------- matching

#[test]
fn wildcard_in_each_segment() {
    let e = engine(vec![
        role("any-resource", &["*:read:own"], &[], &[]),
        role("any-action", &["wallet:*:own"], &[], &[]),
        role("any-target", &["wallet:read:*"], &[], &[]),
    ]);
    let mine = res("w1", "u1", "t1");
    let other = res("w2", "u2", "t1");

    let held = strings(&["any-resource"]);
    let s = subject("u1", "t1", &held);
    assert!(e.check(&s, &request("wallet", "read", mine)).allowed);
    assert!(e.check(&s, &request("bonus", "read", mine)).allowed);
    assert!(!e.check(&s, &request("wallet", "create", mine)).allowed);

    let held = strings(&["any-action"]);
    let s = subject("u1", "t1", &held);
    assert!(e.check(&s, &request("wallet", "read", mine)).allowed);
    assert!(e.check(&s, &request("wallet", "withdraw", mine)).allowed);
    assert!(!e.check(&s, &request("bonus", "read", mine)).allowed);

    let held = strings(&["any-target"]);
    let s = subject("u1", "t1", &held);
    assert!(e.check(&s, &request("wallet", "read", other)).allowed);
    assert!(
        e.check(&s, &request("wallet", "read", Resource::any()))
            .allowed
    );
    assert!(!e.check(&s, &request("wallet", "create", other)).allowed);
}

#[test]
fn own_matches_only_the_subjects_resources() {
    let e = engine(vec![role("user", &["wallet:read:own"], &[], &[])]);
    let held = strings(&["user"]);
    let s = subject("u1", "t1", &held);
    let read = |target| e.check(&s, &request("wallet", "read", target));

    let decision = read(res("w1", "u1", "t1"));
    assert!(decision.allowed);
    assert_eq!(
        decision.decided_by,
        decided("wallet:read:own", Effect::Allow, by_role("user"))
    );
    assert_eq!(
        read(res("w2", "u2", "t1")),
        Decision {
            allowed: false,
            decided_by: None
        }
    );
    // Unknown owner and collection-level checks do not satisfy `own`.
    assert!(!read(Resource::any()).allowed);
    assert!(
        !read(Resource {
            id: Some("w1"),
            owner: None,
            tenant: Some("t1")
        })
        .allowed
    );
}

#[test]
fn tenant_target_needs_the_subjects_tenant() {
    let e = engine(vec![role("staff", &["invoice:read:tenant"], &[], &[])]);
    let held = strings(&["staff"]);
    let s = subject("u1", "t1", &held);
    let read = |target| e.check(&s, &request("invoice", "read", target)).allowed;
    assert!(read(res("i1", "u9", "t1")));
    assert!(!read(res("i1", "u9", "t2")));
    // A tenant that is not known cannot be the subject's.
    assert!(!read(Resource::any()));
}

#[test]
fn literal_id_targets_match_that_id_only() {
    let e = engine(vec![role(
        "auditor",
        &["report:read:R-2024.q1", "report:read:R-2024.q2"],
        &[],
        &[],
    )]);
    let held = strings(&["auditor"]);
    let s = subject("u1", "t1", &held);
    let read = |id| {
        e.check(
            &s,
            &request(
                "report",
                "read",
                Resource {
                    id,
                    owner: None,
                    tenant: Some("t1"),
                },
            ),
        )
    };
    let decision = read(Some("R-2024.q2"));
    assert!(decision.allowed);
    assert_eq!(
        decision.decided_by,
        decided("report:read:R-2024.q2", Effect::Allow, by_role("auditor"))
    );
    assert!(!read(Some("R-2024.q3")).allowed);
    assert!(!read(Some("r-2024.q1")).allowed, "ids are case-sensitive");
    assert!(!read(None).allowed);
}

// ---------------------------------------------------------------- tenancy

#[test]
fn rules_do_not_cross_tenants_unless_the_role_is_global() {
    let e = engine(vec![
        role("admin", &["*:*:*"], &[], &[]),
        RoleDef {
            global: true,
            ..role("operator", &["*:*:*"], &[], &[])
        },
        role("user", &["wallet:read:own", "wallet:read:w-9"], &[], &[]),
    ]);
    let foreign = res("w-9", "u1", "t2");

    let held = strings(&["admin", "user"]);
    let s = subject("u1", "t1", &held);
    assert!(
        e.check(&s, &request("wallet", "read", res("w-9", "u1", "t1")))
            .allowed
    );
    // Neither `*`, `own` nor a literal id reaches into another tenant.
    assert!(!e.check(&s, &request("wallet", "read", foreign)).allowed);

    let held = strings(&["operator"]);
    let s = subject("ops", "platform", &held);
    let decision = e.check(&s, &request("wallet", "read", foreign));
    assert!(decision.allowed);
    assert_eq!(
        decision.decided_by,
        decided("*:*:*", Effect::Allow, by_role("operator"))
    );
}

#[test]
fn global_flag_belongs_to_the_defining_role() {
    let e = engine(vec![
        role("reader", &["wallet:read:*"], &[], &[]),
        RoleDef {
            global: true,
            ..role("operator", &["health:read:*"], &[], &["reader"])
        },
    ]);
    let held = strings(&["operator"]);
    let s = subject("ops", "platform", &held);
    assert!(
        e.check(&s, &request("health", "read", res("h", "x", "t2")))
            .allowed
    );
    assert!(
        !e.check(&s, &request("wallet", "read", res("w", "x", "t2")))
            .allowed
    );
    assert!(
        e.check(&s, &request("wallet", "read", res("w", "x", "platform")))
            .allowed
    );
}

// ---------------------------------------------------------------- roles

#[test]
fn inheritance_is_multi_level() {
    let e = engine(vec![
        role("a", &["alpha:read:*"], &[], &["b"]),
        role("b", &["beta:read:*"], &[], &["c"]),
        role("c", &["gamma:read:*"], &[], &[]),
    ]);
    let held = strings(&["a"]);
    let s = subject("u1", "t1", &held);
    let decision = e.check(&s, &request("gamma", "read", Resource::any()));
    assert!(decision.allowed);
    assert_eq!(
        decision.decided_by,
        decided("gamma:read:*", Effect::Allow, by_role("c"))
    );
    assert!(
        e.check(&s, &request("beta", "read", Resource::any()))
            .allowed
    );

    let held = strings(&["b"]);
    let s = subject("u1", "t1", &held);
    assert!(
        !e.check(&s, &request("alpha", "read", Resource::any()))
            .allowed
    );
    assert_eq!(e.effective_role_names(&strings(&["a"])), ["a", "b", "c"]);
    assert_eq!(
        e.effective_role_names(&strings(&["b", "c", "x"])),
        ["b", "c"]
    );
}

#[test]
fn cycles_are_rejected_naming_the_path() {
    assert_eq!(
        build_err(vec![role("a", &[], &[], &["a"])]),
        PolicyError::RoleCycle {
            path: "a -> a".into()
        }
    );
    let err = build_err(vec![
        role("a", &[], &[], &["b"]),
        role("b", &[], &[], &["c"]),
        role("c", &[], &[], &["a"]),
    ]);
    assert_eq!(
        err,
        PolicyError::RoleCycle {
            path: "a -> b -> c -> a".into()
        }
    );
    assert_eq!(err.to_string(), "role inheritance cycle: a -> b -> c -> a");
}

#[test]
fn unknown_inherited_role_is_rejected() {
    let err = build_err(vec![role("support", &[], &[], &["usr"])]);
    assert_eq!(
        err,
        PolicyError::UnknownRole {
            role: "usr".into(),
            inherited_by: "support".into()
        }
    );
}

#[test]
fn duplicate_roles_are_rejected() {
    let err = build_err(vec![role("a", &[], &[], &[]), role("a", &[], &[], &[])]);
    assert_eq!(err, PolicyError::DuplicateRole("a".into()));
}

#[test]
fn unknown_roles_held_grant_nothing() {
    let e = engine(vec![role("user", &["wallet:read:own"], &[], &[])]);
    let held = strings(&["root", "user"]);
    let s = subject("u1", "t1", &held);
    assert!(
        e.check(&s, &request("wallet", "read", res("w", "u1", "t1")))
            .allowed
    );
    assert!(
        !e.check(&s, &request("wallet", "delete", res("w", "u1", "t1")))
            .allowed
    );
    assert!(e.has_role_defined("user"));
    assert!(!e.has_role_defined("root"));
    assert_eq!(e.roles().collect::<Vec<_>>(), ["user"]);
}

// ---------------------------------------------------------------- deny

#[test]
fn deny_in_an_inherited_role_beats_allow_in_the_child() {
    let e = engine(vec![
        role("restricted", &[], &["wallet:withdraw:*"], &[]),
        role("user", &["wallet:*:own"], &[], &["restricted"]),
    ]);
    let held = strings(&["user"]);
    let s = subject("u1", "t1", &held);
    let decision = e.check(&s, &request("wallet", "withdraw", res("w", "u1", "t1")));
    assert_eq!(
        decision,
        Decision {
            allowed: false,
            decided_by: decided("wallet:withdraw:*", Effect::Deny, by_role("restricted")),
        }
    );
    assert!(
        e.check(&s, &request("wallet", "read", res("w", "u1", "t1")))
            .allowed
    );
}

#[test]
fn deny_grant_beats_role_allow() {
    let e = AccessEngine::builder()
        .role(role("admin", &["*:*:*"], &[], &[]))
        .grant("mallory", Effect::Deny, "transfer:create:*")
        .grant("alice", Effect::Allow, "report:read:r-1")
        .build()
        .unwrap();
    let held = strings(&["admin"]);
    let mallory = subject("mallory", "t1", &held);
    let decision = e.check(&mallory, &request("transfer", "create", Resource::any()));
    assert_eq!(
        decision.decided_by,
        decided("transfer:create:*", Effect::Deny, RuleSource::Grant)
    );
    assert!(!decision.allowed);
    // The deny is only for mallory.
    let bob = subject("bob", "t1", &held);
    assert!(
        e.check(&bob, &request("transfer", "create", Resource::any()))
            .allowed
    );
    // Grants allow on their own, without any role.
    let alice = subject("alice", "t1", &[]);
    let decision = e.check(
        &alice,
        &request(
            "report",
            "read",
            Resource {
                id: Some("r-1"),
                ..Resource::any()
            },
        ),
    );
    assert_eq!(
        decision.decided_by,
        decided("report:read:r-1", Effect::Allow, RuleSource::Grant)
    );
}

#[test]
fn deny_applies_across_tenants_and_to_global_roles() {
    let e = engine(vec![
        RoleDef {
            global: true,
            ..role("operator", &["*:*:*"], &[], &[])
        },
        role("no-withdraw", &[], &["wallet:withdraw:*"], &[]),
    ]);
    let held = strings(&["operator", "no-withdraw"]);
    let s = subject("ops", "platform", &held);
    let decision = e.check(&s, &request("wallet", "withdraw", res("w", "u1", "t2")));
    assert!(!decision.allowed);
    assert_eq!(decision.decided_by.unwrap().effect, Effect::Deny);
}

// ---------------------------------------------------------------- errors

#[test]
fn each_malformed_urn_has_its_own_error() {
    let cases = [
        ("wallet:read", UrnError::SegmentCount { found: 2 }),
        ("a:b:c:d", UrnError::SegmentCount { found: 4 }),
        (
            ":read:own",
            UrnError::EmptySegment {
                segment: Segment::Resource,
            },
        ),
        (
            "wallet::own",
            UrnError::EmptySegment {
                segment: Segment::Action,
            },
        ),
        (
            "wallet:read:",
            UrnError::EmptySegment {
                segment: Segment::Target,
            },
        ),
        (
            "Wallet:read:own",
            UrnError::InvalidChar {
                segment: Segment::Resource,
                ch: 'W',
            },
        ),
        (
            "wallet:read!:own",
            UrnError::InvalidChar {
                segment: Segment::Action,
                ch: '!',
            },
        ),
        (
            "wallet:read:a b",
            UrnError::InvalidChar {
                segment: Segment::Target,
                ch: ' ',
            },
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(Urn::parse(input), Err(expected.clone()), "{input}");
        assert_eq!(input.parse::<Urn>(), Err(expected), "{input}");
    }
    let long = format!("{}:read:own", "w".repeat(65));
    assert_eq!(
        Urn::parse(&long),
        Err(UrnError::TooLong {
            segment: Segment::Resource,
            len: 65
        })
    );
}

#[test]
fn malformed_rules_fail_the_build_with_context() {
    let err = build_err(vec![role(
        "user",
        &["wallet:read:own", "wallet:Read:own"],
        &[],
        &[],
    )]);
    assert_eq!(
        err,
        PolicyError::InvalidUrn {
            defined_in: "role `user`".into(),
            urn: "wallet:Read:own".into(),
            source: UrnError::InvalidChar {
                segment: Segment::Action,
                ch: 'R'
            },
        }
    );
    assert!(std::error::Error::source(&err).is_some());
}

// ---------------------------------------------------------------- API

#[test]
fn can_checks_permission_strings() {
    let e = engine(vec![
        role("user", &["wallet:read:own"], &[], &[]),
        role("support", &["wallet:read:*"], &[], &[]),
    ]);
    let user = strings(&["user"]);
    let s = subject("u1", "t1", &user);
    assert!(e.can(&s, "wallet:read:own").unwrap().allowed);
    assert!(!e.can(&s, "wallet:read:*").unwrap().allowed);
    assert!(!e.can(&s, "wallet:read:w-1").unwrap().allowed);
    assert_eq!(
        e.can(&s, "wallet:read").unwrap_err(),
        UrnError::SegmentCount { found: 2 }
    );

    let support = strings(&["support"]);
    let s = subject("u2", "t1", &support);
    assert!(e.can(&s, "wallet:read:*").unwrap().allowed);
    assert!(e.can(&s, "wallet:read:w-1").unwrap().allowed);
    assert!(e.can(&s, "wallet:read:tenant").unwrap().allowed);
}

#[test]
fn list_permissions_is_deduplicated_and_sorted() {
    let e = AccessEngine::builder()
        .role(role(
            "base",
            &["wallet:read:own"],
            &["wallet:delete:*"],
            &[],
        ))
        .role(role(
            "user",
            &["bonus:claim:own", "wallet:read:own"],
            &[],
            &["base"],
        ))
        .grant("u1", Effect::Allow, "report:read:r-1")
        .grant("u2", Effect::Allow, "report:read:r-2")
        .build()
        .unwrap();
    let held = strings(&["user", "base", "ghost"]);
    let s = subject("u1", "t1", &held);
    let perm = |rule: &str, effect, source| Permission {
        rule: Urn::parse(rule).unwrap(),
        effect,
        source,
    };
    assert_eq!(
        e.list_permissions(&s),
        [
            perm("bonus:claim:own", Effect::Allow, by_role("user")),
            perm("report:read:r-1", Effect::Allow, RuleSource::Grant),
            perm("wallet:delete:*", Effect::Deny, by_role("base")),
            perm("wallet:read:own", Effect::Allow, by_role("base")),
            perm("wallet:read:own", Effect::Allow, by_role("user")),
        ]
    );
    assert!(e.list_permissions(&subject("nobody", "t1", &[])).is_empty());
}

#[test]
fn policy_loads_from_json() {
    let e = AccessEngine::from_json(
        r#"{
            "roles": [
                {"name": "user", "allow": ["wallet:read:own"]},
                {"name": "ops", "allow": ["*:*:*"], "global": true, "inherits": ["user"]}
            ],
            "grants": [{"subject": "u1", "effect": "deny", "urn": "wallet:read:*"}]
        }"#,
    )
    .unwrap();
    assert_eq!(e.roles().collect::<Vec<_>>(), ["user", "ops"]);
    let held = strings(&["user"]);
    let s = subject("u1", "t1", &held);
    assert!(
        !e.check(&s, &request("wallet", "read", res("w", "u1", "t1")))
            .allowed
    );

    assert!(matches!(
        AccessEngine::from_json(r#"{"roles": [{"name": "x", "denny": []}]}"#),
        Err(PolicyError::Json(_))
    ));
    assert!(matches!(
        AccessEngine::from_json("not json"),
        Err(PolicyError::Json(_))
    ));
}

#[test]
fn decision_is_serialisable_for_audit() {
    let e = engine(vec![role("user", &["wallet:read:own"], &[], &[])]);
    let held = strings(&["user"]);
    let s = subject("u1", "t1", &held);
    let decision = e.check(&s, &request("wallet", "read", res("w", "u1", "t1")));
    let json = serde_json::to_value(&decision).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "allowed": true,
            "decided_by": {"rule": "wallet:read:own", "effect": "allow", "source": {"role": "user"}}
        })
    );
}

// ---------------------------------------------------------------- default policy

#[test]
fn default_policy_user() {
    let e = default_policy();
    let held = strings(&["user"]);
    let s = subject("u1", "t1", &held);
    let own = res("x", "u1", "t1");
    let theirs = res("x", "u2", "t1");
    for (resource, action) in [
        ("wallet", "read"),
        ("wallet", "create"),
        ("wallet", "withdraw"),
        ("transfer", "create"),
        ("transfer", "read"),
        ("bonus", "claim"),
        ("bonus", "read"),
        ("notification", "read"),
        ("user", "read"),
    ] {
        assert!(
            e.check(&s, &request(resource, action, own)).allowed,
            "{resource}:{action}"
        );
        assert!(
            !e.check(&s, &request(resource, action, theirs)).allowed,
            "{resource}:{action}"
        );
    }
    assert!(!e.check(&s, &request("wallet", "delete", own)).allowed);
    assert!(
        !e.check(&s, &request("health", "read", Resource::any()))
            .allowed
    );
    assert!(
        !e.check(&s, &request("wallet", "read", Resource::any()))
            .allowed
    );
    assert_eq!(e.list_permissions(&s).len(), 9);
}

#[test]
fn default_policy_support() {
    let e = default_policy();
    let held = strings(&["support"]);
    let s = subject("s1", "t1", &held);
    let theirs = res("x", "u2", "t1");
    for resource in ["user", "wallet", "transfer"] {
        let d = e.check(&s, &request(resource, "read", theirs));
        assert!(d.allowed, "{resource}");
        assert_eq!(d.decided_by.unwrap().source, by_role("support"));
    }
    assert!(
        e.check(&s, &request("health", "read", Resource::any()))
            .allowed
    );
    // Inherited from user: own things only.
    let d = e.check(&s, &request("bonus", "claim", res("b", "s1", "t1")));
    assert_eq!(d.decided_by.unwrap().source, by_role("user"));
    assert!(!e.check(&s, &request("bonus", "read", theirs)).allowed);
    assert!(!e.check(&s, &request("wallet", "withdraw", theirs)).allowed);
    // Still tenant-scoped.
    assert!(
        !e.check(&s, &request("wallet", "read", res("x", "u2", "t2")))
            .allowed
    );
    assert_eq!(e.effective_role_names(&held), ["support", "user"]);
}

#[test]
fn default_policy_admins() {
    let e = default_policy();
    let held = strings(&["admin"]);
    let s = subject("a1", "t1", &held);
    assert!(
        e.check(&s, &request("wallet", "delete", res("x", "u2", "t1")))
            .allowed
    );
    assert!(
        e.check(&s, &request("anything", "goes", Resource::any()))
            .allowed
    );
    assert!(
        !e.check(&s, &request("wallet", "read", res("x", "u2", "t2")))
            .allowed
    );

    let held = strings(&["platform-admin"]);
    let s = subject("p1", "platform", &held);
    let d = e.check(&s, &request("wallet", "read", res("x", "u2", "t2")));
    assert!(d.allowed);
    assert_eq!(d.decided_by.unwrap().source, by_role("platform-admin"));
}

// ---------------------------------------------------------------- properties

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9_.-]{1,64}"
}

/// A literal id: never the `own`/`tenant` keywords nor the wildcard.
fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,64}".prop_filter("keyword", |s| s != "own" && s != "tenant")
}

fn concrete() -> impl Strategy<Value = (String, String, String)> {
    (name(), name(), id())
}

/// The URN `r:a:t` with the segments whose bit is set in `mask` replaced by `*`.
fn pattern((r, a, t): &(String, String, String), mask: u8) -> String {
    let seg = |bit: u8, v: &str| {
        if mask & bit != 0 {
            "*".to_string()
        } else {
            v.to_string()
        }
    };
    format!("{}:{}:{}", seg(1, r), seg(2, a), seg(4, t))
}

fn check_concrete(
    e: &AccessEngine,
    roles: &[String],
    (r, a, t): &(String, String, String),
) -> Decision {
    let s = subject("u1", "t1", roles);
    e.check(
        &s,
        &request(
            r,
            a,
            Resource {
                id: Some(t),
                owner: Some("u2"),
                tenant: Some("t1"),
            },
        ),
    )
}

proptest! {
    #[test]
    fn urn_matches_itself_and_the_full_wildcard(c in concrete(), mask in 0u8..8) {
        let urn = Urn::parse(&pattern(&c, mask)).unwrap();
        prop_assert!(urn.covers(&urn));
        prop_assert!(Urn::parse("*:*:*").unwrap().covers(&urn));
    }

    #[test]
    fn display_parse_round_trip(c in concrete(), mask in 0u8..8) {
        let text = pattern(&c, mask);
        let urn = Urn::parse(&text).unwrap();
        prop_assert_eq!(urn.to_string(), text);
        prop_assert_eq!(urn.to_string().parse::<Urn>().unwrap(), urn);
    }

    #[test]
    fn wildcard_segments_match_every_concrete_value(c in concrete(), mask in 0u8..8) {
        let rule = pattern(&c, mask);
        prop_assert!(Urn::parse(&rule).unwrap().covers(&Urn::parse(&pattern(&c, 0)).unwrap()));
        let e = engine(vec![role("r", &[rule.as_str()], &[], &[])]);
        let d = check_concrete(&e, &strings(&["r"]), &c);
        prop_assert!(d.allowed);
        prop_assert_eq!(d.decided_by.unwrap().rule.to_string(), rule);
    }

    #[test]
    fn deny_always_wins_over_allows(
        c in concrete(),
        allow_masks in prop::collection::vec(0u8..8, 1..6),
        deny_mask in 0u8..8,
        deny_in in 0usize..3,
    ) {
        let allows: Vec<String> = allow_masks.iter().map(|&m| pattern(&c, m)).collect();
        let allows: Vec<&str> = allows.iter().map(String::as_str).collect();
        let deny = pattern(&c, deny_mask);
        let denies = [deny.as_str()];
        let deny_for = |slot: usize| if deny_in == slot { &denies[..] } else { &[] };
        let mut builder = AccessEngine::builder()
            .role(role("base", &allows, deny_for(0), &[]))
            .role(role("child", &allows, deny_for(1), &["base"]));
        for a in &allows {
            builder = builder.grant("u1", Effect::Allow, a);
        }
        if deny_in == 2 {
            builder = builder.grant("u1", Effect::Deny, &deny);
        }
        let e = builder.build().unwrap();
        let d = check_concrete(&e, &strings(&["child", "base"]), &c);
        prop_assert!(!d.allowed);
        let by = d.decided_by.unwrap();
        prop_assert_eq!(by.effect, Effect::Deny);
        prop_assert_eq!(by.rule.to_string(), deny);
    }
}
