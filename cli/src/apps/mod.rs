//! The two programs as library calls: [`caiclust::main`] and
//! [`check::main`] take a whole command line (program name first) and
//! return the exit status, printing as the programs do. The binaries in
//! `src/bin` only call them; the Python extension module (`caiclust._core`)
//! calls them in-process for the commands a wheel installs, and
//! [`check::run`] for `caiclust.check()`.
//!
//! A process that may be started again as one of caiclust's helpers (see
//! [`crate::self_program`]) calls [`serve_helpers_if_requested`] before
//! anything else.

pub mod caiclust;
pub mod check;

use std::sync::Once;

/// Serve a runtime query ([`caiclust_probe::serve_runtime_query_if_requested`])
/// or watch a map ([`crate::map::reaper::serve_if_requested`]) when this
/// process was started for that, and end the process then; return at once
/// otherwise (two environment lookups).
pub fn serve_helpers_if_requested() {
    caiclust_probe::serve_runtime_query_if_requested();
    crate::map::reaper::serve_if_requested();
}

/// What every program does before parsing its command line, once per
/// process (the programs may run many times in one Python process).
fn prepare() {
    static ONCE: Once = Once::new();
    ONCE.call_once(crate::quiet_contained_panics);
}
