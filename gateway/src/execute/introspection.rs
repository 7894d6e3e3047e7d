//! `__schema` and `__type` answered by the gateway from the public schema
//! (the subgraphs never see introspection). Each field is resolved for the
//! client's selection only, so recursive shapes (`ofType`, `fields.type`)
//! stop where the query stops.

use graphql_tools::parser::schema::{
    Definition, Directive, Document, Field, InputValue, Type, TypeDefinition,
};
use hive_router_query_planner::ast::selection_item::SelectionItem;
use hive_router_query_planner::ast::selection_set::{FieldSelection, SelectionSet};
use hive_router_query_planner::ast::value::Value as AstValue;
use serde_json::{json, Map, Value};

use crate::compose::Supergraph;

/// Adds the answers of root `__schema` / `__type` fields to `data`.
pub(crate) fn resolve_root(
    supergraph: &Supergraph,
    selections: &SelectionSet,
    variables: &Map<String, Value>,
    data: &mut Value,
) {
    let schema = Schema {
        document: &supergraph.api,
        query: &supergraph.types.query,
        mutation: supergraph.types.mutation.as_deref(),
        subscription: supergraph.types.subscription.as_deref(),
        variables,
    };
    for item in &selections.items {
        let SelectionItem::Field(field) = item else {
            continue;
        };
        let value = match field.name.as_str() {
            "__schema" => schema.object(Node::Schema, &field.selections),
            "__type" => match schema.string_argument(field, "name") {
                Some(name) if schema.definition(&name).is_some() => {
                    schema.object(Node::Named(name), &field.selections)
                }
                _ => Value::Null,
            },
            _ => continue,
        };
        if let Value::Object(object) = data {
            object.insert(field.selection_identifier().to_owned(), value);
        }
    }
}

#[derive(Clone)]
enum Node<'d> {
    Schema,
    Named(String),
    Wrapped(&'d Type<'static, String>),
    Field(&'d Field<'static, String>),
    Input(&'d InputValue<'static, String>),
    EnumValue(&'d graphql_tools::parser::schema::EnumValue<'static, String>),
    Directive(&'d graphql_tools::parser::schema::DirectiveDefinition<'static, String>),
}

struct Schema<'d> {
    document: &'d Document<'static, String>,
    query: &'d str,
    mutation: Option<&'d str>,
    subscription: Option<&'d str>,
    variables: &'d Map<String, Value>,
}

impl<'d> Schema<'d> {
    fn definition(&self, name: &str) -> Option<&'d TypeDefinition<'static, String>> {
        self.document.definitions.iter().find_map(|d| match d {
            Definition::TypeDefinition(t) if type_name(t) == name => Some(t),
            _ => None,
        })
    }

    fn argument(&self, field: &FieldSelection, name: &str) -> Option<Value> {
        let value = field.arguments.as_ref()?.get_argument(name)?;
        Some(match value {
            AstValue::Variable(v) => self.variables.get(v).cloned().unwrap_or(Value::Null),
            AstValue::String(s) | AstValue::Enum(s) => Value::String(s.clone()),
            AstValue::Boolean(b) => Value::Bool(*b),
            AstValue::Int(i) => json!(i),
            _ => Value::Null,
        })
    }

    fn string_argument(&self, field: &FieldSelection, name: &str) -> Option<String> {
        self.argument(field, name)
            .and_then(|v| v.as_str().map(str::to_owned))
    }

    fn include_deprecated(&self, field: &FieldSelection) -> bool {
        self.argument(field, "includeDeprecated")
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }

    fn typename(&self, node: &Node<'d>) -> &'static str {
        match node {
            Node::Schema => "__Schema",
            Node::Named(_) | Node::Wrapped(_) => "__Type",
            Node::Field(_) => "__Field",
            Node::Input(_) => "__InputValue",
            Node::EnumValue(_) => "__EnumValue",
            Node::Directive(_) => "__Directive",
        }
    }

    fn object(&self, node: Node<'d>, selections: &SelectionSet) -> Value {
        let mut out = Map::new();
        self.fill(&node, selections, &mut out);
        Value::Object(out)
    }

    fn fill(&self, node: &Node<'d>, selections: &SelectionSet, out: &mut Map<String, Value>) {
        for item in &selections.items {
            match item {
                SelectionItem::Field(field) => {
                    let value = self.field(node, field);
                    out.insert(field.selection_identifier().to_owned(), value);
                }
                SelectionItem::InlineFragment(fragment) => {
                    if fragment.type_condition == self.typename(node) {
                        self.fill(node, &fragment.selections, out);
                    }
                }
                SelectionItem::FragmentSpread(_) => {}
            }
        }
    }

    fn list(&self, nodes: Vec<Node<'d>>, selections: &SelectionSet) -> Value {
        Value::Array(
            nodes
                .into_iter()
                .map(|n| self.object(n, selections))
                .collect(),
        )
    }

    fn type_node(&self, ty: &'d Type<'static, String>) -> Node<'d> {
        match ty {
            Type::NamedType(name) => Node::Named(name.clone()),
            wrapped => Node::Wrapped(wrapped),
        }
    }

