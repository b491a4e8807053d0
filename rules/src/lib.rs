//! # caiclust-rules
//!
//! The linter: rules with stable ids evaluated over [`caiclust_probe::Facts`],
//! and the recommendation (backend, start method, workers, thread limits,
//! environment) with the reason for each choice. Rules arrive with the rules
//! issue; this crate currently re-exports the facts it will evaluate.

pub use caiclust_probe::Facts;
