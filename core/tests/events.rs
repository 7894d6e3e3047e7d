//! Event delivery against real transports: Redis Streams (at `TEST_REDIS_URL`)
//! and the in-process bus, plus the outbox on the embedded store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{json, Value};
use service_core::db::{Database, DbConfig, Filter, NamingStrategy, PoolSettings, StoreError};
use service_core::events::{
    handler, BusConfig, Event, EventBus, EventError, EventMetrics, Handler, HandlerError, Outbox,
    OutboxConfig, OutboxRelay, StreamsConfig, OUTBOX_COLLECTION,
};
use service_core::redis::{KeyPrefix, RedisAccessor, RedisUrl};
use service_core::resilience::RetryPolicy;
use service_core::telemetry::Metrics;

#[derive(Clone, Copy, Debug)]
enum Transport {
    InProcess,
    Redis,
}

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").expect(
        "TEST_REDIS_URL is not set: run scripts/test.sh, which starts a Redis for the tests",
    )
}

/// A key prefix no other test uses.
fn unique_brand() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn fast_config() -> BusConfig {
    BusConfig {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            multiplier: 2.0,
            jitter: false,
        },
        handler_timeout: Duration::from_secs(10),
        drain_timeout: Duration::from_secs(2),
        ..BusConfig::default()
    }
}

fn fast_streams() -> StreamsConfig {
    StreamsConfig {
        poll_interval: Duration::from_millis(20),
        rescan_interval: Duration::from_millis(100),
        ..StreamsConfig::default()
    }
}

async fn redis_bus(brand: &str, config: BusConfig, streams: StreamsConfig) -> EventBus {
    let redis = RedisAccessor::connect(&redis_url(), KeyPrefix::new(brand, "bus").unwrap())
        .await
        .expect("cannot connect to TEST_REDIS_URL");
    EventBus::redis_streams(redis, config, streams)
}

async fn bus(transport: Transport) -> EventBus {
    bus_with(transport, fast_config()).await
}

async fn bus_with(transport: Transport, config: BusConfig) -> EventBus {
    match transport {
        Transport::InProcess => EventBus::in_process(config),
        Transport::Redis => redis_bus(&unique_brand(), config, fast_streams()).await,
    }
}

/// Calls per event id (and per type), recorded by a handler.
#[derive(Clone, Default)]
struct Calls {
    by_id: Arc<Mutex<HashMap<String, u32>>>,
    types: Arc<Mutex<Vec<String>>>,
}

impl Calls {
    fn record(&self, event: &Event) {
        *self
            .by_id
            .lock()
            .unwrap()
            .entry(event.id.clone())
            .or_default() += 1;
        self.types.lock().unwrap().push(event.event_type.clone());
    }

    fn of(&self, id: &str) -> u32 {
        self.by_id.lock().unwrap().get(id).copied().unwrap_or(0)
    }

    fn types(&self) -> Vec<String> {
        let mut types = self.types.lock().unwrap().clone();
        types.sort();
        types
    }

    /// A handler that records each call and succeeds.
    fn handler(&self) -> Handler {
        let calls = self.clone();
        handler(move |event| {
            let calls = calls.clone();
            async move {
                calls.record(&event);
                Ok(())
            }
        })
    }
}

/// Polls `condition` until it holds; fails the test after 10 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lets anything that should not happen have a chance to happen.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Emits a marker and waits until `calls` saw it: everything emitted earlier
/// to the same type has been processed by then (one consumer, in order).
async fn flush(bus: &EventBus, event_type: &str, calls: &Calls) {
    let marker = bus
        .emit(event_type, "t1", None, json!({"marker": true}))
        .await
        .unwrap();
    eventually("the marker event", || calls.of(&marker.id) == 1).await;
}

async fn handled_once_per_group_even_when_first_attempt_fails(transport: Transport) {
    // Arrange
    let bus = bus(transport).await;
    let attempts = Arc::new(AtomicU32::new(0));
    let flaky_calls = Calls::default();
    let flaky = {
        let attempts = attempts.clone();
        let calls = flaky_calls.clone();
        handler(move |event| {
            let attempts = attempts.clone();
            let calls = calls.clone();
            async move {
                if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(HandlerError::new("first attempt fails"));
                }
                calls.record(&event);
                Ok(())
            }
        })
    };
    let other = Calls::default();
    bus.on("payment.transfer.completed", "ledger", flaky)
        .await
        .unwrap();
    bus.on("payment.transfer.completed", "audit", other.handler())
        .await
        .unwrap();

    // Act
    let event = bus
        .emit(
            "payment.transfer.completed",
            "t1",
            Some("u1"),
            json!({"amount": 10}),
        )
        .await
        .unwrap();

    // Assert
    eventually("both groups handled the event", || {
        flaky_calls.of(&event.id) == 1 && other.of(&event.id) == 1
    })
    .await;
    settle().await;
    assert_eq!(flaky_calls.of(&event.id), 1);
    assert_eq!(other.of(&event.id), 1);
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert!(bus
        .dead_letters("payment.transfer.completed", 10)
        .await
        .unwrap()
        .is_empty());
    bus.shutdown().await;
}

