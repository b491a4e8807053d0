//! The ledger: every task's attempts, from submission to its one final
//! result. The scheduler moves tasks through it; the ledger guarantees that
//! each task ends exactly once, however attempts crash, time out or are
//! handed back unstarted.

use std::collections::HashMap;

use crate::task::{Failure, Task, TaskId};

/// A task the ledger still holds.
#[derive(Debug)]
pub(crate) struct Entry {
    pub task: Task,
    /// Attempts started (including the running one).
    pub attempts: u32,
    /// Failures of earlier attempts.
    pub history: Vec<Failure>,
    pub running: bool,
    /// Attempts retried for free: their worker died under them, which may
    /// not have been their fault.
    pub free: u32,
}

/// May a failed attempt be retried?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// While attempts remain.
    Counted,
    /// Once more, not counting this attempt (its worker died under it: the
    /// crash may belong to a task before it, or to the worker itself).
    Free,
    Never,
}

/// What a failed attempt leads to.
#[derive(Debug)]
pub(crate) enum AfterFailure {
    /// Queue it again.
    Retry,
    /// It is over: the entry, with the last failure.
    Final(Box<Entry>, Failure),
}

#[derive(Debug)]
pub(crate) struct Ledger {
    entries: HashMap<TaskId, Entry>,
    max_attempts: u32,
}

impl Ledger {
    pub fn new(max_attempts: u32) -> Ledger {
        Ledger {
            entries: HashMap::new(),
            max_attempts: max_attempts.max(1),
        }
    }

    pub fn add(&mut self, id: TaskId, task: Task) {
        self.entries.insert(
            id,
            Entry {
                task,
                attempts: 0,
                history: Vec::new(),
                running: false,
                free: 0,
            },
        );
    }

