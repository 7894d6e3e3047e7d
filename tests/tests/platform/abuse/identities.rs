//! The IDOR sweep: every query and mutation of the composed schema that
//! takes an `ID` is called by bob with alice's object ids. Each answers its
//! documented not-found or forbidden code (or nothing, where `API.md` says
//! a field is `null` for what the caller may not see), none leaks alice's
//! data, and alice's data is the same before and after.

use std::time::Duration;

use e2e::{eventually, first_code, text, Mode, Platform, Session};
use serde_json::{json, Value};

/// Everything alice can see of her own.
const SNAPSHOT: &str = "{
  me { id email username roles status }
  myWallets { id currency balance bonusBalance lockedBalance updatedAt }
  transactions(first: 100) { totalCount nodes { id type amount balanceAfter } }
  transfers(first: 100) { totalCount nodes { id status amount } }
  myBonuses(first: 100) { totalCount nodes { id status amount wageringProgress } }
  myNotifications(first: 100) { totalCount nodes { id kind status readAt } }
}";

/// What one call answers when the id is someone else's.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// The coded error, and no data for the field.
    Code(&'static str),
    /// No error: the field is `null` (not yours is the same as not there).
    Null,
}

/// Arguments whose id names another user on purpose: paying someone is
/// the point of `transfer`, so it is no ownership check.
const NOT_OWNERSHIP: &[&str] = &["Mutation.transfer(input.toUserId)"];

/// Alice's objects, which bob must not reach.
struct Alice {
    session: Session,
    ids: Ids,
}

/// One id of each kind of object.
struct Ids {
    user: String,
    wallet: String,
    transfer: String,
    bonus: String,
    notification: String,
}

impl Ids {
    /// Ids of nothing at all: an answer that differs between these and
    /// alice's would tell bob her objects exist.
    fn unknown() -> Self {
        let id = || uuid::Uuid::new_v4().to_string();
        Self {
            user: id(),
            wallet: id(),
            transfer: id(),
            bonus: id(),
            notification: id(),
        }
    }
}

async fn arrange(platform: &Platform, admin: &Session) -> anyhow::Result<(Alice, Session)> {
    let alice = platform.register("alice").await?;
    let bob = platform.register("bob").await?;
    let carol = platform.register("carol").await?;
    let wallet = platform.create_wallet(&alice, "EUR").await?;
    platform.deposit(admin, &wallet, 10_000).await?;
    let sent = platform
        .data(
            Some(&alice.access_token),
            "mutation($input: TransferInput!) { transfer(input: $input) { id status } }",
            json!({ "input": {
                "toUserId": carol.id, "amount": 1_000, "currency": "EUR",
                "idempotencyKey": uuid::Uuid::new_v4().to_string(),
            } }),
        )
        .await?;
    let transfer = text(&sent["transfer"]["id"])?;
    let code = format!("IDOR{}", &uuid::Uuid::new_v4().simple().to_string()[..8]).to_uppercase();
    platform
        .data(
            Some(&admin.access_token),
            "mutation($input: BonusTemplateInput!) { createBonusTemplate(input: $input) { id } }",
            json!({ "input": {
                "code": code, "name": "Manual", "kind": "MANUAL", "currency": "EUR",
                "fixedAmount": 500, "wageringMultiplier": 1, "validDays": 30,
            } }),
        )
        .await?;
    let awarded = platform
        .data(
            Some(&admin.access_token),
            "mutation($u: ID!, $c: String!) { awardBonus(userId: $u, code: $c) { id } }",
            json!({ "u": alice.id, "c": code }),
        )
        .await?;
    let bonus = text(&awarded["awardBonus"]["id"])?;
    // The transfer's and the award's notifications land asynchronously.
    let notification = eventually(Duration::from_secs(30), || async {
        let nodes = platform.notifications(&alice).await?;
        let has = |kind: &str| nodes.iter().any(|n| n["kind"] == kind);
        Ok((has("transfer.sent") && has("bonus.awarded"))
            .then(|| nodes[0]["id"].as_str().map(str::to_owned))
            .flatten())
    })
    .await?;
    Ok((
        Alice {
            ids: Ids {
                user: alice.id.clone(),
                wallet,
                transfer,
                bonus,
                notification,
            },
            session: alice,
        },
        bob,
    ))
}

