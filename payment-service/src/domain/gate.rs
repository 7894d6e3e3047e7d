//! On MongoDB, one money transaction at a time per wallet inside this
//! instance.
//!
//! MongoDB runs transactions optimistically: two that update the same wallet
//! document conflict, one of them is aborted and runs again after a pause.
//! Under contention (a popular recipient, one user's burst of transfers) the
//! re-runs pile up until the store's retry budget refuses the request with
//! `MSCoreUnavailable`, nothing moved. Queueing the transactions of a wallet
//! inside the instance turns those collisions into a short wait; only
//! instances racing each other still conflict, and are retried as before.
//!
//! The embedded store needs none of this: it runs transactions one at a
//! time and commits the concurrent ones together, which a queue per wallet
//! would defeat (a transfer waiting for the one before it could not join its
//! commit).
//!
//! Wallets map onto a fixed set of stripes by a hash of owner and currency,
//! so the gate never grows. A transaction takes its stripes in ascending
//! order, so two transactions never wait for each other in a cycle; two
//! wallets sharing a stripe merely queue behind each other now and then.
//! A request that waits longer than [`MAX_WAIT`] for its turn (a wallet
//! flooded with requests, a store that stalls) is refused with
//! `MSCoreUnavailable` and moves nothing, as a request that kept
//! conflicting was before; a client may retry under the same idempotency key.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use std::time::Duration;

use service_core::ApiError;
use tokio::sync::{Mutex, MutexGuard};

/// Stripes of the gate: enough that unrelated wallets rarely share one.
const STRIPES: usize = 1024;

/// Longest wait for a turn: twice the store's retry budget for a
/// conflicting transaction.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(10);

/// See the module documentation.
pub(crate) struct WalletGate {
    /// `None` on a store that serialises transactions itself.
    stripes: Option<Box<[Mutex<()>]>>,
    max_wait: Duration,
}

/// The wallets' turn: held for the whole transaction, retries included.
pub(crate) struct Turn<'a> {
    _held: Vec<MutexGuard<'a, ()>>,
}

impl WalletGate {
    /// A gate that queues when `queue` is true, and lets everything through
    /// at once otherwise; a turn is waited for at most `max_wait`.
    pub(crate) fn new(queue: bool, max_wait: Duration) -> Self {
        Self {
            stripes: queue.then(|| (0..STRIPES).map(|_| Mutex::new(())).collect()),
            max_wait,
        }
    }

    /// Whether transactions queue here (the store is MongoDB).
    pub(crate) fn queues(&self) -> bool {
        self.stripes.is_some()
    }

    /// Waits until no other transaction of this instance holds any of
    /// `wallets`, given as `(owner, currency)`; `MSCoreUnavailable` after
    /// the longest wait.
    pub(crate) async fn enter(&self, wallets: &[(&str, &str)]) -> Result<Turn<'_>, ApiError> {
        let Some(stripes) = &self.stripes else {
            return Ok(Turn { _held: Vec::new() });
        };
        let mut picked: Vec<usize> = wallets
            .iter()
            .map(|(owner, currency)| stripe(owner, currency))
            .collect();
        picked.sort_unstable();
        picked.dedup();
        let take = async {
            let mut held = Vec::with_capacity(picked.len());
            for i in picked {
                held.push(stripes[i].lock().await);
            }
            Turn { _held: held }
        };
        tokio::time::timeout(self.max_wait, take)
            .await
            .map_err(|_| {
                ApiError::unavailable("the payment store")
                    .with_cause("other requests on the same wallet kept it busy")
            })
    }
}

fn stripe(owner: &str, currency: &str) -> usize {
    let mut hasher = DefaultHasher::new();
    (owner, currency).hash(&mut hasher);
    usize::try_from(hasher.finish() % STRIPES as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_wallet_is_held_by_one_transaction_at_a_time() {
        let gate = Arc::new(WalletGate::new(true, MAX_WAIT));
        let first = gate
            .enter(&[("alice", "EUR"), ("bob", "EUR")])
            .await
            .unwrap();
        let waiting = {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _turn = gate
                    .enter(&[("bob", "EUR"), ("carol", "EUR")])
                    .await
                    .unwrap();
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "bob's wallet was entered twice");
        drop(first);
        waiting.await.unwrap();
    }

    #[tokio::test]
    async fn opposite_transfers_do_not_deadlock() {
        let gate = Arc::new(WalletGate::new(true, MAX_WAIT));
        let mut tasks = Vec::new();
        for i in 0..64 {
            let gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                let pair = if i % 2 == 0 {
                    [("alice", "EUR"), ("bob", "EUR")]
                } else {
                    [("bob", "EUR"), ("alice", "EUR")]
                };
                let _turn = gate.enter(&pair).await.unwrap();
                tokio::task::yield_now().await;
            }));
        }
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the gate deadlocked")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn an_open_gate_never_waits() {
        let gate = WalletGate::new(false, MAX_WAIT);
        assert!(!gate.queues());
        let _first = gate.enter(&[("alice", "EUR")]).await.unwrap();
        let _second = gate.enter(&[("alice", "EUR")]).await.unwrap();
    }

    #[tokio::test]
    async fn a_turn_not_given_in_time_is_refused_and_holds_nothing() {
        let gate = WalletGate::new(true, Duration::from_millis(50));
        let first = gate.enter(&[("bob", "EUR")]).await.unwrap();
        let err = match gate.enter(&[("alice", "EUR"), ("bob", "EUR")]).await {
            Err(err) => err,
            Ok(_) => panic!("bob's wallet was entered twice"),
        };
        assert_eq!(err.code(), service_core::codes::UNAVAILABLE);
        // Alice's turn, taken before the wait for Bob's, was given back.
        let _alice = gate.enter(&[("alice", "EUR")]).await.unwrap();
        drop(first);
        let _bob = gate.enter(&[("bob", "EUR")]).await.unwrap();
    }
}
