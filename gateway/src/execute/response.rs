//! Projection: the merged subgraph answers, shaped to the client's
//! operation (its aliases, its order, nothing the planner added), with
//! GraphQL null propagation: a `null` in a non-null position nulls the
//! nearest nullable parent, with an error at that path unless a subgraph
//! already reported one there.
//!
//! The projection is written straight into the response's JSON bytes; no
//! second tree is built. Null propagation works on the bytes: each
//! nullable position remembers where its value starts, and a non-null
//! violation below it truncates the output back there and writes `null`.

use graphql_tools::parser::schema::Type;
use hive_router_query_planner::ast::selection_item::SelectionItem;
use hive_router_query_planner::ast::selection_set::{FieldSelection, SelectionSet};
use serde_json::{json, Map, Value};

use crate::compose::TypeIndex;

/// A non-null violation travelling up to the nearest nullable position.
struct Bubble;

/// What a completed position holds, for the non-null check above it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Written {
    Null,
    Value,
}

/// One step of the path being written. Turned into JSON only for an error.
#[derive(Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

impl Step<'_> {
    fn matches(self, json: &Value) -> bool {
        match (self, json) {
            (Step::Key(key), Value::String(s)) => s == key,
            (Step::Index(i), Value::Number(n)) => n.as_u64() == u64::try_from(i).ok(),
            _ => false,
        }
    }

    fn to_json(self) -> Value {
        match self {
            Step::Key(key) => Value::String(key.to_owned()),
            Step::Index(i) => json!(i),
        }
    }
}

struct Projector<'a, 'o> {
    types: &'a TypeIndex,
    variables: &'a Map<String, Value>,
    errors: &'o mut Vec<Value>,
    out: &'o mut Vec<u8>,
    path: Vec<Step<'a>>,
    /// The fields of the objects being written, outermost first: each
    /// object collects its fields (fragments flattened) above the ones of
    /// its parent and truncates them when done, so no object allocates.
    fields: Vec<&'a FieldSelection>,
}

/// The response to a client: `errors` (when there are any, those in
/// `errors` followed by any the projection adds) and `data`, `data`
/// projected on `selections` of the root type `root` (`null` when a
/// non-null root field is null), serialized as JSON.
pub(crate) fn response_body(
    types: &TypeIndex,
    root: &str,
    selections: &SelectionSet,
    data: &Value,
    variables: &Map<String, Value>,
    mut errors: Vec<Value>,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(1024);
    body.extend_from_slice(b"{\"data\":");
    project(
        types,
        root,
        selections,
        data,
        variables,
        &mut errors,
        &mut body,
    );
    body.push(b'}');
    if errors.is_empty() {
        return body;
    }
    // `errors` comes first, as before: it is only known once `data` is written.
    let mut with_errors = Vec::with_capacity(body.len() + 128 * errors.len());
    with_errors.extend_from_slice(b"{\"errors\":");
    write_json(&mut with_errors, &Value::Array(errors));
    with_errors.push(b',');
    with_errors.extend_from_slice(body.get(1..).unwrap_or_default());
    with_errors
}

