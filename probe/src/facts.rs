//! The serialisable facts model: everything the probe learns, with evidence.
//!
//! A [`Facts`] document is what `caiclust probe --json` prints, what a user
//! attaches to a bug report and what the rules crate evaluates. It carries a
//! [`SCHEMA_VERSION`]; readers refuse documents from a newer major schema.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Version of the facts schema. Bump on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything known about one machine and one Python environment (or one
/// folder of unpacked wheels).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    /// [`SCHEMA_VERSION`] of the producer.
    pub schema_version: u32,
    /// The program and version that collected these facts.
    pub producer: String,
    /// Seconds since the Unix epoch when collection started.
    pub collected_at_unix: u64,
    /// What was probed: a Python environment or a folder of binaries.
    pub subject: Subject,
    /// The operating system the scanned binaries are built for. Equals the
    /// host OS for a Python environment; for `--tree` it is inferred from the
    /// binaries' formats (or given explicitly).
    pub target_os: OsFamily,
    /// The machine the probe ran on.
    pub host: HostFacts,
    /// The Python environment, when one was probed.
    pub python: Option<PythonEnv>,
    /// The Python packages that matter and what they pull in.
    pub packages: Vec<PackageFacts>,
    /// Every threading-relevant runtime library found (BLAS, LAPACK, OpenMP,
    /// TBB, OpenCV, ...), one entry per distinct file.
    pub libraries: Vec<Library>,
    /// Runtimes present in more than one copy (one pool per group of
    /// copies the loader knows by one name: [`DuplicateRuntime::groups`]).
    pub duplicates: Vec<DuplicateRuntime>,
    /// The environment variables that matter, as the probed process would
    /// see them.
    pub env: BTreeMap<String, String>,
    /// How the scan went: what was read, what was skipped and why.
    pub scan: ScanSummary,
    /// The running process, when one was probed (`--pid`, `--import`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessFacts>,
}

/// A running process, read from outside: what it has loaded, how many
/// threads it runs, the environment it started with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ProcessFacts {
    pub pid: u32,
    /// `/proc/PID/exe`.
    pub executable: Option<PathBuf>,
    /// `/proc/PID/cmdline`.
    pub command_line: Vec<String>,
    /// Threads running when it was read (`/proc/PID/status`).
    pub threads: Option<usize>,
    /// CPUs it may run on.
    pub affinity: Option<Vec<usize>>,
    /// The variables that matter from the environment it started with
    /// (`/proc/PID/environ`): changes made later with `os.environ` are not
    /// visible here, and do not reach runtimes that already initialised.
    pub initial_env: BTreeMap<String, String>,
    /// Shared objects mapped into it.
    pub mapped_libraries: Vec<PathBuf>,
    /// Is it a Python interpreter, and which one.
    pub python: Option<Conclusion<String>>,
    /// Python-level facts, when caiclust started the interpreter itself
    /// (`--import`).
    pub python_runtime: Option<PythonRuntime>,
    /// Linux: how many of its threads were blocked in each library's code
    /// (only libraries with some). A GNU OpenMP pool whose threads were
    /// started waits in libgomp: the evidence that a fork would hang.
    /// `None` when not read (no ptrace rights, another OS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads_waiting_in: Option<BTreeMap<PathBuf, usize>>,
}

/// What a Python interpreter said about itself after importing modules.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct PythonRuntime {
    /// Modules imported, in order.
    pub imported: Vec<String>,
    /// Modules that failed to import, with the error.
    pub import_errors: BTreeMap<String, String>,
    pub default_start_method: Option<String>,
    /// `threading.active_count()` after the imports.
    pub active_threads: Option<usize>,
    /// `cv2.getNumThreads()`, when cv2 was imported.
    pub cv2_num_threads: Option<i64>,
    /// `numba.threading_layer()`, when numba was loaded and a layer chosen.
    pub numba_threading_layer: Option<String>,
}

/// What a library answered about itself, asked in a throw-away process
/// (never in the caller's).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RuntimeAnswer {
    /// The functions called, e.g. `scipy_openblas_get_config64_`.
    pub calls: Vec<String>,
    pub version: Option<String>,
    pub threading_layer: Option<ThreadingLayer>,
    /// The thread count a process with the probed environment and CPU
    /// affinity would use.
    pub num_threads: Option<usize>,
    /// OpenBLAS config string, MKL version string, ...
    pub config: Option<String>,
    /// OpenBLAS kernel (`Haswell`), FlexiBLAS backend, ...
    pub corename: Option<String>,
    /// Why there is no answer: the library crashed, hung, exited, or lacks
    /// the query functions.
    pub error: Option<String>,
    /// Where the runtime answer and the static reading disagree.
    pub disagreements: Vec<String>,
}

