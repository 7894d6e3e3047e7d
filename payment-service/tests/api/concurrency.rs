//! Many concurrent transfers among few wallets: the money rules hold.

use std::sync::Arc;

use payment_service::domain::{
    Amount, Currency, PaymentPolicy, PayoutGateway, TransferCommand, WalletCommand,
};
use payment_service::PaymentService;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use service_core::cache::{CacheConfig, LayeredCache};
use service_core::codes as core_codes;
use service_core::events::OutboxWaker;

use crate::helpers::{context, spawn_app, spawn_app_on_mongo, TestApp, TENANT};
use crate::invariants::{check, Expected};

const START: i64 = 10_000;

/// `n` new users, each with a EUR wallet holding `amount`; their ids.
async fn funded_users(app: &TestApp, n: usize, amount: i64) -> Vec<String> {
    let eur = Currency::parse("EUR").unwrap();
    let admin = context("admin", &["admin"]);
    let mut users = Vec::new();
    for _ in 0..n {
        let user = app.user().await;
        let ctx = context(&user.id, &["user"]);
        let wallet = app.service.create_wallet(&ctx, eur).await.unwrap();
        let deposit = WalletCommand {
            wallet_id: wallet.id,
            amount: Amount::positive(amount).unwrap(),
            idempotency_key: None,
            description: None,
        };
        app.service.deposit(&admin, deposit).await.unwrap();
        users.push(user.id);
    }
    users
}

async fn run(app: TestApp, wallets: usize, transfers: usize, tasks: usize) {
    let currency = Currency::parse("EUR").unwrap();
    let users = Arc::new(funded_users(&app, wallets, START).await);
    let per_task = transfers / tasks;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let service = app.service.clone();
        let users = users.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(task as u64 + 1);
            let (mut ok, mut refused) = (0usize, 0usize);
            for _ in 0..per_task {
                let from = rng.gen_range(0..users.len());
                let mut to = rng.gen_range(0..users.len() - 1);
                if to >= from {
                    to += 1;
                }
                // Up to 1.5× the starting balance: some are bound to be refused.
                let amount = rng.gen_range(1..=START * 3 / 2);
                let result = service
                    .transfer(
                        &context(&users[from], &["user"]),
                        TransferCommand {
                            to_user_id: users[to].clone(),
                            amount: Amount::positive(amount).unwrap(),
                            currency,
                            idempotency_key: None,
                            description: None,
                        },
                    )
                    .await;
                match result {
                    Ok(t) => {
                        assert_eq!(t.amount, amount);
                        ok += 1;
                    }
                    Err(err) => {
                        assert_eq!(
                            err.code(),
                            payment_service::codes::INSUFFICIENT_BALANCE,
                            "{err:?}"
                        );
                        assert_ne!(err.code(), core_codes::INTERNAL);
                        refused += 1;
                    }
                }
            }
            (ok, refused)
        }));
    }
    let (mut completed, mut refused) = (0, 0);
    for handle in handles {
        let (ok, no) = handle.await.unwrap();
        completed += ok;
        refused += no;
    }
    assert_eq!(completed + refused, per_task * tasks);
    assert!(completed > 0, "no transfer went through");
    assert!(
        refused > 0,
        "no transfer was refused: amounts were meant to exceed balances"
    );
    check(
        &app,
        &Expected {
            total: START * wallets as i64,
            completed,
            other_entries: wallets as u64,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_transfers_keep_the_books_on_the_embedded_store() {
    run(spawn_app().await, 20, 1000, 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transfers_keep_the_books_on_the_mongodb_wire_server() {
    run(spawn_app_on_mongo().await, 20, 60, 4).await;
}

/// Several senders pay a recipient who has no wallet yet, at once: exactly
/// one wallet is created and it receives every payment.
async fn first_receipts_race(app: TestApp, senders: usize) {
    let currency = Currency::parse("EUR").unwrap();
    let recipient = app.user().await;
    let users = funded_users(&app, senders, 100).await;
    // Two instances of the service on one store: each queues its own
    // requests per wallet, so only across instances do the creations race.
    let other = PaymentService::new(
        app.service.db().clone(),
        Arc::new(LayeredCache::l1_only(CacheConfig::default())),
        OutboxWaker::default(),
        PayoutGateway::manual(),
        PaymentPolicy::default(),
    );
    for user in users.iter().chain([&recipient.id]) {
        other.remember_user(user, TENANT, "test").await;
    }
    let mut handles = Vec::new();
    for (i, user) in users.into_iter().enumerate() {
        let service = if i % 2 == 0 {
            app.service.clone()
        } else {
            other.clone()
        };
        let to = recipient.id.clone();
        handles.push(tokio::spawn(async move {
            service
                .transfer(
                    &context(&user, &["user"]),
                    TransferCommand {
                        to_user_id: to,
                        amount: Amount::positive(100).unwrap(),
                        currency,
                        idempotency_key: None,
                        description: None,
                    },
                )
                .await
        }));
    }
    for handle in handles {
        handle.await.unwrap().unwrap();
    }
    let wallets = app
        .service
        .my_wallets(&context(&recipient.id, &["user"]))
        .await
        .unwrap();
    assert_eq!(wallets.len(), 1);
    assert_eq!(wallets[0].balance, 100 * senders as i64);
    check(
        &app,
        &Expected {
            total: 100 * senders as i64,
            completed: senders,
            other_entries: senders as u64,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_receipts_create_one_wallet() {
    first_receipts_race(spawn_app().await, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_receipts_create_one_wallet_on_the_mongodb_wire_server() {
    first_receipts_race(spawn_app_on_mongo().await, 4).await;
}

/// Transfers back and forth between two wallets from many tasks at once: on
/// MongoDB each would conflict with the others and be run again (or, past
/// the retry budget, refused); the service queues them per wallet instead,
/// so none is run twice and every one goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contended_transfers_queue_per_wallet_on_the_mongodb_wire_server() {
    let app = spawn_app_on_mongo().await;
    let currency = Currency::parse("EUR").unwrap();
    let users = funded_users(&app, 2, 1_000).await;
    let reruns_before = app.service.db().reruns();
    let (tasks, per_task) = (8, 4);
    let mut handles = Vec::new();
    for task in 0..tasks {
        let service = app.service.clone();
        let (from, to) = if task % 2 == 0 {
            (users[0].clone(), users[1].clone())
        } else {
            (users[1].clone(), users[0].clone())
        };
        handles.push(tokio::spawn(async move {
            for _ in 0..per_task {
                service
                    .transfer(
                        &context(&from, &["user"]),
                        TransferCommand {
                            to_user_id: to.clone(),
                            amount: Amount::positive(10).unwrap(),
                            currency,
                            idempotency_key: None,
                            description: None,
                        },
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    assert_eq!(
        app.service.db().reruns(),
        reruns_before,
        "transfers on the same wallets conflicted inside one instance"
    );
    check(
        &app,
        &Expected {
            total: 2_000,
            completed: tasks * per_task,
            other_entries: 2,
        },
    )
    .await;
}
