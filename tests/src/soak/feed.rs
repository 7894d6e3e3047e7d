//! The soak's long-lived subscribers: one subscription over one transport
//! (`graphql-transport-ws` on a WebSocket, or graphql-sse on
//! `POST /graphql`) that counts the events it receives, checks each is its
//! owner's, and reconnects whenever the stream ends or fails (a stopped
//! subgraph ends the gateway's upstream subscription, so a soak with faults
//! sees many reconnects).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use futures::{SinkExt, StreamExt as _};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::Member;

/// How long the WebSocket handshake and `connection_ack` may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The pause between a dropped subscription and the next attempt.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// The transport a feed uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    WebSocket,
    Sse,
}

/// What a feed subscribes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Topic {
    WalletUpdated,
    NotificationReceived,
}

impl Topic {
    fn query(self) -> &'static str {
        match self {
            Topic::WalletUpdated => "subscription { walletUpdated { id balance currency } }",
            Topic::NotificationReceived => "subscription { notificationReceived { userId kind } }",
        }
    }

    /// Whether `payload` (a `{ data, errors }` result) is `member`'s own
    /// event; results carrying only errors are not events of anyone.
    fn owned_by(self, payload: &Value, member: &Member) -> bool {
        match self {
            Topic::WalletUpdated => payload["data"]["walletUpdated"]["id"] == json!(member.wallet),
            Topic::NotificationReceived => {
                payload["data"]["notificationReceived"]["userId"] == json!(member.id)
            }
        }
    }
}

/// The counters of one feed, shared with the soak's controller.
#[derive(Debug, Default)]
pub(crate) struct FeedStats {
    /// Events of the owner received.
    pub(crate) delivered: AtomicU64,
    /// Events of someone else received: must stay zero.
    pub(crate) foreign: AtomicU64,
    /// Results that carried errors instead of an event.
    pub(crate) errored: AtomicU64,
    /// Subscriptions opened (the first one included).
    pub(crate) connects: AtomicU64,
    /// Attempts to subscribe that failed before the subscription ran.
    pub(crate) failed_connects: AtomicU64,
}

/// One long-lived subscriber.
pub(crate) struct Feed {
    pub(crate) member: Arc<Member>,
    pub(crate) topic: Topic,
    pub(crate) transport: Transport,
    pub(crate) stats: Arc<FeedStats>,
}

impl Feed {
    /// A label for the summary: `<member> <topic> over <transport>`.
    pub(crate) fn label(&self) -> String {
        let topic = match self.topic {
            Topic::WalletUpdated => "walletUpdated",
            Topic::NotificationReceived => "notificationReceived",
        };
        let transport = match self.transport {
            Transport::WebSocket => "ws",
            Transport::Sse => "sse",
        };
        format!("{} {topic}/{transport}", self.member.label)
    }

    /// Subscribes, counts, and subscribes again after every end, until
    /// `stop` is cancelled.
    pub(crate) async fn run(self, graphql_url: String, stop: CancellationToken) {
        // A stream stays open for the whole soak: no request timeout.
        let client = reqwest::Client::new();
        while !stop.is_cancelled() {
            let token = self.member.token();
            let subscribed = tokio::select! {
                () = stop.cancelled() => return,
                subscribed = self.subscribe(&client, &graphql_url, &token) => subscribed,
            };
            match subscribed {
                Ok(mut stream) => {
                    self.stats.connects.fetch_add(1, Ordering::Relaxed);
                    loop {
                        let next = tokio::select! {
                            () = stop.cancelled() => {
                                stream.close().await;
                                return;
                            }
                            next = stream.next() => next,
                        };
                        match next {
                            Ok(payload) => self.count(&payload),
                            // Ended or failed: subscribe again.
                            Err(_) => break,
                        }
                    }
                }
                Err(_) => {
                    self.stats.failed_connects.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RECONNECT_PAUSE) => {}
            }
        }
    }

