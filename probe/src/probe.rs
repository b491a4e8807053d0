//! The probe's entry points: put host, Python and library facts together.

use std::path::PathBuf;

use crate::error::ProbeError;
use crate::facts::{Facts, OsFamily};

/// What to probe and how.
#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    /// `--python PATH`.
    pub python: Option<PathBuf>,
    /// Override the OS the tree's binaries are for.
    pub target_os: Option<OsFamily>,
}

/// Probe a Python environment.
pub fn probe_python(options: &ProbeOptions) -> Result<Facts, ProbeError> {
    let _ = options;
    Err(ProbeError::PythonNotFound("not implemented".into()))
}

/// Probe a folder of unpacked wheels or libraries.
pub fn probe_tree(root: &std::path::Path, options: &ProbeOptions) -> Result<Facts, ProbeError> {
    let _ = options;
    Err(ProbeError::Unreadable {
        path: root.to_path_buf(),
        reason: "not implemented".into(),
    })
}
