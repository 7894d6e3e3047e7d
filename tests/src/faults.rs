//! Tools of the fault tests: a private [`RedisServer`] a test may kill and
//! restart, and [`check_books`], which checks the money invariants through
//! the gateway's public API after a fault.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context as _};
use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::text;

/// How long a starting Redis may take to answer `PING`.
const REDIS_START_TIMEOUT: Duration = Duration::from_secs(20);

/// A `redis-server` child process of its own on a free loopback port, with
/// persistence off and its own working directory, for tests that kill the
/// Redis under a platform and start it again.
///
/// Dropping it kills the process.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` and waits until it answers `PING`. Fails with
    /// a clear message when `redis-server` is not installed.
    pub async fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir = tempfile::tempdir().context("a directory for redis-server")?;
        let mut server = Self {
            port,
            dir,
            child: None,
        };
        server.spawn().await?;
        Ok(server)
    }

    /// Its URL (`redis://127.0.0.1:<port>`), for `REDIS_URL`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the process with SIGKILL (no shutdown, no goodbye to clients)
    /// and waits until it has exited.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("redis-server on port {} is not running", self.port))?;
        child.start_kill().context("kill redis-server")?;
        child.wait().await.context("wait for redis-server")?;
        Ok(())
    }

    /// Starts it again on the same port (empty: nothing was persisted) and
    /// waits until it answers `PING`.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.kill().await?;
        }
        self.spawn().await
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = self.dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::NotFound => anyhow!(
                    "redis-server is not installed (not on PATH): the fault tests start \
                     a Redis of their own; install Redis and run them again"
                ),
                _ => anyhow!("cannot start redis-server: {err}"),
            })?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + REDIS_START_TIMEOUT;
        loop {
            if ping(self.port).await {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "redis-server on port {} exited with {status}: {}",
                        self.port,
                        log_tail(&log)
                    );
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "redis-server on port {} did not answer PING within {REDIS_START_TIMEOUT:?}: {}",
                    self.port,
                    log_tail(&log)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // `kill_on_drop` would as well; this makes the intent explicit.
            let _ = child.start_kill();
        }
    }
}

/// A port free on loopback right now (the OS picks it).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Whether a Redis on `port` answers `PING` with `PONG`.
async fn ping(port: u16) -> bool {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0_u8; 7];
        stream.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(&reply == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), exchange).await,
        Ok(Ok(true))
    )
}

/// The last lines of redis-server's log, for a failure message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// One wallet as the admin sees it, with its ledger.
#[derive(Clone, Debug)]
pub struct WalletBook {
    /// The wallet's id.
    pub id: String,
    /// Its owner's id.
    pub user_id: String,
    /// Its owner's email.
    pub email: String,
    /// Its currency.
    pub currency: String,
    /// Real money, in minor units.
    pub balance: i64,
    /// Bonus money.
    pub bonus_balance: i64,
    /// Money held for pending withdrawals.
    pub locked_balance: i64,
    /// How many ledger entries it has.
    pub entries: usize,
}

/// One completed transfer, found through the ledger entries it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferBook {
    /// The sender's wallet.
    pub from_wallet_id: String,
    /// The recipient's wallet.
    pub to_wallet_id: String,
    /// Minor units moved.
    pub amount: i64,
    /// Its currency.
    pub currency: String,
}

/// The books after [`check_books`] found them consistent.
#[derive(Clone, Debug)]
pub struct Books {
    /// The sum of every wallet's `balance`, per currency: compare it with
    /// the deposits (minus withdrawals) the test made.
    pub total_balance_by_currency: BTreeMap<String, i64>,
    /// The sum of every wallet's `bonusBalance`, per currency.
    pub total_bonus_by_currency: BTreeMap<String, i64>,
    /// Every wallet of every user.
    pub wallets: Vec<WalletBook>,
    /// Every transfer that wrote ledger entries, by id; each is `COMPLETED`
    /// with exactly one DEBIT and one CREDIT entry.
    pub completed_transfers: BTreeMap<String, TransferBook>,
    /// Ledger entries the reconciliation summed (equal to the entries read).
    pub entries_checked: i64,
}