/// What a [`Facts`] document describes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Subject {
    /// A Python interpreter and its site-packages.
    Python {
        /// The interpreter that was queried.
        executable: PathBuf,
    },
    /// A folder of unpacked wheels or libraries, possibly for another OS.
    Tree {
        /// The folder that was scanned.
        root: PathBuf,
    },
    /// A running process.
    Process {
        pid: u32,
        /// Its executable (`/proc/PID/exe`).
        executable: PathBuf,
    },
}

/// Operating-system family.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum OsFamily {
    Linux,
    Macos,
    Windows,
    Other,
}

impl OsFamily {
    /// The family of the OS this program was compiled for.
    pub fn current() -> Self {
        if cfg!(target_os = "linux") {
            Self::Linux
        } else if cfg!(target_os = "macos") {
            Self::Macos
        } else if cfg!(target_os = "windows") {
            Self::Windows
        } else {
            Self::Other
        }
    }

    /// Lower-case name as used on the command line (`linux`, `macos`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linux => "linux",
            Self::Macos => "macos",
            Self::Windows => "windows",
            Self::Other => "other",
        }
    }
}

impl std::str::FromStr for OsFamily {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "linux" => Ok(Self::Linux),
            "macos" | "darwin" | "osx" => Ok(Self::Macos),
            "windows" | "win" | "win32" => Ok(Self::Windows),
            other => Err(format!(
                "unknown OS '{other}' (expected linux, macos or windows)"
            )),
        }
    }
}

/// Where a piece of evidence came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceSource {
    /// Read from the binary: dependencies, exports, version needs, strings.
    Static,
    /// The file's name or the folder layout (weakest static evidence).
    FileName,
    /// Answered by the library itself in a throw-away process.
    Runtime,
    /// An environment variable.
    Environment,
    /// The operating system (procfs, sysfs, system calls).
    System,
    /// A line of Python source: a script, or a cell of a notebook. The
    /// evidence's [`Evidence::span`] says where.
    SourceCode,
}

/// How sure a conclusion is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

/// One observation supporting a conclusion, e.g. `NEEDED libgomp.so.1`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    pub source: EvidenceSource,
    /// Human-readable observation: `NEEDED libgomp.so.1`,
    /// `export scipy_openblas_get_config64_`, `string "OpenBLAS 0.3.30 ..."`.
    pub detail: String,
    /// Where in a source file, for [`EvidenceSource::SourceCode`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<SourceSpan>,
}

impl Evidence {
    pub fn new(source: EvidenceSource, detail: impl Into<String>) -> Self {
        Self {
            source,
            detail: detail.into(),
            span: None,
        }
    }

    /// Evidence from Python source at `span`.
    pub fn in_source(span: SourceSpan, detail: impl Into<String>) -> Self {
        Self {
            source: EvidenceSource::SourceCode,
            detail: detail.into(),
            span: Some(span),
        }
    }
}

/// A place in a Python source file: a script, or a cell of a Jupyter
/// notebook.
///
/// `line` and `column` count in the code as its author reads it: the
/// script's lines, or the lines of one notebook cell. A notebook is stored
/// as JSON, so the same place has another line and column in the file's
/// own text: `file_line` and `file_column`, the position of that character
/// inside the cell's JSON string (what SARIF regions and GitHub
/// annotations point at, since both address the file as stored).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct SourceSpan {
    /// The file, as it was named.
    pub path: PathBuf,
    /// 1-based line in the script or the cell.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The notebook cell, 1-based, counting every cell (Markdown too) in
    /// the order the notebook shows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<usize>,
    /// 1-based line in the file's own text, when it differs from `line`
    /// (a notebook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_line: Option<usize>,
    /// 1-based column (characters) in the file's own text, with
    /// `file_line`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_column: Option<usize>,
}

impl SourceSpan {
    /// The line and column in the file as stored: `file_line` and
    /// `file_column` for a notebook, else `line` and `column`.
    pub fn file_position(&self) -> (usize, usize) {
        match (self.file_line, self.file_column) {
            (Some(l), Some(c)) => (l, c),
            (Some(l), None) => (l, 1),
            _ => (self.line, self.column),
        }
    }
}

