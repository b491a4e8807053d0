//! Timers: task timeouts, the kill that follows a stop's grace period,
//! and the hang watchdog (a running attempt whose process tree makes no
//! progress is inspected with the probe, off this thread; a named
//! hazard stops it).

use std::time::{Duration, Instant};

use super::events::Event;
use super::state::{StopCause, Watch};
use super::Scheduler;
use crate::messages::Notice;
use crate::task::TaskId;
use crate::tree::{self, StopSignal};
use crate::watchdog;

impl Scheduler {
    pub(super) fn diagnosed(
        &mut self,
        id: TaskId,
        pid: u32,
        stalled: Duration,
        cause: Option<String>,
        detail: String,
    ) {
        let message = match &cause {
            Some(c) => format!(
                "task {id}: no progress for {:.1} s in process {pid}; likely cause: {c} ({detail}); stopping it",
                stalled.as_secs_f64()
            ),
            None => format!(
                "task {id}: no progress for {:.1} s in process {pid} ({detail}); the probe found no known hazard, letting it run",
                stalled.as_secs_f64()
            ),
        };
        let _ = self.notices.send(Notice {
            task: Some(id),
            message,
        });
        let Some(cause) = cause else {
            return;
        };
        // Stop it if it is still that attempt.
        for (kind, p) in &self.pools {
            if let Some(i) = p
                .workers
                .iter()
                .position(|w| w.pid == Some(pid) && w.in_flight.front().map(|f| f.id) == Some(id))
            {
                let kind = *kind;
                self.stop_worker(kind, i, StopCause::Hung(cause));
                return;
            }
        }
        let mut to_stop = None;
        for s in &mut self.slots {
            if let Some(r) = s.running.as_mut() {
                if r.id == id && r.pid == Some(pid) && r.stopping.is_none() {
                    r.stopping = Some(StopCause::Hung(cause.clone()));
                    to_stop = Some(pid);
                }
            }
        }
        if let Some(pid) = to_stop {
            self.stop_tree(pid);
        }
    }

    /// TERM now, KILL after the grace period.
    pub(super) fn stop_tree(&mut self, pid: u32) {
        let pids = tree::signal_tree(pid, StopSignal::Term);
        self.kills
            .push((Instant::now() + self.settings.grace, pids));
    }

    pub(super) fn kill_now(&mut self, pid: u32) {
        tree::signal_tree(pid, StopSignal::Kill);
    }

    pub(super) fn tick(&mut self) {
        let now = Instant::now();
        let due: Vec<Vec<u32>> = {
            let (due, keep): (Vec<_>, Vec<_>) =
                self.kills.drain(..).partition(|(at, _)| *at <= now);
            self.kills = keep;
            due.into_iter().map(|(_, p)| p).collect()
        };
        for pids in due {
            for pid in pids {
                if tree::alive(pid) {
                    tree::signal_tree(pid, StopSignal::Kill);
                }
            }
        }
        self.reap_workers();
        self.check_timeouts(now);
        if let Some(stall) = self.settings.stall_after {
            self.watch(now, stall);
        }
    }

    pub(super) fn timeout_of(&self, id: TaskId) -> Option<Duration> {
        self.ledger
            .get(id)
            .and_then(|e| e.task.timeout)
            .or(self.settings.timeout)
    }

    pub(super) fn check_timeouts(&mut self, now: Instant) {
        let mut stop_workers = Vec::new();
        for (kind, p) in &self.pools {
            for (i, w) in p.workers.iter().enumerate() {
                let (Some(head), Some(since)) = (w.in_flight.front(), w.head_since) else {
                    continue;
                };
                if w.stopping.is_some() {
                    continue;
                }
                if let Some(t) = self.timeout_of(head.id) {
                    if now.duration_since(since) >= t {
                        stop_workers.push((*kind, i));
                    }
                }
            }
        }
        for (kind, i) in stop_workers {
            self.stop_worker(kind, i, StopCause::Timeout);
        }
        let mut stop_pids = Vec::new();
        let timeouts: Vec<Option<Duration>> = self
            .slots
            .iter()
            .map(|s| s.running.as_ref().and_then(|r| self.timeout_of(r.id)))
            .collect();
        for (s, t) in self.slots.iter_mut().zip(timeouts) {
            if let (Some(r), Some(t)) = (s.running.as_mut(), t) {
                if r.stopping.is_none() && now.duration_since(r.since) >= t {
                    r.stopping = Some(StopCause::Timeout);
                    if let Some(pid) = r.pid {
                        stop_pids.push(pid);
                    }
                }
            }
        }
        for pid in stop_pids {
            self.stop_tree(pid);
        }
    }

    /// The hang watchdog: a running attempt whose process tree used no CPU
    /// and had no running thread for `stall` is inspected with the probe.
    pub(super) fn watch(&mut self, now: Instant, stall: Duration) {
        let period = (stall / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let method = self.settings.start_method;
        let mut diagnose = Vec::new();
        let mut visit = |id: TaskId, pid: u32, since: Instant, watch: &mut Watch| {
            if watch.diagnosing || now.duration_since(since) < stall / 2 {
                return;
            }
            if watch
                .last
                .as_ref()
                .is_some_and(|(t, _)| now.duration_since(*t) < period)
            {
                return;
            }
            let Some(sample) = tree::sample_tree(pid) else {
                return;
            };
            if let Some((t, prev)) = &watch.last {
                // Stalled: either asleep (no CPU, no running thread), or
                // spinning in the kernel (sched_yield loops of a runtime
                // waiting for threads that do not exist): nearly all of its
                // CPU time is system time.
                // Asleep allows a trickle (under 2% of one CPU): helper
                // threads that poll, like Python's Pool handlers.
                let kind = crate::hang::stall_kind(
                    sample.cpu_ticks.saturating_sub(prev.cpu_ticks),
                    sample.sys_ticks.saturating_sub(prev.sys_ticks),
                    now.duration_since(*t),
                );
                let asleep = kind == Some(crate::hang::HangKind::Blocked);
                let spinning = kind == Some(crate::hang::HangKind::Spinning);
                if asleep || spinning {
                    let idle = *watch.idle_since.get_or_insert(*t);
                    if now.duration_since(idle) >= stall {
                        watch.diagnosing = true;
                        diagnose.push((
                            id,
                            pid,
                            now.duration_since(idle),
                            sample.clone(),
                            spinning,
                        ));
                    }
                } else {
                    watch.idle_since = None;
                }
            }
            watch.last = Some((now, sample));
        };
        for p in self.pools.values_mut() {
            for w in &mut p.workers {
                if let (Some(head), Some(since), Some(pid), None) =
                    (w.in_flight.front(), w.head_since, w.pid, &w.stopping)
                {
                    visit(head.id, pid, since, &mut w.watch);
                }
            }
        }
        for s in &mut self.slots {
            if let Some(r) = s.running.as_mut() {
                if let (Some(pid), None) = (r.pid, &r.stopping) {
                    visit(r.id, pid, r.since, &mut r.watch);
                }
            }
        }
        for (id, pid, stalled, sample, spinning) in diagnose {
            let events = self.events_tx.clone();
            let workers = self.settings.workers;
            std::thread::spawn(move || {
                let (cause, detail) = watchdog::diagnose(pid, method, workers, &sample, spinning);
                let _ = events.send(Event::Diagnosis {
                    id,
                    pid,
                    stalled,
                    cause,
                    detail,
                });
            });
        }
    }
}
