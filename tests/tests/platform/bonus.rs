//! The WELCOME bonus: an admin creates the template, a registration awards
//! it (auth → bonus → payment → bonus → notification, all over the bus),
//! and the user sees it joined with their account and wallet.

use std::time::Duration;

use e2e::{eventually, first_code, text, Mode, Platform, Session};
use serde_json::{json, Value};

const CREATE_TEMPLATE: &str = "mutation($input: BonusTemplateInput!) {
    createBonusTemplate(input: $input) { id code kind currency fixedAmount wageringMultiplier active }
}";

async fn welcome_bonus(mode: Mode) -> anyhow::Result<()> {
    let platform = Platform::start(mode).await?;
    let admin = platform.admin().await?;
    let input = json!({ "input": {
        "code": "WELCOME_E2E", "name": "Welcome", "kind": "WELCOME", "currency": "EUR",
        "fixedAmount": 500, "wageringMultiplier": 5, "validDays": 30,
    } });

    // Only holders of `bonus:create:*` create templates.
    let early = platform.register("early").await?;
    let refused = platform
        .gql(Some(&early.access_token), CREATE_TEMPLATE, input.clone())
        .await?;
    assert_eq!(
        first_code(&refused).as_deref(),
        Some("MSCoreForbidden"),
        "{refused}"
    );
    let template = platform
        .data(Some(&admin.access_token), CREATE_TEMPLATE, input)
        .await?;
    assert_eq!(
        template["createBonusTemplate"]["kind"],
        json!("WELCOME"),
        "{template}"
    );
    assert_eq!(template["createBonusTemplate"]["active"], json!(true));

    // Registering awards it; it is ACTIVE once the payment service credited it.
    let carol = platform.register("carol").await?;
    let bonuses = "{ myBonuses(first: 10) { totalCount nodes {
        id templateCode amount currency status wageringRequired user { id email }
    } } }";
    let (on, token) = (&platform, Some(carol.access_token.as_str()));
    let listing: Value = eventually(Duration::from_secs(30), move || async move {
        let data = on.data(token, bonuses, json!({})).await?;
        let active = data["myBonuses"]["nodes"][0]["status"] == json!("ACTIVE");
        Ok(active.then_some(data))
    })
    .await?;
    let bonus = &listing["myBonuses"]["nodes"][0];
    assert_eq!(listing["myBonuses"]["totalCount"], json!(1), "{listing}");
    assert_eq!(bonus["templateCode"], json!("WELCOME_E2E"));
    assert_eq!(bonus["amount"], json!(500));
    assert_eq!(bonus["currency"], json!("EUR"));
    assert_eq!(bonus["wageringRequired"], json!(2_500));
    assert_eq!(
        bonus["user"],
        json!({ "id": carol.id, "email": carol.email })
    );

    // The credit landed in the bonus balance of a wallet opened for it.
    let wallets = platform
        .data(
            Some(&carol.access_token),
            "{ me { wallets { currency balance bonusBalance } } }",
            json!({}),
        )
        .await?;
    assert_eq!(
        wallets["me"]["wallets"],
        json!([{ "currency": "EUR", "balance": 0, "bonusBalance": 500 }])
    );

    // One per user; unknown codes are refused.
    let twice = platform
        .gql(
            Some(&carol.access_token),
            "mutation { claimBonus(code: \"WELCOME_E2E\") { id } }",
            json!({}),
        )
        .await?;
    assert_eq!(
        first_code(&twice).as_deref(),
        Some("MSBonusAlreadyClaimed"),
        "{twice}"
    );
    let unknown = platform
        .gql(
            Some(&carol.access_token),
            "mutation { claimBonus(code: \"NO_SUCH_BONUS\") { id } }",
            json!({}),
        )
        .await?;
    assert_eq!(
        first_code(&unknown).as_deref(),
        Some("MSBonusTemplateNotFound"),
        "{unknown}"
    );

    // The award is announced to its owner.
    eventually(Duration::from_secs(30), move || async move {
        let data = on
            .data(
                token,
                "{ myNotifications(first: 20) { nodes { kind } } }",
                json!({}),
            )
            .await?;
        let kinds = data["myNotifications"]["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(kinds
            .iter()
            .any(|n| n["kind"] == json!("bonus.awarded"))
            .then_some(()))
    })
    .await?;

    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_bonus_is_awarded_on_registration_on_embedded_defaults() -> anyhow::Result<()> {
    welcome_bonus(Mode::Embedded).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_bonus_is_awarded_on_registration_on_redis_and_mongodb() -> anyhow::Result<()> {
    welcome_bonus(Mode::RedisMongo).await
}

/// Every user's EUR wallet as `(id, balance, bonusBalance)`.
async fn eur_wallet(platform: &Platform, session: &Session) -> anyhow::Result<(String, i64, i64)> {
    let data = platform
        .data(
            Some(&session.access_token),
            "{ me { wallets { id currency balance bonusBalance } } }",
            json!({}),
        )
        .await?;
    let wallet = data["me"]["wallets"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["currency"] == json!("EUR")))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no EUR wallet in {data}"))?;
    Ok((
        text(&wallet["id"])?,
        wallet["balance"].as_i64().unwrap_or(-1),
        wallet["bonusBalance"].as_i64().unwrap_or(-1),
    ))
}

