//! Subscriptions through the gateway: the real auth, payment and
//! notification subgraphs on one in-process event bus, a gateway in front,
//! clients over WebSocket (`graphql-transport-ws`) and SSE.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use futures::{SinkExt, StreamExt};
use gateway::{Application, Gateway, GatewayDeps, GatewaySettings, SubgraphEndpoint};
use serde_json::{json, Value};
use service_core::auth::{
    KeySet, RevocationList, SigningKey, TokenIssuer, TokenSubject, TokenVerifier,
};
use service_core::config::AppEnv;
use service_core::events::{BusConfig, EventBus};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::helpers::jwt_settings;

const KID: &str = "subscriptions-test";

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Platform {
    url: String,
    ws_url: String,
    client: reqwest::Client,
    issuer: TokenIssuer,
    payment: payment_service::PaymentService,
    payment_url: String,
    gateway: Gateway,
    verifier: Arc<TokenVerifier>,
    stops: Vec<CancellationToken>,
    /// What the notification subgraph is started again with.
    notification: Option<Restart>,
    _dirs: Vec<tempfile::TempDir>,
}

/// Where [`stops`](Platform::stops) keeps the notification subgraph's token.
const NOTIFICATION: usize = 2;

/// The notification subgraph's run, and how to start it again on its
/// port and data.
struct Restart {
    running: JoinHandle<std::io::Result<()>>,
    bus: EventBus,
    vars: Vec<(String, String)>,
    port: u16,
}

impl Drop for Platform {
    fn drop(&mut self) {
        for stop in &self.stops {
            stop.cancel();
        }
    }
}

struct User {
    id: String,
    email: String,
    token: String,
    wallet: String,
}

async fn start() -> Platform {
    let dalek = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = dalek.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let key = SigningKey::from_pkcs8_pem(KID, &pem).unwrap();
    let public_keys = json!({ KID: key.public_pem() }).to_string();
    let bus = EventBus::connect(None, "subscriptions", BusConfig::default())
        .await
        .unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let vars = |pairs: &[(&str, String)], dir: &tempfile::TempDir| -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        vars.push(("DATA_DIR".to_owned(), dir.path().display().to_string()));
        vars.push(("JWT_PUBLIC_KEYS".to_owned(), public_keys.clone()));
        vars
    };
    let mut stops = Vec::new();
    let mut endpoints = Vec::new();

    let settings = auth_service::Settings::from_vars(vars(
        &[
            ("AUTH_ADDR", "127.0.0.1:0".to_owned()),
            ("AUTH_JWT_PRIVATE_KEY", pem.clone()),
            ("AUTH_JWT_KID", KID.to_owned()),
        ],
        &dirs[0],
    ))
    .unwrap();
    let app = auth_service::Application::build_with_bus(settings, Some(bus.clone()))
        .await
        .unwrap();
    endpoints.push(endpoint(auth_service::SERVICE, app.port()));
    stops.push(app.shutdown_token());
    tokio::spawn(app.run_until_stopped());

    let settings = payment_service::Settings::from_vars(vars(
        &[
            ("PAYMENT_ADDR", "127.0.0.1:0".to_owned()),
            ("PAYMENT_RECONCILE_INTERVAL_SECONDS", "0".to_owned()),
            ("PAYMENT_RECOVERY_INTERVAL_SECONDS", "0".to_owned()),
        ],
        &dirs[1],
    ))
    .unwrap();
    let app = payment_service::Application::build_with_bus(settings, Some(bus.clone()))
        .await
        .unwrap();
    endpoints.push(endpoint(payment_service::SERVICE, app.port()));
    let payment_url = endpoints[1].url.clone();
    stops.push(app.shutdown_token());
    let payment = app.service().clone();
    tokio::spawn(app.run_until_stopped());

    let notification_vars = vars(&[], &dirs[2]);
    let (port, stop, running) = start_notification(&bus, notification_vars.clone(), 0).await;
    endpoints.push(endpoint(notification_service::SERVICE, port));
    stops.push(stop);

    // Like the launcher's gateway, this one refuses ended sessions.
    let verifier = Arc::new(
        TokenVerifier::new(KeySet::default().with(key.verifying_key()), jwt_settings())
            .with_revocations(RevocationList::follow(&bus).await.unwrap()),
    );
    let gateway = gateway_with(
        GatewaySettings {
            addr: "127.0.0.1:0".to_owned(),
            subgraphs: endpoints,
            ..GatewaySettings::default()
        },
        &verifier,
    )
    .await;
    let app = Application::bind(gateway.clone()).await.unwrap();
    let addr = app.local_addr().unwrap();
    stops.push(app.shutdown_token());
    tokio::spawn(app.run_until_stopped());
    Platform {
        url: format!("http://{addr}/graphql"),
        ws_url: format!("ws://{addr}/graphql"),
        client: reqwest::Client::new(),
        issuer: TokenIssuer::new(key, jwt_settings()),
        payment,
        payment_url,
        gateway,
        verifier,
        stops,
        notification: Some(Restart {
            running,
            bus,
            vars: notification_vars,
            port,
        }),
        _dirs: dirs,
    }
}