    fn count(&self, payload: &Value) {
        let counter = if self.topic.owned_by(payload, &self.member) {
            &self.stats.delivered
        } else if payload["errors"].is_null() {
            &self.stats.foreign
        } else {
            &self.stats.errored
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    async fn subscribe(
        &self,
        client: &reqwest::Client,
        graphql_url: &str,
        token: &str,
    ) -> anyhow::Result<Stream> {
        let query = self.topic.query();
        match self.transport {
            Transport::WebSocket => {
                tokio::time::timeout(CONNECT_TIMEOUT, websocket(graphql_url, token, query))
                    .await
                    .context("the WebSocket subscription did not start in time")?
            }
            Transport::Sse => sse(client, graphql_url, token, query).await,
        }
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An open subscription on either transport.
enum Stream {
    WebSocket {
        socket: Box<Socket>,
        id: String,
    },
    Sse {
        response: reqwest::Response,
        buffer: String,
    },
}

impl Stream {
    /// The next result (`{ data, errors }`); an error once the
    /// subscription completed, failed or the connection closed.
    async fn next(&mut self) -> anyhow::Result<Value> {
        match self {
            Stream::WebSocket { socket, id } => {
                let message = receive(socket).await?;
                match message["type"].as_str() {
                    Some("next") if message["id"] == json!(id) => Ok(message["payload"].clone()),
                    _ => bail!("the subscription ended: {message}"),
                }
            }
            Stream::Sse { response, buffer } => loop {
                if let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let mut event = None;
                    let mut data = String::new();
                    for line in block.lines() {
                        if let Some(name) = line.strip_prefix("event:") {
                            event = Some(name.trim().to_owned());
                        } else if let Some(chunk) = line.strip_prefix("data:") {
                            data.push_str(chunk.trim_start());
                        }
                    }
                    match event.as_deref() {
                        // A block of comments only is a keep-alive.
                        None => continue,
                        Some("next") => {
                            return serde_json::from_str(&data).context("an SSE event not JSON")
                        }
                        Some(other) => bail!("the stream ended with `{other}`: {data}"),
                    }
                }
                let chunk = response
                    .chunk()
                    .await?
                    .ok_or_else(|| anyhow!("the stream ended"))?;
                buffer.push_str(&String::from_utf8_lossy(&chunk));
            },
        }
    }

    /// Ends the subscription politely (`complete`, then a close frame); an
    /// SSE stream ends when its response is dropped.
    async fn close(self) {
        if let Stream::WebSocket { mut socket, id } = self {
            // The peer may be gone already: nothing to report then.
            let _ = send(&mut socket, json!({ "id": id, "type": "complete" })).await;
            let _ = SinkExt::close(&mut socket).await;
        }
    }
}

async fn websocket(graphql_url: &str, token: &str, query: &str) -> anyhow::Result<Stream> {
    let url = graphql_url.replacen("http://", "ws://", 1);
    let mut request = url.as_str().into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    let mut socket = Box::new(socket);
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }),
    )
    .await?;
    let ack = receive(&mut socket).await?;
    if ack["type"] != json!("connection_ack") {
        bail!("expected connection_ack, got {ack}");
    }
    let id = uuid::Uuid::new_v4().to_string();
    send(
        &mut socket,
        json!({ "id": id, "type": "subscribe", "payload": { "query": query } }),
    )
    .await?;
    Ok(Stream::WebSocket { socket, id })
}

async fn sse(
    client: &reqwest::Client,
    graphql_url: &str,
    token: &str,
    query: &str,
) -> anyhow::Result<Stream> {
    let response = client
        .post(graphql_url)
        .header("accept", "text/event-stream")
        .bearer_auth(token)
        .json(&json!({ "query": query }))
        .send()
        .await?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        bail!("SSE refused with {status}");
    }
    Ok(Stream::Sse {
        response,
        buffer: String::new(),
    })
}

async fn send(socket: &mut Socket, message: Value) -> anyhow::Result<()> {
    socket
        .send(Message::Text(message.to_string().into()))
        .await?;
    Ok(())
}

/// The next protocol message; answers `ping` itself.
async fn receive(socket: &mut Socket) -> anyhow::Result<Value> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                let message: Value = serde_json::from_str(text.as_str())?;
                if message["type"] == json!("ping") {
                    send(socket, json!({ "type": "pong" })).await?;
                    continue;
                }
                return Ok(message);
            }
            Some(Ok(Message::Close(frame))) => bail!("the socket closed: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err.into()),
            None => bail!("the socket ended"),
        }
    }
}
