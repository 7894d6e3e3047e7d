//! Subscriptions through the gateway: the operation is prepared like any
//! other (limits, validation, plan), its primary fetch is opened on the
//! owning subgraph over `graphql-transport-ws` with the caller's
//! `Authorization` and request id, and every upstream event runs the rest
//! of the plan (entity fields from other subgraphs) before it is projected
//! on the client's operation. [`ws`] and [`sse`] carry the results to the
//! client; dropping a [`Session`] closes the upstream connection. A
//! subscription lives no longer than its caller's token: when the token
//! expires or its session is revoked, the client gets that error and the
//! stream ends.

pub(crate) mod sse;
mod upstream;
pub(crate) mod ws;

use std::sync::Arc;

use hive_router_query_planner::planner::plan_nodes::{FetchNode, PlanNode};
use hive_router_query_planner::state::supergraph_state::OperationKind;
use serde_json::{Map, Value};
use service_core::auth::TokenError;
use service_core::context::{RequestContext, RequestId};
use service_core::error::ApiError;
use tokio::sync::mpsc;

use crate::auth::Caller;
use crate::error::{codes, GraphqlError};
use crate::execute::{self, Executor, Forwarded};
use crate::gateway::{Loaded, Prepared};
use crate::{Gateway, GraphqlRequest};

/// What a running operation sends its client.
#[derive(Debug)]
pub(crate) enum Event {
    /// One execution result (`data` and maybe `errors`).
    Next(Value),
    /// The operation failed; nothing follows. Coded GraphQL errors.
    Error(Vec<Value>),
}

/// A started operation: results arrive on [`Session::next`]; the channel
/// closing is `complete`. Dropping the session stops the operation and
/// closes its upstream connection.
pub(crate) struct Session {
    events: mpsc::Receiver<Event>,
}

impl Session {
    /// The next result, or `None` once the operation completed.
    pub(crate) async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

/// Starts `request` for `caller`. Queries and mutations run once (one
/// result, then complete); a subscription runs until its upstream
/// completes or the session is dropped. A request refused before execution
/// (parse, validation, limits) is `Err` with its coded errors.
pub(crate) fn start(
    gateway: &Gateway,
    request: GraphqlRequest,
    caller: Caller,
    request_id: RequestId,
) -> Result<Session, Vec<Value>> {
    let loaded = gateway.loaded();
    let refused = |error: GraphqlError| {
        gateway
            .metrics()
            .rejections
            .with_label_values(&[error.code()])
            .inc();
        vec![error.to_json()]
    };
    let prepared = gateway
        .prepare(&loaded, request.clone(), false)
        .map_err(|refused_early| refused(refused_early.0))?;
    let (sender, events) = mpsc::channel(16);
    if prepared.operation.kind != OperationKind::Subscription {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let (body, _) = gateway.execute(request, &caller, &request_id, false).await;
            // The body was serialized from JSON values: it parses.
            let body: Value = serde_json::from_slice(&body).unwrap_or_default();
            let event = match body.get("errors") {
                Some(Value::Array(errors)) if body.get("data").is_none() => {
                    Event::Error(errors.clone())
                }
                _ => Event::Next(body),
            };
            let _ = sender.send(event).await;
        });
        return Ok(Session { events });
    }
    let (primary, rest) = split_plan(&prepared).ok_or_else(|| {
        tracing::error!("a subscription plan without a subscription node");
        refused(GraphqlError::new(
            service_core::error::codes::INTERNAL,
            "The operation could not be planned",
        ))
    })?;
    gateway
        .metrics()
        .operations
        .with_label_values(&["subscription"])
        .inc();
    let running = Running {
        gateway: gateway.clone(),
        loaded,
        prepared,
        primary,
        rest,
        caller,
        request_id,
    };
    tokio::spawn(running.run(sender));
    Ok(Session { events })
}

/// The subscription's primary fetch and the plan nodes that follow it.
fn split_plan(prepared: &Prepared) -> Option<(FetchNode, Vec<PlanNode>)> {
    let node = prepared.operation.plan.as_ref()?.node.as_ref()?;
    match node {
        PlanNode::Subscription(subscription) => Some((subscription.primary.clone(), Vec::new())),
        PlanNode::Sequence(sequence) => match sequence.nodes.split_first() {
            Some((PlanNode::Subscription(subscription), rest)) => {
                Some((subscription.primary.clone(), rest.to_vec()))
            }
            _ => None,
        },
        _ => None,
    }
}

/// One subscription in flight.
struct Running {
    gateway: Gateway,
    loaded: Arc<Loaded>,
    prepared: Prepared,
    primary: FetchNode,
    rest: Vec<PlanNode>,
    caller: Caller,
    request_id: RequestId,
}

