//! core: the fork start method for Rust tasks. The workers are forks of
//! this test process (through a template forked once), so they see what it
//! set up before, and faults in them are handled as for other workers.
//!
//! Unix only: fork and `sh`.
#![cfg(unix)]

use std::sync::OnceLock;
use std::time::Duration;

use caiclust_core::worker::Registry;
use caiclust_core::{Cluster, ExitInfo, Failure, Outcome, StartMethod, Task};
use caiclust_tests::{orphans_after, unique_tag, TAG_VAR};
use serde_json::{json, Value};

static LOADED_BEFORE: OnceLock<Vec<u64>> = OnceLock::new();

fn ppid_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn registry() -> Registry {
    Registry::new()
        .register("sum_parent_data", |k: u64| {
            LOADED_BEFORE.get().map(|v| v.iter().sum::<u64>() * k)
        })
        .register("lineage", |_: Value| {
            let me = std::process::id();
            (me, ppid_of(me))
        })
        .register("panic", |_: Value| -> Value {
            panic!("from a forked worker")
        })
        .register("segfault", |_: Value| -> Value {
            // SAFETY: not safe: crashes the worker on purpose.
            unsafe { std::ptr::null_mut::<u64>().write_volatile(1) };
            Value::Null
        })
        .register("tag", |_: Value| std::env::var(TAG_VAR).ok())
}

#[test]
fn forked_rust_workers_see_the_parents_state_and_survive_faults() {
    LOADED_BEFORE.get_or_init(|| (1..=100).collect());
    let tag = unique_tag("rust-fork");
    {
        let cluster = Cluster::builder()
            .workers(2)
            .start_method(StartMethod::Fork)
            .registry(registry())
            .env(TAG_VAR, &tag)
            .build()
            .unwrap();
        let mut tasks: Vec<Task> = (1..=20)
            .map(|k| Task::rust("sum_parent_data", json!(k)))
            .collect();
        tasks.push(Task::rust("lineage", json!(null)));
        tasks.push(Task::rust("panic", json!(null)));
        tasks.push(Task::rust("segfault", json!(null)));
        tasks.push(Task::rust("tag", json!(null)));
        let results = cluster.map(tasks);
        for (k, r) in (1..=20u64).zip(&results) {
            assert_eq!(r.value(), Some(&json!(5050 * k)), "{:?}", r.outcome);
        }
        // worker → template → this process.
        let lineage = results[20].value().unwrap();
        let template = lineage[1].as_u64().unwrap() as u32;
        assert_eq!(ppid_of(template), std::process::id());
        assert!(
            matches!(&results[21].outcome, Outcome::Failed { failure: Failure::Error { message } } if message.contains("from a forked worker"))
        );
        assert!(
            matches!(
                &results[22].outcome,
                Outcome::Failed {
                    failure: Failure::WorkerDied {
                        exit: Some(ExitInfo::Signal(11)),
                        ..
                    }
                }
            ),
            "{:?}",
            results[22].outcome
        );
        assert_eq!(
            results[23].value(),
            Some(&json!(tag)),
            "the cluster's environment is set in the template"
        );
    }
    let left = orphans_after(&tag, Duration::from_secs(3));
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn fork_for_rust_tasks_needs_the_registry() {
    let cluster = Cluster::builder()
        .workers(1)
        .start_method(StartMethod::Fork)
        .build()
        .unwrap();
    let r = cluster.map([Task::rust("x", json!(1))]);
    assert!(
        matches!(&r[0].outcome, Outcome::Failed { failure: Failure::Start { message, .. } } if message.contains("Registry")),
        "{:?}",
        r[0].outcome
    );
}
