//! Interfaces and unions across subgraphs, `@interfaceObject`, and
//! abstract types on the path of entity fetches.

use serde_json::json;

use super::{assert_cases, case, FixtureSubgraph};

fn data() -> Vec<FixtureSubgraph> {
    let media = json!([
        {"__typename": "Book", "id": "m1", "title": "Dune", "pages": 412},
        {"__typename": "Film", "id": "m2", "title": "Alien", "minutes": 117},
        {"__typename": "Book", "id": "m3", "title": "Emma", "pages": 474}
    ]);
    vec![
        FixtureSubgraph::new("media", json!({"media": media}), media.clone()),
        FixtureSubgraph::new(
            "ratings",
            json!({}),
            json!([
                {"__typename": "Media", "id": "m1", "stars": 5},
                {"__typename": "Media", "id": "m2", "stars": 4},
                {"__typename": "Media", "id": "m3", "stars": 3}
            ]),
        ),
        FixtureSubgraph::new(
            "picks",
            json!({"picks": [
                {"__typename": "Film", "id": "m2"},
                {"__typename": "Book", "id": "m3"}
            ]}),
            json!([]),
        ),
    ]
}

#[tokio::test]
async fn interfaces_unions_and_interface_objects_resolve_across_subgraphs() {
    assert_cases(
        "abstract_types",
        data,
        &[
            case(
                "{ media { __typename title ... on Book { pages } ... on Film { minutes } } }",
                json!({"data": {"media": [
                    {"__typename": "Book", "title": "Dune", "pages": 412},
                    {"__typename": "Film", "title": "Alien", "minutes": 117},
                    {"__typename": "Book", "title": "Emma", "pages": 474}
                ]}}),
            ),
            // `stars` lives on the interface object in ratings.
            case(
                "{ media { title stars } }",
                json!({"data": {"media": [
                    {"title": "Dune", "stars": 5},
                    {"title": "Alien", "stars": 4},
                    {"title": "Emma", "stars": 3}
                ]}}),
            ),
            // Union members from picks, completed by media per type.
            case(
                "{ picks { __typename ... on Book { title pages } ... on Film { title minutes } } }",
                json!({"data": {"picks": [
                    {"__typename": "Film", "title": "Alien", "minutes": 117},
                    {"__typename": "Book", "title": "Emma", "pages": 474}
                ]}}),
            ),
            case(
                "{ picks { ... on Media { id stars } } }",
                json!({"data": {"picks": [
                    {"id": "m2", "stars": 4},
                    {"id": "m3", "stars": 3}
                ]}}),
            ),
        ],
    )
    .await;
}
