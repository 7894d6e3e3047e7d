//! Writing the ledger: every balance change goes through [`apply`], which
//! changes the wallet with a conditional update and returns the entry that
//! records it, so a balance can never move without its ledger entry.

use chrono::{DateTime, Utc};
use service_core::db::{from_document, to_document, Filter, StoreError, Transaction, Update};
use service_core::ApiError;

use super::Failure;
use crate::codes;
use crate::domain::money::{Amount, Currency};
use crate::store::{
    BalanceType, EntryDirection, LedgerEntry, TransactionType, Wallet, TRANSACTIONS, WALLETS,
};

/// What a movement records besides the amount.
#[derive(Clone, Debug)]
pub(crate) struct Cause<'a> {
    pub(crate) kind: TransactionType,
    pub(crate) object_id: Option<&'a str>,
    pub(crate) object_model: Option<&'static str>,
    pub(crate) description: Option<&'a str>,
}

/// One change of one balance.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Leg {
    pub(crate) balance_type: BalanceType,
    pub(crate) direction: EntryDirection,
    pub(crate) amount: Amount,
}

/// Applies `legs` to the wallet matching `wallet` in one conditional update
/// (a debit requires the balance to cover it) and writes one ledger entry
/// per leg. `Ok(None)` when no wallet matched, which for a debit means the
/// wallet is missing or the balance is short.
pub(crate) async fn apply(
    tx: &mut Transaction<'_>,
    wallet: Filter,
    legs: &[Leg],
    cause: &Cause<'_>,
    now: DateTime<Utc>,
) -> Result<Option<(Wallet, Vec<LedgerEntry>)>, Failure> {
    apply_with_lock(tx, wallet, legs, 0, cause, now).await
}

/// [`apply`], also changing `lockedBalance` by `locked_delta` (a release
/// requires the lock to cover it).
pub(crate) async fn apply_with_lock(
    tx: &mut Transaction<'_>,
    wallet: Filter,
    legs: &[Leg],
    locked_delta: i64,
    cause: &Cause<'_>,
    now: DateTime<Utc>,
) -> Result<Option<(Wallet, Vec<LedgerEntry>)>, Failure> {
    let mut filter = wallet;
    let mut update = Update::new()
        .inc("version", 1)
        .set("updatedAt", now.to_rfc3339());
    if locked_delta != 0 {
        if locked_delta < 0 {
            filter = filter.gte("lockedBalance", -locked_delta);
        }
        update = update.inc("lockedBalance", locked_delta);
    }
    // Several legs may touch one field (never today, but the sum is what
    // counts): fold them per field first.
    let mut deltas: Vec<(BalanceType, i64)> = Vec::new();
    for leg in legs {
        let signed = match leg.direction {
            EntryDirection::Credit => leg.amount.minor(),
            EntryDirection::Debit => -leg.amount.minor(),
        };
        match deltas.iter_mut().find(|(t, _)| *t == leg.balance_type) {
            Some((_, d)) => {
                *d = d
                    .checked_add(signed)
                    .ok_or_else(|| Failure::Api(ApiError::internal("movement overflows")))?;
            }
            None => deltas.push((leg.balance_type, signed)),
        }
    }
    for (balance_type, delta) in &deltas {
        if *delta < 0 {
            filter = filter.gte(balance_type.field(), -delta);
        }
        update = update.inc(balance_type.field(), *delta);
    }
    let Some(doc) = tx.update_one(WALLETS, &filter, &update).await? else {
        return Ok(None);
    };
    let wallet: Wallet = from_document(doc)?;
    let mut entries = Vec::with_capacity(legs.len());
    for leg in legs {
        let balance_after = match leg.balance_type {
            BalanceType::Balance => wallet.balance,
            BalanceType::Bonus => wallet.bonus_balance,
        };
        let entry = LedgerEntry {
            id: uuid::Uuid::now_v7().to_string(),
            wallet_id: wallet.id.clone(),
            user_id: wallet.user_id.clone(),
            kind: cause.kind,
            direction: leg.direction,
            balance_type: leg.balance_type,
            amount: leg.amount.minor(),
            balance_after,
            charge: 0,
            object_id: cause.object_id.map(str::to_owned),
            object_model: cause.object_model.map(str::to_owned),
            description: cause.description.map(str::to_owned),
            seq: wallet.version,
            created_at: now,
        };
        tx.insert(TRANSACTIONS, to_document(&entry)?).await?;
        entries.push(entry);
    }
    Ok(Some((wallet, entries)))
}

/// The filter selecting `user`'s wallet in `currency`.
pub(crate) fn by_owner(user_id: &str, currency: Currency) -> Filter {
    Filter::all()
        .eq("userId", user_id)
        .eq("currency", currency.as_str())
}

/// `user`'s wallet in `currency`, creating it (empty) when missing. A
/// concurrent creation of the same wallet makes the request run again.
pub(crate) async fn find_or_create(
    tx: &mut Transaction<'_>,
    user_id: &str,
    tenant_id: &str,
    currency: Currency,
    now: DateTime<Utc>,
) -> Result<Wallet, Failure> {
    if let Some(doc) = tx.find_one(WALLETS, &by_owner(user_id, currency)).await? {
        return Ok(from_document(doc)?);
    }
    let wallet = new_wallet(user_id, tenant_id, currency, now);
    match tx.insert(WALLETS, to_document(&wallet)?).await {
        Ok(()) => Ok(wallet),
        Err(StoreError::Duplicate { .. }) => Err(Failure::Race),
        Err(err) => Err(err.into()),
    }
}

/// An empty wallet.
pub(crate) fn new_wallet(
    user_id: &str,
    tenant_id: &str,
    currency: Currency,
    now: DateTime<Utc>,
) -> Wallet {
    Wallet {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: user_id.to_owned(),
        tenant_id: tenant_id.to_owned(),
        currency: currency.as_str().to_owned(),
        balance: 0,
        bonus_balance: 0,
        locked_balance: 0,
        version: 0,
        created_at: now,
        updated_at: now,
    }
}

/// Why a debit of `wallet` did not apply: the wallet is missing, or its
/// balance is short.
pub(crate) async fn debit_refusal(
    tx: &mut Transaction<'_>,
    wallet: &Filter,
) -> Result<Failure, Failure> {
    Ok(match tx.find_one(WALLETS, wallet).await? {
        None => Failure::Api(wallet_not_found()),
        Some(_) => Failure::Api(ApiError::new(
            codes::INSUFFICIENT_BALANCE,
            "the balance does not cover this amount",
        )),
    })
}

/// `MSPaymentWalletNotFound`.
pub(crate) fn wallet_not_found() -> ApiError {
    ApiError::new(codes::WALLET_NOT_FOUND, "no such wallet")
}
