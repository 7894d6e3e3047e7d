//! Wallets, deposits and transfers through the gateway, the queries that
//! join payment and auth data, idempotent replay, other users' wallets, the
//! notifications a transfer sends, and the books balancing afterwards.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::faults::check_books;
use e2e::{eventually, first_code, text, Mode, Platform, Session};
use serde_json::{json, Value};

const TRANSFER: &str = "mutation($input: TransferInput!) {
    transfer(input: $input) {
        id status amount currency fromUserId toUserId
        fromUser { email }
    }
}";

async fn transfer(
    platform: &Platform,
    from: &Session,
    to: &Session,
    amount: i64,
    key: &str,
) -> anyhow::Result<Value> {
    platform
        .gql(
            Some(&from.access_token),
            TRANSFER,
            json!({ "input": {
                "toUserId": to.id, "amount": amount, "currency": "EUR",
                "idempotencyKey": key, "description": "e2e transfer",
            } }),
        )
        .await
}

/// The `kind`s of `session`'s notifications.
async fn notification_kinds(platform: &Platform, session: &Session) -> anyhow::Result<Vec<String>> {
    let nodes = platform.notifications(session).await?;
    for node in &nodes {
        assert_eq!(node["userId"], json!(session.id), "{nodes:?}");
    }
    Ok(nodes
        .iter()
        .filter_map(|node| node["kind"].as_str().map(str::to_owned))
        .collect())
}

