//! Acceptance: `caiclust run -- PYTHON script.py` makes a hazardous
//! program safe, on real runtimes (the workloads in `run_workloads/`,
//! described in its README).
//!
//! Each hang test first shows the workload hanging without caiclust (run
//! directly, still running at a short deadline, then killed), then that
//! under `caiclust run` with default options it exits 0 with the results a
//! single process computes (`script.py serial`), names the rule it answers
//! on a `caiclust: ` line of standard error, used the start method the
//! contract says (for a guarded script that leaves the method to Python:
//! fork where the thread limits of one thread per worker already make it
//! safe, else forkserver; numba's OpenMP layer always needs forkserver;
//! fork, made safe by the environment, for a script that asks for fork or
//! has no `__main__` guard), and left no process behind. The
//! direct runs go on in a thread while caiclust runs: a hung workload
//! sleeps and costs no CPU (except Debian's OpenBLAS, which spins; that
//! proof runs alone and shorter).
//!
//! Then the watchdog: a library that sets its own thread count hangs fork
//! workers whatever the environment says, and `--stall 5` stops the tree
//! with status 124 and a diagnosis naming CC001, `hung`, the hung worker's
//! pid and the fix (`--start-method forkserver`, which then completes). A
//! worker that only sleeps, in the same hazardous process, is not hung.
//!
//! Unix only: fork, OpenMP and the fixture venvs' Linux Pythons.
#![cfg(unix)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use caiclust_tests::hazard::build_ompwork;
use caiclust_tests::{fixtures, orphans_after, processes_tagged, unique_tag, TAG_VAR};
use serde_json::Value;

const CAICLUST: &str = env!("CARGO_BIN_EXE_caiclust");

/// How long a direct run must still be running to count as hung. The
/// workloads complete in 0.1 to 3 s when made safe (measured by hand: see
/// each test).
const HANG_PROOF: Duration = Duration::from_secs(15);

/// The most any `caiclust run` here may take before the test gives up
/// (then everything it started is killed and the test fails).
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Held by the one hang proof that spins on both cores (Debian's OpenBLAS)
/// and by the run whose duration is measured against a bound (the stall
/// test), so that they never overlap.
static CPU_HOG_OR_TIMED: Mutex<()> = Mutex::new(());

fn exclusive() -> MutexGuard<'static, ()> {
    CPU_HOG_OR_TIMED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The folder of the workload scripts.
fn workloads() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/run_workloads")
}

