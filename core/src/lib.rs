//! # caiclust-core
//!
//! Runs tasks the safe way. A [`Cluster`] starts worker processes with the
//! environment the rules recommend applied before any library loads, on
//! the start method they recommend (spawn, forkserver or fork), and gives
//! back exactly one result for every task submitted, whatever happens to
//! the workers: timeouts stop a task's whole process tree (TERM, a grace
//! period, KILL), crashed workers are replaced and their task retried or
//! reported, a halt policy stops a failing run, and a watchdog inspects
//! stalled workers with the probe and names the likely cause.
//!
//! Three kinds of task: external commands (fresh fork+exec each), Python
//! callables `package.module:function` with JSON arguments or pickled
//! ones ([`Task::python_pickled`]; the result comes back pickled, as
//! bytes), in long-lived Python workers, and Rust functions registered
//! by name in the same binary (see [`worker::serve_if_requested`]).
//! Workers speak length-prefixed frames, so byte payloads travel as they
//! are, and the scheduler never waits on a worker: each has a writer
//! thread of its own.
//!
//! For a program run as it is (`caiclust run -- python pipeline.py`),
//! [`watch_tree`] watches its whole process tree and reports the first
//! forked worker that hangs in a threading runtime, with the rule that
//! names the cause (see [`hang`]).
//!
//! ```no_run
//! use caiclust_core::{Cluster, Task};
//! let cluster = Cluster::auto()?;
//! for r in cluster.map((0..4).map(|i| Task::command(["echo", &i.to_string()]))) {
//!     println!("{} {:?}", r.id, r.outcome);
//! }
//! # Ok::<(), caiclust_core::CoreError>(())
//! ```

pub use caiclust_probe as probe;
pub use caiclust_rules as rules;

mod cluster;
mod command;
pub mod hang;
pub mod ipp;
pub mod job;
mod ledger;
mod messages;
pub mod plan;
mod pool;
pub mod program;
pub mod task;
pub mod tree;
mod watchdog;
pub mod worker;

pub use cluster::{Advice, Cluster, ClusterBuilder, CoreError, InOrder, Submitter};
pub use hang::{
    diagnose_forked_child, watch_tree, Hang, HangKind, Suspect, TreeWatch, TreeWatchOptions,
};
pub use messages::Notice;
pub use plan::{HaltPolicy, HaltTrigger, HaltWhen, Settings, StartMethod, Threshold};
pub use task::{
    CallTask, CommandTask, ExitInfo, Failure, Outcome, Output, StartCause, Task, TaskId, TaskKind,
    TaskResult,
};
