//! Runtime queries: asking a BLAS or OpenMP library about itself, always in
//! a throw-away child process.
//!
//! The static reading ([`fingerprint()`](crate::fingerprint())) says what a
//! binary *is*; only the library itself can say what it *does* in a given
//! environment: which threading layer an `mkl_rt` picks, how many threads a
//! pool starts with under this `OMP_NUM_THREADS` and this CPU affinity,
//! which kernel (`Haswell`, `Zen`) OpenBLAS selected. Getting that answer
//! means loading the library and calling its documented query functions,
//! the ones threadpoolctl calls.
//!
//! # Why never in the caller
//!
//! Loading a library runs code the caller does not control:
//!
//! * its constructors run at load time, and a constructor can crash
//!   (`SIGSEGV`), hang (a lock, a `sleep`, a network file system), or call
//!   `exit()` (some builds abort on an unsupported CPU);
//! * loading a runtime starts its thread pool in the loading process:
//!   OpenBLAS spawns its workers, and an OpenMP runtime in the caller would
//!   then make every later `fork()` of the caller unsafe, which is the very
//!   hazard caiclust warns about;
//! * a library cannot be unloaded reliably, and two copies of one runtime in
//!   one process is itself a hazard.
//!
//! So [`query_runtime`] starts a helper program (any program whose `main()`
//! first calls [`serve_runtime_query_if_requested`]; the `caiclust` binary
//! does) with [`RUNTIME_QUERY_ENV`] set to the query, the environment of the
//! process being described, and optionally that process's CPU affinity. The
//! helper loads the library, calls the query functions, prints one JSON line
//! and exits without running any destructor. The parent waits with a
//! deadline and turns whatever happened (an answer, a crash, a hang, an
//! exit) into a [`RuntimeAnswer`]; it never loads anything itself.
//!
//! ```no_run
//! use std::time::Duration;
//! use caiclust_probe::{query_runtime, RuntimeQuery, RuntimeQueryOptions, Vendor};
//!
//! fn main() {
//!     // This program can serve as its own helper.
//!     caiclust_probe::serve_runtime_query_if_requested();
//!
//!     let query = RuntimeQuery::new(
//!         "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
//!         Vendor::Openblas,
//!     );
//!     let mut options = RuntimeQueryOptions::new(std::env::current_exe().unwrap());
//!     options.env.insert("OPENBLAS_NUM_THREADS".into(), "1".into());
//!     options.deadline = Duration::from_secs(2);
//!     let answer = query_runtime(&query, &options);
//!     assert_eq!(answer.error, None);
//!     assert_eq!(answer.num_threads, Some(1));
//! }
//! ```
//!
//! # Loading a library the way the described process did
//!
//! A library may need another one that the loader finds only because the
//! process had already loaded it under that name (`DT_NEEDED` is satisfied
//! by an object whose SONAME matches), or through the inherited `DT_RPATH`
//! of the binary that loaded it: numpy 1.x's and OpenCV's bundled OpenBLAS
//! need the `libgfortran-<hash>.so.*` beside them, and have no RUNPATH.
//! Loaded alone, they fail. [`query_runtime_after`] has the child load
//! those dependencies first, deepest first, from the files the process
//! used; each handle stays open, which registers its SONAME, and the
//! library's own load then finds them as the process's loader did.
//!
//! Files: `runtime/calls.rs` (what is called, per vendor, and how the
//! answers are read, mirroring threadpoolctl), `runtime/child.rs` (the
//! helper's side; `runtime/child/unix.rs` and `runtime/child/windows.rs`
//! ask whether a dependency is already loaded), `runtime/parent.rs`
//! (starting, bounding and judging the helper), `runtime/protocol.rs` (the
//! JSON lines between the two).

mod calls;
mod child;
mod parent;
mod protocol;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::facts::{Library, RuntimeAnswer, Vendor};

/// Environment variable that turns a process into a query child. Its value
/// is the query, as JSON; it is removed from the child's own environment
/// before the library is loaded (but stays visible in the child's initial
/// environment, `/proc/PID/environ`).
pub const RUNTIME_QUERY_ENV: &str = "CAICLUST_RUNTIME_QUERY";

/// The deadline [`RuntimeQueryOptions::new`] sets.
pub const DEFAULT_RUNTIME_QUERY_DEADLINE: Duration = Duration::from_secs(5);

/// At most this much of the helper's stdout is kept (the rest is read and
/// dropped).
pub const RUNTIME_QUERY_STDOUT_CAP: usize = 64 * 1024;

/// At most this much of the helper's stderr is kept; a library's own output
/// to stdout ends up there too.
pub const RUNTIME_QUERY_STDERR_CAP: usize = 16 * 1024;