/// One workload: its interpreter, script and environment (libraries built
/// in `dir`).
struct Workload {
    python: PathBuf,
    script: PathBuf,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl Workload {
    fn new(python: &Path, script: &str) -> Workload {
        let script = workloads().join(script);
        assert!(script.is_file(), "{} is missing", script.display());
        Workload {
            python: python.to_path_buf(),
            script,
            env: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// With caiclust_tests' `gcc -fopenmp` library in `$OMPWORK_LIB`.
    fn with_ompwork(mut self) -> Workload {
        let lib = build_ompwork(self.dir.path());
        self.env
            .push(("OMPWORK_LIB".into(), lib.to_string_lossy().into_owned()));
        self
    }

    /// With Debian's OpenMP build of OpenBLAS first in `LD_LIBRARY_PATH`
    /// (for the direct runs and for `caiclust run`, whose probe and program
    /// see it), whatever the system's `libblas.so.3` alternative is.
    fn with_openblas_openmp(mut self) -> Workload {
        self.env.push(fixtures().debian_openblas_openmp_env());
        self
    }

    /// With `run_workloads/omp_two_threads.c` built into `$OMP2_LIB`.
    fn with_omp2(mut self) -> Workload {
        let lib = self.dir.path().join("libomp2.so");
        let st = Command::new("gcc")
            .args(["-O2", "-fopenmp", "-shared", "-fPIC", "-o"])
            .arg(&lib)
            .arg(workloads().join("omp_two_threads.c"))
            .status()
            .expect("gcc (installed by scripts/setup-test-envs.sh)");
        assert!(st.success(), "gcc -fopenmp omp_two_threads.c failed");
        self.env
            .push(("OMP2_LIB".into(), lib.to_string_lossy().into_owned()));
        self
    }

    /// `PYTHON script.py ARGS`, run directly, in a clean environment.
    fn direct(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.python);
        c.arg(&self.script).args(args);
        self.prepare(&mut c);
        c
    }

    /// `caiclust run OPTIONS -- PYTHON script.py ARGS`.
    fn caiclust(&self, options: &[&str], args: &[&str]) -> Command {
        let mut c = Command::new(CAICLUST);
        c.arg("run")
            .args(options)
            .arg("--")
            .arg(&self.python)
            .arg(&self.script)
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("CLICOLOR_FORCE");
        self.prepare(&mut c);
        c
    }

    /// The start method the policy keeps for the default pool of a guarded
    /// script: fork where the thread limits caiclust sets anyway (one
    /// thread per worker) already make it safe, forkserver where they do
    /// not. Read from `caiclust run --print-plan` (its `threads`).
    fn default_pool_method(&self) -> &'static str {
        let out = self.caiclust(&["--print-plan"], &[]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
        if plan["threads"] == 1 {
            "fork"
        } else {
            "forkserver"
        }
    }

    /// No thread or start-method settings inherited from the test's own
    /// environment; the workload's variables; a folder with no caiclust
    /// configuration above it.
    fn prepare(&self, c: &mut Command) {
        for (k, _) in std::env::vars() {
            if k.ends_with("_NUM_THREADS")
                || k.starts_with("OMP_")
                || k.starts_with("GOMP_")
                || k.starts_with("CAICLUST_START_METHOD")
                || matches!(
                    k.as_str(),
                    "VECLIB_MAXIMUM_THREADS"
                        | "MKL_THREADING_LAYER"
                        | "NUMBA_THREADING_LAYER"
                        | "PYTHONPATH"
                        | "PYTHONSTARTUP"
                )
            {
                c.env_remove(k);
            }
        }
        c.envs(self.env.iter().cloned())
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
    }

    /// What one plain process computes: the last line of `script.py serial`.
    fn serial(&self) -> (Value, Duration) {
        let tag = unique_tag("run-safe-serial");
        let ran = run_for(self.direct(&["serial"]), &tag, RUN_LIMIT);
        assert_eq!(ran.code(), Some(0), "the serial run failed: {}", ran.show());
        (last_json(&ran.stdout), ran.elapsed)
    }

    /// Run directly, it is still running after `within` (then it is killed).
    fn hangs_directly(&self, within: Duration) -> Ran {
        let tag = unique_tag("run-safe-direct");
        let ran = run_for(self.direct(&[]), &tag, within);
        assert!(
            ran.status.is_none(),
            "{} was expected to hang without caiclust, but it ended: {}",
            self.script.display(),
            ran.show()
        );
        assert!(processes_tagged(&tag).is_empty(), "the hung run was killed");
        ran
    }
}

/// A finished (or stopped) run.
struct Ran {
    /// `None`: still running at the deadline, killed.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    /// Processes of the run still alive 10 s after it ended (then killed).
    left_behind: Vec<(u32, String)>,
}

impl Ran {
    fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    fn show(&self) -> String {
        format!(
            "status {:?} after {:.1?}\n--- stdout\n{}--- stderr\n{}--- left behind: {:?}",
            self.status, self.elapsed, self.stdout, self.stderr, self.left_behind
        )
    }

    /// Exit 0, every process gone.
    fn completed(&self) {
        assert_eq!(self.code(), Some(0), "{}", self.show());
        assert!(self.left_behind.is_empty(), "{}", self.show());
        assert!(!self.stderr.contains("panicked"), "{}", self.show());
    }
}

/// Run `cmd` with `TAG_VAR=tag` (inherited by everything it starts) and
/// wait at most `limit`; at the limit, kill every tagged process. After a
/// normal end, wait up to 10 s for the tagged processes to go, then kill
/// and report the rest.
fn run_for(mut cmd: Command, tag: &str, limit: Duration) -> Ran {
    cmd.env(TAG_VAR, tag)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let out = reader(child.stdout.take().expect("stdout"));
    let err = reader(child.stderr.take().expect("stderr"));
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if t0.elapsed() >= limit {
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let elapsed = t0.elapsed();
    let mut left_behind = Vec::new();
    if status.is_none() {
        kill_tagged(tag);
        let _ = child.wait();
    } else {
        left_behind = orphans_after(tag, Duration::from_secs(10));
        kill_tagged(tag);
    }
    Ran {
        status,
        // Everything that held the pipes is gone now.
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
        elapsed,
        left_behind,
    }
}

fn reader(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// SIGKILL every process tagged `tag`, again until none is left (a pool
/// replaces workers that die).
fn kill_tagged(tag: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<String> = processes_tagged(tag)
            .iter()
            .map(|(p, _)| p.to_string())
            .collect();
        if pids.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cannot kill the processes tagged {tag}: {pids:?}"
        );
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .stderr(Stdio::null())
            .status();
        thread::sleep(Duration::from_millis(50));
    }
}

/// The JSON object on the last line of a workload's standard output.
fn last_json(stdout: &str) -> Value {
    let line = stdout.lines().next_back().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("the last line is not JSON ({e}):\n{stdout}"))
}

/// Equal, floats within 1e-9 relative: thread counts change the order of
/// floating-point sums (KMeans' inertia differs in the 15th digit).
fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| close(p, q))
        }
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (p, q) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (p - q).abs() <= 1e-9 * p.abs().max(q.abs()).max(1.0)
        }
        _ => a == b,
    }
}

