//! What every subgraph schema shares: the federated schema builder with the
//! standard limits, the connection's `PageInfo`, and typed access to what
//! the server kit puts into each request.

use std::any::Any;

use async_graphql::{Context, ObjectType, Schema, SchemaBuilder, SimpleObject, SubscriptionType};

use crate::context::RequestContext;
use crate::error::{ApiError, ApiResult};
use crate::graphql::QueryLimits;

/// Starts a federated subgraph schema with the standard query limits, a
/// second line of defence behind the gateway's own.
pub fn federated_schema<Q, M, S>(query: Q, mutation: M, subscription: S) -> SchemaBuilder<Q, M, S>
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
    S: SubscriptionType + 'static,
{
    let limits = QueryLimits::standard();
    Schema::build(query, mutation, subscription)
        .enable_federation()
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity)
}

/// Where a page sits in a listing, the same in every connection of the API.
/// Shareable: each subgraph with a connection defines it.
#[derive(Clone, Debug, PartialEq, Eq, SimpleObject)]
#[graphql(shareable)]
pub struct PageInfo {
    /// More items follow the last edge.
    pub has_next_page: bool,
    /// Items precede the first edge.
    pub has_previous_page: bool,
    /// Cursor of the first edge.
    pub start_cursor: Option<String>,
    /// Cursor of the last edge.
    pub end_cursor: Option<String>,
}

impl From<&crate::db::PageInfo> for PageInfo {
    fn from(info: &crate::db::PageInfo) -> Self {
        Self {
            has_next_page: info.has_next_page,
            has_previous_page: info.has_previous_page,
            start_cursor: info.start_cursor.clone(),
            end_cursor: info.end_cursor.clone(),
        }
    }
}

/// The request context the server kit (or a WebSocket handshake) puts into
/// every request.
pub fn request_context<'a>(ctx: &Context<'a>) -> ApiResult<&'a RequestContext> {
    ctx.data::<RequestContext>()
        .map_err(|_| ApiError::internal("request context missing"))
}

/// Data the schema was built with (`what` names it in the internal error
/// when it is missing, which is a wiring bug).
pub fn schema_data<'a, T: Any + Send + Sync>(ctx: &Context<'a>, what: &str) -> ApiResult<&'a T> {
    ctx.data::<T>()
        .map_err(|_| ApiError::internal(format!("{what} missing from the schema data")))
}
