//! Query fields and the `Notification` entity for the gateway.

use async_graphql::{Context, Object, ID};
use service_core::codes as core_codes;
use service_core::db::PageArgs;

use super::types::{NotificationConnection, NotificationView, PreferencesView};
use super::{request, service};

/// The notification subgraph's own query fields.
pub struct NotificationQuery;

#[Object]
impl NotificationQuery {
    /// The caller's notifications, newest first (`first` at most 100).
    async fn my_notifications(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        unread_only: Option<bool>,
    ) -> async_graphql::Result<NotificationConnection> {
        let page = service(ctx)?
            .list(
                request(ctx)?,
                PageArgs::forward(first, after),
                unread_only.unwrap_or(false),
            )
            .await?;
        Ok(NotificationConnection(page))
    }

    /// The caller's preferences.
    async fn notification_preferences(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<PreferencesView> {
        Ok(PreferencesView(
            service(ctx)?.preferences(request(ctx)?).await?,
        ))
    }

    /// Resolves a `Notification` reference for the gateway: the caller's
    /// own only; null for anything else.
    #[graphql(entity)]
    async fn find_notification_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<NotificationView>> {
        match service(ctx)?.get(request(ctx)?, &id).await {
            Ok(n) => Ok(Some(NotificationView(n))),
            Err(err)
                if err.code() == crate::codes::NOT_FOUND || err.code() == core_codes::FORBIDDEN =>
            {
                Ok(None)
            }
            Err(err) => Err(err.into()),
        }
    }
}