/// [`response_body`] as a JSON value, for callers that send it on inside
/// another message (subscription events).
pub(crate) fn response_value(
    types: &TypeIndex,
    root: &str,
    selections: &SelectionSet,
    data: &Value,
    variables: &Map<String, Value>,
    errors: Vec<Value>,
) -> Value {
    let body = response_body(types, root, selections, data, variables, errors);
    // The bytes were written from JSON values and names: they parse.
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

/// Writes `data` projected on `selections` of the root type `root` to
/// `out` (`null` when a non-null root field is null), adding to `errors`
/// an error for each non-null violation no error covers yet.
fn project(
    types: &TypeIndex,
    root: &str,
    selections: &SelectionSet,
    data: &Value,
    variables: &Map<String, Value>,
    errors: &mut Vec<Value>,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    let mut projector = Projector {
        types,
        variables,
        errors,
        out,
        path: Vec::with_capacity(16),
        fields: Vec::with_capacity(32),
    };
    let empty = Map::new();
    let object = data.as_object().unwrap_or(&empty);
    if projector.object(&[selections], root, object).is_err() {
        out.truncate(start);
        out.extend_from_slice(b"null");
    }
}

impl<'a> Projector<'a, '_> {
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

    /// Pushes the fields of `selections` that apply to an object of type
    /// `typename`, in order, inline fragments flattened.
    fn collect(&mut self, selections: &'a SelectionSet, typename: &str) {
        for item in &selections.items {
            match item {
                SelectionItem::Field(field) => {
                    if !field.omit_from_response
                        && self.included(field.skip_if.as_ref(), field.include_if.as_ref())
                    {
                        self.fields.push(field);
                    }
                }
                SelectionItem::InlineFragment(fragment) => {
                    if self.included(fragment.skip_if.as_ref(), fragment.include_if.as_ref())
                        && self.types.satisfies(typename, &fragment.type_condition)
                    {
                        self.collect(&fragment.selections, typename);
                    }
                }
                SelectionItem::FragmentSpread(_) => {}
            }
        }
    }

    /// Writes `object` projected on `selections` (one set, or the sets of
    /// every field sharing a response key). Fields sharing a response key
    /// are written once, at the first one's place, with their selections
    /// merged.
    fn object(
        &mut self,
        selections: &[&'a SelectionSet],
        typename: &str,
        object: &Map<String, Value>,
    ) -> Result<(), Bubble> {
        let start = self.fields.len();
        for set in selections {
            self.collect(set, typename);
        }
        let written = self.write_fields(start, typename, object);
        self.fields.truncate(start);
        written
    }

    fn write_fields(
        &mut self,
        start: usize,
        typename: &str,
        object: &Map<String, Value>,
    ) -> Result<(), Bubble> {
        let end = self.fields.len();
        self.out.push(b'{');
        let mut first = true;
        for at in start..end {
            let field = self.fields[at];
            let key = field.selection_identifier();
            let fields = &self.fields[start..end];
            if fields[..at - start]
                .iter()
                .any(|f| f.selection_identifier() == key)
            {
                continue;
            }
            if !first {
                self.out.push(b',');
            }
            first = false;
            write_str(self.out, key);
            self.out.push(b':');
            // Later fields with this key add their selections to this one.
            let later = &fields[at - start + 1..];
            let merged: Option<Vec<&'a SelectionSet>> = later
                .iter()
                .any(|f| f.selection_identifier() == key)
                .then(|| {
                    std::iter::once(field)
                        .chain(later.iter().copied())
                        .filter(|f| f.selection_identifier() == key)
                        .map(|f| &f.selections)
                        .collect()
                });
            self.path.push(Step::Key(key));
            let written = match &merged {
                None => self.field(field, &[&field.selections], typename, object),
                Some(merged) => self.field(field, merged, typename, object),
            };
            self.path.pop();
            written?;
        }
        self.out.push(b'}');
        Ok(())
    }

    fn field(
        &mut self,
        field: &FieldSelection,
        selections: &[&'a SelectionSet],
        parent: &str,
        object: &Map<String, Value>,
    ) -> Result<Written, Bubble> {
        if field.name == "__typename" {
            write_str(self.out, parent);
            return Ok(Written::Value);
        }
        let value = object.get(field.selection_identifier());
        let types = self.types;
        match types.field_type(parent, &field.name) {
            Some(ty) => self.complete(ty, value, selections),
            // Not in the public schema (should not pass validation): pass
            // through what the subgraph sent.
            None => Ok(self.leaf(value)),
        }
    }

    fn complete(
        &mut self,
        ty: &Type<'static, String>,
        value: Option<&Value>,
        selections: &[&'a SelectionSet],
    ) -> Result<Written, Bubble> {
        match ty {
            Type::NonNullType(inner) => match self.complete(inner, value, selections)? {
                Written::Null => {
                    self.report_null();
                    Err(Bubble)
                }
                Written::Value => Ok(Written::Value),
            },
            Type::ListType(inner) => match value {
                Some(Value::Array(items)) => {
                    let start = self.out.len();
                    self.out.push(b'[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            self.out.push(b',');
                        }
                        self.path.push(Step::Index(i));
                        let completed = self.complete(inner, Some(item), selections);
                        self.path.pop();
                        if completed.is_err() {
                            return Ok(self.null_from(start));
                        }
                    }
                    self.out.push(b']');
                    Ok(Written::Value)
                }
                _ => Ok(self.null()),
            },
            Type::NamedType(name) => match value {
                None | Some(Value::Null) => Ok(self.null()),
                Some(value)
                    if self.types.is_leaf(name) || selections.iter().all(|s| s.is_empty()) =>
                {
                    Ok(self.leaf(Some(value)))
                }
                Some(Value::Object(object)) => {
                    let runtime = object
                        .get("__typename")
                        .and_then(Value::as_str)
                        .unwrap_or(name);
                    let start = self.out.len();
                    match self.object(selections, runtime, object) {
                        Ok(()) => Ok(Written::Value),
                        Err(Bubble) => Ok(self.null_from(start)),
                    }
                }
                Some(_) => Ok(self.null()),
            },
        }
    }

    fn null(&mut self) -> Written {
        self.out.extend_from_slice(b"null");
        Written::Null
    }

    /// Replaces what was written since `start` with `null`.
    fn null_from(&mut self, start: usize) -> Written {
        self.out.truncate(start);
        self.null()
    }

    /// Writes `value` as the subgraph sent it.
    fn leaf(&mut self, value: Option<&Value>) -> Written {
        match value {
            None | Some(Value::Null) => self.null(),
            Some(value) => {
                write_json(self.out, value);
                Written::Value
            }
        }
    }

    /// Adds a non-null error at the current path unless one is already
    /// reported at, above or below it, or a subgraph failed outright (its
    /// error has no path and already explains the missing data).
    fn report_null(&mut self) {
        let path = &self.path;
        let covered = self.errors.iter().any(|error| match error.get("path") {
            Some(Value::Array(p)) => p.iter().zip(path).all(|(json, step)| step.matches(json)),
            _ => true,
        });
        if !covered {
            let path: Vec<Value> = path.iter().map(|step| step.to_json()).collect();
            self.errors.push(json!({
                "message": "Cannot return null for non-nullable field",
                "path": path,
                "extensions": { "code": service_core::error::codes::INTERNAL.as_str() },
            }));
        }
    }
}

/// Appends `value` as JSON.
fn write_json(out: &mut Vec<u8>, value: &Value) {
    let start = out.len();
    // Writing a JSON value to a `Vec` cannot fail; should it, the position
    // holds `null` rather than half a value.
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.truncate(start);
        out.extend_from_slice(b"null");
    }
}

/// Appends `text` as a JSON string, escaped.
fn write_str(out: &mut Vec<u8>, text: &str) {
    let start = out.len();
    if serde_json::to_writer(&mut *out, text).is_err() {
        out.truncate(start);
        out.extend_from_slice(b"\"\"");
    }
}

#[cfg(test)]
mod tests {
    use graphql_tools::parser::query::{self as q, Definition, OperationDefinition};

    use super::*;

    const SCHEMA: &str = r#"
        type Query {
            shop: Shop
            strictShop: Shop!
            items: [Item!]
            lists: [[Item]]
            json: JSON
        }
        scalar JSON
        type Shop { name: String!  note: String  items: [Item!]!  owner: Owner }
        type Owner { name: String! }
        interface Item { id: ID! }
        type Book implements Item { id: ID!  title: String!  subtitle: String }
        type Pen implements Item { id: ID!  color: String }
    "#;

    fn types() -> TypeIndex {
        let document = graphql_tools::parser::parse_schema::<String>(SCHEMA)
            .unwrap()
            .into_static();
        TypeIndex::new(&document)
    }

    fn selections(query: &str) -> SelectionSet {
        let document = q::parse_query::<String>(query).unwrap().into_static();
        match document.definitions.into_iter().next().unwrap() {
            Definition::Operation(OperationDefinition::SelectionSet(set)) => set.into(),
            Definition::Operation(OperationDefinition::Query(query)) => query.selection_set.into(),
            _ => panic!("not a query"),
        }
    }

    /// The body as text, and as JSON with the given variables and
    /// upstream errors.
    fn run_with(query: &str, data: Value, variables: Value, errors: Vec<Value>) -> (String, Value) {
        let Value::Object(variables) = variables else {
            panic!("variables must be an object")
        };
        let body = response_body(
            &types(),
            "Query",
            &selections(query),
            &data,
            &variables,
            errors,
        );
        let text = String::from_utf8(body).unwrap();
        let json = serde_json::from_str(&text).unwrap();
        (text, json)
    }

    fn run(query: &str, data: Value) -> (String, Value) {
        run_with(query, data, json!({}), Vec::new())
    }

    #[test]
    fn strings_are_escaped() {
        let tricky = "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} unicode é ✓ 🎉";
        let (text, json) = run(
            "{ shop { name note } }",
            json!({"shop": {"name": tricky, "note": "</script>"}}),
        );
        assert_eq!(
            json,
            json!({"data": {"shop": {"name": tricky, "note": "</script>"}}})
        );
        assert!(
            text.contains(
                r#""name":"quote \" backslash \\ newline \n tab \t nul \u0000 bell \u0007 unicode é ✓ 🎉""#
            ),
            "{text}"
        );
        // Custom scalars pass through whole, escaped the same way.
        let (_, json) = run("{ json }", json!({"json": {"a\"b": ["\u{1}", 1.5, null]}}));
        assert_eq!(
            json,
            json!({"data": {"json": {"a\"b": ["\u{1}", 1.5, null]}}})
        );
    }

    #[test]
    fn aliases_order_and_typename_follow_the_operation() {
        let (text, _) = run(
            "{ b: shop { n: name kind: __typename } a: shop { note } }",
            json!({
                "b": {"n": "Corner", "kind": "ignored", "extra": 1},
                "a": {"note": null, "name": "other"}
            }),
        );
        assert_eq!(
            text,
            r#"{"data":{"b":{"n":"Corner","kind":"Shop"},"a":{"note":null}}}"#
        );
    }

    #[test]
    fn nested_lists_and_fragments_are_written_in_place() {
        let (text, _) = run(
            "{ lists { id ... on Book { title } ... on Pen { color } __typename } }",
            json!({"lists": [
                [{"__typename": "Book", "id": "1", "title": "T"}, null],
                [],
                null,
                [{"__typename": "Pen", "id": "2", "color": "red"}]
            ]}),
        );
        assert_eq!(
            text,
            concat!(
                r#"{"data":{"lists":[[{"id":"1","title":"T","__typename":"Book"},null],[],null,"#,
                r#"[{"id":"2","color":"red","__typename":"Pen"}]]}}"#
            )
        );
    }

    #[test]
    fn fields_sharing_a_key_are_written_once_with_merged_selections() {
        let (text, _) = run(
            "{ shop { owner { name } name ... on Shop { name owner { __typename } } } }",
            json!({"shop": {"owner": {"name": "Ada"}, "name": "Corner"}}),
        );
        assert_eq!(
            text,
            r#"{"data":{"shop":{"owner":{"name":"Ada","__typename":"Owner"},"name":"Corner"}}}"#
        );
    }

    #[test]
    fn null_in_a_list_element_nulls_the_nearest_nullable_parent() {
        // `items: [Item!]`: a null element nulls the whole list; the field
        // itself is nullable, so the shop keeps its other fields.
        let (text, json) = run(
            "{ items { id } shop { name note } }",
            json!({
                "items": [{"__typename": "Book", "id": "1"}, {"__typename": "Book", "id": null}],
                "shop": {"name": "Corner", "note": "n"}
            }),
        );
        assert_eq!(
            text,
            concat!(
                r#"{"errors":[{"message":"Cannot return null for non-nullable field","#,
                r#""path":["items",1,"id"],"extensions":{"code":"MSCoreInternal"}}],"#,
                r#""data":{"items":null,"shop":{"name":"Corner","note":"n"}}}"#
            )
        );
        assert_eq!(json["errors"].as_array().map(Vec::len), Some(1));
        // `shop.items: [Item!]!` is non-null too: the violation climbs to
        // `shop`, which is nullable.
        let (text, _) = run(
            "{ shop { name items { id ... on Book { title } } } }",
            json!({"shop": {"name": "Corner", "items": [
                {"__typename": "Book", "id": "1", "title": "T"},
                {"__typename": "Book", "id": "2", "title": null}
            ]}}),
        );
        assert_eq!(
            text,
            concat!(
                r#"{"errors":[{"message":"Cannot return null for non-nullable field","#,
                r#""path":["shop","items",1,"title"],"extensions":{"code":"MSCoreInternal"}}],"#,
                r#""data":{"shop":null}}"#
            )
        );
    }

    #[test]
    fn null_in_a_non_null_root_field_nulls_data() {
        let (text, _) = run(
            "{ shop { name } strictShop { name } }",
            json!({"shop": {"name": "A"}, "strictShop": {"name": null}}),
        );
        assert_eq!(
            text,
            concat!(
                r#"{"errors":[{"message":"Cannot return null for non-nullable field","#,
                r#""path":["strictShop","name"],"extensions":{"code":"MSCoreInternal"}}],"#,
                r#""data":null}"#
            )
        );
    }

    #[test]
    fn errors_already_reported_cover_their_nulls_and_keep_their_order() {
        let upstream = [
            json!({"message": "first", "path": ["shop", "name"]}),
            json!({"message": "no path"}),
        ];
        // Covered by the subgraph's error at the same path: no new error.
        let (_, json) = run_with(
            "{ shop { name } }",
            json!({"shop": {"name": null}}),
            json!({}),
            upstream[..1].to_vec(),
        );
        assert_eq!(
            json,
            json!({"errors": [upstream[0]], "data": {"shop": null}})
        );
        // An error without a path covers every null.
        let (_, json) = run_with(
            "{ strictShop { name } }",
            json!({}),
            json!({}),
            upstream[1..].to_vec(),
        );
        assert_eq!(json, json!({"errors": [upstream[1]], "data": null}));
        // An error elsewhere does not; the new one follows the others.
        let (_, json) = run_with(
            "{ items { id } }",
            json!({"items": [{"__typename": "Pen", "id": null}]}),
            json!({}),
            vec![json!({"message": "elsewhere", "path": ["shop", "name"]})],
        );
        assert_eq!(
            json["errors"],
            json!([
                {"message": "elsewhere", "path": ["shop", "name"]},
                {"message": "Cannot return null for non-nullable field",
                 "path": ["items", 0, "id"], "extensions": {"code": "MSCoreInternal"}}
            ])
        );
        // An error with an index in its path covers that element only.
        let (_, json) = run_with(
            "{ lists { id } }",
            json!({"lists": [[{"__typename": "Pen", "id": null}, {"__typename": "Pen", "id": null}]]}),
            json!({}),
            vec![json!({"message": "one", "path": ["lists", 0, 0, "id"]})],
        );
        assert_eq!(
            json,
            json!({
                "errors": [
                    {"message": "one", "path": ["lists", 0, 0, "id"]},
                    {"message": "Cannot return null for non-nullable field",
                     "path": ["lists", 0, 1, "id"], "extensions": {"code": "MSCoreInternal"}}
                ],
                "data": {"lists": [[null, null]]}
            })
        );
    }

    #[test]
    fn skip_and_include_follow_the_variables() {
        let (text, _) = run_with(
            "query ($no: Boolean!, $yes: Boolean!) { shop { name @skip(if: $no) note @include(if: $yes) ... on Shop @include(if: $yes) { owner { name } } } }",
            json!({"shop": {"name": "A", "note": "n", "owner": {"name": "B"}}}),
            json!({"no": true, "yes": false}),
            Vec::new(),
        );
        assert_eq!(text, r#"{"data":{"shop":{}}}"#);
    }

    #[test]
    fn missing_or_mistyped_data_is_null() {
        let (text, _) = run(
            "{ shop { note owner { name } } items { id } }",
            json!({"shop": {"owner": "not an object"}, "items": {"not": "a list"}}),
        );
        assert_eq!(
            text,
            r#"{"data":{"shop":{"note":null,"owner":null},"items":null}}"#
        );
    }
}