/// A value together with how sure we are and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Conclusion<T> {
    pub value: T,
    pub confidence: Confidence,
    pub evidence: Vec<Evidence>,
}

impl<T> Conclusion<T> {
    pub fn new(value: T, confidence: Confidence, evidence: Vec<Evidence>) -> Self {
        Self {
            value,
            confidence,
            evidence,
        }
    }
}

/// Facts about the machine the probe ran on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct HostFacts {
    pub os: Option<OsFamily>,
    /// Distribution or product name, e.g. `Debian GNU/Linux`.
    pub os_name: Option<String>,
    pub os_version: Option<String>,
    pub kernel_version: Option<String>,
    /// CPU architecture as Rust names it (`x86_64`, `aarch64`).
    pub arch: String,
    pub hostname: Option<String>,
    /// Logical CPUs (hardware threads) of the machine.
    pub logical_cpus: usize,
    /// Physical cores, when the OS tells.
    pub physical_cpus: Option<usize>,
    /// CPU ids this process may run on (affinity mask), when the OS has one.
    pub affinity: Option<Vec<usize>>,
    /// The CPU bandwidth limit of this process's cgroup, when one applies.
    pub cgroup: Option<CgroupCpuLimit>,
    /// The Slurm allocation this process runs in, if any.
    pub slurm: Option<SlurmAllocation>,
    pub memory_total_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
    /// CPUs this process can really use: min(logical, affinity, ceil(cgroup
    /// quota / period), Slurm CPUs), with the evidence for each bound.
    pub usable_cpus: Option<Conclusion<usize>>,
    /// Problems met while reading host facts (unreadable files, ...).
    pub notes: Vec<String>,
}

/// A cgroup CPU bandwidth limit (v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`
/// or v2 `cpu.max`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CgroupCpuLimit {
    /// 1 or 2.
    pub version: u8,
    /// The cgroup path from `/proc/self/cgroup` that set the tightest limit.
    pub cgroup_path: String,
    /// The file the limit was read from.
    pub file: PathBuf,
    /// Quota in microseconds per period; `None` means `max` (unlimited).
    pub quota_us: Option<u64>,
    pub period_us: u64,
    /// quota / period, when limited.
    pub cpus: Option<f64>,
}

/// The Slurm allocation variables of this process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct SlurmAllocation {
    pub job_id: Option<String>,
    pub cpus_per_task: Option<usize>,
    pub cpus_on_node: Option<usize>,
    pub ntasks: Option<usize>,
    pub nnodes: Option<usize>,
    pub job_cpus_per_node: Option<String>,
    pub nodelist: Option<String>,
}

/// How the Python interpreter was chosen.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PythonSource {
    /// `--python PATH`.
    Explicit,
    /// The active `VIRTUAL_ENV`.
    VirtualEnv,
    /// The active `CONDA_PREFIX`.
    CondaPrefix,
    /// `python3` (or `python`) on `PATH`.
    SearchPath,
}

/// What the interpreter said about itself (one isolated query, no user
/// package imported).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PythonEnv {
    /// The interpreter path as given or found.
    pub executable: PathBuf,
    /// `sys.executable` as the interpreter reports it.
    pub sys_executable: PathBuf,
    pub found_via: PythonSource,
    /// `3.11.7`.
    pub version: String,
    /// `[major, minor, micro]`.
    pub version_info: [u32; 3],
    /// `cpython`, `pypy`, ...
    pub implementation: String,
    pub prefix: PathBuf,
    pub base_prefix: PathBuf,
    pub exec_prefix: PathBuf,
    /// `sys.prefix != sys.base_prefix`.
    pub is_virtualenv: bool,
    /// A `conda-meta` folder exists in the prefix.
    pub is_conda: bool,
    /// The folders packages are imported from, in import order.
    pub site_packages: Vec<PathBuf>,
    /// `sys.platform` (`linux`, `darwin`, `win32`).
    pub platform: String,
    /// `platform.machine()`.
    pub machine: String,
    /// `sysconfig.get_platform()`.
    pub sysconfig_platform: String,
    /// Extension-module suffix (`.cpython-311-x86_64-linux-gnu.so`).
    pub ext_suffix: Option<String>,
    /// Free-threaded build (`Py_GIL_DISABLED`).
    pub gil_disabled: bool,
    /// The start method `multiprocessing` uses when none is set.
    pub default_start_method: Option<String>,
    /// Start methods this interpreter supports.
    pub start_methods: Vec<String>,
    /// `os.cpu_count()`.
    pub os_cpu_count: Option<usize>,
    /// `os.process_cpu_count()` (3.13+) or the affinity size.
    pub process_cpu_count: Option<usize>,
    /// Import name → the import names of the installed distributions its
    /// distribution requires (`Requires-Dist` without extras): how a
    /// script's imports reach packages it does not import itself.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requires: BTreeMap<String, Vec<String>>,
}

