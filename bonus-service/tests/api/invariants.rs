//! A mixed run of every path; afterwards the money the responder holds
//! matches what the bonus records say moved, and nothing moved twice.

use bonus_service::store::BonusStatus;
use serde_json::json;
use service_core::events::{
    DepositCompleted, TransferCompleted, UserRegistered, WithdrawalCompleted,
};

use crate::helpers::{new_user, spawn_app, template_input, unique_code, wait_until};

#[tokio::test]
async fn a_mixed_run_keeps_the_money_invariants() {
    let app = spawn_app().await;
    let mut welcome = template_input("WELCOME", &unique_code("W"));
    welcome["fixedAmount"] = json!(500);
    welcome["wageringMultiplier"] = json!(2);
    app.create_template(welcome).await;
    let mut matched = template_input("DEPOSIT_MATCH", &unique_code("D"));
    matched["percent"] = json!(100);
    matched["maxAmount"] = json!(2_000);
    matched["wageringMultiplier"] = json!(1);
    app.create_template(matched).await;
    let manual = unique_code("M");
    let mut cash = template_input("MANUAL", &manual);
    cash["fixedAmount"] = json!(300);
    cash["wageringMultiplier"] = json!(0);
    app.create_template(cash).await;

    let users: Vec<String> = (0..5).map(|_| new_user()).collect();
    // A small deterministic generator: the run is the same every time.
    let mut seed: u64 = 0x5eed;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) % n
    };
    for user in &users {
        let registered = UserRegistered {
            user_id: user.clone(),
            email: format!("{user}@example.com"),
            username: None,
        };
        app.publish(&registered, user).await;
        app.claim(&manual, &app.user_token(user)).await;
    }
    for step in 0..60 {
        let user = &users[usize::try_from(next(5)).unwrap()];
        let amount = i64::try_from(1 + next(3_000)).unwrap();
        match next(5) {
            0 => {
                app.publish(
                    &DepositCompleted {
                        transaction_id: format!("tx-{step}"),
                        wallet_id: "w".into(),
                        user_id: user.clone(),
                        currency: "EUR".into(),
                        amount,
                        balance_after: amount,
                    },
                    user,
                )
                .await;
            }
            1 => {
                app.publish(
                    &WithdrawalCompleted {
                        transaction_id: format!("wd-{step}"),
                        wallet_id: "w".into(),
                        user_id: user.clone(),
                        currency: "EUR".into(),
                        amount,
                    },
                    user,
                )
                .await;
            }
            2 => {
                let to = &users[usize::try_from(next(5)).unwrap()];
                app.publish(
                    &TransferCompleted {
                        transfer_id: format!("tr-{step}"),
                        from_user_id: user.clone(),
                        to_user_id: to.clone(),
                        from_wallet_id: "a".into(),
                        to_wallet_id: "b".into(),
                        amount,
                        currency: "EUR".into(),
                        description: None,
                    },
                    user,
                )
                .await;
            }
            3 => {
                // Forfeit one of the user's bonuses, whatever its state
                // (refusals are expected for the busy or finished ones).
                if let Some(bonus) = app.bonuses(user).await.first() {
                    app.forfeit(&bonus.id, &app.user_token(user)).await;
                }
            }
            _ => {
                if let Some(bonus) = app.bonuses(user).await.last() {
                    app.set_field(&bonus.id, "expires_at_ms", json!(0)).await;
                    app.jobs.run_once().await.unwrap();
                }
            }
        }
    }

    // Let everything settle.
    for user in &users {
        wait_until("every movement settled", || async {
            app.bonuses(user)
                .await
                .iter()
                .all(|b| b.pending.is_none() && b.status != BonusStatus::Pending)
                .then_some(())
        })
        .await;
    }

    for (request, count) in app.payment.all_applied() {
        assert_eq!(count, 1, "{request} moved money {count} times");
    }
    for user in &users {
        let bonuses = app.bonuses(user).await;
        let credited: i64 = bonuses
            .iter()
            .filter(|b| b.status != BonusStatus::Failed)
            .map(|b| b.amount)
            .sum();
        let converted: i64 = bonuses
            .iter()
            .filter(|b| b.status == BonusStatus::Converted)
            .filter_map(|b| b.settled_amount)
            .sum();
        let debited: i64 = bonuses
            .iter()
            .filter(|b| matches!(b.status, BonusStatus::Expired | BonusStatus::Forfeited))
            .filter_map(|b| b.settled_amount)
            .sum();
        assert_eq!(
            app.payment.bonus_balance(user, "EUR"),
            credited - converted - debited,
            "bonus balance of {user}"
        );
        assert_eq!(app.payment.real_balance(user, "EUR"), converted);
        for bonus in &bonuses {
            assert!(bonus.wagering_progress <= bonus.wagering_required);
            assert_eq!(app.payment.applied(&format!("{}:credit", bonus.id)), 1);
            if bonus.status == BonusStatus::Active {
                assert!(bonus.wagering_progress < bonus.wagering_required);
            }
        }
        assert!(bonuses.iter().any(|b| b.template_code == manual));
    }
}
