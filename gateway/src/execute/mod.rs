//! Execution: walk a query plan, send each fetch to its subgraph (parallel
//! nodes concurrently, sequences in order, entity fetches through
//! `_entities` with deduplicated representations), merge the answers into
//! one tree, then project that tree on the client's operation with GraphQL
//! null propagation.

mod entities;
mod fetch;
pub(crate) mod introspection;
mod response;

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hash, Hasher};
use std::pin::Pin;
use std::sync::Mutex;

use entities::{apply_rewrite, collect};
use hive_router_query_planner::planner::plan_nodes::{
    BatchFetchNode, FetchNode, FetchRewrite, FlattenNodePath, PlanNode,
};
use serde_json::{json, Map, Value};
use service_core::context::RequestContext;

pub(crate) use fetch::{FetchError, Forwarded, SubgraphClient, SubgraphResponse};
pub(crate) use response::{response_body, response_value};

use crate::compose::Supergraph;
use crate::error::{codes, GraphqlError};

/// One step into the merged response: an object key (borrowed from the
/// plan's flatten path) or a list index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seg<'p> {
    Key(&'p str),
    Index(usize),
}

fn path_json(path: &[Seg<'_>]) -> Vec<Value> {
    path.iter()
        .map(|s| match s {
            Seg::Key(k) => Value::String((*k).to_owned()),
            Seg::Index(i) => json!(i),
        })
        .collect()
}

/// The merged response as fetches fill it in.
#[derive(Debug)]
pub(crate) struct Merged {
    pub(crate) data: Value,
    pub(crate) errors: Vec<Value>,
}

impl Merged {
    pub(crate) fn empty() -> Self {
        Self {
            data: Value::Object(Map::new()),
            errors: Vec::new(),
        }
    }
}

/// What executing one plan needs.
pub(crate) struct Executor<'a> {
    pub(crate) gateway: &'a crate::Gateway,
    pub(crate) supergraph: &'a Supergraph,
    pub(crate) client: &'a SubgraphClient,
    pub(crate) context: &'a RequestContext,
    pub(crate) variables: &'a Map<String, Value>,
    pub(crate) forwarded: &'a Forwarded,
}

type Boxed<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Representations of one entity fetch, deduplicated, and where each one's
/// answer goes.
#[derive(Default)]
struct Batch<'p> {
    representations: Vec<Value>,
    targets: Vec<Vec<Vec<Seg<'p>>>>,
    /// The first representation with each hash; `collisions[i]` chains the
    /// next one with the same hash as representation `i`.
    seen: HashMap<u64, usize, foldhash::fast::RandomState>,
    collisions: Vec<Option<usize>>,
    hasher: foldhash::fast::RandomState,
}

impl<'p> Batch<'p> {
    fn push(&mut self, representation: Value, target: Vec<Seg<'p>>) {
        let mut hasher = self.hasher.build_hasher();
        hash_json(&representation, &mut hasher);
        let hash = hasher.finish();
        let new = self.representations.len();
        match self.seen.get(&hash) {
            Some(&first) => {
                let mut at = first;
                loop {
                    if self.representations[at] == representation {
                        self.targets[at].push(target);
                        return;
                    }
                    match self.collisions[at] {
                        Some(next) => at = next,
                        None => break,
                    }
                }
                self.collisions[at] = Some(new);
            }
            None => {
                self.seen.insert(hash, new);
            }
        }
        self.representations.push(representation);
        self.targets.push(vec![target]);
        self.collisions.push(None);
    }
}

/// Feeds `value` to `hasher`, consistently with `Value`'s equality for
/// the representations a batch holds (objects in their key order).
fn hash_json(value: &Value, hasher: &mut impl Hasher) {
    match value {
        Value::Null => hasher.write_u8(0),
        Value::Bool(b) => {
            hasher.write_u8(1);
            b.hash(hasher);
        }
        Value::Number(n) => {
            hasher.write_u8(2);
            if let Some(u) = n.as_u64() {
                hasher.write_u64(u);
            } else if let Some(i) = n.as_i64() {
                hasher.write_i64(i);
            } else if let Some(f) = n.as_f64() {
                hasher.write_u64(f.to_bits());
            }
        }
        Value::String(s) => {
            hasher.write_u8(3);
            s.hash(hasher);
        }
        Value::Array(items) => {
            hasher.write_u8(4);
            hasher.write_usize(items.len());
            for item in items {
                hash_json(item, hasher);
            }
        }
        Value::Object(object) => {
            hasher.write_u8(5);
            hasher.write_usize(object.len());
            for (key, item) in object {
                key.hash(hasher);
                hash_json(item, hasher);
            }
        }
    }
}

