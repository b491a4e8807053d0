//! Reading a process through `/proc/PID` (Linux).
//!
//! Order of reading: `stat` (does it exist, is it a zombie or exiting),
//! `status`, `maps`, `environ`, `cmdline`, the `exe` link and a static
//! reading of the program through that link, then `stat` again. The second
//! `stat` catches a process that exited (or whose pid was taken by a new
//! process) while it was read: a process that has begun to exit shows empty
//! maps without any error, so without this check it would look like a
//! process with no libraries.

use std::io;
use std::path::{Path, PathBuf};

use super::maps::{parse_maps, shared_objects, strip_deleted};
use super::procfs::{parse_cmdline, parse_environ, parse_stat, parse_status, Stat};
use super::python::detect_python;
use crate::env::relevant_env;
use crate::error::ProbeError;
use crate::facts::ProcessFacts;

pub(super) fn read_process(pid: u32) -> Result<ProcessFacts, ProbeError> {
    let dir = proc_dir(pid);
    let mut ctx = ReadContext {
        pid,
        seen_alive: false,
        owner_uid: None,
        reader_uid: effective_uid(),
    };
    let stat_path = dir.join("stat");
    let first = read_stat(&ctx, &stat_path)?;
    ctx.seen_alive = true;
    if let Some(reason) = first.exit_reason() {
        return Err(exited(pid, &stat_path, reason));
    }

    let status = parse_status(&ctx.read(&dir.join("status"))?);
    ctx.owner_uid = status.effective_uid;
    let maps = parse_maps(&ctx.read(&dir.join("maps"))?);
    let environ = ctx.read(&dir.join("environ"))?;
    let cmdline = ctx.read(&dir.join("cmdline"))?;
    let exe_link = dir.join("exe");
    let executable = match std::fs::read_link(&exe_link) {
        Ok(target) => Some(strip_deleted(target)),
        // A kernel thread has no program; a process that is exiting has
        // lost it, which the second `stat` below reports.
        Err(e) if is_gone(&e) => None,
        Err(e) => return Err(ctx.error(&exe_link, &e)),
    };
    // Through the link, not the path: it opens the very file the process
    // runs, even when it was deleted or lives in another mount namespace.
    let executable_info = executable
        .as_ref()
        .and_then(|_| crate::read_binary(&exe_link).ok());

    let last = read_stat(&ctx, &stat_path)?;
    if let Some(reason) = last.exit_reason() {
        return Err(exited(pid, &stat_path, reason));
    }
    if last.start_time != first.start_time {
        return Err(exited(
            pid,
            &stat_path,
            "its pid now belongs to a newer process",
        ));
    }

    let mapped_libraries: Vec<PathBuf> = shared_objects(&maps, executable.as_deref())
        .into_iter()
        .map(|o| o.path)
        .collect();
    let python = detect_python(
        executable.as_deref(),
        &mapped_libraries,
        executable_info.as_ref(),
    );
    Ok(ProcessFacts {
        pid,
        executable,
        command_line: parse_cmdline(&cmdline),
        threads: status.threads,
        affinity: status.cpus_allowed,
        initial_env: relevant_env(parse_environ(&environ)),
        mapped_libraries,
        python,
        python_runtime: None,
        threads_waiting_in: super::waiting::threads_waiting_in(pid),
    })
}

pub(super) fn loaded_libraries_of_this_process() -> Result<Vec<PathBuf>, ProbeError> {
    let ctx = ReadContext {
        pid: std::process::id(),
        seen_alive: true,
        owner_uid: None,
        reader_uid: effective_uid(),
    };
    let maps = parse_maps(&ctx.read(Path::new("/proc/self/maps"))?);
    let executable = std::fs::read_link("/proc/self/exe").ok().map(strip_deleted);
    Ok(shared_objects(&maps, executable.as_deref())
        .into_iter()
        .map(|o| o.path)
        .collect())
}

fn proc_dir(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}"))
}

fn read_stat(ctx: &ReadContext, path: &Path) -> Result<Stat, ProbeError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if is_gone(&e) && !ctx.seen_alive && !Path::new("/proc/self/stat").exists() => {
            return Err(ProbeError::ProcessRead {
                pid: ctx.pid,
                path: path.to_path_buf(),
                reason: "procfs is not mounted at /proc".to_owned(),
            });
        }
        Err(e) => return Err(ctx.error(path, &e)),
    };
    parse_stat(&bytes).map_err(|reason| ProbeError::ProcessRead {
        pid: ctx.pid,
        path: path.to_path_buf(),
        reason: format!("unexpected contents: {reason}"),
    })
}

fn exited(pid: u32, path: &Path, reason: &str) -> ProbeError {
    ProbeError::ProcessExited {
        pid,
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    }
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory of ours and
    // cannot fail (POSIX).
    unsafe { libc::geteuid() }
}

/// Does this error mean the process (or the file) is not there? `ENOENT`
/// when opening a file of a process that is gone, `ESRCH` when reading a
/// file that was opened while it still existed.
pub(crate) fn is_gone(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ESRCH)
}

/// What is known while reading one process: enough to turn an I/O error
/// into a [`ProbeError`] that says what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadContext {
    pub pid: u32,
    /// A file of the process has been read already: from now on a missing
    /// file means it exited, not that it never existed.
    pub seen_alive: bool,
    /// The process's effective uid, from `status`.
    pub owner_uid: Option<u32>,
    /// This program's effective uid.
    pub reader_uid: u32,
}

