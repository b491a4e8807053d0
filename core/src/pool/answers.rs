//! What a worker answered: the task at the head of its queue succeeded
//! or raised. Answers come in groups (one read); the time since the first
//! of a group began is shared out among them.

use std::time::{Duration, Instant, SystemTime};

use super::dispatch::policy::next_mean;
use super::events::{Details, GroupClock};
use super::state::{StopCause, Watch};
use super::Scheduler;
use crate::messages::Notice;
use crate::task::{Failure, Outcome, Output, PoolKind};
use crate::worker::protocol::ToParent;

impl Scheduler {
    /// A group of messages worker `serial` wrote together.
    pub(super) fn on_answers(&mut self, serial: u64, msgs: Vec<ToParent>) {
        // One clock reading for the group: its answers were written
        // together, and the time since the first of them began is shared
        // out among them.
        let now = Instant::now();
        let mut at = self.locate(serial);
        let answers = msgs.iter().filter(|m| m.is_answer()).count() as u32;
        let share = match at {
            Some((kind, i)) if answers > 1 => self.pools[&kind].workers[i]
                .head_since
                .map(|t| now.saturating_duration_since(t) / answers),
            _ => None,
        };
        let clock = GroupClock { now, share };
        for msg in msgs {
            let Some((kind, i)) = at else { return };
            at = self.on_worker_message(serial, kind, i, msg, clock);
        }
    }

    /// Handle one message of worker `serial` (at `kind`, `i`), answered at
    /// `now`; returns where the worker is afterwards.
    fn on_worker_message(
        &mut self,
        serial: u64,
        kind: PoolKind,
        i: usize,
        msg: ToParent,
        clock: GroupClock,
    ) -> Option<(PoolKind, usize)> {
        self.answered(kind, i, msg, clock);
        self.relocate(serial, kind, i)
    }

    pub(super) fn answered(&mut self, kind: PoolKind, i: usize, msg: ToParent, clock: GroupClock) {
        let (id, result, payload) = match msg {
            ToParent::Hello { hello } => {
                let pool = self.pools.get_mut(&kind).expect("located pool");
                let w = &mut pool.workers[i];
                w.pid = Some(hello.pid);
                w.ready = true;
                pool.start_failures = 0;
                return;
            }
            ToParent::Ok { id, ok } => (id, Ok(ok), None),
            ToParent::Err { id, err } => (id, Err(err), None),
            ToParent::Bytes { id, bytes } => (id, Ok(serde_json::Value::Null), Some(bytes)),
            _ => return,
        };
        let now = clock.now;
        let pool = self.pools.get_mut(&kind).expect("located pool");
        let w = &mut pool.workers[i];
        let Some(head) = w.in_flight.pop_front() else {
            return;
        };
        if head.id != id {
            let pid = w.pid.unwrap_or(0);
            let _ = self.notices.send(Notice {
                task: Some(id),
                message: format!(
                    "worker {pid} answered task {id} while task {} was expected; stopping it",
                    head.id
                ),
            });
            w.in_flight.push_front(head);
            self.stop_worker(kind, i, StopCause::Cancelled("protocol error".into()));
            return;
        }
        let runtime = match (clock.share, w.head_since) {
            (Some(share), _) => share,
            (None, Some(t)) => now.saturating_duration_since(t),
            (None, None) => Duration::ZERO,
        };
        let started = w.head_started_wall;
        let pid = w.pid;
        let slot = w.slot;
        w.served += 1;
        w.watch = Watch::default();
        if w.in_flight.is_empty() {
            w.head_since = None;
            w.head_started_wall = None;
        } else {
            // The next one began as this one ended.
            w.head_since = Some(w.head_since.map_or(now, |t| t + runtime).min(now));
            w.head_started_wall = Some(started.map_or_else(SystemTime::now, |t| t + runtime));
        }
        pool.mean_task = next_mean(pool.mean_task, runtime.as_secs_f64());
        if let Some(limit) = self.settings.recycle_after {
            if w.served >= limit && !w.retiring {
                w.retiring = true;
            }
        }
        if head.dropped {
            return;
        }
        let details = Details {
            started,
            runtime,
            exit: None,
            pid,
            slot: Some(slot),
            stdout: Output::Empty,
            stderr: Output::Empty,
            payload,
        };
        match result {
            Ok(value) => {
                if let Some(e) = self.ledger.succeed(id) {
                    self.finish(id, e, Outcome::Succeeded { value }, details);
                }
            }
            Err(err) => {
                let failure = if kind == PoolKind::Python {
                    Failure::Exception {
                        type_name: err.type_name,
                        message: err.message,
                        traceback: err.traceback,
                    }
                } else if err.type_name == "panic" {
                    Failure::Error {
                        message: format!("panicked: {}", err.message),
                    }
                } else {
                    Failure::Error {
                        message: err.message,
                    }
                };
                self.fail_attempt(id, failure, details);
            }
        }
    }
}
