//! Python interpreters started ahead of need (Unix): a pool's fork
//! template that is already running when the pool starts.
//!
//! Starting a template costs an interpreter start (about 10 ms here)
//! plus its imports, and a pool's first task waits for it. A program that
//! knows it will run a pool soon (the Python package does so when it is
//! imported) calls [`prestart_python`]: a *standby* interpreter starts in
//! the background with `-S`, imports the pure-Python modules it is given,
//! runs `site` (late instead when a `.pth` file loads native code), and
//! waits. When a cluster then needs a Python fork server for that
//! interpreter it takes the standby ([`take`]) and sends it one line that
//! says what to become: the pool's whole environment (the thread limits
//! among it) and working folder are applied, and only then does it import
//! the pool's preloads, exactly as a freshly started server would. (When a
//! variable that `site` may have read changed meanwhile, it starts afresh;
//! a module imported ahead that the pool's `sys.path` finds elsewhere is
//! imported again.)
//!
//! What cannot be applied late is checked instead: variables read when a
//! process starts, by the dynamic loader, the C library or the interpreter
//! ([`read_at_startup`]), and where the standard error goes. A standby
//! started under other values is stopped and the pool starts its own
//! server, as it would without one. A process forked from the one that
//! started it never uses it.
//!
//! The thread that starts standbys also plans a cluster for the
//! interpreter once, and drops the plan: the probe's caches are then
//! fresh and the planner's code warm when the pool plans for real.
//!
//! One standby per interpreter waits at a time, and only when asked for:
//! a cluster that used one does not start the next (a program that stops
//! its pool expects no process of it left), the caller does when it
//! expects another pool soon. A standby dies with this process (Linux: `PR_SET_PDEATHSIG` on the thread
//! that starts standbys, which lives as long as the process; elsewhere the
//! standby sees its input close, or its parent change).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};

use super::boot;

/// A standby interpreter, waiting for the line that says what to become.
pub(crate) struct Standby {
    pub child: Child,
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
    pub python: PathBuf,
    /// The variables read at startup, as this process had them then.
    startup_env: BTreeMap<OsString, OsString>,
    /// Where its standard error goes (device, inode).
    stderr: Option<(u64, u64)>,
}

