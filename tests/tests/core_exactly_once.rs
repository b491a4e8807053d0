//! core: every input ends as exactly one result, under retries and crashes,
//! with real worker processes. Property test: random mixes of tasks that
//! succeed, fail, panic, crash their worker, exit their worker, or run past
//! their timeout, on random worker counts, attempt limits and start
//! methods (spawn and forkserver on Unix; spawn only on Windows, which has
//! no forkserver: the same property, run under wine in CI).

use std::collections::BTreeSet;
use std::time::Duration;

use caiclust_core::{Cluster, Failure, Outcome, StartMethod, Task};
use caiclust_tests::{orphans_after, unique_tag, TAG_VAR};
use proptest::prelude::*;
use serde_json::json;

const FIXTURE: &str = env!("CARGO_BIN_EXE_caiclust-task-fixture");

#[derive(Debug, Clone, Copy)]
enum Kind {
    Ok,
    Fail,
    Panic,
    Segfault,
    Exit,
    Hang,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        6 => Just(Kind::Ok),
        1 => Just(Kind::Fail),
        1 => Just(Kind::Panic),
        1 => Just(Kind::Segfault),
        1 => Just(Kind::Exit),
        1 => Just(Kind::Hang),
    ]
}

fn task(k: Kind, i: usize) -> Task {
    match k {
        Kind::Ok => Task::rust("square", json!(i)),
        Kind::Fail => Task::rust("fail", json!(i)),
        Kind::Panic => Task::rust("panic", json!("p")),
        Kind::Segfault => Task::rust("segfault", json!(null)),
        Kind::Exit => Task::rust("exit", json!(9)),
        Kind::Hang => Task::rust("sleep_ms", json!(60_000)).timeout(Duration::from_millis(300)),
    }
}

/// Forkserver or spawn on Unix; spawn only where there is no fork.
fn start_method() -> impl Strategy<Value = StartMethod> {
    if cfg!(unix) {
        prop_oneof![Just(StartMethod::Spawn), Just(StartMethod::Forkserver)].boxed()
    } else {
        Just(StartMethod::Spawn).boxed()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn every_input_ends_exactly_once(
        kinds in proptest::collection::vec(kind(), 1..40),
        workers in 1usize..4,
        attempts in 1u32..4,
        method in start_method(),
    ) {
        let tag = unique_tag("exactly-once");
        {
            let cluster = Cluster::builder()
                .workers(workers)
                .start_method(method)
                .rust_worker(FIXTURE)
                .attempts(attempts)
                .grace(Duration::from_millis(200))
                .env(TAG_VAR, &tag)
                .build()
                .unwrap();
            let ids: Vec<u64> = kinds.iter().enumerate().map(|(i, k)| cluster.submit(task(*k, i))).collect();
            let results: Vec<_> = cluster.results().collect();
            // Exactly one result per input, nothing else.
            prop_assert_eq!(results.len(), kinds.len());
            let got: BTreeSet<u64> = results.iter().map(|r| r.id).collect();
            prop_assert_eq!(got, ids.iter().copied().collect::<BTreeSet<_>>());
            prop_assert!(cluster.recv_timeout(Duration::from_millis(50)).is_none());
            for r in &results {
                let i = (r.id - ids[0]) as usize;
                let k = kinds[i];
                // Each attempt but the last is in the history.
                prop_assert_eq!(r.history.len() as u32 + 1, r.attempts);
                match (k, &r.outcome) {
                    (Kind::Ok, Outcome::Succeeded { value }) => {
                        prop_assert_eq!(value, &json!(i * i));
                        // An innocent task may be re-run once when a
                        // neighbour's crash took its worker down.
                        prop_assert!(r.attempts <= 2, "{:?}", r);
                    }
                    (Kind::Fail | Kind::Panic, Outcome::Failed { failure: Failure::Error { .. } }) => {
                        prop_assert!(r.attempts == attempts || r.attempts == attempts + 1);
                    }
                    (Kind::Segfault | Kind::Exit, Outcome::Failed { failure: Failure::WorkerDied { .. } }) => {
                        // One free retry, then the counted attempts.
                        prop_assert_eq!(r.attempts, attempts + 1);
                    }
                    (Kind::Hang, Outcome::Failed { failure: Failure::TimedOut { .. } }) => {
                        prop_assert!(r.attempts == attempts || r.attempts == attempts + 1);
                    }
                    (k, other) => prop_assert!(false, "{:?} ended as {:?}", k, other),
                }
            }
        }
        let left = orphans_after(&tag, Duration::from_secs(3));
        prop_assert!(left.is_empty(), "left behind: {:?}", left);
    }
}
