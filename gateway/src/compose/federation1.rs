//! Federation 1 supergraphs (`@core`, join v0.1 with `@join__owner`),
//! rewritten into the Federation 2 shape the Hive planner reads.
//!
//! The two differ in what they leave implicit. Federation 1 names a
//! field's graph only when it is not the owner's, marks no `@external`
//! field, and puts no `@join__type` on value types. The planner reads a
//! field without `@join__field` as available in every graph of its type,
//! and a type without `@join__type` as in no graph. So:
//!
//! - an owned type's field without `@join__field` gets the owner's;
//! - a key field also gets a `@join__field` for each graph keyed by it;
//! - fields named by `requires:` (on the parent) and `provides:` (on the
//!   returned type) get `@join__field(graph:, external: true)`;
//! - a type without `@join__type` gets one per graph any field returning
//!   it is resolved in (repeated until nothing changes).

use std::collections::{BTreeMap, BTreeSet};

use graphql_tools::parser::schema::{self as sdl, Definition, Directive, Field, TypeDefinition};

use super::{graph_argument, named_type_of, ComposeError};

/// Whether `supergraph` is a Federation 1 supergraph.
pub(crate) fn is_federation1(document: &sdl::Document<'static, String>) -> bool {
    document
        .definitions
        .iter()
        .any(|definition| match definition {
            Definition::SchemaDefinition(schema) => schema.directives.iter().any(|d| {
                d.name == "core"
                    && string_argument(d, "feature")
                        .is_some_and(|f| f.starts_with("https://specs.apollo.dev/join/v0.1"))
            }),
            _ => false,
        })
}

/// The Federation 2 form of a Federation 1 supergraph; any other
/// supergraph is returned unchanged.
pub fn upgrade(supergraph: &str) -> Result<String, ComposeError> {
    let mut document = sdl::parse_schema::<String>(supergraph)
        .map_err(|err| ComposeError::Supergraph(err.to_string()))?
        .into_static();
    if !is_federation1(&document) {
        return Ok(supergraph.to_owned());
    }
    // Owners and key fields first; `external` marks need every field's
    // graphs, so they come after.
    let mut externals: Vec<(String, String, String)> = Vec::new();
    for definition in &mut document.definitions {
        let Some((directives, fields)) = parts(definition) else {
            continue;
        };
        let owner = directives
            .iter()
            .find(|d| d.name == "join__owner")
            .and_then(graph_argument);
        let mut keyed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for directive in directives.iter().filter(|d| d.name == "join__type") {
            if let (Some(graph), Some(key)) =
                (graph_argument(directive), string_argument(directive, "key"))
            {
                for field in top_level_fields(&key) {
                    keyed.entry(field).or_default().insert(graph.clone());
                }
            }
        }
        for field in fields.iter_mut() {
            let mut graphs = field_graphs(field);
            if graphs.is_empty() {
                if let Some(owner) = &owner {
                    add_join_field(field, owner, false);
                    graphs.insert(owner.clone());
                }
            }
            if !graphs.is_empty() {
                for graph in keyed.get(&field.name).into_iter().flatten() {
                    if graphs.insert(graph.clone()) {
                        add_join_field(field, graph, false);
                    }
                }
            }
            for directive in field.directives.iter().filter(|d| d.name == "join__field") {
                let Some(graph) = graph_argument(directive) else {
                    continue;
                };
                if let Some(requires) = string_argument(directive, "requires") {
                    externals.extend(
                        top_level_fields(&requires)
                            .into_iter()
                            .map(|f| (String::new(), f, graph.clone())),
                    );
                }
                if let Some(provides) = string_argument(directive, "provides") {
                    let returned = named_type_of(&field.field_type).to_owned();
                    externals.extend(
                        top_level_fields(&provides)
                            .into_iter()
                            .map(|f| (returned.clone(), f, graph.clone())),
                    );
                }
            }
        }
        // `requires:` names fields of the type being walked.
        let own_name = type_name(definition).to_owned();
        for entry in externals.iter_mut().filter(|(t, _, _)| t.is_empty()) {
            entry.0.clone_from(&own_name);
        }
    }
    for (type_name_, field_name, graph) in externals {
        for definition in &mut document.definitions {
            if type_name(definition) != type_name_ {
                continue;
            }
            let Some((_, fields)) = parts(definition) else {
                continue;
            };
            if let Some(field) = fields.iter_mut().find(|f| f.name == field_name) {
                let graphs = field_graphs(field);
                if !graphs.is_empty() && !graphs.contains(&graph) {
                    add_join_field(field, &graph, true);
                }
            }
        }
    }
    type_value_types(&mut document);
    super::mark_root_types(&document.to_string())
}

