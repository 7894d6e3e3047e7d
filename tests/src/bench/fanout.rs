//! Subscriptions fan-out: WebSocket and SSE subscribers spread over a set
//! of users, half of each transport on `walletUpdated`, half on
//! `notificationReceived`; a producer moves money and sends notifications
//! at a steady rate, and every subscriber's feed is checked against what
//! its user should have seen.
//!
//! Each event is matched by what identifies it: a wallet update by the
//! wallet's balance (the producer is the only one moving money while it
//! runs, one operation at a time, so it knows every balance each wallet
//! passes through), a notification by its kind and the transfer,
//! deposit or message it is about. A subscriber that misses an expected
//! event, receives one twice, or receives another user's, counts an error.
//! Latency runs from the event's own timestamp (`updatedAt`, `createdAt`,
//! written by the platform on this machine's clock) to its receipt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context as _};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};

use crate::feeds::{Feed, Transport};
use crate::{text, GatewayClient, Session};
use figures::{tally, Expected};
pub use figures::{Figures, TransportFigures};

mod figures;

const WALLET_UPDATED: &str = "subscription { walletUpdated { id userId balance updatedAt } }";

const NOTIFICATION_RECEIVED: &str =
    "subscription { notificationReceived { userId kind title data createdAt } }";

/// The producer's notifications.
const MESSAGE_KIND: &str = "bench.message";

/// The wallets' currency.
const CURRENCY: &str = "EUR";

/// What each wallet starts with: the producer's transfers never run dry.
const FUNDING: i64 = 1_000_000_000;

/// Subscriptions opened at once.
const OPEN_CONCURRENCY: usize = 32;

/// Registrations at once (argon2 makes each expensive).
const SIGN_UP_CONCURRENCY: usize = 4;

/// How long warming up every subscriber may take in all.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// How long one warm-up round waits for its events before the next.
const WARM_UP_ROUND: Duration = Duration::from_secs(2);

/// After the producer stops: how long delivery may make no progress
/// before the missing events count as missed.
const DRAIN_IDLE: Duration = Duration::from_secs(10);

/// The coarsest precision the platform's timestamps are assumed to have.
const STAMP_PRECISION: Duration = Duration::from_millis(2);

/// One run's settings.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// WebSocket subscribers.
    pub websockets: usize,
    /// SSE subscribers.
    pub sse: usize,
    /// Users the subscribers are spread over.
    pub users: usize,
    /// The producer's operations per second.
    pub rate: u32,
    /// How long the producer runs.
    pub duration: Duration,
}

/// What a subscription listens to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Topic {
    Wallet,
    Notification,
}

/// A user the subscribers belong to.
struct User {
    session: Session,
    wallet: String,
}

/// What one subscriber has received; shared with its reader task.
#[derive(Default)]
struct Inbox {
    /// Anything arrived (warm-up included).
    warm: bool,
    /// Keys of the measured events, with their latency in microseconds.
    events: Vec<(String, u64)>,
    /// When the last measured event arrived.
    last: Option<Instant>,
    /// Foreign or malformed events, and the feed's failure.
    faults: Vec<String>,
}

struct Subscriber {
    transport: Transport,
    topic: Topic,
    user: usize,
    inbox: Arc<Mutex<Inbox>>,
}

/// What the readers need to classify an event.
struct Context {
    /// Wallet updates stamped before this (microseconds since the epoch)
    /// are the warm-up's; 0 while warming up.
    measure_from_us: std::sync::atomic::AtomicI64,
    /// Keys of the warm-up's notifications, ignored when they come late.
    warm_up_keys: Mutex<std::collections::HashSet<String>>,
}

