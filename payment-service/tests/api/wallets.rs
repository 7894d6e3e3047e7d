//! Wallets, listings, the federation surface and the subscription.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use crate::helpers::{code, context, spawn_app, TRANSFER_FIELDS, WALLET_FIELDS};

const SDL_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/schema.graphql");

#[tokio::test]
async fn the_sdl_matches_the_checked_in_schema() {
    let app = spawn_app().await;
    let body = app.gql("{ _service { sdl } }", json!({}), None).await;
    let sdl = body["data"]["_service"]["sdl"]
        .as_str()
        .unwrap_or_else(|| panic!("no SDL in {body}"));
    let sdl = format!("{}\n", sdl.trim());
    if std::env::var("UPDATE_SDL").is_ok_and(|v| v == "1") {
        std::fs::write(SDL_FILE, &sdl).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(SDL_FILE).unwrap_or_else(|err| {
        panic!("cannot read {SDL_FILE} ({err}); run with UPDATE_SDL=1 to create it")
    });
    assert!(
        expected == sdl,
        "the SDL changed; review the diff and run with UPDATE_SDL=1 to accept it.\n--- expected\n{expected}\n--- actual\n{sdl}"
    );
    for key in [
        "type Wallet @key(fields: \"id\")",
        "type Transaction @key(fields: \"id\")",
        "type Transfer @key(fields: \"id\")",
        "type User @key(fields: \"id\")",
    ] {
        assert!(sdl.contains(key), "{key} missing");
    }
}

#[tokio::test]
async fn every_payment_code_of_the_contract_is_registered() {
    let app = spawn_app().await;
    let body = app.gql("{ _errorCodes }", json!({}), None).await;
    let codes = body["data"]["_errorCodes"].as_array().unwrap();
    for code in [
        "MSPaymentInsufficientBalance",
        "MSPaymentWalletNotFound",
        "MSPaymentWalletExists",
        "MSPaymentInvalidAmount",
        "MSPaymentInvalidCurrency",
        "MSPaymentSelfTransfer",
        "MSPaymentIdempotencyConflict",
        "MSPaymentRecipientNotFound",
    ] {
        assert!(codes.contains(&json!(code)), "{code} missing from {body}");
    }
}

#[tokio::test]
async fn wallets_are_one_per_currency_and_listed_for_their_owner() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let eur = app.wallet(&alice, "EUR").await;
    let usd = app.wallet(&alice, "USD").await;
    let body = app
        .gql(
            "mutation { createWallet(currency: \"EUR\") { id } }",
            json!({}),
            Some(&alice.token),
        )
        .await;
    assert_eq!(code(&body), "MSPaymentWalletExists", "{body}");
    let body = app
        .gql(
            &format!("{{ myWallets {{ {WALLET_FIELDS} }} }}"),
            json!({}),
            Some(&alice.token),
        )
        .await;
    let wallets = body["data"]["myWallets"].as_array().unwrap();
    let ids: Vec<&str> = wallets.iter().map(|w| w["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [eur.as_str(), usd.as_str()], "{body}");
    assert_eq!(wallets[0]["balance"], 0);
    assert_eq!(wallets[0]["userId"], alice.id.as_str());
    let bob = app.user().await;
    let body = app
        .gql("{ myWallets { id } }", json!({}), Some(&bob.token))
        .await;
    assert_eq!(body["data"]["myWallets"], json!([]));
    let body = app.gql("{ myWallets { id } }", json!({}), None).await;
    assert_eq!(code(&body), "MSCoreUnauthenticated");
}

#[tokio::test]
async fn transfers_write_two_entries_and_list_newest_first_with_cursors() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let bob = app.user().await;
    let wallet = app.wallet(&alice, "EUR").await;
    app.deposit(&wallet, 1_000).await;
    let mut ids = Vec::new();
    for amount in 1..=5 {
        let body = app
            .transfer(
                &alice,
                json!({ "toUserId": bob.id, "amount": amount, "currency": "EUR", "description": format!("n{amount}") }),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
        let t = &body["data"]["transfer"];
        assert_eq!(t["status"], "COMPLETED");
        assert_eq!(t["fromUserId"], alice.id.as_str());
        ids.push(t["id"].as_str().unwrap().to_owned());
    }
    // Bob's wallet was created on first receipt, and he can send back.
    let body = app
        .gql(
            "{ myWallets { id currency balance } }",
            json!({}),
            Some(&bob.token),
        )
        .await;
    assert_eq!(body["data"]["myWallets"][0]["balance"], 15, "{body}");
    let back = app
        .transfer(
            &bob,
            json!({ "toUserId": alice.id, "amount": 3, "currency": "EUR" }),
        )
        .await;
    assert!(back["errors"].is_null(), "{back}");
    ids.push(back["data"]["transfer"]["id"].as_str().unwrap().to_owned());
    ids.reverse();

    // Both parties list all six, newest first, two per page.
    let query = format!(
        "query($after: String) {{ transfers(first: 2, after: $after) {{ totalCount edges {{ cursor node {{ {TRANSFER_FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"
    );
    for user in [&alice, &bob] {
        let mut seen = Vec::new();
        let mut after = serde_json::Value::Null;
        loop {
            let body = app
                .gql(&query, json!({ "after": after }), Some(&user.token))
                .await;
            let page = &body["data"]["transfers"];
            assert_eq!(page["totalCount"], 6, "{body}");
            for edge in page["edges"].as_array().unwrap() {
                seen.push(edge["node"]["id"].as_str().unwrap().to_owned());
            }
            if page["pageInfo"]["hasNextPage"] != true {
                break;
            }
            after = page["pageInfo"]["endCursor"].clone();
        }
        assert_eq!(seen, ids);
    }

    // The ledger: deposit + 5 debits + 1 credit for Alice, newest first.
    let body = app
        .gql(
            "query($w: ID!) { transactions(walletId: $w, first: 3) { totalCount nodes { type direction balanceType amount balanceAfter objectModel } pageInfo { hasNextPage } } }",
            json!({ "w": wallet }),
            Some(&alice.token),
        )
        .await;
    let page = &body["data"]["transactions"];
    assert_eq!(page["totalCount"], 7, "{body}");
    assert_eq!(page["nodes"][0]["type"], "TRANSFER_IN");
    assert_eq!(page["nodes"][0]["balanceAfter"], 988);
    assert_eq!(page["nodes"][1]["type"], "TRANSFER_OUT");
    assert_eq!(page["nodes"][1]["direction"], "DEBIT");
    assert_eq!(page["nodes"][1]["objectModel"], "Transfer");
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    let body = app
        .gql(
            "{ transactions(first: 101) { totalCount } }",
            json!({}),
            Some(&alice.token),
        )
        .await;
    assert_eq!(code(&body), "MSCoreValidation", "{body}");

    // transfer(id): the parties, support, but not a stranger.
    let carol = app.user().await;
    let q = "query($id: ID!) { transfer(id: $id) { id amount } }";
    let body = app.gql(q, json!({ "id": ids[1] }), Some(&bob.token)).await;
    assert_eq!(body["data"]["transfer"]["id"], ids[1].as_str(), "{body}");
    let body = app
        .gql(q, json!({ "id": ids[1] }), Some(&carol.token))
        .await;
    assert!(body["data"]["transfer"].is_null(), "{body}");
    let support = app.token(&carol.id, &["support"]);
    let body = app.gql(q, json!({ "id": ids[1] }), Some(&support)).await;
    assert_eq!(body["data"]["transfer"]["id"], ids[1].as_str(), "{body}");
}

#[tokio::test]
async fn entities_resolve_for_the_gateway() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let bob = app.user().await;
    let wallet = app.wallet(&alice, "EUR").await;
    app.deposit(&wallet, 100).await;
    let body = app
        .transfer(
            &alice,
            json!({ "toUserId": bob.id, "amount": 40, "currency": "EUR" }),
        )
        .await;
    let transfer_id = body["data"]["transfer"]["id"].as_str().unwrap().to_owned();
    let query = "query($r: [_Any!]!) { _entities(representations: $r) { ... on User { id wallets { id balance } } ... on Wallet { id balance user { id } } ... on Transfer { id fromUser { id } toUser { id } } } }";
    let reps = json!([
        { "__typename": "User", "id": alice.id },
        { "__typename": "Wallet", "id": wallet },
        { "__typename": "Transfer", "id": transfer_id },
    ]);
    let body = app
        .gql(query, json!({ "r": reps }), Some(&alice.token))
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let e = &body["data"]["_entities"];
    assert_eq!(e[0]["wallets"][0]["balance"], 60, "{body}");
    assert_eq!(e[1]["user"]["id"], alice.id.as_str());
    assert_eq!(e[2]["fromUser"]["id"], alice.id.as_str());
    assert_eq!(e[2]["toUser"]["id"], bob.id.as_str());
    // Another user's wallets through User.wallets: forbidden.
    let body = app
        .gql(
            query,
            json!({ "r": [{ "__typename": "User", "id": alice.id }] }),
            Some(&bob.token),
        )
        .await;
    assert_eq!(code(&body), "MSCoreForbidden", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_updates_reach_the_owner_only() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let bob = app.user().await;
    let wallet = app.wallet(&alice, "EUR").await;
    let schema = payment_service::build_schema(app.service.clone());
    let request =
        |user: &str, query: &str| async_graphql::Request::new(query).data(context(user, &["user"]));
    let alice_stream = schema.execute_stream(request(
        &alice.id,
        &format!("subscription {{ walletUpdated {{ {WALLET_FIELDS} }} }}"),
    ));
    let bob_stream = schema.execute_stream(request(
        &bob.id,
        "subscription { walletUpdated { id balance } }",
    ));
    // Bob may not watch Alice's wallet.
    let mut denied = schema.execute_stream(request(
        &bob.id,
        &format!("subscription {{ walletUpdated(walletId: \"{wallet}\") {{ id }} }}"),
    ));
    let first = denied.next().await.unwrap();
    assert_eq!(first.errors.len(), 1, "{first:?}");
    assert!(first.errors[0].message.contains("wallet"), "{first:?}");
    // Streams start when first polled: poll them on tasks, and wait until
    // both are listening before the deposit.
    let mut alice_stream = alice_stream;
    let alice_task = tokio::spawn(async move { alice_stream.next().await });
    let mut bob_stream = bob_stream;
    let bob_task = tokio::spawn(async move { bob_stream.next().await });
    for _ in 0..500 {
        if app.service.subscriber_count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(app.service.subscriber_count(), 2);
    app.deposit(&wallet, 250).await;
    let update = tokio::time::timeout(Duration::from_secs(10), alice_task)
        .await
        .expect("no wallet update within 10 s")
        .unwrap()
        .unwrap();
    assert!(update.errors.is_empty(), "{:?}", update.errors);
    let data = update.data.into_json().unwrap();
    assert_eq!(data["walletUpdated"]["id"], wallet.as_str());
    assert_eq!(data["walletUpdated"]["balance"], 250);
    // Bob's stream got nothing: still waiting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!bob_task.is_finished(), "Bob saw Alice's update");
    bob_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_updates_travel_over_websocket_with_the_token_in_connection_init() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let app = spawn_app().await;
    let alice = app.user().await;
    let wallet = app.wallet(&alice, "EUR").await;
    let url = format!("{}/graphql", app.address.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let send = |v: serde_json::Value| Message::Text(v.to_string().into());
    socket
        .send(send(json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {}", alice.token) } })))
        .await
        .unwrap();
    let next_json = |msg: Message| -> serde_json::Value {
        serde_json::from_str(msg.to_text().unwrap()).unwrap()
    };
    let ack = next_json(socket.next().await.unwrap().unwrap());
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    socket
        .send(send(json!({
            "id": "1",
            "type": "subscribe",
            "payload": { "query": format!("subscription {{ walletUpdated(walletId: \"{wallet}\") {{ id balance }} }}") }
        })))
        .await
        .unwrap();
    for _ in 0..500 {
        if app.service.subscriber_count() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.deposit(&wallet, 42).await;
    let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("no message within 10 s")
        .unwrap()
        .unwrap();
    let message = next_json(message);
    assert_eq!(message["type"], "next", "{message}");
    assert_eq!(message["payload"]["data"]["walletUpdated"]["balance"], 42);
    socket.close(None).await.ok();
}

#[tokio::test]
async fn a_users_ledger_merges_their_wallets_newest_first() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let eur = app.wallet(&alice, "EUR").await;
    let usd = app.wallet(&alice, "USD").await;
    // Deposits alternate between the two wallets; the amount names each.
    for amount in 1..=5 {
        let wallet = if amount % 2 == 1 { &eur } else { &usd };
        app.deposit(wallet, amount).await;
    }
    let query = "query($after: String) { transactions(first: 2, after: $after) { totalCount edges { cursor node { amount walletId } } pageInfo { hasNextPage endCursor } } }";
    let mut amounts = Vec::new();
    let mut after = serde_json::Value::Null;
    loop {
        let body = app
            .gql(query, json!({ "after": after }), Some(&alice.token))
            .await;
        let page = &body["data"]["transactions"];
        assert_eq!(page["totalCount"], 5, "{body}");
        assert!(page["edges"].as_array().unwrap().len() <= 2, "{body}");
        for edge in page["edges"].as_array().unwrap() {
            let expected = if edge["node"]["amount"].as_i64().unwrap() % 2 == 1 {
                &eur
            } else {
                &usd
            };
            assert_eq!(edge["node"]["walletId"], expected.as_str(), "{body}");
            amounts.push(edge["node"]["amount"].as_i64().unwrap());
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(amounts, [5, 4, 3, 2, 1]);
}
