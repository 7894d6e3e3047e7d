//! One load per key at a time: when many callers miss the same key together,
//! one of them (the leader) fetches and the others wait for its result.
//!
//! The result travels as encoded bytes, so waiters need neither `T: Clone` nor
//! a shared error type. A leader that fails or is cancelled hands no result:
//! its waiters then fetch for themselves.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::watch;

/// What a leader hands its waiters: the encoded value, or `None` on failure.
type Outcome = Option<Arc<[u8]>>;

/// Flights in progress, by key.
#[derive(Debug, Default)]
pub(crate) struct SingleFlight {
    flights: Mutex<HashMap<String, watch::Receiver<Option<Outcome>>>>,
}

/// A caller's part in a flight.
pub(crate) enum Role<'a> {
    /// Fetch, then [`Leader::finish`].
    Leader(Leader<'a>),
    /// Wait with [`wait`].
    Waiter(watch::Receiver<Option<Outcome>>),
}

impl SingleFlight {
    /// Joins the flight for `key`, or starts it.
    pub(crate) fn join(&self, key: &str) -> Role<'_> {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = flights.get(key) {
            return Role::Waiter(flight.clone());
        }
        let (sender, receiver) = watch::channel(None);
        flights.insert(key.to_owned(), receiver);
        Role::Leader(Leader {
            flights: self,
            key: key.to_owned(),
            sender,
        })
    }
}

/// The caller that fetches. Dropping it (finished, failed or cancelled)
/// closes the flight, so the next miss starts a new one.
pub(crate) struct Leader<'a> {
    flights: &'a SingleFlight,
    key: String,
    sender: watch::Sender<Option<Outcome>>,
}

impl Leader<'_> {
    /// Hands the result to every waiter and closes the flight.
    pub(crate) fn finish(self, outcome: Outcome) {
        // No receiver left is fine: nobody was waiting.
        let _ = self.sender.send(Some(outcome));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        // Only this leader can have registered the entry under this key: a
        // new flight starts only once the entry is gone.
        self.flights
            .flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// Waits for the leader; `None` when it failed or was cancelled.
pub(crate) async fn wait(mut flight: watch::Receiver<Option<Outcome>>) -> Outcome {
    match flight.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone().flatten(),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_receive_the_leaders_result() {
        let flights = SingleFlight::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!("first caller must lead");
        };
        let Role::Waiter(waiter) = flights.join("k") else {
            panic!("second caller must wait");
        };
        leader.finish(Some(Arc::from(&b"42"[..])));
        assert_eq!(wait(waiter).await.as_deref(), Some(&b"42"[..]));
        assert!(matches!(flights.join("k"), Role::Leader(_)));
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_waiters() {
        let flights = SingleFlight::default();
        let leader = flights.join("k");
        let Role::Waiter(waiter) = flights.join("k") else {
            panic!("second caller must wait");
        };
        drop(leader);
        assert_eq!(wait(waiter).await, None);
    }
}
