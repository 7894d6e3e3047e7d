//! The notification subgraph's GraphQL schema: thin resolvers over
//! [`NotificationService`].

mod mutation;
mod query;
mod subscription;
mod types;

use async_graphql::{Context, MergedObject, Schema};
use service_core::app::ErrorCodesQuery;
use service_core::{ApiResult, RequestContext};

use crate::domain::NotificationService;

pub use mutation::NotificationMutation;
pub use query::NotificationQuery;
pub use subscription::NotificationSubscription;
pub use types::{
    ChannelPreference, DeliveryAttempt, KindPreference, NotificationConnection, NotificationEdge,
    NotificationView, PreferencesView,
};

/// Every query field: the service's and `_errorCodes`.
#[derive(MergedObject)]
pub struct Query(NotificationQuery, ErrorCodesQuery);

/// The notification subgraph schema.
pub type NotificationSchema = Schema<Query, NotificationMutation, NotificationSubscription>;

/// Builds the schema over `service`, with federation and the standard query
/// limits as a second line of defence behind the gateway.
pub fn build(service: NotificationService) -> NotificationSchema {
    service_core::graphql::federated_schema(
        Query(NotificationQuery, ErrorCodesQuery::new(crate::registry())),
        NotificationMutation,
        NotificationSubscription,
    )
    // The gateway composes and serves `notificationReceived`: keep it in the SDL.
    .enable_subscription_in_federation()
    .extension(service_core::graphql::CodedSubscriptionErrors)
    .data(service)
    .finish()
}

/// The service, put into the schema's data by [`build`].
fn service<'a>(ctx: &Context<'a>) -> ApiResult<&'a NotificationService> {
    service_core::graphql::schema_data(ctx, "notification service")
}

/// The request context the server kit (or the WebSocket handshake) puts
/// into every request.
fn request<'a>(ctx: &Context<'a>) -> ApiResult<&'a RequestContext> {
    service_core::graphql::request_context(ctx)
}
