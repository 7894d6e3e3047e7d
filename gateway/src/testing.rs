//! Test subgraphs in the shape of the public federation benchmark
//! (accounts, inventory, products, reviews with `@key`, `@requires`,
//! `@provides` and `@external`), written here with fixed data. The
//! gateway's tests and the benchmark (`bench-subgraphs` binary) serve them
//! on loopback ports; each records the headers it received so tests can
//! check forwarding and batching, and can be switched off to test a
//! subgraph outage.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_graphql::{
    ComplexObject, Context, EmptyMutation, EmptySubscription, Error, Executor, Object, Schema,
    SimpleObject, ID,
};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::SubgraphEndpoint;

// ----- accounts -------------------------------------------------------------

#[derive(SimpleObject, Clone)]
struct User {
    id: ID,
    name: Option<String>,
    // Shareable: reviews provides it too (`@provides` on `Review.author`),
    // which Federation 2 composition requires to be declared here.
    #[graphql(shareable)]
    username: Option<String>,
}

fn users() -> Vec<User> {
    vec![
        User {
            id: ID::from("1"),
            name: Some("Ada Lovelace".to_owned()),
            username: Some("@ada".to_owned()),
        },
        User {
            id: ID::from("2"),
            name: Some("Alan Turing".to_owned()),
            username: Some("@complete".to_owned()),
        },
    ]
}

struct AccountsQuery;

#[Object(name = "Query")]
impl AccountsQuery {
    /// The signed-in user of the benchmark (always user 1).
    async fn me(&self) -> Option<User> {
        users().into_iter().next()
    }

    /// Every user.
    async fn users(&self) -> Vec<User> {
        users()
    }

    #[graphql(entity)]
    async fn find_user_by_id(&self, id: ID) -> Option<User> {
        users().into_iter().find(|u| u.id == id)
    }
}

// ----- products -------------------------------------------------------------

#[derive(SimpleObject, Clone)]
struct Product {
    upc: String,
    name: Option<String>,
    price: Option<i32>,
    weight: Option<i32>,
}

fn products() -> Vec<Product> {
    [
        ("1", "Table", 899, 100),
        ("2", "Couch", 1299, 1000),
        ("3", "Chair", 54, 50),
    ]
    .into_iter()
    .map(|(upc, name, price, weight)| Product {
        upc: upc.to_owned(),
        name: Some(name.to_owned()),
        price: Some(price),
        weight: Some(weight),
    })
    .collect()
}

struct ProductsQuery;

#[Object(name = "Query")]
impl ProductsQuery {
    /// The first products of the catalogue.
    async fn top_products(
        &self,
        #[graphql(default = 5)] first: i32,
    ) -> Option<Vec<Option<Product>>> {
        Some(
            products()
                .into_iter()
                .take(usize::try_from(first).unwrap_or(0))
                .map(Some)
                .collect(),
        )
    }

    #[graphql(entity)]
    async fn find_product_by_upc(&self, upc: String) -> Option<Product> {
        products().into_iter().find(|p| p.upc == upc)
    }
}

// ----- inventory ------------------------------------------------------------

#[derive(SimpleObject)]
#[graphql(name = "Product", complex)]
struct StockedProduct {
    upc: String,
    #[graphql(external)]
    weight: Option<i32>,
    #[graphql(external)]
    price: Option<i32>,
    in_stock: Option<bool>,
}

#[ComplexObject]
impl StockedProduct {
    /// Free above 1000, else half the weight; needs price and weight.
    #[graphql(requires = "price weight")]
    async fn shipping_estimate(&self) -> Option<i32> {
        let price = self.price?;
        let weight = self.weight?;
        Some(if price > 1000 { 0 } else { weight / 2 })
    }

    /// The warehouse code; product 2's record is broken, so this non-null
    /// field fails for it (tests null propagation).
    async fn stock_code(&self) -> async_graphql::Result<String> {
        if self.upc == "2" {
            Err(Error::new("stock record unavailable"))
        } else {
            Ok(format!("WH-{}", self.upc))
        }
    }
}

struct InventoryQuery;

#[Object(name = "Query")]
impl InventoryQuery {
    #[graphql(entity)]
    async fn find_product_by_upc(
        &self,
        #[graphql(key)] upc: String,
        price: Option<i32>,
        weight: Option<i32>,
    ) -> StockedProduct {
        StockedProduct {
            in_stock: Some(upc != "2"),
            upc,
            price,
            weight,
        }
    }
}

// ----- reviews --------------------------------------------------------------

#[derive(Clone)]
struct ReviewRow {
    id: &'static str,
    body: &'static str,
    author: &'static str,
    product: &'static str,
}

const REVIEWS: &[ReviewRow] = &[
    ReviewRow {
        id: "1",
        body: "Love it!",
        author: "1",
        product: "1",
    },
    ReviewRow {
        id: "2",
        body: "Too expensive.",
        author: "1",
        product: "2",
    },
    ReviewRow {
        id: "3",
        body: "Could be better.",
        author: "2",
        product: "3",
    },
    ReviewRow {
        id: "4",
        body: "Prefer something else.",
        author: "2",
        product: "1",
    },
];

