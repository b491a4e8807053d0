//! Helpers for caiclust's integration tests: locating the fixture
//! environments that `scripts/setup-test-envs.sh` builds, and asking a real
//! interpreter what it loads (through threadpoolctl) so that the static probe
//! can be compared with the truth.
//!
//! The fixtures live in `$CAICLUST_FIXTURES`, or `<workspace>/.fixtures` when
//! that variable is unset, and are described by `manifest.json` there:
//!
//! * `venv-pypi/`: a CPython venv with PyPI numpy, scipy, scikit-learn,
//!   opencv-python-headless and threadpoolctl;
//! * the Debian interpreter `/usr/bin/python3` with `python3-numpy`, and
//!   both Debian builds of OpenBLAS (OpenMP and pthreads). The system's
//!   `libblas.so.3` alternative is left as the machine has it: a test that
//!   needs one build names it for its own processes with `LD_LIBRARY_PATH`
//!   ([`Fixtures::debian_openblas_openmp_env`],
//!   [`Fixtures::openblas_pthread_dir`]);
//! * `venv-ipp/`: a CPython venv with PyPI ipyparallel, numpy and
//!   scikit-learn, for the ipyparallel backend;
//! * `wheels/<name>/`: unpacked foreign wheels (macOS, Windows), one per
//!   folder; the names are in [`wheel`].
//!
//! Missing fixtures are a test **failure**, never a skip: [`fixtures`] panics
//! with a message that says to run `scripts/setup-test-envs.sh` first.
//!
//! ```no_run
//! let fx = caiclust_tests::fixtures();
//! let pools = caiclust_tests::run_threadpoolctl(&fx.venv_pypi, &["numpy"]);
//! assert!(pools.iter().any(|p| p.internal_api == "openblas"));
//! let numpy_win = fx.wheel(caiclust_tests::wheel::NUMPY_WIN_AMD64);
//! assert!(numpy_win.join("numpy.libs").is_dir());
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// What to do when fixtures are missing; part of every panic message.
pub const SETUP_HINT: &str =
    "run scripts/setup-test-envs.sh first (scripts/test.sh does it, then runs the tests)";

/// The manifest format version this crate understands.
pub const MANIFEST_VERSION: u32 = 1;

/// Names of the unpacked foreign wheels under [`Fixtures::wheels_dir`], as
/// written by `scripts/setup-test-envs.sh`.
mod tagged;

pub mod wheel {
    /// numpy for macOS 14 arm64: links Accelerate, imports
    /// `cblas_*$NEWLAPACK$ILP64`.
    pub const NUMPY_MACOS_ARM64_ACCELERATE: &str = "numpy-macos-arm64-accelerate";
    /// numpy for macOS 11 arm64: `numpy/.dylibs/libscipy_openblas64_.dylib`.
    pub const NUMPY_MACOS_ARM64_OPENBLAS: &str = "numpy-macos-arm64-openblas";
    /// numpy for Intel macOS: `numpy/.dylibs/libscipy_openblas64_.dylib`.
    pub const NUMPY_MACOS_X86_64_OPENBLAS: &str = "numpy-macos-x86_64-openblas";
    /// numpy for Windows: `numpy.libs/libscipy_openblas64_-<hash>.dll`.
    pub const NUMPY_WIN_AMD64: &str = "numpy-win-amd64";
    /// scipy for macOS 14 arm64: links Accelerate (LP64, `*$NEWLAPACK`).
    pub const SCIPY_MACOS_ARM64_ACCELERATE: &str = "scipy-macos-arm64-accelerate";
    /// scipy for macOS 12 arm64: `scipy/.dylibs/libscipy_openblas.dylib`.
    pub const SCIPY_MACOS_ARM64_OPENBLAS: &str = "scipy-macos-arm64-openblas";
    /// scipy for Windows: `scipy.libs/libscipy_openblas-<hash>.dll`.
    pub const SCIPY_WIN_AMD64: &str = "scipy-win-amd64";
    /// scikit-learn for Windows: `sklearn/.libs/vcomp140.dll`.
    pub const SKLEARN_WIN_AMD64: &str = "sklearn-win-amd64";
    /// scikit-learn for macOS arm64: `sklearn/.dylibs/libomp.dylib`.
    pub const SKLEARN_MACOS_ARM64: &str = "sklearn-macos-arm64";
    /// opencv-python-headless for Windows: `cv2/cv2.pyd`.
    pub const OPENCV_WIN_AMD64: &str = "opencv-win-amd64";
    /// opencv-python-headless for macOS arm64: `cv2/cv2.abi3.so`, `cv2/.dylibs`.
    pub const OPENCV_MACOS_ARM64: &str = "opencv-macos-arm64";
    /// MarkupSafe universal2: a fat (x86_64 + arm64) Mach-O extension module.
    pub const MARKUPSAFE_MACOS_UNIVERSAL2: &str = "markupsafe-macos-universal2";

