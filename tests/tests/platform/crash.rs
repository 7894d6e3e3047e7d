//! The platform's process killed with SIGKILL in the middle of concurrent
//! transfers and withdrawals, then started again on the same data
//! directory, twice: every acknowledged transfer survives exactly once, a
//! request that got no answer and is retried with its idempotency key
//! happens exactly once, recovery finishes the withdrawals the kill left
//! pending, and the books balance.
//!
//! The platform runs in a `platform-node` child process (the embedded
//! store, so the kill takes its stores down with it); the payout provider
//! runs in the test, outside the killed process, and answers slowly so the
//! kill lands while a payout is in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, ensure, Context as _};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use e2e::faults::check_books;
use e2e::{eventually, first_code, generate_signing_key_pem, GatewayClient, Session};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Users holding one EUR wallet each.
const USERS: usize = 6;
/// Clients sending requests at the same time.
const WORKERS: usize = 8;
/// What each user is deposited before the first round; half of it again
/// before each later round.
const DEPOSIT: i64 = 10_000;
/// Transfers of up to this many minor units: often more than the sender has.
const MAX_TRANSFER: i64 = 6_000;
/// Withdrawals of up to this many minor units.
const MAX_WITHDRAWAL: i64 = 1_500;
/// One request in this many is a withdrawal.
const WITHDRAWAL_EVERY: u32 = 8;
/// Transfers acknowledged in a round before the node may be killed.
const ACKNOWLEDGED_BEFORE_KILL: usize = 25;
/// Kill, restart and check this many times (a recovery that works only
/// once fails the second round).
const ROUNDS: usize = 2;
/// How long the provider takes to answer a payout: the window the kill
/// aims at.
const PAYOUT_DELAY: Duration = Duration::from_millis(400);
/// The pending withdrawal's heartbeat lease: past it, recovery takes over.
const LEASE_SECONDS: &str = "2";
/// The pause between recovery sweeps.
const RECOVERY_INTERVAL_SECONDS: &str = "1";
/// How long a node may take to start (or to stop after SIGTERM): generous
/// for a loaded machine.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a condition (the moment to kill, recovery done) may take.
const WAIT: Duration = Duration::from_secs(30);
/// The only refusal a request of this scenario may get.
const INSUFFICIENT_BALANCE: &str = "MSPaymentInsufficientBalance";

const TRANSFER: &str = "mutation($input: TransferInput!) {
    transfer(input: $input) { id status amount fromWalletId toWalletId }
}";
const WITHDRAW: &str = "mutation($input: WithdrawInput!) {
    withdraw(input: $input) { id type amount objectId objectModel }
}";

/// What every start of the node is given.
struct NodeConfig {
    data_dir: PathBuf,
    signing_key: String,
    admin_email: String,
    admin_password: String,
    payout_url: String,
}

/// A running `platform-node` process; dropping it kills the process.
struct Node {
    child: Child,
    api: Arc<GatewayClient>,
}

