//! The soak's long-lived subscribers: one subscription over one transport
//! (`graphql-transport-ws` on a WebSocket, or graphql-sse on
//! `POST /graphql`) that counts the events it receives, checks each is its
//! owner's, and reconnects whenever the stream ends or fails (a stopped
//! subgraph ends the gateway's upstream subscription, so a soak with faults
//! sees many reconnects).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::Member;
use crate::feeds::{self, Transport};

/// How long opening a subscription may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The pause between a dropped subscription and the next attempt.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// What a feed subscribes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Topic {
    WalletUpdated,
    NotificationReceived,
}

impl Topic {
    fn query(self) -> &'static str {
        match self {
            Topic::WalletUpdated => "subscription { walletUpdated { id balance currency } }",
            Topic::NotificationReceived => "subscription { notificationReceived { userId kind } }",
        }
    }

    /// Whether `payload` (a `{ data, errors }` result) is `member`'s own
    /// event; results carrying only errors are not events of anyone.
    fn owned_by(self, payload: &Value, member: &Member) -> bool {
        match self {
            Topic::WalletUpdated => payload["data"]["walletUpdated"]["id"] == json!(member.wallet),
            Topic::NotificationReceived => {
                payload["data"]["notificationReceived"]["userId"] == json!(member.id)
            }
        }
    }
}

/// The counters of one feed, shared with the soak's controller.
#[derive(Debug, Default)]
pub(crate) struct FeedStats {
    /// Events of the owner received.
    pub(crate) delivered: AtomicU64,
    /// Events of someone else received: must stay zero.
    pub(crate) foreign: AtomicU64,
    /// Results that carried errors instead of an event.
    pub(crate) errored: AtomicU64,
    /// Subscriptions opened (the first one included).
    pub(crate) connects: AtomicU64,
    /// Attempts to subscribe that failed before the subscription ran.
    pub(crate) failed_connects: AtomicU64,
}

/// One long-lived subscriber.
pub(crate) struct Feed {
    pub(crate) member: Arc<Member>,
    pub(crate) topic: Topic,
    pub(crate) transport: Transport,
    pub(crate) stats: Arc<FeedStats>,
}

impl Feed {
    /// A label for the summary: `<member> <topic> over <transport>`.
    pub(crate) fn label(&self) -> String {
        let topic = match self.topic {
            Topic::WalletUpdated => "walletUpdated",
            Topic::NotificationReceived => "notificationReceived",
        };
        format!("{} {topic}/{}", self.member.label, self.transport.name())
    }

    /// Subscribes, counts, and subscribes again after every end, until
    /// `stop` is cancelled.
    pub(crate) async fn run(self, graphql_url: String, stop: CancellationToken) {
        // A stream stays open for the whole soak: no request timeout.
        let client = reqwest::Client::new();
        while !stop.is_cancelled() {
            let token = self.member.token();
            let subscribed = tokio::select! {
                () = stop.cancelled() => return,
                subscribed = self.subscribe(&client, &graphql_url, &token) => subscribed,
            };
            match subscribed {
                Ok(mut stream) => {
                    self.stats.connects.fetch_add(1, Ordering::Relaxed);
                    loop {
                        let next = tokio::select! {
                            () = stop.cancelled() => {
                                // The peer may be gone already: nothing to
                                // report then.
                                let _ = stream.close().await;
                                return;
                            }
                            next = stream.next() => next,
                        };
                        match next {
                            Ok(payload) => self.count(&payload),
                            // Ended or failed: subscribe again.
                            Err(_) => break,
                        }
                    }
                }
                Err(_) => {
                    self.stats.failed_connects.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RECONNECT_PAUSE) => {}
            }
        }
    }

    fn count(&self, payload: &Value) {
        let counter = if self.topic.owned_by(payload, &self.member) {
            &self.stats.delivered
        } else if payload["errors"].is_null() {
            &self.stats.foreign
        } else {
            &self.stats.errored
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    async fn subscribe(
        &self,
        client: &reqwest::Client,
        graphql_url: &str,
        token: &str,
    ) -> anyhow::Result<feeds::Feed> {
        let query = self.topic.query();
        tokio::time::timeout(
            CONNECT_TIMEOUT,
            feeds::Feed::open(self.transport, client, graphql_url, token, query),
        )
        .await
        .context("the subscription did not start in time")?
    }
}
