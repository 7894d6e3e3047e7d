//! Subscriptions through the gateway, over both transports it serves:
//! `graphql-transport-ws` on a WebSocket and graphql-sse on `POST /graphql`.
//! Money moved by the admin and by a transfer reaches each party's
//! `walletUpdated` feeds with the right balances and never another user's;
//! the transfer's notifications reach each party's `notificationReceived`.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use e2e::feeds::{Feed, Transport};
use e2e::{eventually, first_code, text, Mode, Platform, Session};
use serde_json::{json, Value};

/// How long any one event may take to arrive; generous, never asserted.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one warm-up trigger waits before it triggers again.
const WARM_UP_WAIT: Duration = Duration::from_secs(1);

/// `user.email` comes from the auth subgraph: each event runs an entity
/// fetch after the payment subgraph's subscription.
const WALLET_UPDATED: &str =
    "subscription { walletUpdated { id balance currency user { email } } }";

const NOTIFICATION_RECEIVED: &str = "subscription { notificationReceived { userId kind title } }";

/// Opens `query` with `token` over `transport`. SSE streams get their own
/// client: the platform's gives up on a request after a minute, and a
/// stream stays open for as long as the test reads it.
async fn open(
    platform: &Platform,
    transport: Transport,
    token: &str,
    query: &str,
) -> anyhow::Result<Feed> {
    Feed::open(
        transport,
        &reqwest::Client::new(),
        platform.graphql_url(),
        token,
        query,
    )
    .await
}

/// The next result of `feed`, waiting at most [`EVENT_TIMEOUT`].
async fn next(feed: &mut Feed) -> anyhow::Result<Value> {
    feed.next_within(EVENT_TIMEOUT)
        .await?
        .ok_or_else(|| anyhow!("no event within {EVENT_TIMEOUT:?}"))
}

/// Triggers events with `trigger` until `feed` delivers one: the gateway
/// opens its upstream subscription asynchronously, so events made before it
/// is in place are not seen. Answers the first result.
async fn warm_up<F, Fut>(feed: &mut Feed, mut trigger: F) -> anyhow::Result<Value>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        trigger().await?;
        if let Some(result) = feed.next_within(WARM_UP_WAIT).await? {
            return Ok(result);
        }
    }
    bail!("the subscription delivered nothing within {EVENT_TIMEOUT:?}")
}

/// A user with a EUR wallet, subscribed to both feeds on both transports.
struct Subscriber {
    session: Session,
    wallet: String,
    wallet_feeds: Vec<Feed>,
    notification_feeds: Vec<Feed>,
}

impl Subscriber {
    async fn new(platform: &Platform, label: &str) -> anyhow::Result<Self> {
        let session = platform.register(label).await?;
        let wallet = platform.create_wallet(&session, "EUR").await?;
        let token = session.access_token.as_str();
        Ok(Self {
            wallet_feeds: vec![
                open(platform, Transport::WebSocket, token, WALLET_UPDATED).await?,
                open(platform, Transport::Sse, token, WALLET_UPDATED).await?,
            ],
            notification_feeds: vec![
                open(platform, Transport::WebSocket, token, NOTIFICATION_RECEIVED).await?,
                open(platform, Transport::Sse, token, NOTIFICATION_RECEIVED).await?,
            ],
            session,
            wallet,
        })
    }

    /// Waits until every feed delivers, with deposits of 1 and `warm.up`
    /// notifications as triggers.
    async fn warm_up(&mut self, platform: &Platform, admin: &Session) -> anyhow::Result<()> {
        let mut feeds = std::mem::take(&mut self.wallet_feeds);
        for feed in &mut feeds {
            let first = warm_up(feed, || async {
                platform.deposit(admin, &self.wallet, 1).await?;
                Ok(())
            })
            .await?;
            self.check_wallet(&first)?;
        }
        self.wallet_feeds = feeds;
        let user_id = self.session.id.clone();
        for feed in &mut self.notification_feeds {
            let first = warm_up(feed, || notify(platform, admin, &user_id, "warm.up")).await?;
            assert_eq!(
                first["data"]["notificationReceived"]["userId"],
                json!(user_id),
                "another user's notification: {first}"
            );
        }
        Ok(())
    }

    /// The balance of a `walletUpdated` result, after checking it is this
    /// user's wallet, joined with this user's email.
    fn check_wallet(&self, result: &Value) -> anyhow::Result<i64> {
        assert!(result["errors"].is_null(), "{result}");
        let wallet = &result["data"]["walletUpdated"];
        assert_eq!(
            wallet["id"],
            json!(self.wallet),
            "{}'s feed delivered another wallet: {result}",
            self.session.email
        );
        assert_eq!(
            wallet["user"]["email"],
            json!(self.session.email),
            "{result}"
        );
        assert_eq!(wallet["currency"], json!("EUR"), "{result}");
        wallet["balance"]
            .as_i64()
            .ok_or_else(|| anyhow!("no balance in {result}"))
    }

    /// Reads every wallet feed until each has shown all of `balances`;
    /// every event on the way must be this user's wallet.
    async fn expect_balances(&mut self, balances: &[i64]) -> anyhow::Result<()> {
        let mut feeds = std::mem::take(&mut self.wallet_feeds);
        for feed in &mut feeds {
            let mut missing: BTreeSet<i64> = balances.iter().copied().collect();
            while !missing.is_empty() {
                let result = next(feed)
                    .await
                    .with_context(|| format!("waiting for balances {missing:?}"))?;
                missing.remove(&self.check_wallet(&result)?);
            }
        }
        self.wallet_feeds = feeds;
        Ok(())
    }

