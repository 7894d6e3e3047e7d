//! The composed schema's operations and their arguments, read through
//! development-mode introspection, so the sweeps cover every field the
//! gateway serves and fail when a new one appears uncovered.

use std::collections::BTreeMap;

use e2e::Platform;
use serde_json::{json, Value};

const INTROSPECTION: &str = r#"
query {
  __schema {
    queryType { fields { ...Field } }
    mutationType { fields { ...Field } }
    types { name kind inputFields { name type { ...Ref } } }
  }
}
fragment Field on __Field { name args { name type { ...Ref } } }
fragment Ref on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }
"#;

/// The named type under any list and non-null wrappers.
fn named(reference: &Value) -> &str {
    let mut current = reference;
    while current["name"].is_null() && !current["ofType"].is_null() {
        current = &current["ofType"];
    }
    current["name"].as_str().unwrap_or_default()
}

/// Every argument path of every query and mutation whose scalar type is in
/// `scalars`, as `Query.field(arg)` or `Mutation.field(input.member)`
/// (input objects opened to any depth), with the scalar it has.
pub(super) async fn argument_paths(
    platform: &Platform,
    scalars: &[&str],
) -> anyhow::Result<BTreeMap<String, String>> {
    let schema = platform.data(None, INTROSPECTION, json!({})).await?;
    let schema = &schema["__schema"];
    let inputs: BTreeMap<&str, &Vec<Value>> = schema["types"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["kind"] == "INPUT_OBJECT")
        .filter_map(|t| Some((t["name"].as_str()?, t["inputFields"].as_array()?)))
        .collect();
    let mut paths = BTreeMap::new();
    for (root, key) in [("Query", "queryType"), ("Mutation", "mutationType")] {
        for field in schema[key]["fields"].as_array().into_iter().flatten() {
            let name = field["name"].as_str().unwrap_or_default();
            for arg in field["args"].as_array().into_iter().flatten() {
                let mut pending = vec![(
                    arg["name"].as_str().unwrap_or_default().to_owned(),
                    named(&arg["type"]).to_owned(),
                )];
                while let Some((path, type_name)) = pending.pop() {
                    if let Some(members) = inputs.get(type_name.as_str()) {
                        // Input objects nest only a few levels; the bound
                        // keeps a self-referencing input finite.
                        if path.matches('.').count() < 4 {
                            for member in members.iter() {
                                pending.push((
                                    format!(
                                        "{path}.{}",
                                        member["name"].as_str().unwrap_or_default()
                                    ),
                                    named(&member["type"]).to_owned(),
                                ));
                            }
                        }
                    } else if scalars.contains(&type_name.as_str()) {
                        paths.insert(format!("{root}.{name}({path})"), type_name);
                    }
                }
            }
        }
    }
    anyhow::ensure!(
        !paths.is_empty(),
        "introspection found no arguments: {schema}"
    );
    Ok(paths)
}
