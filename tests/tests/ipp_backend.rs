//! The ipyparallel backend (issue #6) with real ipyparallel from PyPI
//! (`venv-ipp`), a real controller and real engines on loopback.
//!
//! Every test tags the environment of everything it starts with
//! `TAG_VAR` (the driver, and through it controller, engines, nannies and
//! commands) and checks afterwards that no tagged process is left and that
//! the run's profile folder is gone.
//!
//! Unix only: ipyparallel runs in the Linux fixture venv `venv-ipp`; interrupts are Unix signals.
#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caiclust_core::ipp::{Attach, IppBackend, IppError, IppEvent, Launcher};
use caiclust_core::{ExitInfo, Failure, Outcome, StartCause, Task};
use caiclust_tests::{fixtures, orphans_after, TAG_VAR};

mod ipp_support;
use ipp_support::*;
use serde_json::{json, Value};

/// Acceptance 1, 2, the hazard workload, and a different environment and
/// working folder from the caller's: two engines on loopback.
#[test]
fn engines_on_loopback_run_callables_commands_and_the_hazard_workload() {
    let s = setup("ipp-basic");
    let work = tempfile::tempdir().unwrap();
    let mut config = s.config(2).recommended().unwrap();
    let recommended: BTreeMap<String, String> = config
        .env
        .iter()
        .filter(|(k, _)| k.ends_with("_NUM_THREADS"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(
        recommended.contains_key("OMP_NUM_THREADS")
            && recommended.contains_key("OPENBLAS_NUM_THREADS"),
        "the rules see OpenMP and OpenBLAS in venv-ipp: {recommended:?}"
    );
    assert!(std::env::var_os("CAICLUST_IPP_ONLY").is_none());
    config
        .env
        .insert("CAICLUST_IPP_ONLY".into(), "engines".into());
    config.work_dir = Some(work.path().to_path_buf());
    // Nothing lands in the home folder (no ~/.ipython profile, no pid or
    // connection files): everything stays in the run folder.
    let home = tempfile::tempdir().unwrap();
    config
        .env
        .insert("HOME".into(), home.path().to_string_lossy().into_owned());

    let t0 = Instant::now();
    let b = IppBackend::start(config).unwrap();
    let started_in = t0.elapsed();
    let run_dir = b.run_dir().unwrap().to_path_buf();
    let engines = b.engines();
    assert_eq!(engines.len(), 2, "{engines:?}");
    let engine_pids: BTreeSet<u32> = engines.iter().map(|e| e.pid).collect();
    assert!(!engine_pids.contains(&std::process::id()));

    // The controller listens on loopback only.
    let conn: Value =
        serde_json::from_str(&std::fs::read_to_string(b.connection_file().unwrap()).unwrap())
            .unwrap();
    assert_eq!(conn["interface"], "tcp://127.0.0.1", "{conn}");
    assert!(run_dir.join("profile").is_dir());

    let names: Vec<String> = recommended
        .keys()
        .cloned()
        .chain(["CAICLUST_IPP_ONLY".to_string()])
        .collect();
    let mut tasks = vec![
        Task::python("operator:add", json!([2, 40])),
        Task::python("ipphelp:env", json!([names])),
        Task::python("ipphelp:whoami", Value::Null),
        Task::python("ipphelp:boom", json!(["no good"])),
        Task::python("ipphelp:shout", json!(["hello from an engine"])),
        Task::python("nosuchmodule:f", Value::Null),
        Task::command([
            "sh",
            "-c",
            "echo \"$OMP_NUM_THREADS $CAICLUST_IPP_ONLY $PWD\"; echo to-stderr >&2",
        ]),
        Task::command(["sh", "-c", "exit 3"]),
        Task::command(["/no/such/program"]),
        Task::command(["cat"]).stdin(b"fed through stdin".to_vec()),
        Task::command(["sh", "-c", "echo $EXTRA; pwd"])
            .env("EXTRA", "per-task")
            .cwd("/"),
    ];
    // Tasks that take a while, to see both engines at work.
    tasks.extend((0..4).map(|_| Task::python("ipphelp:slow", json!([0.6]))));
    // The hazard workload.
    let hazard_first = tasks.len() as u64 + 1;
    tasks.extend((0..6).map(|i| Task::python("hazard:task", json!([i]))));
    // Rust functions cannot run on engines: a failed result, at once.
    tasks.push(Task::rust("double", json!(2)));
    let (mut r, _events) = run_all(&b, &tasks, Duration::from_secs(90));
    assert_eq!(b.outstanding(), 0);
    assert!(
        matches!(&r[&(hazard_first + 6)].outcome, Outcome::Failed { failure: Failure::Start { message, .. } } if message.contains("cannot run on ipyparallel engines")),
        "{:?}",
        r[&(hazard_first + 6)].outcome
    );

    assert_eq!(value(&r[&1]), &json!(42));
    let env_seen = value(&r[&2]);
    for (k, v) in &recommended {
        assert_eq!(env_seen[k], json!(v), "{k} on the engine: {env_seen}");
    }
    assert_eq!(env_seen["CAICLUST_IPP_ONLY"], "engines");
    let who = value(&r[&3]);
    let cwd = PathBuf::from(who["cwd"].as_str().unwrap());
    assert_eq!(
        cwd.canonicalize().unwrap(),
        work.path().canonicalize().unwrap(),
        "engines run in the configured folder"
    );
    assert_ne!(cwd, std::env::current_dir().unwrap());
    assert!(engine_pids.contains(&(who["pid"].as_u64().unwrap() as u32)));
    assert_eq!(r[&3].pid, who["pid"].as_u64().map(|p| p as u32));
    match &r[&4].outcome {
        Outcome::Failed {
            failure:
                Failure::Exception {
                    type_name,
                    message,
                    traceback,
                },
        } => {
            assert_eq!(type_name, "ValueError");
            assert_eq!(message, "no good");
            assert!(traceback.contains("boom"), "{traceback}");
        }
        other => panic!("{other:?}"),
    }
    let mut shout = r.remove(&5).unwrap();
    assert_eq!(value(&shout), &json!(20));
    assert_eq!(shout.stdout.to_string_lossy(), "hello from an engine\n");
    assert!(
        matches!(&r[&6].outcome, Outcome::Failed { failure: Failure::Exception { type_name, .. } } if type_name == "ModuleNotFoundError"),
        "{:?}",
        r[&6].outcome
    );
    let mut echo = r.remove(&7).unwrap();
    assert!(echo.outcome.is_success(), "{:?}", echo.outcome);
    assert_eq!(echo.exit, Some(ExitInfo::Code(0)));
    let omp = &recommended["OMP_NUM_THREADS"];
    let line = echo.stdout.to_string_lossy();
    let want_dir = work.path().canonicalize().unwrap();
    assert!(
        line.starts_with(&format!("{omp} engines /"))
            && line.trim_end().ends_with(want_dir.to_str().unwrap()),
        "{line}"
    );
    assert_eq!(echo.stderr.to_string_lossy(), "to-stderr\n");
    assert_eq!(
        r[&8].outcome,
        Outcome::Failed {
            failure: Failure::Exit {
                exit: ExitInfo::Code(3)
            }
        }
    );
    assert!(
        matches!(&r[&9].outcome, Outcome::Failed { failure: Failure::Start { message, cause: StartCause::NotFound } } if message.contains("/no/such/program")),
        "{:?}",
        r[&9].outcome
    );
    let mut cat = r.remove(&10).unwrap();
    assert_eq!(cat.stdout.to_string_lossy(), "fed through stdin");
    let mut extra = r.remove(&11).unwrap();
    assert_eq!(extra.stdout.to_string_lossy(), "per-task\n/\n");

    let slow_pids: BTreeSet<u32> = (12..=15)
        .map(|i| value(&r[&i]).as_u64().unwrap() as u32)
        .collect();
    assert_eq!(slow_pids, engine_pids, "both engines took tasks");
    let slots: BTreeSet<usize> = (12..=15).filter_map(|i| r[&i].slot).collect();
    assert_eq!(slots, BTreeSet::from([1, 2]));
    for i in 12..=15 {
        assert_eq!(r[&i].attempts, 1);
        assert!(
            r[&i].runtime >= Duration::from_millis(550),
            "{:?}",
            r[&i].runtime
        );
        assert!(r[&i].started.is_some());
    }

    // The hazard workload: what one plain process computes.
    let want = hazard_oracle(&s, 6);
    let got: Vec<Value> = (0..6)
        .map(|i| value(&r[&(hazard_first + i)]).clone())
        .collect();
    assert_eq!(got, want);

    let report = b.shutdown();
    assert!(report.clean, "{report:?}");
    s.assert_clean(&run_dir);
    let in_home: Vec<_> = std::fs::read_dir(home.path()).unwrap().collect();
    assert!(in_home.is_empty(), "written to HOME: {in_home:?}");
    eprintln!("started in {started_in:?}, whole test {:?}", t0.elapsed());
}

fn hazard_oracle(s: &Setup, n: usize) -> Vec<Value> {
    let out = Command::new(&fixtures().venv_ipp)
        .arg("-c")
        .arg(format!(
            "import json, hazard; print(json.dumps([hazard.task(i) for i in range({n})]))"
        ))
        .env("PYTHONPATH", s.modules.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Acceptance 3: an engine killed mid-run; its task completes on the other.
#[test]
fn tasks_of_a_killed_engine_complete_elsewhere() {
    let s = setup("ipp-kill");
    let mut config = s.config(2);
    config.retries = 1;
    let b = IppBackend::start(config).unwrap();
    let run_dir = b.run_dir().unwrap().to_path_buf();
    let engines = b.engines();
    // One long task per engine (the scheduler gives each engine one).
    b.submit(1, &Task::python("ipphelp:slow", json!([3])))
        .unwrap();
    b.submit(2, &Task::python("ipphelp:slow", json!([3])))
        .unwrap();
    let mut running = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while running.len() < 2 && Instant::now() < deadline {
        if let Some(IppEvent::Started { id, engine, .. }) =
            b.recv_timeout(Duration::from_millis(100))
        {
            running.insert(id, engine.unwrap());
        }
    }
    assert_eq!(running.len(), 2, "both tasks started: {running:?}");
    let victim = engines
        .iter()
        .find(|e| e.id == running[&1])
        .unwrap()
        .clone();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(b.outstanding(), 2);
    caiclust_core::tree::signal_tree(victim.pid, caiclust_core::tree::StopSignal::Kill);
    let t0 = Instant::now();
    let (r, events) = collect(&b, 2, Duration::from_secs(40));
    let took = t0.elapsed();

    let died: Vec<&IppEvent> = events
        .iter()
        .filter(|e| matches!(e, IppEvent::EngineDied { engine, .. } if *engine == victim.id))
        .collect();
    assert_eq!(died.len(), 1, "{events:#?}");
    let IppEvent::EngineDied {
        tasks, expected, ..
    } = died[0]
    else {
        unreachable!()
    };
    assert!(!expected);
    assert_eq!(tasks, &[1], "{events:#?}");
    let moved = &r[&1];
    let other = &r[&2];
    assert_eq!(moved.attempts, 2, "{moved:?}");
    assert!(
        matches!(moved.history.as_slice(), [Failure::WorkerDied { pid, .. }] if *pid == victim.pid),
        "{:?}",
        moved.history
    );
    assert_ne!(value(moved).as_u64(), Some(u64::from(victim.pid)));
    assert_eq!(value(moved), value(other), "both ran on the survivor");
    assert_eq!(other.attempts, 1);
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, IppEvent::Notice { message, .. } if message.contains("retrying"))),
        "{events:#?}"
    );
    assert_eq!(b.engines().len(), 1);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, IppEvent::Started { id: 1, attempt: 2, engine, .. } if *engine != Some(victim.id))),
        "{events:#?}"
    );

    drop(b);
    s.assert_clean(&run_dir);
}

