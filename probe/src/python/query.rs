//! Asking the interpreter about itself: one isolated run of the embedded
//! `query.py`, its JSON answer turned into a [`PythonEnv`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use super::cache;
use super::run::{run_bounded, Finished, Limits, RunError};
use crate::error::ProbeError;
use crate::facts::{PythonEnv, PythonSource};

/// The query script, run as `python -I -S -B -c SCRIPT`.
pub(crate) const SCRIPT: &str = include_str!("query.py");

/// How long the interpreter may take to answer. A cold start of a conda
/// Python on a network file system takes seconds; a hung one never ends.
pub(crate) const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// The answer is about 1 KiB; anything past this is not our script talking.
const STDOUT_CAP: usize = 1 << 20;
/// Enough for a traceback.
const STDERR_CAP: usize = 16 << 10;

/// The marker key every answer of the script carries.
const MARKER: &str = "caiclust_python_query";
/// The answer format this code reads.
const ANSWER_FORMAT: u32 = 1;

/// How one query runs.
#[derive(Debug, Clone)]
pub(crate) struct QueryOptions<'a> {
    pub deadline: Duration,
    /// Where answers are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    pub script: &'a str,
}

impl QueryOptions<'static> {
    /// The defaults of [`crate::query_python`].
    pub(crate) fn standard() -> Self {
        Self {
            deadline: DEFAULT_DEADLINE,
            cache_dir: cache::default_dir(),
            script: SCRIPT,
        }
    }
}

/// The script's JSON answer. Every field is optional here so that a missing
/// one is reported by name rather than as a serde error; unknown fields are
/// accepted (a newer script may add some).
#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(rename = "caiclust_python_query")]
    marker: Option<u32>,
    error: Option<String>,
    sys_executable: Option<PathBuf>,
    version: Option<String>,
    version_info: Option<[u32; 3]>,
    implementation: Option<String>,
    prefix: Option<PathBuf>,
    base_prefix: Option<PathBuf>,
    exec_prefix: Option<PathBuf>,
    is_virtualenv: Option<bool>,
    site_packages: Option<Vec<PathBuf>>,
    platform: Option<String>,
    machine: Option<String>,
    sysconfig_platform: Option<String>,
    ext_suffix: Option<String>,
    gil_disabled: Option<bool>,
    default_start_method: Option<String>,
    start_methods: Option<Vec<String>>,
    os_cpu_count: Option<usize>,
    process_cpu_count: Option<usize>,
}

pub(crate) fn query(
    executable: &Path,
    source: PythonSource,
    options: &QueryOptions<'_>,
) -> Result<PythonEnv, ProbeError> {
    let cached = options
        .cache_dir
        .as_deref()
        .and_then(|dir| Some((dir, cache::key_for(executable, options.script)?)));
    if let Some((dir, key)) = &cached {
        if let Some(raw) = cache::load(dir, key) {
            if let Ok(env) = interpret(executable, source, &raw) {
                return Ok(env);
            }
        }
    }
    let raw = ask(executable, options)?;
    let env = interpret(executable, source, &raw)?;
    if let Some((dir, key)) = &cached {
        cache::store(dir, key, &raw);
    }
    Ok(env)
}

/// Run the script and return what it printed, or why that failed.
fn ask(executable: &Path, options: &QueryOptions<'_>) -> Result<String, ProbeError> {
    let fail = |reason: String| ProbeError::PythonQuery {
        path: executable.to_path_buf(),
        reason,
    };
    let mut cmd = Command::new(executable);
    cmd.args(["-I", "-S", "-B", "-c", options.script]);
    let limits = Limits {
        deadline: options.deadline,
        stdout_cap: STDOUT_CAP,
        stderr_cap: STDERR_CAP,
    };
    let Finished {
        status,
        stdout,
        stderr,
    } = run_bounded(&mut cmd, limits).map_err(|e| fail(run_failure(e)))?;
    let stderr = String::from_utf8_lossy(&stderr);
    if !status.success() {
        if stderr.contains("Unknown option: -I") || stderr.contains("Unknown option -I") {
            return Err(fail(format!(
                "it does not know the -I option: Python 2 and Python 3 before 3.4 are \
                 not supported ({status}; stderr: {})",
                tail(&stderr)
            )));
        }
        let stderr = tail(&stderr);
        let stderr = if stderr.is_empty() {
            "no message".to_owned()
        } else {
            format!("stderr: {stderr}")
        };
        let ended = match status.code() {
            Some(code) => format!("it exited with status {code}"),
            None => format!("it was ended by {status}"),
        };
        return Err(fail(format!(
            "{ended} (is it a Python 3 interpreter?); {stderr}"
        )));
    }
    String::from_utf8(stdout).map_err(|_| {
        fail("it printed bytes that are not UTF-8 instead of the query's answer".into())
    })
}

