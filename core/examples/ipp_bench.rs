//! The ipyparallel backend's side of `scripts/bench-ipp.sh`:
//! `ipp_bench PYTHON ENGINES TASKS` starts a cluster of ENGINES local
//! engines with PYTHON, runs one `operator:add` task (time to first
//! result, counted from the start), then TASKS more (throughput), and
//! stops. Prints one JSON line: `{"first_result_s", "tasks_per_s",
//! "stop_s"}`.

use std::time::{Duration, Instant};

use caiclust_core::ipp::{IppBackend, IppConfig, IppEvent};
use caiclust_core::Task;
use serde_json::json;

fn wait(b: &IppBackend, n: usize) {
    let mut got = 0;
    while got < n {
        match b.recv_timeout(Duration::from_secs(300)) {
            Some(IppEvent::Result(r)) => {
                if !r.outcome.is_success() {
                    eprintln!("ipp_bench: task {} failed: {:?}", r.id, r.outcome);
                    std::process::exit(1);
                }
                got += 1;
            }
            Some(_) => {}
            None => {
                eprintln!("ipp_bench: no result within 300 s");
                std::process::exit(1);
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(python), Some(engines), Some(tasks)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: ipp_bench PYTHON ENGINES TASKS");
        std::process::exit(2);
    };
    let (Ok(engines), Ok(tasks)) = (engines.parse::<usize>(), tasks.parse::<u64>()) else {
        eprintln!("ipp_bench: ENGINES and TASKS must be numbers, got {engines:?} {tasks:?}");
        std::process::exit(2);
    };
    let t0 = Instant::now();
    let backend = match IppBackend::start(IppConfig::new(python, engines)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ipp_bench: {e}");
            std::process::exit(1);
        }
    };
    let submit = |id: u64| {
        if let Err(e) = backend.submit(id, &Task::python("operator:add", json!([id, 1]))) {
            eprintln!("ipp_bench: {e}");
            std::process::exit(1);
        }
    };
    submit(0);
    wait(&backend, 1);
    let first = t0.elapsed();
    let t1 = Instant::now();
    for id in 1..=tasks {
        submit(id);
    }
    wait(&backend, tasks as usize);
    let run = t1.elapsed();
    let t2 = Instant::now();
    let report = backend.shutdown();
    println!(
        "{}",
        json!({
            "first_result_s": first.as_secs_f64(),
            "tasks_per_s": tasks as f64 / run.as_secs_f64(),
            "stop_s": t2.elapsed().as_secs_f64(),
            "clean": report.clean,
        })
    );
}
