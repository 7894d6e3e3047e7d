//! Bonus money requested over the bus: applied once, answered every time.

use std::time::Duration;

use serde_json::json;
use service_core::events::{
    handler, BonusOperation, BonusPaymentRequested, BonusPaymentSettled, DomainEvent,
};
use tokio::sync::mpsc;

use crate::helpers::{spawn_app, TestApp, TENANT};

struct Answers(mpsc::UnboundedReceiver<BonusPaymentSettled>);

async fn listen(app: &TestApp) -> Answers {
    let (tx, rx) = mpsc::unbounded_channel();
    app.bus
        .on(
            BonusPaymentSettled::TYPE,
            "test-bonus-answers",
            handler(move |event| {
                let tx = tx.clone();
                async move {
                    tx.send(BonusPaymentSettled::from_event(&event)?).ok();
                    Ok(())
                }
            }),
        )
        .await
        .unwrap();
    Answers(rx)
}

impl Answers {
    async fn next(&mut self) -> BonusPaymentSettled {
        tokio::time::timeout(Duration::from_secs(10), self.0.recv())
            .await
            .expect("no bonus.payment.settled within 10 s")
            .unwrap()
    }
}

async fn request(
    app: &TestApp,
    request_id: &str,
    operation: BonusOperation,
    user: &str,
    amount: i64,
) {
    let event = BonusPaymentRequested {
        request_id: request_id.to_owned(),
        operation,
        user_bonus_id: "ub-1".to_owned(),
        user_id: user.to_owned(),
        currency: "EUR".to_owned(),
        amount,
    }
    .to_event(TENANT, Some(user))
    .unwrap();
    app.bus.emit_event(&event).await.unwrap();
}

#[tokio::test]
async fn credit_debit_and_convert_move_bonus_money_once() {
    let app = spawn_app().await;
    let mut answers = listen(&app).await;
    let alice = app.user().await;

    // A credit creates the wallet.
    request(&app, "r1", BonusOperation::Credit, &alice.id, 500).await;
    let settled = answers.next().await;
    assert!(settled.succeeded, "{settled:?}");
    assert_eq!(settled.amount_applied, 500);
    let first_tx = settled.transaction_id.clone();
    assert!(first_tx.is_some());

    // Redelivered: the same answer, nothing moved.
    request(&app, "r1", BonusOperation::Credit, &alice.id, 500).await;
    let again = answers.next().await;
    assert_eq!(again, settled);

    let body = app
        .gql(
            "{ myWallets { id balance bonusBalance } }",
            json!({}),
            Some(&alice.token),
        )
        .await;
    let wallet = body["data"]["myWallets"][0].clone();
    assert_eq!(wallet["bonusBalance"], 500, "{body}");
    assert_eq!(wallet["balance"], 0);

    // Convert more than there is: only what remains moves.
    request(&app, "r2", BonusOperation::Debit, &alice.id, 100).await;
    assert_eq!(answers.next().await.amount_applied, 100);
    request(&app, "r3", BonusOperation::Convert, &alice.id, 1_000).await;
    let converted = answers.next().await;
    assert_eq!(converted.amount_applied, 400);
    request(&app, "r4", BonusOperation::Debit, &alice.id, 50).await;
    let empty = answers.next().await;
    assert!(empty.succeeded);
    assert_eq!(empty.amount_applied, 0);
    assert!(empty.transaction_id.is_none());

    // A bad request is answered as failed.
    request(&app, "r5", BonusOperation::Credit, &alice.id, -5).await;
    let refused = answers.next().await;
    assert!(!refused.succeeded);

    let body = app
        .gql(
            "query($w: ID!) { wallet(id: $w) { balance bonusBalance transactions { nodes { type direction balanceType amount balanceAfter } } } }",
            json!({ "w": wallet["id"] }),
            Some(&alice.token),
        )
        .await;
    let w = &body["data"]["wallet"];
    assert_eq!(w["balance"], 400, "{body}");
    assert_eq!(w["bonusBalance"], 0);
    let kinds: Vec<(String, String, String)> = w["transactions"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["type"].as_str().unwrap().to_owned(),
                n["direction"].as_str().unwrap().to_owned(),
                n["balanceType"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut kinds = kinds;
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("BONUS_CONVERT".into(), "CREDIT".into(), "BALANCE".into()),
            ("BONUS_CONVERT".into(), "DEBIT".into(), "BONUS".into()),
            ("BONUS_CREDIT".into(), "CREDIT".into(), "BONUS".into()),
            ("BONUS_DEBIT".into(), "DEBIT".into(), "BONUS".into()),
        ]
    );
    let report = app.service.reconcile().await.unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
}
