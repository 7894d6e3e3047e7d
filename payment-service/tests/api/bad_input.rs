//! Bad input through the HTTP API: each gets its code and moves nothing.

use serde_json::{json, Value};

use crate::helpers::{code, spawn_app, TestApp, TestUser, TX_FIELDS};

/// Alice with 1 000 EUR, Bob with an empty EUR wallet.
async fn two_users(app: &TestApp) -> (TestUser, String, TestUser, String) {
    let alice = app.user().await;
    let bob = app.user().await;
    let alice_wallet = app.wallet(&alice, "EUR").await;
    let bob_wallet = app.wallet(&bob, "EUR").await;
    app.deposit(&alice_wallet, 1_000).await;
    (alice, alice_wallet, bob, bob_wallet)
}

async fn nothing_moved(app: &TestApp, alice: &TestUser, wallet: &str, ledger: u64) {
    assert_eq!(app.balance(alice, wallet).await, 1_000);
    assert_eq!(app.ledger_size().await, ledger);
    let report = app.service.reconcile().await.unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
}

fn bad_amounts() -> Vec<(&'static str, Value)> {
    vec![
        ("zero", json!(0)),
        ("negative", json!(-5)),
        ("fractional", json!(1.5)),
        ("fractional zero", json!(10.0)),
        ("over 2^53-1", json!(9_007_199_254_740_992_i64)),
        ("huge", json!(u64::MAX)),
        ("a string", json!("100")),
    ]
}

#[tokio::test]
async fn bad_amounts_are_refused_everywhere_and_move_nothing() {
    let app = spawn_app().await;
    let (alice, alice_wallet, bob, _) = two_users(&app).await;
    let ledger = app.ledger_size().await;
    let admin = app.admin();
    for (what, amount) in bad_amounts() {
        let body = app
            .transfer(
                &alice,
                json!({ "toUserId": bob.id, "amount": amount, "currency": "EUR" }),
            )
            .await;
        assert_eq!(
            code(&body),
            "MSPaymentInvalidAmount",
            "transfer, {what}: {body}"
        );
        assert!(
            body["data"].is_null() || body["data"]["transfer"].is_null(),
            "{body}"
        );

        let body = app
            .gql(
                &format!("mutation($i: DepositInput!) {{ deposit(input: $i) {{ {TX_FIELDS} }} }}"),
                json!({ "i": { "walletId": alice_wallet, "amount": amount } }),
                Some(&admin),
            )
            .await;
        assert_eq!(
            code(&body),
            "MSPaymentInvalidAmount",
            "deposit, {what}: {body}"
        );

        let body = app
            .gql(
                &format!(
                    "mutation($i: WithdrawInput!) {{ withdraw(input: $i) {{ {TX_FIELDS} }} }}"
                ),
                json!({ "i": { "walletId": alice_wallet, "amount": amount } }),
                Some(&alice.token),
            )
            .await;
        assert_eq!(
            code(&body),
            "MSPaymentInvalidAmount",
            "withdraw, {what}: {body}"
        );
    }
    // A fractional literal in the document itself.
    let body = app
        .gql(
            &format!(
                "mutation {{ transfer(input: {{toUserId: \"{}\", amount: 2.5, currency: \"EUR\"}}) {{ id }} }}",
                bob.id
            ),
            json!({}),
            Some(&alice.token),
        )
        .await;
    assert_eq!(code(&body), "MSPaymentInvalidAmount", "{body}");
    nothing_moved(&app, &alice, &alice_wallet, ledger).await;
}

#[tokio::test]
async fn unknown_currencies_are_refused() {
    let app = spawn_app().await;
    let (alice, alice_wallet, bob, _) = two_users(&app).await;
    let ledger = app.ledger_size().await;
    for currency in ["XYZ", "eur", "EURO", "E", "", "€"] {
        let body = app
            .gql(
                "mutation($c: String!) { createWallet(currency: $c) { id } }",
                json!({ "c": currency }),
                Some(&alice.token),
            )
            .await;
        assert_eq!(
            code(&body),
            "MSPaymentInvalidCurrency",
            "{currency}: {body}"
        );
        let body = app
            .transfer(
                &alice,
                json!({ "toUserId": bob.id, "amount": 10, "currency": currency }),
            )
            .await;
        assert_eq!(
            code(&body),
            "MSPaymentInvalidCurrency",
            "{currency}: {body}"
        );
    }
    // A valid currency the sender has no wallet in.
    let body = app
        .transfer(
            &alice,
            json!({ "toUserId": bob.id, "amount": 10, "currency": "USD" }),
        )
        .await;
    assert_eq!(code(&body), "MSPaymentWalletNotFound", "{body}");
    nothing_moved(&app, &alice, &alice_wallet, ledger).await;
}

