//! Which processes have looked stalled for the whole stall period: a pure
//! state machine over CPU readings, one per process, fed once per sampling
//! period. It reads nothing itself; the evidence that a stalled process
//! waits in a threading runtime comes from a callback, asked only about
//! processes whose CPU use looks stalled.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{HangKind, Suspect};
use crate::tree::CLOCK_TICKS_PER_SEC;

/// How a process (or a tree) that used `cpu_ticks` of CPU, `sys_ticks` of
/// them in the kernel, over `window` looks: [`HangKind::Blocked`] under 2%
/// of one CPU (a trickle is allowed: helper threads that poll, like
/// Python's Pool handlers), [`HangKind::Spinning`] when 80% or more of the
/// CPU time was system time (`sched_yield` loops of a runtime waiting for
/// threads that do not exist), `None` when it works.
pub(crate) fn stall_kind(cpu_ticks: u64, sys_ticks: u64, window: Duration) -> Option<HangKind> {
    let window_ticks = window.as_secs_f64() * CLOCK_TICKS_PER_SEC;
    if window_ticks <= 0.0 {
        None
    } else if (cpu_ticks as f64) < 0.02 * window_ticks {
        Some(HangKind::Blocked)
    } else if sys_ticks * 10 >= cpu_ticks * 8 {
        Some(HangKind::Spinning)
    } else {
        None
    }
}

/// A process, told from a later one with its pid by its start time.
pub(super) type Key = (u32, u64);

/// One reading of a process's CPU time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reading {
    pub at: Instant,
    pub cpu_ticks: u64,
    pub sys_ticks: u64,
}

/// A stretch of time over which a process has looked stalled.
#[derive(Debug, Clone)]
struct Streak {
    how: HangKind,
    /// The reading it started from: its CPU use is judged over the whole
    /// stretch, so that one noisy period does not end it.
    from: Reading,
    runtime: Option<PathBuf>,
}

#[derive(Debug)]
struct Tracked {
    start_ticks: u64,
    last: Reading,
    streak: Option<Streak>,
    /// Handed to the diagnosis and not answered yet.
    diagnosing: bool,
}

/// The processes being watched.
#[derive(Debug)]
pub(super) struct Tracker {
    stall: Duration,
    procs: HashMap<u32, Tracked>,
}

impl Tracker {
    pub fn new(stall: Duration) -> Self {
        Self {
            stall,
            procs: HashMap::new(),
        }
    }

    /// Take one reading of `key`. `stopped` (by a signal or job control)
    /// is never stalled. `evidence(how)` is asked, only when its CPU use
    /// looks stalled in that way, whether it waits in a threading runtime:
    /// `Some(runtime)` when it does (the runtime when known).
    ///
    /// Returns the suspect when it has now looked stalled for the stall
    /// period and is not being diagnosed already.
    pub fn observe(
        &mut self,
        key: Key,
        stopped: bool,
        now: Reading,
        mut evidence: impl FnMut(HangKind) -> Option<Option<PathBuf>>,
    ) -> Option<Suspect> {
        let (pid, start_ticks) = key;
        let t = match self.procs.get_mut(&pid) {
            Some(t) if t.start_ticks == start_ticks => t,
            _ => {
                // New, or a new process with a reused pid: the first
                // reading is only a base.
                self.procs.insert(
                    pid,
                    Tracked {
                        start_ticks,
                        last: now,
                        streak: None,
                        diagnosing: false,
                    },
                );
                return None;
            }
        };
        let over = |from: &Reading| {
            stall_kind(
                now.cpu_ticks.saturating_sub(from.cpu_ticks),
                now.sys_ticks.saturating_sub(from.sys_ticks),
                now.at.saturating_duration_since(from.at),
            )
        };
        let continued = t
            .streak
            .take()
            .filter(|s| !stopped && over(&s.from) == Some(s.how))
            .and_then(|s| {
                evidence(s.how).map(|runtime| Streak {
                    runtime: runtime.or(s.runtime),
                    ..s
                })
            });
        t.streak = continued.or_else(|| {
            if stopped {
                return None;
            }
            let how = over(&t.last)?;
            let runtime = evidence(how)?;
            Some(Streak {
                how,
                from: t.last,
                runtime,
            })
        });
        t.last = now;
        let s = t.streak.as_ref()?;
        let stalled = now.at.saturating_duration_since(s.from.at);
        if t.diagnosing || stalled < self.stall {
            return None;
        }
        t.diagnosing = true;
        Some(Suspect {
            pid,
            how: s.how,
            runtime: s.runtime.clone(),
            stalled,
        })
    }

    /// The diagnosis of `key` is back. With a hang found: is the process
    /// still stalled (so the hang may be reported)? Without one, it is
    /// left alone until it has looked stalled for another stall period.
    pub fn diagnosed(&mut self, key: Key, found: bool) -> bool {
        let Some(t) = self.procs.get_mut(&key.0) else {
            return false;
        };
        if t.start_ticks != key.1 {
            return false;
        }
        t.diagnosing = false;
        if !found {
            t.streak = None;
        }
        t.streak.is_some()
    }

    /// Forget the processes not in `seen` (they exited).
    pub fn retain(&mut self, seen: &HashSet<Key>) {
        self.procs
            .retain(|pid, t| seen.contains(&(*pid, t.start_ticks)));
    }

    /// How many processes are tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.procs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(2);
    const PERIOD: Duration = Duration::from_millis(500);

