//! core: byte payloads through workers, as raw bytes in the frames of the
//! worker channel. Python: a pickled 16 MiB bytes object and a 16 MiB
//! numpy array round-trip intact (spawn and forkserver), a result of
//! several MiB comes back intact, an unpicklable result fails its task
//! with a clear exception and the worker goes on. Rust: bytes functions
//! the same way, and a bytes task sent to a JSON function (or the reverse)
//! fails with a message that says so.
//!
//! Unix only: the fixture venvs' Linux Pythons as workers.
#![cfg(unix)]

use std::path::Path;
use std::process::Command;

use caiclust_core::{Cluster, Failure, Outcome, StartMethod, Task, TaskResult};
use caiclust_tests::fixtures;
use serde_json::json;

const FIXTURE: &str = env!("CARGO_BIN_EXE_caiclust-task-fixture");

const MODULE: &str = r#"
import os

def echo(x):
    return x

def double(a):
    return a * 2

def make(n):
    return bytes(i % 251 for i in range(n))

def kw(a, b=2):
    return (a, b, os.getpid())

def pid():
    return os.getpid()

def unpicklable():
    return lambda: 1

def square(x):
    return x * x

def add(a, b):
    return a + b
"#;

/// Writes the pickles the tests send and expect, made by the fixture's own
/// Python: `NAME.call` (a pickled `(args, kwargs)`) and `NAME.want` (the
/// pickled result), for each case. Both in the worker's layout: protocol 5,
/// and for a numpy array its data out of band after the pickle ("CCB5",
/// python_worker.py), so the array travels both ways without a copy into
/// the pickle.
const MAKE_PICKLES: &str = r#"
import pickle, sys
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

big = bytes(range(256)) * (16 << 20 >> 8)
arr = np.arange(2 << 20, dtype=np.float64)
cases = {
    "bytes": (((big,), {}), big),
    "numpy": (((arr,), {}), arr * 2),
    "make": (((5 << 20,), {}), bytes(i % 251 for i in range(5 << 20))),
    "kw": (((1,), {"b": 5}), None),
    "notpair": (([1, 2, 3],), None),
    "add": (((2,), {"b": 3}), 5),
}
for name, (call, want) in cases.items():
    with open(f"{out}/{name}.call", "wb") as f:
        f.write(dumps_oob(call))
    with open(f"{out}/{name}.want", "wb") as f:
        f.write(dumps_oob(want))
assert open(f"{out}/numpy.want", "rb").read(4) == b"CCB5"
"#;

struct Pickles {
    dir: tempfile::TempDir,
}

impl Pickles {
    fn make(python: &Path) -> Pickles {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("payload_mod.py"), MODULE).unwrap();
        let st = Command::new(python)
            .args(["-c", MAKE_PICKLES])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "making the pickles: {st}");
        Pickles { dir }
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).unwrap()
    }
}

fn failure(r: &TaskResult) -> &Failure {
    match &r.outcome {
        Outcome::Failed { failure } => failure,
        other => panic!("task {} should have failed: {other:?}", r.id),
    }
}

/// The result's bytes, which must be exactly `want` (compared without
/// printing many MiB).
fn assert_payload(r: &TaskResult, want: &[u8], what: &str) {
    assert!(r.outcome.is_success(), "{what}: {:?}", r.outcome);
    assert_eq!(r.value(), Some(&json!(null)), "{what}: the value is null");
    let got = r.payload().unwrap_or_else(|| panic!("{what}: no payload"));
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(got == want, "{what}: the bytes differ");
}

