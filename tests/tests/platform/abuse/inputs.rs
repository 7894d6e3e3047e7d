//! Oversized strings on every string argument of every mutation (read
//! from the composed schema, so a new one fails the sweep until it is
//! covered): a value far over any field's limit, and one of a megabyte
//! (under the body limit, so the service sees it). Each answers a coded
//! refusal, never an internal error; nothing is stored; and the platform
//! still answers.

use e2e::{first_code, Mode, Platform, Session};
use serde_json::{json, Value};

use super::still_serves;

/// Over every string field's limit (the longest, a notification body, is
/// a few thousand characters).
const OVER_LIMIT: usize = 20_000;
/// A megabyte: the largest string a request under the body limit can carry.
const MEGABYTE: usize = 1_000_000;

/// Who runs a mutation.
#[derive(Clone, Copy, Debug)]
enum Caller {
    Anonymous,
    User,
    Admin,
}

/// One mutation with valid variables: each string argument in turn is
/// replaced by an oversized one.
struct Call {
    mutation: &'static str,
    caller: Caller,
    query: &'static str,
    variables: Value,
}

/// What the platform holds that a stored oversized value would change.
const USER_SNAPSHOT: &str = "{
  me { id email username roles status }
  myWallets { id currency balance bonusBalance }
  transactions(first: 100) { totalCount nodes { id amount description } }
  transfers(first: 100) { totalCount nodes { id amount description } }
  myBonuses(first: 100) { totalCount nodes { id status templateCode } }
  myNotifications(first: 100) { totalCount nodes { id kind title } }
  notificationPreferences { email channels { channel enabled } kinds { kind channels } }
}";
const ADMIN_SNAPSHOT: &str = "{
  users(first: 100) { totalCount nodes { id email username roles status } }
  bonusTemplates { code name currency active }
  configs { service key value }
}";

/// The answer to an oversized value on each swept argument: the code, and
/// the field `extensions.field` names where the code is a validation. A
/// credential, token, one-time code or bonus code that is too long is
/// simply a wrong one, answered as such.
const EXPECTED: &[(&str, &str, Option<&str>)] = &[
    (
        "Mutation.assignRole(role)",
        "MSCoreValidation",
        Some("role"),
    ),
    ("Mutation.awardBonus(code)", "MSBonusTemplateNotFound", None),
    (
        "Mutation.changePassword(currentPassword)",
        "MSAuthInvalidCredentials",
        None,
    ),
    (
        "Mutation.changePassword(newPassword)",
        "MSCoreValidation",
        Some("newPassword"),
    ),
    ("Mutation.claimBonus(code)", "MSBonusTemplateNotFound", None),
    (
        "Mutation.createBonusTemplate(input.code)",
        "MSCoreValidation",
        Some("input.code"),
    ),
    (
        "Mutation.createBonusTemplate(input.currency)",
        "MSCoreValidation",
        Some("input.currency"),
    ),
    (
        "Mutation.createBonusTemplate(input.name)",
        "MSCoreValidation",
        Some("input.name"),
    ),
    (
        "Mutation.createWallet(currency)",
        "MSPaymentInvalidCurrency",
        Some("currency"),
    ),
    (
        "Mutation.deposit(input.description)",
        "MSCoreValidation",
        Some("description"),
    ),
    (
        "Mutation.deposit(input.idempotencyKey)",
        "MSCoreValidation",
        Some("idempotencyKey"),
    ),
    (
        "Mutation.login(input.email)",
        "MSCoreValidation",
        Some("input.email"),
    ),
    (
        "Mutation.login(input.password)",
        "MSAuthInvalidCredentials",
        None,
    ),
    ("Mutation.logout(refreshToken)", "MSAuthInvalidToken", None),
    (
        "Mutation.refreshToken(refreshToken)",
        "MSAuthInvalidToken",
        None,
    ),
    (
        "Mutation.register(input.email)",
        "MSCoreValidation",
        Some("input.email"),
    ),
    (
        "Mutation.register(input.password)",
        "MSCoreValidation",
        Some("input.password"),
    ),
    (
        "Mutation.register(input.username)",
        "MSCoreValidation",
        Some("input.username"),
    ),
    (
        "Mutation.requestOtp(purpose)",
        "MSCoreValidation",
        Some("purpose"),
    ),
    (
        "Mutation.revokeRole(role)",
        "MSCoreValidation",
        Some("role"),
    ),
    (
        "Mutation.sendNotification(input.body)",
        "MSCoreValidation",
        Some("input.body"),
    ),
    (
        "Mutation.sendNotification(input.kind)",
        "MSCoreValidation",
        Some("input.kind"),
    ),
    (
        "Mutation.sendNotification(input.title)",
        "MSCoreValidation",
        Some("input.title"),
    ),
    ("Mutation.setConfig(key)", "MSCoreValidation", Some("key")),
    (
        "Mutation.setConfig(service)",
        "MSCoreValidation",
        Some("service"),
    ),
    (
        "Mutation.transfer(input.currency)",
        "MSPaymentInvalidCurrency",
        Some("currency"),
    ),
    (
        "Mutation.transfer(input.description)",
        "MSCoreValidation",
        Some("description"),
    ),
    (
        "Mutation.transfer(input.idempotencyKey)",
        "MSCoreValidation",
        Some("idempotencyKey"),
    ),
    (
        "Mutation.updateNotificationPreferences(input.email)",
        "MSCoreValidation",
        Some("input.email"),
    ),
    (
        "Mutation.updateNotificationPreferences(input.kinds.kind)",
        "MSCoreValidation",
        Some("input.kinds.kind"),
    ),
    (
        "Mutation.updateNotificationPreferences(input.resetKinds)",
        "MSCoreValidation",
        Some("input.resetKinds"),
    ),
    ("Mutation.verifyOtp(code)", "MSAuthInvalidOtp", None),
    (
        "Mutation.verifyOtp(purpose)",
        "MSCoreValidation",
        Some("purpose"),
    ),
    (
        "Mutation.withdraw(input.description)",
        "MSCoreValidation",
        Some("description"),
    ),
    (
        "Mutation.withdraw(input.idempotencyKey)",
        "MSCoreValidation",
        Some("idempotencyKey"),
    ),
];

