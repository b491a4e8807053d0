//! A small on-disk cache of interpreter answers, like uv's.
//!
//! One JSON file per interpreter path, `python-<hash of the path>.json`,
//! holding the key the answer is valid for and the raw answer. The key is
//! everything the answer depends on that can change without the path
//! changing: the interpreter file's size and modification time (through
//! symlinks, and of the symlink itself), the `pyvenv.cfg` beside it, the
//! query script's hash, the host name, the CPU affinity, and the variables
//! the script reads. A different key is a miss, and the fresh answer
//! replaces the file.
//!
//! Wrapper scripts (pyenv shims, module-system wrappers) are never cached:
//! which interpreter they start depends on the working folder and the
//! environment, not on the wrapper file.
//!
//! Cache failures never fail a query: an unreadable, corrupt or unwritable
//! cache is a miss.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

/// Disables the cache when set to a non-empty value.
pub(crate) const NO_CACHE_VAR: &str = "CAICLUST_NO_CACHE";
/// The cache folder itself, when set (an absolute path): over the
/// platform's default (a test suite keeps its own).
const CACHE_DIR_VAR: &str = "CAICLUST_CACHE_DIR";
/// Base of the cache folder on Unix (`$XDG_CACHE_HOME/caiclust`).
const XDG_CACHE_HOME: &str = "XDG_CACHE_HOME";
/// Fallback base on Unix (`$HOME/.cache/caiclust`).
const HOME: &str = "HOME";
/// Base on Windows (`%LOCALAPPDATA%\caiclust\cache`).
const LOCALAPPDATA: &str = "LOCALAPPDATA";

/// Variables the query script's answer depends on (user site location and
/// whether it is enabled, macOS venv launcher).
const ANSWER_VARS: &[&str] = &[
    "PYTHONUSERBASE",
    "PYTHONNOUSERSITE",
    "HOME",
    "APPDATA",
    "__PYVENV_LAUNCHER__",
];

/// Largest cache file read; anything larger is not ours.
const MAX_CACHE_FILE: u64 = 1 << 20;

/// Size and modification time of one file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_s: u64,
    mtime_ns: u32,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Self {
        let since = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        Self {
            size: meta.len(),
            mtime_s: since.as_secs(),
            mtime_ns: since.subsec_nanos(),
        }
    }
}

/// What a cached answer is valid for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct CacheKey {
    executable: PathBuf,
    /// The file run, after symlinks.
    file: Stamp,
    /// The path itself when it is a symlink (a venv's `python`).
    link: Option<Stamp>,
    /// `pyvenv.cfg` in the interpreter's folder and in its parent.
    pyvenv_cfg: Vec<Option<Stamp>>,
    /// FNV-1a of the query script.
    script: String,
    host: Option<String>,
    /// `Cpus_allowed_list` of this process (Linux); the child inherits it.
    affinity: Option<String>,
    vars: Vec<(String, Option<String>)>,
}

/// The file on disk.
#[derive(Serialize, Deserialize)]
struct Entry {
    key: CacheKey,
    answer: String,
}

/// The cache key for `executable`, or `None` when it must not be cached
/// (a wrapper script, a file that cannot be read).
pub(crate) fn key_for(executable: &Path, script: &str) -> Option<CacheKey> {
    let executable = &std::path::absolute(executable).ok()?;
    let file = fs::metadata(executable).ok()?;
    if !is_native_program(executable) {
        return None;
    }
    let link = fs::symlink_metadata(executable)
        .ok()
        .filter(|m| m.file_type().is_symlink())
        .map(|m| Stamp::of(&m));
    let exe_dir = executable.parent()?;
    let cfg_dirs = [Some(exe_dir), exe_dir.parent()];
    let pyvenv_cfg = cfg_dirs
        .iter()
        .map(|d| {
            d.and_then(|d| fs::metadata(d.join("pyvenv.cfg")).ok())
                .map(|m| Stamp::of(&m))
        })
        .collect();
    let vars = ANSWER_VARS
        .iter()
        .map(|v| {
            let value = std::env::var_os(v).map(|s| s.to_string_lossy().into_owned());
            ((*v).to_owned(), value)
        })
        .collect();
    Some(CacheKey {
        executable: executable.to_path_buf(),
        file: Stamp::of(&file),
        link,
        pyvenv_cfg,
        script: format!("{:016x}", fnv1a64(script.as_bytes())),
        host: sysinfo::System::host_name().ok(),
        affinity: affinity(),
        vars,
    })
}

/// The cached raw answer for `key`, if there is a valid one.
pub(crate) fn load(dir: &Path, key: &CacheKey) -> Option<String> {
    let file = fs::File::open(file_for(dir, &key.executable)).ok()?;
    let mut text = String::new();
    file.take(MAX_CACHE_FILE).read_to_string(&mut text).ok()?;
    let entry: Entry = serde_json::from_str(&text).ok()?;
    (entry.key == *key).then_some(entry.answer)
}

