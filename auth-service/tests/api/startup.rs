//! Start-up: signing keys from configuration, or an ephemeral one in development.

use auth_service::{Application, BuildError, Settings};

fn settings(extra: &[(&str, &str)], dir: &tempfile::TempDir) -> Settings {
    let mut vars = vec![
        ("AUTH_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ("DATA_DIR".to_owned(), dir.path().display().to_string()),
    ];
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Settings::from_vars(vars).unwrap()
}

#[tokio::test]
async fn production_refuses_to_start_without_a_signing_key() {
    let dir = tempfile::tempdir().unwrap();
    let result = Application::build(settings(&[("APP_ENV", "production")], &dir)).await;
    assert!(matches!(result, Err(BuildError::MissingSigningKey)));
}

#[tokio::test]
async fn a_bad_key_is_refused_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let result = Application::build(settings(
        &[(
            "AUTH_JWT_PRIVATE_KEY",
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----",
        )],
        &dir,
    ))
    .await;
    let Err(err) = result else {
        panic!("a bad key must stop the start-up")
    };
    assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
}

#[tokio::test]
async fn development_signs_with_an_ephemeral_key_it_can_verify() {
    let dir = tempfile::tempdir().unwrap();
    let app = Application::build(settings(&[], &dir)).await.unwrap();
    let address = format!("http://127.0.0.1:{}/graphql", app.port());
    let stop = app.shutdown_token();
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let body: serde_json::Value = client
        .post(&address)
        .json(&serde_json::json!({
            "query": "mutation { register(input: {email: \"dev@example.com\", password: \"correct horse battery staple\"}) { accessToken } }"
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = body["data"]["register"]["accessToken"].as_str().unwrap();
    let me: serde_json::Value = client
        .post(&address)
        .bearer_auth(token)
        .json(&serde_json::json!({ "query": "{ me { email } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["data"]["me"]["email"], "dev@example.com", "{me}");
    stop.cancel();
}

#[tokio::test]
async fn the_bootstrap_admin_is_created_once_and_can_list_users() {
    let dir = tempfile::tempdir().unwrap();
    let vars = [
        ("AUTH_BOOTSTRAP_ADMIN_EMAIL", "Root@Example.com"),
        ("AUTH_BOOTSTRAP_ADMIN_PASSWORD", "a long admin passphrase"),
    ];
    // Twice on the same store: the second start finds the account.
    drop(Application::build(settings(&vars, &dir)).await.unwrap());
    let app = Application::build(settings(&vars, &dir)).await.unwrap();
    let address = format!("http://127.0.0.1:{}/graphql", app.port());
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let login: serde_json::Value = client
        .post(&address)
        .json(&serde_json::json!({
            "query": "mutation { login(input: {email: \"root@example.com\", password: \"a long admin passphrase\"}) { accessToken user { roles } } }"
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let payload = &login["data"]["login"];
    assert_eq!(
        payload["user"]["roles"],
        serde_json::json!(["user", "admin"]),
        "{login}"
    );
    let users: serde_json::Value = client
        .post(&address)
        .bearer_auth(payload["accessToken"].as_str().unwrap())
        .json(&serde_json::json!({ "query": "{ users { totalCount } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(users["data"]["users"]["totalCount"], 1, "{users}");
}

#[tokio::test]
async fn a_weak_or_half_configured_bootstrap_admin_stops_the_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let weak = Application::build(settings(
        &[
            ("AUTH_BOOTSTRAP_ADMIN_EMAIL", "root@example.com"),
            ("AUTH_BOOTSTRAP_ADMIN_PASSWORD", "password123"),
        ],
        &dir,
    ))
    .await;
    let Err(err) = weak else {
        panic!("a weak bootstrap password must stop the start-up")
    };
    assert!(matches!(err, BuildError::Bootstrap(_)), "{err}");
    assert!(!err.to_string().contains("password123"), "{err}");

    let half = Application::build(settings(
        &[("AUTH_BOOTSTRAP_ADMIN_EMAIL", "root@example.com")],
        &dir,
    ))
    .await;
    assert!(matches!(half, Err(BuildError::PartialBootstrap)));
}
