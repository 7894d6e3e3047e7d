//! Reconciliation: every wallet's balances against its ledger.
//!
//! For each wallet and balance type: the balance equals the sum of its
//! CREDIT entries minus its DEBIT entries, and the newest entry's
//! `balanceAfter` equals the balance; `lockedBalance` equals the sum of the
//! wallet's pending withdrawals. Each wallet is checked inside one
//! transaction, so a movement committing meanwhile cannot fake a mismatch.

use chrono::{DateTime, Utc};
use serde::Serialize;
use service_core::access_engine::Resource;
use service_core::db::{from_document, Direction, Filter, FindOptions, SortKey, ID};
use service_core::{ApiError, ApiResult, RequestContext};

use super::{Failure, PaymentService};
use crate::store::{
    BalanceType, EntryDirection, LedgerEntry, Wallet, Withdrawal, TRANSACTIONS, WALLETS,
    WITHDRAWALS,
};

/// Wallets read per batch.
const BATCH: usize = 200;

/// One disagreement between a wallet and its ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mismatch {
    /// The wallet.
    pub wallet_id: String,
    /// `BALANCE`, `BONUS` or `LOCKED`.
    pub balance_type: String,
    /// What the wallet says.
    pub balance: i64,
    /// What the ledger (or the pending withdrawals) says.
    pub expected: i64,
    /// `balanceAfter` of the newest entry, when there is one.
    pub last_balance_after: Option<i64>,
    /// What is wrong.
    pub reason: String,
}

/// The result of one reconciliation run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconciliationReport {
    /// When it ran.
    pub ran_at: DateTime<Utc>,
    /// Wallets checked.
    pub wallets_checked: u64,
    /// Ledger entries summed.
    pub entries_checked: u64,
    /// Everything that disagrees; empty when the books balance.
    pub mismatches: Vec<Mismatch>,
}

/// Prometheus gauges of the last run.
#[derive(Clone, Debug)]
pub(crate) struct ReconcileMetrics {
    mismatches: prometheus::IntGauge,
    wallets: prometheus::IntGauge,
}

impl ReconcileMetrics {
    pub(crate) fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let mismatches = prometheus::IntGauge::new(
            "payment_reconciliation_mismatches",
            "Wallet balances that disagree with their ledger at the last reconciliation",
        )?;
        let wallets = prometheus::IntGauge::new(
            "payment_reconciliation_wallets_checked",
            "Wallets checked by the last reconciliation",
        )?;
        registry.register(Box::new(mismatches.clone()))?;
        registry.register(Box::new(wallets.clone()))?;
        Ok(Self {
            mismatches,
            wallets,
        })
    }
}

/// Checks one wallet against its entries and pending withdrawals.
pub(crate) fn check_wallet(
    wallet: &Wallet,
    entries: &[LedgerEntry],
    pending_withdrawals: i64,
) -> Vec<Mismatch> {
    let mut found = Vec::new();
    for (balance_type, balance) in [
        (BalanceType::Balance, wallet.balance),
        (BalanceType::Bonus, wallet.bonus_balance),
    ] {
        let mut sum: i128 = 0;
        let mut newest: Option<&LedgerEntry> = None;
        for entry in entries.iter().filter(|e| e.balance_type == balance_type) {
            match entry.direction {
                EntryDirection::Credit => sum += i128::from(entry.amount),
                EntryDirection::Debit => sum -= i128::from(entry.amount),
            }
            if newest.is_none_or(|n| (entry.seq, &entry.id) > (n.seq, &n.id)) {
                newest = Some(entry);
            }
        }
        let name = match balance_type {
            BalanceType::Balance => "BALANCE",
            BalanceType::Bonus => "BONUS",
        };
        let last = newest.map(|e| e.balance_after);
        let expected = i64::try_from(sum).unwrap_or(i64::MAX);
        if i128::from(balance) != sum {
            found.push(Mismatch {
                wallet_id: wallet.id.clone(),
                balance_type: name.to_owned(),
                balance,
                expected,
                last_balance_after: last,
                reason: "balance differs from the sum of the ledger".to_owned(),
            });
        } else if last.is_some_and(|l| l != balance) {
            found.push(Mismatch {
                wallet_id: wallet.id.clone(),
                balance_type: name.to_owned(),
                balance,
                expected,
                last_balance_after: last,
                reason: "the newest entry's balanceAfter differs from the balance".to_owned(),
            });
        }
    }
    if wallet.locked_balance != pending_withdrawals {
        found.push(Mismatch {
            wallet_id: wallet.id.clone(),
            balance_type: "LOCKED".to_owned(),
            balance: wallet.locked_balance,
            expected: pending_withdrawals,
            last_balance_after: None,
            reason: "locked balance differs from the pending withdrawals".to_owned(),
        });
    }
    found
}