/// An answer cut short for a failure message.
fn clip(body: &Value) -> String {
    body.to_string().chars().take(500).collect()
}

fn calls(user: &Session, other: &Session, wallet: &str, code: &str) -> Vec<Call> {
    let key = || uuid::Uuid::new_v4().to_string();
    let email = || format!("new-{}@example.com", uuid::Uuid::new_v4().simple());
    vec![
        Call {
            mutation: "register",
            caller: Caller::Anonymous,
            query: "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }",
            variables: json!({ "input": { "email": email(), "password": "Long-enough-password-1", "username": "newcomer" } }),
        },
        Call {
            mutation: "login",
            caller: Caller::Anonymous,
            query: "mutation($input: LoginInput!) { login(input: $input) { accessToken } }",
            variables: json!({ "input": { "email": user.email, "password": user.password } }),
        },
        Call {
            mutation: "refreshToken",
            caller: Caller::Anonymous,
            query: "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken } }",
            variables: json!({ "t": "x" }),
        },
        Call {
            mutation: "logout",
            caller: Caller::User,
            query: "mutation($t: String!) { logout(refreshToken: $t) }",
            variables: json!({ "t": "x" }),
        },
        Call {
            mutation: "changePassword",
            caller: Caller::User,
            query: "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }",
            variables: json!({ "c": user.password, "n": "Another-long-password-2" }),
        },
        Call {
            mutation: "requestOtp",
            caller: Caller::User,
            query: "mutation($p: String!) { requestOtp(purpose: $p) }",
            variables: json!({ "p": "withdrawal" }),
        },
        Call {
            mutation: "verifyOtp",
            caller: Caller::User,
            query: "mutation($p: String!, $c: String!) { verifyOtp(purpose: $p, code: $c) }",
            variables: json!({ "p": "withdrawal", "c": "123456" }),
        },
        Call {
            mutation: "assignRole",
            caller: Caller::Admin,
            query: "mutation($u: ID!, $r: String!) { assignRole(userId: $u, role: $r) { id } }",
            variables: json!({ "u": other.id, "r": "support" }),
        },
        Call {
            mutation: "revokeRole",
            caller: Caller::Admin,
            query: "mutation($u: ID!, $r: String!) { revokeRole(userId: $u, role: $r) { id } }",
            variables: json!({ "u": other.id, "r": "user" }),
        },
        Call {
            mutation: "createWallet",
            caller: Caller::User,
            query: "mutation($c: String!) { createWallet(currency: $c) { id } }",
            variables: json!({ "c": "USD" }),
        },
        Call {
            mutation: "deposit",
            caller: Caller::Admin,
            query: "mutation($input: DepositInput!) { deposit(input: $input) { id } }",
            variables: json!({ "input": { "walletId": wallet, "amount": 1, "idempotencyKey": key(), "description": "d" } }),
        },
        Call {
            mutation: "withdraw",
            caller: Caller::User,
            query: "mutation($input: WithdrawInput!) { withdraw(input: $input) { id } }",
            variables: json!({ "input": { "walletId": wallet, "amount": 1, "idempotencyKey": key(), "description": "d" } }),
        },
        Call {
            mutation: "transfer",
            caller: Caller::User,
            query: "mutation($input: TransferInput!) { transfer(input: $input) { id } }",
            variables: json!({ "input": { "toUserId": other.id, "amount": 1, "currency": "EUR", "idempotencyKey": key(), "description": "d" } }),
        },
        Call {
            mutation: "createBonusTemplate",
            caller: Caller::Admin,
            query: "mutation($input: BonusTemplateInput!) { createBonusTemplate(input: $input) { id } }",
            variables: json!({ "input": { "code": "OVERSIZED", "name": "n", "kind": "MANUAL", "currency": "EUR", "fixedAmount": 1, "wageringMultiplier": 1, "validDays": 1 } }),
        },
        Call {
            mutation: "claimBonus",
            caller: Caller::User,
            query: "mutation($c: String!) { claimBonus(code: $c) { id } }",
            variables: json!({ "c": code }),
        },
        Call {
            mutation: "awardBonus",
            caller: Caller::Admin,
            query: "mutation($u: ID!, $c: String!) { awardBonus(userId: $u, code: $c) { id } }",
            variables: json!({ "u": other.id, "c": code }),
        },
        Call {
            mutation: "sendNotification",
            caller: Caller::Admin,
            query: "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { id } }",
            variables: json!({ "input": { "userId": user.id, "kind": "ops.notice", "title": "t", "body": "b" } }),
        },
        Call {
            mutation: "updateNotificationPreferences",
            caller: Caller::User,
            query: "mutation($input: NotificationPreferencesInput!) { updateNotificationPreferences(input: $input) { email } }",
            variables: json!({ "input": { "email": "me@example.com", "kinds": [{ "kind": "transfer.received", "channels": ["IN_APP"] }], "resetKinds": ["bonus.awarded"] } }),
        },
        Call {
            mutation: "setConfig",
            caller: Caller::Admin,
            query: "mutation($s: String!, $k: String!) { setConfig(service: $s, key: $k, value: 5) { key } }",
            variables: json!({ "s": "gateway", "k": "rateLimitBurst" }),
        },
    ]
}

