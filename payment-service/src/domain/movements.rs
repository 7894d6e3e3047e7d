//! Creating wallets, deposits and transfers.

use chrono::Utc;
use serde_json::Value;
use service_core::access_engine::Resource;
use service_core::db::{from_document, to_document, Filter, StoreError};
use service_core::events::{DepositCompleted, TransferCompleted};
use service_core::{codes as core_codes, ApiError, ApiResult, RequestContext};

use super::idempotency::IdempotencyKey;
use super::ledger::{self, Cause, Leg};
use super::{event, fault_points, stage, wallet_updated, Failure, PaymentService, StoredResult};
use crate::codes;
use crate::domain::money::{Amount, Currency};
use crate::store::{
    BalanceType, EntryDirection, LedgerEntry, TransactionType, Transfer, TransferStatus, Wallet,
    TRANSACTIONS, TRANSFERS, WALLETS,
};

/// Longest description kept.
pub(crate) const MAX_DESCRIPTION: usize = 500;

/// The validated input of `deposit` and `withdraw`: money into or out of
/// one wallet.
#[derive(Clone, Debug)]
pub struct WalletCommand {
    /// The credited or debited wallet.
    pub wallet_id: String,
    /// How much.
    pub amount: Amount,
    /// The caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// Free text.
    pub description: Option<String>,
}

/// `transfer`'s validated input.
#[derive(Clone, Debug)]
pub struct TransferCommand {
    /// The recipient.
    pub to_user_id: String,
    /// How much.
    pub amount: Amount,
    /// Which of the caller's wallets pays (and which of the recipient's receives).
    pub currency: Currency,
    /// The caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// Free text.
    pub description: Option<String>,
}

/// Refuses an over-long description.
pub(crate) fn check_description(description: &Option<String>) -> ApiResult<()> {
    match description {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(ApiError::validation(
            "description",
            format!("at most {MAX_DESCRIPTION} characters"),
        )),
        _ => Ok(()),
    }
}

impl PaymentService {
    /// Opens the caller's wallet in `currency`; `MSPaymentWalletExists` if
    /// they have one.
    #[tracing::instrument(skip_all, fields(currency = %currency), err)]
    pub async fn create_wallet(
        &self,
        ctx: &RequestContext,
        currency: Currency,
    ) -> ApiResult<Wallet> {
        let caller = self.caller(ctx).await?;
        ctx.require(
            "wallet",
            "create",
            Resource {
                id: None,
                owner: Some(&caller.user_id),
                tenant: Some(&caller.tenant_id),
            },
        )?;
        let wallet = ledger::new_wallet(&caller.user_id, &caller.tenant_id, currency, Utc::now());
        match self.inner.db.insert(WALLETS, to_document(&wallet)?).await {
            Ok(()) => {
                self.cache_wallet(&wallet).await;
                Ok(wallet)
            }
            Err(StoreError::Duplicate { .. }) => Err(ApiError::new(
                codes::WALLET_EXISTS,
                format!("you already have a {currency} wallet"),
            )),
            Err(err) => Err(err.into()),
        }
    }

