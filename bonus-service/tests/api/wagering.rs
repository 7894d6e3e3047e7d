//! Wagering from real-balance debits, and conversion.

use bonus_service::store::BonusStatus;
use serde_json::json;
use service_core::events::{TransferCompleted, WithdrawalCompleted};

use crate::helpers::{new_user, spawn_app, template_input, unique_code};

fn transfer(from: &str, to: &str, amount: i64) -> TransferCompleted {
    TransferCompleted {
        transfer_id: uuid::Uuid::now_v7().to_string(),
        from_user_id: from.to_owned(),
        to_user_id: to.to_owned(),
        from_wallet_id: uuid::Uuid::now_v7().to_string(),
        to_wallet_id: uuid::Uuid::now_v7().to_string(),
        amount,
        currency: "EUR".to_owned(),
        description: None,
    }
}

fn withdrawal(user: &str, currency: &str, amount: i64) -> WithdrawalCompleted {
    WithdrawalCompleted {
        transaction_id: uuid::Uuid::now_v7().to_string(),
        wallet_id: uuid::Uuid::now_v7().to_string(),
        user_id: user.to_owned(),
        currency: currency.to_owned(),
        amount,
    }
}

#[tokio::test]
async fn debits_advance_wagering_and_conversion_moves_the_money_once() {
    let app = spawn_app().await;
    let manual = unique_code("WAGER");
    // 1 000 at ×10: 10 000 of turnover.
    app.create_template(template_input("MANUAL", &manual)).await;
    let user = new_user();
    let friend = new_user();
    app.claim(&manual, &app.user_token(&user)).await;
    let bonus = app.wait_for_status(&user, 1, BonusStatus::Active).await[0].clone();

    // The sender's debit counts; the recipient's credit does not; other
    // currencies do not.
    let sent = app.publish(&transfer(&user, &friend, 4_000), &user).await;
    app.publish(&transfer(&friend, &user, 9_000), &friend).await;
    app.publish(&withdrawal(&user, "USD", 9_000), &user).await;
    app.wait_for_bonuses(&user, "4 000 wagered", |b| b[0].wagering_progress == 4_000)
        .await;
    // A redelivery counts nothing.
    app.bus.emit_event(&sent).await.unwrap();
    app.service.handle_event(&sent).await.unwrap();
    assert_eq!(app.bonuses(&user).await[0].wagering_progress, 4_000);

    let withdrawn = app.publish(&withdrawal(&user, "EUR", 7_000), &user).await;
    let converted = app.wait_for_status(&user, 1, BonusStatus::Converted).await;
    assert_eq!(
        converted[0].wagering_progress, 10_000,
        "never past the requirement"
    );
    assert_eq!(converted[0].settled_amount, Some(1_000));
    app.wait_for_emitted("bonus.converted", &bonus.id).await;
    app.service.handle_event(&withdrawn).await.unwrap();
    app.publish(&withdrawal(&user, "EUR", 50_000), &user).await;
    app.publish(&transfer(&user, &friend, 1), &user).await;

    let applied = app.payment.applied_for(&bonus.id);
    assert_eq!(
        applied,
        vec![
            (format!("{}:convert:2", bonus.id), 1),
            (format!("{}:credit", bonus.id), 1)
        ],
        "one credit and one conversion"
    );
    assert_eq!(app.payment.bonus_balance(&user, "EUR"), 0);
    assert_eq!(app.payment.real_balance(&user, "EUR"), 1_000);
    assert_eq!(app.emitted("bonus.converted", &bonus.id), 1);
}

#[tokio::test]
async fn turnover_fills_the_oldest_bonus_first() {
    let app = spawn_app().await;
    let user = new_user();
    let token = app.user_token(&user);
    let first = unique_code("OLD");
    let second = unique_code("NEW");
    let mut old = template_input("MANUAL", &first);
    old["fixedAmount"] = json!(100);
    old["wageringMultiplier"] = json!(5);
    app.create_template(old).await;
    let mut new = template_input("MANUAL", &second);
    new["fixedAmount"] = json!(200);
    new["wageringMultiplier"] = json!(5);
    app.create_template(new).await;
    app.claim(&first, &token).await;
    app.wait_for_status(&user, 1, BonusStatus::Active).await;
    app.claim(&second, &token).await;
    app.wait_for_status(&user, 2, BonusStatus::Active).await;

    // 500 needed by the old one, 1 000 by the new one; 700 wagered.
    app.publish(&withdrawal(&user, "EUR", 700), &user).await;
    let bonuses = app
        .wait_for_bonuses(&user, "old converted, new at 200", |b| {
            b.iter()
                .any(|b| b.status == BonusStatus::Converted && b.pending.is_none())
                && b.iter().any(|b| b.wagering_progress == 200)
        })
        .await;
    let new_one = bonuses.iter().find(|b| b.template_code == second).unwrap();
    assert_eq!(new_one.status, BonusStatus::Active);
    assert_eq!(app.payment.real_balance(&user, "EUR"), 100);
    assert_eq!(app.payment.bonus_balance(&user, "EUR"), 200);
}

#[tokio::test]
async fn a_zero_multiplier_converts_right_after_the_award() {
    let app = spawn_app().await;
    let manual = unique_code("CASH");
    let mut input = template_input("MANUAL", &manual);
    input["wageringMultiplier"] = json!(0);
    app.create_template(input).await;
    let user = new_user();
    app.claim(&manual, &app.user_token(&user)).await;
    let bonuses = app.wait_for_status(&user, 1, BonusStatus::Converted).await;
    assert_eq!(bonuses[0].wagering_required, 0);
    app.wait_for_emitted("bonus.awarded", &bonuses[0].id).await;
    app.wait_for_emitted("bonus.converted", &bonuses[0].id)
        .await;
    assert_eq!(app.payment.real_balance(&user, "EUR"), 1_000);
    assert_eq!(app.payment.bonus_balance(&user, "EUR"), 0);
}

#[tokio::test]
async fn a_refused_conversion_is_asked_again_with_a_new_request() {
    let app = spawn_app().await;
    let manual = unique_code("RETRY");
    let mut input = template_input("MANUAL", &manual);
    input["wageringMultiplier"] = json!(1);
    app.create_template(input).await;
    let user = new_user();
    app.claim(&manual, &app.user_token(&user)).await;
    let bonus = app.wait_for_status(&user, 1, BonusStatus::Active).await[0].clone();

    app.payment.refuse(true);
    app.publish(&withdrawal(&user, "EUR", 1_000), &user).await;
    app.wait_for_bonuses(&user, "conversion refused", |b| {
        b[0].failure_reason.is_some() && b[0].pending.is_none()
    })
    .await;
    assert_eq!(app.bonuses(&user).await[0].status, BonusStatus::Active);

    app.payment.refuse(false);
    app.publish(&withdrawal(&user, "EUR", 1), &user).await;
    app.wait_for_status(&user, 1, BonusStatus::Converted).await;
    assert_eq!(app.payment.real_balance(&user, "EUR"), 1_000);
    let converts: Vec<_> = app
        .payment
        .applied_for(&bonus.id)
        .into_iter()
        .filter(|(id, _)| id.contains(":convert:"))
        .collect();
    assert_eq!(converts.len(), 1, "{converts:?}");
}
