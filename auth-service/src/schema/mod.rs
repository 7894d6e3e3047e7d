//! The auth subgraph's GraphQL schema: thin resolvers over
//! [`AuthService`].

mod mutation;
mod query;
mod types;

use async_graphql::{Context, EmptySubscription, MergedObject, Schema};
use service_core::app::ErrorCodesQuery;
use service_core::{ApiResult, RequestContext};

use crate::domain::AuthService;

pub use mutation::AuthMutation;
pub use query::AuthQuery;
pub use types::{
    AuthPayload, LoginInput, RegisterInput, SessionView, UserConnection, UserEdge, UserView,
};

/// Every query field: the service's and `_errorCodes`.
#[derive(MergedObject)]
pub struct Query(AuthQuery, ErrorCodesQuery);

/// The auth subgraph schema.
pub type AuthSchema = Schema<Query, AuthMutation, EmptySubscription>;

/// Builds the schema over `service`, with federation and the standard query
/// limits as a second line of defence behind the gateway.
pub fn build(service: AuthService) -> AuthSchema {
    service_core::graphql::federated_schema(
        Query(AuthQuery, ErrorCodesQuery::new(crate::registry())),
        AuthMutation,
        EmptySubscription,
    )
    .data(service)
    .finish()
}

/// The service, put into the schema's data by [`build`].
fn service<'a>(ctx: &Context<'a>) -> ApiResult<&'a AuthService> {
    service_core::graphql::schema_data(ctx, "auth service")
}

/// The request context the server kit puts into every request.
fn request<'a>(ctx: &Context<'a>) -> ApiResult<&'a RequestContext> {
    service_core::graphql::request_context(ctx)
}
