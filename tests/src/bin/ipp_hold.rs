//! Test helper for `tests/ipp_backend.rs`: starts an ipyparallel backend
//! with one engine (`ipp_hold PYTHON`), submits a long task, prints
//! `ready <run folder>` and waits to be killed (Ctrl-C), as a user's
//! program would be.

use std::io::Write;
use std::time::Duration;

use caiclust_core::ipp::{IppBackend, IppConfig};
use caiclust_core::Task;

fn main() {
    let Some(python) = std::env::args_os().nth(1) else {
        eprintln!("usage: ipp_hold PYTHON");
        std::process::exit(2);
    };
    let backend = match IppBackend::start(IppConfig::new(python, 1)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ipp_hold: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = backend.submit(1, &Task::python("time:sleep", serde_json::json!([600]))) {
        eprintln!("ipp_hold: {e}");
        std::process::exit(1);
    }
    let dir = backend
        .run_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    println!("ready {dir}");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}
