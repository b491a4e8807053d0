//! Acceptance: reading a running process from outside
//! (`caiclust_probe::read_process`).
//!
//! * A real Python from the PyPI venv with numpy, scipy, scikit-learn and
//!   OpenCV imported: every library threadpoolctl finds *inside* that
//!   process is among the mapped libraries, the interpreter is recognised
//!   as the CPython version it reports itself, the thread count equals its
//!   own, and the environment is the one it started with, not the one it
//!   changed later through `os.environ`.
//! * Bad targets give clear errors: a pid that does not exist, a zombie, a
//!   process killed while it is being read, and another user's process
//!   (read as `nobody` through `setpriv` when the tests run as root).
//!
//! Linux only: the targets are Linux Pythons, read through `/proc`.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use caiclust_probe::{loaded_libraries_of_this_process, read_process, ProbeError};

/// Carries the target pid to [`helper_read_pid_from_env`].
const HELPER_PID_VAR: &str = "CAICLUST_TEST_READ_PID";
/// Marks the line the helper prints its result on.
const HELPER_MARK: &str = "READ_PROCESS_RESULT: ";

/// Kills and reaps the child when dropped, so a failing test leaves no
/// process behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .expect("stat /proc/self")
}

/// `state` field of `/proc/PID/stat`, `None` once the pid is gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|e| panic!("canonicalize {}: {e}", path.display()))
}

const PYTHON_SCRIPT: &str = r#"
import json, os, sys
import numpy, scipy, scipy.linalg, sklearn, sklearn.cluster, cv2
import threadpoolctl
pools = threadpoolctl.threadpool_info()
# Too late for the runtimes, and invisible in /proc/PID/environ.
os.environ["OPENBLAS_NUM_THREADS"] = "7"
print(json.dumps({
    "pid": os.getpid(),
    "implementation": sys.implementation.name,
    "version": list(sys.version_info[:2]),
    "executable": sys.executable,
    "pools": pools,
    "threads": len(os.listdir("/proc/self/task")),
}))
print("ready", flush=True)
sys.stdin.readline()
"#;

/// Start the script, wait for its report and "ready" (at most `limit`).
fn start_python(python: &Path, limit: Duration) -> (Reaped, serde_json::Value) {
    let child = Command::new(python)
        .args(["-c", PYTHON_SCRIPT])
        .env("OMP_NUM_THREADS", "2")
        .env_remove("OPENBLAS_NUM_THREADS")
        .env_remove("KMP_DUPLICATE_LIB_OK")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
    let mut child = Reaped(child);
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + limit;
    let mut report = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|e| {
            panic!("the Python process did not say ready within {limit:?} ({e})")
        });
        if line == "ready" {
            break;
        }
        if line.starts_with('{') {
            report = Some(serde_json::from_str(&line).expect("the script's JSON report"));
        }
    }
    (
        child,
        report.expect("the script printed its report before ready"),
    )
}

