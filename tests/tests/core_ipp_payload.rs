//! core: pickled calls ([`Task::python_pickled`]) on ipyparallel engines
//! (real ipyparallel from `venv-ipp`, controller and engines on loopback,
//! started by the core). The engine runs them as a local worker does
//! (python_worker.py's `call_pickled`): the same payload layout, "CCB5"
//! out-of-band buffers included, the same result encoding and the same
//! exceptions; bytes of several MiB arrive intact both ways. Timeouts,
//! cancellation and retries treat them as JSON tasks; JSON tasks next to
//! them are unchanged. Nothing is left running afterwards.
//!
//! Unix only: ipyparallel in the Linux fixture venv.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use caiclust_core::ipp::{IppBackend, IppConfig, IppEvent};
use caiclust_core::rules::Backend;
use caiclust_core::{Cluster, Failure, Outcome, Task, TaskResult};
use caiclust_tests::{fixtures, orphans_after, unique_tag, TAG_VAR};
use serde_json::{json, Value};

/// Engine-side helpers, importable through `PYTHONPATH`.
const HELPERS: &str = r#"
import time

def bump(a):
    # In place: fails unless the array's memory is writable, as it is on a
    # local worker.
    a += 1
    return a

def unpicklable():
    return lambda: 1

def slow(seconds):
    time.sleep(seconds)
    return "done"

def stubborn(seconds):
    # Ignores KeyboardInterrupt: only killing its engine stops it.
    end = time.time() + seconds
    while time.time() < end:
        try:
            time.sleep(0.05)
        except KeyboardInterrupt:
            pass
    return "finished"
"#;

/// Writes, with the venv's own Python, `NAME.call` (the payload sent: a
/// pickled `(args, kwargs)`, "CCB5" for out-of-band buffers) and
/// `NAME.want` (the result expected, encoded as the worker encodes it)
/// for each case. The encoders are python_worker.py's, and the script
/// checks that its "CCB5" payloads decode.
const MAKE_PICKLES: &str = r#"
import pickle, random, sys
import numpy as np
out = sys.argv[1]

def dumps_oob(value):
    buffers = []
    main = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    if not buffers:
        return main
    raws = [b.raw() for b in buffers]
    head = [b"CCB5", len(raws).to_bytes(4, "little"), len(main).to_bytes(8, "little")]
    head += [r.nbytes.to_bytes(8, "little") for r in raws]
    return b"".join(head + [main] + raws)

def loads_oob(data):
    assert data[:4] == b"CCB5"
    n = int.from_bytes(data[4:8], "little")
    lens = [int.from_bytes(data[8 + 8 * i:16 + 8 * i], "little") for i in range(n + 1)]
    off = 8 + 8 * (n + 1)
    main = data[off:off + lens[0]]
    off += lens[0]
    buffers = []
    for size in lens[1:]:
        buffers.append(data[off:off + size])
        off += size
    return pickle.loads(main, buffers=buffers)

# Every byte value, newlines and NULs included, in no regular order.
big = random.Random(7).randbytes(4 << 20)
arr = np.arange(1 << 20, dtype=np.float64)
cases = {
    # A hand-written style protocol 2 call, as any pickler would make it.
    "add": (pickle.dumps(((2, 3), {}), protocol=2), dumps_oob(5)),
    "big": (pickle.dumps(((big,), {}), protocol=5), dumps_oob(big)),
    "numpy": (dumps_oob(((arr,), {})), dumps_oob(arr + 1)),
    "div0": (pickle.dumps(((1, 0), {}), protocol=2), b""),
    "notpair": (pickle.dumps([1, 2, 3], protocol=2), b""),
    "kw": (pickle.dumps(((), {"seconds": 0}), protocol=5), dumps_oob("done")),
    "slow": (pickle.dumps(((3,), {}), protocol=5), dumps_oob("done")),
    "long": (pickle.dumps(((60,), {}), protocol=5), b""),
}
for name, (call, want) in cases.items():
    if call[:4] == b"CCB5":
        assert isinstance(loads_oob(call), tuple)
    if want[:4] == b"CCB5":
        assert np.array_equal(loads_oob(want), arr + 1)
    with open(f"{out}/{name}.call", "wb") as f:
        f.write(call)
    with open(f"{out}/{name}.want", "wb") as f:
        f.write(want)
"#;

struct Setup {
    tag: String,
    dir: tempfile::TempDir,
}