/// Timeouts stop running tasks (their engine is replaced); cancellation
/// stops queued and running ones.
#[test]
fn timeouts_and_cancellation_stop_tasks() {
    let s = setup("ipp-timeout");
    let config = s.config(2);
    let b = IppBackend::start(config).unwrap();
    let run_dir = b.run_dir().unwrap().to_path_buf();
    let first: BTreeSet<u32> = b.engines().iter().map(|e| e.pid).collect();

    let t0 = Instant::now();
    let tasks = [
        Task::python("ipphelp:stubborn", json!([60])).timeout(Duration::from_millis(1500)),
        Task::command(["sleep", "60"]).timeout(Duration::from_millis(1500)),
    ];
    let (r, events) = run_all(&b, &tasks, Duration::from_secs(30));
    let took = t0.elapsed();
    for i in [1, 2] {
        assert_eq!(
            r[&i].outcome,
            Outcome::Failed {
                failure: Failure::TimedOut { after_ms: 1500 }
            },
            "task {i}"
        );
    }
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, IppEvent::EngineDied { expected: true, .. })),
        "the Python task's engine was stopped: {events:#?}"
    );
    // The command's engine lives on; the other was replaced.
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.engines().len() < 2 && Instant::now() < deadline {
        if let Some(ev) = b.recv_timeout(Duration::from_millis(200)) {
            assert!(!matches!(ev, IppEvent::Result(_)), "{ev:?}");
        }
    }
    let now: BTreeSet<u32> = b.engines().iter().map(|e| e.pid).collect();
    assert_eq!(now.len(), 2, "a replacement engine registered: {now:?}");
    assert_eq!(now.intersection(&first).count(), 1, "{first:?} -> {now:?}");

    // Cancellation: two running, one queued behind them.
    for id in 11..=13 {
        b.submit(id, &Task::python("ipphelp:slow", json!([60])))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(1000));
    let t1 = Instant::now();
    for id in [13, 11, 12] {
        b.cancel(id).unwrap();
    }
    let (r, _) = collect(&b, 3, Duration::from_secs(20));
    for id in 11..=13 {
        assert!(
            matches!(r[&id].outcome, Outcome::Cancelled { .. }),
            "task {id}: {:?}",
            r[&id].outcome
        );
    }
    assert!(t1.elapsed() < Duration::from_secs(10), "{:?}", t1.elapsed());
    // Still usable afterwards.
    b.submit(20, &Task::python("operator:mul", json!([6, 7])))
        .unwrap();
    let (r, _) = collect(&b, 1, Duration::from_secs(30));
    assert_eq!(value(&r[&20]), &json!(42));
    drop(b);
    s.assert_clean(&run_dir);
}

