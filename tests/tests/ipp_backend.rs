//! The ipyparallel backend (issue #6) with real ipyparallel from PyPI
//! (`venv-ipp`), a real controller and real engines on loopback.
//!
//! Every test tags the environment of everything it starts with
//! `TAG_VAR` (the driver, and through it controller, engines, nannies and
//! commands) and checks afterwards that no tagged process is left and that
//! the run's profile folder is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caiclust_core::ipp::{Attach, IppBackend, IppConfig, IppError, IppEvent, Launcher};
use caiclust_core::{ExitInfo, Failure, Outcome, StartCause, Task, TaskResult};
use caiclust_tests::{fixtures, orphans_after, unique_tag, TAG_VAR};
use serde_json::{json, Value};

/// Engine-side helpers, importable through `PYTHONPATH`.
const HELPERS: &str = r#"
import os, socket, time

def slow(seconds):
    time.sleep(seconds)
    return os.getpid()

def whoami():
    return {"pid": os.getpid(), "cwd": os.getcwd(), "host": socket.gethostname()}

def env(names):
    return {n: os.environ.get(n) for n in names}

def boom(message):
    raise ValueError(message)

def shout(text):
    print(text)
    return len(text)

def nap(x, seconds):
    time.sleep(seconds)
    return x

def mark(folder, x, seconds):
    # Sleeps, then notes that task x ran to its end (one line per run).
    time.sleep(seconds)
    with open(os.path.join(folder, f"runs-{os.getpid()}"), "a") as f:
        f.write(f"{x}\n")
    return x

def stubborn(seconds):
    # Ignores KeyboardInterrupt: only killing its engine stops it.
    end = time.time() + seconds
    while time.time() < end:
        try:
            time.sleep(0.05)
        except KeyboardInterrupt:
            pass
    return "finished"
"#;

/// The hazard workload of `core_hazards.rs`: scikit-learn's bundled GNU
/// OpenMP used at import, then KMeans in every task.
const HAZARD: &str = r#"
import numpy as np
from sklearn.cluster import KMeans
X = np.random.RandomState(0).rand(4000, 8)
def task(seed):
    return int(KMeans(n_clusters=4, n_init=1, random_state=seed).fit(X).n_iter_)
task(0)
"#;

struct Setup {
    tag: String,
    modules: tempfile::TempDir,
}

fn setup(test: &str) -> Setup {
    let modules = tempfile::tempdir().unwrap();
    std::fs::write(modules.path().join("ipphelp.py"), HELPERS).unwrap();
    std::fs::write(modules.path().join("hazard.py"), HAZARD).unwrap();
    Setup {
        tag: unique_tag(test),
        modules,
    }
}

impl Setup {
    fn config(&self, engines: usize) -> IppConfig {
        let mut c = IppConfig::new(&fixtures().venv_ipp, engines);
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

    /// Nothing tagged is left, and the run folder is gone.
    fn assert_clean(&self, run_dir: &Path) {
        let left = orphans_after(&self.tag, Duration::from_secs(10));
        assert!(left.is_empty(), "left behind: {left:#?}");
        assert!(
            !run_dir.exists(),
            "the run folder {} is still there",
            run_dir.display()
        );
    }
}

/// Submit `tasks` as 1..=n and collect their results (by id) and every
/// other event, within `within`.
fn run_all(
    b: &IppBackend,
    tasks: &[Task],
    within: Duration,
) -> (BTreeMap<u64, TaskResult>, Vec<IppEvent>) {
    for (i, t) in tasks.iter().enumerate() {
        b.submit(i as u64 + 1, t).unwrap();
    }
    collect(b, tasks.len(), within)
}

fn collect(
    b: &IppBackend,
    n: usize,
    within: Duration,
) -> (BTreeMap<u64, TaskResult>, Vec<IppEvent>) {
    let deadline = Instant::now() + within;
    let mut results = BTreeMap::new();
    let mut events = Vec::new();
    while results.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match b.recv_timeout(left) {
            Some(IppEvent::Result(r)) => {
                assert!(
                    results.insert(r.id, r).is_none(),
                    "two results for one task"
                );
            }
            Some(ev) => events.push(ev),
            None => panic!(
                "only {} of {n} results within {within:?}: {results:#?}; events {events:#?}",
                results.len()
            ),
        }
    }
    (results, events)
}

fn value(r: &TaskResult) -> &Value {
    r.value()
        .unwrap_or_else(|| panic!("task {} did not succeed: {:?}", r.id, r.outcome))
}

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

// ---------------------------------------------------------------------------
// Batches (issue #15, point 4): tiny tasks travel to the engines in
// batches; results, timeouts, retries and cancel stay per task.
// ---------------------------------------------------------------------------

