//! `spawn_app`: a trivial subgraph built with the server kit on port 0.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_graphql::{EmptySubscription, Object, Schema};
use futures::future::BoxFuture;
use service_core::auth::{
    JwtSettings, KeySet, SigningKey, TokenIssuer, TokenSubject, TokenVerifier,
};
use service_core::server::{HealthCheck, Server, Subgraph};
use service_core::telemetry::Metrics;
use service_core::{ApiError, ApiResult, RequestContext};
use tokio_util::sync::CancellationToken;

pub(crate) struct Query;

#[Object]
impl Query {
    /// Who is calling, as the request context sees it.
    async fn whoami(&self, ctx: &async_graphql::Context<'_>) -> Option<String> {
        ctx.data_opt::<RequestContext>()
            .and_then(|c| c.principal())
            .map(|p| p.user_id.clone())
    }

    /// Always fails with a coded error.
    async fn fail(&self) -> async_graphql::Result<i32> {
        let result: ApiResult<i32> = Err(ApiError::not_found("widget"));
        Ok(result?)
    }

    /// A bug: panics when asked to.
    async fn explode(&self, really: bool) -> i32 {
        if really {
            panic!("resolver bug with secret detail");
        }
        0
    }
}

pub(crate) struct Mutation;

#[Object]
impl Mutation {
    async fn touch(&self) -> bool {
        true
    }
}

/// A dependency whose health the test switches.
pub(crate) struct Switch {
    pub(crate) healthy: AtomicBool,
}

impl HealthCheck for Switch {
    fn name(&self) -> &str {
        "database"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if self.healthy.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("connection refused".to_owned())
            }
        })
    }
}

pub(crate) struct TestApp {
    pub(crate) addr: SocketAddr,
    pub(crate) client: reqwest::Client,
    pub(crate) dependency: Arc<Switch>,
    pub(crate) issuer: TokenIssuer,
    stop: CancellationToken,
}

impl TestApp {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) async fn graphql(&self, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url("/graphql"))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub(crate) fn token_for(&self, user: &str) -> String {
        self.issuer
            .issue(&TokenSubject {
                user_id: user.to_owned(),
                tenant_id: "t1".to_owned(),
                roles: vec!["user".to_owned()],
                permissions: vec![],
                session_id: "s1".to_owned(),
            })
            .expect("issue")
            .token
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(crate) async fn spawn_app() -> TestApp {
    let key = SigningKey::generate("k1").expect("key");
    let settings = JwtSettings::new("test-issuer", "test-audience");
    let mut keys = KeySet::default();
    keys.insert(key.verifying_key());
    let verifier = Arc::new(TokenVerifier::new(keys, settings.clone()));
    let issuer = TokenIssuer::new(key, settings);

    let dependency = Arc::new(Switch {
        healthy: AtomicBool::new(true),
    });
    let schema = Schema::new(Query, Mutation, EmptySubscription);
    let router = Subgraph::new(
        "test",
        schema,
        Arc::new(service_core::access_engine::default_policy()),
        Metrics::new("test").expect("metrics"),
    )
    .verifier(verifier)
    .health_check(dependency.clone())
    .body_limit(64 * 1024)
    .max_batch(3)
    .router();
    let server = Server::bind("127.0.0.1:0", router).await.expect("bind");
    let addr = server.local_addr().expect("addr");
    let stop = server.shutdown_token();
    tokio::spawn(server.run_until_stopped());
    TestApp {
        addr,
        client: reqwest::Client::new(),
        dependency,
        issuer,
        stop,
    }
}
