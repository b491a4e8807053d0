//! Finding a Python interpreter and asking it about itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::ProbeError;
use crate::facts::{PythonEnv, PythonSource};

/// Choose the interpreter: `explicit` (`--python PATH`, which may also be a
/// venv or conda folder), else the active `VIRTUAL_ENV`, else `CONDA_PREFIX`,
/// else `python3` on `PATH`. `env` is the environment to read.
pub fn discover_python(
    explicit: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<(PathBuf, PythonSource), ProbeError> {
    let _ = (explicit, env);
    Err(ProbeError::PythonNotFound("not implemented".into()))
}

/// Run the interpreter once, isolated (`-I -S -B`), with the embedded
/// query script; no user package is imported.
pub fn query_python(executable: &Path, source: PythonSource) -> Result<PythonEnv, ProbeError> {
    let _ = source;
    Err(ProbeError::PythonQuery {
        path: executable.to_path_buf(),
        reason: "not implemented".into(),
    })
}
