//! The soak's traffic: one operation at a time per worker, drawn at random
//! by kind, judged, timed and counted inside or outside fault windows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{json, Value};

use super::{Member, CURRENCY, OVERDRAFT};
use crate::load::Outcome;
use crate::{first_code, text, GatewayClient};

/// The kinds of operation of the traffic, with their shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    Login,
    Transfer,
    Wallets,
    Transactions,
    Notifications,
    Bonuses,
}

impl Kind {
    pub(super) const ALL: [Kind; 6] = [
        Kind::Login,
        Kind::Transfer,
        Kind::Wallets,
        Kind::Transactions,
        Kind::Notifications,
        Kind::Bonuses,
    ];

    /// Shares out of 100.
    fn weight(self) -> u32 {
        match self {
            Kind::Login => 2,
            Kind::Transfer => 40,
            Kind::Wallets => 18,
            Kind::Transactions => 15,
            Kind::Notifications => 15,
            Kind::Bonuses => 10,
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Kind::Login => "login",
            Kind::Transfer => "transfer",
            Kind::Wallets => "me.wallets",
            Kind::Transactions => "transactions",
            Kind::Notifications => "notifications",
            Kind::Bonuses => "bonuses",
        }
    }

    fn pick(roll: u32) -> Kind {
        let mut left = roll % 100;
        for kind in Kind::ALL {
            if left < kind.weight() {
                return kind;
            }
            left -= kind.weight();
        }
        Kind::Wallets
    }
}

/// Fault windows as the traffic sees them: an operation that began or
/// ended while one was open (the epoch moved or `open` is set) is counted
/// as inside.
#[derive(Default)]
pub(super) struct Windows {
    open: AtomicBool,
    epoch: AtomicU64,
}

impl Windows {
    fn mark(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn touched(&self, mark: u64) -> bool {
        self.open.load(Ordering::SeqCst) || self.epoch.load(Ordering::SeqCst) != mark
    }

    pub(super) fn set(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

/// How one operation ended.
enum Verdict {
    Ok,
    /// The documented refusal the operation may get (an overdraft).
    Refused,
    /// Anything else, by code (`MS…`, `transport`, `http <status>`,
    /// `uncoded`, `wrong-answer`).
    Failed(String),
}

/// The figures of one kind of operation.
pub(super) struct KindStats {
    pub(super) ok: u64,
    pub(super) refused: u64,
    pub(super) errors_outside: BTreeMap<String, u64>,
    pub(super) errors_inside: BTreeMap<String, u64>,
    pub(super) ok_inside: u64,
    pub(super) latency_us: Histogram<u64>,
}

impl KindStats {
    pub(super) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            ok: 0,
            refused: 0,
            errors_outside: BTreeMap::new(),
            errors_inside: BTreeMap::new(),
            ok_inside: 0,
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        })
    }
}

/// What the traffic shares.
pub(super) struct Traffic {
    pub(super) gateway: GatewayClient,
    pub(super) members: Vec<Arc<Member>>,
    pub(super) windows: Windows,
    pub(super) stats: BTreeMap<Kind, Mutex<KindStats>>,
    /// Ids of transfers answered `COMPLETED`.
    pub(super) acknowledged: Mutex<BTreeSet<String>>,
    /// Transfers that failed without a definite refusal: each may or may
    /// not have moved money.
    pub(super) uncertain_transfers: AtomicU64,
    pub(super) seed: u64,
}

