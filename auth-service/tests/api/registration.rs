//! register and login.

use serde_json::{json, Value};
use service_core::events::{DomainEvent as _, UserRegistered};

use crate::helpers::{
    claims, code, on_both_stores, spawn_app, spawn_on, spawn_with, unique_email,
    with_and_without_redis, Backend, Options, PASSWORD,
};

async fn register_then_login_returns_tokens_and_the_user(backend: Backend) {
    let app = spawn_on(backend).await;
    let email = unique_email();

    let body = app
        .gql(
            "mutation($input: RegisterInput!) { register(input: $input) { accessToken refreshToken expiresIn user { id email username roles status createdAt } } }",
            json!({ "input": { "email": email.to_uppercase(), "password": PASSWORD, "username": "alice_1" } }),
            None,
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let registered = &body["data"]["register"];
    let user = &registered["user"];
    assert_eq!(user["email"], email.as_str(), "stored lower-case");
    assert_eq!(user["username"], "alice_1");
    assert_eq!(user["roles"], json!(["user"]));
    assert_eq!(user["status"], "ACTIVE");
    assert_eq!(registered["expiresIn"], 900);
    let access = claims(registered["accessToken"].as_str().unwrap());
    assert_eq!(access["sub"], user["id"]);
    assert_eq!(access["roles"], json!(["user"]));
    assert!(access["permissions"]
        .as_array()
        .unwrap()
        .contains(&json!("user:read:own")));
    for claim in ["tid", "sid", "iss", "aud", "exp", "iat", "jti"] {
        assert!(!access[claim].is_null(), "{claim} in {access}");
    }

    let body = app.login(&email, PASSWORD).await;
    assert!(body["errors"].is_null(), "{body}");
    let login = &body["data"]["login"];
    assert_eq!(login["user"]["id"], user["id"]);
    assert_ne!(login["refreshToken"], registered["refreshToken"]);
    let me = app.me(login["accessToken"].as_str()).await;
    assert_eq!(me["data"]["me"]["email"], email.as_str());
}

#[tokio::test]
async fn a_taken_email_is_refused_whatever_its_case() {
    let app = spawn_app().await;
    let email = unique_email();
    let first = app.register_with(&email, PASSWORD).await;
    assert!(first["errors"].is_null(), "{first}");

    let again = app
        .register_with(&format!("  {}", email.to_uppercase()), PASSWORD)
        .await;
    assert_eq!(code(&again), "MSAuthEmailTaken");
    assert!(again["data"].is_null(), "{again}");
}

#[tokio::test]
async fn unknown_email_and_wrong_password_get_identical_answers() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register_with(&email, PASSWORD).await;

    let wrong_password = app.login(&email, "not the right password").await;
    let unknown_email = app.login(&unique_email(), PASSWORD).await;
    assert_eq!(code(&wrong_password), "MSAuthInvalidCredentials");
    assert_eq!(wrong_password, unknown_email);
}

