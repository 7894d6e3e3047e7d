//! `user(id)`, `users` and the `User` entity.

use serde_json::{json, Value};

use crate::helpers::{code, on_both_stores, spawn_app, spawn_on, Backend};

const USERS: &str = "query($first: Int, $after: String) { users(first: $first, after: $after) { totalCount edges { cursor node { id email } } nodes { id } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }";

#[tokio::test]
async fn users_read_themselves_but_not_each_other() {
    let app = spawn_app().await;
    let alice = app.register().await;
    let bob = app.register().await;
    let alice_token = alice["accessToken"].as_str();
    let query = "query($id: ID!) { user(id: $id) { id email } }";

    let own = app
        .gql(query, json!({ "id": alice["user"]["id"] }), alice_token)
        .await;
    assert_eq!(own["data"]["user"]["id"], alice["user"]["id"], "{own}");

    for id in [bob["user"]["id"].clone(), json!("no-such-user")] {
        let other = app.gql(query, json!({ "id": id }), alice_token).await;
        assert_eq!(code(&other), "MSCoreForbidden", "{other}");
        assert!(other["data"]["user"].is_null());
        assert!(!other.to_string().contains("@example.com"), "{other}");
    }

    let anonymous = app
        .gql(query, json!({ "id": bob["user"]["id"] }), None)
        .await;
    assert_eq!(code(&anonymous), "MSCoreUnauthenticated");

    let admin = app.token_with_roles(&alice, &["admin"]);
    let body = app
        .gql(query, json!({ "id": bob["user"]["id"] }), Some(&admin))
        .await;
    assert_eq!(
        body["data"]["user"]["email"], bob["user"]["email"],
        "{body}"
    );
}

async fn listing_users_needs_permission_and_pages_with_cursors(backend: Backend) {
    let app = spawn_on(backend).await;
    let alice = app.register().await;
    let bob = app.register().await;
    let carol = app.register().await;

    let denied = app
        .gql(USERS, json!({}), alice["accessToken"].as_str())
        .await;
    assert_eq!(code(&denied), "MSCoreForbidden", "{denied}");
    assert_eq!(
        denied["errors"][0]["extensions"]["permission"],
        "user:read:*"
    );

    let admin = app.token_with_roles(&alice, &["admin"]);
    let too_many = app.gql(USERS, json!({ "first": 101 }), Some(&admin)).await;
    assert_eq!(code(&too_many), "MSCoreValidation");
    assert_eq!(too_many["errors"][0]["extensions"]["field"], "first");

    let page: Value = app.gql(USERS, json!({ "first": 2 }), Some(&admin)).await;
    let users = &page["data"]["users"];
    assert_eq!(users["totalCount"], 3, "{page}");
    let ids: Vec<&Value> = users["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["id"])
        .collect();
    assert_eq!(
        ids,
        [&alice["user"]["id"], &bob["user"]["id"]],
        "oldest first"
    );
    assert_eq!(users["pageInfo"]["hasNextPage"], true);
    assert_eq!(users["pageInfo"]["hasPreviousPage"], false);
    assert_eq!(users["edges"][1]["cursor"], users["pageInfo"]["endCursor"]);

    let after = users["pageInfo"]["endCursor"].clone();
    let next = app
        .gql(USERS, json!({ "first": 2, "after": after }), Some(&admin))
        .await;
    let users = &next["data"]["users"];
    assert_eq!(
        users["nodes"],
        json!([{ "id": carol["user"]["id"] }]),
        "{next}"
    );
    assert_eq!(users["pageInfo"]["hasNextPage"], false);
    assert_eq!(users["pageInfo"]["hasPreviousPage"], true);
}

#[tokio::test]
async fn the_user_entity_resolves_by_id_for_the_gateway() {
    let app = spawn_app().await;
    let alice = app.register().await;
    let body = app
        .gql(
            r#"query($reps: [_Any!]!) { _entities(representations: $reps) { ... on User { id email } } }"#,
            json!({ "reps": [{ "__typename": "User", "id": alice["user"]["id"] }] }),
            alice["accessToken"].as_str(),
        )
        .await;
    assert_eq!(
        body["data"]["_entities"][0]["email"], alice["user"]["email"],
        "{body}"
    );

    let sdl = app.gql("{ _service { sdl } }", json!({}), None).await;
    let sdl = sdl["data"]["_service"]["sdl"].as_str().unwrap();
    assert!(sdl.contains(r#"type User @key(fields: "id")"#), "{sdl}");
    assert!(!sdl.contains("password_hash") && !sdl.contains("passwordHash"));
}

const ASSIGN: &str =
    "mutation($id: ID!, $role: String!) { assignRole(userId: $id, role: $role) { id roles } }";
const REVOKE: &str =
    "mutation($id: ID!, $role: String!) { revokeRole(userId: $id, role: $role) { id roles } }";

async fn admins_assign_and_revoke_roles_and_the_next_refresh_carries_them(backend: Backend) {
    let app = spawn_on(backend).await;
    let alice = app.register().await;
    let bob = app.register().await;
    let bob_id = bob["user"]["id"].clone();

    let denied = app
        .gql(
            ASSIGN,
            json!({ "id": bob_id, "role": "support" }),
            alice["accessToken"].as_str(),
        )
        .await;
    assert_eq!(code(&denied), "MSCoreForbidden", "{denied}");
    assert_eq!(
        denied["errors"][0]["extensions"]["permission"],
        "role:assign:*"
    );

    let admin = app.token_with_roles(&alice, &["admin"]);
    let body = app
        .gql(
            ASSIGN,
            json!({ "id": bob_id, "role": "support" }),
            Some(&admin),
        )
        .await;
    assert_eq!(
        body["data"]["assignRole"]["roles"],
        json!(["user", "support"]),
        "{body}"
    );
    let again = app
        .gql(
            ASSIGN,
            json!({ "id": bob_id, "role": "support" }),
            Some(&admin),
        )
        .await;
    assert_eq!(
        again["data"]["assignRole"]["roles"],
        json!(["user", "support"])
    );

    let refreshed = app.refresh(bob["refreshToken"].as_str().unwrap()).await;
    let token = refreshed["data"]["refreshToken"]["accessToken"]
        .as_str()
        .unwrap();
    assert_eq!(
        crate::helpers::claims(token)["roles"],
        json!(["user", "support"])
    );

    let body = app
        .gql(
            REVOKE,
            json!({ "id": bob_id, "role": "support" }),
            Some(&admin),
        )
        .await;
    assert_eq!(
        body["data"]["revokeRole"]["roles"],
        json!(["user"]),
        "{body}"
    );

    let unknown_user = app
        .gql(
            ASSIGN,
            json!({ "id": "no-such-user", "role": "support" }),
            Some(&admin),
        )
        .await;
    assert_eq!(code(&unknown_user), "MSAuthUserNotFound");
    let unknown_role = app
        .gql(
            ASSIGN,
            json!({ "id": bob_id, "role": "emperor" }),
            Some(&admin),
        )
        .await;
    assert_eq!(code(&unknown_role), "MSCoreValidation");
    assert_eq!(unknown_role["errors"][0]["extensions"]["field"], "role");
}

on_both_stores!(
    listing_users_needs_permission_and_pages_with_cursors,
    admins_assign_and_revoke_roles_and_the_next_refresh_carries_them
);
