//! The GraphQL shapes of the notification subgraph.

use async_graphql::{InputObject, Json, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use service_core::graphql::PageInfo;

use crate::domain::{NotificationPage, PreferencesChange, SendRequest};
use crate::store::{
    Attempt, AttemptStatus, Channel, Notification, NotificationStatus, Preferences,
};

/// A notification as clients see it.
pub struct NotificationView(pub Notification);

#[Object(name = "Notification")]
impl NotificationView {
    /// The notification's id.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// Whose it is.
    async fn user_id(&self) -> ID {
        ID(self.0.user_id.clone())
    }

    /// Where it goes.
    async fn channel(&self) -> Channel {
        self.0.channel
    }

    /// What it is about (`transfer.received`, `bonus.awarded`, `auth.otp`).
    async fn kind(&self) -> &str {
        &self.0.kind
    }

    /// Headline.
    async fn title(&self) -> &str {
        &self.0.title
    }

    /// Text.
    async fn body(&self) -> &str {
        &self.0.body
    }

    /// Structured details.
    async fn data(&self) -> Option<Json<serde_json::Value>> {
        self.0.data.clone().map(Json)
    }

    /// PENDING, SENT, FAILED or READ.
    async fn status(&self) -> NotificationStatus {
        self.0.status
    }

    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// When it was read.
    async fn read_at(&self) -> Option<DateTime<Utc>> {
        self.0.read_at
    }

    /// When its provider accepted it.
    async fn sent_at(&self) -> Option<DateTime<Utc>> {
        self.0.sent_at
    }

    /// Why delivery was given up on (status FAILED).
    async fn failure_reason(&self) -> Option<&str> {
        self.0.failure_reason.as_deref()
    }

    /// Every delivery attempt, oldest first.
    async fn attempts(&self) -> Vec<DeliveryAttempt> {
        self.0.attempts.iter().map(DeliveryAttempt::from).collect()
    }
}

/// One try at handing a notification to its provider.
#[derive(SimpleObject)]
pub struct DeliveryAttempt {
    /// 1 for the first try.
    pub number: i32,
    /// How it ended.
    pub status: AttemptStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// When it started.
    pub at: DateTime<Utc>,
}

impl From<&Attempt> for DeliveryAttempt {
    fn from(a: &Attempt) -> Self {
        Self {
            number: i32::try_from(a.number).unwrap_or(i32::MAX),
            status: a.status,
            error: a.error.clone(),
            at: a.at,
        }
    }
}

/// A notification and its cursor.
#[derive(SimpleObject)]
pub struct NotificationEdge {
    /// Opaque position of `node`.
    pub cursor: String,
    /// The notification.
    pub node: NotificationView,
}

/// A page of notifications, newest first.
pub struct NotificationConnection(pub NotificationPage);

#[Object]
impl NotificationConnection {
    /// The notifications with their cursors.
    async fn edges(&self) -> Vec<NotificationEdge> {
        self.0
            .connection
            .edges
            .iter()
            .map(|e| NotificationEdge {
                cursor: e.cursor.clone(),
                node: NotificationView(e.node.clone()),
            })
            .collect()
    }

    /// The notifications alone.
    async fn nodes(&self) -> Vec<NotificationView> {
        self.0
            .connection
            .edges
            .iter()
            .map(|e| NotificationView(e.node.clone()))
            .collect()
    }

    /// Position information.
    async fn page_info(&self) -> PageInfo {
        PageInfo::from(&self.0.connection.page_info)
    }

    /// How many notifications the whole listing holds.
    async fn total_count(&self) -> i64 {
        i64::try_from(self.0.total_count).unwrap_or(i64::MAX)
    }
}

/// One channel switch.
#[derive(SimpleObject)]
pub struct ChannelPreference {
    /// The channel.
    pub channel: Channel,
    /// Whether notifications without a per-kind list use it.
    pub enabled: bool,
}

/// The channels of one kind.
#[derive(SimpleObject)]
pub struct KindPreference {
    /// The kind (`transfer.received`).
    pub kind: String,
    /// Its channels (IN_APP is always added).
    pub channels: Vec<Channel>,
}

/// A user's notification preferences.
pub struct PreferencesView(pub Preferences);

#[Object(name = "NotificationPreferences")]
impl PreferencesView {
    /// Whose they are.
    async fn user_id(&self) -> ID {
        ID(self.0.user_id.clone())
    }

    /// Every channel with its switch (IN_APP always on).
    async fn channels(&self) -> Vec<ChannelPreference> {
        Channel::ALL
            .into_iter()
            .map(|channel| ChannelPreference {
                channel,
                enabled: self.0.channel_enabled(channel),
            })
            .collect()
    }

    /// Per-kind channel lists.
    async fn kinds(&self) -> Vec<KindPreference> {
        self.0
            .kinds
            .iter()
            .map(|(kind, channels)| KindPreference {
                kind: kind.clone(),
                channels: channels.clone(),
            })
            .collect()
    }

    /// The channels a notification of `kind` would go to now.
    async fn channels_for(&self, kind: String) -> Vec<Channel> {
        self.0.channels_for(&kind)
    }

    /// Where email goes.
    async fn email(&self) -> Option<&str> {
        self.0.email.as_deref()
    }

    /// When they last changed.
    async fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.0.updated_at
    }
}