/// Starts the notification subgraph on `port` (0: any) with `bus`;
/// returns the port, the token that stops it and its run.
async fn start_notification(
    bus: &EventBus,
    mut vars: Vec<(String, String)>,
    port: u16,
) -> (u16, CancellationToken, JoinHandle<std::io::Result<()>>) {
    vars.push(("NOTIFICATION_ADDR".to_owned(), format!("127.0.0.1:{port}")));
    let settings = notification_service::Settings::from_vars(vars).unwrap();
    let app = notification_service::Application::build_with_bus(settings, Some(bus.clone()))
        .await
        .unwrap();
    let (port, stop) = (app.port(), app.shutdown_token());
    (port, stop, tokio::spawn(app.run_until_stopped()))
}

async fn gateway_with(settings: GatewaySettings, verifier: &Arc<TokenVerifier>) -> Gateway {
    Gateway::build(
        settings,
        GatewayDeps {
            app_env: AppEnv::Development,
            verifier: Some(verifier.clone()),
            access: Arc::new(access_engine::default_policy()),
            redis: None,
        },
    )
    .await
    .unwrap()
}

fn endpoint(name: &str, port: u16) -> SubgraphEndpoint {
    SubgraphEndpoint::new(name, format!("http://127.0.0.1:{port}/graphql"))
}

