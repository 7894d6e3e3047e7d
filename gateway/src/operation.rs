//! The client's operation before planning: which operation of the
//! document runs, whether it validates against the public schema, and
//! which variable values it runs with.

use graphql_tools::parser::query::{self as q, Definition, OperationDefinition};
use serde_json::{json, Map, Value};

use crate::compose::Supergraph;
use crate::error::{codes, GraphqlError};

/// The parser's message without its internal token dump.
pub(crate) fn clean_parse_error(message: &str) -> String {
    let first = message.lines().next().unwrap_or("syntax error").trim();
    format!("Syntax error: {first}")
}

pub(crate) fn select_operation<'d>(
    document: &'d q::Document<'static, String>,
    name: Option<&str>,
) -> Result<&'d OperationDefinition<'static, String>, GraphqlError> {
    let operations: Vec<&OperationDefinition<'static, String>> = document
        .definitions
        .iter()
        .filter_map(|d| match d {
            Definition::Operation(op) => Some(op),
            Definition::Fragment(_) => None,
        })
        .collect();
    let found = match name {
        Some(wanted) => operations
            .into_iter()
            .find(|op| operation_name(op) == Some(wanted)),
        None if operations.len() == 1 => operations.into_iter().next(),
        None => {
            return Err(GraphqlError::new(
                codes::VALIDATION_FAILED,
                "The document has several operations: operationName must name one",
            ))
        }
    };
    found.ok_or_else(|| {
        GraphqlError::new(
            codes::VALIDATION_FAILED,
            format!("Unknown operation named \"{}\"", name.unwrap_or_default()),
        )
    })
}

fn operation_name<'o>(operation: &'o OperationDefinition<'static, String>) -> Option<&'o str> {
    match operation {
        OperationDefinition::SelectionSet(_) => None,
        OperationDefinition::Query(q) => q.name.as_deref(),
        OperationDefinition::Mutation(m) => m.name.as_deref(),
        OperationDefinition::Subscription(s) => s.name.as_deref(),
    }
}

pub(crate) fn validate(
    supergraph: &Supergraph,
    document: &q::Document<'static, String>,
    production: bool,
) -> Result<(), GraphqlError> {
    let errors = graphql_tools::validation::validate::validate(
        &supergraph.api,
        document,
        &supergraph.validation,
    );
    if let Some(first) = errors.first() {
        let mut message = first.message.clone();
        if production {
            if let Some(at) = message.find(" Did you mean") {
                message.truncate(at);
            }
        }
        let mut error = GraphqlError::new(codes::VALIDATION_FAILED, message);
        for pos in &first.locations {
            error = error.at(pos.line, pos.column);
        }
        return Err(error);
    }
    if production && uses_introspection(document) {
        return Err(GraphqlError::new(
            codes::VALIDATION_FAILED,
            "Introspection is disabled",
        ));
    }
    Ok(())
}

fn uses_introspection(document: &q::Document<'static, String>) -> bool {
    fn walk(set: &q::SelectionSet<'static, String>) -> bool {
        set.items.iter().any(|item| match item {
            q::Selection::Field(f) => {
                f.name == "__schema" || f.name == "__type" || walk(&f.selection_set)
            }
            q::Selection::InlineFragment(f) => walk(&f.selection_set),
            q::Selection::FragmentSpread(_) => false,
        })
    }
    document.definitions.iter().any(|d| match d {
        Definition::Operation(OperationDefinition::SelectionSet(s)) => walk(s),
        Definition::Operation(OperationDefinition::Query(op)) => walk(&op.selection_set),
        Definition::Operation(OperationDefinition::Mutation(op)) => walk(&op.selection_set),
        Definition::Operation(OperationDefinition::Subscription(op)) => walk(&op.selection_set),
        Definition::Fragment(f) => walk(&f.selection_set),
    })
}

/// Fills in the declared defaults of variables the client left out.
pub(crate) fn apply_variable_defaults(
    operation: &OperationDefinition<'static, String>,
    variables: &mut Map<String, Value>,
) {
    let definitions = match operation {
        OperationDefinition::SelectionSet(_) => return,
        OperationDefinition::Query(q) => &q.variable_definitions,
        OperationDefinition::Mutation(m) => &m.variable_definitions,
        OperationDefinition::Subscription(s) => &s.variable_definitions,
    };
    for definition in definitions {
        if let Some(default) = &definition.default_value {
            if !variables.contains_key(&definition.name) {
                variables.insert(definition.name.clone(), literal_to_json(default));
            }
        }
    }
}

fn literal_to_json(value: &q::Value<'static, String>) -> Value {
    match value {
        q::Value::Variable(_) | q::Value::Null => Value::Null,
        q::Value::Int(n) => n.as_i64().map_or(Value::Null, |n| json!(n)),
        q::Value::Float(f) => json!(f),
        q::Value::String(s) => Value::String(s.clone()),
        q::Value::Boolean(b) => Value::Bool(*b),
        q::Value::Enum(e) => Value::String(e.clone()),
        q::Value::List(items) => Value::Array(items.iter().map(literal_to_json).collect()),
        q::Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), literal_to_json(v)))
                .collect(),
        ),
    }
}
