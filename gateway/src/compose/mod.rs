//! Composition: fetch every subgraph's SDL, compose a Federation v2
//! supergraph with `graphql-composition`, and adapt its output to what the
//! Hive planner expects (see `docs/decisions/0006-federation-planner.md`).

mod federation1;
mod supergraph;
mod types;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use graphql_tools::parser::schema::{self as sdl, Definition, TypeDefinition};
use serde_json::{json, Value};

pub use federation1::upgrade as upgrade_federation1;
pub use supergraph::Supergraph;
pub(crate) use types::{is_list as is_list_type, named_type as named_type_of, TypeIndex};

use crate::config::SubgraphEndpoint;

/// Why a supergraph could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComposeError {
    /// A subgraph did not answer `_service { sdl }` in time.
    #[error("subgraph {name} did not serve its SDL: {reason}")]
    Fetch {
        /// The subgraph.
        name: String,
        /// The last failure.
        reason: String,
    },
    /// The subgraphs do not compose.
    #[error("composition failed: {0}")]
    Composition(String),
    /// The supergraph could not be turned into a planner.
    #[error("the supergraph is not usable: {0}")]
    Supergraph(String),
    /// The supergraph file could not be read.
    #[error("supergraph file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why it could not be read.
        reason: String,
    },
}

/// Internal fields every subgraph serves for the gateway alone; they are
/// read directly and never composed into the public schema.
const INTERNAL_FIELDS: &[&str] = &["_errorCodes"];

/// Asks one subgraph for its SDL once.
pub async fn fetch_sdl(
    client: &reqwest::Client,
    endpoint: &SubgraphEndpoint,
) -> Result<String, String> {
    let response = client
        .post(&endpoint.url)
        .json(&json!({ "query": "{ _service { sdl } }" }))
        .send()
        .await
        .map_err(|err| err.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|err| err.to_string())?;
    body.pointer("/data/_service/sdl")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("HTTP {status}: no `_service.sdl` in the answer"))
}

