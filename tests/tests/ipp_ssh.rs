//! The ipyparallel backend over real SSH hosts (issue #15, points 2 and
//! 3): `scripts/ssh-hosts.sh up` runs sshd in two network namespaces with
//! their own addresses, hostnames and keys made for the run (sourced from
//! `target/ssh-hosts/env.sh` by `scripts/test.sh`). The hosts reach this
//! one only at `CAICLUST_SSH_CONTROLLER_IP`, never at its loopback.
//!
//! Engines are spread over the hosts with ipyparallel's SSH launcher; a
//! host that goes away mid-run (its sshd and engines killed, or its link
//! cut) has its tasks retried on the other; an unreachable host is named when startup fails;
//! a controller on loopback with engines on other hosts is refused before
//! anything starts. The tests share the hosts: one at a time.
//!
//! Unix only: SSH hosts in network namespaces and ipyparallel in the Linux fixture venv.
#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use caiclust_core::ipp::{IppBackend, IppConfig, IppError, IppEvent, Launcher};
use caiclust_core::{Task, TaskResult};
use caiclust_tests::{fixtures, orphans_after, unique_tag, TAG_VAR};
mod ipp_support;
use ipp_support::collect;

use serde_json::{json, Map, Value};

static HOSTS: Mutex<()> = Mutex::new(());

const HELPERS: &str = r#"
import os, socket, time

def where(seconds):
    time.sleep(seconds)
    return socket.gethostname()
"#;

/// A variable of `target/ssh-hosts/env.sh`, or a panic that says how to
/// bring the hosts up (never a skip).
fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} unset: run `bash scripts/ssh-hosts.sh up && source target/ssh-hosts/env.sh` (scripts/test.sh does)"
        )
    })
}

