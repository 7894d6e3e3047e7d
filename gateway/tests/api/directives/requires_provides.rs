//! `@requires` (with a nested field), `@provides`, `@external` and
//! `@extends`.

use serde_json::{json, Map, Value};

use super::{assert_cases, case, FixtureApp, FixtureSubgraph, Mode};

fn product(upc: &str, name: &str, price: i64, weight: i64, size: &str) -> Value {
    json!({"__typename": "Product", "upc": upc, "name": name, "price": price,
           "dimensions": {"__typename": "Dimensions", "weight": weight, "size": size}})
}

/// Free above 1000, else twice the weight: needs `price` and
/// `dimensions { weight }` from products.
fn shipping_cost(entity: &mut Map<String, Value>) {
    let price = entity.get("price").and_then(Value::as_i64);
    let weight = entity
        .get("dimensions")
        .and_then(|d| d.get("weight"))
        .and_then(Value::as_i64);
    let cost = match (price, weight) {
        (Some(price), Some(_)) if price > 1000 => json!(0),
        (Some(_), Some(weight)) => json!(weight * 2),
        _ => json!({"__error": "price and weight are required"}),
    };
    entity.insert("shippingCost".to_owned(), cost);
}

fn data() -> Vec<FixtureSubgraph> {
    let products = json!([
        product("1", "Table", 899, 100, "L"),
        product("2", "Couch", 1299, 1000, "XL")
    ]);
    vec![
        FixtureSubgraph::new("products", json!({"products": products}), products.clone()),
        FixtureSubgraph::new(
            "shipping",
            json!({}),
            json!([
                {"__typename": "Product", "upc": "1"},
                {"__typename": "Product", "upc": "2"}
            ]),
        )
        .computing(shipping_cost),
        FixtureSubgraph::new(
            "reviews",
            json!({"reviews": [
                {"__typename": "Review", "id": "r1", "body": "Solid.",
                 "product": {"__typename": "Product", "upc": "1", "name": "Table"}},
                {"__typename": "Review", "id": "r2", "body": "Too big.",
                 "product": {"__typename": "Product", "upc": "2", "name": "Couch"}}
            ]}),
            json!([]),
        ),
    ]
}

#[tokio::test]
async fn requires_provides_external_and_extends_answer_exactly() {
    assert_cases(
        "requires_provides",
        data,
        &[
            case(
                "{ products { upc shippingCost } }",
                json!({"data": {"products": [
                    {"upc": "1", "shippingCost": 200},
                    {"upc": "2", "shippingCost": 0}
                ]}}),
            ),
            case(
                "{ products { name dimensions { size } shippingCost } }",
                json!({"data": {"products": [
                    {"name": "Table", "dimensions": {"size": "L"}, "shippingCost": 200},
                    {"name": "Couch", "dimensions": {"size": "XL"}, "shippingCost": 0}
                ]}}),
            ),
            case(
                "{ reviews { body product { name price shippingCost } } }",
                json!({"data": {"reviews": [
                    {"body": "Solid.", "product": {"name": "Table", "price": 899, "shippingCost": 200}},
                    {"body": "Too big.", "product": {"name": "Couch", "price": 1299, "shippingCost": 0}}
                ]}}),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_provided_field_is_read_from_the_providing_subgraph_alone() {
    for mode in [Mode::File, Mode::List] {
        let app = FixtureApp::start("requires_provides", mode, data(), Default::default()).await;
        let body = app
            .post(json!({"query": "{ reviews { body product { upc name } } }"}))
            .await;
        assert_eq!(
            body,
            json!({"data": {"reviews": [
                {"body": "Solid.", "product": {"upc": "1", "name": "Table"}},
                {"body": "Too big.", "product": {"upc": "2", "name": "Couch"}}
            ]}})
        );
        assert_eq!(
            app.subgraphs.called(),
            vec!["reviews".to_owned()],
            "{mode:?}"
        );
    }
}

/// The same subgraphs behind a Federation 1 supergraph file answer the
/// same; `@provides` still saves the fetch.
#[tokio::test]
async fn a_federation_1_supergraph_file_is_served() {
    let settings = gateway::GatewaySettings {
        supergraph_path: Some(super::fixture_dir("federation1").join("supergraph.graphql")),
        ..Default::default()
    };
    let app = FixtureApp::start("requires_provides", Mode::File, data(), settings).await;
    let cases = [
        (
            "{ products { upc name shippingCost } }",
            json!({"data": {"products": [
                {"upc": "1", "name": "Table", "shippingCost": 200},
                {"upc": "2", "name": "Couch", "shippingCost": 0}
            ]}}),
        ),
        (
            "{ reviews { body product { name price shippingCost } } }",
            json!({"data": {"reviews": [
                {"body": "Solid.", "product": {"name": "Table", "price": 899, "shippingCost": 200}},
                {"body": "Too big.", "product": {"name": "Couch", "price": 1299, "shippingCost": 0}}
            ]}}),
        ),
    ];
    for (query, expected) in cases {
        assert_eq!(app.post(json!({"query": query})).await, expected, "{query}");
    }
    app.subgraphs.forget();
    let body = app
        .post(json!({"query": "{ reviews { product { name } } }"}))
        .await;
    assert_eq!(
        body,
        json!({"data": {"reviews": [{"product": {"name": "Table"}}, {"product": {"name": "Couch"}}]}})
    );
    assert_eq!(app.subgraphs.called(), vec!["reviews".to_owned()]);
}
