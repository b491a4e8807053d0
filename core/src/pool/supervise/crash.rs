//! A worker is gone: what it was doing ends. A worker that died running
//! one task failed that task (retried once for free, in case the crash
//! was not its own); one that died with several tasks handed out blames
//! none of them: each runs again alone, where a crash is its own. Tasks
//! it never began go back to the front of the queue.

use std::collections::VecDeque;
use std::time::Duration;

use super::super::events::Details;
use super::super::state::{InFlight, StopCause, Worker};
use super::super::Scheduler;
use crate::messages::Notice;
use crate::task::{ExitInfo, Failure, Outcome, Output, PoolKind, TaskId};

/// How a process ended, for a message.
fn how(exit: Option<ExitInfo>) -> String {
    exit.map_or("exit status unknown".into(), |e| e.to_string())
}

impl Scheduler {
    /// Worker `serial`'s process ended and its channel closed: settle
    /// what it held.
    pub(in crate::pool) fn worker_gone(&mut self, serial: u64) {
        let Some((kind, i)) = self.locate(serial) else {
            return;
        };
        let Some(pool) = self.pools.get_mut(&kind) else {
            return;
        };
        let mut w = pool.workers.remove(i);
        if !w.ready && w.stopping.is_none() && self.shutdown.is_none() {
            self.count_start_failure(kind, w.exit.flatten());
        }
        if let Some(pid) = w.pid {
            // Leftovers of the worker's tree (a task's children).
            self.kill_now(pid);
        }
        let mut in_flight = std::mem::take(&mut w.in_flight);
        if w.stopping.is_none() {
            self.isolate_suspects(kind, &w, &mut in_flight);
        }
        if let Some(head) = in_flight.pop_front() {
            self.end_head(&w, head);
        } else if w.stopping.is_none() && !w.retiring && self.shutdown.is_none() && w.ready {
            let _ = self.notices.send(Notice {
                task: None,
                message: format!(
                    "worker {} exited between tasks ({}); a new one replaces it",
                    w.pid.unwrap_or(0),
                    how(w.exit.flatten())
                ),
            });
        }
        self.requeue(kind, in_flight);
    }

    /// A worker that exited before it was ready; too many in a row break
    /// the pool.
    fn count_start_failure(&mut self, kind: PoolKind, exit: Option<ExitInfo>) {
        let what = match kind {
            PoolKind::Python => format!("Python workers ({})", self.settings.python.display()),
            _ => "Rust workers".to_string(),
        };
        let limit = self.settings.max_start_failures;
        let Some(pool) = self.pools.get_mut(&kind) else {
            return;
        };
        pool.start_failures += 1;
        if pool.start_failures >= limit {
            pool.broken = Some(format!(
                "{what} exit before they are ready ({} in a row; last: {}); see the workers' stderr",
                pool.start_failures,
                how(exit),
            ));
        }
    }

    /// A worker that died with several tasks handed out: answers travel
    /// in groups, so it may have finished some, and which one crashed it
    /// is not known. Each runs again alone (`in_flight` is emptied).
    fn isolate_suspects(&mut self, kind: PoolKind, w: &Worker, in_flight: &mut VecDeque<InFlight>) {
        let live: Vec<TaskId> = in_flight
            .iter()
            .filter(|f| !f.dropped)
            .map(|f| f.id)
            .collect();
        if live.len() <= 1 {
            return;
        }
        let _ = self.notices.send(Notice {
            task: None,
            message: format!(
                "worker {} died ({}) with {} tasks handed out; they run again one at a time, to find the one that crashed it",
                w.pid.unwrap_or(0),
                how(w.exit.flatten()),
                live.len()
            ),
        });
        for &id in live.iter().rev() {
            self.ledger.unstart(id);
            if self.ledger.get(id).is_some() {
                self.isolated.insert(id);
                self.queues.entry(kind).or_default().push_front(id);
            }
        }
        in_flight.clear();
    }

    /// The task the worker was running when it went: timed out, hung,
    /// cancelled, or killed by the worker's death.
    fn end_head(&mut self, w: &Worker, head: InFlight) {
        let exit = w.exit.flatten();
        let pid = w.pid.unwrap_or(0);
        let details = Details {
            started: w.head_started_wall,
            runtime: w.head_since.map_or(Duration::ZERO, |t| t.elapsed()),
            exit,
            pid: w.pid,
            slot: Some(w.slot),
            stdout: Output::Empty,
            stderr: Output::Empty,
            payload: None,
        };
        let after_ms = details.runtime.as_millis() as u64;
        let failure = match &w.stopping {
            Some(StopCause::Timeout) => Failure::TimedOut { after_ms },
            Some(StopCause::Hung(cause)) => Failure::Hung {
                after_ms,
                cause: cause.clone(),
            },
            Some(StopCause::Cancelled(reason)) => {
                if let Some(e) = self.ledger.cancel(head.id) {
                    let reason = reason.clone();
                    self.finish(head.id, e, Outcome::Cancelled { reason }, details);
                }
                return;
            }
            None => Failure::WorkerDied { exit, pid },
        };
        if head.dropped {
            self.ledger.unstart(head.id);
            return;
        }
        if matches!(failure, Failure::WorkerDied { .. }) {
            let again = self.ledger.get(head.id).is_some_and(|e| e.free == 0);
            let _ = self.notices.send(Notice {
                task: Some(head.id),
                message: format!(
                    "worker {pid} died ({}) while running task {}{}",
                    how(exit),
                    head.id,
                    if again {
                        "; it runs once more on a new worker, in case the crash was not its own"
                    } else {
                        ""
                    }
                ),
            });
        }
        self.fail_attempt(head.id, failure, details)
    }

    /// Tasks handed out but never begun: back to the front of the queue.
    fn requeue(&mut self, kind: PoolKind, in_flight: VecDeque<InFlight>) {
        for f in in_flight.into_iter().rev() {
            if f.dropped {
                continue;
            }
            self.ledger.unstart(f.id);
            if self.ledger.get(f.id).is_some() {
                self.queues.entry(kind).or_default().push_front(f.id);
            }
        }
    }
}
