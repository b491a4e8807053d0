//! The command-line programs inside Python: what the `caiclust` and
//! `caiclust-check` commands of the wheel run (in-process, see
//! `caiclust/_cli.py`), and the JSON report behind `caiclust.check()`
//! (`caiclust/_report.py`). Both call the programs' library functions in
//! `caiclust-cli` ([`caiclust_cli::apps`]); nothing here checks or prints
//! anything itself.
//!
//! Inside Python the running executable is the interpreter, so the
//! programs' helpers (runtime queries, the map's watcher) start the
//! program given to `set_self_program`, an interpreter that loads this
//! module; [`serve_helpers_if_requested`] in the module's initialisation
//! then serves the request.

use std::ffi::OsString;
use std::path::PathBuf;

use caiclust_cli::apps::{self, check::CheckError};
use caiclust_cli::self_program::SelfProgram;
use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

/// Add `main`, `check_json` and `set_self_program` to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(check_json, m)?)?;
    m.add_function(wrap_pyfunction!(set_self_program, m)?)?;
    Ok(())
}

/// When this process was started as one of caiclust's helpers (a runtime
/// query, a map's watcher), serve the request and end the process; return
/// at once otherwise. Called first in the module's initialisation.
pub fn serve_helpers_if_requested() {
    apps::serve_helpers_if_requested();
}

/// Run the program `prog` (`"caiclust"` or `"caiclust-check"`) with the
/// arguments `argv` (without the program name), as its binary would, with
/// the GIL released; return its exit status. It prints to this process's
/// standard output and error (file descriptors 1 and 2).
#[pyfunction]
fn main(py: Python<'_>, prog: &str, argv: Vec<OsString>) -> PyResult<u8> {
    let program: fn(Vec<OsString>) -> u8 = match prog {
        "caiclust" => apps::caiclust::main,
        "caiclust-check" => apps::check::main,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown program {other:?}: expected \"caiclust\" or \"caiclust-check\""
            )))
        }
    };
    let mut command_line = Vec::with_capacity(argv.len() + 1);
    command_line.push(OsString::from(prog));
    command_line.extend(argv);
    Ok(py.detach(move || program(command_line)))
}

/// The report that `caiclust-check --format json` prints for these
/// arguments, and its exit status: `(json, code)`. `python`, `facts`:
/// `--python`, `--facts`; `scripts`: the scripts and notebooks to lint.
/// Runs with the GIL released.
///
/// Raises `ValueError` for arguments the program refuses (an unknown start
/// method, a worker count below 1, both `python` and `facts`) and for a
/// check that fails (a probe, configuration or facts error),
/// `FileNotFoundError` when that failure is a missing file.
#[pyfunction]
#[pyo3(signature = (python, scripts, start_method, workers, facts))]
fn check_json(
    py: Python<'_>,
    python: Option<PathBuf>,
    scripts: Vec<PathBuf>,
    start_method: Option<String>,
    workers: Option<i64>,
    facts: Option<PathBuf>,
) -> PyResult<(String, u8)> {
    let mut argv: Vec<OsString> = vec!["caiclust-check".into(), "--format=json".into()];
    if let Some(python) = python {
        argv.push(option("--python=", python.as_os_str()));
    }
    if let Some(facts) = facts {
        argv.push(option("--facts=", facts.as_os_str()));
    }
    if let Some(method) = start_method {
        argv.push(format!("--start-method={method}").into());
    }
    if let Some(workers) = workers {
        argv.push(format!("--workers={workers}").into());
    }
    argv.push("--".into());
    argv.extend(scripts.into_iter().map(PathBuf::into_os_string));
    match py.detach(move || apps::check::run(argv)) {
        Ok(checked) => Ok((checked.output, checked.exit_code)),
        Err(CheckError::Usage(e)) => Err(PyValueError::new_err(usage_message(&e.to_string()))),
        Err(CheckError::Failed(e)) => {
            let not_found = e.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
            });
            let message = format!("{e:#}");
            Err(if not_found {
                PyFileNotFoundError::new_err(message)
            } else {
                PyValueError::new_err(message)
            })
        }
    }
}

/// Start the programs' helpers as `path` with `args` first on the command
/// line (e.g. `[sys.executable, "-c", "import caiclust._core"]`) instead of
/// this process's executable. Once per process: the same program again is
/// accepted, another raises `RuntimeError`.
#[pyfunction]
fn set_self_program(path: PathBuf, args: Vec<OsString>) -> PyResult<()> {
    SelfProgram::set(path, args).map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

/// `--name=value` for an option whose value may not be UTF-8.
fn option(name: &str, value: &std::ffi::OsStr) -> OsString {
    let mut arg = OsString::from(name);
    arg.push(value);
    arg
}

/// clap's message without its `error: ` prefix and its hint about
/// `--help`, which name a program the caller did not run.
fn usage_message(text: &str) -> String {
    let body = text.split("\n\n").next().unwrap_or(text).trim();
    body.strip_prefix("error: ").unwrap_or(body).to_owned()
}
