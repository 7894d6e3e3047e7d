//! The few public-API calls the benchmarks make against a gateway they did
//! not start in-process (a [`ChildPlatform`](super::launcher::ChildPlatform)):
//! sign-up, sign-in, wallets, deposits and the admin's read of the books.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use serde_json::{json, Value};

use crate::{text, Session};

/// The fields of `AuthPayload` the benchmarks read.
const AUTH_PAYLOAD: &str = "accessToken refreshToken user { id email }";

/// A GraphQL client of one gateway. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    graphql_url: String,
}

impl Api {
    /// A client of the gateway at `graphql_url`, keeping up to `connections`
    /// idle connections so closed-loop workers reuse theirs.
    pub fn new(graphql_url: &str, connections: usize) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(connections.max(1))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            client,
            graphql_url: graphql_url.to_owned(),
        })
    }

    /// The gateway's `/graphql` URL.
    pub fn graphql_url(&self) -> &str {
        &self.graphql_url
    }

    /// The underlying HTTP client.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Runs `query` with `variables`; the answer's JSON body, whatever it
    /// holds. A transport failure or a body that is not JSON is an error.
    pub async fn gql(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .client
            .post(&self.graphql_url)
            .header("accept", "application/graphql-response+json")
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        serde_json::from_slice(&bytes).with_context(|| format!("HTTP {status} without a JSON body"))
    }

    /// Like [`Api::gql`], but any error in the answer is a failure; `data`.
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

    /// Registers a new user named after `label`; their session.
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
        session(&data["register"], &password)
    }

    /// Signs in with email and password.
    pub async fn login(&self, email: &str, password: &str) -> anyhow::Result<Session> {
        let data = self
            .data(
                None,
                &format!(
                    "mutation($input: LoginInput!) {{ login(input: $input) {{ {AUTH_PAYLOAD} }} }}"
                ),
                json!({ "input": { "email": email, "password": password } }),
            )
            .await?;
        session(&data["login"], password)
    }

    /// Opens `owner`'s wallet in `currency`; its id.
    pub async fn create_wallet(&self, owner: &Session, currency: &str) -> anyhow::Result<String> {
        let data = self
            .data(
                Some(&owner.access_token),
                "mutation($c: String!) { createWallet(currency: $c) { id } }",
                json!({ "c": currency }),
            )
            .await?;
        text(&data["createWallet"]["id"])
    }

    /// Deposits `amount` into `wallet_id` as `admin`; the transaction
    /// (`id`, `balanceAfter`).
    pub async fn deposit(
        &self,
        admin: &Session,
        wallet_id: &str,
        amount: i64,
    ) -> anyhow::Result<Value> {
        let data = self
            .data(
                Some(&admin.access_token),
                "mutation($input: DepositInput!) { deposit(input: $input) { id balanceAfter } }",
                json!({ "input": {
                    "walletId": wallet_id,
                    "amount": amount,
                    "idempotencyKey": uuid::Uuid::new_v4().to_string(),
                    "description": "benchmark deposit",
                } }),
            )
            .await?;
        Ok(data["deposit"].clone())
    }

    /// Every wallet of every user as the admin reads them (`id`, `userId`,
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

fn session(payload: &Value, password: &str) -> anyhow::Result<Session> {
    let field =
        |value: &Value| text(value).map_err(|_| anyhow!("missing field in AuthPayload {payload}"));
    Ok(Session {
        id: field(&payload["user"]["id"])?,
        email: field(&payload["user"]["email"])?,
        password: password.to_owned(),
        access_token: field(&payload["accessToken"])?,
        refresh_token: field(&payload["refreshToken"])?,
    })
}
