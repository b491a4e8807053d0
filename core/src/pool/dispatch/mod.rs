//! Admission and dispatch: submitted tasks are taken into the ledger as
//! the queues run low, workers are started for the work there is, and
//! tasks are handed to ready workers in batches, as the policy
//! ([`policy`]) decides. Batches are written through each worker's own
//! input thread, so handing out never waits on a worker.

pub(crate) mod policy;

use std::collections::VecDeque;
use std::time::{Instant, SystemTime};

use super::events::Details;
use super::state::{CallPool, InFlight, Worker};
use super::{Scheduler, ADMIT_AHEAD};
use crate::ledger::{AfterFailure, Ledger, Retry};
use crate::task::{Failure, Outcome, PoolKind, StartCause, Task, TaskId, TaskKind};
use crate::worker::frame;
use crate::worker::protocol::CallRef;

impl Scheduler {
    /// Take pending tasks into the ledger and the queues: until enough
    /// are queued, or (`all`) every one, as a cancel, halt or kill needs.
    pub(super) fn admit(&mut self, all: bool) {
        let mut queued: usize = self.queues.values().map(VecDeque::len).sum();
        let ahead = ADMIT_AHEAD.max(self.settings.workers * 1024);
        while all || queued < ahead {
            let Some((next, tasks)) = self.pending.front_mut() else {
                return;
            };
            let Some(task) = tasks.next() else {
                self.pending.pop_front();
                continue;
            };
            let id = *next;
            *next += 1;
            self.admit_one(id, task);
            queued += 1;
        }
    }

    pub(super) fn admit_one(&mut self, id: TaskId, task: Task) {
        let pool = task.pool();
        self.ledger.add(id, task);
        if self.halted.is_some() || self.shutdown == Some(true) {
            let reason = self
                .halted
                .clone()
                .unwrap_or_else(|| "the cluster is shutting down".into());
            self.cancel_queued(id, &reason);
        } else {
            self.queues.entry(pool).or_default().push_back(id);
        }
    }

    /// Start workers and hand out tasks.
    pub(super) fn pump(&mut self) {
        if self.halted.is_some() {
            return;
        }
        self.admit(false);
        self.pump_commands();
        for kind in [PoolKind::Python, PoolKind::Rust] {
            self.pump_pool(kind);
        }
    }

    /// Start workers for `kind`'s queue and hand its tasks out.
    pub(super) fn pump_pool(&mut self, kind: PoolKind) {
        let queued = self.queues.get(&kind).map_or(0, VecDeque::len);
        if queued == 0 {
            // Retire workers that served their quota and are idle.
            self.retire_idle(kind);
            return;
        }
        self.pools.entry(kind).or_insert_with(CallPool::new);
        if self.fail_if_broken(kind) || !self.start_wanted_workers(kind, queued) {
            return;
        }
        self.retire_idle(kind);
        self.hand_out(kind, queued);
    }

    /// Start `kind`'s whole pool now (before any task); a worker that
    /// cannot start breaks the pool, as it would with the first task.
    pub(super) fn start_all_workers(&mut self, kind: PoolKind) {
        self.pools.entry(kind).or_insert_with(CallPool::new);
        for _ in 0..self.settings.workers {
            if let Err(message) = self.start_worker(kind) {
                if let Some(pool) = self.pools.get_mut(&kind) {
                    pool.broken = Some(message);
                }
                return;
            }
        }
    }

    /// A pool that cannot start workers fails its queued tasks, saying
    /// why; true when it did.
    fn fail_if_broken(&mut self, kind: PoolKind) -> bool {
        let Some(reason) = self.pools.get(&kind).and_then(|p| p.broken.clone()) else {
            return false;
        };
        let ids: Vec<TaskId> = self
            .queues
            .get_mut(&kind)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default();
        for id in ids {
            if self.ledger.start(id).is_none() {
                continue;
            }
            let failure = Failure::Start {
                message: reason.clone(),
                cause: StartCause::Other,
            };
            if let Some(AfterFailure::Final(e, f)) = self.ledger.fail(id, failure, Retry::Never) {
                self.finish(id, e, Outcome::Failed { failure: f }, Details::none());
            }
        }
        true
    }

