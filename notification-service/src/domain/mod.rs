//! The rules: creating notifications on the channels a user's preferences
//! allow (idempotently, by cause), queueing external deliveries, pushing
//! in-app ones live, reading, marking read, and preferences.

mod consumers;
mod live;
mod preferences;
mod validation;

use std::sync::Arc;

use chrono::Utc;
use serde_json::{json, Value};
use service_core::access_engine::Resource;
use service_core::db::{
    Connection, Direction, Filter, FindOptions, PageArgs, SortKey, StoreError, Update,
};
use service_core::{ApiError, ApiResult, Principal, RequestContext};

pub use consumers::{subscribe, CONSUMER_GROUP};
pub use live::{live_feed, LiveFeed};
pub use preferences::default_enabled;
pub use validation::{PreferencesChange, SendRequest};

use crate::delivery::{DeliveryQueue, Job, Providers, QueueError};
use crate::store::{Channel, Notification, NotificationStatus, Preferences, Store, DEDUPE_INDEX};

/// Why a notification could not be created or queued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The delivery queue refused the job.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl From<NotifyError> for ApiError {
    fn from(err: NotifyError) -> Self {
        match err {
            NotifyError::Store(err) => err.into(),
            NotifyError::Queue(err) => {
                ApiError::unavailable("notification delivery").with_cause(err)
            }
        }
    }
}

/// A notification to create, on one or more channels.
#[derive(Clone, Debug)]
pub struct NewNotification {
    /// The recipient.
    pub user_id: String,
    /// The recipient's tenant.
    pub tenant_id: String,
    /// What it is about.
    pub kind: String,
    /// Headline.
    pub title: String,
    /// Text (may hold a secret such as a one-time code: never logged).
    pub body: String,
    /// Structured details.
    pub data: Option<Value>,
    /// What caused it (an event id, a request): with the kind and channel,
    /// the idempotency key.
    pub cause: String,
    /// Exactly these channels (plus `IN_APP`); `None` follows preferences.
    pub channels: Option<Vec<Channel>>,
    /// Only channels in this list are ever used (an OTP never goes to a
    /// webhook); `None` allows all.
    pub allowed: Option<Vec<Channel>>,
    /// The address for email, when the cause carries one.
    pub email: Option<String>,
}

/// A page of notifications and the size of the whole listing.
pub struct NotificationPage {
    /// The page.
    pub connection: Connection<Notification>,
    /// Notifications matching the filter.
    pub total_count: u64,
}

/// The notification operations. Cheap to clone.
#[derive(Clone)]
pub struct NotificationService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    queue: DeliveryQueue,
    live: LiveFeed,
    providers: Providers,
}

/// A caller's own notifications, for the access engine's `own` rules.
fn own(principal: &Principal) -> Resource<'_> {
    Resource {
        id: None,
        owner: Some(&principal.user_id),
        tenant: Some(&principal.tenant_id),
    }
}

fn not_found() -> ApiError {
    ApiError::new(crate::codes::NOT_FOUND, "Notification not found")
}

