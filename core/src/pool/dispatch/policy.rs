//! The dispatch policy, as pure functions of what the scheduler knows:
//! how many workers a pool wants, how many tasks a worker gets at once
//! (tiny tasks travel in batches, long ones one by one), and which tasks
//! make up the next batch (a suspect of a crash runs alone). No I/O, no
//! clock: every rule here is unit-tested.

use std::collections::VecDeque;

use crate::task::TaskId;

/// A batch is sized to take about this long to run, so that answers keep
/// flowing and a batch never holds back a timeout's victim for long.
const BATCH_SECONDS: f64 = 0.002;

/// The most tasks in one batch.
const MAX_BATCH: usize = 512;

/// How the tasks of one pool are handed out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Batching {
    /// The most tasks in one batch.
    pub window: usize,
    /// The most tasks a worker holds (running and waiting in its input).
    pub depth: usize,
}

/// How many workers a pool wants: up to `limit`, no more than there is
/// work for (`queued` waiting, `busy` handed out), and at least one.
pub(crate) fn workers_wanted(limit: usize, queued: usize, busy: usize) -> usize {
    limit.min(queued + busy).max(1)
}

/// The batching for a pool whose tasks took `mean_task` seconds on
/// average (0: none finished yet), with `queued` tasks waiting for
/// `ready` workers, and workers recycled after `recycle_after` tasks.
///
/// Batches hold about [`BATCH_SECONDS`] of work, and no more than a fair
/// share of what is queued (every ready worker gets some). With batches
/// of more than one task, a worker holds two: the second waits in its
/// input while it runs the first, so it never idles waiting for the
/// parent.
pub(crate) fn batching(
    mean_task: f64,
    queued: usize,
    ready: usize,
    recycle_after: Option<u64>,
) -> Batching {
    let fair_share = queued.div_ceil(ready.max(1)).max(1);
    let by_time = if mean_task > 0.0 {
        ((BATCH_SECONDS / mean_task) as usize).clamp(1, MAX_BATCH)
    } else {
        1
    };
    let mut window = by_time.min(fair_share);
    if let Some(n) = recycle_after {
        window = window.min(usize::try_from(n).unwrap_or(usize::MAX).max(1));
    }
    let depth = if window > 1 { 2 * window } else { window };
    Batching { window, depth }
}

/// How many more tasks a worker may take now: it holds `in_flight`, has
/// answered `served`, and is recycled after `recycle_after` tasks.
pub(crate) fn room(
    batching: Batching,
    in_flight: usize,
    served: u64,
    recycle_after: Option<u64>,
) -> usize {
    let room = batching
        .depth
        .saturating_sub(in_flight)
        .min(batching.window);
    match recycle_after {
        Some(n) => {
            let left = n.saturating_sub(served + in_flight as u64);
            room.min(usize::try_from(left).unwrap_or(usize::MAX))
        }
        None => room,
    }
}

/// A task that has run this many times the mean (and at least
/// [`HELD_UP_AFTER`] seconds) holds its worker up.
const HELD_UP_FACTOR: f64 = 10.0;
const HELD_UP_AFTER: f64 = 0.02;

/// Whether a worker whose current task has run `running` seconds, in a
/// pool whose tasks take `mean_task` on average, is held up by a long
/// task: it gets no more tasks until it answers, so that tasks queue for
/// workers that will run them sooner.
pub(crate) fn held_up(running: f64, mean_task: f64) -> bool {
    running > (HELD_UP_FACTOR * mean_task).max(HELD_UP_AFTER)
}

/// Take the next batch for a worker from the front of `queue`: at most
/// `room` tasks that `start` accepts (a task it refuses is dropped from
/// the queue). A suspect of a crash (`is_suspect`) runs alone: it is
/// taken only into an empty batch for an idle worker, and ends the
/// batch.
pub(crate) fn take_batch(
    queue: &mut VecDeque<TaskId>,
    room: usize,
    worker_idle: bool,
    is_suspect: impl Fn(TaskId) -> bool,
    mut start: impl FnMut(TaskId) -> bool,
) -> Vec<TaskId> {
    let mut batch = Vec::with_capacity(room);
    while batch.len() < room {
        let Some(&next) = queue.front() else { break };
        let alone = is_suspect(next);
        if alone && !(batch.is_empty() && worker_idle) {
            break;
        }
        queue.pop_front();
        if start(next) {
            batch.push(next);
        }
        if alone {
            break;
        }
    }
    batch
}

