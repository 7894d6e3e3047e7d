//! The bonus subgraph's GraphQL schema: thin resolvers over
//! [`BonusService`].

mod mutation;
mod query;
mod types;

use async_graphql::{Context, EmptySubscription, MergedObject, Schema};
use service_core::app::ErrorCodesQuery;
use service_core::{ApiError, ApiResult, RequestContext};

use crate::domain::BonusService;

pub use mutation::BonusMutation;
pub use query::BonusQuery;
pub use types::{
    Amount, BonusTemplateInput, BonusView, PageInfo, TemplateView, UserBonusConnection,
    UserBonusEdge, UserRef,
};

/// Every query field: the service's and `_errorCodes`.
#[derive(MergedObject)]
pub struct Query(BonusQuery, ErrorCodesQuery);

/// The bonus subgraph schema.
pub type BonusSchema = Schema<Query, BonusMutation, EmptySubscription>;

/// Builds the schema over `service`, with federation and the standard query
/// limits as a second line of defence behind the gateway.
pub fn build(service: BonusService) -> BonusSchema {
    let limits = service_core::graphql::QueryLimits::standard();
    Schema::build(
        Query(BonusQuery, ErrorCodesQuery::new(crate::registry())),
        BonusMutation,
        EmptySubscription,
    )
    .enable_federation()
    .limit_depth(limits.max_depth)
    .limit_complexity(limits.max_complexity)
    .data(service)
    .finish()
}

/// The service, put into the schema's data by [`build`].
fn service<'a>(ctx: &Context<'a>) -> ApiResult<&'a BonusService> {
    ctx.data::<BonusService>()
        .map_err(|_| ApiError::internal("bonus service missing from the schema data"))
}

/// The request context the server kit puts into every request.
fn request<'a>(ctx: &Context<'a>) -> ApiResult<&'a RequestContext> {
    ctx.data::<RequestContext>()
        .map_err(|_| ApiError::internal("request context missing"))
}