#[tokio::test]
async fn someone_elses_wallet_is_not_found() {
    let app = spawn_app().await;
    let (alice, alice_wallet, bob, _) = two_users(&app).await;
    let ledger = app.ledger_size().await;
    let query = "query($id: ID!) { wallet(id: $id) { id balance } }";
    for id in [alice_wallet.clone(), "no-such-wallet".to_owned()] {
        let body = app.gql(query, json!({ "id": id }), Some(&bob.token)).await;
        assert_eq!(code(&body), "MSPaymentWalletNotFound", "{body}");
        assert!(!body.to_string().contains("1000"), "{body}");
        let body = app
            .gql(
                "mutation($i: WithdrawInput!) { withdraw(input: $i) { id } }",
                json!({ "i": { "walletId": id, "amount": 10 } }),
                Some(&bob.token),
            )
            .await;
        assert_eq!(code(&body), "MSPaymentWalletNotFound", "{body}");
        let body = app
            .gql(
                "query($id: ID!) { transactions(walletId: $id) { totalCount } }",
                json!({ "id": id }),
                Some(&bob.token),
            )
            .await;
        assert_eq!(code(&body), "MSPaymentWalletNotFound", "{body}");
    }
    // Depositing needs wallet:deposit:*, which a user does not have.
    let body = app
        .gql(
            "mutation($i: DepositInput!) { deposit(input: $i) { id } }",
            json!({ "i": { "walletId": alice_wallet, "amount": 10 } }),
            Some(&alice.token),
        )
        .await;
    assert_eq!(code(&body), "MSCoreForbidden", "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["permission"],
        "wallet:deposit:*"
    );
    // Support may read any wallet.
    let support = app.token(&uuid::Uuid::new_v4().to_string(), &["support"]);
    let body = app
        .gql(query, json!({ "id": alice_wallet }), Some(&support))
        .await;
    assert_eq!(body["data"]["wallet"]["balance"], 1000, "{body}");
    // Anonymous callers are unauthenticated.
    let body = app.gql(query, json!({ "id": alice_wallet }), None).await;
    assert_eq!(code(&body), "MSCoreUnauthenticated", "{body}");
    nothing_moved(&app, &alice, &alice_wallet, ledger).await;
}

#[tokio::test]
async fn transfers_to_missing_users_to_oneself_or_beyond_the_balance_are_refused() {
    let app = spawn_app().await;
    let (alice, alice_wallet, bob, bob_wallet) = two_users(&app).await;
    let ledger = app.ledger_size().await;
    let missing = uuid::Uuid::new_v4().to_string();
    let body = app
        .transfer(
            &alice,
            json!({ "toUserId": missing, "amount": 10, "currency": "EUR" }),
        )
        .await;
    assert_eq!(code(&body), "MSPaymentRecipientNotFound", "{body}");
    let body = app
        .transfer(
            &alice,
            json!({ "toUserId": alice.id, "amount": 10, "currency": "EUR" }),
        )
        .await;
    assert_eq!(code(&body), "MSPaymentSelfTransfer", "{body}");
    let body = app
        .transfer(
            &alice,
            json!({ "toUserId": bob.id, "amount": 1_001, "currency": "EUR" }),
        )
        .await;
    assert_eq!(code(&body), "MSPaymentInsufficientBalance", "{body}");
    let body = app
        .transfer(
            &bob,
            json!({ "toUserId": alice.id, "amount": 1, "currency": "EUR" }),
        )
        .await;
    assert_eq!(code(&body), "MSPaymentInsufficientBalance", "{body}");
    let long = "x".repeat(501);
    let body = app
        .transfer(
            &alice,
            json!({ "toUserId": bob.id, "amount": 1, "currency": "EUR", "description": long }),
        )
        .await;
    assert_eq!(code(&body), "MSCoreValidation", "{body}");
    assert_eq!(app.balance(&bob, &bob_wallet).await, 0);
    nothing_moved(&app, &alice, &alice_wallet, ledger).await;
    // No wallet was created for the missing recipient either.
    let wallets = app
        .service
        .db()
        .count(
            "wallets",
            &service_core::db::Filter::all().eq("userId", missing.as_str()),
        )
        .await
        .unwrap();
    assert_eq!(wallets, 0);
}
