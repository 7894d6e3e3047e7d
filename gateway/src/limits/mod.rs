//! Limits checked before planning: depth, complexity and aliases of the
//! selected operation, plus a lexical nesting guard that runs before the
//! parser so a hostile document cannot exhaust the parser's stack.

use std::collections::HashMap;

use graphql_tools::parser::query::{
    Definition, Document, FragmentDefinition, OperationDefinition, Selection, SelectionSet, Value,
};
use serde_json::{Map, Value as Json};
use service_core::graphql::QueryLimits;

use crate::compose::TypeIndex;
use crate::error::{codes, GraphqlError};

/// Brackets nested deeper than this are refused before parsing. It is
/// the parser's own recursion bound, so every document the parser would
/// refuse for its nesting is answered as too deep rather than as a syntax
/// error.
const MAX_LEXICAL_NESTING: usize = 50;

/// Selections visited (fragments expanded) before measuring stops: a
/// "fragment bomb" expands exponentially and is refused as too complex
/// instead of being walked.
const MAX_VISITS: usize = 100_000;

/// Refuses documents whose brackets nest deeper than the parser can safely
/// recurse, as `MSGatewayQueryTooDeep`.
pub(crate) fn check_nesting(query: &str, limits: &QueryLimits) -> Result<(), GraphqlError> {
    let bytes = query.as_bytes();
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'#' => {
                while bytes.get(at).is_some_and(|b| *b != b'\n' && *b != b'\r') {
                    at += 1;
                }
            }
            // A block string ends only at an unescaped `"""`: a lone quote
            // inside it must not end it (or the brackets after it would
            // go uncounted).
            b'"' if bytes[at..].starts_with(b"\"\"\"") => {
                at += 3;
                while at < bytes.len() && !bytes[at..].starts_with(b"\"\"\"") {
                    at += if bytes[at..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                at += 2;
            }
            b'"' => {
                at += 1;
                while let Some(&inner) = bytes.get(at) {
                    match inner {
                        b'\\' => at += 1,
                        b'"' | b'\n' | b'\r' => break,
                        _ => {}
                    }
                    at += 1;
                }
            }
            b'{' | b'(' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b')' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    if deepest > MAX_LEXICAL_NESTING {
        return Err(too_deep(deepest, limits.max_depth));
    }
    Ok(())
}

fn too_deep(depth: usize, max: usize) -> GraphqlError {
    GraphqlError::new(
        codes::QUERY_TOO_DEEP,
        format!("Query depth {depth} exceeds the limit of {max}"),
    )
    .with("depth", depth)
    .with("maxDepth", max)
}

/// What an operation costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cost {
    pub(crate) depth: usize,
    pub(crate) complexity: usize,
    pub(crate) aliases: usize,
}

/// Measures the selected operation and refuses it when over a limit.
pub(crate) fn check(
    document: &Document<'static, String>,
    operation: &OperationDefinition<'static, String>,
    types: &TypeIndex,
    limits: &QueryLimits,
    variables: &Map<String, Json>,
) -> Result<Cost, GraphqlError> {
    let cost = measure(document, operation, types, limits, variables);
    if cost.depth > limits.max_depth {
        return Err(too_deep(cost.depth, limits.max_depth));
    }
    if cost.aliases > limits.max_aliases {
        return Err(GraphqlError::new(
            codes::TOO_MANY_ALIASES,
            format!(
                "The operation uses {} aliases; at most {} are allowed",
                cost.aliases, limits.max_aliases
            ),
        )
        .with("aliases", cost.aliases)
        .with("maxAliases", limits.max_aliases));
    }
    if cost.complexity > limits.max_complexity {
        return Err(GraphqlError::new(
            codes::QUERY_TOO_COMPLEX,
            format!(
                "Query complexity {} exceeds the limit of {}",
                cost.complexity, limits.max_complexity
            ),
        )
        .with("complexity", cost.complexity)
        .with("maxComplexity", limits.max_complexity));
    }
    Ok(cost)
}

struct Walker<'a> {
    fragments: HashMap<&'a str, &'a FragmentDefinition<'static, String>>,
    types: &'a TypeIndex,
    limits: &'a QueryLimits,
    variables: &'a Map<String, Json>,
    /// Fragments being expanded, to stop on cycles (limits run before
    /// validation, which would refuse them).
    stack: Vec<&'a str>,
    /// Selections visited so far, bounded by [`MAX_VISITS`].
    visits: usize,
}

