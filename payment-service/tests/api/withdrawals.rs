//! Withdrawals: lock, payout, settle; a failed payout releases the lock; a
//! withdrawal whose owner died is finished by recovery.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use payment_service::domain::fault_points;
use serde_json::{json, Value};
use service_core::db::{Filter, FindOptions};

use crate::helpers::{code, spawn_app, spawn_with, TestApp, TestUser, TX_FIELDS};

const WITHDRAW: &str = "mutation($i: WithdrawInput!) { withdraw(input: $i) { id walletId type direction balanceType amount balanceAfter objectId objectModel } }";

/// A payout provider on a loopback port answering every call with `status`.
struct Provider {
    url: String,
    calls: Arc<AtomicUsize>,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn provider(status: StatusCode) -> Provider {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().route(
        "/payouts",
        axum::routing::post(move |body: axum::Json<Value>| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let reference = format!("ref-{}", body["withdrawalId"].as_str().unwrap_or(""));
                (status, axum::Json(json!({ "reference": reference })))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/payouts", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await
            .unwrap();
    });
    Provider { url, calls, stop }
}

async fn funded(app: &TestApp) -> (TestUser, String) {
    let alice = app.user().await;
    let wallet = app.wallet(&alice, "EUR").await;
    app.deposit(&wallet, 1_000).await;
    (alice, wallet)
}

async fn withdrawals(app: &TestApp) -> Vec<serde_json::Map<String, Value>> {
    app.service
        .db()
        .find("withdrawals", &Filter::all(), &FindOptions::by_id())
        .await
        .unwrap()
}

async fn books_balance(app: &TestApp) {
    let report = app.service.reconcile().await.unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
}

#[tokio::test]
async fn a_withdrawal_with_manual_settlement_debits_once() {
    let app = spawn_app().await;
    let (alice, wallet) = funded(&app).await;
    let input = json!({ "i": { "walletId": wallet, "amount": 300, "idempotencyKey": "w1" } });
    let body = app.gql(WITHDRAW, input.clone(), Some(&alice.token)).await;
    assert!(body["errors"].is_null(), "{body}");
    let entry = &body["data"]["withdraw"];
    assert_eq!(entry["type"], "WITHDRAWAL");
    assert_eq!(entry["direction"], "DEBIT");
    assert_eq!(entry["balanceAfter"], 700);
    assert_eq!(entry["objectModel"], "Withdrawal");
    let replay = app.gql(WITHDRAW, input, Some(&alice.token)).await;
    assert_eq!(replay, body);
    let w = app.read_wallet(&alice, &wallet).await;
    assert_eq!(
        (w["balance"].as_i64(), w["lockedBalance"].as_i64()),
        (Some(700), Some(0))
    );
    let records = withdrawals(&app).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["status"], "COMPLETED");
    let body = app
        .gql(
            WITHDRAW,
            json!({ "i": { "walletId": wallet, "amount": 701 } }),
            Some(&alice.token),
        )
        .await;
    assert_eq!(code(&body), "MSPaymentInsufficientBalance", "{body}");
    books_balance(&app).await;
}

#[tokio::test]
async fn a_paying_http_provider_settles_and_a_failing_one_releases_the_lock() {
    let ok = provider(StatusCode::OK).await;
    let app = spawn_with(&[("PAYMENT_PAYOUT_URL", ok.url.clone())]).await;
    let (alice, wallet) = funded(&app).await;
    let body = app
        .gql(
            WITHDRAW,
            json!({ "i": { "walletId": wallet, "amount": 100 } }),
            Some(&alice.token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(ok.calls.load(Ordering::SeqCst), 1);
    let records = withdrawals(&app).await;
    assert_eq!(
        records[0]["payoutReference"],
        format!("ref-{}", records[0]["_id"].as_str().unwrap())
    );

    for (status, calls) in [
        (StatusCode::SERVICE_UNAVAILABLE, 3),
        (StatusCode::UNPROCESSABLE_ENTITY, 1),
    ] {
        let failing = provider(status).await;
        let app = spawn_with(&[
            ("PAYMENT_PAYOUT_URL", failing.url.clone()),
            ("PAYMENT_PAYOUT_MAX_ATTEMPTS", "3".to_owned()),
        ])
        .await;
        let (alice, wallet) = funded(&app).await;
        let body = app
            .gql(
                WITHDRAW,
                json!({ "i": { "walletId": wallet, "amount": 400 } }),
                Some(&alice.token),
            )
            .await;
        assert_eq!(code(&body), "MSCoreUnavailable", "{status}: {body}");
        assert_eq!(failing.calls.load(Ordering::SeqCst), calls, "{status}");
        let w = app.read_wallet(&alice, &wallet).await;
        assert_eq!(
            (w["balance"].as_i64(), w["lockedBalance"].as_i64()),
            (Some(1_000), Some(0))
        );
        let records = withdrawals(&app).await;
        assert_eq!(records[0]["status"], "FAILED");
        let page = app
            .gql(
                &format!(
                    "query($w: ID!) {{ transactions(walletId: $w) {{ nodes {{ {TX_FIELDS} }} }} }}"
                ),
                json!({ "w": wallet }),
                Some(&alice.token),
            )
            .await;
        let nodes = &page["data"]["transactions"]["nodes"];
        assert_eq!(nodes[0]["type"], "REVERSAL", "{page}");
        assert_eq!(nodes[0]["direction"], "CREDIT");
        assert_eq!(nodes[0]["balanceAfter"], 1_000);
        assert_eq!(nodes[1]["type"], "WITHDRAWAL");
        books_balance(&app).await;
    }
}

#[tokio::test]
async fn a_withdrawal_abandoned_after_the_lock_is_settled_by_recovery() {
    let app = spawn_with(&[("PAYMENT_WITHDRAWAL_LEASE_SECONDS", "1".to_owned())]).await;
    let (alice, wallet) = funded(&app).await;
    app.service.inject_faults(Some(Arc::new(|point: &str| {
        point == fault_points::WITHDRAW_AFTER_LOCK
    })));
    let body = app
        .gql(
            WITHDRAW,
            json!({ "i": { "walletId": wallet, "amount": 250 } }),
            Some(&alice.token),
        )
        .await;
    assert_eq!(code(&body), "MSCoreUnavailable", "{body}");
    app.service.inject_faults(None);
    let w = app.read_wallet(&alice, &wallet).await;
    assert_eq!(
        (w["balance"].as_i64(), w["lockedBalance"].as_i64()),
        (Some(750), Some(250))
    );
    assert_eq!(withdrawals(&app).await[0]["status"], "PENDING");
    // The lock is accounted for while pending.
    books_balance(&app).await;
    // Not stale yet: recovery leaves it alone.
    assert_eq!(app.service.recover_withdrawals(10).await.unwrap(), 0);
    let mut settled = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        settled = app.service.recover_withdrawals(10).await.unwrap();
        if settled > 0 {
            break;
        }
    }
    assert_eq!(settled, 1);
    assert_eq!(withdrawals(&app).await[0]["status"], "COMPLETED");
    let w = app.read_wallet(&alice, &wallet).await;
    assert_eq!(
        (w["balance"].as_i64(), w["lockedBalance"].as_i64()),
        (Some(750), Some(0))
    );
    assert_eq!(app.service.recover_withdrawals(10).await.unwrap(), 0);
    books_balance(&app).await;
}
