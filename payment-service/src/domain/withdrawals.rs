//! Withdrawals: lock the funds, pay out, settle.
//!
//! 1. One transaction debits `balance`, adds the amount to `lockedBalance`,
//!    writes the WITHDRAWAL ledger entry and a `PENDING` withdrawal whose
//!    `staleAt` is its heartbeat, and claims the idempotency key.
//! 2. The payout provider is called (retry, breaker, timeout), keyed by the
//!    withdrawal id; the owner pushes `staleAt` forward meanwhile.
//! 3. One transaction settles: paid → `COMPLETED`, the lock released;
//!    failed → `FAILED`, the lock released back into `balance` with a
//!    REVERSAL entry (the compensation). Settling is conditional on the
//!    withdrawal still being `PENDING`, so it happens once.
//!
//! A withdrawal whose owner died between 1 and 3 goes stale; recovery
//! claims it (conditional update of `staleAt`), asks the provider again
//! (idempotent by id) and settles it the same way. Nothing is deleted.

use std::time::Duration;

use chrono::Utc;
use service_core::access_engine::Resource;
use service_core::db::{from_document, to_document, Direction, Filter, FindOptions, Update};
use service_core::events::WithdrawalCompleted;
use service_core::{ApiError, ApiResult, RequestContext};

use super::idempotency::IdempotencyKey;
use super::ledger::{self, Cause, Leg};
use super::movements::{check_description, WalletCommand};
use super::payout::{PayoutError, PayoutReceipt, PayoutRequest};
use super::{event, fault_points, stage, wallet_updated, Failure, PaymentService, StoredResult};
use crate::domain::money::Amount;
use crate::store::{
    BalanceType, EntryDirection, LedgerEntry, TransactionType, Withdrawal, WithdrawalStatus,
    TRANSACTIONS, WITHDRAWALS,
};

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn payout_failed(reason: &str) -> ApiError {
    ApiError::unavailable("the payout provider")
        .with_cause(format!("payout failed, funds released: {reason}"))
}

impl PaymentService {
    /// Withdraws from the caller's wallet; returns the WITHDRAWAL entry.
    #[tracing::instrument(skip_all, fields(wallet_id = %cmd.wallet_id, amount = %cmd.amount), err)]
    pub async fn withdraw(
        &self,
        ctx: &RequestContext,
        cmd: WalletCommand,
    ) -> ApiResult<LedgerEntry> {
        let caller = self.caller(ctx).await?;
        check_description(&cmd.description)?;
        let wallet = self
            .load_wallet_fresh(&cmd.wallet_id)
            .await?
            .ok_or_else(ledger::wallet_not_found)?;
        let own = Resource {
            id: Some(&wallet.id),
            owner: Some(&wallet.user_id),
            tenant: Some(&wallet.tenant_id),
        };
        if wallet.user_id != caller.user_id || !ctx.can("wallet", "withdraw", own) {
            return Err(ledger::wallet_not_found());
        }
        let amount_text = cmd.amount.to_string();
        let key = IdempotencyKey::new(
            &caller.user_id,
            cmd.idempotency_key.as_deref(),
            "withdraw",
            &[
                &cmd.wallet_id,
                &amount_text,
                cmd.description.as_deref().unwrap_or(""),
            ],
        )?;
        let ttl = self.inner.policy.idempotency_ttl;
        let lease = millis(self.inner.policy.withdrawal_lease);
        let turn = self
            .inner
            .gate
            .enter(&[(&wallet.user_id, &wallet.currency)])
            .await?;
        let outcome = self
            .run_tx(|tx| {
                let (cmd, key) = (&cmd, &key);
                Box::pin(async move {
                    let now = Utc::now();
                    if let Some(key) = key {
                        if let Some(stored) = key.lookup(tx, now).await? {
                            return Ok(Err(stored));
                        }
                    }
                    let withdrawal_id = uuid::Uuid::now_v7().to_string();
                    let cause = Cause {
                        kind: TransactionType::Withdrawal,
                        object_id: Some(&withdrawal_id),
                        object_model: Some("Withdrawal"),
                        description: cmd.description.as_deref(),
                    };
                    let leg = Leg {
                        balance_type: BalanceType::Balance,
                        direction: EntryDirection::Debit,
                        amount: cmd.amount,
                    };
                    let filter = Filter::id(&cmd.wallet_id);
                    let Some((wallet, mut entries)) = ledger::apply_with_lock(
                        tx,
                        filter.clone(),
                        &[leg],
                        cmd.amount.minor(),
                        &cause,
                        now,
                    )
                    .await?
                    else {
                        return Err(ledger::debit_refusal(tx, &filter).await?);
                    };
                    let entry = entries.remove(0);
                    let withdrawal = Withdrawal {
                        id: withdrawal_id.clone(),
                        wallet_id: wallet.id.clone(),
                        user_id: wallet.user_id.clone(),
                        tenant_id: wallet.tenant_id.clone(),
                        currency: wallet.currency.clone(),
                        amount: cmd.amount.minor(),
                        status: WithdrawalStatus::Pending,
                        transaction_id: entry.id.clone(),
                        reversal_id: None,
                        payout_reference: None,
                        failure: None,
                        stale_at: now.timestamp_millis().saturating_add(lease),
                        description: cmd.description.clone(),
                        created_at: now,
                        settled_at: None,
                    };
                    tx.insert(WITHDRAWALS, to_document(&withdrawal)?).await?;
                    let updated = wallet_updated(&wallet);
                    stage(
                        tx,
                        &[event(&wallet.tenant_id, Some(&wallet.user_id), &updated)?],
                    )
                    .await?;
                    if let Some(key) = key {
                        let result = serde_json::to_value(StoredResult { id: withdrawal_id })
                            .map_err(ApiError::internal)?;
                        key.record(tx, result, now, ttl).await?;
                    }
                    Ok(Ok((wallet, withdrawal, entry)))
                })
            })
            .await?;
        drop(turn);
        let (wallet, withdrawal, entry) = match outcome {
            Ok(locked) => locked,
            Err(stored) => return self.replayed_withdrawal(stored).await,
        };
        self.committed(std::slice::from_ref(&wallet)).await;
        // A crash here leaves a PENDING withdrawal for recovery.
        self.fault(fault_points::WITHDRAW_AFTER_LOCK)
            .map_err(|f| match f {
                Failure::Api(err) => err,
                Failure::Race => ApiError::internal("unexpected race"),
            })?;
        let paid = self.pay_with_heartbeat(&withdrawal).await;
        let failure = paid.as_ref().err().map(ToString::to_string);
        self.settle(&withdrawal, paid).await?;
        match failure {
            None => Ok(entry),
            Some(reason) => Err(payout_failed(&reason)),
        }
    }

