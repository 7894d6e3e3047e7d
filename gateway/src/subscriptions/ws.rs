//! Clients over WebSocket: `GET /graphql` upgraded with the
//! `graphql-transport-ws` sub-protocol (the graphql-ws protocol). The
//! access token travels in the `connection_init` payload as
//! `{"Authorization": "Bearer <token>"}` and is verified like an HTTP
//! request's; every `subscribe` is prepared (limits, validation, plan) and
//! rate-limited like an HTTP request.
//!
//! Close codes, as the protocol specifies: 4400 a malformed message, 4401
//! `subscribe` before `connection_ack`, 4403 a bad or expired token, 4406
//! no `graphql-transport-ws` sub-protocol, 4408 no `connection_init` in
//! time, 4409 a second subscriber with an id in use, 4429 a second
//! `connection_init`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use service_core::context::RequestId;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::Event;
use crate::auth::{self, Caller};
use crate::error::GraphqlError;
use crate::{Gateway, GraphqlRequest};

/// The sub-protocol spoken to clients and to subgraphs.
pub(crate) const PROTOCOL: &str = "graphql-transport-ws";

/// How long a client has to send `connection_init` after the upgrade.
const CONNECTION_INIT_TIMEOUT: Duration = Duration::from_secs(10);

fn is_upgrade(request: &Request) -> bool {
    request.uri().path() == "/graphql"
        && request
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn offers_protocol(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == PROTOCOL)
}