/// Acceptance 4: engines that never start make startup fail with a clear
/// error: at once when they exit, at the deadline when they hang.
#[test]
fn engines_that_never_start_fail_startup_with_their_reasons() {
    let s = setup("ipp-nostart");
    let parent = tempfile::tempdir().unwrap();

    // Engines that exit at once, saying why.
    let mut config = s.config(2);
    config.profile_parent = Some(parent.path().to_path_buf());
    config.startup_timeout = Duration::from_secs(40);
    config.launcher_config.insert(
        "EngineLauncher".into(),
        BTreeMap::from([(
            "engine_cmd".to_string(),
            json!([
                "sh",
                "-c",
                "echo 'cannot reach the scheduler' >&2; exit 7",
                "sh"
            ]),
        )]),
    );
    let t0 = Instant::now();
    let err = IppBackend::start(config).unwrap_err();
    let took = t0.elapsed();
    let text = err.to_string();
    assert!(took < Duration::from_secs(20), "{took:?}: {text}");
    match &err {
        IppError::Startup { engines, .. } => {
            assert_eq!(engines.len(), 2, "{text}");
            for e in engines {
                assert_eq!(e.exit_code, Some(7), "{text}");
                assert!(e.output.contains("cannot reach the scheduler"), "{text}");
            }
        }
        other => panic!("{other:?}"),
    }
    assert!(
        text.contains("engine 0") && text.contains("engine 1"),
        "{text}"
    );
    assert!(text.contains("exit code 7"), "{text}");

    // Engines that hang without registering: the error comes at the
    // deadline, not later, and names them.
    let mut config = s.config(2);
    config.profile_parent = Some(parent.path().to_path_buf());
    config.startup_timeout = Duration::from_secs(6);
    config.launcher_config.insert(
        "EngineLauncher".into(),
        BTreeMap::from([(
            "engine_cmd".to_string(),
            json!([
                "sh",
                "-c",
                "echo 'waiting for a license'; exec sleep 600",
                "sh"
            ]),
        )]),
    );
    let t0 = Instant::now();
    let err = IppBackend::start(config).unwrap_err();
    let took = t0.elapsed();
    let text = err.to_string();
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_secs(15),
        "{took:?}: {text}"
    );
    assert!(text.contains("0 of 2 engines registered"), "{text}");
    assert!(text.contains("running, not registered"), "{text}");
    assert!(text.contains("waiting for a license"), "{text}");

    let left = orphans_after(&s.tag, Duration::from_secs(10));
    assert!(left.is_empty(), "left behind: {left:#?}");
    let runs: Vec<_> = std::fs::read_dir(parent.path()).unwrap().collect();
    assert!(runs.is_empty(), "run folders left: {runs:?}");
}

