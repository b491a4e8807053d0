//! The ipyparallel backend's batches (issue #15, point 4), with real
//! ipyparallel from PyPI (`venv-ipp`) on loopback: tiny tasks travel to
//! the engines in batches; results, timeouts, retries and cancel stay per
//! task. Leftovers are checked as in `ipp_backend.rs`.
//!
//! Unix only: ipyparallel in the Linux fixture venv.
#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use caiclust_core::ipp::{IppBackend, IppEvent};
use caiclust_core::{Failure, Outcome, Task, TaskResult};
use serde_json::json;

mod ipp_support;
use ipp_support::*;

/// `pickle.dumps(((x, 1000), {}), protocol=2)`, by hand: PROTO 2,
/// BININT x, BININT 1000, TUPLE2, EMPTY_DICT, TUPLE2, STOP.
fn add_call(x: u64) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'J'];
    p.extend(u32::try_from(x).unwrap().to_le_bytes());
    p.push(b'J');
    p.extend(1000u32.to_le_bytes());
    p.extend([0x86, b'}', 0x86, b'.']);
    p
}

/// (a) JSON and pickled tiny tasks by the thousand: every result once,
/// right, from both engines, and much faster than one task at a time.
#[test]
fn thousands_of_tiny_tasks_come_back_exactly_once() {
    let s = setup("ipp-batch-many");
    let b = IppBackend::start(s.config(2)).unwrap();
    let run_dir = b.run_dir().unwrap().to_path_buf();
    let engine_pids: BTreeSet<u32> = b.engines().iter().map(|e| e.pid).collect();
    // JSON calls, then pickled ones.
    let (n, pickled) = (5000u64, 1000u64);
    let t0 = Instant::now();
    for id in 1..=n {
        b.submit(id, &Task::python("operator:add", json!([id, 1000])))
            .unwrap();
    }
    for id in n + 1..=n + pickled {
        b.submit(id, &Task::python_pickled("operator:add", add_call(id - n)))
            .unwrap();
    }
    // `collect` fails on a second result for one task.
    let (r, _) = collect(&b, (n + pickled) as usize, Duration::from_secs(120));
    let took = t0.elapsed();
    let ids: Vec<u64> = r.keys().copied().collect();
    assert_eq!(ids, (1..=n + pickled).collect::<Vec<_>>());
    for (id, res) in &r {
        if *id > n {
            // pickle.dumps(x + 1000, protocol=5) ends BININT2 x+1000, STOP.
            let p = res
                .payload()
                .unwrap_or_else(|| panic!("task {id}: {res:?}"));
            let [lo, hi] = u16::try_from(id - n + 1000).unwrap().to_le_bytes();
            assert!(p.ends_with(&[b'M', lo, hi, b'.']), "task {id}: {p:?}");
        } else {
            assert_eq!(value(res), &json!(id + 1000), "task {id}");
        }
        assert_eq!(res.attempts, 1, "task {id}");
        assert!(res.pid.is_some_and(|p| engine_pids.contains(&p)), "{res:?}");
    }
    let used: BTreeSet<u32> = r.values().filter_map(|res| res.pid).collect();
    assert_eq!(used, engine_pids, "both engines took batches");
    // One task at a time through the scheduler managed ~230-400 a second
    // (12-20 s for these); batches do it many times faster.
    assert!(
        took < Duration::from_secs(8),
        "{n} tiny tasks took {took:?}"
    );
    assert_no_more_results(&b);

    // What each task prints is its own, batched or not.
    let first = n + pickled + 1;
    let texts: Vec<String> = (0..300).map(|i| format!("line {i} of task")).collect();
    for (id, text) in (first..).zip(&texts) {
        b.submit(id, &Task::python("ipphelp:shout", json!([text])))
            .unwrap();
    }
    let (mut r, _) = collect(&b, texts.len(), Duration::from_secs(60));
    for (id, text) in (first..).zip(&texts) {
        let res = r.get_mut(&id).unwrap();
        assert_eq!(value(res), &json!(text.len()));
        assert_eq!(
            res.stdout.to_string_lossy(),
            format!("{text}\n"),
            "task {id}"
        );
    }
    assert_eq!(b.outstanding(), 0);
    drop(b);
    s.assert_clean(&run_dir);
}

