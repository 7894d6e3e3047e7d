//! The money invariants after a payments benchmark, on top of
//! [`check_books`](crate::faults::check_books) (balances never negative,
//! reconciliation clean, two ledger entries for each completed transfer):
//! the total equals what was deposited, and the transfers in the books
//! are exactly the ones acknowledged, give or take those whose answer
//! never came.

use std::collections::BTreeSet;

use anyhow::ensure;

use crate::faults::check_books;
use crate::{GatewayClient, Session};

/// What the benchmark knows it did.
#[derive(Clone, Debug, Default)]
pub struct Movements {
    /// The currency of every wallet.
    pub currency: String,
    /// The sum of the deposits, in minor units.
    pub deposited: i64,
    /// Ids of the transfers answered `COMPLETED`.
    pub completed: BTreeSet<String>,
    /// Transfers whose answer never came (a transport failure): each may
    /// or may not have completed.
    pub uncertain: u64,
}

/// What the books showed.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Wallets read.
    pub wallets: usize,
    /// Completed transfers found through their ledger entries.
    pub transfers: usize,
    /// Ledger entries the reconciliation checked.
    pub entries: i64,
}

/// Checks the invariants; the first broken one is the error.
pub async fn check_payments(
    api: &GatewayClient,
    admin: &Session,
    done: &Movements,
) -> anyhow::Result<Summary> {
    let books = check_books(api.client(), api.graphql_url(), &admin.access_token).await?;
    let total = books
        .total_balance_by_currency
        .get(&done.currency)
        .copied()
        .unwrap_or_default();
    ensure!(
        total == done.deposited,
        "the {} balances add up to {total}, the deposits to {}",
        done.currency,
        done.deposited
    );
    let lost: Vec<&String> = done
        .completed
        .iter()
        .filter(|id| !books.completed_transfers.contains_key(*id))
        .take(5)
        .collect();
    ensure!(
        lost.is_empty(),
        "transfers answered COMPLETED are not in the ledger: {lost:?}"
    );
    let unacknowledged = books.completed_transfers.len() - done.completed.len();
    ensure!(
        unacknowledged as u64 <= done.uncertain,
        "{unacknowledged} transfers in the ledger were never answered COMPLETED \
         ({} had no answer)",
        done.uncertain
    );
    Ok(Summary {
        wallets: books.wallets.len(),
        transfers: books.completed_transfers.len(),
        entries: books.entries_checked,
    })
}
