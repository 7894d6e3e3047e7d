//! Projection: the merged subgraph answers, shaped to the client's
//! operation (its aliases, its order, nothing the planner added), with
//! GraphQL null propagation: a `null` in a non-null position nulls the
//! nearest nullable parent, with an error at that path unless a subgraph
//! already reported one there.

use graphql_tools::parser::schema::Type;
use hive_router_query_planner::ast::selection_item::SelectionItem;
use hive_router_query_planner::ast::selection_set::{FieldSelection, SelectionSet};
use serde_json::{json, Map, Value};

use crate::compose::TypeIndex;

/// A non-null violation travelling up to the nearest nullable position.
struct Bubble;

struct Projector<'a> {
    types: &'a TypeIndex,
    variables: &'a Map<String, Value>,
    errors: &'a mut Vec<Value>,
}

/// Projects `data` on `selections` of the root type `root`; returns the
/// response's `data` (`null` when a non-null root field is null).
pub(crate) fn project(
    types: &TypeIndex,
    root: &str,
    selections: &SelectionSet,
    data: &Value,
    variables: &Map<String, Value>,
    errors: &mut Vec<Value>,
) -> Value {
    let mut projector = Projector {
        types,
        variables,
        errors,
    };
    let empty = Map::new();
    let object = data.as_object().unwrap_or(&empty);
    let mut out = Map::new();
    let mut path = Vec::new();
    match projector.selection_set(selections, root, object, &mut path, &mut out) {
        Ok(()) => Value::Object(out),
        Err(Bubble) => Value::Null,
    }
}

impl Projector<'_> {
    fn included(&self, skip_if: Option<&String>, include_if: Option<&String>) -> bool {
        let flag = |name: &String| self.variables.get(name).and_then(Value::as_bool);
        if skip_if.and_then(flag) == Some(true) {
            return false;
        }
        match include_if {
            Some(name) => flag(name) == Some(true),
            None => true,
        }
    }

    fn selection_set(
        &mut self,
        selections: &SelectionSet,
        typename: &str,
        object: &Map<String, Value>,
        path: &mut Vec<Value>,
        out: &mut Map<String, Value>,
    ) -> Result<(), Bubble> {
        for item in &selections.items {
            match item {
                SelectionItem::Field(field) => {
                    if field.omit_from_response
                        || !self.included(field.skip_if.as_ref(), field.include_if.as_ref())
                    {
                        continue;
                    }
                    let key = field.selection_identifier().to_owned();
                    path.push(Value::String(key.clone()));
                    let value = self.field(field, typename, object, path);
                    path.pop();
                    let value = value?;
                    match out.get_mut(&key) {
                        Some(existing) => super::deep_merge(existing, value),
                        None => {
                            out.insert(key, value);
                        }
                    }
                }
                SelectionItem::InlineFragment(fragment) => {
                    if !self.included(fragment.skip_if.as_ref(), fragment.include_if.as_ref()) {
                        continue;
                    }
                    if self.types.satisfies(typename, &fragment.type_condition) {
                        self.selection_set(&fragment.selections, typename, object, path, out)?;
                    }
                }
                SelectionItem::FragmentSpread(_) => {}
            }
        }
        Ok(())
    }

    fn field(
        &mut self,
        field: &FieldSelection,
        parent: &str,
        object: &Map<String, Value>,
        path: &mut Vec<Value>,
    ) -> Result<Value, Bubble> {
        if field.name == "__typename" {
            return Ok(Value::String(parent.to_owned()));
        }
        let value = object.get(field.selection_identifier());
        match self.types.field_type(parent, &field.name) {
            Some(ty) => {
                let ty = ty.clone();
                self.complete(&ty, value, field, path)
            }
            // Not in the public schema (should not pass validation): pass
            // through what the subgraph sent.
            None => Ok(value.cloned().unwrap_or(Value::Null)),
        }
    }

    fn complete(
        &mut self,
        ty: &Type<'static, String>,
        value: Option<&Value>,
        field: &FieldSelection,
        path: &mut Vec<Value>,
    ) -> Result<Value, Bubble> {
        match ty {
            Type::NonNullType(inner) => {
                let completed = self.complete(inner, value, field, path)?;
                if completed.is_null() {
                    self.report_null(path);
                    return Err(Bubble);
                }
                Ok(completed)
            }
            Type::ListType(inner) => match value {
                Some(Value::Array(items)) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        path.push(json!(i));
                        let completed = self.complete(inner, Some(item), field, path);
                        path.pop();
                        match completed {
                            Ok(v) => out.push(v),
                            Err(Bubble) => return Ok(Value::Null),
                        }
                    }
                    Ok(Value::Array(out))
                }
                _ => Ok(Value::Null),
            },
            Type::NamedType(name) => match value {
                None | Some(Value::Null) => Ok(Value::Null),
                Some(value) if self.types.is_leaf(name) || field.selections.is_empty() => {
                    Ok(value.clone())
                }
                Some(Value::Object(object)) => {
                    let runtime = object
                        .get("__typename")
                        .and_then(Value::as_str)
                        .unwrap_or(name)
                        .to_owned();
                    let mut out = Map::new();
                    match self.selection_set(&field.selections, &runtime, object, path, &mut out) {
                        Ok(()) => Ok(Value::Object(out)),
                        Err(Bubble) => Ok(Value::Null),
                    }
                }
                Some(_) => Ok(Value::Null),
            },
        }
    }

    /// Adds a non-null error at `path` unless one is already reported at,
    /// above or below it, or a subgraph failed outright (its error has no
    /// path and already explains the missing data).
    fn report_null(&mut self, path: &[Value]) {
        let covered = self.errors.iter().any(|error| match error.get("path") {
            Some(Value::Array(p)) => {
                let n = p.len().min(path.len());
                p[..n] == path[..n]
            }
            _ => true,
        });
        if !covered {
            self.errors.push(json!({
                "message": "Cannot return null for non-nullable field",
                "path": path,
                "extensions": { "code": service_core::error::codes::INTERNAL.as_str() },
            }));
        }
    }
}
