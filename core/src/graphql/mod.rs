//! GraphQL helpers shared by the subgraphs and the gateway: turning errors
//! into coded responses, the validation chain resolvers start with, the
//! query-limit presets and the pieces every subgraph schema shares.

mod errors;
mod limits;
mod subgraph;
mod validate;

pub use errors::{finalize_errors, CodedSubscriptionErrors};
pub use limits::QueryLimits;
pub use subgraph::{federated_schema, request_context, schema_data, PageInfo};
pub use validate::Check;
