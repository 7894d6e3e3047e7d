//! The scheduled jobs, driven by hand: expiry and re-sending overdue
//! payment requests.

use bonus_service::store::BonusStatus;
use chrono::Utc;
use serde_json::json;
use service_core::events::WithdrawalCompleted;

use crate::helpers::{new_user, spawn_app, template_input, unique_code};

#[tokio::test]
async fn expired_bonuses_are_debited_and_end_expired() {
    let app = spawn_app().await;
    let manual = unique_code("SHORT");
    app.create_template(template_input("MANUAL", &manual)).await;
    let user = new_user();
    let keeper = new_user();
    app.claim(&manual, &app.user_token(&user)).await;
    app.claim(&manual, &app.user_token(&keeper)).await;
    let bonus = app.wait_for_status(&user, 1, BonusStatus::Active).await[0].clone();
    app.wait_for_status(&keeper, 1, BonusStatus::Active).await;

    // Nothing is due yet.
    assert!(
        app.jobs.run_once().await.unwrap(),
        "the job holds the lease"
    );
    assert_eq!(app.bonuses(&user).await[0].status, BonusStatus::Active);

    // The clock moves past `expiresAt`.
    let past = Utc::now().timestamp_millis() - 1_000;
    app.set_field(&bonus.id, "expires_at_ms", json!(past)).await;
    assert!(app.jobs.run_once().await.unwrap());
    let expired = app.wait_for_status(&user, 1, BonusStatus::Expired).await;
    assert_eq!(expired[0].settled_amount, Some(1_000));
    app.wait_for_emitted("bonus.expired", &bonus.id).await;
    assert_eq!(app.payment.bonus_balance(&user, "EUR"), 0);

    // Running again changes nothing; the other user's bonus is untouched.
    assert!(app.jobs.run_once().await.unwrap());
    let debits: Vec<_> = app
        .payment
        .applied_for(&bonus.id)
        .into_iter()
        .filter(|(id, _)| id.contains(":expire:"))
        .collect();
    assert_eq!(debits.len(), 1, "{debits:?}");
    assert_eq!(debits[0].1, 1);
    assert_eq!(app.emitted("bonus.expired", &bonus.id), 1);
    assert_eq!(app.bonuses(&keeper).await[0].status, BonusStatus::Active);
    assert_eq!(app.payment.bonus_balance(&keeper, "EUR"), 1_000);

    // An expired bonus no longer counts wagering.
    let event = WithdrawalCompleted {
        transaction_id: uuid::Uuid::now_v7().to_string(),
        wallet_id: uuid::Uuid::now_v7().to_string(),
        user_id: user.clone(),
        currency: "EUR".into(),
        amount: 50_000,
    };
    app.publish(&event, &user).await;
    app.service
        .handle_event(&event_of(&event, &user))
        .await
        .unwrap();
    assert_eq!(app.bonuses(&user).await[0].wagering_progress, 0);
}

fn event_of(payload: &WithdrawalCompleted, user: &str) -> service_core::events::Event {
    use service_core::events::DomainEvent;
    payload.to_event("default", Some(user)).unwrap()
}

#[tokio::test]
async fn a_debit_takes_only_what_remains_of_the_bonus_balance() {
    let app = spawn_app().await;
    let first = unique_code("A");
    let second = unique_code("B");
    app.create_template(template_input("MANUAL", &first)).await;
    let mut cash = template_input("MANUAL", &second);
    cash["wageringMultiplier"] = json!(0);
    app.create_template(cash).await;
    let user = new_user();
    let token = app.user_token(&user);
    app.claim(&first, &token).await;
    let bonus = app.wait_for_status(&user, 1, BonusStatus::Active).await[0].clone();
    // A second bonus converts at once: its conversion takes the whole bonus
    // balance up to its amount, 1 000, leaving nothing for the first.
    app.claim(&second, &token).await;
    app.wait_for_bonuses(&user, "second converted", |b| {
        b.iter().any(|b| b.status == BonusStatus::Converted)
    })
    .await;
    assert_eq!(app.payment.bonus_balance(&user, "EUR"), 1_000);

    app.set_field(&bonus.id, "expires_at_ms", json!(0)).await;
    app.jobs.run_once().await.unwrap();
    app.wait_for_bonuses(&user, "first expired", |b| {
        b.iter().any(|b| b.status == BonusStatus::Expired)
    })
    .await;
    assert_eq!(app.payment.bonus_balance(&user, "EUR"), 0);
}

#[tokio::test]
async fn an_unanswered_request_is_sent_again_and_applied_once() {
    let app = spawn_app().await;
    let manual = unique_code("LOST");
    app.create_template(template_input("MANUAL", &manual)).await;
    let user = new_user();
    app.payment.hold();
    let body = app.claim(&manual, &app.user_token(&user)).await;
    let id = body["data"]["claimBonus"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let request = format!("{id}:credit");
    crate::helpers::wait_until("the credit request", || async {
        (app.payment.deliveries(&request) == 1).then_some(())
    })
    .await;

    // Not overdue yet: the job leaves it alone.
    app.jobs.run_once().await.unwrap();
    assert_eq!(app.payment.deliveries(&request), 1);

    // Overdue: sent again under the same request id.
    app.set_field(&id, "pending_since_ms", json!(1)).await;
    app.jobs.run_once().await.unwrap();
    crate::helpers::wait_until("the re-sent request", || async {
        (app.payment.deliveries(&request) == 2).then_some(())
    })
    .await;
    assert_eq!(app.bonuses(&user).await[0].status, BonusStatus::Pending);

    // Both deliveries are answered; the money moves once and the bonus
    // becomes active once.
    app.payment.release(&app.bus).await;
    app.wait_for_status(&user, 1, BonusStatus::Active).await;
    app.wait_for_emitted("bonus.awarded", &id).await;
    assert_eq!(app.payment.applied(&request), 1);
    assert_eq!(app.payment.bonus_balance(&user, "EUR"), 1_000);
    assert_eq!(app.emitted("bonus.awarded", &id), 1);
}

#[tokio::test]
async fn the_jobs_do_nothing_while_another_instance_holds_the_lease() {
    let app = spawn_app().await;
    let manual = unique_code("LEASED");
    app.create_template(template_input("MANUAL", &manual)).await;
    let user = new_user();
    app.claim(&manual, &app.user_token(&user)).await;
    let bonus = app.wait_for_status(&user, 1, BonusStatus::Active).await[0].clone();
    app.set_field(&bonus.id, "expires_at_ms", json!(0)).await;

    // Another instance holds the job's lease (the core recovery lease).
    let until = Utc::now().timestamp_millis() + 3_600_000;
    let lease = json!({ "_id": "recovery", "holder": "another-instance", "expires_at": until });
    app.db
        .insert("leases", lease.as_object().unwrap().clone())
        .await
        .unwrap();
    assert!(!app.jobs.run_once().await.unwrap(), "no lease, no run");
    assert_eq!(app.bonuses(&user).await[0].status, BonusStatus::Active);
    assert_eq!(app.bonuses(&user).await[0].pending, None);

    // Once it is free, this instance takes it.
    app.db
        .delete_one("leases", &service_core::db::Filter::id("recovery"))
        .await
        .unwrap();
    assert!(app.jobs.run_once().await.unwrap());
    app.wait_for_status(&user, 1, BonusStatus::Expired).await;
}