impl Node {
    /// Starts the node on `config`'s data directory and waits until it
    /// prints the gateway's URL.
    async fn start(config: &NodeConfig) -> anyhow::Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_platform-node"))
            .arg("--data-dir")
            .arg(&config.data_dir)
            .args(["--brand", "crash"])
            .arg("--set")
            .arg(format!(
                "PAYMENT_RECOVERY_INTERVAL_SECONDS={RECOVERY_INTERVAL_SECONDS}"
            ))
            .arg("--set")
            .arg(format!("PAYMENT_WITHDRAWAL_LEASE_SECONDS={LEASE_SECONDS}"))
            .arg("--set")
            .arg(format!("PAYMENT_PAYOUT_URL={}", config.payout_url))
            .env("PLATFORM_NODE_SIGNING_KEY", &config.signing_key)
            .env("PLATFORM_NODE_ADMIN_EMAIL", &config.admin_email)
            .env("PLATFORM_NODE_ADMIN_PASSWORD", &config.admin_password)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("start platform-node")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("platform-node's stdout"))?;
        let ready = tokio::time::timeout(NODE_START_TIMEOUT, async {
            BufReader::new(stdout).lines().next_line().await
        })
        .await
        .with_context(|| format!("platform-node printed no URL within {NODE_START_TIMEOUT:?}"))?
        .context("read platform-node's stdout")?;
        let Some(graphql_url) = ready else {
            let status = child.wait().await?;
            anyhow::bail!("platform-node exited with {status} before it was ready");
        };
        let api = GatewayClient::new(
            graphql_url.trim(),
            &config.admin_email,
            &config.admin_password,
        )?;
        Ok(Self {
            child,
            api: Arc::new(api),
        })
    }

    /// SIGKILL: no shutdown, no flush, no goodbye; waits until it is gone.
    async fn kill(mut self) -> anyhow::Result<()> {
        self.child.start_kill().context("kill platform-node")?;
        self.child.wait().await.context("wait for platform-node")?;
        Ok(())
    }

    /// SIGTERM, and the node must shut down cleanly.
    async fn terminate(mut self) -> anyhow::Result<()> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow!("platform-node has exited already"))?;
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .context("send SIGTERM")?;
        ensure!(sent.success(), "kill -TERM {pid}: {sent}");
        let status = tokio::time::timeout(NODE_START_TIMEOUT, self.child.wait())
            .await
            .context("platform-node did not stop after SIGTERM")??;
        ensure!(status.success(), "platform-node stopped with {status}");
        Ok(())
    }
}

/// The payout provider: pays on arrival (recording the withdrawal id, its
/// idempotency key), answers after [`PAYOUT_DELAY`].
#[derive(Default)]
struct Payouts {
    /// Amount paid per withdrawal id.
    paid: Mutex<BTreeMap<String, i64>>,
    /// Payouts paid but not answered yet.
    in_flight: AtomicUsize,
    /// Requests asking for another amount under an id already paid.
    conflicts: Mutex<Vec<String>>,
}

/// Counts one payout in flight while alive (also when the caller hangs up
/// and the handler is dropped).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn pay(
    State(payouts): State<Arc<Payouts>>,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let (Some(id), Some(amount)) = (
        headers
            .get("idempotency-key")
            .and_then(|value| value.to_str().ok()),
        request["amount"].as_i64(),
    ) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "bad request" })),
        );
    };
    let _in_flight = InFlight::enter(&payouts.in_flight);
    let first = *payouts
        .paid
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(id.to_owned())
        .or_insert(amount);
    if first != amount {
        payouts
            .conflicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!("{id}: paid {first}, asked again for {amount}"));
    }
    tokio::time::sleep(PAYOUT_DELAY).await;
    (
        StatusCode::OK,
        Json(json!({ "reference": format!("payout-{id}") })),
    )
}

