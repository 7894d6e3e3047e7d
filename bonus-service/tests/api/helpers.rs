//! `spawn_app` and the calls every test makes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bonus_service::store::{BonusStatus, UserBonus};
use bonus_service::{Application, BonusService, Settings};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use serde_json::{json, Value};
use service_core::auth::{JwtSettings, SigningKey, TokenIssuer, TokenSubject};
use service_core::db::{Database, Filter, Update};
use service_core::events::{handler, DomainEvent, Event, EventBus};
use service_core::recovery::RecoveryJob;
use tokio_util::sync::CancellationToken;

use crate::payment::PaymentResponder;

pub(crate) const KID: &str = "test-key";
pub(crate) const TENANT: &str = "default";
/// How long a test waits for the asynchronous saga before it gives up and
/// shows the state (a bound on a hang, not a timing assertion).
const PATIENCE: Duration = Duration::from_secs(30);

pub(crate) struct TestApp {
    pub(crate) address: String,
    pub(crate) client: reqwest::Client,
    pub(crate) issuer: TokenIssuer,
    pub(crate) bus: EventBus,
    pub(crate) service: BonusService,
    pub(crate) jobs: Arc<RecoveryJob>,
    pub(crate) db: Arc<Database>,
    pub(crate) payment: PaymentResponder,
    /// Counts of `bonus.awarded`, `bonus.converted`, `bonus.expired` by user bonus.
    pub(crate) emitted: Arc<Mutex<HashMap<(String, String), u32>>>,
    stop: CancellationToken,
    _data: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
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
    let brand = format!("bt{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    spawn_with(&[
        ("MONGODB_URI", uri),
        ("BRAND", brand),
        ("DB_NAMING", "per-brand-service".to_owned()),
    ])
    .await
}

async fn spawn_with(extra: &[(&str, String)]) -> TestApp {
    let data = tempfile::tempdir().expect("temp dir");
    let dalek = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = dalek.to_pkcs8_pem(LineEnding::LF).expect("pem").to_string();
    let key = SigningKey::from_pkcs8_pem(KID, &pem).expect("key");
    let public_keys = json!({ KID: key.public_pem() }).to_string();
    let mut vars: Vec<(String, String)> = [
        ("BONUS_ADDR", "127.0.0.1:0".to_owned()),
        ("BONUS_JOBS_ENABLED", "false".to_owned()),
        ("DATA_DIR", data.path().display().to_string()),
        ("JWT_PUBLIC_KEYS", public_keys),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    let settings = Settings::from_vars(vars).expect("settings");
    let app = Application::build(settings).await.expect("build");
    let port = app.port();
    let stop = app.shutdown_token();
    let bus = app.event_bus().clone();
    let service = app.service().clone();
    let jobs = app.jobs();
    let db = app.database().clone();
    let payment = PaymentResponder::attach(&bus).await;
    let emitted = Arc::new(Mutex::new(HashMap::new()));
    let record = emitted.clone();
    bus.on_pattern(
        "bonus.*",
        "test-recorder",
        handler(move |event: Event| {
            let record = record.clone();
            async move {
                let id = event.data["userBonusId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                *record
                    .lock()
                    .unwrap()
                    .entry((event.event_type.clone(), id))
                    .or_insert(0) += 1;
                Ok(())
            }
        }),
    )
    .await
    .expect("recorder");
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
        issuer: TokenIssuer::new(
            key,
            JwtSettings::new("payment-platform", "payment-platform-api"),
        ),
        bus,
        service,
        jobs,
        db,
        payment,
        emitted,
        stop,
        _data: data,
    }
}

pub(crate) fn new_user() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub(crate) fn unique_code(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        uuid::Uuid::new_v4().simple().to_string()[..10].to_ascii_uppercase()
    )
}

pub(crate) fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

