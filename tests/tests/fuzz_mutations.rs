//! Bounded, deterministic mutation test of the binary reader: real binaries
//! (ELF OpenBLAS and libgomp from the PyPI venv, MSVC's `vcomp140.dll`, a
//! macOS `libomp.dylib`, the fat MarkupSafe module, this test executable),
//! damaged in ways a fuzzer would try (truncations, byte flips in the
//! headers, load commands and tables the parser walks, header fields
//! overwritten with 0, `0xffffffff` and huge values), must come back from
//! `parse_binary` + `fingerprint` (and `read_binary` for a few written to
//! disk) without panicking, without crashing and within [`BOUND`] each.
//!
//! Every mutation is described by a recipe (`truncate to N bytes`, `write
//! u32 LE 0xffffffff at 0x30 (ELF e_shoff)`, ...) that rebuilds it from the
//! fixture file alone. The random choices come from a xorshift generator
//! seeded from the fixture's name, so each run tries the same inputs (for
//! this test executable itself, the inputs follow its build).
//!
//! Each test runs its inputs in a child process (this executable again,
//! with `<test> --exact`), under a 4 GiB address-space limit: a stack
//! overflow or an allocation of many gigabytes, which no `catch_unwind`
//! can contain, is reported with the recipe that caused it, and an input
//! still running after [`BOUND`] of CPU time is killed and reported; the
//! sweep then goes on in a new child.
//!
//! This complements `fuzz/` (cargo-fuzz, run by hand; see
//! `fuzz/README.md`): a short, fixed sweep that runs in every `cargo test`.
//! Inputs the fuzzer found crashing are kept in `fuzz/regressions/` and
//! replayed here. The `finding_*` tests are the problems found so far, each
//! as one exact input.
//!
//! `CAICLUST_MUTATION_VERBOSE=1` prints every recipe as it starts;
//! `CAICLUST_MUTATION_BOUND_MS` changes the time bound (to see how slow a
//! slow input really is).

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Once};
use std::time::{Duration, Instant};

use caiclust_probe::{fingerprint, parse_binary, read_binary, BinaryError};
use caiclust_tests::{fixtures, wheel, workspace_root, SETUP_HINT};

/// Most CPU time any single input may take (parse + fingerprints), in a
/// debug build. The unmutated fixtures take a few tens of milliseconds.
const BOUND: Duration = Duration::from_secs(2);

/// File names given to `fingerprint`: they switch on different rules.
const NAMES: &[&str] = &["libopenblas.so.0", "cv2.abi3.so", "vcomp140.dll"];

#[path = "fuzz_mutations/findings.rs"]
mod findings;
#[path = "fuzz_mutations/mutations.rs"]
mod mutations;
#[path = "fuzz_mutations/structure.rs"]
mod structure;

use findings::*;
use mutations::*;
use structure::*;

// ---------------------------------------------------------------------------
// Running the API under catch_unwind, in a child process.
//
// Some failures cannot be caught in-process: a stack overflow aborts, an
// allocation of many gigabytes gets the process killed, a parser stuck in a
// loop cannot be stopped. So every suite runs in a child process (this test
// executable, re-run with `<test name> --exact` and CHILD_ENV set) with a
// memory limit; the child reports each case on stdout; the parent kills it
// when a case exceeds BOUND, notes how it died otherwise, and starts a new
// child at the next case.

/// Set in the child: `<suite>:<first case>`.
const CHILD_ENV: &str = "CAICLUST_MUTATION_CHILD";
/// Prefix of the child's report lines.
const TAG: &str = "@@mutation ";
/// Address-space limit of the child (`ulimit -v`, KiB): 4 GiB.
const CHILD_MEMORY_KIB: u64 = 4 << 20;
/// Stop a suite after this many failures (each may cost a BOUND and a new
/// child).
const MAX_FAILURES: usize = 24;

