//! Idempotency keys: replay, concurrent replay, conflicting replay.

use serde_json::json;

use crate::helpers::{code, spawn_app, spawn_app_on_mongo, TestApp, TX_FIELDS};

async fn replay_returns_the_first_result(app: TestApp) {
    let alice = app.user().await;
    let bob = app.user().await;
    let wallet = app.wallet(&alice, "EUR").await;
    app.deposit(&wallet, 1_000).await;
    let input =
        json!({ "toUserId": bob.id, "amount": 100, "currency": "EUR", "idempotencyKey": "k-1" });
    let first = app.transfer(&alice, input.clone()).await;
    assert!(first["errors"].is_null(), "{first}");
    let ledger = app.ledger_size().await;
    let second = app.transfer(&alice, input).await;
    assert_eq!(
        second["data"]["transfer"], first["data"]["transfer"],
        "{second}"
    );
    assert_eq!(app.balance(&alice, &wallet).await, 900);
    assert_eq!(app.ledger_size().await, ledger);

    // The same key from another user is another key.
    let carol = app.user().await;
    let carol_wallet = app.wallet(&carol, "EUR").await;
    app.deposit(&carol_wallet, 50).await;
    let body = app
        .transfer(
            &carol,
            json!({ "toUserId": bob.id, "amount": 50, "currency": "EUR", "idempotencyKey": "k-1" }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    assert_ne!(
        body["data"]["transfer"]["id"],
        first["data"]["transfer"]["id"]
    );
}

#[tokio::test]
async fn a_replayed_transfer_returns_the_original_and_moves_nothing() {
    replay_returns_the_first_result(spawn_app().await).await;
}

#[tokio::test]
async fn a_replayed_transfer_returns_the_original_on_the_mongodb_wire_server() {
    replay_returns_the_first_result(spawn_app_on_mongo().await).await;
}

async fn replays_in_parallel(app: TestApp, tasks: usize) {
    let alice = app.user().await;
    let bob = app.user().await;
    let wallet = app.wallet(&alice, "EUR").await;
    app.deposit(&wallet, 1_000).await;
    let input =
        json!({ "toUserId": bob.id, "amount": 300, "currency": "EUR", "idempotencyKey": "same" });
    let app = std::sync::Arc::new(app);
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (app, alice, input) = (app.clone(), alice.clone(), input.clone());
        handles.push(tokio::spawn(
            async move { app.transfer(&alice, input).await },
        ));
    }
    let mut ids = Vec::new();
    for handle in handles {
        let body = handle.await.unwrap();
        assert!(body["errors"].is_null(), "{body}");
        ids.push(body["data"]["transfer"]["id"].as_str().unwrap().to_owned());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(app.balance(&alice, &wallet).await, 700);
    let transfers = app
        .service
        .db()
        .count("transfers", &service_core::db::Filter::all())
        .await
        .unwrap();
    assert_eq!(transfers, 1);
    assert!(app.service.reconcile().await.unwrap().mismatches.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replays_move_money_once() {
    replays_in_parallel(spawn_app().await, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replays_move_money_once_on_the_mongodb_wire_server() {
    replays_in_parallel(spawn_app_on_mongo().await, 4).await;
}

#[tokio::test]
async fn a_key_reused_with_other_parameters_conflicts() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let bob = app.user().await;
    let carol = app.user().await;
    let wallet = app.wallet(&alice, "EUR").await;
    app.deposit(&wallet, 1_000).await;
    let first = app
        .transfer(
            &alice,
            json!({ "toUserId": bob.id, "amount": 100, "currency": "EUR", "idempotencyKey": "k" }),
        )
        .await;
    assert!(first["errors"].is_null(), "{first}");
    let ledger = app.ledger_size().await;
    for other in [
        json!({ "toUserId": bob.id, "amount": 101, "currency": "EUR", "idempotencyKey": "k" }),
        json!({ "toUserId": carol.id, "amount": 100, "currency": "EUR", "idempotencyKey": "k" }),
        json!({ "toUserId": bob.id, "amount": 100, "currency": "EUR", "idempotencyKey": "k", "description": "x" }),
    ] {
        let body = app.transfer(&alice, other).await;
        assert_eq!(code(&body), "MSPaymentIdempotencyConflict", "{body}");
    }
    // The same key on another operation conflicts too.
    let body = app
        .gql(
            &format!("mutation($i: WithdrawInput!) {{ withdraw(input: $i) {{ {TX_FIELDS} }} }}"),
            json!({ "i": { "walletId": wallet, "amount": 100, "idempotencyKey": "k" } }),
            Some(&alice.token),
        )
        .await;
    assert_eq!(code(&body), "MSPaymentIdempotencyConflict", "{body}");
    assert_eq!(app.balance(&alice, &wallet).await, 900);
    assert_eq!(app.ledger_size().await, ledger);
}

#[tokio::test]
async fn a_replayed_deposit_credits_once() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let wallet = app.wallet(&alice, "EUR").await;
    let admin = app.admin();
    let query = format!("mutation($i: DepositInput!) {{ deposit(input: $i) {{ {TX_FIELDS} }} }}");
    let input = json!({ "i": { "walletId": wallet, "amount": 500, "idempotencyKey": "dep-1" } });
    let first = app.gql(&query, input.clone(), Some(&admin)).await;
    let second = app.gql(&query, input, Some(&admin)).await;
    assert!(first["errors"].is_null(), "{first}");
    assert_eq!(first, second);
    assert_eq!(app.balance(&alice, &wallet).await, 500);
}

#[tokio::test]
async fn expired_keys_are_forgotten_and_purged() {
    let app =
        crate::helpers::spawn_with(&[("PAYMENT_IDEMPOTENCY_TTL_HOURS", "0".to_owned())]).await;
    let alice = app.user().await;
    let bob = app.user().await;
    let wallet = app.wallet(&alice, "EUR").await;
    app.deposit(&wallet, 1_000).await;
    let input =
        json!({ "toUserId": bob.id, "amount": 100, "currency": "EUR", "idempotencyKey": "short" });
    let first = app.transfer(&alice, input.clone()).await;
    // With a zero lifetime the key is expired at once: the replay is a new transfer.
    let second = app.transfer(&alice, input).await;
    assert_ne!(
        first["data"]["transfer"]["id"],
        second["data"]["transfer"]["id"]
    );
    assert_eq!(app.balance(&alice, &wallet).await, 800);
    assert_eq!(app.service.purge_idempotency_keys(100).await.unwrap(), 1);
    assert_eq!(app.service.purge_idempotency_keys(100).await.unwrap(), 0);
}
