//! The hang watchdog for one program: watch a process tree (a user's
//! `python pipeline.py` and everything it starts) and report the first
//! worker that hangs in a threading runtime after fork (GCC bug 60035,
//! HAZARDS H01), without ever mistaking an idle worker for a hung one.
//!
//! [`watch_tree`] samples the tree on a thread of its own. It judges each
//! process on its own (one hung worker among busy ones is caught), and only
//! processes that were forked without exec (the same program as their
//! parent, as the workers of Python's fork Pool and forkserver are). A
//! process is a suspect when, for the whole stall period, either
//!
//! * it used next to no CPU (under 2% of one CPU) and the thread that
//!   survived the fork sits in a system call made from inside a threading
//!   runtime (libgomp, an OpenMP or BLAS library): [`HangKind::Blocked`].
//!   A worker that sleeps, or waits for its next task, waits in libc or
//!   libpython instead, and is never a suspect; or
//! * nearly all of its CPU time (80% or more) was system time, the
//!   `sched_yield` loop of a runtime's barrier, with a threading runtime
//!   mapped: [`HangKind::Spinning`].
//!
//! Each suspect is then diagnosed, once, on a separate thread:
//! [`diagnose_forked_child`] probes it and runs the rules on it as a
//! forked child. Only a finding (for example CC001, GNU OpenMP used after
//! fork) makes a [`Hang`]; without one the process is left alone, and
//! examined again after another stall period if it still looks stalled.
//!
//! ```no_run
//! use caiclust_core::hang::{diagnose_forked_child, watch_tree, TreeWatchOptions};
//! let mut program = std::process::Command::new("python3").arg("pipeline.py").spawn()?;
//! let watch = watch_tree(program.id(), TreeWatchOptions::default(), diagnose_forked_child)?;
//! loop {
//!     if let Some(hang) = watch.recv_timeout(std::time::Duration::from_secs(1)) {
//!         eprintln!("{}: {} {}: {}", hang.pid, hang.rule_id, hang.rule_name, hang.message);
//!         break;
//!     }
//!     if program.try_wait()?.is_some() {
//!         break;
//!     }
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Platform-specific behaviour
//!
//! Linux only: the tree, the CPU times and the threads' system calls come
//! from `/proc`. Reading `/proc/PID/task/TID/syscall` needs the rights to
//! attach a debugger, which a parent (caiclust) has over its descendants
//! under every `kernel.yama.ptrace_scope` but 3. Elsewhere [`watch_tree`]
//! starts no thread and never reports.

mod diagnose;
mod evidence;
mod runtimes;
mod tracker;
mod watch;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as platform;
#[cfg(not(target_os = "linux"))]
mod other;
#[cfg(not(target_os = "linux"))]
use other as platform;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use diagnose::diagnose_forked_child;
pub(crate) use tracker::stall_kind;
pub use watch::{watch_tree, TreeWatch};

/// How a stalled process looks from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HangKind {
    /// Next to no CPU used (under 2% of one CPU): asleep, waiting.
    Blocked,
    /// CPU used, nearly all of it (80% or more) in the kernel: a wait loop
    /// on `sched_yield`, as the OpenMP builds of OpenBLAS and BLIS run
    /// after fork.
    Spinning,
}

impl HangKind {
    /// `blocked` or `spinning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blocked => "blocked",
            Self::Spinning => "spinning",
        }
    }
}

/// How [`watch_tree`] watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeWatchOptions {
    /// How long a process must look stalled before it is diagnosed.
    /// Default 20 s.
    pub stall: Duration,
    /// How often the tree is sampled (one `/proc` scan each time). Default
    /// (`None`): a quarter of `stall`, between 0.25 s and 5 s.
    pub period: Option<Duration>,
}

impl Default for TreeWatchOptions {
    fn default() -> Self {
        Self {
            stall: Duration::from_secs(20),
            period: None,
        }
    }
}

impl TreeWatchOptions {
    /// These options with this stall period.
    pub fn with_stall(stall: Duration) -> Self {
        Self {
            stall,
            ..Self::default()
        }
    }

    /// The sampling period in effect: [`period`](Self::period) (at least
    /// 10 ms), or a quarter of the stall period clamped to 0.25–5 s.
    pub fn sampling_period(&self) -> Duration {
        match self.period {
            Some(p) => p.max(Duration::from_millis(10)),
            None => (self.stall / 4).clamp(Duration::from_millis(250), Duration::from_secs(5)),
        }
    }
}

/// A process that has looked stalled for the stall period, handed to the
/// diagnosis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspect {
    pub pid: u32,
    pub how: HangKind,
    /// The runtime it waits in (the library holding the instruction
    /// pointer of its system call) when [`HangKind::Blocked`]; the threading
    /// runtime it has mapped (an OpenMP one first) when
    /// [`HangKind::Spinning`].
    pub runtime: Option<PathBuf>,
    /// How long it has looked stalled.
    pub stalled: Duration,
}

/// A hung process and its likely cause: a finding of the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hang {
    pub pid: u32,
    /// The rule that names the cause, e.g. `CC001`.
    pub rule_id: String,
    /// Its kebab-case name, e.g. `gnu-openmp-fork`.
    pub rule_name: String,
    /// The finding's message.
    pub message: String,
    /// What to change, from the finding.
    pub fix: Option<String>,
    /// The library it is stuck in, when known.
    pub runtime: Option<PathBuf>,
    /// How long it had looked stalled when it was diagnosed.
    pub stalled: Duration,
    pub how: HangKind,
    /// What was seen, in a sentence: where it waits and what supports the
    /// finding (e.g. the pool threads left in its parent).
    pub detail: String,
}
