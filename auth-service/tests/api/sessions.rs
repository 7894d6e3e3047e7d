//! Refresh-token rotation, replay detection and signing out.

use serde_json::json;

use crate::helpers::{code, spawn_app, PASSWORD};

#[tokio::test]
async fn refresh_rotates_and_a_replay_revokes_the_family() {
    let app = spawn_app().await;
    let user = app.register().await;
    let first = user["refreshToken"].as_str().unwrap().to_owned();

    let body = app.refresh(&first).await;
    assert!(body["errors"].is_null(), "{body}");
    let rotated = &body["data"]["refreshToken"];
    let second = rotated["refreshToken"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(rotated["user"]["id"], user["user"]["id"]);
    let access = rotated["accessToken"].as_str().unwrap().to_owned();
    assert!(app.me(Some(&access)).await["data"]["me"].is_object());

    let body = app.refresh(&second).await;
    assert!(body["errors"].is_null(), "{body}");
    let third = body["data"]["refreshToken"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();

    // `first` was spent two rotations ago, outside any grace window.
    let replay = app.refresh(&first).await;
    assert_eq!(code(&replay), "MSAuthRefreshTokenReused", "{replay}");
    assert!(replay["data"].is_null());

    let newest = app.refresh(&third).await;
    assert_eq!(code(&newest), "MSAuthInvalidToken", "{newest}");
    let me = app.me(Some(&access)).await;
    assert_eq!(code(&me), "MSAuthInvalidToken", "revoked session: {me}");
}

#[tokio::test]
async fn garbage_refresh_tokens_are_invalid() {
    let app = spawn_app().await;
    for token in ["", "nope", "0190c0de-0000-7000-8000-000000000001.AAAA"] {
        let body = app.refresh(token).await;
        assert_eq!(code(&body), "MSAuthInvalidToken", "{token}: {body}");
    }
}

#[tokio::test]
async fn logout_ends_one_session() {
    let app = spawn_app().await;
    let user = app.register().await;
    let email = user["user"]["email"].as_str().unwrap().to_owned();
    let other = app.login(&email, PASSWORD).await["data"]["login"].clone();
    let refresh = user["refreshToken"].as_str().unwrap();

    let body = app
        .gql(
            "mutation($t: String!) { logout(refreshToken: $t) }",
            json!({ "t": refresh }),
            None,
        )
        .await;
    assert_eq!(body["data"]["logout"], true, "{body}");

    assert_eq!(code(&app.refresh(refresh).await), "MSAuthInvalidToken");
    assert_eq!(
        code(&app.me(user["accessToken"].as_str()).await),
        "MSAuthInvalidToken"
    );
    let still = app.me(other["accessToken"].as_str()).await;
    assert_eq!(still["data"]["me"]["email"], email.as_str(), "{still}");
}

#[tokio::test]
async fn logout_all_ends_every_session_of_the_caller() {
    let app = spawn_app().await;
    let user = app.register().await;
    let email = user["user"]["email"].as_str().unwrap().to_owned();
    let other = app.login(&email, PASSWORD).await["data"]["login"].clone();

    let anonymous = app.gql("mutation { logoutAll }", json!({}), None).await;
    assert_eq!(code(&anonymous), "MSCoreUnauthenticated");

    let body = app
        .gql(
            "mutation { logoutAll }",
            json!({}),
            user["accessToken"].as_str(),
        )
        .await;
    assert_eq!(body["data"]["logoutAll"], true, "{body}");
    for session in [&user, &other] {
        let refresh = session["refreshToken"].as_str().unwrap();
        assert_eq!(code(&app.refresh(refresh).await), "MSAuthInvalidToken");
        assert_eq!(
            code(&app.me(session["accessToken"].as_str()).await),
            "MSAuthInvalidToken"
        );
    }
}

#[tokio::test]
async fn change_password_revokes_the_other_sessions() {
    let app = spawn_app().await;
    let user = app.register().await;
    let email = user["user"]["email"].as_str().unwrap().to_owned();
    let other = app.login(&email, PASSWORD).await["data"]["login"].clone();
    let new_password = "a brand new passphrase";

    let body = app
        .gql(
            "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }",
            json!({ "c": PASSWORD, "n": new_password }),
            user["accessToken"].as_str(),
        )
        .await;
    assert_eq!(body["data"]["changePassword"], true, "{body}");

    let other_refresh = other["refreshToken"].as_str().unwrap();
    assert_eq!(
        code(&app.refresh(other_refresh).await),
        "MSAuthInvalidToken"
    );
    let mine = app.me(user["accessToken"].as_str()).await;
    assert_eq!(mine["data"]["me"]["email"], email.as_str(), "{mine}");

    assert_eq!(
        code(&app.login(&email, PASSWORD).await),
        "MSAuthInvalidCredentials"
    );
    let body = app.login(&email, new_password).await;
    assert!(body["errors"].is_null(), "{body}");
}

#[tokio::test]
async fn a_token_spent_a_moment_ago_still_rotates_within_the_grace_window() {
    let app = spawn_app().await;
    let user = app.register().await;
    let first = user["refreshToken"].as_str().unwrap().to_owned();

    let winner = app.refresh(&first).await;
    assert!(winner["errors"].is_null(), "{winner}");
    // A second tab refreshing with the same token at the same moment.
    let loser = app.refresh(&first).await;
    assert!(loser["errors"].is_null(), "{loser}");
    let latest = loser["data"]["refreshToken"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = app.refresh(&latest).await;
    assert!(body["errors"].is_null(), "{body}");
}
