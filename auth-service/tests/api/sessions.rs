//! Refresh-token rotation, replay detection and signing out.

use serde_json::{json, Value};

use crate::helpers::{
    code, on_both_stores, spawn_app, spawn_on, spawn_with, Backend, Options, PASSWORD,
};

async fn refresh_rotates_and_a_replay_revokes_the_family(backend: Backend) {
    let app = spawn_on(backend).await;
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

    let body = app.logout(refresh).await;
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

async fn concurrent_refreshes_get_one_successor_and_the_family_lives_on(backend: Backend) {
    let app = spawn_on(backend).await;
    let user = app.register().await;
    let first = user["refreshToken"].as_str().unwrap().to_owned();

    // Two tabs refreshing with the same token at the same moment.
    let (one, two) = tokio::join!(app.refresh(&first), app.refresh(&first));
    assert!(one["errors"].is_null(), "{one}");
    assert!(two["errors"].is_null(), "{two}");
    let successor = one["data"]["refreshToken"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        two["data"]["refreshToken"]["refreshToken"], successor,
        "both get the same successor"
    );
    // A third, a moment later, still within the grace window.
    let late = app.refresh(&first).await;
    assert_eq!(
        late["data"]["refreshToken"]["refreshToken"], successor,
        "{late}"
    );

    // Using that successor is not a replay: the family lives on.
    let next = app.refresh(&successor).await;
    assert!(next["errors"].is_null(), "{next}");
    let newest = next["data"]["refreshToken"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let access = next["data"]["refreshToken"]["accessToken"].as_str();
    assert!(app.me(access).await["data"]["me"].is_object());
    let body = app.refresh(&newest).await;
    assert!(body["errors"].is_null(), "{body}");
}

#[tokio::test]
async fn a_replay_after_the_grace_window_revokes_the_family() {
    let app = spawn_with(Options::on(Backend::Embedded).var("AUTH_REFRESH_GRACE_SECONDS", 1)).await;
    let user = app.register().await;
    let first = user["refreshToken"].as_str().unwrap().to_owned();
    let rotated = app.refresh(&first).await;
    assert!(rotated["errors"].is_null(), "{rotated}");
    let successor = rotated["data"]["refreshToken"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let access = rotated["data"]["refreshToken"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();

    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let replay = app.refresh(&first).await;
    assert_eq!(code(&replay), "MSAuthRefreshTokenReused", "{replay}");
    for token in [&successor, &first] {
        let later = app.refresh(token).await;
        assert_eq!(code(&later), "MSAuthInvalidToken", "{later}");
    }
    let me = app.me(Some(&access)).await;
    assert_eq!(code(&me), "MSAuthInvalidToken", "{me}");
}

#[tokio::test]
async fn change_password_refuses_the_other_sessions_access_tokens() {
    let app = spawn_app().await;
    let user = app.register().await;
    let email = user["user"]["email"].as_str().unwrap().to_owned();
    let other = app.login(&email, PASSWORD).await["data"]["login"].clone();
    // Warm the session cache for the other session first.
    assert!(app.me(other["accessToken"].as_str()).await["data"]["me"].is_object());

    let body = app
        .gql(
            "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }",
            json!({ "c": PASSWORD, "n": "a brand new passphrase" }),
            user["accessToken"].as_str(),
        )
        .await;
    assert_eq!(body["data"]["changePassword"], true, "{body}");
    let me = app.me(other["accessToken"].as_str()).await;
    assert_eq!(code(&me), "MSAuthInvalidToken", "{me}");
}

/// Two instances of one deployment (same MongoDB database, same Redis): a
/// logout on one is seen at once by the other, whose session cache had
/// the session as live.
#[tokio::test]
async fn a_revocation_reaches_the_other_instance_through_the_cache() {
    let first = spawn_with(Options::on(Backend::Mongo).with_redis()).await;
    let mut options = Options::on(Backend::Mongo).with_redis();
    options.join = Some(first.deployment.clone());
    let second = spawn_with(options).await;

    let user = first.register().await;
    let access = user["accessToken"].as_str();
    for app in [&first, &second] {
        let me = app.me(access).await;
        assert_eq!(me["data"]["me"]["id"], user["user"]["id"], "{me}");
    }
    let body = first.logout(user["refreshToken"].as_str().unwrap()).await;
    assert_eq!(body["data"]["logout"], true, "{body}");

    // Invalidation messages travel through Redis pub/sub: give it a moment.
    let mut answer = Value::Null;
    for _ in 0..50 {
        answer = second.me(access).await;
        if answer["errors"].is_array() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(code(&answer), "MSAuthInvalidToken", "{answer}");
}

/// The next `auth.session.revoked` payload the app publishes.
async fn next_revocation(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<service_core::events::Event>,
) -> Value {
    let event = tokio::time::timeout(std::time::Duration::from_secs(30), events.recv())
        .await
        .expect("no revocation was announced")
        .expect("the bus closed");
    event.data
}

/// Every ended session is announced on the bus (staged in the outbox with
/// the change), so that the other services and the gateway refuse its
/// access tokens: one event per session, and a user-wide one when an
/// operator disables the account.
async fn ended_sessions_are_announced(backend: Backend) {
    let app = spawn_on(backend).await;
    let mut revoked = app.events("auth.session.revoked").await;
    let user = app.register().await;
    let user_id = user["user"]["id"].as_str().unwrap().to_owned();
    let refresh = user["refreshToken"].as_str().unwrap();
    let session_id = refresh.split('.').next().unwrap();

    let body = app.logout(refresh).await;
    assert_eq!(body["data"]["logout"], true, "{body}");
    let logout = next_revocation(&mut revoked).await;
    assert_eq!(logout["userId"], user_id.as_str());
    assert_eq!(logout["sessionId"], session_id);
    let at = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(logout[field].as_str().unwrap()).unwrap()
    };
    // Remembered for as long as the longest access token (15 minutes).
    assert_eq!((at("tokensExpireBy") - at("revokedAt")).num_seconds(), 900);

    let email = user["user"]["email"].as_str().unwrap().to_owned();
    let other = app.login(&email, PASSWORD).await["data"]["login"].clone();
    let other_session = other["refreshToken"]
        .as_str()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    let admin = app.admin().await;
    let body = app
        .gql(
            "mutation($id: ID!) { setUserStatus(userId: $id, status: DISABLED) { status } }",
            json!({ "id": user_id }),
            Some(&admin),
        )
        .await;
    assert_eq!(
        body["data"]["setUserStatus"]["status"], "DISABLED",
        "{body}"
    );
    let mut sessions = vec![
        next_revocation(&mut revoked).await["sessionId"].clone(),
        next_revocation(&mut revoked).await["sessionId"].clone(),
    ];
    sessions.sort_by_key(|s| s.is_string());
    assert_eq!(sessions, [Value::Null, json!(other_session)]);
}

on_both_stores!(
    refresh_rotates_and_a_replay_revokes_the_family,
    concurrent_refreshes_get_one_successor_and_the_family_lives_on,
    ended_sessions_are_announced,
);

#[tokio::test]
async fn sessions_lists_the_callers_live_devices() {
    let app = spawn_app().await;
    let user = app.register().await;
    let email = user["user"]["email"].as_str().unwrap().to_owned();
    let other = app.login(&email, PASSWORD).await["data"]["login"].clone();
    let third = app.login(&email, PASSWORD).await["data"]["login"].clone();
    let stranger = app.register().await;
    let query = "{ sessions { id createdAt lastRefreshedAt expiresAt current } }";

    let logout = app.logout(third["refreshToken"].as_str().unwrap()).await;
    assert_eq!(logout["data"]["logout"], true, "{logout}");

    let body = app
        .gql(query, json!({}), user["accessToken"].as_str())
        .await;
    let sessions = body["data"]["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"));
    let sid = |payload: &Value| {
        crate::helpers::claims(payload["accessToken"].as_str().unwrap())["sid"].clone()
    };
    let ids: Vec<&Value> = sessions.iter().map(|s| &s["id"]).collect();
    assert_eq!(sessions.len(), 2, "the logged-out one is gone: {body}");
    assert!(
        ids.contains(&&sid(&user)) && ids.contains(&&sid(&other)),
        "{body}"
    );
    assert!(!ids.contains(&&sid(&stranger)), "only the caller's: {body}");
    for session in sessions {
        assert_eq!(session["current"], session["id"] == sid(&user), "{body}");
    }

    let anonymous = app.gql(query, json!({}), None).await;
    assert_eq!(code(&anonymous), "MSCoreUnauthenticated", "{anonymous}");
}