/// The [`PythonEnv`] an answer describes.
fn interpret(executable: &Path, source: PythonSource, raw: &str) -> Result<PythonEnv, ProbeError> {
    let fail = |reason: String| ProbeError::PythonQuery {
        path: executable.to_path_buf(),
        reason,
    };
    let answer: Answer = serde_json::from_str(raw.trim()).map_err(|e| {
        fail(format!(
            "it printed something that is not the query's JSON answer ({e}); output begins {:?}",
            head(raw)
        ))
    })?;
    match answer.marker {
        Some(ANSWER_FORMAT) => {}
        Some(other) => {
            return Err(fail(format!(
                "the answer has format {other}, this caiclust reads format {ANSWER_FORMAT}"
            )))
        }
        None => {
            return Err(fail(format!(
                "it printed JSON without the \"{MARKER}\" marker; output begins {:?}",
                head(raw)
            )))
        }
    }
    if let Some(error) = answer.error {
        return Err(fail(format!("the query script failed inside it: {error}")));
    }
    let missing = |field: &str| fail(format!("the answer lacks \"{field}\""));
    let version_info = answer.version_info.ok_or_else(|| missing("version_info"))?;
    let prefix = answer.prefix.ok_or_else(|| missing("prefix"))?;
    let base_prefix = answer.base_prefix.unwrap_or_else(|| prefix.clone());
    let exec_prefix = answer.exec_prefix.unwrap_or_else(|| prefix.clone());
    let [major, minor, micro] = version_info;
    // Folders are checked here, not in the script, so a cached answer
    // follows folders created or removed since (`pip install --user`).
    let mut site_packages: Vec<PathBuf> = Vec::new();
    for dir in answer.site_packages.unwrap_or_default() {
        if dir.is_dir() && !site_packages.contains(&dir) {
            site_packages.push(dir);
        }
    }
    Ok(PythonEnv {
        executable: executable.to_path_buf(),
        sys_executable: answer
            .sys_executable
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| executable.to_path_buf()),
        found_via: source,
        version: answer
            .version
            .unwrap_or_else(|| format!("{major}.{minor}.{micro}")),
        version_info,
        implementation: answer.implementation.unwrap_or_else(|| "unknown".into()),
        is_virtualenv: answer.is_virtualenv.unwrap_or(prefix != base_prefix),
        // Same test as the script's; redone so a cached answer stays current.
        is_conda: prefix.join("conda-meta").is_dir(),
        prefix,
        base_prefix,
        exec_prefix,
        site_packages,
        platform: answer.platform.unwrap_or_else(|| "unknown".into()),
        machine: answer.machine.unwrap_or_else(|| "unknown".into()),
        sysconfig_platform: answer
            .sysconfig_platform
            .unwrap_or_else(|| "unknown".into()),
        ext_suffix: answer.ext_suffix,
        gil_disabled: answer.gil_disabled.unwrap_or(false),
        default_start_method: answer.default_start_method,
        start_methods: answer.start_methods.unwrap_or_default(),
        os_cpu_count: answer.os_cpu_count,
        process_cpu_count: answer.process_cpu_count,
        requires: std::collections::BTreeMap::new(),
    })
}

fn run_failure(e: RunError) -> String {
    match e {
        RunError::Spawn(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "it cannot be started: it does not exist".into()
        }
        RunError::Spawn(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            format!("it cannot be started: it is not executable ({e})")
        }
        // ENOEXEC: neither a program for this system nor a #! script.
        RunError::Spawn(e) if cfg!(unix) && e.raw_os_error() == Some(8) => {
            format!("it is not a program this system can run ({e})")
        }
        RunError::Spawn(e) => format!("it cannot be started: {e}"),
        RunError::Io(e) => format!("reading its answer failed: {e}"),
        RunError::TimedOut(d) => format!(
            "no answer within {:.1} s; the process was killed",
            d.as_secs_f64()
        ),
        RunError::TooMuchOutput(cap) => format!(
            "it printed more than {cap} bytes, which is not the query's answer \
             (is it a Python interpreter?); the process was killed"
        ),
    }
}

