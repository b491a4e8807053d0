//! core: this process uses GNU OpenMP (a library built here with
//! `gcc -fopenmp`, loaded and run), then asks for Rust workers by fork. The
//! cluster refuses, naming CC001. Forced, the workers complete: libgomp's
//! pool belongs to the thread that started it, and caiclust forks its
//! template from its own scheduler thread, which never ran an OpenMP region
//! (a Python parent forks from the thread that did, and hangs). The refusal
//! stays conservative: other runtimes keep process-wide pools. (Its own
//! test binary: the OpenMP threads must not leak into other tests.)
//!
//! Unix only: fork.
#![cfg(unix)]

use std::time::{Duration, Instant};

use caiclust_core::worker::Registry;
use caiclust_core::{Cluster, CoreError, StartMethod, Task};
use caiclust_tests::{orphans_after, unique_tag, TAG_VAR};
use serde_json::json;

static LIB: std::sync::OnceLock<libloading::Library> = std::sync::OnceLock::new();

fn work(n: i32) -> f64 {
    let lib = LIB.get().expect("loaded");
    // SAFETY: `work` has this C signature in OMPWORK above.
    unsafe {
        let f: libloading::Symbol<unsafe extern "C" fn(i32) -> f64> = lib.get(b"work").unwrap();
        f(n)
    }
}

#[test]
fn fork_after_gnu_openmp_is_refused_and_forced_fork_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let so = caiclust_tests::hazard::build_ompwork(dir.path());
    // SAFETY: our own library; its constructor is libgomp's.
    LIB.get_or_init(|| unsafe { libloading::Library::new(&so).unwrap() });
    let expected = work(10);
    assert!(expected > 0.0);
    let registry = Registry::new().register("work", |n: i32| work(n));

    // Refused, naming the rule and libgomp.
    let refused = Cluster::builder()
        .workers(2)
        .start_method(StartMethod::Fork)
        .registry(registry.clone())
        .build();
    match refused {
        Err(CoreError::ForkRefused { findings }) => {
            assert!(
                findings
                    .iter()
                    .any(|f| f.starts_with("CC001") && f.contains("libgomp")),
                "{findings:?}"
            );
        }
        Err(e) => panic!("refused for the wrong reason: {e}"),
        Ok(_) => panic!("fork after GNU OpenMP was not refused"),
    }

    let tag = unique_tag("rust-fork-hazard");
    {
        let cluster = Cluster::builder()
            .workers(2)
            .start_method(StartMethod::Fork)
            .force_fork(true)
            .registry(registry)
            .stall_after(Duration::from_secs(2))
            .timeout(Duration::from_secs(60))
            .env(TAG_VAR, &tag)
            .build()
            .unwrap();
        let t0 = Instant::now();
        let results = cluster.map((0..4).map(|_| Task::rust("work", json!(10))));
        assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
        for r in &results {
            assert_eq!(r.value(), Some(&json!(expected)), "{:?}", r.outcome);
        }
    }
    let left = orphans_after(&tag, Duration::from_secs(3));
    assert!(left.is_empty(), "left behind: {left:?}");
}