/// Signs the users up, opens the subscribers, runs the producer and checks
/// every feed. `rss_kib` reads the platform's memory: once the users exist
/// (so sign-up's hashing is not counted) and once every subscriber is open
/// and delivering.
pub async fn run(
    api: &GatewayClient,
    admin: &Session,
    settings: Settings,
    rss_kib: impl Fn() -> anyhow::Result<u64>,
) -> anyhow::Result<Figures> {
    let users: Vec<User> = futures::stream::iter(0..settings.users.max(1))
        .map(|index| sign_up(api, admin, index))
        .buffer_unordered(SIGN_UP_CONCURRENCY)
        .try_collect()
        .await?;
    let users = Arc::new(users);
    let context = Arc::new(Context {
        measure_from_us: std::sync::atomic::AtomicI64::new(0),
        warm_up_keys: Mutex::new(Default::default()),
    });
    let rss_before_kib = rss_kib()?;
    let subscribers = open_all(api, &users, &context, settings).await?;
    warm_up(api, admin, &users, &subscribers, &context).await?;
    let rss_after_kib = rss_kib()?;

    // Balances as they are before the producer's first move.
    let mut balances: HashMap<String, i64> = HashMap::new();
    for wallet in api.all_wallets(admin).await? {
        let balance = wallet["balance"]
            .as_i64()
            .ok_or_else(|| anyhow!("no balance in {wallet}"))?;
        balances.insert(text(&wallet["id"])?, balance);
    }
    let started = Instant::now();
    context
        .measure_from_us
        .store(now_us(), std::sync::atomic::Ordering::SeqCst);
    // Timestamps may be kept to the millisecond: the first measured event
    // must not be stamped before the line drawn above.
    tokio::time::sleep(STAMP_PRECISION).await;
    let mut expected = Expected::new(users.len());
    let operations = produce(api, admin, &users, &mut balances, &mut expected, settings).await?;
    let produced_for = started.elapsed();
    drain(&subscribers, &expected).await;
    let mut figures = tally(&subscribers, &expected, started, operations, produced_for);
    figures.rss_before_kib = rss_before_kib;
    figures.rss_after_kib = rss_after_kib;
    Ok(figures)
}

async fn sign_up(api: &GatewayClient, admin: &Session, index: usize) -> anyhow::Result<User> {
    let session = api.register(&format!("subscriber{index}")).await?;
    let wallet = api.create_wallet(&session, CURRENCY).await?;
    api.deposit(admin, &wallet, FUNDING).await?;
    Ok(User { session, wallet })
}

/// Opens every subscription: subscriber `i` of a transport belongs to user
/// `i % users` and listens to wallets for even `i / users`, notifications
/// for odd, so each user has both topics on both transports.
async fn open_all(
    api: &GatewayClient,
    users: &Arc<Vec<User>>,
    context: &Arc<Context>,
    settings: Settings,
) -> anyhow::Result<Vec<Subscriber>> {
    // No overall timeout: a stream stays open as long as it is read.
    let sse_client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let plan: Vec<(Transport, usize)> = (0..settings.websockets)
        .map(|i| (Transport::WebSocket, i))
        .chain((0..settings.sse).map(|i| (Transport::Sse, i)))
        .collect();
    futures::stream::iter(plan)
        .map(|(transport, index)| {
            let user = index % users.len();
            let topic = if (index / users.len()).is_multiple_of(2) {
                Topic::Wallet
            } else {
                Topic::Notification
            };
            let query = match topic {
                Topic::Wallet => WALLET_UPDATED,
                Topic::Notification => NOTIFICATION_RECEIVED,
            };
            let (client, users, context) = (&sse_client, users.clone(), context.clone());
            async move {
                let feed = Feed::open(
                    transport,
                    client,
                    api.graphql_url(),
                    &users[user].session.access_token,
                    query,
                )
                .await
                .with_context(|| format!("opening a {} subscription", transport.name()))?;
                let inbox = Arc::new(Mutex::new(Inbox::default()));
                tokio::spawn(read(feed, topic, users, user, context, inbox.clone()));
                Ok::<_, anyhow::Error>(Subscriber {
                    transport,
                    topic,
                    user,
                    inbox,
                })
            }
        })
        .buffer_unordered(OPEN_CONCURRENCY)
        .try_collect()
        .await
}

