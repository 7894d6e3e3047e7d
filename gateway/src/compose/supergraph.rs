//! A loaded supergraph: its SDL, the planner built from it, the public
//! (API) schema clients validate against, and where each subgraph lives.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use graphql_tools::parser::schema::{self as sdl, Document};
use graphql_tools::validation::rules::default_rules_validation_plan;
use graphql_tools::validation::validate::ValidationPlan;
use hive_router_query_planner::planner::{Planner, QueryPlannerOptions};

use super::{ComposeError, TypeIndex};
use crate::config::SubgraphEndpoint;

/// Everything derived from one supergraph SDL; swapped whole on reload.
pub struct Supergraph {
    sdl: String,
    pub(crate) planner: Planner,
    pub(crate) api: Arc<Document<'static, String>>,
    pub(crate) types: TypeIndex,
    pub(crate) endpoints: HashMap<String, SubgraphEndpoint>,
    pub(crate) validation: ValidationPlan,
}

impl std::fmt::Debug for Supergraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supergraph")
            .field("subgraphs", &self.endpoints.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Supergraph {
    /// Builds the planner and public schema of `supergraph_sdl`, whose
    /// subgraphs are served at `endpoints` (matched by name).
    pub fn new(
        supergraph_sdl: String,
        endpoints: &[SubgraphEndpoint],
    ) -> Result<Self, ComposeError> {
        let parsed = sdl::parse_schema::<String>(&supergraph_sdl)
            .map_err(|err| ComposeError::Supergraph(err.to_string()))?
            .into_static();
        // The planner crate still has panicking paths on malformed input;
        // a bad supergraph must be refused, not crash the process.
        let planner = catch_unwind(AssertUnwindSafe(|| {
            Planner::new_from_supergraph(&parsed, QueryPlannerOptions::default())
        }))
        .map_err(|_| ComposeError::Supergraph("the planner rejected the supergraph".to_owned()))?
        .map_err(|err| ComposeError::Supergraph(err.to_string()))?;
        let api = planner.consumer_schema.document.clone();
        let types = TypeIndex::new(&api);
        let endpoints = endpoints
            .iter()
            .map(|e| (e.name.clone(), e.clone()))
            .collect();
        Ok(Self {
            sdl: supergraph_sdl,
            planner,
            api,
            types,
            endpoints,
            validation: default_rules_validation_plan(),
        })
    }

    /// The supergraph SDL (with `join__*` directives).
    pub fn sdl(&self) -> &str {
        &self.sdl
    }

    /// The public schema as SDL, as clients see it.
    pub fn api_sdl(&self) -> String {
        self.api.to_string()
    }

    /// The subgraphs, by name.
    pub fn subgraphs(&self) -> impl Iterator<Item = &SubgraphEndpoint> {
        self.endpoints.values()
    }
}