fn username(id: &str) -> Option<String> {
    users()
        .into_iter()
        .find(|u| u.id.as_str() == id)
        .and_then(|u| u.username)
}

struct Review(ReviewRow);

#[Object]
impl Review {
    async fn id(&self) -> ID {
        ID::from(self.0.id)
    }

    async fn body(&self) -> Option<&str> {
        Some(self.0.body)
    }

    #[graphql(provides = "username")]
    async fn author(&self) -> Option<ReviewedUser> {
        Some(ReviewedUser {
            id: ID::from(self.0.author),
            username: username(self.0.author),
        })
    }

    async fn product(&self) -> Option<ReviewedProduct> {
        Some(ReviewedProduct {
            upc: self.0.product.to_owned(),
        })
    }
}

#[derive(SimpleObject)]
#[graphql(name = "User", complex)]
struct ReviewedUser {
    id: ID,
    #[graphql(external)]
    username: Option<String>,
}

#[ComplexObject]
impl ReviewedUser {
    async fn reviews(&self) -> Vec<Review> {
        REVIEWS
            .iter()
            .filter(|r| r.author == self.id.as_str())
            .cloned()
            .map(Review)
            .collect()
    }
}

#[derive(SimpleObject)]
#[graphql(name = "Product", complex)]
struct ReviewedProduct {
    upc: String,
}

#[ComplexObject]
impl ReviewedProduct {
    async fn reviews(&self) -> Vec<Review> {
        REVIEWS
            .iter()
            .filter(|r| r.product == self.upc)
            .cloned()
            .map(Review)
            .collect()
    }
}

struct ReviewsQuery;

#[Object(name = "Query")]
impl ReviewsQuery {
    #[graphql(entity)]
    async fn find_user_by_id(&self, id: ID) -> ReviewedUser {
        ReviewedUser { username: None, id }
    }

    #[graphql(entity)]
    async fn find_product_by_upc(&self, upc: String) -> ReviewedProduct {
        ReviewedProduct { upc }
    }

    #[graphql(entity)]
    async fn find_review_by_id(&self, ctx: &Context<'_>, id: ID) -> Option<Review> {
        let _ = ctx;
        REVIEWS
            .iter()
            .find(|r| r.id == id.as_str())
            .cloned()
            .map(Review)
    }
}

// ----- serving --------------------------------------------------------------

/// One request a test subgraph received.
#[derive(Clone, Debug)]
pub struct Received {
    /// Which subgraph.
    pub subgraph: String,
    /// Its `x-request-id` header.
    pub request_id: Option<String>,
    /// Its `Authorization` header.
    pub authorization: Option<String>,
    /// The operation text.
    pub query: String,
    /// How many entity representations it carried.
    pub representations: usize,
}

/// What the test subgraphs received, which of them are switched off, and
/// which hold their answers back.
#[derive(Debug)]
pub struct RequestLog {
    received: Mutex<Vec<Received>>,
    down: Mutex<HashSet<String>>,
    held: tokio::sync::watch::Sender<HashSet<String>>,
}

impl Default for RequestLog {
    fn default() -> Self {
        Self {
            received: Mutex::default(),
            down: Mutex::default(),
            held: tokio::sync::watch::Sender::new(HashSet::new()),
        }
    }
}

impl RequestLog {
    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Forgets what was received.
    pub fn clear(&self) {
        self.received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Makes `subgraph` answer 503 without a GraphQL body (down) or serve again.
    pub fn set_down(&self, subgraph: &str, down: bool) {
        let mut set = self
            .down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if down {
            set.insert(subgraph.to_owned());
        } else {
            set.remove(subgraph);
        }
    }

    /// Makes `subgraph` hold every answer (after logging the request) until
    /// it is released, or releases what it holds.
    pub fn set_held(&self, subgraph: &str, held: bool) {
        self.held.send_modify(|set| {
            if held {
                set.insert(subgraph.to_owned());
            } else {
                set.remove(subgraph);
            }
        });
    }

    async fn wait_while_held(&self, subgraph: &str) {
        // The sender lives as long as the log, so waiting cannot fail.
        let _ = self
            .held
            .subscribe()
            .wait_for(|held| !held.contains(subgraph))
            .await;
    }

    fn is_down(&self, subgraph: &str) -> bool {
        self.down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(subgraph)
    }
}

#[derive(Clone)]
struct Served {
    name: &'static str,
    executor: Arc<
        dyn Fn(
                async_graphql::Request,
            ) -> futures::future::BoxFuture<'static, async_graphql::Response>
            + Send
            + Sync,
    >,
    log: Arc<RequestLog>,
}

fn served<Q, M, S>(name: &'static str, schema: Schema<Q, M, S>, log: Arc<RequestLog>) -> Served
where
    Schema<Q, M, S>: Executor,
{
    Served {
        name,
        executor: Arc::new(move |request| {
            let schema = schema.clone();
            Box::pin(async move { schema.execute(request).await })
        }),
        log,
    }
}

async fn handle(State(served): State<Served>, headers: HeaderMap, body: Bytes) -> Response {
    if served.log.is_down(served.name) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    let Ok(raw) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    served
        .log
        .received
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Received {
            subgraph: served.name.to_owned(),
            request_id: header("x-request-id"),
            authorization: header("authorization"),
            query: raw["query"].as_str().unwrap_or_default().to_owned(),
            representations: raw["variables"]["representations"]
                .as_array()
                .map_or(0, Vec::len),
        });
    let Ok(request) = serde_json::from_value::<async_graphql::Request>(raw) else {
        return (StatusCode::BAD_REQUEST, "not a GraphQL request").into_response();
    };
    served.log.wait_while_held(served.name).await;
    let response = (served.executor)(request).await;
    Json(json!(response)).into_response()
}

async fn ready(State(served): State<Served>) -> Response {
    if served.log.is_down(served.name) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable" })),
        )
            .into_response()
    } else {
        Json(json!({ "status": "ready" })).into_response()
    }
}

