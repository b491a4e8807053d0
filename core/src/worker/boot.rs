//! How a Python worker or fork server gets its code. Compiling the
//! worker's source costs milliseconds at every interpreter start (about
//! 3 ms here: most of a worker's start after the interpreter's own), so
//! the source is kept in caiclust's cache folder as a module named after
//! a hash of its text, and the interpreter is started with a one-line
//! `-c` program that imports it: Python compiles it once, into the
//! folder's `__pycache__` (even under `PYTHONDONTWRITEBYTECODE`: the
//! folder is caiclust's own; the worker's main turns it on again before
//! any task module is imported), and loads the bytecode from then on.
//! Where no
//! cache folder can be written (or `CAICLUST_NO_CACHE` is set), the whole
//! source goes on the command line, as `python -c SOURCE`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::PYTHON_WORKER;

/// The module's name: `caiclust_worker_<hash of the source>`, so a
/// folder shared by several caiclust versions holds one file per version
/// and a file never changes once written.
fn module_name() -> String {
    format!("caiclust_worker_{:016x}", fnv1a64(PYTHON_WORKER.as_bytes()))
}

/// FNV-1a, 64 bits: a content name, not a security measure (the folder is
/// the user's own, as the interpreter is).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The `-c` program that starts a Python worker or fork server (the mode
/// and its arguments follow it on the command line, as `sys.argv[1:]`).
pub(crate) fn python_program() -> &'static str {
    static PROGRAM: OnceLock<String> = OnceLock::new();
    let boot = PROGRAM.get_or_init(|| {
        caiclust_probe::cache_dir()
            .and_then(|dir| boot_line(&dir.join("python-worker")))
            .unwrap_or_default()
    });
    if boot.is_empty() || !module_file_present() {
        return PYTHON_WORKER;
    }
    boot
}

/// Still there (a cache cleaned meanwhile falls back to the source).
fn module_file_present() -> bool {
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    FILE.get_or_init(|| {
        caiclust_probe::cache_dir().map(|d| {
            d.join("python-worker")
                .join(format!("{}.py", module_name()))
        })
    })
    .as_deref()
    .is_some_and(Path::is_file)
}

/// Write the module into `dir` (unless it is there with the same text)
/// and return the line that imports and runs it; `None` when the folder
/// cannot be written or named in a Python literal.
fn boot_line(dir: &Path) -> Option<String> {
    let name = module_name();
    let file = dir.join(format!("{name}.py"));
    let current = std::fs::read(&file).is_ok_and(|t| t == PYTHON_WORKER.as_bytes());
    if !current {
        std::fs::create_dir_all(dir).ok()?;
        // Beside, then renamed: a worker never imports half a file.
        let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, PYTHON_WORKER).ok()?;
        if std::fs::rename(&tmp, &file).is_err() {
            let _ = std::fs::remove_file(&tmp);
            return None;
        }
    }
    // A JSON string is a Python string literal too.
    let dir_literal = serde_json::to_string(dir.to_str()?).ok()?;
    Some(format!(
        "import sys\nsys.dont_write_bytecode = False\nsys.path.insert(0, {dir_literal})\n\
         import {name} as w\ndel sys.path[0]\nw.main()\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_is_named_after_its_text() {
        let name = module_name();
        assert!(name.starts_with("caiclust_worker_"), "{name}");
        assert_eq!(name.len(), "caiclust_worker_".len() + 16);
        assert_ne!(fnv1a64(b"a"), fnv1a64(b"b"));
    }

    #[test]
    fn the_boot_line_imports_the_module_it_wrote() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        // A name that needs escaping in a Python literal. Windows forbids
        // `"` in file names; its paths have backslashes anyway.
        #[cfg(unix)]
        let name = "with \"quotes\" and \\ slashes";
        #[cfg(not(unix))]
        let name = "with 'quotes' and spaces";
        let folder = dir.path().join(name);
        let line = boot_line(&folder).expect("a boot line");
        let file = folder.join(format!("{}.py", module_name()));
        assert_eq!(
            std::fs::read_to_string(&file).expect("the module"),
            PYTHON_WORKER
        );
        assert!(
            line.contains(&format!("import {} as w", module_name())),
            "{line}"
        );
        // The folder's name survives the quoting.
        let literal = serde_json::to_string(folder.to_str().expect("utf-8")).expect("json");
        assert!(line.contains(&literal), "{line}");
        // Written once: a second call leaves the file as it is.
        let before = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
        boot_line(&folder).expect("a boot line again");
        assert_eq!(
            std::fs::metadata(&file).and_then(|m| m.modified()).ok(),
            before
        );
    }

    #[test]
    fn an_unwritable_folder_gives_no_boot_line() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let not_a_folder = dir.path().join("file");
        std::fs::write(&not_a_folder, b"x").expect("a file");
        assert_eq!(boot_line(&not_a_folder.join("sub")), None);
    }
}
