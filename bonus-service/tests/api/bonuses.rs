//! Claims, awards, forfeits and listings through the API.

use bonus_service::store::BonusStatus;
use serde_json::json;

use crate::helpers::{code, new_user, spawn_app, template_input, unique_code, BONUS};

#[tokio::test]
async fn a_claimed_bonus_is_credited_once_and_claiming_twice_is_refused() {
    let app = spawn_app().await;
    let manual = unique_code("PROMO");
    app.create_template(template_input("MANUAL", &manual)).await;
    let user = new_user();
    let token = app.user_token(&user);

    let body = app.claim(&manual, &token).await;
    assert!(body["errors"].is_null(), "{body}");
    let bonus = &body["data"]["claimBonus"];
    assert_eq!(bonus["status"], "PENDING", "waiting for the credit: {body}");
    assert_eq!(bonus["pendingMovement"], "CREDIT");
    assert_eq!(bonus["amount"], 1_000);
    assert_eq!(bonus["wageringRequired"], 10_000);
    assert_eq!(bonus["user"]["id"], user.as_str());
    let id = bonus["id"].as_str().unwrap().to_owned();

    app.wait_for_status(&user, 1, BonusStatus::Active).await;
    app.wait_for_emitted("bonus.awarded", &id).await;
    assert_eq!(app.payment.applied(&format!("{id}:credit")), 1);
    assert_eq!(app.payment.bonus_balance(&user, "EUR"), 1_000);

    let again = app.claim(&manual, &token).await;
    assert_eq!(code(&again), "MSBonusAlreadyClaimed", "{again}");
    // Lower-case codes name the same template.
    let again = app.claim(&manual.to_ascii_lowercase(), &token).await;
    assert_eq!(code(&again), "MSBonusAlreadyClaimed", "{again}");
    assert_eq!(app.bonuses(&user).await.len(), 1);
    assert_eq!(app.payment.bonus_balance(&user, "EUR"), 1_000);
    assert_eq!(app.emitted("bonus.awarded", &id), 1);

    let body = app
        .gql(
            &format!("query($id: ID!) {{ userBonus(id: $id) {{ {BONUS} }} }}"),
            json!({ "id": id }),
            Some(&token),
        )
        .await;
    assert_eq!(body["data"]["userBonus"]["status"], "ACTIVE", "{body}");
}

#[tokio::test]
async fn unknown_inactive_and_deposit_only_codes_are_refused() {
    let app = spawn_app().await;
    let token = app.user_token(&new_user());
    let body = app.claim("NO-SUCH-BONUS", &token).await;
    assert_eq!(code(&body), "MSBonusTemplateNotFound", "{body}");

    let inactive = unique_code("OFF");
    let mut input = template_input("WELCOME", &inactive);
    input["active"] = json!(false);
    app.create_template(input).await;
    let body = app.claim(&inactive, &token).await;
    assert_eq!(code(&body), "MSBonusTemplateNotFound", "{body}");

    let matched = unique_code("MATCH");
    app.create_template(template_input("DEPOSIT_MATCH", &matched))
        .await;
    let body = app.claim(&matched, &token).await;
    assert_eq!(code(&body), "MSBonusNotEligible", "{body}");
    let body = app.award(&new_user(), &matched, &app.admin_token()).await;
    assert_eq!(code(&body), "MSBonusNotEligible", "{body}");

    let body = app.claim("ANY", "not-a-token").await;
    assert!(body["errors"].is_array(), "{body}");
    let body = app
        .gql(
            "mutation { claimBonus(code: \"X\") { id } }",
            json!({}),
            None,
        )
        .await;
    assert_eq!(code(&body), "MSCoreUnauthenticated", "{body}");
}

#[tokio::test]
async fn operators_award_bonuses_and_users_may_not() {
    let app = spawn_app().await;
    let manual = unique_code("GIFT");
    app.create_template(template_input("MANUAL", &manual)).await;
    let user = new_user();

    let body = app
        .award(&user, &manual, &app.user_token(&new_user()))
        .await;
    assert_eq!(code(&body), "MSCoreForbidden", "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["permission"],
        "bonus:award:*"
    );
    let body = app.award(&user, &manual, &app.user_token(&user)).await;
    assert_eq!(
        code(&body),
        "MSCoreForbidden",
        "not even to oneself: {body}"
    );

    let admin = app.admin_token();
    let body = app.award(&user, &manual, &admin).await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(body["data"]["awardBonus"]["userId"], user.as_str());
    app.wait_for_status(&user, 1, BonusStatus::Active).await;
    let body = app.award(&user, &manual, &admin).await;
    assert_eq!(code(&body), "MSBonusAlreadyClaimed", "{body}");
    let body = app.award(&user, "NOPE", &admin).await;
    assert_eq!(code(&body), "MSBonusTemplateNotFound", "{body}");
    let body = app.award("bad id!", &manual, &admin).await;
    assert_eq!(code(&body), "MSCoreValidation", "{body}");
}