/// A second backend attaches to the first one's cluster through its
/// connection file; stopping it leaves the cluster running.
#[test]
fn attach_to_a_running_cluster() {
    let s = setup("ipp-attach");
    let a = IppBackend::start(s.config(2)).unwrap();
    let run_dir = a.run_dir().unwrap().to_path_buf();
    let mut attach = s.config(2);
    attach.attach = Some(Attach::ConnectionFile(
        a.connection_file().unwrap().to_path_buf(),
    ));
    let b = IppBackend::start(attach).unwrap();
    assert!(b.cluster_pids().is_empty());
    let a_pids: BTreeSet<u32> = a.engines().iter().map(|e| e.pid).collect();
    let b_pids: BTreeSet<u32> = b.engines().iter().map(|e| e.pid).collect();
    assert_eq!(a_pids, b_pids);
    let (r, _) = run_all(
        &b,
        &[Task::python("ipphelp:whoami", Value::Null)],
        Duration::from_secs(30),
    );
    assert!(a_pids.contains(&(value(&r[&1])["pid"].as_u64().unwrap() as u32)));
    let b_dir = b.run_dir().unwrap().to_path_buf();
    b.shutdown();
    assert!(!b_dir.exists());
    for pid in &a_pids {
        assert!(
            caiclust_core::tree::alive(*pid),
            "engine {pid} survives the detach"
        );
    }
    let (r, _) = run_all(
        &a,
        &[Task::python("operator:neg", json!([5]))],
        Duration::from_secs(30),
    );
    assert_eq!(value(&r[&1]), &json!(-5));
    a.shutdown();
    s.assert_clean(&run_dir);
}

