//! Whole-system tests: they start the gateway and the four subgraphs and
//! drive them only through the public API. The crate holds none yet, because
//! the federated gateway they go through is not built; they arrive with it.
