//! `caiclust map`: one job per input, GNU parallel style, on a
//! [`caiclust_core::Cluster`] that the rules size and configure.
//!
//! ```text
//! caiclust map -j 4 --joblog run.log -- caiman_batch.py {} ::: data/*.tif
//! caiclust map --resume --joblog run.log -- caiman_batch.py {} ::: data/*.tif
//! find data -name '*.tif' | caiclust map --timeout 2h -- python run_one.py {} {/.}.hdf5
//! caiclust map -f mypkg.tasks:process ::: a b c
//! ```
//!
//! * Inputs ([`inputs`]): `::: a b`, `:::: FILE`, `-a FILE`, standard
//!   input; several sources combine into every combination, `:::+` pairs.
//! * Commands ([`placeholders`], [`jobs`]): an argument vector by default,
//!   `--shell` for `sh -c`; GNU parallel's replacement strings.
//! * The job log ([`joblog`]) is GNU parallel's, so `--resume` and
//!   `--resume-failed` work on it with either program.
//! * Output ([`output`]) is grouped per job, `--keep-order` and `--tag`
//!   as in GNU parallel; failures are reported with their reason.
//! * A run goes in stages, each testable alone: [`prepare`] (options,
//!   inputs, job log, what `--resume` skips), [`cluster`] (the pool the
//!   rules recommend), [`dispatch`] (a state machine: slots, refill, halt,
//!   Ctrl-C; it decides, it does no I/O) and [`report`] (output, bar,
//!   summary, exit status), wired together by a short driver.
//! * Exit status as GNU parallel: 0 all succeeded, 1–100 that many
//!   failed, 101 more than 100; with `--halt ...,fail=1` that of the job
//!   that failed, with `fail=N%` the percentage; 130 interrupted (Ctrl-C);
//!   255 an error (bad options or input, a malformed job log, a cluster
//!   that could not start).

pub mod cluster;
pub mod dispatch;
pub mod inputs;
pub mod interrupt;
pub mod joblog;
pub mod jobs;
pub mod options;
pub mod output;
pub mod placeholders;
pub mod prepare;
pub mod progress;
pub mod reaper;
pub mod report;
mod runner;

pub use options::MapArgs;
pub use runner::run;

use caiclust_core::CoreError;

/// The exit status for errors (as GNU parallel: 1–101 count failed jobs).
pub const ERROR_EXIT: u8 = 255;
/// The exit status after Ctrl-C.
pub const INTERRUPTED_EXIT: u8 = 130;

/// Why a map could not run.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {message}")]
    Input { what: String, message: String },
    #[error("job log {0}")]
    Joblog(#[from] joblog::JoblogError),
    #[error(transparent)]
    Cluster(#[from] CoreError),
}

/// Run the map; print any error; the exit status.
pub fn main(args: MapArgs) -> u8 {
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("caiclust map: error: {e}");
            ERROR_EXIT
        }
    }
}
