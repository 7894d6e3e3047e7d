//! The same service on real dependencies: the store on the MongoDB wire
//! server, the durable queue on Redis Streams and the live feed across two
//! instances through Redis pub/sub. `TEST_MONGODB_URI` and `TEST_REDIS_URL`
//! come from the test script; a missing one fails the test loudly.

use std::time::Duration;

use futures::StreamExt;
use notification_service::domain::NewNotification;
use notification_service::store::{Channel, NotificationStatus};
use serde_json::json;
use service_core::auth::SigningKey;

use crate::helpers::{new_user, spawn_app, spawn_app_with_key, KID, TENANT};
use crate::listeners::HttpListener;

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests through scripts/test.sh (or `source /tmp/devenv.sh`), which starts the dependency")
    })
}

fn unique_brand() -> String {
    format!("n{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

#[tokio::test]
async fn the_store_works_on_the_mongodb_wire_server() {
    let app = spawn_app(&[
        ("MONGODB_URI", required("TEST_MONGODB_URI")),
        ("BRAND", unique_brand()),
        ("DB_NAMING", "per-brand-service".into()),
    ])
    .await;
    let user = new_user();
    let token = app.token(&user, &["user"]);
    let new = NewNotification {
        user_id: user.clone(),
        tenant_id: TENANT.into(),
        kind: "deposit.completed".into(),
        title: "Deposit".into(),
        body: "Money".into(),
        data: None,
        cause: "event-1".into(),
        channels: Some(vec![]),
        allowed: None,
        email: None,
    };

    let first = app.service.notify(new.clone()).await.unwrap();
    let again = app.service.notify(new).await.unwrap();
    app.notify(&user, "other.kind", Some(vec![]), None).await;

    assert_eq!(
        first[0].id, again[0].id,
        "idempotent by cause on MongoDB too"
    );
    let body = app
        .gql(
            "{ myNotifications(first: 1) { nodes { kind } totalCount pageInfo { hasNextPage } } }",
            json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(body["data"]["myNotifications"]["totalCount"], 2, "{body}");
    assert_eq!(
        body["data"]["myNotifications"]["nodes"][0]["kind"],
        "other.kind"
    );
    let read = app
        .gql(
            "mutation($id: ID!) { markNotificationRead(id: $id) { status } }",
            json!({"id": first[0].id}),
            Some(&token),
        )
        .await;
    assert_eq!(
        read["data"]["markNotificationRead"]["status"], "READ",
        "{read}"
    );
}

#[tokio::test]
async fn deliveries_go_through_the_durable_redis_queue() {
    let sms = HttpListener::start().await;
    let app = spawn_app(&[
        ("REDIS_URL", required("TEST_REDIS_URL")),
        ("BRAND", unique_brand()),
        ("NOTIFICATION_SMS_URL", sms.url.clone()),
        ("NOTIFICATION_CONCURRENCY", "3".into()),
    ])
    .await;
    assert!(app.service.queue().is_durable());
    let user = new_user();

    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(
            app.notify(&user, "a.b", Some(vec![Channel::Sms]), None)
                .await[1]
                .id
                .clone(),
        );
    }

    for id in &ids {
        assert_eq!(app.settled(id).await.status, NotificationStatus::Sent);
    }
    assert_eq!(sms.control.accepted().len(), 20);
    assert!(
        sms.control
            .max_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
            <= 3
    );
}

#[tokio::test]
async fn the_live_feed_crosses_instances_through_redis() {
    let redis = required("TEST_REDIS_URL");
    let brand = unique_brand();
    let key = SigningKey::generate(KID).unwrap();
    let vars = [
        ("REDIS_URL", redis),
        ("BRAND", brand),
        ("NOTIFICATION_REDIS_QUEUE", "false".into()),
    ];
    let a = spawn_app_with_key(&vars, key.clone(), None).await;
    let b = spawn_app(&vars).await;
    let user = new_user();
    let mine = user.clone();
    let mut on_b = b.service.live().subscribe(move |n| n.user_id == mine);

    let created = a.notify(&user, "cross.instance", Some(vec![]), None).await;

    let received = tokio::time::timeout(Duration::from_secs(20), on_b.next())
        .await
        .expect("the other instance heard it")
        .expect("a notification");
    assert_eq!(received.id, created[0].id);
}
