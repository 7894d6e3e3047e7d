//! Clients over Server-Sent Events, graphql-sse's "distinct connections"
//! mode: `POST /graphql` with `Accept: text/event-stream`, the token in the
//! `Authorization` header as for any HTTP request. Each result is an
//! `event: next`, the stream ends with `event: complete`; a comment every
//! [`KEEP_ALIVE`] keeps proxies from closing a quiet stream. A request
//! refused before execution gets the usual JSON error response instead.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::{header, HeaderMap};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use service_core::context::RequestId;

use super::Event;
use crate::Gateway;
use crate::GraphqlRequest;

/// How often an idle stream gets a keep-alive comment.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(12);

const EVENT_STREAM: &str = "text/event-stream";

/// Whether the client asks for an event stream.
pub(crate) fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| part.trim().starts_with(EVENT_STREAM))
}

/// Starts `request` for an already admitted caller and streams its
/// results; `Err` is the coded errors of a request refused before it ran.
pub(crate) fn stream(
    gateway: &Gateway,
    request: GraphqlRequest,
    caller: crate::auth::Caller,
    request_id: RequestId,
) -> Result<Response, Vec<Value>> {
    let session = super::start(gateway, request, caller, request_id)?;
    let events = futures::stream::unfold(Some(session), |session| async move {
        let mut session = session?;
        let event = match session.next().await {
            Some(Event::Next(result)) => next_event(&result),
            Some(Event::Error(errors)) => {
                // graphql-sse has no error event: the errors are the last
                // result, and `complete` follows.
                let event = next_event(&json!({ "errors": errors }));
                return Some((Ok::<_, Infallible>(event), None));
            }
            None => return None,
        };
        Some((Ok(event), Some(session)))
    });
    // `complete` ends every stream, after the last result or the errors.
    let events = futures::StreamExt::chain(
        events,
        futures::stream::once(async { Ok(SseEvent::default().event("complete").data("")) }),
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

fn next_event(result: &Value) -> SseEvent {
    SseEvent::default().event("next").data(result.to_string())
}
