//! Whole-system tests: a [`Platform`] starts the four subgraphs and the
//! federated gateway in this process, each a real HTTP server on a loopback
//! port, and the tests in `tests/` drive it only through the gateway's
//! public HTTP API (`API.md`). [`load`] drives the benchmarks' and the
//! soak's traffic.
//!
//! Every platform is private to its test: its own Ed25519 signing key (the
//! auth service signs, every subgraph and the gateway verify), its own
//! bootstrap admin, its own temporary data directory, and in
//! [`Mode::RedisMongo`] its own brand, which names its MongoDB databases and
//! prefixes its Redis keys. Settings are built from explicit variable lists,
//! never from the process environment, so tests run in parallel.
#![warn(missing_docs)]

pub mod bench;
mod client;
pub mod faults;
pub mod feeds;
pub mod load;
pub mod soak;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use serde_json::{json, Value};
use service_core::auth::{JwtSettings, SigningKey, TokenIssuer, TokenSubject};
use service_core::config::{CommonConfig, LayeredConfig};
use service_core::events::{BusConfig, EventBus};
use service_core::redis::{KeyPrefix, RedisAccessor, RedisUrl};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use client::{error_codes, first_code, text, Answer, GatewayClient, Session};

/// The variable naming the Redis of [`Mode::RedisMongo`] (set by `scripts/test.sh`).
pub const REDIS_VAR: &str = "TEST_REDIS_URL";
/// The variable naming the MongoDB wire server of [`Mode::RedisMongo`].
pub const MONGODB_VAR: &str = "TEST_MONGODB_URI";

/// The `kid` of the key each platform signs its access tokens with.
const KID: &str = "e2e";

/// Which stores the platform runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The defaults of a bare laptop: the embedded store, no Redis, the
    /// in-process event bus.
    Embedded,
    /// MongoDB (the wire server of `TEST_MONGODB_URI`) for every service and
    /// Redis (`TEST_REDIS_URL`) for the event bus, caches, queues and rate
    /// budgets. A missing variable fails the test; it never skips.
    RedisMongo,
}

/// One of the four subgraphs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subgraph {
    /// Accounts, sessions and tokens.
    Auth,
    /// Wallets, the ledger and transfers.
    Payment,
    /// Bonus templates and awards.
    Bonus,
    /// Notifications and preferences.
    Notification,
}

impl Subgraph {
    /// Every subgraph, in start-up order.
    pub const ALL: [Subgraph; 4] = [
        Subgraph::Auth,
        Subgraph::Payment,
        Subgraph::Bonus,
        Subgraph::Notification,
    ];

    /// Its service name (the name the gateway composes it under).
    pub fn name(self) -> &'static str {
        match self {
            Subgraph::Auth => auth_service::SERVICE,
            Subgraph::Payment => payment_service::SERVICE,
            Subgraph::Bonus => bonus_service::SERVICE,
            Subgraph::Notification => notification_service::SERVICE,
        }
    }

    /// The variable its listening address is read from.
    fn addr_var(self) -> &'static str {
        match self {
            Subgraph::Auth => "AUTH_ADDR",
            Subgraph::Payment => "PAYMENT_ADDR",
            Subgraph::Bonus => "BONUS_ADDR",
            Subgraph::Notification => "NOTIFICATION_ADDR",
        }
    }
}

/// A server running on a task of the test's runtime.
struct Running {
    port: u16,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    fn spawn(
        port: u16,
        stop: CancellationToken,
        run: impl Future<Output = std::io::Result<()>> + Send + 'static,
    ) -> Self {
        Self {
            port,
            stop,
            task: tokio::spawn(run),
        }
    }

    /// Stops the server and waits until it has drained and let go of its port.
    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await.context("server task")?.context("server")
    }
}

/// How a [`Platform`] starts. By default it is fresh and private to one
/// test: a temporary data directory removed with it, a new signing key, a
/// random brand and bootstrap admin. A platform that must come back on the
/// same books after its process died (`platform-node`, the crash test)
/// names all four, so a restart opens the same stores, accepts the tokens
/// handed out before and signs the same admin in.
pub struct PlatformOptions {
    mode: Mode,
    data_dir: Option<PathBuf>,
    brand: Option<String>,
    signing_key_pem: Option<String>,
    admin: Option<(String, String)>,
    extra: Vec<(String, String)>,
}