async fn poison_event_is_dead_lettered_after_max_attempts(transport: Transport) {
    let metrics = Metrics::new("events-test").unwrap();
    let config = BusConfig {
        metrics: Some(EventMetrics::register(metrics.registry()).unwrap()),
        ..fast_config()
    };
    let bus = bus_with(transport, config).await;
    let attempts = Arc::new(AtomicU32::new(0));
    let poison = {
        let attempts = attempts.clone();
        handler(move |_event| {
            let attempts = attempts.clone();
            async move {
                attempts.fetch_add(1, Ordering::SeqCst);
                Err(HandlerError::new("cannot process this"))
            }
        })
    };
    bus.on("user.registered", "mailer", poison).await.unwrap();

    let event = bus
        .emit("user.registered", "t1", Some("u1"), json!({}))
        .await
        .unwrap();

    let mut letters = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while letters.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(20)).await;
        letters = bus.dead_letters("user.registered", 10).await.unwrap();
    }
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.event.as_ref().unwrap().id, event.id);
    assert_eq!(letter.group, "mailer");
    assert_eq!(letter.attempts, 3);
    assert!(
        letter.error.contains("cannot process this"),
        "{}",
        letter.error
    );
    settle().await;
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    let text = metrics.render();
    for line in [
        r#"events_emitted_total{event_type="user.registered",service="events-test"} 1"#,
        r#"events_handler_failures_total{event_type="user.registered",group="mailer",service="events-test"} 3"#,
        r#"events_dead_lettered_total{event_type="user.registered",group="mailer",service="events-test"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    bus.shutdown().await;
}

async fn pattern_subscriptions_receive_matching_types_only(transport: Transport) {
    let bus = bus(transport).await;
    let one_segment = Calls::default();
    let all_payment = Calls::default();
    bus.on_pattern("payment.*", "one", one_segment.handler())
        .await
        .unwrap();
    bus.on_pattern("payment.#", "all", all_payment.handler())
        .await
        .unwrap();

    for event_type in [
        "payment.deposit",
        "payment.transfer.completed",
        "user.registered",
    ] {
        bus.emit(event_type, "t1", None, json!({})).await.unwrap();
    }

    eventually("pattern subscribers received their events", || {
        one_segment.types().len() == 1 && all_payment.types().len() == 2
    })
    .await;
    settle().await;
    assert_eq!(one_segment.types(), vec!["payment.deposit"]);
    assert_eq!(
        all_payment.types(),
        vec!["payment.deposit", "payment.transfer.completed"]
    );
    bus.shutdown().await;
}

async fn redelivered_event_is_not_handled_again(transport: Transport) {
    let bus = bus(transport).await;
    let calls = Calls::default();
    bus.on("bonus.granted", "wallet", calls.handler())
        .await
        .unwrap();
    let event = bus
        .emit("bonus.granted", "t1", None, json!({}))
        .await
        .unwrap();
    eventually("first delivery", || calls.of(&event.id) == 1).await;

    // The same event again, as a relay that crashed before marking it would send.
    bus.emit_event(&event).await.unwrap();
    flush(&bus, "bonus.granted", &calls).await;

    assert_eq!(calls.of(&event.id), 1);
    bus.shutdown().await;
}

async fn closed_bus_and_bad_names_are_refused(transport: Transport) {
    let bus = bus(transport).await;
    assert!(matches!(
        bus.emit("Not A Type", "t1", None, json!({})).await,
        Err(EventError::InvalidType(_))
    ));
    assert!(matches!(
        bus.on_pattern("#.x", "g", Calls::default().handler()).await,
        Err(EventError::InvalidPattern(_))
    ));
    assert!(matches!(
        bus.on("a.b", "bad group", Calls::default().handler()).await,
        Err(EventError::InvalidGroup(_))
    ));
    bus.shutdown().await;
    assert!(matches!(
        bus.emit("a.b", "t1", None, json!({})).await,
        Err(EventError::Closed)
    ));
}

async fn shutdown_drains_handlers_in_flight(transport: Transport) {
    let bus = bus(transport).await;
    let started = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let slow = {
        let (started, finished) = (started.clone(), finished.clone());
        handler(move |_event| {
            let (started, finished) = (started.clone(), finished.clone());
            async move {
                started.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                finished.store(true, Ordering::SeqCst);
                Ok(())
            }
        })
    };
    bus.on("notification.sent", "slow", slow).await.unwrap();
    bus.emit("notification.sent", "t1", None, json!({}))
        .await
        .unwrap();
    eventually("the handler started", || started.load(Ordering::SeqCst)).await;

    bus.shutdown().await;

    assert!(
        finished.load(Ordering::SeqCst),
        "shutdown returned before the handler finished"
    );
}

