//! `@key`: one key, several keys on one type, a composite key, a nested
//! key, and `resolvable: false` references.

use serde_json::json;

use super::{assert_cases, case, FixtureSubgraph};

fn data() -> Vec<FixtureSubgraph> {
    let user = |id: &str| json!({"__typename": "User", "id": id});
    vec![
        FixtureSubgraph::new(
            "users",
            json!({"users": [
                {"__typename": "User", "id": "u1", "email": "ada@example.com", "name": "Ada"},
                {"__typename": "User", "id": "u2", "email": "alan@example.com", "name": "Alan"}
            ]}),
            json!([
                {"__typename": "User", "id": "u1", "email": "ada@example.com", "name": "Ada"},
                {"__typename": "User", "id": "u2", "email": "alan@example.com", "name": "Alan"}
            ]),
        ),
        FixtureSubgraph::new(
            "accounts",
            json!({
                "accounts": [
                    {"__typename": "Account", "number": "001", "bank": "B1", "balance": 500, "holder": user("u1")},
                    {"__typename": "Account", "number": "001", "bank": "B2", "balance": 7, "holder": user("u2")}
                ],
                "memberships": [
                    {"__typename": "Membership", "user": user("u1"), "team": "core", "role": "owner"},
                    {"__typename": "Membership", "user": user("u2"), "team": "core", "role": "member"}
                ]
            }),
            json!([
                {"__typename": "Account", "number": "001", "bank": "B1", "balance": 500, "holder": user("u1")},
                {"__typename": "Account", "number": "001", "bank": "B2", "balance": 7, "holder": user("u2")},
                {"__typename": "Membership", "user": user("u1"), "team": "core", "role": "owner"},
                {"__typename": "Membership", "user": user("u2"), "team": "core", "role": "member"}
            ]),
        ),
        FixtureSubgraph::new(
            "teams",
            json!({}),
            json!([
                {"__typename": "Membership", "user": user("u1"), "team": "core", "since": 2019},
                {"__typename": "Membership", "user": user("u2"), "team": "core", "since": 2021}
            ]),
        ),
        FixtureSubgraph::new(
            "ledger",
            json!({"entries": [
                {"__typename": "Entry", "id": "e1", "amount": 100,
                 "account": {"__typename": "Account", "number": "001", "bank": "B2"},
                 "owner": {"__typename": "User", "email": "alan@example.com", "points": 20}},
                {"__typename": "Entry", "id": "e2", "amount": -40,
                 "account": {"__typename": "Account", "number": "001", "bank": "B1"},
                 "owner": {"__typename": "User", "email": "ada@example.com", "points": 10}}
            ]}),
            json!([
                {"__typename": "User", "email": "ada@example.com", "points": 10},
                {"__typename": "User", "email": "alan@example.com", "points": 20}
            ]),
        ),
    ]
}

#[tokio::test]
async fn entities_join_on_single_multiple_composite_and_nested_keys() {
    assert_cases(
        "key",
        data,
        &[
            // Users resolves User by id; ledger by email, the second key.
            case(
                "{ users { id name points } }",
                json!({"data": {"users": [
                    {"id": "u1", "name": "Ada", "points": 10},
                    {"id": "u2", "name": "Alan", "points": 20}
                ]}}),
            ),
            // Composite key (number, bank) to accounts; email key to users.
            case(
                "{ entries { amount account { bank balance } owner { name points } } }",
                json!({"data": {"entries": [
                    {"amount": 100, "account": {"bank": "B2", "balance": 7},
                     "owner": {"name": "Alan", "points": 20}},
                    {"amount": -40, "account": {"bank": "B1", "balance": 500},
                     "owner": {"name": "Ada", "points": 10}}
                ]}}),
            ),
            // Nested key (user { id } team) to teams; a resolvable: false
            // User reference resolved by users.
            case(
                "{ memberships { role since user { name } } }",
                json!({"data": {"memberships": [
                    {"role": "owner", "since": 2019, "user": {"name": "Ada"}},
                    {"role": "member", "since": 2021, "user": {"name": "Alan"}}
                ]}}),
            ),
            case(
                "{ accounts { number bank holder { id email } } }",
                json!({"data": {"accounts": [
                    {"number": "001", "bank": "B1", "holder": {"id": "u1", "email": "ada@example.com"}},
                    {"number": "001", "bank": "B2", "holder": {"id": "u2", "email": "alan@example.com"}}
                ]}}),
            ),
        ],
    )
    .await;
}
