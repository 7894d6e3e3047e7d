//! The gateway as a `graphql-transport-ws` client of a subgraph: one
//! connection per subscription, the caller's `Authorization` in the
//! `connection_init` payload and the request id on the upgrade request.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::ws::PROTOCOL;
use crate::execute::Forwarded;

/// The id of the one operation on an upstream connection.
const OPERATION_ID: &str = "1";

/// Why the subgraph's connection failed or ended without `complete`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UpstreamError(pub(crate) String);

/// What the subgraph sent.
pub(crate) enum Message {
    /// An execution result.
    Next(Value),
    /// The operation failed with these GraphQL errors.
    Error(Vec<Value>),
    /// The operation ended.
    Complete,
    /// The connection ended without `complete`.
    Closed(UpstreamError),
}

/// An open subscription on a subgraph.
pub(crate) struct Upstream {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

fn ws_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        url.to_owned()
    }
}

fn text(value: &Value) -> Frame {
    Frame::Text(value.to_string().into())
}

impl Upstream {
    /// Connects to the subgraph at `url` (its HTTP GraphQL URL), waits for
    /// `connection_ack` (at most `timeout`) and subscribes.
    #[tracing::instrument(skip_all, fields(url = %url), err)]
    pub(crate) async fn open(
        url: &str,
        query: &str,
        variables: Map<String, Value>,
        forwarded: &Forwarded,
        timeout: Duration,
    ) -> Result<Self, UpstreamError> {
        let failed =
            |what: &str, err: &dyn std::fmt::Display| UpstreamError(format!("{what}: {err}"));
        let mut request = ws_url(url)
            .into_client_request()
            .map_err(|err| failed("bad subgraph URL", &err))?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static(PROTOCOL));
        if let Some(id) = forwarded
            .request_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            request.headers_mut().insert("x-request-id", id);
        }
        let handshake = async {
            let (mut socket, _) = tokio_tungstenite::connect_async(request)
                .await
                .map_err(|err| failed("connect", &err))?;
            let payload = match &forwarded.authorization {
                Some(authorization) => json!({ "Authorization": authorization }),
                None => json!({}),
            };
            socket
                .send(text(
                    &json!({ "type": "connection_init", "payload": payload }),
                ))
                .await
                .map_err(|err| failed("send", &err))?;
            loop {
                match socket.next().await {
                    Some(Ok(Frame::Text(frame))) => {
                        let message: Value = serde_json::from_str(frame.as_str())
                            .map_err(|err| failed("bad message", &err))?;
                        match message["type"].as_str() {
                            Some("connection_ack") => break,
                            Some("ping") => socket
                                .send(text(&json!({ "type": "pong" })))
                                .await
                                .map_err(|err| failed("send", &err))?,
                            _ => {}
                        }
                    }
                    Some(Ok(Frame::Close(frame))) => {
                        let reason = frame
                            .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                            .unwrap_or_default();
                        return Err(UpstreamError(format!("refused the connection: {reason}")));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return Err(failed("receive", &err)),
                    None => return Err(UpstreamError("closed during the handshake".to_owned())),
                }
            }
            socket
                .send(text(&json!({
                    "id": OPERATION_ID,
                    "type": "subscribe",
                    "payload": { "query": query, "variables": variables },
                })))
                .await
                .map_err(|err| failed("send", &err))?;
            Ok(socket)
        };
        let socket = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| UpstreamError("no connection_ack in time".to_owned()))??;
        Ok(Self { socket })
    }

    /// The next thing the subgraph says about the operation.
    pub(crate) async fn next(&mut self) -> Message {
        loop {
            let frame = match self.socket.next().await {
                Some(Ok(frame)) => frame,
                Some(Err(err)) => return Message::Closed(UpstreamError(err.to_string())),
                None => return Message::Closed(UpstreamError("connection closed".to_owned())),
            };
            let message: Value = match frame {
                Frame::Text(frame) => match serde_json::from_str(frame.as_str()) {
                    Ok(message) => message,
                    Err(err) => {
                        return Message::Closed(UpstreamError(format!("bad message: {err}")))
                    }
                },
                Frame::Close(_) => {
                    return Message::Closed(UpstreamError("connection closed".to_owned()))
                }
                _ => continue,
            };
            match message["type"].as_str() {
                Some("next") if message["id"] == OPERATION_ID => {
                    return Message::Next(message["payload"].clone())
                }
                Some("error") if message["id"] == OPERATION_ID => {
                    return Message::Error(match &message["payload"] {
                        Value::Array(errors) => errors.clone(),
                        other => vec![other.clone()],
                    })
                }
                Some("complete") if message["id"] == OPERATION_ID => return Message::Complete,
                Some("ping") => {
                    if let Err(err) = self.socket.send(text(&json!({ "type": "pong" }))).await {
                        return Message::Closed(UpstreamError(err.to_string()));
                    }
                }
                _ => {}
            }
        }
    }

    /// Completes the operation and closes the connection.
    pub(crate) async fn close(mut self) {
        let _ = self
            .socket
            .send(text(&json!({ "id": OPERATION_ID, "type": "complete" })))
            .await;
        let _ = self.socket.close(None).await;
    }
}
