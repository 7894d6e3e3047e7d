//! Racing requests and events: the unique index and the optimistic
//! updates keep one award per claim and exact wagering.

use bonus_service::store::BonusStatus;
use serde_json::json;
use service_core::events::{DomainEvent, WithdrawalCompleted};

use crate::helpers::{code, new_user, spawn_app, template_input, unique_code};

#[tokio::test]
async fn concurrent_claims_award_one_bonus() {
    let app = spawn_app().await;
    let manual = unique_code("RACE");
    app.create_template(template_input("MANUAL", &manual)).await;
    let user = new_user();
    let token = app.user_token(&user);
    let claims = (0..8).map(|_| app.claim(&manual, &token));
    let bodies = futures::future::join_all(claims).await;
    let won = bodies.iter().filter(|b| b["errors"].is_null()).count();
    assert_eq!(won, 1, "{bodies:?}");
    for body in bodies.iter().filter(|b| !b["errors"].is_null()) {
        assert_eq!(code(body), "MSBonusAlreadyClaimed", "{body}");
    }
    let bonuses = app.wait_for_status(&user, 1, BonusStatus::Active).await;
    assert_eq!(app.payment.applied(&format!("{}:credit", bonuses[0].id)), 1);
    assert_eq!(app.payment.bonus_balance(&user, "EUR"), 1_000);
}

#[tokio::test]
async fn concurrent_debits_are_all_counted_once() {
    let app = spawn_app().await;
    let manual = unique_code("SUM");
    let mut input = template_input("MANUAL", &manual);
    input["wageringMultiplier"] = json!(100);
    app.create_template(input).await;
    let user = new_user();
    app.claim(&manual, &app.user_token(&user)).await;
    app.wait_for_status(&user, 1, BonusStatus::Active).await;

    let events: Vec<_> = (0..10)
        .map(|i| {
            WithdrawalCompleted {
                transaction_id: uuid::Uuid::now_v7().to_string(),
                wallet_id: "w".into(),
                user_id: user.clone(),
                currency: "EUR".into(),
                amount: 100 + i,
            }
            .to_event("default", Some(&user))
            .unwrap()
        })
        .collect();
    // Every event twice, all at once, straight into the handler.
    let deliveries = events
        .iter()
        .chain(events.iter())
        .map(|e| app.service.handle_event(e));
    for result in futures::future::join_all(deliveries).await {
        result.unwrap();
    }
    let expected: i64 = (0..10).map(|i| 100 + i).sum();
    assert_eq!(app.bonuses(&user).await[0].wagering_progress, expected);
}
