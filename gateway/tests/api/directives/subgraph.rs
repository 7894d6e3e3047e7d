//! A fixture subgraph: serves a checked-in SDL file (`_service { sdl }`)
//! and answers operations from fixed JSON, so each directive fixture is
//! just SDL plus data. Root fields are read from `root`; `_entities`
//! finds each representation's entity in `entities` (matching every key
//! field the stored entity has), merges the representation into it (so
//! `@requires` fields arrive) and runs `compute` for derived fields. A
//! value `{"__error": "message"}` answers `null` with an error at its path.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use gateway::SubgraphEndpoint;
use graphql_tools::parser::query::{
    self as q, Definition, OperationDefinition, Selection, SelectionSet, TypeCondition,
};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Fills derived fields of an entity after its representation is merged in.
pub type Compute = fn(&mut Map<String, Value>);

/// One subgraph of a fixture: its name (the SDL file's stem) and data.
pub struct FixtureSubgraph {
    pub name: &'static str,
    /// The root `Query` object.
    pub root: Value,
    /// Entities this subgraph resolves, each with `__typename`.
    pub entities: Vec<Value>,
    pub compute: Option<Compute>,
}

impl FixtureSubgraph {
    pub fn new(name: &'static str, root: Value, entities: Value) -> Self {
        Self {
            name,
            root,
            entities: match entities {
                Value::Array(items) => items,
                _ => Vec::new(),
            },
            compute: None,
        }
    }

    pub fn computing(mut self, compute: Compute) -> Self {
        self.compute = Some(compute);
        self
    }
}

struct Served {
    sdl: String,
    data: FixtureSubgraph,
    /// Abstract type name -> the object types it covers.
    possible: HashMap<String, BTreeSet<String>>,
    log: Arc<Mutex<Vec<(String, String)>>>,
}

/// Fixture subgraphs running on loopback port 0.
pub struct Running {
    pub endpoints: Vec<SubgraphEndpoint>,
    /// (subgraph, operation) of every call received.
    pub log: Arc<Mutex<Vec<(String, String)>>>,
    stop: CancellationToken,
}

impl Running {
    pub async fn start(sdls: &BTreeMap<String, String>, subgraphs: Vec<FixtureSubgraph>) -> Self {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let mut endpoints = Vec::new();
        for data in subgraphs {
            let sdl = sdls
                .get(data.name)
                .unwrap_or_else(|| panic!("no SDL file for subgraph {}", data.name))
                .clone();
            let name = data.name;
            let served = Arc::new(Served {
                possible: possible_types(&sdl),
                sdl,
                data,
                log: log.clone(),
            });
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let router = Router::new()
                .route("/graphql", post(handle))
                .route(
                    "/health/ready",
                    get(|| async { Json(json!({"status": "ready"})) }),
                )
                .with_state(served);
            let stopped = stop.clone();
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move { stopped.cancelled().await })
                    .await
                    .unwrap();
            });
            endpoints.push(SubgraphEndpoint::new(
                name,
                format!("http://{addr}/graphql"),
            ));
        }
        Self {
            endpoints,
            log,
            stop,
        }
    }

    /// The subgraphs called so far, in order.
    pub fn called(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(s, _)| s.clone())
            .collect()
    }

    pub fn forget(&self) {
        self.log.lock().unwrap().clear();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// `type X implements A & B` and `union U = A | B`, read from the SDL text
/// (fixtures keep each on one line).
fn possible_types(sdl: &str) -> HashMap<String, BTreeSet<String>> {
    let mut out: HashMap<String, BTreeSet<String>> = HashMap::new();
    for line in sdl.lines().map(str::trim) {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == '&' || c == '|' || c == '=' || c == '{')
            .filter(|w| !w.is_empty())
            .collect();
        match words.as_slice() {
            ["type", object, "implements", rest @ ..] => {
                for interface in rest.iter().take_while(|w| !w.starts_with('@')) {
                    out.entry((*interface).to_owned())
                        .or_default()
                        .insert((*object).to_owned());
                }
            }
            ["union", union, members @ ..] => {
                for member in members.iter().take_while(|w| !w.starts_with('@')) {
                    out.entry((*union).to_owned())
                        .or_default()
                        .insert((*member).to_owned());
                }
            }
            _ => {}
        }
    }
    out
}