#[tokio::test]
async fn malformed_and_injection_shaped_emails_are_validation_errors_and_store_nothing() {
    let app = spawn_app().await;
    let admin = app.register().await;
    let admin_token = app.token_with_roles(&admin, &["admin"]);

    for email in [
        r#"{"$gt": ""}"#,
        "' OR 1=1 --",
        "admin'--@example.com",
        "x@example.com'; DROP TABLE users; --",
        "not-an-email",
        &format!("{}@example.com", "a".repeat(250)),
    ] {
        let body = app.register_with(email, PASSWORD).await;
        assert_eq!(code(&body), "MSCoreValidation", "{email}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], "input.email");
        let login = app.login(email, PASSWORD).await;
        assert_eq!(code(&login), "MSCoreValidation", "{email}: {login}");
    }
    // An operator object where a string belongs never reaches a resolver.
    let body = app
        .gql(
            "mutation($input: LoginInput!) { login(input: $input) { accessToken } }",
            json!({ "input": { "email": { "$gt": "" }, "password": PASSWORD } }),
            None,
        )
        .await;
    assert_eq!(code(&body), "MSCoreValidation", "{body}");

    let users = app
        .gql("{ users { totalCount } }", json!({}), Some(&admin_token))
        .await;
    assert_eq!(users["data"]["users"]["totalCount"], 1, "{users}");
}

#[tokio::test]
async fn the_schema_never_exposes_the_password_hash_and_keeps_error_codes() {
    let app = spawn_app().await;
    let body: Value = app
        .gql(
            r#"{ __type(name: "User") { fields { name } } _errorCodes }"#,
            json!({}),
            None,
        )
        .await;
    let fields: Vec<&str> = body["data"]["__type"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["id", "email", "username", "roles", "status", "createdAt"]
    );
    let codes = body["data"]["_errorCodes"].as_array().unwrap();
    assert!(codes.contains(&json!("MSAuthEmailTaken")));
    assert!(codes.contains(&json!("MSCoreValidation")));
}

async fn five_failed_logins_block_the_email_for_a_while(redis: bool) {
    let mut options = Options::on(Backend::Embedded);
    options.redis = redis;
    let app = spawn_with(options).await;
    let email = unique_email();
    app.register_with(&email, PASSWORD).await;

    for _ in 0..5 {
        let body = app.login(&email, "not the right password").await;
        assert_eq!(code(&body), "MSAuthInvalidCredentials", "{body}");
    }
    let hashes = (app.app_hashes)();
    for password in ["not the right password", PASSWORD] {
        let body = app.login(&email, password).await;
        assert_eq!(code(&body), "MSAuthTooManyAttempts", "{body}");
        let retry = body["errors"][0]["extensions"]["retryAfterSeconds"]
            .as_u64()
            .unwrap();
        assert!((1..=900).contains(&retry), "{body}");
    }
    assert_eq!(
        (app.app_hashes)(),
        hashes,
        "blocked attempts cost no hashing"
    );

    // Unknown emails are throttled the same way, and keys are independent.
    let stranger = unique_email();
    for _ in 0..5 {
        app.login(&stranger, PASSWORD).await;
    }
    assert_eq!(
        code(&app.login(&stranger, PASSWORD).await),
        "MSAuthTooManyAttempts"
    );
    let other = app.register().await;
    let body = app
        .login(other["user"]["email"].as_str().unwrap(), PASSWORD)
        .await;
    assert!(body["errors"].is_null(), "{body}");
}

#[tokio::test]
async fn registration_publishes_user_registered_through_the_outbox() {
    let app = spawn_app().await;
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
    app.bus
        .on(
            "user.registered",
            "test",
            service_core::events::handler(move |event| {
                let sender = sender.clone();
                async move {
                    let _ = sender.send(event);
                    Ok(())
                }
            }),
        )
        .await
        .unwrap();

    let user = app.register().await;
    let event = tokio::time::timeout(std::time::Duration::from_secs(10), received.recv())
        .await
        .expect("event within 10 s")
        .unwrap();
    assert_eq!(
        event.user_id.as_ref(),
        user["user"]["id"].as_str().map(str::to_owned).as_ref()
    );
    assert_eq!(event.data["email"], user["user"]["email"]);
    let payload = UserRegistered::from_event(&event).expect("the catalog's UserRegistered");
    assert_eq!(payload.user_id, user["user"]["id"].as_str().unwrap());
    assert_eq!(payload.username, None);
    assert!(!event.data.to_string().contains(PASSWORD));

    // A refused registration announces nothing.
    app.register_with(user["user"]["email"].as_str().unwrap(), PASSWORD)
        .await;
    let nothing =
        tokio::time::timeout(std::time::Duration::from_millis(300), received.recv()).await;
    assert!(nothing.is_err(), "{nothing:?}");
}

on_both_stores!(register_then_login_returns_tokens_and_the_user);
with_and_without_redis!(five_failed_logins_block_the_email_for_a_while);
