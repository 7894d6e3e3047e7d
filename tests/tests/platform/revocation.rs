//! Ending a session ends its access tokens everywhere: after `logout`,
//! `logoutAll`, `changePassword` and an operator disabling the account, the
//! tokens of the ended sessions are refused with `MSAuthInvalidToken` by the
//! gateway and by the payment, bonus and notification subgraphs when spoken
//! to directly, while the user's other sessions keep working.

use std::time::Duration;

use e2e::{eventually, first_code, text, Mode, Platform, Session, Subgraph};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Revocations cross the outbox and the bus; generous for a loaded CI box.
const PROPAGATION: Duration = Duration::from_secs(30);

const WALLETS: &str = "{ me { wallets { balance } } }";
const MY_WALLETS: &str = "{ myWallets { balance } }";
const BONUSES: &str = "{ myBonuses(first: 5) { totalCount } }";
const NOTIFICATIONS: &str = "{ myNotifications(first: 5) { totalCount } }";
const TRANSFER: &str =
    "mutation($input: TransferInput!) { transfer(input: $input) { id status amount } }";

/// One place a token is checked: the gateway, or a subgraph directly.
#[derive(Clone, Copy, Debug)]
enum Surface {
    Gateway,
    Direct(Subgraph),
}

/// The queries each surface answers for a signed-in user.
const READS: [(Surface, &str); 5] = [
    (Surface::Gateway, WALLETS),
    (Surface::Direct(Subgraph::Payment), MY_WALLETS),
    (Surface::Direct(Subgraph::Bonus), BONUSES),
    (Surface::Direct(Subgraph::Notification), NOTIFICATIONS),
    (Surface::Gateway, BONUSES),
];

/// The HTTP status and body of `query` sent to `surface` with `token`.
async fn ask(
    platform: &Platform,
    surface: Surface,
    token: &str,
    query: &str,
    variables: Value,
) -> anyhow::Result<(StatusCode, Value)> {
    let body = json!({ "query": query, "variables": variables });
    match surface {
        Surface::Gateway => {
            let answer = platform.post(Some(token), &body).await?;
            Ok((answer.status, answer.body))
        }
        Surface::Direct(subgraph) => {
            let response = platform
                .client()
                .post(platform.subgraph_url(subgraph)?)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?;
            Ok((response.status(), response.json().await?))
        }
    }
}

/// `Some` once every surface refuses `token` itself, as authentication
/// fails (HTTP 401 with `MSAuthInvalidToken`): the gateway before it plans,
/// not a subgraph behind it. `None` while any surface still serves it or
/// only a subgraph behind the gateway refused it; an error for anything
/// else.
async fn refused_everywhere(platform: &Platform, token: &str) -> anyhow::Result<Option<()>> {
    for (surface, query) in READS {
        let (status, body) = ask(platform, surface, token, query, json!({})).await?;
        match (status, first_code(&body).as_deref()) {
            (StatusCode::UNAUTHORIZED, Some("MSAuthInvalidToken")) => {}
            (_, None) if !body["data"].is_null() => return Ok(None),
            (StatusCode::OK, Some("MSAuthInvalidToken")) => return Ok(None),
            _ => anyhow::bail!("{surface:?} answered `{query}` unexpectedly ({status}): {body}"),
        }
    }
    Ok(Some(()))
}

/// Fails unless every surface serves `token`.
async fn accepted_everywhere(platform: &Platform, token: &str) -> anyhow::Result<()> {
    for (surface, query) in READS {
        let (_, body) = ask(platform, surface, token, query, json!({})).await?;
        anyhow::ensure!(
            body["errors"].is_null() && !body["data"].is_null(),
            "{surface:?} refused `{query}` for a live session: {body}"
        );
    }
    Ok(())
}

/// Sends 100 minor units of EUR to `to` with `token`, through `surface`.
async fn transfer(
    platform: &Platform,
    surface: Surface,
    token: &str,
    to: &Session,
) -> anyhow::Result<(StatusCode, Value)> {
    let input = json!({ "input": {
        "toUserId": to.id, "amount": 100, "currency": "EUR",
        "idempotencyKey": uuid::Uuid::new_v4().to_string(), "description": "revocation e2e",
    } });
    ask(platform, surface, token, TRANSFER, input).await
}

/// Waits until `token` is refused everywhere, then shows that money cannot
/// move with it either, through the gateway or the payment subgraph.
async fn assert_revoked(platform: &Platform, token: &str, to: &Session) -> anyhow::Result<()> {
    eventually(PROPAGATION, || refused_everywhere(platform, token)).await?;
    for surface in [Surface::Gateway, Surface::Direct(Subgraph::Payment)] {
        let (status, body) = transfer(platform, surface, token, to).await?;
        assert_eq!(
            (status, first_code(&body).as_deref()),
            (StatusCode::UNAUTHORIZED, Some("MSAuthInvalidToken")),
            "{surface:?} took a transfer with a revoked token: {body}"
        );
    }
    Ok(())
}