/// The provider's HTTP server on a loopback port; dropping it stops it.
struct Provider {
    url: String,
    payouts: Arc<Payouts>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Provider {
    async fn start() -> anyhow::Result<Self> {
        let payouts = Arc::new(Payouts::default());
        let router = axum::Router::new()
            .route("/payouts", axum::routing::post(pay))
            .with_state(payouts.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/payouts", listener.local_addr()?);
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(Self {
            url,
            payouts,
            server,
        })
    }

    fn in_flight(&self) -> usize {
        self.payouts.in_flight.load(Ordering::SeqCst)
    }

    fn paid(&self) -> BTreeMap<String, i64> {
        self.payouts
            .paid
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn conflicts(&self) -> Vec<String> {
        self.payouts
            .conflicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A user of the scenario and their wallet.
struct Account {
    session: Session,
    wallet: String,
}

/// A money movement a client asked for.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// From one account to another (indexes into the accounts).
    Transfer { from: usize, to: usize, amount: i64 },
    /// Out of one account through the payout provider.
    Withdraw { account: usize, amount: i64 },
}

/// What the client was told.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// Acknowledged: the transfer's id, or the withdrawal's.
    Done(String),
    /// Refused with this error code.
    Refused(String),
    /// No answer (the node died under the request): the client cannot
    /// know whether it happened.
    NoAnswer(String),
}

/// One request and its answer.
#[derive(Clone, Debug)]
struct Request {
    op: Op,
    key: String,
    outcome: Outcome,
}

/// Sends `op` under idempotency `key`.
async fn send(api: &GatewayClient, accounts: &[Account], op: Op, key: &str) -> Outcome {
    let (token, query, variables, field, id_field) = match op {
        Op::Transfer { from, to, amount } => (
            &accounts[from].session.access_token,
            TRANSFER,
            json!({ "input": {
                "toUserId": accounts[to].session.id, "amount": amount, "currency": "EUR",
                "idempotencyKey": key, "description": "crash test transfer",
            } }),
            "transfer",
            "id",
        ),
        Op::Withdraw { account, amount } => (
            &accounts[account].session.access_token,
            WITHDRAW,
            json!({ "input": {
                "walletId": accounts[account].wallet, "amount": amount,
                "idempotencyKey": key, "description": "crash test withdrawal",
            } }),
            "withdraw",
            "objectId",
        ),
    };
    match api.gql(Some(token), query, variables).await {
        Err(err) => Outcome::NoAnswer(format!("{err:#}")),
        Ok(body) => match (body["data"][field][id_field].as_str(), first_code(&body)) {
            (Some(id), _) => Outcome::Done(id.to_owned()),
            (None, Some(code)) => Outcome::Refused(code),
            (None, None) => Outcome::NoAnswer(body.to_string()),
        },
    }
}

/// One client: random requests until `stop`, or until one gets no answer
/// (the node is gone).
async fn client(
    api: Arc<GatewayClient>,
    accounts: Arc<Vec<Account>>,
    acknowledged: Arc<AtomicUsize>,
    stop: CancellationToken,
    seed: u64,
) -> Vec<Request> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut requests = Vec::new();
    while !stop.is_cancelled() {
        let op = if rng.gen_ratio(1, WITHDRAWAL_EVERY) {
            Op::Withdraw {
                account: rng.gen_range(0..accounts.len()),
                amount: rng.gen_range(1..=MAX_WITHDRAWAL),
            }
        } else {
            let from = rng.gen_range(0..accounts.len());
            let to = (from + rng.gen_range(1..accounts.len())) % accounts.len();
            Op::Transfer {
                from,
                to,
                amount: rng.gen_range(1..=MAX_TRANSFER),
            }
        };
        let key = uuid::Uuid::new_v4().to_string();
        let outcome = send(&api, &accounts, op, &key).await;
        if matches!((&op, &outcome), (Op::Transfer { .. }, Outcome::Done(_))) {
            acknowledged.fetch_add(1, Ordering::SeqCst);
        }
        let unanswered = matches!(outcome, Outcome::NoAnswer(_));
        requests.push(Request { op, key, outcome });
        if unanswered {
            break;
        }
    }
    requests
}

/// Runs the clients against `node` and kills it with SIGKILL once
/// [`ACKNOWLEDGED_BEFORE_KILL`] transfers were acknowledged and while a
/// payout is in flight (a withdrawal is pending); every request made.
async fn load_then_kill(
    node: Node,
    accounts: &Arc<Vec<Account>>,
    provider: &Provider,
    seed: u64,
) -> anyhow::Result<Vec<Request>> {
    let stop = CancellationToken::new();
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..WORKERS as u64)
        .map(|n| {
            tokio::spawn(client(
                node.api.clone(),
                accounts.clone(),
                acknowledged.clone(),
                stop.clone(),
                seed + n,
            ))
        })
        .collect();
    let aimed = eventually(WAIT, || {
        let ready = acknowledged.load(Ordering::SeqCst) >= ACKNOWLEDGED_BEFORE_KILL
            && provider.in_flight() > 0;
        async move { Ok(ready.then_some(())) }
    })
    .await;
    node.kill().await?;
    stop.cancel();
    let mut requests = Vec::new();
    for client in clients {
        requests.extend(client.await.context("client task")?);
    }
    aimed.context("no moment with transfers acknowledged and a payout in flight")?;
    Ok(requests)
}

/// Retries every request without an answer, twice, with its key and
/// parameters: the first retry must be answered, the second the same.
async fn retry_unanswered(
    api: &GatewayClient,
    accounts: &[Account],
    requests: &mut [Request],
) -> anyhow::Result<()> {
    for request in requests
        .iter_mut()
        .filter(|request| matches!(request.outcome, Outcome::NoAnswer(_)))
    {
        let first = send(api, accounts, request.op, &request.key).await;
        ensure!(
            !matches!(first, Outcome::NoAnswer(_)),
            "retry of {request:?} got no answer: {first:?}"
        );
        let second = send(api, accounts, request.op, &request.key).await;
        ensure!(
            first == second,
            "retries of {request:?} differ: {first:?}, then {second:?}"
        );
        request.outcome = first;
    }
    Ok(())
}

/// Sum of `lockedBalance` over every wallet (money of pending withdrawals).
async fn locked_total(api: &GatewayClient, admin: &Session) -> anyhow::Result<i64> {
    let data = api
        .data(
            Some(&admin.access_token),
            "{ users(first: 100) { nodes { wallets { lockedBalance } } } }",
            json!({}),
        )
        .await?;
    Ok(data["users"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|user| user["wallets"].as_array().cloned().unwrap_or_default())
        .filter_map(|wallet| wallet["lockedBalance"].as_i64())
        .sum())
}

/// After a restart: retries, recovery, then every invariant of the books
/// against the requests of all rounds so far and the deposits made.
async fn check_after_restart(
    node: &Node,
    accounts: &[Account],
    provider: &Provider,
    deposits: &[i64],
    requests: &mut [Request],
    round: usize,
) -> anyhow::Result<()> {
    let api = &node.api;
    let admin = api.admin().await?;
    let locked_at_restart = locked_total(api, &admin).await?;
    let unanswered = requests
        .iter()
        .filter(|request| matches!(request.outcome, Outcome::NoAnswer(_)))
        .count();
    retry_unanswered(api, accounts, requests).await?;
    // Recovery settles what the kill left pending: nothing stays locked.
    eventually(WAIT, || async {
        Ok((locked_total(api, &admin).await? == 0).then_some(()))
    })
    .await
    .context("a withdrawal stayed pending after the recovery sweeps")?;

    let books = check_books(api.client(), api.graphql_url(), &admin.access_token).await?;

    // Every refusal is a definite one.
    for request in requests.iter() {
        if let Outcome::Refused(code) = &request.outcome {
            ensure!(code == INSUFFICIENT_BALANCE, "{request:?} was refused");
        }
    }
    // Acknowledged transfers, exactly the completed ones, each once.
    let mut model: Vec<i64> = deposits.to_vec();
    let mut acknowledged = BTreeMap::new();
    let mut withdrawn = BTreeMap::new();
    for request in requests.iter() {
        let Outcome::Done(id) = &request.outcome else {
            continue;
        };
        match request.op {
            Op::Transfer { from, to, amount } => {
                ensure!(
                    acknowledged.insert(id.clone(), request.op).is_none(),
                    "transfer {id} acknowledged to two requests"
                );
                let booked = books.completed_transfers.get(id).ok_or_else(|| {
                    anyhow!("acknowledged transfer {id} ({request:?}) is not in the books")
                })?;
                ensure!(
                    booked.from_wallet_id == accounts[from].wallet
                        && booked.to_wallet_id == accounts[to].wallet
                        && booked.amount == amount,
                    "transfer {id} is {booked:?}, asked for {request:?}"
                );
                model[from] -= amount;
                model[to] += amount;
            }
            Op::Withdraw { account, amount } => {
                ensure!(
                    withdrawn.insert(id.clone(), amount).is_none(),
                    "withdrawal {id} acknowledged to two requests"
                );
                model[account] -= amount;
            }
        }
    }
    let completed: BTreeSet<&String> = books.completed_transfers.keys().collect();
    let answered: BTreeSet<&String> = acknowledged.keys().collect();
    ensure!(
        completed == answered,
        "completed transfers nobody was acknowledged: {:?}",
        completed.difference(&answered).collect::<Vec<_>>()
    );
    // Withdrawals: paid exactly the acknowledged ones, none reversed.
    ensure!(
        provider.paid() == withdrawn,
        "paid {:?}, acknowledged {withdrawn:?}",
        provider.paid()
    );
    ensure!(
        provider.conflicts().is_empty(),
        "{:?}",
        provider.conflicts()
    );
    let deposited: i64 = deposits.iter().sum();
    let withdrawn_total: i64 = withdrawn.values().sum();
    ensure!(
        books.total_balance_by_currency.get("EUR") == Some(&(deposited - withdrawn_total)),
        "balances sum to {:?}, deposits {deposited} − withdrawals {withdrawn_total}",
        books.total_balance_by_currency
    );
    ensure!(
        books
            .wallets
            .iter()
            .all(|wallet| wallet.locked_balance == 0),
        "{:?}",
        books.wallets
    );
    // What each user sees is what the acknowledged requests add up to.
    for (index, account) in accounts.iter().enumerate() {
        let data = api
            .data(
                Some(&account.session.access_token),
                "{ myWallets { id balance lockedBalance } }",
                json!({}),
            )
            .await?;
        ensure!(
            data["myWallets"]
                == json!([{ "id": account.wallet, "balance": model[index], "lockedBalance": 0 }]),
            "{} sees {data}, expected balance {}",
            account.session.email,
            model[index]
        );
    }
    let refused = requests
        .iter()
        .filter(|request| matches!(request.outcome, Outcome::Refused(_)))
        .count();
    println!(
        "round {round}: {} requests in all, {} transfers and {} withdrawals acknowledged, \
         {refused} refused; this round {unanswered} without an answer retried, \
         {locked_at_restart} locked at restart",
        requests.len(),
        acknowledged.len(),
        withdrawn.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_recovers_acknowledged_money_exactly_once() -> anyhow::Result<()> {
    // Arrange: a node on a data directory of the test, a provider outside it.
    let data = tempfile::tempdir()?;
    let provider = Provider::start().await?;
    let config = NodeConfig {
        data_dir: data.path().to_path_buf(),
        signing_key: generate_signing_key_pem()?,
        admin_email: format!("admin-{}@example.com", uuid::Uuid::new_v4().simple()),
        admin_password: format!("Admin-{}", uuid::Uuid::new_v4().simple()),
        payout_url: provider.url.clone(),
    };
    let mut node = Node::start(&config).await?;
    let admin = node.api.admin().await?;
    let mut accounts = Vec::new();
    for n in 0..USERS {
        let session = node.api.register(&format!("crash{n}")).await?;
        let wallet = node.api.create_wallet(&session, "EUR").await?;
        node.api.deposit(&admin, &wallet, DEPOSIT).await?;
        accounts.push(Account { session, wallet });
    }
    let accounts = Arc::new(accounts);
    let mut deposits = vec![DEPOSIT; USERS];
    let mut requests = Vec::new();
    let seed: u64 = rand::random();
    println!("seed {seed}");

    for round in 1..=ROUNDS {
        if round > 1 {
            let admin = node.api.admin().await?;
            for (account, deposited) in accounts.iter().zip(deposits.iter_mut()) {
                node.api
                    .deposit(&admin, &account.wallet, DEPOSIT / 2)
                    .await?;
                *deposited += DEPOSIT / 2;
            }
        }
        // Act: load, SIGKILL mid-load, start again on the same directory.
        let round_seed = seed.wrapping_add((round * WORKERS) as u64);
        requests.extend(load_then_kill(node, &accounts, &provider, round_seed).await?);
        node = Node::start(&config).await?;

        // Assert
        check_after_restart(&node, &accounts, &provider, &deposits, &mut requests, round).await?;
    }
    // A graceful stop still works on the recovered books.
    node.terminate().await?;
    Ok(())
}
