//! The password policy, through register and changePassword.

use serde_json::json;

use crate::helpers::{code, spawn_app, unique_email};

#[tokio::test]
async fn short_and_common_passwords_are_weak() {
    let app = spawn_app().await;
    for password in ["short", "Password123", "QWERTYUIOP", "iloveyou123"] {
        let body = app.register_with(&unique_email(), password).await;
        assert_eq!(code(&body), "MSAuthWeakPassword", "{password}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], "input.password");
        assert!(!body.to_string().contains(password), "{body}");
    }
    assert_eq!((app.app_hashes)(), 0, "refused passwords are never hashed");
}

#[tokio::test]
async fn a_megabyte_password_is_refused_before_hashing() {
    let app = spawn_app().await;
    let huge = "x".repeat(1024 * 1000);
    let body = app.register_with(&unique_email(), &huge).await;
    assert_eq!(
        code(&body),
        "MSCoreValidation",
        "over-long is an input limit"
    );
    assert_eq!(body["errors"][0]["extensions"]["field"], "input.password");

    let body = app.login(&unique_email(), &huge).await;
    assert_eq!(code(&body), "MSAuthInvalidCredentials");
    assert_eq!((app.app_hashes)(), 0, "argon2 never ran");
}

#[tokio::test]
async fn change_password_needs_the_current_one_and_a_strong_new_one() {
    let app = spawn_app().await;
    let user = app.register().await;
    let token = user["accessToken"].as_str().unwrap();
    let change = |current: &'static str, new: &'static str| {
        app.gql(
            "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }",
            json!({ "c": current, "n": new }),
            Some(token),
        )
    };
    let weak = change(crate::helpers::PASSWORD, "password123").await;
    assert_eq!(code(&weak), "MSAuthWeakPassword");
    let wrong = change("not my password at all", "a brand new passphrase").await;
    assert_eq!(code(&wrong), "MSAuthInvalidCredentials");

    let anonymous = app
        .gql(
            "mutation { changePassword(currentPassword: \"a\", newPassword: \"b\") }",
            json!({}),
            None,
        )
        .await;
    assert_eq!(code(&anonymous), "MSCoreUnauthenticated");
}
