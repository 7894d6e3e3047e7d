//! One-time codes: requestOtp, verifyOtp, and what the notification
//! service receives.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use service_core::events::{DomainEvent as _, Event, OtpRequested};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::helpers::{
    code, on_both_stores, spawn_app, spawn_on, spawn_with, Backend, Options, TestApp,
};

const REQUEST: &str = "mutation($p: String!) { requestOtp(purpose: $p) }";
const VERIFY: &str = "mutation($p: String!, $c: String!) { verifyOtp(purpose: $p, code: $c) }";

impl TestApp {
    async fn request_otp(&self, token: &str, purpose: &str) -> Value {
        self.gql(REQUEST, json!({ "p": purpose }), Some(token))
            .await
    }

    async fn verify_otp(&self, token: &str, purpose: &str, code: &str) -> Value {
        self.gql(VERIFY, json!({ "p": purpose, "c": code }), Some(token))
            .await
    }
}

/// The next `auth.otp.requested` payload.
async fn next_code(events: &mut UnboundedReceiver<Event>) -> OtpRequested {
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("auth.otp.requested within 10 s")
        .expect("bus open");
    OtpRequested::from_event(&event).expect("the catalog's OtpRequested payload")
}

/// A code that is not `code` (same shape).
fn other_than(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

async fn a_requested_code_verifies_once(backend: Backend) {
    let app = spawn_on(backend).await;
    let mut events = app.events("auth.otp.requested").await;
    let user = app.register().await;
    let token = user["accessToken"].as_str().unwrap();

    let body = app.request_otp(token, "withdrawal").await;
    assert_eq!(body["data"]["requestOtp"], true, "{body}");
    let sent = next_code(&mut events).await;
    assert_eq!(sent.user_id, user["user"]["id"].as_str().unwrap());
    assert_eq!(sent.email, user["user"]["email"].as_str().unwrap());
    assert_eq!(sent.purpose, "withdrawal");
    assert!(
        sent.code.len() == 6 && sent.code.bytes().all(|b| b.is_ascii_digit()),
        "{}",
        sent.code
    );
    assert!(sent.expires_at > chrono::Utc::now());

    if backend == Backend::Embedded {
        // What the store keeps: a salted MAC, never the digits.
        let store = app.embedded_store().await;
        let id = format!("{}:withdrawal", sent.user_id);
        let stored = store.otps.get(&id).await.unwrap().expect("the stored code");
        let raw = serde_json::to_string(&stored).unwrap();
        assert!(!raw.contains(&sent.code), "{raw}");
        assert_eq!((stored.tries, stored.used_at), (0, None));
    }

    let wrong = app
        .verify_otp(token, "withdrawal", &other_than(&sent.code))
        .await;
    assert_eq!(code(&wrong), "MSAuthInvalidOtp", "{wrong}");
    let other_purpose = app.verify_otp(token, "login", &sent.code).await;
    assert_eq!(code(&other_purpose), "MSAuthInvalidOtp", "{other_purpose}");

    let right = app.verify_otp(token, "withdrawal", &sent.code).await;
    assert_eq!(right["data"]["verifyOtp"], true, "{right}");
    let again = app.verify_otp(token, "withdrawal", &sent.code).await;
    assert_eq!(code(&again), "MSAuthInvalidOtp", "a used code: {again}");
}

on_both_stores!(a_requested_code_verifies_once);

#[tokio::test]
async fn a_new_request_replaces_the_previous_code() {
    let app = spawn_app().await;
    let mut events = app.events("auth.otp.requested").await;
    let user = app.register().await;
    let token = user["accessToken"].as_str().unwrap();

    app.request_otp(token, "login").await;
    let first = next_code(&mut events).await;
    app.request_otp(token, "login").await;
    let second = next_code(&mut events).await;
    if first.code != second.code {
        let stale = app.verify_otp(token, "login", &first.code).await;
        assert_eq!(code(&stale), "MSAuthInvalidOtp", "{stale}");
    }
    let body = app.verify_otp(token, "login", &second.code).await;
    assert_eq!(body["data"]["verifyOtp"], true, "{body}");
}

#[tokio::test]
async fn five_wrong_tries_kill_the_code() {
    let app = spawn_app().await;
    let mut events = app.events("auth.otp.requested").await;
    let user = app.register().await;
    let token = user["accessToken"].as_str().unwrap();
    app.request_otp(token, "login").await;
    let sent = next_code(&mut events).await;

    let wrong = other_than(&sent.code);
    for _ in 0..5 {
        let body = app.verify_otp(token, "login", &wrong).await;
        assert_eq!(code(&body), "MSAuthInvalidOtp", "{body}");
    }
    let body = app.verify_otp(token, "login", &sent.code).await;
    assert_eq!(code(&body), "MSAuthInvalidOtp", "out of tries: {body}");
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let app = spawn_with(Options::on(Backend::Embedded).var("AUTH_OTP_TTL_SECONDS", 1)).await;
    let mut events = app.events("auth.otp.requested").await;
    let user = app.register().await;
    let token = user["accessToken"].as_str().unwrap();
    app.request_otp(token, "login").await;
    let sent = next_code(&mut events).await;

    let wait = (sent.expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    let body = app.verify_otp(token, "login", &sent.code).await;
    assert_eq!(code(&body), "MSAuthInvalidOtp", "{body}");
}

#[tokio::test]
async fn one_user_codes_do_not_verify_for_another() {
    let app = spawn_app().await;
    let mut events = app.events("auth.otp.requested").await;
    let alice = app.register().await;
    let bob = app.register().await;
    app.request_otp(alice["accessToken"].as_str().unwrap(), "login")
        .await;
    let sent = next_code(&mut events).await;
    let body = app
        .verify_otp(bob["accessToken"].as_str().unwrap(), "login", &sent.code)
        .await;
    assert_eq!(code(&body), "MSAuthInvalidOtp", "{body}");
}

#[tokio::test]
async fn requests_are_rate_limited_per_user() {
    let app = spawn_with(
        Options::on(Backend::Embedded)
            .with_redis()
            .var("AUTH_OTP_BURST", 2)
            .var("AUTH_OTP_REFILL_SECONDS", 3600),
    )
    .await;
    let alice = app.register().await;
    let token = alice["accessToken"].as_str().unwrap();
    for purpose in ["login", "withdrawal"] {
        let body = app.request_otp(token, purpose).await;
        assert_eq!(body["data"]["requestOtp"], true, "{body}");
    }
    let limited = app.request_otp(token, "login").await;
    assert_eq!(code(&limited), "MSCoreRateLimited", "{limited}");
    let retry = limited["errors"][0]["extensions"]["retryAfterSeconds"]
        .as_u64()
        .unwrap();
    assert!((1..=3600).contains(&retry), "{limited}");

    let bob = app.register().await;
    let body = app
        .request_otp(bob["accessToken"].as_str().unwrap(), "login")
        .await;
    assert_eq!(
        body["data"]["requestOtp"], true,
        "other users keep their budget: {body}"
    );
}

#[tokio::test]
async fn bad_input_and_anonymous_callers_are_refused() {
    let app = spawn_app().await;
    let user = app.register().await;
    let token = user["accessToken"].as_str().unwrap();

    for purpose in ["", "Login", "with space", r#"{"$gt":""}"#, &"a".repeat(100)] {
        let body = app.request_otp(token, purpose).await;
        assert_eq!(code(&body), "MSCoreValidation", "{purpose}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], "purpose");
    }
    for malformed in ["", "12345", "1234567", "abcdef", "' OR 1=1 --"] {
        let body = app.verify_otp(token, "login", malformed).await;
        assert_eq!(code(&body), "MSAuthInvalidOtp", "{malformed}: {body}");
    }
    let nothing_requested = app.verify_otp(token, "login", "123456").await;
    assert_eq!(code(&nothing_requested), "MSAuthInvalidOtp");

    let anonymous = app.gql(REQUEST, json!({ "p": "login" }), None).await;
    assert_eq!(code(&anonymous), "MSCoreUnauthenticated", "{anonymous}");
    let anonymous = app
        .gql(VERIFY, json!({ "p": "login", "c": "123456" }), None)
        .await;
    assert_eq!(code(&anonymous), "MSCoreUnauthenticated", "{anonymous}");
}

/// Collects every log line written while it is the default subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The test runtime is single-threaded, so the thread-local subscriber sees
/// everything the server logs for these requests, down to TRACE.
#[tokio::test]
async fn the_code_never_reaches_the_logs() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .without_time()
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = spawn_app().await;
    let mut events = app.events("auth.otp.requested").await;
    let user = app.register().await;
    let token = user["accessToken"].as_str().unwrap();
    app.request_otp(token, "login").await;
    let sent = next_code(&mut events).await;
    app.verify_otp(token, "login", &other_than(&sent.code))
        .await;
    let body = app.verify_otp(token, "login", &sent.code).await;
    assert_eq!(body["data"]["verifyOtp"], true, "{body}");

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("one-time code issued"), "logs were captured");
    assert!(
        text.contains("one-time code verified"),
        "logs were captured"
    );
    // Six digits standing alone; inside a longer run of letters and digits
    // (an id, a hash) they are not the code.
    let standalone = text.match_indices(&sent.code).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + sent.code.len()..].chars().next();
        ![before, after]
            .into_iter()
            .flatten()
            .any(|c| c.is_ascii_alphanumeric())
    });
    assert!(!standalone, "the code leaked into the logs");
}