/// Middleware: WebSocket upgrades of `/graphql` become subscription
/// connections; everything else goes on to the HTTP handlers.
pub(crate) async fn upgrade(
    State(gateway): State<Gateway>,
    request: Request,
    next: Next,
) -> Response {
    if !is_upgrade(&request) {
        return next.run(request).await;
    }
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .cloned()
        .unwrap_or_else(RequestId::generate);
    let ip = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    let offered = offers_protocol(request.headers());
    let (mut parts, _body) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let span = tracing::info_span!("subscriptions", request_id = %request_id);
    let mut response = upgrade.protocols([PROTOCOL]).on_upgrade(move |socket| {
        let connection = Connection {
            gateway,
            request_id,
            ip,
            caller: None,
            running: HashMap::new(),
            started: 0,
        };
        connection.serve(socket, offered).instrument(span)
    });
    if let Ok(value) = HeaderValue::from_str(PROTOCOL) {
        if offered {
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
    }
    response
}

/// What the operations of a connection send its socket.
enum Out {
    /// A protocol message.
    Message(Value),
    /// The operation with this id and sequence number has ended.
    Finished(String, u64),
}

/// How the connection ends.
struct Close(u16, &'static str);

struct Connection {
    gateway: Gateway,
    request_id: RequestId,
    ip: Option<IpAddr>,
    caller: Option<Caller>,
    running: HashMap<String, (u64, AbortHandle)>,
    started: u64,
}

type Sink = SplitSink<WebSocket, Message>;

async fn send(sink: &mut Sink, message: &Value) -> bool {
    sink.send(Message::Text(message.to_string().into()))
        .await
        .is_ok()
}

async fn close(sink: &mut Sink, Close(code, reason): Close) {
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

impl Connection {
    async fn serve(mut self, socket: WebSocket, offered: bool) {
        let (mut sink, mut stream) = socket.split();
        if !offered {
            close(&mut sink, Close(4406, "Subprotocol not acceptable")).await;
            return;
        }
        let (out, mut outbox) = mpsc::channel::<Out>(64);
        let init_deadline = tokio::time::sleep(CONNECTION_INIT_TIMEOUT);
        tokio::pin!(init_deadline);
        let ended = loop {
            tokio::select! {
                () = &mut init_deadline, if self.caller.is_none() => {
                    break Some(Close(4408, "Connection initialisation timeout"));
                }
                Some(item) = outbox.recv() => match item {
                    Out::Message(message) => {
                        if !send(&mut sink, &message).await {
                            break None;
                        }
                    }
                    Out::Finished(id, sequence) => {
                        if self.running.get(&id).is_some_and(|(s, _)| *s == sequence) {
                            self.running.remove(&id);
                        }
                    }
                },
                frame = stream.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_)) | Err(_)) | None => break None,
                        Some(Ok(_)) => continue,
                    };
                    match self.handle(text.as_str(), &out).await {
                        Ok(replies) => {
                            let mut failed = false;
                            for reply in replies {
                                failed |= !send(&mut sink, &reply).await;
                            }
                            if failed {
                                break None;
                            }
                        }
                        Err(reason) => break Some(reason),
                    }
                }
            }
        };
        // Client gone or connection refused: every operation stops, which
        // closes its upstream connection.
        for (_, (_, handle)) in self.running.drain() {
            handle.abort();
        }
        if let Some(reason) = ended {
            close(&mut sink, reason).await;
        }
    }

    /// Handles one client message; answers the replies to send at once.
    async fn handle(&mut self, text: &str, out: &mpsc::Sender<Out>) -> Result<Vec<Value>, Close> {
        let malformed = || Close(4400, "Invalid message");
        let message: Value = serde_json::from_str(text).map_err(|_| malformed())?;
        match message["type"].as_str() {
            Some("connection_init") => {
                if self.caller.is_some() {
                    return Err(Close(4429, "Too many initialisation requests"));
                }
                let headers = authorization_headers(&message["payload"]);
                let caller = auth::authenticate(self.gateway.inner.verifier.as_deref(), &headers)
                    .map_err(|_| Close(4403, "Forbidden"))?;
                self.caller = Some(caller);
                Ok(vec![json!({ "type": "connection_ack" })])
            }
            Some("ping") => {
                let mut pong = json!({ "type": "pong" });
                if message["payload"].is_object() {
                    pong["payload"] = message["payload"].clone();
                }
                Ok(vec![pong])
            }
            Some("pong") => Ok(Vec::new()),
            Some("subscribe") => {
                let caller = self.caller.clone().ok_or(Close(4401, "Unauthorized"))?;
                let id = message["id"]
                    .as_str()
                    .filter(|id| !id.is_empty())
                    .ok_or_else(malformed)?
                    .to_owned();
                if self.running.contains_key(&id) {
                    return Err(Close(4409, "Subscriber for this id already exists"));
                }
                let request: GraphqlRequest =
                    serde_json::from_value(message["payload"].clone()).map_err(|_| malformed())?;
                if let Err(err) =
                    auth::rate_limit(&self.gateway.inner.limiter, &caller, self.ip).await
                {
                    self.gateway
                        .metrics()
                        .rejections
                        .with_label_values(&[err.code().as_str()])
                        .inc();
                    return Ok(vec![error_message(
                        &id,
                        vec![GraphqlError::from(*err).to_json()],
                    )]);
                }
                let session =
                    match super::start(&self.gateway, request, caller, self.request_id.clone()) {
                        Ok(session) => session,
                        Err(errors) => return Ok(vec![error_message(&id, errors)]),
                    };
                self.started += 1;
                let task = tokio::spawn(forward(id.clone(), self.started, session, out.clone()));
                self.running.insert(id, (self.started, task.abort_handle()));
                Ok(Vec::new())
            }
            Some("complete") => {
                if let Some((_, handle)) = message["id"]
                    .as_str()
                    .and_then(|id| self.running.remove(id))
                {
                    handle.abort();
                }
                Ok(Vec::new())
            }
            _ => Err(malformed()),
        }
    }
}

/// The `connection_init` payload's token as an `Authorization` header.
fn authorization_headers(payload: &Value) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let raw = payload
        .get("Authorization")
        .or_else(|| payload.get("authorization"))
        .and_then(Value::as_str);
    if let Some(value) = raw {
        // A value that is no header value is sent on as an empty one, which
        // the verifier refuses like any bad token.
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("")),
        );
    }
    headers
}

fn error_message(id: &str, errors: Vec<Value>) -> Value {
    json!({ "id": id, "type": "error", "payload": errors })
}

/// Sends one operation's results to the socket: `next` for each, then
/// `complete` (or `error`).
async fn forward(id: String, sequence: u64, mut session: super::Session, out: mpsc::Sender<Out>) {
    loop {
        let message = match session.next().await {
            Some(Event::Next(result)) => json!({ "id": id, "type": "next", "payload": result }),
            Some(Event::Error(errors)) => {
                let _ = out.send(Out::Message(error_message(&id, errors))).await;
                break;
            }
            None => {
                let _ = out
                    .send(Out::Message(json!({ "id": id, "type": "complete" })))
                    .await;
                break;
            }
        };
        // The socket is gone: dropping the session closes the upstream.
        if out.send(Out::Message(message)).await.is_err() {
            return;
        }
    }
    let _ = out.send(Out::Finished(id, sequence)).await;
}
