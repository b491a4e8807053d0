//! The threads that read the driver's output: its standard output
//! (events and results, applied to the state shared with the backend and
//! passed on) and its standard error (kept for error messages).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::BufRead;
use std::sync::mpsc::Sender;
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

use super::result_lines::{self, Message};
use super::{wire, EngineInfo, IppEvent};
use crate::task::{Failure, Outcome, TaskId, TaskResult};

/// Lines of the driver's standard error kept for error messages.
const LOG_LINES: usize = 200;

/// State the reader thread shares with the backend.
#[derive(Default)]
pub(super) struct Shared {
    /// Processes of the cluster (controller, engines, nannies) the driver
    /// started, as it reported them.
    pub(super) pids: BTreeSet<u32>,
    pub(super) engines: BTreeMap<u32, EngineInfo>,
    /// Submitted, no result from the driver yet.
    pub(super) pending: BTreeSet<TaskId>,
    /// Submitted, result not received by the caller yet.
    pub(super) outstanding: BTreeSet<TaskId>,
    pub(super) stopped: Option<Vec<u32>>,
    pub(super) log: VecDeque<String>,
    pub(super) ready: Option<Value>,
    pub(super) failed: Option<Value>,
    pub(super) eof: bool,
}

pub(super) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The driver's standard output: events and results.
pub(super) fn read_driver<R: BufRead>(
    mut reader: R,
    shared: &Mutex<Shared>,
    tx: &Sender<IppEvent>,
    driver_pid: u32,
) {
    let mut line = String::new();
    let mut stopped = false;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let msg: Value = match serde_json::from_str(line.trim()) {
            Ok(v) => v,
            Err(e) => {
                let mut s = lock(shared);
                s.log
                    .push_back(format!("(not a driver message: {e}: {})", line.trim()));
                continue;
            }
        };
        for msg in result_lines::split(msg) {
            match msg {
                Message::One(msg) => stopped |= on_message(&msg, shared, tx),
                Message::Results(results) => on_results(results, shared, tx),
            }
        }
    }
    // The driver is gone: every task still outstanding gets its one result.
    let (outstanding, ready) = {
        let mut s = lock(shared);
        s.eof = true;
        (std::mem::take(&mut s.pending), s.ready.is_some())
    };
    if ready && !stopped {
        for id in &outstanding {
            let _ = tx.send(IppEvent::Result(TaskResult::bare(
                *id,
                Outcome::Failed {
                    failure: Failure::WorkerDied {
                        exit: None,
                        pid: driver_pid,
                    },
                },
            )));
        }
        let _ = tx.send(IppEvent::DriverExited {
            message: format!(
                "the ipyparallel driver (pid {driver_pid}) ended unexpectedly; {} task(s) lost",
                outstanding.len()
            ),
        });
    } else {
        // A stop: the driver reported the outstanding tasks cancelled; any
        // it could not report are reported here.
        for id in outstanding {
            let _ = tx.send(IppEvent::Result(TaskResult::bare(
                id,
                Outcome::Cancelled {
                    reason: "the backend stopped".into(),
                },
            )));
        }
    }
}

/// The results of a batch block, passed on.
fn on_results(results: Vec<TaskResult>, shared: &Mutex<Shared>, tx: &Sender<IppEvent>) {
    {
        let mut s = lock(shared);
        for r in &results {
            s.pending.remove(&r.id);
        }
    }
    for r in results {
        let _ = tx.send(IppEvent::Result(r));
    }
}

/// One driver message: the shared state updated, its event passed on.
/// True for the driver's last message ("stopped").
fn on_message(msg: &Value, shared: &Mutex<Shared>, tx: &Sender<IppEvent>) -> bool {
    let ev = {
        let mut s = lock(shared);
        let s = &mut *s;
        let ev = wire::apply(msg, &mut s.pids, &mut s.engines);
        if let Some(IppEvent::Result(r)) = &ev {
            s.pending.remove(&r.id);
        }
        ev
    };
    let mut stopped = false;
    match msg["event"].as_str() {
        Some("ready") => lock(shared).ready = Some(msg.clone()),
        Some("failed") => lock(shared).failed = Some(msg.clone()),
        Some("stopped") => {
            stopped = true;
            let left = msg["left"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.as_u64())
                        .map(|p| p as u32)
                        .collect()
                })
                .unwrap_or_default();
            lock(shared).stopped = Some(left);
        }
        _ => {}
    }
    if let Some(ev) = ev {
        let _ = tx.send(ev);
    }
    stopped
}

/// The driver's standard error: kept (the last lines) for error messages,
/// and echoed when `CAICLUST_IPP_DEBUG` is set.
pub(super) fn read_log<R: BufRead>(reader: R, shared: &Mutex<Shared>) {
    let echo = std::env::var_os("CAICLUST_IPP_DEBUG").is_some();
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if echo {
            eprintln!("[ipp driver] {line}");
        }
        let mut s = lock(shared);
        if s.log.len() >= LOG_LINES {
            s.log.pop_front();
        }
        s.log.push_back(line);
    }
}
