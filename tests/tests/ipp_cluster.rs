//! The ipyparallel backend behind the `Cluster` API: the same submissions,
//! results and environment as local pools, with engines on loopback.
//!
//! Unix only: ipyparallel in the Linux fixture venv.
#![cfg(unix)]

use std::time::Duration;

use caiclust_core::rules::Backend;
use caiclust_core::{Cluster, Outcome, Task};
use caiclust_tests::{fixtures, orphans_after, unique_tag, TAG_VAR};
use serde_json::json;

const MODULE: &str = r#"
import os
def square(x):
    return x * x
def env(names):
    return {n: os.environ.get(n) for n in names}
def boom():
    raise KeyError("missing")
"#;

#[test]
fn a_cluster_on_ipyparallel_engines_runs_tasks_with_the_recommended_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ippmod.py"), MODULE).unwrap();
    let tag = unique_tag("ipp-cluster");
    {
        let cluster = Cluster::builder()
            .auto(true)
            .backend(Backend::Ipyparallel)
            .python(&fixtures().venv_ipp)
            .workers(2)
            .env("PYTHONPATH", dir.path().to_string_lossy())
            .env(TAG_VAR, &tag)
            .build()
            .unwrap();
        let recommended: Vec<(String, String)> = cluster
            .advice()
            .unwrap()
            .recommendation
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        assert!(
            recommended.iter().any(|(k, _)| k == "OMP_NUM_THREADS"),
            "the venv has scikit-learn's libgomp: {recommended:?}"
        );
        let names: Vec<&str> = recommended.iter().map(|(k, _)| k.as_str()).collect();
        let mut tasks: Vec<Task> = (0..10)
            .map(|i| Task::python("ippmod:square", json!([i])))
            .collect();
        tasks.push(Task::python("ippmod:env", json!([names])));
        tasks.push(Task::python("ippmod:boom", json!(null)));
        tasks.push(Task::command(["sh", "-c", "echo on an engine; exit 3"]));
        let mut results = cluster.map(tasks);
        assert_eq!(results.len(), 13);
        for (i, r) in results[..10].iter().enumerate() {
            assert_eq!(r.value(), Some(&json!(i * i)), "{:?}", r.outcome);
        }
        let seen = results[10].value().expect("env task").clone();
        for (k, v) in &recommended {
            assert_eq!(seen[k], json!(v), "engines see {k}");
        }
        assert!(
            matches!(&results[11].outcome, Outcome::Failed { failure: caiclust_core::Failure::Exception { type_name, .. } } if type_name == "KeyError"),
            "{:?}",
            results[11].outcome
        );
        assert!(
            matches!(results[12].exit, Some(caiclust_core::ExitInfo::Code(3))),
            "{:?}",
            results[12]
        );
        assert_eq!(results[12].stdout.to_string_lossy(), "on an engine\n");
        cluster.shutdown();
    }
    let left = orphans_after(&tag, Duration::from_secs(10));
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// `withdraw` on engines: tasks not yet begun end as cancelled with no
/// attempt; the running one finishes.
#[test]
fn withdraw_on_engines_cancels_what_has_not_begun() {
    let tag = unique_tag("ipp-withdraw");
    {
        let cluster = Cluster::builder()
            .backend(Backend::Ipyparallel)
            .python(&fixtures().venv_ipp)
            .workers(1)
            .env(TAG_VAR, &tag)
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let began = dir.path().join("began");
        let line = format!("touch '{}'; sleep 1", began.display());
        let ids = cluster.submit_many((0..6).map(|_| Task::command(["sh", "-c", &line])));
        // Until the first has begun on the one engine.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !began.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(began.exists(), "no task began within a minute");
        // The engine's word that it began travels to the client meanwhile.
        std::thread::sleep(Duration::from_millis(300));
        cluster.withdraw(ids.iter().copied());
        let results: Vec<_> = cluster.results().collect();
        assert_eq!(results.len(), 6);
        let ran = results.iter().filter(|r| r.outcome.is_success()).count();
        let withdrawn: Vec<_> = results
            .iter()
            .filter(|r| matches!(&r.outcome, Outcome::Cancelled { reason } if reason.contains("withdrawn")))
            .collect();
        assert!(ran >= 1, "{results:#?}");
        assert_eq!(ran + withdrawn.len(), 6, "{results:#?}");
        assert!(!withdrawn.is_empty(), "{results:#?}");
        assert!(withdrawn.iter().all(|r| r.attempts == 0), "{withdrawn:#?}");
        cluster.shutdown();
    }
    let left = orphans_after(&tag, Duration::from_secs(10));
    assert!(left.is_empty(), "left behind: {left:#?}");
}