/// The program's results are those of one plain process.
fn same_results(got: &Value, want: &Value, ran: &Ran) {
    for key in ["parent", "results"] {
        assert!(
            close(&got[key], &want[key]),
            "{key}: {} != {} (serial)\n{}",
            got[key],
            want[key],
            ran.show()
        );
    }
}

/// A `caiclust: ` line of standard error names `rule`.
fn names_rule(ran: &Ran, rule: &str) {
    assert!(
        ran.stderr
            .lines()
            .any(|l| l.starts_with("caiclust: ") && l.contains(rule)),
        "no `caiclust: ... {rule}` line:\n{}",
        ran.show()
    );
}

/// The acceptance of one hang workload: it hangs directly (`proof`,
/// concurrently with the caiclust run unless `proof_alone`); under
/// `caiclust run` it completes with the serial results, names `rule`, and
/// its pool used `method`. The completed run and the serial results, for
/// more checks.
fn made_safe(
    w: &Workload,
    rule: &str,
    method: &str,
    proof: Duration,
    proof_alone: bool,
) -> (Ran, Value) {
    let (want, _) = w.serial();
    let tag = unique_tag("run-safe");
    let ran = if proof_alone {
        {
            let _alone = exclusive();
            w.hangs_directly(proof);
        }
        run_for(w.caiclust(&[], &[]), &tag, RUN_LIMIT)
    } else {
        thread::scope(|s| {
            let hung = s.spawn(|| w.hangs_directly(proof));
            let ran = run_for(w.caiclust(&[], &[]), &tag, RUN_LIMIT);
            if let Err(e) = hung.join() {
                std::panic::resume_unwind(e);
            }
            ran
        })
    };
    ran.completed();
    let got = last_json(&ran.stdout);
    same_results(&got, &want, &ran);
    names_rule(&ran, rule);
    assert_eq!(
        got["method"],
        method,
        "the pool's start method\n{}",
        ran.show()
    );
    (ran, want)
}

