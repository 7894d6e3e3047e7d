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

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use tokio::sync::{Mutex, MutexGuard};

/// Stripes of the gate: enough that unrelated wallets rarely share one.
const STRIPES: usize = 1024;

/// See the module documentation.
pub(crate) struct WalletGate {
    /// `None` on a store that serialises transactions itself.
    stripes: Option<Box<[Mutex<()>]>>,
}

/// The wallets' turn: held for the whole transaction, retries included.
pub(crate) struct Turn<'a> {
    _held: Vec<MutexGuard<'a, ()>>,
}

impl WalletGate {
    /// A gate that queues when `queue` is true, and lets everything through
    /// at once otherwise.
    pub(crate) fn new(queue: bool) -> Self {
        Self {
            stripes: queue.then(|| (0..STRIPES).map(|_| Mutex::new(())).collect()),
        }
    }

    /// Whether transactions queue here (the store is MongoDB).
    pub(crate) fn queues(&self) -> bool {
        self.stripes.is_some()
    }

    /// Waits until no other transaction of this instance holds any of
    /// `wallets`, given as `(owner, currency)`.
    pub(crate) async fn enter(&self, wallets: &[(&str, &str)]) -> Turn<'_> {
        let Some(stripes) = &self.stripes else {
            return Turn { _held: Vec::new() };
        };
        let mut picked: Vec<usize> = wallets
            .iter()
            .map(|(owner, currency)| stripe(owner, currency))
            .collect();
        picked.sort_unstable();
        picked.dedup();
        let mut held = Vec::with_capacity(picked.len());
        for i in picked {
            held.push(stripes[i].lock().await);
        }
        Turn { _held: held }
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
        let gate = Arc::new(WalletGate::new(true));
        let first = gate.enter(&[("alice", "EUR"), ("bob", "EUR")]).await;
        let waiting = {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _turn = gate.enter(&[("bob", "EUR"), ("carol", "EUR")]).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "bob's wallet was entered twice");
        drop(first);
        waiting.await.unwrap();
    }

    #[tokio::test]
    async fn opposite_transfers_do_not_deadlock() {
        let gate = Arc::new(WalletGate::new(true));
        let mut tasks = Vec::new();
        for i in 0..64 {
            let gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                let pair = if i % 2 == 0 {
                    [("alice", "EUR"), ("bob", "EUR")]
                } else {
                    [("bob", "EUR"), ("alice", "EUR")]
                };
                let _turn = gate.enter(&pair).await;
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
        let gate = WalletGate::new(false);
        assert!(!gate.queues());
        let _first = gate.enter(&[("alice", "EUR")]).await;
        let _second = gate.enter(&[("alice", "EUR")]).await;
    }
}
