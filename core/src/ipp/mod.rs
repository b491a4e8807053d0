//! The ipyparallel backend: tasks on ipyparallel engines, for when one
//! machine is not enough (HAZARDS H16, H17).
//!
//! ipyparallel's controller, engines, launchers (local, MPI, SSH, Slurm,
//! PBS, ...), heartbeats and load-balancing scheduler do the work; caiclust
//! drives them through a small Python program, `driver.py` (embedded here),
//! which it starts with the chosen interpreter and talks to over stdio in
//! JSON lines. Nothing of ipyparallel's protocols is reimplemented.
//!
//! What the backend adds to the usual `ipcluster start` + `Client()` way:
//!
//! * a fresh profile folder and cluster id per run (no stale pid or
//!   connection files, no clash with a cluster already running), the
//!   controller on loopback unless told otherwise;
//! * a startup deadline: [`IppBackend::start`] returns within it, and its
//!   error names each engine that failed and why (exit code, last lines of
//!   its log);
//! * engines with the environment given (the recommended thread limits:
//!   [`IppConfig::recommended`]) and working folder;
//! * per-task timeouts that really stop a running task (its engine is
//!   killed and replaced: ipyparallel's `abort()` only cancels queued
//!   tasks), dead engines detected (nanny, heartbeats, and the process
//!   itself for local engines) with their tasks retried elsewhere up to the
//!   retry limit, cancellation;
//! * a clean stop: engines, nannies and controller stopped and the profile
//!   folder removed, on [`IppBackend::shutdown`], on drop (so also when the
//!   caller panics), and when the caller dies (Ctrl-C): the driver stops the
//!   cluster when its standard input closes.
//!
//! Results come back as [`crate::task::TaskResult`]s, one per task, inside
//! [`IppEvent`]s. Pickled calls ([`crate::Task::python_pickled`]) run on
//! an engine as on a local worker (the same payload layout, "CCB5"
//! out-of-band buffers included, and the same result encoding); their
//! bytes travel base64-encoded between caiclust and the driver, and as
//! ipyparallel's own raw frames between the driver and the engines.
//!
//! ```no_run
//! use caiclust_core::ipp::{IppBackend, IppConfig, IppEvent};
//! use caiclust_core::Task;
//! let config = IppConfig::new("/opt/venv/bin/python", 4).recommended()?;
//! let backend = IppBackend::start(config)?;
//! backend.submit(1, &Task::python("math:sqrt", serde_json::json!([2.0])))?;
//! backend.submit(2, &Task::command(["hostname"]))?;
//! let mut left = 2;
//! while left > 0 {
//!     match backend.recv() {
//!         Some(IppEvent::Result(r)) => { println!("{} {:?}", r.id, r.outcome); left -= 1; }
//!         Some(other) => eprintln!("{other:?}"),
//!         None => break,
//!     }
//! }
//! backend.shutdown();
//! # Ok::<(), caiclust_core::ipp::IppError>(())
//! ```
//!
//! # Platform-specific behaviour
//! Builds everywhere. The driver runs in a process group of its own on
//! Unix. Leftover processes are recognised by their `IPP_CLUSTER_ID`
//! environment variable on Linux before they are killed; elsewhere the pids
//! the driver reported are killed when the driver could not stop them
//! itself.
//!
//! # Layout
//! `config` (what to start and how: [`IppConfig`], [`Launcher`],
//! [`Attach`], and the configuration the driver reads), `events` (what the
//! backend reports: [`IppEvent`], [`IppError`]), `startup` (starting the
//! driver and waiting for the cluster), `backend` (the running backend:
//! submitting, receiving), `stop` (stopping everything it started), `reader` (the threads that read the driver's output) and
//! `wire` (the driver's messages as the crate's types).

mod backend;
mod config;
mod events;
mod reach;
mod reader;
mod startup;
mod stop;
mod wire;

pub use backend::IppBackend;
pub use config::{Attach, IppConfig, Launcher};
pub use events::{EngineFailure, EngineInfo, IppError, IppEvent, StopReport};

/// The driver program: what runs on the engines (`engine.py`), the task
/// record and process helpers (`tasks.py`), batch-job engine sets
/// (`batch.py`), the driver itself (`driver.py`), as one program.
pub const DRIVER: &str = concat!(
    include_str!("engine.py"),
    "\n\n",
    include_str!("tasks.py"),
    "\n\n",
    include_str!("batch.py"),
    "\n\n",
    include_str!("driver.py")
);