impl Platform {
    async fn gql(&self, query: &str, variables: Value, token: Option<&str>) -> Value {
        let mut request = self
            .client
            .post(&self.url)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    fn admin(&self) -> String {
        self.issuer
            .issue(&TokenSubject {
                user_id: uuid::Uuid::new_v4().to_string(),
                tenant_id: "default".to_owned(),
                roles: vec!["admin".to_owned()],
                permissions: Vec::new(),
                session_id: "admin".to_owned(),
            })
            .unwrap()
            .token
    }

    /// Registers a user through the gateway and opens a EUR wallet once the
    /// payment service has learned of them.
    async fn user(&self) -> User {
        let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let body = self
            .gql(
                "mutation($i: RegisterInput!) { register(input: $i) { accessToken user { id } } }",
                json!({ "i": { "email": email, "password": "correct-horse-battery-42" } }),
                None,
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
        let token = body["data"]["register"]["accessToken"]
            .as_str()
            .unwrap()
            .to_owned();
        let id = body["data"]["register"]["user"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        // `user.registered` reaches the payment service through the bus.
        for _ in 0..500 {
            if self.payment.knows_user(&id).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let body = self
            .gql(
                "mutation { createWallet(currency: \"EUR\") { id } }",
                json!({}),
                Some(&token),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
        let wallet = body["data"]["createWallet"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        User {
            id,
            email,
            token,
            wallet,
        }
    }

    async fn deposit(&self, wallet: &str, amount: i64) {
        let body = self
            .gql(
                "mutation($i: DepositInput!) { deposit(input: $i) { id } }",
                json!({ "i": { "walletId": wallet, "amount": amount } }),
                Some(&self.admin()),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
    }

    async fn notify(&self, user: &User, kind: &str) {
        let body = self
            .gql(
                "mutation($i: SendNotificationInput!) { sendNotification(input: $i) { id } }",
                json!({ "i": {
                    "userId": user.id, "kind": kind, "title": "t", "body": "b",
                    "channels": ["IN_APP"],
                } }),
                Some(&self.admin()),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
    }

    /// The wallet as its owner reads it through the gateway, in the shape
    /// of [`WALLET_UPDATED`].
    async fn wallet(&self, user: &User) -> Value {
        let body = self
            .gql(
                "{ myWallets { id balance user { id email } } }",
                json!({}),
                Some(&user.token),
            )
            .await;
        body["data"]["myWallets"][0].clone()
    }

    async fn socket(&self, token: &str) -> Socket {
        let mut request = self.ws_url.as_str().into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("graphql-transport-ws"),
        );
        let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            "graphql-transport-ws"
        );
        send(
            &mut socket,
            json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }),
        )
        .await;
        let ack = next(&mut socket).await.unwrap();
        assert_eq!(ack, json!({ "type": "connection_ack" }));
        socket
    }
}

/// A `walletUpdated` with a field of another subgraph (`user.email` comes
/// from auth), so each event runs an entity fetch after the subscription.
const WALLET_UPDATED: &str = "subscription { walletUpdated { id balance user { id email } } }";

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

/// The next protocol message, `None` when the socket closed.
async fn next(socket: &mut Socket) -> Option<Value> {
    loop {
        match socket.next().await? {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(text.as_str()).unwrap()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Waits for the first message while `trigger` keeps making events: the
/// upstream subscription starts asynchronously, so early events may go
/// unseen.
async fn first_event<F, Fut>(socket: &mut Socket, mut trigger: F) -> Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..100 {
        trigger().await;
        if let Ok(message) = tokio::time::timeout(Duration::from_millis(300), next(socket)).await {
            let message = message.expect("the socket stayed open");
            assert_eq!(message["type"], "next", "{message}");
            return message;
        }
    }
    panic!("no event arrived");
}

/// `walletUpdated` messages until one shows `balance`; every one must be
/// `user`'s wallet.
async fn until_balance(socket: &mut Socket, user: &User, expected: &Value) -> Value {
    loop {
        let message = next(socket).await.expect("the socket stayed open");
        assert_eq!(message["type"], "next", "{message}");
        let wallet = &message["payload"]["data"]["walletUpdated"];
        assert_eq!(
            wallet["id"],
            json!(user.wallet),
            "another wallet: {message}"
        );
        assert_eq!(
            wallet["user"]["id"],
            json!(user.id),
            "another user: {message}"
        );
        if &wallet["balance"] == expected {
            return message;
        }
    }
}

#[tokio::test]
async fn wallet_updates_reach_their_owner_over_websocket_with_fields_of_other_subgraphs() {
    let platform = start().await;
    let (alice, bob) = (platform.user().await, platform.user().await);
    let mut alice_socket = platform.socket(&alice.token).await;
    let mut bob_socket = platform.socket(&bob.token).await;
    let subscribe =
        json!({ "id": "w", "type": "subscribe", "payload": { "query": WALLET_UPDATED } });
    send(&mut alice_socket, subscribe.clone()).await;
    send(&mut bob_socket, subscribe).await;

    let first = first_event(&mut alice_socket, || platform.deposit(&alice.wallet, 1)).await;
    assert_eq!(first["id"], "w", "{first}");
    first_event(&mut bob_socket, || platform.deposit(&bob.wallet, 1)).await;

    platform.deposit(&alice.wallet, 500).await;
    let expected = platform.wallet(&alice).await;
    assert_eq!(expected["user"]["email"], json!(alice.email));
    let event = until_balance(&mut alice_socket, &alice, &expected["balance"]).await;
    assert_eq!(
        event,
        json!({ "id": "w", "type": "next", "payload": { "data": { "walletUpdated": expected } } })
    );

    // Alice's deposit was made before Bob's: had Bob's subscription let it
    // through, it would come before Bob's own update.
    platform.deposit(&bob.wallet, 7).await;
    let expected = platform.wallet(&bob).await;
    let event = until_balance(&mut bob_socket, &bob, &expected["balance"]).await;
    assert_eq!(event["payload"]["data"]["walletUpdated"], expected);
}

#[tokio::test]
async fn completing_or_disconnecting_closes_the_upstream_subscription() {
    let platform = start().await;
    let alice = platform.user().await;
    let mut socket = platform.socket(&alice.token).await;
    send(
        &mut socket,
        json!({ "id": "a", "type": "subscribe", "payload": { "query": WALLET_UPDATED } }),
    )
    .await;
    first_event(&mut socket, || platform.deposit(&alice.wallet, 1)).await;
    assert_eq!(platform.payment.subscriber_count(), 1);

    send(&mut socket, json!({ "id": "a", "type": "complete" })).await;
    wait_for_subscribers(&platform, 0).await;

    // The connection stays usable: ping, and a new subscription.
    send(&mut socket, json!({ "type": "ping" })).await;
    assert_eq!(next(&mut socket).await.unwrap(), json!({ "type": "pong" }));
    send(
        &mut socket,
        json!({ "id": "b", "type": "subscribe", "payload": { "query": WALLET_UPDATED } }),
    )
    .await;
    let event = first_event(&mut socket, || platform.deposit(&alice.wallet, 1)).await;
    assert_eq!(event["id"], "b", "{event}");
    assert_eq!(platform.payment.subscriber_count(), 1);

    drop(socket);
    wait_for_subscribers(&platform, 0).await;
}

async fn wait_for_subscribers(platform: &Platform, count: usize) {
    for _ in 0..500 {
        if platform.payment.subscriber_count() == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the payment subgraph still has {} subscribers, not {count}",
        platform.payment.subscriber_count()
    );
}

#[tokio::test]
async fn bad_tokens_limits_and_protocol_errors_are_refused() {
    let platform = start().await;
    let mut request = platform.ws_url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "Authorization": "Bearer not.a.token" } }),
    )
    .await;
    assert_eq!(close_code(&mut socket).await, Some(CloseCode::from(4403)));

    // Subscribing before connection_ack.
    let mut request = platform.ws_url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": WALLET_UPDATED } }),
    )
    .await;
    assert_eq!(close_code(&mut socket).await, Some(CloseCode::from(4401)));

    // No graphql-transport-ws sub-protocol offered.
    let request = platform.ws_url.as_str().into_client_request().unwrap();
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(close_code(&mut socket).await, Some(CloseCode::from(4406)));

    // A second connection_init; an id already running.
    let alice = platform.user().await;
    let mut socket = platform.socket(&alice.token).await;
    send(&mut socket, json!({ "type": "connection_init" })).await;
    assert_eq!(close_code(&mut socket).await, Some(CloseCode::from(4429)));
    let mut socket = platform.socket(&alice.token).await;
    let subscribe =
        json!({ "id": "1", "type": "subscribe", "payload": { "query": WALLET_UPDATED } });
    send(&mut socket, subscribe.clone()).await;
    send(&mut socket, subscribe).await;
    assert_eq!(close_code(&mut socket).await, Some(CloseCode::from(4409)));

    // Limits apply as to queries: too deep.
    let mut socket = platform.socket(&alice.token).await;
    let deep = "subscription { walletUpdated { user { wallets { user { wallets { user { wallets { user { wallets { user { wallets { id } } } } } } } } } } } }";
    send(
        &mut socket,
        json!({ "id": "d", "type": "subscribe", "payload": { "query": deep } }),
    )
    .await;
    let error = next(&mut socket).await.unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["id"], "d");
    assert_eq!(
        error["payload"][0]["extensions"]["code"],
        "MSGatewayQueryTooDeep"
    );