/// Reads one feed until it fails, filing each event in `inbox`.
async fn read(
    mut feed: Feed,
    topic: Topic,
    users: Arc<Vec<User>>,
    user: usize,
    context: Arc<Context>,
    inbox: Arc<Mutex<Inbox>>,
) {
    loop {
        let result = feed.next().await;
        let received_us = now_us();
        let Ok(mut filed) = inbox.lock() else {
            return;
        };
        let result = match result {
            Ok(result) => result,
            Err(err) => {
                filed.faults.push(format!("the feed failed: {err:#}"));
                return;
            }
        };
        filed.warm = true;
        match classify(&result, topic, &users[user], &context) {
            Ok(Some((key, stamped_us))) => {
                // A timestamp a little after the receipt (coarse clock
                // reads) counts as no delay.
                let latency = u64::try_from(received_us - stamped_us).unwrap_or(0);
                filed.events.push((key, latency));
                filed.last = Some(Instant::now());
            }
            Ok(None) => {}
            Err(fault) => filed.faults.push(format!("{fault:#}")),
        }
    }
}

/// The key and timestamp of a measured event; `None` for a warm-up event;
/// an error for another user's or a malformed one.
fn classify(
    result: &Value,
    topic: Topic,
    user: &User,
    context: &Context,
) -> anyhow::Result<Option<(String, i64)>> {
    if !result["errors"].is_null() {
        bail!("an error on the feed: {result}");
    }
    let from = context
        .measure_from_us
        .load(std::sync::atomic::Ordering::SeqCst);
    match topic {
        Topic::Wallet => {
            let wallet = &result["data"]["walletUpdated"];
            if wallet["id"] != json!(user.wallet) || wallet["userId"] != json!(user.session.id) {
                bail!("{}'s feed got another wallet: {result}", user.session.id);
            }
            let stamped = timestamp_us(&wallet["updatedAt"])?;
            if from == 0 || stamped < from {
                return Ok(None);
            }
            let balance = wallet["balance"]
                .as_i64()
                .ok_or_else(|| anyhow!("no balance in {result}"))?;
            Ok(Some((wallet_key(balance), stamped)))
        }
        Topic::Notification => {
            let notification = &result["data"]["notificationReceived"];
            if notification["userId"] != json!(user.session.id) {
                bail!(
                    "{}'s feed got another user's notification: {result}",
                    user.session.id
                );
            }
            let key = notification_key(notification)?;
            let warm_up = from == 0
                || context
                    .warm_up_keys
                    .lock()
                    .map(|keys| keys.contains(&key))
                    .unwrap_or(false);
            if warm_up {
                return Ok(None);
            }
            Ok(Some((key, timestamp_us(&notification["createdAt"])?)))
        }
    }
}

fn wallet_key(balance: i64) -> String {
    format!("balance:{balance}")
}

/// `kind:<what it is about>`: the transfer, the deposit's transaction, or
/// the message's title.
fn notification_key(notification: &Value) -> anyhow::Result<String> {
    let kind = text(&notification["kind"])?;
    let about = match kind.as_str() {
        "transfer.sent" | "transfer.received" => text(&notification["data"]["transferId"])?,
        "deposit.completed" => text(&notification["data"]["transactionId"])?,
        _ => text(&notification["title"])?,
    };
    Ok(format!("{kind}:{about}"))
}