thread_local! {
    /// Set while the API runs: the hook records instead of printing.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// A panic hook that, while [`CATCHING`], records the message and the
/// location (the parser's `file:line:col`) instead of printing them; other
/// panics (the test's own assertions) print as usual.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) {
                let payload = info.payload();
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "<non-string panic payload>".to_owned());
                let at = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                    .unwrap_or_else(|| "<unknown location>".to_owned());
                LAST_PANIC.with(|p| *p.borrow_mut() = Some((msg, at)));
            } else {
                default(info);
            }
        }));
    });
}

/// How one input came out.
#[derive(Debug)]
enum Outcome {
    Parsed,
    Rejected,
    /// Panic message, location.
    Panicked(String, String),
}

/// `parse_binary` (or `read_binary` of `via_file`) then `fingerprint` with
/// every name, under `catch_unwind`. A panic the probe contained itself
/// ([`BinaryError::ParserPanic`]) counts as a panic too.
fn exercise(input: &[u8], via_file: Option<&Path>) -> Outcome {
    install_panic_hook();
    CATCHING.with(|c| c.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let parsed = match via_file {
            Some(path) => read_binary(path),
            None => parse_binary(input),
        };
        match parsed {
            Ok(info) => {
                for name in NAMES {
                    let _ = fingerprint(name, &info);
                }
                Ok(true)
            }
            // The probe contained a panic in the parser: still a bug.
            Err(BinaryError::ParserPanic { message, .. }) => Err(message),
            Err(_) => Ok(false),
        }
    }));
    CATCHING.with(|c| c.set(false));
    match result {
        Ok(Ok(true)) => Outcome::Parsed,
        Ok(Ok(false)) => Outcome::Rejected,
        Ok(Err(message)) => {
            let at = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .map_or_else(|| "?".to_owned(), |(_, at)| at);
            Outcome::Panicked(message, at)
        }
        Err(_) => {
            let (msg, at) = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| ("panic (no message recorded)".into(), "?".into()));
            Outcome::Panicked(msg, at)
        }
    }
}

