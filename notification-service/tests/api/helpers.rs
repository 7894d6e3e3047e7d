//! `spawn_app` and the calls every test makes.

use std::future::Future;
use std::time::{Duration, Instant};

use notification_service::domain::{NewNotification, NotificationService};
use notification_service::store::{Channel, Notification, NotificationStatus};
use notification_service::{Application, Settings};
use serde_json::{json, Value};
use service_core::auth::{JwtSettings, SigningKey, TokenIssuer, TokenSubject};
use service_core::db::{Filter, FindOptions};
use service_core::events::EventBus;
use tokio_util::sync::CancellationToken;

pub(crate) const KID: &str = "test-key";
pub(crate) const TENANT: &str = "default";

pub(crate) struct TestApp {
    pub(crate) address: String,
    pub(crate) port: u16,
    pub(crate) client: reqwest::Client,
    pub(crate) issuer: TokenIssuer,
    pub(crate) service: NotificationService,
    pub(crate) bus: EventBus,
    stop: CancellationToken,
    _data: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts the service on port 0 with its own store, the test key trusted,
/// and `extra` variables (providers, policies).
pub(crate) async fn spawn_app(extra: &[(&str, String)]) -> TestApp {
    let key = SigningKey::generate(KID).expect("key");
    spawn_app_with_key(extra, key, None).await
}

pub(crate) async fn spawn_app_with_key(
    extra: &[(&str, String)],
    key: SigningKey,
    bus: Option<EventBus>,
) -> TestApp {
    let data = tempfile::tempdir().expect("temp dir");
    let keys = json!({ KID: key.public_pem() }).to_string();
    let mut vars: Vec<(String, String)> = vec![
        ("NOTIFICATION_ADDR".into(), "127.0.0.1:0".into()),
        ("DATA_DIR".into(), data.path().display().to_string()),
        ("JWT_PUBLIC_KEYS".into(), keys),
    ];
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    let settings = Settings::from_vars(vars).expect("settings");
    let app = Application::build_with_bus(settings, bus)
        .await
        .expect("build");
    let port = app.port();
    let stop = app.shutdown_token();
    let service = app.service().clone();
    let bus = app.event_bus().clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: reqwest::Client::new(),
        issuer: TokenIssuer::new(
            key,
            JwtSettings::new("payment-platform", "payment-platform-api"),
        ),
        service,
        bus,
        stop,
        _data: data,
    }
}

pub(crate) fn new_user() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub(crate) fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

/// Polls `check` until it holds; panics after a generous deadline (a hang
/// guard, not a timing assertion).
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestApp {
    /// An access token for `user_id` with `roles`, signed with the test key.
    pub(crate) fn token(&self, user_id: &str, roles: &[&str]) -> String {
        self.issuer
            .issue(&TokenSubject {
                user_id: user_id.to_owned(),
                tenant_id: TENANT.to_owned(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                permissions: vec![],
                session_id: "s1".to_owned(),
            })
            .unwrap()
            .token
    }

    pub(crate) async fn gql(&self, query: &str, variables: Value, token: Option<&str>) -> Value {
        let mut request = self
            .client
            .post(format!("{}/graphql", self.address))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    /// Creates a notification of `kind` for `user_id` directly.
    pub(crate) async fn notify(
        &self,
        user_id: &str,
        kind: &str,
        channels: Option<Vec<Channel>>,
        email: Option<&str>,
    ) -> Vec<Notification> {
        self.service
            .notify(NewNotification {
                user_id: user_id.to_owned(),
                tenant_id: TENANT.to_owned(),
                kind: kind.to_owned(),
                title: "Hello".to_owned(),
                body: format!("A {kind} notification"),
                data: Some(json!({ "n": 1 })),
                cause: uuid::Uuid::new_v4().to_string(),
                channels,
                allowed: None,
                email: email.map(str::to_owned),
            })
            .await
            .unwrap()
    }

    pub(crate) async fn notification(&self, id: &str) -> Notification {
        self.service
            .store()
            .notifications
            .get(id)
            .await
            .unwrap()
            .expect("notification exists")
    }

    pub(crate) async fn notifications_of(&self, user_id: &str) -> Vec<Notification> {
        self.service
            .store()
            .notifications
            .find(
                &Filter::all().eq("user_id", user_id.to_owned()),
                &FindOptions::by_id(),
            )
            .await
            .unwrap()
    }

    /// Waits until notification `id` is no longer pending; returns it.
    pub(crate) async fn settled(&self, id: &str) -> Notification {
        eventually(&format!("notification {id} to settle"), || async {
            self.notification(id).await.status != NotificationStatus::Pending
        })
        .await;
        self.notification(id).await
    }
}