/// `variables` with the string at `path` (`input.kinds.kind`: list members
/// are reached through their first element) replaced by `value`; `None`
/// when the call's variables do not hold that path.
fn with_value(query: &str, variables: &Value, path: &str, value: &str) -> Option<Value> {
    let mut variables = variables.clone();
    let mut segments = path.split('.');
    let argument = segments.next()?;
    // The variable that carries the argument: `argument: $v` in the query.
    let marker = format!("{argument}: $");
    let name: String = query
        .split(&marker)
        .nth(1)?
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let mut target = variables.get_mut(&name)?;
    for segment in segments {
        if let Value::Array(items) = target {
            target = items.first_mut()?;
        }
        target = target.get_mut(segment)?;
    }
    if let Value::Array(items) = target {
        target = items.first_mut()?;
    }
    if !target.is_string() {
        return None;
    }
    *target = Value::String(value.to_owned());
    Some(variables)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_strings_on_every_mutation_input_are_refused_and_stored_nowhere(
) -> anyhow::Result<()> {
    let platform = Platform::start(Mode::Embedded).await?;
    let admin = platform.admin().await?;
    let user = platform.register("user").await?;
    let other = platform.register("other").await?;
    let wallet = platform.create_wallet(&user, "EUR").await?;
    platform.deposit(&admin, &wallet, 1_000).await?;
    let code = format!("SWEEP{}", &uuid::Uuid::new_v4().simple().to_string()[..8]).to_uppercase();
    platform
        .data(
            Some(&admin.access_token),
            "mutation($input: BonusTemplateInput!) { createBonusTemplate(input: $input) { id } }",
            json!({ "input": { "code": code, "name": "Sweep", "kind": "MANUAL", "currency": "EUR", "fixedAmount": 1, "wageringMultiplier": 1, "validDays": 1 } }),
        )
        .await?;
    let calls = calls(&user, &other, &wallet, &code);

    // Every string argument of every mutation has a call that carries it.
    let paths = super::schema::argument_paths(&platform, &["String"]).await?;
    let mut swept = Vec::new();
    for path in paths.keys().filter(|p| p.starts_with("Mutation.")) {
        let (field, argument) = path
            .trim_start_matches("Mutation.")
            .trim_end_matches(')')
            .split_once('(')
            .ok_or_else(|| anyhow::anyhow!("odd path {path}"))?;
        let call = calls
            .iter()
            .find(|call| call.mutation == field)
            .ok_or_else(|| anyhow::anyhow!("{path}: no call covers this mutation"))?;
        anyhow::ensure!(
            with_value(call.query, &call.variables, argument, "x").is_some(),
            "{path}: the call for {field} does not carry this argument"
        );
        swept.push((path.clone(), call, argument.to_owned()));
    }

    let user_before = platform
        .data(Some(&user.access_token), USER_SNAPSHOT, json!({}))
        .await?;
    let admin_before = platform
        .data(Some(&admin.access_token), ADMIN_SNAPSHOT, json!({}))
        .await?;
    for size in [OVER_LIMIT, MEGABYTE] {
        let value = "é".repeat(size / 2);
        for (path, call, argument) in &swept {
            let variables = with_value(call.query, &call.variables, argument, &value)
                .ok_or_else(|| anyhow::anyhow!("{path}"))?;
            let token = match call.caller {
                Caller::Anonymous => None,
                Caller::User => Some(user.access_token.as_str()),
                Caller::Admin => Some(admin.access_token.as_str()),
            };
            let body = platform.gql(token, call.query, variables).await?;
            let (code, field) = EXPECTED
                .iter()
                .find(|(expected, ..)| expected == path)
                .map(|(_, code, field)| (*code, *field))
                .ok_or_else(|| anyhow::anyhow!("{path}: no expected answer"))?;
            assert_eq!(
                first_code(&body).as_deref(),
                Some(code),
                "{path}, {size} bytes: {}",
                clip(&body)
            );
            if let Some(field) = field {
                assert_eq!(
                    body["errors"][0]["extensions"]["field"],
                    json!(field),
                    "{path}: {}",
                    clip(&body)
                );
            }
            assert!(
                body["data"].is_null() || body["data"][call.mutation].is_null(),
                "{path}: {}",
                clip(&body)
            );
            // The refusal does not echo the value back.
            assert!(body.to_string().len() < 10_000, "{path}: {}", clip(&body));
            still_serves(&platform).await?;
        }
    }
    let user_after = platform
        .data(Some(&user.access_token), USER_SNAPSHOT, json!({}))
        .await?;
    let admin_after = platform
        .data(Some(&admin.access_token), ADMIN_SNAPSHOT, json!({}))
        .await?;
    assert_eq!(user_before, user_after, "an oversized value was stored");
    assert_eq!(admin_before, admin_after, "an oversized value was stored");
    platform.shutdown().await
}