    /// Every name above.
    pub const ALL: &[&str] = &[
        NUMPY_MACOS_ARM64_ACCELERATE,
        NUMPY_MACOS_ARM64_OPENBLAS,
        NUMPY_MACOS_X86_64_OPENBLAS,
        NUMPY_WIN_AMD64,
        SCIPY_MACOS_ARM64_ACCELERATE,
        SCIPY_MACOS_ARM64_OPENBLAS,
        SCIPY_WIN_AMD64,
        SKLEARN_WIN_AMD64,
        SKLEARN_MACOS_ARM64,
        OPENCV_WIN_AMD64,
        OPENCV_MACOS_ARM64,
        MARKUPSAFE_MACOS_UNIVERSAL2,
    ];
}

/// Paths of the fixture environments, read from `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixtures {
    /// The fixtures folder (`$CAICLUST_FIXTURES` or `<workspace>/.fixtures`).
    pub root: PathBuf,
    /// The interpreter of the PyPI venv (`<root>/venv-pypi/bin/python`).
    pub venv_pypi: PathBuf,
    /// Distribution name (lower case) → version installed in the PyPI venv.
    pub venv_pypi_packages: BTreeMap<String, String>,
    /// The interpreter of a venv with PyPI numba and tbb
    /// (`<root>/venv-numba/bin/python`).
    pub venv_numba: PathBuf,
    /// The interpreter of a venv with PyPI mkl (and intel-openmp) and
    /// threadpoolctl (`<root>/venv-mkl/bin/python`); `libmkl_rt.so.*` is in
    /// its `lib` folder.
    pub venv_mkl: PathBuf,
    /// The interpreter of a venv with PyPI numpy alone
    /// (`<root>/venv-numpy/bin/python`): pthreads OpenBLAS, no OpenMP.
    pub venv_numpy: PathBuf,
    /// The interpreter of a venv with PyPI ipyparallel, numpy and
    /// scikit-learn (`<root>/venv-ipp/bin/python`).
    pub venv_ipp: PathBuf,
    /// The interpreter of a venv with PyPI scikit-learn, LightGBM, xgboost
    /// and threadpoolctl (`<root>/venv-ml/bin/python`): LightGBM loads its
    /// library with ctypes and needs the system `libgomp.so.1`; xgboost
    /// bundles the hash-renamed libgomp scikit-learn bundles (one SONAME).
    pub venv_ml: PathBuf,
    /// The interpreter of a venv with PyPI numpy 1.x and threadpoolctl
    /// (`<root>/venv-numpy1/bin/python`): its OpenBLAS needs the
    /// `libgfortran` beside it and has no RUNPATH.
    pub venv_numpy1: PathBuf,
    /// The interpreter of a venv with PyPI tensorflow-cpu and
    /// threadpoolctl (`<root>/venv-tf/bin/python`): TensorFlow's own
    /// intra-op pool does not survive fork.
    pub venv_tf: PathBuf,
    /// The interpreter of a venv with PyPI torch (x86_64: bundled GNU
    /// OpenMP, the NVIDIA runtime wheels installed, no GPU used) and
    /// threadpoolctl (`<root>/venv-torch/bin/python`).
    pub venv_torch: PathBuf,
    /// Debian's interpreter with `python3-numpy` (`/usr/bin/python3`).
    pub debian_python: PathBuf,
    /// The machine's multiarch triplet, e.g. `x86_64-linux-gnu`.
    pub multiarch: String,
    /// `/usr/lib/<triplet>/openblas-pthread`: put it in `LD_LIBRARY_PATH` to
    /// give Debian's numpy the pthreads OpenBLAS instead of the OpenMP one.
    pub openblas_pthread_dir: PathBuf,
    /// `/usr/lib/<triplet>/openblas-openmp`: put it in `LD_LIBRARY_PATH` to
    /// give Debian's numpy the OpenMP OpenBLAS (see
    /// [`Fixtures::debian_openblas_openmp_env`]).
    pub openblas_openmp_dir: PathBuf,
    /// The folder holding one sub-folder per unpacked foreign wheel.
    pub wheels_dir: PathBuf,
    /// The unpacked foreign wheels, by name (see [`wheel`]).
    pub wheels: BTreeMap<String, WheelFixture>,
}

