//! Reading wallets, ledger entries and transfers, with ownership checked
//! through the access engine (`wallet:read:own` vs `wallet:read:*`).

use service_core::access_engine::Resource;
use service_core::db::{
    from_document, paginate_union, Connection, Direction, Filter, FindOptions, PageArgs, PageQuery,
    ID,
};
use service_core::{ApiError, ApiResult, RequestContext};

use super::ledger::wallet_not_found;
use super::PaymentService;
use crate::store::{LedgerEntry, Transfer, Wallet, TRANSACTIONS, TRANSFERS, WALLETS};

/// One page of a listing, with the size of the whole listing.
#[derive(Clone, Debug)]
pub struct Page<T> {
    /// The page.
    pub connection: Connection<T>,
    /// How many items the whole listing holds.
    pub total_count: u64,
}

/// A page of transfers.
pub type TransferPage = Page<Transfer>;

fn owned_by<'a>(id: &'a str, owner: &'a str, tenant: &'a str) -> Resource<'a> {
    Resource {
        id: Some(id),
        owner: Some(owner),
        tenant: Some(tenant),
    }
}

impl PaymentService {
    /// A wallet by id, from the cache when there (the database is the
    /// truth: the cache only ever holds what a commit wrote).
    pub(super) async fn load_wallet(&self, id: &str) -> ApiResult<Option<Wallet>> {
        let key = Self::cache_key(id);
        if let Some(wallet) = self.inner.cache.get::<Wallet>(&key).await {
            return Ok(Some(wallet));
        }
        let Some(doc) = self.inner.db.get(WALLETS, id).await? else {
            return Ok(None);
        };
        let wallet: Wallet = from_document(doc)?;
        self.cache_wallet(&wallet).await;
        Ok(Some(wallet))
    }

    /// A wallet the caller may read: their own, or any with `wallet:read:*`.
    /// Unknown and unreadable wallets are both `MSPaymentWalletNotFound`, so
    /// ids cannot be probed.
    pub async fn wallet(&self, ctx: &RequestContext, id: &str) -> ApiResult<Wallet> {
        ctx.user()?;
        let wallet = self.load_wallet(id).await?.ok_or_else(wallet_not_found)?;
        if ctx.can(
            "wallet",
            "read",
            owned_by(&wallet.id, &wallet.user_id, &wallet.tenant_id),
        ) {
            Ok(wallet)
        } else {
            Err(wallet_not_found())
        }
    }

    /// The caller's wallets.
    pub async fn my_wallets(&self, ctx: &RequestContext) -> ApiResult<Vec<Wallet>> {
        let user = ctx.user()?;
        self.wallets_of_user(&user.user_id).await
    }

    async fn wallets_of_user(&self, user_id: &str) -> ApiResult<Vec<Wallet>> {
        let docs = self
            .inner
            .db
            .find(
                WALLETS,
                &Filter::all().eq("userId", user_id),
                &FindOptions::sorted("currency", Direction::Asc),
            )
            .await?;
        docs.into_iter()
            .map(|d| from_document(d).map_err(ApiError::from))
            .collect()
    }

    /// `User.wallets`: a user's wallets, for themselves or `wallet:read:*`.
    pub async fn user_wallets(
        &self,
        ctx: &RequestContext,
        user_id: &str,
    ) -> ApiResult<Vec<Wallet>> {
        let caller = ctx.user()?;
        let resource = Resource {
            id: None,
            owner: Some(user_id),
            tenant: Some(&caller.tenant_id),
        };
        ctx.require("wallet", "read", resource)?;
        self.wallets_of_user(user_id).await
    }

    /// Ledger entries, newest first: of `wallet_id` when given (readable by
    /// the caller), else of all the caller's wallets. The ledger is indexed
    /// by wallet only (one index entry fewer per movement); a user's listing
    /// merges the listings of their wallets, of which there is one per
    /// currency.
    pub async fn transactions(
        &self,
        ctx: &RequestContext,
        wallet_id: Option<&str>,
        args: PageArgs,
    ) -> ApiResult<Page<LedgerEntry>> {
        let user = ctx.user()?;
        let query = args.validate()?;
        let wallets = match wallet_id {
            Some(id) => vec![self.wallet(ctx, id).await?],
            None => self.wallets_of_user(&user.user_id).await?,
        };
        let filters: Vec<Filter> = wallets
            .into_iter()
            .map(|wallet| Filter::all().eq("walletId", wallet.id))
            .collect();
        self.newest_first(TRANSACTIONS, &filters, &query).await
    }

    /// A ledger entry the caller may read.
    pub async fn transaction(
        &self,
        ctx: &RequestContext,
        id: &str,
    ) -> ApiResult<Option<LedgerEntry>> {
        ctx.user()?;
        let Some(doc) = self.inner.db.get(TRANSACTIONS, id).await? else {
            return Ok(None);
        };
        let entry: LedgerEntry = from_document(doc)?;
        match self.wallet(ctx, &entry.wallet_id).await {
            Ok(_) => Ok(Some(entry)),
            Err(_) => Ok(None),
        }
    }

    /// A transfer the caller sent or received, or any with `transfer:read:*`.
    pub async fn transfer_by_id(
        &self,
        ctx: &RequestContext,
        id: &str,
    ) -> ApiResult<Option<Transfer>> {
        let caller = ctx.user()?;
        let Some(doc) = self.inner.db.get(TRANSFERS, id).await? else {
            return Ok(None);
        };
        let transfer: Transfer = from_document(doc)?;
        let party =
            transfer.from_user_id == caller.user_id || transfer.to_user_id == caller.user_id;
        let any = ctx.can(
            "transfer",
            "read",
            Resource {
                id: Some(&transfer.id),
                owner: Some(&transfer.from_user_id),
                tenant: Some(&caller.tenant_id),
            },
        );
        Ok((party || any).then_some(transfer))
    }

    /// The caller's transfers, sent or received, newest first: the sent
    /// and the received listings merged.
    pub async fn transfers(&self, ctx: &RequestContext, args: PageArgs) -> ApiResult<TransferPage> {
        let caller = ctx.user()?;
        let query = args.validate()?;
        let filters = [
            Filter::all().eq("fromUserId", caller.user_id.as_str()),
            Filter::all().eq("toUserId", caller.user_id.as_str()),
        ];
        self.newest_first(TRANSFERS, &filters, &query).await
    }

    /// One page of the documents matching any of `filters`, newest first,
    /// with the size of the whole listing. The filters never overlap here
    /// (a wallet has one owner; self-transfers are refused), so the total is
    /// the sum of their counts.
    async fn newest_first<T: serde::de::DeserializeOwned>(
        &self,
        collection: &str,
        filters: &[Filter],
        query: &PageQuery,
    ) -> ApiResult<Page<T>> {
        let db = &self.inner.db;
        let page = paginate_union(db, collection, filters, ID, Direction::Desc, query).await?;
        let mut total_count = 0;
        for filter in filters {
            total_count += db.count(collection, filter).await?;
        }
        Ok(Page {
            connection: page.try_map(from_document)?,
            total_count,
        })
    }
}