/// Acceptance 5 for the hard cases: the caller panics, or is stopped with
/// Ctrl-C (SIGINT) while tasks run.
#[test]
fn a_panic_or_ctrl_c_in_the_caller_leaves_nothing_behind() {
    // A panic: Drop runs while unwinding.
    let s = setup("ipp-panic");
    let config = s.config(1);
    let (tx, rx) = std::sync::mpsc::channel();
    let joined = std::thread::spawn(move || {
        let b = IppBackend::start(config).unwrap();
        tx.send(b.run_dir().unwrap().to_path_buf()).unwrap();
        b.submit(1, &Task::python("ipphelp:slow", json!([60])))
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        panic!("the caller fails with a task running");
    })
    .join();
    assert!(joined.is_err());
    let run_dir = rx.recv().unwrap();
    s.assert_clean(&run_dir);

    // Ctrl-C: a program holding a backend gets SIGINT and dies without
    // running any destructor; the driver sees its input close.
    let s = setup("ipp-sigint");
    let mut holder = Command::new(env!("CARGO_BIN_EXE_ipp_hold"))
        .arg(&fixtures().venv_ipp)
        .env(TAG_VAR, &s.tag)
        .env("PYTHONPATH", s.modules.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let run_dir = PathBuf::from(
        line.trim()
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("holder said {line:?}")),
    );
    assert!(run_dir.is_dir());
    assert!(caiclust_tests::processes_tagged(&s.tag).len() >= 4);
    // SAFETY: kill takes plain integers; the holder is our child.
    unsafe {
        libc::kill(holder.id() as libc::pid_t, libc::SIGINT);
    }
    let status = holder.wait().unwrap();
    assert!(!status.success());
    s.assert_clean(&run_dir);
}