/// One unpacked foreign wheel.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct WheelFixture {
    /// The folder the wheel was unpacked into (its top level holds the
    /// package folders, like a site-packages).
    pub path: PathBuf,
    /// The PyPI distribution name, e.g. `numpy`.
    pub package: String,
    /// The `--platform` given to `pip download`, e.g. `win_amd64`.
    pub platform: String,
    /// The wheel's file name, e.g. `numpy-2.4.6-cp311-cp311-win_amd64.whl`.
    pub wheel: String,
    /// The distribution version from the wheel's file name.
    pub version: Option<String>,
}

/// The on-disk manifest, as `scripts/setup-test-envs.sh` writes it.
#[derive(Debug, Deserialize)]
struct Manifest {
    version: u32,
    venv_pypi: PathBuf,
    #[serde(default)]
    venv_pypi_packages: BTreeMap<String, String>,
    venv_numba: PathBuf,
    venv_mkl: PathBuf,
    venv_numpy: PathBuf,
    /// Older manifests lack it: then `<root>/venv-ipp/bin/python`, checked
    /// like the others.
    #[serde(default)]
    venv_ipp: Option<PathBuf>,
    #[serde(default)]
    venv_ml: Option<PathBuf>,
    #[serde(default)]
    venv_numpy1: Option<PathBuf>,
    #[serde(default)]
    venv_tf: Option<PathBuf>,
    venv_torch: Option<PathBuf>,
    debian_python: PathBuf,
    multiarch: String,
    openblas_pthread_dir: PathBuf,
    openblas_openmp_dir: PathBuf,
    wheels_dir: PathBuf,
    wheels: BTreeMap<String, WheelFixture>,
}

impl Fixtures {
    /// The folder of the unpacked wheel `name` (one of [`wheel`]'s names).
    ///
    /// # Panics
    /// When the manifest has no such wheel.
    pub fn wheel(&self, name: &str) -> &Path {
        &self.wheel_info(name).path
    }

    /// Everything known about the unpacked wheel `name`.
    ///
    /// # Panics
    /// When the manifest has no such wheel.
    pub fn wheel_info(&self, name: &str) -> &WheelFixture {
        self.wheels.get(name).unwrap_or_else(|| {
            panic!(
                "fixture wheel {name:?} is not in {}/manifest.json (have: {}); {SETUP_HINT}",
                self.root.display(),
                self.wheels.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// The variable that gives Debian's numpy the OpenMP build of OpenBLAS
    /// in one process and its children, whatever the system's
    /// `libblas.so.3` alternative is: `LD_LIBRARY_PATH` set to
    /// [`Fixtures::openblas_openmp_dir`] (its `libblas.so.3`,
    /// `liblapack.so.3` and `libopenblas.so.0` come first, all three of the
    /// same build).
    pub fn debian_openblas_openmp_env(&self) -> (String, String) {
        (
            "LD_LIBRARY_PATH".to_owned(),
            self.openblas_openmp_dir.to_string_lossy().into_owned(),
        )
    }

    /// The prefix of the PyPI venv (`<root>/venv-pypi`).
    pub fn venv_pypi_prefix(&self) -> PathBuf {
        // <prefix>/bin/python
        self.venv_pypi
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.join("venv-pypi"))
    }

    /// The `site-packages` folder of the PyPI venv.
    ///
    /// # Panics
    /// When there is none.
    pub fn venv_pypi_site_packages(&self) -> PathBuf {
        let lib = self.venv_pypi_prefix().join("lib");
        let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("site-packages"))
                .find(|p| p.is_dir())
        });
        found.unwrap_or_else(|| {
            panic!(
                "no {}/python*/site-packages in the PyPI venv; {SETUP_HINT}",
                lib.display()
            )
        })
    }

