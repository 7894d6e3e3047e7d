//! Domain events in, notifications out: each consumed event makes the
//! right notifications once, even when it is delivered twice.

use chrono::Utc;
use notification_service::store::{Channel, Notification, NotificationStatus};
use service_core::events::{
    BonusAwarded, DepositCompleted, DomainEvent, Event, OtpRequested, TransferCompleted,
    UserRegistered,
};

use crate::helpers::{eventually, new_user, spawn_app, TestApp, TENANT};
use crate::listeners::SmtpListener;

/// Emits `event` on the bus twice (a redelivery keeps its id) and hands it
/// to the consumer directly once more, then waits for `user`'s
/// notifications to reach `expected`.
async fn deliver_twice(
    app: &TestApp,
    event: &Event,
    user: &str,
    expected: usize,
) -> Vec<Notification> {
    app.bus.emit_event(event).await.unwrap();
    app.bus.emit_event(event).await.unwrap();
    eventually("the notifications of the event", || async {
        app.notifications_of(user).await.len() >= expected
    })
    .await;
    // Past the bus's own deduplication: the store refuses a second copy.
    app.service.consume(event).await.unwrap();
    app.service.consume(event).await.unwrap();
    let all = app.notifications_of(user).await;
    assert_eq!(all.len(), expected, "{all:#?}");
    all
}

fn kinds_and_channels(all: &[Notification]) -> Vec<(String, Channel)> {
    let mut out: Vec<_> = all.iter().map(|n| (n.kind.clone(), n.channel)).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    out
}

#[tokio::test]
async fn a_completed_transfer_notifies_both_parties_once() {
    let app = spawn_app(&[]).await;
    let (from, to) = (new_user(), new_user());
    let event = TransferCompleted {
        transfer_id: "t1".into(),
        from_user_id: from.clone(),
        to_user_id: to.clone(),
        from_wallet_id: "w1".into(),
        to_wallet_id: "w2".into(),
        amount: 1234,
        currency: "EUR".into(),
        description: Some("rent".into()),
    }
    .to_event(TENANT, Some(&from))
    .unwrap();

    let sent = deliver_twice(&app, &event, &from, 2).await;
    let received = deliver_twice(&app, &event, &to, 2).await;

    assert_eq!(
        kinds_and_channels(&sent),
        [
            ("transfer.sent".into(), Channel::InApp),
            ("transfer.sent".into(), Channel::Email)
        ]
    );
    assert_eq!(
        kinds_and_channels(&received),
        [
            ("transfer.received".into(), Channel::InApp),
            ("transfer.received".into(), Channel::Email)
        ]
    );
    let in_app = received
        .iter()
        .find(|n| n.channel == Channel::InApp)
        .unwrap();
    assert_eq!(in_app.body, "You received 12.34 EUR.");
    assert_eq!(in_app.data.as_ref().unwrap()["transferId"], "t1");
    assert_eq!(in_app.status, NotificationStatus::Sent);
}

#[tokio::test]
async fn a_completed_deposit_and_an_awarded_bonus_notify_their_owner_once() {
    let app = spawn_app(&[]).await;
    let user = new_user();
    let deposit = DepositCompleted {
        transaction_id: "tx1".into(),
        wallet_id: "w1".into(),
        user_id: user.clone(),
        currency: "USD".into(),
        amount: 5000,
        balance_after: 5000,
    }
    .to_event(TENANT, Some(&user))
    .unwrap();
    let bonus = BonusAwarded {
        user_bonus_id: "ub1".into(),
        user_id: user.clone(),
        template_code: "WELCOME".into(),
        amount: 1000,
        currency: "USD".into(),
        wagering_required: 30000,
        expires_at: Utc::now(),
    }
    .to_event(TENANT, Some(&user))
    .unwrap();

    deliver_twice(&app, &deposit, &user, 2).await;
    let all = deliver_twice(&app, &bonus, &user, 4).await;

    let kinds = kinds_and_channels(&all);
    assert_eq!(
        kinds
            .iter()
            .filter(|(k, _)| k == "deposit.completed")
            .count(),
        2
    );
    assert_eq!(
        kinds.iter().filter(|(k, _)| k == "bonus.awarded").count(),
        2
    );
    let bonus_note = all
        .iter()
        .find(|n| n.kind == "bonus.awarded" && n.channel == Channel::InApp)
        .unwrap();
    assert_eq!(
        bonus_note.body,
        "You received a WELCOME bonus of 10.00 USD."
    );
}