/// A channel switch to set.
#[derive(InputObject)]
pub struct ChannelPreferenceInput {
    /// The channel (IN_APP cannot be switched off).
    pub channel: Channel,
    /// On or off.
    pub enabled: bool,
}

/// The channels to use for one kind.
#[derive(InputObject)]
pub struct KindPreferenceInput {
    /// The kind.
    pub kind: String,
    /// Its channels (IN_APP is always added).
    pub channels: Vec<Channel>,
}

/// `updateNotificationPreferences`'s input: only what is given changes.
#[derive(InputObject)]
pub struct NotificationPreferencesInput {
    /// Channel switches to set.
    pub channels: Option<Vec<ChannelPreferenceInput>>,
    /// Per-kind channel lists to set.
    pub kinds: Option<Vec<KindPreferenceInput>>,
    /// Per-kind lists to remove.
    pub reset_kinds: Option<Vec<String>>,
    /// Where email goes.
    pub email: Option<String>,
}

impl From<NotificationPreferencesInput> for PreferencesChange {
    fn from(input: NotificationPreferencesInput) -> Self {
        Self {
            channels: input
                .channels
                .unwrap_or_default()
                .into_iter()
                .map(|c| (c.channel, c.enabled))
                .collect(),
            kinds: input
                .kinds
                .unwrap_or_default()
                .into_iter()
                .map(|k| (k.kind, k.channels))
                .collect(),
            reset_kinds: input.reset_kinds.unwrap_or_default(),
            email: input.email.map(Some),
        }
    }
}

/// `sendNotification`'s input.
#[derive(InputObject)]
pub struct SendNotificationInput {
    /// The recipient.
    pub user_id: ID,
    /// What it is about (dotted lower-case).
    pub kind: String,
    /// Headline (at most 200 characters).
    pub title: String,
    /// Text (at most 5000 characters).
    pub body: String,
    /// Structured details (at most 16 KiB of JSON).
    pub data: Option<Json<serde_json::Value>>,
    /// Exactly these channels (IN_APP is always added); default: the
    /// recipient's preferences.
    pub channels: Option<Vec<Channel>>,
}

impl From<SendNotificationInput> for SendRequest {
    fn from(input: SendNotificationInput) -> Self {
        Self {
            user_id: input.user_id.0,
            kind: input.kind,
            title: input.title,
            body: input.body,
            data: input.data.map(|Json(v)| v),
            channels: input.channels,
        }
    }
}