    /// The installed version of `package` in the PyPI venv.
    ///
    /// # Panics
    /// When the package is not installed there.
    pub fn venv_pypi_version(&self, package: &str) -> &str {
        self.venv_pypi_packages
            .get(&package.to_ascii_lowercase())
            .unwrap_or_else(|| panic!("{package} is not installed in the PyPI venv; {SETUP_HINT}"))
    }
}

/// The workspace's root folder (the parent of this crate's folder).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// The fixtures folder: `$CAICLUST_FIXTURES` when set and not empty,
/// `<workspace>/.fixtures` otherwise. It may not exist.
pub fn fixtures_root() -> PathBuf {
    match std::env::var_os("CAICLUST_FIXTURES") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join(".fixtures"),
    }
}

/// The fixture environments, read (once per process) from
/// `<fixtures_root()>/manifest.json` and checked to exist on disk.
///
/// # Panics
/// With a message that says to run `scripts/setup-test-envs.sh` when the
/// manifest is missing or unreadable, or when a path it names is missing.
/// Tests that need fixtures fail without them; they never skip.
pub fn fixtures() -> Fixtures {
    static CACHE: OnceLock<Fixtures> = OnceLock::new();
    CACHE
        .get_or_init(|| load_fixtures(&fixtures_root()).unwrap_or_else(|e| panic!("{e}")))
        .clone()
}

/// Reads and checks the manifest in `root`; the error text is a complete,
/// actionable message.
fn load_fixtures(root: &Path) -> Result<Fixtures, String> {
    let manifest_path = root.join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
        format!(
            "caiclust test fixtures are missing: cannot read {} ({e}); {SETUP_HINT}",
            manifest_path.display()
        )
    })?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| {
        format!(
            "caiclust test fixtures: {} is not a valid manifest ({e}); {SETUP_HINT}",
            manifest_path.display()
        )
    })?;
    if m.version != MANIFEST_VERSION {
        return Err(format!(
            "caiclust test fixtures: {} has version {}, this crate reads version \
             {MANIFEST_VERSION}; {SETUP_HINT}",
            manifest_path.display(),
            m.version
        ));
    }
    let fx = Fixtures {
        root: root.to_path_buf(),
        venv_pypi: m.venv_pypi,
        venv_pypi_packages: m.venv_pypi_packages,
        venv_numba: m.venv_numba,
        venv_mkl: m.venv_mkl,
        venv_numpy: m.venv_numpy,
        venv_ipp: m
            .venv_ipp
            .unwrap_or_else(|| root.join("venv-ipp").join("bin").join("python")),
        venv_ml: m
            .venv_ml
            .unwrap_or_else(|| root.join("venv-ml").join("bin").join("python")),
        venv_numpy1: m
            .venv_numpy1
            .unwrap_or_else(|| root.join("venv-numpy1").join("bin").join("python")),
        venv_tf: m
            .venv_tf
            .unwrap_or_else(|| root.join("venv-tf").join("bin").join("python")),
        venv_torch: m
            .venv_torch
            .unwrap_or_else(|| root.join("venv-torch").join("bin").join("python")),
        debian_python: m.debian_python,
        multiarch: m.multiarch,
        openblas_pthread_dir: m.openblas_pthread_dir,
        openblas_openmp_dir: m.openblas_openmp_dir,
        wheels_dir: m.wheels_dir,
        wheels: m.wheels,
    };

    let mut missing = Vec::new();
    for (what, path, dir) in [
        ("PyPI venv interpreter", &fx.venv_pypi, false),
        ("numba venv interpreter", &fx.venv_numba, false),
        ("MKL venv interpreter", &fx.venv_mkl, false),
        ("numpy venv interpreter", &fx.venv_numpy, false),
        ("ipyparallel venv interpreter", &fx.venv_ipp, false),
        ("machine-learning venv interpreter", &fx.venv_ml, false),
        ("numpy 1.x venv interpreter", &fx.venv_numpy1, false),
        ("TensorFlow venv interpreter", &fx.venv_tf, false),
        ("PyTorch venv interpreter", &fx.venv_torch, false),
        ("Debian interpreter", &fx.debian_python, false),
        ("pthreads OpenBLAS folder", &fx.openblas_pthread_dir, true),
        ("OpenMP OpenBLAS folder", &fx.openblas_openmp_dir, true),
        ("wheels folder", &fx.wheels_dir, true),
    ] {
        let ok = if dir { path.is_dir() } else { path.is_file() };
        if !ok {
            missing.push(format!("{what} {}", path.display()));
        }
    }
    for (name, w) in &fx.wheels {
        if !w.path.is_dir() {
            missing.push(format!("wheel {name} at {}", w.path.display()));
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "caiclust test fixtures in {} are incomplete, missing: {}; {SETUP_HINT}",
            root.display(),
            missing.join("; ")
        ));
    }
    Ok(fx)
}