/// The mean task time after one more task took `seconds` (an
/// exponential average that follows a change of workload within a few
/// dozen tasks).
pub(crate) fn next_mean(mean: f64, seconds: f64) -> f64 {
    if mean == 0.0 {
        seconds
    } else {
        0.8 * mean + 0.2 * seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(ids: std::ops::RangeInclusive<TaskId>) -> VecDeque<TaskId> {
        ids.collect()
    }

    #[test]
    fn workers_are_started_for_the_work_there_is() {
        assert_eq!(workers_wanted(8, 3, 0), 3);
        assert_eq!(workers_wanted(8, 3, 2), 5);
        assert_eq!(workers_wanted(2, 100, 0), 2);
        // Nothing queued or busy still keeps one worker.
        assert_eq!(workers_wanted(4, 0, 0), 1);
    }

    #[test]
    fn tasks_go_one_by_one_until_their_length_is_known() {
        let b = batching(0.0, 10_000, 2, None);
        assert_eq!(
            b,
            Batching {
                window: 1,
                depth: 1
            }
        );
    }

    #[test]
    fn long_tasks_go_one_by_one_and_a_worker_holds_only_one() {
        let b = batching(1.5, 10_000, 2, None);
        assert_eq!(
            b,
            Batching {
                window: 1,
                depth: 1
            }
        );
    }

    #[test]
    fn tiny_tasks_go_in_batches_of_about_two_milliseconds() {
        // 10 us each: 200 per batch, and a second batch waits.
        let b = batching(10e-6, 10_000, 2, None);
        assert_eq!(
            b,
            Batching {
                window: 200,
                depth: 400
            }
        );
        // Far tinier: capped.
        assert_eq!(batching(1e-9, 1_000_000, 2, None).window, MAX_BATCH);
    }

    #[test]
    fn a_batch_is_no_more_than_a_fair_share_of_the_queue() {
        // 10 queued for 4 ready workers: 3 each at most, so all get work.
        let b = batching(1e-6, 10, 4, None);
        assert_eq!(
            b,
            Batching {
                window: 3,
                depth: 6
            }
        );
        // No ready worker counted as one.
        assert_eq!(batching(1e-6, 5, 0, None).window, 5);
    }

    #[test]
    fn recycling_caps_the_batch_and_the_room() {
        let b = batching(1e-6, 1000, 2, Some(3));
        assert_eq!(b.window, 3);
        // A worker that answered 2 of its 3 gets one more, not a batch.
        assert_eq!(room(b, 0, 2, Some(3)), 1);
        assert_eq!(room(b, 1, 2, Some(3)), 0);
        // recycle_after 0 is treated as 1 for the window.
        assert_eq!(batching(1e-6, 1000, 2, Some(0)).window, 1);
    }

    #[test]
    fn room_is_what_the_depth_leaves_up_to_a_window() {
        let b = Batching {
            window: 10,
            depth: 20,
        };
        assert_eq!(room(b, 0, 0, None), 10);
        assert_eq!(room(b, 15, 0, None), 5);
        assert_eq!(room(b, 20, 0, None), 0);
        assert_eq!(room(b, 25, 0, None), 0);
    }

    #[test]
    fn a_long_task_among_tiny_ones_holds_its_worker_up() {
        // Tiny tasks (10 us): a task running 50 ms is long.
        assert!(held_up(0.05, 10e-6));
        assert!(!held_up(0.01, 10e-6));
        // One-second tasks: 5 s is not long, 11 s is.
        assert!(!held_up(5.0, 1.0));
        assert!(held_up(11.0, 1.0));
        // Nothing measured yet: only past the floor.
        assert!(!held_up(0.0, 0.0));
        assert!(held_up(0.03, 0.0));
    }

    #[test]
    fn a_batch_takes_from_the_front_up_to_the_room() {
        let mut q = queue(1..=10);
        let batch = take_batch(&mut q, 4, true, |_| false, |_| true);
        assert_eq!(batch, vec![1, 2, 3, 4]);
        assert_eq!(q.front(), Some(&5));
    }

    #[test]
    fn tasks_that_do_not_start_are_dropped_not_batched() {
        let mut q = queue(1..=6);
        let batch = take_batch(&mut q, 3, true, |_| false, |id| id % 2 == 0);
        // 1, 3 and 5 refused (dropped), 2, 4, 6 taken.
        assert_eq!(batch, vec![2, 4, 6]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_suspect_runs_alone_on_an_idle_worker() {
        let suspect = |id| id == 3;
        // At the front, for an idle worker: alone.
        let mut q = queue(3..=6);
        assert_eq!(take_batch(&mut q, 4, true, suspect, |_| true), vec![3]);
        assert_eq!(q.front(), Some(&4));
        // For a busy worker: not at all.
        let mut q = queue(3..=6);
        assert!(take_batch(&mut q, 4, false, suspect, |_| true).is_empty());
        assert_eq!(q.len(), 4);
        // Behind other tasks: the batch ends before it.
        let mut q = queue(1..=6);
        assert_eq!(take_batch(&mut q, 4, true, suspect, |_| true), vec![1, 2]);
        assert_eq!(q.front(), Some(&3));
    }

    #[test]
    fn an_empty_queue_or_no_room_gives_an_empty_batch() {
        let mut q = VecDeque::new();
        assert!(take_batch(&mut q, 4, true, |_| false, |_| true).is_empty());
        let mut q = queue(1..=3);
        assert!(take_batch(&mut q, 0, true, |_| false, |_| true).is_empty());
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn the_mean_follows_the_workload() {
        assert_eq!(next_mean(0.0, 0.5), 0.5);
        let mut m = 1.0;
        for _ in 0..40 {
            m = next_mean(m, 0.001);
        }
        assert!(m < 0.002, "{m}");
    }
}
