//! Planning: normalise the selected operation against the supergraph, ask
//! the Hive planner for a query plan, and keep the result in a bounded
//! cache keyed by the minified operation text and the operation name
//! (beside the parsed documents, keyed by the text as sent).

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

/// A bounded map from (minified operation, operation name) to its plan,
/// and from the operation text as clients send it to its parsed document:
/// a client repeating an operation costs neither parsing nor planning.
/// When a map is full it is emptied: plans are cheap to rebuild, and a
/// steady workload refills it with the operations that matter.
pub(crate) struct PlanCache {
    capacity: usize,
    entries: Mutex<Plans>,
    documents: Mutex<Documents>,
}

/// A document as parsed from one operation text.
pub(crate) struct Parsed {
    pub(crate) document: Document<'static, String>,
    /// The minified text: what plans are cached by.
    pub(crate) minified: String,
}

/// The key is hashed for every request: a fast hasher with a random seed.
type Fast = foldhash::fast::RandomState;

/// Plans by minified text, then by operation name.
#[derive(Default)]
struct Plans {
    by_text: HashMap<String, Named, Fast>,
    len: usize,
}

/// The plans of one text, by operation name.
type Named = Vec<(Option<String>, Arc<PreparedOperation>)>;

type Documents = HashMap<String, Arc<Parsed>, Fast>;

impl PlanCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::default(),
            documents: Mutex::default(),
        }
    }

    /// The plan of operation `name` of the document minified to `minified`.
    pub(crate) fn get(&self, minified: &str, name: Option<&str>) -> Option<Arc<PreparedOperation>> {
        lock(&self.entries)
            .by_text
            .get(minified)?
            .iter()
            .find(|(n, _)| n.as_deref() == name)
            .map(|(_, prepared)| prepared.clone())
    }

    pub(crate) fn insert(&self, minified: &str, name: Option<&str>, value: Arc<PreparedOperation>) {
        let mut plans = lock(&self.entries);
        if plans.len >= self.capacity {
            plans.by_text.clear();
            plans.len = 0;
        }
        let named = plans.by_text.entry(minified.to_owned()).or_default();
        match named.iter_mut().find(|(n, _)| n.as_deref() == name) {
            Some(slot) => slot.1 = value,
            None => {
                named.push((name.map(str::to_owned), value));
                plans.len += 1;
            }
        }
    }

    /// The parsed document of the operation text `text`, when one was kept.
    pub(crate) fn document(&self, text: &str) -> Option<Arc<Parsed>> {
        lock(&self.documents).get(text).cloned()
    }

    /// Keeps the parsed document of `text`.
    pub(crate) fn insert_document(&self, text: &str, parsed: Arc<Parsed>) {
        let mut documents = lock(&self.documents);
        if documents.len() >= self.capacity {
            documents.clear();
        }
        documents.insert(text.to_owned(), parsed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
