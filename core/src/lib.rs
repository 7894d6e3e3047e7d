//! `service-core`: the kit every service of the platform is built from.
//!
//! A service takes its typed configuration from [`config`], reports failures
//! to clients through [`ApiError`] and its registered codes, reads the caller
//! from a [`RequestContext`] checked by the access engine, signs and verifies
//! tokens with [`auth`], wraps outbound calls in [`resilience`] policies and
//! serves its GraphQL schema with [`server`], which adds health, metrics,
//! request ids, a body limit and graceful shutdown.
//!
//! State lives in [`db`] (MongoDB, or an embedded SQLite store with the same
//! semantics) behind the multi-level [`cache`] and the [`redis`] accessor.
//! Services tell each other what happened through [`events`] (Redis Streams
//! or in-process, with a transactional outbox) and [`webhooks`]; work that
//! spans steps runs as a [`saga`], and work whose owner went silent is
//! finished by [`recovery`].
#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
pub mod context;
pub mod db;
pub mod error;
pub mod events;
pub mod graphql;
pub mod recovery;
pub mod redis;
pub mod resilience;
pub mod saga;
pub mod server;
pub mod telemetry;
pub mod webhooks;

/// Every process of the platform allocates through mimalloc: a request
/// allocates and frees many small buffers (JSON, documents, headers) from
/// several threads, where the system allocator spent about a seventh of a
/// transfer's CPU time (`docs/benchmarks.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use access_engine;
pub use context::{Principal, RequestContext, RequestId};
pub use error::{codes, ApiError, ApiResult, ErrorCode, ErrorRegistry};
