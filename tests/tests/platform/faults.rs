//! Faults under load: the Redis killed and restarted, a subgraph stopped
//! and restarted, a notification provider hanging or failing, the gateway
//! stopped with requests in flight. Each test starts the processes it
//! breaks, and the books must balance afterwards.

mod provider;
mod shutdown;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use e2e::faults::{check_books, RedisServer};
use e2e::load::{closed_loop, Outcome, Report};
use e2e::{eventually, first_code, text, Mode, Platform, Session};
use serde_json::{json, Value};

/// How long cross-service effects may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(45);
/// What each test user is given to transfer from.
const DEPOSIT: i64 = 1_000_000;

/// The pause of each transfer worker between two transfers. Events that
/// were in Redis when it died are gone (it persists nothing), and the
/// notifications of the outage's transfers are awaited one by one: a
/// paced load keeps that backlog, and so the test, short. (Unpaced, the
/// notification service was seen draining about one transfer event a
/// second on the MongoDB wire server.)
const TRANSFER_PACE: Duration = Duration::from_millis(500);

/// A rate budget no test user reaches: the load is a few users' worth of
/// traffic, and what is measured is the fault, not the budget. (The
/// gateway still takes every request through its budget, on Redis where
/// there is one.)
const UNTHROTTLED: &[(&str, &str)] = &[
    ("GATEWAY_RATE_LIMIT_BURST", "1000000"),
    ("GATEWAY_RATE_LIMIT_PER_SECOND", "1000000"),
];

const TRANSFER: &str = "mutation($input: TransferInput!) {
    transfer(input: $input) { id status amount }
}";
const BALANCES: &str = "{ me { id wallets { balance } } }";

/// What the load needs to speak to the gateway from its own tasks.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    graphql_url: String,
}

impl Client {
    fn of(platform: &Platform) -> Self {
        Self {
            http: platform.client().clone(),
            graphql_url: platform.graphql_url().to_owned(),
        }
    }

    /// Posts `query`; the answer's JSON body.
    async fn gql(&self, token: &str, query: &str, variables: Value) -> anyhow::Result<Value> {
        Ok(self
            .http
            .post(&self.graphql_url)
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await?)
    }
}

/// A transfer the load asked for, by idempotency key.
#[derive(Clone, Debug)]
struct Asked {
    from: usize,
    to: usize,
    amount: i64,
}

/// The transfers of a run: which were acknowledged (with their id) and
/// which got no answer or an error and must be asked again.
#[derive(Default)]
struct Tally {
    acknowledged: BTreeMap<String, String>,
    unanswered: BTreeMap<String, Asked>,
    asked: BTreeMap<String, Asked>,
}

/// Sends one transfer; its id when the platform acknowledged it.
async fn send_transfer(
    client: &Client,
    users: &[Session],
    asked: &Asked,
    key: &str,
) -> anyhow::Result<Option<String>> {
    let body = client
        .gql(
            &users[asked.from].access_token,
            TRANSFER,
            json!({ "input": {
                "toUserId": users[asked.to].id, "amount": asked.amount, "currency": "EUR",
                "idempotencyKey": key, "description": "fault test",
            } }),
        )
        .await?;
    if body["errors"].is_null() && body["data"]["transfer"]["status"] == json!("COMPLETED") {
        return Ok(Some(text(&body["data"]["transfer"]["id"])?));
    }
    println!("transfer {key} not acknowledged: {body}");
    Ok(None)
}