/// The Debian package that owns a file (`dpkg -S`): an independent truth
/// for which build of a library is installed where. Empty when no package
/// owns it.
pub fn dpkg_owner(path: &Path) -> String {
    let out = Command::new("dpkg")
        .arg("-S")
        .arg(path)
        .output()
        .expect("run dpkg -S");
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// One thread pool reported by `python -m threadpoolctl -i ...`: a BLAS or
/// OpenMP runtime loaded in that process.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ThreadpoolInfo {
    /// `blas` or `openmp`.
    pub user_api: String,
    /// `openblas`, `mkl`, `blis`, `flexiblas` or `openmp`.
    pub internal_api: String,
    /// The file-name prefix threadpoolctl matched, e.g. `libscipy_openblas`.
    pub prefix: String,
    /// The loaded library's path.
    pub filepath: PathBuf,
    /// The runtime's version, when it can tell (`null` for OpenMP runtimes).
    pub version: Option<String>,
    /// `pthreads`, `openmp`, ... (BLAS libraries only).
    #[serde(default)]
    pub threading_layer: Option<String>,
    /// The current thread limit of the pool.
    pub num_threads: u32,
    /// The CPU kernel set in use, e.g. `Haswell` (OpenBLAS and BLIS only).
    #[serde(default)]
    pub architecture: Option<String>,
    /// Any other key threadpoolctl printed (e.g. `thread_limit_scope`).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Runs `python -m threadpoolctl -i <modules...>` and parses its JSON.
///
/// # Panics
/// When the interpreter cannot be started, exits non-zero, prints something
/// that is not threadpoolctl's JSON list, or cannot import one of `modules`
/// (threadpoolctl itself only warns about that): a test that names a module
/// expects it to be there.
pub fn run_threadpoolctl(python: &Path, modules: &[&str]) -> Vec<ThreadpoolInfo> {
    run_threadpoolctl_with_env(python, modules, &[])
}

/// [`run_threadpoolctl`] with extra environment variables for the child
/// (e.g. `OMP_NUM_THREADS`, `LD_LIBRARY_PATH`); the rest of the environment
/// is inherited.
///
/// # Panics
/// As [`run_threadpoolctl`].
pub fn run_threadpoolctl_with_env(
    python: &Path,
    modules: &[&str],
    env: &[(&str, &str)],
) -> Vec<ThreadpoolInfo> {
    let mut cmd = Command::new(python);
    cmd.args(["-m", "threadpoolctl"]);
    if !modules.is_empty() {
        cmd.arg("-i").args(modules);
    }
    cmd.envs(env.iter().copied());
    let shown = format!(
        "{} -m threadpoolctl -i {}",
        python.display(),
        modules.join(" ")
    );
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}; {SETUP_HINT}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let not_imported: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.trim().strip_prefix("WARNING: could not import "))
        .collect();
    assert!(
        not_imported.is_empty(),
        "{shown}: could not import {}:\n{stderr}",
        not_imported.join(", ")
    );
    parse_threadpoolctl(&stdout).unwrap_or_else(|e| {
        panic!("{shown}: unexpected output ({e}):\n{stdout}\nstderr:\n{stderr}")
    })
}