    async fn load_wallet_fresh(&self, id: &str) -> ApiResult<Option<crate::store::Wallet>> {
        let doc = self.inner.db.get(crate::store::WALLETS, id).await?;
        doc.map(|d| from_document(d).map_err(ApiError::from))
            .transpose()
    }

    async fn replayed_withdrawal(&self, stored: serde_json::Value) -> ApiResult<LedgerEntry> {
        let stored: StoredResult = serde_json::from_value(stored).map_err(ApiError::internal)?;
        let withdrawal: Withdrawal = from_document(
            self.inner
                .db
                .get(WITHDRAWALS, &stored.id)
                .await?
                .ok_or_else(|| ApiError::internal("an idempotent result points at nothing"))?,
        )?;
        if withdrawal.status == WithdrawalStatus::Failed {
            return Err(payout_failed(
                withdrawal.failure.as_deref().unwrap_or("unknown"),
            ));
        }
        let doc = self
            .inner
            .db
            .get(TRANSACTIONS, &withdrawal.transaction_id)
            .await?
            .ok_or_else(|| ApiError::internal("a withdrawal without its entry"))?;
        Ok(from_document(doc)?)
    }

    /// Calls the provider while pushing the withdrawal's `staleAt` forward,
    /// so recovery leaves a live payout alone.
    async fn pay_with_heartbeat(
        &self,
        withdrawal: &Withdrawal,
    ) -> Result<PayoutReceipt, PayoutError> {
        let request = PayoutRequest {
            withdrawal_id: withdrawal.id.clone(),
            user_id: withdrawal.user_id.clone(),
            wallet_id: withdrawal.wallet_id.clone(),
            amount: withdrawal.amount,
            currency: withdrawal.currency.clone(),
        };
        let lease = self.inner.policy.withdrawal_lease;
        let pay = self.inner.payouts.pay(&request);
        tokio::pin!(pay);
        let mut beat = tokio::time::interval((lease / 3).max(Duration::from_millis(10)));
        beat.tick().await;
        loop {
            tokio::select! {
                result = &mut pay => return result,
                _ = beat.tick() => {
                    let stale_at = Utc::now().timestamp_millis().saturating_add(millis(lease));
                    let pending = Filter::id(&withdrawal.id).eq("status", "PENDING");
                    if let Err(err) = self
                        .inner
                        .db
                        .update_one(WITHDRAWALS, &pending, &Update::new().set("staleAt", stale_at))
                        .await
                    {
                        tracing::warn!(error = %err, withdrawal_id = %withdrawal.id, "withdrawal heartbeat failed");
                    }
                }
            }
        }
    }

