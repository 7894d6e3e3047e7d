//! The payment subgraph's GraphQL schema: thin resolvers over
//! [`PaymentService`].

mod mutation;
mod query;
mod subscription;
mod types;

use async_graphql::{Context, MergedObject, Schema};
use service_core::app::ErrorCodesQuery;
use service_core::{ApiError, ApiResult, RequestContext};

use crate::domain::PaymentService;

pub use mutation::PaymentMutation;
pub use query::PaymentQuery;
pub use subscription::PaymentSubscription;
pub use types::{
    AmountScalar, DepositInput, PageInfo, ReconciliationReport, TransactionConnection,
    TransactionEdge, TransactionView, TransferConnection, TransferEdge, TransferInput,
    TransferView, UserRef, WalletView, WithdrawInput,
};

/// Every query field: the service's and `_errorCodes`.
#[derive(MergedObject)]
pub struct Query(PaymentQuery, ErrorCodesQuery);

/// The payment subgraph schema.
pub type PaymentSchema = Schema<Query, PaymentMutation, PaymentSubscription>;

/// Builds the schema over `service`, with federation and the standard query
/// limits as a second line of defence behind the gateway.
pub fn build(service: PaymentService) -> PaymentSchema {
    let limits = service_core::graphql::QueryLimits::standard();
    Schema::build(
        Query(PaymentQuery, ErrorCodesQuery::new(crate::registry())),
        PaymentMutation,
        PaymentSubscription,
    )
    .enable_federation()
    // The gateway composes and serves `walletUpdated`: keep it in the SDL.
    .enable_subscription_in_federation()
    .limit_depth(limits.max_depth)
    .limit_complexity(limits.max_complexity)
    .data(service)
    .finish()
}

/// The service, put into the schema's data by [`build`].
fn service<'a>(ctx: &Context<'a>) -> ApiResult<&'a PaymentService> {
    ctx.data::<PaymentService>()
        .map_err(|_| ApiError::internal("payment service missing from the schema data"))
}

/// The request context the server kit puts into every request.
fn request<'a>(ctx: &Context<'a>) -> ApiResult<&'a RequestContext> {
    ctx.data::<RequestContext>()
        .map_err(|_| ApiError::internal("request context missing"))
}