async fn handle(State(served): State<Arc<Served>>, Json(body): Json<Value>) -> Json<Value> {
    let query = body["query"].as_str().unwrap_or_default().to_owned();
    served.log.lock().unwrap().push((
        served.data.name.to_owned(),
        format!("{query} {}", body["variables"]),
    ));
    let variables = body["variables"].as_object().cloned().unwrap_or_default();
    let document = match q::parse_query::<String>(&query) {
        Ok(document) => document.into_static(),
        Err(err) => return Json(json!({"errors": [{"message": err.to_string()}]})),
    };
    let mut fragments = HashMap::new();
    let mut operation = None;
    for definition in &document.definitions {
        match definition {
            Definition::Fragment(f) => {
                fragments.insert(f.name.clone(), f);
            }
            Definition::Operation(op) => {
                operation = Some(match op {
                    OperationDefinition::SelectionSet(s) => s,
                    OperationDefinition::Query(q) => &q.selection_set,
                    OperationDefinition::Mutation(m) => &m.selection_set,
                    OperationDefinition::Subscription(s) => &s.selection_set,
                })
            }
        }
    }
    let Some(selections) = operation else {
        return Json(json!({"errors": [{"message": "no operation"}]}));
    };
    let mut run = Run {
        served: &served,
        variables: &variables,
        fragments,
        errors: Vec::new(),
    };
    let mut data = Map::new();
    run.root(selections, &mut data);
    let mut out = Map::new();
    out.insert("data".to_owned(), Value::Object(data));
    if !run.errors.is_empty() {
        out.insert("errors".to_owned(), Value::Array(run.errors));
    }
    Json(Value::Object(out))
}

struct Run<'a> {
    served: &'a Served,
    variables: &'a Map<String, Value>,
    fragments: HashMap<String, &'a q::FragmentDefinition<'static, String>>,
    errors: Vec<Value>,
}

