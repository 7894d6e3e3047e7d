//! A transfer interrupted after the debit is fully absent (it is one
//! transaction), and the same request then applies exactly once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use payment_service::domain::fault_points;
use serde_json::json;
use service_core::db::Filter;

use crate::helpers::{code, spawn_app, spawn_app_on_mongo, TestApp};

async fn interrupted_transfer(app: TestApp) {
    let alice = app.user().await;
    let bob = app.user().await;
    let wallet = app.wallet(&alice, "EUR").await;
    app.deposit(&wallet, 1_000).await;
    let ledger = app.ledger_size().await;
    let outbox = app
        .service
        .db()
        .count("outbox", &Filter::all())
        .await
        .unwrap();

    let armed = Arc::new(AtomicBool::new(true));
    let trigger = armed.clone();
    app.service.inject_faults(Some(Arc::new(move |point: &str| {
        point == fault_points::TRANSFER_AFTER_DEBIT && trigger.swap(false, Ordering::SeqCst)
    })));
    let input =
        json!({ "toUserId": bob.id, "amount": 400, "currency": "EUR", "idempotencyKey": "crash" });
    let body = app.transfer(&alice, input.clone()).await;
    assert_eq!(code(&body), "MSCoreUnavailable", "{body}");
    assert!(
        !armed.load(Ordering::SeqCst),
        "the fault point was never reached"
    );

    // After recovery: fully absent.
    app.service.recover_withdrawals(100).await.unwrap();
    let db = app.service.db();
    assert_eq!(app.balance(&alice, &wallet).await, 1_000);
    assert_eq!(app.ledger_size().await, ledger);
    assert_eq!(db.count("transfers", &Filter::all()).await.unwrap(), 0);
    assert_eq!(db.count("outbox", &Filter::all()).await.unwrap(), outbox);
    assert_eq!(
        db.count("idempotency_keys", &Filter::all()).await.unwrap(),
        0
    );
    assert_eq!(
        db.count("wallets", &Filter::all().eq("userId", bob.id.as_str()))
            .await
            .unwrap(),
        0,
        "the recipient's wallet creation was rolled back too"
    );
    assert!(app.service.reconcile().await.unwrap().mismatches.is_empty());

    // The client retries with the same key: applied exactly once.
    app.service.inject_faults(None);
    let first = app.transfer(&alice, input.clone()).await;
    assert!(first["errors"].is_null(), "{first}");
    let again = app.transfer(&alice, input).await;
    assert_eq!(again["data"], first["data"]);
    assert_eq!(app.balance(&alice, &wallet).await, 600);
    assert_eq!(app.ledger_size().await, ledger + 2);
    assert!(app.service.reconcile().await.unwrap().mismatches.is_empty());
}

#[tokio::test]
async fn a_transfer_interrupted_after_the_debit_is_absent_then_applies_once() {
    interrupted_transfer(spawn_app().await).await;
}

#[tokio::test]
async fn a_transfer_interrupted_after_the_debit_is_absent_on_the_mongodb_wire_server() {
    interrupted_transfer(spawn_app_on_mongo().await).await;
}