/// Adds `@join__type(graph:)` to each type that has none, for every graph
/// a field returning it is resolved in.
fn type_value_types(document: &mut sdl::Document<'static, String>) {
    loop {
        let mut graphs_of_type: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for definition in &mut document.definitions {
            let Some((directives, fields)) = parts(definition) else {
                continue;
            };
            let type_graphs: BTreeSet<String> = directives
                .iter()
                .filter(|d| d.name == "join__type")
                .filter_map(graph_argument)
                .collect();
            for field in fields.iter() {
                let mut graphs = field_graphs(field);
                if graphs.is_empty() {
                    graphs.clone_from(&type_graphs);
                }
                graphs_of_type
                    .entry(named_type_of(&field.field_type).to_owned())
                    .or_default()
                    .extend(graphs);
            }
        }
        let mut changed = false;
        for definition in &mut document.definitions {
            let name = type_name(definition).to_owned();
            let Some(directives) = type_directives(definition) else {
                continue;
            };
            if directives.iter().any(|d| d.name == "join__type") {
                continue;
            }
            for graph in graphs_of_type.get(&name).into_iter().flatten() {
                directives.push(join_directive("join__type", graph, false));
                changed = true;
            }
        }
        if !changed {
            return;
        }
    }
}

/// A type's directives and fields, both mutable.
type Parts<'d> = (
    &'d mut Vec<Directive<'static, String>>,
    &'d mut Vec<Field<'static, String>>,
);

fn parts<'d>(definition: &'d mut Definition<'static, String>) -> Option<Parts<'d>> {
    match definition {
        Definition::TypeDefinition(TypeDefinition::Object(t)) => {
            Some((&mut t.directives, &mut t.fields))
        }
        Definition::TypeDefinition(TypeDefinition::Interface(t)) => {
            Some((&mut t.directives, &mut t.fields))
        }
        _ => None,
    }
}

fn type_directives<'d>(
    definition: &'d mut Definition<'static, String>,
) -> Option<&'d mut Vec<Directive<'static, String>>> {
    match definition {
        Definition::TypeDefinition(TypeDefinition::Object(t)) => Some(&mut t.directives),
        Definition::TypeDefinition(TypeDefinition::Interface(t)) => Some(&mut t.directives),
        Definition::TypeDefinition(TypeDefinition::Union(t)) => Some(&mut t.directives),
        _ => None,
    }
}

fn type_name<'d>(definition: &'d Definition<'static, String>) -> &'d str {
    match definition {
        Definition::TypeDefinition(TypeDefinition::Object(t)) => &t.name,
        Definition::TypeDefinition(TypeDefinition::Interface(t)) => &t.name,
        Definition::TypeDefinition(TypeDefinition::Union(t)) => &t.name,
        _ => "",
    }
}

fn field_graphs(field: &Field<'static, String>) -> BTreeSet<String> {
    field
        .directives
        .iter()
        .filter(|d| d.name == "join__field")
        .filter_map(graph_argument)
        .collect()
}

fn add_join_field(field: &mut Field<'static, String>, graph: &str, external: bool) {
    field
        .directives
        .push(join_directive("join__field", graph, external));
}

fn join_directive(name: &str, graph: &str, external: bool) -> Directive<'static, String> {
    let mut arguments = vec![("graph".to_owned(), sdl::Value::Enum(graph.to_owned()))];
    if external {
        arguments.push(("external".to_owned(), sdl::Value::Boolean(true)));
    }
    Directive {
        position: Default::default(),
        name: name.to_owned(),
        arguments,
    }
}

fn string_argument(directive: &Directive<'static, String>, name: &str) -> Option<String> {
    directive
        .arguments
        .iter()
        .find(|(key, _)| key == name)
        .and_then(|(_, value)| match value {
            sdl::Value::String(s) => Some(s.clone()),
            _ => None,
        })
}

/// The top-level field names of a field set (`a b { c } d` → a, b, d).
fn top_level_fields(field_set: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    for token in field_set
        .replace('{', " { ")
        .replace('}', " } ")
        .split_whitespace()
    {
        match token {
            "{" => depth += 1,
            "}" => depth = depth.saturating_sub(1),
            name if depth == 0 => out.push(name.to_owned()),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn federation_1_implicit_graphs_are_made_explicit() {
        let fed1 = r#"
schema @core(feature: "https://specs.apollo.dev/core/v0.2") @core(feature: "https://specs.apollo.dev/join/v0.1") { query: Query }
type Query { items: [Item] @join__field(graph: A) }
type Item @join__owner(graph: A) @join__type(graph: A, key: "id") @join__type(graph: B, key: "id") {
  id: ID! @join__field(graph: A)
  size: Size
  cost: Int @join__field(graph: B, requires: "size { weight }")
}
type Size { weight: Int }
enum join__Graph { A @join__graph(name: "a" url: "http://a") B @join__graph(name: "b" url: "http://b") }
"#;
        let upgraded = upgrade(fed1).unwrap();
        let line = |start: &str| {
            upgraded
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with(start))
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(
            line("id:"),
            "id: ID! @join__field(graph: A) @join__field(graph: B)"
        );
        assert_eq!(
            line("size:"),
            "size: Size @join__field(graph: A) @join__field(graph: B, external: true)"
        );
        assert!(line("type Size").contains("@join__type(graph: A) @join__type(graph: B)"));
        assert!(line("type Query").contains("@join__type(graph: A)"));
        // A Federation 2 supergraph is left as it is.
        let fed2 = "type Query { a: Int }";
        assert_eq!(upgrade(fed2).unwrap(), fed2);
    }

    #[test]
    fn field_sets_split_at_the_top_level() {
        assert_eq!(
            top_level_fields("price dimensions { weight } upc"),
            vec!["price", "dimensions", "upc"]
        );
    }
}
