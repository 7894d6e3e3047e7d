//! Entity representations: find the entities at a flatten path and build
//! the `_entities` representation each needs, applying the planner's
//! rewrites.

use hive_router_query_planner::ast::selection_item::SelectionItem;
use hive_router_query_planner::ast::selection_set::SelectionSet;
use hive_router_query_planner::planner::plan_nodes::{
    FetchNodePathSegment, FetchRewrite, FlattenNodePathSegment,
};
use serde_json::{Map, Value};

use super::{Batch, Seg};
use crate::compose::TypeIndex;

/// Walks `path` from `value`, building a representation of each entity found.
pub(super) fn collect<'p>(
    types: &TypeIndex,
    value: &Value,
    path: &'p [FlattenNodePathSegment],
    requires: &SelectionSet,
    rewrites: Option<&[FetchRewrite]>,
    at: &mut Vec<Seg<'p>>,
    batch: &mut Batch<'p>,
) {
    match path.split_first() {
        None => match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    at.push(Seg::Index(i));
                    collect(types, item, path, requires, rewrites, at, batch);
                    at.pop();
                }
            }
            Value::Object(_) => {
                if let Some(mut representation) = represent(types, value, requires) {
                    for rewrite in rewrites.into_iter().flatten() {
                        rewrite_value(Some(types), &mut representation, rewrite);
                    }
                    batch.push(representation, at.clone());
                }
            }
            _ => {}
        },
        Some((segment, rest)) => match segment {
            FlattenNodePathSegment::Field(name) => {
                if let Some(child) = value.get(name) {
                    at.push(Seg::Key(name));
                    collect(types, child, rest, requires, rewrites, at, batch);
                    at.pop();
                }
            }
            FlattenNodePathSegment::List => {
                if let Value::Array(items) = value {
                    for (i, item) in items.iter().enumerate() {
                        at.push(Seg::Index(i));
                        collect(types, item, rest, requires, rewrites, at, batch);
                        at.pop();
                    }
                }
            }
            FlattenNodePathSegment::TypeCondition(names) => {
                let typename = value.get("__typename").and_then(Value::as_str);
                if typename.is_some_and(|t| names.iter().any(|n| types.satisfies(t, n))) {
                    collect(types, value, rest, requires, rewrites, at, batch);
                }
            }
        },
    }
}

/// The representation of `entity` that `requires` asks for, or `None`
/// when the entity lacks a required field (it is then not fetched).
fn represent(types: &TypeIndex, entity: &Value, requires: &SelectionSet) -> Option<Value> {
    let object = entity.as_object()?;
    let mut out = Map::new();
    for item in &requires.items {
        match item {
            SelectionItem::Field(field) => {
                let value = object.get(field.selection_identifier())?;
                let value = if field.selections.is_empty() {
                    value.clone()
                } else {
                    represent_value(types, value, &field.selections)?
                };
                out.insert(field.name.clone(), value);
            }
            SelectionItem::InlineFragment(fragment) => {
                let typename = object.get("__typename").and_then(Value::as_str)?;
                if types.satisfies(typename, &fragment.type_condition) {
                    if let Value::Object(part) = represent(types, entity, &fragment.selections)? {
                        out.extend(part);
                    }
                }
            }
            SelectionItem::FragmentSpread(_) => {}
        }
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

fn represent_value(types: &TypeIndex, value: &Value, selections: &SelectionSet) -> Option<Value> {
    match value {
        Value::Null => Some(Value::Null),
        Value::Array(items) => items
            .iter()
            .map(|item| represent_value(types, item, selections))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array),
        Value::Object(_) => represent(types, value, selections),
        other => Some(other.clone()),
    }
}

/// Applies a planner rewrite (set `__typename`, rename a key) in place.
pub(super) fn apply_rewrite(value: &mut Value, rewrite: &FetchRewrite) {
    rewrite_value(None, value, rewrite);
}

/// Applies a rewrite; with `types`, a `__typename` condition naming an
/// abstract type holds for its possible types too (the planner's
/// `... on Media` rewrite of a `Book` representation sent to a subgraph
/// that knows `Media` as an `@interfaceObject`).
fn rewrite_value(types: Option<&TypeIndex>, value: &mut Value, rewrite: &FetchRewrite) {
    match rewrite {
        FetchRewrite::ValueSetter(setter) => {
            rewrite_at(types, value, &setter.path, &mut |object, key| {
                object.insert(key.to_owned(), Value::String(setter.set_value_to.clone()));
            });
        }
        FetchRewrite::KeyRenamer(renamer) => {
            rewrite_at(types, value, &renamer.path, &mut |object, key| {
                if let Some(v) = object.remove(key) {
                    object.insert(renamer.rename_key_to.clone(), v);
                }
            });
        }
    }
}

fn rewrite_at(
    types: Option<&TypeIndex>,
    value: &mut Value,
    path: &[FetchNodePathSegment],
    apply: &mut dyn FnMut(&mut Map<String, Value>, &str),
) {
    if let Value::Array(items) = value {
        for item in items {
            rewrite_at(types, item, path, apply);
        }
        return;
    }
    let Some((segment, rest)) = path.split_first() else {
        return;
    };
    match segment {
        FetchNodePathSegment::TypenameEquals(names) => {
            let matches = value
                .get("__typename")
                .and_then(Value::as_str)
                .is_some_and(|t| {
                    names.contains(t)
                        || types.is_some_and(|types| names.iter().any(|n| types.satisfies(t, n)))
                });
            if matches {
                rewrite_at(types, value, rest, apply);
            }
        }
        FetchNodePathSegment::Key(key) => {
            let Value::Object(object) = value else {
                return;
            };
            if rest.is_empty() {
                apply(object, key);
            } else if let Some(child) = object.get_mut(key) {
                rewrite_at(types, child, rest, apply);
            }
        }
    }
}