impl PaymentService {
    /// `reconciliationReport`: runs a reconciliation; needs `wallet:reconcile:*`.
    pub async fn reconciliation_report(
        &self,
        ctx: &RequestContext,
    ) -> ApiResult<ReconciliationReport> {
        ctx.require("wallet", "reconcile", Resource::any())?;
        self.reconcile().await
    }

    /// Checks every wallet; logs and counts mismatches.
    #[tracing::instrument(skip_all, err)]
    pub async fn reconcile(&self) -> ApiResult<ReconciliationReport> {
        let mut report = ReconciliationReport {
            ran_at: Utc::now(),
            wallets_checked: 0,
            entries_checked: 0,
            mismatches: Vec::new(),
        };
        let mut after: Option<SortKey> = None;
        loop {
            let mut options = FindOptions::by_id().limit(BATCH);
            options.after = after.clone();
            let docs = self
                .inner
                .db
                .find(WALLETS, &Filter::all(), &options)
                .await?;
            let done = docs.len() < BATCH;
            for doc in docs {
                let id = doc
                    .get(ID)
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                after = Some(SortKey {
                    value: serde_json::Value::String(id.clone()),
                    id: id.clone(),
                });
                let (mismatches, entries) = self.reconcile_wallet(&id).await?;
                report.wallets_checked += 1;
                report.entries_checked += entries;
                report.mismatches.extend(mismatches);
            }
            if done {
                break;
            }
        }
        for m in &report.mismatches {
            tracing::error!(
                wallet_id = %m.wallet_id,
                balance_type = %m.balance_type,
                balance = m.balance,
                expected = m.expected,
                reason = %m.reason,
                "reconciliation mismatch"
            );
        }
        if let Some(metrics) = &self.inner.metrics {
            metrics
                .mismatches
                .set(i64::try_from(report.mismatches.len()).unwrap_or(i64::MAX));
            metrics
                .wallets
                .set(i64::try_from(report.wallets_checked).unwrap_or(i64::MAX));
        }
        tracing::info!(
            wallets = report.wallets_checked,
            entries = report.entries_checked,
            mismatches = report.mismatches.len(),
            "reconciliation finished"
        );
        Ok(report)
    }

    /// One wallet, in one transaction: (mismatches, entries read).
    async fn reconcile_wallet(&self, wallet_id: &str) -> ApiResult<(Vec<Mismatch>, u64)> {
        self.run_tx(|tx| {
            Box::pin(async move {
                let Some(doc) = tx.get(WALLETS, wallet_id).await? else {
                    return Ok((Vec::new(), 0));
                };
                let wallet: Wallet = from_document(doc)?;
                let entries: Vec<LedgerEntry> = tx
                    .find(
                        TRANSACTIONS,
                        &Filter::all().eq("walletId", wallet_id),
                        &FindOptions::sorted(ID, Direction::Asc),
                    )
                    .await?
                    .into_iter()
                    .map(from_document)
                    .collect::<Result<_, _>>()?;
                let pending: i64 = tx
                    .find(
                        WITHDRAWALS,
                        &Filter::all()
                            .eq("walletId", wallet_id)
                            .eq("status", "PENDING"),
                        &FindOptions::by_id(),
                    )
                    .await?
                    .into_iter()
                    .map(from_document::<Withdrawal>)
                    .collect::<Result<Vec<_>, _>>()?
                    .iter()
                    .map(|w| w.amount)
                    .sum();
                let count = entries.len() as u64;
                Ok::<_, Failure>((check_wallet(&wallet, &entries, pending), count))
            })
        })
        .await
        .map_err(|err: ApiError| err)
    }
}