/// A Python package that matters for threading, and what it pulls in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PackageFacts {
    /// Import name (`numpy`, `sklearn`, `cv2`) or vendored folder name
    /// (`numpy.libs`).
    pub name: String,
    /// Distribution name and version from `*.dist-info` / `*.egg-info`.
    pub distribution: Option<String>,
    pub version: Option<String>,
    /// The folder of the package.
    pub path: PathBuf,
    /// Extension modules (and vendored libraries) read.
    pub binaries: usize,
    /// Paths of the [`Library`] entries this package reaches, directly or
    /// through other libraries.
    pub libraries: Vec<PathBuf>,
    /// numba's threading layers available from its pool modules.
    pub threading_layers: Vec<Conclusion<String>>,
}

/// What a library is for. A library can have several (OpenBLAS is BLAS
/// and LAPACK; MKL is BLAS, LAPACK and more).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    Blas,
    Lapack,
    Openmp,
    Tbb,
    Opencv,
    /// A GPU runtime (CUDA) that is unsafe across fork.
    Gpu,
}

/// Who made the library.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Vendor {
    Openblas,
    Mkl,
    Blis,
    Flexiblas,
    Accelerate,
    Atlas,
    /// Netlib reference BLAS/LAPACK.
    Reference,
    /// GNU libgomp.
    GnuOpenmp,
    /// LLVM libomp.
    LlvmOpenmp,
    /// Intel libiomp5.
    IntelOpenmp,
    /// Microsoft vcomp.
    MsvcOpenmp,
    Tbb,
    Opencv,
    Cuda,
    Unknown,
}

impl Vendor {
    /// threadpoolctl's `internal_api` name for this vendor, if it has one.
    pub fn threadpoolctl_internal_api(self) -> Option<&'static str> {
        match self {
            Self::Openblas => Some("openblas"),
            Self::Mkl => Some("mkl"),
            Self::Blis => Some("blis"),
            Self::Flexiblas => Some("flexiblas"),
            Self::GnuOpenmp | Self::LlvmOpenmp | Self::IntelOpenmp | Self::MsvcOpenmp => {
                Some("openmp")
            }
            _ => None,
        }
    }

    /// Is this an OpenMP runtime?
    pub fn is_openmp(self) -> bool {
        matches!(
            self,
            Self::GnuOpenmp | Self::LlvmOpenmp | Self::IntelOpenmp | Self::MsvcOpenmp
        )
    }
}

/// How a library runs its work in parallel. Names follow threadpoolctl
/// where it has one.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ThreadingLayer {
    /// Its own pthreads pool.
    Pthreads,
    /// OpenMP (which runtime: see [`Library::openmp_runtime`]).
    Openmp,
    /// Intel TBB.
    Tbb,
    /// Single-threaded build (threadpoolctl: `disabled`).
    Disabled,
    /// MKL on Intel OpenMP.
    Intel,
    /// MKL on GNU OpenMP.
    Gnu,
    /// MKL sequential.
    Sequential,
    /// Apple Grand Central Dispatch.
    Gcd,
    /// Windows Concurrency runtime.
    Concurrency,
    /// Chosen at run time (MKL's `mkl_rt`, FlexiBLAS).
    RuntimeSelected,
}

impl ThreadingLayer {
    /// threadpoolctl's `threading_layer` string.
    pub fn threadpoolctl_name(self) -> &'static str {
        match self {
            Self::Pthreads => "pthreads",
            Self::Openmp => "openmp",
            Self::Tbb => "tbb",
            Self::Disabled => "disabled",
            Self::Intel => "intel",
            Self::Gnu => "gnu",
            Self::Sequential => "sequential",
            Self::Gcd => "gcd",
            Self::Concurrency => "concurrency",
            Self::RuntimeSelected => "runtime",
        }
    }
}

