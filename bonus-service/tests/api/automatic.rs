//! Automatic awards: WELCOME on registration, DEPOSIT_MATCH on deposits.

use bonus_service::store::{BonusKind, BonusStatus};
use serde_json::json;
use service_core::events::{DepositCompleted, UserRegistered};

use crate::helpers::{new_user, spawn_app, template_input, unique_code};

fn registered(user: &str) -> UserRegistered {
    UserRegistered {
        user_id: user.to_owned(),
        email: format!("{user}@example.com"),
        username: None,
    }
}

fn deposit(user: &str, currency: &str, amount: i64) -> DepositCompleted {
    DepositCompleted {
        transaction_id: uuid::Uuid::now_v7().to_string(),
        wallet_id: uuid::Uuid::now_v7().to_string(),
        user_id: user.to_owned(),
        currency: currency.to_owned(),
        amount,
        balance_after: amount,
    }
}

#[tokio::test]
async fn registration_awards_the_welcome_bonus_exactly_once() {
    let app = spawn_app().await;
    let welcome = unique_code("WELCOME");
    app.create_template(template_input("WELCOME", &welcome))
        .await;
    // Other kinds are not awarded on registration.
    app.create_template(template_input("MANUAL", &unique_code("M")))
        .await;
    app.create_template(template_input("DEPOSIT_MATCH", &unique_code("D")))
        .await;
    let user = new_user();

    let event = app.publish(&registered(&user), &user).await;
    // Delivered again through the bus, and straight to the handler twice
    // (as a redelivery after a crash would be).
    app.bus.emit_event(&event).await.unwrap();
    app.service.handle_event(&event).await.unwrap();
    app.service.handle_event(&event).await.unwrap();

    let bonuses = app.wait_for_status(&user, 1, BonusStatus::Active).await;
    let bonus = &bonuses[0];
    assert_eq!(bonus.kind, BonusKind::Welcome);
    assert_eq!(bonus.template_code, welcome);
    assert_eq!(bonus.amount, 1_000);
    app.wait_for_emitted("bonus.awarded", &bonus.id).await;

    // The same registration once more, under a new event id (a re-publish
    // by another relay): the unique index still holds it to one.
    app.publish(&registered(&user), &user).await;
    app.service
        .handle_event(&fresh_event(&registered(&user), &user))
        .await
        .unwrap();

    assert_eq!(app.bonuses(&user).await.len(), 1);
    assert_eq!(app.payment.applied(&format!("{}:credit", bonus.id)), 1);
    assert_eq!(
        app.payment.all_applied().len(),
        1,
        "exactly one credit request applied"
    );
    assert_eq!(app.payment.bonus_balance(&user, "EUR"), 1_000);
    assert_eq!(app.emitted("bonus.awarded", &bonus.id), 1);

    // A WELCOME bonus already received cannot be claimed again.
    let body = app.claim(&welcome, &app.user_token(&user)).await;
    assert_eq!(
        crate::helpers::code(&body),
        "MSBonusAlreadyClaimed",
        "{body}"
    );
}

#[tokio::test]
async fn every_active_welcome_template_is_awarded() {
    let app = spawn_app().await;
    let first = unique_code("W1");
    let second = unique_code("W2");
    app.create_template(template_input("WELCOME", &first)).await;
    let mut usd = template_input("WELCOME", &second);
    usd["currency"] = json!("USD");
    usd["maxAmount"] = json!(300);
    app.create_template(usd).await;
    let mut off = template_input("WELCOME", &unique_code("W3"));
    off["active"] = json!(false);
    app.create_template(off).await;

    let user = new_user();
    app.publish(&registered(&user), &user).await;
    let bonuses = app.wait_for_status(&user, 2, BonusStatus::Active).await;
    let usd = bonuses.iter().find(|b| b.template_code == second).unwrap();
    assert_eq!(usd.amount, 300, "capped by maxAmount");
    assert_eq!(app.payment.bonus_balance(&user, "USD"), 300);
    assert_eq!(app.payment.bonus_balance(&user, "EUR"), 1_000);
}

#[tokio::test]
async fn a_deposit_yields_the_capped_match_once() {
    let app = spawn_app().await;
    let matched = unique_code("MATCH");
    // 50 %, capped at 5 000.
    app.create_template(template_input("DEPOSIT_MATCH", &matched))
        .await;
    let mut gbp = template_input("DEPOSIT_MATCH", &unique_code("GBP"));
    gbp["currency"] = json!("GBP");
    app.create_template(gbp).await;
    let user = new_user();

    let small = app.publish(&deposit(&user, "EUR", 2_001), &user).await;
    app.bus.emit_event(&small).await.unwrap();
    app.service.handle_event(&small).await.unwrap();
    let bonuses = app.wait_for_status(&user, 1, BonusStatus::Active).await;
    assert_eq!(bonuses[0].amount, 1_000, "50 % of 2 001, rounded down");

    app.publish(&deposit(&user, "EUR", 1_000_000), &user).await;
    let bonuses = app.wait_for_status(&user, 2, BonusStatus::Active).await;
    assert_eq!(bonuses[0].amount, 5_000, "capped at maxAmount");
    assert_eq!(bonuses[0].wagering_required, 50_000);

    // 50 % of 1 is 0: nothing to award. Another currency: no EUR template.
    app.publish(&deposit(&user, "EUR", 1), &user).await;
    app.publish(&deposit(&user, "JPY", 10_000), &user).await;
    let last = app.publish(&deposit(&user, "GBP", 100), &user).await;
    app.service.handle_event(&last).await.unwrap();
    let bonuses = app.wait_for_status(&user, 3, BonusStatus::Active).await;
    assert_eq!(bonuses[0].currency, "GBP");
    assert_eq!(bonuses[0].amount, 50);
    assert_eq!(app.payment.bonus_balance(&user, "EUR"), 6_000);
    assert_eq!(app.payment.all_applied().values().sum::<u32>(), 3);
}

#[tokio::test]
async fn malformed_events_are_handler_errors_not_panics() {
    let app = spawn_app().await;
    let event = service_core::events::Event::new(
        "deposit.completed",
        "default",
        None,
        json!({ "userId": 5 }),
    )
    .unwrap();
    assert!(app.service.handle_event(&event).await.is_err());
}

/// `payload` in an event with a fresh id (not published).
fn fresh_event(payload: &UserRegistered, user: &str) -> service_core::events::Event {
    use service_core::events::DomainEvent;
    payload.to_event("default", Some(user)).unwrap()
}
