//! The WELCOME bonus: an admin creates the template, a registration awards
//! it (auth → bonus → payment → bonus → notification, all over the bus),
//! and the user sees it joined with their account and wallet.

use std::time::Duration;

use e2e::{eventually, first_code, Mode, Platform};
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