    /// Start workers up to what the policy wants; false when one cannot
    /// be started (the pool is then broken).
    fn start_wanted_workers(&mut self, kind: PoolKind, queued: usize) -> bool {
        let Some(pool) = self.pools.get(&kind) else {
            return false;
        };
        let live = pool
            .workers
            .iter()
            .filter(|w| w.stopping.is_none() && !w.retiring)
            .count();
        let busy: usize = pool.workers.iter().map(|w| w.in_flight.len()).sum();
        let want = policy::workers_wanted(self.settings.workers, queued, busy);
        for _ in live..want {
            if let Err(message) = self.start_worker(kind) {
                if let Some(pool) = self.pools.get_mut(&kind) {
                    pool.broken = Some(message);
                }
                return false;
            }
        }
        true
    }

    /// Hand `kind`'s queued tasks to its ready workers, in batches.
    fn hand_out(&mut self, kind: PoolKind, queued: usize) {
        let Some(pool) = self.pools.get_mut(&kind) else {
            return;
        };
        let ready: Vec<usize> = (0..pool.workers.len())
            .filter(|&i| pool.workers[i].takes_tasks())
            .collect();
        if ready.is_empty() {
            return;
        }
        let recycle = self.settings.recycle_after;
        let mean_task = pool.mean_task;
        let batching = policy::batching(mean_task, queued, ready.len(), recycle);
        let now = Instant::now();
        let queue = self.queues.entry(kind).or_default();
        let isolated = &self.isolated;
        let ledger = &mut self.ledger;
        let mut frame = BatchWriter::default();
        for i in ready {
            let w = &mut pool.workers[i];
            let running = w.head_since.map_or(0.0, |t| (now - t).as_secs_f64());
            if !w.in_flight.is_empty() && policy::held_up(running, mean_task) {
                continue;
            }
            loop {
                // A worker running a suspect gets nothing else until it
                // answers.
                if !isolated.is_empty() && w.in_flight.iter().any(|f| isolated.contains(&f.id)) {
                    break;
                }
                let room = policy::room(batching, w.in_flight.len(), w.served, recycle);
                if room == 0 || queue.is_empty() || w.input.is_none() {
                    break;
                }
                let batch = policy::take_batch(
                    queue,
                    room,
                    w.in_flight.is_empty(),
                    |id| !isolated.is_empty() && isolated.contains(&id),
                    |id| is_call(ledger, id) && ledger.start(id).is_some(),
                );
                if batch.is_empty() {
                    break;
                }
                frame.send(w, &batch, ledger);
            }
        }
    }
}

/// Whether task `id` is a call (Python or Rust), as pools run.
fn is_call(ledger: &Ledger, id: TaskId) -> bool {
    ledger
        .get(id)
        .is_some_and(|e| matches!(e.task.kind, TaskKind::Python(_) | TaskKind::Rust(_)))
}

/// Writes batches to workers, reusing its buffers.
#[derive(Default)]
struct BatchWriter {
    ids: Vec<u64>,
}

impl BatchWriter {
    /// Hand `batch` (started in the ledger) to worker `w`.
    fn send(&mut self, w: &mut Worker, batch: &[TaskId], ledger: &Ledger) {
        if w.in_flight.is_empty() {
            w.head_since = Some(Instant::now());
            w.head_started_wall = Some(SystemTime::now());
        }
        w.in_flight
            .extend(batch.iter().map(|&id| InFlight { id, dropped: false }));
        // The tasks as borrowed from the ledger, sent in one frame.
        let calls: Vec<CallRef> = batch
            .iter()
            .filter_map(|&id| match &ledger.get(id)?.task.kind {
                TaskKind::Python(c) | TaskKind::Rust(c) => {
                    Some((id, c.function.as_str(), &c.args, c.payload.as_deref()))
                }
                TaskKind::Command(_) => None,
            })
            .collect();
        let frame = frame::encode_batch(&calls, &mut self.ids);
        let sent = frame.is_ok_and(|f| w.input.as_ref().is_some_and(|input| input.send(f)));
        if !sent {
            // The worker is going away; its EOF hands the tasks back.
            w.input = None;
        }
    }
}
