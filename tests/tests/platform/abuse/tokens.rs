//! Forged, altered and stale access tokens (`API.md`, "Transport" and
//! `MSAuthInvalidToken`/`MSAuthTokenExpired`): the gateway refuses each
//! with 401 before any subgraph runs it, so the mutation it carries changes
//! nothing; cookies are never credentials; and a refresh token raced
//! against itself is spent once.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use std::time::Duration;

use e2e::{eventually, first_code, text, Mode, Platform};
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::refused;

/// A mutation any signed-in user may run, so a token that got through
/// would leave a trace.
const OPEN_WALLET: &str = "mutation { createWallet(currency: \"EUR\") { id } }";

/// The claims of a compact JWT.
fn claims_of(token: &str) -> anyhow::Result<Value> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("not a JWT: {token}"))?;
    Ok(serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload)?)?)
}

/// `token` with its claims replaced and its header and signature kept.
fn with_claims(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!(
        "{}.{payload}.{}",
        parts.first().copied().unwrap_or_default(),
        parts.get(2).copied().unwrap_or_default()
    )
}

/// `claims` with `changes` merged over them (a `null` removes a claim).
fn altered(claims: &Value, changes: Value) -> Value {
    let mut claims = claims.clone();
    if let (Some(target), Value::Object(changes)) = (claims.as_object_mut(), changes) {
        for (name, value) in changes {
            if value.is_null() {
                target.remove(&name);
            } else {
                target.insert(name, value);
            }
        }
    }
    claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_stale_tokens_are_refused_and_change_nothing() -> anyhow::Result<()> {
    let platform = Platform::start(Mode::Embedded).await?;
    let alice = platform.register("alice").await?;
    let bob = platform.register("bob").await?;
    let real = claims_of(&alice.access_token)?;
    let now = chrono::Utc::now().timestamp();
    let kid = platform.kid();

    // Control: alice's own claims re-signed with the platform's key under
    // its kid are accepted, so each refusal below is about its one flaw.
    let resigned = platform.signed_token(kid, &real)?;
    let me = platform
        .data(Some(&resigned), "{ me { id } }", json!({}))
        .await?;
    assert_eq!(me["me"]["id"], json!(alice.id));

    let admin_claims = altered(
        &real,
        json!({ "roles": ["user", "admin"], "permissions": ["*:*:*"] }),
    );
    let invalid = [
        ("alg none", platform.unsigned_token(&alice.id)),
        (
            "HS256 keyed with the public key",
            platform.hmac_token(&real)?,
        ),
        ("another Ed25519 key", platform.forged_token(&alice.id)?),
        (
            "admin role added, signature kept",
            with_claims(&alice.access_token, &admin_claims),
        ),
        (
            "sub changed to bob, signature kept",
            with_claims(
                &alice.access_token,
                &altered(&real, json!({ "sub": bob.id })),
            ),
        ),
        (
            "signature removed",
            alice
                .access_token
                .rsplit_once('.')
                .map(|(signed, _)| format!("{signed}."))
                .unwrap_or_default(),
        ),
        (
            "kid path traversal",
            platform.signed_token("../../etc/passwd", &real)?,
        ),
        ("kid SQL", platform.signed_token("e2e' OR '1'='1", &real)?),
        ("kid unknown", platform.signed_token("no-such-key", &real)?),
        ("kid huge", platform.signed_token(&"k".repeat(4096), &real)?),
        (
            "wrong issuer",
            platform.signed_token(kid, &altered(&real, json!({ "iss": "someone-else" })))?,
        ),
        (
            "wrong audience",
            platform.signed_token(kid, &altered(&real, json!({ "aud": "another-api" })))?,
        ),
        (
            "not valid before an hour from now",
            platform.signed_token(kid, &altered(&real, json!({ "nbf": now + 3600 })))?,
        ),
        (
            "no expiry",
            platform.signed_token(kid, &altered(&real, json!({ "exp": null })))?,
        ),
        ("not a JWT", "a.b.c".to_owned()),
    ];
    let expired = [
        ("issued two hours ago", platform.expired_token(&alice.id)?),
        (
            "alice's claims, expired an hour ago",
            platform.signed_token(
                kid,
                &altered(
                    &real,
                    json!({ "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600 }),
                ),
            )?,
        ),
    ];
    let cases = invalid
        .iter()
        .map(|(label, token)| (label, token, "MSAuthInvalidToken"))
        .chain(
            expired
                .iter()
                .map(|(label, token)| (label, token, "MSAuthTokenExpired")),
        );
    for (label, token, code) in cases {
        for query in ["{ me { id roles } }", OPEN_WALLET] {
            let error = refused(
                &platform,
                Some(token),
                &json!({ "query": query }),
                StatusCode::UNAUTHORIZED,
                code,
            )
            .await
            .map_err(|err| anyhow::anyhow!("{label}: {err}"))?;
            assert!(error["message"].is_string(), "{label}: {error}");
        }
    }

    // A token carried in a cookie is not a credential: the caller is
    // anonymous and may not open a wallet.
    for cookie in [
        format!("access_token={}", alice.access_token),
        format!("Authorization=Bearer {}", alice.access_token),
    ] {
        let answer = platform
            .client()
            .post(platform.graphql_url())
            .header("cookie", cookie)
            .json(&json!({ "query": OPEN_WALLET }))
            .send()
            .await?;
        assert_eq!(answer.status(), StatusCode::OK);
        let body: Value = answer.json().await?;
        assert_eq!(
            first_code(&body).as_deref(),
            Some("MSCoreUnauthenticated"),
            "{body}"
        );
    }

    // Nothing above opened a wallet for anyone.
    for session in [&alice, &bob] {
        let wallets = platform
            .data(
                Some(&session.access_token),
                "{ myWallets { id } }",
                json!({}),
            )
            .await?;
        assert_eq!(wallets["myWallets"], json!([]), "{}", session.email);
    }

    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_raced_against_itself_rotates_once_and_a_later_replay_revokes_the_family(
) -> anyhow::Result<()> {
    let platform = Platform::start(Mode::Embedded).await?;
    let alice = platform.register("alice").await?;
    let refresh =
        "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken refreshToken } }";

    // Eight concurrent refreshes of one token rotate it once: the losers,
    // inside the grace window, receive the very same successor.
    let attempts = futures::future::join_all(
        (0..8).map(|_| platform.gql(None, refresh, json!({ "t": alice.refresh_token }))),
    )
    .await;
    let mut successors = Vec::new();
    let mut access_tokens = Vec::new();
    for attempt in attempts {
        let body = attempt?;
        assert_eq!(first_code(&body), None, "{body}");
        successors.push(text(&body["data"]["refreshToken"]["refreshToken"])?);
        access_tokens.push(text(&body["data"]["refreshToken"]["accessToken"])?);
    }
    successors.dedup();
    assert_eq!(
        successors.len(),
        1,
        "one token rotated into several: {successors:?}"
    );
    assert_ne!(successors[0], alice.refresh_token);

    // The successor rotates once more; the original, replayed now, is a
    // reuse and revokes the whole family.
    let next = platform
        .data(None, refresh, json!({ "t": successors[0] }))
        .await?;
    let latest = text(&next["refreshToken"]["refreshToken"])?;
    access_tokens.push(text(&next["refreshToken"]["accessToken"])?);
    let replay = platform
        .gql(None, refresh, json!({ "t": alice.refresh_token }))
        .await?;
    assert_eq!(
        first_code(&replay).as_deref(),
        Some("MSAuthRefreshTokenReused"),
        "{replay}"
    );
    assert!(replay["data"].is_null(), "{replay}");
    let after = platform.gql(None, refresh, json!({ "t": latest })).await?;
    assert!(
        first_code(&after).is_some(),
        "the revoked family still rotates: {after}"
    );
    assert!(after["data"].is_null(), "{after}");
    // The revocation reaches the gateway and the subgraphs as an event:
    // once it has, every access token of the family is refused, and a
    // mutation carried by one changes nothing.
    for token in &access_tokens {
        eventually(Duration::from_secs(30), || async {
            let answer = platform
                .post(Some(token), &json!({ "query": "{ me { id } }" }))
                .await?;
            Ok((answer.status == StatusCode::UNAUTHORIZED).then_some(answer.body))
        })
        .await?;
        refused(
            &platform,
            Some(token),
            &json!({ "query": OPEN_WALLET }),
            StatusCode::UNAUTHORIZED,
            "MSAuthInvalidToken",
        )
        .await?;
    }

    // Signing in again starts a fresh family. (A wallet opened in the
    // moment before the revocation arrived would be legitimate: the family
    // was alive then; the refusals above are what the contract promises.)
    let login = platform.login(&alice.email, &alice.password).await?;
    let fresh = text(&login["data"]["login"]["accessToken"])?;
    let me = platform
        .data(Some(&fresh), "{ me { id } }", json!({}))
        .await?;
    assert_eq!(me["me"]["id"], json!(alice.id));

    platform.shutdown().await
}