pub(crate) fn measure(
    document: &Document<'static, String>,
    operation: &OperationDefinition<'static, String>,
    types: &TypeIndex,
    limits: &QueryLimits,
    variables: &Map<String, Json>,
) -> Cost {
    let fragments = document
        .definitions
        .iter()
        .filter_map(|d| match d {
            Definition::Fragment(f) => Some((f.name.as_str(), f)),
            Definition::Operation(_) => None,
        })
        .collect();
    let (root, selection_set) = match operation {
        OperationDefinition::SelectionSet(s) => (types.query.as_str(), s),
        OperationDefinition::Query(q) => (types.query.as_str(), &q.selection_set),
        OperationDefinition::Mutation(m) => (
            types.mutation.as_deref().unwrap_or("Mutation"),
            &m.selection_set,
        ),
        OperationDefinition::Subscription(s) => (
            types.subscription.as_deref().unwrap_or("Subscription"),
            &s.selection_set,
        ),
    };
    let mut walker = Walker {
        fragments,
        types,
        limits,
        variables,
        stack: Vec::new(),
        visits: 0,
    };
    let mut cost = walker.selection_set(selection_set, root, 1);
    if walker.visits > MAX_VISITS {
        cost.complexity = usize::MAX;
    }
    cost
}

impl<'a> Walker<'a> {
    /// The cost of `set` on `parent`, whose fields sit at nesting `level`.
    fn selection_set(
        &mut self,
        set: &'a SelectionSet<'static, String>,
        parent: &str,
        level: usize,
    ) -> Cost {
        let mut total = Cost::default();
        for selection in &set.items {
            self.visits += 1;
            if self.visits > MAX_VISITS {
                return total;
            }
            let cost = match selection {
                Selection::Field(field) => {
                    if field.name.starts_with("__") {
                        // Introspection and `__typename` are exempt; an
                        // alias on them still counts.
                        Cost {
                            depth: level,
                            complexity: 0,
                            aliases: usize::from(field.alias.is_some()),
                        }
                    } else {
                        let ty = self.types.field_type(parent, &field.name);
                        let child_parent = ty
                            .map(crate::compose::named_type_of)
                            .unwrap_or_default()
                            .to_owned();
                        let children =
                            self.selection_set(&field.selection_set, &child_parent, level + 1);
                        let multiplier = if ty.is_some_and(crate::compose::is_list_type) {
                            self.multiplier(&field.arguments)
                        } else {
                            1
                        };
                        Cost {
                            depth: children.depth.max(level),
                            complexity: children
                                .complexity
                                .saturating_mul(multiplier)
                                .saturating_add(1),
                            aliases: children.aliases + usize::from(field.alias.is_some()),
                        }
                    }
                }
                Selection::InlineFragment(fragment) => {
                    let on = fragment
                        .type_condition
                        .as_ref()
                        .map(|graphql_tools::parser::query::TypeCondition::On(t)| t.clone())
                        .unwrap_or_else(|| parent.to_owned());
                    self.selection_set(&fragment.selection_set, &on, level)
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.fragment_name.as_str();
                    match self.fragments.get(name).copied() {
                        Some(fragment) if !self.stack.contains(&name) => {
                            self.stack.push(name);
                            let graphql_tools::parser::query::TypeCondition::On(on) =
                                &fragment.type_condition;
                            let cost = self.selection_set(&fragment.selection_set, on, level);
                            self.stack.pop();
                            cost
                        }
                        _ => Cost::default(),
                    }
                }
            };
            total.depth = total.depth.max(cost.depth);
            total.complexity = total.complexity.saturating_add(cost.complexity);
            total.aliases = total.aliases.saturating_add(cost.aliases);
        }
        total
    }

