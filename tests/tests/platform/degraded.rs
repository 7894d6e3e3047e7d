//! A subgraph stopped mid-test: the gateway answers what the others can
//! serve plus `MSGatewaySubgraphUnavailable`, and full answers again once
//! the subgraph is back on its port.

use std::time::Duration;

use e2e::{error_codes, eventually, text, Mode, Platform, Subgraph};
use serde_json::{json, Value};

async fn subgraph_stopped_and_restarted(mode: Mode) -> anyhow::Result<()> {
    let mut platform = Platform::start(mode).await?;
    let admin = platform.admin().await?;
    platform
        .data(
            Some(&admin.access_token),
            "mutation($input: BonusTemplateInput!) { createBonusTemplate(input: $input) { id } }",
            json!({ "input": {
                "code": "WELCOME", "name": "Welcome", "kind": "WELCOME", "currency": "EUR",
                "fixedAmount": 300, "wageringMultiplier": 2, "validDays": 7,
            } }),
        )
        .await?;
    let erin = platform.register("erin").await?;
    let token = Some(erin.access_token.as_str());
    let on = &platform;
    let bonus_id = eventually(Duration::from_secs(30), move || async move {
        let data = on
            .data(token, "{ myBonuses { nodes { id status } } }", json!({}))
            .await?;
        let node = &data["myBonuses"]["nodes"][0];
        (node["status"] == json!("ACTIVE"))
            .then(|| text(&node["id"]))
            .transpose()
    })
    .await?;

    // One operation across auth, payment and bonus.
    let query = "query($b: ID!) {
        me { email wallets { currency bonusBalance } }
        userBonus(id: $b) { status amount user { email } }
    }";
    let variables = json!({ "b": bonus_id });
    let full = json!({
        "me": { "email": erin.email, "wallets": [{ "currency": "EUR", "bonusBalance": 300 }] },
        "userBonus": { "status": "ACTIVE", "amount": 300, "user": { "email": erin.email } },
    });
    assert_eq!(platform.data(token, query, variables.clone()).await?, full);

    platform.stop_subgraph(Subgraph::Bonus).await?;
    let partial = platform.gql(token, query, variables.clone()).await?;
    assert_eq!(
        partial["data"],
        json!({
            "me": { "email": erin.email, "wallets": [{ "currency": "EUR", "bonusBalance": 300 }] },
            "userBonus": null,
        }),
        "{partial}"
    );
    assert_eq!(
        error_codes(&partial),
        ["MSGatewaySubgraphUnavailable"],
        "{partial}"
    );
    assert_eq!(
        partial["errors"][0]["extensions"]["serviceName"],
        json!("bonus")
    );
    // Health says which one is down.
    let services = platform.service_health(&admin).await?;
    for service in &services {
        let down = service["name"] == json!("bonus");
        assert_eq!(service["healthy"], json!(!down), "{services:?}");
    }
    assert!(
        services.iter().any(|s| s["name"] == json!("bonus")),
        "{services:?}"
    );
    let ready = platform
        .client()
        .get(format!("{}/health/ready", platform.base_url()))
        .send()
        .await?;
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let report = ready.text().await?;
    assert!(report.contains("bonus"), "{report}");
    // The other subgraphs keep answering on their own.
    let notifications = platform
        .data(
            token,
            "{ myNotifications(first: 5) { totalCount } }",
            json!({}),
        )
        .await?;
    assert!(notifications["myNotifications"]["totalCount"].is_u64());

    platform.restart_subgraph(Subgraph::Bonus).await?;
    let (on, vars) = (&platform, &variables);
    let answer: Value = eventually(Duration::from_secs(30), move || async move {
        let body = on.gql(token, query, vars.clone()).await?;
        Ok(body["errors"].is_null().then_some(body))
    })
    .await?;
    assert_eq!(answer, json!({ "data": full }));
    let ready = platform
        .client()
        .get(format!("{}/health/ready", platform.base_url()))
        .send()
        .await?;
    assert_eq!(ready.status(), reqwest::StatusCode::OK);

    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_subgraph_degrades_and_recovers_on_embedded_defaults() -> anyhow::Result<()> {
    subgraph_stopped_and_restarted(Mode::Embedded).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_subgraph_degrades_and_recovers_on_redis_and_mongodb() -> anyhow::Result<()> {
    subgraph_stopped_and_restarted(Mode::RedisMongo).await
}
