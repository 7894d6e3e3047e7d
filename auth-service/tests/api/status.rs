//! Account status: progressive lockout after repeated bursts of failed
//! sign-ins, and `setUserStatus` for operators.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{
    code, spawn_app, spawn_with, unique_email, with_and_without_redis, Backend, Options, TestApp,
    PASSWORD,
};

const SET_STATUS: &str =
    "mutation($id: ID!, $s: UserStatus!) { setUserStatus(userId: $id, status: $s) { id status } }";
const WRONG: &str = "not the right password";
/// The throttle's window in these tests: short, so bursts can follow each other.
const WINDOW: Duration = Duration::from_secs(1);

/// Two failures per one-second window; the second burst locks, for 100 s
/// the first time.
fn lockout_options(redis: bool) -> Options {
    let mut options = Options::on(Backend::Embedded)
        .var("AUTH_LOGIN_MAX_FAILURES", 2)
        .var("AUTH_LOGIN_WINDOW_SECONDS", WINDOW.as_secs())
        .var("AUTH_LOCKOUT_AFTER_BURSTS", 2)
        .var("AUTH_LOCKOUT_BASE_SECONDS", 100)
        .var("AUTH_LOCKOUT_MAX_SECONDS", 1000);
    options.redis = redis;
    options
}

fn retry_after(body: &Value) -> u64 {
    body["errors"][0]["extensions"]["retryAfterSeconds"]
        .as_u64()
        .unwrap_or_else(|| panic!("no retryAfterSeconds in {body}"))
}

impl TestApp {
    /// Fails sign-in until the throttle trips, then waits for its window to end.
    async fn burst(&self, email: &str) {
        for _ in 0..2 {
            let body = self.login(email, WRONG).await;
            assert_eq!(code(&body), "MSAuthInvalidCredentials", "{body}");
        }
        let blocked = self.login(email, WRONG).await;
        assert_eq!(code(&blocked), "MSAuthTooManyAttempts", "{blocked}");
        tokio::time::sleep(WINDOW + Duration::from_millis(300)).await;
    }

    async fn status_of(&self, admin: &str, id: &Value) -> Value {
        let body = self
            .gql(
                "query($id: ID!) { user(id: $id) { status } }",
                json!({ "id": id }),
                Some(admin),
            )
            .await;
        body["data"]["user"]["status"].clone()
    }

    async fn set_status(&self, admin: &str, id: &Value, status: &str) -> Value {
        self.gql(SET_STATUS, json!({ "id": id, "s": status }), Some(admin))
            .await
    }
}

async fn repeated_bursts_lock_the_account_longer_each_time(redis: bool) {
    let app = spawn_with(lockout_options(redis)).await;
    let admin = app.admin().await;
    let user = app.register().await;
    let email = user["user"]["email"].as_str().unwrap().to_owned();
    let id = user["user"]["id"].clone();
    let stranger = unique_email();

    app.burst(&email).await;
    app.burst(&stranger).await;
    assert_eq!(app.status_of(&admin, &id).await, "ACTIVE");
    app.burst(&email).await;
    app.burst(&stranger).await;
    assert_eq!(app.status_of(&admin, &id).await, "LOCKED");

    // Wrong passwords get the same answer for the locked account and for
    // an email nobody registered.
    let locked_wrong = app.login(&email, WRONG).await;
    let unknown_wrong = app.login(&stranger, WRONG).await;
    assert_eq!(code(&locked_wrong), "MSAuthInvalidCredentials");
    assert_eq!(locked_wrong, unknown_wrong);

    // The right password learns that the account is locked, and for how long.
    let first = app.login(&email, PASSWORD).await;
    assert_eq!(code(&first), "MSAuthTooManyAttempts", "{first}");
    let first_wait = retry_after(&first);
    assert!((1..=100).contains(&first_wait), "{first}");

    // Another burst while locked locks again, twice as long.
    tokio::time::sleep(WINDOW + Duration::from_millis(300)).await;
    app.burst(&email).await;
    let second = app.login(&email, PASSWORD).await;
    assert_eq!(code(&second), "MSAuthTooManyAttempts", "{second}");
    let second_wait = retry_after(&second);
    assert!((101..=200).contains(&second_wait), "{second}");

    // The session the user already had cannot be refreshed while locked.
    let refresh = app.refresh(user["refreshToken"].as_str().unwrap()).await;
    assert_eq!(code(&refresh), "MSAuthInvalidToken", "{refresh}");

    // An operator unlocks: the lock, the failure counts and the growth go.
    let body = app.set_status(&admin, &id, "ACTIVE").await;
    assert_eq!(body["data"]["setUserStatus"]["status"], "ACTIVE", "{body}");
    let body = app.login(&email, PASSWORD).await;
    assert!(body["errors"].is_null(), "{body}");
    let body = app.refresh(user["refreshToken"].as_str().unwrap()).await;
    assert!(body["errors"].is_null(), "the old session lives on: {body}");
}