async fn a_stopped_scope_leaves_its_group_to_the_next_subscriber(transport: Transport) {
    // A service restarted in a process whose services share one bus.
    let bus = bus(transport).await;
    let (first, next, other) = (Calls::default(), Calls::default(), Calls::default());
    let stopped = bus.scope();
    stopped
        .on("deposit.completed", "notification", first.handler())
        .await
        .unwrap();
    bus.on("deposit.completed", "bonus", other.handler())
        .await
        .unwrap();
    flush(&bus, "deposit.completed", &first).await;

    stopped.shutdown().await;
    let restarted = bus.scope();
    restarted
        .on("deposit.completed", "notification", next.handler())
        .await
        .unwrap();
    let event = bus
        .emit("deposit.completed", "t1", None, json!({}))
        .await
        .unwrap();

    eventually("the next subscriber handled it", || next.of(&event.id) == 1).await;
    eventually("the bus's own group handled it", || {
        other.of(&event.id) == 1
    })
    .await;
    settle().await;
    assert_eq!(first.of(&event.id), 0, "the stopped scope still consumed");
    assert!(matches!(
        stopped.emit("a.b", "t1", None, json!({})).await,
        Err(EventError::Closed)
    ));
    // Shutting the bus down ends its scopes too.
    bus.shutdown().await;
    assert!(matches!(
        restarted.emit("a.b", "t1", None, json!({})).await,
        Err(EventError::Closed)
    ));
}

macro_rules! on_both_transports {
    ($($name:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Transport::InProcess).await;
                }
            )*
        }
        mod redis_streams {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Transport::Redis).await;
                }
            )*
        }
    };
}

on_both_transports!(
    handled_once_per_group_even_when_first_attempt_fails,
    poison_event_is_dead_lettered_after_max_attempts,
    pattern_subscriptions_receive_matching_types_only,
    redelivered_event_is_not_handled_again,
    closed_bus_and_bad_names_are_refused,
    shutdown_drains_handlers_in_flight,
    a_stopped_scope_leaves_its_group_to_the_next_subscriber,
);

#[tokio::test]
async fn in_process_events_queued_for_a_stopping_scope_are_still_handled() {
    let bus = EventBus::in_process(fast_config());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let calls = Calls::default();
    let gated = {
        let (gate, calls) = (gate.clone(), calls.clone());
        handler(move |event| {
            let (gate, calls) = (gate.clone(), calls.clone());
            async move {
                gate.acquire().await.unwrap().forget();
                calls.record(&event);
                Ok(())
            }
        })
    };
    let scope = bus.scope();
    scope.on("transfer.completed", "slow", gated).await.unwrap();
    let mut emitted = Vec::new();
    for _ in 0..3 {
        emitted.push(
            bus.emit("transfer.completed", "t1", None, json!({}))
                .await
                .unwrap(),
        );
    }

    // One event in the handler, two queued: all three were accepted, so
    // stopping must not drop any.
    let cancelled = scope.cancellation_token();
    let stopping = tokio::spawn(async move { scope.shutdown().await });
    eventually("the scope is stopping", || cancelled.is_cancelled()).await;
    gate.add_permits(3);
    stopping.await.unwrap();

    for event in &emitted {
        assert_eq!(calls.of(&event.id), 1, "an accepted event was dropped");
    }
    bus.shutdown().await;
}

#[tokio::test]
async fn in_process_emit_waits_while_a_subscriber_queue_is_full() {
    let bus = EventBus::in_process(BusConfig {
        channel_capacity: 1,
        ..fast_config()
    });
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let calls = Calls::default();
    let gated = {
        let (gate, calls) = (gate.clone(), calls.clone());
        handler(move |event| {
            let (gate, calls) = (gate.clone(), calls.clone());
            async move {
                calls.record(&event);
                gate.acquire().await.unwrap().forget();
                Ok(())
            }
        })
    };
    bus.on("bonus.granted", "slow", gated).await.unwrap();
    let first = bus
        .emit("bonus.granted", "t1", None, json!({}))
        .await
        .unwrap();
    eventually("the handler holds the first event", || {
        calls.of(&first.id) == 1
    })
    .await;
    // The queue holds one more; the third emit has to wait for room.
    bus.emit("bonus.granted", "t1", None, json!({}))
        .await
        .unwrap();
    let mut third = Box::pin(bus.emit("bonus.granted", "t1", None, json!({})));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut third)
            .await
            .is_err(),
        "emit did not wait for a full queue"
    );

    gate.add_permits(3);

    third.await.unwrap();
    eventually("all three handled", || calls.types().len() == 3).await;
    bus.shutdown().await;
}

#[tokio::test]
async fn redis_message_delivered_too_often_is_dead_lettered_without_the_handler() {
    // A message whose consumer keeps dying (here: hangs and is aborted) is
    // dead-lettered by the delivery count Redis keeps, not retried forever.
    let brand = unique_brand();
    let one_attempt = BusConfig {
        retry: RetryPolicy {
            max_attempts: 1,
            ..fast_config().retry
        },
        drain_timeout: Duration::from_millis(50),
        ..fast_config()
    };
    let claim = StreamsConfig {
        claim_timeout: Duration::from_millis(300),
        ..fast_streams()
    };
    let started = Arc::new(AtomicBool::new(false));
    let hanging = {
        let started = started.clone();
        handler(move |_event| {
            let started = started.clone();
            async move {
                started.store(true, Ordering::SeqCst);
                std::future::pending::<()>().await;
                Ok(())
            }
        })
    };
    let a = redis_bus(&brand, one_attempt.clone(), claim.clone()).await;
    a.on("payment.failed", "ledger", hanging).await.unwrap();
    let event = a
        .emit("payment.failed", "t1", None, json!({}))
        .await
        .unwrap();
    eventually("consumer A took the message", || {
        started.load(Ordering::SeqCst)
    })
    .await;
    a.shutdown().await;

    let b = redis_bus(&brand, one_attempt, claim).await;
    let calls = Calls::default();
    b.on("payment.failed", "ledger", calls.handler())
        .await
        .unwrap();

    let mut letters = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while letters.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(20)).await;
        letters = b.dead_letters("payment.failed", 10).await.unwrap();
    }
    assert_eq!(letters[0].event.as_ref().unwrap().id, event.id);
    assert_eq!(letters[0].attempts, 2);
    assert!(
        letters[0].error.contains("delivered 2 times"),
        "{}",
        letters[0].error
    );
    assert_eq!(calls.of(&event.id), 0);
    b.shutdown().await;
}

