//! Access tokens: `me`, and every kind of forged or stale token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use service_core::auth::{SigningKey, TokenIssuer};

use crate::helpers::{claims, code, jwt_settings, spawn_app, KID};

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test]
async fn me_is_null_when_anonymous_and_the_caller_when_signed_in() {
    let app = spawn_app().await;
    let anonymous = app.me(None).await;
    assert!(anonymous["errors"].is_null(), "{anonymous}");
    assert!(anonymous["data"]["me"].is_null());

    let user = app.register().await;
    let me = app.me(user["accessToken"].as_str()).await;
    assert_eq!(me["data"]["me"]["id"], user["user"]["id"]);
    assert_eq!(me["data"]["me"]["roles"], json!(["user"]));
}

#[tokio::test]
async fn forged_expired_and_tampered_tokens_are_refused_without_data() {
    let app = spawn_app().await;
    let user = app.register().await;
    let genuine = user["accessToken"].as_str().unwrap().to_owned();
    let payload = claims(&genuine);

    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": KID})),
        b64(&payload)
    );
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(KID.to_owned());
    let hs256 = jsonwebtoken::encode(
        &hs_header,
        &payload,
        &EncodingKey::from_secret(app.public_pem.as_bytes()),
    )
    .unwrap();
    let impostor = TokenIssuer::new(SigningKey::generate(KID).unwrap(), jwt_settings());
    let mut subject_claims = payload.clone();
    subject_claims["roles"] = json!(["admin"]);
    let other_key = impostor
        .issue(&service_core::auth::TokenSubject {
            user_id: payload["sub"].as_str().unwrap().to_owned(),
            tenant_id: payload["tid"].as_str().unwrap().to_owned(),
            roles: vec!["admin".to_owned()],
            permissions: vec![],
            session_id: payload["sid"].as_str().unwrap().to_owned(),
        })
        .unwrap()
        .token;
    let mut parts: Vec<String> = genuine.split('.').map(str::to_owned).collect();
    parts[1] = b64(&subject_claims);
    let tampered = parts.join(".");

    // RS256 claimed in the header: refused on the pinned algorithm before
    // any key is looked at, whatever the signature holds.
    let rs256 = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "RS256", "typ": "JWT", "kid": KID})),
        b64(&payload),
        URL_SAFE_NO_PAD.encode([7u8; 256])
    );
    for (name, token) in [
        ("alg none", alg_none),
        ("RS256 header", rs256),
        ("HS256 keyed with the public key", hs256),
        ("another Ed25519 key", other_key),
        ("tampered payload", tampered),
        ("garbage", "not.a.token".to_owned()),
    ] {
        let response = app
            .post(json!({ "query": "{ me { id } }" }), Some(&token))
            .await;
        assert_eq!(response.status(), 401, "{name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(code(&body), "MSAuthInvalidToken", "{name}: {body}");
        assert!(body["data"].is_null(), "{name}: {body}");
    }

    let subject = service_core::auth::TokenSubject {
        user_id: payload["sub"].as_str().unwrap().to_owned(),
        tenant_id: payload["tid"].as_str().unwrap().to_owned(),
        roles: vec!["user".to_owned()],
        permissions: vec![],
        session_id: payload["sid"].as_str().unwrap().to_owned(),
    };
    let expired = app
        .issuer
        .issue_at(&subject, Utc::now() - chrono::Duration::hours(2))
        .unwrap()
        .token;
    let body: Value = app
        .post(json!({ "query": "{ me { id } }" }), Some(&expired))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(code(&body), "MSAuthTokenExpired", "{body}");
    assert!(body["data"].is_null());
}
