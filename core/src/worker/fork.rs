//! The fork start method for Rust tasks (Unix): this process is forked once
//! into a template, which then serves fork requests like the fork server.
//! Its workers see everything the program set up before the cluster
//! started its pool (data loaded, globals set), and also every hazard:
//! runtimes whose thread pools do not survive fork, locks held by other
//! threads. Only the thread that forks exists in the child, as with
//! Python's fork start method; the cluster refuses fork when the rules see
//! a hazard in this process, unless forced.
//!
//! The template is forked from the cluster's scheduler thread, which runs
//! no user code: runtimes whose state is per thread (GNU OpenMP's pool
//! belongs to the thread that started the team) start afresh in the
//! workers, while process-wide ones (pthreads BLAS pools) do not.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::Path;

use super::Registry;
use crate::task::ExitInfo;

pub(crate) struct Template {
    pub pid: u32,
    /// Fork requests go here.
    pub input: File,
    /// Its reports come from here.
    pub output: File,
}

fn pipe() -> Result<(i32, i32), String> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe fills the two-element array it is given; fcntl marks
    // the new descriptors close-on-exec (pipe2 is not on macOS).
    unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0 {
            return Err(format!(
                "cannot create a pipe: {}",
                std::io::Error::last_os_error()
            ));
        }
        for fd in fds {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok((fds[0], fds[1]))
}

/// Fork the template. `env` is set in it before it serves (it reaches
/// runtimes that initialise later, not those already running).
pub(crate) fn fork_template(
    registry: &Registry,
    socket: &Path,
    env: &BTreeMap<String, String>,
) -> Result<Template, String> {
    let (to_child_r, to_child_w) = pipe()?;
    let (from_child_r, from_child_w) = pipe()?;
    // SAFETY: fork in a multithreaded process: the child runs only the
    // server loop below (plain reads, writes, fork and the registry's
    // functions), never touching locks other threads could hold at the
    // fork (no stdout/stderr locks, no logging); glibc's malloc is reset
    // for the child by its own fork handlers.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: closing the descriptors this function created.
        unsafe {
            for fd in [to_child_r, to_child_w, from_child_r, from_child_w] {
                libc::close(fd);
            }
        }
        return Err(format!("cannot fork the template: {e}"));
    }
    if pid == 0 {
        // SAFETY: in the child: close the parent's ends, lead a process
        // group of its own, and own the child's ends as Files.
        let code = unsafe {
            libc::close(to_child_w);
            libc::close(from_child_r);
            libc::setpgid(0, 0);
            #[cfg(target_os = "linux")]
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            for (k, v) in env {
                std::env::set_var(k, v);
            }
            let inp = File::from_raw_fd(to_child_r);
            let out = File::from_raw_fd(from_child_w);
            super::server::serve(registry, inp, out, socket)
        };
        // SAFETY: end the template without running the parent's exit
        // handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: in the parent: close the child's ends; own ours.
    unsafe {
        libc::close(to_child_r);
        libc::close(from_child_w);
        Ok(Template {
            pid: pid as u32,
            input: File::from_raw_fd(to_child_w),
            output: File::from_raw_fd(from_child_r),
        })
    }
}

/// Wait for a child of this process that is not a `std::process::Child`.
pub(crate) fn wait_for(pid: u32) -> Option<ExitInfo> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid status pointer.
        let rc = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        if rc == pid as libc::pid_t {
            break;
        }
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
    if libc::WIFSIGNALED(status) {
        Some(ExitInfo::Signal(libc::WTERMSIG(status)))
    } else {
        Some(ExitInfo::Code(libc::WEXITSTATUS(status)))
    }
}
