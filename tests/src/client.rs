//! The gateway's public API as the tests speak to it: [`GatewayClient`]
//! and what its helpers return.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use serde_json::{json, Value};

/// A signed-in user as the tests hold it.
#[derive(Clone, Debug)]
pub struct Session {
    /// The user's id.
    pub id: String,
    /// The email they registered with.
    pub email: String,
    /// Their password.
    pub password: String,
    /// An access token for `Authorization: Bearer`.
    pub access_token: String,
    /// The refresh token handed out with it.
    pub refresh_token: String,
}

impl Session {
    fn from_payload(payload: &Value, password: &str) -> anyhow::Result<Self> {
        let field =
            |value: &Value| text(value).with_context(|| format!("in AuthPayload {payload}"));
        Ok(Self {
            id: field(&payload["user"]["id"])?,
            email: field(&payload["user"]["email"])?,
            password: password.to_owned(),
            access_token: field(&payload["accessToken"])?,
            refresh_token: field(&payload["refreshToken"])?,
        })
    }
}

/// An HTTP answer of the gateway: status, content type and JSON body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: reqwest::StatusCode,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body, parsed (`Value::Null` when it is not JSON).
    pub body: Value,
}

/// The fields of `AuthPayload` every helper asks for.
const AUTH_PAYLOAD: &str = "accessToken refreshToken expiresIn user { id email roles }";

/// The gateway's public API as a client speaks to it: the GraphQL helpers
/// of the tests, whether the platform runs in this process ([`Platform`]
/// dereferences to it) or in another one (`platform-node`).
#[derive(Clone)]
pub struct GatewayClient {
    /// Where the gateway answers; the platform moves it when the gateway
    /// restarts on another port.
    pub(crate) graphql_url: String,
    client: reqwest::Client,
    admin_email: String,
    admin_password: String,
}