impl<'a> Executor<'a> {
    /// Runs `root` and returns the merged (not yet projected) response.
    pub(crate) async fn run(&self, root: &PlanNode) -> Merged {
        let state = Mutex::new(Merged::empty());
        self.node(root, &state).await;
        state
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `nodes` in order on a response that already holds `data` (one
    /// event of a subscription: its entity fields come from the rest of the
    /// plan) and returns the merged response.
    pub(crate) async fn run_after(&self, data: Value, nodes: &[PlanNode]) -> Merged {
        let state = Mutex::new(Merged {
            data,
            errors: Vec::new(),
        });
        for node in nodes {
            self.node(node, &state).await;
        }
        state
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn node<'s>(&'s self, node: &'s PlanNode, state: &'s Mutex<Merged>) -> Boxed<'s> {
        Box::pin(async move {
            match node {
                PlanNode::Fetch(fetch) => self.root_fetch(fetch, state).await,
                PlanNode::Flatten(flatten) => match flatten.node.as_ref() {
                    PlanNode::Fetch(fetch) => self.entity_fetch(fetch, &flatten.path, state).await,
                    other => self.node(other, state).await,
                },
                PlanNode::BatchFetch(batch) => self.batch_fetch(batch, state).await,
                PlanNode::Sequence(sequence) => {
                    for child in &sequence.nodes {
                        self.node(child, state).await;
                    }
                }
                PlanNode::Parallel(parallel) => {
                    futures::future::join_all(
                        parallel.nodes.iter().map(|child| self.node(child, state)),
                    )
                    .await;
                }
                PlanNode::Condition(condition) => {
                    let holds = self
                        .variables
                        .get(&condition.condition)
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    let branch = if holds {
                        condition.if_clause.as_deref()
                    } else {
                        condition.else_clause.as_deref()
                    };
                    if let Some(branch) = branch {
                        self.node(branch, state).await;
                    }
                }
                PlanNode::Subscription(_) | PlanNode::Defer(_) => {
                    lock(state).errors.push(
                        GraphqlError::new(
                            codes::VALIDATION_FAILED,
                            "Subscriptions and @defer are not served over this transport",
                        )
                        .to_json(),
                    );
                }
            }
        })
    }

    fn variables_for(
        &self,
        usages: Option<&std::collections::BTreeSet<String>>,
    ) -> Map<String, Value> {
        usages
            .into_iter()
            .flatten()
            .filter_map(|name| self.variables.get(name).map(|v| (name.clone(), v.clone())))
            .collect()
    }

    async fn call(
        &self,
        service: &str,
        query: &str,
        variables: Map<String, Value>,
    ) -> Result<SubgraphResponse, FetchError> {
        if service == crate::admin::LOCAL_SUBGRAPH {
            return Ok(self
                .gateway
                .inner
                .local
                .execute(self.gateway, query, variables, self.context)
                .await);
        }
        let Some(endpoint) = self.supergraph.endpoints.get(service) else {
            return Err(FetchError::Transport(format!("unknown subgraph {service}")));
        };
        self.client
            .fetch(service, &endpoint.url, query, variables, self.forwarded)
            .await
    }

    async fn root_fetch(&self, fetch: &FetchNode, state: &Mutex<Merged>) {
        let variables = self.variables_for(fetch.variable_usages.as_ref());
        let result = self
            .call(
                &fetch.service_name,
                &fetch.operation.document_str,
                variables,
            )
            .await;
        let mut merged = lock(state);
        match result {
            Ok(response) => {
                if let Some(mut data) = response.data {
                    for rewrite in fetch.output_rewrites.iter().flatten() {
                        apply_rewrite(&mut data, rewrite);
                    }
                    deep_merge(&mut merged.data, data);
                }
                merged.errors.extend(response.errors);
            }
            Err(err) => merged.errors.push(unavailable(&fetch.service_name, &err)),
        }
    }

    async fn entity_fetch(&self, fetch: &FetchNode, path: &FlattenNodePath, state: &Mutex<Merged>) {
        let Some(requires) = &fetch.requires else {
            return self.root_fetch(fetch, state).await;
        };
        let mut batch = {
            let merged = lock(state);
            let mut batch = Batch::default();
            collect(
                &self.supergraph.types,
                &merged.data,
                path.as_slice(),
                requires,
                fetch.input_rewrites.as_deref(),
                &mut Vec::new(),
                &mut batch,
            );
            batch
        };
        if batch.representations.is_empty() {
            return;
        }
        let mut variables = self.variables_for(fetch.variable_usages.as_ref());
        variables.insert(
            "representations".to_owned(),
            Value::Array(std::mem::take(&mut batch.representations)),
        );
        let result = self
            .call(
                &fetch.service_name,
                &fetch.operation.document_str,
                variables,
            )
            .await;
        let mut merged = lock(state);
        match result {
            Ok(response) => {
                let entities = response
                    .data
                    .and_then(|mut d| d.get_mut("_entities").map(Value::take));
                let mut nulls = null_positions(entities.as_ref());
                merge_entities(
                    &self.supergraph.types,
                    &mut merged,
                    entities,
                    &batch,
                    fetch.output_rewrites.as_deref(),
                );
                for error in response.errors {
                    let error = remap_error(error, "_entities", &batch.targets, &mut nulls);
                    merged.errors.push(error);
                }
            }
            Err(err) => merged.errors.push(unavailable(&fetch.service_name, &err)),
        }
    }

    async fn batch_fetch(&self, node: &BatchFetchNode, state: &Mutex<Merged>) {
        let mut batches: Vec<Batch<'_>> = {
            let merged = lock(state);
            node.entity_batch
                .aliases
                .iter()
                .map(|alias| {
                    let mut batch = Batch::default();
                    for path in &alias.merge_paths {
                        collect(
                            &self.supergraph.types,
                            &merged.data,
                            path.as_slice(),
                            &alias.requires,
                            alias.input_rewrites.as_deref(),
                            &mut Vec::new(),
                            &mut batch,
                        );
                    }
                    batch
                })
                .collect()
        };
        if batches.iter().all(|b| b.representations.is_empty()) {
            return;
        }
        let mut variables = self.variables_for(node.variable_usages.as_ref());
        for (alias, batch) in node.entity_batch.aliases.iter().zip(&mut batches) {
            variables.insert(
                alias.representations_variable_name.clone(),
                Value::Array(std::mem::take(&mut batch.representations)),
            );
        }
        let result = self
            .call(&node.service_name, &node.operation.document_str, variables)
            .await;
        let mut merged = lock(state);
        match result {
            Ok(response) => {
                let mut data = response.data.unwrap_or(Value::Null);
                let mut nulls: HashMap<String, std::collections::VecDeque<usize>> = HashMap::new();
                for (alias, batch) in node.entity_batch.aliases.iter().zip(&batches) {
                    let entities = data.get_mut(&alias.alias).map(Value::take);
                    nulls.insert(alias.alias.clone(), null_positions(entities.as_ref()));
                    merge_entities(
                        &self.supergraph.types,
                        &mut merged,
                        entities,
                        batch,
                        alias.output_rewrites.as_deref(),
                    );
                }
                for error in response.errors {
                    let alias = error
                        .pointer("/path/0")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    let targets = alias.as_deref().and_then(|alias| {
                        node.entity_batch
                            .aliases
                            .iter()
                            .position(|a| a.alias == alias)
                            .map(|i| (alias, &batches[i].targets))
                    });
                    let error = match targets {
                        Some((alias, targets)) => {
                            let mut none = std::collections::VecDeque::new();
                            let nulls = nulls.get_mut(alias).unwrap_or(&mut none);
                            remap_error(error, alias, targets, nulls)
                        }
                        None => strip_path(error),
                    };
                    merged.errors.push(error);
                }
            }
            Err(err) => merged.errors.push(unavailable(&node.service_name, &err)),
        }
    }
}