/// Fetches every subgraph's SDL, retrying each until it answers or
/// `timeout` has passed (subgraphs may still be starting).
pub async fn fetch_all(
    client: &reqwest::Client,
    endpoints: &[SubgraphEndpoint],
    timeout: Duration,
) -> Result<Vec<(SubgraphEndpoint, String)>, ComposeError> {
    let deadline = Instant::now() + timeout;
    let fetches = endpoints.iter().map(|endpoint| async move {
        let mut pause = Duration::from_millis(50);
        loop {
            match fetch_sdl(client, endpoint).await {
                Ok(sdl) => return Ok((endpoint.clone(), sdl)),
                Err(reason) if Instant::now() + pause >= deadline => {
                    return Err(ComposeError::Fetch {
                        name: endpoint.name.clone(),
                        reason,
                    })
                }
                Err(reason) => {
                    tracing::info!(subgraph = %endpoint.name, %reason, "waiting for subgraph SDL");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    });
    futures::future::try_join_all(fetches).await
}

/// Composes subgraph SDLs into a supergraph SDL the Hive planner accepts.
pub fn compose(subgraphs: &[(SubgraphEndpoint, String)]) -> Result<String, ComposeError> {
    let mut input = graphql_composition::Subgraphs::default();
    for (endpoint, schema) in subgraphs {
        let schema = strip_internal_fields(schema);
        input
            .ingest_str(&schema, &endpoint.name, Some(&endpoint.url))
            .map_err(|err| ComposeError::Composition(format!("{}: {err}", endpoint.name)))?;
    }
    let graph = graphql_composition::compose(&mut input)
        .into_result()
        .map_err(|diagnostics| {
            ComposeError::Composition(diagnostics.iter_errors().collect::<Vec<_>>().join("; "))
        })?;
    let rendered = graphql_composition::render_federated_sdl(&graph)
        .map_err(|err| ComposeError::Composition(err.to_string()))?;
    mark_root_types(&rendered)
}

/// Removes [`INTERNAL_FIELDS`] (and their descriptions) from a subgraph SDL
/// as async-graphql prints it: one field per line, descriptions above.
fn strip_internal_fields(schema: &str) -> String {
    let lines: Vec<&str> = schema.lines().collect();
    let mut keep = vec![true; lines.len()];
    for (index, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let is_internal = INTERNAL_FIELDS.iter().any(|field| {
            trimmed
                .strip_prefix(field)
                .is_some_and(|rest| rest.trim_start().starts_with([':', '(']))
        });
        if !is_internal {
            continue;
        }
        keep[index] = false;
        // Drop the description right above, block or single-line.
        let Some(above) = index.checked_sub(1) else {
            continue;
        };
        let prev = lines[above].trim();
        if prev == "\"\"\"" {
            let mut cursor = above;
            keep[cursor] = false;
            while let Some(next) = cursor.checked_sub(1) {
                cursor = next;
                keep[cursor] = false;
                if lines[cursor].trim().starts_with("\"\"\"") {
                    break;
                }
            }
        } else if prev.starts_with('"') && prev.ends_with('"') {
            keep[above] = false;
        }
    }
    let kept: Vec<&str> = lines
        .iter()
        .zip(keep)
        .filter(|(_, keep)| *keep)
        .map(|(line, _)| *line)
        .collect();
    // A type left with no fields (a `Query` that only had internal fields)
    // is not valid SDL: drop it whole.
    let mut out: Vec<&str> = Vec::with_capacity(kept.len());
    let mut index = 0;
    while index < kept.len() {
        let opens_type = kept[index].trim_end().ends_with('{')
            && kept[index].trim_start().starts_with(['t', 'e']);
        if opens_type && kept.get(index + 1).is_some_and(|next| next.trim() == "}") {
            index += 2;
            continue;
        }
        out.push(kept[index]);
        index += 1;
    }
    out.join("\n")
}

/// graphql-composition leaves root types without `@join__type`: the graphs
/// are only on each field's `@join__field`. The Hive planner finds a type's
/// subgraphs through `@join__type`, so each root type gets one per graph its
/// fields name.
fn mark_root_types(supergraph: &str) -> Result<String, ComposeError> {
    let mut document = sdl::parse_schema::<String>(supergraph)
        .map_err(|err| ComposeError::Supergraph(err.to_string()))?
        .into_static();
    let mut roots: BTreeSet<String> = ["Query", "Mutation", "Subscription"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    for definition in &document.definitions {
        if let Definition::SchemaDefinition(schema) = definition {
            roots.extend(schema.query.iter().cloned());
            roots.extend(schema.mutation.iter().cloned());
            roots.extend(schema.subscription.iter().cloned());
        }
    }
    for definition in &mut document.definitions {
        let Definition::TypeDefinition(TypeDefinition::Object(object)) = definition else {
            continue;
        };
        if !roots.contains(&object.name) {
            continue;
        }
        let present: BTreeSet<String> = object
            .directives
            .iter()
            .filter(|d| d.name == "join__type")
            .filter_map(graph_argument)
            .collect();
        let mut graphs = BTreeSet::new();
        for field in &object.fields {
            for directive in field.directives.iter().filter(|d| d.name == "join__field") {
                graphs.extend(graph_argument(directive));
            }
        }
        for graph in graphs.difference(&present) {
            object.directives.push(sdl::Directive {
                position: Default::default(),
                name: "join__type".to_owned(),
                arguments: vec![("graph".to_owned(), sdl::Value::Enum(graph.clone()))],
            });
        }
    }
    Ok(document.to_string())
}

/// The subgraphs a supergraph names: each `join__Graph` value's
/// `@join__graph(name:, url:)`.
pub fn graphs_of(supergraph: &str) -> Result<Vec<SubgraphEndpoint>, ComposeError> {
    let document = sdl::parse_schema::<String>(supergraph)
        .map_err(|err| ComposeError::Supergraph(err.to_string()))?;
    let mut out = Vec::new();
    for definition in &document.definitions {
        let Definition::TypeDefinition(TypeDefinition::Enum(graphs)) = definition else {
            continue;
        };
        if graphs.name != "join__Graph" {
            continue;
        }
        for value in &graphs.values {
            let Some(directive) = value.directives.iter().find(|d| d.name == "join__graph") else {
                continue;
            };
            let text = |key: &str| {
                directive
                    .arguments
                    .iter()
                    .find(|(k, _)| k == key)
                    .and_then(|(_, v)| match v {
                        sdl::Value::String(s) => Some(s.clone()),
                        _ => None,
                    })
            };
            match (text("name"), text("url")) {
                (Some(name), Some(url)) => out.push(SubgraphEndpoint::new(name, url)),
                _ => {
                    return Err(ComposeError::Supergraph(format!(
                        "join__Graph value {} has no name or url",
                        value.name
                    )))
                }
            }
        }
    }
    Ok(out)
}

fn graph_argument(directive: &sdl::Directive<'static, String>) -> Option<String> {
    directive
        .arguments
        .iter()
        .find(|(name, _)| name == "graph")
        .and_then(|(_, value)| match value {
            sdl::Value::Enum(graph) => Some(graph.clone()),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_fields_and_their_descriptions_are_stripped() {
        let schema = "type Query {\n\t\"\"\"\n\tEvery code.\n\t\"\"\"\n\t_errorCodes: [String!]!\n\tme: User\n}\n";
        assert_eq!(strip_internal_fields(schema), "type Query {\n\tme: User\n}");
        let only_internal = "type Query {\n\t_errorCodes: [String!]!\n}\ntype A {\n\tx: Int\n}";
        assert_eq!(
            strip_internal_fields(only_internal),
            "type A {\n\tx: Int\n}"
        );
    }
}
