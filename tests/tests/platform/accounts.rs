//! Registration, sign-in, `me`, refresh-token rotation and replay, and the
//! tokens the gateway must refuse.

use e2e::{first_code, text, Mode, Platform};
use reqwest::StatusCode;
use serde_json::json;

async fn accounts(mode: Mode) -> anyhow::Result<()> {
    let platform = Platform::start(mode).await?;

    // Register, then `me` with the token it handed out.
    let alice = platform.register("alice").await?;
    let me = platform
        .data(
            Some(&alice.access_token),
            "{ me { id email username roles status } }",
            json!({}),
        )
        .await?;
    assert_eq!(me["me"]["id"], json!(alice.id));
    assert_eq!(me["me"]["email"], json!(alice.email));
    assert_eq!(me["me"]["username"], json!("alice"));
    assert_eq!(me["me"]["roles"], json!(["user"]));
    assert_eq!(me["me"]["status"], json!("ACTIVE"));
    let anonymous = platform.data(None, "{ me { id } }", json!({})).await?;
    assert_eq!(anonymous, json!({ "me": null }));

    // The registration rules.
    let register = "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }";
    let taken = platform
        .gql(
            None,
            register,
            json!({ "input": { "email": alice.email, "password": "Another-password-1" } }),
        )
        .await?;
    assert_eq!(
        first_code(&taken).as_deref(),
        Some("MSAuthEmailTaken"),
        "{taken}"
    );
    let weak = platform
        .gql(
            None,
            register,
            json!({ "input": { "email": "weak@example.com", "password": "short" } }),
        )
        .await?;
    assert_eq!(
        first_code(&weak).as_deref(),
        Some("MSAuthWeakPassword"),
        "{weak}"
    );

    // Sign in; a wrong password and an unknown email get the same answer.
    let login = platform.login(&alice.email, &alice.password).await?;
    assert!(login["errors"].is_null(), "{login}");
    assert_eq!(login["data"]["login"]["user"]["id"], json!(alice.id));
    let wrong = platform.login(&alice.email, "Not-the-password-1").await?;
    assert_eq!(
        first_code(&wrong).as_deref(),
        Some("MSAuthInvalidCredentials"),
        "{wrong}"
    );
    let unknown = platform
        .login("nobody@example.com", "Not-the-password-1")
        .await?;
    assert_eq!(
        first_code(&unknown).as_deref(),
        Some("MSAuthInvalidCredentials")
    );
    assert_eq!(
        wrong["errors"][0]["message"],
        unknown["errors"][0]["message"]
    );

    // Five failures per email in the window, then the email is throttled,
    // even with the right password.
    let mallory = platform.register("mallory").await?;
    for _ in 0..5 {
        let failed = platform.login(&mallory.email, "Not-the-password-1").await?;
        assert_eq!(
            first_code(&failed).as_deref(),
            Some("MSAuthInvalidCredentials"),
            "{failed}"
        );
    }
    let throttled = platform.login(&mallory.email, &mallory.password).await?;
    assert_eq!(
        first_code(&throttled).as_deref(),
        Some("MSAuthTooManyAttempts"),
        "{throttled}"
    );

    // Rotation: every refresh spends its token and hands out the next.
    let refresh = "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken refreshToken user { id } } }";
    let first = text(&login["data"]["login"]["refreshToken"])?;
    let session_access = text(&login["data"]["login"]["accessToken"])?;
    let second = platform.data(None, refresh, json!({ "t": first })).await?;
    assert_eq!(second["refreshToken"]["user"]["id"], json!(alice.id));
    let second_token = text(&second["refreshToken"]["refreshToken"])?;
    assert_ne!(second_token, first);
    let third = platform
        .data(None, refresh, json!({ "t": second_token }))
        .await?;
    let third_token = text(&third["refreshToken"]["refreshToken"])?;
    let rotated_access = text(&third["refreshToken"]["accessToken"])?;
    let me = platform
        .data(Some(&rotated_access), "{ me { id } }", json!({}))
        .await?;
    assert_eq!(me["me"]["id"], json!(alice.id));

    // Replaying an older spent token revokes the whole session family.
    let replay = platform.gql(None, refresh, json!({ "t": first })).await?;
    assert_eq!(
        first_code(&replay).as_deref(),
        Some("MSAuthRefreshTokenReused"),
        "{replay}"
    );
    let after = platform
        .gql(None, refresh, json!({ "t": third_token }))
        .await?;
    assert!(
        after["data"].is_null() || after["data"]["refreshToken"].is_null(),
        "{after}"
    );
    assert!(first_code(&after).is_some(), "{after}");
    for token in [&session_access, &rotated_access] {
        let revoked = platform
            .gql(Some(token), "{ me { id } }", json!({}))
            .await?;
        assert_eq!(
            first_code(&revoked).as_deref(),
            Some("MSAuthInvalidToken"),
            "{revoked}"
        );
    }
    // The registration's own session is another family: still alive.
    let me = platform
        .data(Some(&alice.access_token), "{ me { id } }", json!({}))
        .await?;
    assert_eq!(me["me"]["id"], json!(alice.id));

    // Tokens the gateway refuses before any subgraph sees them.
    let refused = [
        ("not-a-jwt".to_owned(), "MSAuthInvalidToken"),
        (platform.forged_token(&alice.id)?, "MSAuthInvalidToken"),
        (platform.unsigned_token(&alice.id), "MSAuthInvalidToken"),
        (platform.expired_token(&alice.id)?, "MSAuthTokenExpired"),
    ];
    for (token, code) in refused {
        let answer = platform
            .post(Some(&token), &json!({ "query": "{ me { id } }" }))
            .await?;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{token}: {:?}",
            answer.body
        );
        assert_eq!(
            first_code(&answer.body).as_deref(),
            Some(code),
            "{:?}",
            answer.body
        );
        assert!(answer.body["data"].is_null(), "{:?}", answer.body);
    }

    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_sessions_and_tokens_on_embedded_defaults() -> anyhow::Result<()> {
    accounts(Mode::Embedded).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_sessions_and_tokens_on_redis_and_mongodb() -> anyhow::Result<()> {
    accounts(Mode::RedisMongo).await
}
