//! # caiclust-cli
//!
//! The glue behind the `caiclust` and `caiclust-check` programs: both
//! programs live here as library calls ([`apps`]), so that the binaries and
//! the Python extension module run the same code. Every command is one
//! library call into `caiclust-core` (and the crates below it); this crate
//! parses command lines, turns results into text, and drives the cluster
//! for [`map`] (many jobs, GNU parallel style) and [`run`] (one program).
//! When it needs itself again (helpers), it starts [`self_program`].

pub mod apps;
pub mod color;
pub mod envfmt;
pub mod input;
pub mod map;
pub mod output;
pub mod ruledoc;
pub mod run;
pub mod self_program;
pub mod stdout;
pub mod summary;

/// Keep a panic that the probe contains (inside its parse of one binary)
/// from printing over the user's output: the probe reports it as that
/// file's error, naming the file, the panic's message and where it
/// happened, and goes on with the other files (see
/// [`caiclust_probe::claim_parser_panic`]). Every other panic, wherever it
/// happens (goblin included), is reported as usual.
pub fn quiet_contained_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !caiclust_probe::claim_parser_panic(info) {
            default(info);
        }
    }));
}

/// The exit status for a command line that does not parse: `caiclust map`
/// keeps 1–101 for failed jobs and uses 255 (as GNU parallel),
/// `caiclust run` keeps every status for its child and uses 125 (as
/// `env` and `timeout`), the other commands use 2.
pub fn usage_exit_status(args: &[std::ffi::OsString]) -> u8 {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--color" {
            it.next();
            continue;
        }
        if a.starts_with('-') {
            continue;
        }
        return match a.as_ref() {
            "map" => map::ERROR_EXIT,
            "run" => run::ERROR_EXIT,
            _ => 2,
        };
    }
    2
}
