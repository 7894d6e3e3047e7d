//! GraphQL over HTTP at the edge: `POST`/`GET /graphql`, JSON array
//! batches, content negotiation and status codes, request ids, the body
//! limit, `/health/live`, `/health/ready` and `/metrics`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{json, Map, Value};
use service_core::context::RequestId;
use service_core::error::ApiError;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;

use crate::auth;
use crate::error::{codes, GraphqlError};
use crate::gateway::{GraphqlRequest, Outcome};
use crate::Gateway;

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

/// The caller's address, when the server knows it.
#[derive(Clone, Copy, Debug)]
struct ClientIp(Option<IpAddr>);

/// The gateway's router.
pub fn router(gateway: Gateway) -> Router {
    let body_limit = gateway.settings().body_limit_bytes;
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(
            gateway.clone(),
            crate::subscriptions::ws::upgrade,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(gateway.clone(), observe))
        .with_state(gateway)
}

/// Whether the client accepts `application/graphql-response+json`; the
/// spec's status rules apply only then.
fn wants_graphql_response(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| part.trim().starts_with(GRAPHQL_RESPONSE))
}

/// Whether the POST body is declared as JSON: the media type itself (its
/// parameters aside) is `application/json` or an `application/*+json`.
/// A missing type, or one of the forms a browser sends cross-site without
/// a preflight (`text/plain`, `application/x-www-form-urlencoded`,
/// `multipart/form-data`, whatever their parameters say), is refused, so
/// no other site can make a visitor's browser run a mutation.
fn is_json_body(headers: &HeaderMap) -> bool {
    let Some(Ok(value)) = headers.get(header::CONTENT_TYPE).map(|v| v.to_str()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == JSON
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

fn respond(status: StatusCode, body: &Value, graphql_response: bool) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    respond_bytes(status, bytes, graphql_response)
}

/// Answers a body already serialized.
fn respond_bytes(status: StatusCode, body: Vec<u8>, graphql_response: bool) -> Response {
    let content_type = if graphql_response {
        GRAPHQL_RESPONSE
    } else {
        JSON
    };
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

fn error_body(error: &GraphqlError) -> Value {
    json!({ "errors": [error.to_json()] })
}

async fn graphql_post(
    State(gateway): State<Gateway>,
    Extension(request_id): Extension<RequestId>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let graphql_response = wants_graphql_response(&headers);
    if !is_json_body(&headers) {
        let error = GraphqlError::new(codes::PARSE_FAILED, "The body must be application/json");
        return respond(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &error_body(&error),
            graphql_response,
        );
    }
    let requests = match parse_requests(&gateway, &body) {
        Ok(requests) => requests,
        Err(refused) => {
            let (status, error) = *refused;
            return respond(status, &error_body(&error), graphql_response);
        }
    };
    let caller = match admit(&gateway, &headers, ip).await {
        Ok(caller) => caller,
        Err(response) => return with_type(response, graphql_response),
    };
    if crate::subscriptions::sse::wants_event_stream(&headers) {
        let Batch::One(request) = requests else {
            let error = GraphqlError::new(
                codes::PARSE_FAILED,
                "An event stream carries one operation, not a batch",
            );
            return respond(
                StatusCode::BAD_REQUEST,
                &error_body(&error),
                graphql_response,
            );
        };
        return crate::subscriptions::sse::stream(&gateway, request, caller, request_id)
            .unwrap_or_else(|errors| {
                respond(
                    status_for(Outcome::RequestError, true),
                    &json!({ "errors": errors }),
                    graphql_response,
                )
            });
    }
    match requests {
        Batch::One(request) => {
            let (body, outcome) = gateway.execute(request, &caller, &request_id, false).await;
            respond_bytes(
                status_for(outcome, graphql_response),
                body,
                graphql_response,
            )
        }
        Batch::Many(requests) => {
            let answers = futures::future::join_all(
                requests
                    .into_iter()
                    .map(|r| gateway.execute(r, &caller, &request_id, false)),
            )
            .await;
            let mut body =
                Vec::with_capacity(answers.iter().map(|(b, _)| b.len() + 1).sum::<usize>() + 2);
            body.push(b'[');
            for (i, (answer, _)) in answers.into_iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&answer);
            }
            body.push(b']');
            respond_bytes(StatusCode::OK, body, graphql_response)
        }
    }
}

enum Batch {
    One(GraphqlRequest),
    Many(Vec<GraphqlRequest>),
}