    /// Credits a wallet with money from outside; needs `wallet:deposit:*`.
    #[tracing::instrument(skip_all, fields(wallet_id = %cmd.wallet_id), err)]
    pub async fn deposit(
        &self,
        ctx: &RequestContext,
        cmd: WalletCommand,
    ) -> ApiResult<LedgerEntry> {
        let caller = self.caller(ctx).await?;
        // A collection-level check: the permission is `wallet:deposit:*`.
        ctx.require("wallet", "deposit", Resource::any())?;
        check_description(&cmd.description)?;
        let amount_text = cmd.amount.to_string();
        let key = IdempotencyKey::new(
            &caller.user_id,
            cmd.idempotency_key.as_deref(),
            "deposit",
            &[
                &cmd.wallet_id,
                &amount_text,
                cmd.description.as_deref().unwrap_or(""),
            ],
        )?;
        let ttl = self.inner.policy.idempotency_ttl;
        // The owner and currency of a wallet never change, so a cached copy
        // names the right turn; a missing wallet is reported by the
        // transaction.
        let owner = if self.inner.gate.queues() {
            self.load_wallet(&cmd.wallet_id).await?
        } else {
            None
        };
        let wallets: Vec<(&str, &str)> = owner
            .iter()
            .map(|w| (w.user_id.as_str(), w.currency.as_str()))
            .collect();
        let turn = self.inner.gate.enter(&wallets).await?;
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
                    let cause = Cause {
                        kind: TransactionType::Deposit,
                        object_id: None,
                        object_model: None,
                        description: cmd.description.as_deref(),
                    };
                    let leg = Leg {
                        balance_type: BalanceType::Balance,
                        direction: EntryDirection::Credit,
                        amount: cmd.amount,
                    };
                    let Some((wallet, mut entries)) =
                        ledger::apply(tx, Filter::id(&cmd.wallet_id), &[leg], &cause, now).await?
                    else {
                        return Err(Failure::Api(ledger::wallet_not_found()));
                    };
                    let entry = entries.remove(0);
                    let (tenant, owner) =
                        (wallet.tenant_id.as_str(), Some(wallet.user_id.as_str()));
                    let completed = DepositCompleted {
                        transaction_id: entry.id.clone(),
                        wallet_id: wallet.id.clone(),
                        user_id: wallet.user_id.clone(),
                        currency: wallet.currency.clone(),
                        amount: entry.amount,
                        balance_after: entry.balance_after,
                    };
                    stage(
                        tx,
                        &[
                            event(tenant, owner, &completed)?,
                            event(tenant, owner, &wallet_updated(&wallet))?,
                        ],
                    )
                    .await?;
                    if let Some(key) = key {
                        let result = serde_json::to_value(StoredResult {
                            id: entry.id.clone(),
                        })
                        .map_err(ApiError::internal)?;
                        key.record(tx, result, now, ttl).await?;
                    }
                    Ok(Ok((wallet, entry)))
                })
            })
            .await?;
        drop(turn);
        match outcome {
            Ok((wallet, entry)) => {
                self.committed(std::slice::from_ref(&wallet)).await;
                Ok(entry)
            }
            Err(stored) => self.replayed_entry(stored).await,
        }
    }

    /// The ledger entry an idempotent request stored as its result.
    pub(crate) async fn replayed_entry(&self, stored: Value) -> ApiResult<LedgerEntry> {
        let stored: StoredResult = serde_json::from_value(stored).map_err(ApiError::internal)?;
        let doc = self
            .inner
            .db
            .get(TRANSACTIONS, &stored.id)
            .await?
            .ok_or_else(|| ApiError::internal("an idempotent result points at nothing"))?;
        Ok(from_document(doc)?)
    }

    /// Moves money from the caller's wallet in `currency` to the
    /// recipient's (created on first receipt), in one transaction.
    #[tracing::instrument(skip_all, fields(to_user_id = %cmd.to_user_id, amount = %cmd.amount), err)]
    pub async fn transfer(
        &self,
        ctx: &RequestContext,
        cmd: TransferCommand,
    ) -> ApiResult<Transfer> {
        let caller = self.caller(ctx).await?;
        ctx.require(
            "transfer",
            "create",
            Resource {
                id: None,
                owner: Some(&caller.user_id),
                tenant: Some(&caller.tenant_id),
            },
        )?;
        check_description(&cmd.description)?;
        if cmd.to_user_id == caller.user_id {
            return Err(ApiError::new(
                codes::SELF_TRANSFER,
                "you cannot transfer to yourself",
            ));
        }
        let Some(recipient_tenant) = self.known_user(&cmd.to_user_id).await? else {
            return Err(
                ApiError::new(codes::RECIPIENT_NOT_FOUND, "no such recipient")
                    .with_extension("field", "toUserId"),
            );
        };
        let amount_text = cmd.amount.to_string();
        let key = IdempotencyKey::new(
            &caller.user_id,
            cmd.idempotency_key.as_deref(),
            "transfer",
            &[
                &cmd.to_user_id,
                &amount_text,
                cmd.currency.as_str(),
                cmd.description.as_deref().unwrap_or(""),
            ],
        )?;
        let ttl = self.inner.policy.idempotency_ttl;
        let currency = cmd.currency.as_str();
        let turn = self
            .inner
            .gate
            .enter(&[(&caller.user_id, currency), (&cmd.to_user_id, currency)])
            .await?;
        let outcome = self
            .run_tx(|tx| {
                let (cmd, key, caller, recipient_tenant) = (&cmd, &key, &caller, &recipient_tenant);
                Box::pin(async move {
                    let now = Utc::now();
                    if let Some(key) = key {
                        if let Some(stored) = key.lookup(tx, now).await? {
                            return Ok(Err(stored));
                        }
                    }
                    let transfer_id = uuid::Uuid::now_v7().to_string();
                    let out_cause = Cause {
                        kind: TransactionType::TransferOut,
                        object_id: Some(&transfer_id),
                        object_model: Some("Transfer"),
                        description: cmd.description.as_deref(),
                    };
                    let debit = Leg {
                        balance_type: BalanceType::Balance,
                        direction: EntryDirection::Debit,
                        amount: cmd.amount,
                    };
                    let from_filter = ledger::by_owner(&caller.user_id, cmd.currency);
                    let Some((from, _)) =
                        ledger::apply(tx, from_filter.clone(), &[debit], &out_cause, now).await?
                    else {
                        return Err(ledger::debit_refusal(tx, &from_filter).await?);
                    };
                    self.fault(fault_points::TRANSFER_AFTER_DEBIT)?;
                    let in_cause = Cause {
                        kind: TransactionType::TransferIn,
                        ..out_cause.clone()
                    };
                    let credit = Leg {
                        direction: EntryDirection::Credit,
                        ..debit
                    };
                    // Credit the recipient's wallet where it exists (one
                    // statement); create it on first receipt.
                    let to_filter = ledger::by_owner(&cmd.to_user_id, cmd.currency);
                    let credited = ledger::apply(tx, to_filter, &[credit], &in_cause, now).await?;
                    let (to, _) = match credited {
                        Some(done) => done,
                        None => {
                            let created = ledger::find_or_create(
                                tx,
                                &cmd.to_user_id,
                                recipient_tenant,
                                cmd.currency,
                                now,
                            )
                            .await?;
                            ledger::apply(tx, Filter::id(&created.id), &[credit], &in_cause, now)
                                .await?
                                .ok_or(Failure::Race)?
                        }
                    };
                    let transfer = Transfer {
                        id: transfer_id.clone(),
                        from_user_id: caller.user_id.clone(),
                        to_user_id: cmd.to_user_id.clone(),
                        from_wallet_id: from.id.clone(),
                        to_wallet_id: to.id.clone(),
                        amount: cmd.amount.minor(),
                        currency: cmd.currency.as_str().to_owned(),
                        status: TransferStatus::Completed,
                        description: cmd.description.clone(),
                        created_at: now,
                        completed_at: Some(now),
                    };
                    tx.insert(TRANSFERS, to_document(&transfer)?).await?;
                    let completed = TransferCompleted {
                        transfer_id: transfer.id.clone(),
                        from_user_id: transfer.from_user_id.clone(),
                        to_user_id: transfer.to_user_id.clone(),
                        from_wallet_id: transfer.from_wallet_id.clone(),
                        to_wallet_id: transfer.to_wallet_id.clone(),
                        amount: transfer.amount,
                        currency: transfer.currency.clone(),
                        description: transfer.description.clone(),
                    };
                    let updated =
                        |w: &Wallet| event(&w.tenant_id, Some(&w.user_id), &wallet_updated(w));
                    stage(
                        tx,
                        &[
                            event(&caller.tenant_id, Some(&caller.user_id), &completed)?,
                            updated(&from)?,
                            updated(&to)?,
                        ],
                    )
                    .await?;
                    if let Some(key) = key {
                        let result = serde_json::to_value(StoredResult {
                            id: transfer.id.clone(),
                        })
                        .map_err(ApiError::internal)?;
                        key.record(tx, result, now, ttl).await?;
                    }
                    Ok(Ok((transfer, [from, to])))
                })
            })
            .await?;
        drop(turn);
        match outcome {
            Ok((transfer, wallets)) => {
                self.committed(&wallets).await;
                Ok(transfer)
            }
            Err(stored) => {
                let stored: StoredResult =
                    serde_json::from_value(stored).map_err(ApiError::internal)?;
                let doc = self
                    .inner
                    .db
                    .get(TRANSFERS, &stored.id)
                    .await?
                    .ok_or_else(|| {
                        ApiError::new(
                            core_codes::INTERNAL,
                            "an idempotent result points at nothing",
                        )
                    })?;
                Ok(from_document(doc)?)
            }
        }
    }
}
