//! The ledger: every task's attempts, from submission to its one final
//! result. The scheduler moves tasks through it; the ledger guarantees that
//! each task ends exactly once, however attempts crash, time out or are
//! handed back unstarted.

use std::collections::VecDeque;

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

/// What is left of a task that is over: how it got there (the task
/// itself is dropped where it lay).
#[derive(Debug)]
pub(crate) struct Closed {
    /// Attempts started.
    pub attempts: u32,
    /// Failures of earlier attempts.
    pub history: Vec<Failure>,
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
    /// It is over, with the last failure.
    Final(Closed, Failure),
}

/// Entries by id: ids are handed out in sequence, so a window of slots
/// from the oldest open task on (no hashing on the hot path).
#[derive(Debug)]
pub(crate) struct Ledger {
    slots: VecDeque<Option<Entry>>,
    /// The id of `slots[0]`.
    base: TaskId,
    open: usize,
    max_attempts: u32,
}

impl Ledger {
    pub fn new(max_attempts: u32) -> Ledger {
        Ledger {
            slots: VecDeque::new(),
            base: 1,
            open: 0,
            max_attempts: max_attempts.max(1),
        }
    }

    fn index(&self, id: TaskId) -> Option<usize> {
        id.checked_sub(self.base)
            .map(|i| i as usize)
            .filter(|&i| i < self.slots.len())
    }

    fn slot(&mut self, id: TaskId) -> Option<&mut Entry> {
        let i = self.index(id)?;
        self.slots[i].as_mut()
    }

    fn take(&mut self, id: TaskId) -> Option<Closed> {
        let i = self.index(id)?;
        let e = self.slots[i].as_mut()?;
        let closed = Closed {
            attempts: e.attempts,
            history: std::mem::take(&mut e.history),
        };
        self.slots[i] = None;
        self.open -= 1;
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        if self.slots.is_empty() {
            // Nothing open: the next id starts the window afresh.
            self.base = id + 1;
        }
        Some(closed)
    }

    pub fn add(&mut self, id: TaskId, task: Task) {
        if self.slots.is_empty() {
            self.base = id;
        }
        if id < self.base {
            // An id older than the window (submitted late by another
            // thread): grow the window backwards.
            for _ in id..self.base {
                self.slots.push_front(None);
            }
            self.base = id;
        }
        let i = (id - self.base) as usize;
        while self.slots.len() <= i {
            self.slots.push_back(None);
        }
        if self.slots[i].is_none() {
            self.open += 1;
        }
        self.slots[i] = Some(Entry {
            task,
            attempts: 0,
            history: Vec::new(),
            running: false,
            free: 0,
        });
    }

    pub fn get(&self, id: TaskId) -> Option<&Entry> {
        self.index(id).and_then(|i| self.slots[i].as_ref())
    }

    pub fn len(&self) -> usize {
        self.open
    }

    pub fn ids(&self) -> Vec<TaskId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_some())
            .map(|(i, _)| self.base + i as TaskId)
            .collect()
    }

    /// A new attempt starts; returns its number (from 1), or `None` when
    /// the task is not held or already running.
    pub fn start(&mut self, id: TaskId) -> Option<u32> {
        let e = self.slot(id)?;
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
        if let Some(e) = self.slot(id) {
            if e.running {
                e.running = false;
                e.attempts = e.attempts.saturating_sub(1);
            }
        }
    }

    /// The running attempt succeeded: the task is over.
    pub fn succeed(&mut self, id: TaskId) -> Option<Closed> {
        match self.get(id) {
            Some(e) if e.running => self.take(id),
            _ => None,
        }
    }

    /// The running attempt failed: retry while attempts remain and
    /// `retryable`, else the task is over.
    pub fn fail(&mut self, id: TaskId, failure: Failure, retry: Retry) -> Option<AfterFailure> {
        let max_attempts = self.max_attempts;
        let e = self.slot(id)?;
        if !e.running {
            return None;
        }
        e.running = false;
        let counted = e.attempts - e.free;
        let again = match retry {
            Retry::Never => false,
            Retry::Counted => counted < max_attempts,
            Retry::Free => {
                e.free += 1;
                true
            }
        };
        if again {
            e.history.push(failure);
            return Some(AfterFailure::Retry);
        }
        let closed = self.take(id)?;
        Some(AfterFailure::Final(closed, failure))
    }

    /// The task is over without a result (cancelled, halted).
    pub fn cancel(&mut self, id: TaskId) -> Option<Closed> {
        self.take(id)
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

    #[test]
    fn ids_may_arrive_out_of_order_and_with_gaps() {
        let mut l = Ledger::new(1);
        for id in [5, 3, 9, 4] {
            l.add(id, Task::command(["true"]));
        }
        assert_eq!(l.len(), 4);
        assert_eq!(l.ids(), vec![3, 4, 5, 9]);
        for id in [4, 9, 3, 5] {
            assert!(l.start(id).is_some());
            assert!(l.succeed(id).is_some(), "{id}");
            assert!(l.get(id).is_none());
        }
        assert_eq!(l.len(), 0);
        l.add(10, Task::command(["true"]));
        assert_eq!(l.ids(), vec![10]);
        assert!(l.cancel(10).is_some() && l.cancel(10).is_none());
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
