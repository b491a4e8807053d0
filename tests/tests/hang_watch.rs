//! The hang watchdog of one program (`caiclust_core::watch_tree`) against
//! real processes, nothing mocked: a C program built here with
//! `gcc -fopenmp` that forks after an OpenMP region, and Debian numpy on
//! the OpenMP OpenBLAS running a fork Pool.
//!
//! Hung children are reported (blocked in libgomp, or spinning in the
//! kernel) with CC001 within the stall period plus 5 s, also when
//! `OMP_NUM_THREADS=1` is set and the program asks for threads itself, and
//! also the workers of a forkserver whose preloaded module ran OpenMP;
//! children that sleep, wait on a pipe, keep an idle pool of their own, or
//! wait for tasks in a numpy fork Pool are never even suspects; a child
//! waiting at the barrier of a pool of its own is cleared by the
//! diagnosis; and the watch ends, with its threads, when the program exits.
//!
//! Unix only: fork, `gcc -fopenmp`, Debian numpy and process groups.
#![cfg(unix)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caiclust_core::tree::{self, StopSignal};
use caiclust_core::{
    diagnose_forked_child, watch_tree, Hang, HangKind, Suspect, TreeWatch, TreeWatchOptions,
};
use caiclust_tests::hazard::{self, GOMP};
use caiclust_tests::{fixtures, orphans_after, unique_tag, TAG_VAR};

/// The stall period of these tests.
const STALL: Duration = Duration::from_secs(2);

/// A hang must be reported within this long.
const DEADLINE: Duration = Duration::from_secs(7);

/// Runs an OpenMP region (2 threads, asked for in the code) unless the
/// mode is `fresh` or `barrier`, forks, and in the child: `omp` runs
/// another region (GCC bug 60035: it hangs), `sleep N` sleeps, `read`
/// waits for stdin to close, `fresh` runs its own first region then waits
/// for stdin, `barrier` runs its own first region in which one thread
/// waits for stdin while the master waits at the barrier. The parent waits
/// for the child and exits with its status.
const FORKS_C: &str = r#"
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static double work(void) {
    double s = 0;
    #pragma omp parallel for reduction(+:s)
    for (long i = 0; i < 4000000; i++) s += (i % 7) * 0.5;
    return s;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "omp";
    omp_set_num_threads(2); /* explicit: OMP_NUM_THREADS=1 does not stop it */
    if (strcmp(mode, "fresh") != 0 && strcmp(mode, "barrier") != 0)
        printf("parent %.1f\n", work());
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) return 2;
    if (child == 0) {
        char c;
        if (strcmp(mode, "omp") == 0) {
            printf("child %.1f\n", work());
        } else if (strcmp(mode, "sleep") == 0) {
            sleep(argc > 2 ? (unsigned)atoi(argv[2]) : 6);
        } else if (strcmp(mode, "barrier") == 0) {
            /* A pool of its own: the master waits at the barrier. */
            #pragma omp parallel num_threads(2)
            if (omp_get_thread_num() == 1)
                while (read(0, &c, 1) > 0) {}
        } else {
            if (strcmp(mode, "fresh") == 0) printf("child %.1f\n", work());
            fflush(stdout);
            while (read(0, &c, 1) > 0) {}
        }
        _exit(0);
    }
    int status;
    if (waitpid(child, &status, 0) < 0) return 3;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 4;
}
"#;

/// Numpy on the OpenMP OpenBLAS: a matmul in the parent starts the pool,
/// then a fork Pool's tasks do matmuls (HAZARDS H01: they spin).
const OPENBLAS_POOL_PY: &str = r#"
import multiprocessing as mp
import numpy as np
A = np.random.RandomState(0).rand(800, 800)
A @ A
def task(i):
    B = np.random.RandomState(i).rand(800, 800)
    return float((A @ B).sum())
if __name__ == "__main__":
    with mp.get_context("fork").Pool(2) as p:
        print(p.map(task, range(4)))
