//! Payments end to end: users with funded wallets send `transfer`
//! mutations through the gateway, each with their own JWT and a fresh
//! idempotency key, from closed-loop workers; then the books are checked.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use futures::{StreamExt, TryStreamExt};
use rand::Rng;
use serde_json::{json, Value};

use super::books::Movements;
use crate::load::{closed_loop, Outcome, Report};
use crate::{first_code, text, GatewayClient, Session};

/// The wallets' currency.
const CURRENCY: &str = "EUR";

/// What each wallet is funded with: enough that a refusal for an
/// insufficient balance stays rare even on the hot wallets.
const FUNDING: i64 = 1_000_000_000;

/// Largest amount of one transfer; each is 1 to this, at random.
const MAX_AMOUNT: i64 = 100;

/// How many registrations run at once (argon2 makes each expensive).
const SIGN_UP_CONCURRENCY: usize = 4;

/// How long the payment service may take to learn of a new user.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

const TRANSFER: &str = "mutation($input: TransferInput!) { transfer(input: $input) { id status } }";

/// Which wallets the transfers move money between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wallets {
    /// Random pairs among every user.
    Random,
    /// Random pairs among four users only: every transfer contends.
    Hot,
}

impl Wallets {
    /// Its name on the command line and in the report line.
    pub fn name(self) -> &'static str {
        match self {
            Wallets::Random => "random",
            Wallets::Hot => "hot",
        }
    }

    /// How many users take part out of `users`.
    fn participants(self, users: usize) -> usize {
        match self {
            Wallets::Random => users.max(2),
            Wallets::Hot => 4,
        }
    }
}

/// One run's settings.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Which wallets.
    pub wallets: Wallets,
    /// Closed-loop workers.
    pub concurrency: usize,
    /// How long they run.
    pub duration: Duration,
    /// Users registered for [`Wallets::Random`].
    pub users: usize,
}

/// What a run measured and what it moved.
#[derive(Debug)]
pub struct Run {
    /// Latencies and counts (refusals for an insufficient balance count as
    /// answered correctly).
    pub report: Report,
    /// Transfers refused with `MSPaymentInsufficientBalance`.
    pub refused: u64,
    /// Every movement made, set-up included, for the books.
    pub movements: Movements,
    /// A few of the wrong answers, for the log.
    pub error_samples: Vec<String>,
}

