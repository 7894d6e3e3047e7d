//! A small subset on the MongoDB wire server (`TEST_MONGODB_URI`): the
//! unique indexes, the transactions with the outbox, and the saga.

use bonus_service::store::BonusStatus;
use service_core::events::{UserRegistered, WithdrawalCompleted};

use crate::helpers::{code, new_user, spawn_app_on_mongo, template_input, unique_code};

#[tokio::test]
async fn on_mongodb_registration_awards_once_and_conversion_moves_money_once() {
    let app = spawn_app_on_mongo().await;
    assert_eq!(app.db.engine(), "mongodb");
    assert!(app.db.name().starts_with("bt"), "a database of its own");
    let welcome = unique_code("WELCOME");
    let mut input = template_input("WELCOME", &welcome);
    input["wageringMultiplier"] = serde_json::json!(1);
    app.create_template(input).await;
    let user = new_user();
    let registered = UserRegistered {
        user_id: user.clone(),
        email: format!("{user}@example.com"),
        username: None,
    };
    let event = app.publish(&registered, &user).await;
    app.service.handle_event(&event).await.unwrap();
    let bonus = app.wait_for_status(&user, 1, BonusStatus::Active).await[0].clone();
    assert_eq!(app.payment.applied(&format!("{}:credit", bonus.id)), 1);

    let body = app.claim(&welcome, &app.user_token(&user)).await;
    assert_eq!(code(&body), "MSBonusAlreadyClaimed", "{body}");

    let withdrawal = WithdrawalCompleted {
        transaction_id: uuid::Uuid::now_v7().to_string(),
        wallet_id: uuid::Uuid::now_v7().to_string(),
        user_id: user.clone(),
        currency: "EUR".into(),
        amount: 1_000,
    };
    let event = app.publish(&withdrawal, &user).await;
    app.service.handle_event(&event).await.unwrap();
    app.wait_for_status(&user, 1, BonusStatus::Converted).await;
    assert_eq!(app.payment.real_balance(&user, "EUR"), 1_000);
    assert_eq!(app.payment.bonus_balance(&user, "EUR"), 0);
    assert_eq!(app.payment.all_applied().values().sum::<u32>(), 2);
}

#[tokio::test]
async fn on_mongodb_concurrent_claims_award_one_bonus() {
    let app = spawn_app_on_mongo().await;
    let manual = unique_code("RACE");
    app.create_template(template_input("MANUAL", &manual)).await;
    let user = new_user();
    let token = app.user_token(&user);
    let bodies = futures::future::join_all((0..4).map(|_| app.claim(&manual, &token))).await;
    assert_eq!(
        bodies.iter().filter(|b| b["errors"].is_null()).count(),
        1,
        "{bodies:?}"
    );
    for body in bodies.iter().filter(|b| !b["errors"].is_null()) {
        assert_eq!(code(body), "MSBonusAlreadyClaimed", "{body}");
    }
    app.wait_for_status(&user, 1, BonusStatus::Active).await;
    assert_eq!(app.payment.bonus_balance(&user, "EUR"), 1_000);
}
