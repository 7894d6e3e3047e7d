//! What several integration-test binaries share: the test Redis, unique key
//! prefixes, and `redis-server` processes a test owns (to stop it mid-test).
//! Each binary uses a part of it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use service_core::redis::KeyPrefix;

/// The Redis `scripts/test.sh` started; a test that needs it fails, with
/// instructions, when it is missing.
pub(crate) fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "TEST_REDIS_URL is not set: these tests need a real Redis. Run scripts/test.sh, or \
             start `redis-server --port <free> --save \"\" --appendonly no --daemonize yes` and \
             export TEST_REDIS_URL=redis://127.0.0.1:<port>"
        )
    })
}

/// A key prefix no other test uses, so tests share one Redis safely.
pub(crate) fn unique_prefix() -> KeyPrefix {
    KeyPrefix::new(uuid::Uuid::new_v4().simple().to_string(), "test").unwrap()
}

/// A TCP port free on the loopback interface right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// A `redis-server` (or sentinel) owned by one test, killed when dropped,
/// also when the test fails.
pub(crate) struct RedisProcess {
    child: Option<Child>,
    pub(crate) port: u16,
}

impl RedisProcess {
    /// Spawns a non-persistent Redis on `port` without waiting for it.
    pub(crate) fn redis(port: u16) -> Self {
        Self::spawn(
            port,
            &[
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        )
    }

    /// Spawns a non-persistent Redis on `port` and waits until it answers.
    pub(crate) async fn start(port: u16) -> Self {
        let server = Self::redis(port);
        server.wait_ready().await;
        server
    }

    /// Spawns `redis-server` with `args`.
    pub(crate) fn spawn(port: u16, args: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start redis-server ({error}): apt-get install -y redis-server")
            });
        Self {
            child: Some(child),
            port,
        }
    }

    /// Its URL.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Waits (up to 10 s) until it answers PING.
    pub(crate) async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(Ok(mut connection)) = tokio::time::timeout(
                    Duration::from_millis(500),
                    client.get_multiplexed_async_connection(),
                )
                .await
                {
                    let pong: redis::RedisResult<String> =
                        redis::cmd("PING").query_async(&mut connection).await;
                    if pong.is_ok() {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} did not come up", self.port);
    }

    /// Sends `signal` (`STOP`, `CONT`): a stopped server keeps its
    /// connections open but never answers, like a hung one.
    pub(crate) fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server is running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Kills it now.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
