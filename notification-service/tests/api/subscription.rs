//! `notificationReceived` over WebSocket (graphql-transport-ws) on the
//! subgraph: the caller's own notifications and nobody else's.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{new_user, spawn_app, TestApp};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(app: &TestApp, payload: Value) -> Socket {
    let stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let mut request = format!("ws://127.0.0.1:{}/graphql", app.port)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, response) =
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    send(
        &mut socket,
        json!({"type": "connection_init", "payload": payload}),
    )
    .await;
    let ack = next_message(&mut socket, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

/// The next JSON text message, skipping pings; `None` if none arrives in
/// `wait` (a hang guard, not a timing assertion).
async fn next_message(socket: &mut Socket, wait: Duration) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(wait, socket.next()).await.ok()??;
        match message.unwrap() {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(text.as_str()).unwrap();
                if value["type"] == "ping" {
                    continue;
                }
                return Some(value);
            }
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

const SUBSCRIBE: &str = "subscription { notificationReceived { id userId kind channel } }";

#[tokio::test]
async fn a_subscriber_receives_its_own_notifications_and_not_another_users() {
    let app = spawn_app(&[]).await;
    let (alice, bob) = (new_user(), new_user());
    let token = app.token(&alice, &["user"]);
    let mut socket = connect(&app, json!({"Authorization": format!("Bearer {token}")})).await;
    send(
        &mut socket,
        json!({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIBE}}),
    )
    .await;

    // The subscription starts asynchronously: notify until one arrives.
    let mut first = None;
    for _ in 0..100 {
        app.notify(&alice, "warm.up", Some(vec![]), None).await;
        if let Some(message) = next_message(&mut socket, Duration::from_millis(200)).await {
            first = Some(message);
            break;
        }
    }
    let first = first.expect("the subscription delivered");
    assert_eq!(first["type"], "next", "{first}");
    assert_eq!(
        first["payload"]["data"]["notificationReceived"]["userId"],
        json!(alice)
    );
    // Drain the warm-up notifications that raced the first one.
    while let Some(message) = next_message(&mut socket, Duration::from_millis(300)).await {
        assert_eq!(
            message["payload"]["data"]["notificationReceived"]["kind"],
            "warm.up"
        );
    }

    // Now certainly subscribed: Bob's goes out first, then Alice's.
    app.notify(&bob, "for.bob", Some(vec![]), None).await;
    let mine = app.notify(&alice, "for.alice", Some(vec![]), None).await;

    let next = next_message(&mut socket, Duration::from_secs(10))
        .await
        .expect("a notification");
    let received = &next["payload"]["data"]["notificationReceived"];
    assert_eq!(received["kind"], "for.alice", "{next}");
    assert_eq!(received["id"], json!(mine[0].id));
    assert_eq!(received["channel"], "IN_APP");
    assert!(next_message(&mut socket, Duration::from_millis(300))
        .await
        .is_none());
}

#[tokio::test]
async fn an_anonymous_subscription_is_refused() {
    let app = spawn_app(&[]).await;
    let mut socket = connect(&app, json!({})).await;

    send(
        &mut socket,
        json!({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIBE}}),
    )
    .await;

    let message = next_message(&mut socket, Duration::from_secs(10))
        .await
        .expect("an answer");
    assert!(
        message.to_string().contains("MSCoreUnauthenticated"),
        "{message}"
    );
}

#[tokio::test]
async fn a_bad_token_closes_the_connection() {
    let app = spawn_app(&[]).await;
    let stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let mut request = format!("ws://127.0.0.1:{}/graphql", app.port)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();

    send(
        &mut socket,
        json!({"type": "connection_init", "payload": {"Authorization": "Bearer forged"}}),
    )
    .await;

    assert!(next_message(&mut socket, Duration::from_secs(10))
        .await
        .is_none());
}