/// How many times each task ran to its end, from the lines `ipphelp:mark`
/// wrote in `folder`.
fn runs_in(folder: &Path) -> BTreeMap<u64, usize> {
    let mut runs = BTreeMap::new();
    for entry in std::fs::read_dir(folder).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            *runs.entry(line.parse::<u64>().unwrap()).or_insert(0) += 1;
        }
    }
    runs
}

/// No result comes after the last expected one (a duplicate would).
fn assert_no_more_results(b: &IppBackend) {
    while let Some(ev) = b.recv_timeout(Duration::from_millis(500)) {
        assert!(
            !matches!(ev, IppEvent::Result(_)),
            "an extra result: {ev:?}"
        );
    }
}

/// `pickle.dumps(((x, 1000), {}), protocol=2)`, by hand: PROTO 2,
/// BININT x, BININT 1000, TUPLE2, EMPTY_DICT, TUPLE2, STOP.
fn add_call(x: u64) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'J'];
    p.extend(u32::try_from(x).unwrap().to_le_bytes());
    p.push(b'J');
    p.extend(1000u32.to_le_bytes());
    p.extend([0x86, b'}', 0x86, b'.']);
    p
}

/// (a) JSON and pickled tiny tasks by the thousand: every result once,
/// right, from both engines, and much faster than one task at a time.
#[test]
fn thousands_of_tiny_tasks_come_back_exactly_once() {
    let s = setup("ipp-batch-many");
    let b = IppBackend::start(s.config(2)).unwrap();
    let run_dir = b.run_dir().unwrap().to_path_buf();
    let engine_pids: BTreeSet<u32> = b.engines().iter().map(|e| e.pid).collect();
    // JSON calls, then pickled ones.
    let (n, pickled) = (5000u64, 1000u64);
    let t0 = Instant::now();
    for id in 1..=n {
        b.submit(id, &Task::python("operator:add", json!([id, 1000])))
            .unwrap();
    }
    for id in n + 1..=n + pickled {
        b.submit(id, &Task::python_pickled("operator:add", add_call(id - n)))
            .unwrap();
    }
    // `collect` fails on a second result for one task.
    let (r, _) = collect(&b, (n + pickled) as usize, Duration::from_secs(120));
    let took = t0.elapsed();
    let ids: Vec<u64> = r.keys().copied().collect();
    assert_eq!(ids, (1..=n + pickled).collect::<Vec<_>>());
    for (id, res) in &r {
        if *id > n {
            // pickle.dumps(x + 1000, protocol=5) ends BININT2 x+1000, STOP.
            let p = res
                .payload()
                .unwrap_or_else(|| panic!("task {id}: {res:?}"));
            let [lo, hi] = u16::try_from(id - n + 1000).unwrap().to_le_bytes();
            assert!(p.ends_with(&[b'M', lo, hi, b'.']), "task {id}: {p:?}");
        } else {
            assert_eq!(value(res), &json!(id + 1000), "task {id}");
        }
        assert_eq!(res.attempts, 1, "task {id}");
        assert!(res.pid.is_some_and(|p| engine_pids.contains(&p)), "{res:?}");
    }
    let used: BTreeSet<u32> = r.values().filter_map(|res| res.pid).collect();
    assert_eq!(used, engine_pids, "both engines took batches");
    // One task at a time through the scheduler managed ~230-400 a second
    // (12-20 s for these); batches do it many times faster.
    assert!(
        took < Duration::from_secs(8),
        "{n} tiny tasks took {took:?}"
    );
    assert_no_more_results(&b);

    // What each task prints is its own, batched or not.
    let first = n + pickled + 1;
    let texts: Vec<String> = (0..300).map(|i| format!("line {i} of task")).collect();
    for (id, text) in (first..).zip(&texts) {
        b.submit(id, &Task::python("ipphelp:shout", json!([text])))
            .unwrap();
    }
    let (mut r, _) = collect(&b, texts.len(), Duration::from_secs(60));
    for (id, text) in (first..).zip(&texts) {
        let res = r.get_mut(&id).unwrap();
        assert_eq!(value(res), &json!(text.len()));
        assert_eq!(
            res.stdout.to_string_lossy(),
            format!("{text}\n"),
            "task {id}"
        );
    }
    assert_eq!(b.outstanding(), 0);
    drop(b);
    s.assert_clean(&run_dir);
}