// Measured by hand (2 shared cores), hang proofs at 15 s:
// venv-pypi KMeans, default Pool: hangs (workers in futex_wait); completes
// with OMP_NUM_THREADS=1 in 1.2 s, with the start-up hook's forkserver in
// 3.3 s; serial 1.2 s.
#[test]
fn guarded_kmeans_default_pool_is_made_safe() {
    let w = Workload::new(&fixtures().venv_pypi, "kmeans_pool.py");
    let method = w.default_pool_method();
    made_safe(&w, "CC001", method, HANG_PROOF, false);
}

// Hangs; OMP_NUM_THREADS=1: 1.3 s; forced forkserver (hook): 2 to 8 s.
#[test]
fn kmeans_fork_context_keeps_fork_made_safe() {
    let w = Workload::new(&fixtures().venv_pypi, "kmeans_fork_context.py");
    made_safe(&w, "CC001", "fork", HANG_PROOF, false);
}

// The workers spin at 100% CPU in OpenBLAS's barrier: the proof runs alone
// and for 10 s. OMP_NUM_THREADS=1: 0.8 s; forkserver (hook): 1.4 s;
// serial 0.7 s.
#[test]
fn debian_openblas_matmul_default_pool_is_made_safe() {
    let w =
        Workload::new(&fixtures().debian_python, "debian_matmul_pool.py").with_openblas_openmp();
    let method = w.default_pool_method();
    made_safe(&w, "CC001", method, Duration::from_secs(10), true);
}

// Hangs; OMP_NUM_THREADS=1: 0.1 s; forced forkserver (hook): 0.3 s.
#[test]
fn gcc_openmp_library_fork_pool_keeps_fork_made_safe() {
    // The plan sees the hazard through Debian numpy's OpenMP OpenBLAS
    // (CC001; the ctypes library is invisible to the static probe), whose
    // remedy OMP_NUM_THREADS=1 defuses the C library too.
    let w = Workload::new(&fixtures().debian_python, "gomp_fork_pool.py")
        .with_ompwork()
        .with_openblas_openmp();
    made_safe(&w, "CC001", "fork", HANG_PROOF, false);
}

// numba 0.68 in venv-numba picks its OpenMP layer (its TBB layer is not
// usable there): checked in the serial run. Directly, numba kills each
// forked worker ("fork() called from a process already using GNU OpenMP")
// and the pool waits: hung, even with OMP_NUM_THREADS=1 (still running at
// 60 s). NUMBA_THREADING_LAYER=workqueue: 1.1 s; forkserver (hook): 2.9 s.
#[test]
fn numba_omp_layer_default_pool_gets_forkserver() {
    // NUMBA_NUM_THREADS=1 (the thread limit for one thread per worker)
    // does not make numba's OpenMP layer survive fork: the start method
    // must change, whatever the CPU count.
    let w = Workload::new(&fixtures().venv_numba, "numba_prange_pool.py");
    let (_, serial) = made_safe(&w, "CC002", "forkserver", HANG_PROOF, false);
    assert_eq!(
        serial["layer"], "omp",
        "the workload needs numba's OpenMP layer to be hazardous: {serial}"
    );
}

// Hangs; OMP_NUM_THREADS=1: 1.4 s with "top level ran" once. Forkserver
// (the wrong fix) livelocks: 13 "top level ran" and "bootstrapping phase"
// errors in 20 s, never ends.
#[test]
fn unguarded_script_keeps_fork_runs_its_top_level_once() {
    let w = Workload::new(&fixtures().venv_pypi, "unguarded_kmeans_pool.py");
    let (ran, _) = made_safe(&w, "CC001", "fork", HANG_PROOF, false);
    let tops = ran.stdout.lines().filter(|l| *l == "top level ran").count();
    assert_eq!(tops, 1, "the top level ran {tops} times\n{}", ran.show());
    assert!(
        ran.elapsed < Duration::from_secs(60),
        "no livelock: it took {:?}\n{}",
        ran.elapsed,
        ran.show()
    );
}

/// The pids after `prefix` on the lines of `stdout` ("worker 123").
fn pids_printed(stdout: &str, prefix: &str) -> Vec<u32> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

