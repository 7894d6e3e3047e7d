//! The subgraph's queries and mutations over HTTP, with tokens signed the
//! way the auth service signs them.

use notification_service::store::Channel;
use serde_json::{json, Value};

use crate::helpers::{code, new_user, spawn_app, TestApp};

const LIST: &str = "query($first: Int, $after: String, $unread: Boolean) {
  myNotifications(first: $first, after: $after, unreadOnly: $unread) {
    edges { cursor node { id userId channel kind title body data status createdAt readAt } }
    nodes { id }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    totalCount
  }
}";

async fn list(app: &TestApp, token: &str, vars: Value) -> Value {
    let body = app.gql(LIST, vars, Some(token)).await;
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["myNotifications"].clone()
}

#[tokio::test]
async fn my_notifications_pages_newest_first_and_shows_only_mine() {
    let app = spawn_app(&[]).await;
    let (alice, bob) = (new_user(), new_user());
    let mut ids = Vec::new();
    for i in 0..5 {
        let created = app.notify(&alice, &format!("k.n{i}"), None, None).await;
        ids.push(created[0].id.clone());
    }
    app.notify(&bob, "k.bob", None, None).await;
    let token = app.token(&alice, &["user"]);

    let first = list(&app, &token, json!({"first": 3})).await;
    let second = list(
        &app,
        &token,
        json!({"first": 3, "after": first["pageInfo"]["endCursor"]}),
    )
    .await;

    let page_ids = |page: &Value| -> Vec<String> {
        page["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Each notify created IN_APP + EMAIL (the defaults): 10 in all.
    assert_eq!(first["totalCount"], 10);
    assert_eq!(first["pageInfo"]["hasNextPage"], true);
    assert_eq!(second["pageInfo"]["hasPreviousPage"], true);
    let mut seen = page_ids(&first);
    seen.extend(page_ids(&second));
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");
    assert_eq!(seen.len(), 6);
    let edge = &first["edges"][0]["node"];
    assert_eq!(edge["userId"], json!(alice));
    assert_eq!(edge["kind"], "k.n4");
    assert_eq!(edge["data"], json!({"n": 1}));
    assert!(first["edges"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["node"]["userId"] == json!(alice)));
    assert_eq!(
        seen[1], ids[4],
        "the newest notify (EMAIL, then its IN_APP) leads"
    );
}

#[tokio::test]
async fn first_over_100_and_bad_cursors_are_validation_errors() {
    let app = spawn_app(&[]).await;
    let token = app.token(&new_user(), &["user"]);

    let body = app.gql(LIST, json!({"first": 101}), Some(&token)).await;
    assert_eq!(code(&body), "MSCoreValidation");
    assert_eq!(body["errors"][0]["extensions"]["field"], "first");
    let body = app
        .gql(LIST, json!({"after": "garbage"}), Some(&token))
        .await;
    assert_eq!(code(&body), "MSCoreValidation");
}

#[tokio::test]
async fn anonymous_callers_and_bad_tokens_are_refused() {
    let app = spawn_app(&[]).await;

    let body = app.gql(LIST, json!({}), None).await;
    assert_eq!(code(&body), "MSCoreUnauthenticated");
    let body = app.gql(LIST, json!({}), Some("not-a-token")).await;
    assert_eq!(code(&body), "MSAuthInvalidToken");
}

#[tokio::test]
async fn mark_read_unread_only_and_mark_all() {
    let app = spawn_app(&[]).await;
    let user = new_user();
    let token = app.token(&user, &["user"]);
    let a = app.notify(&user, "k.a", Some(vec![]), None).await;
    app.notify(&user, "k.b", Some(vec![]), None).await;
    app.notify(&user, "k.c", Some(vec![]), None).await;

    let body = app
        .gql(
            "mutation($id: ID!) { markNotificationRead(id: $id) { id status readAt } }",
            json!({"id": a[0].id}),
            Some(&token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(body["data"]["markNotificationRead"]["status"], "READ");
    assert!(body["data"]["markNotificationRead"]["readAt"].is_string());

    let unread = list(&app, &token, json!({"unread": true})).await;
    assert_eq!(unread["totalCount"], 2);

    let body = app
        .gql(
            "mutation { markAllNotificationsRead }",
            json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(body["data"]["markAllNotificationsRead"], 2, "{body}");
    let unread = list(&app, &token, json!({"unread": true})).await;
    assert_eq!(unread["totalCount"], 0);
    let body = app
        .gql(
            "mutation { markAllNotificationsRead }",
            json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(body["data"]["markAllNotificationsRead"], 0);
}

#[tokio::test]
async fn unknown_or_someone_elses_notification_is_not_found() {
    let app = spawn_app(&[]).await;
    let (alice, bob) = (new_user(), new_user());
    let bobs = app.notify(&bob, "k.a", Some(vec![]), None).await;
    let token = app.token(&alice, &["user"]);
    let mutation = "mutation($id: ID!) { markNotificationRead(id: $id) { id } }";

    let body = app
        .gql(mutation, json!({"id": "no-such-id"}), Some(&token))
        .await;
    assert_eq!(code(&body), "MSNotificationNotFound");
    let body = app
        .gql(mutation, json!({"id": bobs[0].id}), Some(&token))
        .await;
    assert_eq!(code(&body), "MSNotificationNotFound");
    assert_eq!(
        app.notification(&bobs[0].id).await.status,
        notification_service::store::NotificationStatus::Sent,
        "nothing changed"
    );

    let entity = app
        .gql(
            "query($r: [_Any!]!) { _entities(representations: $r) { ... on Notification { id } } }",
            json!({"r": [{"__typename": "Notification", "id": bobs[0].id}]}),
            Some(&token),
        )
        .await;
    assert_eq!(entity["data"]["_entities"][0], Value::Null, "{entity}");
}

#[tokio::test]
async fn preferences_read_update_and_validate() {
    let app = spawn_app(&[]).await;
    let token = app.token(&new_user(), &["user"]);
    let query = "{ notificationPreferences { channels { channel enabled } kinds { kind channels } email channelsFor(kind: \"auth.otp\") } }";

    let body = app.gql(query, json!({}), Some(&token)).await;
    let prefs = &body["data"]["notificationPreferences"];
    assert_eq!(
        prefs["channels"],
        json!([
            {"channel": "IN_APP", "enabled": true},
            {"channel": "EMAIL", "enabled": true},
            {"channel": "SMS", "enabled": false},
            {"channel": "PUSH", "enabled": false},
            {"channel": "WEBHOOK", "enabled": false}
        ])
    );
    assert_eq!(prefs["channelsFor"], json!(["IN_APP", "EMAIL"]));

    let update = "mutation($i: NotificationPreferencesInput!) { updateNotificationPreferences(input: $i) { channels { channel enabled } kinds { kind channels } email } }";
    let body = app
        .gql(
            update,
            json!({"i": {"channels": [{"channel": "PUSH", "enabled": true}],
                         "kinds": [{"kind": "auth.otp", "channels": ["EMAIL", "IN_APP"]}],
                         "email": "me@example.com"}}),
            Some(&token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let prefs = &body["data"]["updateNotificationPreferences"];
    assert_eq!(
        prefs["channels"][3],
        json!({"channel": "PUSH", "enabled": true})
    );
    assert_eq!(
        prefs["kinds"],
        json!([{"kind": "auth.otp", "channels": ["EMAIL"]}])
    );
    assert_eq!(prefs["email"], "me@example.com");

    let body = app
        .gql(
            update,
            json!({"i": {"channels": [{"channel": "IN_APP", "enabled": false}]}}),
            Some(&token),
        )
        .await;
    assert_eq!(code(&body), "MSCoreValidation");
    assert_eq!(body["errors"][0]["extensions"]["field"], "input.channels");
    let body = app
        .gql(update, json!({"i": {"email": "nope"}}), Some(&token))
        .await;
    assert_eq!(code(&body), "MSCoreValidation");
    let body = app
        .gql(
            update,
            json!({"i": {"kinds": [{"kind": "Bad Kind", "channels": []}]}}),
            Some(&token),
        )
        .await;
    assert_eq!(code(&body), "MSCoreValidation");
    let body = app
        .gql(
            update,
            json!({"i": {"channels": [{"channel": "FAX", "enabled": true}]}}),
            Some(&token),
        )
        .await;
    assert!(
        body["errors"].is_array(),
        "an unknown channel is refused: {body}"
    );
}

const SEND: &str = "mutation($i: SendNotificationInput!) { sendNotification(input: $i) { id userId channel kind status data } }";

#[tokio::test]
async fn admins_send_notifications_and_users_are_forbidden() {
    let app = spawn_app(&[]).await;
    let (admin, target) = (new_user(), new_user());
    let input = json!({"i": {"userId": target, "kind": "promo.news", "title": "News",
                             "body": "Hello", "data": {"x": 1}, "channels": ["WEBHOOK"]}});

    let body = app
        .gql(SEND, input.clone(), Some(&app.token(&target, &["user"])))
        .await;
    assert_eq!(code(&body), "MSCoreForbidden");
    assert_eq!(
        body["errors"][0]["extensions"]["permission"],
        "notification:send:*"
    );
    assert!(
        app.notifications_of(&target).await.is_empty(),
        "nothing created"
    );

    let body = app
        .gql(SEND, input, Some(&app.token(&admin, &["admin"])))
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let sent = body["data"]["sendNotification"].as_array().unwrap();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["channel"], "IN_APP");
    assert_eq!(sent[0]["status"], "SENT");
    assert_eq!(sent[0]["userId"], json!(target));
    assert_eq!(sent[0]["data"], json!({"x": 1}));
    assert_eq!(sent[1]["channel"], "WEBHOOK");
    assert_eq!(
        sent[1]["status"], "FAILED",
        "no webhook provider configured"
    );

    let target_token = app.token(&target, &["user"]);
    let mine = list(&app, &target_token, json!({})).await;
    assert_eq!(mine["totalCount"], 2);
    assert_eq!(
        app.notifications_of(&target)
            .await
            .iter()
            .filter(|n| n.channel == Channel::InApp)
            .count(),
        1
    );
}

#[tokio::test]
async fn send_notification_validates_its_input() {
    let app = spawn_app(&[]).await;
    let token = app.token(&new_user(), &["admin"]);
    let target = new_user();
    for (input, field) in [
        (
            json!({"userId": target, "kind": "BAD", "title": "t", "body": "b"}),
            "input.kind",
        ),
        (
            json!({"userId": target, "kind": "a.b", "title": "", "body": "b"}),
            "input.title",
        ),
        (
            json!({"userId": target, "kind": "a.b", "title": "t", "body": "x".repeat(5001)}),
            "input.body",
        ),
        (
            json!({"userId": "", "kind": "a.b", "title": "t", "body": "b"}),
            "input.userId",
        ),
    ] {
        let body = app.gql(SEND, json!({"i": input}), Some(&token)).await;
        assert_eq!(code(&body), "MSCoreValidation", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field);
    }
    assert!(app.notifications_of(&target).await.is_empty());
}

#[tokio::test]
async fn error_codes_and_federation_sdl_are_served() {
    let app = spawn_app(&[]).await;

    let body = app.gql("{ _errorCodes }", json!({}), None).await;
    let codes = body["data"]["_errorCodes"].as_array().unwrap();
    assert!(codes.contains(&json!("MSNotificationNotFound")));
    let body = app.gql("{ _service { sdl } }", json!({}), None).await;
    let sdl = body["data"]["_service"]["sdl"].as_str().unwrap();
    assert!(
        sdl.contains("type Notification @key(fields: \"id\")"),
        "{sdl}"
    );
    let body = app
        .gql(
            "{ __schema { subscriptionType { fields { name } } } }",
            json!({}),
            None,
        )
        .await;
    assert_eq!(
        body["data"]["__schema"]["subscriptionType"]["fields"],
        json!([{"name": "notificationReceived"}])
    );
    assert!(sdl.contains(
        "myNotifications(first: Int, after: String, unreadOnly: Boolean): NotificationConnection!"
    ));
}