"#;

/// As [`OPENBLAS_POOL_PY`], but the tasks do no BLAS work, and the pool
/// then waits for more until stdin closes.
const IDLE_POOL_PY: &str = r#"
import multiprocessing as mp
import sys
import numpy as np
A = np.random.RandomState(0).rand(800, 800)
A @ A
if __name__ == "__main__":
    with mp.get_context("fork").Pool(2) as p:
        print(p.map(abs, range(4)), flush=True)
        sys.stdin.read()
"#;

/// A forkserver whose preloaded module ran OpenMP (a C library built with
/// `gcc -fopenmp`, through ctypes): the workers it forks hang in it.
const FORKSERVER_POOL_PY: &str = r#"
import multiprocessing as mp
import hazard
if __name__ == "__main__":
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["hazard"])
    with ctx.Pool(2) as p:
        print(p.map(hazard.task, range(4)))
"#;

fn build_forks(dir: &Path) -> PathBuf {
    let src = dir.join("forks.c");
    let exe = dir.join("forks");
    std::fs::write(&src, FORKS_C).expect("write forks.c");
    let st = Command::new("gcc")
        .args(["-O2", "-fopenmp", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("gcc (installed by scripts/setup-test-envs.sh)");
    assert!(st.success(), "gcc -fopenmp failed");
    exe
}

/// A program under test, in a process group of its own, tagged; killed
/// with its whole tree when dropped.
struct Program {
    child: Child,
    stdin: Option<ChildStdin>,
    started: Instant,
}

impl Program {
    fn start(mut cmd: Command, tag: &str) -> Self {
        let mut child = cmd
            .env(TAG_VAR, tag)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the program");
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            started: Instant::now(),
        }
    }

    fn forks(exe: &Path, args: &[&str], tag: &str) -> Self {
        let mut cmd = Command::new(exe);
        cmd.args(args).env_remove("OMP_NUM_THREADS");
        Self::start(cmd, tag)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its status if it exits within `within` (polled).
    fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its descendants, once there are `n` of them (polled, within 10 s).
    fn descendants(&self, n: usize) -> Vec<u32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let d = tree::descendants(self.pid());
            if d.len() >= n || Instant::now() >= deadline {
                assert!(d.len() >= n, "{n} descendants of {}: {d:?}", self.pid());
                return d;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        tree::signal_tree(self.pid(), StopSignal::Kill);
        let _ = self.child.wait();
    }
}

fn options() -> TreeWatchOptions {
    TreeWatchOptions::with_stall(STALL)
}

fn watch(p: &Program) -> TreeWatch {
    watch_tree(p.pid(), options(), diagnose_forked_child).expect("start the watch")
}

/// A watch that counts the suspects it diagnoses.
fn counting_watch(p: &Program) -> (TreeWatch, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let w = watch_tree(p.pid(), options(), move |s: &Suspect| {
        counter.fetch_add(1, Ordering::SeqCst);
        diagnose_forked_child(s)
    })
    .expect("start the watch");
    (w, calls)
}

/// The threads of this test process that belong to the watch of `root`.
fn watch_threads(root: u32) -> Vec<String> {
    let names = [format!("hang-{root}"), format!("hangdx-{root}")];
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .filter(|c| names.contains(c))
        .collect()
}

/// The watch of `root` ends, with its threads, within `within`.
fn assert_watch_ends(w: &TreeWatch, within: Duration) {
    let deadline = Instant::now() + within;
    while !w.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the watch of {} still runs {within:?} after its program exited",
            w.root()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(watch_threads(w.root()), Vec::<String>::new());
}

fn assert_cc001_in_libgomp(hang: &Hang) {
    assert_eq!(hang.rule_id, "CC001", "{hang:#?}");
    assert_eq!(hang.rule_name, "gnu-openmp-fork", "{hang:#?}");
    assert!(hang.fix.is_some(), "{hang:#?}");
    let runtime = hang.runtime.as_deref().expect("the runtime it is stuck in");
    assert!(
        runtime
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("libgomp")),
        "{hang:#?}"
    );
    assert!(hang.stalled >= STALL, "{hang:#?}");
}

#[test]
fn openmp_after_fork_is_reported_blocked_in_libgomp_with_cc001() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build_forks(dir.path());
    let tag = unique_tag("hang-watch-omp");
    // The same program twice: one unwatched, to show that it really hangs.
    let mut unwatched = Program::forks(&exe, &["omp"], &tag);
    let mut watched = Program::forks(&exe, &["omp"], &tag);
    let w = watch(&watched);
    let hang = w.recv_timeout(DEADLINE).expect("a hang within stall + 5 s");
    let latency = watched.started.elapsed();
    eprintln!("blocked in libgomp: reported {latency:?} after start: {hang:#?}");
    assert!(latency <= DEADLINE, "{latency:?}");
    assert_eq!(hang.pid, watched.descendants(1)[0], "the forked child");
    assert_eq!(hang.how, HangKind::Blocked, "{hang:#?}");
    assert_cc001_in_libgomp(&hang);
    assert_eq!(w.hang(), Some(hang.clone()), "the hang stays");
    // Without caiclust, it hangs: still alive past the deadline.
    let left = DEADLINE.saturating_sub(unwatched.started.elapsed());
    assert_eq!(
        unwatched.exit_within(left),
        None,
        "the unwatched program hangs"
    );
    assert_eq!(watched.exit_within(Duration::ZERO), None);
    assert_watch_ends(&w, Duration::from_secs(1));
    drop(w);
    drop((unwatched, watched));
    assert_eq!(orphans_after(&tag, Duration::from_secs(5)), vec![]);
}