fn hosts() -> Vec<String> {
    var("CAICLUST_SSH_HOSTS")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

struct Setup {
    tag: String,
    modules: tempfile::TempDir,
}

fn setup(test: &str) -> Setup {
    let modules = tempfile::tempdir().unwrap();
    std::fs::write(modules.path().join("sshhelp.py"), HELPERS).unwrap();
    Setup {
        tag: unique_tag(test),
        modules,
    }
}

impl Setup {
    /// One engine on each of `on` (addresses), over the run's ssh.
    fn config(&self, on: &[String]) -> IppConfig {
        let mut c = IppConfig::new(&fixtures().venv_ipp, on.len());
        c.engine_launcher = Launcher::Ssh;
        c.controller_ip = Some(var("CAICLUST_SSH_CONTROLLER_IP"));
        let bin = var("CAICLUST_SSH_BIN");
        let engines: Map<String, Value> =
            on.iter().map(|h| (format!("root@{h}"), json!(1))).collect();
        c.launcher_config.insert(
            "SSHEngineSetLauncher".into(),
            BTreeMap::from([("engines".to_string(), Value::Object(engines))]),
        );
        c.launcher_config.insert(
            "SSHLauncher".into(),
            BTreeMap::from([
                ("ssh_cmd".to_string(), json!([format!("{bin}/ssh")])),
                ("scp_cmd".to_string(), json!([format!("{bin}/scp")])),
            ]),
        );
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

    fn assert_clean(&self) {
        let left = orphans_after(&self.tag, Duration::from_secs(10));
        assert!(left.is_empty(), "left behind: {left:#?}");
    }
}

fn hosts_script(args: &[&str]) {
    let out = Command::new("bash")
        .arg(var("CAICLUST_SSH_SCRIPT"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh-hosts.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn host_of(r: &TaskResult) -> String {
    r.value()
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("task {} did not succeed: {:?}", r.id, r.outcome))
        .to_string()
}

#[test]
fn engines_spread_over_the_ssh_hosts_and_run_the_tasks_there() {
    let _one = HOSTS.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("ssh-spread");
    let b = IppBackend::start(s.config(&hosts())).unwrap();
    // The engines listen for the controller at the hosts' bridge address.
    let conn: Value =
        serde_json::from_str(&std::fs::read_to_string(b.connection_file().unwrap()).unwrap())
            .unwrap();
    assert!(
        conn["interface"]
            .as_str()
            .unwrap_or_default()
            .contains(&var("CAICLUST_SSH_CONTROLLER_IP")),
        "{conn}"
    );
    for i in 1..=6u64 {
        b.submit(i, &Task::python("sshhelp:where", json!([0.5])))
            .unwrap();
    }
    let (results, _) = collect(&b, 6, Duration::from_secs(60));
    let seen: BTreeSet<String> = results.values().map(host_of).collect();
    let want: BTreeSet<String> = var("CAICLUST_SSH_HOST_NAMES")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(seen, want, "every host ran tasks: {results:#?}");
    b.shutdown();
    s.assert_clean();
}

/// Host 2 goes away while both engines run tasks, `how`: `kill` (its sshd
/// and engines killed) or `cut` (its link down, everything left running).
fn host_lost_mid_run(how: &str) {
    let s = setup(&format!("ssh-host-{how}"));
    let mut c = s.config(&hosts());
    c.replace_engines = false;
    let b = IppBackend::start(c).unwrap();
    for i in 1..=4u64 {
        b.submit(i, &Task::python("sshhelp:where", json!([3])))
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut started = BTreeSet::new();
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
    hosts_script(&[how, "2"]);
    let (results, events) = collect(&b, 4, Duration::from_secs(90));
    let names: Vec<String> = var("CAICLUST_SSH_HOST_NAMES")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let retried: Vec<&TaskResult> = results.values().filter(|r| r.attempts > 1).collect();
    assert!(
        !retried.is_empty(),
        "{how}: a task of the lost host was retried: {results:#?}"
    );
    for r in &retried {
        assert_eq!(
            host_of(r),
            names[0],
            "{how}: retried on the other host: {r:?}"
        );
    }
    assert!(
        events
            .iter()
            .chain(&early)
            .any(|e| matches!(e, IppEvent::EngineDied { .. })),
        "{how}: the lost engine was reported: {events:#?}"
    );
    b.shutdown();
    hosts_script(&["restore", "2"]);
    s.assert_clean();
}

#[test]
fn a_host_whose_sshd_and_engines_are_killed_mid_run_has_its_tasks_retried_on_the_other() {
    let _one = HOSTS.lock().unwrap_or_else(|p| p.into_inner());
    host_lost_mid_run("kill");
}

#[test]
fn a_host_whose_link_is_cut_mid_run_has_its_tasks_retried_on_the_other() {
    let _one = HOSTS.lock().unwrap_or_else(|p| p.into_inner());
    host_lost_mid_run("cut");
}

#[test]
fn an_unreachable_host_is_named_when_startup_fails() {
    let _one = HOSTS.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("ssh-unreachable");
    let gone = var("CAICLUST_SSH_UNREACHABLE_IP");
    let mut c = s.config(&[hosts()[0].clone(), gone.clone()]);
    c.startup_timeout = Duration::from_secs(15);
    let t0 = Instant::now();
    let err = IppBackend::start(c)
        .expect_err("one engine never starts")
        .to_string();
    assert!(
        t0.elapsed() < Duration::from_secs(45),
        "{:?}: {err}",
        t0.elapsed()
    );
    assert!(
        err.contains(&format!("unreachable over ssh: root@{gone}")),
        "the host is named: {err}"
    );
    assert!(
        !err.contains(&format!("root@{} (", hosts()[0])),
        "only that host: {err}"
    );
    s.assert_clean();
}

#[test]
fn a_loopback_controller_with_engines_on_other_hosts_is_refused_before_anything_starts() {
    let s = setup("ssh-loopback");
    let mut c = s.config(&hosts());
    c.controller_ip = None;
    let t0 = Instant::now();
    let err = IppBackend::start(c).expect_err("refused");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(matches!(err, IppError::Config(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("loopback"), "{text}");
    assert!(text.contains(&hosts()[0]), "{text}");
    assert!(text.contains("controller_ip"), "{text}");
    s.assert_clean();
}