/// (b) One slow call of a function whose calls are tiny travels in a
/// batch; it times out alone and is named, its neighbours run once.
#[test]
fn a_slow_task_among_tiny_ones_times_out_alone() {
    let s = setup("ipp-batch-timeout");
    let b = IppBackend::start(s.config(2)).unwrap();
    let run_dir = b.run_dir().unwrap().to_path_buf();
    let (n, slow) = (600u64, 300u64);
    let tasks: Vec<Task> = (1..=n)
        .map(|id| {
            let seconds = if id == slow { 60.0 } else { 0.0 };
            Task::python("ipphelp:nap", json!([id, seconds])).timeout(Duration::from_secs(2))
        })
        .collect();
    let t0 = Instant::now();
    let (r, events) = run_all(&b, &tasks, Duration::from_secs(60));
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert_eq!(
        r[&slow].outcome,
        Outcome::Failed {
            failure: Failure::TimedOut { after_ms: 2000 }
        }
    );
    assert_eq!(r[&slow].attempts, 1);
    for id in (1..=n).filter(|&id| id != slow) {
        assert_eq!(value(&r[&id]), &json!(id), "task {id}");
        // Its batch neighbours went again, no attempt counted.
        assert_eq!(r[&id].attempts, 1, "task {id}: {:?}", r[&id]);
        assert!(r[&id].history.is_empty(), "task {id}: {:?}", r[&id]);
    }
    assert!(
        events.iter().any(|e| matches!(e, IppEvent::Notice { task: Some(t), message }
            if *t == slow && message.contains(&format!("task {slow}")) && message.contains("rest of its batch"))),
        "the notice names the slow task: {events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, IppEvent::EngineDied { expected: true, tasks, .. } if tasks.contains(&slow))),
        "{events:#?}"
    );
    assert_no_more_results(&b);
    drop(b);
    s.assert_clean(&run_dir);
}

/// (c) An engine killed in the middle of a run of small tasks: every
/// task's one result arrives, the one running is retried on the other.
#[test]
fn killing_an_engine_mid_run_loses_nothing() {
    // The victim is the engine of the latest result; on a loaded machine
    // it may sit between two batches at the kill, holding nothing: the
    // run is then tried again (at most three times in all).
    for attempt in 1..=3 {
        if kill_an_engine_mid_run(attempt) {
            return;
        }
    }
    panic!("the killed engine held no batch in three runs");
}

/// One run of the test above: `false` when the killed engine held no
/// task (everything else still checked).
fn kill_an_engine_mid_run(attempt: u32) -> bool {
    let s = setup(&format!("ipp-batch-kill-{attempt}"));
    let mut config = s.config(2);
    config.retries = 1;
    let b = IppBackend::start(config).unwrap();
    let run_dir = b.run_dir().unwrap().to_path_buf();
    let marks = tempfile::tempdir().unwrap();
    let folder = marks.path().to_string_lossy().into_owned();
    let n = 1500u64;
    for id in 1..=n {
        b.submit(
            id,
            &Task::python("ipphelp:mark", json!([folder, id, 0.002])),
        )
        .unwrap();
    }
    // Some results first, then the engine of the latest one dies.
    let (mut r, mut events) = collect(&b, 300, Duration::from_secs(60));
    let last = r.values().max_by_key(|res| res.started).unwrap();
    let victim = last.pid.unwrap();
    assert!(b.engines().iter().any(|e| e.pid == victim));
    caiclust_core::tree::signal_tree(victim, caiclust_core::tree::StopSignal::Kill);
    let (rest, more) = collect(&b, (n - 300) as usize, Duration::from_secs(120));
    for (id, res) in rest {
        assert!(r.insert(id, res).is_none(), "two results for task {id}");
    }
    events.extend(more);
    assert_eq!(r.len() as u64, n);
    for (id, res) in &r {
        assert_eq!(value(res), &json!(id), "task {id}");
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, IppEvent::EngineDied { pid: Some(p), expected: false, .. } if *p == victim)),
        "{events:#?}"
    );
    // It died with (part of) a batch: the unfinished tasks it held.
    let lost: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            IppEvent::EngineDied { tasks, .. } => Some(tasks.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    eprintln!("the killed engine held {lost:?}");
    if lost.is_empty() {
        assert_no_more_results(&b);
        drop(b);
        s.assert_clean(&run_dir);
        return false;
    }
    // The task running on the victim went again (its only retry); none
    // other had an attempt counted.
    let retried: Vec<&TaskResult> = r.values().filter(|res| res.attempts > 1).collect();
    assert!(retried.len() <= 1, "{retried:#?}");
    for res in &retried {
        assert!(
            matches!(res.history.as_slice(), [Failure::WorkerDied { pid, .. }] if *pid == victim),
            "{res:?}"
        );
        assert_ne!(res.pid, Some(victim));
    }
    // Every task ran to its end; finished ones were not run again (one
    // may have finished in the very instant of the kill, its result still
    // inside the engine).
    let runs = runs_in(marks.path());
    assert_eq!(runs.len() as u64, n);
    let twice: Vec<_> = runs.iter().filter(|(_, &k)| k > 1).collect();
    assert!(
        twice.len() <= 1 && twice.iter().all(|(_, &k)| k == 2),
        "{twice:?}"
    );
    assert_no_more_results(&b);
    drop(b);
    s.assert_clean(&run_dir);
    true
}