impl NotificationService {
    /// The service over its parts.
    pub fn new(store: Store, queue: DeliveryQueue, live: LiveFeed, providers: Providers) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                queue,
                live,
                providers,
            }),
        }
    }

    /// The store (tests read delivery state through it).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The live feed.
    pub fn live(&self) -> &LiveFeed {
        &self.inner.live
    }

    /// The providers (tests read breaker states through them).
    pub fn providers(&self) -> &Providers {
        &self.inner.providers
    }

    /// The delivery queue.
    pub fn queue(&self) -> &DeliveryQueue {
        &self.inner.queue
    }

    /// A user's preferences, the defaults when none are stored.
    pub async fn preferences_of(&self, user_id: &str) -> Result<Preferences, StoreError> {
        Ok(self
            .inner
            .store
            .preferences
            .get(user_id)
            .await?
            .unwrap_or_else(|| Preferences::new(user_id)))
    }

    /// Creates the notification on every channel it goes to and starts its
    /// delivery. Idempotent by `(cause, kind, channel)`: a repeated call
    /// returns what the first created (re-queueing anything still pending,
    /// which the deliverer's claim keeps from being sent twice).
    #[tracing::instrument(skip_all, fields(user_id = %new.user_id, kind = %new.kind), err)]
    pub async fn notify(&self, new: NewNotification) -> Result<Vec<Notification>, NotifyError> {
        let prefs = self.preferences_of(&new.user_id).await?;
        let mut channels = match &new.channels {
            Some(list) => {
                let mut out = vec![Channel::InApp];
                out.extend(list.iter().copied().filter(|c| *c != Channel::InApp));
                out.dedup();
                out
            }
            None => prefs.channels_for(&new.kind),
        };
        if let Some(allowed) = &new.allowed {
            channels.retain(|c| *c == Channel::InApp || allowed.contains(c));
        }
        let email = new.email.clone().or_else(|| prefs.email.clone());
        let mut created = Vec::with_capacity(channels.len());
        for channel in channels {
            created.push(self.create_one(&new, channel, email.as_deref()).await?);
        }
        Ok(created)
    }

    async fn create_one(
        &self,
        new: &NewNotification,
        channel: Channel,
        email: Option<&str>,
    ) -> Result<Notification, NotifyError> {
        let now = Utc::now();
        let enabled = self.inner.providers.is_enabled(channel);
        let (status, failure_reason) = match channel {
            Channel::InApp => (NotificationStatus::Sent, None),
            _ if enabled => (NotificationStatus::Pending, None),
            _ => (
                NotificationStatus::Failed,
                Some("channel disabled: no provider configured".to_owned()),
            ),
        };
        let notification = Notification {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: new.user_id.clone(),
            tenant_id: new.tenant_id.clone(),
            channel,
            kind: new.kind.clone(),
            title: new.title.clone(),
            body: new.body.clone(),
            data: new.data.clone(),
            status,
            attempts: Vec::new(),
            failure_reason,
            dedupe_key: format!("{}:{}:{}", new.cause, new.kind, channel.slug()),
            email: (channel == Channel::Email)
                .then(|| email.map(str::to_owned))
                .flatten(),
            lease_until_ms: 0,
            created_at: now,
            sent_at: (channel == Channel::InApp).then_some(now),
            read_at: None,
        };
        match self.inner.store.notifications.create(&notification).await {
            Ok(()) => {}
            Err(StoreError::Duplicate { index, .. }) if index == DEDUPE_INDEX => {
                let existing = self
                    .inner
                    .store
                    .notifications
                    .find_one(&Filter::all().eq("dedupe_key", notification.dedupe_key.clone()))
                    .await?
                    .ok_or(StoreError::Conflict)?;
                tracing::debug!(notification_id = %existing.id, "already created for this cause");
                if existing.status == NotificationStatus::Pending {
                    self.enqueue(&existing).await?;
                }
                return Ok(existing);
            }
            Err(err) => return Err(err.into()),
        }
        match notification.status {
            NotificationStatus::Sent => self.inner.live.publish(&notification).await,
            NotificationStatus::Pending => self.enqueue(&notification).await?,
            NotificationStatus::Failed | NotificationStatus::Read => {}
        }
        Ok(notification)
    }

    async fn enqueue(&self, notification: &Notification) -> Result<(), QueueError> {
        self.inner
            .queue
            .enqueue(Job {
                notification_id: notification.id.clone(),
                channel: notification.channel,
                tenant_id: notification.tenant_id.clone(),
            })
            .await
    }

    /// Queues every notification still pending (after a restart, whatever
    /// the in-process queue held is gone); how many were queued. With
    /// `release_leases` (the in-process queue, where this process is the
    /// only deliverer of its store) the claims a crashed predecessor left
    /// are released first, so those notifications go out now rather than
    /// never; a durable queue redelivers its own jobs once they expire.
    pub async fn requeue_pending(&self, release_leases: bool) -> Result<usize, NotifyError> {
        let mut after: Option<SortKey> = None;
        let mut queued = 0;
        loop {
            let mut options = FindOptions::by_id().limit(500);
            options.after = after.clone();
            let batch = self
                .inner
                .store
                .notifications
                .find(
                    &Filter::all().eq("status", NotificationStatus::Pending.as_str()),
                    &options,
                )
                .await?;
            let Some(last) = batch.last() else { break };
            after = Some(SortKey {
                value: json!(last.id),
                id: last.id.clone(),
            });
            for n in &batch {
                if release_leases && n.lease_until_ms != 0 {
                    let release = Update::new().set("lease_until_ms", 0);
                    let pending = Filter::all().eq("status", NotificationStatus::Pending.as_str());
                    self.inner
                        .store
                        .notifications
                        .update(&n.id, pending, &release)
                        .await?;
                }
                self.enqueue(n).await?;
                queued += 1;
            }
        }
        Ok(queued)
    }

    /// The caller's notifications, newest first.
    pub async fn list(
        &self,
        ctx: &RequestContext,
        args: PageArgs,
        unread_only: bool,
    ) -> ApiResult<NotificationPage> {
        let principal = ctx.user()?;
        ctx.require("notification", "read", own(principal))?;
        let query = args.validate()?;
        let mut filter = Filter::all().eq("user_id", principal.user_id.clone());
        if unread_only {
            filter = filter.ne("status", NotificationStatus::Read.as_str());
        }
        let store = &self.inner.store.notifications;
        let connection = store
            .page(&filter, service_core::db::ID, Direction::Desc, &query)
            .await?;
        let total_count = store.count(&filter).await?;
        Ok(NotificationPage {
            connection,
            total_count,
        })
    }

    /// One notification of the caller's; `MSNotificationNotFound` for an
    /// unknown id or someone else's (the two are indistinguishable).
    pub async fn get(&self, ctx: &RequestContext, id: &str) -> ApiResult<Notification> {
        let principal = ctx.user()?;
        ctx.require("notification", "read", own(principal))?;
        match self.inner.store.notifications.get(id).await? {
            Some(n) if n.user_id == principal.user_id => Ok(n),
            _ => Err(not_found()),
        }
    }

    /// Marks one of the caller's notifications read (again is harmless).
    pub async fn mark_read(&self, ctx: &RequestContext, id: &str) -> ApiResult<Notification> {
        let current = self.get(ctx, id).await?;
        if current.status == NotificationStatus::Read {
            return Ok(current);
        }
        let filter = Filter::all()
            .eq("user_id", current.user_id.clone())
            .ne("status", NotificationStatus::Read.as_str());
        let update = Update::new()
            .set("status", NotificationStatus::Read.as_str())
            .set("read_at", json!(Utc::now()));
        match self
            .inner
            .store
            .notifications
            .update(id, filter, &update)
            .await?
        {
            Some(n) => Ok(n),
            // Read meanwhile by another request.
            None => self.get(ctx, id).await,
        }
    }

    /// Marks every unread notification of the caller read; how many changed.
    pub async fn mark_all_read(&self, ctx: &RequestContext) -> ApiResult<u64> {
        let principal = ctx.user()?;
        ctx.require("notification", "read", own(principal))?;
        let store = &self.inner.store.notifications;
        let unread = Filter::all()
            .eq("user_id", principal.user_id.clone())
            .ne("status", NotificationStatus::Read.as_str());
        let update = Update::new()
            .set("status", NotificationStatus::Read.as_str())
            .set("read_at", json!(Utc::now()));
        let mut changed = 0;
        loop {
            let batch = store
                .find(&unread, &FindOptions::by_id().limit(200))
                .await?;
            if batch.is_empty() {
                break;
            }
            let mut progressed = false;
            for n in batch {
                if store
                    .update(&n.id, unread.clone(), &update)
                    .await?
                    .is_some()
                {
                    changed += 1;
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        Ok(changed)
    }

    /// The caller's preferences.
    pub async fn preferences(&self, ctx: &RequestContext) -> ApiResult<Preferences> {
        let principal = ctx.user()?;
        ctx.require("notification", "read", own(principal))?;
        Ok(self.preferences_of(&principal.user_id).await?)
    }

    /// Applies `change` to the caller's preferences.
    pub async fn update_preferences(
        &self,
        ctx: &RequestContext,
        change: PreferencesChange,
    ) -> ApiResult<Preferences> {
        let principal = ctx.user()?;
        ctx.require("notification", "read", own(principal))?;
        change.validate()?;
        let user_id = principal.user_id.clone();
        let updated = self
            .modify_preferences(&user_id, |prefs| change.apply(prefs))
            .await?;
        Ok(updated)
    }

    /// Reads, changes and writes one user's preferences, creating them on
    /// first change; a concurrent first write is retried as an update.
    pub async fn modify_preferences(
        &self,
        user_id: &str,
        change: impl Fn(&mut Preferences),
    ) -> Result<Preferences, StoreError> {
        let repo = &self.inner.store.preferences;
        for _ in 0..3 {
            let existing = repo.get(user_id).await?;
            let mut prefs = existing
                .clone()
                .unwrap_or_else(|| Preferences::new(user_id));
            change(&mut prefs);
            prefs.updated_at = Some(Utc::now());
            if existing.is_some() {
                let update = Update::new()
                    .set("channels", json!(prefs.channels))
                    .set("kinds", json!(prefs.kinds))
                    .set("email", json!(prefs.email))
                    .set("updated_at", json!(prefs.updated_at));
                if let Some(saved) = repo.update(user_id, Filter::all(), &update).await? {
                    return Ok(saved);
                }
            } else {
                match repo.create(&prefs).await {
                    Ok(()) => return Ok(prefs),
                    Err(StoreError::Duplicate { .. }) => continue,
                    Err(err) => return Err(err),
                }
            }
        }
        Err(StoreError::Conflict)
    }

    /// `sendNotification`: needs `notification:send:*`.
    pub async fn send(
        &self,
        ctx: &RequestContext,
        request: SendRequest,
    ) -> ApiResult<Vec<Notification>> {
        let principal = ctx.require("notification", "send", Resource::any())?;
        request.validate()?;
        let created = self
            .notify(NewNotification {
                user_id: request.user_id,
                tenant_id: principal.tenant_id.clone(),
                kind: request.kind,
                title: request.title,
                body: request.body,
                data: request.data,
                cause: format!("send:{}", uuid::Uuid::new_v4().simple()),
                channels: request.channels,
                allowed: None,
                email: None,
            })
            .await?;
        Ok(created)
    }
}