/// Serve a runtime query if this process was started as a query child;
/// return at once otherwise.
///
/// Call it first thing in `main()` of any program that may serve as
/// [`RuntimeQueryOptions::helper`] (the `caiclust` binary does). When
/// [`RUNTIME_QUERY_ENV`] is set, this function reads the query from it,
/// pins the CPU affinity if asked, loads the library, calls its query
/// functions, prints the answer as one JSON line on stdout and ends the
/// process (exit status 0, even when the answer is an error). It never
/// returns in that case.
///
/// # Cost
///
/// When the variable is unset: one environment lookup, nothing else.
///
/// # Platform-specific behaviour
///
/// On Unix the answer goes to a private duplicate of stdout while the
/// library's own writes to stdout are sent to stderr, and the process ends
/// with `_exit`, so no library destructor or `atexit` handler runs. On
/// Linux the child also asks to be killed when its parent dies
/// (`PR_SET_PDEATHSIG`). On Windows the process ends with
/// `TerminateProcess`.
pub fn serve_runtime_query_if_requested() {
    child::serve_if_requested();
}

/// Which library to ask, and how it names its query functions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeQuery {
    /// The library file to load.
    pub library: PathBuf,
    /// What kind of library it is; selects the functions called.
    pub vendor: Vendor,
    /// Symbol prefix of its API (`scipy_`), as the static reading found it.
    /// Tried first; then every combination of `""`, `scipy_` with `""`,
    /// `64_`, `_64`, as threadpoolctl does.
    pub symbol_prefix: Option<String>,
    /// Symbol suffix of its API (`64_`), as the static reading found it.
    pub symbol_suffix: Option<String>,
}

impl RuntimeQuery {
    /// A query for `library` of `vendor`, without known symbol affixes.
    pub fn new(library: impl Into<PathBuf>, vendor: Vendor) -> Self {
        Self {
            library: library.into(),
            vendor,
            symbol_prefix: None,
            symbol_suffix: None,
        }
    }

    /// The query for a library the static probe found: its path, vendor
    /// and symbol affixes.
    pub fn for_library(library: &Library) -> Self {
        Self {
            library: library.path.clone(),
            vendor: library.vendor.value,
            symbol_prefix: library.symbol_prefix.clone(),
            symbol_suffix: library.symbol_suffix.clone(),
        }
    }

    /// Is there a runtime query for this vendor? (OpenBLAS, MKL, BLIS,
    /// FlexiBLAS and the OpenMP runtimes.)
    pub fn is_supported(&self) -> bool {
        calls::is_supported(self.vendor)
    }
}

/// A library the query child loads before the queried one, because the
/// described process had it loaded when it loaded that library.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadFirst {
    /// The name a binary asked for (`DT_NEEDED`, e.g.
    /// `libgfortran-040039e1.so.5.0.0`). When an object of that name (or
    /// SONAME) is already loaded in the child, as `libc.so.6` is, it is
    /// reused, as the loader would, and the file is not loaded again.
    pub name: String,
    /// The file the described process loaded for it.
    pub path: PathBuf,
}

/// How to run a [`RuntimeQuery`]: which helper, in which environment, on
/// which CPUs, for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeQueryOptions {
    /// The program to start; its `main()` must call
    /// [`serve_runtime_query_if_requested`] first. Usually the running
    /// `caiclust` binary (`std::env::current_exe()`).
    pub helper: PathBuf,
    /// Arguments put before anything else on the helper's command line,
    /// for a helper that is an interpreter running the serving code, e.g.
    /// `python -c "import caiclust._core"`. Usually none.
    pub helper_args: Vec<OsString>,
    /// The child's whole environment (nothing else is inherited), e.g. a
    /// probed process's initial environment: the variables a runtime reads
    /// at load time (`OMP_NUM_THREADS`, `OPENBLAS_NUM_THREADS`,
    /// `MKL_THREADING_LAYER`, ...) decide its answer.
    pub env: BTreeMap<String, String>,
    /// CPU ids the child pins itself to before loading the library, so that
    /// thread counts derived from the affinity match the described process.
    /// Linux only: elsewhere a query with an affinity fails.
    pub affinity: Option<Vec<usize>>,
    /// How long the child may take, from start to answer; then it is
    /// killed.
    pub deadline: Duration,
}

impl RuntimeQueryOptions {
    /// Options for `helper` (without arguments) with this process's
    /// environment (variables whose name or value is not UTF-8 are left
    /// out), no affinity and [`DEFAULT_RUNTIME_QUERY_DEADLINE`].
    pub fn new(helper: impl Into<PathBuf>) -> Self {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k != RUNTIME_QUERY_ENV)
            .collect();
        Self {
            helper: helper.into(),
            helper_args: Vec::new(),
            env,
            affinity: None,
            deadline: DEFAULT_RUNTIME_QUERY_DEADLINE,
        }
    }
}

