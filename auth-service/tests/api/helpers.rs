//! `spawn_app` and the calls every test makes.

use auth_service::{Application, Settings};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use serde_json::{json, Value};
use service_core::auth::{JwtSettings, SigningKey, TokenIssuer, TokenSubject};
use tokio_util::sync::CancellationToken;

pub(crate) const PASSWORD: &str = "correct horse battery staple";
pub(crate) const KID: &str = "test-key";

/// Which store a test app runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// A fresh embedded store in a temporary directory.
    Embedded,
    /// A database of its own on the MongoDB wire server at `TEST_MONGODB_URI`.
    Mongo,
}

/// How to start a test app.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) backend: Backend,
    /// Share login counts, OTP limits and the session cache through the
    /// Redis at `TEST_REDIS_URL` (under this app's own key prefix).
    pub(crate) redis: bool,
    /// Extra variables (`AUTH_OTP_TTL_SECONDS`, ...).
    pub(crate) vars: Vec<(String, String)>,
    /// Join another app's database, Redis prefix and signing key: a second
    /// instance of the same deployment.
    pub(crate) join: Option<Deployment>,
}

impl Options {
    pub(crate) fn on(backend: Backend) -> Self {
        Self {
            backend,
            redis: false,
            vars: Vec::new(),
            join: None,
        }
    }

    pub(crate) fn with_redis(mut self) -> Self {
        self.redis = true;
        self
    }

    pub(crate) fn var(mut self, key: &str, value: impl ToString) -> Self {
        self.vars.push((key.to_owned(), value.to_string()));
        self
    }
}

/// What two instances of one deployment share.
#[derive(Clone, Debug)]
pub(crate) struct Deployment {
    brand: String,
    pem: String,
    data_dir: std::path::PathBuf,
}

pub(crate) struct TestApp {
    pub(crate) address: String,
    pub(crate) client: reqwest::Client,
    /// Signs with the service's own key, for tokens the tests forge.
    pub(crate) issuer: TokenIssuer,
    pub(crate) public_pem: String,
    pub(crate) app_hashes: Box<dyn Fn() -> u64 + Send + Sync>,
    pub(crate) bus: service_core::events::EventBus,
    pub(crate) deployment: Deployment,
    stop: CancellationToken,
    _data: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(crate) fn jwt_settings() -> JwtSettings {
    JwtSettings::new("payment-platform", "payment-platform-api")
}

fn required_env(name: &str, what: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value,
        _ => panic!(
            "{name} is not set: this test needs {what}. Run scripts/test.sh, which starts \
             it and sets {name}, or export {name} for one you started"
        ),
    }
}

/// An app on the embedded store, without Redis.
pub(crate) async fn spawn_app() -> TestApp {
    spawn_with(Options::on(Backend::Embedded)).await
}

/// An app on `backend`, without Redis.
pub(crate) async fn spawn_on(backend: Backend) -> TestApp {
    spawn_with(Options::on(backend)).await
}

pub(crate) async fn spawn_with(options: Options) -> TestApp {
    let data = tempfile::tempdir().expect("temp dir");
    let deployment = options.join.clone().unwrap_or_else(|| {
        let dalek = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        Deployment {
            // A unique brand: its own database name and Redis key prefix.
            brand: format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
            pem: dalek.to_pkcs8_pem(LineEnding::LF).expect("pem").to_string(),
            data_dir: data.path().to_path_buf(),
        }
    });
    let mut vars: Vec<(String, String)> = [
        ("AUTH_ADDR", "127.0.0.1:0".to_owned()),
        ("AUTH_JWT_PRIVATE_KEY", deployment.pem.clone()),
        ("AUTH_JWT_KID", KID.to_owned()),
        ("DATA_DIR", deployment.data_dir.display().to_string()),
        ("BRAND", deployment.brand.clone()),
        ("DB_NAMING", "per-brand-service".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .into();
    if options.backend == Backend::Mongo {
        let uri = required_env("TEST_MONGODB_URI", "the MongoDB wire server");
        vars.push(("MONGODB_URI".to_owned(), uri));
    }
    if options.redis {
        let url = required_env("TEST_REDIS_URL", "a Redis");
        vars.push(("REDIS_URL".to_owned(), url));
    }
    vars.extend(options.vars);
    let settings = Settings::from_vars(vars).expect("settings");
    let app = Application::build(settings).await.expect("build");
    let port = app.port();
    let stop = app.shutdown_token();
    let hasher = app.service().hasher().clone();
    let bus = app.event_bus().clone();
    tokio::spawn(app.run_until_stopped());
    let key = SigningKey::from_pkcs8_pem(KID, &deployment.pem).expect("key");
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
        public_pem: key.public_pem().to_owned(),
        issuer: TokenIssuer::new(key, jwt_settings()),
        app_hashes: Box::new(move || hasher.hash_count()),
        bus,
        deployment,
        stop,
        _data: data,
    }
}

/// Runs `$test(backend)` once per store: `<name>::embedded` and
/// `<name>::mongodb`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn embedded() {
                    super::$name(crate::helpers::Backend::Embedded).await;
                }

                #[tokio::test]
                async fn mongodb() {
                    super::$name(crate::helpers::Backend::Mongo).await;
                }
            }
        )*
    };
}
pub(crate) use on_both_stores;

