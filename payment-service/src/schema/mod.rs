//! The payment subgraph's GraphQL schema: thin resolvers over
//! [`PaymentService`].

mod mutation;
mod query;
mod subscription;
mod types;

use async_graphql::{Context, MergedObject, Schema};
use service_core::app::ErrorCodesQuery;
use service_core::{ApiResult, RequestContext};

use crate::domain::PaymentService;

pub use mutation::PaymentMutation;
pub use query::PaymentQuery;
pub use subscription::PaymentSubscription;
pub use types::{
    AmountScalar, DepositInput, ReconciliationReport, TransactionConnection, TransactionEdge,
    TransactionView, TransferConnection, TransferEdge, TransferInput, TransferView, UserRef,
    WalletView, WithdrawInput,
};

/// Every query field: the service's and `_errorCodes`.
#[derive(MergedObject)]
pub struct Query(PaymentQuery, ErrorCodesQuery);

/// The payment subgraph schema.
pub type PaymentSchema = Schema<Query, PaymentMutation, PaymentSubscription>;

/// Builds the schema over `service`, with federation and the standard query
/// limits as a second line of defence behind the gateway.
pub fn build(service: PaymentService) -> PaymentSchema {
    service_core::graphql::federated_schema(
        Query(PaymentQuery, ErrorCodesQuery::new(crate::registry())),
        PaymentMutation,
        PaymentSubscription,
    )
    // The gateway composes and serves `walletUpdated`: keep it in the SDL.
    .enable_subscription_in_federation()
    .extension(service_core::graphql::CodedSubscriptionErrors)
    .data(service)
    .finish()
}

/// The service, put into the schema's data by [`build`].
fn service<'a>(ctx: &Context<'a>) -> ApiResult<&'a PaymentService> {
    service_core::graphql::schema_data(ctx, "payment service")
}

/// The request context the server kit puts into every request.
fn request<'a>(ctx: &Context<'a>) -> ApiResult<&'a RequestContext> {
    service_core::graphql::request_context(ctx)
}
