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

pub(crate) struct TestApp {
    pub(crate) address: String,
    pub(crate) client: reqwest::Client,
    /// Signs with the service's own key, for tokens the tests forge.
    pub(crate) issuer: TokenIssuer,
    pub(crate) public_pem: String,
    pub(crate) app_hashes: Box<dyn Fn() -> u64 + Send + Sync>,
    pub(crate) bus: service_core::events::EventBus,
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

pub(crate) async fn spawn_app() -> TestApp {
    let data = tempfile::tempdir().expect("temp dir");
    let dalek = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = dalek.to_pkcs8_pem(LineEnding::LF).expect("pem").to_string();
    let vars = [
        ("AUTH_ADDR", "127.0.0.1:0".to_owned()),
        ("AUTH_JWT_PRIVATE_KEY", pem.clone()),
        ("AUTH_JWT_KID", KID.to_owned()),
        ("DATA_DIR", data.path().display().to_string()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let settings = Settings::from_vars(vars).expect("settings");
    let app = Application::build(settings).await.expect("build");
    let port = app.port();
    let stop = app.shutdown_token();
    let hasher = app.service().hasher().clone();
    let bus = app.event_bus().clone();
    tokio::spawn(app.run_until_stopped());
    let key = SigningKey::from_pkcs8_pem(KID, &pem).expect("key");
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
        public_pem: key.public_pem().to_owned(),
        issuer: TokenIssuer::new(key, jwt_settings()),
        app_hashes: Box::new(move || hasher.hash_count()),
        bus,
        stop,
        _data: data,
    }
}

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