/// Fails unless `token` reads and moves money.
async fn assert_live(platform: &Platform, token: &str, to: &Session) -> anyhow::Result<()> {
    accepted_everywhere(platform, token).await?;
    let (_, body) = transfer(platform, Surface::Gateway, token, to).await?;
    assert_eq!(
        body["data"]["transfer"]["status"],
        json!("COMPLETED"),
        "{body}"
    );
    Ok(())
}

/// Signs `user` in once more; the new session's (access, refresh) tokens.
async fn sign_in(
    platform: &Platform,
    email: &str,
    password: &str,
) -> anyhow::Result<(String, String)> {
    let body = platform.login(email, password).await?;
    anyhow::ensure!(body["errors"].is_null(), "login failed: {body}");
    Ok((
        text(&body["data"]["login"]["accessToken"])?,
        text(&body["data"]["login"]["refreshToken"])?,
    ))
}

async fn balance(platform: &Platform, token: &str) -> anyhow::Result<i64> {
    let data = platform.data(Some(token), WALLETS, json!({})).await?;
    data["me"]["wallets"][0]["balance"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no balance in {data}"))
}

async fn revocation_reaches_every_service(mode: Mode) -> anyhow::Result<()> {
    let platform = Platform::start(mode).await?;
    let admin = platform.admin().await?;
    let alice = platform.register("alice").await?;
    let bob = platform.register("bob").await?;
    let wallet = platform.create_wallet(&alice, "EUR").await?;
    platform.create_wallet(&bob, "EUR").await?;
    platform.deposit(&admin, &wallet, 10_000).await?;

    // Two sessions, both able to read and to pay.
    let (s1, s1_refresh) = sign_in(&platform, &alice.email, &alice.password).await?;
    let (s2, _) = sign_in(&platform, &alice.email, &alice.password).await?;
    assert_live(&platform, &s1, &bob).await?;
    assert_live(&platform, &s2, &bob).await?;

    // `logout` ends S1 only.
    let logout = "mutation($t: String!) { logout(refreshToken: $t) }";
    let out = platform
        .data(Some(&s1), logout, json!({ "t": s1_refresh }))
        .await?;
    assert_eq!(out["logout"], json!(true));
    assert_revoked(&platform, &s1, &bob).await?;
    assert_live(&platform, &s2, &bob).await?;

    // `logoutAll` ends S2 too.
    let all = platform
        .data(Some(&s2), "mutation { logoutAll }", json!({}))
        .await?;
    assert_eq!(all["logoutAll"], json!(true));
    assert_revoked(&platform, &s2, &bob).await?;

    // `changePassword` keeps the session it was made from and ends the others.
    let (s3, _) = sign_in(&platform, &alice.email, &alice.password).await?;
    let (s4, _) = sign_in(&platform, &alice.email, &alice.password).await?;
    let new_password = format!("Changed-{}", uuid::Uuid::new_v4().simple());
    let changed = platform
        .data(
            Some(&s3),
            "mutation($old: String!, $new: String!) { changePassword(currentPassword: $old, newPassword: $new) }",
            json!({ "old": alice.password, "new": new_password }),
        )
        .await?;
    assert_eq!(changed["changePassword"], json!(true));
    assert_revoked(&platform, &s4, &bob).await?;
    assert_live(&platform, &s3, &bob).await?;

    // An operator disabling the account ends every session, the newest too.
    let (s5, _) = sign_in(&platform, &alice.email, &new_password).await?;
    assert_live(&platform, &s5, &bob).await?;
    let disabled = platform
        .data(
            Some(&admin.access_token),
            "mutation($id: ID!) { setUserStatus(userId: $id, status: DISABLED) { status } }",
            json!({ "id": alice.id }),
        )
        .await?;
    assert_eq!(disabled["setUserStatus"]["status"], json!("DISABLED"));
    assert_revoked(&platform, &s5, &bob).await?;
    assert_revoked(&platform, &s3, &bob).await?;

    // Exactly the five accepted transfers moved money; none of the refused.
    assert_eq!(balance(&platform, &bob.access_token).await?, 500);
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_sessions_are_refused_everywhere_on_embedded_defaults() -> anyhow::Result<()> {
    revocation_reaches_every_service(Mode::Embedded).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_sessions_are_refused_everywhere_on_redis_and_mongodb() -> anyhow::Result<()> {
    revocation_reaches_every_service(Mode::RedisMongo).await
}