/// Bad input is a clear error naming it, before anything starts.
#[test]
fn bad_configuration_is_named() {
    let s = setup("ipp-config");
    let mut c = s.config(0);
    let e = IppBackend::start(c.clone()).unwrap_err().to_string();
    assert!(e.contains("at least one engine"), "{e}");
    c.engines = 1;
    c.python = PathBuf::from("/no/such/python3");
    let e = IppBackend::start(c.clone()).unwrap_err().to_string();
    assert!(e.contains("/no/such/python3"), "{e}");
    let mut c = s.config(1);
    c.work_dir = Some(PathBuf::from("/no/such/folder"));
    let e = IppBackend::start(c).unwrap_err().to_string();
    assert!(e.contains("/no/such/folder"), "{e}");
    let mut c = s.config(1);
    c.attach = Some(Attach::ConnectionFile(PathBuf::from(
        "/no/such/ipcontroller-client.json",
    )));
    let e = IppBackend::start(c).unwrap_err().to_string();
    assert!(e.contains("/no/such/ipcontroller-client.json"), "{e}");
    let e = "torque".parse::<Launcher>().unwrap_err().to_string();
    assert!(e.contains("torque"), "{e}");
    assert_eq!("Slurm".parse::<Launcher>().unwrap(), Launcher::Slurm);
    assert_eq!(
        "mypkg.launchers.Custom".parse::<Launcher>().unwrap(),
        Launcher::Class("mypkg.launchers.Custom".into())
    );
    // A Python without ipyparallel: the error says so.
    let mut c = s.config(1);
    c.python = fixtures().venv_numpy.clone();
    let e = IppBackend::start(c).unwrap_err().to_string();
    assert!(e.contains("cannot import ipyparallel"), "{e}");
    let left = orphans_after(&s.tag, Duration::from_secs(5));
    assert!(left.is_empty(), "{left:#?}");
}

/// The driver itself dies (SIGKILL): its tasks get a result naming it, and
/// the backend still stops the engines and controller it reported.
#[test]
fn a_killed_driver_is_reported_and_cleaned_up_after() {
    let s = setup("ipp-driver");
    let b = IppBackend::start(s.config(1)).unwrap();
    let run_dir = b.run_dir().unwrap().to_path_buf();
    let cluster = b.cluster_pids();
    let engine = b.engines()[0].pid;
    assert!(cluster.contains(&engine), "{cluster:?} has engine {engine}");
    b.submit(1, &Task::python("ipphelp:slow", json!([60])))
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    // SAFETY: kill takes plain integers; the driver is our child.
    unsafe {
        libc::kill(b.driver_pid() as libc::pid_t, libc::SIGKILL);
    }
    let (r, events) = collect(&b, 1, Duration::from_secs(20));
    assert_eq!(
        r[&1].outcome,
        Outcome::Failed {
            failure: Failure::WorkerDied {
                exit: None,
                pid: b.driver_pid()
            }
        }
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut exited = events
        .iter()
        .any(|e| matches!(e, IppEvent::DriverExited { .. }));
    while !exited && Instant::now() < deadline {
        exited = matches!(
            b.recv_timeout(Duration::from_millis(200)),
            Some(IppEvent::DriverExited { .. })
        );
    }
    assert!(exited);
    assert!(
        caiclust_core::tree::alive(engine),
        "the engine outlives its driver"
    );
    let err = b
        .submit(2, &Task::python("operator:neg", json!([1])))
        .unwrap_err()
        .to_string();
    assert!(err.contains("driver"), "{err}");
    assert_eq!(b.outstanding(), 0);
    let report = b.shutdown();
    assert!(!report.clean);
    assert!(report.killed.contains(&engine), "{report:?}");
    s.assert_clean(&run_dir);
}
