//! Delivery against in-test SMTP and HTTP providers: success, retries with
//! every attempt recorded, a hanging provider tripping its breaker while
//! other channels flow, preferences, disabled channels, and a 10 000
//! notification backlog against a slow provider under the concurrency bound.

use std::sync::atomic::Ordering;

use notification_service::store::{AttemptStatus, Channel, NotificationStatus};
use serde_json::json;
use service_core::resilience::BreakerState;

use crate::helpers::{eventually, new_user, spawn_app, TestApp};
use crate::listeners::{HttpListener, SmtpListener};

/// Quick retries, so failing tests finish fast (timing is never asserted).
fn fast_policy() -> (&'static str, String) {
    ("NOTIFICATION_INITIAL_BACKOFF_MS", "5".to_owned())
}

async fn app_with_smtp(smtp: &SmtpListener) -> TestApp {
    spawn_app(&[
        ("NOTIFICATION_SMTP_HOST", "127.0.0.1".into()),
        ("NOTIFICATION_SMTP_PORT", smtp.port.to_string()),
        ("NOTIFICATION_SMTP_TLS", "none".into()),
        (
            "NOTIFICATION_SMTP_FROM",
            "Platform <noreply@example.com>".into(),
        ),
        fast_policy(),
        ("NOTIFICATION_MAX_BACKOFF_MS", "20".into()),
    ])
    .await
}

#[tokio::test]
async fn email_is_delivered_over_smtp() {
    let smtp = SmtpListener::start().await;
    let app = app_with_smtp(&smtp).await;
    let user = new_user();

    let created = app
        .notify(
            &user,
            "transfer.received",
            Some(vec![Channel::Email]),
            Some("alice@example.com"),
        )
        .await;

    assert_eq!(created.len(), 2, "IN_APP is always added");
    assert_eq!(created[0].channel, Channel::InApp);
    assert_eq!(created[0].status, NotificationStatus::Sent);
    let email = app.settled(&created[1].id).await;
    assert_eq!(
        email.status,
        NotificationStatus::Sent,
        "{:?}",
        email.failure_reason
    );
    assert_eq!(email.attempts.len(), 1);
    assert_eq!(email.attempts[0].status, AttemptStatus::Succeeded);
    let messages = smtp.control.accepted();
    assert_eq!(messages.len(), 1);
    assert!(messages[0]["to"][0]
        .as_str()
        .unwrap()
        .contains("alice@example.com"));
    assert!(messages[0]["data"]
        .as_str()
        .unwrap()
        .contains("A transfer.received notification"));
}

#[tokio::test]
async fn smtp_failing_three_times_then_succeeding_sends_one_email() {
    let smtp = SmtpListener::start().await;
    smtp.control.fail_next.store(3, Ordering::SeqCst);
    let app = app_with_smtp(&smtp).await;

    let created = app
        .notify(
            &new_user(),
            "bonus.awarded",
            Some(vec![Channel::Email]),
            Some("b@example.com"),
        )
        .await;

    let email = app.settled(&created[1].id).await;
    assert_eq!(
        email.status,
        NotificationStatus::Sent,
        "{:?}",
        email.attempts
    );
    let statuses: Vec<AttemptStatus> = email.attempts.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        [
            AttemptStatus::Failed,
            AttemptStatus::Failed,
            AttemptStatus::Failed,
            AttemptStatus::Succeeded
        ]
    );
    assert!(email.attempts[0].error.as_deref().unwrap().contains("451"));
    assert_eq!(smtp.control.accepted().len(), 1, "delivered exactly once");
}