/// The per-input time limit: [`BOUND`], or `CAICLUST_MUTATION_BOUND_MS`
/// (to measure how slow a slow case really is).
fn bound() -> Duration {
    std::env::var("CAICLUST_MUTATION_BOUND_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(BOUND)
}

/// Child side: run the cases of `suite` from `first` on, one report line
/// before and after each.
fn child_main(name: &str, first: usize) {
    let suite = suite(name);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join(
        suite
            .path
            .file_name()
            .map(|n| n.to_owned())
            .unwrap_or_else(|| "input".into()),
    );
    let mut work = suite.base.clone();
    let out = std::io::stdout();
    let say = |line: String| {
        let mut out = out.lock();
        let _ = writeln!(out, "\n{TAG}{line}");
        let _ = out.flush();
    };
    for (i, case) in suite.cases.iter().enumerate().skip(first) {
        let owned;
        let input: &[u8] = match &case.edit {
            Edit::Truncate(len) => &suite.base[..*len],
            Edit::Patch(writes) => {
                for (at, bytes) in writes {
                    work[*at..*at + bytes.len()].copy_from_slice(bytes);
                }
                &work
            }
            Edit::WholeFile(path) => {
                owned = std::fs::read(path).expect("read input file");
                &owned
            }
        };
        if case.via_file {
            std::fs::write(&file, input).expect("write mutated file");
        }
        say(format!("start {i}"));
        let t = Instant::now();
        let outcome = exercise(input, case.via_file.then_some(file.as_path()));
        let nanos = t.elapsed().as_nanos();
        let text = match outcome {
            Outcome::Parsed => "parsed".to_owned(),
            Outcome::Rejected => "rejected".to_owned(),
            Outcome::Panicked(msg, at) => {
                format!("panic {}", serde_json::json!([msg, at]))
            }
        };
        say(format!("done {i} {nanos} {text}"));
        if let Edit::Patch(writes) = &case.edit {
            for (at, bytes) in writes {
                let end = *at + bytes.len();
                work[*at..end].copy_from_slice(&suite.base[*at..end]);
            }
        }
    }
}

/// What the parent hears from a child.
enum Report {
    Start(usize),
    Done(usize, Duration, Outcome),
    /// stdout closed: the child exited or died.
    End,
}

fn parse_report(line: &str) -> Option<Report> {
    let rest = &line[line.find(TAG)? + TAG.len()..];
    let mut words = rest.splitn(4, ' ');
    match words.next()? {
        "start" => Some(Report::Start(words.next()?.parse().ok()?)),
        "done" => {
            let i = words.next()?.parse().ok()?;
            let took = Duration::from_nanos(words.next()?.parse().ok()?);
            let outcome = match words.next()? {
                "parsed" => Outcome::Parsed,
                "rejected" => Outcome::Rejected,
                other => {
                    let json = other.strip_prefix("panic ")?;
                    let (msg, at): (String, String) = serde_json::from_str(json).ok()?;
                    Outcome::Panicked(msg, at)
                }
            };
            Some(Report::Done(i, took, outcome))
        }
        _ => None,
    }
}

/// One failed case.
struct Failure {
    case: usize,
    /// Short kind used to group failures: the panic location, `TIMEOUT`,
    /// or how the child died.
    key: String,
    detail: String,
}

/// Starts a child for `name` from case `first`; returns it with a channel
/// of its reports and a thread collecting its stderr.
fn spawn_child(
    name: &str,
    first: usize,
) -> (
    std::process::Child,
    mpsc::Receiver<Report>,
    std::thread::JoinHandle<String>,
) {
    let exe = std::env::current_exe().expect("current exe");
    let args = [
        name,
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "--quiet",
        // Run the test even if it is `#[ignore]`d (the parent then runs
        // because `--ignored` was given).
        "--include-ignored",
    ];
    let mut cmd = if cfg!(unix) && Path::new("/bin/sh").exists() {
        let mut c = Command::new("/bin/sh");
        c.arg("-c")
            .arg(format!(
                "ulimit -v {CHILD_MEMORY_KIB} 2>/dev/null; exec \"$0\" \"$@\""
            ))
            .arg(&exe)
            .args(args);
        c
    } else {
        let mut c = Command::new(&exe);
        c.args(args);
        c
    };
    cmd.env(CHILD_ENV, format!("{name}:{first}"))
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start the child test process");
    let stdout = child.stdout.take().expect("child stdout");
    let stderr = child.stderr.take().expect("child stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(report) = parse_report(&line) {
                if tx.send(report).is_err() {
                    return;
                }
            }
        }
        let _ = tx.send(Report::End);
    });
    let errs = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    (child, rx, errs)
}

/// The last lines of a child's stderr, for the report.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("note: run with"))
        .collect();
    lines[lines.len().saturating_sub(4)..].join(" | ")
}

