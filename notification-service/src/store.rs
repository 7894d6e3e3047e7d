//! What the service stores: notifications (one per user, kind and channel,
//! with their delivery attempts) and preferences (one per user), their
//! collections and the indexes they need, ensured at start-up.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use service_core::db::{Database, Entity, IndexSpec, Repository, StoreResult};

/// Name of the unique index that makes event consumption idempotent: one
/// notification per `(cause, kind, channel)`.
pub const DEDUPE_INDEX: &str = "notifications_dedupe_unique";

/// Where a notification goes.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    async_graphql::Enum,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(name = "Channel")]
pub enum Channel {
    /// Stored here and pushed live to the user's subscriptions.
    InApp,
    /// An email over SMTP.
    Email,
    /// A text message through the SMS provider.
    Sms,
    /// A mobile push through the push provider.
    Push,
    /// A JSON POST to the webhook endpoint.
    Webhook,
}

impl Channel {
    /// Every channel, in a stable order.
    pub const ALL: [Channel; 5] = [
        Channel::InApp,
        Channel::Email,
        Channel::Sms,
        Channel::Push,
        Channel::Webhook,
    ];

    /// The channels that go through a provider (all but `IN_APP`).
    pub const EXTERNAL: [Channel; 4] = [
        Channel::Email,
        Channel::Sms,
        Channel::Push,
        Channel::Webhook,
    ];

    /// The upper-case name (`IN_APP`), as stored and as in the schema.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::InApp => "IN_APP",
            Channel::Email => "EMAIL",
            Channel::Sms => "SMS",
            Channel::Push => "PUSH",
            Channel::Webhook => "WEBHOOK",
        }
    }

    /// The lower-case name, for queue stream names and metrics.
    pub fn slug(self) -> &'static str {
        match self {
            Channel::InApp => "in_app",
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::Webhook => "webhook",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a notification is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(name = "NotificationStatus")]
pub enum NotificationStatus {
    /// Queued for its provider.
    Pending,
    /// Delivered (for `IN_APP`: stored and pushed).
    Sent,
    /// Given up on: every attempt failed, or the channel is disabled; the
    /// reason is in `failure_reason` (the dead letter).
    Failed,
    /// The user has read it.
    Read,
}

impl NotificationStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Sent => "SENT",
            Self::Failed => "FAILED",
            Self::Read => "READ",
        }
    }
}

/// How one delivery attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(name = "DeliveryAttemptStatus")]
pub enum AttemptStatus {
    /// The provider accepted the message.
    Succeeded,
    /// The provider failed, refused or did not answer in time.
    Failed,
    /// The channel's circuit breaker was open: no call was made.
    Rejected,
}

/// One try at handing a notification to its provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first try.
    pub number: u32,
    /// How it ended.
    pub status: AttemptStatus,
    /// Why it failed (never the message body).
    pub error: Option<String>,
    /// When it started.
    pub at: DateTime<Utc>,
}

/// One notification on one channel.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Notification {
    /// A UUID v7, so ids sort by creation time (the listing order).
    #[serde(rename = "_id")]
    pub id: String,
    /// Whose it is.
    pub user_id: String,
    /// The owner's tenant.
    pub tenant_id: String,
    /// Where it goes.
    pub channel: Channel,
    /// What it is about (`transfer.received`, `auth.otp`, ...).
    pub kind: String,
    /// Short headline.
    pub title: String,
    /// The text; may hold a one-time code, so it is never logged.
    pub body: String,
    /// Structured details for clients.
    pub data: Option<Value>,
    /// Where it is in its life.
    pub status: NotificationStatus,
    /// Every delivery attempt, oldest first.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// Why it was given up on (status `FAILED`).
    pub failure_reason: Option<String>,
    /// `(cause, kind, channel)`: unique, so a redelivered event or a retried
    /// request creates nothing new.
    pub dedupe_key: String,
    /// The email address an `EMAIL` notification goes to.
    pub email: Option<String>,
    /// Until when (Unix ms) a deliverer holds this notification; 0 when
    /// free. Keeps two consumers of a redelivered job from both sending.
    #[serde(default)]
    pub lease_until_ms: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its provider accepted it.
    pub sent_at: Option<DateTime<Utc>>,
    /// When the user read it.
    pub read_at: Option<DateTime<Utc>>,
}

impl Entity for Notification {
    const COLLECTION: &'static str = "notifications";
}

/// A user's choices: which channels are on, globally and per kind, and
/// where email goes. `IN_APP` is always on, whatever is stored.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Preferences {
    /// The user's id (one document per user).
    #[serde(rename = "_id")]
    pub user_id: String,
    /// Channel switches; a channel not listed takes its default.
    #[serde(default)]
    pub channels: BTreeMap<Channel, bool>,
    /// Per-kind channel lists; a kind listed here uses exactly these
    /// channels (plus `IN_APP`) instead of the switches.
    #[serde(default)]
    pub kinds: BTreeMap<String, Vec<Channel>>,
    /// Where email goes, learnt from `user.registered` and
    /// `auth.otp.requested` or set by the user.
    pub email: Option<String>,
    /// When the user last changed them.
    pub updated_at: Option<DateTime<Utc>>,
}

impl Entity for Preferences {
    const COLLECTION: &'static str = "notification_preferences";
}

/// The indexes the service relies on.
pub fn indexes() -> Vec<IndexSpec> {
    vec![
        IndexSpec::new(Notification::COLLECTION, DEDUPE_INDEX, &["dedupe_key"]).unique(),
        IndexSpec::new(
            Notification::COLLECTION,
            "notifications_user",
            &["user_id", "_id"],
        ),
        IndexSpec::new(
            Notification::COLLECTION,
            "notifications_status",
            &["status"],
        ),
    ]
}

/// The repositories over one database.
#[derive(Clone)]
pub struct Store {
    /// Notifications.
    pub notifications: Repository<Notification>,
    /// Preferences.
    pub preferences: Repository<Preferences>,
}

impl Store {
    /// Ensures the indexes, then serves the repositories.
    pub async fn open(db: Arc<Database>) -> StoreResult<Self> {
        db.ensure_indexes(&indexes()).await?;
        Ok(Self {
            notifications: Repository::new(db.clone()),
            preferences: Repository::new(db),
        })
    }
}
