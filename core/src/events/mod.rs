//! Domain events: what happened, told to whoever cares, at least once.
//!
//! A service announces a fact (`payment.transfer.completed`) with
//! [`EventBus::emit`]; other parts of the system react to it through
//! [`EventBus::on`] and [`EventBus::on_pattern`] without the emitter knowing
//! them. Two transports carry events with the same semantics:
//!
//! * **Redis Streams** ([`EventBus::redis_streams`]) between services: one
//!   stream per event type, one consumer group per subscriber group, acks
//!   only after the handler succeeded, abandoned messages claimed by another
//!   consumer, dead letters after N attempts.
//! * **In-process** ([`EventBus::in_process`]) for the one-process mode:
//!   bounded channels and tokio tasks, nothing survives a restart.
//!
//! Delivery is *at least once*: a handler may see an event again after a
//! crash or a re-publish, so consumption is idempotent by event id per group
//! (a group that already handled an id acknowledges a redelivery without
//! calling its handler). To publish an event if and only if a database change
//! commits, stage it in the same transaction with [`Outbox::stage`] and let
//! an [`OutboxRelay`] publish it.
//!
//! The events that cross service boundaries, with their payloads, are listed
//! once in the catalog ([`DomainEvent`] and its implementors).
//!
//! Patterns match dot-separated segments: `*` matches exactly one segment
//! and `#` (as the last segment) matches zero or more, as in AMQP topics.
//! So `payment.*` matches `payment.deposit` but not
//! `payment.transfer.completed`; `payment.#` matches both (and `payment`).

mod bus;
mod catalog;
mod delivery;
mod memory;
mod metrics;
mod model;
mod outbox;
mod pattern;
mod streams;

pub use bus::{BusConfig, EventBus, StreamsConfig};
pub use catalog::{
    BonusAwarded, BonusConverted, BonusExpired, BonusOperation, BonusPaymentRequested,
    BonusPaymentSettled, DepositCompleted, DomainEvent, OtpRequested, TransferCompleted,
    UserRegistered, WalletUpdated, WithdrawalCompleted,
};
pub use delivery::DeadLetter;
pub use metrics::EventMetrics;
pub use model::{handler, Event, EventError, Handler, HandlerError};
pub use outbox::{Outbox, OutboxConfig, OutboxRelay, OutboxWaker, OUTBOX_COLLECTION};
pub use pattern::{validate_event_type, validate_group, TypePattern};
