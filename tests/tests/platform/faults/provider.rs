//! A notification provider hanging, then failing, then recovering.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use e2e::{eventually, text, Mode, Platform, Session};
use serde_json::json;

use super::{
    all_notifications, funded_users, lock, notified_transfers, send_transfer, Asked, Client,
    UNTHROTTLED, WAIT,
};

/// How the in-test SMS provider answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProviderMode {
    /// Reads the request and never answers.
    Hanging,
    /// Answers 500.
    Failing,
    /// Answers 200 and counts the delivery.
    Healthy,
}

/// An HTTP provider on a loopback port whose behaviour the test switches;
/// it counts the notifications it acknowledged, by `idempotency-key`.
struct Provider {
    url: String,
    mode: Arc<Mutex<ProviderMode>>,
    delivered: Arc<Mutex<BTreeMap<String, usize>>>,
    requests: Arc<Mutex<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Provider {
    async fn start(mode: ProviderMode) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/sms", listener.local_addr()?);
        let mode = Arc::new(Mutex::new(mode));
        let delivered = Arc::new(Mutex::new(BTreeMap::new()));
        let requests = Arc::new(Mutex::new(0));
        let task = {
            let (mode, delivered, requests) = (
                Arc::clone(&mode),
                Arc::clone(&delivered),
                Arc::clone(&requests),
            );
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (mode, delivered, requests) = (
                        Arc::clone(&mode),
                        Arc::clone(&delivered),
                        Arc::clone(&requests),
                    );
                    tokio::spawn(serve_provider(stream, mode, delivered, requests));
                }
            })
        };
        Ok(Self {
            url,
            mode,
            delivered,
            requests,
            task,
        })
    }

    fn switch(&self, mode: ProviderMode) {
        *lock(&self.mode) = mode;
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one connection of the provider: HTTP/1.1 requests with a
/// `Content-Length` body, one after another.
async fn serve_provider(
    mut stream: tokio::net::TcpStream,
    mode: Arc<Mutex<ProviderMode>>,
    delivered: Arc<Mutex<BTreeMap<String, usize>>>,
    requests: Arc<Mutex<u64>>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buffer = Vec::new();
    loop {
        // The head, then the body it announces.
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0_u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
        let header = |name: &str| {
            head.lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|value| value.trim().to_owned())
        };
        let length: usize = header("content-length:")
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        let key = header("idempotency-key:").unwrap_or_default();
        while buffer.len() < head_end + length {
            let mut chunk = [0_u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        }
        buffer.drain(..head_end + length);
        *lock(&requests) += 1;
        let current = *lock(&mode);
        let reply: &[u8] = match current {
            ProviderMode::Hanging => {
                // Holds the connection until the caller gives up on it.
                let mut rest = [0_u8; 1];
                let _ = stream.read(&mut rest).await;
                return;
            }
            ProviderMode::Failing => {
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"
            }
            ProviderMode::Healthy => {
                *lock(&delivered).entry(key).or_insert(0) += 1;
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
            }
        };
        if stream.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// `session`'s notifications on `channel`: id → (kind, status).
async fn notifications_on(
    client: &Client,
    session: &Session,
    channel: &str,
) -> anyhow::Result<BTreeMap<String, (String, String)>> {
    let mut found = BTreeMap::new();
    for node in all_notifications(client, session, "id kind channel status").await? {
        if node["channel"] == json!(channel) {
            found.insert(
                text(&node["id"])?,
                (text(&node["kind"])?, text(&node["status"])?),
            );
        }
    }
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sms_provider_delays_sms_only_and_loses_none() -> anyhow::Result<()> {
    // Arrange: SMS goes to the in-test provider, with attempts enough to
    // outlast the outage below.
    let provider = Provider::start(ProviderMode::Healthy).await?;
    let policies = json!({ "SMS": {
        "timeout_ms": 1_000, "max_attempts": 60, "initial_backoff_ms": 100,
        "max_backoff_ms": 500, "breaker_failures": 3, "breaker_reset_ms": 500,
    } })
    .to_string();
    let mut settings = vec![
        ("NOTIFICATION_SMS_URL", provider.url.as_str()),
        ("NOTIFICATION_CHANNEL_POLICIES", policies.as_str()),
    ];
    settings.extend(UNTHROTTLED);
    let platform = Platform::start_with(Mode::Embedded, &settings).await?;
    let admin = platform.admin().await?;
    let users = funded_users(&platform, 2).await?;
    for user in &users {
        // The first deposit is notified before SMS is switched on, so it
        // has no SMS copy.
        let client = Client::of(&platform);
        let (client, who) = (&client, user);
        eventually(WAIT, move || async move {
            let in_app = notifications_on(client, who, "IN_APP").await?;
            Ok(in_app
                .values()
                .any(|(kind, _)| kind == "deposit.completed")
                .then_some(()))
        })
        .await?;
        platform
            .data(
                Some(&user.access_token),
                "mutation { updateNotificationPreferences(input: { channels: [{ channel: SMS, enabled: true }] }) { channels { channel enabled } } }",
                json!({}),
            )
            .await?;
    }
    let client = Client::of(&platform);
    let wallet = |user: &Session| {
        let on = &platform;
        let token = user.access_token.clone();
        async move {
            let data = on
                .data(Some(&token), "{ myWallets { id } }", json!({}))
                .await?;
            text(&data["myWallets"][0]["id"])
        }
    };
    let wallets = [wallet(&users[0]).await?, wallet(&users[1]).await?];

    // Act: money moves while the provider hangs, then while it answers 500.
    let mut moved = Vec::new();
    for (round, mode) in [ProviderMode::Hanging, ProviderMode::Failing]
        .into_iter()
        .enumerate()
    {
        provider.switch(mode);
        let requests_before = *lock(&provider.requests);
        for step in 0..3 {
            let asked = Asked {
                from: step % 2,
                to: (step + 1) % 2,
                amount: 10,
            };
            let key = format!("sms-{round}-{step}");
            let id = send_transfer(&client, &users, &asked, &key).await?;
            let id = id.ok_or_else(|| anyhow::anyhow!("transfer {key} refused while SMS fails"))?;
            platform.deposit(&admin, &wallets[step % 2], 5).await?;
            moved.push((id, asked));
        }
        // In-app notifications arrive as usual meanwhile.
        for (id, asked) in &moved {
            let (client, sender) = (&client, &users[asked.from]);
            eventually(WAIT, move || async move {
                let found = notified_transfers(client, sender, "transfer.sent").await?;
                Ok(found.contains_key(id).then_some(()))
            })
            .await?;
        }
        // The provider was really called (and failed) in this mode.
        let provider = &provider;
        eventually(WAIT, move || async move {
            // Enough failures to open the channel's breaker.
            Ok((*lock(&provider.requests) >= requests_before + 3).then_some(()))
        })
        .await?;
        assert!(
            lock(&provider.delivered).is_empty(),
            "delivered while {mode:?}"
        );
    }
    provider.switch(ProviderMode::Healthy);

    // Assert: every SMS notification is delivered once and ends SENT.
    let (client_ref, users_ref, provider_ref) = (&client, &users, &provider);
    let expected = eventually(WAIT, move || async move {
        let mut sms = BTreeMap::new();
        for user in users_ref {
            sms.extend(notifications_on(client_ref, user, "SMS").await?);
        }
        let delivered = lock(&provider_ref.delivered).clone();
        let done = sms.values().all(|(_, status)| status == "SENT")
            && sms.keys().all(|id| delivered.contains_key(id));
        Ok(done.then_some(sms))
    })
    .await?;
    // Three transfers per round notify both parties, three deposits their owner.
    let count = |kind: &str| expected.values().filter(|(k, _)| k == kind).count();
    assert_eq!(count("transfer.sent"), 6, "{expected:?}");
    assert_eq!(count("transfer.received"), 6, "{expected:?}");
    assert_eq!(count("deposit.completed"), 6, "{expected:?}");
    let delivered = lock(&provider.delivered).clone();
    assert_eq!(
        delivered.keys().cloned().collect::<BTreeSet<_>>(),
        expected.keys().cloned().collect::<BTreeSet<_>>(),
        "the provider acknowledged other notifications than the platform's"
    );
    assert!(
        delivered.values().all(|&times| times == 1),
        "a notification was delivered twice: {delivered:?}"
    );

    platform.shutdown().await
}