#[test]
fn python_with_numpy_scipy_sklearn_cv2_is_read_from_outside() {
    let fx = caiclust_tests::fixtures();
    let (mut child, report) = start_python(&fx.venv_pypi, Duration::from_secs(180));
    let pid = child.0.id();
    assert_eq!(report["pid"], pid);

    let facts = read_process(pid).unwrap_or_else(|e| panic!("read_process({pid}): {e}"));
    let shown = format!("{facts:#?}");
    assert_eq!(facts.pid, pid);

    // The program: the venv's interpreter, resolved.
    let sys_executable = PathBuf::from(report["executable"].as_str().expect("executable"));
    assert_eq!(
        facts.executable.as_deref(),
        Some(canonical(&sys_executable).as_path()),
        "{shown}"
    );
    assert_eq!(facts.command_line.len(), 3, "{shown}");
    assert_eq!(facts.command_line[1], "-c");
    assert_eq!(facts.command_line[2], PYTHON_SCRIPT);

    // Every runtime threadpoolctl saw inside the process is mapped.
    let mapped: Vec<PathBuf> = facts
        .mapped_libraries
        .iter()
        .map(|p| canonical(p))
        .collect();
    let pools = report["pools"].as_array().expect("threadpool_info list");
    assert!(
        pools.len() >= 3,
        "threadpoolctl should see numpy's, scipy's and OpenCV's OpenBLAS and a libgomp: {pools:#?}"
    );
    for pool in pools {
        let file = canonical(Path::new(pool["filepath"].as_str().expect("filepath")));
        assert!(
            mapped.contains(&file),
            "{} ({}) is loaded but not among the mapped libraries:\n{shown}",
            file.display(),
            pool["internal_api"]
        );
    }
    let executable = facts.executable.clone().expect("executable");
    assert!(!facts.mapped_libraries.contains(&executable), "{shown}");
    assert!(
        mapped.iter().any(|p| p.to_string_lossy().contains("cv2")),
        "{shown}"
    );
    let mut distinct = facts.mapped_libraries.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), facts.mapped_libraries.len(), "duplicates");

    // The interpreter, as it describes itself.
    assert_eq!(report["implementation"], "cpython");
    let version = report["version"].as_array().expect("version");
    let expected = format!("CPython {}.{}", version[0], version[1]);
    let python = facts.python.as_ref().expect("detected as Python");
    assert_eq!(python.value, expected, "{shown}");
    assert_eq!(expected, "CPython 3.11", "the fixture venv is CPython 3.11");
    assert!(!python.evidence.is_empty());

    // Threads: its own count, taken just before "ready".
    let threads = report["threads"].as_u64().expect("threads") as usize;
    assert!(threads >= 1);
    assert_eq!(facts.threads, Some(threads), "{shown}");
    let affinity = facts.affinity.as_ref().expect("affinity");
    assert!(!affinity.is_empty());
    let own = read_process(std::process::id()).expect("read self");
    assert_eq!(
        Some(affinity),
        own.affinity.as_ref(),
        "a child inherits the affinity"
    );

    // The environment it started with, not what it set later.
    assert_eq!(
        facts.initial_env.get("OMP_NUM_THREADS").map(String::as_str),
        Some("2"),
        "{shown}"
    );
    assert!(
        !facts.initial_env.contains_key("OPENBLAS_NUM_THREADS"),
        "set later through os.environ, must not appear: {shown}"
    );
    assert!(
        !facts.initial_env.contains_key("KMP_DUPLICATE_LIB_OK"),
        "threadpoolctl sets it on import, must not appear: {shown}"
    );
    assert!(
        facts.initial_env.keys().all(|k| k != "HOME"),
        "only relevant variables"
    );
    assert!(facts.python_runtime.is_none());

    // Let it finish normally.
    child
        .0
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"\n")
        .expect("write");
    let status = child.0.wait().expect("wait");
    assert!(status.success(), "{status}");
}

#[test]
fn pid_that_does_not_exist() {
    // pid_max is one above the largest pid the kernel hands out.
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("pid_max")
        .trim()
        .parse()
        .expect("pid_max number");
    for pid in [pid_max, u32::MAX, 0] {
        let err = read_process(pid).expect_err("no such process");
        assert!(
            matches!(err, ProbeError::NoSuchProcess { pid: p, .. } if p == pid),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("no process with pid {pid} (/proc/{pid} does not exist)")
        );
    }

    // A process that ran and was reaped.
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait");
    match read_process(pid) {
        Err(ProbeError::NoSuchProcess { pid: p, .. }) => assert_eq!(p, pid),
        // Only if the kernel already gave the pid to someone else.
        other => assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "reaped pid {pid}: {other:?}"
        ),
    }
}