/// A task in a batch ends as it does alone: values of every JSON kind,
/// exceptions, `SystemExit`, a value JSON cannot carry, a function that
/// does not resolve, printed text. Each kind runs once alone first (its
/// function's first call travels alone), then many times in batches.
#[test]
fn a_batch_gives_each_task_the_result_it_gets_alone() {
    let s = setup("ipp-batch-parity");
    let b = IppBackend::start(s.config(2)).unwrap();
    let run_dir = b.run_dir().unwrap().to_path_buf();
    let kinds: Vec<Task> = vec![
        Task::python("operator:add", json!([2, 3])),
        Task::python("operator:add", json!(["é\u{2028}", "\"x\""])),
        Task::python("operator:truediv", json!([1, 3])),
        Task::python("operator:not_", json!([0])),
        Task::python("builtins:dict", json!({"a": [1, null, {"b": 2.5}]})),
        Task::python("builtins:pow", json!([7, 70])),
        Task::python("builtins:tuple", json!([[1, "two"]])),
        Task::python("builtins:float", json!(["nan"])),
        Task::python("builtins:set", json!([[1, 2]])),
        Task::python("sys:exit", json!(["bye"])),
        Task::python("ipphelp:boom", json!(["no good"])),
        Task::python("ipphelp:shout", json!(["said"])),
        Task::python("ipphelp:no_such_function", json!([])),
        Task::python("nosuchmodule_xyz:f", json!([])),
        Task::python("math:pi", json!([])),
    ];
    // Alone: the first call of each function.
    let (mut alone, _) = run_all(&b, &kinds, Duration::from_secs(60));
    let alone_out: BTreeMap<u64, String> = alone
        .iter_mut()
        .map(|(id, r)| (*id, r.stdout.to_string_lossy()))
        .collect();
    // Batched: every kind many times over, interleaved.
    let copies = 40u64;
    let n = kinds.len() as u64;
    for round in 0..copies {
        for (k, task) in kinds.iter().enumerate() {
            b.submit(1000 + round * n + k as u64, task).unwrap();
        }
    }
    let (batched, _) = collect(&b, (copies * n) as usize, Duration::from_secs(120));
    for (id, mut res) in batched {
        let k = (id - 1000) % n;
        let reference = &alone[&(k + 1)];
        let what = format!(
            "task {id} ({:?}) batched: {res:?}\nalone: {reference:?}",
            kinds[k as usize]
        );
        match (&res.outcome, &reference.outcome) {
            (
                Outcome::Failed {
                    failure:
                        Failure::Exception {
                            type_name,
                            message,
                            traceback,
                        },
                },
                Outcome::Failed {
                    failure:
                        Failure::Exception {
                            type_name: t0,
                            message: m0,
                            traceback: tb0,
                        },
                },
            ) => {
                // The traceback's frames differ; its last line does not.
                assert_eq!((type_name, message), (t0, m0), "{what}");
                assert_eq!(traceback.lines().last(), tb0.lines().last(), "{what}");
            }
            (got, want) => assert_eq!(got, want, "{what}"),
        }
        assert_eq!(res.stdout.to_string_lossy(), alone_out[&(k + 1)], "{what}");
        assert_eq!(res.attempts, 1, "{what}");
    }
    // And the values are the expected ones (not merely equal).
    assert_eq!(value(&alone[&1]), &json!(5));
    assert_eq!(value(&alone[&2]), &json!("é\u{2028}\"x\""));
    assert!(value(&alone[&6]).is_number());
    assert!(
        matches!(&alone[&10].outcome, Outcome::Failed { failure: Failure::Exception { type_name, .. } } if type_name == "SystemExit")
    );
    assert_eq!(alone_out[&12], "said\n");
    assert_no_more_results(&b);
    drop(b);
    s.assert_clean(&run_dir);
}

