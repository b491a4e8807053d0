//! `caiclust` inside real Slurm allocations (issue #15, point 1), on the
//! cluster `scripts/slurm.sh up --nodes 2` brings up (sourced from
//! `target/slurm/env.sh` by `scripts/test.sh`): `caiclust run --engines N
//! --engine-launcher srun` starts the engines with srun on the
//! allocation's nodes, and the allocation's `SLURM_*` variables size the
//! plan. One test at a time on the shared cluster.
//!
//! Unix only: a Slurm cluster and the fixture venvs' Linux Pythons.
#![cfg(unix)]

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use caiclust_tests::fixtures;

static CLUSTER: Mutex<()> = Mutex::new(());

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

/// Wait until the queue is empty (completing jobs take a moment to go).
fn assert_queue_empties(within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let out = Command::new("squeue")
            .args(["-h", "-o", "%i %T"])
            .output()
            .expect("squeue runs");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && text.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left in squeue: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `caiclust run --engines 2 --engine-launcher srun` inside `salloc -N2`:
/// the engines run on both nodes of the allocation (srun inside it), and
/// the program reaches them.
#[test]
fn caiclust_run_engines_inside_an_allocation_start_with_srun_on_its_nodes() {
    let _one = CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    assert_queue_empties(Duration::from_secs(30));
    let addr = host_addr();
    let python = fixtures().venv_ipp.clone();
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("use_engines.py");
    std::fs::write(
        &program,
        "import json, os\nimport ipyparallel as ipp\n\
         rc = ipp.Client(os.environ['CAICLUST_IPP_CONNECTION_FILE'])\n\
         rc.wait_for_engines(2, timeout=30)\n\
         print(json.dumps(sorted(rc[:].apply_sync(lambda: __import__('os').environ.get('SLURMD_NODENAME')))))\n",
    )
    .unwrap();
    let out = Command::new("salloc")
        .args(["-N2", "-n2", "--quiet"])
        .arg(env!("CARGO_BIN_EXE_caiclust"))
        .args([
            "run",
            "--engines",
            "2",
            "--engine-launcher",
            "srun",
            "--controller-ip",
            &addr,
        ])
        .arg("--python")
        .arg(&python)
        .arg("--")
        .arg(&python)
        .arg(&program)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let nodes: Vec<String> = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim())
        .unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(nodes, ["node1", "node2"], "{stderr}");
    assert_queue_empties(Duration::from_secs(30));
}

/// The recommendation inside real allocations: one node, one task (what
/// salloc gives its command: SLURM_JOB_CPUS_PER_NODE, no
/// SLURM_CPUS_ON_NODE) bounds the usable CPUs to 1; two nodes, three
/// tasks: three ipyparallel engines.
#[test]
fn an_allocations_slurm_variables_size_the_plan() {
    let _one = CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    let python = fixtures().venv_ipp.clone();
    let env_line = |args: &[&str]| -> String {
        let out = Command::new("salloc")
            .args(args)
            .arg("--quiet")
            .arg(env!("CARGO_BIN_EXE_caiclust"))
            .arg("env")
            .arg("--python")
            .arg(&python)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let one = env_line(&["-N1", "-n1"]);
    assert!(one.contains("1 worker(s) × 1 thread(s)"), "{one}");
    let two = env_line(&["-N2", "-n3"]);
    assert!(two.contains("3 ipyparallel engine(s)"), "{two}");
    assert!(two.contains("SLURM_NTASKS=3"), "{two}");
    assert_queue_empties(Duration::from_secs(30));
}
