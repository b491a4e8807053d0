//! The query child's side: read the request, pin, load the dependencies to
//! load first, load, ask, answer, end.
//!
//! Everything here runs in a process that exists only for one query. It
//! ends with `_exit` (Unix) or `TerminateProcess` (Windows) so that the
//! library's destructors, which could crash or hang too, never run.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::calls;
use super::protocol::{Message, Request, PROTOCOL_VERSION};
use super::{LoadFirst, RUNTIME_QUERY_ENV};
use crate::facts::RuntimeAnswer;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix::already_loaded;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows::already_loaded;

/// Elsewhere nothing is known to be loaded: every dependency is loaded.
#[cfg(not(any(unix, windows)))]
fn already_loaded(_name: &str) -> bool {
    false
}

/// See [`super::serve_runtime_query_if_requested`].
pub(super) fn serve_if_requested() {
    let Some(raw) = std::env::var_os(RUNTIME_QUERY_ENV) else {
        return;
    };
    // Whatever the library starts must not take itself for a query child.
    std::env::remove_var(RUNTIME_QUERY_ENV);
    let mut channel = Channel::open();
    die_with_parent();
    let answer = answer(&raw, &mut channel);
    channel.send(&Message::Answer { answer });
    end_process(0);
}

/// Everything after reading the variable, up to the answer.
fn answer(raw: &OsString, channel: &mut Channel) -> RuntimeAnswer {
    let failed = |error: String| RuntimeAnswer {
        error: Some(error),
        ..RuntimeAnswer::default()
    };
    let request: Request = match raw
        .to_str()
        .ok_or_else(|| "it is not UTF-8".to_owned())
        .and_then(|text| serde_json::from_str(text).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => return failed(format!("cannot read the query in {RUNTIME_QUERY_ENV}: {e}")),
    };
    if request.protocol != PROTOCOL_VERSION {
        return failed(format!(
            "the helper speaks query protocol {PROTOCOL_VERSION}, the query is version {} \
             (a different caiclust version?)",
            request.protocol
        ));
    }
    if !calls::is_supported(request.query.vendor) {
        return failed(format!(
            "no runtime query is defined for {} libraries",
            request.query.vendor
        ));
    }
    if let Some(cpus) = &request.affinity {
        if let Err(e) = pin(cpus) {
            return failed(e);
        }
    }

    let library = &request.query.library;
    if let Err(e) = load_dependencies(&request.load_first, library, channel) {
        return failed(e);
    }
    channel.send(&Message::Loading);
    let lib = match load(library) {
        Ok(lib) => lib,
        Err(e) => return failed(format!("cannot load: {}", naming(e, library))),
    };
    let answer = calls::ask(&lib, &request.query, &mut |symbol| {
        channel.send(&Message::Calling {
            symbol: symbol.to_owned(),
        })
    });
    // Never unloaded: the process ends without running destructors.
    std::mem::forget(lib);
    answer
}

/// Load `path`, running its constructors: the point of doing it here, in
/// a process that exists only for this query and whose crash, hang or exit
/// the parent reports. The error is the loader's own message.
fn load(path: &Path) -> Result<libloading::Library, String> {
    // SAFETY: see above; the handle is never closed (the process ends
    // without running destructors).
    unsafe { libloading::Library::new(path) }.map_err(|e| load_error(&e))
}

/// Load, in order, the dependencies `library` needs loaded first, each
/// announced before its constructors run; those already loaded under their
/// name are reused, as the loader would. Handles are kept open for good:
/// an open handle is what lets the loader match the name later.
fn load_dependencies(
    load_first: &[LoadFirst],
    library: &Path,
    channel: &mut Channel,
) -> Result<(), String> {
    for dep in load_first {
        if already_loaded(&dep.name) {
            continue;
        }
        channel.send(&Message::LoadingDependency {
            name: dep.name.clone(),
        });
        match load(&dep.path) {
            Ok(handle) => std::mem::forget(handle),
            Err(e) => {
                return Err(format!(
                    "cannot load: {} ({}), which {} needs: {e}",
                    dep.name,
                    dep.path.display(),
                    library.display()
                ))
            }
        }
    }
    Ok(())
}