    pub fn get(&self, id: TaskId) -> Option<&Entry> {
        self.entries.get(&id)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn ids(&self) -> Vec<TaskId> {
        let mut v: Vec<TaskId> = self.entries.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// A new attempt starts; returns its number (from 1), or `None` when
    /// the task is not held or already running.
    pub fn start(&mut self, id: TaskId) -> Option<u32> {
        let e = self.entries.get_mut(&id)?;
        if e.running {
            return None;
        }
        e.running = true;
        e.attempts += 1;
        Some(e.attempts)
    }

    /// The attempt was handed out but never began (its worker died with it
    /// still queued): it does not count.
    pub fn unstart(&mut self, id: TaskId) {
        if let Some(e) = self.entries.get_mut(&id) {
            if e.running {
                e.running = false;
                e.attempts = e.attempts.saturating_sub(1);
            }
        }
    }

    /// The running attempt succeeded: the task is over.
    pub fn succeed(&mut self, id: TaskId) -> Option<Entry> {
        match self.entries.get(&id) {
            Some(e) if e.running => self.entries.remove(&id),
            _ => None,
        }
    }

    /// The running attempt failed: retry while attempts remain and
    /// `retryable`, else the task is over.
    pub fn fail(&mut self, id: TaskId, failure: Failure, retry: Retry) -> Option<AfterFailure> {
        let e = self.entries.get_mut(&id)?;
        if !e.running {
            return None;
        }
        e.running = false;
        let counted = e.attempts - e.free;
        let again = match retry {
            Retry::Never => false,
            Retry::Counted => counted < self.max_attempts,
            Retry::Free => {
                e.free += 1;
                true
            }
        };
        if again {
            e.history.push(failure);
            return Some(AfterFailure::Retry);
        }
        let e = self.entries.remove(&id)?;
        Some(AfterFailure::Final(Box::new(e), failure))
    }

    /// The task is over without a result (cancelled, halted).
    pub fn cancel(&mut self, id: TaskId) -> Option<Entry> {
        self.entries.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, VecDeque};

    #[derive(Debug, Clone)]
    enum Op {
        Submit,
        Dispatch,
        Unstart(usize),
        Succeed(usize),
        Fail(usize),
        Crash(usize),
        Cancel(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => Just(Op::Submit),
            3 => Just(Op::Dispatch),
            1 => any::<usize>().prop_map(Op::Unstart),
            2 => any::<usize>().prop_map(Op::Succeed),
            2 => any::<usize>().prop_map(Op::Fail),
            1 => any::<usize>().prop_map(Op::Crash),
            1 => any::<usize>().prop_map(Op::Cancel),
        ]
    }

    proptest! {
        /// Whatever happens to attempts, every submitted task ends exactly
        /// once, never runs more than max_attempts times, and nothing ends
        /// that was not submitted.
        #[test]
        fn every_task_ends_exactly_once(ops in proptest::collection::vec(op(), 1..300), max_attempts in 1u32..4) {
            let mut ledger = Ledger::new(max_attempts);
            let mut queue: VecDeque<TaskId> = VecDeque::new();
            let mut running: Vec<TaskId> = Vec::new();
            let mut ended: BTreeMap<TaskId, u32> = BTreeMap::new();
            let mut next = 1;
            let end = |id: TaskId, attempts: u32, ended: &mut BTreeMap<TaskId, u32>| {
                prop_assert!(attempts <= max_attempts + 1, "{} attempts", attempts);
                *ended.entry(id).or_default() += 1;
                Ok(())
            };
            for op in ops {
                match op {
                    Op::Submit => {
                        ledger.add(next, Task::command(["true"]));
                        queue.push_back(next);
                        next += 1;
                    }
                    Op::Dispatch => {
                        if let Some(id) = queue.pop_front() {
                            prop_assert!(ledger.start(id).is_some());
                            running.push(id);
                        }
                    }
                    Op::Unstart(i) if !running.is_empty() => {
                        let id = running.remove(i % running.len());
                        ledger.unstart(id);
                        queue.push_front(id);
                    }
                    Op::Succeed(i) if !running.is_empty() => {
                        let id = running.remove(i % running.len());
                        let e = ledger.succeed(id).unwrap();
                        end(id, e.attempts, &mut ended)?;
                    }
                    Op::Fail(i) | Op::Crash(i) if !running.is_empty() => {
                        let id = running.remove(i % running.len());
                        // A crash is retried for free once, as the scheduler does.
                        let retry = match op {
                            Op::Crash(_) if ledger.get(id).unwrap().free == 0 => Retry::Free,
                            _ => Retry::Counted,
                        };
                        match ledger.fail(id, Failure::Error { message: "x".into() }, retry).unwrap() {
                            AfterFailure::Retry => queue.push_back(id),
                            AfterFailure::Final(e, _) => end(id, e.attempts, &mut ended)?,
                        }
                    }
                    Op::Cancel(i) if !queue.is_empty() => {
                        let id = queue.remove(i % queue.len()).unwrap();
                        let e = ledger.cancel(id).unwrap();
                        end(id, e.attempts, &mut ended)?;
                    }
                    _ => {}
                }
                // A task is held by the ledger exactly when it has not ended.
                for id in 1..next {
                    prop_assert_eq!(ledger.get(id).is_some(), !ended.contains_key(&id));
                }
            }
            // Drain: everything left runs to success.
            while let Some(id) = queue.pop_front().or_else(|| running.pop()) {
                if !ledger.get(id).unwrap().running {
                    ledger.start(id).unwrap();
                }
                let e = ledger.succeed(id).unwrap();
                end(id, e.attempts, &mut ended)?;
            }
            prop_assert_eq!(ledger.len(), 0);
            for id in 1..next {
                prop_assert_eq!(ended.get(&id).copied(), Some(1), "task {} ended {:?} times", id, ended.get(&id));
            }
            // Ended twice is impossible: a second succeed/fail/cancel is refused.
            prop_assert!(ledger.succeed(1).is_none() && ledger.cancel(1).is_none());
        }
    }
}
