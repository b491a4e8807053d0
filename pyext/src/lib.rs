//! `caiclust._core`: the Python extension module. It gives the Python
//! package the Rust core's cluster (`Cluster`), the machine's usable CPUs
//! and the hazard policy's plan; the pool, executor and CaImAn
//! compatibility layers are Python, in `python/caiclust`.

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

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<cluster::PyCluster>()?;
    m.add_function(wrap_pyfunction!(usable_cpus, m)?)?;
    Ok(())
}
