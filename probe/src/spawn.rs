//! Starting child processes: shared by the interpreter query, the runtime
//! queries and live probing.

use std::io;
use std::process::{Child, Command};
use std::time::Duration;

/// Spawn, retrying briefly on `ETXTBSY`: a program that was just written (a
/// freshly installed interpreter, a helper or a test's fake one) can still be
/// open for writing in a process forked meanwhile by another thread.
pub(crate) fn spawn_retrying(cmd: &mut Command) -> io::Result<Child> {
    const ETXTBSY: i32 = 26; // Linux and macOS
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if cfg!(unix) && e.raw_os_error() == Some(ETXTBSY) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}
