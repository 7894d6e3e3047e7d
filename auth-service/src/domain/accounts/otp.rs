//! `requestOtp` and `verifyOtp` for the signed-in user.
//!
//! A request draws a code, stores only its HMAC (replacing the user's
//! previous code for that purpose) and stages `auth.otp.requested` in the
//! same transaction, so the notification service delivers exactly the codes
//! that exist. A verification spends one try before comparing, and a match
//! marks the code used with a conditional write: of two concurrent correct
//! verifications exactly one succeeds.

use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use service_core::db::{to_document, Entity as _, Filter, StoreError, Update};
use service_core::events::{DomainEvent as _, OtpRequested, Outbox};
use service_core::resilience::RateLimiter;
use service_core::{ApiError, ApiResult, RequestContext};

use super::{invalid_token, AuthService};
use crate::codes;
use crate::domain::otp::{self, OtpSecret, Purpose};
use crate::store::OtpCode;

/// One-time code lifetime, tries and request limit.
#[derive(Clone, Debug)]
pub struct OtpPolicy {
    /// How long a code is accepted.
    pub ttl: Duration,
    /// Verifications a code allows (right or wrong) before it is dead.
    pub max_tries: u32,
    /// Requests per user (all purposes together), shared through Redis.
    pub limiter: RateLimiter,
}

fn invalid_otp() -> ApiError {
    ApiError::new(codes::INVALID_OTP, "Invalid or expired one-time code")
}

fn parse_purpose(raw: &str) -> ApiResult<Purpose> {
    Purpose::parse(raw).map_err(|err| ApiError::validation("purpose", err.to_string()))
}

fn otp_id(user_id: &str, purpose: &Purpose) -> String {
    format!("{user_id}:{}", purpose.as_str())
}

impl AuthService {
    /// Issues a new code for the caller and `purpose`, replacing the
    /// previous one, and has it delivered through `auth.otp.requested`.
    /// Over the request limit: `MSCoreRateLimited` with `retryAfterSeconds`.
    #[tracing::instrument(skip_all, fields(user_id))]
    pub async fn request_otp(&self, ctx: &RequestContext, purpose: &str) -> ApiResult<bool> {
        let principal = self.signed_in(ctx).await?;
        super::record_user(&principal.user_id);
        let purpose = parse_purpose(purpose)?;
        self.otp.limiter.check(&principal.user_id).await?;
        let user = self
            .store
            .users
            .get(&principal.user_id)
            .await?
            .ok_or_else(invalid_token)?;

        let code = OtpSecret::generate();
        let salt = otp::new_salt();
        let code_hash = otp::hash_code(&salt, &user.id, purpose.as_str(), code.expose())
            .ok_or_else(|| ApiError::internal("a fresh OTP salt did not decode"))?;
        let now = Utc::now();
        let expires_at =
            now + chrono::Duration::from_std(self.otp.ttl).unwrap_or(chrono::Duration::MAX);
        let stored = OtpCode {
            id: otp_id(&user.id, &purpose),
            user_id: user.id.clone(),
            purpose: purpose.as_str().to_owned(),
            salt,
            code_hash,
            expires_at,
            tries: 0,
            used_at: None,
            created_at: now,
        };
        let event = OtpRequested {
            user_id: user.id.clone(),
            email: user.email.clone(),
            purpose: purpose.as_str().to_owned(),
            code: code.expose().to_owned(),
            expires_at,
        }
        .to_event(&user.tenant_id, Some(&user.id))
        .map_err(ApiError::internal)?;
        let doc = to_document(&stored)?;
        let id = stored.id.as_str();
        self.store
            .otps
            .database()
            .transaction(|tx| {
                let doc = doc.clone();
                let event = &event;
                Box::pin(async move {
                    tx.delete_one(OtpCode::COLLECTION, &Filter::id(id)).await?;
                    tx.insert(OtpCode::COLLECTION, doc).await?;
                    Outbox::stage(tx, event).await
                })
            })
            .await
            .map_err(|err: StoreError| ApiError::from(err))?;
        self.outbox.wake();
        tracing::info!(%expires_at, "one-time code issued");
        Ok(true)
    }

    /// `true` when `code` is the caller's live code for `purpose`; the code
    /// is then spent. Wrong, expired, used or out of tries: `MSAuthInvalidOtp`.
    #[tracing::instrument(skip_all, fields(user_id))]
    pub async fn verify_otp(
        &self,
        ctx: &RequestContext,
        purpose: &str,
        code: &str,
    ) -> ApiResult<bool> {
        let principal = self.signed_in(ctx).await?;
        super::record_user(&principal.user_id);
        let purpose = parse_purpose(purpose)?;
        if !otp::is_code_shaped(code) {
            return Err(invalid_otp());
        }
        let id = otp_id(&principal.user_id, &purpose);
        // The try is spent before the comparison, so parallel guesses
        // cannot exceed the limit.
        let live = Filter::all()
            .eq("used_at", Value::Null)
            .lt("tries", i64::from(self.otp.max_tries));
        let Some(stored) = self
            .store
            .otps
            .update(&id, live, &Update::new().inc("tries", 1))
            .await?
        else {
            tracing::info!("one-time code refused: none live");
            return Err(invalid_otp());
        };
        let now = Utc::now();
        if stored.expires_at <= now {
            tracing::info!("one-time code refused: expired");
            return Err(invalid_otp());
        }
        if !otp::code_matches(
            &stored.salt,
            &stored.code_hash,
            &principal.user_id,
            purpose.as_str(),
            code,
        ) {
            tracing::info!(tries = stored.tries, "one-time code refused: wrong");
            return Err(invalid_otp());
        }
        let spend = Update::new().set("used_at", serde_json::to_value(now).unwrap_or(Value::Null));
        let unused = Filter::all().eq("used_at", Value::Null);
        if self.store.otps.update(&id, unused, &spend).await?.is_none() {
            // A concurrent verification of the same code got there first.
            return Err(invalid_otp());
        }
        tracing::info!("one-time code verified");
        Ok(true)
    }
}
