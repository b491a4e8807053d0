//! The local pools' events: the cluster's requests, and what worker
//! readers, command slots and the watchdog report to the scheduler.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use crate::command::SlotReport;
use crate::messages::Request;
use crate::task::{ExitInfo, Output, PoolKind, TaskId};
use crate::worker::protocol::ToParent;

/// Everything the scheduler's loop reacts to.
// Fork servers and sockets exist on Unix only.
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) enum Event {
    /// From the cluster.
    Request(Request),
    Connected {
        serial: u64,
        pid: u32,
        writer: Box<dyn Write + Send>,
    },
    /// Answers read in one go.
    FromWorkerBatch {
        serial: u64,
        msgs: Vec<ToParent>,
    },
    /// The worker's channel closed.
    WorkerEof {
        serial: u64,
    },
    /// The worker process ended (seen by waiting for it).
    WorkerExited {
        serial: u64,
        exit: Option<ExitInfo>,
    },
    FromServer {
        pool: PoolKind,
        msg: ToParent,
    },
    ServerEof {
        pool: PoolKind,
        exit: Option<ExitInfo>,
    },
    /// A command slot's news.
    Slot {
        slot: usize,
        report: SlotReport,
    },
    Diagnosis {
        id: TaskId,
        pid: u32,
        stalled: Duration,
        cause: Option<String>,
        detail: String,
    },
}

impl From<Request> for Event {
    fn from(r: Request) -> Event {
        Event::Request(r)
    }
}

/// When a group of answers arrived, and each one's share of the time since
/// the first of them began (`None` for a lone answer).
#[derive(Debug, Clone, Copy)]
pub(super) struct GroupClock {
    pub now: Instant,
    pub share: Option<Duration>,
}

/// What to put in a result besides the outcome.
pub(super) struct Details {
    pub started: Option<SystemTime>,
    pub runtime: Duration,
    pub exit: Option<ExitInfo>,
    pub pid: Option<u32>,
    pub slot: Option<usize>,
    pub stdout: Output,
    pub stderr: Output,
    /// The bytes a call returned (pickled results).
    pub payload: Option<Vec<u8>>,
}

impl Details {
    pub fn none() -> Details {
        Details {
            started: None,
            runtime: Duration::ZERO,
            exit: None,
            pid: None,
            slot: None,
            stdout: Output::Empty,
            stderr: Output::Empty,
            payload: None,
        }
    }
}
