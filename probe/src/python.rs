//! Finding a Python interpreter and asking it about itself.
//!
//! Two steps, as in uv: [`discover_python`] decides *which* interpreter
//! (and records why, as a [`PythonSource`]), looking only at the disk;
//! [`query_python`] runs it once, isolated, with a small embedded script
//! (`python/query.py`) that prints one JSON document, and turns the answer
//! into a [`PythonEnv`].
//!
//! The query imports only the standard library and runs with `-I -S -B`:
//! no `PYTHON*` variable, no user site, no `site` processing (so no `.pth`
//! file runs), no bytecode written. What `site` would have added to
//! `sys.path` is computed by the script without adding it.
//!
//! Files: `python/discover.rs` (where to look), `python/query.rs` (asking),
//! `python/run.rs` (a child process with a deadline), `python/cache.rs`
//! (answers kept on disk), `python/query.py` (the script).

mod cache;

pub(crate) use cache::fnv1a64;

/// caiclust's cache folder: `$XDG_CACHE_HOME/caiclust`, else
/// `~/.cache/caiclust` (`%LOCALAPPDATA%\\caiclust\\cache` on Windows); `None`
/// when `CAICLUST_NO_CACHE` is set or no base is known.
pub fn cache_dir() -> Option<std::path::PathBuf> {
    cache::default_dir()
}
mod discover;
mod query;
mod requires;
mod run;

pub(crate) use requires::read_requires;
#[cfg(all(test, unix))]
mod testing;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::ProbeError;
use crate::facts::{PythonEnv, PythonSource};

/// Choose the interpreter: `explicit` (`--python PATH`, which may also be a
/// venv or conda folder), else the active `VIRTUAL_ENV`, else `CONDA_PREFIX`,
/// else `python3` on `PATH`. `env` is the environment to read.
///
/// In order:
/// 1. `explicit`: an interpreter file; or a folder, in which
///    `bin/python3`, `bin/python`, `python3`, `python` are tried (Windows:
///    `Scripts\python.exe`, `python.exe`); or a bare name such as
///    `python3.12`, looked up on `PATH` when no such file exists.
/// 2. `VIRTUAL_ENV`: its `bin/python3` or `bin/python`
///    (Windows: `Scripts\python.exe`, `python.exe`).
/// 3. `CONDA_PREFIX`: its `bin/python3` or `bin/python`
///    (Windows: `python.exe`, `Scripts\python.exe`).
/// 4. `PATH`: `python3` in every folder, then `python` in every folder.
///
/// An empty variable counts as unset. A `VIRTUAL_ENV` or `CONDA_PREFIX`
/// without an interpreter is an error, not a reason to fall through to
/// `PATH`: it means an activated environment that no longer exists, and
/// probing another interpreter would describe the wrong environment.
///
/// Nothing is run. The path returned is absolute but symlinks are kept (a
/// venv's `python` is a symlink to its base interpreter).
///
/// # Errors
///
/// [`ProbeError::PythonNotFound`], naming what was tried, e.g.
/// `VIRTUAL_ENV=/x has no bin/python3 or bin/python`.
///
/// # Platform-specific behaviour
///
/// On Windows variable names match regardless of case (`Path`), `PATH` is
/// split at `;`, only `.exe` files are taken, and `python.exe` is searched
/// before `python3.exe`: python.org installers create only the former, and
/// the `python3.exe` met first on `PATH` is often the Microsoft Store stub.
/// On Unix a candidate must be a file with an execute bit.
pub fn discover_python(
    explicit: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<(PathBuf, PythonSource), ProbeError> {
    discover::discover(explicit, env)
}

/// Run the interpreter once, isolated (`-I -S -B`), with the embedded
/// query script; no user package is imported.
///
/// `executable` becomes [`PythonEnv::executable`] as given and `source`
/// [`PythonEnv::found_via`]. Inside a virtual environment the answer
/// describes the environment as a normal run sees it (`prefix` is the
/// venv), although `-S` alone would leave `sys.prefix` at the base.
/// [`PythonEnv::site_packages`] lists, in import order, the folders `site`
/// would add: the venv's, the user site (when a normal run enables it),
/// those of `site.getsitepackages()`, then sysconfig's `purelib` and
/// `platlib`; duplicates and folders that do not exist are left out.
///
/// # Cost
///
/// One interpreter start, about 30 ms (half of it importing
/// `multiprocessing` for the start methods), bounded by a 10 s deadline
/// after which the process is killed. Answers are cached on disk (see
/// below); a cached answer costs a few file reads, well under 1 ms.
///
/// # Cache
///
/// Keyed by the interpreter path, its size and modification time (through
/// symlinks and of the symlink), the `pyvenv.cfg` beside it, the query
/// script's hash, the host name, the CPU affinity and the variables the
/// script reads. Kept in `$XDG_CACHE_HOME/caiclust` or `~/.cache/caiclust`
/// (`%LOCALAPPDATA%\caiclust\cache` on Windows) as `python-*.json`.
/// Wrapper scripts such as pyenv shims are not cached. Setting
/// `CAICLUST_NO_CACHE` to a non-empty value turns the cache off. A cache
/// that cannot be read or written is ignored.
///
/// # Errors
///
/// [`ProbeError::PythonQuery`] naming the path and the reason: it cannot be
/// started, it exited with an error (Python 2 is reported as such), it
/// timed out, it printed too much, or its output is not the expected JSON.
///
/// # Platform-specific behaviour
///
/// The script runs on CPython and PyPy 3.6 to 3.14 on Linux, macOS and
/// Windows; what a platform lacks comes back as `None` (for example
/// [`PythonEnv::process_cpu_count`] before 3.13 on macOS, which has no
/// affinity call). On Windows `site.getsitepackages()` also lists the
/// prefix itself, which holds the standard library; it is left out.
pub fn query_python(executable: &Path, source: PythonSource) -> Result<PythonEnv, ProbeError> {
    query::query(executable, source, &query::QueryOptions::standard())
}