impl Running {
    async fn run(self, sender: mpsc::Sender<Event>) {
        let service = self.primary.service_name.clone();
        let forwarded = Forwarded {
            authorization: self.caller.authorization.clone(),
            request_id: Some(self.request_id.as_str().to_owned()),
            // What an event's fetches read must be at least as new as the
            // event: a read started before it might not be.
            shareable: false,
        };
        let variables: Map<String, Value> = self
            .primary
            .variable_usages
            .iter()
            .flatten()
            .filter_map(|name| {
                self.prepared
                    .variables
                    .get(name)
                    .map(|v| (name.clone(), v.clone()))
            })
            .collect();
        let url = self
            .loaded
            .supergraph
            .endpoints
            .get(&service)
            .map(|endpoint| endpoint.url.clone());
        let opened = match url {
            Some(url) => {
                upstream::Upstream::open(
                    &url,
                    &self.primary.operation.document_str,
                    variables,
                    &forwarded,
                    self.gateway.settings().subgraph_timeout,
                )
                .await
            }
            None => Err(upstream::UpstreamError(format!(
                "unknown subgraph {service}"
            ))),
        };
        let mut upstream = match opened {
            Ok(upstream) => upstream,
            Err(err) => {
                let _ = sender
                    .send(Event::Error(vec![unavailable(&service, &err)]))
                    .await;
                return;
            }
        };
        let closing = self.gateway.inner.closing.clone();
        let credential = self.credential_ended();
        tokio::pin!(credential);
        loop {
            let message = tokio::select! {
                () = sender.closed() => {
                    // The client completed or went away.
                    upstream.close().await;
                    return;
                }
                () = closing.cancelled() => {
                    // The gateway is stopping: the client gets `complete`.
                    upstream.close().await;
                    return;
                }
                ended = &mut credential => {
                    // The stream ends with the error a request bearing the
                    // same token would get now.
                    tracing::info!(reason = %ended, "subscription ended with its caller's token");
                    let error = GraphqlError::from(ApiError::from(ended));
                    let _ = sender.send(Event::Error(vec![error.to_json()])).await;
                    upstream.close().await;
                    return;
                }
                message = upstream.next() => message,
            };
            let event = match message {
                upstream::Message::Next(payload) => self.event(payload, &forwarded).await,
                upstream::Message::Error(errors) => {
                    let _ = sender.send(Event::Error(errors)).await;
                    upstream.close().await;
                    return;
                }
                upstream::Message::Complete => return,
                upstream::Message::Closed(err) => {
                    let _ = sender
                        .send(Event::Error(vec![unavailable(&service, &err)]))
                        .await;
                    return;
                }
            };
            if sender.send(Event::Next(event)).await.is_err() {
                upstream.close().await;
                return;
            }
        }
    }

    /// Resolves when the caller's token stops verifying: it expired or its
    /// session was revoked (logout, password change, refresh-token reuse).
    /// Never, for an anonymous caller.
    async fn credential_ended(&self) -> TokenError {
        match (self.gateway.inner.verifier.as_deref(), self.caller.token()) {
            (Some(verifier), Some(token)) => verifier.until_invalid(token).await,
            _ => std::future::pending().await,
        }
    }

    /// Runs the rest of the plan on one upstream event and projects it.
    async fn event(&self, payload: Value, forwarded: &Forwarded) -> Value {
        let supergraph = &self.loaded.supergraph;
        let mut payload = match payload {
            Value::Object(object) => object,
            _ => Map::new(),
        };
        let data = payload
            .remove("data")
            .filter(|d| !d.is_null())
            .map(|data| execute::rewrite_event(&self.primary, data))
            .unwrap_or_else(|| Value::Object(Map::new()));
        let upstream_errors = match payload.remove("errors") {
            Some(Value::Array(errors)) => errors,
            _ => Vec::new(),
        };
        let context = RequestContext::new(
            self.request_id.clone(),
            self.caller.principal.clone(),
            self.gateway.inner.access.clone(),
        );
        let executor = Executor {
            gateway: &self.gateway,
            supergraph,
            client: &self.gateway.inner.client,
            context: &context,
            variables: &self.prepared.variables,
            forwarded,
        };
        let merged = executor.run_after(data, &self.rest).await;
        let mut errors = upstream_errors;
        errors.extend(merged.errors);
        let root = supergraph
            .types
            .subscription
            .clone()
            .unwrap_or_else(|| "Subscription".to_owned());
        execute::response_value(
            &supergraph.types,
            &root,
            &self.prepared.operation.operation.selection_set,
            &merged.data,
            &self.prepared.variables,
            errors,
        )
    }
}

/// The coded error a client gets when the subscription's subgraph cannot
/// be reached or drops the connection.
fn unavailable(service: &str, err: &upstream::UpstreamError) -> Value {
    tracing::warn!(subgraph = service, error = %err, "subscription upstream unavailable");
    GraphqlError::new(
        codes::SUBGRAPH_UNAVAILABLE,
        format!("Subgraph {service} is unavailable"),
    )
    .with("serviceName", service)
    .to_json()
}