    /// Reads every notification feed until `kind` arrives; every event on
    /// the way must be this user's and none may be of a kind in `foreign`.
    async fn expect_notification(&mut self, kind: &str, foreign: &[&str]) -> anyhow::Result<()> {
        for feed in &mut self.notification_feeds {
            loop {
                let result = next(feed)
                    .await
                    .with_context(|| format!("waiting for {kind}"))?;
                assert!(result["errors"].is_null(), "{result}");
                let received = &result["data"]["notificationReceived"];
                assert_eq!(received["userId"], json!(self.session.id), "{result}");
                let got = text(&received["kind"])?;
                assert!(!foreign.contains(&got.as_str()), "{result}");
                if got == kind {
                    assert!(
                        received["title"].as_str().is_some_and(|t| !t.is_empty()),
                        "{result}"
                    );
                    break;
                }
            }
        }
        Ok(())
    }

    /// The balance of the wallet as its owner reads it now.
    async fn balance(&self, platform: &Platform) -> anyhow::Result<i64> {
        let data = platform
            .data(
                Some(&self.session.access_token),
                "{ myWallets { id balance } }",
                json!({}),
            )
            .await?;
        data["myWallets"]
            .as_array()
            .and_then(|wallets| wallets.iter().find(|w| w["id"] == json!(self.wallet)))
            .and_then(|wallet| wallet["balance"].as_i64())
            .ok_or_else(|| anyhow!("no balance for {} in {data}", self.wallet))
    }

    async fn close(self) -> anyhow::Result<()> {
        for feed in self.wallet_feeds.into_iter().chain(self.notification_feeds) {
            feed.close().await?;
        }
        Ok(())
    }
}

async fn notify(
    platform: &Platform,
    admin: &Session,
    user_id: &str,
    kind: &str,
) -> anyhow::Result<()> {
    platform
        .data(
            Some(&admin.access_token),
            "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { id } }",
            json!({ "input": {
                "userId": user_id, "kind": kind, "title": "Warm-up", "body": "e2e",
                "channels": ["IN_APP"],
            } }),
        )
        .await?;
    Ok(())
}

async fn wallet_and_notification_feeds(mode: Mode) -> anyhow::Result<()> {
    let platform = Platform::start(mode).await?;
    let admin = platform.admin().await?;
    let mut alice = Subscriber::new(&platform, "alice").await?;
    let mut bob = Subscriber::new(&platform, "bob").await?;
    alice.warm_up(&platform, &admin).await?;
    bob.warm_up(&platform, &admin).await?;
    let alice_start = alice.balance(&platform).await?;
    let bob_start = bob.balance(&platform).await?;

    // The admin deposits into Alice's wallet, then Alice pays Bob. The
    // payment service learns of Bob from `user.registered` on the bus;
    // until then he is an unknown recipient and nothing moves.
    platform.deposit(&admin, &alice.wallet, 1_000).await?;
    let key = uuid::Uuid::new_v4().to_string();
    let (on, from, to, key) = (&platform, &alice.session, &bob.session, key.as_str());
    let sent = eventually(EVENT_TIMEOUT, move || async move {
        let body = on
            .gql(
                Some(&from.access_token),
                "mutation($input: TransferInput!) { transfer(input: $input) { id status } }",
                json!({ "input": {
                    "toUserId": to.id, "amount": 300, "currency": "EUR",
                    "idempotencyKey": key, "description": "e2e subscriptions",
                } }),
            )
            .await?;
        let unknown = first_code(&body).as_deref() == Some("MSPaymentRecipientNotFound");
        Ok((!unknown).then_some(body))
    })
    .await?;
    assert_eq!(
        sent["data"]["transfer"]["status"],
        json!("COMPLETED"),
        "{sent}"
    );

    // Each party sees its own wallet move, on both transports.
    alice
        .expect_balances(&[alice_start + 1_000, alice_start + 700])
        .await?;
    bob.expect_balances(&[bob_start + 300]).await?;
    assert_eq!(alice.balance(&platform).await?, alice_start + 700);
    assert_eq!(bob.balance(&platform).await?, bob_start + 300);

    // Each party's feed up to a later deposit of its own holds only its own
    // wallet (`expect_balances` checks every event on the way): the other
    // party's updates, made before, would have come first.
    platform.deposit(&admin, &alice.wallet, 1).await?;
    platform.deposit(&admin, &bob.wallet, 1).await?;
    alice.expect_balances(&[alice_start + 701]).await?;
    bob.expect_balances(&[bob_start + 301]).await?;

    // The transfer notifies both parties, each on its own feeds.
    alice
        .expect_notification("transfer.sent", &["transfer.received"])
        .await?;
    bob.expect_notification("transfer.received", &["transfer.sent"])
        .await?;

    alice.close().await?;
    bob.close().await?;
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wallet_and_notification_feeds_reach_their_owner_only_on_embedded_defaults(
) -> anyhow::Result<()> {
    wallet_and_notification_feeds(Mode::Embedded).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wallet_and_notification_feeds_reach_their_owner_only_on_redis_and_mongodb(
) -> anyhow::Result<()> {
    wallet_and_notification_feeds(Mode::RedisMongo).await
}