/// Counters the workers share.
#[derive(Default)]
struct Tally {
    completed: Mutex<BTreeSet<String>>,
    refused: AtomicU64,
    uncertain: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Tally {
    fn sample(&self, what: String) {
        if let Ok(mut samples) = self.samples.lock() {
            if samples.len() < 5 {
                samples.push(what);
            }
        }
    }
}

/// Registers the participants, funds their wallets, and runs the load.
pub async fn run(api: &GatewayClient, admin: &Session, settings: Settings) -> anyhow::Result<Run> {
    let count = settings.wallets.participants(settings.users);
    let parties: Vec<Session> = futures::stream::iter(0..count)
        .map(|index| sign_up(api, admin, index))
        .buffer_unordered(SIGN_UP_CONCURRENCY)
        .try_collect()
        .await?;
    let mut movements = Movements {
        currency: CURRENCY.to_owned(),
        deposited: FUNDING * count as i64,
        ..Movements::default()
    };
    // One transfer round before measuring: the payment service learns of
    // each user from the bus, and until then they are an unknown recipient.
    for (index, party) in parties.iter().enumerate() {
        let to = &parties[(index + 1) % parties.len()];
        let id = first_transfer(api, party, to).await?;
        movements.completed.insert(id);
    }

    let parties = Arc::new(parties);
    let tally = Arc::new(Tally::default());
    let shared = Arc::new(api.clone());
    let report = closed_loop(settings.concurrency, settings.duration, {
        let (api, parties, tally) = (shared, parties.clone(), tally.clone());
        move |_worker, _sequence| {
            let (api, parties, tally) = (api.clone(), parties.clone(), tally.clone());
            async move { transfer_once(&api, &parties, &tally).await }
        }
    })
    .await;

    if let Ok(mut completed) = tally.completed.lock() {
        movements.completed.append(&mut completed);
    }
    movements.uncertain = tally.uncertain.load(Ordering::Relaxed);
    let error_samples = tally
        .samples
        .lock()
        .map(|samples| samples.clone())
        .unwrap_or_default();
    Ok(Run {
        report,
        refused: tally.refused.load(Ordering::Relaxed),
        movements,
        error_samples,
    })
}

async fn sign_up(api: &GatewayClient, admin: &Session, index: usize) -> anyhow::Result<Session> {
    let session = api.register(&format!("bench{index}")).await?;
    let wallet = api.create_wallet(&session, CURRENCY).await?;
    api.deposit(admin, &wallet, FUNDING).await?;
    Ok(session)
}

/// A transfer retried while the recipient is still unknown to the payment
/// service; any other answer than `COMPLETED` is an error. Its id.
async fn first_transfer(
    api: &GatewayClient,
    from: &Session,
    to: &Session,
) -> anyhow::Result<String> {
    let key = uuid::Uuid::new_v4().to_string();
    let body = crate::eventually(SETTLE_TIMEOUT, || async {
        let body = api
            .gql(
                Some(&from.access_token),
                TRANSFER,
                transfer_input(&to.id, 1, &key),
            )
            .await?;
        let unknown = first_code(&body).as_deref() == Some("MSPaymentRecipientNotFound");
        Ok((!unknown).then_some(body))
    })
    .await?;
    if body["data"]["transfer"]["status"] != json!("COMPLETED") {
        bail!("the first transfer did not complete: {body}");
    }
    text(&body["data"]["transfer"]["id"])
}

async fn transfer_once(api: &GatewayClient, parties: &[Session], tally: &Tally) -> Outcome {
    let (from, to, amount) = {
        let mut rng = rand::thread_rng();
        let from = rng.gen_range(0..parties.len());
        // Any other participant: skip over the sender.
        let to = (from + rng.gen_range(1..parties.len())) % parties.len();
        (from, to, rng.gen_range(1..=MAX_AMOUNT))
    };
    let key = uuid::Uuid::new_v4().to_string();
    let request = json!({
        "query": TRANSFER,
        "variables": transfer_input(&parties[to].id, amount, &key),
    });
    // An answer without a JSON body says nothing of the transfer: it may
    // have happened, like one whose answer never came.
    let answer = match api.post(Some(&parties[from].access_token), &request).await {
        Ok(answer) if answer.body.is_null() => Err(anyhow::anyhow!(
            "HTTP {} without a JSON body",
            answer.status
        )),
        answer => answer.map(|answer| answer.body),
    };
    match answer {
        Ok(body) if body["data"]["transfer"]["status"] == json!("COMPLETED") => {
            match (
                text(&body["data"]["transfer"]["id"]),
                tally.completed.lock(),
            ) {
                (Ok(id), Ok(mut completed)) => {
                    completed.insert(id);
                    Outcome::Ok
                }
                _ => {
                    tally.sample(body.to_string());
                    Outcome::Failed
                }
            }
        }
        Ok(body) if first_code(&body).as_deref() == Some("MSPaymentInsufficientBalance") => {
            tally.refused.fetch_add(1, Ordering::Relaxed);
            Outcome::Ok
        }
        Ok(body) => {
            tally.sample(body.to_string());
            Outcome::Failed
        }
        Err(err) => {
            tally.uncertain.fetch_add(1, Ordering::Relaxed);
            tally.sample(format!("{err:#}"));
            Outcome::Failed
        }
    }
}

fn transfer_input(to_user: &str, amount: i64, key: &str) -> Value {
    json!({ "input": {
        "toUserId": to_user,
        "amount": amount,
        "currency": CURRENCY,
        "idempotencyKey": key,
        "description": "benchmark",
    } })
}