impl Traffic {
    pub(super) async fn operation(&self, worker: usize, sequence: u64) -> Outcome {
        let mut rng =
            rand::rngs::StdRng::seed_from_u64(self.seed ^ ((worker as u64) << 40) ^ sequence);
        let kind = Kind::pick(rng.gen());
        let from = &self.members[rng.gen_range(0..self.members.len())];
        let mark = self.windows.mark();
        let started = Instant::now();
        let result = match kind {
            Kind::Login => self.login(from).await,
            Kind::Transfer => {
                let mut to = rng.gen_range(0..self.members.len() - 1);
                if self.members[to].id == from.id {
                    to = self.members.len() - 1;
                }
                let amount = if rng.gen_ratio(1, 10) {
                    OVERDRAFT
                } else {
                    rng.gen_range(1..=2_000)
                };
                self.transfer(from, &self.members[to], amount).await
            }
            query => self.query(query, from).await,
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let inside = self.windows.touched(mark);
        let outcome = Outcome::from(!matches!(result, Verdict::Failed(_)));
        if let Some(stats) = self.stats.get(&kind) {
            if let Ok(mut stats) = stats.lock() {
                stats.latency_us.saturating_record(micros.max(1));
                match result {
                    Verdict::Ok if inside => {
                        stats.ok += 1;
                        stats.ok_inside += 1;
                    }
                    Verdict::Ok => stats.ok += 1,
                    Verdict::Refused => stats.refused += 1,
                    Verdict::Failed(code) => {
                        let errors = if inside {
                            &mut stats.errors_inside
                        } else {
                            &mut stats.errors_outside
                        };
                        *errors.entry(code).or_default() += 1;
                    }
                }
            }
        }
        outcome
    }

    /// Posts one operation; the body, or the failure's code when there is
    /// no GraphQL answer or the answer carries errors.
    async fn post(&self, token: Option<&str>, query: &str, variables: Value) -> Answered {
        let request = json!({ "query": query, "variables": variables });
        let body = match self.gateway.post(token, &request).await {
            Ok(answer) if answer.body.is_null() => {
                return Answered::Failed(format!("http {}", answer.status.as_u16()))
            }
            Ok(answer) => answer.body,
            Err(_) => return Answered::Failed("transport".into()),
        };
        if body["errors"].is_null() {
            Answered::Data(body["data"].clone())
        } else {
            Answered::Failed(first_code(&body).unwrap_or_else(|| "uncoded".into()))
        }
    }

    async fn login(&self, member: &Member) -> Verdict {
        let answered = self
            .post(
                None,
                "mutation($input: LoginInput!) { login(input: $input) { accessToken user { id } } }",
                json!({ "input": { "email": member.email, "password": member.password } }),
            )
            .await;
        match answered {
            Answered::Data(data) if data["login"]["user"]["id"] == json!(member.id) => {
                match text(&data["login"]["accessToken"]) {
                    Ok(token) => {
                        member.renew(token);
                        Verdict::Ok
                    }
                    Err(_) => Verdict::Failed("wrong-answer".into()),
                }
            }
            Answered::Data(_) => Verdict::Failed("wrong-answer".into()),
            Answered::Failed(code) => Verdict::Failed(code),
        }
    }

    async fn transfer(&self, from: &Member, to: &Member, amount: i64) -> Verdict {
        let answered = self
            .post(
                Some(&from.token()),
                "mutation($input: TransferInput!) { transfer(input: $input) { id status } }",
                json!({ "input": {
                    "toUserId": to.id, "amount": amount, "currency": CURRENCY,
                    "idempotencyKey": uuid::Uuid::new_v4().to_string(), "description": "soak",
                } }),
            )
            .await;
        match answered {
            Answered::Data(data) if data["transfer"]["status"] == json!("COMPLETED") => {
                match (text(&data["transfer"]["id"]), self.acknowledged.lock()) {
                    (Ok(id), Ok(mut acknowledged)) => {
                        acknowledged.insert(id);
                        Verdict::Ok
                    }
                    _ => Verdict::Failed("wrong-answer".into()),
                }
            }
            Answered::Failed(code) if code == "MSPaymentInsufficientBalance" => Verdict::Refused,
            other => {
                self.uncertain_transfers.fetch_add(1, Ordering::Relaxed);
                match other {
                    Answered::Failed(code) => Verdict::Failed(code),
                    Answered::Data(_) => Verdict::Failed("wrong-answer".into()),
                }
            }
        }
    }

    async fn query(&self, kind: Kind, member: &Member) -> Verdict {
        let (query, check): (&str, fn(&Value, &Member) -> bool) = match kind {
            Kind::Wallets => ("{ me { id wallets { id balance } } }", |data, member| {
                data["me"]["id"] == json!(member.id)
                    && data["me"]["wallets"]
                        .as_array()
                        .is_some_and(|w| w.iter().any(|w| w["id"] == json!(member.wallet)))
            }),
            Kind::Transactions => (
                "{ transactions(first: 10) { nodes { id walletId amount direction } } }",
                |data, member| {
                    data["transactions"]["nodes"]
                        .as_array()
                        .is_some_and(|n| n.iter().all(|n| n["walletId"] == json!(member.wallet)))
                },
            ),
            Kind::Notifications => (
                "{ myNotifications(first: 10) { totalCount nodes { id userId kind } } }",
                |data, member| {
                    data["myNotifications"]["nodes"]
                        .as_array()
                        .is_some_and(|n| n.iter().all(|n| n["userId"] == json!(member.id)))
                },
            ),
            _ => (
                "{ myBonuses(first: 10) { totalCount nodes { id status } } }",
                |data, _| data["myBonuses"]["totalCount"].is_u64(),
            ),
        };
        match self.post(Some(&member.token()), query, json!({})).await {
            Answered::Data(data) if check(&data, member) => Verdict::Ok,
            Answered::Data(_) => Verdict::Failed("wrong-answer".into()),
            Answered::Failed(code) => Verdict::Failed(code),
        }
    }
}

/// A GraphQL answer as the traffic judges it.
enum Answered {
    Data(Value),
    Failed(String),
}