/// The request or batch of requests in a POST body, or the status and
/// error to answer.
fn parse_requests(
    gateway: &Gateway,
    body: &[u8],
) -> Result<Batch, Box<(StatusCode, GraphqlError)>> {
    // The common case, one request object, parses straight into its type;
    // anything else (and any failure, for its message) takes the general
    // path through a JSON value.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        if let Ok(request) = serde_json::from_slice::<GraphqlRequest>(body) {
            return Ok(Batch::One(request));
        }
    }
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    let requests = match parsed {
        Ok(Value::Array(items)) => {
            let max = gateway.settings().limits.max_batch;
            if items.is_empty() || items.len() > max {
                let error = GraphqlError::new(
                    codes::BATCH_TOO_LARGE,
                    format!(
                        "A batch holds 1 to {max} operations; this one has {}",
                        items.len()
                    ),
                )
                .with("batchSize", items.len())
                .with("maxBatch", max);
                gateway
                    .metrics()
                    .rejections
                    .with_label_values(&[error.code()])
                    .inc();
                return Err(Box::new((StatusCode::BAD_REQUEST, error)));
            }
            let parsed: Result<Vec<GraphqlRequest>, _> =
                items.into_iter().map(serde_json::from_value).collect();
            parsed.map(Batch::Many)
        }
        Ok(single @ Value::Object(_)) => serde_json::from_value(single).map(Batch::One),
        Ok(_) => Err(serde::de::Error::custom("expected an object or an array")),
        Err(err) => Err(err),
    };
    requests.map_err(|err| {
        let error = GraphqlError::new(
            codes::PARSE_FAILED,
            format!("The body is not a GraphQL request: {err}"),
        );
        Box::new((StatusCode::BAD_REQUEST, error))
    })
}

async fn graphql_get(
    State(gateway): State<Gateway>,
    Extension(request_id): Extension<RequestId>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    params: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let graphql_response = wants_graphql_response(&headers);
    let bad = |message: String| {
        let error = GraphqlError::new(codes::PARSE_FAILED, message);
        respond(
            StatusCode::BAD_REQUEST,
            &error_body(&error),
            graphql_response,
        )
    };
    let Ok(Query(params)) = params else {
        return bad("The query string is malformed".to_owned());
    };
    let json_param = |name: &str| -> Result<Option<Value>, String> {
        match params.get(name).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(raw) => serde_json::from_str(raw)
                .map(Some)
                .map_err(|err| format!("`{name}` is not JSON: {err}")),
        }
    };
    let variables = match json_param("variables") {
        Ok(None | Some(Value::Null)) => None,
        Ok(Some(Value::Object(map))) => Some(map),
        Ok(Some(_)) => return bad("`variables` must be a JSON object".to_owned()),
        Err(message) => return bad(message),
    };
    let extensions = match json_param("extensions") {
        Ok(value) => value,
        Err(message) => return bad(message),
    };
    let request = GraphqlRequest {
        query: params.get("query").cloned(),
        variables,
        operation_name: params.get("operationName").cloned(),
        extensions,
    };
    let caller = match admit(&gateway, &headers, ip).await {
        Ok(caller) => caller,
        Err(response) => return with_type(response, graphql_response),
    };
    let (body, outcome) = gateway.execute(request, &caller, &request_id, true).await;
    let mut response = respond_bytes(
        status_for(outcome, graphql_response),
        body,
        graphql_response,
    );
    if outcome == Outcome::MutationOverGet {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    response
}

fn status_for(outcome: Outcome, graphql_response: bool) -> StatusCode {
    match outcome {
        Outcome::Executed => StatusCode::OK,
        Outcome::MutationOverGet => StatusCode::METHOD_NOT_ALLOWED,
        Outcome::RequestError if graphql_response => StatusCode::BAD_REQUEST,
        Outcome::RequestError => StatusCode::OK,
    }
}

/// Verifies the token and takes from the rate budget.
async fn admit(
    gateway: &Gateway,
    headers: &HeaderMap,
    ip: Option<IpAddr>,
) -> Result<auth::Caller, (StatusCode, Value, Option<(header::HeaderName, HeaderValue)>)> {
    let caller = auth::authenticate(gateway.inner.verifier.as_deref(), headers).map_err(|err| {
        (
            StatusCode::UNAUTHORIZED,
            error_body(&GraphqlError::from(*err)),
            Some((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))),
        )
    })?;
    if let Err(err) = auth::rate_limit(&gateway.inner.limiter, &caller, ip).await {
        let retry = retry_after(&err);
        gateway
            .metrics()
            .rejections
            .with_label_values(&[err.code().as_str()])
            .inc();
        return Err((
            StatusCode::TOO_MANY_REQUESTS,
            error_body(&GraphqlError::from(*err)),
            HeaderValue::from_str(&retry.to_string())
                .ok()
                .map(|v| (header::RETRY_AFTER, v)),
        ));
    }
    Ok(caller)
}