    // An anonymous subscriber is refused by the subgraph, with its code.
    let mut request = platform.ws_url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    send(&mut socket, json!({ "type": "connection_init" })).await;
    assert_eq!(next(&mut socket).await.unwrap()["type"], "connection_ack");
    send(
        &mut socket,
        json!({ "id": "x", "type": "subscribe", "payload": { "query": WALLET_UPDATED } }),
    )
    .await;
    let refused = next(&mut socket).await.unwrap();
    assert_eq!(refused["type"], "next", "{refused}");
    assert_eq!(refused["payload"]["data"], Value::Null, "{refused}");
    assert_eq!(
        refused["payload"]["errors"][0]["path"],
        json!(["walletUpdated"])
    );
    assert_eq!(
        next(&mut socket).await.unwrap(),
        json!({ "id": "x", "type": "complete" })
    );

    // SSE: a bad token is a 401 with the code, no stream.
    let response = platform
        .client
        .post(&platform.url)
        .header("accept", "text/event-stream")
        .bearer_auth("not.a.token")
        .json(&json!({ "query": WALLET_UPDATED }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "MSAuthInvalidToken"
    );

    // A subscription over plain HTTP stays refused.
    let body = platform
        .gql(WALLET_UPDATED, json!({}), Some(&alice.token))
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "MSGatewayValidationFailed"
    );
}