with_and_without_redis!(repeated_bursts_lock_the_account_longer_each_time);

#[tokio::test]
async fn a_disabled_user_is_signed_out_and_cannot_sign_in() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let user = app.register().await;
    let email = user["user"]["email"].as_str().unwrap().to_owned();
    let id = user["user"]["id"].clone();

    let body = app.set_status(&admin, &id, "DISABLED").await;
    assert_eq!(
        body["data"]["setUserStatus"]["status"], "DISABLED",
        "{body}"
    );

    let me = app.me(user["accessToken"].as_str()).await;
    assert_eq!(code(&me), "MSAuthInvalidToken", "sessions ended: {me}");
    let refresh = app.refresh(user["refreshToken"].as_str().unwrap()).await;
    assert_eq!(code(&refresh), "MSAuthInvalidToken", "{refresh}");

    let right = app.login(&email, PASSWORD).await;
    let wrong = app.login(&email, WRONG).await;
    let unknown = app.login(&unique_email(), PASSWORD).await;
    assert_eq!(code(&right), "MSAuthInvalidCredentials", "{right}");
    assert_eq!(right, wrong);
    assert_eq!(right, unknown);

    let body = app.set_status(&admin, &id, "ACTIVE").await;
    assert_eq!(body["data"]["setUserStatus"]["status"], "ACTIVE", "{body}");
    let body = app.login(&email, PASSWORD).await;
    assert!(body["errors"].is_null(), "{body}");
}

#[tokio::test]
async fn an_operator_lock_holds_until_an_operator_lifts_it() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let user = app.register().await;
    let email = user["user"]["email"].as_str().unwrap().to_owned();
    let id = user["user"]["id"].clone();

    let body = app.set_status(&admin, &id, "LOCKED").await;
    assert_eq!(body["data"]["setUserStatus"]["status"], "LOCKED", "{body}");
    let right = app.login(&email, PASSWORD).await;
    assert_eq!(code(&right), "MSAuthInvalidCredentials", "{right}");
    let me = app.me(user["accessToken"].as_str()).await;
    assert_eq!(code(&me), "MSAuthInvalidToken", "{me}");
}

#[tokio::test]
async fn set_user_status_needs_permission_and_a_known_user() {
    let app = spawn_app().await;
    let alice = app.register().await;
    let bob = app.register().await;
    let bob_id = bob["user"]["id"].clone();

    let denied = app
        .set_status(alice["accessToken"].as_str().unwrap(), &bob_id, "DISABLED")
        .await;
    assert_eq!(code(&denied), "MSCoreForbidden", "{denied}");
    assert_eq!(
        denied["errors"][0]["extensions"]["permission"],
        "user:update:*"
    );
    let anonymous = app
        .gql(SET_STATUS, json!({ "id": bob_id, "s": "DISABLED" }), None)
        .await;
    assert_eq!(code(&anonymous), "MSCoreUnauthenticated", "{anonymous}");

    let admin = app.token_with_roles(&alice, &["admin"]);
    let unknown = app
        .set_status(&admin, &json!("no-such-user"), "DISABLED")
        .await;
    assert_eq!(code(&unknown), "MSAuthUserNotFound", "{unknown}");
    let bad = app.set_status(&admin, &bob_id, "GONE").await;
    assert!(bad["errors"].is_array(), "{bad}");
    let own = app
        .set_status(&admin, &alice["user"]["id"], "DISABLED")
        .await;
    assert_eq!(code(&own), "MSCoreValidation", "{own}");
    assert!(app.me(Some(&admin)).await["data"]["me"].is_object());
}
