//! `POST /graphql` and `GET /graphql`: GraphQL over HTTP for one subgraph.

use std::sync::Arc;

use async_graphql::parser::types::OperationType;
use async_graphql::{BatchRequest, BatchResponse, Executor};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::json;

use super::Shared;
use crate::context::{Principal, RequestContext, RequestId};
use crate::error::{codes, ApiError, ErrorCode};
use crate::graphql::finalize_errors;

pub(super) async fn post<E: Executor>(
    State(shared): State<Arc<Shared<E>>>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let batch: BatchRequest = match serde_json::from_slice(&body) {
        Ok(batch) => batch,
        Err(err) => {
            return error_response(
                &shared,
                StatusCode::BAD_REQUEST,
                ApiError::validation(
                    "body",
                    format!("request body is not a GraphQL request: {err}"),
                ),
            )
        }
    };
    if let BatchRequest::Batch(requests) = &batch {
        if requests.len() > shared.max_batch {
            let err = ApiError::validation(
                "body",
                format!("a batch may hold at most {} operations", shared.max_batch),
            );
            return error_response(&shared, StatusCode::BAD_REQUEST, err);
        }
    }
    execute(&shared, request_id, &headers, batch).await
}

pub(super) async fn get<E: Executor>(
    State(shared): State<Arc<Shared<E>>>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let request = match async_graphql::http::parse_query_string(query.as_deref().unwrap_or("")) {
        Ok(request) => request,
        Err(err) => {
            let err = ApiError::validation("query", format!("invalid query string: {err}"));
            return error_response(&shared, StatusCode::BAD_REQUEST, err);
        }
    };
    // GET must be safe: a mutation through a link or an image tag would be a
    // cross-site request forgery.
    if is_mutation(&request.query, request.operation_name.as_deref()) {
        let err = ApiError::validation("query", "mutations must be sent with POST");
        let mut response = error_response(&shared, StatusCode::METHOD_NOT_ALLOWED, err);
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    execute(&shared, request_id, &headers, BatchRequest::Single(request)).await
}

fn is_mutation(query: &str, operation_name: Option<&str>) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(query) else {
        return false;
    };
    document.operations.iter().any(|(name, op)| {
        let selected = match (operation_name, name) {
            (Some(wanted), Some(name)) => wanted == name.as_str(),
            (Some(_), None) => false,
            (None, _) => true,
        };
        selected && op.node.ty == OperationType::Mutation
    })
}

async fn execute<E: Executor>(
    shared: &Shared<E>,
    request_id: RequestId,
    headers: &HeaderMap,
    batch: BatchRequest,
) -> Response {
    let principal = match authenticate(shared, headers) {
        Ok(principal) => principal,
        Err(err) => {
            let mut response = error_response(shared, StatusCode::UNAUTHORIZED, err);
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    };
    let ctx = RequestContext::new(request_id, principal, shared.access.clone());
    let batch = batch.data(ctx);
    let mut response = shared.executor.execute_batch(batch).await;
    match &mut response {
        BatchResponse::Single(one) => finalize(shared, one),
        BatchResponse::Batch(many) => many.iter_mut().for_each(|one| finalize(shared, one)),
    }
    json_response(StatusCode::OK, &response)
}

fn finalize<E>(shared: &Shared<E>, response: &mut async_graphql::Response) {
    finalize_errors(response);
    for error in &response.errors {
        let code = error
            .extensions
            .as_ref()
            .and_then(|ext| ext.get("code"))
            .and_then(|code| match code {
                async_graphql::Value::String(code) => Some(code.as_str()),
                _ => None,
            })
            .unwrap_or(codes::INTERNAL.as_str());
        shared.metrics.count_graphql_error(code);
    }
}

/// A missing token is an anonymous caller; a present but bad one is an error,
/// never silently anonymous.
fn authenticate<E>(shared: &Shared<E>, headers: &HeaderMap) -> Result<Option<Principal>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let invalid = || ApiError::new(codes::AUTH_INVALID_TOKEN, "Invalid access token");
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(invalid)?;
    let verifier = shared.verifier.as_ref().ok_or_else(invalid)?;
    let claims = verifier.verify(token).map_err(ApiError::from)?;
    Ok(Some(Principal::from(claims)))
}

/// A GraphQL-shaped error body for failures before execution.
pub(super) fn error_response<E>(shared: &Shared<E>, status: StatusCode, err: ApiError) -> Response {
    shared.metrics.count_graphql_error(err.code().as_str());
    coded_error(status, err.code(), err.message(), err.extensions())
}

pub(super) fn coded_error(
    status: StatusCode,
    code: ErrorCode,
    message: &str,
    extensions: &serde_json::Map<String, serde_json::Value>,
) -> Response {
    let mut ext = extensions.clone();
    ext.insert("code".to_owned(), code.as_str().into());
    let body = json!({ "errors": [{ "message": message, "extensions": ext }] });
    json_response(status, &body)
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "could not serialise a response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