/// Parent side: runs the suite's cases in children, restarting after each
/// case that kills or hangs one. Fails the test, listing every failure with
/// the recipe that rebuilds its input.
fn run_suite(name: &str) {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        if let Some(first) = spec.strip_prefix(&format!("{name}:")) {
            child_main(name, first.parse().expect("first case"));
        }
        return;
    }
    let started = Instant::now();
    let suite = suite(name);
    let limit = bound();
    let verbose = std::env::var_os("CAICLUST_MUTATION_VERBOSE").is_some_and(|v| v == "1");
    let total = suite.cases.len();
    let mut failures: Vec<Failure> = Vec::new();
    let (mut parsed, mut rejected, mut busy) = (0usize, 0usize, Duration::ZERO);
    let mut slowest = (Duration::ZERO, 0usize);
    let mut next = 0;
    let mut stopped_early = false;
    while next < total {
        if failures.len() >= MAX_FAILURES {
            stopped_early = true;
            break;
        }
        let (mut child, rx, errs) = spawn_child(name, next);
        let pid = child.id();
        // The case running: index, wall clock and CPU time at its start.
        let mut current: Option<(usize, Instant, Option<Duration>)> = None;
        let died = loop {
            let wait = match &current {
                // Setting up (reading the fixture, building the cases).
                None => Duration::from_secs(120),
                Some((_, wall, cpu)) => {
                    let used = case_time(pid, *wall, *cpu).0;
                    limit.saturating_sub(used).max(Duration::from_millis(20))
                }
            };
            match rx.recv_timeout(wait) {
                Ok(Report::Start(i)) => {
                    if verbose {
                        eprintln!("[{name}] case {i}: {}", suite.cases[i].recipe);
                    }
                    current = Some((i, Instant::now(), cpu_time(pid)));
                }
                Ok(Report::Done(i, took, outcome)) => {
                    current = None;
                    next = i + 1;
                    busy += took;
                    if took > slowest.0 {
                        slowest = (took, i);
                    }
                    match outcome {
                        Outcome::Parsed => parsed += 1,
                        Outcome::Rejected => rejected += 1,
                        Outcome::Panicked(msg, at) => failures.push(Failure {
                            case: i,
                            key: format!("panic at {}", short_location(&at)),
                            detail: format!("panicked: {msg} (at {at})"),
                        }),
                    }
                }
                Ok(Report::End) => break None,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some((i, wall, cpu)) = current {
                        let (used, is_cpu) = case_time(pid, wall, cpu);
                        // Starved by other processes rather than busy:
                        // give it its full share of CPU (up to 5x on the wall clock).
                        if used < limit && wall.elapsed() < limit * 5 {
                            continue;
                        }
                        let _ = child.kill();
                        break Some(Failure {
                            case: i,
                            key: "TIMEOUT".into(),
                            detail: format!(
                                "still running after {used:.2?} of {} ({:.2?} wall); killed",
                                if is_cpu { "CPU" } else { "wall-clock time" },
                                wall.elapsed()
                            ),
                        });
                    }
                    let _ = child.kill();
                    break Some(Failure {
                        case: next,
                        key: "child setup timed out".into(),
                        detail: "no report within 120 s".into(),
                    });
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break None,
            }
        };
        let status = child.wait().expect("wait for the child");
        let stderr = errs.join().unwrap_or_default();
        match (died, current.map(|(i, ..)| i)) {
            (Some(failure), _) => {
                next = failure.case + 1;
                failures.push(failure);
            }
            (None, Some(i)) => {
                // The child died inside the parser: abort (stack overflow),
                // out of memory, signal.
                let why = tail(&stderr);
                let key = if why.contains("overflowed its stack") {
                    "CRASH: stack overflow (abort)".to_owned()
                } else if why.contains("memory allocation") {
                    format!("CRASH: out of memory (> {} GiB)", CHILD_MEMORY_KIB >> 20)
                } else {
                    format!("CRASH: child {status}")
                };
                failures.push(Failure {
                    case: i,
                    key,
                    detail: format!("the child process died ({status}): {why}"),
                });
                next = i + 1;
            }
            (None, None) if next < total => {
                panic!(
                    "{name}: the child stopped before case {next} of {total} ({status}): {}",
                    tail(&stderr)
                );
            }
            (None, None) => {}
        }
    }

    let done = parsed + rejected + failures.len();
    eprintln!(
        "{}: {done}/{total} inputs ({parsed} parsed, {rejected} rejected, {} failed); \
         parsing took {busy:.2?} (slowest {:.2?}: {}); wall {:.2?}",
        suite.label,
        failures.len(),
        slowest.0,
        suite
            .cases
            .get(slowest.1)
            .map_or("-", |c| c.recipe.as_str()),
        started.elapsed()
    );
    if failures.is_empty() {
        return;
    }
    // Group by kind (panic location, TIMEOUT, crash), showing a few recipes
    // for each.
    let mut groups: Vec<(String, Vec<&Failure>)> = Vec::new();
    for f in &failures {
        match groups.iter_mut().find(|(k, _)| *k == f.key) {
            Some((_, list)) => list.push(f),
            None => groups.push((f.key.clone(), vec![f])),
        }
    }
    let mut text = String::new();
    for (key, list) in &groups {
        let _ = writeln!(text, "\n  {key}: {} input(s), e.g.", list.len());
        for f in list.iter().take(3) {
            let case = &suite.cases[f.case];
            let how = if case.via_file {
                "read_binary of a file"
            } else {
                "parse_binary"
            };
            let _ = writeln!(text, "    - {} [{how}]\n      {}", case.recipe, f.detail);
        }
    }
    panic!(
        "{}{}: {} of {done} inputs derived from {} failed (each recipe rebuilds its input \
         from that file){}:{text}",
        suite.note,
        suite.label,
        failures.len(),
        suite.path.display(),
        if stopped_early {
            format!("; stopped after {MAX_FAILURES} failures")
        } else {
            String::new()
        }
    );
}

