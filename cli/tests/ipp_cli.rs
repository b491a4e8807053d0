//! The ipyparallel backend from the command line: `caiclust map --backend
//! ipyparallel` and `caiclust run --engines N`, with real engines on
//! loopback; nothing they start is left behind.
//!
//! Unix only: ipyparallel runs in the Linux fixture venv `venv-ipp`.
#![cfg(unix)]

use std::process::Command;
use std::time::Duration;

use caiclust_tests::{fixtures, orphans_after, unique_tag, TAG_VAR};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_caiclust");

#[test]
fn map_runs_functions_and_commands_on_engines() {
    let python = fixtures().venv_ipp;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ippm.py"),
        "import os\ndef sq(x):\n    return [int(x) ** 2, os.environ.get('OMP_NUM_THREADS')]\n",
    )
    .unwrap();
    let tag = unique_tag("ipp-map");
    let out = Command::new(BIN)
        .args([
            "map",
            "--no-bar",
            "-k",
            "--backend",
            "ipyparallel",
            "-j",
            "2",
            "--python",
        ])
        .arg(&python)
        .args([
            "--env",
            &format!("{TAG_VAR}={tag}"),
            "-f",
            "ippm:sq",
            ":::",
            "1",
            "2",
            "3",
        ])
        .env("PYTHONPATH", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let values: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["value"].clone())
        .collect();
    assert_eq!(
        values,
        vec![
            serde_json::json!([1, "1"]),
            serde_json::json!([4, "1"]),
            serde_json::json!([9, "1"])
        ],
        "squares, and the recommended thread limit for 2 engines on the engines: {stderr}"
    );
    let out = Command::new(BIN)
        .args([
            "map",
            "--no-bar",
            "-k",
            "--backend",
            "ipyparallel",
            "-j",
            "2",
            "--python",
        ])
        .arg(&python)
        .args([
            "--env",
            &format!("{TAG_VAR}={tag}"),
            "--",
            "sh",
            "-c",
            "echo {}; exit {}",
            ":::",
            "0",
            "3",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "one job failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n3\n");
    let left = orphans_after(&tag, Duration::from_secs(10));
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn run_gives_the_program_a_cluster_and_stops_it_after() {
    let python = fixtures().venv_ipp;
    let tag = unique_tag("ipp-run");
    let script = "import os, ipyparallel as ipp\n\
                  c = ipp.Client(os.environ['CAICLUST_IPP_CONNECTION_FILE'])\n\
                  c.wait_for_engines(2, timeout=30)\n\
                  print(sorted(c[:].apply_sync(lambda: __import__('os').environ.get('OMP_NUM_THREADS'))))\n\
                  c.close()\n";
    let out = Command::new(BIN)
        .args(["run", "-q", "--engines", "2", "--python"])
        .arg(&python)
        .args(["--env", &format!("{TAG_VAR}={tag}"), "--"])
        .arg(&python)
        .args(["-c", script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "['1', '1']",
        "{stderr}"
    );
    let left = orphans_after(&tag, Duration::from_secs(10));
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn bad_backend_options_are_named() {
    for (args, needle) in [
        (vec!["--backend", "cloud"], "cloud"),
        (
            vec!["--backend", "ipyparallel", "--launcher", "bogus"],
            "bogus",
        ),
        (
            vec![
                "--backend",
                "ipyparallel",
                "--connection-file",
                "/no/such.json",
            ],
            "/no/such.json",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["map", "--no-bar"])
            .args(&args)
            .args(["--", "true", ":::", "1"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(255), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