#[test]
fn a_pool_asked_for_in_code_is_seen_despite_omp_num_threads_1() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build_forks(dir.path());
    let tag = unique_tag("hang-watch-omp1");
    let mut cmd = Command::new(&exe);
    cmd.arg("omp").env("OMP_NUM_THREADS", "1");
    let p = Program::start(cmd, &tag);
    let w = watch(&p);
    let hang = w.recv_timeout(DEADLINE).expect("a hang within stall + 5 s");
    eprintln!(
        "with OMP_NUM_THREADS=1: {:?} after start: {hang:#?}",
        p.started.elapsed()
    );
    assert_eq!(hang.how, HangKind::Blocked);
    assert_cc001_in_libgomp(&hang);
    assert!(
        hang.detail
            .contains(&format!("its parent {} keeps a pool of 2 threads", p.pid())),
        "{hang:#?}"
    );
    drop((w, p));
    assert_eq!(orphans_after(&tag, Duration::from_secs(5)), vec![]);
}

#[test]
fn a_sleeping_child_is_not_reported_and_the_watch_ends_with_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build_forks(dir.path());
    let tag = unique_tag("hang-watch-sleep");
    let mut p = Program::forks(&exe, &["sleep", "6"], &tag);
    let (w, diagnosed) = counting_watch(&p);
    // Longer than the stall period, with the child asleep throughout.
    assert_eq!(w.recv_timeout(STALL + Duration::from_secs(2)), None);
    assert_eq!(diagnosed.load(Ordering::SeqCst), 0, "never even a suspect");
    assert!(!w.is_finished(), "the program still runs");
    assert_eq!(watch_threads(p.pid()).len(), 2, "sampling and diagnosis");
    let st = p.exit_within(Duration::from_secs(10)).expect("it exits");
    assert!(st.success(), "{st:?}");
    assert_watch_ends(&w, options().sampling_period() + Duration::from_secs(1));
    assert_eq!(w.hang(), None);
    assert_eq!(w.recv_timeout(Duration::from_secs(1)), None);
    drop((w, p));
    assert_eq!(orphans_after(&tag, Duration::from_secs(5)), vec![]);
}