/// (b) One slow call of a function whose calls are tiny travels in a
/// batch; it times out alone and is named, its neighbours run once.
#[test]
fn a_slow_task_among_tiny_ones_times_out_alone() {
    let s = setup("ipp-batch-timeout");
    let b = IppBackend::start(s.config(2)).unwrap();
    let run_dir = b.run_dir().unwrap().to_path_buf();
    let (n, slow) = (600u64, 300u64);
    let tasks: Vec<Task> = (1..=n)
        .map(|id| {
            let seconds = if id == slow { 60.0 } else { 0.0 };
            Task::python("ipphelp:nap", json!([id, seconds])).timeout(Duration::from_secs(2))
        })
        .collect();
    let t0 = Instant::now();
    let (r, events) = run_all(&b, &tasks, Duration::from_secs(60));
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert_eq!(
        r[&slow].outcome,
        Outcome::Failed {
            failure: Failure::TimedOut { after_ms: 2000 }
        }
    );
    assert_eq!(r[&slow].attempts, 1);
    for id in (1..=n).filter(|&id| id != slow) {
        assert_eq!(value(&r[&id]), &json!(id), "task {id}");
        // Its batch neighbours went again, no attempt counted.
        assert_eq!(r[&id].attempts, 1, "task {id}: {:?}", r[&id]);
        assert!(r[&id].history.is_empty(), "task {id}: {:?}", r[&id]);
    }
    assert!(
        events.iter().any(|e| matches!(e, IppEvent::Notice { task: Some(t), message }
            if *t == slow && message.contains(&format!("task {slow}")) && message.contains("rest of its batch"))),
        "the notice names the slow task: {events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, IppEvent::EngineDied { expected: true, tasks, .. } if tasks.contains(&slow))),
        "{events:#?}"
    );
    assert_no_more_results(&b);
    drop(b);
    s.assert_clean(&run_dir);
}

/// (c) An engine killed in the middle of a run of small tasks: every
/// task's one result arrives, the one running is retried on the other.
#[test]
fn killing_an_engine_mid_run_loses_nothing() {
    // The victim is the engine of the latest result; on a loaded machine
    // it may sit between two batches at the kill, holding nothing: the
    // run is then tried again (at most three times in all).
    for attempt in 1..=3 {
        if kill_an_engine_mid_run(attempt) {
            return;
        }
    }
    panic!("the killed engine held no batch in three runs");
}

/// One run of the test above: `false` when the killed engine held no
/// task (everything else still checked).
fn kill_an_engine_mid_run(attempt: u32) -> bool {
    let s = setup(&format!("ipp-batch-kill-{attempt}"));
    let mut config = s.config(2);
    config.retries = 1;
    let b = IppBackend::start(config).unwrap();
    let run_dir = b.run_dir().unwrap().to_path_buf();
    let marks = tempfile::tempdir().unwrap();
    let folder = marks.path().to_string_lossy().into_owned();
    let n = 1500u64;
    for id in 1..=n {
        b.submit(
            id,
            &Task::python("ipphelp:mark", json!([folder, id, 0.002])),
        )
        .unwrap();
    }
    // Some results first, then the engine of the latest one dies.
    let (mut r, mut events) = collect(&b, 300, Duration::from_secs(60));
    let last = r.values().max_by_key(|res| res.started).unwrap();
    let victim = last.pid.unwrap();
    assert!(b.engines().iter().any(|e| e.pid == victim));
    caiclust_core::tree::signal_tree(victim, caiclust_core::tree::StopSignal::Kill);
    let (rest, more) = collect(&b, (n - 300) as usize, Duration::from_secs(120));
    for (id, res) in rest {
        assert!(r.insert(id, res).is_none(), "two results for task {id}");
    }
    events.extend(more);
    assert_eq!(r.len() as u64, n);
    for (id, res) in &r {
        assert_eq!(value(res), &json!(id), "task {id}");
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, IppEvent::EngineDied { pid: Some(p), expected: false, .. } if *p == victim)),
        "{events:#?}"
    );
    // It died with (part of) a batch: the unfinished tasks it held.
    let lost: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            IppEvent::EngineDied { tasks, .. } => Some(tasks.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    eprintln!("the killed engine held {lost:?}");
    if lost.is_empty() {
        assert_no_more_results(&b);
        drop(b);
        s.assert_clean(&run_dir);
        return false;
    }
    // The task running on the victim went again (its only retry); none
    // other had an attempt counted.
    let retried: Vec<&TaskResult> = r.values().filter(|res| res.attempts > 1).collect();
    assert!(retried.len() <= 1, "{retried:#?}");
    for res in &retried {
        assert!(
            matches!(res.history.as_slice(), [Failure::WorkerDied { pid, .. }] if *pid == victim),
            "{res:?}"
        );
        assert_ne!(res.pid, Some(victim));
    }
    // Every task ran to its end; finished ones were not run again (one
    // may have finished in the very instant of the kill, its result still
    // inside the engine).
    let runs = runs_in(marks.path());
    assert_eq!(runs.len() as u64, n);
    let twice: Vec<_> = runs.iter().filter(|(_, &k)| k > 1).collect();
    assert!(
        twice.len() <= 1 && twice.iter().all(|(_, &k)| k == 2),
        "{twice:?}"
    );
    assert_no_more_results(&b);
    drop(b);
    s.assert_clean(&run_dir);
    true
}