/// Checks the money invariants through the gateway's public API as the
/// admin (`admin_token` needs `user:read:*`, `wallet:read:*`,
/// `transfer:read:*` and `wallet:reconcile:*`):
///
/// - every wallet's `balance`, `bonusBalance` and `lockedBalance` is ≥ 0;
/// - `reconciliationReport` finds no mismatch (every balance equals its
///   ledger sum) and checked exactly the wallets and entries read here;
/// - every transfer a ledger entry points at is `COMPLETED` and wrote
///   exactly one `TRANSFER_OUT` DEBIT on its sender's wallet and one
///   `TRANSFER_IN` CREDIT on its recipient's, both of its amount.
///
/// The API lists no transfers across users and stores none that was
/// refused (a refused transfer writes nothing), so a transfer without
/// ledger entries cannot be found here: callers compare
/// [`Books::completed_transfers`] with the transfers they were
/// acknowledged. Run it on a quiet platform (no load running), or the
/// counts move under it.
pub async fn check_books(
    client: &reqwest::Client,
    graphql_url: &str,
    admin_token: &str,
) -> anyhow::Result<Books> {
    let api = AdminApi {
        client,
        graphql_url,
        token: admin_token,
    };
    let wallets = api.wallets().await?;
    let mut books = Books {
        total_balance_by_currency: BTreeMap::new(),
        total_bonus_by_currency: BTreeMap::new(),
        wallets: Vec::new(),
        completed_transfers: BTreeMap::new(),
        entries_checked: 0,
    };
    // Ledger entries of transfers, by transfer id: (wallet, type, direction, amount).
    let mut transfer_entries: BTreeMap<String, Vec<(String, String, String, i64)>> =
        BTreeMap::new();
    let mut entries_read = 0_usize;
    for mut wallet in wallets {
        for (field, value) in [
            ("balance", wallet.balance),
            ("bonusBalance", wallet.bonus_balance),
            ("lockedBalance", wallet.locked_balance),
        ] {
            ensure!(value >= 0, "{field} of wallet {} is {value}", wallet.id);
        }
        *books
            .total_balance_by_currency
            .entry(wallet.currency.clone())
            .or_default() += wallet.balance;
        *books
            .total_bonus_by_currency
            .entry(wallet.currency.clone())
            .or_default() += wallet.bonus_balance;
        let entries = api.entries(&wallet.id).await?;
        wallet.entries = entries.len();
        entries_read += entries.len();
        for entry in entries {
            if entry["objectModel"] == json!("Transfer") {
                let transfer = text(&entry["objectId"])?;
                transfer_entries.entry(transfer).or_default().push((
                    wallet.id.clone(),
                    text(&entry["type"])?,
                    text(&entry["direction"])?,
                    amount(&entry["amount"])?,
                ));
            }
        }
        books.wallets.push(wallet);
    }

    let report = api
        .data(
            "{ reconciliationReport { walletsChecked entriesChecked mismatches { walletId balanceType balance expected reason } } }",
            json!({}),
        )
        .await?;
    let report = &report["reconciliationReport"];
    ensure!(
        report["mismatches"] == json!([]),
        "reconciliation found mismatches: {report}"
    );
    ensure!(
        report["walletsChecked"] == json!(books.wallets.len()),
        "reconciliation checked other wallets than the {} listed: {report}",
        books.wallets.len()
    );
    ensure!(
        report["entriesChecked"] == json!(entries_read),
        "reconciliation checked other entries than the {entries_read} listed: {report}"
    );
    books.entries_checked = report["entriesChecked"].as_i64().unwrap_or_default();

    let transfers: Vec<(String, Value)> = futures::stream::iter(transfer_entries.keys())
        .map(|id| api.transfer(id))
        .buffer_unordered(8)
        .try_collect()
        .await?;
    for (id, transfer) in transfers {
        let entries = &transfer_entries[&id];
        ensure!(
            transfer["status"] == json!("COMPLETED"),
            "transfer {id} wrote ledger entries {entries:?} but is {transfer}"
        );
        let booked = TransferBook {
            from_wallet_id: text(&transfer["fromWalletId"])?,
            to_wallet_id: text(&transfer["toWalletId"])?,
            amount: amount(&transfer["amount"])?,
            currency: text(&transfer["currency"])?,
        };
        let mut found = entries.clone();
        found.sort();
        let mut expected = vec![
            (
                booked.from_wallet_id.clone(),
                "TRANSFER_OUT".to_owned(),
                "DEBIT".to_owned(),
                booked.amount,
            ),
            (
                booked.to_wallet_id.clone(),
                "TRANSFER_IN".to_owned(),
                "CREDIT".to_owned(),
                booked.amount,
            ),
        ];
        expected.sort();
        ensure!(
            found == expected,
            "completed transfer {id} ({transfer}) has ledger entries {found:?}, expected {expected:?}"
        );
        books.completed_transfers.insert(id, booked);
    }
    Ok(books)
}

