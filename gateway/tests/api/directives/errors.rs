//! `null` propagation and error paths when a subgraph answers errors or
//! partial data, and `@skip`/`@include`.

use serde_json::json;

use super::{assert_cases, case, case_with, FixtureApp, FixtureSubgraph, Mode};

fn data() -> Vec<FixtureSubgraph> {
    let orders = json!([
        {"__typename": "Order", "id": "o1", "total": 10, "note": "gift"},
        {"__typename": "Order", "id": "o2", "total": 20, "note": null},
        {"__typename": "Order", "id": "o3", "total": 30, "note": {"__error": "note store timed out"}}
    ]);
    vec![
        FixtureSubgraph::new("shop", json!({"orders": orders}), orders.clone()),
        // o2's status fails (non-null); o1's tracking fails (nullable);
        // o3 is unknown to status.
        FixtureSubgraph::new(
            "status",
            json!({}),
            json!([
                {"__typename": "Order", "id": "o1", "status": "shipped",
                 "tracking": {"__error": "carrier down"}},
                {"__typename": "Order", "id": "o2", "status": {"__error": "status lost"},
                 "tracking": null}
            ]),
        ),
    ]
}

#[tokio::test]
async fn errors_keep_their_paths_and_nulls_propagate_to_the_nearest_nullable_parent() {
    assert_cases(
        "errors",
        data,
        &[
            case(
                "{ orders { id note } }",
                json!({
                    "errors": [{"message": "note store timed out", "path": ["orders", 2, "note"]}],
                    "data": {"orders": [
                        {"id": "o1", "note": "gift"},
                        {"id": "o2", "note": null},
                        {"id": "o3", "note": null}
                    ]}
                }),
            ),
            case(
                "{ orders { id tracking } }",
                json!({
                    "errors": [{"message": "carrier down", "path": ["orders", 0, "tracking"]}],
                    "data": {"orders": [
                        {"id": "o1", "tracking": null},
                        {"id": "o2", "tracking": null},
                        {"id": "o3", "tracking": null}
                    ]}
                }),
            ),
            case(
                "{ orders { id status } }",
                json!({
                    "errors": [
                        {"message": "status lost", "path": ["orders", 1, "status"]},
                        {"message": "Cannot return null for non-nullable field",
                         "path": ["orders", 2, "status"],
                         "extensions": {"code": "MSCoreInternal"}}
                    ],
                    "data": {"orders": [{"id": "o1", "status": "shipped"}, null, null]}
                }),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn skip_and_include_shape_the_answer_and_the_fetches() {
    let query = "query ($withStatus: Boolean!, $noTotal: Boolean!) {
        orders { id total @skip(if: $noTotal) status @include(if: $withStatus) }
    }";
    assert_cases(
        "errors",
        data,
        &[case_with(
            query,
            json!({"withStatus": false, "noTotal": true}),
            json!({"data": {"orders": [{"id": "o1"}, {"id": "o2"}, {"id": "o3"}]}}),
        )],
    )
    .await;
    for mode in [Mode::File, Mode::List] {
        let app = FixtureApp::start("errors", mode, data(), Default::default()).await;
        let body = app
            .post(json!({"query": query, "variables": {"withStatus": false, "noTotal": false}}))
            .await;
        assert_eq!(
            body,
            json!({"data": {"orders": [
                {"id": "o1", "total": 10}, {"id": "o2", "total": 20}, {"id": "o3", "total": 30}
            ]}})
        );
        assert_eq!(app.subgraphs.called(), vec!["shop".to_owned()], "{mode:?}");
    }
}
