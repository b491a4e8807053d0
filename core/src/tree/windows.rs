//! Windows: processes by pid (end one, ask whether it runs, when it
//! started) and the parent of every process, from a Toolhelp snapshot.

use windows_sys::Win32::Foundation::{CloseHandle, FILETIME, INVALID_HANDLE_VALUE, STILL_ACTIVE};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, Process32FirstW, Process32NextW, PROCESSENTRY32W, TH32CS_SNAPPROCESS,
};
use windows_sys::Win32::System::Threading::{
    GetExitCodeProcess, GetProcessTimes, OpenProcess, TerminateProcess,
    PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_TERMINATE,
};

pub(super) fn terminate(pid: u32) {
    // SAFETY: the handle is checked and closed; TerminateProcess on a
    // handle we opened with PROCESS_TERMINATE.
    unsafe {
        let h = OpenProcess(PROCESS_TERMINATE, 0, pid);
        if !h.is_null() {
            TerminateProcess(h, 1);
            CloseHandle(h);
        }
    }
}

pub(super) fn alive(pid: u32) -> bool {
    // SAFETY: as above, with a query-only handle.
    unsafe {
        let h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if h.is_null() {
            return false;
        }
        let mut code = 0u32;
        let ok = GetExitCodeProcess(h, &mut code);
        CloseHandle(h);
        ok != 0 && code == STILL_ACTIVE as u32
    }
}

/// When `pid` started, in 100 ns units since 1601; `None` when it cannot
/// be opened (gone, or not ours to ask).
fn start_time(pid: u32) -> Option<u64> {
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: a query-only handle, checked and closed; the four FILETIMEs
    // are ours to write.
    let ok = unsafe {
        let h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if h.is_null() {
            return None;
        }
        let ok = GetProcessTimes(h, &mut created, &mut exited, &mut kernel, &mut user);
        CloseHandle(h);
        ok
    };
    (ok != 0).then(|| (u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime))
}

/// Did `child` start after `parent` (so it may be its child, not the
/// child of an earlier process with the same pid)? True when either
/// cannot be read: the snapshot is all there is to go by.
pub(super) fn started_after(child: u32, parent: u32) -> bool {
    match (start_time(child), start_time(parent)) {
        (Some(c), Some(p)) => c >= p,
        _ => true,
    }
}

/// (pid, parent pid) of every process.
pub(super) fn parent_table() -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    // SAFETY: the snapshot handle is checked and closed; the entry is
    // ours, with its size set as the API requires.
    unsafe {
        let snap = CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0);
        if snap == INVALID_HANDLE_VALUE {
            return out;
        }
        let mut entry: PROCESSENTRY32W = std::mem::zeroed();
        entry.dwSize = std::mem::size_of::<PROCESSENTRY32W>() as u32;
        let mut ok = Process32FirstW(snap, &mut entry);
        while ok != 0 {
            out.push((entry.th32ProcessID, entry.th32ParentProcessID));
            ok = Process32NextW(snap, &mut entry);
        }
        CloseHandle(snap);
    }
    out
}