    fn reading(t0: Instant, step: u32, cpu: u64, sys: u64) -> Reading {
        Reading {
            at: t0 + PERIOD * step,
            cpu_ticks: cpu,
            sys_ticks: sys,
        }
    }

    fn runtime() -> Option<Option<PathBuf>> {
        Some(Some(PathBuf::from("/usr/lib/libgomp.so.1")))
    }

    #[test]
    fn kinds_of_stall() {
        let w = Duration::from_secs(2); // 200 ticks
        assert_eq!(stall_kind(0, 0, w), Some(HangKind::Blocked));
        assert_eq!(stall_kind(3, 0, w), Some(HangKind::Blocked));
        assert_eq!(stall_kind(4, 0, w), None);
        assert_eq!(stall_kind(200, 160, w), Some(HangKind::Spinning));
        assert_eq!(stall_kind(200, 159, w), None);
        assert_eq!(stall_kind(0, 0, Duration::ZERO), None);
    }

    #[test]
    fn blocked_in_a_runtime_for_the_stall_is_a_suspect_once() {
        let t0 = Instant::now();
        let mut tr = Tracker::new(STALL);
        let key = (10, 1);
        let mut found = None;
        for step in 0..=8 {
            if let Some(s) = tr.observe(key, false, reading(t0, step, 5, 1), |_| runtime()) {
                assert!(found.is_none(), "a suspect is handed over once");
                found = Some((step, s));
            }
        }
        let (step, s) = found.expect("a suspect");
        // The first reading is a base; the stretch starts there.
        assert_eq!(step, 4);
        assert_eq!(s.how, HangKind::Blocked);
        assert_eq!(s.stalled, STALL);
        assert_eq!(s.runtime, Some(PathBuf::from("/usr/lib/libgomp.so.1")));
        assert!(tr.diagnosed(key, true), "still stalled");
    }

    #[test]
    fn idle_outside_a_runtime_is_never_a_suspect() {
        let t0 = Instant::now();
        let mut tr = Tracker::new(STALL);
        for step in 0..40 {
            assert_eq!(
                tr.observe((10, 1), false, reading(t0, step, 0, 0), |_| None),
                None
            );
        }
    }

    #[test]
    fn work_ends_the_stretch() {
        let t0 = Instant::now();
        let mut tr = Tracker::new(STALL);
        let key = (10, 1);
        let mut cpu = 0;
        for step in 0..40 {
            // Busy in user space one period in three.
            if step % 3 == 0 {
                cpu += 40;
            }
            assert_eq!(
                tr.observe(key, false, reading(t0, step, cpu, 0), |_| runtime()),
                None
            );
        }
    }

    #[test]
    fn spinning_is_judged_over_the_whole_stretch() {
        let t0 = Instant::now();
        let mut tr = Tracker::new(STALL);
        let key = (10, 1);
        let (mut cpu, mut sys) = (0, 0);
        let mut found = None;
        for step in 0..=10 {
            // 40 ticks a period; one period at 70% system time does not end
            // a stretch that averages above 80%.
            cpu += 40;
            sys += if step == 3 { 28 } else { 36 };
            if let Some(s) = tr.observe(key, false, reading(t0, step, cpu, sys), |how| {
                assert_eq!(how, HangKind::Spinning);
                runtime()
            }) {
                found.get_or_insert((step, s));
            }
        }
        let (step, s) = found.expect("a suspect");
        assert_eq!(step, 4);
        assert_eq!(s.how, HangKind::Spinning);
    }

    #[test]
    fn stopped_processes_are_not_stalled() {
        let t0 = Instant::now();
        let mut tr = Tracker::new(STALL);
        for step in 0..40 {
            assert_eq!(
                tr.observe((10, 1), true, reading(t0, step, 0, 0), |_| runtime()),
                None
            );
        }
    }

    #[test]
    fn no_finding_means_another_full_stall_before_the_next_look() {
        let t0 = Instant::now();
        let mut tr = Tracker::new(STALL);
        let key = (10, 1);
        let mut suspects = Vec::new();
        for step in 0..=12 {
            if tr
                .observe(key, false, reading(t0, step, 0, 0), |_| runtime())
                .is_some()
            {
                suspects.push(step);
                assert!(!tr.diagnosed(key, false));
            }
        }
        // Each next stretch starts from the reading of the last look: one
        // look per stall period.
        assert_eq!(suspects, vec![4, 8, 12]);
    }

    #[test]
    fn a_hang_found_after_the_process_worked_again_is_stale() {
        let t0 = Instant::now();
        let mut tr = Tracker::new(STALL);
        let key = (10, 1);
        for step in 0..=4 {
            tr.observe(key, false, reading(t0, step, 0, 0), |_| runtime());
        }
        // Diagnosing; meanwhile it works.
        tr.observe(key, false, reading(t0, 5, 50, 0), |_| runtime());
        assert!(!tr.diagnosed(key, true));
    }

    #[test]
    fn a_reused_pid_starts_afresh_and_exited_ones_are_forgotten() {
        let t0 = Instant::now();
        let mut tr = Tracker::new(STALL);
        for step in 0..4 {
            tr.observe((10, 1), false, reading(t0, step, 0, 0), |_| runtime());
        }
        // Same pid, another process: its first reading is a base again.
        for step in 4..8 {
            assert_eq!(
                tr.observe((10, 2), false, reading(t0, step, 0, 0), |_| runtime()),
                None
            );
        }
        assert!(!tr.diagnosed((10, 1), true), "the old process is gone");
        tr.retain(&HashSet::from([(11, 1)]));
        assert_eq!(tr.len(), 0);
    }
}