#[tokio::test]
async fn http_provider_failing_three_times_then_succeeding_is_delivered_once() {
    let sms = HttpListener::start().await;
    sms.control.fail_next.store(3, Ordering::SeqCst);
    let app = spawn_app(&[
        ("NOTIFICATION_SMS_URL", sms.url.clone()),
        fast_policy(),
        ("NOTIFICATION_MAX_ATTEMPTS", "5".into()),
    ])
    .await;
    let user = new_user();

    let created = app
        .notify(&user, "auth.otp", Some(vec![Channel::Sms]), None)
        .await;

    let sms_note = app.settled(&created[1].id).await;
    assert_eq!(sms_note.status, NotificationStatus::Sent);
    assert_eq!(sms_note.attempts.len(), 4);
    assert_eq!(
        sms_note
            .attempts
            .iter()
            .map(|a| a.number)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(sms_note.attempts[..3]
        .iter()
        .all(|a| a.status == AttemptStatus::Failed && a.error.as_deref().unwrap().contains("503")));
    assert_eq!(sms.control.requests.load(Ordering::SeqCst), 4);
    let accepted = sms.control.accepted();
    assert_eq!(accepted.len(), 1, "delivered exactly once");
    assert_eq!(accepted[0]["notificationId"], json!(sms_note.id));
    assert_eq!(accepted[0]["userId"], json!(user));
    assert_eq!(accepted[0]["channel"], json!("SMS"));
    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = |name: &str, status: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(name)
                    && l.contains("channel=\"SMS\"")
                    && l.contains(&format!("status=\"{status}\""))
            })
            .unwrap_or_else(|| panic!("no {name} {status} in {metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(line("notification_delivery_attempts_total", "FAILED"), "3");
    assert_eq!(
        line("notification_delivery_attempts_total", "SUCCEEDED"),
        "1"
    );
    assert_eq!(line("notification_deliveries_total", "SENT"), "1");
}

#[tokio::test]
async fn the_last_failure_dead_letters_with_the_reason() {
    let push = HttpListener::start().await;
    push.control.fail_next.store(100, Ordering::SeqCst);
    let app = spawn_app(&[
        ("NOTIFICATION_PUSH_URL", push.url.clone()),
        fast_policy(),
        ("NOTIFICATION_MAX_ATTEMPTS", "3".into()),
        ("NOTIFICATION_BREAKER_FAILURES", "50".into()),
    ])
    .await;

    let created = app
        .notify(&new_user(), "x.y", Some(vec![Channel::Push]), None)
        .await;

    let note = app.settled(&created[1].id).await;
    assert_eq!(note.status, NotificationStatus::Failed);
    assert_eq!(note.attempts.len(), 3);
    assert!(note.failure_reason.unwrap().contains("503"));
}

#[tokio::test]
async fn a_hanging_provider_opens_its_breaker_and_other_channels_keep_flowing() {
    let sms = HttpListener::start().await;
    sms.control.hang.store(true, Ordering::SeqCst);
    let push = HttpListener::start().await;
    let app = spawn_app(&[
        ("NOTIFICATION_SMS_URL", sms.url.clone()),
        ("NOTIFICATION_PUSH_URL", push.url.clone()),
        (
            "NOTIFICATION_CHANNEL_POLICIES",
            json!({"SMS": {"timeout_ms": 100, "max_attempts": 2, "breaker_failures": 2,
                           "initial_backoff_ms": 5, "max_backoff_ms": 10, "concurrency": 2}})
            .to_string(),
        ),
    ])
    .await;
    let user = new_user();

    let mut sms_ids = Vec::new();
    for _ in 0..4 {
        sms_ids.push(
            app.notify(&user, "a.b", Some(vec![Channel::Sms]), None)
                .await[1]
                .id
                .clone(),
        );
    }
    let push_ids: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(
                app.notify(&user, "a.b", Some(vec![Channel::Push]), None)
                    .await[1]
                    .id
                    .clone(),
            );
        }
        ids
    };

    for id in &push_ids {
        assert_eq!(app.settled(id).await.status, NotificationStatus::Sent);
    }
    assert_eq!(push.control.accepted().len(), 5);
    let mut rejected = 0;
    for id in &sms_ids {
        let note = app.settled(id).await;
        assert_eq!(note.status, NotificationStatus::Failed);
        rejected += note
            .attempts
            .iter()
            .filter(|a| a.status == AttemptStatus::Rejected)
            .count();
    }
    assert_eq!(
        app.service.providers().breaker_state(Channel::Sms),
        Some(BreakerState::Open)
    );
    assert!(
        rejected > 0,
        "later SMS attempts were refused by the open breaker"
    );
    assert!(
        sms.control.requests.load(Ordering::SeqCst) < 8,
        "the open breaker kept calls away from the hanging provider"
    );
    assert_eq!(
        app.service.providers().breaker_state(Channel::Push),
        Some(BreakerState::Closed)
    );
}

