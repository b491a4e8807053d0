//! # caiclust-core
//!
//! Runs tasks under the recommended backend: local worker pools (spawn,
//! forkserver, fork) and ipyparallel, with the environment applied before
//! any library loads. The executor arrives with the core issue; this crate
//! currently re-exports the layers below it so the binaries depend on one
//! crate.

pub use caiclust_probe as probe;
pub use caiclust_rules as rules;