pub(crate) fn field(body: &Value) -> &str {
    body["errors"][0]["extensions"]["field"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field in {body}"))
}

pub(crate) const BONUS: &str = "id userId templateCode amount currency status wageringRequired wageringProgress pendingMovement settledAmount failureReason expiresAt createdAt user { id }";
pub(crate) const TEMPLATE: &str =
    "id code name kind currency fixedAmount percent maxAmount wageringMultiplier validDays active";

/// A template to create: WELCOME/MANUAL with a fixed amount, or DEPOSIT_MATCH.
pub(crate) fn template_input(kind: &str, code: &str) -> Value {
    let mut input = json!({
        "code": code,
        "name": format!("{kind} bonus"),
        "kind": kind,
        "currency": "EUR",
        "wageringMultiplier": 10,
        "validDays": 30,
    });
    if kind == "DEPOSIT_MATCH" {
        input["percent"] = json!(50);
        input["maxAmount"] = json!(5_000);
    } else {
        input["fixedAmount"] = json!(1_000);
    }
    input
}

impl TestApp {
    pub(crate) fn token(&self, user_id: &str, roles: &[&str]) -> String {
        self.issuer
            .issue(&TokenSubject {
                user_id: user_id.to_owned(),
                tenant_id: TENANT.to_owned(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                permissions: vec![],
                session_id: uuid::Uuid::new_v4().to_string(),
            })
            .expect("token")
            .token
    }

    pub(crate) fn user_token(&self, user_id: &str) -> String {
        self.token(user_id, &["user"])
    }

    pub(crate) fn admin_token(&self) -> String {
        self.token(&new_user(), &["admin"])
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

    pub(crate) async fn create_template_raw(&self, input: Value, token: Option<&str>) -> Value {
        self.gql(
            &format!(
                "mutation($input: BonusTemplateInput!) {{ createBonusTemplate(input: $input) {{ {TEMPLATE} }} }}"
            ),
            json!({ "input": input }),
            token,
        )
        .await
    }

    /// Creates a template as an admin; panics on an error.
    pub(crate) async fn create_template(&self, input: Value) -> Value {
        let body = self
            .create_template_raw(input, Some(&self.admin_token()))
            .await;
        assert!(body["errors"].is_null(), "{body}");
        body["data"]["createBonusTemplate"].clone()
    }

    pub(crate) async fn claim(&self, code: &str, token: &str) -> Value {
        self.gql(
            &format!("mutation($code: String!) {{ claimBonus(code: $code) {{ {BONUS} }} }}"),
            json!({ "code": code }),
            Some(token),
        )
        .await
    }

    pub(crate) async fn award(&self, user_id: &str, code: &str, token: &str) -> Value {
        self.gql(
            &format!(
                "mutation($u: ID!, $code: String!) {{ awardBonus(userId: $u, code: $code) {{ {BONUS} }} }}"
            ),
            json!({ "u": user_id, "code": code }),
            Some(token),
        )
        .await
    }

    pub(crate) async fn forfeit(&self, id: &str, token: &str) -> Value {
        self.gql(
            &format!("mutation($id: ID!) {{ forfeitBonus(id: $id) {{ {BONUS} }} }}"),
            json!({ "id": id }),
            Some(token),
        )
        .await
    }

    /// Publishes `payload` about `user` and returns the event (to deliver
    /// it again).
    pub(crate) async fn publish<E: DomainEvent>(&self, payload: &E, user: &str) -> Event {
        let event = payload.to_event(TENANT, Some(user)).expect("event");
        self.bus.emit_event(&event).await.expect("emit");
        event
    }

    pub(crate) async fn bonuses(&self, user: &str) -> Vec<UserBonus> {
        self.service.bonuses_of(user).await.expect("bonuses")
    }

    /// Waits until `check` holds for the user's bonuses; panics with them
    /// after [`PATIENCE`].
    pub(crate) async fn wait_for_bonuses(
        &self,
        user: &str,
        what: &str,
        check: impl Fn(&[UserBonus]) -> bool,
    ) -> Vec<UserBonus> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let bonuses = self.bonuses(user).await;
            if check(&bonuses) {
                return bonuses;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gave up waiting for {what}; the bonuses are {bonuses:#?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the user has `n` bonuses, all in `status`.
    pub(crate) async fn wait_for_status(
        &self,
        user: &str,
        n: usize,
        status: BonusStatus,
    ) -> Vec<UserBonus> {
        self.wait_for_bonuses(user, &format!("{n} bonuses {status:?}"), |b| {
            b.len() == n && b.iter().all(|b| b.status == status && b.pending.is_none())
        })
        .await
    }

    /// Sets a stored bonus field below the API (a clock moved forward).
    pub(crate) async fn set_field(&self, id: &str, field: &str, value: Value) {
        self.db
            .update_one(
                "user_bonuses",
                &Filter::id(id),
                &Update::new().set(field, value),
            )
            .await
            .expect("update")
            .expect("bonus exists");
    }

    pub(crate) fn emitted(&self, event_type: &str, user_bonus_id: &str) -> u32 {
        *self
            .emitted
            .lock()
            .unwrap()
            .get(&(event_type.to_owned(), user_bonus_id.to_owned()))
            .unwrap_or(&0)
    }

    /// Waits until `event_type` was published for `user_bonus_id`.
    pub(crate) async fn wait_for_emitted(&self, event_type: &str, user_bonus_id: &str) {
        wait_until(&format!("{event_type} for {user_bonus_id}"), || async {
            (self.emitted(event_type, user_bonus_id) > 0).then_some(())
        })
        .await;
    }
}

/// Polls `probe` until it returns `Some`; panics after [`PATIENCE`].
pub(crate) async fn wait_until<T, F, Fut>(what: &str, probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
