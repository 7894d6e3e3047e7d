//! The subgraph's SDL against the checked-in `tests/api/schema.graphql`, so
//! a schema change shows up as a diff in review. `UPDATE_SDL=1 cargo test
//! -p auth-service --test api schema` rewrites the file.

use serde_json::json;

use crate::helpers::spawn_app;

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
}

#[tokio::test]
async fn every_auth_code_of_the_contract_is_registered() {
    let app = spawn_app().await;
    let body = app.gql("{ _errorCodes }", json!({}), None).await;
    let codes = body["data"]["_errorCodes"].as_array().unwrap();
    for code in [
        "MSAuthInvalidCredentials",
        "MSAuthEmailTaken",
        "MSAuthWeakPassword",
        "MSAuthInvalidToken",
        "MSAuthTokenExpired",
        "MSAuthRefreshTokenReused",
        "MSAuthTooManyAttempts",
        "MSAuthUserNotFound",
        "MSAuthInvalidOtp",
        "MSCoreRateLimited",
    ] {
        assert!(codes.contains(&json!(code)), "{code} missing from {body}");
    }
}