    /// `first` or `last` when given (literal or variable), else the list multiplier.
    fn multiplier(&self, arguments: &[(String, Value<'static, String>)]) -> usize {
        let given = arguments
            .iter()
            .filter(|(name, _)| name == "first" || name == "last")
            .filter_map(|(_, value)| match value {
                Value::Int(n) => n.as_i64(),
                Value::Variable(v) => self.variables.get(v).and_then(Json::as_i64),
                _ => None,
            })
            .max();
        match given {
            Some(n) => usize::try_from(n.max(0)).unwrap_or(usize::MAX),
            None => self.limits.list_multiplier,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graphql_tools::parser::query::parse_query;
    use graphql_tools::parser::schema::parse_schema;

    fn cost(query: &str) -> Cost {
        let schema = parse_schema::<String>(
            "type Query { items(first: Int): [Item!]! one: Item }
             type Item { id: ID! children(first: Int): [Item!]! }",
        )
        .unwrap()
        .into_static();
        let types = TypeIndex::new(&schema);
        let doc = parse_query::<String>(query).unwrap().into_static();
        let op = doc
            .definitions
            .iter()
            .find_map(|d| match d {
                Definition::Operation(op) => Some(op.clone()),
                Definition::Fragment(_) => None,
            })
            .unwrap();
        measure(&doc, &op, &types, &QueryLimits::standard(), &Map::new())
    }

    #[test]
    fn lists_multiply_by_first_or_ten() {
        assert_eq!(cost("{ one { id } }").complexity, 2);
        assert_eq!(cost("{ items { id } }").complexity, 11);
        assert_eq!(
            cost("{ items(first: 3) { id children { id } } }").complexity,
            1 + 3 * (1 + 1 + 10)
        );
        assert_eq!(cost("{ __schema { types { name } } }").complexity, 0);
    }

    #[test]
    fn depth_and_aliases_follow_fragments() {
        let c = cost("{ a: one { ...F } } fragment F on Item { b: children { id } }");
        assert_eq!((c.depth, c.aliases), (3, 2));
    }

    #[test]
    fn fragment_bombs_stop_early() {
        let mut query = String::from("{ ...F0 }");
        for i in 0..40 {
            query.push_str(&format!(
                " fragment F{i} on Query {{ ...F{n} ...F{n} }}",
                n = i + 1
            ));
        }
        query.push_str(" fragment F40 on Query { one { id } }");
        assert_eq!(cost(&query).complexity, usize::MAX);
    }

    #[test]
    fn lexical_guard_refuses_absurd_nesting() {
        let deep = format!("{}{}", "{a".repeat(200), "}".repeat(200));
        assert!(check_nesting(&deep, &QueryLimits::standard()).is_err());
        assert!(check_nesting("{ a(s: \"{{{{\") }", &QueryLimits::standard()).is_ok());
    }

    #[test]
    fn lexical_guard_answers_for_whatever_the_parser_would_refuse_as_too_deep() {
        let nested = |levels: usize| format!("{}{}", "{ a ".repeat(levels), "}".repeat(levels));
        for levels in [MAX_LEXICAL_NESTING + 1, 60, 127] {
            assert!(parse_query::<String>(&nested(levels)).is_err());
            assert!(check_nesting(&nested(levels), &QueryLimits::standard()).is_err());
        }
        assert!(parse_query::<String>(&nested(20)).is_ok());
        assert!(check_nesting(&nested(20), &QueryLimits::standard()).is_ok());
    }

    #[test]
    fn lexical_guard_reads_strings_and_comments_as_the_parser_does() {
        let limits = QueryLimits::standard();
        let deep = format!("{}{}", "{ a ".repeat(60), "}".repeat(60));
        // A lone quote inside a block string, or an escaped one inside a
        // string, does not hide the brackets after it.
        for prefix in [
            "{ a(s: \"\"\" \" \"\"\") }",
            "{ a(s: \"\\\"\") }",
            "{ a(s: \"\"\" \\\"\"\" \"\"\") }",
        ] {
            assert!(parse_query::<String>(prefix).is_ok(), "{prefix}");
            assert!(
                check_nesting(&format!("{prefix} {deep}"), &limits).is_err(),
                "{prefix}"
            );
        }
        // Brackets inside strings, block strings and comments are not nesting.
        let quoted = "{".repeat(60);
        for document in [
            format!("{{ a(s: \"{quoted}\") }}"),
            format!("{{ a(s: \"\"\"{quoted}\"\"\") }}"),
            format!("{{ a }} # {quoted}"),
        ] {
            assert!(check_nesting(&document, &limits).is_ok(), "{document}");
        }
    }
}
