//! A helper for the process-tree tests (`tests/tests/core_process_trees.rs`):
//! a Rust worker (its `main` calls the worker hook first), and a few
//! commands that need no shell, so the tests run the same on Windows:
//!
//! * `sleep MS`: sleep;
//! * `tree PIDFILE SECS`: start a grandchild that sleeps SECS, write its
//!   pid to PIDFILE, wait for it;
//! * `orphan PIDFILE`: start a grandchild that sleeps a minute, write its
//!   pid to PIDFILE, exit at once;
//! * `parent DIR N`: hold a cluster of N of its own Rust workers busy with
//!   long tasks (each writes its pid in DIR first), for a test that kills
//!   this process outright;
//! * `print-parent`: run tasks that print, with and without a newline,
//!   through Rust's `print!` and C's `puts`, and write their values to stdout as one JSON array.

use std::path::Path;
use std::time::Duration;

use caiclust_core::worker::{serve_if_requested, Registry};
use caiclust_core::{Cluster, Task};
use serde_json::{json, Value};

fn registry() -> Registry {
    Registry::new()
        .register("print", |word: String| {
            print!("{word}-without-newline ");
            println!("{word}-with-newline");
            print!("{word}-left-unflushed");
            word.len()
        })
        .register("puts", |word: String| {
            // The C runtime's standard output, flushed at once.
            let line = std::ffi::CString::new(format!("{word}-from-c")).unwrap_or_default();
            // SAFETY: a NUL-terminated string; fflush(NULL) flushes every
            // stream of the C runtime.
            unsafe {
                libc::puts(line.as_ptr());
                libc::fflush(std::ptr::null_mut());
            }
            word.len()
        })
        .register("pid_then_sleep", |(dir, ms): (String, u64)| {
            write_pid(&Path::new(&dir).join(std::process::id().to_string()));
            std::thread::sleep(Duration::from_millis(ms));
            ms
        })
}

/// Write this process's pid to `path`, whole or not at all (through a
/// temporary name and a rename).
fn write_pid_of(pid: u32, path: &Path) {
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, pid.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

fn write_pid(path: &Path) {
    write_pid_of(std::process::id(), path)
}

fn arg(args: &[String], i: usize) -> &str {
    args.get(i).map_or("", String::as_str)
}

fn main() {
    serve_if_requested(&registry());
    let args: Vec<String> = std::env::args().collect();
    let code = match arg(&args, 1) {
        "sleep" => {
            let ms = arg(&args, 2).parse().unwrap_or(60_000);
            std::thread::sleep(Duration::from_millis(ms));
            0
        }
        "tree" => {
            let secs: u64 = arg(&args, 3).parse().unwrap_or(60);
            let me = std::env::current_exe().expect("this program's path");
            let mut child = std::process::Command::new(me)
                .arg("sleep")
                .arg((secs * 1000).to_string())
                .spawn()
                .expect("start the grandchild");
            write_pid_of(child.id(), Path::new(arg(&args, 2)));
            // As long as the grandchild sleeps.
            let _ = child.wait();
            0
        }
        "orphan" => {
            // Leave a grandchild running behind.
            let me = std::env::current_exe().expect("this program's path");
            let child = std::process::Command::new(me)
                .args(["sleep", "60000"])
                .spawn()
                .expect("start the grandchild");
            write_pid_of(child.id(), Path::new(arg(&args, 2)));
            std::mem::forget(child);
            0
        }
        "parent" => {
            let n: usize = arg(&args, 3).parse().unwrap_or(2);
            let cluster = Cluster::builder()
                .workers(n)
                .registry(registry())
                .build()
                .expect("cluster");
            for _ in 0..n {
                cluster.submit(Task::rust("pid_then_sleep", json!([arg(&args, 2), 60_000])));
            }
            let _ = cluster.recv();
            0
        }
        "print-parent" => {
            let cluster = Cluster::builder()
                .workers(1)
                .registry(registry())
                .timeout(Duration::from_secs(20))
                .build()
                .expect("cluster");
            let results = cluster.map([
                Task::rust("print", json!("alpha")),
                Task::rust("puts", json!("gamma")),
                Task::rust("print", json!("beta")),
            ]);
            let values: Vec<Value> = results
                .iter()
                .map(|r| {
                    r.value()
                        .cloned()
                        .unwrap_or_else(|| json!(format!("{:?}", r.outcome)))
                })
                .collect();
            println!("{}", Value::from(values));
            drop(cluster);
            0
        }
        _ => {
            eprintln!("caiclust-tree-helper: unknown mode (see the doc comment)");
            2
        }
    };
    std::process::exit(code);
}
