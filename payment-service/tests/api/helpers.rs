//! `spawn_app`, tokens, and the calls every test makes.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use payment_service::{Application, PaymentService, Settings};
use serde_json::{json, Value};
use service_core::auth::{JwtSettings, SigningKey, TokenIssuer, TokenSubject};
use service_core::events::{DomainEvent, EventBus, UserRegistered};
use service_core::{Principal, RequestContext, RequestId};
use tokio_util::sync::CancellationToken;

pub(crate) const KID: &str = "test-key";
pub(crate) const TENANT: &str = "default";

pub(crate) struct TestApp {
    pub(crate) address: String,
    pub(crate) client: reqwest::Client,
    pub(crate) issuer: TokenIssuer,
    pub(crate) service: PaymentService,
    pub(crate) bus: EventBus,
    stop: CancellationToken,
    pub(crate) data: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A user the tests act as.
#[derive(Clone, Debug)]
pub(crate) struct TestUser {
    pub(crate) id: String,
    pub(crate) token: String,
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_with(&[]).await
}

/// The service on the MongoDB wire server of `TEST_MONGODB_URI`, in a
/// database of its own.
pub(crate) async fn spawn_app_on_mongo() -> TestApp {
    let uri = std::env::var("TEST_MONGODB_URI").expect(
        "TEST_MONGODB_URI is not set: source /tmp/devenv.sh or run scripts/test.sh, which starts a MongoDB wire server",
    );
    let brand = format!("pt{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    spawn_with(&[
        ("MONGODB_URI", uri),
        ("BRAND", brand),
        ("DB_NAMING", "per-brand-service".to_owned()),
    ])
    .await
}

pub(crate) async fn spawn_with(extra: &[(&str, String)]) -> TestApp {
    let data = tempfile::tempdir().expect("temp dir");
    let dalek = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = dalek.to_pkcs8_pem(LineEnding::LF).expect("pem").to_string();
    let key = SigningKey::from_pkcs8_pem(KID, &pem).expect("key");
    let public_keys = json!({ KID: key.public_pem() }).to_string();
    let mut vars: Vec<(String, String)> = [
        ("PAYMENT_ADDR", "127.0.0.1:0".to_owned()),
        ("PAYMENT_RECONCILE_INTERVAL_SECONDS", "0".to_owned()),
        ("PAYMENT_RECOVERY_INTERVAL_SECONDS", "0".to_owned()),
        ("DATA_DIR", data.path().display().to_string()),
        ("JWT_PUBLIC_KEYS", public_keys),
        ("LOG_FORMAT", "pretty".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    vars.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    let settings = Settings::from_vars(vars).expect("settings");
    let app = Application::build(settings).await.expect("build");
    let port = app.port();
    let stop = app.shutdown_token();
    let service = app.service().clone();
    let bus = app.event_bus().clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
        issuer: TokenIssuer::new(
            key,
            JwtSettings::new("payment-platform", "payment-platform-api"),
        ),
        service,
        bus,
        stop,
        data,
    }
}

pub(crate) fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

pub(crate) fn context(user_id: &str, roles: &[&str]) -> RequestContext {
    RequestContext::new(
        RequestId::generate(),
        Some(Principal {
            user_id: user_id.to_owned(),
            tenant_id: TENANT.to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            permissions: vec![],
            session_id: "s".to_owned(),
        }),
        Arc::new(service_core::access_engine::default_policy()),
    )
}

pub(crate) const WALLET_FIELDS: &str =
    "id userId currency balance bonusBalance lockedBalance createdAt updatedAt";
pub(crate) const TX_FIELDS: &str =
    "id walletId userId type direction balanceType amount balanceAfter charge objectId objectModel description createdAt";
pub(crate) const TRANSFER_FIELDS: &str =
    "id fromUserId toUserId fromWalletId toWalletId amount currency status description createdAt completedAt";

impl TestApp {
    pub(crate) fn token(&self, user_id: &str, roles: &[&str]) -> String {
        self.issuer
            .issue(&TokenSubject {
                user_id: user_id.to_owned(),
                tenant_id: TENANT.to_owned(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                permissions: vec![],
                session_id: "s".to_owned(),
            })
            .unwrap()
            .token
    }

    /// A registered user: `user.registered` is emitted on the service's bus
    /// (as auth does), and the call returns once the service knows them.
    pub(crate) async fn user(&self) -> TestUser {
        let id = uuid::Uuid::new_v4().to_string();
        let event = UserRegistered {
            user_id: id.clone(),
            email: format!("{id}@example.com"),
            username: None,
        }
        .to_event(TENANT, Some(&id))
        .unwrap();
        self.bus.emit_event(&event).await.unwrap();
        for _ in 0..500 {
            if self.service.knows_user(&id).await {
                return TestUser {
                    token: self.token(&id, &["user"]),
                    id,
                };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the service never learned about user {id}");
    }

    pub(crate) fn admin(&self) -> String {
        self.token(&uuid::Uuid::new_v4().to_string(), &["admin"])
    }

    pub(crate) async fn gql(&self, query: &str, variables: Value, token: Option<&str>) -> Value {
        let mut request = self
            .client
            .post(format!("{}/graphql", self.address))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json body")
    }

    /// Opens `user`'s wallet in `currency`; returns its id.
    pub(crate) async fn wallet(&self, user: &TestUser, currency: &str) -> String {
        let body = self
            .gql(
                &format!(
                    "mutation($c: String!) {{ createWallet(currency: $c) {{ {WALLET_FIELDS} }} }}"
                ),
                json!({ "c": currency }),
                Some(&user.token),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
        body["data"]["createWallet"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Deposits `amount` into `wallet_id` as an admin.
    pub(crate) async fn deposit(&self, wallet_id: &str, amount: i64) -> Value {
        let admin = self.admin();
        let body = self
            .gql(
                &format!("mutation($i: DepositInput!) {{ deposit(input: $i) {{ {TX_FIELDS} }} }}"),
                json!({ "i": { "walletId": wallet_id, "amount": amount } }),
                Some(&admin),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
        body["data"]["deposit"].clone()
    }

    pub(crate) async fn transfer(&self, from: &TestUser, input: Value) -> Value {
        self.gql(
            &format!(
                "mutation($i: TransferInput!) {{ transfer(input: $i) {{ {TRANSFER_FIELDS} }} }}"
            ),
            json!({ "i": input }),
            Some(&from.token),
        )
        .await
    }

    /// The wallet as its owner reads it.
    pub(crate) async fn read_wallet(&self, user: &TestUser, wallet_id: &str) -> Value {
        let body = self
            .gql(
                &format!("query($id: ID!) {{ wallet(id: $id) {{ {WALLET_FIELDS} }} }}"),
                json!({ "id": wallet_id }),
                Some(&user.token),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
        body["data"]["wallet"].clone()
    }

    pub(crate) async fn balance(&self, user: &TestUser, wallet_id: &str) -> i64 {
        self.read_wallet(user, wallet_id).await["balance"]
            .as_i64()
            .unwrap()
    }

    /// How many ledger entries the store holds (all wallets).
    pub(crate) async fn ledger_size(&self) -> u64 {
        self.service
            .db()
            .count("transactions", &service_core::db::Filter::all())
            .await
            .unwrap()
    }
}
