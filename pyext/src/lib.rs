//! `caiclust._core`: the Python extension module. It gives the Python
//! package the Rust core's cluster (`Cluster`), the machine's usable CPUs,
//! the hazard policy's plan, and the command-line programs (`main`,
//! `check_json`); the pool, executor and CaImAn compatibility layers are
//! Python, in `python/caiclust`.
//!
//! Imported with a helper's environment variable set (a runtime query,
//! `caiclust map`'s watcher), the module serves that request and exits:
//! inside Python, the interpreter is the CLI's "self program".

mod cli;
mod cluster;
mod results;

use pyo3::prelude::*;

/// CPUs this process may really use: affinity, cgroup quota and Slurm's
/// allocation taken into account (what `n_processes=None` counts from).
#[pyfunction]
fn usable_cpus() -> usize {
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let host = caiclust_probe::collect_host(&env);
    host.usable_cpus
        .map_or(host.logical_cpus, |c| c.value)
        .max(1)
}

/// Start a standby interpreter for `python` in the background (Unix), so
/// the next pool's fork template is ready when the pool starts; `imports`
/// are standard-library modules it loads while it waits. Returns at once;
/// False where none can start.
#[pyfunction]
fn prestart(python: std::path::PathBuf, imports: Vec<String>) -> bool {
    caiclust_core::worker::prestart_python(&python, &imports)
}

/// Stop the standby interpreters still waiting; how many there were.
#[pyfunction]
fn stop_standbys() -> usize {
    caiclust_core::worker::stop_standbys()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    cli::serve_helpers_if_requested();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    cli::register(m)?;
    m.add_class::<cluster::PyCluster>()?;
    m.add_function(wrap_pyfunction!(usable_cpus, m)?)?;
    m.add_function(wrap_pyfunction!(prestart, m)?)?;
    m.add_function(wrap_pyfunction!(stop_standbys, m)?)?;
    Ok(())
}
