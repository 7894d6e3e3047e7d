//! Planning: normalise the selected operation against the supergraph, ask
//! the Hive planner for a query plan, and keep the result in a bounded
//! cache keyed by the minified operation text and the operation name.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use graphql_tools::parser::query::Document;
use hive_router_query_planner::ast::normalization::normalize_operation;
use hive_router_query_planner::ast::operation::OperationDefinition;
use hive_router_query_planner::ast::selection_item::SelectionItem;
use hive_router_query_planner::planner::plan_nodes::QueryPlan;
use hive_router_query_planner::state::supergraph_state::OperationKind;
use hive_router_query_planner::utils::cancellation::CancellationToken;

use crate::compose::Supergraph;

/// How long planning one operation may take.
const PLANNING_BUDGET: Duration = Duration::from_secs(5);

/// Why an operation could not be planned.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlanError {
    #[error("{0}")]
    Normalization(String),
    #[error("{0}")]
    Planner(String),
}

/// A validated operation, normalised, with its plan.
#[derive(Debug)]
pub(crate) struct PreparedOperation {
    /// The operation as clients shaped it (fragments inlined, fields
    /// merged); the response is projected on it.
    pub(crate) operation: OperationDefinition,
    /// Query, mutation or subscription.
    pub(crate) kind: OperationKind,
    /// The plan of the fields subgraphs answer; `None` when every root
    /// field is answered by the gateway (`__typename`, introspection).
    pub(crate) plan: Option<QueryPlan>,
}

/// Plans `document`'s operation `operation_name` on `supergraph`.
pub(crate) fn prepare(
    supergraph: &Supergraph,
    document: &Document<'static, String>,
    operation_name: Option<&str>,
) -> Result<PreparedOperation, PlanError> {
    let planner = &supergraph.planner;
    let run = || -> Result<PreparedOperation, PlanError> {
        let normalized = normalize_operation(&planner.supergraph, document, operation_name)
            .map_err(|err| PlanError::Normalization(err.to_string()))?;
        let operation = normalized.operation;
        let kind = operation
            .operation_kind
            .clone()
            .unwrap_or(OperationKind::Query);
        let mut for_planner = operation.clone();
        for_planner.selection_set.items.retain(|item| match item {
            SelectionItem::Field(field) => !field.name.starts_with("__"),
            SelectionItem::InlineFragment(_) | SelectionItem::FragmentSpread(_) => true,
        });
        let plan = if for_planner.selection_set.items.is_empty() {
            None
        } else {
            let token = CancellationToken::with_timeout(PLANNING_BUDGET);
            Some(
                planner
                    .plan_from_normalized_operation(&for_planner, Default::default(), &token)
                    .map_err(|err| PlanError::Planner(err.to_string()))?,
            )
        };
        Ok(PreparedOperation {
            operation,
            kind,
            plan,
        })
    };
    catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|_| {
        Err(PlanError::Planner(
            "the planner failed on this operation".to_owned(),
        ))
    })
}

/// A bounded map from (minified operation, operation name) to its plan.
/// When full it is emptied: plans are cheap to rebuild, and a steady
/// workload refills it with the operations that matter.
pub(crate) struct PlanCache {
    capacity: usize,
    entries: Mutex<Plans>,
}

/// Minified operation text and operation name.
pub(crate) type PlanKey = (String, Option<String>);

type Plans = HashMap<PlanKey, Arc<PreparedOperation>>;

impl PlanCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn get(&self, key: &(String, Option<String>)) -> Option<Arc<PreparedOperation>> {
        self.lock().get(key).cloned()
    }

    pub(crate) fn insert(&self, key: (String, Option<String>), value: Arc<PreparedOperation>) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(key, value);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Plans> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
