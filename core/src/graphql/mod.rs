//! GraphQL helpers shared by the subgraphs and the gateway: turning errors
//! into coded responses, the validation chain resolvers start with, and the
//! query-limit presets.

mod errors;
mod limits;
mod validate;

pub use errors::finalize_errors;
pub use limits::QueryLimits;
pub use validate::Check;