/// Ask `query.library` about itself in a child process started from
/// `options.helper` (with `options.helper_args`), and report what happened.
///
/// The result is always a [`RuntimeAnswer`]: on success with
/// [`calls`](RuntimeAnswer::calls), [`version`](RuntimeAnswer::version),
/// [`threading_layer`](RuntimeAnswer::threading_layer),
/// [`num_threads`](RuntimeAnswer::num_threads),
/// [`config`](RuntimeAnswer::config) and
/// [`corename`](RuntimeAnswer::corename) as the library reported them
/// (read as threadpoolctl reads them); otherwise with
/// [`error`](RuntimeAnswer::error) saying why, for example
/// `timed out after 5.0 s (killed) while loading`,
/// `crashed with signal 11 (SIGSEGV) while loading`,
/// `exited with status 3 before answering (the library's constructor called
/// exit?)`, `cannot load: <dlerror text>` (followed by `(loading <library>)`
/// when the loader's text does not name it, as for a missing dependency),
/// or `the library exports none of the query functions`. Functions called
/// before a failure are still listed in `calls`.
///
/// Per vendor (each name tried with the symbol affixes of [`RuntimeQuery`]):
///
/// * OpenBLAS: `openblas_get_config` (version: its second word when the
///   first is `OpenBLAS`), `openblas_get_parallel` (0 disabled, 1 pthreads,
///   2 openmp), `openblas_get_corename`, then `omp_get_max_threads` for the
///   OpenMP build or `openblas_get_num_threads` otherwise;
/// * MKL: `MKL_Get_Version_String`, `MKL_Set_Threading_Layer(-1)` (returns
///   the current layer and changes nothing), `MKL_Get_Max_Threads`;
/// * BLIS: `bli_info_get_version_str`, `bli_info_get_enable_openmp` /
///   `_pthreads`, `bli_arch_query_id` + `bli_arch_string`,
///   `bli_thread_get_num_threads` (-1, "not set", is reported as 1);
/// * FlexiBLAS: `flexiblas_get_version`, `flexiblas_current_backend` (the
///   corename), `flexiblas_list_loaded`, `flexiblas_get_num_threads`;
/// * OpenMP runtimes: `omp_get_max_threads`.
///
/// # Cost
///
/// One process start plus the library's load time: a few milliseconds for
/// OpenBLAS, more for MKL. Bounded by `options.deadline` (plus the time to
/// kill and reap the child, and at most a quarter of a second to collect
/// output a grandchild may hold open).
///
/// # Platform-specific behaviour
///
/// On Unix the child runs in its own process group, which is killed when it
/// ends or times out, so nothing the library started survives it. On
/// Windows only the child itself is killed; the environment is replaced as
/// on Unix, so `options.env` should include `SystemRoot` and `PATH` (for
/// the library's own dependencies). [`RuntimeQueryOptions::affinity`] is
/// honoured on Linux only.
pub fn query_runtime(query: &RuntimeQuery, options: &RuntimeQueryOptions) -> RuntimeAnswer {
    parent::run(query, &[], options)
}

/// [`query_runtime`], with the child loading `load_first` (in that order,
/// deepest dependency first) before `query.library`.
///
/// Use it for a library whose dependencies the loader would not find on
/// its own, but which the described process had loaded (see the module
/// documentation); [`probe_pid`](crate::probe_pid) and
/// [`probe_python_imports`](crate::probe_python_imports) pass the files the
/// process mapped for the library's `DT_NEEDED` names, recursively. An
/// entry whose [`name`](LoadFirst::name) is already loaded in the child is
/// skipped.
///
/// A dependency that cannot be loaded ends the query with an error naming
/// the library, the dependency and the loader's reason: `cannot load:
/// libgfortran-040039e1.so.5.0.0 (/x/libgfortran-040039e1.so.5.0.0), which
/// /x/libopenblas.so needs: <dlerror text>`. A dependency's constructor that
/// crashes, hangs or exits is reported like the library's own, with
/// `while loading its dependency <name>` instead of `while loading`.
///
/// # Cost
///
/// As [`query_runtime`], plus each dependency's load time in the child;
/// the parent loads nothing.
///
/// # Platform-specific behaviour
///
/// "Already loaded" is `dlopen(name, RTLD_NOLOAD)` on Unix (which matches
/// SONAMEs on Linux) and `GetModuleHandleExW` on Windows.
pub fn query_runtime_after(
    query: &RuntimeQuery,
    load_first: &[LoadFirst],
    options: &RuntimeQueryOptions,
) -> RuntimeAnswer {
    parent::run(query, load_first, options)
}