#[tokio::test]
async fn redis_message_abandoned_by_a_dead_consumer_is_claimed_by_another() {
    // Arrange: consumer A takes the message and hangs without acknowledging.
    let brand = unique_brand();
    let started = Arc::new(AtomicBool::new(false));
    let hanging = {
        let started = started.clone();
        handler(move |_event| {
            let started = started.clone();
            async move {
                started.store(true, Ordering::SeqCst);
                std::future::pending::<()>().await;
                Ok(())
            }
        })
    };
    let claim = StreamsConfig {
        claim_timeout: Duration::from_millis(300),
        ..fast_streams()
    };
    let a = redis_bus(
        &brand,
        BusConfig {
            drain_timeout: Duration::from_millis(50),
            ..fast_config()
        },
        StreamsConfig {
            consumer_name: "a".to_owned(),
            ..claim.clone()
        },
    )
    .await;
    a.on("payment.refunded", "ledger", hanging).await.unwrap();
    let event = a
        .emit("payment.refunded", "t1", None, json!({}))
        .await
        .unwrap();
    eventually("consumer A took the message", || {
        started.load(Ordering::SeqCst)
    })
    .await;

    // Act: A dies (its handler is aborted, nothing acknowledged); B joins.
    a.shutdown().await;
    let b = redis_bus(
        &brand,
        fast_config(),
        StreamsConfig {
            consumer_name: "b".to_owned(),
            ..claim
        },
    )
    .await;
    let calls = Calls::default();
    b.on("payment.refunded", "ledger", calls.handler())
        .await
        .unwrap();

    // Assert
    eventually("consumer B claimed and handled the message", || {
        calls.of(&event.id) == 1
    })
    .await;
    settle().await;
    assert_eq!(calls.of(&event.id), 1);
    b.shutdown().await;
}

#[tokio::test]
async fn redis_pattern_subscription_joins_streams_created_later() {
    let bus = bus(Transport::Redis).await;
    let calls = Calls::default();
    // No payment stream exists yet.
    bus.on_pattern("payment.#", "audit", calls.handler())
        .await
        .unwrap();

    let event = bus
        .emit("payment.chargeback.opened", "t1", None, json!({}))
        .await
        .unwrap();

    eventually("the new stream was discovered", || calls.of(&event.id) == 1).await;
    bus.shutdown().await;
}

// --- Outbox (embedded store, in-process bus) -------------------------------

struct TestDb {
    db: Arc<Database>,
    _dir: tempfile::TempDir,
}

async fn embedded_db() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let config = DbConfig {
        mongodb_uri: None::<SecretString>,
        data_dir: dir.path().to_path_buf(),
        brand: unique_brand(),
        tenant: "default".to_owned(),
        service: "events".to_owned(),
        naming: NamingStrategy::PerBrandService,
        embedded: service_core::db::EmbeddedEngine::default(),
        pool: PoolSettings::default(),
    };
    let db = Database::open(&config).await.unwrap();
    db.ensure_indexes(&Outbox::indexes()).await.unwrap();
    TestDb {
        db: Arc::new(db),
        _dir: dir,
    }
}

fn outbox_config() -> OutboxConfig {
    OutboxConfig {
        poll_interval: Duration::from_millis(50),
        ..OutboxConfig::default()
    }
}

/// Commits a business change and an event together (or, with `fail`, rolls
/// both back).
async fn transfer(db: &Database, event: &Event, fail: bool) -> Result<(), StoreError> {
    db.transaction(|tx| {
        Box::pin(async move {
            let mut doc = serde_json::Map::new();
            doc.insert("_id".to_owned(), Value::from(event.id.clone()));
            doc.insert("amount".to_owned(), Value::from(10));
            tx.insert("transfers", doc).await?;
            Outbox::stage(tx, event).await?;
            if fail {
                return Err(StoreError::Invalid("business rule failed".to_owned()));
            }
            Ok(())
        })
    })
    .await
}

/// Stages `events` in a transaction of their own.
async fn stage_in_transaction(db: &Database, events: &[Event]) {
    db.transaction(|tx| Box::pin(async move { Outbox::stage_all(tx, events).await }))
        .await
        .unwrap();
}

/// Entries in the outbox, published or not.
async fn outbox_len(db: &Database) -> u64 {
    db.count(OUTBOX_COLLECTION, &Filter::all()).await.unwrap()
}