/// Registers `count` users, each with a EUR wallet holding [`DEPOSIT`],
/// and waits until the payment service knows every one of them as a
/// recipient (it learns of users from `user.registered`).
async fn funded_users(platform: &Platform, count: usize) -> anyhow::Result<Vec<Session>> {
    let admin = platform.admin().await?;
    let mut users = Vec::with_capacity(count);
    for index in 0..count {
        let user = platform.register(&format!("fault{index}")).await?;
        let wallet = platform.create_wallet(&user, "EUR").await?;
        platform.deposit(&admin, &wallet, DEPOSIT).await?;
        users.push(user);
    }
    for user in &users {
        let on = platform;
        let probe = users.iter().find(|other| other.id != user.id);
        let Some(sender) = probe else {
            break;
        };
        // A self-check that moves nothing: an amount no wallet covers.
        eventually(WAIT, move || async move {
            let body = on
                .gql(
                    Some(&sender.access_token),
                    TRANSFER,
                    json!({ "input": {
                        "toUserId": user.id, "amount": DEPOSIT * 1_000, "currency": "EUR",
                        "idempotencyKey": uuid::Uuid::new_v4().to_string(),
                    } }),
                )
                .await?;
            Ok(
                (first_code(&body).as_deref() == Some("MSPaymentInsufficientBalance"))
                    .then_some(()),
            )
        })
        .await?;
    }
    Ok(users)
}