async fn close_code(socket: &mut Socket) -> Option<CloseCode> {
    loop {
        match socket.next().await? {
            Ok(Message::Close(frame)) => return frame.map(|f| f.code),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Reads SSE events (`event`, parsed `data`) from a streaming response.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                // A block of comments only is a keep-alive.
                if let Some(event) = gateway::testing::parse_sse_block(&block) {
                    return Some(event);
                }
                continue;
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

impl Platform {
    async fn event_stream(&self, token: &str, query: &str) -> EventStream {
        let response = self
            .client
            .post(&self.url)
            .header("accept", "text/event-stream")
            .bearer_auth(token)
            .json(&json!({ "query": query }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        EventStream {
            response,
            buffer: String::new(),
        }
    }
}

async fn first_sse_event<F, Fut>(stream: &mut EventStream, mut trigger: F) -> (String, Value)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..100 {
        trigger().await;
        if let Ok(event) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
            let event = event.expect("the stream stayed open");
            assert_eq!(event.0, "next", "{event:?}");
            return event;
        }
    }
    panic!("no event arrived");
}

#[tokio::test]
async fn wallet_updates_stream_over_sse_to_their_owner_only() {
    let platform = start().await;
    let (alice, bob) = (platform.user().await, platform.user().await);
    let mut alice_stream = platform.event_stream(&alice.token, WALLET_UPDATED).await;
    let mut bob_stream = platform.event_stream(&bob.token, WALLET_UPDATED).await;
    let (event, _) =
        first_sse_event(&mut alice_stream, || platform.deposit(&alice.wallet, 1)).await;
    assert_eq!(event, "next");
    first_sse_event(&mut bob_stream, || platform.deposit(&bob.wallet, 1)).await;

    platform.deposit(&alice.wallet, 300).await;
    platform.deposit(&bob.wallet, 9).await;
    for (stream, user) in [(&mut alice_stream, &alice), (&mut bob_stream, &bob)] {
        let expected = platform.wallet(user).await;
        loop {
            let (event, data) = stream.next().await.expect("the stream stayed open");
            assert_eq!(event, "next", "{data}");
            let wallet = &data["data"]["walletUpdated"];
            assert_eq!(wallet["user"]["id"], json!(user.id), "another user: {data}");
            if wallet["balance"] == expected["balance"] {
                assert_eq!(data, json!({ "data": { "walletUpdated": expected } }));
                break;
            }
        }
    }

    // Closing the stream closes the upstream subscriptions.
    drop(alice_stream);
    drop(bob_stream);
    wait_for_subscribers(&platform, 0).await;

    // A query over SSE is one `next` and `complete`.
    let mut stream = platform
        .event_stream(&alice.token, "{ myWallets { id } }")
        .await;
    let (event, data) = stream.next().await.unwrap();
    assert_eq!(event, "next");
    assert_eq!(
        data,
        json!({ "data": { "myWallets": [{ "id": alice.wallet }] } })
    );
    assert_eq!(stream.next().await.unwrap().0, "complete");
}

#[tokio::test]
async fn stopping_the_gateway_completes_running_subscriptions() {
    let platform = start().await;
    let alice = platform.user().await;
    let mut stream = platform.event_stream(&alice.token, WALLET_UPDATED).await;
    let mut socket = platform.socket(&alice.token).await;
    send(
        &mut socket,
        json!({ "id": "s", "type": "subscribe", "payload": { "query": WALLET_UPDATED } }),
    )
    .await;
    first_sse_event(&mut stream, || platform.deposit(&alice.wallet, 1)).await;
    first_event(&mut socket, || platform.deposit(&alice.wallet, 1)).await;

    // The gateway's token is the last one started.
    platform.stops.last().unwrap().cancel();
    loop {
        let (event, data) = stream.next().await.expect("the stream ends with complete");
        if event == "complete" {
            break;
        }
        assert_eq!(event, "next", "{data}");
    }
    assert!(stream.next().await.is_none(), "the stream ended");
    loop {
        let message = next(&mut socket)
            .await
            .expect("complete before the socket closes");
        if message["type"] == "complete" {
            assert_eq!(message["id"], "s");
            break;
        }
        assert_eq!(message["type"], "next", "{message}");
    }
    wait_for_subscribers(&platform, 0).await;
}

const NOTIFICATION_RECEIVED: &str = "subscription { notificationReceived { userId kind channel } }";

#[tokio::test]
async fn notifications_reach_their_recipient_over_websocket_and_sse() {
    let platform = start().await;
    let (alice, bob) = (platform.user().await, platform.user().await);
    let mut socket = platform.socket(&alice.token).await;
    send(
        &mut socket,
        json!({ "id": "n", "type": "subscribe", "payload": { "query": NOTIFICATION_RECEIVED } }),
    )
    .await;
    let mut stream = platform
        .event_stream(&bob.token, NOTIFICATION_RECEIVED)
        .await;
    first_event(&mut socket, || platform.notify(&alice, "warm.up")).await;
    first_sse_event(&mut stream, || platform.notify(&bob, "warm.up")).await;

    platform.notify(&alice, "for.alice").await;
    platform.notify(&bob, "for.bob").await;
    loop {
        let message = next(&mut socket).await.unwrap();
        let received = &message["payload"]["data"]["notificationReceived"];
        assert_eq!(received["userId"], json!(alice.id), "{message}");
        if received["kind"] == "for.alice" {
            assert_eq!(received["channel"], "IN_APP");
            break;
        }
    }
    loop {
        let (event, data) = stream.next().await.unwrap();
        assert_eq!(event, "next");
        let received = &data["data"]["notificationReceived"];
        assert_eq!(received["userId"], json!(bob.id), "{data}");
        if received["kind"] == "for.bob" {
            break;
        }
    }
}

#[tokio::test]
async fn a_subgraph_that_cannot_be_reached_ends_the_subscription_with_a_coded_error() {
    let platform = start().await;
    let alice = platform.user().await;
    // The same supergraph, with payment at a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sdl = platform.gateway.supergraph_sdl();
    let moved = sdl.replace(
        &platform.payment_url,
        &format!("http://127.0.0.1:{port}/graphql"),
    );
    assert_ne!(sdl, moved, "the supergraph names the payment URL");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("supergraph.graphql");
    std::fs::write(&path, moved).unwrap();
    let gateway = gateway_with(
        GatewaySettings {
            addr: "127.0.0.1:0".to_owned(),
            supergraph_path: Some(path),
            ..GatewaySettings::default()
        },
        &platform.verifier,
    )
    .await;
    let app = Application::bind(gateway).await.unwrap();
    let addr = app.local_addr().unwrap();
    let stop = app.shutdown_token();
    tokio::spawn(app.run_until_stopped());
    let broken = Platform {
        url: format!("http://{addr}/graphql"),
        ws_url: format!("ws://{addr}/graphql"),
        client: reqwest::Client::new(),
        issuer: platform.issuer.clone(),
        payment: platform.payment.clone(),
        payment_url: platform.payment_url.clone(),
        gateway: platform.gateway.clone(),
        verifier: platform.verifier.clone(),
        stops: vec![stop],
        notification: None,
        _dirs: vec![dir],
    };

    let mut socket = broken.socket(&alice.token).await;
    send(
        &mut socket,
        json!({ "id": "u", "type": "subscribe", "payload": { "query": WALLET_UPDATED } }),
    )
    .await;
    let error = next(&mut socket).await.unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["id"], "u");
    assert_eq!(
        error["payload"][0]["extensions"],
        json!({ "code": "MSGatewaySubgraphUnavailable", "serviceName": "payment" })
    );

    let mut stream = broken.event_stream(&alice.token, WALLET_UPDATED).await;
    let (event, data) = stream.next().await.unwrap();
    assert_eq!(event, "next");
    assert_eq!(
        data["errors"][0]["extensions"]["code"],
        "MSGatewaySubgraphUnavailable"
    );
    assert_eq!(stream.next().await.unwrap().0, "complete");
}

/// The next `error` message, skipping events; `None` if the socket closed.
async fn next_error(socket: &mut Socket) -> Option<Value> {
    loop {
        let message = next(socket).await?;
        if message["type"] == "error" {
            return Some(message);
        }
        assert_eq!(message["type"], "next", "{message}");
    }
}

/// The coded error ending an SSE stream: the last result before `complete`,
/// which must be errors only. Events in flight may come before it, and
/// after a revocation their entity fetches are refused too.
async fn sse_error(stream: &mut EventStream) -> Value {
    let mut last = None;
    loop {
        let (event, data) = stream.next().await.expect("complete after the error");
        if event == "complete" {
            break;
        }
        assert_eq!(event, "next", "{data}");
        last = Some(data);
    }
    assert!(stream.next().await.is_none(), "the stream ended");
    let last = last.expect("an error before the end");
    assert!(last["data"].is_null(), "{last}");
    last["errors"][0].clone()
}

#[tokio::test]
async fn ending_the_session_ends_its_subscriptions_over_both_transports() {
    let platform = start().await;
    let (alice, bob) = (platform.user().await, platform.user().await);
    let mut socket = platform.socket(&alice.token).await;
    send(
        &mut socket,
        json!({ "id": "w", "type": "subscribe", "payload": { "query": WALLET_UPDATED } }),
    )
    .await;
    let mut stream = platform.event_stream(&alice.token, WALLET_UPDATED).await;
    let mut bobs = platform.socket(&bob.token).await;
    send(
        &mut bobs,
        json!({ "id": "b", "type": "subscribe", "payload": { "query": WALLET_UPDATED } }),
    )
    .await;
    first_event(&mut socket, || platform.deposit(&alice.wallet, 1)).await;
    first_sse_event(&mut stream, || platform.deposit(&alice.wallet, 1)).await;
    first_event(&mut bobs, || platform.deposit(&bob.wallet, 1)).await;

    let body = platform
        .gql("mutation { logoutAll }", json!({}), Some(&alice.token))
        .await;
    assert_eq!(body["data"]["logoutAll"], true, "{body}");

    // No further deposit is needed: the revocation itself ends the streams.
    let error = tokio::time::timeout(Duration::from_secs(60), next_error(&mut socket))
        .await
        .expect("the revocation ended the subscription")
        .expect("the socket stayed open for the error");
    assert_eq!(error["id"], "w", "{error}");
    assert_eq!(
        error["payload"][0]["extensions"]["code"], "MSAuthInvalidToken",
        "{error}"
    );
    let error = tokio::time::timeout(Duration::from_secs(60), sse_error(&mut stream))
        .await
        .expect("the revocation ended the stream");
    assert_eq!(error["extensions"]["code"], "MSAuthInvalidToken", "{error}");

    // Bob's session is another: his subscription carries on.
    platform.deposit(&bob.wallet, 5).await;
    let expected = platform.wallet(&bob).await;
    until_balance(&mut bobs, &bob, &expected["balance"]).await;
    wait_for_subscribers(&platform, 1).await;
}

#[tokio::test]
async fn a_restarted_subgraph_ends_its_subscriptions_and_the_next_instance_serves_new_ones() {
    let mut platform = start().await;
    let alice = platform.user().await;
    let mut socket = platform.socket(&alice.token).await;
    let subscribe = |id: &str| json!({ "id": id, "type": "subscribe", "payload": { "query": NOTIFICATION_RECEIVED } });
    send(&mut socket, subscribe("before")).await;
    first_event(&mut socket, || platform.notify(&alice, "warm.up")).await;

    // Stopping the subgraph closes its connections, so the client learns
    // at once instead of waiting on a subscription nothing feeds.
    platform.stops[NOTIFICATION].cancel();
    let error = tokio::time::timeout(Duration::from_secs(60), next_error(&mut socket))
        .await
        .expect("stopping the subgraph ended the subscription")
        .expect("the socket stayed open for the error");
    assert_eq!(error["id"], "before", "{error}");
    assert_eq!(
        error["payload"][0]["extensions"]["code"], "MSGatewaySubgraphUnavailable",
        "{error}"
    );

    // The next instance, on the same port, data and bus, gets the events
    // the stopped one no longer consumes: a deposit notifies through the bus.
    let restart = platform.notification.take().unwrap();
    tokio::time::timeout(Duration::from_secs(60), restart.running)
        .await
        .expect("the stopped subgraph finished")
        .unwrap()
        .unwrap();
    let (_, stop, _) = start_notification(&restart.bus, restart.vars, restart.port).await;
    platform.stops[NOTIFICATION] = stop;
    send(&mut socket, subscribe("after")).await;
    let event = first_event(&mut socket, || platform.deposit(&alice.wallet, 1)).await;
    assert_eq!(event["id"], "after", "{event}");
    let received = &event["payload"]["data"]["notificationReceived"];
    assert_eq!(received["userId"], json!(alice.id), "{event}");
    assert_eq!(received["kind"], "deposit.completed", "{event}");
}