/// CPU time (user + system) used so far by process `pid`, where the OS
/// tells (Linux `/proc/<pid>/stat`, in 1/100 s).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm) ": state is the first; utime and stime are the
    // 12th and 13th.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Time the running case has used: CPU time where known (so that a busy
/// machine does not fail the test), else wall-clock time. The flag says
/// which.
fn case_time(pid: u32, wall: Instant, cpu: Option<Duration>) -> (Duration, bool) {
    match (cpu, cpu_time(pid)) {
        (Some(start), Some(now)) => (now.saturating_sub(start), true),
        _ => (wall.elapsed(), false),
    }
}

/// `.../goblin-0.10.7/src/mach/imports.rs:103:20` from a full path.
fn short_location(at: &str) -> &str {
    at.split_once(".crates.io-")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or(at, |(_, rest)| rest)
}

// ---------------------------------------------------------------------------
// Suites: what each test runs.

struct Suite {
    label: String,
    /// The file the inputs derive from (its name is kept for `read_binary`).
    path: PathBuf,
    base: Vec<u8>,
    cases: Vec<Case>,
    /// Printed first when the suite fails.
    note: &'static str,
}

/// The first file in `dir` whose name starts with `prefix`.
fn find(dir: &Path, prefix: &str) -> PathBuf {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}; {SETUP_HINT}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {prefix}* in {}; {SETUP_HINT}", dir.display()))
}

fn numpy_openblas() -> PathBuf {
    let dir = fixtures().venv_pypi_site_packages().join("numpy.libs");
    find(&dir, "libscipy_openblas")
}

fn scipy_openblas() -> PathBuf {
    let dir = fixtures().venv_pypi_site_packages().join("scipy.libs");
    find(&dir, "libscipy_openblas")
}

fn libgomp() -> PathBuf {
    let dir = fixtures()
        .venv_pypi_site_packages()
        .join("scikit_learn.libs");
    find(&dir, "libgomp")
}

fn vcomp140() -> PathBuf {
    fixtures()
        .wheel(wheel::SKLEARN_WIN_AMD64)
        .join("sklearn/.libs/vcomp140.dll")
}

/// numpy's Windows OpenBLAS DLL (about 20 MB, MinGW-built).
fn numpy_openblas_dll() -> PathBuf {
    let dir = fixtures().wheel(wheel::NUMPY_WIN_AMD64).join("numpy.libs");
    find(&dir, "libscipy_openblas")
}

/// OpenCV's Windows extension module (about 90 MB, MSVC-built).
fn opencv_pyd() -> PathBuf {
    fixtures()
        .wheel(wheel::OPENCV_WIN_AMD64)
        .join("cv2/cv2.pyd")
}

fn libomp() -> PathBuf {
    fixtures()
        .wheel(wheel::SKLEARN_MACOS_ARM64)
        .join("sklearn/.dylibs/libomp.dylib")
}

fn markupsafe_fat() -> PathBuf {
    let dir = fixtures()
        .wheel(wheel::MARKUPSAFE_MACOS_UNIVERSAL2)
        .join("markupsafe");
    find(&dir, "_speedups.cpython-")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; {SETUP_HINT}", path.display()))
}

