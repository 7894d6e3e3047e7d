//! Reading wallets, ledger entries and transfers, with ownership checked
//! through the access engine (`wallet:read:own` vs `wallet:read:*`).

use service_core::access_engine::Resource;
use service_core::db::{
    decode_cursor, encode_cursor, from_document, paginate, Connection, Direction, Edge, Filter,
    FindOptions, PageArgs, PageInfo, SortKey, ID,
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
    async fn load_wallet(&self, id: &str) -> ApiResult<Option<Wallet>> {
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
    /// the caller), else of all the caller's wallets.
    pub async fn transactions(
        &self,
        ctx: &RequestContext,
        wallet_id: Option<&str>,
        args: PageArgs,
    ) -> ApiResult<Page<LedgerEntry>> {
        let user = ctx.user()?;
        let query = args.validate()?;
        let filter = match wallet_id {
            Some(id) => {
                let wallet = self.wallet(ctx, id).await?;
                Filter::all().eq("walletId", wallet.id)
            }
            None => Filter::all().eq("userId", user.user_id.as_str()),
        };
        let page = paginate(
            &self.inner.db,
            TRANSACTIONS,
            &filter,
            ID,
            Direction::Desc,
            &query,
        )
        .await?;
        let total_count = self.inner.db.count(TRANSACTIONS, &filter).await?;
        Ok(Page {
            connection: page.try_map(from_document)?,
            total_count,
        })
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

    /// The caller's transfers, sent or received, newest first. Two keyset
    /// reads (sent, received) merged by id, so a page costs the same at any
    /// depth; a cursor is a transfer's position in that merged order.
    pub async fn transfers(&self, ctx: &RequestContext, args: PageArgs) -> ApiResult<TransferPage> {
        let caller = ctx.user()?;
        if args.last.is_some() || args.before.is_some() {
            return Err(ApiError::validation("last", "transfers page forward only"));
        }
        args.validate()?;
        let size = match args.first {
            None => service_core::db::DEFAULT_PAGE_SIZE,
            Some(n) => usize::try_from(n).unwrap_or(0),
        };
        let after = match args.after.as_deref() {
            Some(c) => Some(
                decode_cursor(c).ok_or_else(|| ApiError::validation("after", "invalid cursor"))?,
            ),
            None => None,
        };
        let mut options = FindOptions::sorted(ID, Direction::Desc).limit(size + 1);
        options.after = after.clone();
        let sent = Filter::all().eq("fromUserId", caller.user_id.as_str());
        let received = Filter::all().eq("toUserId", caller.user_id.as_str());
        let mut docs = self.inner.db.find(TRANSFERS, &sent, &options).await?;
        docs.extend(self.inner.db.find(TRANSFERS, &received, &options).await?);
        let mut transfers: Vec<Transfer> = docs
            .into_iter()
            .map(from_document)
            .collect::<Result<_, _>>()?;
        transfers.sort_by(|a, b| b.id.cmp(&a.id));
        transfers.dedup_by(|a, b| a.id == b.id);
        let more = transfers.len() > size;
        transfers.truncate(size);
        let edges: Vec<Edge<Transfer>> = transfers
            .into_iter()
            .map(|t| Edge {
                cursor: encode_cursor(&SortKey {
                    value: serde_json::Value::String(t.id.clone()),
                    id: t.id.clone(),
                }),
                node: t,
            })
            .collect();
        let total_count = self.inner.db.count(TRANSFERS, &sent).await?
            + self.inner.db.count(TRANSFERS, &received).await?;
        Ok(Page {
            connection: Connection {
                page_info: PageInfo {
                    has_next_page: more,
                    has_previous_page: after.is_some(),
                    start_cursor: edges.first().map(|e| e.cursor.clone()),
                    end_cursor: edges.last().map(|e| e.cursor.clone()),
                },
                edges,
            },
            total_count,
        })
    }
}