/// The loader's message, naming `library` when it does not already (a
/// missing dependency is named alone: `libx.so: cannot open shared object
/// file`).
fn naming(error: String, library: &Path) -> String {
    if error.contains(&*library.to_string_lossy()) {
        error
    } else {
        format!("{error} (loading {})", library.display())
    }
}

/// The loader's own message (`dlerror()` text, Windows error text).
fn load_error(e: &libloading::Error) -> String {
    match std::error::Error::source(e) {
        Some(source) => source.to_string(),
        None => e.to_string(),
    }
}

/// Where protocol lines go: unbuffered, one `write` per line.
struct Channel {
    out: Option<File>,
}

impl Channel {
    /// On Unix, keep a private duplicate of stdout for the protocol and
    /// point descriptor 1 at stderr, so that the library's own output
    /// cannot mix with the answer. Elsewhere, stdout itself.
    #[cfg(unix)]
    fn open() -> Self {
        use std::os::fd::FromRawFd;
        // SAFETY: plain descriptor calls on this process's own standard
        // descriptors; nothing has been written through std's `Stdout`
        // yet, and nothing Rust owns is closed.
        let fd = unsafe { libc::fcntl(libc::STDOUT_FILENO, libc::F_DUPFD_CLOEXEC, 3) };
        if fd < 0 {
            return Self { out: None };
        }
        // SAFETY: as above; if this fails, descriptor 1 just stays stdout.
        unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) };
        // SAFETY: `fd` is a fresh descriptor owned by nothing else.
        Self {
            out: Some(unsafe { File::from_raw_fd(fd) }),
        }
    }

    #[cfg(not(unix))]
    fn open() -> Self {
        Self { out: None }
    }

    fn send(&mut self, message: &Message) {
        let line = message.to_line();
        // Errors are ignored: a parent that stopped reading has given up.
        match &mut self.out {
            Some(file) => {
                let _ = file.write_all(line.as_bytes());
            }
            None => {
                // Shared with the library: start on a fresh line, in case it
                // left one unfinished.
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(format!("\n{line}").as_bytes());
                let _ = out.flush();
            }
        }
    }
}

/// Ask the kernel to kill this process when its parent dies, so that a
/// query never outlives the program that asked it.
fn die_with_parent() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_PDEATHSIG only sets a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    }
}

/// Pin this process to `cpus` before the library is loaded.
#[cfg(target_os = "linux")]
fn pin(cpus: &[usize]) -> Result<(), String> {
    let describe = || {
        cpus.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    if cpus.is_empty() {
        return Err("cannot pin to an empty CPU list".to_owned());
    }
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let capacity = 8 * std::mem::size_of::<libc::cpu_set_t>();
    for &cpu in cpus {
        if cpu >= capacity {
            return Err(format!(
                "cannot pin to CPUs {}: CPU {cpu} is beyond the {capacity} a cpu_set_t holds",
                describe()
            ));
        }
        // SAFETY: `cpu` is within the set, checked above.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: pid 0 is this thread (the only one so far), and `set` is a
    // valid cpu_set_t of the size given.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(format!(
            "cannot pin to CPUs {}: {}",
            describe(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn pin(_cpus: &[usize]) -> Result<(), String> {
    Err("CPU affinity can only be set on Linux".to_owned())
}

/// End the process now, without destructors or `atexit` handlers.
fn end_process(code: i32) -> ! {
    #[cfg(unix)]
    // SAFETY: `_exit` ends the process at once; the answer was written with
    // unbuffered writes, so nothing is lost.
    unsafe {
        libc::_exit(code)
    }
    #[cfg(windows)]
    {
        use windows_sys::Win32::System::Threading::{GetCurrentProcess, TerminateProcess};
        // SAFETY: terminates this process; the answer was already flushed.
        unsafe {
            TerminateProcess(GetCurrentProcess(), code as u32);
        }
        std::process::exit(code)
    }
    #[cfg(not(any(unix, windows)))]
    std::process::exit(code)
}
