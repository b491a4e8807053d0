//! core: many tasks at once. `Cluster::map` streams a long iterator in
//! slices (results exact and in input order, tasks of different functions
//! mixed in one batch), `submit_many` numbers tasks consecutively, results
//! of earlier submissions are kept for `recv`, and `withdraw` cancels what
//! has not begun while running tasks finish.

use std::time::{Duration, Instant};

use caiclust_core::{Cluster, Outcome, StartMethod, Task};
use caiclust_tests::wait_for;
use serde_json::json;

const FIXTURE: &str = env!("CARGO_BIN_EXE_caiclust-task-fixture");

fn cluster(workers: usize) -> Cluster {
    Cluster::builder()
        .workers(workers)
        .start_method(StartMethod::Spawn)
        .rust_worker(FIXTURE)
        .build()
        .unwrap()
}

#[test]
fn map_streams_a_long_iterator_in_input_order() {
    let c = cluster(2);
    // More than map keeps in play at once, two functions interleaved.
    let n = 60_000u64;
    let made = std::cell::Cell::new(0u64);
    let tasks = (0..n).map(|i| {
        made.set(made.get() + 1);
        if i % 3 == 0 {
            Task::rust("echo", json!({ "i": i }))
        } else {
            Task::rust("square", json!(i))
        }
    });
    let results = c.map(tasks);
    assert_eq!(made.get(), n);
    assert_eq!(results.len() as u64, n);
    let first = results[0].id;
    for (i, r) in (0u64..).zip(&results) {
        assert_eq!(r.id, first + i, "ids are consecutive, in input order");
        let want = if i % 3 == 0 {
            json!({ "i": i })
        } else {
            json!(i * i)
        };
        assert_eq!(r.value(), Some(&want), "task {i}: {:?}", r.outcome);
        assert_eq!(r.attempts, 1);
    }
    c.shutdown();
}

#[test]
fn results_of_earlier_submissions_stay_for_recv() {
    let c = cluster(2);
    let early: Vec<u64> = (0..3)
        .map(|i| c.submit(Task::rust("sleep_ms", json!(50 + i))))
        .collect();
    let ids = c.submit_many((0..1000).map(|i| Task::rust("square", json!(i))));
    assert_eq!(ids.len(), 1000);
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "submit_many numbers tasks consecutively"
    );
    assert!(ids[0] > *early.last().unwrap());
    let mapped = c.map((0..500).map(|i| Task::rust("square", json!(i))));
    assert_eq!(mapped.len(), 500);
    for (i, r) in (0i64..).zip(&mapped) {
        assert_eq!(r.value(), Some(&json!(i * i)));
    }
    // Everything else is still there, each once.
    let mut rest: Vec<u64> = c.results().map(|r| r.id).collect();
    rest.sort_unstable();
    let mut want: Vec<u64> = early.iter().copied().chain(ids).collect();
    want.sort_unstable();
    assert_eq!(rest, want);
    assert_eq!(c.outstanding(), 0);
}

#[test]
fn withdraw_cancels_what_has_not_begun_and_lets_running_tasks_finish() {
    let c = cluster(1);
    let dir = tempfile::tempdir().unwrap();
    let began = dir.path().join("began");
    let first = Task::rust(
        "mark_then_sleep_ms",
        json!([began.to_str().expect("a UTF-8 temp path"), 400]),
    );
    let ids = c.submit_many(
        std::iter::once(first).chain((1..30).map(|_| Task::rust("sleep_ms", json!(400)))),
    );
    // Wait until the first is running.
    assert!(
        wait_for(Duration::from_secs(30), || began.exists()),
        "the first task did not begin within 30 s"
    );
    let t0 = Instant::now();
    c.withdraw(ids.iter().copied());
    let results: Vec<_> = c.results().collect();
    let elapsed = t0.elapsed();
    assert_eq!(results.len(), 30);
    let ran: Vec<_> = results.iter().filter(|r| r.outcome.is_success()).collect();
    let withdrawn: Vec<_> = results
        .iter()
        .filter(
            |r| matches!(&r.outcome, Outcome::Cancelled { reason } if reason.contains("withdrawn")),
        )
        .collect();
    assert!(
        (1..=2).contains(&ran.len()),
        "the running task finished: {:?}",
        results.iter().map(|r| &r.outcome).collect::<Vec<_>>()
    );
    assert_eq!(ran[0].id, ids[0]);
    assert_eq!(ran.len() + withdrawn.len(), 30);
    assert!(
        withdrawn.iter().all(|r| r.attempts == 0),
        "withdrawn tasks never began"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "nothing waited for the withdrawn tasks: {elapsed:?}"
    );
}

/// Tiny tasks travel in one batch with a long one behind them: their
/// answers come back while it runs (within the worker's flush delay), not
/// when the batch ends; the long one's runtime is its own.
#[test]
fn answers_before_a_long_task_are_not_held_back() {
    let c = cluster(1);
    // Warm up, so that the cluster hands out large batches.
    let warm = c.map((0..2000).map(|i| Task::rust("square", json!(i))));
    assert!(warm.iter().all(|r| r.outcome.is_success()));
    caiclust_tests::batches::answers_not_held_back(
        &c,
        (0..200).map(|i| Task::rust("square", json!(i))).collect(),
        Task::rust("sleep_ms", json!(3000)),
    );
}
