//! Rust task functions for the core tests: a program whose `main` calls the
//! worker hook first, as every program running Rust tasks must. Some tasks
//! misbehave on purpose (panic, segfault, exit, hang).

use std::time::Duration;

use caiclust_core::worker::{serve_if_requested, Registry};
use serde_json::Value;

fn registry() -> Registry {
    Registry::new()
        .register("square", |x: i64| x * x)
        .register("echo", |v: Value| v)
        .register("getenv", |name: String| std::env::var(name).ok())
        .register("pid", |_: Value| std::process::id())
        .register("sleep_ms", |ms: u64| {
            std::thread::sleep(Duration::from_millis(ms));
            ms
        })
        .register("len", |s: String| s.len())
        .register("wait_for_file", |path: String| {
            // A long task the test ends by creating `path` (a minute at
            // most, so a failed test cannot leave it waiting forever).
            let until = std::time::Instant::now() + Duration::from_secs(60);
            while !std::path::Path::new(&path).exists() && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::path::Path::new(&path).exists()
        })
        .register_json("mark_then_sleep_ms", |v| {
            // `[path, ms]`: say it began (a file the test waits for), then
            // sleep.
            let (mark, ms): (String, u64) =
                serde_json::from_value(v).map_err(|e| format!("want [path, ms]: {e}"))?;
            std::fs::write(&mark, b"began").map_err(|e| format!("write {mark}: {e}"))?;
            std::thread::sleep(Duration::from_millis(ms));
            Ok(Value::from(ms))
        })
        .register("panic", |msg: String| -> Value { panic!("{msg}") })
        .register_json("fail", |v| Err(format!("failed on purpose with {v}")))
        // Bytes tasks: the payload reversed; N (LE u64) bytes of a
        // pattern; a failure; a panic.
        .register_bytes("reverse", |b| Ok(b.iter().rev().copied().collect()))
        .register_bytes("pattern", |b| {
            let n = <[u8; 8]>::try_from(b).map_err(|_| "expected 8 bytes: a LE u64")?;
            Ok((0..u64::from_le_bytes(n))
                .map(|i| (i % 251) as u8)
                .collect())
        })
        .register_bytes("bytes_fail", |b| Err(format!("refused {} bytes", b.len())))
        .register_bytes("bytes_panic", |_| -> Result<Vec<u8>, String> {
            panic!("bytes panic")
        })
        .register("segfault", |_: Value| -> Value {
            // SAFETY: not safe at all: this task crashes its worker with
            // SIGSEGV on purpose, to test that the crash is reported.
            unsafe { std::ptr::null_mut::<u64>().write_volatile(1) };
            Value::Null
        })
        .register("exit", |code: i32| -> Value { std::process::exit(code) })
        .register("exit_soon_after", |code: i32| {
            // Answer, then exit between tasks.
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                // SAFETY: ends the process at once, on purpose, without
                // running exit handlers (std's exit can wait on locks held
                // by the task running meanwhile).
                unsafe { libc::_exit(code) }
            });
            code
        })
        .register("spawn_sleepers", |secs: u64| {
            // A grandchild tree that outlives its timeout unless killed.
            let child = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("sleep {secs} & sleep {secs}"))
                .spawn()
                .map(|c| c.id());
            std::thread::sleep(Duration::from_secs(secs));
            child.ok()
        })
}

fn main() {
    serve_if_requested(&registry());
    // `parent METHOD N`: a program holding a cluster of N of its own Rust
    // workers busy with long tasks, for tests that kill it outright.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("parent") {
        let method: caiclust_core::StartMethod = args
            .get(2)
            .and_then(|m| m.parse().ok())
            .unwrap_or(caiclust_core::StartMethod::Spawn);
        let n: usize = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(2);
        let cluster = caiclust_core::Cluster::builder()
            .workers(n)
            .start_method(method)
            .registry(registry())
            .build()
            .expect("cluster");
        for _ in 0..n * 2 {
            cluster.submit(caiclust_core::Task::rust(
                "sleep_ms",
                serde_json::json!(60_000),
            ));
        }
        println!("running");
        let _ = cluster.recv();
        std::process::exit(0);
    }
    eprintln!("caiclust-task-fixture: run me as a caiclust worker (CAICLUST_WORKER=rust)");
    std::process::exit(2);
}
