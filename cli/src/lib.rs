//! # caiclust-cli
//!
//! The glue behind the `caiclust` and `caiclust-check` programs: argument
//! parsing lives in the binaries, rendering for people lives here. Every
//! command is one library call into `caiclust-core` (and the crates below
//! it); this crate only turns results into text.

pub mod color;
pub mod envfmt;
pub mod input;
pub mod output;
pub mod ruledoc;
pub mod stdout;
pub mod summary;

/// Keep panics that the probe contains (inside the binary parser, reported
/// as a malformed file) from printing a backtrace over the user's output;
/// every other panic is reported as usual.
pub fn quiet_contained_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let contained = info
            .location()
            .is_some_and(|l| l.file().contains("goblin") || l.file().contains("scroll"));
        if !contained {
            default(info);
        }
    }));
}