/// BLAS/LAPACK integer width.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum IntWidth {
    /// 32-bit integers.
    Lp64,
    /// 64-bit integers.
    Ilp64,
}

/// Binary container format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum BinaryFormat {
    Elf,
    MachO,
    Pe,
}

impl BinaryFormat {
    /// The format of this platform's own binaries.
    pub fn current_host() -> Self {
        if cfg!(target_os = "windows") {
            Self::Pe
        } else if cfg!(any(target_os = "macos", target_os = "ios")) {
            Self::MachO
        } else {
            Self::Elf
        }
    }

    /// The OS family that uses this format.
    pub fn os(self) -> OsFamily {
        match self {
            Self::Elf => OsFamily::Linux,
            Self::MachO => OsFamily::Macos,
            Self::Pe => OsFamily::Windows,
        }
    }
}

/// One threading-relevant runtime library.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Library {
    /// The file, with symlinks resolved.
    pub path: PathBuf,
    /// The names it was asked for (`libblas.so.3`, `@rpath/libomp.dylib`),
    /// or its own name when found by folder scan.
    pub requested_as: Vec<String>,
    /// The name the library gives itself: ELF `DT_SONAME`, Mach-O install
    /// name, PE export-directory name (which survives hash-renaming).
    pub soname: Option<String>,
    /// `None` for a system library that is referenced but not present in
    /// the tree (e.g. Accelerate on a Linux host reading macOS wheels).
    pub format: Option<BinaryFormat>,
    /// Architectures (several for a Mach-O fat binary).
    pub architectures: Vec<String>,
    pub apis: Vec<Api>,
    pub vendor: Conclusion<Vendor>,
    pub version: Option<Conclusion<String>>,
    pub threading_layer: Option<Conclusion<ThreadingLayer>>,
    /// For OpenMP-threaded libraries: which OpenMP runtime they use.
    pub openmp_runtime: Option<Conclusion<Vendor>>,
    pub int_width: Option<Conclusion<IntWidth>>,
    /// Symbol prefix and suffix of the exported API (`scipy_`, `64_`).
    pub symbol_prefix: Option<String>,
    pub symbol_suffix: Option<String>,
    /// OpenCV's parallel framework (`pthreads`, `OpenMP`, `TBB`, `GCD`, ...).
    pub parallel_framework: Option<Conclusion<String>>,
    /// For a thin interface library (Debian's `libblas.so.3` from
    /// OpenBLAS, a `libcblas` shim): the library that implements it. Such a
    /// library is not a separate copy of the runtime.
    pub forwards_to: Option<PathBuf>,
    /// Python packages whose modules reach this library.
    pub pulled_in_by: Vec<String>,
    /// Paths of the binaries that load it directly.
    pub needed_by: Vec<PathBuf>,
    /// Resolved paths of the libraries it loads directly.
    pub dependencies: Vec<PathBuf>,
    /// How the loader reaches it, first step first: the request, the search
    /// rule that found it, each symlink followed.
    pub reached_via: Vec<String>,
    /// The library's own answers (runtime queries), when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeAnswer>,
    /// The binaries at the start of the chains of dependencies that reach
    /// it, grouped by package and kind: what a Python process loads
    /// itself (`import` an extension module, `ctypes.CDLL` a package's
    /// library), from which the loader maps this one. Empty in documents
    /// written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_roots: Vec<LoadRoot>,
}

impl Library {
    /// The names the loader knows it by once it is mapped: its SONAME
    /// and the plain names (no folder) it was asked for. glibc's `ld.so`
    /// matches a later `NEEDED` name against these before it searches any
    /// folder; Windows matches a DLL's module name the same way. Empty
    /// for Mach-O, whose loader tells images apart by path.
    pub fn load_names(&self) -> Vec<String> {
        let case = |n: &str| match self.format {
            Some(BinaryFormat::Pe) => n.to_ascii_lowercase(),
            _ => n.to_owned(),
        };
        if self.format == Some(BinaryFormat::MachO) {
            return Vec::new();
        }
        let mut names: Vec<String> = self
            .soname
            .iter()
            .chain(self.requested_as.iter())
            .filter(|n| !n.contains('/') && !n.contains('\\'))
            .map(|n| case(n))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Whether `other` is an alternative to this library: another file
    /// the loader knows by one of the same names. Requested by that name,
    /// whichever of the two is mapped first serves every later request,
    /// so the two are never both mapped that way.
    pub fn is_alternative_to(&self, other: &Library) -> bool {
        if self.path == other.path || self.format != other.format {
            return false;
        }
        let mine = self.load_names();
        other.load_names().iter().any(|n| mine.contains(n))
    }
}

/// How a Python process comes to map the binary that starts a chain of
/// dependencies.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RootKind {
    /// A Python extension module: `import` maps it.
    ExtensionModule,
    /// A shared library of a package that is no extension module and
    /// that no scanned binary needs: the package maps it itself, with
    /// `ctypes`/`cffi` or `dlopen` (LightGBM's `lib_lightgbm.so`,
    /// xgboost's `libxgboost.so`).
    PackageLibrary,
    /// A library of the environment's own `lib` folder.
    RuntimeFolder,
    /// Mapped into the running process that was read.
    Mapped,
}

