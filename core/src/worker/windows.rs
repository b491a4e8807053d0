//! Windows: the Rust worker's private protocol channel. The parent's pipes
//! arrive as the standard input and output; the worker keeps them under
//! handles of its own, not inheritable, and points the standard output
//! at the standard error and the standard input at `NUL`, for the task
//! functions and everything they start. Printing from a task (Rust's
//! `print!`, which asks `GetStdHandle` on every write, or C's `printf`)
//! then never touches the protocol, and a task's children never hold it
//! open.

use std::fs::File;
use std::os::windows::io::{FromRawHandle, IntoRawHandle, RawHandle};

use windows_sys::Win32::Foundation::{
    DuplicateHandle, SetHandleInformation, DUPLICATE_SAME_ACCESS, HANDLE, HANDLE_FLAG_INHERIT,
    INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::System::Console::{
    GetStdHandle, SetStdHandle, STD_ERROR_HANDLE, STD_HANDLE, STD_INPUT_HANDLE, STD_OUTPUT_HANDLE,
};
use windows_sys::Win32::System::Threading::GetCurrentProcess;

/// The handle in standard slot `which`, if there is one.
fn std_handle(which: STD_HANDLE) -> Option<HANDLE> {
    // SAFETY: GetStdHandle only reads the process's table.
    let h = unsafe { GetStdHandle(which) };
    (!h.is_null() && h != INVALID_HANDLE_VALUE).then_some(h)
}

/// A copy of `h` that child processes do not inherit, owned by the File.
fn private_copy(h: HANDLE) -> Option<File> {
    let mut copy: HANDLE = std::ptr::null_mut();
    // SAFETY: `h` is a valid handle of this process; the copy is written
    // to our local and then owned by the File alone.
    unsafe {
        let me = GetCurrentProcess();
        if DuplicateHandle(me, h, me, &mut copy, 0, 0, DUPLICATE_SAME_ACCESS) == 0 {
            return None;
        }
        Some(File::from_raw_handle(copy as RawHandle))
    }
}

/// `NUL`, its handle handed over to whoever keeps it (a standard slot).
fn null_device(write: bool) -> Option<HANDLE> {
    let f = std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open("NUL")
        .ok()?;
    Some(f.into_raw_handle() as HANDLE)
}

/// The protocol's input and output; the standard streams now lead
/// elsewhere. `None` (nothing changed) when there are no pipes to keep.
pub(super) fn private_channel_files() -> Option<(File, File)> {
    let inp = std_handle(STD_INPUT_HANDLE)?;
    let out = std_handle(STD_OUTPUT_HANDLE)?;
    let (inp_copy, out_copy) = (private_copy(inp)?, private_copy(out)?);
    let err = std_handle(STD_ERROR_HANDLE).or_else(|| null_device(true));
    let nul = null_device(false);
    // SAFETY: flags and standard slots of this process's own handles;
    // the handles put in the slots stay open for the life of the process.
    unsafe {
        // In case the C runtime does not close them below: not for
        // children either way.
        SetHandleInformation(inp, HANDLE_FLAG_INHERIT, 0);
        SetHandleInformation(out, HANDLE_FLAG_INHERIT, 0);
        crt_redirect();
        if let Some(err) = err {
            SetStdHandle(STD_OUTPUT_HANDLE, err);
        }
        if let Some(nul) = nul {
            SetStdHandle(STD_INPUT_HANDLE, nul);
        }
    }
    Some((inp_copy, out_copy))
}

/// The C runtime keeps descriptors 0 and 1 on the original pipes: point
/// 1 at 2 and 0 at `NUL` (closing the originals; the protocol has its
/// copies). Failures leave a descriptor as it was.
///
/// # Safety
/// Call once, before any task runs, with the protocol's copies made.
unsafe fn crt_redirect() {
    // SAFETY: descriptors of this process's C runtime; a NUL handle
    // handed to the runtime is owned by it from then on, or closed here.
    unsafe {
        libc::dup2(2, 1);
        if let Some(nul) = null_device(false) {
            let fd = libc::open_osfhandle(nul as libc::intptr_t, libc::O_RDONLY);
            if fd >= 0 {
                libc::dup2(fd, 0);
                libc::close(fd);
            } else {
                drop(File::from_raw_handle(nul as RawHandle));
            }
        }
    }
}