fn setup(test: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ipppay.py"), HELPERS).unwrap();
    let st = Command::new(&fixtures().venv_ipp)
        .args(["-c", MAKE_PICKLES])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success(), "making the pickles: {st}");
    Setup {
        tag: unique_tag(test),
        dir,
    }
}

impl Setup {
    fn config(&self, engines: usize) -> IppConfig {
        let mut c = IppConfig::new(&fixtures().venv_ipp, engines);
        c.env.insert(TAG_VAR.into(), self.tag.clone());
        c.env.insert("PYTHONPATH".into(), self.modules());
        c.startup_timeout = Duration::from_secs(60);
        c.heartbeat = Duration::from_millis(500);
        c.grace = Duration::from_millis(500);
        c
    }

    fn modules(&self) -> String {
        self.dir.path().to_string_lossy().into_owned()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).unwrap()
    }

    fn call(&self, function: &str, case: &str) -> Task {
        Task::python_pickled(function, self.read(&format!("{case}.call")))
    }

    fn want(&self, case: &str) -> Vec<u8> {
        self.read(&format!("{case}.want"))
    }

    /// Nothing tagged is left, and the run folder is gone.
    fn assert_clean(&self, run_dir: Option<&Path>) {
        let left = orphans_after(&self.tag, Duration::from_secs(10));
        assert!(left.is_empty(), "left behind: {left:#?}");
        if let Some(run_dir) = run_dir {
            assert!(
                !run_dir.exists(),
                "the run folder {} is still there",
                run_dir.display()
            );
        }
    }
}

/// Collect `n` results (by id) and every other event, within `within`.
fn collect(
    b: &IppBackend,
    n: usize,
    within: Duration,
) -> (BTreeMap<u64, TaskResult>, Vec<IppEvent>) {
    let deadline = Instant::now() + within;
    let mut results = BTreeMap::new();
    let mut events = Vec::new();
    while results.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match b.recv_timeout(left) {
            Some(IppEvent::Result(r)) => {
                assert!(
                    results.insert(r.id, r).is_none(),
                    "two results for one task"
                );
            }
            Some(ev) => events.push(ev),
            None => panic!(
                "only {} of {n} results within {within:?}: {results:#?}; events {events:#?}",
                results.len()
            ),
        }
    }
    (results, events)
}

/// Wait for `ids` to start; the engine of each. Other events are kept in
/// `events`; a result before its start is a failure.
fn wait_started(
    b: &IppBackend,
    ids: &[u64],
    within: Duration,
    events: &mut Vec<IppEvent>,
) -> BTreeMap<u64, u32> {
    let deadline = Instant::now() + within;
    let mut started = BTreeMap::new();
    while started.len() < ids.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match b.recv_timeout(left) {
            Some(IppEvent::Started {
                id,
                engine: Some(engine),
                ..
            }) if ids.contains(&id) => {
                started.insert(id, engine);
            }
            Some(IppEvent::Result(r)) => panic!("a result before the tasks started: {r:?}"),
            Some(ev) => events.push(ev),
            None => panic!("tasks {ids:?} did not all start within {within:?}: {started:?}"),
        }
    }
    started
}

/// The result's bytes, which must be exactly `want` (compared without
/// printing many MiB), with the value null.
fn assert_payload(r: &TaskResult, want: &[u8], what: &str) {
    assert!(r.outcome.is_success(), "{what}: {:?}", r.outcome);
    assert_eq!(r.value(), Some(&Value::Null), "{what}: the value is null");
    let got = r.payload().unwrap_or_else(|| panic!("{what}: no payload"));
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: the bytes differ from offset {at}");
    }
}

/// The exception a task failed with: (type, message, traceback).
fn exception(r: &TaskResult) -> (&str, &str, &str) {
    match &r.outcome {
        Outcome::Failed {
            failure:
                Failure::Exception {
                    type_name,
                    message,
                    traceback,
                },
        } => (type_name, message, traceback),
        other => panic!("task {} should have raised: {other:?}", r.id),
    }
}