/// Bob's call for each id-taking argument, aimed at `ids`.
fn calls(ids: &Ids) -> Vec<(&'static str, &'static str, Value, Expect)> {
    let key = || uuid::Uuid::new_v4().to_string();
    vec![
        (
            "Query.user(id)",
            "query($id: ID!) { user(id: $id) { id email } }",
            json!({ "id": ids.user }),
            Expect::Code("MSCoreForbidden"),
        ),
        (
            "Query.wallet(id)",
            "query($id: ID!) { wallet(id: $id) { id balance } }",
            json!({ "id": ids.wallet }),
            Expect::Code("MSPaymentWalletNotFound"),
        ),
        (
            "Query.transactions(walletId)",
            "query($id: ID) { transactions(walletId: $id, first: 10) { totalCount nodes { id } } }",
            json!({ "id": ids.wallet }),
            Expect::Code("MSPaymentWalletNotFound"),
        ),
        (
            "Query.transfer(id)",
            "query($id: ID!) { transfer(id: $id) { id amount } }",
            json!({ "id": ids.transfer }),
            Expect::Null,
        ),
        (
            "Query.userBonus(id)",
            "query($id: ID!) { userBonus(id: $id) { id amount } }",
            json!({ "id": ids.bonus }),
            Expect::Null,
        ),
        (
            "Mutation.deposit(input.walletId)",
            "mutation($input: DepositInput!) { deposit(input: $input) { id } }",
            json!({ "input": { "walletId": ids.wallet, "amount": 1, "idempotencyKey": key() } }),
            Expect::Code("MSCoreForbidden"),
        ),
        (
            "Mutation.withdraw(input.walletId)",
            "mutation($input: WithdrawInput!) { withdraw(input: $input) { id } }",
            json!({ "input": { "walletId": ids.wallet, "amount": 1, "idempotencyKey": key() } }),
            Expect::Code("MSPaymentWalletNotFound"),
        ),
        (
            "Mutation.forfeitBonus(id)",
            "mutation($id: ID!) { forfeitBonus(id: $id) { id status } }",
            json!({ "id": ids.bonus }),
            Expect::Code("MSCoreNotFound"),
        ),
        (
            "Mutation.markNotificationRead(id)",
            "mutation($id: ID!) { markNotificationRead(id: $id) { id status } }",
            json!({ "id": ids.notification }),
            Expect::Code("MSNotificationNotFound"),
        ),
        (
            "Mutation.assignRole(userId)",
            "mutation($id: ID!) { assignRole(userId: $id, role: \"admin\") { id roles } }",
            json!({ "id": ids.user }),
            Expect::Code("MSCoreForbidden"),
        ),
        (
            "Mutation.revokeRole(userId)",
            "mutation($id: ID!) { revokeRole(userId: $id, role: \"user\") { id roles } }",
            json!({ "id": ids.user }),
            Expect::Code("MSCoreForbidden"),
        ),
        (
            "Mutation.setUserStatus(userId)",
            "mutation($id: ID!) { setUserStatus(userId: $id, status: DISABLED) { id status } }",
            json!({ "id": ids.user }),
            Expect::Code("MSCoreForbidden"),
        ),
        (
            "Mutation.awardBonus(userId)",
            "mutation($id: ID!) { awardBonus(userId: $id, code: \"ANY\") { id } }",
            json!({ "id": ids.user }),
            Expect::Code("MSCoreForbidden"),
        ),
        (
            "Mutation.sendNotification(input.userId)",
            "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { id } }",
            json!({ "input": { "userId": ids.user, "kind": "phish", "title": "t", "body": "b" } }),
            Expect::Code("MSCoreForbidden"),
        ),
    ]
}

/// The same calls aimed at objects that do not exist.
fn calls_for_unknown() -> Vec<(&'static str, &'static str, Value, Expect)> {
    calls(&Ids::unknown())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_ids_reach_nothing_on_any_field() -> anyhow::Result<()> {
    let platform = Platform::start(Mode::Embedded).await?;
    let admin = platform.admin().await?;
    let (alice, bob) = arrange(&platform, &admin).await?;
    let calls = calls(&alice.ids);

    // Every id-taking argument of the schema is swept (or named as not an
    // ownership check), and the table names no argument the schema lacks.
    let schema = super::schema::argument_paths(&platform, &["ID"]).await?;
    let mut covered: Vec<&str> = calls.iter().map(|(path, ..)| *path).collect();
    covered.extend(NOT_OWNERSHIP);
    for path in schema.keys() {
        assert!(
            covered.contains(&path.as_str()),
            "{path} takes an id and is not swept"
        );
    }
    for path in &covered {
        assert!(schema.contains_key(*path), "{path} is not in the schema");
    }

    let before = platform
        .data(Some(&alice.session.access_token), SNAPSHOT, json!({}))
        .await?;
    let unknown = calls_for_unknown();
    for ((path, query, variables, expect), (_, _, nothing, _)) in calls.iter().zip(&unknown) {
        let body = platform
            .gql(Some(&bob.access_token), query, variables.clone())
            .await?;
        let field = body["data"]
            .as_object()
            .and_then(|data| data.values().next().cloned())
            .unwrap_or(Value::Null);
        assert!(
            field.is_null(),
            "{path} answered bob with alice's data: {body}"
        );
        match expect {
            Expect::Code(code) => {
                assert_eq!(first_code(&body).as_deref(), Some(*code), "{path}: {body}")
            }
            Expect::Null => assert_eq!(first_code(&body), None, "{path}: {body}"),
        }
        // Nothing of alice's leaks in a message either.
        assert!(
            !body.to_string().contains(&alice.session.email),
            "{path} leaked alice's email: {body}"
        );
        // An id of nothing gets the same answer: no existence oracle.
        let other = platform
            .gql(Some(&bob.access_token), query, nothing.clone())
            .await?;
        assert_eq!(
            first_code(&other),
            first_code(&body),
            "{path}: {other} vs {body}"
        );
    }
    let after = platform
        .data(Some(&alice.session.access_token), SNAPSHOT, json!({}))
        .await?;
    assert_eq!(before, after, "bob's calls changed alice's data");

    // The same calls as alice herself (or the admin, for admin fields)
    // reach the objects: the refusals above are about ownership.
    let own = platform
        .data(
            Some(&alice.session.access_token),
            "query($w: ID!, $t: ID!, $b: ID!, $u: ID!) { wallet(id: $w) { id } transfer(id: $t) { id } userBonus(id: $b) { id } user(id: $u) { id } }",
            json!({ "w": alice.ids.wallet, "t": alice.ids.transfer, "b": alice.ids.bonus, "u": alice.ids.user }),
        )
        .await?;
    assert_eq!(own["wallet"]["id"], json!(alice.ids.wallet));
    assert_eq!(own["transfer"]["id"], json!(alice.ids.transfer));
    assert_eq!(own["userBonus"]["id"], json!(alice.ids.bonus));
    assert_eq!(own["user"]["id"], json!(alice.ids.user));

    platform.shutdown().await
}
