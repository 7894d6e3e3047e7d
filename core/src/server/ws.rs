//! Subscriptions over WebSocket on a subgraph: `GET /graphql` upgraded with
//! the `graphql-transport-ws` (or legacy `graphql-ws`) sub-protocol, the
//! access token in the `connection_init` payload as
//! `{"Authorization": "Bearer <token>"}`, as at the gateway.
//!
//! [`Subgraph`](super::Subgraph) serves `GET /graphql` as plain HTTP, so
//! this is a layer in front of its router that takes only upgrade requests:
//!
//! ```ignore
//! let closing = CancellationToken::new();
//! let router = ws::with_subscriptions(subgraph.router(), schema, verifier, access, closing.clone());
//! let server = Server::bind(addr, router).await?.with_shutdown(closing);
//! ```
//!
//! When `closing` is cancelled (the server is stopping), every connection
//! gets a close frame (`1001`, going away) and ends: the gateway then tells
//! its clients the subgraph is unavailable and they subscribe again, on the
//! next instance, instead of waiting on a connection nothing feeds.

use std::sync::Arc;

use access_engine::AccessEngine;
use async_graphql::{Data, Executor};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket};
use axum::extract::{FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::auth::TokenVerifier;
use crate::context::{Principal, RequestContext, RequestId};
use crate::error::{codes, ApiError};

/// What the upgrade layer needs: the schema subscriptions run on, the token
/// verifier, the permission rules and the token that ends the connections.
pub struct WsState<E> {
    executor: E,
    verifier: Option<Arc<TokenVerifier>>,
    access: Arc<AccessEngine>,
    closing: CancellationToken,
}

impl<E: Clone> Clone for WsState<E> {
    fn clone(&self) -> Self {
        Self {
            executor: self.executor.clone(),
            verifier: self.verifier.clone(),
            access: self.access.clone(),
            closing: self.closing.clone(),
        }
    }
}

impl<E> WsState<E> {
    /// Serves `executor` (an async-graphql `Schema`) until `closing` is
    /// cancelled; without a `verifier`, any token in `connection_init` is
    /// refused.
    pub fn new(
        executor: E,
        verifier: Option<Arc<TokenVerifier>>,
        access: Arc<AccessEngine>,
        closing: CancellationToken,
    ) -> Self {
        Self {
            executor,
            verifier,
            access,
            closing,
        }
    }

    /// The caller of a connection: anonymous without a token, an error
    /// (closing the connection) with a bad one.
    fn authenticate(&self, payload: &Value, request_id: RequestId) -> async_graphql::Result<Data> {
        let raw = payload
            .get("Authorization")
            .or_else(|| payload.get("authorization"))
            .and_then(Value::as_str);
        let principal = match raw {
            None => None,
            Some(raw) => {
                let invalid = || ApiError::new(codes::AUTH_INVALID_TOKEN, "Invalid access token");
                let token = raw
                    .strip_prefix("Bearer ")
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(invalid)?;
                let verifier = self.verifier.as_ref().ok_or_else(invalid)?;
                let claims = verifier.verify(token).map_err(ApiError::from)?;
                Some(Principal::from(claims))
            }
        };
        let mut data = Data::default();
        data.insert(RequestContext::new(
            request_id,
            principal,
            self.access.clone(),
        ));
        Ok(data)
    }
}

fn is_upgrade(request: &Request) -> bool {
    request.uri().path() == "/graphql"
        && request
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// `router` with WebSocket upgrades of `/graphql` served as subscription
/// connections on `executor` (a subgraph's schema), each closed when
/// `closing` is cancelled.
pub fn with_subscriptions<E>(
    router: axum::Router,
    executor: E,
    verifier: Option<Arc<TokenVerifier>>,
    access: Arc<AccessEngine>,
    closing: CancellationToken,
) -> axum::Router
where
    E: Executor + Clone + Send + Sync + 'static,
{
    router.layer(axum::middleware::from_fn_with_state(
        WsState::new(executor, verifier, access, closing),
        upgrade::<E>,
    ))
}

/// Middleware: WebSocket upgrades of `/graphql` become subscription
/// connections; everything else goes on to the router it wraps.
pub async fn upgrade<E>(State(state): State<WsState<E>>, request: Request, next: Next) -> Response
where
    E: Executor + Clone,
{
    if !is_upgrade(&request) {
        return next.run(request).await;
    }
    let request_id = request
        .headers()
        .get(RequestId::HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(RequestId::parse)
        .unwrap_or_else(RequestId::generate);
    let (mut parts, _body) = request.into_parts();
    let protocol = match GraphQLProtocol::from_request_parts(&mut parts, &()).await {
        Ok(protocol) => protocol,
        Err(rejection) => return rejection.into_response(),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| serve(socket, state, protocol, request_id))
}

/// Runs one connection until the client or the protocol ends it, or until
/// the server closes it.
async fn serve<E>(
    socket: WebSocket,
    state: WsState<E>,
    protocol: GraphQLProtocol,
    request_id: RequestId,
) where
    E: Executor + Clone,
{
    // The protocol writes into a channel rather than the socket, so that
    // the socket is still here to send the close frame when the server
    // stops.
    let (mut to_client, from_client) = socket.split();
    let (replies, mut outgoing) = futures::channel::mpsc::channel::<Message>(16);
    let closing = state.closing.clone();
    let session =
        GraphQLWebSocket::new_with_pair(replies, from_client, state.executor.clone(), protocol)
            .on_connection_init(
                move |payload| async move { state.authenticate(&payload, request_id) },
            )
            .serve();
    tokio::select! {
        _ = futures::future::join(session, async {
            while let Some(message) = outgoing.next().await {
                if to_client.send(message).await.is_err() {
                    return;
                }
            }
        }) => {}
        () = closing.cancelled() => {
            let frame = CloseFrame {
                code: close_code::AWAY,
                reason: "Server shutting down".into(),
            };
            let _ = to_client.send(Message::Close(Some(frame))).await;
        }
    }
}