/// Store `answer` for `key`, replacing any older entry for the same path.
/// Errors are ignored: the cache is an optimisation.
pub(crate) fn store(dir: &Path, key: &CacheKey, answer: &str) {
    let entry = Entry {
        key: key.clone(),
        answer: answer.to_owned(),
    };
    let Ok(text) = serde_json::to_string(&entry) else {
        return;
    };
    if fs::create_dir_all(dir).is_err() {
        return;
    }
    let target = file_for(dir, &key.executable);
    let nanos = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    // Write beside, then rename: readers never see a half-written file.
    let tmp = target.with_extension(format!("tmp{}-{nanos}", std::process::id()));
    if fs::write(&tmp, text).is_ok() && fs::rename(&tmp, &target).is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

/// The default cache folder: `$CAICLUST_CACHE_DIR` when set, else
/// `$XDG_CACHE_HOME/caiclust`, else `~/.cache/caiclust` (Unix, macOS
/// included); `%LOCALAPPDATA%\caiclust\cache` on Windows. `None` when
/// `CAICLUST_NO_CACHE` is set or no base is known.
pub(crate) fn default_dir() -> Option<PathBuf> {
    dir_from_env(|name| std::env::var_os(name))
}

/// [`default_dir`] with the variables read through `var`.
fn dir_from_env(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty());
    if set(NO_CACHE_VAR).is_some() {
        return None;
    }
    if let Some(dir) = set(CACHE_DIR_VAR).map(PathBuf::from) {
        if dir.is_absolute() {
            return Some(dir);
        }
    }
    if cfg!(windows) {
        return set(LOCALAPPDATA).map(|base| PathBuf::from(base).join("caiclust").join("cache"));
    }
    if let Some(base) = set(XDG_CACHE_HOME).map(PathBuf::from) {
        if base.is_absolute() {
            return Some(base.join("caiclust"));
        }
    }
    set(HOME).map(|home| PathBuf::from(home).join(".cache").join("caiclust"))
}

fn file_for(dir: &Path, executable: &Path) -> PathBuf {
    let hash = fnv1a64(executable.as_os_str().to_string_lossy().as_bytes());
    dir.join(format!("python-{hash:016x}.json"))
}

/// A compiled program rather than a script: on Windows an `.exe`, elsewhere
/// a file that does not start with `#!`.
fn is_native_program(path: &Path) -> bool {
    if cfg!(windows) {
        return path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("exe"));
    }
    let mut head = [0u8; 2];
    match fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)) {
        Ok(()) => &head != b"#!",
        Err(_) => false,
    }
}

/// The CPUs this process may run on, as Linux lists them.
fn affinity() -> Option<String> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
}

/// 64-bit FNV-1a: stable across Rust releases, unlike `DefaultHasher`.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    /// A variable lookup over `pairs`, as [`dir_from_env`] takes it.
    fn lookup<'a>(pairs: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<std::ffi::OsString> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.into())
        }
    }

    #[test]
    fn no_cache_variable_disables_the_cache() {
        let base = [
            ("HOME", "/home/u"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("LOCALAPPDATA", "C:\\local"),
        ];
        assert!(dir_from_env(lookup(&base)).is_some());
        for value in ["1", "0", "yes"] {
            let pairs = [base[0], base[1], base[2], (NO_CACHE_VAR, value)];
            assert_eq!(dir_from_env(lookup(&pairs)), None, "{NO_CACHE_VAR}={value}");
        }
        let pairs = [base[0], base[1], base[2], (NO_CACHE_VAR, "")];
        assert!(dir_from_env(lookup(&pairs)).is_some(), "empty is unset");
    }

    #[test]
    fn an_absolute_cache_dir_variable_is_the_folder() {
        let dir = if cfg!(windows) { "C:\\t\\c" } else { "/t/c" };
        let pairs = [
            ("HOME", "/home/u"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("LOCALAPPDATA", "C:\\local"),
            (CACHE_DIR_VAR, dir),
        ];
        assert_eq!(dir_from_env(lookup(&pairs)), Some(PathBuf::from(dir)));
        let relative = [pairs[0], pairs[1], pairs[2], (CACHE_DIR_VAR, "rel")];
        assert_ne!(dir_from_env(lookup(&relative)), Some(PathBuf::from("rel")));
        let off = [pairs[3], (NO_CACHE_VAR, "1")];
        assert_eq!(dir_from_env(lookup(&off)), None);
    }

    #[cfg(unix)]
    #[test]
    fn cache_skips_scripts_and_round_trips_programs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let script = tmp.path().join("python3");
        crate::python::testing::fake_python(&script, "exit 0");
        assert!(key_for(&script, "x").is_none(), "a #! script is not cached");

        let program = tmp.path().join("bin/python3");
        fs::create_dir_all(program.parent().expect("parent")).expect("mkdir");
        fs::write(&program, b"\x7fELF not really").expect("write");
        let key = key_for(&program, "script one").expect("cacheable");
        let dir = tmp.path().join("cache");
        assert_eq!(load(&dir, &key), None);
        store(&dir, &key, "{\"answer\": 1}");
        assert_eq!(load(&dir, &key).as_deref(), Some("{\"answer\": 1}"));

        // Another script, another key: a miss, and the store replaces.
        let other = key_for(&program, "script two").expect("cacheable");
        assert_eq!(load(&dir, &other), None);
        store(&dir, &other, "2");
        assert_eq!(load(&dir, &key), None);
        assert_eq!(load(&dir, &other).as_deref(), Some("2"));
        assert_eq!(
            fs::read_dir(&dir).expect("ls").count(),
            1,
            "no temp files left"
        );

        // A pyvenv.cfg appearing changes the key.
        fs::write(tmp.path().join("pyvenv.cfg"), "home = /x\n").expect("write");
        let with_cfg = key_for(&program, "script two").expect("cacheable");
        assert_ne!(with_cfg, other);

        // A rewritten interpreter changes the key.
        fs::write(&program, b"\x7fELF longer than before").expect("write");
        assert_ne!(
            key_for(&program, "script two").expect("cacheable"),
            with_cfg
        );

        // Corrupt and unwritable caches are misses, never errors.
        let file = file_for(&dir, &program);
        fs::write(&file, "{not json").expect("write");
        assert_eq!(load(&dir, &other), None);
        let not_a_dir = tmp.path().join("file");
        fs::write(&not_a_dir, "").expect("write");
        store(&not_a_dir, &other, "3");
        assert_eq!(load(&not_a_dir, &other), None);
    }
}
