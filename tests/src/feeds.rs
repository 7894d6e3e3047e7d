//! Subscription clients of the gateway, over both transports it serves:
//! `graphql-transport-ws` on a WebSocket (the token in `connection_init`)
//! and graphql-sse (`POST /graphql` with `Accept: text/event-stream`).
//! A [`Feed`] yields the GraphQL results (`{ data, errors }`) it receives;
//! the subscriptions test, the subscription benchmark and the soak's
//! subscribers all read their events through it.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use futures::{SinkExt, StreamExt};
use gateway::testing::parse_sse_block;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long the gateway may take to acknowledge a connection.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// The WebSocket subprotocol the gateway speaks.
const SUBPROTOCOL: &str = "graphql-transport-ws";

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The transport of a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `graphql-transport-ws`.
    WebSocket,
    /// graphql-sse, distinct-connections mode.
    Sse,
}

impl Transport {
    /// Its short name in reports and labels (`ws`, `sse`).
    pub fn name(self) -> &'static str {
        match self {
            Transport::WebSocket => "ws",
            Transport::Sse => "sse",
        }
    }
}

/// One running subscription.
pub enum Feed {
    /// Over a WebSocket, under the operation id `id`.
    WebSocket {
        /// The socket.
        socket: Box<Socket>,
        /// The operation id given in `subscribe`.
        id: String,
    },
    /// Over a streaming HTTP response.
    Sse(EventStream),
}

impl Feed {
    /// Subscribes to `query` with `token` over `transport` at the gateway's
    /// `graphql_url`. `client` carries the SSE requests; it must have no
    /// overall timeout, since a stream stays open as long as it is read.
    /// A WebSocket must be answered in the `graphql-transport-ws`
    /// subprotocol and acknowledged; an SSE stream must be answered `200`
    /// as `text/event-stream`.
    pub async fn open(
        transport: Transport,
        client: &reqwest::Client,
        graphql_url: &str,
        token: &str,
        query: &str,
    ) -> anyhow::Result<Self> {
        match transport {
            Transport::WebSocket => Self::websocket(graphql_url, token, query).await,
            Transport::Sse => Self::sse(client, graphql_url, token, query).await,
        }
    }

    async fn websocket(graphql_url: &str, token: &str, query: &str) -> anyhow::Result<Self> {
        let url = graphql_url.replacen("http://", "ws://", 1);
        let mut request = url.as_str().into_client_request()?;
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        let (socket, response) = tokio_tungstenite::connect_async(request).await?;
        let protocol = response.headers().get("sec-websocket-protocol");
        if protocol != Some(&HeaderValue::from_static(SUBPROTOCOL)) {
            bail!("the gateway answered the subprotocol {protocol:?}, not {SUBPROTOCOL}");
        }
        let mut socket = Box::new(socket);
        send(
            &mut socket,
            json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }),
        )
        .await?;
        let ack = tokio::time::timeout(ACK_TIMEOUT, receive(&mut socket))
            .await
            .context("no connection_ack")??;
        if ack != json!({ "type": "connection_ack" }) {
            bail!("expected connection_ack, got {ack}");
        }
        let id = uuid::Uuid::new_v4().to_string();
        send(
            &mut socket,
            json!({ "id": id, "type": "subscribe", "payload": { "query": query } }),
        )
        .await?;
        Ok(Feed::WebSocket { socket, id })
    }

    async fn sse(
        client: &reqwest::Client,
        graphql_url: &str,
        token: &str,
        query: &str,
    ) -> anyhow::Result<Self> {
        let response = client
            .post(graphql_url)
            .header("accept", "text/event-stream")
            .bearer_auth(token)
            .json(&json!({ "query": query }))
            .send()
            .await?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            bail!("SSE refused with {status}: {}", response.text().await?);
        }
        let media = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if !media.starts_with("text/event-stream") {
            bail!("an SSE stream answered as `{media}`");
        }
        Ok(Feed::Sse(EventStream {
            response,
            buffer: String::new(),
        }))
    }

    /// The next result. A completed, failed or closed subscription is an
    /// error.
    pub async fn next(&mut self) -> anyhow::Result<Value> {
        match self {
            Feed::WebSocket { socket, id } => {
                let message = receive(socket).await?;
                if message["type"] != json!("next") || message["id"] != json!(id) {
                    bail!("expected `next` for {id}, got {message}");
                }
                Ok(message["payload"].clone())
            }
            Feed::Sse(stream) => {
                let (event, data) = stream.next().await?;
                if event != "next" {
                    bail!("expected `event: next`, got `{event}`: {data}");
                }
                if !data.is_object() {
                    bail!("an SSE `next` event without a JSON result: {data}");
                }
                Ok(data)
            }
        }
    }

    /// The next result, waiting at most `timeout`; `Ok(None)` when nothing
    /// came in time. A completed, failed or closed subscription is an error.
    pub async fn next_within(&mut self, timeout: Duration) -> anyhow::Result<Option<Value>> {
        match tokio::time::timeout(timeout, self.next()).await {
            Ok(result) => result.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Ends the subscription: `complete` and a close frame on a socket; an
    /// SSE stream ends when its response is dropped.
    pub async fn close(self) -> anyhow::Result<()> {
        if let Feed::WebSocket { mut socket, id } = self {
            send(&mut socket, json!({ "id": id, "type": "complete" })).await?;
            (*socket).close(None).await?;
        }
        Ok(())
    }
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

/// Reads SSE events (`event`, parsed `data`) from a streaming response.
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    async fn next(&mut self) -> anyhow::Result<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_sse_block(&block) {
                    return Ok(event);
                }
                // A block of comments only is a keep-alive.
                continue;
            }
            let chunk = self
                .response
                .chunk()
                .await?
                .ok_or_else(|| anyhow!("the stream ended"))?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}
