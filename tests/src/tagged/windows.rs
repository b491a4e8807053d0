//! Tagged processes on Windows, found the way `/proc/PID/environ` finds
//! them on Linux: every live process of a Toolhelp32 snapshot whose own
//! environment block holds `TAG_VAR=tag`. Windows has no file for another
//! process's environment; it is read from that process's memory: its PEB
//! (from `NtQueryInformationProcess`), the PEB's process parameters, and
//! their `Environment` (UTF-16 `NAME=value` strings ending with an empty
//! one), with `ReadProcessMemory`. The command line comes from the same
//! parameters. A tag is inherited like any variable, and survives the
//! death of the process that started its holder (Windows never re-parents,
//! so a parent-pid walk would lose exactly the orphans the tests look for).
//!
//! Offsets are those of 64-bit Windows (the only Windows target tested);
//! a process that cannot be opened or read (another user's, a protected
//! one, one that is exiting) is not ours and is passed over.

use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, INVALID_HANDLE_VALUE, STILL_ACTIVE};
use windows_sys::Win32::System::Diagnostics::Debug::ReadProcessMemory;
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, Process32FirstW, Process32NextW, PROCESSENTRY32W, TH32CS_SNAPPROCESS,
};
use windows_sys::Win32::System::Threading::{
    GetExitCodeProcess, OpenProcess, PROCESS_QUERY_INFORMATION, PROCESS_VM_READ,
};

/// `PROCESS_BASIC_INFORMATION` (winternl.h).
#[repr(C)]
#[derive(Default)]
struct BasicInformation {
    exit_status: i32,
    peb_base_address: usize,
    affinity_mask: usize,
    base_priority: i32,
    unique_process_id: usize,
    inherited_from_unique_process_id: usize,
}

#[link(name = "ntdll")]
extern "system" {
    fn NtQueryInformationProcess(
        process: HANDLE,
        class: u32,
        information: *mut core::ffi::c_void,
        length: u32,
        return_length: *mut u32,
    ) -> i32;
}

/// `ProcessBasicInformation`.
const PROCESS_BASIC_INFORMATION_CLASS: u32 = 0;
/// `PEB.ProcessParameters` (x64).
const PEB_PROCESS_PARAMETERS: usize = 0x20;
/// `RTL_USER_PROCESS_PARAMETERS.CommandLine` (a `UNICODE_STRING`, x64).
const PARAMS_COMMAND_LINE: usize = 0x70;
/// `RTL_USER_PROCESS_PARAMETERS.Environment` (x64).
const PARAMS_ENVIRONMENT: usize = 0x80;
/// Longest environment block read (Windows caps it at 32767 characters per
/// variable; the block itself is rarely over a few KiB).
const MAX_ENVIRONMENT_BYTES: usize = 1 << 20;
const PAGE: usize = 0x1000;

/// Closes a handle when dropped.
struct Handle(HANDLE);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle was returned open by the system and is closed
        // once, here.
        unsafe { CloseHandle(self.0) };
    }
}

/// Live processes whose environment holds `needle` (`TAG_VAR=tag`), each
/// with its command line.
pub(super) fn tagged(needle: &str) -> Vec<(u32, String)> {
    let needle: Vec<u16> = needle.encode_utf16().collect();
    let mut out = Vec::new();
    for pid in all_pids() {
        if pid == 0 || pid == 4 {
            continue; // the idle and system processes
        }
        let Some(process) = open(pid) else { continue };
        if !still_active(&process) {
            continue;
        }
        let Some(params) = process_parameters(&process) else {
            continue;
        };
        let Some(env) = read_environment(&process, params) else {
            continue;
        };
        if !env.split(|&c| c == 0).any(|kv| kv == needle.as_slice()) {
            continue;
        }
        let cmd = read_command_line(&process, params).unwrap_or_default();
        out.push((pid, cmd));
    }
    out
}