impl PlatformOptions {
    /// Fresh defaults in `mode`.
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            data_dir: None,
            brand: None,
            signing_key_pem: None,
            admin: None,
            extra: Vec::new(),
        }
    }

    /// Keeps the embedded stores in `path`, which outlives the platform.
    pub fn data_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(path.into());
        self
    }

    /// The brand (it names the databases, so a restart must keep it).
    pub fn brand(mut self, brand: impl Into<String>) -> Self {
        self.brand = Some(brand.into());
        self
    }

    /// Signs access tokens with this Ed25519 key (PKCS#8 PEM, see
    /// [`generate_signing_key_pem`]).
    pub fn signing_key_pem(mut self, pem: impl Into<String>) -> Self {
        self.signing_key_pem = Some(pem.into());
        self
    }

    /// The bootstrap admin's email and password.
    pub fn admin(mut self, email: impl Into<String>, password: impl Into<String>) -> Self {
        self.admin = Some((email.into(), password.into()));
        self
    }

    /// Gives `key = value` to every service and the gateway after the
    /// defaults (`PAYMENT_RECOVERY_INTERVAL_SECONDS`, ...); a later value
    /// of the same key wins.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.extra.retain(|(name, _)| *name != key);
        self.extra.push((key, value.into()));
        self
    }
}

/// A new Ed25519 signing key as PKCS#8 PEM, for
/// [`PlatformOptions::signing_key_pem`].
pub fn generate_signing_key_pem() -> anyhow::Result<String> {
    let dalek = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    Ok(dalek
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|err| anyhow!("signing key: {err}"))?
        .to_string())
}

/// The gateway and the four subgraphs of one test; the [`GatewayClient`]
/// helpers (`gql`, `register`, `deposit`, ...) are called on it directly.
pub struct Platform {
    api: GatewayClient,
    vars: Vec<(String, String)>,
    bus: EventBus,
    subgraphs: BTreeMap<Subgraph, Running>,
    /// The ports of stopped subgraphs, for their restart.
    stopped: BTreeMap<Subgraph, u16>,
    gateway: Option<Running>,
    issuer: TokenIssuer,
    /// The PKCS#8 PEM of the platform's signing key, for tokens the tests
    /// craft claim by claim.
    signing_pem: String,
    /// The PEM of its public key (what `JWT_PUBLIC_KEYS` trusts).
    public_pem: String,
    /// The temporary data directory, unless the options named one.
    _data: Option<tempfile::TempDir>,
}

impl std::ops::Deref for Platform {
    type Target = GatewayClient;

    fn deref(&self) -> &GatewayClient {
        &self.api
    }
}

impl Platform {
    /// Starts the four subgraphs on one shared event bus and the gateway in
    /// front of them, all on free loopback ports.
    pub async fn start(mode: Mode) -> anyhow::Result<Self> {
        Self::start_with(mode, &[]).await
    }

    /// [`Platform::start`] with `extra` settings (`GATEWAY_RATE_LIMIT_BURST`,
    /// ...) given to every service and the gateway after the defaults.
    pub async fn start_with(mode: Mode, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let options = extra
            .iter()
            .fold(PlatformOptions::new(mode), |options, (key, value)| {
                options.set(*key, *value)
            });
        Self::start_options(options).await
    }