async fn money(mode: Mode) -> anyhow::Result<()> {
    let platform = Platform::start(mode).await?;
    let admin = platform.admin().await?;
    let alice = platform.register("alice").await?;
    let bob = platform.register("bob").await?;

    // Wallets.
    let wallet = platform.create_wallet(&alice, "EUR").await?;
    let again = platform
        .gql(
            Some(&alice.access_token),
            "mutation { createWallet(currency: \"EUR\") { id } }",
            json!({}),
        )
        .await?;
    assert_eq!(
        first_code(&again).as_deref(),
        Some("MSPaymentWalletExists"),
        "{again}"
    );
    let lower = platform
        .gql(
            Some(&alice.access_token),
            "mutation { createWallet(currency: \"eur\") { id } }",
            json!({}),
        )
        .await?;
    assert_eq!(
        first_code(&lower).as_deref(),
        Some("MSPaymentInvalidCurrency"),
        "{lower}"
    );

    // Deposits need `wallet:deposit:*`: the bootstrap admin has it, Alice not.
    let deposit = platform.deposit(&admin, &wallet, 10_000).await?;
    assert_eq!(deposit["type"], json!("DEPOSIT"));
    assert_eq!(deposit["direction"], json!("CREDIT"));
    assert_eq!(deposit["balanceAfter"], json!(10_000));
    let own = platform
        .gql(
            Some(&alice.access_token),
            "mutation($input: DepositInput!) { deposit(input: $input) { id } }",
            json!({ "input": { "walletId": wallet, "amount": 5 } }),
        )
        .await?;
    assert_eq!(
        first_code(&own).as_deref(),
        Some("MSCoreForbidden"),
        "{own}"
    );

    // A transfer, answered with the sender joined from the auth subgraph.
    // The payment service learns of Bob from `user.registered`, which
    // crosses the bus asynchronously: until then he is an unknown
    // recipient, and the refused request stores nothing under its key.
    let key = uuid::Uuid::new_v4().to_string();
    let (on, from, to, key_ref) = (&platform, &alice, &bob, key.as_str());
    let sent = eventually(Duration::from_secs(30), move || async move {
        let body = transfer(on, from, to, 2_500, key_ref).await?;
        let unknown = first_code(&body).as_deref() == Some("MSPaymentRecipientNotFound");
        Ok((!unknown).then_some(body))
    })
    .await?;
    assert!(sent["errors"].is_null(), "{sent}");
    let sent = &sent["data"]["transfer"];
    assert_eq!(sent["status"], json!("COMPLETED"));
    assert_eq!(sent["amount"], json!(2_500));
    assert_eq!(sent["fromUser"]["email"], json!(alice.email));
    assert_eq!(sent["toUserId"], json!(bob.id));

    // The same key with the same input is the same transfer, moved once;
    // with another amount it is a conflict.
    let replay = transfer(&platform, &alice, &bob, 2_500, &key).await?;
    assert_eq!(replay["data"]["transfer"]["id"], sent["id"], "{replay}");
    let conflict = transfer(&platform, &alice, &bob, 2_600, &key).await?;
    assert_eq!(
        first_code(&conflict).as_deref(),
        Some("MSPaymentIdempotencyConflict"),
        "{conflict}"
    );

    // Refused transfers move nothing.
    let too_much = transfer(&platform, &alice, &bob, 1_000_000, "too-much").await?;
    assert_eq!(
        first_code(&too_much).as_deref(),
        Some("MSPaymentInsufficientBalance"),
        "{too_much}"
    );
    let to_self = transfer(&platform, &alice, &alice, 10, "to-self").await?;
    assert_eq!(
        first_code(&to_self).as_deref(),
        Some("MSPaymentSelfTransfer"),
        "{to_self}"
    );
    for (amount, key) in [
        (json!(9_007_199_254_740_992_i64), "huge"),
        (json!(1.5), "fraction"),
    ] {
        let body = platform
            .gql(
                Some(&alice.access_token),
                TRANSFER,
                json!({ "input": {
                    "toUserId": bob.id, "amount": amount, "currency": "EUR", "idempotencyKey": key,
                } }),
            )
            .await?;
        assert_eq!(
            first_code(&body).as_deref(),
            Some("MSPaymentInvalidAmount"),
            "{body}"
        );
    }
    let page = platform
        .gql(
            Some(&alice.access_token),
            "{ transfers(first: 101) { totalCount } }",
            json!({}),
        )
        .await?;
    assert_eq!(
        first_code(&page).as_deref(),
        Some("MSCoreValidation"),
        "{page}"
    );
    let negative = transfer(&platform, &alice, &bob, -5, "negative").await?;
    assert_eq!(
        first_code(&negative).as_deref(),
        Some("MSPaymentInvalidAmount"),
        "{negative}"
    );

    // Queries joining payment and auth data.
    let me = "{ me { email wallets { id currency balance bonusBalance lockedBalance } } }";
    let alice_me = platform
        .data(Some(&alice.access_token), me, json!({}))
        .await?;
    assert_eq!(alice_me["me"]["email"], json!(alice.email));
    assert_eq!(alice_me["me"]["wallets"][0]["id"], json!(wallet));
    assert_eq!(alice_me["me"]["wallets"][0]["balance"], json!(7_500));
    let bob_me = platform
        .data(Some(&bob.access_token), me, json!({}))
        .await?;
    // The recipient's wallet was opened by the first receipt.
    assert_eq!(bob_me["me"]["wallets"][0]["currency"], json!("EUR"));
    assert_eq!(bob_me["me"]["wallets"][0]["balance"], json!(2_500));
    let bob_wallet = text(&bob_me["me"]["wallets"][0]["id"])?;
    let listing = "{ transfers(first: 10) { totalCount nodes { id amount fromUser { email } } } }";
    let transfers = platform
        .data(Some(&alice.access_token), listing, json!({}))
        .await?;
    assert_eq!(
        transfers["transfers"],
        json!({ "totalCount": 1, "nodes": [{
            "id": sent["id"], "amount": 2_500, "fromUser": { "email": alice.email },
        }] })
    );
    let received = platform
        .data(
            Some(&bob.access_token),
            "{ transfers(first: 10) { totalCount nodes { id toUser { email } } } }",
            json!({}),
        )
        .await?;
    assert_eq!(
        received["transfers"],
        json!({ "totalCount": 1, "nodes": [{ "id": sent["id"], "toUser": { "email": bob.email } }] })
    );
    // The counterpart's account stays private (`user:read:*` or yourself)...
    let counterpart = platform
        .gql(Some(&bob.access_token), listing, json!({}))
        .await?;
    assert_eq!(
        first_code(&counterpart).as_deref(),
        Some("MSCoreForbidden"),
        "{counterpart}"
    );
    assert_eq!(
        counterpart["errors"][0]["extensions"]["permission"],
        json!(format!("user:read:{}", alice.id)),
        "{counterpart}"
    );
    // ...and the admin sees both sides.
    let both = platform
        .data(
            Some(&admin.access_token),
            "query($t: ID!) { transfer(id: $t) { status fromUser { email } toUser { email } } }",
            json!({ "t": sent["id"] }),
        )
        .await?;
    assert_eq!(
        both["transfer"],
        json!({ "status": "COMPLETED", "fromUser": { "email": alice.email }, "toUser": { "email": bob.email } })
    );
    let ledger = platform
        .data(
            Some(&alice.access_token),
            "query($w: ID!) { wallet(id: $w) { balance user { email } transactions(first: 10) { nodes { type amount balanceAfter } } } }",
            json!({ "w": wallet }),
        )
        .await?;
    assert_eq!(ledger["wallet"]["user"]["email"], json!(alice.email));
    assert_eq!(
        ledger["wallet"]["transactions"]["nodes"],
        json!([
            { "type": "TRANSFER_OUT", "amount": 2_500, "balanceAfter": 7_500 },
            { "type": "DEPOSIT", "amount": 10_000, "balanceAfter": 10_000 },
        ])
    );

    // Another user's wallet id is refused, and nothing moves.
    let peek = platform
        .gql(
            Some(&bob.access_token),
            "query($w: ID!) { wallet(id: $w) { balance } }",
            json!({ "w": wallet }),
        )
        .await?;
    assert_eq!(
        first_code(&peek).as_deref(),
        Some("MSPaymentWalletNotFound"),
        "{peek}"
    );
    assert!(
        peek["data"].is_null() || peek["data"]["wallet"].is_null(),
        "{peek}"
    );
    let ledger_peek = platform
        .gql(
            Some(&bob.access_token),
            "query($w: ID!) { transactions(walletId: $w, first: 5) { totalCount } }",
            json!({ "w": wallet }),
        )
        .await?;
    assert_eq!(
        first_code(&ledger_peek).as_deref(),
        Some("MSPaymentWalletNotFound"),
        "{ledger_peek}"
    );
    let steal = platform
        .gql(
            Some(&bob.access_token),
            "mutation($input: WithdrawInput!) { withdraw(input: $input) { id } }",
            json!({ "input": { "walletId": wallet, "amount": 100, "idempotencyKey": "steal" } }),
        )
        .await?;
    assert_eq!(
        first_code(&steal).as_deref(),
        Some("MSPaymentWalletNotFound"),
        "{steal}"
    );
    let alice_me = platform
        .data(Some(&alice.access_token), me, json!({}))
        .await?;
    assert_eq!(alice_me["me"]["wallets"][0]["balance"], json!(7_500));

    // Both parties are notified of the completed transfer.
    let wait = Duration::from_secs(30);
    let (on, to, from) = (&platform, &bob, &alice);
    eventually(wait, move || async move {
        let kinds = notification_kinds(on, to).await?;
        Ok(kinds.iter().any(|k| k == "transfer.received").then_some(()))
    })
    .await?;
    eventually(wait, move || async move {
        let kinds = notification_kinds(on, from).await?;
        Ok(kinds.iter().any(|k| k == "transfer.sent").then_some(()))
    })
    .await?;

    // Notifications are read by their owner only.
    let bob_notification = platform
        .data(
            Some(&bob.access_token),
            "{ myNotifications(first: 1) { nodes { id } } }",
            json!({}),
        )
        .await?;
    let bob_notification = text(&bob_notification["myNotifications"]["nodes"][0]["id"])?;
    let mark = "mutation($id: ID!) { markNotificationRead(id: $id) { id status readAt } }";
    let foreign = platform
        .gql(
            Some(&alice.access_token),
            mark,
            json!({ "id": bob_notification }),
        )
        .await?;
    assert_eq!(
        first_code(&foreign).as_deref(),
        Some("MSNotificationNotFound"),
        "{foreign}"
    );
    let read = platform
        .data(
            Some(&bob.access_token),
            mark,
            json!({ "id": bob_notification }),
        )
        .await?;
    assert_eq!(
        read["markNotificationRead"]["status"],
        json!("READ"),
        "{read}"
    );
    assert!(read["markNotificationRead"]["readAt"].is_string(), "{read}");

    // Concurrent transfers from one wallet: at most as many succeed as the
    // balance covers (on the embedded store, exactly that many), every other
    // one is refused and moves nothing. On the MongoDB wire server a
    // transaction that keeps losing write conflicts past the store's retries
    // is refused as `MSCoreUnavailable` ("try again later"), also moving
    // nothing; the books below must balance either way.
    let attempts = futures::future::join_all((0..10).map(|i| {
        let (on, from, to) = (&platform, &alice, &bob);
        async move { transfer(on, from, to, 1_000, &format!("burst-{i}")).await }
    }))
    .await;
    let mut completed: i64 = 0;
    for attempt in attempts {
        let body = attempt?;
        match first_code(&body).as_deref() {
            None => completed += 1,
            Some("MSPaymentInsufficientBalance") => {}
            Some("MSCoreUnavailable") if mode == Mode::RedisMongo => {}
            Some(code) => panic!("unexpected {code}: {body}"),
        }
    }
    // 7 500 covers seven transfers of 1 000.
    assert!(
        completed <= 7,
        "{completed} transfers of 1 000 out of 7 500"
    );
    if mode == Mode::Embedded {
        assert_eq!(completed, 7);
    }

    // The books, as the admin sees them through the API: every balance
    // non-negative, the sum equal to what was deposited, and the ledger
    // agreeing with every wallet.
    let books = check_books(
        platform.client(),
        platform.graphql_url(),
        &admin.access_token,
    )
    .await?;
    assert_eq!(
        books.total_balance_by_currency,
        BTreeMap::from([("EUR".to_owned(), 10_000)]),
        "{books:?}"
    );
    let mut balances: Vec<(String, i64)> = books
        .wallets
        .iter()
        .map(|held| (held.email.clone(), held.balance))
        .collect();
    balances.sort();
    assert_eq!(
        balances,
        [
            (alice.email.clone(), 7_500 - 1_000 * completed),
            (bob.email.clone(), 2_500 + 1_000 * completed),
        ]
    );
    let mut wallets: Vec<String> = books.wallets.iter().map(|held| held.id.clone()).collect();
    wallets.sort();
    let mut expected = vec![wallet.clone(), bob_wallet];
    expected.sort();
    assert_eq!(wallets, expected);
    // The first transfer and each completed one of the burst.
    assert!(books.completed_transfers.contains_key(&text(&sent["id"])?));
    assert_eq!(
        books.completed_transfers.len(),
        usize::try_from(1 + completed)?
    );
    // A deposit, then the transfers, two entries each.
    assert_eq!(books.entries_checked, 1 + 2 * (1 + completed));
    let refused = platform
        .gql(
            Some(&alice.access_token),
            "{ reconciliationReport { walletsChecked } }",
            json!({}),
        )
        .await?;
    assert_eq!(
        first_code(&refused).as_deref(),
        Some("MSCoreForbidden"),
        "{refused}"
    );

    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_moves_once_and_the_books_balance_on_embedded_defaults() -> anyhow::Result<()> {
    money(Mode::Embedded).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_moves_once_and_the_books_balance_on_redis_and_mongodb() -> anyhow::Result<()> {
    money(Mode::RedisMongo).await
}