/// The statuses of `session`'s bonuses, sorted.
async fn bonus_statuses(platform: &Platform, session: &Session) -> anyhow::Result<Vec<String>> {
    let data = platform
        .data(
            Some(&session.access_token),
            "{ myBonuses(first: 10) { nodes { status } } }",
            json!({}),
        )
        .await?;
    let mut statuses: Vec<String> = data["myBonuses"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n["status"].as_str().map(str::to_owned))
        .collect();
    statuses.sort();
    Ok(statuses)
}

/// A mixed run across the four services: WELCOME awards on registration,
/// DEPOSIT_MATCH awards on deposits, transfers that wager both bonuses
/// until they convert. Afterwards every bonus converted exactly once, each
/// user holds what they deposited plus both bonuses as real money, and
/// every wallet agrees with its ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bonuses_convert_once_and_the_books_balance_after_a_mixed_run() -> anyhow::Result<()> {
    const USERS: usize = 4;
    const DEPOSIT: i64 = 2_000;
    const WELCOME: i64 = 500;
    const MATCH_CAP: i64 = 1_000;
    const SENT_PER_ROUND: i64 = 300;
    const ROUNDS: usize = 6;

    let platform = Platform::start(Mode::Embedded).await?;
    let admin = platform.admin().await?;
    for input in [
        json!({ "code": "WELCOME_MIX", "name": "Welcome", "kind": "WELCOME", "currency": "EUR",
                "fixedAmount": WELCOME, "wageringMultiplier": 1, "validDays": 30 }),
        json!({ "code": "MATCH_MIX", "name": "Match", "kind": "DEPOSIT_MATCH", "currency": "EUR",
                "percent": 100, "maxAmount": MATCH_CAP, "wageringMultiplier": 1, "validDays": 30 }),
    ] {
        platform
            .data(
                Some(&admin.access_token),
                CREATE_TEMPLATE,
                json!({ "input": input }),
            )
            .await?;
    }

    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(platform.register(&format!("mix{i}")).await?);
    }
    for user in &users {
        let (on, session) = (&platform, user);
        let (wallet, _, _) = eventually(Duration::from_secs(30), move || async move {
            let wallet = eur_wallet(on, session).await.ok();
            Ok(wallet.filter(|(_, _, bonus)| *bonus == WELCOME))
        })
        .await?;
        platform.deposit(&admin, &wallet, DEPOSIT).await?;
    }
    // Each deposit matched at 100 %, capped.
    for user in &users {
        let (on, session) = (&platform, user);
        eventually(Duration::from_secs(30), move || async move {
            let (_, _, bonus) = eur_wallet(on, session).await?;
            Ok((bonus == WELCOME + MATCH_CAP).then_some(()))
        })
        .await?;
    }

    // Round after round, everyone sends to the next user: balances end
    // where they started, and each user debits more than both bonuses'
    // wagering requirements together.
    for round in 0..ROUNDS {
        for (i, from) in users.iter().enumerate() {
            let to = &users[(i + 1) % USERS];
            let body = platform
                .gql(
                    Some(&from.access_token),
                    "mutation($input: TransferInput!) { transfer(input: $input) { status } }",
                    json!({ "input": {
                        "toUserId": to.id, "amount": SENT_PER_ROUND, "currency": "EUR",
                        "idempotencyKey": format!("mix-{round}-{i}"),
                    } }),
                )
                .await?;
            assert_eq!(
                body["data"]["transfer"]["status"],
                json!("COMPLETED"),
                "{body}"
            );
        }
    }

    let expected = DEPOSIT + WELCOME + MATCH_CAP;
    for user in &users {
        let (on, session) = (&platform, user);
        eventually(Duration::from_secs(60), move || async move {
            let statuses = bonus_statuses(on, session).await?;
            let (_, balance, bonus) = eur_wallet(on, session).await?;
            Ok(
                (statuses == ["CONVERTED", "CONVERTED"] && balance == expected && bonus == 0)
                    .then_some(()),
            )
        })
        .await?;
    }
    let report = platform
        .data(
            Some(&admin.access_token),
            "{ reconciliationReport { walletsChecked mismatches { walletId reason } } }",
            json!({}),
        )
        .await?;
    assert_eq!(
        report["reconciliationReport"]["mismatches"],
        json!([]),
        "{report}"
    );
    assert_eq!(
        report["reconciliationReport"]["walletsChecked"],
        json!(USERS)
    );
    platform.shutdown().await
}
