//! Reconciliation finds a tampered balance; the report needs its permission.

use serde_json::json;
use service_core::db::{Filter, Update};

use crate::helpers::{code, spawn_app};

const REPORT: &str = "{ reconciliationReport { ranAt walletsChecked entriesChecked mismatches { walletId balanceType balance expected lastBalanceAfter reason } } }";

#[tokio::test]
async fn a_balance_changed_behind_the_ledger_is_reported() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let bob = app.user().await;
    let wallet = app.wallet(&alice, "EUR").await;
    app.deposit(&wallet, 500).await;
    app.transfer(
        &alice,
        json!({ "toUserId": bob.id, "amount": 200, "currency": "EUR" }),
    )
    .await;
    let admin = app.admin();

    let body = app.gql(REPORT, json!({}), Some(&admin)).await;
    let report = &body["data"]["reconciliationReport"];
    assert_eq!(report["walletsChecked"], 2, "{body}");
    assert_eq!(report["entriesChecked"], 3);
    assert_eq!(report["mismatches"], json!([]));

    let body = app.gql(REPORT, json!({}), Some(&alice.token)).await;
    assert_eq!(code(&body), "MSCoreForbidden", "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["permission"],
        "wallet:reconcile:*"
    );

    // A bug (simulated) changes a balance without a ledger entry.
    app.service
        .db()
        .update_one(
            "wallets",
            &Filter::id(&wallet),
            &Update::new().inc("balance", 7),
        )
        .await
        .unwrap()
        .unwrap();
    let body = app.gql(REPORT, json!({}), Some(&admin)).await;
    let mismatches = &body["data"]["reconciliationReport"]["mismatches"];
    assert_eq!(mismatches.as_array().unwrap().len(), 1, "{body}");
    assert_eq!(mismatches[0]["walletId"], wallet.as_str());
    assert_eq!(mismatches[0]["balanceType"], "BALANCE");
    assert_eq!(mismatches[0]["balance"], 307);
    assert_eq!(mismatches[0]["expected"], 300);
    assert_eq!(mismatches[0]["lastBalanceAfter"], 300);

    // The mismatch is also a metric.
    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("payment_reconciliation_mismatches{service=\"payment\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_reconcile_command_checks_the_configured_store() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let wallet = app.wallet(&alice, "EUR").await;
    app.deposit(&wallet, 90).await;
    let settings = payment_service::Settings::from_vars([(
        "DATA_DIR".to_owned(),
        app.data.path().display().to_string(),
    )])
    .unwrap();
    let report = payment_service::reconcile_once(&settings).await.unwrap();
    assert_eq!(report.wallets_checked, 1);
    assert_eq!(report.entries_checked, 1);
    assert!(report.mismatches.is_empty());
}