impl Run<'_> {
    fn value(&self, value: &q::Value<'static, String>) -> Value {
        match value {
            q::Value::Variable(name) => self.variables.get(name).cloned().unwrap_or(Value::Null),
            q::Value::Int(i) => json!(i.as_i64()),
            q::Value::Float(f) => json!(f),
            q::Value::String(s) | q::Value::Enum(s) => Value::String(s.clone()),
            q::Value::Boolean(b) => Value::Bool(*b),
            q::Value::Null => Value::Null,
            q::Value::List(items) => Value::Array(items.iter().map(|v| self.value(v)).collect()),
            q::Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), self.value(v)))
                    .collect(),
            ),
        }
    }

    fn included(&self, directives: &[q::Directive<'static, String>]) -> bool {
        directives.iter().all(|d| {
            let condition = d
                .arguments
                .iter()
                .find(|(name, _)| name == "if")
                .map(|(_, v)| self.value(v).as_bool() == Some(true));
            match d.name.as_str() {
                "skip" => condition != Some(true),
                "include" => condition != Some(false),
                _ => true,
            }
        })
    }

    fn satisfies(&self, typename: &str, condition: &str) -> bool {
        typename == condition
            || self
                .served
                .possible
                .get(condition)
                .is_some_and(|types| types.contains(typename))
    }

    fn root(&mut self, selections: &SelectionSet<'static, String>, out: &mut Map<String, Value>) {
        for item in &selections.items {
            let Selection::Field(field) = item else {
                continue;
            };
            if !self.included(&field.directives) {
                continue;
            }
            let key = field.alias.clone().unwrap_or_else(|| field.name.clone());
            let path = vec![json!(key)];
            let value = match field.name.as_str() {
                "__typename" => json!("Query"),
                "_service" => json!({"sdl": self.served.sdl}),
                "_entities" => {
                    let representations = field
                        .arguments
                        .iter()
                        .find(|(name, _)| name == "representations")
                        .map(|(_, v)| self.value(v))
                        .unwrap_or(Value::Null);
                    let entities: Vec<Value> = representations
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|r| self.entity(r))
                        .collect();
                    let mut answers = Vec::new();
                    for (i, entity) in entities.iter().enumerate() {
                        let mut at = path.clone();
                        at.push(json!(i));
                        answers.push(self.complete(entity, &field.selection_set, &mut at));
                    }
                    Value::Array(answers)
                }
                name => {
                    let raw = self
                        .served
                        .data
                        .root
                        .get(name)
                        .cloned()
                        .unwrap_or(Value::Null);
                    let mut at = path.clone();
                    self.field(&raw, &field.selection_set, &mut at)
                }
            };
            out.insert(key, value);
        }
    }

    /// The stored entity a representation names, with the representation
    /// merged in and derived fields computed; `null` when none matches.
    fn entity(&self, representation: &Value) -> Value {
        let Some(wanted) = representation.as_object() else {
            return Value::Null;
        };
        let typename = wanted.get("__typename").and_then(Value::as_str);
        let found = self.served.data.entities.iter().find(|stored| {
            let Some(stored) = stored.as_object() else {
                return false;
            };
            let mut keys = 0;
            let same_type = stored.get("__typename").and_then(Value::as_str) == typename
                || typename.is_some_and(|t| {
                    stored
                        .get("__typename")
                        .and_then(Value::as_str)
                        .is_some_and(|s| self.satisfies(s, t))
                });
            same_type
                && wanted.iter().all(|(k, v)| {
                    if k == "__typename" {
                        return true;
                    }
                    match stored.get(k) {
                        Some(have) if !is_error(have) => {
                            keys += 1;
                            contains(have, v)
                        }
                        _ => true,
                    }
                })
                && keys > 0
        });
        let Some(Value::Object(stored)) = found else {
            return Value::Null;
        };
        let mut entity = stored.clone();
        for (k, v) in wanted {
            if k != "__typename" {
                entity.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        if let Some(compute) = self.served.data.compute {
            compute(&mut entity);
        }
        Value::Object(entity)
    }

    fn field(
        &mut self,
        raw: &Value,
        selections: &SelectionSet<'static, String>,
        path: &mut Vec<Value>,
    ) -> Value {
        if let Some(message) = raw.get("__error").and_then(Value::as_str) {
            self.errors
                .push(json!({"message": message, "path": path.clone()}));
            return Value::Null;
        }
        if selections.items.is_empty() {
            return raw.clone();
        }
        self.complete(raw, selections, path)
    }

    fn complete(
        &mut self,
        value: &Value,
        selections: &SelectionSet<'static, String>,
        path: &mut Vec<Value>,
    ) -> Value {
        match value {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        path.push(json!(i));
                        let out = self.complete(item, selections, path);
                        path.pop();
                        out
                    })
                    .collect(),
            ),
            Value::Object(object) => {
                let mut out = Map::new();
                self.selection_set(object, selections, path, &mut out);
                Value::Object(out)
            }
            other => other.clone(),
        }
    }

    fn selection_set(
        &mut self,
        object: &Map<String, Value>,
        selections: &SelectionSet<'static, String>,
        path: &mut Vec<Value>,
        out: &mut Map<String, Value>,
    ) {
        let typename = object
            .get("__typename")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        for item in &selections.items {
            match item {
                Selection::Field(field) => {
                    if !self.included(&field.directives) {
                        continue;
                    }
                    let key = field.alias.clone().unwrap_or_else(|| field.name.clone());
                    let raw = object.get(&field.name).cloned().unwrap_or(Value::Null);
                    path.push(json!(key));
                    let value = self.field(&raw, &field.selection_set, path);
                    path.pop();
                    match out.get_mut(&key) {
                        Some(Value::Object(existing)) => {
                            if let Value::Object(more) = value {
                                existing.extend(more);
                            }
                        }
                        _ => {
                            out.insert(key, value);
                        }
                    }
                }
                Selection::InlineFragment(fragment) => {
                    let applies = match &fragment.type_condition {
                        Some(TypeCondition::On(condition)) => self.satisfies(&typename, condition),
                        None => true,
                    };
                    if applies && self.included(&fragment.directives) {
                        self.selection_set(object, &fragment.selection_set, path, out);
                    }
                }
                Selection::FragmentSpread(spread) => {
                    let Some(fragment) = self.fragments.get(&spread.fragment_name).copied() else {
                        continue;
                    };
                    let TypeCondition::On(condition) = &fragment.type_condition;
                    if self.satisfies(&typename, condition) && self.included(&spread.directives) {
                        self.selection_set(object, &fragment.selection_set, path, out);
                    }
                }
            }
        }
    }
}

fn is_error(value: &Value) -> bool {
    value.get("__error").is_some()
}

/// Whether `have` holds everything `wanted` names (nested keys).
fn contains(have: &Value, wanted: &Value) -> bool {
    match (have, wanted) {
        (Value::Object(have), Value::Object(wanted)) => wanted
            .iter()
            .filter(|(k, _)| k.as_str() != "__typename")
            .all(|(k, v)| have.get(k).is_some_and(|h| contains(h, v))),
        (have, wanted) => have == wanted,
    }
}
