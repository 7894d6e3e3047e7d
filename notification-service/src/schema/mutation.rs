//! Mutation fields: reading, preferences and sending.

use async_graphql::{Context, Object, ID};

use super::types::{
    NotificationPreferencesInput, NotificationView, PreferencesView, SendNotificationInput,
};
use super::{request, service};

/// The notification subgraph's mutations. Named `Mutation` in the SDL: the
/// federation SDL carries no `schema { mutation: ... }` block, so the
/// gateway finds the root by that name.
pub struct NotificationMutation;

#[Object(name = "Mutation")]
impl NotificationMutation {
    /// Marks one of the caller's notifications read; `MSNotificationNotFound`
    /// for an unknown id or someone else's.
    async fn mark_notification_read(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<NotificationView> {
        Ok(NotificationView(
            service(ctx)?.mark_read(request(ctx)?, &id).await?,
        ))
    }

    /// Marks every unread notification of the caller read; how many changed.
    async fn mark_all_notifications_read(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        let changed = service(ctx)?.mark_all_read(request(ctx)?).await?;
        Ok(i32::try_from(changed).unwrap_or(i32::MAX))
    }

    /// Changes the caller's preferences (only what the input gives).
    async fn update_notification_preferences(
        &self,
        ctx: &Context<'_>,
        input: NotificationPreferencesInput,
    ) -> async_graphql::Result<PreferencesView> {
        let prefs = service(ctx)?
            .update_preferences(request(ctx)?, input.into())
            .await?;
        Ok(PreferencesView(prefs))
    }

    /// Sends a notification to a user on the channels given (or their
    /// preferences); one entry per channel. Needs `notification:send:*`.
    async fn send_notification(
        &self,
        ctx: &Context<'_>,
        input: SendNotificationInput,
    ) -> async_graphql::Result<Vec<NotificationView>> {
        let created = service(ctx)?.send(request(ctx)?, input.into()).await?;
        Ok(created.into_iter().map(NotificationView).collect())
    }
}
