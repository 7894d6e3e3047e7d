//! Spawns the benchmark subgraphs and a gateway in front of them, on port 0.

use std::sync::Arc;

use gateway::testing::BenchSubgraphs;
use gateway::{Application, Gateway, GatewayDeps, GatewaySettings};
use serde_json::Value;
use service_core::auth::{
    JwtSettings, KeySet, SigningKey, TokenIssuer, TokenSubject, TokenVerifier,
};
use service_core::config::AppEnv;
use service_core::db::{DbConfig, NamingStrategy, PoolSettings};

pub struct TestApp {
    pub address: String,
    pub subgraphs: BenchSubgraphs,
    pub gateway: Gateway,
    pub issuer: TokenIssuer,
    pub client: reqwest::Client,
    /// The gateway's own embedded database (its config store) lives here.
    pub data_dir: tempfile::TempDir,
}

pub struct Options {
    pub settings: GatewaySettings,
    pub app_env: AppEnv,
    pub redis: Option<service_core::redis::RedisAccessor>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            settings: GatewaySettings {
                addr: "127.0.0.1:0".to_owned(),
                ..GatewaySettings::default()
            },
            app_env: AppEnv::Development,
            redis: None,
        }
    }
}

pub fn jwt_settings() -> JwtSettings {
    JwtSettings::new("payment-platform", "payment-platform-api")
}

pub async fn spawn_app() -> TestApp {
    spawn_with(Options::default()).await
}

pub async fn spawn_with(options: Options) -> TestApp {
    let subgraphs = BenchSubgraphs::spawn("127.0.0.1", None)
        .await
        .expect("subgraphs");
    let key = SigningKey::generate("test-key").expect("key");
    let verifier = TokenVerifier::new(KeySet::default().with(key.verifying_key()), jwt_settings());
    let issuer = TokenIssuer::new(key, jwt_settings());
    let mut settings = options.settings;
    settings.subgraphs = subgraphs.endpoints.clone();
    let data_dir = tempfile::tempdir().expect("data dir");
    settings.database = Some(database_config(&data_dir));
    let gateway = Gateway::build(
        settings,
        GatewayDeps {
            app_env: options.app_env,
            verifier: Some(Arc::new(verifier)),
            access: Arc::new(access_engine::default_policy()),
            redis: options.redis,
        },
    )
    .await
    .expect("gateway builds");
    subgraphs.log.clear();
    let app = Application::bind(gateway.clone()).await.expect("bind");
    let address = format!("http://{}", app.local_addr().expect("addr"));
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        subgraphs,
        gateway,
        issuer,
        client: reqwest::Client::new(),
        data_dir,
    }
}

/// The gateway's embedded database under `dir` (service `gateway`,
/// default naming).
pub fn database_config(dir: &tempfile::TempDir) -> DbConfig {
    DbConfig {
        mongodb_uri: None,
        data_dir: dir.path().to_path_buf(),
        brand: "default".to_owned(),
        tenant: "default".to_owned(),
        service: gateway::config::SERVICE.to_owned(),
        naming: NamingStrategy::default(),
        embedded: service_core::db::EmbeddedEngine::default(),
        pool: PoolSettings::default(),
    }
}

impl TestApp {
    pub fn token(&self, user: &str, roles: &[&str]) -> String {
        let issued = self
            .issuer
            .issue(&TokenSubject {
                user_id: user.to_owned(),
                tenant_id: "default".to_owned(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                permissions: Vec::new(),
                session_id: "s1".to_owned(),
            })
            .expect("token");
        issued.token
    }

    pub async fn post(&self, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}/graphql", self.address))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn query(&self, query: &str) -> Value {
        self.post(serde_json::json!({ "query": query }))
            .await
            .json()
            .await
            .expect("json")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.subgraphs.shutdown();
    }
}