/// (d) Cancelled tasks still queued behind batches are dropped: they
/// never run, no attempt counted; the rest runs once.
#[test]
fn cancelled_queued_tasks_never_run() {
    let s = setup("ipp-batch-cancel");
    let b = IppBackend::start(s.config(1)).unwrap();
    let run_dir = b.run_dir().unwrap().to_path_buf();
    let marks = tempfile::tempdir().unwrap();
    let folder = marks.path().to_string_lossy().into_owned();
    let n = 2000u64;
    for id in 1..=n {
        b.submit(
            id,
            &Task::python("ipphelp:mark", json!([folder, id, 0.001])),
        )
        .unwrap();
    }
    let (mut r, _) = collect(&b, 50, Duration::from_secs(60));
    // About two seconds of work are left on the one engine: the last
    // quarter is still queued.
    let cancelled = 1501..=n;
    for id in cancelled.clone() {
        b.cancel(id).unwrap();
    }
    let (rest, _) = collect(&b, (n - 50) as usize, Duration::from_secs(120));
    for (id, res) in rest {
        assert!(r.insert(id, res).is_none(), "two results for task {id}");
    }
    let runs = runs_in(marks.path());
    for (id, res) in &r {
        if cancelled.contains(id) {
            assert!(
                matches!(res.outcome, Outcome::Cancelled { .. }),
                "task {id}: {res:?}"
            );
            assert_eq!(res.attempts, 0, "task {id}: {res:?}");
            assert!(!runs.contains_key(id), "cancelled task {id} ran");
        } else {
            assert_eq!(value(res), &json!(id), "task {id}");
            assert_eq!(runs.get(id), Some(&1), "task {id}");
        }
    }
    assert_no_more_results(&b);
    // Still usable afterwards.
    b.submit(n + 1, &Task::python("operator:mul", json!([6, 7])))
        .unwrap();
    let (r, _) = collect(&b, 1, Duration::from_secs(30));
    assert_eq!(value(&r[&(n + 1)]), &json!(42));
    drop(b);
    s.assert_clean(&run_dir);
}

/// (d, continued) A task cancelled in a batch that waits for the one
/// engine (busy with a long task) never runs; the batch is taken back and
/// its other tasks run once each.
#[test]
fn a_cancelled_task_of_a_waiting_batch_never_runs() {
    let s = setup("ipp-batch-abort");
    let b = IppBackend::start(s.config(1)).unwrap();
    let run_dir = b.run_dir().unwrap().to_path_buf();
    let marks = tempfile::tempdir().unwrap();
    let folder = marks.path().to_string_lossy().into_owned();
    let mark = |id: u64| Task::python("ipphelp:mark", json!([folder, id, 0.0]));
    // The driver learns that `mark` is quick.
    for id in 1001..=1005 {
        b.submit(id, &mark(id)).unwrap();
    }
    collect(&b, 5, Duration::from_secs(60));
    // A long task, then a batch that waits for the engine behind it: the
    // driver hands both out together (the long one has been seen
    // starting only after that).
    b.submit(1, &Task::python("ipphelp:slow", json!([2])))
        .unwrap();
    for id in 2..=41 {
        b.submit(id, &mark(id)).unwrap();
    }
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "task 1 never started: {events:#?}"
        );
        match b.recv_timeout(Duration::from_millis(200)) {
            Some(IppEvent::Started { id: 1, .. }) => break,
            Some(ev) => events.push(ev),
            None => {}
        }
    }
    b.cancel(21).unwrap();
    let (r, _) = collect(&b, 41, Duration::from_secs(60));
    assert!(
        matches!(r[&21].outcome, Outcome::Cancelled { .. }),
        "{:?}",
        r[&21]
    );
    assert_eq!(r[&21].attempts, 0);
    assert!(value(&r[&1]).is_u64());
    let runs = runs_in(marks.path());
    assert!(!runs.contains_key(&21), "the cancelled task ran");
    for id in (2..=41).filter(|&id| id != 21) {
        assert_eq!(value(&r[&id]), &json!(id), "task {id}");
        assert_eq!(runs.get(&id), Some(&1), "task {id}");
        assert_eq!(r[&id].attempts, 1, "task {id}");
    }
    assert_no_more_results(&b);
    drop(b);
    s.assert_clean(&run_dir);
}

