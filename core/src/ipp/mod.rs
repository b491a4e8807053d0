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
//! # Batches
//! Tiny tasks travel in batches, as in the local pools (issue #15, point
//! 4): one task at a time through ipyparallel's scheduler manages a few
//! hundred a second; in batches, tens of thousands. A batch is a transport
//! detail: each task keeps its own result, timeout, retries and cancel.
//!
//! * **Size.** The driver keeps the mean run time of each function (`f`)
//!   on the engines; a batch holds about 50 ms of work by those means
//!   (each task counted at least 5 µs; at most 8192 tasks, and at most a
//!   fair share of the queue per engine, as it is when a round of
//!   hand-outs begins, unless that share is under 5 ms of work). A
//!   function with no time yet, a long one, a command, a pickled call
//!   larger than 64 KiB and a task being retried go alone, on the
//!   one-task path as before. So a run starts with single tasks, tiny ones
//!   then travel by the thousand and long ones stay one by one, balanced
//!   across the engines. Each engine has at most two batches out (one
//!   running, one waiting); the rest waits in the driver. A task's time
//!   excludes finding its function (a first import): it is the call's.
//! * **Results** stream back while a batch runs: a thread on the engine
//!   publishes (ipyparallel's data publication), every 3 ms while
//!   something changed, and at once after a task of 0.5 ms or more, the
//!   results finished since its last message and which task runs now,
//!   since when (a task that computes lets it run every few milliseconds,
//!   Python's switch interval); the batch's reply carries the rest, and
//!   how many messages were published, so the driver finishes the batch
//!   as soon as it has read them. Each task's standard output and error
//!   are captured on its own.
//! * **Fresh rows.** The driver queues fresh Python calls with JSON
//!   arguments as the rows it read, in runs of one function, with no
//!   per-task object: a batch is a slice of a run, sent pickled as one
//!   byte string (ipyparallel's serialisation of a list of thousands of
//!   rows costs milliseconds on both ends; its pickling of the engine
//!   functions, 1.5 ms a task, is done once). A task gets its own record
//!   only when something happens to it alone: a cancel or withdraw (an
//!   index of rows by id is built at the first), an error or output, a
//!   timeout, an engine loss. The driver's cyclic garbage collector runs
//!   every 100 000 allocations, not 700, with ipyparallel's state frozen
//!   out of it; an engine's, during a batch.
//! * **The engine's loop.** A plain call (a function and JSON arguments;
//!   with a timeout, its backstop armed around it) runs inline, its
//!   function resolved once a batch, its value written as JSON on the
//!   engine (common scalars directly); the plain values of a stretch of
//!   the batch go back as four texts (ids, starts and ends in ns, values),
//!   which the driver passes on to the backend unread (`{"batch": ...}`
//!   blocks, `result_lines.rs`). Output, an error or a pickled call take
//!   the full path, with the same results (`ipp_batches.rs` checks each
//!   kind batched against the same task alone).
//! * **Wire.** Submits queued while the backend's writer thread writes
//!   travel to the driver as one line (`{"op": "submit_many", ...}`; a
//!   Python call with JSON arguments as a compact row `[id, f, args,
//!   timeout]`; a stream of submits is gathered into a line or two,
//!   `input.rs`), and
//!   the results the driver has at the end of a round of its loop come
//!   back as one line (`{"results": [...]}`), split into one event per
//!   task here: per task it stays one `run`, one result. A result whose
//!   value JSON cannot carry (NaN, infinity) fails that task alone.
//! * **Timeouts.** The task published as running past its timeout is
//!   named, gets its timed-out result, and its engine is stopped and
//!   replaced, as for a task alone; the tasks of its batch that had not
//!   begun queue again with no attempt counted. A task that holds the GIL
//!   all along (in C code) keeps the reporter from saying that it runs:
//!   the engine's own watchdog then ends it (timeout + grace + 5 s, as on
//!   engines the driver cannot reach), and the engine loss below sends
//!   the unfinished tasks again, the first of them alone: within a few
//!   such losses the task runs alone, where its timeout applies as for
//!   any task alone.
//! * **Engine loss.** Tasks whose results were published are done and are
//!   not run again; the one running is lost as a task alone is (retried
//!   alone within the retry limit, `worker_died` in its history); the
//!   others never began and queue again with no attempt counted. When no
//!   task was seen running (the engine died before its first message), the
//!   first unfinished task goes alone next time, so that a task that
//!   kills its engine ends up alone and charged. A task that finished in
//!   the very instant of the kill, its result still inside the engine,
//!   runs again: its one result is the second run's.
//! * **Cancel and withdraw.** A task still in the driver's queue, or in a
//!   batch no engine has begun, is dropped (the batch is taken back with
//!   ipyparallel's abort, and its other tasks queue again once
//!   ipyparallel reports it aborted; should an engine have begun it in
//!   the meantime, their results from that run count). The cancelled or
//!   withdrawn task itself is reported cancelled once the engine answers
//!   "aborted": an engine answers an abort with "ok" even for a task it
//!   has begun, so the task may have run after all, and then its own
//!   result counts (a cancelled task alone seen running is then stopped
//!   as a running one). In a batch that
//!   began, a cancelled task's result says cancelled at once and whatever
//!   the engine reports for it is dropped (it may still run there: the
//!   batch holds about 50 ms of work and nothing reaches an engine in the
//!   middle of a task); if it is the one running and still runs after the
//!   grace period, its engine is stopped (the others queue again).
//!   Withdraw leaves a task of a begun batch alone: it counts as begun.
//!
//! The load-balanced view stays: a batch is one ipyparallel task, which
//! the scheduler hands to an engine only when that engine has nothing
//! outstanding (its high-water mark of one), and when an engine dies it
//! fails only the batch that engine held (`EngineError`), while batches
//! still waiting at the scheduler go to the other engines untouched. With
//! per-engine direct views caiclust would pick the engines itself
//! (rebuilding the scheduler's balancing), and every batch queued on a
//! dead engine would be lost with it and need sorting out; here only the
//! running batch is, and its published progress says which of its tasks
//! finished, which one ran and which never began.
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
mod input;
mod reach;
mod reader;
mod result_lines;
mod startup;
mod stop;
mod wire;

pub use backend::IppBackend;
pub use config::{Attach, IppConfig, Launcher};
pub use events::{EngineFailure, EngineInfo, IppError, IppEvent, StopReport};

/// The driver program: what runs on the engines (`engine.py`), the task
/// record and process helpers (`tasks.py`), engine sets on clusters
/// (`clusters.py`: srun, ssh, batch systems), the driver itself
/// (`driver_startup.py`, `driver_batches.py`, `driver.py`), as one program.
pub const DRIVER: &str = concat!(
    include_str!("engine.py"),
    "\n\n",
    include_str!("tasks.py"),
    "\n\n",
    include_str!("clusters.py"),
    "\n\n",
    include_str!("driver_startup.py"),
    "\n\n",
    include_str!("driver_queue.py"),
    "\n\n",
    include_str!("driver_batches.py"),
    "\n\n",
    include_str!("driver.py")
);