/// `read`: the parent's pool started, the child waits on a pipe. `fresh`:
/// the child started a pool of its own (whose idle worker waits inside
/// libgomp) and waits on a pipe.
#[test]
fn children_waiting_on_a_pipe_with_libgomp_mapped_are_not_reported() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build_forks(dir.path());
    let tag = unique_tag("hang-watch-pipe");
    let mut programs: Vec<Program> = ["read", "fresh"]
        .iter()
        .map(|mode| Program::forks(&exe, &[mode], &tag))
        .collect();
    let (watches, diagnosed): (Vec<TreeWatch>, Vec<_>) =
        programs.iter().map(counting_watch).unzip();
    for p in &programs {
        let child = p.descendants(1)[0];
        let maps = std::fs::read_to_string(format!("/proc/{child}/maps")).unwrap();
        assert!(maps.contains("libgomp"), "libgomp is mapped in {child}");
    }
    let until = Instant::now() + STALL + Duration::from_secs(2);
    for w in &watches {
        let left = until.saturating_duration_since(Instant::now());
        assert_eq!(w.recv_timeout(left), None, "watch of {}", w.root());
    }
    for d in &diagnosed {
        assert_eq!(d.load(Ordering::SeqCst), 0, "never even a suspect");
    }
    for p in &mut programs {
        drop(p.stdin.take());
        let st = p.exit_within(Duration::from_secs(10)).expect("it exits");
        assert!(st.success(), "{st:?}");
    }
    for w in &watches {
        assert_watch_ends(w, options().sampling_period() + Duration::from_secs(1));
        assert_eq!(w.hang(), None);
    }
    drop((watches, programs));
    assert_eq!(orphans_after(&tag, Duration::from_secs(5)), vec![]);
}

/// The child started a pool of its own, and its master waits at the
/// barrier (in libgomp) for a thread that waits on a pipe: a suspect, but
/// its parent runs a single thread and has no pool to hand down, so the
/// diagnosis clears it (each time it is looked at again).
#[test]
fn a_child_at_its_own_pools_barrier_is_cleared_by_the_diagnosis() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build_forks(dir.path());
    let tag = unique_tag("hang-watch-barrier");
    let mut p = Program::forks(&exe, &["barrier"], &tag);
    // The first diagnosis panics (it counts as no finding); the suspect is
    // looked at again after another stall period.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let w = watch_tree(p.pid(), options(), move |s: &Suspect| {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("a diagnosis that fails");
        }
        diagnose_forked_child(s)
    })
    .expect("start the watch");
    let deadline = Instant::now() + 2 * STALL + Duration::from_secs(3);
    while calls.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
        assert_eq!(w.recv_timeout(Duration::from_millis(100)), None);
    }
    assert!(
        calls.load(Ordering::SeqCst) >= 2,
        "waiting in libgomp, it is a suspect, looked at again after a panic"
    );
    assert_eq!(w.recv_timeout(Duration::from_secs(1)), None);
    assert!(!w.is_finished());
    drop(p.stdin.take());
    let st = p.exit_within(Duration::from_secs(10)).expect("it exits");
    assert!(st.success(), "{st:?}");
    assert_watch_ends(&w, options().sampling_period() + Duration::from_secs(1));
    assert_eq!(w.hang(), None);
    drop((w, p));
    assert_eq!(orphans_after(&tag, Duration::from_secs(5)), vec![]);
}