/// The numbers in `line`.
fn numbers_in(line: &str) -> Vec<u32> {
    line.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

// omp_set_num_threads(2) in the library: fork workers hang whatever the
// environment says (still running at 15 s with OMP_NUM_THREADS=1). Forced
// forkserver (hook): 0.3 s; serial 0.1 s.
#[test]
fn forced_threads_are_stopped_with_a_diagnosis_not_left_hanging() {
    let w = Workload::new(&fixtures().debian_python, "forced_threads_fork_pool.py").with_omp2();
    let (want, serial_took) = w.serial();
    let stall = 5;
    let tag = unique_tag("run-safe-stall");
    let ran = thread::scope(|s| {
        let hung = s.spawn(|| w.hangs_directly(HANG_PROOF));
        let ran = {
            let _timed = exclusive();
            run_for(
                w.caiclust(&["--stall", &stall.to_string()], &[]),
                &tag,
                RUN_LIMIT,
            )
        };
        if let Err(e) = hung.join() {
            std::panic::resume_unwind(e);
        }
        ran
    });
    assert_eq!(ran.code(), Some(124), "{}", ran.show());
    assert!(
        ran.left_behind.is_empty(),
        "the whole tree is stopped\n{}",
        ran.show()
    );
    // Stopped within 5 s after the stall period (the time it takes to get
    // there, the parent's own work, is the serial run's at most).
    let bound = serial_took + Duration::from_secs(stall + 5);
    assert!(
        ran.elapsed < bound,
        "took {:.1?}, more than the stall ({stall} s) + 5 s + the parent's work ({:.1?})\n{}",
        ran.elapsed,
        serial_took,
        ran.show()
    );
    let parent = pids_printed(&ran.stdout, "parent ");
    let workers = pids_printed(&ran.stdout, "worker ");
    assert_eq!(parent.len(), 1, "{}", ran.show());
    assert!(!workers.is_empty(), "{}", ran.show());
    let diagnosis = ran.stderr.lines().find(|l| {
        l.contains("CC001")
            && l.contains("hung")
            && l.contains("--start-method forkserver")
            && numbers_in(l).iter().any(|n| workers.contains(n))
    });
    assert!(
        diagnosis.is_some(),
        "no stderr line names CC001, `hung`, a hung worker's pid (one of {workers:?}, \
         the parent is {}) and the fix `--start-method forkserver`\n{}",
        parent[0],
        ran.show()
    );

    // The fix it names completes.
    let tag = unique_tag("run-safe-forkserver");
    let ran = run_for(
        w.caiclust(&["--start-method", "forkserver"], &[]),
        &tag,
        RUN_LIMIT,
    );
    ran.completed();
    let got = last_json(&ran.stdout);
    same_results(&got, &want, &ran);
    assert_eq!(
        got["method"],
        "forkserver",
        "forced over get_context(\"fork\")\n{}",
        ran.show()
    );
}

// The workers sleep 30 s (60 s in the script's default: 30 keeps the suite
// short; with --stall 5 it is still six stall periods) in a process whose
// libgomp pool of two threads is running: by hand, directly, 30.1 s, exit 0.
#[test]
fn idle_fork_workers_are_not_hung() {
    let w = Workload::new(&fixtures().debian_python, "idle_fork_worker.py").with_omp2();
    let tag = unique_tag("run-safe-idle");
    let ran = run_for(w.caiclust(&["--stall", "5"], &["30"]), &tag, RUN_LIMIT);
    ran.completed();
    let got = last_json(&ran.stdout);
    assert_eq!(
        got["slept"],
        serde_json::json!([30.0, 30.0]),
        "{}",
        ran.show()
    );
    assert_eq!(
        got["method"],
        "fork",
        "the script forces fork\n{}",
        ran.show()
    );
    assert!(ran.elapsed >= Duration::from_secs(30), "{}", ran.show());
    assert!(!ran.stderr.contains("hung"), "{}", ran.show());
}