impl GatewayClient {
    /// A client of the gateway at `graphql_url` whose bootstrap admin signs
    /// in with `admin_email` and `admin_password`.
    pub fn new(
        graphql_url: impl Into<String>,
        admin_email: impl Into<String>,
        admin_password: impl Into<String>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            graphql_url: graphql_url.into(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            admin_email: admin_email.into(),
            admin_password: admin_password.into(),
        })
    }

    /// The same gateway and admin through a client that keeps up to
    /// `connections` idle connections, so closed-loop workers reuse theirs,
    /// and gives up on a request after `timeout`.
    pub fn with_pool(&self, connections: usize, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .pool_max_idle_per_host(connections.max(1))
                .tcp_nodelay(true)
                .build()?,
            ..self.clone()
        })
    }

    /// The gateway's `/graphql` URL.
    pub fn graphql_url(&self) -> &str {
        &self.graphql_url
    }

    /// The gateway's base URL (`http://127.0.0.1:<port>`).
    pub fn base_url(&self) -> &str {
        self.graphql_url
            .strip_suffix("/graphql")
            .unwrap_or(&self.graphql_url)
    }

    /// An HTTP client for requests the helpers do not cover.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Posts one GraphQL request to the gateway and returns the whole answer.
    pub async fn post(&self, token: Option<&str>, body: &Value) -> anyhow::Result<Answer> {
        let mut request = self
            .client
            .post(&self.graphql_url)
            .header("accept", "application/graphql-response+json")
            .json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await?).await
    }

    /// Runs `query` with `variables` through the gateway; the JSON body.
    pub async fn gql(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> anyhow::Result<Value> {
        let answer = self
            .post(token, &json!({ "query": query, "variables": variables }))
            .await?;
        Ok(answer.body)
    }

    /// Like [`GatewayClient::gql`], but any error in the answer is a failure;
    /// returns `data`.
    pub async fn data(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> anyhow::Result<Value> {
        let body = self.gql(token, query, variables).await?;
        if !body["errors"].is_null() || body["data"].is_null() {
            bail!("`{query}` failed: {body}");
        }
        Ok(body["data"].clone())
    }

    /// Registers a new user (`label` makes the email readable in failures)
    /// and returns their session.
    pub async fn register(&self, label: &str) -> anyhow::Result<Session> {
        let email = format!("{label}-{}@example.com", uuid::Uuid::new_v4().simple());
        let password = format!("Pass-{}", uuid::Uuid::new_v4().simple());
        let data = self
            .data(
                None,
                &format!("mutation($input: RegisterInput!) {{ register(input: $input) {{ {AUTH_PAYLOAD} }} }}"),
                json!({ "input": { "email": email, "password": password, "username": label } }),
            )
            .await?;
        Session::from_payload(&data["register"], &password)
    }

    /// Signs in with email and password; the whole answer body.
    pub async fn login(&self, email: &str, password: &str) -> anyhow::Result<Value> {
        self.gql(
            None,
            &format!(
                "mutation($input: LoginInput!) {{ login(input: $input) {{ {AUTH_PAYLOAD} }} }}"
            ),
            json!({ "input": { "email": email, "password": password } }),
        )
        .await
    }

    /// Signs the bootstrap admin in.
    pub async fn admin(&self) -> anyhow::Result<Session> {
        let body = self.login(&self.admin_email, &self.admin_password).await?;
        if !body["errors"].is_null() {
            bail!("the bootstrap admin cannot sign in: {body}");
        }
        Session::from_payload(&body["data"]["login"], &self.admin_password)
    }

    /// Opens `session`'s wallet in `currency`; its id.
    pub async fn create_wallet(&self, session: &Session, currency: &str) -> anyhow::Result<String> {
        let data = self
            .data(
                Some(&session.access_token),
                "mutation($c: String!) { createWallet(currency: $c) { id currency balance } }",
                json!({ "c": currency }),
            )
            .await?;
        text(&data["createWallet"]["id"])
    }

    /// Deposits `amount` into `wallet_id` as `admin`; the transaction's body.
    pub async fn deposit(
        &self,
        admin: &Session,
        wallet_id: &str,
        amount: i64,
    ) -> anyhow::Result<Value> {
        let data = self
            .data(
                Some(&admin.access_token),
                "mutation($input: DepositInput!) { deposit(input: $input) { id type direction amount balanceAfter walletId } }",
                json!({ "input": {
                    "walletId": wallet_id,
                    "amount": amount,
                    "idempotencyKey": uuid::Uuid::new_v4().to_string(),
                    "description": "e2e deposit",
                } }),
            )
            .await?;
        Ok(data["deposit"].clone())
    }

    /// The first page (100) of `session`'s notifications (`id`, `kind`,
    /// `userId`, `channel`).
    pub async fn notifications(&self, session: &Session) -> anyhow::Result<Vec<Value>> {
        let data = self
            .data(
                Some(&session.access_token),
                "{ myNotifications(first: 100) { nodes { id kind userId channel } } }",
                json!({}),
            )
            .await?;
        Ok(data["myNotifications"]["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// `serviceHealth` as `admin` reads it: `{ name healthy }` of each
    /// subgraph.
    pub async fn service_health(&self, admin: &Session) -> anyhow::Result<Vec<Value>> {
        let data = self
            .data(
                Some(&admin.access_token),
                "{ serviceHealth { name healthy } }",
                json!({}),
            )
            .await?;
        Ok(data["serviceHealth"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Every wallet of every user as `admin` reads them (`id`, `userId`,
    /// `balance`, `bonusBalance`, `lockedBalance`), page by page.
    pub async fn all_wallets(&self, admin: &Session) -> anyhow::Result<Vec<Value>> {
        let mut wallets = Vec::new();
        let mut after = Value::Null;
        loop {
            let data = self
                .data(
                    Some(&admin.access_token),
                    "query($after: String) { users(first: 100, after: $after) { \
                       nodes { wallets { id userId balance bonusBalance lockedBalance } } \
                       pageInfo { hasNextPage endCursor } } }",
                    json!({ "after": after }),
                )
                .await?;
            let page = &data["users"];
            for user in page["nodes"].as_array().into_iter().flatten() {
                wallets.extend(user["wallets"].as_array().into_iter().flatten().cloned());
            }
            if page["pageInfo"]["hasNextPage"] != json!(true) {
                return Ok(wallets);
            }
            after = page["pageInfo"]["endCursor"].clone();
            if after.is_null() {
                bail!("a next page without a cursor: {data}");
            }
        }
    }
}

async fn answer(response: reqwest::Response) -> anyhow::Result<Answer> {
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let bytes = response.bytes().await?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Answer {
        status,
        content_type,
        body,
    })
}

/// A string field of an answer, or a failure naming it.
pub fn text(value: &Value) -> anyhow::Result<String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("expected a string, got {value}"))
}

/// The `extensions.code` of every error in `body`, in order.
pub fn error_codes(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|error| error["extensions"]["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The `extensions.code` of the first error in `body`, if any.
pub fn first_code(body: &Value) -> Option<String> {
    error_codes(body).into_iter().next()
}