/// The parent's OpenMP OpenBLAS pool has started (the rules flag CC001
/// for its fork workers), but the workers only wait for tasks: they are
/// never suspects.
#[test]
fn idle_numpy_fork_pool_workers_are_not_suspects() {
    let fx = fixtures();
    let tag = unique_tag("hang-watch-idle-pool");
    let mut cmd = Command::new(&fx.debian_python);
    cmd.arg("-c")
        .arg(IDLE_POOL_PY)
        .env("LD_LIBRARY_PATH", &fx.openblas_openmp_dir)
        .env_remove("OMP_NUM_THREADS")
        .env_remove("OPENBLAS_NUM_THREADS");
    let mut p = Program::start(cmd, &tag);
    let (w, diagnosed) = counting_watch(&p);
    let workers = p.descendants(2);
    assert_eq!(w.recv_timeout(STALL + Duration::from_secs(2)), None);
    assert_eq!(diagnosed.load(Ordering::SeqCst), 0, "never even a suspect");
    for pid in workers {
        assert!(tree::alive(pid), "worker {pid} waits");
    }
    drop(p.stdin.take());
    let st = p.exit_within(Duration::from_secs(20)).expect("it exits");
    assert!(st.success(), "{st:?}");
    assert_watch_ends(&w, options().sampling_period() + Duration::from_secs(1));
    drop((w, p));
    assert_eq!(orphans_after(&tag, Duration::from_secs(5)), vec![]);
}

#[test]
fn openblas_openmp_in_a_fork_pool_is_reported_with_cc001() {
    let fx = fixtures();
    let tag = unique_tag("hang-watch-openblas");
    let mut cmd = Command::new(&fx.debian_python);
    cmd.arg("-c")
        .arg(OPENBLAS_POOL_PY)
        .env("LD_LIBRARY_PATH", &fx.openblas_openmp_dir)
        .env_remove("OMP_NUM_THREADS")
        .env_remove("OPENBLAS_NUM_THREADS");
    let p = Program::start(cmd, &tag);
    let w = watch(&p);
    let workers = p.descendants(2);
    let first_worker = Instant::now();
    let hang = w.recv_timeout(DEADLINE).expect("a hang within stall + 5 s");
    eprintln!(
        "OpenBLAS fork pool: reported {:?} after the workers appeared, {:?} after start: {hang:#?}",
        first_worker.elapsed(),
        p.started.elapsed()
    );
    assert!(workers.contains(&hang.pid), "{workers:?} {hang:#?}");
    assert!(
        matches!(hang.how, HangKind::Spinning | HangKind::Blocked),
        "{hang:#?}"
    );
    assert_eq!(hang.rule_id, "CC001", "{hang:#?}");
    // Kill everything; nothing is left.
    tree::signal_tree(p.pid(), StopSignal::Kill);
    drop(p);
    assert_watch_ends(&w, Duration::from_secs(5));
    drop(w);
    assert_eq!(orphans_after(&tag, Duration::from_secs(5)), vec![]);
}

#[test]
fn workers_of_a_forkserver_that_ran_openmp_are_reported() {
    let fx = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let env = hazard::install(dir.path(), GOMP);
    let tag = unique_tag("hang-watch-forkserver");
    let mut cmd = Command::new(&fx.debian_python);
    cmd.arg("-c")
        .arg(FORKSERVER_POOL_PY)
        .envs(env)
        .env_remove("OMP_NUM_THREADS");
    let p = Program::start(cmd, &tag);
    let w = watch(&p);
    // The server starts (and runs OpenMP) before the first worker.
    let hang = w
        .recv_timeout(DEADLINE + Duration::from_secs(5))
        .expect("a hang");
    eprintln!(
        "forkserver worker: {:?} after start: {hang:#?}",
        p.started.elapsed()
    );
    // A worker, whose parent is the forkserver (a child of the program).
    let parent = tree::process_sample(hang.pid).expect("the worker").parent;
    assert_ne!(parent, p.pid(), "{hang:#?}");
    assert_eq!(
        tree::process_sample(parent).expect("the server").parent,
        p.pid()
    );
    assert_eq!(hang.how, HangKind::Blocked, "{hang:#?}");
    assert_cc001_in_libgomp(&hang);
    drop((w, p));
    assert_eq!(orphans_after(&tag, Duration::from_secs(5)), vec![]);
}
