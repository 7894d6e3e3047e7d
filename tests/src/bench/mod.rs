//! The platform benchmarks of `bench-platform`: the platform runs as a
//! child process ([`launcher`]) on its embedded defaults, and the
//! benchmarks drive it only through the gateway's public API
//! ([`GatewayClient`](crate::GatewayClient)): payments end to end with the
//! books checked afterwards ([`payments`], [`books`]), and subscription
//! fan-out over WebSocket and SSE ([`fanout`], on
//! [`feeds`](crate::feeds)).

pub mod books;
pub mod fanout;
pub mod launcher;
pub mod payments;