/// Runs transfers (two workers) and balance queries (two workers, over all
/// users) for `duration`; the two reports, transfers first.
async fn mixed_load(
    client: &Client,
    users: &Arc<Vec<Session>>,
    tally: &Arc<Mutex<Tally>>,
    phase: &str,
    duration: Duration,
) -> (Report, Report) {
    let transfers = {
        let (client, users, tally, phase) = (
            client.clone(),
            Arc::clone(users),
            Arc::clone(tally),
            phase.to_owned(),
        );
        closed_loop(2, duration, move |worker, sequence| {
            let (client, users, tally, phase) = (
                client.clone(),
                Arc::clone(&users),
                Arc::clone(&tally),
                phase.clone(),
            );
            async move {
                // Worker `w` moves money from user `2w` to user `2w + 1`:
                // no two workers write the same wallet, so no transfer of
                // the load waits on another's write conflict.
                let asked = Asked {
                    from: (2 * worker) % users.len(),
                    to: (2 * worker + 1) % users.len(),
                    amount: 1 + i64::try_from(sequence % 7).unwrap_or_default(),
                };
                let key = format!("{phase}-{worker}-{sequence}");
                lock(&tally).asked.insert(key.clone(), asked.clone());
                let outcome = match send_transfer(&client, &users, &asked, &key).await {
                    Ok(Some(id)) => {
                        lock(&tally).acknowledged.insert(key, id);
                        Outcome::Ok
                    }
                    Ok(None) | Err(_) => {
                        lock(&tally).unanswered.insert(key, asked);
                        Outcome::Failed
                    }
                };
                tokio::time::sleep(TRANSFER_PACE).await;
                outcome
            }
        })
    };
    let queries = {
        let (client, users) = (client.clone(), Arc::clone(users));
        closed_loop(2, duration, move |worker, sequence| {
            let (client, users) = (client.clone(), Arc::clone(&users));
            async move {
                let user =
                    &users[(worker + usize::try_from(sequence).unwrap_or_default()) % users.len()];
                match client.gql(&user.access_token, BALANCES, json!({})).await {
                    Ok(body) => {
                        let ok = body["errors"].is_null()
                            && body["data"]["me"]["id"] == json!(user.id)
                            && body["data"]["me"]["wallets"][0]["balance"].is_i64();
                        if !ok {
                            println!("balance query failed: {body}");
                        }
                        Outcome::from(ok)
                    }
                    Err(err) => {
                        println!("balance query failed: {err}");
                        Outcome::Failed
                    }
                }
            }
        })
    };
    tokio::join!(transfers, queries)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every notification `session` holds, with `fields`, page by page.
async fn all_notifications(
    client: &Client,
    session: &Session,
    fields: &str,
) -> anyhow::Result<Vec<Value>> {
    let query = format!(
        "query($after: String) {{ myNotifications(first: 100, after: $after) {{
            nodes {{ {fields} }} pageInfo {{ hasNextPage endCursor }} }} }}"
    );
    let mut nodes = Vec::new();
    let mut after = Value::Null;
    loop {
        let body = client
            .gql(&session.access_token, &query, json!({ "after": after }))
            .await?;
        anyhow::ensure!(body["errors"].is_null(), "myNotifications failed: {body}");
        let page = &body["data"]["myNotifications"];
        nodes.extend(page["nodes"].as_array().into_iter().flatten().cloned());
        if page["pageInfo"]["hasNextPage"] != json!(true) {
            return Ok(nodes);
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
}

/// Every IN_APP notification of `kind` that `session` holds, by the
/// `transferId` in its data (a transfer notified twice counts twice).
async fn notified_transfers(
    client: &Client,
    session: &Session,
    kind: &str,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut found = BTreeMap::new();
    for node in all_notifications(client, session, "kind channel data").await? {
        if node["kind"] == json!(kind) && node["channel"] == json!("IN_APP") {
            *found.entry(text(&node["data"]["transferId"])?).or_insert(0) += 1;
        }
    }
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_and_restarted_loses_nothing() -> anyhow::Result<()> {
    // Arrange: a platform on MongoDB and on a Redis of this test's own.
    let mut redis = RedisServer::start().await?;
    let url = redis.url();
    let mut settings = vec![("REDIS_URL", url.as_str())];
    settings.extend(UNTHROTTLED);
    let platform = Platform::start_with(Mode::RedisMongo, &settings).await?;
    let users = Arc::new(funded_users(&platform, 4).await?);
    let client = Client::of(&platform);
    let tally = Arc::new(Mutex::new(Tally::default()));

    // Act: load with Redis up, while it is down, and after it is back.
    let before = mixed_load(&client, &users, &tally, "before", Duration::from_secs(2)).await;
    redis.kill().await?;
    let acknowledged_before: BTreeSet<String> = lock(&tally).acknowledged.keys().cloned().collect();
    let during = mixed_load(&client, &users, &tally, "during", Duration::from_secs(3)).await;
    let acknowledged_during: BTreeMap<String, String> = lock(&tally)
        .acknowledged
        .iter()
        .filter(|(key, _)| !acknowledged_before.contains(*key))
        .map(|(key, id)| (key.clone(), id.clone()))
        .collect();
    redis.restart().await?;
    let after = mixed_load(&client, &users, &tally, "after", Duration::from_secs(2)).await;
    for (label, (transfers, queries)) in
        [("before", &before), ("during", &during), ("after", &after)]
    {
        println!(
            "{}",
            transfers.line(&format!("redis-fault transfers {label}"))
        );
        println!("{}", queries.line(&format!("redis-fault balances {label}")));
    }

    // Every transfer that got no answer is asked again under its key: it
    // either happened once already or happens now, never twice.
    let unanswered = std::mem::take(&mut lock(&tally).unanswered);
    for (key, asked) in unanswered {
        let (client, users, key) = (&client, &users, key.as_str());
        let asked = &asked;
        let id = eventually(WAIT, move || async move {
            // An answer lost again is asked again.
            Ok(send_transfer(client, users, asked, key)
                .await
                .ok()
                .flatten())
        })
        .await?;
        lock(&tally).acknowledged.insert(key.to_owned(), id);
    }

    // Assert: served throughout, Redis or not.
    assert!(
        during.0.ok > 0 && during.1.ok > 0,
        "nothing served during the outage"
    );
    for (label, (transfers, queries)) in
        [("before", &before), ("during", &during), ("after", &after)]
    {
        assert_eq!(transfers.failed, 0, "transfers failed {label} the outage");
        assert_eq!(
            queries.failed, 0,
            "balance queries failed {label} the outage"
        );
    }

    // The notifications of transfers made while Redis was down arrive.
    assert!(
        !acknowledged_during.is_empty(),
        "no transfer during the outage"
    );
    for (kind, party) in [("transfer.sent", 0), ("transfer.received", 1)] {
        for user in users.iter() {
            let expected: BTreeSet<String> = {
                let tally = lock(&tally);
                acknowledged_during
                    .iter()
                    .filter(|(key, _)| {
                        let asked = &tally.asked[*key];
                        let who = if party == 0 { asked.from } else { asked.to };
                        users[who].id == user.id
                    })
                    .map(|(_, id)| id.clone())
                    .collect()
            };
            let (client, expected) = (&client, &expected);
            let arrived = eventually(WAIT, move || async move {
                let found = notified_transfers(client, user, kind).await?;
                Ok(expected
                    .iter()
                    .all(|id| found.contains_key(id))
                    .then_some(()))
            })
            .await;
            if arrived.is_err() {
                let found = notified_transfers(client, user, kind).await?;
                let missing: Vec<&String> = expected
                    .iter()
                    .filter(|id| !found.contains_key(*id))
                    .collect();
                panic!(
                    "{} of {} `{kind}` notifications of {} never arrived: {missing:?}",
                    missing.len(),
                    expected.len(),
                    user.email
                );
            }
            let found = notified_transfers(client, user, kind).await?;
            let doubled: Vec<_> = found.iter().filter(|(_, times)| **times > 1).collect();
            assert!(doubled.is_empty(), "`{kind}` notified twice: {doubled:?}");
        }
    }

    // No transfer lost or doubled, and the books balance.
    let admin = platform.admin().await?;
    let books = check_books(
        platform.client(),
        platform.graphql_url(),
        &admin.access_token,
    )
    .await?;
    let acknowledged: BTreeSet<String> = lock(&tally).acknowledged.values().cloned().collect();
    assert_eq!(
        lock(&tally).acknowledged.len(),
        acknowledged.len(),
        "two keys, one transfer"
    );
    let booked: BTreeSet<String> = books.completed_transfers.keys().cloned().collect();
    assert_eq!(booked, acknowledged);
    let deposits = DEPOSIT * i64::try_from(users.len())?;
    assert_eq!(
        books.total_balance_by_currency,
        BTreeMap::from([("EUR".to_owned(), deposits)])
    );

    platform.shutdown().await?;
    redis.kill().await
}

/// The gateway's `circuit_breaker_state` for `subgraph` on `/metrics`
/// (0 closed, 1 open, 2 half-open), if it has one yet.
async fn breaker_state(platform: &Platform, subgraph: &str) -> anyhow::Result<Option<i64>> {
    let metrics = platform
        .client()
        .get(format!("{}/metrics", platform.base_url()))
        .send()
        .await?
        .text()
        .await?;
    let label = format!("breaker=\"subgraph:{subgraph}\"");
    Ok(metrics
        .lines()
        .filter(|line| line.starts_with("circuit_breaker_state{") && line.contains(&label))
        .find_map(|line| line.rsplit(' ').next())
        .and_then(|value| value.trim().parse::<i64>().ok()))
}

/// Whether `serviceHealth` calls `subgraph` healthy.
async fn healthy(platform: &Platform, admin: &Session, subgraph: &str) -> anyhow::Result<bool> {
    let services = platform.service_health(admin).await?;
    services
        .iter()
        .find(|service| service["name"] == json!(subgraph))
        .map(|service| service["healthy"] == json!(true))
        .ok_or_else(|| anyhow::anyhow!("serviceHealth does not name {subgraph}: {services:?}"))
}

/// An operation over auth and bonus whose bonus part is nullable (an
/// unknown bonus is `null`), so a bonus outage leaves the auth part.
const WITH_BONUS: &str =
    "{ me { id } userBonus(id: \"00000000-0000-7000-8000-000000000000\") { id } }";

/// How the answers of the operation that needs the bonus subgraph went.
#[derive(Default)]
struct BonusAnswers {
    full: u64,
    partial: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subgraph_stopped_under_load_degrades_only_what_needs_it() -> anyhow::Result<()> {
    // Arrange.
    let mut platform = Platform::start_with(Mode::Embedded, UNTHROTTLED).await?;
    let admin = platform.admin().await?;
    let users = Arc::new(funded_users(&platform, 2).await?);
    let client = Client::of(&platform);
    let answers = Arc::new(Mutex::new(BonusAnswers::default()));
    let load = Duration::from_secs(8);

    // Act: one operation over auth and payment only, one also over bonus,
    // both running while the bonus subgraph stops and starts again.
    let payment_only = {
        let (client, users) = (client.clone(), Arc::clone(&users));
        tokio::spawn(closed_loop(2, load, move |worker, _| {
            let (client, users) = (client.clone(), Arc::clone(&users));
            async move {
                let user = &users[worker % users.len()];
                match client.gql(&user.access_token, BALANCES, json!({})).await {
                    Ok(body) => {
                        let ok =
                            body["errors"].is_null() && body["data"]["me"]["id"] == json!(user.id);
                        if !ok {
                            println!("auth + payment operation failed: {body}");
                        }
                        Outcome::from(ok)
                    }
                    Err(err) => {
                        println!("auth + payment operation failed: {err}");
                        Outcome::Failed
                    }
                }
            }
        }))
    };
    let with_bonus = {
        let (client, users, answers) = (client.clone(), Arc::clone(&users), Arc::clone(&answers));
        tokio::spawn(closed_loop(2, load, move |worker, _| {
            let (client, users, answers) =
                (client.clone(), Arc::clone(&users), Arc::clone(&answers));
            async move {
                let user = &users[worker % users.len()];
                let Ok(body) = client.gql(&user.access_token, WITH_BONUS, json!({})).await else {
                    return Outcome::Failed;
                };
                let me = body["data"]["me"]["id"] == json!(user.id);
                if me
                    && body["errors"].is_null()
                    && body["data"].get("userBonus") == Some(&Value::Null)
                {
                    lock(&answers).full += 1;
                    return Outcome::Ok;
                }
                let unavailable = first_code(&body).as_deref()
                    == Some("MSGatewaySubgraphUnavailable")
                    && body["errors"][0]["extensions"]["serviceName"] == json!("bonus");
                if me && unavailable && body["errors"].as_array().map(Vec::len) == Some(1) {
                    lock(&answers).partial += 1;
                    return Outcome::Ok;
                }
                println!("auth + bonus operation answered wrongly: {body}");
                Outcome::Failed
            }
        }))
    };
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    platform.stop_subgraph(e2e::Subgraph::Bonus).await?;
    let on = &platform;
    eventually(WAIT, move || async move {
        Ok((breaker_state(on, "bonus").await? == Some(1)).then_some(()))
    })
    .await?;
    assert!(!healthy(&platform, &admin, "bonus").await?);
    let partial_seen = lock(&answers).partial;
    platform.restart_subgraph(e2e::Subgraph::Bonus).await?;
    // A half-open breaker closes on the next call that succeeds.
    let (on, token) = (&platform, users[0].access_token.as_str());
    eventually(WAIT, move || async move {
        on.gql(Some(token), WITH_BONUS, json!({})).await?;
        Ok((breaker_state(on, "bonus").await? == Some(0)).then_some(()))
    })
    .await?;
    assert!(healthy(&platform, &admin, "bonus").await?);
    let payment_only = payment_only.await?;
    let with_bonus = with_bonus.await?;
    println!("{}", payment_only.line("subgraph-fault auth+payment"));
    println!("{}", with_bonus.line("subgraph-fault auth+bonus"));

    // Assert.
    assert_eq!(payment_only.failed, 0, "the operation without bonus failed");
    assert_eq!(
        with_bonus.failed, 0,
        "the operation with bonus answered wrongly"
    );
    assert!(partial_seen > 0, "no partial answer while bonus was down");
    assert!(lock(&answers).full > 0, "no full answer under load");
    let user = &users[0];
    let full = platform
        .data(Some(&user.access_token), WITH_BONUS, json!({}))
        .await?;
    assert_eq!(full, json!({ "me": { "id": user.id }, "userBonus": null }));

    platform.shutdown().await
}