/// Round trips: a stdlib call, 4 MiB of bytes both ways, a numpy array
/// through "CCB5" out-of-band buffers (writable on the engine, and
/// "CCB5" again on the way back), keyword arguments; exceptions, an
/// unpicklable result and bad payloads as the local worker reports them;
/// JSON tasks next to them unchanged.
#[test]
fn pickled_calls_round_trip_on_engines() {
    let s = setup("ipp-payload");
    let b = IppBackend::start(s.config(2)).unwrap();
    let run_dir = b.run_dir().unwrap().to_path_buf();
    let tasks = [
        s.call("operator:add", "add"),
        s.call("builtins:bytes", "big"),
        s.call("ipppay:bump", "numpy"),
        s.call("operator:truediv", "div0"),
        Task::python("operator:add", json!([2, 40])),
        s.call("ipppay:slow", "kw"),
        Task::python_pickled("ipppay:unpicklable", empty_call()),
        Task::python_pickled("operator:add", &b"\xffnot a pickle"[..]),
        s.call("operator:add", "notpair"),
        Task::python_pickled("nosuchmodule:f", empty_call()),
    ];
    let t0 = Instant::now();
    for (i, t) in tasks.iter().enumerate() {
        b.submit(i as u64 + 1, t).unwrap();
    }
    let (r, _events) = collect(&b, tasks.len(), Duration::from_secs(90));
    eprintln!("{} tasks in {:?}", tasks.len(), t0.elapsed());
    assert_eq!(b.outstanding(), 0);

    assert_payload(&r[&1], &s.want("add"), "operator.add(2, 3)");
    // pickle.dumps(5, protocol=5), by hand: PROTO 5, BININT1 5, STOP.
    assert_eq!(r[&1].payload().unwrap(), b"\x80\x05K\x05.");
    assert_eq!(r[&1].attempts, 1);
    assert!(r[&1].pid.is_some() && r[&1].slot.is_some(), "{:?}", r[&1]);
    assert_payload(&r[&2], &s.want("big"), "4 MiB of bytes");
    assert_payload(&r[&3], &s.want("numpy"), "a numpy array, out of band");
    assert!(r[&3].payload().unwrap().starts_with(b"CCB5"));

    let (type_name, message, traceback) = exception(&r[&4]);
    assert_eq!(type_name, "ZeroDivisionError");
    assert_eq!(message, "division by zero");
    assert!(traceback.contains("ZeroDivisionError"), "{traceback}");
    assert!(r[&4].payload().is_none());

    // A JSON task between them: as before.
    assert_eq!(r[&5].value(), Some(&json!(42)));
    assert!(r[&5].payload().is_none());

    assert_payload(&r[&6], &s.want("kw"), "keyword arguments");

    let (type_name, message, _) = exception(&r[&7]);
    assert_eq!(type_name, "UnpicklableResult");
    assert!(message.contains("could not be pickled"), "{message}");
    assert_eq!(exception(&r[&8]).0, "UnpicklingError");
    let (type_name, message, _) = exception(&r[&9]);
    assert_eq!(type_name, "TypeError");
    assert!(message.contains("(args, kwargs)"), "{message}");
    assert_eq!(exception(&r[&10]).0, "ModuleNotFoundError");

    let report = b.shutdown();
    assert!(report.clean, "{report:?}");
    s.assert_clean(Some(&run_dir));
}

/// `pickle.dumps(((), {}), protocol=2)`: no arguments, made by hand.
fn empty_call() -> Vec<u8> {
    // PROTO 2, EMPTY_TUPLE, EMPTY_DICT, TUPLE2, STOP
    vec![0x80, 2, b')', b'}', 0x86, b'.']
}

