//! The startup hook that changes a Python program's start method without
//! touching its code: `sitecustomize.py` (embedded here, documented in
//! its own docstring) written to a temporary folder that goes first on
//! the program's `PYTHONPATH`. The folder lives as long as the [`Hook`].

use std::ffi::OsString;
use std::path::PathBuf;

use crate::plan::StartMethod;

/// The hook's source.
pub const SITECUSTOMIZE: &str = include_str!("sitecustomize.py");

/// The variable naming the start method the hook applies.
pub const START_METHOD_VAR: &str = "CAICLUST_START_METHOD";
/// Set to `1`: the method is forced on explicit requests too.
pub const FORCE_VAR: &str = "CAICLUST_START_METHOD_FORCE";

/// An installed hook; dropping it removes its folder.
#[derive(Debug)]
pub struct Hook {
    dir: tempfile::TempDir,
}

impl Hook {
    /// Write the hook; the variables the program needs to load it
    /// (`PYTHONPATH` with the hook's folder first, before `pythonpath`,
    /// the program's own, and the hook's settings).
    pub fn install(
        method: StartMethod,
        force: bool,
        pythonpath: Option<OsString>,
    ) -> std::io::Result<(Hook, Vec<(String, String)>)> {
        let dir = tempfile::Builder::new()
            .prefix("caiclust-hook-")
            .tempdir()?;
        std::fs::write(dir.path().join("sitecustomize.py"), SITECUSTOMIZE)?;
        let mut paths: Vec<PathBuf> = vec![dir.path().to_path_buf()];
        if let Some(p) = pythonpath.filter(|p| !p.is_empty()) {
            paths.extend(std::env::split_paths(&p));
        }
        let joined = std::env::join_paths(paths)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut env = vec![
            (
                "PYTHONPATH".to_string(),
                joined.to_string_lossy().into_owned(),
            ),
            (START_METHOD_VAR.to_string(), method.as_str().to_string()),
        ];
        if force {
            env.push((FORCE_VAR.to_string(), "1".to_string()));
        }
        Ok((Hook { dir }, env))
    }

    /// The folder holding `sitecustomize.py`.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}