impl ReadContext {
    fn read(&self, path: &Path) -> Result<Vec<u8>, ProbeError> {
        std::fs::read(path).map_err(|e| self.error(path, &e))
    }

    /// Classify a failure to read `path`. Pure: no system calls.
    pub(crate) fn error(&self, path: &Path, err: &io::Error) -> ProbeError {
        if is_gone(err) {
            if self.seen_alive {
                ProbeError::ProcessExited {
                    pid: self.pid,
                    path: path.to_path_buf(),
                    reason: err.to_string(),
                }
            } else {
                ProbeError::NoSuchProcess {
                    pid: self.pid,
                    path: proc_dir(self.pid),
                }
            }
        } else if err.kind() == io::ErrorKind::PermissionDenied {
            ProbeError::ProcessPermissionDenied {
                pid: self.pid,
                path: path.to_path_buf(),
                hint: self.permission_hint(),
            }
        } else {
            ProbeError::ProcessRead {
                pid: self.pid,
                path: path.to_path_buf(),
                reason: err.to_string(),
            }
        }
    }

    fn permission_hint(&self) -> String {
        match self.owner_uid {
            Some(owner) if owner != self.reader_uid => format!(
                "the process belongs to another user (uid {owner}, this program runs as uid \
                 {}); run as that user or root",
                self.reader_uid
            ),
            Some(_) => "the process runs as this user but is protected from inspection \
                        (setuid, not dumpable, or ptrace restricted by \
                        kernel.yama.ptrace_scope); run as root"
                .to_owned(),
            None => "the process may belong to another user; run as that user or root".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(seen_alive: bool) -> ReadContext {
        ReadContext {
            pid: 4242,
            seen_alive,
            owner_uid: Some(0),
            reader_uid: 65534,
        }
    }

    fn os_error(errno: i32) -> io::Error {
        io::Error::from_raw_os_error(errno)
    }

    #[test]
    fn missing_before_anything_was_read_means_no_such_process() {
        let err = ctx(false).error(Path::new("/proc/4242/stat"), &os_error(libc::ENOENT));
        assert!(matches!(err, ProbeError::NoSuchProcess { pid: 4242, .. }));
        assert_eq!(
            err.to_string(),
            "no process with pid 4242 (/proc/4242 does not exist)"
        );
    }

    #[test]
    fn missing_or_esrch_after_a_read_means_exited() {
        for errno in [libc::ENOENT, libc::ESRCH] {
            let err = ctx(true).error(Path::new("/proc/4242/maps"), &os_error(errno));
            assert!(
                matches!(err, ProbeError::ProcessExited { pid: 4242, .. }),
                "{err}"
            );
            let text = err.to_string();
            assert!(
                text.starts_with("process 4242 exited while it was being read (/proc/4242/maps: "),
                "{text}"
            );
        }
    }

    #[test]
    fn permission_denied_names_the_file_and_the_remedy() {
        for errno in [libc::EACCES, libc::EPERM] {
            let err = ctx(true).error(Path::new("/proc/4242/maps"), &os_error(errno));
            assert_eq!(
                err.to_string(),
                "cannot read /proc/4242/maps: permission denied (the process belongs to \
                 another user (uid 0, this program runs as uid 65534); run as that user or root)"
            );
        }
        let same_user = ReadContext {
            owner_uid: Some(65534),
            ..ctx(true)
        };
        let err = same_user.error(Path::new("/proc/4242/environ"), &os_error(libc::EACCES));
        assert!(
            err.to_string().contains("protected from inspection"),
            "{err}"
        );
        let unknown = ReadContext {
            owner_uid: None,
            ..ctx(true)
        };
        let err = unknown.error(Path::new("/proc/4242/maps"), &os_error(libc::EACCES));
        assert!(
            err.to_string().contains("may belong to another user"),
            "{err}"
        );
    }

    #[test]
    fn other_errors_keep_their_reason() {
        let err = ctx(true).error(Path::new("/proc/4242/maps"), &os_error(libc::EIO));
        assert!(matches!(err, ProbeError::ProcessRead { .. }));
        assert!(err
            .to_string()
            .starts_with("cannot read /proc/4242/maps of process 4242: "));
    }

    #[test]
    fn reads_this_process() {
        let me = read_process(std::process::id()).expect("read self");
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.executable, std::env::current_exe().ok());
        assert!(me.threads.unwrap_or(0) >= 1);
        assert!(me
            .mapped_libraries
            .iter()
            .any(|p| p.to_string_lossy().contains("libc.so")));
        assert!(!me
            .mapped_libraries
            .contains(&std::env::current_exe().unwrap()));
        assert_eq!(me.python, None);
        let listed = loaded_libraries_of_this_process().expect("self maps");
        assert!(listed
            .iter()
            .any(|p| p.to_string_lossy().contains("libc.so")));
    }

    #[test]
    fn pid_zero_does_not_exist() {
        let err = read_process(0).unwrap_err();
        assert!(
            matches!(err, ProbeError::NoSuchProcess { pid: 0, .. }),
            "{err}"
        );
    }
}
