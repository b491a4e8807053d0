//! Where to look for the interpreter: an explicit path or environment
//! folder, the active virtual environment, the active conda environment,
//! then `PATH`. Nothing is run here; candidates are checked on disk only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::ProbeError;
use crate::facts::PythonSource;

/// The variable naming the active virtual environment (set by `activate`).
pub(crate) const VIRTUAL_ENV: &str = "VIRTUAL_ENV";
/// The variable naming the active conda environment (set by `conda activate`).
pub(crate) const CONDA_PREFIX: &str = "CONDA_PREFIX";
/// The executable search path.
pub(crate) const PATH: &str = "PATH";

/// Interpreter locations inside a virtual environment, relative to its root,
/// in order of preference.
#[cfg(not(windows))]
const VENV_LAYOUT: &[&str] = &["bin/python3", "bin/python"];
#[cfg(windows)]
const VENV_LAYOUT: &[&str] = &["Scripts\\python.exe", "python.exe"];

/// Interpreter locations inside a conda environment. On Windows conda puts
/// `python.exe` at the root of the environment.
#[cfg(not(windows))]
const CONDA_LAYOUT: &[&str] = &["bin/python3", "bin/python"];
#[cfg(windows)]
const CONDA_LAYOUT: &[&str] = &["python.exe", "Scripts\\python.exe"];

/// Interpreter locations inside a folder given explicitly: either layout,
/// or the folder of the interpreter itself (`--python .venv/bin`).
#[cfg(not(windows))]
const FOLDER_LAYOUT: &[&str] = &["bin/python3", "bin/python", "python3", "python"];
#[cfg(windows)]
const FOLDER_LAYOUT: &[&str] = &["Scripts\\python.exe", "python.exe"];

/// Names searched on `PATH`, each over the whole `PATH` before the next.
/// On Windows `python.exe` comes first: python.org installers do not create
/// `python3.exe`, and the `python3.exe` found first on `PATH` is often the
/// Microsoft Store stub in `WindowsApps`.
#[cfg(not(windows))]
const PATH_NAMES: &[&str] = &["python3", "python"];
#[cfg(windows)]
const PATH_NAMES: &[&str] = &["python.exe", "python3.exe"];

pub(crate) fn discover(
    explicit: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<(PathBuf, PythonSource), ProbeError> {
    if let Some(path) = explicit {
        return explicit_interpreter(path, env).map(|p| (p, PythonSource::Explicit));
    }
    if let Some(dir) = env_var(env, VIRTUAL_ENV) {
        return in_folder(Path::new(dir), VENV_LAYOUT)
            .map(|p| (p, PythonSource::VirtualEnv))
            .ok_or_else(|| {
                not_found(format!(
                    "{VIRTUAL_ENV}={dir} has no {}",
                    or_list(VENV_LAYOUT)
                ))
            });
    }
    if let Some(dir) = env_var(env, CONDA_PREFIX) {
        return in_folder(Path::new(dir), CONDA_LAYOUT)
            .map(|p| (p, PythonSource::CondaPrefix))
            .ok_or_else(|| {
                not_found(format!(
                    "{CONDA_PREFIX}={dir} has no {}",
                    or_list(CONDA_LAYOUT)
                ))
            });
    }
    let Some(path_var) = env_var(env, PATH) else {
        return Err(not_found(format!(
            "{VIRTUAL_ENV} and {CONDA_PREFIX} are not set and {PATH} is not set; \
             name the interpreter explicitly (--python)"
        )));
    };
    for name in PATH_NAMES {
        if let Some(found) = search_path(name, path_var) {
            return Ok((absolute(found), PythonSource::SearchPath));
        }
    }
    let folders = std::env::split_paths(path_var)
        .filter(|d| !d.as_os_str().is_empty())
        .count();
    Err(not_found(format!(
        "{VIRTUAL_ENV} and {CONDA_PREFIX} are not set and no {} is on {PATH} \
         (entries searched: {folders}); name the interpreter explicitly (--python)",
        or_list(PATH_NAMES)
    )))
}

/// An explicit interpreter file, environment folder, or bare command name.
fn explicit_interpreter(
    path: &Path,
    env: &BTreeMap<String, String>,
) -> Result<PathBuf, ProbeError> {
    match path.metadata() {
        Ok(meta) if meta.is_dir() => in_folder(path, FOLDER_LAYOUT).ok_or_else(|| {
            not_found(format!(
                "the folder {} has no {}",
                path.display(),
                or_list(FOLDER_LAYOUT)
            ))
        }),
        Ok(_) if is_executable(path) => Ok(absolute(path.to_path_buf())),
        Ok(_) => Err(not_found(format!(
            "{} is not an executable file",
            path.display()
        ))),
        Err(e) => {
            // `python3.12` as a bare name: look it up on PATH like a shell.
            let bare = path.components().count() == 1 && !path.as_os_str().is_empty();
            if bare {
                if let Some(found) = env_var(env, PATH).and_then(|p| search_path_bare(path, p)) {
                    return Ok(absolute(found));
                }
                return Err(not_found(format!(
                    "{} does not exist and is not a command on {PATH}",
                    path.display()
                )));
            }
            Err(not_found(format!(
                "{} does not exist ({e})",
                path.display()
            )))
        }
    }
}

/// The first existing interpreter of `layout` inside `dir`.
fn in_folder(dir: &Path, layout: &[&str]) -> Option<PathBuf> {
    layout
        .iter()
        .map(|rel| dir.join(rel))
        .find(|p| is_executable(p))
        .map(absolute)
}

/// `name` (already with its `.exe` on Windows) in the folders of `path_var`.
/// Empty entries are skipped rather than read as the current folder.
fn search_path(name: &str, path_var: &str) -> Option<PathBuf> {
    std::env::split_paths(path_var)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// A bare command name given by the user; on Windows `.exe` is added
/// unless the name ends with it (`python3.12` becomes `python3.12.exe`).
fn search_path_bare(name: &Path, path_var: &str) -> Option<PathBuf> {
    let name = name.to_str()?;
    if cfg!(windows) && !name.to_ascii_lowercase().ends_with(".exe") {
        return search_path(&format!("{name}.exe"), path_var);
    }
    search_path(name, path_var)
}

/// A regular file (after symlinks) that may be executed.
fn is_executable(path: &Path) -> bool {
    let Ok(meta) = path.metadata() else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// A non-empty variable; on Windows names match without regard to case
/// (`Path` is the usual spelling there).
fn env_var<'a>(env: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    let value = env.get(name).or_else(|| {
        if cfg!(windows) {
            env.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        } else {
            None
        }
    })?;
    (!value.is_empty()).then_some(value.as_str())
}