    fn field(&self, node: &Node<'d>, field: &FieldSelection) -> Value {
        let sel = &field.selections;
        if field.name == "__typename" {
            return Value::String(self.typename(node).to_owned());
        }
        match node {
            Node::Schema => match field.name.as_str() {
                "types" => {
                    let nodes = self
                        .document
                        .definitions
                        .iter()
                        .filter_map(|d| match d {
                            Definition::TypeDefinition(t) => {
                                Some(Node::Named(type_name(t).to_owned()))
                            }
                            _ => None,
                        })
                        .collect();
                    self.list(nodes, sel)
                }
                "queryType" => self.object(Node::Named(self.query.to_owned()), sel),
                "mutationType" => self
                    .mutation
                    .map_or(Value::Null, |m| self.object(Node::Named(m.to_owned()), sel)),
                "subscriptionType" => self
                    .subscription
                    .map_or(Value::Null, |s| self.object(Node::Named(s.to_owned()), sel)),
                "directives" => {
                    let nodes = self
                        .document
                        .definitions
                        .iter()
                        .filter_map(|d| match d {
                            Definition::DirectiveDefinition(d) => Some(Node::Directive(d)),
                            _ => None,
                        })
                        .collect();
                    self.list(nodes, sel)
                }
                _ => Value::Null,
            },
            Node::Wrapped(ty) => match (field.name.as_str(), ty) {
                ("kind", Type::ListType(_)) => json!("LIST"),
                ("kind", _) => json!("NON_NULL"),
                ("ofType", Type::ListType(inner) | Type::NonNullType(inner)) => {
                    self.object(self.type_node(inner), sel)
                }
                _ => Value::Null,
            },
            Node::Named(name) => self.named_type_field(name, field),
            Node::Field(f) => match field.name.as_str() {
                "name" => json!(f.name),
                "description" => json!(f.description),
                "args" => self.list(f.arguments.iter().map(Node::Input).collect(), sel),
                "type" => self.object(self.type_node(&f.field_type), sel),
                "isDeprecated" => json!(deprecation(&f.directives).is_some()),
                "deprecationReason" => json!(deprecation(&f.directives).flatten()),
                _ => Value::Null,
            },
            Node::Input(v) => match field.name.as_str() {
                "name" => json!(v.name),
                "description" => json!(v.description),
                "type" => self.object(self.type_node(&v.value_type), sel),
                "defaultValue" => json!(v.default_value.as_ref().map(|d| d.to_string())),
                "isDeprecated" => json!(deprecation(&v.directives).is_some()),
                "deprecationReason" => json!(deprecation(&v.directives).flatten()),
                _ => Value::Null,
            },
            Node::EnumValue(v) => match field.name.as_str() {
                "name" => json!(v.name),
                "description" => json!(v.description),
                "isDeprecated" => json!(deprecation(&v.directives).is_some()),
                "deprecationReason" => json!(deprecation(&v.directives).flatten()),
                _ => Value::Null,
            },
            Node::Directive(d) => match field.name.as_str() {
                "name" => json!(d.name),
                "description" => json!(d.description),
                "locations" => json!(d.locations.iter().map(|l| l.as_str()).collect::<Vec<_>>()),
                "args" => self.list(d.arguments.iter().map(Node::Input).collect(), sel),
                "isRepeatable" => json!(d.repeatable),
                _ => Value::Null,
            },
        }
    }