#[tokio::test]
async fn outbox_event_of_committed_transaction_is_delivered_once() {
    let store = embedded_db().await;
    let bus = EventBus::in_process(fast_config());
    let calls = Calls::default();
    bus.on("payment.transfer.completed", "ledger", calls.handler())
        .await
        .unwrap();
    let relay = OutboxRelay::new(store.db.clone(), bus.clone(), outbox_config());
    let waker = relay.waker();
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = relay.spawn(cancel.clone());

    let event = Event::new("payment.transfer.completed", "t1", Some("u1"), json!({})).unwrap();
    transfer(&store.db, &event, false).await.unwrap();
    waker.wake();

    eventually("the committed event was delivered", || {
        calls.of(&event.id) == 1
    })
    .await;
    settle().await;
    assert_eq!(calls.of(&event.id), 1);
    let entry = store
        .db
        .get(OUTBOX_COLLECTION, &event.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry["published"], json!(true));
    cancel.cancel();
    task.await.unwrap();
    bus.shutdown().await;
}

#[tokio::test]
async fn outbox_entry_of_several_events_publishes_each_once_and_is_marked_once() {
    let store = embedded_db().await;
    let bus = EventBus::in_process(fast_config());
    let calls = Calls::default();
    for event_type in ["payment.transfer.completed", "wallet.updated"] {
        bus.on(event_type, "ledger", calls.handler()).await.unwrap();
    }
    let events = [
        Event::new("payment.transfer.completed", "t1", Some("u1"), json!({})).unwrap(),
        Event::new("wallet.updated", "t1", Some("u1"), json!({"wallet": 1})).unwrap(),
        Event::new("wallet.updated", "t1", Some("u2"), json!({"wallet": 2})).unwrap(),
    ];
    stage_in_transaction(&store.db, &events).await;
    assert_eq!(
        outbox_len(&store.db).await,
        1,
        "one entry for the transaction"
    );

    let relay = OutboxRelay::new(store.db.clone(), bus.clone(), outbox_config());
    assert_eq!(relay.relay_once().await.unwrap(), 1);
    flush(&bus, "wallet.updated", &calls).await;
    assert_eq!(relay.relay_once().await.unwrap(), 0);
    settle().await;

    for event in &events {
        assert_eq!(
            calls.of(&event.id),
            1,
            "{} delivered once",
            event.event_type
        );
    }
    let entry = store
        .db
        .get(OUTBOX_COLLECTION, &events[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry["published"], json!(true));
    bus.shutdown().await;
}

#[tokio::test]
async fn outbox_staging_no_events_writes_nothing() {
    let store = embedded_db().await;
    stage_in_transaction(&store.db, &[]).await;
    assert_eq!(outbox_len(&store.db).await, 0);
}

#[tokio::test]
async fn outbox_event_of_rolled_back_transaction_is_never_delivered() {
    let store = embedded_db().await;
    let bus = EventBus::in_process(fast_config());
    let calls = Calls::default();
    bus.on("payment.transfer.completed", "ledger", calls.handler())
        .await
        .unwrap();
    let relay = OutboxRelay::new(store.db.clone(), bus.clone(), outbox_config());

    let event = Event::new("payment.transfer.completed", "t1", None, json!({})).unwrap();
    assert!(transfer(&store.db, &event, true).await.is_err());

    assert_eq!(relay.relay_once().await.unwrap(), 0);
    assert_eq!(
        store
            .db
            .count(OUTBOX_COLLECTION, &Filter::all())
            .await
            .unwrap(),
        0
    );
    settle().await;
    assert_eq!(calls.of(&event.id), 0);
    bus.shutdown().await;
}

#[tokio::test]
async fn outbox_relay_crash_between_publish_and_mark_still_delivers_once() {
    let store = embedded_db().await;
    let bus = EventBus::in_process(fast_config());
    let calls = Calls::default();
    bus.on("payment.transfer.completed", "ledger", calls.handler())
        .await
        .unwrap();
    let event = Event::new("payment.transfer.completed", "t1", None, json!({})).unwrap();
    transfer(&store.db, &event, false).await.unwrap();

    // A relay published the entry and died before marking it.
    let entry = store
        .db
        .get(OUTBOX_COLLECTION, &event.id)
        .await
        .unwrap()
        .unwrap();
    let staged: Event = serde_json::from_value(entry["event"].clone()).unwrap();
    bus.emit_event(&staged).await.unwrap();
    eventually("the first publication", || calls.of(&event.id) == 1).await;

    // The restarted relay finds the entry unpublished and publishes it again.
    let relay = OutboxRelay::new(store.db.clone(), bus.clone(), outbox_config());
    assert_eq!(relay.relay_once().await.unwrap(), 1);
    flush(&bus, "payment.transfer.completed", &calls).await;

    assert_eq!(calls.of(&event.id), 1);
    let entry = store
        .db
        .get(OUTBOX_COLLECTION, &event.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry["published"], json!(true));
    assert_eq!(relay.relay_once().await.unwrap(), 0);
    bus.shutdown().await;
}

#[tokio::test]
async fn outbox_relays_running_together_publish_each_entry_once() {
    let store = embedded_db().await;
    let bus = EventBus::in_process(fast_config());
    let mut events = Vec::new();
    for _ in 0..20 {
        let event = Event::new("bonus.granted", "t1", None, json!({})).unwrap();
        transfer(&store.db, &event, false).await.unwrap();
        events.push(event);
    }
    let config = OutboxConfig {
        batch_size: 5,
        ..outbox_config()
    };
    let first = OutboxRelay::new(store.db.clone(), bus.clone(), config.clone());
    let second = OutboxRelay::new(store.db.clone(), bus.clone(), config);

    let mut published = 0;
    loop {
        let (a, b) = tokio::join!(first.relay_once(), second.relay_once());
        let round = a.unwrap() + b.unwrap();
        if round == 0 {
            break;
        }
        published += round;
    }

    assert_eq!(published, events.len());
    let unpublished = Filter::all().eq("published", false);
    assert_eq!(
        store
            .db
            .count(OUTBOX_COLLECTION, &unpublished)
            .await
            .unwrap(),
        0
    );
    bus.shutdown().await;
}

#[tokio::test]
async fn outbox_relay_that_cannot_publish_releases_its_claims_and_marks_nothing() {
    let store = embedded_db().await;
    let mut events = Vec::new();
    for _ in 0..3 {
        let event = Event::new("bonus.granted", "t1", None, json!({})).unwrap();
        transfer(&store.db, &event, false).await.unwrap();
        events.push(event);
    }
    // A closed bus refuses every event.
    let closed = EventBus::in_process(fast_config());
    closed.shutdown().await;
    let failing = OutboxRelay::new(store.db.clone(), closed, outbox_config());

    assert_eq!(failing.relay_once().await.unwrap(), 0);

    for event in &events {
        let entry = store
            .db
            .get(OUTBOX_COLLECTION, &event.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(entry["published"], json!(false), "{}", event.id);
        assert_eq!(entry["claimed_until"], json!(0), "{}", event.id);
        assert_eq!(entry["claimed_by"], Value::Null, "{}", event.id);
    }
    // Released, not leased: another relay publishes them all at once.
    let bus = EventBus::in_process(fast_config());
    let calls = Calls::default();
    bus.on("bonus.granted", "ledger", calls.handler())
        .await
        .unwrap();
    let relay = OutboxRelay::new(store.db.clone(), bus.clone(), outbox_config());
    assert_eq!(relay.relay_once().await.unwrap(), events.len());
    flush(&bus, "bonus.granted", &calls).await;
    for event in &events {
        assert_eq!(calls.of(&event.id), 1);
    }
    bus.shutdown().await;
}

#[tokio::test]
async fn outbox_purges_published_entries_after_retention() {
    let store = embedded_db().await;
    let bus = EventBus::in_process(fast_config());
    let relay = OutboxRelay::new(
        store.db.clone(),
        bus.clone(),
        OutboxConfig {
            retention: Duration::ZERO,
            ..outbox_config()
        },
    );
    let published = Event::new("bonus.granted", "t1", None, json!({})).unwrap();
    transfer(&store.db, &published, false).await.unwrap();
    relay.relay_once().await.unwrap();
    let pending = Event::new("bonus.granted", "t1", None, json!({})).unwrap();
    transfer(&store.db, &pending, false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;

    assert_eq!(relay.purge_published().await.unwrap(), 1);
    assert!(store
        .db
        .get(OUTBOX_COLLECTION, &published.id)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .db
        .get(OUTBOX_COLLECTION, &pending.id)
        .await
        .unwrap()
        .is_some());
    bus.shutdown().await;
}

// --- Webhooks (embedded store, receivers on 127.0.0.1:0) -------------------

mod webhooks {
    use std::collections::VecDeque;

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use service_core::resilience::BreakerConfig;
    use service_core::webhooks::{verify, DeliveryStatus, WebhookConfig, Webhooks};

    use super::*;

    const SECRET: &str = "whsec-0123456789abcdef";

    /// What the receiver saw of one request.
    #[derive(Clone, Debug)]
    struct Received {
        event_id: String,
        event_type: String,
        signature_valid: bool,
        body: Value,
    }

    /// An HTTP endpoint answering with scripted statuses (then 200), or
    /// never answering when `hang` is set.
    #[derive(Clone, Default)]
    struct Receiver {
        statuses: Arc<Mutex<VecDeque<u16>>>,
        hang: bool,
        requests: Arc<AtomicU32>,
        received: Arc<Mutex<Vec<Received>>>,
    }

    impl Receiver {
        fn answering(statuses: &[u16]) -> Self {
            Self {
                statuses: Arc::new(Mutex::new(statuses.iter().copied().collect())),
                ..Self::default()
            }
        }

        fn hanging() -> Self {
            Self {
                hang: true,
                ..Self::default()
            }
        }

        fn received(&self) -> Vec<Received> {
            self.received.lock().unwrap().clone()
        }

        /// Serves on a free loopback port; returns the webhook URL.
        async fn spawn(&self) -> String {
            let app = axum::Router::new()
                .route("/hook", axum::routing::post(receive))
                .with_state(self.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://{addr}/hook")
        }
    }

    async fn receive(
        State(receiver): State<Receiver>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        receiver.requests.fetch_add(1, Ordering::SeqCst);
        if receiver.hang {
            std::future::pending::<()>().await;
        }
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let timestamp: i64 = header("X-Webhook-Timestamp").parse().unwrap_or(-1);
        let signature_valid = verify(
            SECRET.as_bytes(),
            timestamp,
            &body,
            &header("X-Webhook-Signature"),
        );
        receiver.received.lock().unwrap().push(Received {
            event_id: header("X-Webhook-Id"),
            event_type: header("X-Webhook-Event"),
            signature_valid,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        let status = receiver.statuses.lock().unwrap().pop_front().unwrap_or(200);
        StatusCode::from_u16(status).unwrap()
    }

    fn config() -> WebhookConfig {
        WebhookConfig {
            timeout: Duration::from_millis(300),
            retry: RetryPolicy {
                max_attempts: 3,
                initial_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(50),
                multiplier: 2.0,
                jitter: false,
            },
            breaker: BreakerConfig::default(),
        }
    }

    async fn setup(config: WebhookConfig) -> (TestDb, Webhooks) {
        let store = embedded_db().await;
        store.db.ensure_indexes(&Webhooks::indexes()).await.unwrap();
        let webhooks = Webhooks::new(store.db.clone(), config).unwrap();
        (store, webhooks)
    }

    fn event(event_type: &str) -> Event {
        Event::new(event_type, "t1", Some("u1"), json!({"amount": 10})).unwrap()
    }

    #[tokio::test]
    async fn webhook_deliveries_are_signed_and_logged() {
        let (_store, webhooks) = setup(config()).await;
        let receiver = Receiver::answering(&[]);
        let url = receiver.spawn().await;
        let hook = webhooks
            .register(&url, vec!["payment.#".to_owned()], SECRET.into())
            .await
            .unwrap();
        assert!(!format!("{hook:?}").contains(SECRET));
        assert_eq!(webhooks.list().await.unwrap().len(), 1);

        let deposit = event("payment.deposit");
        let outcomes = webhooks.deliver(&deposit).await.unwrap();
        assert!(webhooks
            .deliver(&event("user.registered"))
            .await
            .unwrap()
            .is_empty());

        assert_eq!(outcomes.len(), 1);
        let received = receiver.received();
        assert_eq!(received.len(), 1);
        assert!(received[0].signature_valid);
        assert_eq!(received[0].event_id, deposit.id);
        assert_eq!(received[0].event_type, "payment.deposit");
        assert_eq!(received[0].body["data"]["amount"], json!(10));
        let logged = webhooks
            .delivery(&deposit.id, &hook.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(logged.status, DeliveryStatus::Delivered);
        assert_eq!(logged.attempts, 1);
        assert_eq!(logged.last_status_code, Some(200));

        // A redelivered event already delivered is not sent again.
        webhooks.deliver(&deposit).await.unwrap();
        assert_eq!(receiver.received().len(), 1);

        assert!(webhooks.delete(&hook.id).await.unwrap());
        assert!(webhooks.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn webhook_handler_delivers_events_from_the_bus() {
        let (_store, webhooks) = setup(config()).await;
        let receiver = Receiver::answering(&[]);
        let url = receiver.spawn().await;
        webhooks
            .register(&url, vec!["user.*".to_owned()], SECRET.into())
            .await
            .unwrap();
        let bus = EventBus::in_process(fast_config());
        bus.on_pattern("#", "webhooks", webhooks.handler())
            .await
            .unwrap();

        let emitted = bus
            .emit("user.registered", "t1", None, json!({}))
            .await
            .unwrap();

        eventually("the webhook received the event", || {
            receiver.received().iter().any(|r| r.event_id == emitted.id)
        })
        .await;
        bus.shutdown().await;
    }

    #[tokio::test]
    async fn webhook_answering_500_then_200_is_delivered_on_the_second_attempt() {
        let (_store, webhooks) = setup(config()).await;
        let receiver = Receiver::answering(&[500, 200]);
        let url = receiver.spawn().await;
        let hook = webhooks
            .register(&url, vec!["payment.#".to_owned()], SECRET.into())
            .await
            .unwrap();

        let e = event("payment.deposit");
        webhooks.deliver(&e).await.unwrap();

        let logged = webhooks.delivery(&e.id, &hook.id).await.unwrap().unwrap();
        assert_eq!(logged.status, DeliveryStatus::Delivered);
        assert_eq!(logged.attempts, 2);
        assert_eq!(logged.last_status_code, Some(200));
        assert_eq!(receiver.received().len(), 2);
        assert!(receiver.received().iter().all(|r| r.signature_valid));
    }

    #[tokio::test]
    async fn webhook_client_error_fails_without_retry() {
        let (_store, webhooks) = setup(config()).await;
        let receiver = Receiver::answering(&[400]);
        let url = receiver.spawn().await;
        let hook = webhooks
            .register(&url, vec!["payment.#".to_owned()], SECRET.into())
            .await
            .unwrap();

        let e = event("payment.deposit");
        webhooks.deliver(&e).await.unwrap();

        let logged = webhooks.delivery(&e.id, &hook.id).await.unwrap().unwrap();
        assert_eq!(logged.status, DeliveryStatus::Failed);
        assert_eq!(logged.attempts, 1);
        assert_eq!(logged.last_status_code, Some(400));
    }

    #[tokio::test]
    async fn hanging_webhook_trips_its_breaker_and_later_deliveries_fail_fast() {
        let (_store, webhooks) = setup(WebhookConfig {
            timeout: Duration::from_millis(100),
            breaker: BreakerConfig {
                failure_threshold: 2,
                reset_timeout: Duration::from_secs(600),
                ..BreakerConfig::default()
            },
            retry: RetryPolicy {
                max_attempts: 2,
                ..config().retry
            },
        })
        .await;
        let receiver = Receiver::hanging();
        let url = receiver.spawn().await;
        let hook = webhooks
            .register(&url, vec!["payment.#".to_owned()], SECRET.into())
            .await
            .unwrap();

        let first = event("payment.deposit");
        webhooks.deliver(&first).await.unwrap();
        let second = event("payment.deposit");
        webhooks.deliver(&second).await.unwrap();

        let first = webhooks
            .delivery(&first.id, &hook.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.status, DeliveryStatus::Failed);
        assert_eq!(first.attempts, 2);
        assert!(first.last_error.unwrap().contains("no answer"));
        let second = webhooks
            .delivery(&second.id, &hook.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.status, DeliveryStatus::Failed);
        assert_eq!(second.attempts, 1);
        let error = second.last_error.unwrap();
        assert!(error.contains("open"), "{error}");
        assert_eq!(receiver.requests.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn bad_registrations_are_refused() {
        let (_store, webhooks) = setup(config()).await;
        let events = || vec!["payment.#".to_owned()];
        assert!(webhooks
            .register("ftp://x", events(), SECRET.into())
            .await
            .is_err());
        assert!(webhooks
            .register("http://127.0.0.1/x", events(), "short".into())
            .await
            .is_err());
        assert!(webhooks
            .register(
                "http://127.0.0.1/x",
                vec!["#.bad".to_owned()],
                SECRET.into()
            )
            .await
            .is_err());
        assert!(webhooks
            .register("http://127.0.0.1/x", Vec::new(), SECRET.into())
            .await
            .is_err());
    }
}

/// `EventBus::connect`, as each service process calls it: with a Redis URL,
/// two buses of one brand (two processes) hear each other over Redis
/// Streams; without one, a bus keeps its events to itself.
#[tokio::test]
async fn connected_buses_of_one_brand_hear_each_other() {
    let brand = unique_brand();
    let url = RedisUrl::parse(redis_url()).unwrap();
    let producer = EventBus::connect(Some(&url), &brand, fast_config())
        .await
        .unwrap();
    let consumer = EventBus::connect(Some(&url), &brand, fast_config())
        .await
        .unwrap();
    let calls = Calls::default();
    consumer
        .on("test.connected", "consumers", calls.handler())
        .await
        .unwrap();
    let event = producer
        .emit("test.connected", "t1", None, json!({}))
        .await
        .unwrap();
    eventually("the other process's bus handled it", || {
        calls.of(&event.id) == 1
    })
    .await;

    let alone = EventBus::connect(None, &brand, fast_config())
        .await
        .unwrap();
    let local = Calls::default();
    consumer
        .on("test.alone", "consumers", local.handler())
        .await
        .unwrap();
    alone
        .emit("test.alone", "t1", None, json!({}))
        .await
        .unwrap();
    producer
        .emit("test.connected", "t1", None, json!({}))
        .await
        .unwrap();
    eventually("a later connected event arrived", || {
        calls.types().len() == 2
    })
    .await;
    assert!(local.types().is_empty(), "an in-process bus reached Redis");
    for bus in [producer, consumer, alone] {
        bus.shutdown().await;
    }
}

/// `EventBus::broadcast` on Redis Streams: every process hears every event
/// (no group shares them out), and a process that starts later first reads
/// what was published within the replay window.
#[tokio::test]
async fn broadcasts_reach_every_process_and_replay_for_late_starters() {
    let brand = unique_brand();
    let url = RedisUrl::parse(redis_url()).unwrap();
    let connect = || EventBus::connect(Some(&url), &brand, fast_config());
    let producer = connect().await.unwrap();
    let (first, second) = (connect().await.unwrap(), connect().await.unwrap());
    let (heard_first, heard_second) = (Calls::default(), Calls::default());
    let window = Duration::from_secs(3600);
    first
        .broadcast("test.broadcast", window, heard_first.handler())
        .await
        .unwrap();
    second
        .broadcast("test.broadcast", window, heard_second.handler())
        .await
        .unwrap();
    let event = producer
        .emit("test.broadcast", "t1", None, json!({ "n": 1 }))
        .await
        .unwrap();
    eventually("both processes heard it", || {
        heard_first.of(&event.id) == 1 && heard_second.of(&event.id) == 1
    })
    .await;

    // Started after the event: it is replayed before `broadcast` returns.
    let late = connect().await.unwrap();
    let heard_late = Calls::default();
    late.broadcast("test.broadcast", window, heard_late.handler())
        .await
        .unwrap();
    assert_eq!(heard_late.of(&event.id), 1);
    // And it goes on hearing new ones, as do the others.
    let next = producer
        .emit("test.broadcast", "t1", None, json!({ "n": 2 }))
        .await
        .unwrap();
    eventually("every process heard the next one", || {
        [&heard_first, &heard_second, &heard_late]
            .iter()
            .all(|heard| heard.of(&next.id) == 1)
    })
    .await;
    assert_eq!(heard_late.of(&event.id), 1, "replayed once, not again");

    for bus in [producer, first, second, late] {
        bus.shutdown().await;
    }
}