/// A sweep of generated mutations of one real binary.
fn fixture_suite(label: &str, path: PathBuf, plan: Plan) -> Suite {
    let base = read(&path);
    // The unmutated file must parse: otherwise the mutations test nothing.
    let info = parse_binary(&base)
        .unwrap_or_else(|e| panic!("unmutated {} does not parse: {e}", path.display()));
    assert!(!info.architectures.is_empty(), "{label}");
    let cases = cases(&base, label, plan);
    Suite {
        label: label.to_owned(),
        path,
        base,
        cases,
        note: "",
    }
}

/// Inputs the fuzzer found crashing (`fuzz/regressions/`).
fn regressions_suite() -> Suite {
    let dir = workspace_root().join("fuzz/regressions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "md"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    let cases = files
        .into_iter()
        .map(|f| Case {
            recipe: format!("the file {}", f.display()),
            edit: Edit::WholeFile(f),
            via_file: false,
        })
        .collect();
    Suite {
        label: "fuzz/regressions".into(),
        path: dir,
        base: Vec::new(),
        cases,
        note: "",
    }
}

/// One hand-made input showing a known finding (see fuzz/README.md).
fn finding_suite(
    label: &str,
    path: PathBuf,
    recipe: String,
    writes: Vec<(usize, Vec<u8>)>,
) -> Suite {
    let base = read(&path);
    for (at, bytes) in &writes {
        assert!(
            at + bytes.len() <= base.len(),
            "{label}: patch outside the file"
        );
    }
    Suite {
        label: label.to_owned(),
        path,
        base,
        cases: vec![Case {
            recipe,
            edit: Edit::Patch(writes),
            via_file: false,
        }],
        note: "FINDING (an input found by fuzzing; see fuzz/README.md): ",
    }
}

fn suite(name: &str) -> Suite {
    match name {
        "mutated_numpy_openblas_elf" => {
            fixture_suite("numpy.libs OpenBLAS (ELF)", numpy_openblas(), LARGE)
        }
        "mutated_scipy_openblas_elf" => {
            fixture_suite("scipy.libs OpenBLAS (ELF)", scipy_openblas(), LARGE)
        }
        "mutated_libgomp_elf" => {
            fixture_suite("scikit_learn.libs libgomp (ELF)", libgomp(), MEDIUM)
        }
        "mutated_vcomp140_pe" => fixture_suite("vcomp140.dll (PE)", vcomp140(), MEDIUM),
        "mutated_libomp_macho" => {
            fixture_suite("libomp.dylib (Mach-O arm64)", libomp(), MACHO_DYLIB)
        }
        "mutated_markupsafe_fat_macho" => {
            fixture_suite("MarkupSafe _speedups (fat Mach-O)", markupsafe_fat(), SMALL)
        }
        "mutated_current_exe" => fixture_suite(
            "this test executable (ELF/Mach-O/PE)",
            std::env::current_exe().expect("current exe"),
            LARGE,
        ),
        "fuzz_regressions_do_not_panic" => regressions_suite(),
        "finding_macho_export_reexport_ordinal" => make_export_reexport(),
        "finding_macho_bind_dylib_ordinal" => make_bind_ordinal(),
        "finding_macho_bind_segment_index" => make_bind_segment(),
        "finding_macho_bind_offset_overflow" => make_bind_offset_overflow(),
        "finding_macho_bind_repeat_count" => make_bind_repeat_count(),
        "finding_macho_export_trie_cycle" => make_export_trie_cycle(),
        "finding_fat_arch_count" => make_fat_arch_count(),
        "finding_elf_dynstr_unmapped" => make_elf_dynstr_unmapped(),
        "finding_elf_dynstr_size_huge" => make_elf_dynstr_size_huge(),
        "finding_pe_optional_header_size_exports" => make_pe_optional_header_size(
            opencv_pyd(),
            "cv2.pyd (opencv, win_amd64)",
            0x0001,
            "exports",
        ),
        "finding_pe_optional_header_size_imports" => make_pe_optional_header_size(
            numpy_openblas_dll(),
            "libscipy_openblas64_ (numpy.libs, win_amd64)",
            0x8080,
            "imports",
        ),
        other => panic!("no suite named {other}"),
    }
}

// ---------------------------------------------------------------------------
// The sweeps: generated mutations of each fixture.

#[test]
fn mutated_numpy_openblas_elf() {
    run_suite("mutated_numpy_openblas_elf");
}

#[test]
fn mutated_scipy_openblas_elf() {
    run_suite("mutated_scipy_openblas_elf");
}

#[test]
fn mutated_libgomp_elf() {
    run_suite("mutated_libgomp_elf");
}

#[test]
fn mutated_vcomp140_pe() {
    run_suite("mutated_vcomp140_pe");
}

#[test]
fn mutated_libomp_macho() {
    run_suite("mutated_libomp_macho");
}

#[test]
fn mutated_markupsafe_fat_macho() {
    run_suite("mutated_markupsafe_fat_macho");
}

#[test]
fn mutated_current_exe() {
    run_suite("mutated_current_exe");
}

/// Inputs the fuzzer (`fuzz/`) found crashing, kept in `fuzz/regressions/`.
#[test]
fn fuzz_regressions_do_not_panic() {
    run_suite("fuzz_regressions_do_not_panic");
}

// ---------------------------------------------------------------------------
// FINDINGS: each test below is one input that the probe mishandled before
// the hardening of binary.rs (a panic inside goblin, an abort, or far more
// than BOUND), kept as a regression test; see fuzz/README.md for the root
// causes. The comment says what the input did then.

/// Panics: index out of bounds in goblin `mach/exports.rs:99`.
#[test]
fn finding_macho_export_reexport_ordinal() {
    run_suite("finding_macho_export_reexport_ordinal");
}

/// Panics: index out of bounds in goblin `mach/imports.rs:103`.
#[test]
fn finding_macho_bind_dylib_ordinal() {
    run_suite("finding_macho_bind_dylib_ordinal");
}

/// Panics: index out of bounds in goblin `mach/imports.rs:94`.
#[test]
fn finding_macho_bind_segment_index() {
    run_suite("finding_macho_bind_segment_index");
}

/// Panics (overflow checks on): add with overflow in goblin
/// `mach/imports.rs:96`.
#[test]
fn finding_macho_bind_offset_overflow() {
    run_suite("finding_macho_bind_offset_overflow");
}

/// Out of memory / far over BOUND: goblin `mach/imports.rs:298`.
#[test]
fn finding_macho_bind_repeat_count() {
    run_suite("finding_macho_bind_repeat_count");
}

/// Stack overflow (abort): goblin `mach/exports.rs` recursion.
#[test]
fn finding_macho_export_trie_cycle() {
    run_suite("finding_macho_export_trie_cycle");
}

/// Far over BOUND: probe `binary.rs` walks 2^31 fat architectures.
#[test]
fn finding_fat_arch_count() {
    run_suite("finding_fat_arch_count");
}

/// Far over BOUND, 1.5 GB: probe `binary.rs` copies megabyte symbol names.
#[test]
fn finding_elf_dynstr_unmapped() {
    run_suite("finding_elf_dynstr_unmapped");
}

/// Over BOUND in debug: goblin splits the rest of the file as strings
/// (linear in the file size: about 1 s per 30 MB in release, 2-3 s in
/// debug for this executable).
#[test]
fn finding_elf_dynstr_size_huge() {
    run_suite("finding_elf_dynstr_size_huge");
}

/// Far over BOUND (35 s in debug, 714,000 exports): SizeOfOptionalHeader 1
/// puts goblin's section table in the optional header; its garbage
/// sections map the export directory onto code, walked name by name.
#[test]
fn finding_pe_optional_header_size_exports() {
    run_suite("finding_pe_optional_header_size_exports");
}

/// Far over BOUND (54 s in debug): SizeOfOptionalHeader 0x8080 puts
/// goblin's section table in code; the import directory, mapped onto
/// garbage, is walked descriptor by descriptor, each lookup table to the
/// end of the file (quadratic in the file size).
#[test]
fn finding_pe_optional_header_size_imports() {
    run_suite("finding_pe_optional_header_size_imports");
}
