//! The scheduler's picture of its processes: workers, fork servers and
//! command slots, and why one is being stopped.

use std::collections::VecDeque;
use std::sync::mpsc::Sender;
use std::time::{Instant, SystemTime};

use super::io::WorkerInput;
use crate::command::CmdJob;
use crate::task::{ExitInfo, TaskId};
use crate::tree::TreeSample;

/// Why a process is being stopped.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum StopCause {
    Timeout,
    Hung(String),
    Cancelled(String),
}

/// The hang watchdog's view of one running attempt.
#[derive(Debug, Default)]
pub(super) struct Watch {
    pub last: Option<(Instant, TreeSample)>,
    pub idle_since: Option<Instant>,
    pub diagnosing: bool,
}

/// A task handed to a worker, in the order the worker runs them.
pub(super) struct InFlight {
    pub id: TaskId,
    /// Cancelled while queued in the worker: its answer is dropped.
    pub dropped: bool,
}

/// One worker process and what it was given.
pub(super) struct Worker {
    pub serial: u64,
    pub slot: usize,
    pub pid: Option<u32>,
    /// Its input, written by a thread of its own (`None`: closed).
    pub input: Option<WorkerInput>,
    pub ready: bool,
    pub in_flight: VecDeque<InFlight>,
    /// When the task at the head of `in_flight` began.
    pub head_since: Option<Instant>,
    pub head_started_wall: Option<SystemTime>,
    pub served: u64,
    pub retiring: bool,
    pub stopping: Option<StopCause>,
    pub watch: Watch,
    /// The process ended, and how (inner `None`: unknown).
    pub exit: Option<Option<ExitInfo>>,
    /// Its channel reached EOF.
    pub channel_closed: bool,
    /// When to stop waiting for the other half of its end.
    pub gone_by: Option<Instant>,
    /// It was signalled to go because its channel closed early.
    pub nudged: bool,
}

/// A fork server: it forks the workers of its pool on request.
pub(super) struct Server {
    pub pid: u32,
    pub input: Option<WorkerInput>,
    pub ready: bool,
    /// Fork requests sent before the server said hello.
    pub backlog: Vec<u64>,
}

/// The workers of one kind (Python or Rust) and their fork server.
pub(super) struct CallPool {
    pub workers: Vec<Worker>,
    pub server: Option<Server>,
    pub start_failures: u32,
    pub broken: Option<String>,
    /// Mean task time (seconds), for how many tasks to hand out at once.
    pub mean_task: f64,
}

/// A thread that runs commands one after another.
pub(super) struct CmdSlot {
    pub jobs: Sender<CmdJob>,
    pub running: Option<RunningCmd>,
}

/// The command a slot runs now.
pub(super) struct RunningCmd {
    pub id: TaskId,
    pub pid: Option<u32>,
    pub since: Instant,
    pub stopping: Option<StopCause>,
    pub watch: Watch,
}

impl Worker {
    /// A worker about to be started in `slot`.
    pub fn new(serial: u64, slot: usize) -> Worker {
        Worker {
            serial,
            slot,
            pid: None,
            input: None,
            ready: false,
            in_flight: VecDeque::new(),
            head_since: None,
            head_started_wall: None,
            served: 0,
            retiring: false,
            stopping: None,
            watch: Watch::default(),
            exit: None,
            channel_closed: false,
            gone_by: None,
            nudged: false,
        }
    }

    /// Ready for tasks: it said hello, its input is open, and it is
    /// neither stopping nor retiring.
    pub fn takes_tasks(&self) -> bool {
        self.ready && self.input.is_some() && self.stopping.is_none() && !self.retiring
    }
}

impl CallPool {
    pub fn new() -> CallPool {
        CallPool {
            workers: Vec::new(),
            server: None,
            start_failures: 0,
            broken: None,
            mean_task: 0.0,
        }
    }
}