/// (d, continued) Withdrawing every task while a batch runs: the tasks of
/// the running batch go on and end once each with their own value, start
/// and run time (the driver then tracks them one by one); those still
/// queued are cancelled, never run and count no attempt. A stop with
/// thousands still queued then stops clean.
#[test]
fn withdrawing_mid_batch_keeps_the_running_ones_and_drops_the_queued() {
    let s = setup("ipp-batch-withdraw");
    let b = IppBackend::start(s.config(1)).unwrap();
    let run_dir = b.run_dir().unwrap().to_path_buf();
    let marks = tempfile::tempdir().unwrap();
    let folder = marks.path().to_string_lossy().into_owned();
    let mark = |id: u64| Task::python("ipphelp:mark", json!([folder, id, 0.001]));
    // The driver learns that `mark` takes a millisecond.
    for id in 100_001..=100_005 {
        b.submit(id, &mark(id)).unwrap();
    }
    collect(&b, 5, Duration::from_secs(60));
    let n = 3000u64;
    for id in 1..=n {
        b.submit(id, &mark(id)).unwrap();
    }
    // A batch of them runs: withdraw them all.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut early = BTreeMap::new();
    loop {
        assert!(Instant::now() < deadline, "no task of the batch started");
        match b.recv_timeout(Duration::from_millis(200)) {
            Some(IppEvent::Started { id, .. }) if id <= n => break,
            Some(IppEvent::Result(r)) => {
                early.insert(r.id, r);
            }
            _ => {}
        }
    }
    for id in 1..=n {
        b.withdraw(id).unwrap();
    }
    let (rest, _) = collect(&b, (n as usize) - early.len(), Duration::from_secs(120));
    let mut r = early;
    for (id, res) in rest {
        assert!(r.insert(id, res).is_none(), "two results for task {id}");
    }
    let runs = runs_in(marks.path());
    let (mut ran, mut withdrawn) = (0, 0);
    for (id, res) in &r {
        if matches!(res.outcome, Outcome::Cancelled { .. }) {
            withdrawn += 1;
            assert_eq!(res.attempts, 0, "task {id}: {res:?}");
            assert!(!runs.contains_key(id), "withdrawn task {id} ran");
        } else {
            ran += 1;
            assert_eq!(value(res), &json!(id), "task {id}");
            assert_eq!(runs.get(id), Some(&1), "task {id}");
            assert_eq!(res.attempts, 1, "task {id}: {res:?}");
            assert!(res.started.is_some(), "task {id}: {res:?}");
            assert!(
                res.runtime >= Duration::from_micros(900),
                "task {id} slept 1 ms: {res:?}"
            );
        }
    }
    assert!(ran > 0 && withdrawn > 0, "ran {ran}, withdrawn {withdrawn}");
    assert_no_more_results(&b);
    // Thousands queued (a batch out, the rest waiting) when the stop comes.
    for id in n + 1..=2 * n {
        b.submit(id, &mark(id)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(
        b.recv_timeout(Duration::from_millis(200)),
        Some(IppEvent::Result(_))
    ) {
        assert!(Instant::now() < deadline, "no result of the second run");
    }
    let report = b.shutdown();
    assert!(report.clean, "{report:?}");
    let runs = runs_in(marks.path());
    assert!(runs.values().all(|&k| k == 1), "a task ran twice: {runs:?}");
    assert!(
        (n + 1..=2 * n).any(|id| !runs.contains_key(&id)),
        "the stop came after every task had run"
    );
    s.assert_clean(&run_dir);
}
