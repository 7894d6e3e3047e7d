//! File mode: the supergraph file is watched and reloaded under traffic;
//! a file that fails to load keeps the previous supergraph; the gateway
//! serves `{ __typename }` and its health from the file alone.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway::GatewaySettings;
use serde_json::{json, Value};

use crate::directives::{compose_with, FixtureApp, FixtureSubgraph, Mode};

fn data() -> Vec<FixtureSubgraph> {
    let orders = json!([
        {"__typename": "Order", "id": "o1", "total": 10, "note": null},
        {"__typename": "Order", "id": "o2", "total": 20, "note": null}
    ]);
    vec![
        FixtureSubgraph::new("shop", json!({"orders": orders}), orders.clone()),
        FixtureSubgraph::new(
            "status",
            json!({}),
            json!([
                {"__typename": "Order", "id": "o1", "status": "shipped", "carrier": "DHL"},
                {"__typename": "Order", "id": "o2", "status": "packed", "carrier": "UPS"}
            ]),
        ),
    ]
}

/// The `errors` fixture's supergraph with a `carrier` field added to the
/// status subgraph's `Order`.
fn with_carrier() -> String {
    compose_with("errors", |subgraph, sdl| {
        if subgraph == "status" {
            sdl.replace(
                "  tracking: String\n",
                "  tracking: String\n  carrier: String!\n",
            )
        } else {
            sdl
        }
    })
}

/// Replaces the file in one step, as deploy tools do (write, then rename).
fn replace(path: &std::path::Path, content: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, content).unwrap();
    std::fs::rename(&next, path).unwrap();
}

async fn start_from_file(path: std::path::PathBuf) -> FixtureApp {
    let settings = GatewaySettings {
        supergraph_path: Some(path),
        supergraph_poll: Duration::from_millis(50),
        // The load below is one client; budgets are not under test.
        rate_limit_burst: 1_000_000,
        rate_limit_per_second: 1_000_000.0,
        ..GatewaySettings::default()
    };
    FixtureApp::start("errors", Mode::File, data(), settings).await
}

#[tokio::test]
async fn a_replaced_supergraph_file_is_reloaded_under_load_without_failing_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("supergraph.graphql");
    std::fs::write(&path, crate::directives::composed("errors")).unwrap();
    let app = Arc::new(start_from_file(path.clone()).await);
    let carrier_query = json!({"query": "{ orders { id carrier } }"});
    let before = app.post(carrier_query.clone()).await;
    assert_eq!(
        before["errors"][0]["extensions"]["code"],
        json!("MSGatewayValidationFailed")
    );

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (app, stop, served) = (app.clone(), stop.clone(), served.clone());
            tokio::spawn(async move {
                let expected = json!({"data": {"orders": [
                    {"id": "o1", "status": "shipped"}, {"id": "o2", "status": "packed"}
                ]}});
                while !stop.load(Ordering::Relaxed) {
                    let body = app.post(json!({"query": "{ orders { id status } }"})).await;
                    assert_eq!(body, expected);
                    served.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    replace(&path, &with_carrier());
    let expected = json!({"data": {"orders": [
        {"id": "o1", "carrier": "DHL"}, {"id": "o2", "carrier": "UPS"}
    ]}});
    let mut after = Value::Null;
    for _ in 0..400 {
        after = app.post(carrier_query.clone()).await;
        if after == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(after, expected, "the new field never appeared");

    // A file that does not load keeps the new supergraph serving.
    replace(&path, "type Query {");
    assert!(app.gateway.reload().await.is_err());
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(app.post(carrier_query.clone()).await, expected);
    }

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(served.load(Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn a_file_gateway_serves_typename_and_health_with_its_subgraphs_down() {
    // The checked-in file names subgraph hosts that do not exist.
    let settings = GatewaySettings {
        addr: "127.0.0.1:0".to_owned(),
        supergraph_path: Some(crate::directives::fixture_dir("errors").join("supergraph.graphql")),
        ..GatewaySettings::default()
    };
    let (address, _gateway) = crate::directives::launch(settings).await.unwrap();
    let client = reqwest::Client::new();
    let body: Value = client
        .post(format!("{address}/graphql"))
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({"data": {"__typename": "Query"}}));
    let live = client
        .get(format!("{address}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
}

/// `gateway serve --supergraph <file> --subgraphs <overrides>`, the real
/// binary, serves the file's schema from the overridden URLs.
#[tokio::test]
async fn the_binary_serves_a_supergraph_file_named_by_the_flag() {
    let subgraphs =
        crate::directives::Running::start(&crate::directives::subgraph_sdls("errors"), data())
            .await;
    let overrides: Vec<String> = subgraphs
        .endpoints
        .iter()
        .map(|e| format!("{}={}", e.name, e.url))
        .collect();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let supergraph = crate::directives::fixture_dir("errors").join("supergraph.graphql");
    let data = tempfile::tempdir().unwrap();
    let _child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("serve")
        .arg("--supergraph")
        .arg(&supergraph)
        .arg("--subgraphs")
        .arg(overrides.join(","))
        .env("GATEWAY_ADDR", format!("127.0.0.1:{port}"))
        .env("DATA_DIR", data.path())
        .env_remove("MONGODB_URI")
        .env_remove("GATEWAY_SUBGRAPHS")
        .env_remove("GATEWAY_SUPERGRAPH_PATH")
        .env_remove("REDIS_URL")
        .env_remove("REDIS_STATE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut live = false;
    for _ in 0..200 {
        if let Ok(response) = client.get(format!("{base}/health/live")).send().await {
            live = response.status() == 200;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(live, "the binary never answered /health/live");
    let body: Value = client
        .post(format!("{base}/graphql"))
        .json(&json!({"query": "{ __typename orders { id status } }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body,
        json!({"data": {"__typename": "Query", "orders": [
            {"id": "o1", "status": "shipped"}, {"id": "o2", "status": "packed"}
        ]}})
    );
}

/// `gateway serve --subgraphs ...` with its subgraph not up yet: the
/// process answers health at once (live, not ready) and GraphQL with a
/// coded "unavailable" while it keeps trying to compose.
#[tokio::test]
async fn the_binary_answers_health_while_its_subgraphs_are_not_up() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = tempfile::tempdir().unwrap();
    let _child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("serve")
        .arg("--subgraphs")
        .arg(format!("late=http://127.0.0.1:{dead_port}/graphql"))
        .env("GATEWAY_ADDR", format!("127.0.0.1:{port}"))
        .env("GATEWAY_STARTUP_TIMEOUT_SECS", "120")
        .env("DATA_DIR", data.path())
        .env_remove("MONGODB_URI")
        .env_remove("GATEWAY_SUPERGRAPH_PATH")
        .env_remove("REDIS_URL")
        .env_remove("REDIS_STATE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut live = None;
    for _ in 0..200 {
        if let Ok(response) = client.get(format!("{base}/health/live")).send().await {
            live = Some(response.status());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(live, Some(reqwest::StatusCode::OK));
    let ready = client
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        json!({"status": "starting"})
    );
    let answer = client
        .post(format!("{base}/graphql"))
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        json!("MSCoreUnavailable")
    );
}
