//! Every error in a response leaves with a registered `extensions.code`.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextSubscribe};
use async_graphql::{ErrorExtensionValues, Response, ServerError, Value};
use futures::stream::{BoxStream, StreamExt};

use crate::error::{codes, ApiError};

/// Gives every error of `response` its `extensions.code`:
///
/// - an [`ApiError`] returned by a resolver keeps its code, message and
///   extensions;
/// - an error async-graphql raised itself (parse, validation, argument
///   coercion) has no source and is the client's: `MSCoreValidation`;
/// - anything else is a bug that escaped as a foreign error type: its message
///   is replaced by a generic one and the original is logged, so no internal
///   detail reaches a client.
///
/// Errors that already carry a code are left alone. Call it inside the
/// request's span so the log line has the request id.
pub fn finalize_errors(response: &mut Response) {
    for error in &mut response.errors {
        finalize(error);
    }
}

fn finalize(error: &mut ServerError) {
    if has_code(error) {
        return;
    }
    if let Some(api) = error.source::<ApiError>() {
        let code = api.code();
        let extensions: Vec<(String, Value)> = api
            .extensions()
            .iter()
            .filter_map(|(k, v)| Value::from_json(v.clone()).ok().map(|v| (k.clone(), v)))
            .collect();
        if let Some(cause) = api.cause() {
            tracing::error!(code = %code, path = ?error.path, error = %cause, "request failed");
        }
        let slot = error
            .extensions
            .get_or_insert_with(ErrorExtensionValues::default);
        slot.set("code", code.as_str());
        for (key, value) in extensions {
            slot.set(key, value);
        }
    } else if error.source.is_some() {
        tracing::error!(path = ?error.path, error = %error.message, "unclassified resolver error");
        error.message = "Internal error".to_owned();
        error
            .extensions
            .get_or_insert_with(ErrorExtensionValues::default)
            .set("code", codes::INTERNAL.as_str());
    } else {
        error
            .extensions
            .get_or_insert_with(ErrorExtensionValues::default)
            .set("code", codes::VALIDATION.as_str());
    }
}

fn has_code(error: &ServerError) -> bool {
    error
        .extensions
        .as_ref()
        .is_some_and(|ext| ext.get("code").is_some())
}

/// Gives subscription results the same `extensions.code` on every error as
/// the HTTP path does (the server kit finalises HTTP responses only; the
/// WebSocket transport streams responses straight from the schema).
pub struct CodedSubscriptionErrors;

impl ExtensionFactory for CodedSubscriptionErrors {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(CodedSubscriptionErrors)
    }
}

impl Extension for CodedSubscriptionErrors {
    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream)
            .map(|mut response| {
                finalize_errors(&mut response);
                response
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};

    use super::*;
    use crate::error::ApiResult;

    struct Query;

    #[Object]
    impl Query {
        async fn coded(&self) -> async_graphql::Result<i32> {
            let failed: ApiResult<i32> = Err(ApiError::validation("input.amount", "too big"));
            Ok(failed?)
        }
        async fn leaky(&self) -> async_graphql::Result<i32> {
            let failed: Result<i32, std::io::Error> =
                Err(std::io::Error::other("db at 10.0.0.7 refused"));
            Ok(failed?)
        }
        async fn number(&self, n: i32) -> i32 {
            n
        }
    }

    async fn run(query: &str) -> serde_json::Value {
        let schema = Schema::new(Query, EmptyMutation, EmptySubscription);
        let mut response = schema.execute(query).await;
        finalize_errors(&mut response);
        serde_json::to_value(&response).unwrap()
    }

    #[tokio::test]
    async fn api_errors_keep_code_and_extensions() {
        let body = run("{ coded }").await;
        let ext = &body["errors"][0]["extensions"];
        assert_eq!(ext["code"], "MSCoreValidation");
        assert_eq!(ext["field"], "input.amount");
        assert_eq!(body["errors"][0]["message"], "too big");
    }

    #[tokio::test]
    async fn foreign_errors_become_internal_without_details() {
        let body = run("{ leaky }").await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "MSCoreInternal");
        assert_eq!(body["errors"][0]["message"], "Internal error");
        assert!(!body.to_string().contains("10.0.0.7"));
    }

    #[tokio::test]
    async fn engine_errors_are_validation_errors() {
        for query in ["{ number(n: \"x\") }", "{ nope }", "{ number(n: 1) "] {
            let body = run(query).await;
            assert_eq!(
                body["errors"][0]["extensions"]["code"], "MSCoreValidation",
                "{query}: {body}"
            );
        }
    }
}
