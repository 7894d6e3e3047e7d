//! The gateway's own error codes and the GraphQL error objects it writes.

use serde_json::{json, Map, Value};
use service_core::error::{codes as core_codes, ApiError, ErrorCode, ErrorRegistry};

/// The codes only the gateway returns.
pub mod codes {
    use super::ErrorCode;

    /// Complexity over the limit; `extensions.complexity`, `extensions.maxComplexity`.
    pub const QUERY_TOO_COMPLEX: ErrorCode = ErrorCode::new("MSGatewayQueryTooComplex");
    /// Depth over the limit; `extensions.depth`, `extensions.maxDepth`.
    pub const QUERY_TOO_DEEP: ErrorCode = ErrorCode::new("MSGatewayQueryTooDeep");
    /// More aliases than allowed; `extensions.aliases`, `extensions.maxAliases`.
    pub const TOO_MANY_ALIASES: ErrorCode = ErrorCode::new("MSGatewayTooManyAliases");
    /// A JSON array batch longer than allowed.
    pub const BATCH_TOO_LARGE: ErrorCode = ErrorCode::new("MSGatewayBatchTooLarge");
    /// The document does not parse.
    pub const PARSE_FAILED: ErrorCode = ErrorCode::new("MSGatewayParseFailed");
    /// The document does not validate against the supergraph.
    pub const VALIDATION_FAILED: ErrorCode = ErrorCode::new("MSGatewayValidationFailed");
    /// A subgraph the plan needs is down; partial data is still returned.
    pub const SUBGRAPH_UNAVAILABLE: ErrorCode = ErrorCode::new("MSGatewaySubgraphUnavailable");

    /// Every gateway code.
    pub const ALL: &[ErrorCode] = &[
        QUERY_TOO_COMPLEX,
        QUERY_TOO_DEEP,
        TOO_MANY_ALIASES,
        BATCH_TOO_LARGE,
        PARSE_FAILED,
        VALIDATION_FAILED,
        SUBGRAPH_UNAVAILABLE,
    ];
}

/// The codes the gateway itself can return: core codes plus its own.
pub fn registry() -> ErrorRegistry {
    let mut registry = ErrorRegistry::with_core();
    registry.register(codes::ALL);
    registry
}

/// One error of a GraphQL response, before serialisation.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphqlError {
    /// Message meant for people.
    pub message: String,
    /// `extensions`, always holding `code`.
    pub extensions: Map<String, Value>,
    /// Where in the document, when known.
    pub locations: Vec<(usize, usize)>,
}

impl GraphqlError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut extensions = Map::new();
        extensions.insert("code".to_owned(), Value::String(code.as_str().to_owned()));
        Self {
            message: message.into(),
            extensions,
            locations: Vec::new(),
        }
    }

    /// Adds an extension.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    /// Adds a location (1-based line and column).
    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.locations.push((line, column));
        self
    }

    /// The error's code.
    pub fn code(&self) -> &str {
        self.extensions
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or(core_codes::INTERNAL.as_str())
    }

    /// The JSON object clients receive.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("message".to_owned(), Value::String(self.message.clone()));
        if !self.locations.is_empty() {
            object.insert(
                "locations".to_owned(),
                Value::Array(
                    self.locations
                        .iter()
                        .map(|(line, column)| json!({ "line": line, "column": column }))
                        .collect(),
                ),
            );
        }
        object.insert(
            "extensions".to_owned(),
            Value::Object(self.extensions.clone()),
        );
        Value::Object(object)
    }
}

impl From<ApiError> for GraphqlError {
    fn from(error: ApiError) -> Self {
        if let Some(cause) = error.cause() {
            tracing::warn!(code = %error.code(), cause = %cause, "request refused");
        }
        let mut out = GraphqlError::new(error.code(), error.message());
        for (key, value) in error.extensions() {
            out.extensions.insert(key.clone(), value.clone());
        }
        out
    }
}
