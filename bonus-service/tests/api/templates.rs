//! Templates: creation, permissions, validation, listing.

use serde_json::json;

use crate::helpers::{code, field, new_user, spawn_app, template_input, unique_code};

#[tokio::test]
async fn an_admin_creates_templates_and_users_see_the_active_ones() {
    let app = spawn_app().await;
    let welcome = unique_code("WELCOME");
    let created = app
        .create_template(template_input("WELCOME", &welcome))
        .await;
    assert_eq!(created["code"], welcome.as_str());
    assert_eq!(created["kind"], "WELCOME");
    assert_eq!(created["fixedAmount"], 1_000);
    assert_eq!(created["percent"], json!(null));
    assert_eq!(created["active"], true);

    let hidden = unique_code("HIDDEN");
    let mut input = template_input("MANUAL", &hidden);
    input["active"] = json!(false);
    app.create_template(input).await;
    let matched = unique_code("MATCH");
    let created = app
        .create_template(template_input("DEPOSIT_MATCH", &matched))
        .await;
    assert_eq!(created["percent"], 50);
    assert_eq!(created["maxAmount"], 5_000);

    let query = "{ bonusTemplates { code active } }";
    let codes = |body: serde_json::Value| -> Vec<String> {
        body["data"]["bonusTemplates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["code"].as_str().unwrap().to_owned())
            .collect()
    };
    let user = codes(
        app.gql(query, json!({}), Some(&app.user_token(&new_user())))
            .await,
    );
    assert!(user.contains(&welcome) && user.contains(&matched));
    assert!(
        !user.contains(&hidden),
        "inactive templates are not listed to users"
    );
    let anonymous = codes(app.gql(query, json!({}), None).await);
    assert!(!anonymous.contains(&hidden));
    let admin = codes(app.gql(query, json!({}), Some(&app.admin_token())).await);
    assert!(admin.contains(&hidden), "bonus:read:* lists every template");
}

#[tokio::test]
async fn only_holders_of_bonus_create_may_create_templates() {
    let app = spawn_app().await;
    let input = template_input("WELCOME", &unique_code("W"));
    let body = app
        .create_template_raw(input.clone(), Some(&app.user_token(&new_user())))
        .await;
    assert_eq!(code(&body), "MSCoreForbidden", "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["permission"],
        "bonus:create:*"
    );
    let body = app.create_template_raw(input, None).await;
    assert_eq!(code(&body), "MSCoreUnauthenticated", "{body}");
}

#[tokio::test]
async fn bad_template_input_is_refused_naming_the_field() {
    let app = spawn_app().await;
    let admin = app.admin_token();
    let cases = [
        ("DEPOSIT_MATCH", "percent", json!(0), "input.percent"),
        ("DEPOSIT_MATCH", "percent", json!(1001), "input.percent"),
        ("WELCOME", "fixedAmount", json!(-100), "input.fixedAmount"),
        ("WELCOME", "fixedAmount", json!(0), "input.fixedAmount"),
        ("WELCOME", "maxAmount", json!(-1), "input.maxAmount"),
        ("WELCOME", "currency", json!("EURO"), "input.currency"),
        ("WELCOME", "currency", json!("eur"), "input.currency"),
        ("WELCOME", "currency", json!("XYZ"), "input.currency"),
        ("WELCOME", "code", json!("lower-case"), "input.code"),
        ("WELCOME", "code", json!(""), "input.code"),
        ("WELCOME", "name", json!("  "), "input.name"),
        ("WELCOME", "validDays", json!(0), "input.validDays"),
        (
            "WELCOME",
            "wageringMultiplier",
            json!(-1),
            "input.wageringMultiplier",
        ),
        ("WELCOME", "percent", json!(10), "input.percent"),
        (
            "DEPOSIT_MATCH",
            "fixedAmount",
            json!(10),
            "input.fixedAmount",
        ),
    ];
    for (kind, key, value, expected) in cases {
        let mut input = template_input(kind, &unique_code("BAD"));
        input[key] = value.clone();
        let body = app.create_template_raw(input, Some(&admin)).await;
        assert_eq!(code(&body), "MSCoreValidation", "{key}={value}: {body}");
        assert_eq!(field(&body), expected, "{key}={value}: {body}");
    }
    // A missing fixed amount and a missing percent.
    let mut input = template_input("WELCOME", &unique_code("BAD"));
    input.as_object_mut().unwrap().remove("fixedAmount");
    let body = app.create_template_raw(input, Some(&admin)).await;
    assert_eq!(field(&body), "input.fixedAmount", "{body}");
    let mut input = template_input("DEPOSIT_MATCH", &unique_code("BAD"));
    input.as_object_mut().unwrap().remove("percent");
    let body = app.create_template_raw(input, Some(&admin)).await;
    assert_eq!(field(&body), "input.percent", "{body}");

    // Amounts beyond 2^53-1 and floats never reach the domain.
    for value in [json!(9_007_199_254_740_992_i64), json!(10.5)] {
        let mut input = template_input("WELCOME", &unique_code("BAD"));
        input["fixedAmount"] = value.clone();
        let body = app.create_template_raw(input, Some(&admin)).await;
        assert!(body["errors"].is_array(), "{value}: {body}");
        assert!(body["data"].is_null() || body["data"]["createBonusTemplate"].is_null());
    }

    // Nothing was created.
    let body = app
        .gql("{ bonusTemplates { code } }", json!({}), Some(&admin))
        .await;
    assert_eq!(body["data"]["bonusTemplates"], json!([]), "{body}");
}

#[tokio::test]
async fn template_codes_are_unique() {
    let app = spawn_app().await;
    let code_ = unique_code("DUP");
    app.create_template(template_input("WELCOME", &code_)).await;
    let body = app
        .create_template_raw(template_input("MANUAL", &code_), Some(&app.admin_token()))
        .await;
    assert_eq!(code(&body), "MSCoreValidation", "{body}");
    assert_eq!(field(&body), "input.code");
}

#[tokio::test]
async fn the_subgraph_serves_its_error_codes_and_federation_sdl() {
    let app = spawn_app().await;
    let body = app.gql("{ _errorCodes }", json!({}), None).await;
    let codes = body["data"]["_errorCodes"].as_array().unwrap();
    for expected in [
        "MSBonusTemplateNotFound",
        "MSBonusAlreadyClaimed",
        "MSBonusNotEligible",
        "MSCoreValidation",
    ] {
        assert!(
            codes.iter().any(|c| c == expected),
            "{expected} missing: {body}"
        );
    }
    let body = app.gql("{ _service { sdl } }", json!({}), None).await;
    let sdl = body["data"]["_service"]["sdl"].as_str().unwrap();
    assert!(sdl.contains("type UserBonus @key(fields: \"id\")"), "{sdl}");
    assert!(
        sdl.contains("type BonusTemplate @key(fields: \"id\")"),
        "{sdl}"
    );
    assert!(
        sdl.contains("resolvable: false"),
        "User is a reference stub: {sdl}"
    );
    assert!(sdl.contains("scalar Amount"), "{sdl}");
}
