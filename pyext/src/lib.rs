//! `caiclust._core`: the Python extension module.
use pyo3::prelude::*;

mod cli;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    cli::serve_helpers_if_requested();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    cli::register(m)?;
    Ok(())
}
