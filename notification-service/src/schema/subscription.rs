//! `notificationReceived`: the caller's own new in-app notifications.

use async_graphql::{Context, Subscription};
use futures::stream::{BoxStream, StreamExt};

use super::types::NotificationView;
use super::{request, service};

/// The notification subgraph's subscriptions.
pub struct NotificationSubscription;

#[Subscription(name = "Subscription")]
impl NotificationSubscription {
    /// Every new notification of the signed-in caller, and no one else's.
    async fn notification_received(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<BoxStream<'static, NotificationView>> {
        let user_id = request(ctx)?.user()?.user_id.clone();
        Ok(service(ctx)?
            .live()
            .subscribe(move |n| n.user_id == user_id)
            .map(NotificationView)
            .boxed())
    }
}