fn lock(state: &Mutex<Merged>) -> std::sync::MutexGuard<'_, Merged> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A subscription event's `data` with the primary fetch's output rewrites
/// applied, as a root fetch's answer would have them.
pub(crate) fn rewrite_event(fetch: &FetchNode, mut data: Value) -> Value {
    for rewrite in fetch.output_rewrites.iter().flatten() {
        apply_rewrite(&mut data, rewrite);
    }
    data
}

/// The error a plan node gets when its subgraph gave no answer.
fn unavailable(service: &str, err: &FetchError) -> Value {
    tracing::warn!(subgraph = service, error = %err, "subgraph unavailable");
    GraphqlError::new(
        codes::SUBGRAPH_UNAVAILABLE,
        format!("Subgraph {service} is unavailable"),
    )
    .with("serviceName", service)
    .to_json()
}

fn merge_entities(
    types: &crate::compose::TypeIndex,
    merged: &mut Merged,
    entities: Option<Value>,
    batch: &Batch<'_>,
    rewrites: Option<&[FetchRewrite]>,
) {
    let Some(Value::Array(entities)) = entities else {
        return;
    };
    for (mut entity, targets) in entities.into_iter().zip(&batch.targets) {
        for rewrite in rewrites.into_iter().flatten() {
            apply_rewrite(&mut entity, rewrite);
        }
        // An `@interfaceObject` subgraph answers with the interface's name:
        // it must not hide the object type already known.
        let abstract_typename = entity
            .get("__typename")
            .and_then(Value::as_str)
            .is_some_and(|t| types.is_abstract(t));
        if abstract_typename {
            if let Some(object) = entity.as_object_mut() {
                object.remove("__typename");
            }
        }
        // Every target but the last gets a copy; the last one the entity.
        let Some((last, others)) = targets.split_last() else {
            continue;
        };
        for target in others {
            if let Some(slot) = get_mut(&mut merged.data, target) {
                deep_merge(slot, entity.clone());
            }
        }
        if let Some(slot) = get_mut(&mut merged.data, last) {
            deep_merge(slot, entity);
        }
    }
}