/// Variables a process reads when it starts, before any code of its own
/// runs: the dynamic loader's (`LD_*`, `DYLD_*`), the C library's
/// (`MALLOC_*`, `GLIBC_TUNABLES`, the locale, `TZ`) and the interpreter's
/// (`PYTHON*`). Everything else (thread limits above all) is read by a
/// library when it loads, which for a standby is after it took on the
/// pool's environment.
pub(crate) fn read_at_startup(name: &str) -> bool {
    const PREFIXES: &[&str] = &["LD_", "DYLD_", "PYTHON", "MALLOC_", "GLIBC_", "LC_"];
    const NAMES: &[&str] = &["LANG", "LANGUAGE", "TZ", "__PYVENV_LAUNCHER__"];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

struct Request {
    python: PathBuf,
    imports: Vec<String>,
}

/// The standbys of this process and the thread that starts them.
struct Standbys {
    /// The process that started them: a forked child uses none.
    owner: u32,
    requests: Mutex<Sender<Request>>,
    waiting: Mutex<Vec<Standby>>,
}

static STANDBYS: OnceLock<Standbys> = OnceLock::new();

/// Start a standby interpreter for `python` in the background, unless one
/// is already waiting. `imports` are modules it imports while it waits:
/// pure Python (nothing that loads a threading runtime before the pool's
/// environment is known); those not found before `site` runs are tried
/// after it.
/// Returns at once; false when no standby can be started here (a process
/// forked from the one that started standbys, or no thread).
pub fn prestart_python(python: &Path, imports: &[String]) -> bool {
    let standbys = STANDBYS.get_or_init(|| {
        let (tx, rx) = channel::<Request>();
        let started = std::thread::Builder::new()
            .name("caiclust-standby".into())
            .spawn(move || {
                let mut planned = std::collections::HashSet::new();
                for request in rx {
                    let python = request.python.clone();
                    start_unless_waiting(request);
                    if planned.insert(python.clone()) {
                        warm_the_planner(&python);
                    }
                }
            });
        if let Err(e) = started {
            eprintln!("caiclust: cannot start the thread for standby interpreters: {e}");
        }
        Standbys {
            owner: std::process::id(),
            requests: Mutex::new(tx),
            waiting: Mutex::new(Vec::new()),
        }
    });
    if standbys.owner != std::process::id() {
        return false;
    }
    let already = standbys
        .waiting
        .lock()
        .is_ok_and(|w| w.iter().any(|s| s.python == python));
    if already {
        return true;
    }
    let request = Request {
        python: python.to_path_buf(),
        imports: imports.to_vec(),
    };
    standbys
        .requests
        .lock()
        .is_ok_and(|tx| tx.send(request).is_ok())
}

/// Plan a cluster for `python` once, and drop the plan: the probe's
/// caches (the interpreter's answers, the scan) are then fresh and this
/// process's code warm, so the pool that follows plans in about a
/// millisecond.
fn warm_the_planner(python: &Path) {
    let _ = crate::Cluster::builder().auto(true).python(python).plan();
}

fn start_unless_waiting(request: Request) {
    let Some(standbys) = STANDBYS.get() else {
        return;
    };
    {
        let Ok(mut waiting) = standbys.waiting.lock() else {
            return;
        };
        waiting.retain_mut(|s| matches!(s.child.try_wait(), Ok(None)));
        if waiting.iter().any(|s| s.python == request.python) {
            return;
        }
    }
    match start(request) {
        Ok(s) => {
            if let Ok(mut waiting) = standbys.waiting.lock() {
                waiting.push(s);
            }
        }
        // Not fatal: pools start their own server as before.
        Err(e) => eprintln!("caiclust: {e}"),
    }
}

fn start(request: Request) -> Result<Standby, String> {
    // Exactly the environment recorded: what it started under.
    let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let startup_env = startup_env(env.iter().cloned());
    let mut cmd = Command::new(&request.python);
    cmd.env_clear()
        .envs(env)
        .arg("-S")
        .arg("-c")
        .arg(boot::python_program())
        .arg("standby")
        .args(&request.imports)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    crate::pool::prepare_command(&mut cmd);
    let stderr = stderr_identity();
    let mut child = cmd.spawn().map_err(|e| {
        format!(
            "cannot start a standby interpreter {}: {e}",
            request.python.display()
        )
    })?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("a standby interpreter without pipes".into());
    };
    Ok(Standby {
        child,
        stdin,
        stdout,
        python: request.python,
        startup_env,
        stderr,
    })
}

fn startup_env(vars: impl Iterator<Item = (OsString, OsString)>) -> BTreeMap<OsString, OsString> {
    vars.filter(|(k, _)| k.to_str().is_some_and(read_at_startup))
        .collect()
}

/// The file this process's standard error is (device, inode).
fn stderr_identity() -> Option<(u64, u64)> {
    let stderr = std::io::stderr();
    let fd = stderr.as_raw_fd();
    // SAFETY: fstat fills the zeroed struct it is given; fd 2 is only
    // looked at, never closed.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::fstat(fd, &mut st) == 0).then_some((st.st_dev as u64, st.st_ino as u64))
    }
}

/// Take the standby for `python`, if one is waiting, alive, and was
/// started under what a server started now would get: `env` is the
/// server's whole environment. A standby that does not fit is stopped.
pub(crate) fn take(python: &Path, env: &BTreeMap<OsString, OsString>) -> Option<Standby> {
    let standbys = STANDBYS.get()?;
    if standbys.owner != std::process::id() {
        return None;
    }
    let mut standby = {
        let mut waiting = standbys.waiting.lock().ok()?;
        let at = waiting.iter().position(|s| s.python == python)?;
        waiting.swap_remove(at)
    };
    let alive = matches!(standby.child.try_wait(), Ok(None));
    let fits = standby.startup_env == startup_env(env.clone().into_iter())
        && standby.stderr == stderr_identity();
    if alive && fits {
        return Some(standby);
    }
    let _ = standby.child.kill();
    let _ = standby.child.wait();
    None
}