#[tokio::test]
async fn preferences_decide_the_channels() {
    let smtp = SmtpListener::start().await;
    let sms = HttpListener::start().await;
    let push = HttpListener::start().await;
    let app = spawn_app(&[
        ("NOTIFICATION_SMTP_HOST", "127.0.0.1".into()),
        ("NOTIFICATION_SMTP_PORT", smtp.port.to_string()),
        ("NOTIFICATION_SMTP_TLS", "none".into()),
        ("NOTIFICATION_SMS_URL", sms.url.clone()),
        ("NOTIFICATION_PUSH_URL", push.url.clone()),
    ])
    .await;
    let user = new_user();
    let token = app.token(&user, &["user"]);
    let body = app
        .gql(
            "mutation($i: NotificationPreferencesInput!) { updateNotificationPreferences(input: $i) { userId } }",
            json!({"i": {
                "email": "pref@example.com",
                "channels": [{"channel": "EMAIL", "enabled": false}, {"channel": "SMS", "enabled": true}],
                "kinds": [{"kind": "bonus.awarded", "channels": ["PUSH"]}]
            }}),
            Some(&token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");

    let transfer = app.notify(&user, "transfer.received", None, None).await;
    let bonus = app.notify(&user, "bonus.awarded", None, None).await;

    let channels = |v: &[notification_service::store::Notification]| {
        v.iter().map(|n| n.channel).collect::<Vec<_>>()
    };
    assert_eq!(channels(&transfer), [Channel::InApp, Channel::Sms]);
    assert_eq!(channels(&bonus), [Channel::InApp, Channel::Push]);
    for n in transfer.iter().chain(&bonus) {
        assert_eq!(app.settled(&n.id).await.status, NotificationStatus::Sent);
    }
    assert_eq!(sms.control.accepted().len(), 1);
    assert_eq!(push.control.accepted().len(), 1);
    assert!(smtp.control.accepted().is_empty(), "email was switched off");
}

#[tokio::test]
async fn a_channel_without_provider_is_recorded_as_disabled() {
    let app = spawn_app(&[]).await;

    let created = app
        .notify(&new_user(), "a.b", Some(vec![Channel::Webhook]), None)
        .await;

    let webhook = app.notification(&created[1].id).await;
    assert_eq!(webhook.status, NotificationStatus::Failed);
    assert!(webhook.failure_reason.unwrap().contains("disabled"));
    assert!(webhook.attempts.is_empty());
}

#[tokio::test]
async fn the_log_transport_delivers_email_without_smtp() {
    let app = spawn_app(&[]).await;

    let created = app
        .notify(
            &new_user(),
            "a.b",
            Some(vec![Channel::Email]),
            Some("x@example.com"),
        )
        .await;

    assert_eq!(
        app.settled(&created[1].id).await.status,
        NotificationStatus::Sent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_notifications_on_a_slow_provider_stay_under_the_bound_and_none_is_lost() {
    const TOTAL: usize = 10_000;
    const BOUND: usize = 8;
    let sms = HttpListener::start().await;
    sms.control.delay_ms.store(2, Ordering::SeqCst);
    let app = spawn_app(&[
        ("NOTIFICATION_SMS_URL", sms.url.clone()),
        ("NOTIFICATION_QUEUE_CAPACITY", "256".into()),
        (
            "NOTIFICATION_CHANNEL_POLICIES",
            json!({"SMS": {"concurrency": BOUND, "initial_backoff_ms": 5}}).to_string(),
        ),
    ])
    .await;
    let user = new_user();

    let mut ids = Vec::with_capacity(TOTAL);
    for _ in 0..TOTAL {
        let created = app
            .notify(&user, "load.test", Some(vec![Channel::Sms]), None)
            .await;
        ids.push(created[1].id.clone());
    }

    let store = app.service.store().notifications.clone();
    let pending = service_core::db::Filter::all()
        .eq("channel", "SMS")
        .eq("status", "PENDING");
    eventually("every SMS to settle", || async {
        store.count(&pending).await.unwrap() == 0
    })
    .await;
    let settled = store
        .count(
            &service_core::db::Filter::all()
                .eq("channel", "SMS")
                .is_in("status", vec![json!("SENT"), json!("FAILED")]),
        )
        .await
        .unwrap();
    assert_eq!(
        settled, TOTAL as u64,
        "every notification ends SENT or FAILED"
    );
    let max = sms.control.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= BOUND, "at most {BOUND} sends at once, saw {max}");
    assert!(max > 1, "sends did run concurrently");
    let sent = store
        .count(
            &service_core::db::Filter::all()
                .eq("channel", "SMS")
                .eq("status", "SENT"),
        )
        .await
        .unwrap();
    // Delivery is at least once: a send the provider accepted but whose
    // answer timed out on a loaded machine is sent again under the same
    // idempotency key. What must hold is one accepted notification per SENT
    // one, none unknown.
    let accepted: std::collections::BTreeSet<String> = sms
        .control
        .accepted()
        .iter()
        .map(|body| body["notificationId"].as_str().unwrap().to_owned())
        .collect();
    assert!(accepted.len() as u64 >= sent, "every SENT one was accepted");
    let known: std::collections::BTreeSet<String> = ids.into_iter().collect();
    assert!(
        accepted.is_subset(&known),
        "only real notifications were sent"
    );
}

#[tokio::test]
async fn a_restart_sends_what_a_crashed_process_left_pending() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().display().to_string();
    let user = new_user();
    let id = uuid::Uuid::now_v7().to_string();
    {
        let before = spawn_app(&[("DATA_DIR", dir.clone())]).await;
        // As a crash mid-send leaves it: pending, claimed for another hour.
        before
            .service
            .store()
            .notifications
            .create(&notification_service::store::Notification {
                id: id.clone(),
                user_id: user.clone(),
                tenant_id: crate::helpers::TENANT.into(),
                channel: Channel::Sms,
                kind: "a.b".into(),
                title: "t".into(),
                body: "b".into(),
                data: None,
                status: NotificationStatus::Pending,
                attempts: vec![],
                failure_reason: None,
                dedupe_key: format!("crash:{id}"),
                email: None,
                lease_until_ms: chrono::Utc::now().timestamp_millis() + 3_600_000,
                created_at: chrono::Utc::now(),
                sent_at: None,
                read_at: None,
            })
            .await
            .unwrap();
    }
    let sms = HttpListener::start().await;

    let after = spawn_app(&[("DATA_DIR", dir), ("NOTIFICATION_SMS_URL", sms.url.clone())]).await;

    assert_eq!(after.settled(&id).await.status, NotificationStatus::Sent);
    assert_eq!(sms.control.accepted().len(), 1);
}

#[tokio::test]
async fn a_job_queued_several_times_is_sent_once() {
    let push = HttpListener::start().await;
    push.control.delay_ms.store(50, Ordering::SeqCst);
    let app = spawn_app(&[
        ("NOTIFICATION_PUSH_URL", push.url.clone()),
        ("NOTIFICATION_CONCURRENCY", "4".into()),
    ])
    .await;

    let created = app
        .notify(&new_user(), "a.b", Some(vec![Channel::Push]), None)
        .await;
    let job = notification_service::delivery::Job {
        notification_id: created[1].id.clone(),
        channel: Channel::Push,
        tenant_id: crate::helpers::TENANT.into(),
    };
    for _ in 0..3 {
        app.service.queue().enqueue(job.clone()).await.unwrap();
    }

    assert_eq!(
        app.settled(&job.notification_id).await.status,
        NotificationStatus::Sent
    );
    // Give the extra jobs a moment to run (a duplicate that sent would show
    // up in the count; a slow machine can only make this test weaker, never
    // fail it wrongly).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(push.control.requests.load(Ordering::SeqCst), 1);
    assert_eq!(
        app.notification(&job.notification_id).await.attempts.len(),
        1
    );
}