/// Absolute without resolving symlinks: a venv's `python` is a symlink to
/// the base interpreter and must stay the venv's.
fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

fn or_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn not_found(message: String) -> ProbeError {
    ProbeError::PythonNotFound(message)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::python::testing::fake_python;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn env(pairs: &[(&str, &Path)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.display().to_string()))
            .collect()
    }

    fn message(r: Result<(PathBuf, PythonSource), ProbeError>) -> String {
        match r {
            Err(ProbeError::PythonNotFound(m)) => m,
            other => panic!("expected PythonNotFound, got {other:?}"),
        }
    }

    #[test]
    fn discover_explicit_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let py = tmp.path().join("custom/python-x");
        fake_python(&py, "exit 0");
        let venv = tmp.path().join("venv");
        fake_python(&venv.join("bin/python3"), "exit 0");
        let found = discover(Some(&py), &env(&[(VIRTUAL_ENV, &venv)])).expect("found");
        assert_eq!(found, (py, PythonSource::Explicit));
    }

    #[test]
    fn discover_explicit_venv_folder() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let venv = tmp.path().join("venv");
        fake_python(&venv.join("bin/python"), "exit 0");
        let found = discover(Some(&venv), &BTreeMap::new()).expect("found");
        assert_eq!(found, (venv.join("bin/python"), PythonSource::Explicit));
        // python3 is preferred when both exist.
        fake_python(&venv.join("bin/python3"), "exit 0");
        let found = discover(Some(&venv), &BTreeMap::new()).expect("found");
        assert_eq!(found.0, venv.join("bin/python3"));
        // The bin folder itself works too.
        let found = discover(Some(&venv.join("bin")), &BTreeMap::new()).expect("found");
        assert_eq!(found.0, venv.join("bin/python3"));
    }

    #[test]
    fn discover_explicit_missing_names_the_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let missing = tmp.path().join("nope/python3");
        let m = message(discover(Some(&missing), &BTreeMap::new()));
        assert!(m.contains(&missing.display().to_string()), "{m}");
        assert!(m.contains("does not exist"), "{m}");
        let empty = tmp.path().join("empty");
        fs::create_dir(&empty).expect("mkdir");
        let m = message(discover(Some(&empty), &BTreeMap::new()));
        assert!(m.contains("has no bin/python3, bin/python"), "{m}");
    }

    #[test]
    fn discover_explicit_not_executable() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let py = tmp.path().join("python3");
        fs::write(&py, "#!/bin/sh\n").expect("write");
        fs::set_permissions(&py, fs::Permissions::from_mode(0o644)).expect("chmod");
        let m = message(discover(Some(&py), &BTreeMap::new()));
        assert!(m.contains("not an executable"), "{m}");
    }

    #[test]
    fn discover_explicit_bare_name_searches_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bin = tmp.path().join("bin");
        fake_python(&bin.join("python3.99"), "exit 0");
        let e = env(&[(PATH, &bin)]);
        let found = discover(Some(Path::new("python3.99")), &e).expect("found");
        assert_eq!(found, (bin.join("python3.99"), PythonSource::Explicit));
        let m = message(discover(Some(Path::new("python2.99")), &e));
        assert!(m.contains("python2.99") && m.contains("PATH"), "{m}");
    }

    #[test]
    fn discover_virtual_env_before_conda_and_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let venv = tmp.path().join("venv");
        let conda = tmp.path().join("conda");
        let bin = tmp.path().join("bin");
        fake_python(&venv.join("bin/python"), "exit 0");
        fake_python(&conda.join("bin/python3"), "exit 0");
        fake_python(&bin.join("python3"), "exit 0");
        let e = env(&[(VIRTUAL_ENV, &venv), (CONDA_PREFIX, &conda), (PATH, &bin)]);
        let found = discover(None, &e).expect("found");
        assert_eq!(found, (venv.join("bin/python"), PythonSource::VirtualEnv));
    }

    #[test]
    fn discover_broken_virtual_env_is_an_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let venv = tmp.path().join("gone");
        let bin = tmp.path().join("bin");
        fake_python(&bin.join("python3"), "exit 0");
        let m = message(discover(None, &env(&[(VIRTUAL_ENV, &venv), (PATH, &bin)])));
        let want = format!(
            "VIRTUAL_ENV={} has no bin/python3 or bin/python",
            venv.display()
        );
        assert_eq!(m, want);
    }

    #[test]
    fn discover_conda_prefix_before_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let conda = tmp.path().join("conda");
        let bin = tmp.path().join("bin");
        fake_python(&conda.join("bin/python3"), "exit 0");
        fake_python(&bin.join("python3"), "exit 0");
        let mut e = env(&[(CONDA_PREFIX, &conda), (PATH, &bin)]);
        e.insert(VIRTUAL_ENV.into(), String::new()); // empty means unset
        let found = discover(None, &e).expect("found");
        assert_eq!(
            found,
            (conda.join("bin/python3"), PythonSource::CondaPrefix)
        );
        let m = message(discover(None, &env(&[(CONDA_PREFIX, &bin.join("x"))])));
        assert!(m.starts_with("CONDA_PREFIX="), "{m}");
    }

    #[test]
    fn discover_path_order() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        let c = tmp.path().join("c");
        // a: only `python`, and a python3 that is not executable;
        // b: python3; c: python3 too (later on PATH).
        fake_python(&a.join("python"), "exit 0");
        fs::write(a.join("python3"), "").expect("write");
        fake_python(&b.join("python3"), "exit 0");
        fake_python(&c.join("python3"), "exit 0");
        let path = std::env::join_paths([a.as_path(), Path::new(""), b.as_path(), c.as_path()])
            .expect("join");
        let mut e = BTreeMap::new();
        e.insert(PATH.to_string(), path.to_string_lossy().into_owned());
        let found = discover(None, &e).expect("found");
        assert_eq!(found, (b.join("python3"), PythonSource::SearchPath));
        // Without any python3, `python` is taken.
        fs::remove_file(b.join("python3")).expect("rm");
        fs::remove_file(c.join("python3")).expect("rm");
        let found = discover(None, &e).expect("found");
        assert_eq!(found, (a.join("python"), PythonSource::SearchPath));
    }

    #[test]
    fn discover_nothing_found() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let m = message(discover(None, &env(&[(PATH, tmp.path())])));
        assert!(
            m.contains("no python3 or python is on PATH (entries searched: 1)"),
            "{m}"
        );
        assert!(
            m.contains("VIRTUAL_ENV and CONDA_PREFIX are not set"),
            "{m}"
        );
        let m = message(discover(None, &BTreeMap::new()));
        assert!(m.contains("PATH is not set"), "{m}");
    }

    #[test]
    fn discover_results_are_absolute() {
        let p = absolute(PathBuf::from("some/python3"));
        assert!(
            p.is_absolute() && p.ends_with("some/python3"),
            "{}",
            p.display()
        );
    }
}
