//! The ipyparallel backend on a real Slurm cluster (issue #15, point 1):
//! Debian's slurmctld, slurmd and munge, brought up by `scripts/slurm.sh
//! up --nodes 2` (each node a network namespace of its own, so that jobs
//! reach this host only at `CAICLUST_SLURM_HOST_ADDR`, never at loopback)
//! and sourced from `target/slurm/env.sh` by `scripts/test.sh`.
//!
//! Engines start as `sbatch` jobs (one per engine); a cancelled engine
//! job has its tasks retried on the other; a job the queue never starts is
//! named when the startup deadline passes; nothing is left in `squeue`.
//! (`caiclust run --engines` with `srun` inside an allocation, and the plan
//! an allocation's `SLURM_*` variables size: `cli/tests/slurm_cli.rs`.)
//! The tests share one cluster: they run one at a time.
//!
//! Unix only: a Slurm cluster and ipyparallel in the Linux fixture venv.
#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use caiclust_core::ipp::{IppBackend, IppConfig, IppEvent, Launcher};
use caiclust_core::{Task, TaskResult};
use caiclust_tests::{fixtures, orphans_after, unique_tag, TAG_VAR};
mod ipp_support;
use ipp_support::collect;

use serde_json::{json, Value};

/// One test at a time on the shared cluster.
static CLUSTER: Mutex<()> = Mutex::new(());

const HELPERS: &str = r#"
import os, time

def job(seconds):
    time.sleep(seconds)
    return {n: os.environ.get(n) for n in ("SLURM_JOB_ID", "SLURMD_NODENAME", "SLURM_CPUS_ON_NODE")}
"#;

/// The cluster's address for this host, or a panic that says how to
/// bring the cluster up (never a skip).
fn host_addr() -> String {
    assert!(
        std::env::var_os("SLURM_CONF").is_some(),
        "no Slurm cluster: run `bash scripts/slurm.sh up --nodes 2 && source target/slurm/env.sh` (scripts/test.sh does)"
    );
    std::env::var("CAICLUST_SLURM_HOST_ADDR")
        .expect("CAICLUST_SLURM_HOST_ADDR from target/slurm/env.sh")
}

struct Setup {
    tag: String,
    modules: tempfile::TempDir,
}

fn setup(test: &str) -> Setup {
    let modules = tempfile::tempdir().unwrap();
    std::fs::write(modules.path().join("slurmhelp.py"), HELPERS).unwrap();
    Setup {
        tag: unique_tag(test),
        modules,
    }
}

impl Setup {
    /// `engines` engines, each an sbatch job; the controller where the
    /// nodes reach it.
    fn config(&self, engines: usize) -> IppConfig {
        let mut c = IppConfig::new(&fixtures().venv_ipp, engines);
        c.engine_launcher = Launcher::Slurm;
        c.controller_ip = Some(host_addr());
        c.env.insert(TAG_VAR.into(), self.tag.clone());
        c.env.insert(
            "PYTHONPATH".into(),
            self.modules.path().to_string_lossy().into_owned(),
        );
        c.startup_timeout = Duration::from_secs(60);
        c.heartbeat = Duration::from_millis(500);
        c.grace = Duration::from_millis(500);
        c
    }
}

/// The jobs in the queue: id → (state, reason).
fn queue() -> BTreeMap<String, (String, String)> {
    let out = Command::new("squeue")
        .args(["-h", "-o", "%i|%T|%r"])
        .output()
        .expect("squeue runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.trim().split('|');
            Some((
                f.next()?.to_string(),
                (f.next()?.to_string(), f.next().unwrap_or("").to_string()),
            ))
        })
        .collect()
}