/// The first characters of an output, for error messages.
fn head(text: &str) -> String {
    text.trim().chars().take(120).collect()
}

/// The last characters of stderr, where a traceback says what went wrong.
fn tail(text: &str) -> String {
    let text = text.trim();
    let n = text.chars().count();
    text.chars().skip(n.saturating_sub(600)).collect()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::python::discover::discover;
    use crate::python::testing::fake_python;
    use std::collections::BTreeMap;
    use std::time::Instant;

    fn options(deadline_ms: u64) -> QueryOptions<'static> {
        QueryOptions {
            deadline: Duration::from_millis(deadline_ms),
            cache_dir: None,
            script: SCRIPT,
        }
    }

    /// The error reason, checking that the error names `path`.
    fn reason(r: Result<PythonEnv, ProbeError>, path: &Path) -> String {
        match r {
            Err(ProbeError::PythonQuery { path: p, reason }) => {
                assert_eq!(p, path);
                let shown = ProbeError::PythonQuery {
                    path: p,
                    reason: reason.clone(),
                }
                .to_string();
                assert!(shown.contains(&path.display().to_string()), "{shown}");
                reason
            }
            other => panic!("expected PythonQuery, got {other:?}"),
        }
    }

    fn canned_answer(site: &[&Path]) -> String {
        let site: Vec<String> = site.iter().map(|p| p.display().to_string()).collect();
        serde_json::json!({
            "caiclust_python_query": 1,
            "sys_executable": "/opt/fake/bin/python3.12",
            "version": "3.12.4",
            "version_info": [3, 12, 4],
            "implementation": "cpython",
            "prefix": "/opt/fake/venv",
            "base_prefix": "/opt/fake",
            "exec_prefix": "/opt/fake/venv",
            "is_virtualenv": true,
            "is_conda": false,
            "site_packages": site,
            "platform": "linux",
            "machine": "x86_64",
            "sysconfig_platform": "linux-x86_64",
            "ext_suffix": ".cpython-312-x86_64-linux-gnu.so",
            "gil_disabled": false,
            "default_start_method": "fork",
            "start_methods": ["fork", "spawn", "forkserver"],
            "os_cpu_count": 8,
            "process_cpu_count": 4,
            "added_by_a_newer_script": true
        })
        .to_string()
    }

    #[test]
    fn query_fake_interpreter_end_to_end() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let venv = tmp.path().join("venv");
        let site = venv.join("lib/python3.12/site-packages");
        std::fs::create_dir_all(&site).expect("mkdir");
        let gone = tmp.path().join("no-such-folder");
        let answer = canned_answer(&[&site, &gone, &site]);
        fake_python(
            &venv.join("bin/python3"),
            &format!("cat <<'EOF'\n{answer}\nEOF"),
        );
        let mut env = BTreeMap::new();
        env.insert("VIRTUAL_ENV".to_string(), venv.display().to_string());
        let (exe, source) = discover(None, &env).expect("found");
        let got = query(&exe, source, &options(10_000)).expect("answer");
        assert_eq!(got.executable, venv.join("bin/python3"));
        assert_eq!(got.found_via, PythonSource::VirtualEnv);
        assert_eq!(got.sys_executable, Path::new("/opt/fake/bin/python3.12"));
        assert_eq!(got.version, "3.12.4");
        assert_eq!(got.version_info, [3, 12, 4]);
        assert!(got.is_virtualenv);
        assert_eq!(got.site_packages, vec![site], "deduped, missing left out");
        assert_eq!(got.start_methods, ["fork", "spawn", "forkserver"]);
        assert_eq!(got.default_start_method.as_deref(), Some("fork"));
        assert_eq!(
            (got.os_cpu_count, got.process_cpu_count),
            (Some(8), Some(4))
        );
    }

    #[test]
    fn query_fake_that_prints_garbage() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let py = tmp.path().join("python3");
        fake_python(&py, "echo 'Hello, I am not Python'");
        let r = reason(query(&py, PythonSource::Explicit, &options(10_000)), &py);
        assert!(r.contains("not the query's JSON answer"), "{r}");
        assert!(r.contains("Hello, I am not Python"), "{r}");
    }

    #[test]
    fn query_fake_that_prints_other_json() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let py = tmp.path().join("python3");
        fake_python(&py, r#"echo '{"version": "3.12.0"}'"#);
        let r = reason(query(&py, PythonSource::Explicit, &options(10_000)), &py);
        assert!(
            r.contains("without the \"caiclust_python_query\" marker"),
            "{r}"
        );
    }

    #[test]
    fn query_fake_whose_script_failed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let py = tmp.path().join("python3");
        fake_python(
            &py,
            r#"echo '{"caiclust_python_query": 1, "error": "OSError: boom"}'"#,
        );
        let r = reason(query(&py, PythonSource::Explicit, &options(10_000)), &py);
        assert!(r.contains("failed inside it: OSError: boom"), "{r}");
    }

    #[test]
    fn query_fake_that_exits_1() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let py = tmp.path().join("python3");
        fake_python(&py, "echo 'Traceback: it broke' >&2; exit 1");
        let r = reason(query(&py, PythonSource::Explicit, &options(10_000)), &py);
        assert!(r.contains("exited with status 1"), "{r}");
        assert!(r.contains("stderr: Traceback: it broke"), "{r}");
    }

    #[test]
    fn query_fake_python2_is_reported_as_too_old() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let py = tmp.path().join("python");
        // What Python 2.7 says to -I.
        fake_python(&py, "echo 'Unknown option: -I' >&2; exit 2");
        let r = reason(query(&py, PythonSource::Explicit, &options(10_000)), &py);
        assert!(r.contains("Python 2"), "{r}");
    }

    #[test]
    fn query_fake_that_sleeps_forever_times_out() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let py = tmp.path().join("python3");
        fake_python(&py, "exec sleep 1000");
        let start = Instant::now();
        let r = reason(query(&py, PythonSource::Explicit, &options(300)), &py);
        assert!(r.contains("no answer within 0.3 s"), "{r}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn query_fake_that_prints_huge_output() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let py = tmp.path().join("python3");
        fake_python(&py, "exec yes 'not json'");
        let start = Instant::now();
        let r = reason(query(&py, PythonSource::Explicit, &options(10_000)), &py);
        assert!(r.contains("printed more than 1048576 bytes"), "{r}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn query_missing_interpreter() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let py = tmp.path().join("python3");
        let r = reason(query(&py, PythonSource::Explicit, &options(10_000)), &py);
        assert!(r.contains("does not exist"), "{r}");
    }

    // ---- real interpreters -------------------------------------------

    /// Output of `python -c CODE` run normally (not isolated), as an oracle.
    fn oracle(python: &Path, code: &str) -> String {
        let out = Command::new(python)
            .args(["-c", code])
            .output()
            .expect("oracle python runs");
        assert!(out.status.success(), "oracle failed: {out:?}");
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    }

    /// The real `sys.path` of a normal run, as existing folders.
    fn real_sys_path(python: &Path) -> Vec<PathBuf> {
        let text = oracle(python, "import sys, json; print(json.dumps(sys.path))");
        let paths: Vec<PathBuf> = serde_json::from_str(&text).expect("json list");
        paths.into_iter().filter(|p| p.is_dir()).collect()
    }

    /// Our site folders are exactly the package folders of the real
    /// `sys.path`, in the same order.
    fn assert_site_packages_match_sys_path(env: &PythonEnv) {
        let real: Vec<PathBuf> = real_sys_path(&env.executable)
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n == "site-packages" || n == "dist-packages")
            })
            .collect();
        assert_eq!(env.site_packages, real, "for {}", env.executable.display());
    }

    fn path_only_env() -> BTreeMap<String, String> {
        std::env::var("PATH")
            .map(|p| BTreeMap::from([("PATH".to_string(), p)]))
            .unwrap_or_default()
    }

    #[test]
    fn query_real_python3_matches_oracle() {
        let (exe, source) = discover(None, &path_only_env()).expect("python3 on PATH");
        let start = Instant::now();
        let env = query(&exe, source, &options(30_000)).expect("real python answers");
        eprintln!("query of {} took {:?}", exe.display(), start.elapsed());
        let want = oracle(&exe, "import sys; print(sys.version_info[:3])");
        let got = format!(
            "({}, {}, {})",
            env.version_info[0], env.version_info[1], env.version_info[2]
        );
        assert_eq!(got, want);
        assert_eq!(env.executable, exe);
        assert_eq!(env.found_via, PythonSource::SearchPath);
        assert!(env
            .version
            .starts_with(&format!("{}.{}.", env.version_info[0], env.version_info[1])));
        assert_eq!(env.implementation, "cpython");
        assert_eq!(env.platform, "linux");
        assert_eq!(env.machine, std::env::consts::ARCH);
        assert!(
            env.sys_executable.is_file(),
            "{}",
            env.sys_executable.display()
        );
        let want_prefix = oracle(&exe, "import sys; print(sys.prefix)");
        assert_eq!(env.prefix, Path::new(&want_prefix));
        assert!(!env.is_virtualenv && !env.is_conda);
        assert!(
            env.start_methods.contains(&"fork".to_string()),
            "{:?}",
            env.start_methods
        );
        // HAZARDS.md: fork is the Linux default before 3.14, forkserver after.
        let default = if env.version_info[..2] >= [3, 14][..] {
            "forkserver"
        } else {
            "fork"
        };
        assert_eq!(env.default_start_method.as_deref(), Some(default));
        let suffix = env.ext_suffix.as_deref().unwrap_or_default();
        assert!(
            suffix.starts_with(".cpython-3") && suffix.ends_with(".so"),
            "{suffix}"
        );
        assert!(env.os_cpu_count.unwrap_or(0) >= 1);
        assert!(env.process_cpu_count.unwrap_or(0) >= 1);
        assert!(!env.gil_disabled);
        assert!(!env.site_packages.is_empty());
        assert_site_packages_match_sys_path(&env);
    }

    #[test]
    fn query_debian_python_includes_dist_packages() {
        let exe = Path::new("/usr/bin/python3");
        let env = query(exe, PythonSource::Explicit, &options(30_000)).expect("answers");
        assert!(
            env.site_packages
                .iter()
                .any(|p| p == Path::new("/usr/lib/python3/dist-packages")),
            "{:?}",
            env.site_packages
        );
        assert_eq!(env.prefix, Path::new("/usr"));
        assert_site_packages_match_sys_path(&env);
        // python3-numpy is installed from the deb.
        assert!(Path::new("/usr/lib/python3/dist-packages/numpy").is_dir());
    }

    #[test]
    fn query_real_venv_is_seen_as_a_normal_run_sees_it() {
        let (base, _) = discover(None, &path_only_env()).expect("python3 on PATH");
        let tmp = tempfile::tempdir().expect("tempdir");
        for (name, system_site) in [("plain", false), ("system", true)] {
            let venv = tmp.path().join(name);
            let mut make = Command::new(&base);
            make.args(["-m", "venv", "--without-pip"]);
            if system_site {
                make.arg("--system-site-packages");
            }
            let status = make.arg(&venv).status().expect("python -m venv runs");
            assert!(status.success());
            let mut e = BTreeMap::new();
            e.insert("VIRTUAL_ENV".to_string(), venv.display().to_string());
            let (exe, source) = discover(None, &e).expect("venv python");
            let env = query(&exe, source, &options(30_000)).expect("answers");
            assert_eq!(env.found_via, PythonSource::VirtualEnv);
            assert_eq!(env.prefix, venv, "-S must not hide the venv");
            assert!(env.is_virtualenv);
            assert_ne!(env.base_prefix, venv);
            let own = venv.join(format!(
                "lib/python{}.{}/site-packages",
                env.version_info[0], env.version_info[1]
            ));
            assert_eq!(env.site_packages.first(), Some(&own));
            assert_eq!(
                env.site_packages.len() > 1,
                system_site,
                "{:?}",
                env.site_packages
            );
            assert_site_packages_match_sys_path(&env);
        }
    }

    #[test]
    fn query_every_pyenv_python() {
        // Each installed pyenv version (3.6 to 3.13 here) against its own
        // sys.path; Python 2 must be a clear error.
        let root = std::env::var_os("PYENV_ROOT")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")));
        let mut interpreters: Vec<(String, PathBuf)> = root
            .and_then(|r| std::fs::read_dir(r.join("versions")).ok())
            .into_iter()
            .flat_map(|d| d.flatten())
            .map(|d| {
                (
                    d.file_name().to_string_lossy().into_owned(),
                    d.path().join("bin/python"),
                )
            })
            .filter(|(name, exe)| exe.is_file() && name.starts_with(|c: char| c.is_ascii_digit()))
            .collect();
        if interpreters.is_empty() {
            // No pyenv here: still check the interpreter on PATH, named by
            // its own version, so this test never passes without checking.
            let out = std::process::Command::new("python3")
                .args([
                    "-c",
                    "import sys; print(sys.executable); print('%d.%d.%d' % sys.version_info[:3])",
                ])
                .output()
                .expect("python3 on PATH");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut lines = text.lines();
            let exe = PathBuf::from(lines.next().expect("sys.executable"));
            let version = lines.next().expect("version").to_owned();
            interpreters.push((version, exe));
        }
        for (name, exe) in interpreters {
            let result = query(&exe, PythonSource::Explicit, &options(30_000));
            if name.starts_with("2.") {
                let r = reason(result, &exe);
                assert!(r.contains("Python 2"), "{r}");
                continue;
            }
            let env = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(env.version, name);
            assert_site_packages_match_sys_path(&env);
        }
    }

    #[test]
    fn query_cache_answers_again_without_running() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let opts = QueryOptions {
            cache_dir: Some(tmp.path().join("cache")),
            ..options(30_000)
        };
        let exe = Path::new("/usr/bin/python3");
        let start = Instant::now();
        let cold = query(exe, PythonSource::Explicit, &opts).expect("answers");
        let cold_time = start.elapsed();
        let files: Vec<_> = std::fs::read_dir(tmp.path().join("cache"))
            .expect("cache written")
            .flatten()
            .collect();
        assert_eq!(files.len(), 1);
        let start = Instant::now();
        let warm = query(exe, PythonSource::Explicit, &opts).expect("answers");
        let warm_time = start.elapsed();
        eprintln!(
            "query of {}: cold {cold_time:?}, cached {warm_time:?}",
            exe.display()
        );
        assert_eq!(cold, warm);
        assert!(
            warm_time * 5 < cold_time,
            "cold {cold_time:?} cached {warm_time:?}"
        );
        // found_via is not cached: it belongs to the call.
        let via = query(exe, PythonSource::SearchPath, &opts).expect("answers");
        assert_eq!(via.found_via, PythonSource::SearchPath);
        // A corrupt entry is a miss and is replaced.
        std::fs::write(files[0].path(), "garbage").expect("write");
        assert_eq!(
            query(exe, PythonSource::Explicit, &opts).expect("answers"),
            cold
        );
        assert!(std::fs::read_to_string(files[0].path())
            .expect("read")
            .contains("answer"));
        // An unusable cache folder changes nothing.
        let blocked = QueryOptions {
            cache_dir: Some(tmp.path().join("cache").join(files[0].file_name())),
            ..options(30_000)
        };
        assert_eq!(
            query(exe, PythonSource::Explicit, &blocked).expect("answers"),
            cold
        );
    }

    #[test]
    fn query_cache_is_invalidated_by_a_changed_script() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("cache");
        let exe = Path::new("/usr/bin/python3");
        let first = QueryOptions {
            cache_dir: Some(dir.clone()),
            ..options(30_000)
        };
        query(exe, PythonSource::Explicit, &first).expect("answers");
        let key = cache::key_for(exe, SCRIPT).expect("native program");
        assert!(cache::load(&dir, &key).is_some());
        let changed = format!("{SCRIPT}\n# changed\n");
        let second = QueryOptions {
            cache_dir: Some(dir.clone()),
            script: &changed,
            ..options(30_000)
        };
        query(exe, PythonSource::Explicit, &second).expect("answers");
        assert!(
            cache::load(&dir, &key).is_none(),
            "old script's entry replaced"
        );
        let new_key = cache::key_for(exe, &changed).expect("native program");
        assert!(cache::load(&dir, &new_key).is_some());
    }
}