    /// Settles a pending withdrawal with the payout's outcome; a no-op when
    /// it is settled already.
    async fn settle(
        &self,
        withdrawal: &Withdrawal,
        paid: Result<PayoutReceipt, PayoutError>,
    ) -> ApiResult<()> {
        let turn = self
            .inner
            .gate
            .enter(&[(&withdrawal.user_id, &withdrawal.currency)])
            .await?;
        let settled = self
            .run_tx(|tx| {
                let paid = &paid;
                Box::pin(async move {
                    let now = Utc::now();
                    let pending = Filter::id(&withdrawal.id).eq("status", "PENDING");
                    let wallet_filter = Filter::id(&withdrawal.wallet_id);
                    let amount = Amount::positive(withdrawal.amount)?;
                    let (wallet, completed) = match paid {
                        Ok(receipt) => {
                            let done = Update::new()
                                .set("status", "COMPLETED")
                                .set("payoutReference", receipt.reference.as_str())
                                .set("settledAt", now.to_rfc3339());
                            if tx.update_one(WITHDRAWALS, &pending, &done).await?.is_none() {
                                return Ok(None);
                            }
                            let release = Update::new()
                                .inc("lockedBalance", -amount.minor())
                                .inc("version", 1)
                                .set("updatedAt", now.to_rfc3339());
                            let filter = wallet_filter.gte("lockedBalance", amount.minor());
                            let doc = tx
                                .update_one(crate::store::WALLETS, &filter, &release)
                                .await?
                                .ok_or_else(|| {
                                    ApiError::internal("locked balance below a pending withdrawal")
                                })?;
                            let wallet: crate::store::Wallet = from_document(doc)?;
                            let completed = WithdrawalCompleted {
                                transaction_id: withdrawal.transaction_id.clone(),
                                wallet_id: withdrawal.wallet_id.clone(),
                                user_id: withdrawal.user_id.clone(),
                                currency: withdrawal.currency.clone(),
                                amount: withdrawal.amount,
                            };
                            let owner = Some(withdrawal.user_id.as_str());
                            (
                                wallet,
                                Some(event(&withdrawal.tenant_id, owner, &completed)?),
                            )
                        }
                        Err(err) => {
                            let cause = Cause {
                                kind: TransactionType::Reversal,
                                object_id: Some(&withdrawal.id),
                                object_model: Some("Withdrawal"),
                                description: Some("withdrawal reversed: payout failed"),
                            };
                            let leg = Leg {
                                balance_type: BalanceType::Balance,
                                direction: EntryDirection::Credit,
                                amount,
                            };
                            let Some((wallet, entries)) = ledger::apply_with_lock(
                                tx,
                                wallet_filter,
                                &[leg],
                                -amount.minor(),
                                &cause,
                                now,
                            )
                            .await?
                            else {
                                return Err(Failure::Api(ApiError::internal(
                                    "locked balance below a pending withdrawal",
                                )));
                            };
                            let failed = Update::new()
                                .set("status", "FAILED")
                                .set("failure", err.to_string())
                                .set("reversalId", entries[0].id.as_str())
                                .set("settledAt", now.to_rfc3339());
                            if tx
                                .update_one(WITHDRAWALS, &pending, &failed)
                                .await?
                                .is_none()
                            {
                                // Settled meanwhile: roll the reversal back.
                                return Err(Failure::Race);
                            }
                            (wallet, None)
                        }
                    };
                    let updated = wallet_updated(&wallet);
                    let updated = event(&wallet.tenant_id, Some(&wallet.user_id), &updated)?;
                    let events: Vec<_> = completed.into_iter().chain([updated]).collect();
                    stage(tx, &events).await?;
                    Ok(Some(wallet))
                })
            })
            .await?;
        drop(turn);
        if let Some(wallet) = settled {
            self.committed(std::slice::from_ref(&wallet)).await;
        }
        Ok(())
    }

    /// Finishes withdrawals whose owner stopped sending heartbeats: asks the
    /// provider again (idempotent by withdrawal id) and settles. Returns how
    /// many were settled.
    #[tracing::instrument(skip_all, err)]
    pub async fn recover_withdrawals(&self, limit: usize) -> ApiResult<usize> {
        let now = Utc::now().timestamp_millis();
        let stale = Filter::all().eq("status", "PENDING").lt("staleAt", now);
        let docs = self
            .inner
            .db
            .find(
                WITHDRAWALS,
                &stale,
                &FindOptions::sorted("staleAt", Direction::Asc).limit(limit),
            )
            .await?;
        let mut settled = 0;
        for doc in docs {
            let withdrawal: Withdrawal = from_document(doc)?;
            let lease = millis(self.inner.policy.withdrawal_lease);
            let claim = Filter::id(&withdrawal.id)
                .eq("status", "PENDING")
                .eq("staleAt", withdrawal.stale_at);
            let claimed = self
                .inner
                .db
                .update_one(
                    WITHDRAWALS,
                    &claim,
                    &Update::new().set(
                        "staleAt",
                        Utc::now().timestamp_millis().saturating_add(lease),
                    ),
                )
                .await?;
            if claimed.is_none() {
                continue;
            }
            tracing::warn!(withdrawal_id = %withdrawal.id, "recovering a stale withdrawal");
            let paid = self.pay_with_heartbeat(&withdrawal).await;
            self.settle(&withdrawal, paid).await?;
            settled += 1;
        }
        Ok(settled)
    }
}