/// Indices of the entities a subgraph answered with `null`.
fn null_positions(entities: Option<&Value>) -> std::collections::VecDeque<usize> {
    entities
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_null())
                .map(|(i, _)| i)
                .collect()
        })
        .unwrap_or_default()
}

/// Rewrites `[root, i, rest...]` error paths to where entity `i` sits in
/// the merged response. async-graphql writes `[root, rest...]` without the
/// index; such errors are matched, in order, with the entities that came
/// back `null`.
fn remap_error(
    mut error: Value,
    root: &str,
    targets: &[Vec<Vec<Seg<'_>>>],
    nulls: &mut std::collections::VecDeque<usize>,
) -> Value {
    let Some(path) = error.get("path").and_then(Value::as_array).cloned() else {
        return error;
    };
    let locate = |index: usize, skip: usize| {
        targets.get(index).and_then(|t| t.first()).map(|target| {
            let mut out = path_json(target);
            out.extend(path.iter().skip(skip).cloned());
            out
        })
    };
    let remapped = match (path.first().and_then(Value::as_str), path.get(1)) {
        (Some(first), Some(Value::Number(index))) if first == root => index
            .as_u64()
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| locate(i, 2)),
        (Some(first), _) if first == root => nulls.pop_front().and_then(|i| locate(i, 1)),
        _ => None,
    };
    match remapped {
        Some(new_path) => {
            if let Some(object) = error.as_object_mut() {
                object.insert("path".to_owned(), Value::Array(new_path));
            }
            error
        }
        None => strip_path(error),
    }
}

fn strip_path(mut error: Value) -> Value {
    if let Some(object) = error.as_object_mut() {
        object.remove("path");
    }
    error
}

fn get_mut<'v>(root: &'v mut Value, path: &[Seg<'_>]) -> Option<&'v mut Value> {
    let mut cursor = root;
    for segment in path {
        cursor = match segment {
            Seg::Key(key) => cursor.get_mut(*key)?,
            Seg::Index(i) => cursor.get_mut(*i)?,
        };
    }
    Some(cursor)
}

/// Merges `source` into `target`: objects key by key, equal-length lists
/// item by item; a `null` never overwrites what another subgraph sent.
pub(crate) fn deep_merge(target: &mut Value, source: Value) {
    match (target, source) {
        (Value::Object(target), Value::Object(source)) => {
            for (key, value) in source {
                match target.get_mut(&key) {
                    Some(slot) => deep_merge(slot, value),
                    None => {
                        target.insert(key, value);
                    }
                }
            }
        }
        (Value::Array(target), Value::Array(source)) if target.len() == source.len() => {
            for (slot, value) in target.iter_mut().zip(source) {
                deep_merge(slot, value);
            }
        }
        (_, Value::Null) => {}
        (target, source) => *target = source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_both_sides_and_ignores_nulls() {
        let mut target = json!({"a": {"x": 1}, "l": [{"id": 1}, {"id": 2}]});
        deep_merge(
            &mut target,
            json!({"a": {"y": 2}, "l": [{"n": "a"}, null], "b": null}),
        );
        assert_eq!(
            target,
            json!({"a": {"x": 1, "y": 2}, "l": [{"id": 1, "n": "a"}, {"id": 2}], "b": null})
        );
    }

    #[test]
    fn entity_error_paths_point_into_the_response() {
        let targets = vec![vec![vec![Seg::Key("top"), Seg::Index(3)]]];
        let mut nulls = std::collections::VecDeque::from([0]);
        let error = remap_error(
            json!({"message": "m", "path": ["_entities", 0, "name"]}),
            "_entities",
            &targets,
            &mut nulls,
        );
        assert_eq!(error["path"], json!(["top", 3, "name"]));
        let error = remap_error(
            json!({"message": "m", "path": ["_entities", "name"]}),
            "_entities",
            &targets,
            &mut nulls,
        );
        assert_eq!(error["path"], json!(["top", 3, "name"]));
    }
}