#[tokio::test]
async fn an_otp_is_emailed_and_shown_in_app_once_and_its_code_stays_out_of_data() {
    let smtp = SmtpListener::start().await;
    let app = spawn_app(&[
        ("NOTIFICATION_SMTP_HOST", "127.0.0.1".into()),
        ("NOTIFICATION_SMTP_PORT", smtp.port.to_string()),
        ("NOTIFICATION_SMTP_TLS", "none".into()),
        // Even with SMS on, a code never leaves through another channel.
        ("NOTIFICATION_SMS_URL", "http://127.0.0.1:9/".into()),
    ])
    .await;
    let user = new_user();
    app.service
        .modify_preferences(&user, |p| {
            p.channels.insert(Channel::Sms, true);
        })
        .await
        .unwrap();
    let event = OtpRequested {
        user_id: user.clone(),
        email: "otp@example.com".into(),
        purpose: "withdrawal".into(),
        code: "482913".into(),
        expires_at: Utc::now(),
    }
    .to_event(TENANT, Some(&user))
    .unwrap();

    let all = deliver_twice(&app, &event, &user, 2).await;

    assert_eq!(
        kinds_and_channels(&all),
        [
            ("auth.otp".into(), Channel::InApp),
            ("auth.otp".into(), Channel::Email)
        ]
    );
    let email = all.iter().find(|n| n.channel == Channel::Email).unwrap();
    let email = app.settled(&email.id).await;
    assert_eq!(email.status, NotificationStatus::Sent);
    let messages = smtp.control.accepted();
    assert_eq!(messages.len(), 1);
    assert!(messages[0]["data"].as_str().unwrap().contains("482913"));
    assert!(messages[0]["to"][0]
        .as_str()
        .unwrap()
        .contains("otp@example.com"));
    for n in &all {
        assert!(n.body.contains("482913"));
        assert!(!n.data.as_ref().unwrap().to_string().contains("482913"));
    }
}

#[tokio::test]
async fn an_otp_respects_a_user_who_switched_email_off() {
    let app = spawn_app(&[]).await;
    let user = new_user();
    app.service
        .modify_preferences(&user, |p| {
            p.channels.insert(Channel::Email, false);
        })
        .await
        .unwrap();
    let event = OtpRequested {
        user_id: user.clone(),
        email: "otp@example.com".into(),
        purpose: "login".into(),
        code: "111222".into(),
        expires_at: Utc::now(),
    }
    .to_event(TENANT, Some(&user))
    .unwrap();

    let all = deliver_twice(&app, &event, &user, 1).await;

    assert_eq!(all[0].channel, Channel::InApp);
}

#[tokio::test]
async fn a_registration_gives_later_notifications_an_address() {
    let app = spawn_app(&[]).await;
    let user = new_user();
    let event = UserRegistered {
        user_id: user.clone(),
        email: "new@example.com".into(),
        username: None,
    }
    .to_event(TENANT, Some(&user))
    .unwrap();

    app.bus.emit_event(&event).await.unwrap();
    eventually("the address to be remembered", || async {
        app.service
            .preferences_of(&user)
            .await
            .unwrap()
            .email
            .is_some()
    })
    .await;
    let created = app
        .notify(&user, "a.b", Some(vec![Channel::Email]), None)
        .await;

    assert!(app.notifications_of(&user).await.len() == 2);
    assert_eq!(created[1].email.as_deref(), Some("new@example.com"));
    assert_eq!(
        app.settled(&created[1].id).await.status,
        NotificationStatus::Sent
    );
}

#[tokio::test]
async fn a_malformed_payload_is_an_error_not_a_panic() {
    let app = spawn_app(&[]).await;
    let event = Event::new(
        TransferCompleted::TYPE,
        TENANT,
        None,
        serde_json::json!({"transferId": 5}),
    )
    .unwrap();

    let err = app.service.consume(&event).await.unwrap_err();

    assert!(err.message().contains("malformed transfer.completed"));
}

/// Collects every log line written while it is the thread's subscriber.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_otp_code_never_reaches_the_logs_even_at_trace_level() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime is single-threaded: the service's tasks log here too.
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = spawn_app(&[]).await;
    let user = new_user();
    let event = OtpRequested {
        user_id: user.clone(),
        email: "otp@example.com".into(),
        purpose: "login".into(),
        code: "937164".into(),
        expires_at: Utc::now(),
    }
    .to_event(TENANT, Some(&user))
    .unwrap();

    let all = deliver_twice(&app, &event, &user, 2).await;
    let email = all.iter().find(|n| n.channel == Channel::Email).unwrap();
    assert_eq!(
        app.settled(&email.id).await.status,
        NotificationStatus::Sent
    );

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("email accepted by the log transport"),
        "the logs were captured: {text}"
    );
    assert!(!text.contains("937164"), "the code leaked into the logs");
}

#[tokio::test]
async fn the_same_event_consumed_concurrently_still_creates_one_set() {
    let app = spawn_app(&[]).await;
    let user = new_user();
    let event = DepositCompleted {
        transaction_id: "tx9".into(),
        wallet_id: "w9".into(),
        user_id: user.clone(),
        currency: "EUR".into(),
        amount: 100,
        balance_after: 100,
    }
    .to_event(TENANT, Some(&user))
    .unwrap();

    let (a, b, c) = tokio::join!(
        app.service.consume(&event),
        app.service.consume(&event),
        app.service.consume(&event)
    );

    a.unwrap();
    b.unwrap();
    c.unwrap();
    assert_eq!(app.notifications_of(&user).await.len(), 2);
}