/// Binaries of one package and kind at the start of chains that reach a
/// library.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct LoadRoot {
    pub kind: RootKind,
    /// The package they belong to, when known.
    pub package: Option<String>,
    /// The first of them (the library itself when it is a root).
    pub path: PathBuf,
    /// How many there are.
    pub count: usize,
}

/// A runtime present in several copies that have a thread pool (builds
/// without one, such as a serial OpenBLAS, are not counted).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DuplicateRuntime {
    pub vendor: Vendor,
    /// Every copy.
    pub paths: Vec<PathBuf>,
    /// The copies grouped by the names the loader knows them by (see
    /// [`Library::load_names`]): the copies of one group are alternatives,
    /// the first one mapped serves the others, so a group is one pool.
    /// Empty in documents written before it existed: then every copy
    /// counts as a pool of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<CopyGroup>,
}

impl DuplicateRuntime {
    /// The thread pools these copies can make in one process: one per
    /// group of alternatives.
    pub fn pool_count(&self) -> usize {
        if self.groups.is_empty() {
            self.paths.len()
        } else {
            self.groups.len()
        }
    }

    /// The groups of copies that are alternatives to each other.
    pub fn alternatives(&self) -> impl Iterator<Item = &CopyGroup> {
        self.groups.iter().filter(|g| g.paths.len() > 1)
    }
}

/// Copies of one runtime that the loader knows by one name: at most one
/// of them is mapped when they are asked for by that name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CopyGroup {
    /// The name they share (ELF `DT_SONAME`, a DLL's module name), when
    /// they have one.
    pub name: Option<String>,
    pub paths: Vec<PathBuf>,
}

/// How the scan went.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ScanSummary {
    /// The folders scanned.
    pub roots: Vec<PathBuf>,
    /// Binaries parsed.
    pub binaries_read: usize,
    /// Files or folders not read, each with the reason.
    pub skipped: Vec<Skipped>,
    /// Dependencies the loader emulation could not find.
    pub unresolved: Vec<Unresolved>,
    /// Wall time of the scan in milliseconds: of this call, also when the
    /// result came from the cache.
    pub elapsed_ms: u64,
    /// The result was read from the scan cache (nothing on disk that the
    /// scan looked at had changed) rather than scanned again.
    #[serde(default)]
    pub from_cache: bool,
}

/// A file or folder the scan could not read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// A dependency that could not be found where the loader would look.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct Unresolved {
    /// The name asked for.
    pub name: String,
    /// The binary that asked.
    pub needed_by: PathBuf,
}

impl Facts {
    /// Parse a facts document, checking its schema version.
    pub fn from_json(text: &str) -> Result<Self, crate::ProbeError> {
        #[derive(Deserialize)]
        struct Header {
            schema_version: u32,
        }
        let header: Header =
            serde_json::from_str(text).map_err(|e| crate::ProbeError::FactsJson(e.to_string()))?;
        if header.schema_version > SCHEMA_VERSION {
            return Err(crate::ProbeError::FactsSchema {
                found: header.schema_version,
                supported: SCHEMA_VERSION,
            });
        }
        serde_json::from_str(text).map_err(|e| crate::ProbeError::FactsJson(e.to_string()))
    }

    /// Libraries of one vendor.
    pub fn libraries_of(&self, vendor: Vendor) -> impl Iterator<Item = &Library> {
        self.libraries
            .iter()
            .filter(move |l| l.vendor.value == vendor)
    }
}

mod display;