fn all_pids() -> Vec<u32> {
    // SAFETY: no pointer is passed; the result is checked below.
    let snapshot = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0) };
    if snapshot == INVALID_HANDLE_VALUE || snapshot.is_null() {
        return Vec::new();
    }
    let snapshot = Handle(snapshot);
    let mut pids = Vec::new();
    // SAFETY: PROCESSENTRY32W is plain data; all zeroes is a valid value.
    let mut entry: PROCESSENTRY32W = unsafe { std::mem::zeroed() };
    entry.dwSize = std::mem::size_of::<PROCESSENTRY32W>() as u32;
    // SAFETY: `entry` is a PROCESSENTRY32W with dwSize set, as required.
    let mut more = unsafe { Process32FirstW(snapshot.0, &mut entry) } != 0;
    while more {
        pids.push(entry.th32ProcessID);
        // SAFETY: as above.
        more = unsafe { Process32NextW(snapshot.0, &mut entry) } != 0;
    }
    pids
}

fn open(pid: u32) -> Option<Handle> {
    // SAFETY: plain integers in, a handle (or null) out.
    let h = unsafe { OpenProcess(PROCESS_QUERY_INFORMATION | PROCESS_VM_READ, 0, pid) };
    (!h.is_null()).then_some(Handle(h))
}

fn still_active(process: &Handle) -> bool {
    let mut code = 0u32;
    // SAFETY: `code` is a valid u32 to write to.
    let ok = unsafe { GetExitCodeProcess(process.0, &mut code) } != 0;
    ok && code == STILL_ACTIVE as u32
}

/// The address of the process's `RTL_USER_PROCESS_PARAMETERS`.
fn process_parameters(process: &Handle) -> Option<usize> {
    let mut info = BasicInformation::default();
    let mut len = 0u32;
    // SAFETY: `info` is a writable PROCESS_BASIC_INFORMATION of the size
    // passed; `len` a writable u32.
    let status = unsafe {
        NtQueryInformationProcess(
            process.0,
            PROCESS_BASIC_INFORMATION_CLASS,
            (&mut info as *mut BasicInformation).cast(),
            std::mem::size_of::<BasicInformation>() as u32,
            &mut len,
        )
    };
    if status < 0 || info.peb_base_address == 0 {
        return None;
    }
    read_usize(process, info.peb_base_address + PEB_PROCESS_PARAMETERS).filter(|&p| p != 0)
}

/// Reads `buf.len()` bytes at `address` of the process; whether all came.
fn read(process: &Handle, address: usize, buf: &mut [u8]) -> bool {
    let mut done = 0usize;
    // SAFETY: `buf` is writable for its length; the other process's
    // address is only read by the system, which checks it.
    let ok = unsafe {
        ReadProcessMemory(
            process.0,
            address as *const core::ffi::c_void,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut done,
        )
    } != 0;
    ok && done == buf.len()
}

fn read_usize(process: &Handle, address: usize) -> Option<usize> {
    let mut b = [0u8; std::mem::size_of::<usize>()];
    read(process, address, &mut b).then(|| usize::from_ne_bytes(b))
}

/// The environment block as UTF-16 units, up to its final empty string.
/// Read a page at a time: the block's size is not recorded in every
/// Windows version, and a read must not run past its last page.
fn read_environment(process: &Handle, params: usize) -> Option<Vec<u16>> {
    let mut address = read_usize(process, params + PARAMS_ENVIRONMENT).filter(|&a| a != 0)?;
    let mut bytes = Vec::new();
    while bytes.len() < MAX_ENVIRONMENT_BYTES {
        let chunk = PAGE - address % PAGE;
        let mut page = vec![0u8; chunk];
        if !read(process, address, &mut page) {
            break;
        }
        bytes.extend_from_slice(&page);
        address += chunk;
        let units = utf16(&bytes);
        if units.windows(2).any(|w| w == [0, 0]) {
            return Some(units);
        }
    }
    (!bytes.is_empty()).then(|| utf16(&bytes))
}

fn read_command_line(process: &Handle, params: usize) -> Option<String> {
    let mut header = [0u8; 16];
    if !read(process, params + PARAMS_COMMAND_LINE, &mut header) {
        return None;
    }
    let len = usize::from(u16::from_ne_bytes([header[0], header[1]]));
    let buffer = usize::from_ne_bytes(header[8..16].try_into().ok()?);
    if buffer == 0 || len == 0 {
        return Some(String::new());
    }
    let mut text = vec![0u8; len];
    read(process, buffer, &mut text).then(|| String::from_utf16_lossy(&utf16(&text)))
}

fn utf16(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_ne_bytes([c[0], c[1]]))
        .collect()
}