/// The admin's view of the API, one page at a time.
struct AdminApi<'a> {
    client: &'a reqwest::Client,
    graphql_url: &'a str,
    token: &'a str,
}

impl AdminApi<'_> {
    /// Runs `query`; its `data`, or a failure on any error.
    async fn data(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let body: Value = self
            .client
            .post(self.graphql_url)
            .header("accept", "application/graphql-response+json")
            .bearer_auth(self.token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await
            .context("a GraphQL answer that is not JSON")?;
        if !body["errors"].is_null() || body["data"].is_null() {
            bail!("`{query}` failed: {body}");
        }
        Ok(body["data"].clone())
    }

    /// Every wallet of every user (their ledgers not read yet).
    async fn wallets(&self) -> anyhow::Result<Vec<WalletBook>> {
        let mut wallets = Vec::new();
        let mut seen = BTreeSet::new();
        let mut after = Value::Null;
        loop {
            let data = self
                .data(
                    "query($after: String) { users(first: 100, after: $after) {
                        nodes { id email wallets { id currency balance bonusBalance lockedBalance } }
                        pageInfo { hasNextPage endCursor } } }",
                    json!({ "after": after }),
                )
                .await?;
            let page = &data["users"];
            for user in page["nodes"].as_array().into_iter().flatten() {
                for wallet in user["wallets"].as_array().into_iter().flatten() {
                    let id = text(&wallet["id"])?;
                    ensure!(seen.insert(id.clone()), "wallet {id} listed twice");
                    wallets.push(WalletBook {
                        id,
                        user_id: text(&user["id"])?,
                        email: text(&user["email"])?,
                        currency: text(&wallet["currency"])?,
                        balance: amount(&wallet["balance"])?,
                        bonus_balance: amount(&wallet["bonusBalance"])?,
                        locked_balance: amount(&wallet["lockedBalance"])?,
                        entries: 0,
                    });
                }
            }
            if page["pageInfo"]["hasNextPage"] != json!(true) {
                return Ok(wallets);
            }
            after = page["pageInfo"]["endCursor"].clone();
        }
    }

    /// Every ledger entry of one wallet.
    async fn entries(&self, wallet_id: &str) -> anyhow::Result<Vec<Value>> {
        let mut entries = Vec::new();
        let mut after = Value::Null;
        loop {
            let data = self
                .data(
                    "query($w: ID!, $after: String) { wallet(id: $w) {
                        transactions(first: 100, after: $after) {
                            nodes { id type direction amount objectId objectModel }
                            pageInfo { hasNextPage endCursor } } } }",
                    json!({ "w": wallet_id, "after": after }),
                )
                .await?;
            let page = &data["wallet"]["transactions"];
            entries.extend(page["nodes"].as_array().into_iter().flatten().cloned());
            if page["pageInfo"]["hasNextPage"] != json!(true) {
                return Ok(entries);
            }
            after = page["pageInfo"]["endCursor"].clone();
        }
    }

    /// One transfer by id, or a failure when the API does not know it.
    async fn transfer(&self, id: &str) -> anyhow::Result<(String, Value)> {
        let data = self
            .data(
                "query($t: ID!) { transfer(id: $t) { id status amount currency fromWalletId toWalletId } }",
                json!({ "t": id }),
            )
            .await?;
        let transfer = data["transfer"].clone();
        ensure!(
            !transfer.is_null(),
            "ledger entries point at transfer {id}, which the API does not know"
        );
        Ok((id.to_owned(), transfer))
    }
}

/// An `Amount` field (an integer of minor units).
fn amount(value: &Value) -> anyhow::Result<i64> {
    value
        .as_i64()
        .ok_or_else(|| anyhow!("expected an amount, got {value}"))
}