fn python_payloads(method: StartMethod) {
    let python = fixtures().venv_numpy.clone();
    let p = Pickles::make(&python);
    // One worker: the unpicklable result must leave it serving.
    let cluster = Cluster::builder()
        .workers(1)
        .start_method(method)
        .python(&python)
        .env("PYTHONPATH", p.dir.path().to_string_lossy())
        .build()
        .unwrap();
    let f = |name: &str| format!("payload_mod:{name}");
    let tasks = vec![
        Task::python_pickled(f("echo"), p.read("bytes.call")),
        Task::python_pickled(f("double"), p.read("numpy.call")),
        Task::python_pickled(f("make"), p.read("make.call")),
        Task::python(f("pid"), json!(null)),
        Task::python_pickled(f("echo"), &b"\xffnot a pickle"[..]),
        Task::python_pickled(f("unpicklable"), empty_call()),
        Task::python(f("pid"), json!(null)),
        Task::python_pickled(f("kw"), p.read("kw.call")),
        Task::python_pickled(f("kw"), p.read("notpair.call")),
        Task::python(f("square"), json!([7])),
    ];
    let results = cluster.map(tasks);
    assert_eq!(results.len(), 10);
    assert_payload(&results[0], &p.read("bytes.want"), "16 MiB of bytes");
    assert_payload(&results[1], &p.read("numpy.want"), "a 16 MiB numpy array");
    assert_payload(&results[2], &p.read("make.want"), "a 5 MiB result");
    // Bytes that are no pickle: the unpickling error, as an exception.
    assert!(
        matches!(failure(&results[4]), Failure::Exception { type_name, .. } if type_name == "UnpicklingError"),
        "{:?}",
        results[4].outcome
    );
    match failure(&results[5]) {
        Failure::Exception { message, .. } => {
            assert!(message.contains("could not be pickled"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        results[3].value(),
        results[6].value(),
        "the same worker served on after the unpicklable result"
    );
    let kw = results[7].payload().expect("kw's pickled result");
    assert!(!kw.is_empty());
    assert!(
        matches!(failure(&results[8]), Failure::Exception { type_name, message, .. }
            if type_name == "TypeError" && message.contains("(args, kwargs)")),
        "{:?}",
        results[8].outcome
    );
    assert_eq!(results[9].value(), Some(&json!(49)));
    assert!(results[9].payload().is_none());
    cluster.shutdown();
}

/// `pickle.dumps(((), {}), protocol=2)`: no arguments, made by hand.
fn empty_call() -> Vec<u8> {
    // PROTO 2, EMPTY_TUPLE, EMPTY_DICT, TUPLE2, STOP
    vec![0x80, 2, b')', b'}', 0x86, b'.']
}

/// Tiny tasks with and without payloads, interleaved: they share batches
/// (the worker's mixed path), and every answer is its own.
#[test]
fn tiny_pickled_and_json_tasks_share_batches() {
    let python = fixtures().venv_numpy.clone();
    let p = Pickles::make(&python);
    let cluster = Cluster::builder()
        .workers(2)
        .start_method(StartMethod::Spawn)
        .python(&python)
        .env("PYTHONPATH", p.dir.path().to_string_lossy())
        .build()
        .unwrap();
    let call = p.read("add.call");
    let want = p.read("add.want");
    let n = 3000u64;
    let results = cluster.map((0..n).map(|i| {
        if i % 2 == 0 {
            Task::python("payload_mod:square", json!([i]))
        } else {
            Task::python_pickled("payload_mod:add", call.clone())
        }
    }));
    assert_eq!(results.len() as u64, n);
    for (i, r) in (0..n).zip(&results) {
        if i % 2 == 0 {
            assert_eq!(r.value(), Some(&json!(i * i)), "task {i}");
            assert!(r.payload().is_none());
        } else {
            assert_payload(r, &want, "a pickled 5");
        }
    }
    let rust = Cluster::builder()
        .workers(2)
        .start_method(StartMethod::Spawn)
        .rust_worker(FIXTURE)
        .build()
        .unwrap();
    let results = rust.map((0..n).map(|i| {
        if i % 2 == 0 {
            Task::rust("square", json!(i))
        } else {
            Task::rust_bytes("reverse", i.to_be_bytes())
        }
    }));
    for (i, r) in (0..n).zip(&results) {
        if i % 2 == 0 {
            assert_eq!(r.value(), Some(&json!(i * i)), "task {i}");
        } else {
            assert_payload(r, &i.to_le_bytes(), "reversed");
        }
    }
}

#[test]
fn pickled_payloads_round_trip_with_spawn() {
    python_payloads(StartMethod::Spawn);
}

#[test]
fn pickled_payloads_round_trip_with_forkserver() {
    python_payloads(StartMethod::Forkserver);
}

fn rust_payloads(method: StartMethod) {
    let cluster = Cluster::builder()
        .workers(2)
        .start_method(method)
        .rust_worker(FIXTURE)
        .build()
        .unwrap();
    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i * 31 % 257) as u8).collect();
    let pattern_len: u64 = 6 << 20;
    let tasks = vec![
        Task::rust_bytes("reverse", big.clone()),
        Task::rust_bytes("pattern", pattern_len.to_le_bytes()),
        Task::rust_bytes("bytes_fail", vec![0; 3]),
        Task::rust_bytes("bytes_panic", vec![]),
        Task::rust("reverse", json!([1, 2])),
        Task::rust_bytes("square", vec![1]),
        Task::rust_bytes("reverse", vec![]),
        Task::rust("square", json!(9)),
    ];
    let results = cluster.map(tasks);
    let reversed: Vec<u8> = big.iter().rev().copied().collect();
    assert_payload(&results[0], &reversed, "16 MiB reversed");
    let pattern: Vec<u8> = (0..pattern_len).map(|i| (i % 251) as u8).collect();
    assert_payload(&results[1], &pattern, "6 MiB made from 8 bytes");
    let error = |r: &TaskResult| match failure(r) {
        Failure::Error { message } => message.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(error(&results[2]), "refused 3 bytes");
    assert!(error(&results[3]).contains("bytes panic"));
    assert!(error(&results[4]).contains("Task::rust_bytes"));
    assert!(error(&results[5]).contains("takes JSON arguments"));
    assert_payload(&results[6], b"", "an empty payload");
    assert_eq!(results[7].value(), Some(&json!(81)));
    cluster.shutdown();
}

#[test]
fn rust_bytes_tasks_round_trip_with_spawn() {
    rust_payloads(StartMethod::Spawn);
}

#[test]
fn rust_bytes_tasks_round_trip_with_forkserver() {
    rust_payloads(StartMethod::Forkserver);
}
