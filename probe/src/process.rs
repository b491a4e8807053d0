//! Reading a running process from outside: the shared objects it has
//! mapped, its threads and CPU affinity, the environment it started with,
//! its command line, and whether it is a Python interpreter.
//!
//! [`read_process`] fills a [`ProcessFacts`]; [`loaded_libraries_of_this_process`]
//! lists the libraries of the calling process, for library users who want
//! to know what they themselves have loaded.
//!
//! The user-facing documentation (what is read on each OS, what counts as
//! a mapped library, what each error means) is on [`read_process`], since
//! this module is private and re-exported from the crate root.

use std::path::PathBuf;

use crate::error::ProbeError;
use crate::facts::ProcessFacts;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "linux")]
mod maps;
#[cfg(target_os = "linux")]
mod procfs;
mod python;
#[cfg(target_os = "linux")]
mod waiting;
#[cfg(windows)]
mod windows;

/// Read what can be seen of process `pid` from outside: the shared objects
/// it has mapped, its threads and CPU affinity, the environment it started
/// with, its command line, and whether it is a Python interpreter.
///
/// ```no_run
/// let facts = caiclust_probe::read_process(4242).expect("readable process");
/// for lib in &facts.mapped_libraries {
///     println!("{}", lib.display());
/// }
/// if let Some(python) = &facts.python {
///     println!("{} ({} confidence)", python.value, python.confidence);
/// }
/// ```
///
/// # Platform-specific behaviour
///
/// * Linux: everything is read from `/proc/PID`: `stat`, `status`
///   (`Threads:`, `Cpus_allowed_list:`), `maps`, `environ`, `cmdline`, the
///   `exe` link, and the program itself through that link (statically,
///   with [`read_binary`](crate::read_binary), for its exports). `maps`,
///   `environ` and `exe` need the same rights as attaching a debugger: the
///   same user (and a dumpable process, within `kernel.yama.ptrace_scope`)
///   or root. `affinity` is `Cpus_allowed_list` as the kernel gives it.
/// * macOS and Windows: only the calling process can be read (`pid` equal
///   to [`std::process::id`]); any other pid is
///   [`ProbeError::ProcessUnsupported`]. For the calling process the
///   libraries come from dyld (`_dyld_image_count` / `_dyld_get_image_name`)
///   or from a ToolHelp module snapshot (falling back to PSAPI's
///   `EnumProcessModulesEx`); `threads`, `affinity` and `initial_env` are
///   left empty, since the environment the process started with is no
///   longer observable there.
///
/// # What counts as a mapped library (Linux)
///
/// `/proc/PID/maps` lists mappings in address order and does not record the
/// order of loading; [`ProcessFacts::mapped_libraries`] keeps each file once,
/// in the order of its first (lowest) mapping. A file counts when it is
/// mapped privately and is executable there or is named like a shared
/// object (`*.so`, `*.so.*`). Left out: the program itself, anonymous
/// memory, `[heap]`, `[stack]`, `[vdso]`, `[vvar]` and other pseudo
/// mappings, files mapped shared (`numpy.memmap` data, `/dev/shm`
/// segments), locale archives and `memfd:` regions.
///
/// A library that was deleted or replaced on disk after it was loaded (a
/// `pip install --upgrade` under a running process) is still in use, so it
/// is **kept**, with the kernel's ` (deleted)` suffix stripped: the path
/// names what was loaded, though the file there may now be missing or be a
/// newer version. The kernel writes a newline in a path as `\012`; it is
/// decoded back (a path that really contains the text `\012` is decoded
/// too, the kernel leaves no way to tell).
///
/// # Python detection
///
/// [`ProcessFacts::python`] is concluded from the program's name
/// (`python3.11`), a mapped `libpython3.X`, standard-library modules under
/// `python3.X/lib-dynload`, extension modules tagged `cpython-3XY`, and the
/// program exporting `Py_BytesMain` or `Py_Initialize`; each clue found is
/// one piece of evidence. The value is `CPython 3.11` when a version is
/// known, `Python` otherwise. [`ProcessFacts::python_runtime`] is left
/// `None` here.
///
/// # Errors
///
/// [`ProbeError::NoSuchProcess`] when `/proc/PID` does not exist;
/// [`ProbeError::ProcessExited`] when the process vanished, became a zombie,
/// began to exit or had its pid reused while being read (a process that has
/// begun to exit shows empty maps without any error, so the reader checks
/// `stat` again at the end); [`ProbeError::ProcessPermissionDenied`] naming
/// the file and whose process it is; [`ProbeError::ProcessRead`] for
/// anything else.
///
/// # Cost
///
/// A handful of small procfs reads plus one static reading of the program
/// (its dynamic symbol table): a few milliseconds for a Python process with
/// numpy, scipy and OpenCV loaded (about a thousand mappings). Nothing is
/// attached to, stopped or injected into the process.
pub fn read_process(pid: u32) -> Result<ProcessFacts, ProbeError> {
    #[cfg(target_os = "linux")]
    {
        linux::read_process(pid)
    }
    #[cfg(not(target_os = "linux"))]
    {
        read_own_process(pid)
    }
}

/// The shared libraries loaded in the calling process, without the program
/// itself, each once.
///
/// # Platform-specific behaviour
///
/// Linux: `/proc/self/maps`, filtered as [`read_process`] does (address
/// order). macOS: dyld's image list (load order). Windows: a ToolHelp module
/// snapshot (load order), or PSAPI's module list if the snapshot fails.
/// Other OSes: [`ProbeError::LoadedLibraries`].
pub fn loaded_libraries_of_this_process() -> Result<Vec<PathBuf>, ProbeError> {
    #[cfg(target_os = "linux")]
    {
        linux::loaded_libraries_of_this_process()
    }
    #[cfg(target_os = "macos")]
    {
        macos::loaded_libraries_of_this_process()
    }
    #[cfg(windows)]
    {
        windows::loaded_libraries_of_this_process()
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
    {
        Err(ProbeError::LoadedLibraries(format!(
            "not supported on {} yet",
            std::env::consts::OS
        )))
    }
}

/// Outside Linux only the calling process can be read, and only in part.
#[cfg(not(target_os = "linux"))]
fn read_own_process(pid: u32) -> Result<ProcessFacts, ProbeError> {
    if pid != std::process::id() {
        return Err(ProbeError::ProcessUnsupported {
            pid,
            os: std::env::consts::OS,
        });
    }
    let executable = std::env::current_exe().ok();
    let mapped_libraries = loaded_libraries_of_this_process()?;
    let executable_info = executable
        .as_deref()
        .and_then(|path| crate::read_binary(path).ok());
    let python = python::detect_python(
        executable.as_deref(),
        &mapped_libraries,
        executable_info.as_ref(),
    );
    Ok(ProcessFacts {
        pid,
        executable,
        command_line: std::env::args_os()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect(),
        mapped_libraries,
        python,
        ..ProcessFacts::default()
    })
}
