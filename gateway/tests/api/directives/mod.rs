//! The federation directive fixtures: for each directive, small subgraphs
//! (SDL files under `gateway/tests/fixtures/<directive>/`, fixed data
//! here), the supergraph composed from them and checked in, and queries
//! whose exact answers are asserted with the gateway started both from the
//! checked-in supergraph file and from the subgraph list.
//!
//! `UPDATE_FIXTURES=1 cargo test -p gateway --test api directives::`
//! rewrites the checked-in supergraphs from the subgraph SDL files;
//! without it, `checked_in_supergraphs_are_what_composition_produces`
//! fails when one is stale.

mod abstract_types;
mod errors;
mod key;
mod ownership;
mod requires_provides;
pub mod subgraph;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use gateway::{Application, Gateway, GatewayDeps, GatewaySettings, SubgraphEndpoint};
use serde_json::{json, Value};
use service_core::config::AppEnv;

pub use subgraph::{FixtureSubgraph, Running};

/// Every fixture directory.
const FIXTURES: &[&str] = &[
    "key",
    "requires_provides",
    "ownership",
    "abstract_types",
    "errors",
];

pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// The subgraph SDL files of a fixture, by subgraph name (file stem).
pub fn subgraph_sdls(name: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(fixture_dir(name)).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.extension().is_some_and(|e| e == "graphql") && stem != "supergraph" {
            out.insert(stem, std::fs::read_to_string(&path).unwrap());
        }
    }
    out
}

/// The URL a checked-in supergraph names for a subgraph; tests override it
/// with where the subgraph really listens.
fn fixture_url(subgraph: &str) -> String {
    format!("http://{subgraph}.fixture.invalid/graphql")
}

pub fn composed(name: &str) -> String {
    compose_with(name, |_, sdl| sdl)
}

/// Composes a fixture's subgraphs after `edit` (subgraph, SDL) -> SDL.
pub fn compose_with(name: &str, edit: impl Fn(&str, String) -> String) -> String {
    let inputs: Vec<(SubgraphEndpoint, String)> = subgraph_sdls(name)
        .into_iter()
        .map(|(subgraph, sdl)| {
            let sdl = edit(&subgraph, sdl);
            (
                SubgraphEndpoint::new(&subgraph, fixture_url(&subgraph)),
                sdl,
            )
        })
        .collect();
    gateway::compose::compose(&inputs)
        .unwrap_or_else(|err| panic!("fixture {name} does not compose: {err}"))
}

#[test]
fn checked_in_supergraphs_are_what_composition_produces() {
    let update = std::env::var_os("UPDATE_FIXTURES").is_some();
    for name in FIXTURES {
        let path = fixture_dir(name).join("supergraph.graphql");
        let fresh = composed(name);
        if update {
            std::fs::write(&path, &fresh).unwrap();
            continue;
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == fresh,
            "{} is stale: run UPDATE_FIXTURES=1 cargo test -p gateway --test api directives::",
            path.display()
        );
    }
}

/// How the gateway is started.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// From the checked-in supergraph file, URLs overridden by name.
    File,
    /// From the subgraph list: `_service { sdl }` fetched and composed.
    List,
}

pub struct FixtureApp {
    pub address: String,
    pub gateway: Gateway,
    pub subgraphs: Running,
    client: reqwest::Client,
}

impl FixtureApp {
    pub async fn start(
        name: &str,
        mode: Mode,
        data: Vec<FixtureSubgraph>,
        settings: GatewaySettings,
    ) -> Self {
        let subgraphs = Running::start(&subgraph_sdls(name), data).await;
        let mut settings = GatewaySettings {
            addr: "127.0.0.1:0".to_owned(),
            subgraphs: subgraphs.endpoints.clone(),
            ..settings
        };
        match mode {
            Mode::File => {
                settings
                    .supergraph_path
                    .get_or_insert_with(|| fixture_dir(name).join("supergraph.graphql"));
            }
            Mode::List => settings.supergraph_path = None,
        }
        let (address, gateway) = launch(settings)
            .await
            .unwrap_or_else(|err| panic!("gateway for fixture {name} ({mode:?}): {err}"));
        subgraphs.forget();
        Self {
            address,
            gateway,
            subgraphs,
            client: reqwest::Client::new(),
        }
    }

    pub async fn post(&self, body: Value) -> Value {
        self.client
            .post(format!("{}/graphql", self.address))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Builds a gateway with `settings` and serves it on its port; answers
/// its base URL.
pub async fn launch(
    settings: GatewaySettings,
) -> Result<(String, Gateway), gateway::compose::ComposeError> {
    let gateway = Gateway::build(
        settings,
        GatewayDeps {
            app_env: AppEnv::Development,
            verifier: None,
            access: Arc::new(access_engine::default_policy()),
            redis: None,
        },
    )
    .await?;
    let app = Application::bind(gateway.clone()).await.unwrap();
    let address = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(app.run_until_stopped());
    Ok((address, gateway))
}

/// One query (with variables) and its exact expected answer.
pub struct Case {
    pub query: &'static str,
    pub variables: Value,
    pub expected: Value,
}

pub fn case(query: &'static str, expected: Value) -> Case {
    Case {
        query,
        variables: json!({}),
        expected,
    }
}

pub fn case_with(query: &'static str, variables: Value, expected: Value) -> Case {
    Case {
        query,
        variables,
        expected,
    }
}

/// Runs every case against the fixture, started from its supergraph file
/// and from its subgraph list.
pub async fn assert_cases(name: &str, data: fn() -> Vec<FixtureSubgraph>, cases: &[Case]) {
    for mode in [Mode::File, Mode::List] {
        let app = FixtureApp::start(name, mode, data(), GatewaySettings::default()).await;
        for case in cases {
            let body = app
                .post(json!({"query": case.query, "variables": case.variables}))
                .await;
            if std::env::var_os("FIXTURE_DEBUG").is_some() && body != case.expected {
                for (subgraph, query) in app.subgraphs.log.lock().unwrap().iter() {
                    eprintln!("{subgraph}: {query}");
                }
            }
            app.subgraphs.forget();
            assert_eq!(
                body, case.expected,
                "fixture {name}, {mode:?} mode, query {}",
                case.query
            );
        }
    }
}