/// An engine killed under a pickled task: the task runs again elsewhere
/// with the same payload. A pickled task past its timeout is stopped (its
/// engine replaced); cancelled ones, running or queued, are cancelled;
/// the backend goes on serving pickled calls.
#[test]
fn pickled_calls_retry_time_out_and_cancel_as_json_ones_do() {
    let s = setup("ipp-payload-stop");
    let mut config = s.config(2);
    config.retries = 1;
    let b = IppBackend::start(config).unwrap();
    let run_dir = b.run_dir().unwrap().to_path_buf();
    let engines = b.engines();
    assert_eq!(engines.len(), 2, "{engines:?}");
    let mut events = Vec::new();

    // Retry: one long pickled task per engine, then one engine killed.
    b.submit(1, &s.call("ipppay:slow", "slow")).unwrap();
    b.submit(2, &s.call("ipppay:slow", "slow")).unwrap();
    let running = wait_started(&b, &[1, 2], Duration::from_secs(20), &mut events);
    let victim = engines.iter().find(|e| e.id == running[&1]).unwrap();
    assert_ne!(running[&1], running[&2], "one task per engine");
    caiclust_core::tree::signal_tree(victim.pid, caiclust_core::tree::StopSignal::Kill);
    let (r, more) = collect(&b, 2, Duration::from_secs(40));
    events.extend(more);
    assert!(
        events.iter().any(
            |e| matches!(e, IppEvent::EngineDied { engine, tasks, .. } if *engine == victim.id && tasks == &[1])
        ),
        "{events:#?}"
    );
    for id in [1, 2] {
        assert_payload(&r[&id], &s.want("slow"), "a retried pickled call");
    }
    assert_eq!(r[&1].attempts, 2, "{:?}", r[&1]);
    assert!(
        matches!(r[&1].history.as_slice(), [Failure::WorkerDied { pid, .. }] if *pid == victim.pid),
        "{:?}",
        r[&1].history
    );
    assert_ne!(r[&1].pid, Some(victim.pid));
    assert_eq!(r[&1].pid, r[&2].pid, "both ended on the survivor");
    assert_eq!(r[&2].attempts, 1);

    // Timeout: the engine is stopped and replaced.
    let t0 = Instant::now();
    b.submit(
        11,
        &s.call("ipppay:stubborn", "long")
            .timeout(Duration::from_millis(1500)),
    )
    .unwrap();
    let (r, more) = collect(&b, 1, Duration::from_secs(30));
    assert_eq!(
        r[&11].outcome,
        Outcome::Failed {
            failure: Failure::TimedOut { after_ms: 1500 }
        }
    );
    assert!(r[&11].payload().is_none());
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(
        more.iter()
            .any(|e| matches!(e, IppEvent::EngineDied { expected: true, .. })),
        "the task's engine was stopped: {more:#?}"
    );
    let stopped = r[&11].pid.expect("the timed-out task's engine");
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.engines().is_empty() || b.engines().iter().any(|e| e.pid == stopped) {
        assert!(Instant::now() < deadline, "no replacement engine");
        if let Some(ev) = b.recv_timeout(Duration::from_millis(200)) {
            assert!(!matches!(ev, IppEvent::Result(_)), "{ev:?}");
        }
    }

    // Cancellation: those running (one per engine) and one queued.
    let mut events = Vec::new();
    let n_engines = b.engines().len();
    let ids: Vec<u64> = (21..21 + n_engines as u64 + 1).collect();
    for &id in &ids {
        b.submit(id, &s.call("time:sleep", "long")).unwrap();
    }
    let running: Vec<u64> = ids[..n_engines].to_vec();
    wait_started(&b, &running, Duration::from_secs(30), &mut events);
    let t1 = Instant::now();
    for &id in ids.iter().rev() {
        b.cancel(id).unwrap();
    }
    let (r, _) = collect(&b, ids.len(), Duration::from_secs(20));
    for id in &ids {
        assert!(
            matches!(r[id].outcome, Outcome::Cancelled { .. }),
            "task {id}: {:?}",
            r[id].outcome
        );
        assert!(r[id].payload().is_none());
    }
    assert!(t1.elapsed() < Duration::from_secs(10), "{:?}", t1.elapsed());

    // Still serving pickled calls.
    b.submit(30, &s.call("operator:add", "add")).unwrap();
    let (r, _) = collect(&b, 1, Duration::from_secs(30));
    assert_payload(&r[&30], &s.want("add"), "after the cancellations");
    drop(b);
    s.assert_clean(Some(&run_dir));
}

/// The same through the `Cluster` API on the ipyparallel backend.
#[test]
fn a_cluster_on_engines_returns_pickled_results() {
    let s = setup("ipp-payload-cluster");
    {
        let cluster = Cluster::builder()
            .backend(Backend::Ipyparallel)
            .python(&fixtures().venv_ipp)
            .workers(1)
            .env("PYTHONPATH", s.modules())
            .env(TAG_VAR, &s.tag)
            .build()
            .unwrap();
        let results = cluster.map([
            s.call("operator:add", "add"),
            Task::python("operator:add", json!([2, 3])),
            s.call("builtins:bytes", "big"),
            s.call("operator:truediv", "div0"),
        ]);
        assert_eq!(results.len(), 4);
        assert_payload(&results[0], &s.want("add"), "operator.add(2, 3)");
        assert_eq!(results[1].value(), Some(&json!(5)));
        assert!(results[1].payload().is_none());
        assert_payload(&results[2], &s.want("big"), "4 MiB of bytes");
        assert_eq!(exception(&results[3]).0, "ZeroDivisionError");
        cluster.shutdown();
    }
    s.assert_clean(None);
}
