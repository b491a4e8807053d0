//! The Rust fork server (Unix): a single-threaded process that forks one
//! worker per request. Started fresh (forkserver start method) or forked
//! from the parent with its state (fork start method).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::protocol::{self, ToParent};
use super::Registry;

/// Serve fork requests read from `inp` until it closes; report forks and
/// exits on `out`. Returns the process exit code.
pub(crate) fn serve(registry: &Registry, mut inp: File, mut out: File, socket: &Path) -> i32 {
    let hello = ToParent::Hello {
        hello: protocol::Hello {
            pid: std::process::id(),
            worker: None,
        },
    };
    if protocol::write_line(&mut out, &hello).is_err() {
        return 1;
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        reap(&mut out);
        let mut pfd = libc::pollfd {
            fd: inp.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, 50) };
        if ready <= 0 {
            continue;
        }
        let n = match inp.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let Ok(msg) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            let Some(n) = msg.get("fork").and_then(|v| v.as_u64()) else {
                continue;
            };
            // SAFETY: this process is single-threaded (it only runs this
            // loop), so the child may run ordinary code after fork.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                let e = std::io::Error::last_os_error();
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"fork_error": n, "message": e.to_string()})
                );
                let _ = out.flush();
                continue;
            }
            if pid == 0 {
                drop(inp);
                drop(out);
                let code = run_forked_worker(registry, socket, n);
                std::process::exit(code);
            }
            let _ = writeln!(out, "{}", serde_json::json!({"forked": n, "pid": pid}));
            let _ = out.flush();
        }
    }
    reap(&mut out);
    0
}

fn run_forked_worker(registry: &Registry, socket: &Path, n: u64) -> i32 {
    // SAFETY: setpgid on ourselves: the worker leads its own process group,
    // so its whole tree can be signalled at once; on Linux it also dies
    // with the server (PR_SET_PDEATHSIG).
    unsafe {
        libc::setpgid(0, 0);
        #[cfg(target_os = "linux")]
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    }
    let stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "caiclust worker: cannot connect to {}: {e}",
                socket.display()
            );
            return 70;
        }
    };
    let Ok(read_half) = stream.try_clone() else {
        return 70;
    };
    super::serve_loop(registry, Box::new(read_half), Box::new(stream), Some(n));
    0
}

fn reap(out: &mut File) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        let msg = if libc::WIFSIGNALED(status) {
            serde_json::json!({"exited": pid, "signal": libc::WTERMSIG(status)})
        } else {
            serde_json::json!({"exited": pid, "code": libc::WEXITSTATUS(status)})
        };
        let _ = writeln!(out, "{msg}");
        let _ = out.flush();
    }
}