#[tokio::test]
async fn a_refused_credit_fails_the_bonus_and_awards_nothing() {
    let app = spawn_app().await;
    let manual = unique_code("FAIL");
    app.create_template(template_input("MANUAL", &manual)).await;
    let user = new_user();
    let token = app.user_token(&user);
    app.payment.refuse(true);

    let body = app.claim(&manual, &token).await;
    let id = body["data"]["claimBonus"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bonuses = app.wait_for_status(&user, 1, BonusStatus::Failed).await;
    assert!(bonuses[0].failure_reason.is_some());
    assert_eq!(app.payment.bonus_balance(&user, "EUR"), 0);
    assert_eq!(app.payment.applied(&format!("{id}:credit")), 0);
    assert_eq!(app.emitted("bonus.awarded", &id), 0);

    // Nothing was awarded, so the bonus may be claimed again.
    app.payment.refuse(false);
    let body = app.claim(&manual, &token).await;
    assert!(body["errors"].is_null(), "{body}");
    app.wait_for_bonuses(&user, "one active, one failed", |b| {
        b.len() == 2 && b.iter().any(|b| b.status == BonusStatus::Active)
    })
    .await;
    assert_eq!(app.payment.bonus_balance(&user, "EUR"), 1_000);
}

#[tokio::test]
async fn forfeiting_debits_what_remains() {
    let app = spawn_app().await;
    let manual = unique_code("FORFEIT");
    app.create_template(template_input("MANUAL", &manual)).await;
    let user = new_user();
    let token = app.user_token(&user);
    let body = app.claim(&manual, &token).await;
    let id = body["data"]["claimBonus"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Not while the credit is in flight... (it may already be settled, so
    // only check once it is active).
    app.wait_for_status(&user, 1, BonusStatus::Active).await;

    let stranger = app.forfeit(&id, &app.user_token(&new_user())).await;
    assert_eq!(code(&stranger), "MSCoreNotFound", "{stranger}");
    let body = app.forfeit("no-such-bonus", &token).await;
    assert_eq!(code(&body), "MSCoreNotFound", "{body}");

    let body = app.forfeit(&id, &token).await;
    assert!(body["errors"].is_null(), "{body}");
    let forfeited = app.wait_for_status(&user, 1, BonusStatus::Forfeited).await;
    assert_eq!(forfeited[0].settled_amount, Some(1_000));
    app.wait_for_emitted("bonus.expired", &id).await;
    assert_eq!(app.payment.bonus_balance(&user, "EUR"), 0);
    assert_eq!(app.payment.real_balance(&user, "EUR"), 0);
    let moved: u32 = app.payment.applied_for(&id).iter().map(|(_, n)| n).sum();
    assert_eq!(
        moved,
        2,
        "one credit and one debit: {:?}",
        app.payment.applied_for(&id)
    );

    // Forfeiting again returns the bonus as it stands and moves nothing.
    let again = app.forfeit(&id, &token).await;
    assert_eq!(
        again["data"]["forfeitBonus"]["status"], "FORFEITED",
        "{again}"
    );
    assert_eq!(app.emitted("bonus.expired", &id), 1);

    // An operator may forfeit anyone's bonus.
    let other = new_user();
    let admin = app.admin_token();
    let body = app.award(&other, &manual, &admin).await;
    let other_id = body["data"]["awardBonus"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for_status(&other, 1, BonusStatus::Active).await;
    let body = app.forfeit(&other_id, &admin).await;
    assert!(body["errors"].is_null(), "{body}");
    app.wait_for_status(&other, 1, BonusStatus::Forfeited).await;
}

#[tokio::test]
async fn a_converted_bonus_cannot_be_forfeited() {
    let app = spawn_app().await;
    let manual = unique_code("FREE");
    let mut input = template_input("MANUAL", &manual);
    input["wageringMultiplier"] = json!(0);
    app.create_template(input).await;
    let user = new_user();
    let token = app.user_token(&user);
    let body = app.claim(&manual, &token).await;
    let id = body["data"]["claimBonus"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for_status(&user, 1, BonusStatus::Converted).await;
    let body = app.forfeit(&id, &token).await;
    assert_eq!(code(&body), "MSBonusNotEligible", "{body}");
}

#[tokio::test]
async fn my_bonuses_lists_newest_first_page_by_page() {
    let app = spawn_app().await;
    let user = new_user();
    let token = app.user_token(&user);
    let mut codes = Vec::new();
    for i in 0..5 {
        let c = unique_code(&format!("P{i}"));
        app.create_template(template_input("MANUAL", &c)).await;
        let body = app.claim(&c, &token).await;
        assert!(body["errors"].is_null(), "{body}");
        codes.push(c);
    }
    // Someone else's bonus is never listed.
    let other = new_user();
    app.claim(&codes[0], &app.user_token(&other)).await;

    let query = "query($first: Int, $after: String) { myBonuses(first: $first, after: $after) { edges { cursor node { templateCode user { id } } } nodes { id } pageInfo { hasNextPage hasPreviousPage endCursor } totalCount } }";
    let mut seen = Vec::new();
    let mut after = serde_json::Value::Null;
    loop {
        let body = app
            .gql(query, json!({ "first": 2, "after": after }), Some(&token))
            .await;
        let page = &body["data"]["myBonuses"];
        assert_eq!(page["totalCount"], 5, "{body}");
        for edge in page["edges"].as_array().unwrap() {
            assert_eq!(edge["node"]["user"]["id"], user.as_str());
            seen.push(edge["node"]["templateCode"].as_str().unwrap().to_owned());
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    codes.reverse();
    assert_eq!(seen, codes, "newest first, no gaps, no duplicates");

    let body = app.gql(query, json!({ "first": 101 }), Some(&token)).await;
    assert_eq!(code(&body), "MSCoreValidation", "{body}");
    let body = app
        .gql(query, json!({ "after": "not-a-cursor" }), Some(&token))
        .await;
    assert_eq!(code(&body), "MSCoreValidation", "{body}");
    let body = app.gql(query, json!({}), None).await;
    assert_eq!(code(&body), "MSCoreUnauthenticated", "{body}");
}

#[tokio::test]
async fn bonuses_resolve_as_entities_for_their_owner_and_operators() {
    let app = spawn_app().await;
    let manual = unique_code("ENT");
    let template = app.create_template(template_input("MANUAL", &manual)).await;
    let user = new_user();
    let token = app.user_token(&user);
    let body = app.claim(&manual, &token).await;
    let id = body["data"]["claimBonus"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let query = "query($r: [_Any!]!) { _entities(representations: $r) { ... on UserBonus { id templateCode } ... on BonusTemplate { id code } } }";
    let reps = json!({ "r": [
        { "__typename": "UserBonus", "id": id },
        { "__typename": "BonusTemplate", "id": template["id"] },
    ]});
    let body = app.gql(query, reps.clone(), Some(&token)).await;
    assert_eq!(
        body["data"]["_entities"][0]["templateCode"],
        manual.as_str(),
        "{body}"
    );
    assert_eq!(
        body["data"]["_entities"][1]["code"],
        manual.as_str(),
        "{body}"
    );
    let body = app.gql(query, reps.clone(), Some(&app.admin_token())).await;
    assert_eq!(body["data"]["_entities"][0]["id"], id.as_str(), "{body}");
    let body = app
        .gql(query, reps, Some(&app.user_token(&new_user())))
        .await;
    // A stranger resolves nothing, exactly as for an id that does not exist.
    assert!(body["errors"].is_null(), "{body}");
    assert!(body["data"]["_entities"][0].is_null(), "{body}");
}

#[tokio::test]
async fn stale_duplicate_and_unknown_settlements_change_nothing() {
    use service_core::events::{BonusOperation, BonusPaymentSettled, DomainEvent};

    let app = spawn_app().await;
    let manual = unique_code("STALE");
    app.create_template(template_input("MANUAL", &manual)).await;
    let user = new_user();
    let body = app.claim(&manual, &app.user_token(&user)).await;
    let id = body["data"]["claimBonus"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = app.wait_for_status(&user, 1, BonusStatus::Active).await[0].clone();

    let settled =
        |request_id: String, user_bonus_id: String, succeeded: bool| BonusPaymentSettled {
            request_id,
            operation: BonusOperation::Credit,
            user_bonus_id,
            user_id: user.clone(),
            currency: "EUR".into(),
            succeeded,
            amount_applied: 0,
            transaction_id: None,
            reason: None,
        };
    for payload in [
        // The credit's answer again, now refused: already settled, ignored.
        settled(format!("{id}:credit"), id.clone(), false),
        // An answer to a request never made.
        settled(format!("{id}:convert:9"), id.clone(), true),
        // An unknown bonus.
        settled("nope:credit".into(), "nope".into(), true),
    ] {
        let event = payload.to_event("default", Some(&user)).unwrap();
        app.service.handle_event(&event).await.unwrap();
    }
    let after = &app.bonuses(&user).await[0];
    assert_eq!(after.status, BonusStatus::Active);
    assert_eq!(after.version, before.version, "not written at all");
    assert_eq!(app.emitted("bonus.awarded", &id), 1);
}