#[test]
fn zombie_is_reported_as_exited() {
    let child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    let mut child = Reaped(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while proc_state(pid) != Some('Z') {
        assert!(Instant::now() < deadline, "{pid} never became a zombie");
        std::thread::sleep(Duration::from_millis(5));
    }
    let err = read_process(pid).expect_err("a zombie has exited");
    assert!(matches!(err, ProbeError::ProcessExited { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("process {pid} exited while it was being read")),
        "{text}"
    );
    assert!(text.contains("zombie"), "{text}");
    child.0.wait().expect("reap");
}

/// What one read of a dying process gave, in the only order allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Read,
    Exited,
    Gone,
}

#[test]
fn process_killed_while_being_read() {
    let child = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let pid = child.id();
    // Kill after a few reads, stay a zombie for a while, then reap.
    let killer = std::thread::spawn(move || {
        let mut child = child;
        std::thread::sleep(Duration::from_millis(30));
        child.kill().expect("kill");
        std::thread::sleep(Duration::from_millis(150));
        child.wait().expect("reap");
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut outcomes = Vec::new();
    loop {
        let outcome = match read_process(pid) {
            Ok(facts) => {
                assert_eq!(facts.pid, pid);
                Outcome::Read
            }
            Err(ProbeError::ProcessExited { pid: p, .. }) if p == pid => Outcome::Exited,
            Err(ProbeError::NoSuchProcess { pid: p, .. }) if p == pid => Outcome::Gone,
            Err(other) => panic!("unexpected error while {pid} died: {other}"),
        };
        outcomes.push(outcome);
        if outcome == Outcome::Gone || Instant::now() > deadline {
            break;
        }
    }
    killer.join().expect("killer thread");
    let mut counts = [0usize; 3];
    for o in &outcomes {
        counts[*o as usize] += 1;
    }
    assert!(
        outcomes.windows(2).all(|w| w[0] <= w[1]),
        "outcomes out of order (read, exited, gone): {counts:?}"
    );
    assert!(counts[0] > 0, "never read while alive: {counts:?}");
    assert!(
        counts[1] > 0,
        "the killed-but-unreaped window was never reported as exited: {counts:?}"
    );
    assert_eq!(outcomes.last(), Some(&Outcome::Gone), "{counts:?}");
}

/// A copy of this test program that any user may run (the build folder
/// may not be reachable for `nobody`).
fn world_runnable_copy_of_this_test() -> (tempfile::TempDir, PathBuf) {
    let me = std::env::current_exe().expect("current_exe");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let copy = dir.path().join("process_reading_helper");
    std::fs::copy(&me, &copy).expect("copy the test program");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (dir, copy)
}

#[test]
fn another_users_process_is_permission_denied() {
    let (pid, text, _target) = if is_root() {
        // A root-owned target, read by `nobody` through the helper below.
        let target = Reaped(
            Command::new("sleep")
                .arg("60")
                .spawn()
                .expect("spawn sleep"),
        );
        let pid = target.0.id();
        let (_dir, copy) = world_runnable_copy_of_this_test();
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&copy)
            .args([
                "--exact",
                "helper_read_pid_from_env",
                "--ignored",
                "--nocapture",
            ])
            .env(HELPER_PID_VAR, pid.to_string())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "running as root, this test needs setpriv (util-linux) to read as \
                     nobody, and it could not be started: {e}"
                )
            });
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "the helper failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix(HELPER_MARK))
            .unwrap_or_else(|| panic!("no result line from the helper:\n{stdout}\n{stderr}"))
            .to_owned();
        (pid, line, Some(target))
    } else {
        // Not root: pid 1 belongs to someone else (root) here.
        let owner = std::fs::metadata("/proc/1").expect("/proc/1").uid();
        let me = std::fs::metadata("/proc/self").expect("/proc/self").uid();
        assert_ne!(
            owner, me,
            "pid 1 runs as this user; no foreign process to test with"
        );
        let text = match read_process(1) {
            Ok(facts) => format!("ok: {} libraries", facts.mapped_libraries.len()),
            Err(e) => format!("error: {e}"),
        };
        (1, text, None)
    };
    let expected = format!("error: cannot read /proc/{pid}/maps: permission denied (");
    assert!(text.starts_with(&expected), "{text}");
    assert!(text.contains("another user"), "{text}");
    assert!(text.contains("run as that user or root"), "{text}");
}

/// Not a test on its own: [`another_users_process_is_permission_denied`]
/// runs it as `nobody` to read the pid in `CAICLUST_TEST_READ_PID`.
#[test]
#[ignore = "helper: run by another_users_process_is_permission_denied as another user"]
fn helper_read_pid_from_env() {
    let pid: u32 = std::env::var(HELPER_PID_VAR)
        .expect("CAICLUST_TEST_READ_PID")
        .parse()
        .expect("a pid");
    match read_process(pid) {
        Ok(facts) => println!(
            "{HELPER_MARK}ok: {} libraries",
            facts.mapped_libraries.len()
        ),
        Err(e) => println!("{HELPER_MARK}error: {e}"),
    }
}

#[test]
fn this_process_lists_its_own_libraries() {
    let listed = loaded_libraries_of_this_process().expect("own libraries");
    let me = std::env::current_exe().expect("current_exe");
    assert!(!listed.contains(&me));
    assert!(
        listed.iter().any(|p| p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("libc.so"))),
        "{listed:#?}"
    );
    let read = read_process(std::process::id()).expect("read self");
    for lib in &listed {
        assert!(read.mapped_libraries.contains(lib), "{}", lib.display());
    }
    assert_eq!(read.executable.as_deref(), Some(me.as_path()));
    assert!(read.python.is_none());
}