/// Deposits 1 into the wallet of every user with a subscriber that has
/// received nothing yet, round after round, until each has: the gateway
/// opens its upstream subscription asynchronously, so events made before
/// it is in place are not seen. A deposit updates the wallet and notifies.
async fn warm_up(
    api: &GatewayClient,
    admin: &Session,
    users: &[User],
    subscribers: &[Subscriber],
    context: &Context,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WARM_UP_TIMEOUT;
    loop {
        let cold: std::collections::BTreeSet<usize> = subscribers
            .iter()
            .filter(|s| !s.inbox.lock().map(|inbox| inbox.warm).unwrap_or(false))
            .map(|s| s.user)
            .collect();
        if cold.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} users' subscribers delivered nothing within {WARM_UP_TIMEOUT:?}",
                cold.len()
            );
        }
        for &user in &cold {
            let deposit = api.deposit(admin, &users[user].wallet, 1).await?;
            let key = format!("deposit.completed:{}", text(&deposit["id"])?);
            if let Ok(mut keys) = context.warm_up_keys.lock() {
                keys.insert(key);
            }
        }
        let round_end = Instant::now() + WARM_UP_ROUND;
        while Instant::now() < round_end {
            let all_warm = subscribers
                .iter()
                .filter(|s| cold.contains(&s.user))
                .all(|s| s.inbox.lock().map(|inbox| inbox.warm).unwrap_or(false));
            if all_warm {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs one operation after another at `settings.rate` per second for
/// `settings.duration`, cycling over the users: a deposit, a message,
/// then a transfer to the next user. Answers how many it ran.
async fn produce(
    api: &GatewayClient,
    admin: &Session,
    users: &[User],
    balances: &mut HashMap<String, i64>,
    expected: &mut Expected,
    settings: Settings,
) -> anyhow::Result<u64> {
    let period = Duration::from_secs_f64(1.0 / f64::from(settings.rate.max(1)));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = Instant::now() + settings.duration;
    let mut operation: u64 = 0;
    while Instant::now() < deadline {
        ticks.tick().await;
        let user = (operation % users.len() as u64) as usize;
        let round = operation / users.len() as u64;
        let amount = i64::try_from(operation % 97 + 1).unwrap_or(1);
        match round % 3 {
            0 => {
                let wallet = &users[user].wallet;
                let deposit = api.deposit(admin, wallet, amount).await?;
                let balance = *balances
                    .get(wallet)
                    .ok_or_else(|| anyhow!("no balance for {wallet}"))?
                    + amount;
                if deposit["balanceAfter"] != json!(balance) {
                    bail!("a deposit onto {balance} answered {deposit}");
                }
                balances.insert(wallet.clone(), balance);
                expected.wallet[user].push(wallet_key(balance));
                expected.notification[user]
                    .push(format!("deposit.completed:{}", text(&deposit["id"])?));
            }
            1 => {
                let title = format!("bench {operation}");
                api.data(
                    Some(&admin.access_token),
                    "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { id } }",
                    json!({ "input": {
                        "userId": users[user].session.id, "kind": MESSAGE_KIND,
                        "title": title, "body": "benchmark", "channels": ["IN_APP"],
                    } }),
                )
                .await?;
                expected.notification[user].push(format!("{MESSAGE_KIND}:{title}"));
            }
            _ => {
                let to = (user + 1) % users.len();
                if to == user {
                    // One user has nobody to pay: a message instead.
                    operation += 1;
                    continue;
                }
                let body = api
                    .data(
                        Some(&users[user].session.access_token),
                        "mutation($input: TransferInput!) { transfer(input: $input) { id status } }",
                        json!({ "input": {
                            "toUserId": users[to].session.id, "amount": amount, "currency": CURRENCY,
                            "idempotencyKey": uuid::Uuid::new_v4().to_string(), "description": "benchmark",
                        } }),
                    )
                    .await?;
                let transfer = &body["transfer"];
                if transfer["status"] != json!("COMPLETED") {
                    bail!("a transfer did not complete: {body}");
                }
                let id = text(&transfer["id"])?;
                for (party, delta) in [(user, -amount), (to, amount)] {
                    let wallet = &users[party].wallet;
                    let balance = balances
                        .get_mut(wallet)
                        .ok_or_else(|| anyhow!("no balance for {wallet}"))?;
                    *balance += delta;
                    expected.wallet[party].push(wallet_key(*balance));
                }
                expected.notification[user].push(format!("transfer.sent:{id}"));
                expected.notification[to].push(format!("transfer.received:{id}"));
            }
        }
        operation += 1;
    }
    Ok(operation)
}

/// Waits until every subscriber has as many measured events as expected,
/// or delivery has made no progress for [`DRAIN_IDLE`].
async fn drain(subscribers: &[Subscriber], expected: &Expected) {
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    loop {
        let mut outstanding = false;
        let mut count = 0;
        for subscriber in subscribers {
            let received = subscriber
                .inbox
                .lock()
                .map(|inbox| inbox.events.len())
                .unwrap_or(0);
            count += received;
            outstanding |= received < expected.of(subscriber).len();
        }
        if !outstanding {
            return;
        }
        if count != last_count {
            last_count = count;
            last_progress = Instant::now();
        } else if last_progress.elapsed() >= DRAIN_IDLE {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An RFC 3339 timestamp in microseconds since the epoch.
fn timestamp_us(value: &Value) -> anyhow::Result<i64> {
    let raw = text(value)?;
    let at = chrono::DateTime::parse_from_rfc3339(&raw)
        .with_context(|| format!("not an RFC 3339 timestamp: {raw}"))?;
    Ok(at.timestamp_micros())
}
