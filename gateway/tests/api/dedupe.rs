//! Identical query fetches in flight at the same time share one subgraph
//! call, per caller; turned off, every fetch makes its own.
//!
//! The products subgraph holds its answers until released, so the test
//! decides when the calls are "at the same time" instead of racing a clock.

use std::time::{Duration, Instant};

use gateway::GatewaySettings;
use serde_json::{json, Value};

use crate::helpers::{spawn_with, Options, TestApp};

const QUERY: &str = "{ topProducts { upc name } }";

async fn query_as(app: &TestApp, token: &str) -> Value {
    app.client
        .post(format!("{}/graphql", app.address))
        .bearer_auth(token)
        .json(&json!({ "query": QUERY }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

/// Waits (at most 10 s) until `ready` holds.
async fn until(what: &str, mut ready: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn products_calls(app: &TestApp) -> Vec<Option<String>> {
    app.subgraphs
        .log
        .received()
        .into_iter()
        .filter(|r| r.subgraph == "products")
        .map(|r| r.authorization)
        .collect()
}

async fn shared_fetches(app: &TestApp) -> u64 {
    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    metrics
        .lines()
        .find(|line| {
            line.starts_with("gateway_subgraph_fetches_shared_total{")
                && line.contains("subgraph=\"products\"")
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn spawn_app(dedupe: bool) -> impl std::future::Future<Output = TestApp> {
    spawn_with(Options {
        settings: GatewaySettings {
            addr: "127.0.0.1:0".to_owned(),
            subgraph_dedupe: dedupe,
            ..GatewaySettings::default()
        },
        ..Options::default()
    })
}

#[tokio::test]
async fn identical_queries_in_flight_share_one_call_per_caller() {
    let app = spawn_app(true).await;
    let (ada, alan) = (app.token("ada", &["user"]), app.token("alan", &["user"]));
    app.subgraphs.log.set_held("products", true);

    let mut answers = Vec::new();
    for token in [&ada, &ada, &ada, &ada, &alan, &alan, &alan] {
        let (app, token) = (&app, token.clone());
        answers.push(async move { query_as(app, &token).await });
    }
    let answers = futures::future::join_all(answers);
    let release = async {
        // One call per caller reaches the subgraph; the other five join.
        until("two calls and five shared fetches", async || {
            products_calls(&app).len() == 2 && shared_fetches(&app).await == 5
        })
        .await;
        app.subgraphs.log.set_held("products", false);
    };
    let (answers, ()) = tokio::join!(answers, release);

    let expected = query_as(&app, &ada).await;
    assert!(expected["errors"].is_null(), "{expected}");
    assert_eq!(expected["data"]["topProducts"][0]["upc"], "1");
    for answer in &answers {
        assert_eq!(answer, &expected);
    }
    let mut callers = products_calls(&app);
    callers.truncate(2);
    callers.sort();
    assert_eq!(
        callers,
        vec![
            Some(format!("Bearer {ada}")),
            Some(format!("Bearer {alan}"))
        ],
        "each caller's call carried its own token"
    );
}

#[tokio::test]
async fn a_finished_call_is_not_reused() {
    let app = spawn_app(true).await;
    let token = app.token("ada", &["user"]);
    let first = query_as(&app, &token).await;
    let second = query_as(&app, &token).await;
    assert_eq!(first, second);
    assert_eq!(products_calls(&app).len(), 2);
    assert_eq!(shared_fetches(&app).await, 0);
}

#[tokio::test]
async fn with_deduplication_off_every_fetch_calls_the_subgraph() {
    let app = spawn_app(false).await;
    let token = app.token("ada", &["user"]);
    app.subgraphs.log.set_held("products", true);

    let answers = futures::future::join_all((0..4).map(|_| query_as(&app, &token)));
    let release = async {
        until("four calls", async || products_calls(&app).len() == 4).await;
        app.subgraphs.log.set_held("products", false);
    };
    let (answers, ()) = tokio::join!(answers, release);
    for answer in &answers {
        assert!(answer["errors"].is_null(), "{answer}");
    }
    assert_eq!(shared_fetches(&app).await, 0);
}