fn retry_after(err: &ApiError) -> u64 {
    err.extensions()
        .get("retryAfterSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(1)
}

fn with_type(
    (status, body, extra): (StatusCode, Value, Option<(header::HeaderName, HeaderValue)>),
    graphql_response: bool,
) -> Response {
    let mut response = respond(status, &body, graphql_response);
    if let Some((name, value)) = extra {
        response.headers_mut().insert(name, value);
    }
    response
}

/// What the gateway answers while it composes its first supergraph: alive,
/// not ready, and a coded "unavailable" for GraphQL.
pub(crate) fn starting_router() -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route(
            "/health/ready",
            get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({ "status": "starting" })),
                )
            }),
        )
        .fallback(|| async {
            let error = GraphqlError::new(
                service_core::error::codes::UNAVAILABLE,
                "The gateway is starting, try again in a moment",
            );
            (StatusCode::SERVICE_UNAVAILABLE, Json(error_body(&error)))
        })
}

async fn live() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

async fn ready(
    State(gateway): State<Gateway>,
    Extension(request_id): Extension<RequestId>,
) -> Response {
    let mut report = Map::new();
    let mut all = true;
    for (name, healthy, latency, details) in gateway.subgraph_health_for(Some(&request_id)).await {
        all &= healthy;
        report.insert(
            name,
            json!({
                "healthy": healthy,
                "latencyMs": u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
                "details": details,
            }),
        );
    }
    let dependencies = [
        ("redis", gateway.redis_health().await),
        ("database", gateway.database_health().await),
    ];
    for (dependency, outcome) in dependencies {
        let Some(outcome) = outcome else {
            continue;
        };
        all &= outcome.is_ok();
        report.insert(
            dependency.to_owned(),
            match outcome {
                Ok(latency) => json!({
                    "healthy": true,
                    "latencyMs": u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
                }),
                Err(error) => json!({ "healthy": false, "error": error }),
            },
        );
    }
    let down: Vec<&String> = report
        .iter()
        .filter(|(_, v)| v["healthy"] == Value::Bool(false))
        .map(|(k, _)| k)
        .collect();
    let body = json!({
        "status": if all { "ready" } else { "unavailable" },
        "down": down,
        "checks": report,
    });
    let status = if all {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(gateway): State<Gateway>) -> Response {
    gateway.inner.client.report_breakers();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        gateway.metrics().core.render(),
    )
        .into_response()
}

fn panic_response(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    tracing::error!(panic = %detail, "request handler panicked");
    let error = GraphqlError::new(service_core::error::codes::INTERNAL, "Internal error");
    respond(
        StatusCode::INTERNAL_SERVER_ERROR,
        &error_body(&error),
        false,
    )
}

/// Request id (the caller's when well-formed), client address, a span,
/// HTTP metrics, and the id echoed on the response.
async fn observe(State(gateway): State<Gateway>, mut request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(RequestId::HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(RequestId::parse)
        .unwrap_or_else(RequestId::generate);
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    request.extensions_mut().insert(request_id.clone());
    request.extensions_mut().insert(ClientIp(ip));
    let route: &'static str = match request.uri().path() {
        "/graphql" => "/graphql",
        "/health/live" => "/health/live",
        "/health/ready" => "/health/ready",
        "/metrics" => "/metrics",
        _ => "other",
    };
    let method = request.method().as_str().to_owned();
    let span = tracing::info_span!("request", request_id = %request_id, method = %method, route);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span).await;
    gateway.metrics().core.observe_http(
        route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
        response.headers_mut().insert(RequestId::HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_type(value: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn only_json_media_types_are_request_bodies() {
        for accepted in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/graphql-response+json",
        ] {
            assert!(is_json_body(&with_type(Some(accepted))), "{accepted}");
        }
        // What a cross-site form or a no-preflight fetch can send, however
        // its parameters mention JSON.
        for refused in [
            "text/plain",
            "text/plain; charset=json",
            "application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded; a=application/json",
            "multipart/form-data; boundary=json",
            "text/json-ish",
            "",
        ] {
            assert!(!is_json_body(&with_type(Some(refused))), "{refused}");
        }
        assert!(!is_json_body(&with_type(None)));
    }
}