/// Wait until the queue is empty (completing jobs take a moment to go).
fn assert_queue_empties(within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let q = queue();
        if q.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left in squeue: {q:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Wait until `want` jobs run.
fn running_jobs(want: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let running: Vec<String> = queue()
            .into_iter()
            .filter(|(_, (state, _))| state == "RUNNING")
            .map(|(id, _)| id)
            .collect();
        if running.len() >= want {
            return running;
        }
        assert!(
            Instant::now() < deadline,
            "{want} running jobs: {:?}",
            queue()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn value(r: &TaskResult) -> &Value {
    r.value()
        .unwrap_or_else(|| panic!("task {} did not succeed: {:?}", r.id, r.outcome))
}

#[test]
fn engines_start_as_one_sbatch_job_each_on_the_nodes_and_leave_nothing_queued() {
    let _one = CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    assert_queue_empties(Duration::from_secs(30));
    let s = setup("slurm-sbatch");
    let b = IppBackend::start(s.config(2)).unwrap();
    let jobs = running_jobs(2, Duration::from_secs(10));
    assert_eq!(jobs.len(), 2, "one job per engine: {:?}", queue());
    for i in 1..=4u64 {
        b.submit(i, &Task::python("slurmhelp:job", json!([0.5])))
            .unwrap();
    }
    let (results, _) = collect(&b, 4, Duration::from_secs(60));
    let seen: BTreeSet<String> = results
        .values()
        .map(|r| {
            value(r)["SLURM_JOB_ID"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(
        !seen.contains(""),
        "every task ran in a Slurm job: {results:#?}"
    );
    assert!(seen.iter().all(|j| jobs.contains(j)), "{seen:?} ⊆ {jobs:?}");
    for r in results.values() {
        let node = value(r)["SLURMD_NODENAME"].as_str().unwrap_or_default();
        assert!(node.starts_with("node"), "{r:?}");
    }
    b.shutdown();
    assert_queue_empties(Duration::from_secs(30));
    let left = orphans_after(&s.tag, Duration::from_secs(10));
    assert!(left.is_empty(), "left behind: {left:#?}");
    // The batch scripts went to the run's folder, not the working folder.
    let here: Vec<String> = std::fs::read_dir(".")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("sbatch") || n.contains("batch-script"))
        .collect();
    assert!(
        here.is_empty(),
        "batch scripts in the working folder: {here:?}"
    );
}

#[test]
fn a_cancelled_engine_job_has_its_tasks_retried_on_the_other() {
    let _one = CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    assert_queue_empties(Duration::from_secs(30));
    let s = setup("slurm-scancel");
    let mut c = s.config(2);
    c.replace_engines = false;
    let b = IppBackend::start(c).unwrap();
    let jobs = running_jobs(2, Duration::from_secs(10));
    for i in 1..=4u64 {
        b.submit(i, &Task::python("slurmhelp:job", json!([3])))
            .unwrap();
    }
    // Both engines busy, then one job cancelled under them.
    let mut started = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut early = Vec::new();
    while started.len() < 2 {
        match b.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Some(IppEvent::Started { id, .. }) => {
                started.insert(id);
            }
            Some(other) => early.push(other),
            None => panic!("two tasks never started: {early:#?}"),
        }
    }
    let victim = jobs[0].clone();
    let out = Command::new("scancel").arg(&victim).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (results, events) = collect(&b, 4, Duration::from_secs(90));
    for r in results.values() {
        let job = value(r)["SLURM_JOB_ID"].as_str().unwrap_or_default();
        assert!(jobs.contains(&job.to_string()), "{r:?}");
    }
    let retried: Vec<&TaskResult> = results.values().filter(|r| r.attempts > 1).collect();
    assert!(
        !retried.is_empty(),
        "a task of the cancelled job was retried: {results:#?}"
    );
    for r in &retried {
        assert_ne!(
            value(r)["SLURM_JOB_ID"],
            victim.as_str(),
            "retried elsewhere: {r:?}"
        );
    }
    assert!(
        events
            .iter()
            .chain(&early)
            .any(|e| matches!(e, IppEvent::EngineDied { .. })),
        "the engine's death was reported: {events:#?}"
    );
    b.shutdown();
    assert_queue_empties(Duration::from_secs(30));
    let left = orphans_after(&s.tag, Duration::from_secs(10));
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn a_job_the_queue_never_starts_is_named_when_the_startup_deadline_passes() {
    let _one = CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    assert_queue_empties(Duration::from_secs(30));
    let s = setup("slurm-pending");
    let mut c = s.config(1);
    // More CPUs than any node has: the job waits in the queue forever.
    c.launcher_config.insert(
        "SlurmEngineSetLauncher".into(),
        BTreeMap::from([(
            "submit_command".to_string(),
            json!(["sbatch", "--cpus-per-task=64"]),
        )]),
    );
    c.startup_timeout = Duration::from_secs(8);
    let t0 = Instant::now();
    let err = IppBackend::start(c)
        .expect_err("the engine never registers")
        .to_string();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(40), "{took:?}: {err}");
    assert!(err.contains("startup deadline"), "{err}");
    assert!(err.contains("batch job"), "the job is named: {err}");
    assert!(err.contains("PENDING"), "with its queue state: {err}");
    assert_queue_empties(Duration::from_secs(30));
    let left = orphans_after(&s.tag, Duration::from_secs(10));
    assert!(left.is_empty(), "left behind: {left:#?}");
}