/// Runs `$test(redis)` without and with the Redis at `TEST_REDIS_URL`:
/// `<name>::in_process` and `<name>::redis`.
macro_rules! with_and_without_redis {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn in_process() {
                    super::$name(false).await;
                }

                #[tokio::test]
                async fn redis() {
                    super::$name(true).await;
                }
            }
        )*
    };
}
pub(crate) use with_and_without_redis;

pub(crate) fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// The JSON payload of a compact JWT.
pub(crate) fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json")
}

pub(crate) fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

pub(crate) const PAYLOAD: &str =
    "accessToken refreshToken expiresIn user { id email username roles status createdAt }";

impl TestApp {
    pub(crate) async fn post(&self, body: Value, token: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/graphql", self.address))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request")
    }

    pub(crate) async fn gql(&self, query: &str, variables: Value, token: Option<&str>) -> Value {
        self.post(json!({ "query": query, "variables": variables }), token)
            .await
            .json()
            .await
            .expect("json body")
    }

    pub(crate) async fn register_with(&self, email: &str, password: &str) -> Value {
        self.gql(
            &format!(
                "mutation($input: RegisterInput!) {{ register(input: $input) {{ {PAYLOAD} }} }}"
            ),
            json!({ "input": { "email": email, "password": password } }),
            None,
        )
        .await
    }

    /// Registers a fresh user and returns the `AuthPayload`.
    pub(crate) async fn register(&self) -> Value {
        let body = self.register_with(&unique_email(), PASSWORD).await;
        assert!(body["errors"].is_null(), "{body}");
        body["data"]["register"].clone()
    }

    pub(crate) async fn login(&self, email: &str, password: &str) -> Value {
        self.gql(
            &format!("mutation($input: LoginInput!) {{ login(input: $input) {{ {PAYLOAD} }} }}"),
            json!({ "input": { "email": email, "password": password } }),
            None,
        )
        .await
    }

    pub(crate) async fn refresh(&self, refresh_token: &str) -> Value {
        self.gql(
            &format!("mutation($t: String!) {{ refreshToken(refreshToken: $t) {{ {PAYLOAD} }} }}"),
            json!({ "t": refresh_token }),
            None,
        )
        .await
    }

    pub(crate) async fn logout(&self, refresh_token: &str) -> Value {
        self.gql(
            "mutation($t: String!) { logout(refreshToken: $t) }",
            json!({ "t": refresh_token }),
            None,
        )
        .await
    }

    /// A second handle on an embedded app's store, to look at what it keeps.
    pub(crate) async fn embedded_store(&self) -> auth_service::store::Store {
        let config = service_core::db::DbConfig {
            mongodb_uri: None,
            data_dir: self.deployment.data_dir.clone(),
            brand: self.deployment.brand.clone(),
            tenant: "default".to_owned(),
            service: auth_service::SERVICE.to_owned(),
            naming: service_core::db::NamingStrategy::PerBrandService,
            embedded: service_core::db::EmbeddedEngine::default(),
            pool: service_core::db::PoolSettings::default(),
        };
        let db = service_core::db::Database::open(&config)
            .await
            .expect("open the app's embedded store");
        auth_service::store::Store::open(std::sync::Arc::new(db))
            .await
            .expect("store")
    }

    /// Sends every `event_type` event published from now on to the receiver.
    pub(crate) async fn events(
        &self,
        event_type: &str,
    ) -> tokio::sync::mpsc::UnboundedReceiver<service_core::events::Event> {
        let (sender, received) = tokio::sync::mpsc::unbounded_channel();
        self.bus
            .on(
                event_type,
                "test",
                service_core::events::handler(move |event| {
                    let sender = sender.clone();
                    async move {
                        let _ = sender.send(event);
                        Ok(())
                    }
                }),
            )
            .await
            .unwrap();
        received
    }

    /// A token for an admin: `payload`'s session with the role `admin`.
    pub(crate) async fn admin(&self) -> String {
        let someone = self.register().await;
        self.token_with_roles(&someone, &["admin"])
    }

    pub(crate) async fn me(&self, token: Option<&str>) -> Value {
        self.gql("{ me { id email roles status } }", json!({}), token)
            .await
    }

    /// An access token for the user of `payload`'s session with other roles,
    /// signed with the service's key (how an operator's token looks).
    pub(crate) fn token_with_roles(&self, payload: &Value, roles: &[&str]) -> String {
        let claims = claims(payload["accessToken"].as_str().unwrap());
        self.issuer
            .issue(&TokenSubject {
                user_id: claims["sub"].as_str().unwrap().to_owned(),
                tenant_id: claims["tid"].as_str().unwrap().to_owned(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                permissions: vec![],
                session_id: claims["sid"].as_str().unwrap().to_owned(),
            })
            .unwrap()
            .token
    }
}