/// (d) Cancelled tasks still queued behind batches are dropped: they
/// never run, no attempt counted; the rest runs once.
#[test]
fn cancelled_queued_tasks_never_run() {
    let s = setup("ipp-batch-cancel");
    let b = IppBackend::start(s.config(1)).unwrap();
    let run_dir = b.run_dir().unwrap().to_path_buf();
    let marks = tempfile::tempdir().unwrap();
    let folder = marks.path().to_string_lossy().into_owned();
    let n = 2000u64;
    for id in 1..=n {
        b.submit(
            id,
            &Task::python("ipphelp:mark", json!([folder, id, 0.001])),
        )
        .unwrap();
    }
    let (mut r, _) = collect(&b, 50, Duration::from_secs(60));
    // About two seconds of work are left on the one engine: the last
    // quarter is still queued.
    let cancelled = 1501..=n;
    for id in cancelled.clone() {
        b.cancel(id).unwrap();
    }
    let (rest, _) = collect(&b, (n - 50) as usize, Duration::from_secs(120));
    for (id, res) in rest {
        assert!(r.insert(id, res).is_none(), "two results for task {id}");
    }
    let runs = runs_in(marks.path());
    for (id, res) in &r {
        if cancelled.contains(id) {
            assert!(
                matches!(res.outcome, Outcome::Cancelled { .. }),
                "task {id}: {res:?}"
            );
            assert_eq!(res.attempts, 0, "task {id}: {res:?}");
            assert!(!runs.contains_key(id), "cancelled task {id} ran");
        } else {
            assert_eq!(value(res), &json!(id), "task {id}");
            assert_eq!(runs.get(id), Some(&1), "task {id}");
        }
    }
    assert_no_more_results(&b);
    // Still usable afterwards.
    b.submit(n + 1, &Task::python("operator:mul", json!([6, 7])))
        .unwrap();
    let (r, _) = collect(&b, 1, Duration::from_secs(30));
    assert_eq!(value(&r[&(n + 1)]), &json!(42));
    drop(b);
    s.assert_clean(&run_dir);
}

/// (d, continued) A task cancelled in a batch that waits for the one
/// engine (busy with a long task) never runs; the batch is taken back and
/// its other tasks run once each.
#[test]
fn a_cancelled_task_of_a_waiting_batch_never_runs() {
    let s = setup("ipp-batch-abort");
    let b = IppBackend::start(s.config(1)).unwrap();
    let run_dir = b.run_dir().unwrap().to_path_buf();
    let marks = tempfile::tempdir().unwrap();
    let folder = marks.path().to_string_lossy().into_owned();
    let mark = |id: u64| Task::python("ipphelp:mark", json!([folder, id, 0.0]));
    // The driver learns that `mark` is quick.
    for id in 1001..=1005 {
        b.submit(id, &mark(id)).unwrap();
    }
    collect(&b, 5, Duration::from_secs(60));
    // A long task, then a batch that waits for the engine behind it: the
    // driver hands both out together (the long one has been seen
    // starting only after that).
    b.submit(1, &Task::python("ipphelp:slow", json!([2])))
        .unwrap();
    for id in 2..=41 {
        b.submit(id, &mark(id)).unwrap();
    }
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "task 1 never started: {events:#?}"
        );
        match b.recv_timeout(Duration::from_millis(200)) {
            Some(IppEvent::Started { id: 1, .. }) => break,
            Some(ev) => events.push(ev),
            None => {}
        }
    }
    b.cancel(21).unwrap();
    let (r, _) = collect(&b, 41, Duration::from_secs(60));
    assert!(
        matches!(r[&21].outcome, Outcome::Cancelled { .. }),
        "{:?}",
        r[&21]
    );
    assert_eq!(r[&21].attempts, 0);
    assert!(value(&r[&1]).is_u64());
    let runs = runs_in(marks.path());
    assert!(!runs.contains_key(&21), "the cancelled task ran");
    for id in (2..=41).filter(|&id| id != 21) {
        assert_eq!(value(&r[&id]), &json!(id), "task {id}");
        assert_eq!(runs.get(&id), Some(&1), "task {id}");
        assert_eq!(r[&id].attempts, 1, "task {id}");
    }
    assert_no_more_results(&b);
    drop(b);
    s.assert_clean(&run_dir);
}