/// The process id of the standby waiting for `python`, if one is.
pub fn waiting_pid(python: &Path) -> Option<u32> {
    let standbys = STANDBYS.get()?;
    if standbys.owner != std::process::id() {
        return None;
    }
    let waiting = standbys.waiting.lock().ok()?;
    waiting
        .iter()
        .find(|s| s.python == python)
        .map(|s| s.child.id())
}

/// Stop every standby this process started that is still waiting; how
/// many there were.
pub fn stop_all() -> usize {
    let Some(standbys) = STANDBYS.get() else {
        return 0;
    };
    if standbys.owner != std::process::id() {
        return 0;
    }
    let stopped: Vec<Standby> = match standbys.waiting.lock() {
        Ok(mut waiting) => waiting.drain(..).collect(),
        Err(_) => return 0,
    };
    let n = stopped.len();
    for mut s in stopped {
        let _ = s.child.kill();
        let _ = s.child.wait();
    }
    n
}

/// What a standby becomes: the line that turns it into a fork server
/// (`mode` `server` or `forkserver`, as the server's command line says).
pub(crate) fn become_line(
    mode: &str,
    socket: &Path,
    preload: &[String],
    env: &BTreeMap<OsString, OsString>,
    cwd: &Path,
) -> Option<Vec<u8>> {
    // JSON carries text: anything that is not UTF-8 goes the usual way.
    let env: Option<BTreeMap<&str, &str>> = env
        .iter()
        .map(|(k, v)| Some((k.to_str()?, v.to_str()?)))
        .collect();
    let line = serde_json::json!({
        "become": mode,
        "socket": socket.to_str()?,
        "preload": preload,
        "env": env?,
        "cwd": cwd.to_str()?,
    });
    let mut bytes = serde_json::to_vec(&line).ok()?;
    bytes.push(b'\n');
    Some(bytes)
}

/// Send `line` to the standby; a standby that cannot be told is stopped.
pub(crate) fn tell(mut standby: Standby, line: &[u8]) -> Option<Standby> {
    if standby
        .stdin
        .write_all(line)
        .and_then(|_| standby.stdin.flush())
        .is_ok()
    {
        return Some(standby);
    }
    let _ = standby.child.kill();
    let _ = standby.child.wait();
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_variables_are_the_loaders_the_c_librarys_and_pythons() {
        for name in [
            "LD_LIBRARY_PATH",
            "LD_PRELOAD",
            "DYLD_LIBRARY_PATH",
            "PYTHONPATH",
            "PYTHONHASHSEED",
            "MALLOC_ARENA_MAX",
            "GLIBC_TUNABLES",
            "LC_ALL",
            "LANG",
            "TZ",
        ] {
            assert!(read_at_startup(name), "{name}");
        }
        for name in [
            "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "MKL_NUM_THREADS",
            "CAICLUST_SYS_PATH",
            "HOME",
            "PATH",
            "CUDA_VISIBLE_DEVICES",
        ] {
            assert!(!read_at_startup(name), "{name}");
        }
    }

    #[test]
    fn the_become_line_carries_the_whole_environment() {
        let env: BTreeMap<OsString, OsString> = [
            ("OMP_NUM_THREADS".into(), "1".into()),
            ("A \"quoted\" name".into(), "x\ny".into()),
        ]
        .into_iter()
        .collect();
        let line = become_line(
            "forkserver",
            Path::new("/tmp/s/w.sock"),
            &["numpy".to_string()],
            &env,
            Path::new("/data"),
        )
        .expect("a line");
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&line).expect("JSON");
        assert_eq!(v["become"], "forkserver");
        assert_eq!(v["env"]["A \"quoted\" name"], "x\ny");
        assert_eq!(v["preload"][0], "numpy");
        assert_eq!(v["cwd"], "/data");
    }

    #[test]
    fn an_environment_that_is_not_utf8_has_no_become_line() {
        use std::os::unix::ffi::OsStringExt;
        let env: BTreeMap<OsString, OsString> =
            [("X".into(), OsString::from_vec(vec![0xff, 0xfe]))]
                .into_iter()
                .collect();
        assert!(become_line("server", Path::new("/s"), &[], &env, Path::new("/")).is_none());
    }
}
