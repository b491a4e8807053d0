//! # caiclust-cli
//!
//! The glue behind the `caiclust` and `caiclust-check` programs: argument
//! parsing lives in the binaries, rendering for people lives here. Every
//! command is one library call into `caiclust-core` (and the crates below
//! it); this crate only turns results into text.

pub mod color;
pub mod summary;