/// The four benchmark subgraphs, each on its own loopback port.
pub struct BenchSubgraphs {
    /// Where each listens, by name (`accounts`, `inventory`, `products`, `reviews`).
    pub endpoints: Vec<SubgraphEndpoint>,
    /// What they received.
    pub log: Arc<RequestLog>,
    stops: HashMap<String, (CancellationToken, JoinHandle<()>)>,
}

impl BenchSubgraphs {
    /// Starts the four subgraphs on `host` (port 0 each, or `base_port`,
    /// `base_port + 1`, ... when given).
    pub async fn spawn(host: &str, base_port: Option<u16>) -> std::io::Result<Self> {
        let log = Arc::new(RequestLog::default());
        let all = [
            served(
                "accounts",
                Schema::build(AccountsQuery, EmptyMutation, EmptySubscription)
                    .enable_federation()
                    .finish(),
                log.clone(),
            ),
            served(
                "inventory",
                Schema::build(InventoryQuery, EmptyMutation, EmptySubscription)
                    .enable_federation()
                    .finish(),
                log.clone(),
            ),
            served(
                "products",
                Schema::build(ProductsQuery, EmptyMutation, EmptySubscription)
                    .enable_federation()
                    .finish(),
                log.clone(),
            ),
            served(
                "reviews",
                Schema::build(ReviewsQuery, EmptyMutation, EmptySubscription)
                    .enable_federation()
                    .finish(),
                log.clone(),
            ),
        ];
        let mut endpoints = Vec::new();
        let mut stops = HashMap::new();
        for (offset, served) in (0u16..).zip(all) {
            let port = base_port.map_or(0, |p| p.saturating_add(offset));
            let listener = TcpListener::bind((host, port)).await?;
            let addr = listener.local_addr()?;
            let name = served.name;
            let router = Router::new()
                .route("/graphql", post(handle))
                .route("/health/ready", get(ready))
                .route(
                    "/health/live",
                    get(|| async { Json(json!({ "status": "live" })) }),
                )
                .with_state(served);
            let token = CancellationToken::new();
            let stop = token.clone();
            let task = tokio::spawn(async move {
                let serve = axum::serve(listener, router)
                    .with_graceful_shutdown(async move { stop.cancelled().await });
                if let Err(err) = serve.await {
                    tracing::error!(subgraph = name, error = %err, "test subgraph stopped");
                }
            });
            endpoints.push(SubgraphEndpoint::new(
                name,
                format!("http://{addr}/graphql"),
            ));
            stops.insert(name.to_owned(), (token, task));
        }
        Ok(Self {
            endpoints,
            log,
            stops,
        })
    }

    /// Stops one subgraph's server and waits until its port is closed.
    pub async fn stop(&mut self, name: &str) {
        if let Some((token, task)) = self.stops.remove(name) {
            token.cancel();
            if let Err(err) = task.await {
                tracing::error!(subgraph = name, error = %err, "test subgraph task failed");
            }
        }
    }

    /// Stops every subgraph.
    pub fn shutdown(&self) {
        for (token, _) in self.stops.values() {
            token.cancel();
        }
    }
}

/// The event of one server-sent-events block (`event`, parsed `data`), or
/// `None` for a block without `event:` (a keep-alive comment).
pub fn parse_sse_block(block: &str) -> Option<(String, Value)> {
    let mut event = None;
    let mut data = String::new();
    for line in block.lines() {
        if let Some(name) = line.strip_prefix("event:") {
            event = Some(name.trim().to_owned());
        } else if let Some(chunk) = line.strip_prefix("data:") {
            data.push_str(chunk.trim_start());
        }
    }
    let data = serde_json::from_str(&data).unwrap_or(Value::Null);
    event.map(|event| (event, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_sse_block_and_skips_keep_alives() {
        let block = "event: next\ndata: {\"data\":{\"x\":1}}\n\n";
        assert_eq!(
            parse_sse_block(block),
            Some(("next".to_owned(), json!({ "data": { "x": 1 } })))
        );
        assert_eq!(parse_sse_block(": keep-alive\n\n"), None);
    }
}
