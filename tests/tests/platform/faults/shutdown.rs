//! The gateway stopped with requests in flight.

use e2e::{eventually, Mode, Platform};
use serde_json::{json, Value};

use super::{UNTHROTTLED, WAIT};

/// The body of the in-flight requests.
const ME: &str = r#"{"query":"{ me { id } }"}"#;

/// Opens a connection to `addr` and sends the head of a `POST /graphql`
/// with `Expect: 100-continue`, holding the body back; returns once the
/// gateway answered `100 Continue`, i.e. its handler is reading the body:
/// the request is in flight.
async fn request_in_flight(addr: &str, token: &str) -> anyhow::Result<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST /graphql HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         accept: application/json\r\nauthorization: Bearer {token}\r\n\
         content-length: {}\r\nexpect: 100-continue\r\n\r\n",
        ME.len()
    );
    stream.write_all(head.as_bytes()).await?;
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") {
        let mut byte = [0_u8; 1];
        anyhow::ensure!(
            stream.read(&mut byte).await? == 1,
            "the gateway closed the connection before 100 Continue"
        );
        interim.push(byte[0]);
    }
    let interim = String::from_utf8_lossy(&interim);
    anyhow::ensure!(
        interim.starts_with("HTTP/1.1 100"),
        "expected 100 Continue, got {interim}"
    );
    Ok(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_drains_requests_in_flight_when_it_stops() -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    // Arrange: requests whose handlers are running, waiting for their body.
    let mut platform = Platform::start_with(Mode::Embedded, UNTHROTTLED).await?;
    let user = platform.register("drain").await?;
    let addr = platform
        .base_url()
        .strip_prefix("http://")
        .unwrap_or_default()
        .to_owned();
    let mut in_flight = Vec::new();
    for _ in 0..4 {
        in_flight.push(request_in_flight(&addr, &user.access_token).await?);
    }

    // Act: stop the gateway; meanwhile, once it refuses new connections,
    // finish the requests in flight.
    let drained = AtomicBool::new(false);
    let stopping = async {
        let stopped = platform.stop_gateway().await;
        drained.store(true, Ordering::SeqCst);
        stopped
    };
    let finishing = async {
        let addr = addr.as_str();
        eventually(WAIT, move || async move {
            Ok(tokio::net::TcpStream::connect(addr)
                .await
                .is_err()
                .then_some(()))
        })
        .await?;
        assert!(
            !drained.load(Ordering::SeqCst),
            "the gateway stopped with requests in flight"
        );
        let mut answers = Vec::new();
        for mut stream in in_flight {
            stream.write_all(ME.as_bytes()).await?;
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await?;
            answers.push(String::from_utf8_lossy(&raw).into_owned());
        }
        anyhow::Ok(answers)
    };
    let (stopped, answers) = tokio::join!(stopping, finishing);
    stopped?;
    let answers = answers?;

    // Assert: every request in flight got its whole answer, then the
    // connection closed (the server does not keep it alive while stopping).
    for answer in &answers {
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let body: Value = serde_json::from_str(body)
            .map_err(|err| anyhow::anyhow!("not a whole JSON answer ({err}): {answer}"))?;
        assert_eq!(
            body,
            json!({ "data": { "me": { "id": user.id } } }),
            "{answer}"
        );
    }
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());

    platform.shutdown().await
}