/// Parses the JSON list that `python -m threadpoolctl -i ...` prints.
pub fn parse_threadpoolctl(json: &str) -> Result<Vec<ThreadpoolInfo>, serde_json::Error> {
    serde_json::from_str(json)
}

/// A tag unique to one test, to put in the environment of everything it
/// starts: [`processes_tagged`] then finds leftovers, however they were
/// re-parented or re-grouped.
pub fn unique_tag(test: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

/// The environment variable [`processes_tagged`] looks for.
pub const TAG_VAR: &str = "CAICLUST_TEST_TAG";

/// Live processes (not zombies) whose environment has `TAG_VAR=tag`, each
/// with its command line: from `/proc` on Linux, from each process's own
/// environment block on Windows (see `tagged/windows.rs`).
pub fn processes_tagged(tag: &str) -> Vec<(u32, String)> {
    tagged::processes_with(&format!("{TAG_VAR}={tag}"))
}

/// Wait up to `within` for every process tagged `tag` to be gone; return
/// the survivors.
pub fn orphans_after(tag: &str, within: std::time::Duration) -> Vec<(u32, String)> {
    wait_for(within, || processes_tagged(tag).is_empty());
    processes_tagged(tag)
}

/// Poll `done` until it says yes, at most `within`; whether it did. A
/// bounded wait on a condition, for tests that must not guess how long
/// something takes with a bare sleep.
pub fn wait_for(within: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The hang of HAZARDS H01 as Python modules: each defines `task(i)` (an
/// int or its string) and uses GNU OpenMP at import, as the parent of a
/// fork would have. Shared by the core and `caiclust map` tests.
/// Shared checks of how a cluster hands out batches of tasks.
pub mod batches {
    use std::time::{Duration, Instant};

    use caiclust_core::{Cluster, Task};

    /// Submit `tiny` then `long` (3 s) in one go to a warmed-up cluster of
    /// one worker, so that they travel in one batch: the tiny tasks'
    /// results must all come back within 1.5 s, while the long one runs,
    /// and the long one's runtime must be its own (about 3 s).
    pub fn answers_not_held_back(c: &Cluster, tiny: Vec<Task>, long: Task) {
        let n = tiny.len();
        let t0 = Instant::now();
        let ids = c.submit_many(tiny.into_iter().chain([long]));
        let long = *ids.last().expect("tasks were submitted");
        for _ in 0..n {
            let r = c.recv_timeout(Duration::from_secs(10)).expect("a result");
            assert_ne!(r.id, long, "the long task ended before the tiny ones");
        }
        let waited = t0.elapsed();
        assert!(
            waited < Duration::from_millis(1500),
            "the tiny tasks' answers waited for the long one: {waited:?}"
        );
        let r = c.recv().expect("the long task");
        assert_eq!(r.id, long);
        assert!(
            (2900..4000).contains(&(r.runtime.as_millis() as u64)),
            "its runtime is its own: {:?}",
            r.runtime
        );
    }
}

pub mod hazard {
    use std::path::{Path, PathBuf};

    /// PyPI scikit-learn's vendored libgomp (KMeans).
    pub const SKLEARN: &str = r#"
import numpy as np
from sklearn.cluster import KMeans
X = np.random.RandomState(0).rand(4000, 8)
def task(seed):
    return int(KMeans(n_clusters=4, n_init=1, random_state=int(seed)).fit(X).n_iter_)
task(0)
"#;

    /// numpy on an OpenMP OpenBLAS (Debian's openblas-openmp, which
    /// [`install`] puts in `LD_LIBRARY_PATH`).
    pub const OPENBLAS: &str = r#"
import numpy as np
A = np.random.RandomState(0).rand(700, 700)
def task(seed):
    B = np.random.RandomState(int(seed)).rand(700, 700)
    return float((A @ B).sum())
task(0)
"#;

    /// A C library built with `gcc -fopenmp` ([`OMPWORK_C`]), loaded with
    /// ctypes from `$OMPWORK_LIB`.
    pub const GOMP: &str = r#"
import ctypes, os
lib = ctypes.CDLL(os.environ["OMPWORK_LIB"])
lib.work.restype = ctypes.c_double
lib.work.argtypes = [ctypes.c_int]
def task(n):
    return lib.work(1000 + int(n))
task(0)
"#;

    /// `double work(int n)`: an OpenMP reduction whose result does not
    /// depend on the thread count (sums of halves are exact).
    pub const OMPWORK_C: &str = r#"
double work(int n) {
    double s = 0;
    #pragma omp parallel for reduction(+:s)
    for (long i = 0; i < (long)n * 20000; i++) s += (i % 7) * 0.5;
    return s;
}
"#;

    /// Build [`OMPWORK_C`] into `dir/libompwork.so` with `gcc -fopenmp`.
    pub fn build_ompwork(dir: &Path) -> PathBuf {
        let src = dir.join("ompwork.c");
        let lib = dir.join("libompwork.so");
        std::fs::write(&src, OMPWORK_C).expect("write ompwork.c");
        let st = std::process::Command::new("gcc")
            .args(["-O2", "-fopenmp", "-shared", "-fPIC", "-o"])
            .arg(&lib)
            .arg(&src)
            .status()
            .expect("gcc (installed by scripts/setup-test-envs.sh)");
        assert!(st.success(), "gcc -fopenmp failed");
        lib
    }

    /// Write `module` as `dir/hazard.py` (building the C library for
    /// [`GOMP`]); the environment that makes `import hazard` work.
    ///
    /// For [`OPENBLAS`] and [`GOMP`] (both run by Debian's interpreter)
    /// also `LD_LIBRARY_PATH` to Debian's OpenMP OpenBLAS
    /// ([`crate::Fixtures::debian_openblas_openmp_env`]): for `OPENBLAS`
    /// it is the hazard; for `GOMP` it is what lets a plan see one, since
    /// a library loaded with ctypes is invisible to the static probe: the
    /// rules flag the interpreter's OpenMP OpenBLAS (CC001), whose
    /// remedies (no fork, or `OMP_NUM_THREADS=1`) defuse the C library
    /// too. The tests were written on machines whose `libblas.so.3`
    /// alternative named that build; now each test names it itself.
    pub fn install(dir: &Path, module: &str) -> Vec<(String, String)> {
        std::fs::write(dir.join("hazard.py"), module).expect("write hazard.py");
        let mut env = vec![("PYTHONPATH".to_string(), dir.to_string_lossy().into_owned())];
        if module == GOMP {
            let lib = build_ompwork(dir);
            env.push(("OMPWORK_LIB".into(), lib.to_string_lossy().into_owned()));
        }
        if module == OPENBLAS || module == GOMP {
            env.push(crate::fixtures().debian_openblas_openmp_env());
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYPI_SAMPLE: &str = r#"[
      {"user_api": "blas", "internal_api": "openblas", "num_threads": 2,
       "prefix": "libscipy_openblas",
       "filepath": "/x/numpy.libs/libscipy_openblas64_-32a4b2a6.so",
       "version": "0.3.31.188.0", "threading_layer": "pthreads",
       "architecture": "Haswell", "thread_limit_scope": "process"},
      {"user_api": "openmp", "internal_api": "openmp", "num_threads": 2,
       "prefix": "libgomp",
       "filepath": "/x/scikit_learn.libs/libgomp-e985bcbb.so.1.0.0",
       "version": null, "thread_limit_scope": "current_thread"}
    ]"#;

    #[test]
    fn parses_threadpoolctl_json() {
        let pools = parse_threadpoolctl(PYPI_SAMPLE).unwrap();
        assert_eq!(pools.len(), 2);
        assert_eq!(pools[0].internal_api, "openblas");
        assert_eq!(pools[0].version.as_deref(), Some("0.3.31.188.0"));
        assert_eq!(pools[0].threading_layer.as_deref(), Some("pthreads"));
        assert_eq!(pools[0].architecture.as_deref(), Some("Haswell"));
        assert_eq!(pools[0].num_threads, 2);
        assert_eq!(pools[0].extra["thread_limit_scope"], "process");
        assert_eq!(pools[1].prefix, "libgomp");
        assert_eq!(pools[1].version, None);
        assert_eq!(pools[1].threading_layer, None);
        assert_eq!(pools[1].architecture, None);
    }

    #[test]
    fn missing_manifest_says_how_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_fixtures(dir.path()).unwrap_err();
        assert!(
            err.contains("run scripts/setup-test-envs.sh first"),
            "{err}"
        );
        assert!(err.contains("manifest.json"), "{err}");
    }

    #[test]
    fn incomplete_fixtures_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = serde_json::json!({
            "version": 1,
            "fixtures": dir.path(),
            "venv_pypi": dir.path().join("venv-pypi/bin/python"),
            "venv_pypi_packages": {},
            "venv_numba": dir.path().join("venv-numba/bin/python"),
            "venv_mkl": dir.path().join("venv-mkl/bin/python"),
            "venv_numpy": dir.path().join("venv-numpy/bin/python"),
            "venv_ipp": dir.path().join("venv-ipp/bin/python"),
            "debian_python": dir.path().join("nope/python3"),
            "multiarch": "x86_64-linux-gnu",
            "openblas_pthread_dir": dir.path(),
            "openblas_openmp_dir": dir.path(),
            "wheels_dir": dir.path(),
            "wheels": {"numpy-win-amd64": {
                "path": dir.path().join("wheels/numpy-win-amd64"),
                "package": "numpy", "platform": "win_amd64",
                "wheel": "numpy-2.4.6-cp311-cp311-win_amd64.whl",
                "version": "2.4.6"}}
        });
        std::fs::write(dir.path().join("manifest.json"), manifest.to_string()).unwrap();
        let err = load_fixtures(dir.path()).unwrap_err();
        assert!(err.contains("PyPI venv interpreter"), "{err}");
        assert!(err.contains("Debian interpreter"), "{err}");
        assert!(err.contains("numba venv interpreter"), "{err}");
        assert!(err.contains("ipyparallel venv interpreter"), "{err}");
        assert!(err.contains("wheel numpy-win-amd64"), "{err}");
        assert!(
            err.contains("run scripts/setup-test-envs.sh first"),
            "{err}"
        );
    }

    /// The real fixtures: fails (never skips) when setup was not run.
    #[test]
    fn real_fixtures_are_complete() {
        let fx = fixtures();
        for name in wheel::ALL {
            assert!(fx.wheel(name).is_dir(), "{name}");
        }
        assert!(fx.venv_pypi_site_packages().join("numpy").is_dir());
        assert!(!fx.venv_pypi_version("numpy").is_empty());
    }

    #[test]
    #[cfg(unix)] // threadpoolctl in the Linux fixture venv
    fn threadpoolctl_sees_pypi_openblas() {
        let fx = fixtures();
        let pools = run_threadpoolctl(&fx.venv_pypi, &["numpy"]);
        assert!(
            pools
                .iter()
                .any(|p| p.internal_api == "openblas" && p.prefix == "libscipy_openblas"),
            "{pools:#?}"
        );
    }
}
