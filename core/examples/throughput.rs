//! Throughput of tiny tasks, for BENCHMARKS.md (run by
//! `scripts/bench-core.sh`): `throughput rust N WORKERS METHOD` or
//! `throughput python N WORKERS METHOD PYTHON` (needs a module `tiny` with
//! `def f(x): return x` on PYTHONPATH), or `throughput commands N WORKERS`.
//! Prints the wall time of building the cluster, running every task and
//! shutting down, in seconds. `FORCE_FORK=1` forces the fork start method.
//! The tasks go in one `Cluster::map` call (as one `Pool.map` call), or
//! with `SUBMIT=each` one `submit` per task, results in completion order.

use std::time::Instant;

use caiclust_core::worker::{serve_if_requested, Registry};
use caiclust_core::{Cluster, StartMethod, Task};
use serde_json::json;

fn main() {
    serve_if_requested(&Registry::new().register("f", |x: u64| x));
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: throughput rust|python|commands N WORKERS [METHOD [PYTHON]]";
    let (Some(kind), Some(n), Some(workers)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let n: u64 = n.parse().expect("N");
    let workers: usize = workers.parse().expect("WORKERS");
    let method: StartMethod = args
        .get(4)
        .map(|m| m.parse().expect("METHOD"))
        .unwrap_or(StartMethod::Spawn);
    let t0 = Instant::now();
    // FORCE_FORK=1: fork even where the rules see a hazard (the tasks here
    // use no runtime; this measures start latency only).
    let force = std::env::var("FORCE_FORK").is_ok_and(|v| v == "1");
    let mut b = Cluster::builder()
        .workers(workers)
        .start_method(method)
        .force_fork(force);
    if let Some(py) = args.get(5) {
        b = b.python(py);
    }
    let cluster = b.build().expect("cluster");
    let make = |i: u64| match kind.as_str() {
        "rust" => Task::rust("f", json!(i)),
        "python" => Task::python("tiny:f", json!(i)),
        _ => Task::command(["true"]),
    };
    // SUBMIT=each: one submit call per task, results in completion order;
    // default: one map call (as Pool.map), results in input order.
    let ok = if std::env::var("SUBMIT").is_ok_and(|v| v == "each") {
        for i in 0..n {
            cluster.submit(make(i));
        }
        cluster.results().filter(|r| r.outcome.is_success()).count() as u64
    } else {
        let results = cluster.map((0..n).map(make));
        let in_order = results.iter().zip(0..n).all(|(r, i)| match kind.as_str() {
            "commands" => r.outcome.is_success(),
            _ => r.value() == Some(&json!(i)),
        });
        assert!(in_order, "results in input order");
        results.iter().filter(|r| r.outcome.is_success()).count() as u64
    };
    cluster.shutdown();
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(ok, n, "every task succeeded");
    println!("{secs:.4}");
}
