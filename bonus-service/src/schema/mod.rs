//! The bonus subgraph's GraphQL schema: thin resolvers over
//! [`BonusService`].

mod mutation;
mod query;
mod types;

use async_graphql::{Context, EmptySubscription, MergedObject, Schema};
use service_core::app::ErrorCodesQuery;
use service_core::{ApiResult, RequestContext};

use crate::domain::BonusService;

pub use mutation::BonusMutation;
pub use query::BonusQuery;
pub use types::{
    Amount, BonusTemplateInput, BonusView, TemplateView, UserBonusConnection, UserBonusEdge,
    UserRef,
};

/// Every query field: the service's and `_errorCodes`.
#[derive(MergedObject)]
pub struct Query(BonusQuery, ErrorCodesQuery);

/// The bonus subgraph schema.
pub type BonusSchema = Schema<Query, BonusMutation, EmptySubscription>;

/// Builds the schema over `service`, with federation and the standard query
/// limits as a second line of defence behind the gateway.
pub fn build(service: BonusService) -> BonusSchema {
    service_core::graphql::federated_schema(
        Query(BonusQuery, ErrorCodesQuery::new(crate::registry())),
        BonusMutation,
        EmptySubscription,
    )
    .data(service)
    .finish()
}

/// The service, put into the schema's data by [`build`].
fn service<'a>(ctx: &Context<'a>) -> ApiResult<&'a BonusService> {
    service_core::graphql::schema_data(ctx, "bonus service")
}

/// The request context the server kit puts into every request.
fn request<'a>(ctx: &Context<'a>) -> ApiResult<&'a RequestContext> {
    service_core::graphql::request_context(ctx)
}
