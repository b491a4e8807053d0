//! Two workers doing BLAS matrix products: under the recommended
//! environment (`auto`: per-worker thread limits) or under the default one
//! (every worker's BLAS starts one thread per CPU). For BENCHMARKS.md, run
//! by `scripts/bench-core.sh`:
//!
//!   oversubscription auto|default PYTHON TASKS
//!
//! Needs a module `blas` on PYTHONPATH with `def mm(seed)`. Prints the wall
//! time in seconds and the thread variables the workers got.

use std::time::Instant;

use caiclust_core::{Cluster, StartMethod, Task};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(python), Some(n)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: oversubscription auto|default PYTHON TASKS");
        std::process::exit(2);
    };
    let n: u64 = n.parse().expect("TASKS");
    let cluster = Cluster::builder()
        .auto(mode == "auto")
        .workers(2)
        .start_method(StartMethod::Spawn)
        .python(python)
        .build()
        .expect("cluster");
    let env: Vec<String> = cluster
        .settings()
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let t0 = Instant::now();
    let results = cluster.map((0..n).map(|i| Task::python("blas:mm", json!([i]))));
    let secs = t0.elapsed().as_secs_f64();
    for r in &results {
        assert!(r.outcome.is_success(), "{:?}", r.outcome);
    }
    println!("{secs:.3} {}", env.join(" "));
}
