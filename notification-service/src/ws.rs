//! Subscriptions over WebSocket on the subgraph: `GET /graphql` upgraded
//! with the `graphql-transport-ws` (or legacy `graphql-ws`) sub-protocol,
//! the access token in the `connection_init` payload as
//! `{"Authorization": "Bearer <token>"}`, as at the gateway.
//!
//! The core server kit serves `GET /graphql` as plain HTTP, so this is a
//! layer in front of it that takes only upgrade requests.

use std::sync::Arc;

use async_graphql::Data;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::{FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use service_core::access_engine::AccessEngine;
use service_core::auth::TokenVerifier;
use service_core::{ApiError, Principal, RequestContext, RequestId};

use crate::schema::NotificationSchema;

/// What the upgrade layer needs.
#[derive(Clone)]
pub(crate) struct WsState {
    /// The schema subscriptions run on.
    pub(crate) schema: NotificationSchema,
    /// Verifies the token of `connection_init`; without one, any token is refused.
    pub(crate) verifier: Option<Arc<TokenVerifier>>,
    /// The permission rules.
    pub(crate) access: Arc<AccessEngine>,
}

impl WsState {
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
                let invalid = || {
                    ApiError::new(
                        service_core::codes::AUTH_INVALID_TOKEN,
                        "Invalid access token",
                    )
                };
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

/// Middleware: WebSocket upgrades of `/graphql` become subscription
/// connections; everything else goes on to the server kit.
pub(crate) async fn upgrade(
    State(state): State<WsState>,
    request: Request,
    next: Next,
) -> Response {
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
        .on_upgrade(move |stream| {
            let schema = state.schema.clone();
            GraphQLWebSocket::new(stream, schema, protocol)
                .on_connection_init(move |payload| async move {
                    state.authenticate(&payload, request_id)
                })
                .serve()
        })
}