    fn named_type_field(&self, name: &str, field: &FieldSelection) -> Value {
        let sel = &field.selections;
        let Some(definition) = self.definition(name) else {
            return Value::Null;
        };
        let all = self.include_deprecated(field);
        let keep =
            |directives: &[Directive<'static, String>]| all || deprecation(directives).is_none();
        match (field.name.as_str(), definition) {
            ("kind", t) => json!(match t {
                TypeDefinition::Scalar(_) => "SCALAR",
                TypeDefinition::Object(_) => "OBJECT",
                TypeDefinition::Interface(_) => "INTERFACE",
                TypeDefinition::Union(_) => "UNION",
                TypeDefinition::Enum(_) => "ENUM",
                TypeDefinition::InputObject(_) => "INPUT_OBJECT",
            }),
            ("name", _) => json!(name),
            ("description", t) => json!(description(t)),
            ("fields", TypeDefinition::Object(o)) => self.list(
                o.fields
                    .iter()
                    .filter(|f| !f.name.starts_with("__") && keep(&f.directives))
                    .map(Node::Field)
                    .collect(),
                sel,
            ),
            ("fields", TypeDefinition::Interface(i)) => self.list(
                i.fields
                    .iter()
                    .filter(|f| keep(&f.directives))
                    .map(Node::Field)
                    .collect(),
                sel,
            ),
            ("interfaces", TypeDefinition::Object(o)) => self.list(
                o.implements_interfaces
                    .iter()
                    .map(|n| Node::Named(n.clone()))
                    .collect(),
                sel,
            ),
            ("interfaces", TypeDefinition::Interface(i)) => self.list(
                i.implements_interfaces
                    .iter()
                    .map(|n| Node::Named(n.clone()))
                    .collect(),
                sel,
            ),
            ("possibleTypes", TypeDefinition::Union(u)) => self.list(
                u.types.iter().map(|n| Node::Named(n.clone())).collect(),
                sel,
            ),
            ("possibleTypes", TypeDefinition::Interface(i)) => {
                let nodes = self
                    .document
                    .definitions
                    .iter()
                    .filter_map(|d| match d {
                        Definition::TypeDefinition(TypeDefinition::Object(o))
                            if o.implements_interfaces.contains(&i.name) =>
                        {
                            Some(Node::Named(o.name.clone()))
                        }
                        _ => None,
                    })
                    .collect();
                self.list(nodes, sel)
            }
            ("enumValues", TypeDefinition::Enum(e)) => self.list(
                e.values
                    .iter()
                    .filter(|v| keep(&v.directives))
                    .map(Node::EnumValue)
                    .collect(),
                sel,
            ),
            ("inputFields", TypeDefinition::InputObject(i)) => {
                self.list(i.fields.iter().map(Node::Input).collect(), sel)
            }
            ("isOneOf", TypeDefinition::InputObject(i)) => {
                json!(i.directives.iter().any(|d| d.name == "oneOf"))
            }
            ("specifiedByURL", TypeDefinition::Scalar(s)) => json!(s
                .directives
                .iter()
                .find(|d| d.name == "specifiedBy")
                .and_then(|d| d.arguments.iter().find(|(k, _)| k == "url"))
                .map(|(_, v)| v.to_string().trim_matches('"').to_owned())),
            _ => Value::Null,
        }
    }
}

fn type_name<'t>(definition: &'t TypeDefinition<'static, String>) -> &'t str {
    match definition {
        TypeDefinition::Scalar(t) => &t.name,
        TypeDefinition::Object(t) => &t.name,
        TypeDefinition::Interface(t) => &t.name,
        TypeDefinition::Union(t) => &t.name,
        TypeDefinition::Enum(t) => &t.name,
        TypeDefinition::InputObject(t) => &t.name,
    }
}

fn description<'t>(definition: &'t TypeDefinition<'static, String>) -> Option<&'t str> {
    match definition {
        TypeDefinition::Scalar(t) => t.description.as_deref(),
        TypeDefinition::Object(t) => t.description.as_deref(),
        TypeDefinition::Interface(t) => t.description.as_deref(),
        TypeDefinition::Union(t) => t.description.as_deref(),
        TypeDefinition::Enum(t) => t.description.as_deref(),
        TypeDefinition::InputObject(t) => t.description.as_deref(),
    }
}

/// `None` when not deprecated; `Some(reason)` when it is.
fn deprecation(directives: &[Directive<'static, String>]) -> Option<Option<String>> {
    let directive = directives.iter().find(|d| d.name == "deprecated")?;
    let reason = directive
        .arguments
        .iter()
        .find(|(k, _)| k == "reason")
        .map(|(_, v)| match v {
            graphql_tools::parser::schema::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .or_else(|| Some("No longer supported".to_owned()));
    Some(reason)
}