    /// Starts a platform as `options` say (see [`PlatformOptions`]).
    pub async fn start_options(options: PlatformOptions) -> anyhow::Result<Self> {
        let PlatformOptions {
            mode,
            data_dir,
            brand,
            signing_key_pem,
            admin,
            extra,
        } = options;
        let (data, data_path) = match data_dir {
            Some(path) => (None, path),
            None => {
                let data = tempfile::tempdir().context("temporary data directory")?;
                let path = data.path().to_path_buf();
                (Some(data), path)
            }
        };
        let brand = brand
            .unwrap_or_else(|| format!("e2e{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
        let private_pem = match signing_key_pem {
            Some(pem) => pem,
            None => generate_signing_key_pem()?,
        };
        let key = SigningKey::from_pkcs8_pem(KID, &private_pem)?;
        let public_pem = key.public_pem().to_owned();
        let public_keys = json!({ KID: public_pem }).to_string();
        let (admin_email, admin_password) = admin.unwrap_or_else(|| {
            (
                format!("admin-{brand}@example.com"),
                format!("Admin-{}", uuid::Uuid::new_v4().simple()),
            )
        });

        let mut vars: Vec<(String, String)> = vec![
            ("APP_ENV".into(), "development".into()),
            ("BRAND".into(), brand.clone()),
            ("DATA_DIR".into(), data_path.display().to_string()),
            ("JWT_PUBLIC_KEYS".into(), public_keys),
            ("AUTH_JWT_PRIVATE_KEY".into(), private_pem.clone()),
            ("AUTH_JWT_KID".into(), KID.into()),
            ("AUTH_BOOTSTRAP_ADMIN_EMAIL".into(), admin_email.clone()),
            (
                "AUTH_BOOTSTRAP_ADMIN_PASSWORD".into(),
                admin_password.clone(),
            ),
            // Reconciliation runs when a test asks for the report.
            ("PAYMENT_RECONCILE_INTERVAL_SECONDS".into(), "0".into()),
        ];
        let redis = match mode {
            Mode::Embedded => None,
            Mode::RedisMongo => {
                // A `REDIS_URL` among `extra` (a fault test's own Redis)
                // replaces the suite's, for the bus and the gateway too.
                let redis = match extra.iter().find(|(key, _)| key == "REDIS_URL") {
                    Some((_, url)) => url.clone(),
                    None => required_var(REDIS_VAR)?,
                };
                let mongo = required_var(MONGODB_VAR)?;
                vars.push(("REDIS_URL".into(), redis.clone()));
                vars.push(("MONGODB_URI".into(), mongo));
                // The brand names the databases: none is shared between tests.
                vars.push(("DB_NAMING".into(), "per-brand-service".into()));
                Some(RedisUrl::parse(redis)?)
            }
        };
        vars.retain(|(name, _)| !extra.iter().any(|(key, _)| key == name));
        vars.extend(extra.iter().cloned());

        // One bus for the four services: what one emits, the others consume.
        let bus = EventBus::connect(redis.as_ref(), &brand, BusConfig::default()).await?;
        let mut platform = Self {
            api: GatewayClient::new(String::new(), admin_email, admin_password)?,
            vars,
            bus,
            subgraphs: BTreeMap::new(),
            stopped: BTreeMap::new(),
            gateway: None,
            issuer: TokenIssuer::new(key, jwt_settings()),
            signing_pem: private_pem,
            public_pem,
            _data: data,
        };
        for subgraph in Subgraph::ALL {
            platform.start_subgraph(subgraph, 0).await?;
        }
        platform.start_gateway(redis.as_ref(), &brand).await?;
        Ok(platform)
    }

    async fn start_subgraph(&mut self, subgraph: Subgraph, port: u16) -> anyhow::Result<()> {
        let mut vars = self.vars.clone();
        vars.push((subgraph.addr_var().into(), format!("127.0.0.1:{port}")));
        let bus = Some(self.bus.clone());
        let running = match subgraph {
            Subgraph::Auth => {
                let settings = auth_service::Settings::from_vars(vars)?;
                let app = auth_service::Application::build_with_bus(settings, bus).await?;
                Running::spawn(app.port(), app.shutdown_token(), app.run_until_stopped())
            }
            Subgraph::Payment => {
                let settings = payment_service::Settings::from_vars(vars)?;
                let app = payment_service::Application::build_with_bus(settings, bus).await?;
                Running::spawn(app.port(), app.shutdown_token(), app.run_until_stopped())
            }
            Subgraph::Bonus => {
                let settings = bonus_service::Settings::from_vars(vars)?;
                let app = bonus_service::Application::build_with_bus(settings, bus).await?;
                Running::spawn(app.port(), app.shutdown_token(), app.run_until_stopped())
            }
            Subgraph::Notification => {
                let settings = notification_service::Settings::from_vars(vars)?;
                let app = notification_service::Application::build_with_bus(settings, bus).await?;
                Running::spawn(app.port(), app.shutdown_token(), app.run_until_stopped())
            }
        };
        self.subgraphs.insert(subgraph, running);
        Ok(())
    }

    async fn start_gateway(&mut self, redis: Option<&RedisUrl>, brand: &str) -> anyhow::Result<()> {
        let subgraphs = self
            .subgraphs
            .iter()
            .map(|(subgraph, running)| {
                format!(
                    "{}=http://127.0.0.1:{}/graphql",
                    subgraph.name(),
                    running.port
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let mut vars = self.vars.clone();
        vars.extend([
            ("GATEWAY_ADDR".into(), "127.0.0.1:0".into()),
            ("GATEWAY_SUBGRAPHS".into(), subgraphs),
            // A stopped subgraph's breaker probes again soon after it is back.
            ("GATEWAY_BREAKER_RESET_MS".into(), "200".into()),
        ]);
        let settings = gateway::GatewaySettings::from_vars(vars.clone())?;
        let common: CommonConfig = LayeredConfig::new(CommonConfig::spec())
            .with_env(vars)?
            .build()?;
        // The gateway refuses tokens of ended sessions, as it does in the
        // launcher: it follows the auth service's revocations on the bus.
        let verifier = service_core::auth::TokenVerifier::new(
            service_core::app::public_keys(&common)?,
            jwt_settings(),
        )
        .with_revocations(service_core::auth::RevocationList::follow(&self.bus).await?);
        let redis = match redis {
            Some(url) => Some(
                RedisAccessor::connect(
                    url.expose(),
                    KeyPrefix::new(brand, gateway::config::SERVICE)?,
                )
                .await?,
            ),
            None => None,
        };
        let deps = gateway::GatewayDeps {
            app_env: common.app_env,
            verifier: Some(std::sync::Arc::new(verifier)),
            access: std::sync::Arc::new(service_core::access_engine::default_policy()),
            redis,
        };
        let gateway = gateway::Gateway::build(settings, deps).await?;
        let app = gateway::Application::bind(gateway).await?;
        let port = app.port();
        self.api.graphql_url = format!("http://127.0.0.1:{port}/graphql");
        self.gateway = Some(Running::spawn(
            port,
            app.shutdown_token(),
            app.run_until_stopped(),
        ));
        Ok(())
    }

    /// The `/graphql` URL of a running subgraph, to speak to it without the
    /// gateway (to show that it enforces a rule itself).
    pub fn subgraph_url(&self, subgraph: Subgraph) -> anyhow::Result<String> {
        let running = self
            .subgraphs
            .get(&subgraph)
            .ok_or_else(|| anyhow!("{subgraph:?} is not running"))?;
        Ok(format!("http://127.0.0.1:{}/graphql", running.port))
    }

    /// Stops the gateway alone: it refuses new connections at once, lets
    /// the requests in flight finish, and returns once it has drained. The
    /// subgraphs keep running.
    pub async fn stop_gateway(&mut self) -> anyhow::Result<()> {
        let gateway = self
            .gateway
            .take()
            .ok_or_else(|| anyhow!("the gateway is not running"))?;
        gateway.stop().await
    }

    /// Stops one subgraph and waits until its port is free; the gateway
    /// keeps running in front of the hole.
    pub async fn stop_subgraph(&mut self, subgraph: Subgraph) -> anyhow::Result<()> {
        let running = self
            .subgraphs
            .remove(&subgraph)
            .ok_or_else(|| anyhow!("{subgraph:?} is not running"))?;
        let port = running.port;
        running.stop().await?;
        self.stopped.insert(subgraph, port);
        Ok(())
    }

    /// Starts a stopped subgraph again on the port it had, on the same
    /// store and bus, so the gateway's supergraph still points at it.
    pub async fn restart_subgraph(&mut self, subgraph: Subgraph) -> anyhow::Result<()> {
        let port = self
            .stopped
            .remove(&subgraph)
            .ok_or_else(|| anyhow!("{subgraph:?} was not stopped"))?;
        self.start_subgraph(subgraph, port).await
    }

    /// Stops the gateway, every subgraph and the bus, waiting for each.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(gateway) = self.gateway.take() {
            gateway.stop().await?;
        }
        let subgraphs = std::mem::take(&mut self.subgraphs);
        for (_, running) in subgraphs {
            running.stop().await?;
        }
        self.bus.shutdown().await;
        Ok(())
    }

    /// An access token for `user_id` signed with the platform's real key
    /// but issued two hours ago, so it has expired.
    pub fn expired_token(&self, user_id: &str) -> anyhow::Result<String> {
        let issued = self.issuer.issue_at(
            &user_subject(user_id),
            chrono::Utc::now() - chrono::Duration::hours(2),
        )?;
        Ok(issued.token)
    }

    /// A well-formed access token for `user_id` under the platform's `kid`,
    /// signed with another key: a forgery.
    pub fn forged_token(&self, user_id: &str) -> anyhow::Result<String> {
        let forger = TokenIssuer::new(SigningKey::generate(KID)?, jwt_settings());
        Ok(forger.issue(&user_subject(user_id))?.token)
    }

    /// An access token for `user_id` with `alg: none` and no signature.
    pub fn unsigned_token(&self, user_id: &str) -> String {
        use base64::Engine as _;
        let encode = |value: Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
        };
        let now = chrono::Utc::now().timestamp();
        let header = encode(json!({ "alg": "none", "typ": "JWT", "kid": KID }));
        let claims = encode(json!({
            "sub": user_id, "tid": "default", "roles": ["admin"], "permissions": [],
            "sid": uuid::Uuid::new_v4().to_string(), "iss": "payment-platform",
            "aud": "payment-platform-api", "iat": now, "exp": now + 600,
            "jti": uuid::Uuid::new_v4().to_string(),
        }));
        format!("{header}.{claims}.")
    }

    /// The `kid` every token of the platform carries.
    pub fn kid(&self) -> &'static str {
        KID
    }

    /// The claims of a fresh, valid access token for `user_id` (a plain
    /// user, a random session): the base the token-forging tests alter one
    /// claim at a time.
    pub fn token_claims(&self, user_id: &str) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "sub": user_id, "tid": "default", "roles": ["user"], "permissions": [],
            "sid": uuid::Uuid::new_v4().to_string(), "iss": "payment-platform",
            "aud": "payment-platform-api", "iat": now, "nbf": now, "exp": now + 600,
            "jti": uuid::Uuid::new_v4().to_string(),
        })
    }

    /// `claims` signed with the platform's real Ed25519 key under `kid`:
    /// a token whose only flaws are the ones the caller put in the claims
    /// or the `kid`.
    pub fn signed_token(&self, kid: &str, claims: &Value) -> anyhow::Result<String> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        let key = jsonwebtoken::EncodingKey::from_ed_pem(self.signing_pem.as_bytes())?;
        Ok(jsonwebtoken::encode(&header, claims, &key)?)
    }

    /// `claims` under `alg: HS256`, MACed with the platform's public key PEM
    /// as the secret: the algorithm-confusion forgery a verifier that
    /// trusts the header's `alg` would accept.
    pub fn hmac_token(&self, claims: &Value) -> anyhow::Result<String> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(KID.to_owned());
        let key = jsonwebtoken::EncodingKey::from_secret(self.public_pem.as_bytes());
        Ok(jsonwebtoken::encode(&header, claims, &key)?)
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        // A test that failed half-way still stops its servers.
        if let Some(gateway) = &self.gateway {
            gateway.stop.cancel();
        }
        for running in self.subgraphs.values() {
            running.stop.cancel();
        }
    }
}

/// What a token for a plain user carries.
fn user_subject(user_id: &str) -> TokenSubject {
    TokenSubject {
        user_id: user_id.to_owned(),
        tenant_id: "default".to_owned(),
        roles: vec!["user".to_owned()],
        permissions: Vec::new(),
        session_id: uuid::Uuid::new_v4().to_string(),
    }
}

fn jwt_settings() -> JwtSettings {
    JwtSettings::new("payment-platform", "payment-platform-api")
}

fn required_var(name: &str) -> anyhow::Result<String> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Ok(value),
        _ => bail!(
            "{name} is not set: the Redis + MongoDB whole-system tests need it \
             (scripts/test.sh starts both and sets {REDIS_VAR} and {MONGODB_VAR}); \
             see docs/testing.md"
        ),
    }
}

/// Polls `probe` until it answers `Some`, for at most `timeout`; events
/// cross services asynchronously, so the tests wait for them instead of
/// assuming how long they take.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(found) = probe().await? {
            return Ok(found);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the condition did not hold within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
